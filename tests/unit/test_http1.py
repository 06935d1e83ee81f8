"""The lean path's HTTP/1.1 client against real loopback sockets: a tiny asyncio server,
scripted per test, writes answers byte by byte as awkwardly as a real network can."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from s3batch.storage.s3.http1 import ConnectionPool, HttpError, Response, _Connection, _Dechunker

pytestmark = pytest.mark.timeout(10)

GET = b"GET /k HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n"
HEAD = b"HEAD /k HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n"
#: Gap between scripted writes, long enough for the client to read each one separately.
GAP_S = 0.01

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Server:
    """Counts connections (in all, and open at once); runs `handler(reader, writer, n)` for the
    n-th connection (from 1)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.port = 0
        self.tasks: list[asyncio.Task[None]] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.handler(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the test is over
        finally:
            self.open -= 1
            writer.close()


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[Server]:
    server = Server(handler)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        for task in server.tasks:
            task.cancel()
        await asyncio.gather(*server.tasks, return_exceptions=True)
        await listener.wait_closed()


@asynccontextmanager
async def pool_for(
    server: Server, *, max_connections: int = 4, read_timeout_s: float = 2.0
) -> AsyncIterator[ConnectionPool]:
    pool = ConnectionPool(
        "127.0.0.1",
        server.port,
        tls=False,
        max_connections=max_connections,
        connect_timeout_s=1.0,
        read_timeout_s=read_timeout_s,
    )
    try:
        yield pool
    finally:
        await pool.close()


def answer(body: bytes, status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def write_in_pieces(writer: asyncio.StreamWriter, *pieces: bytes) -> None:
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
        await asyncio.sleep(GAP_S)


def keep_answering(make: Callable[[int, int], bytes]) -> Handler:
    """A handler answering every request on the connection with make(connection, request)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for i in range(1, 100):
            try:
                await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            writer.write(make(n, i))
            await writer.drain()

    return handler


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- bodies ----------------------------------------------------------------------------------


async def test_content_length_body_split_across_writes_and_connection_reused() -> None:
    body = b"0123456789" * 30

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nX-A: 1\r\nX-A: 2\r\n\r\n".encode()
        await write_in_pieces(writer, head[:7], head[7:30], head[30:], body[:1], body[1:150], body[150:])
        await reader.readuntil(b"\r\n\r\n")
        await write_in_pieces(writer, answer(b"second"))

    async with serving(handler) as server, pool_for(server) as pool:
        first = await pool.request(GET)
        second = await pool.request(GET)
    assert (first.status, first.body) == (200, body)
    assert first.headers["x-a"] == "1, 2"
    assert first.headers["content-length"] == str(len(body))
    assert second.body == b"second"
    assert server.connections == 1


async def test_chunked_body_split_mid_chunk_size() -> None:
    data = bytes(range(26)) + b"tail"  # one 0x1a-byte chunk, then a 4-byte one

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await write_in_pieces(
            writer,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1",
            b"a;ext=1\r",
            b"\n" + data[:26][:10],
            data[:26][10:] + b"\r\n4\r\n",
            b"tail\r",
            b"\n0\r\n",
            b"\r\n",
        )
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"next"))

    async with serving(handler) as server, pool_for(server) as pool:
        first = await pool.request(GET)
        second = await pool.request(GET)
    assert first.body == data
    assert second.body == b"next"
    assert server.connections == 1


async def test_chunked_body_with_trailers() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await write_in_pieces(
            writer,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Tr",
            b"ailer: 1\r\nX-Other: 2\r\n",
            b"\r\n",
        )
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"after trailers"))

    async with serving(handler) as server, pool_for(server) as pool:
        first = await pool.request(GET)
        second = await pool.request(GET)
    assert first.body == b"hello"
    assert second.body == b"after trailers"
    assert server.connections == 1


async def test_long_chunked_body_in_many_small_segments() -> None:
    """20,000 chunks arriving a few at a time: each segment is parsed where the last one
    stopped. (Rescanning the whole buffer on every segment took seconds here, past the read
    timeout; parsing incrementally takes milliseconds.)"""
    chunks = [f"{i:010d}".encode() for i in range(20_000)]
    wire = b"".join(b"a\r\n" + chunk + b"\r\n" for chunk in chunks) + b"0\r\n\r\n"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for at in range(0, len(wire), 149):  # 149: pieces end mid-chunk, mid-size, mid-CRLF
            writer.write(wire[at : at + 149])
            await writer.drain()
            await asyncio.sleep(0)  # let the client read before the next piece
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"next"))

    async with serving(handler) as server, pool_for(server) as pool:
        first = await pool.request(GET)
        second = await pool.request(GET)
    assert first.body == b"".join(chunks)
    assert second.body == b"next"
    assert server.connections == 1


CHUNKED = b"5;ext=1\r\nhello\r\n1\r\n,\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\nX-B: 2\r\n\r\n"
DECHUNKED = b"hello,0123456789abcdef"


def test_dechunker_gives_one_body_at_every_split_point() -> None:
    for split in range(len(CHUNKED)):
        parser, buf = _Dechunker(), bytearray(CHUNKED[:split])
        assert parser.feed(buf) is None, split  # the trailers' empty line is still to come
        buf += CHUNKED[split:] + b"next"
        assert parser.feed(buf) == DECHUNKED, split
        assert buf == b"next", split  # consumed up to the end of the body, not beyond


def test_dechunker_fed_byte_by_byte() -> None:
    parser, buf = _Dechunker(), bytearray()
    results: list[bytes | None] = []
    for byte in CHUNKED:
        buf.append(byte)
        results.append(parser.feed(buf))
    assert results == [None] * (len(CHUNKED) - 1) + [DECHUNKED]
    assert buf == b""


async def test_bytes_after_a_chunked_body_retire_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if n == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\nEXTRA")
            await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(f"conn{n}".encode()))

    async with serving(handler) as server, pool_for(server) as pool:
        assert (await pool.request(GET)).body == b"ok"
        assert (await pool.request(GET)).body == b"conn2"
    assert server.connections == 2


async def test_body_delimited_by_close() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await write_in_pieces(writer, b"HTTP/1.1 200 OK\r\n\r\npart one, ", b"part two")
        writer.close()

    async with serving(handler) as server, pool_for(server) as pool:
        first = await pool.request(GET)
        second = await pool.request(GET)
    assert first.body == second.body == b"part one, part two"
    assert server.connections == 2


async def test_head_with_content_length_has_no_body() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nETag: "e"\r\n\r\n')
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"get after head"))

    async with serving(handler) as server, pool_for(server, read_timeout_s=1.0) as pool:
        head = await pool.request(HEAD, head_only=True)
        get = await pool.request(GET)
    assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "1234")
    assert get.body == b"get after head"
    assert server.connections == 1


async def test_204_has_no_body_and_keeps_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\nx-amz-id: 1\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"x"))

    async with serving(handler) as server, pool_for(server, read_timeout_s=1.0) as pool:
        first = await pool.request(GET)
        second = await pool.request(GET)
    assert (first.status, first.body) == (204, b"")
    assert second.body == b"x"
    assert server.connections == 1


@pytest.mark.parametrize("separate", [False, True], ids=["one-write", "separate-writes"])
async def test_100_continue_is_skipped(separate: bool) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    final = answer(b"<Done/>", extra="X-Final: yes\r\n")

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        pieces = (interim, final[:5], final[5:]) if separate else (interim + final,)
        await write_in_pieces(writer, *pieces)

    async with serving(handler) as server, pool_for(server) as pool:
        response = await pool.request(GET)
    assert (response.status, response.body, response.headers.get("x-final")) == (200, b"<Done/>", "yes")


# -- keep-alive --------------------------------------------------------------------------------


async def test_connection_close_is_not_reused() -> None:
    handler = keep_answering(lambda n, i: answer(f"c{n}r{i}".encode(), extra="Connection: close\r\n"))
    async with serving(handler) as server, pool_for(server) as pool:
        bodies = [(await pool.request(GET)).body for _ in range(3)]
    assert bodies == [b"c1r1", b"c2r1", b"c3r1"]
    assert server.connections == 3


@pytest.mark.parametrize(
    ("extra", "reused"), [("", False), ("Connection: keep-alive\r\n", True)], ids=["plain", "keep-alive"]
)
async def test_http10_keeps_the_connection_only_when_asked(extra: str, reused: bool) -> None:
    handler = keep_answering(lambda n, i: f"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n{extra}\r\nok".encode())
    async with serving(handler) as server, pool_for(server) as pool:
        for _ in range(3):
            assert (await pool.request(GET)).body == b"ok"
    assert server.connections == (1 if reused else 3)


async def test_idle_connection_closed_by_server_is_retried_once_on_a_new_one() -> None:
    """The race HTTP/1.1 allows: the server drops the idle socket as the request is written."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if n == 1:
            writer.write(answer(b"first"))
            await reader.readuntil(b"\r\n\r\n")  # the second request arrives ...
            return  # ... and the connection closes without an answer
        writer.write(answer(f"conn{n}".encode()))

    async with serving(handler) as server, pool_for(server) as pool:
        assert (await pool.request(GET)).body == b"first"
        response = await pool.request(GET)
    assert response.body == b"conn2"
    assert server.connections == 2


async def test_idle_connection_seen_closed_is_replaced_without_a_failure() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(f"conn{n}".encode()))
        await writer.drain()  # then close at once: the client sees EOF while idle

    async with serving(handler) as server, pool_for(server) as pool:
        assert (await pool.request(GET)).body == b"conn1"
        await asyncio.sleep(0.05)
        assert (await pool.request(GET)).body == b"conn2"
    assert server.connections == 2


async def test_failure_on_a_fresh_connection_is_not_retried() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")  # then close without an answer

    async with serving(handler) as server, pool_for(server) as pool:
        with pytest.raises(HttpError) as caught:
            await pool.request(GET)
    assert caught.value.sent and not caught.value.timeout
    assert server.connections == 1


async def test_failure_after_part_of_the_answer_is_not_retried() -> None:
    """Once the server started answering, it has the request: sending it again could apply it
    twice (a copy, a delete)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"first"))
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()

    async with serving(handler) as server, pool_for(server) as pool:
        assert (await pool.request(GET)).body == b"first"
        with pytest.raises(HttpError) as caught:
            await pool.request(GET)
    assert caught.value.sent
    assert server.connections == 1


class HoldingPool(ConnectionPool):
    """Holds the `hold`-th connection it hands out (from 1) until the server's close of it has
    been processed, then lets the request write: the order in which a busy loop (or uvloop, or
    TLS) can deliver a close that races the write."""

    def __init__(self, port: int, *, hold: int) -> None:
        super().__init__(
            "127.0.0.1", port, tls=False, max_connections=2, connect_timeout_s=1.0, read_timeout_s=30.0
        )
        self.hold = hold
        self.handed_out = 0

    async def _acquire(self, fresh: bool = False) -> _Connection:
        conn = await super()._acquire(fresh)
        self.handed_out += 1
        if self.handed_out == self.hold:
            for _ in range(200):
                if conn.closed:
                    break
                await asyncio.sleep(0.005)
        return conn


async def close_after_one_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(answer(f"conn{n}".encode()))
    await writer.drain()


async def test_fresh_connection_closed_before_the_write_fails_at_once() -> None:
    async def accept_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        return

    async with serving(accept_and_close) as server:
        pool = HoldingPool(server.port, hold=1)
        try:
            async with asyncio.timeout(5):  # read_timeout_s is 30: waiting for it is the bug
                with pytest.raises(HttpError) as caught:
                    await pool.request(GET)
        finally:
            await pool.close()
    assert not caught.value.sent and not caught.value.timeout  # never written: safe to resend
    assert server.connections == 1


async def test_reused_connection_closed_before_the_write_is_retried_at_once() -> None:
    async with serving(close_after_one_answer) as server:
        pool = HoldingPool(server.port, hold=2)
        try:
            assert (await pool.request(GET)).body == b"conn1"
            async with asyncio.timeout(5):  # read_timeout_s is 30: waiting for it is the bug
                response = await pool.request(GET)
        finally:
            await pool.close()
    assert response.body == b"conn2"
    assert pool.handed_out == 3  # connection 1 was reused (and held), then the retry's
    assert server.connections == 2


async def test_unsolicited_bytes_on_an_idle_connection_retire_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(f"conn{n}".encode()))
        await writer.drain()
        await asyncio.sleep(GAP_S)
        writer.write(b"garbage nobody asked for")
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"reused"))

    async with serving(handler) as server, pool_for(server) as pool:
        assert (await pool.request(GET)).body == b"conn1"
        await asyncio.sleep(0.1)
        assert (await pool.request(GET)).body == b"conn2"
    assert server.connections == 2


# -- timeouts and malformed answers ------------------------------------------------------------


async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    await reader.readuntil(b"\r\n\r\n")
    await asyncio.sleep(5)


async def test_no_answer_times_out_within_the_read_timeout() -> None:
    async with serving(never_answer) as server, pool_for(server, read_timeout_s=0.2) as pool:
        started = time.monotonic()
        with pytest.raises(HttpError) as caught:
            await pool.request(GET)
        elapsed = time.monotonic() - started
    assert caught.value.timeout and caught.value.sent
    assert 0.15 <= elapsed < 1.0


async def test_timeout_on_a_reused_connection_is_not_retried() -> None:
    """A read timeout is no stale-connection race: retrying it would double the wait and send
    a request the server has (and may be working on) a second time."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"first"))
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)

    async with serving(handler) as server, pool_for(server, read_timeout_s=0.2) as pool:
        assert (await pool.request(GET)).body == b"first"
        started = time.monotonic()
        with pytest.raises(HttpError) as caught:
            await pool.request(GET)
        elapsed = time.monotonic() - started
    assert caught.value.timeout
    assert elapsed < 0.35
    assert server.connections == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
        b"ICY 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n0123456789",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffff\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"0" * (65 * 1024),
    ],
    ids=[
        "no-status",
        "no-code",
        "short-code",
        "not-http",
        "length-text",
        "length-negative",
        "length-plus",
        "length-underscore",
        "length-twice",
        "length-huge",
        "chunk-size-text",
        "chunk-size-negative",
        "chunk-size-0x",
        "chunk-no-crlf-after-data",
        "chunk-size-huge",
        "chunk-size-line-endless",
    ],
)
async def test_malformed_answers_raise_http_error(raw: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(raw)
        await asyncio.sleep(5)  # keep the socket open: the error must come from parsing

    async with serving(handler) as server, pool_for(server, read_timeout_s=1.0) as pool:
        with pytest.raises(HttpError) as caught:
            await pool.request(GET)
    assert caught.value.sent and not caught.value.timeout


async def test_oversized_headers_raise_http_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for _ in range(100):  # 100 KiB of headers that never end
            writer.write(b"X-Padding: " + b"a" * 1010 + b"\r\n")
            await writer.drain()
        await asyncio.sleep(5)

    async with serving(handler) as server, pool_for(server, read_timeout_s=2.0) as pool:
        with pytest.raises(HttpError, match="too large") as caught:
            await pool.request(GET)
    assert not caught.value.timeout


# -- the pool ----------------------------------------------------------------------------------


async def test_pool_never_exceeds_max_connections() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for _ in range(100):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            await asyncio.sleep(0.005)
            writer.write(answer(head.split(b" ")[1]))

    async with serving(handler) as server, pool_for(server, max_connections=4) as pool:
        requests = [f"GET /r{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(50)]
        responses = await asyncio.gather(*(pool.request(r) for r in requests))
    assert [r.body for r in responses] == [f"/r{i}".encode() for i in range(50)]
    assert server.max_open == 4  # reached, never passed
    assert server.connections == 4


async def test_cancelled_request_connection_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.2)
        writer.write(answer(f"conn{n}".encode()))  # on connection 1: for the cancelled request
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"second on one connection"))

    async with serving(handler) as server, pool_for(server) as pool:
        task = asyncio.create_task(pool.request(GET))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Sent at once: on connection 1 it would read the cancelled request's late "conn1".
        response = await pool.request(GET)
    assert response.body == b"conn2"
    assert server.connections == 2


async def test_cancelled_retry_connection_is_not_reused() -> None:
    """Cancelled during the stale-connection retry: that second connection must not go back
    to the pool either, or the next request reads the cancelled one's answer."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if n == 1:
            writer.write(answer(b"first"))
            await reader.readuntil(b"\r\n\r\n")
            return  # stale: closed without an answer, so the client retries on connection 2
        if n == 2:
            await asyncio.sleep(0.2)
            writer.write(answer(b"answer to the cancelled request"))
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(5)
        writer.write(answer(f"conn{n}".encode()))

    async with serving(handler) as server, pool_for(server) as pool:
        assert (await pool.request(GET)).body == b"first"
        task = asyncio.create_task(pool.request(GET))
        await asyncio.sleep(0.1)
        assert server.connections == 2  # the retry is in flight
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        response = await pool.request(GET)
    assert response.body == b"conn3"
    assert server.connections == 3


async def test_waiter_cancelled_as_it_is_woken_passes_the_wakeup_on() -> None:
    """max_connections=1: A holds the connection, B and C wait. A finishes (waking B) and B is
    cancelled before it runs: C must get the connection, not wait forever."""
    handler = keep_answering(lambda n, i: answer(f"r{i}".encode()))
    async with serving(handler) as server, pool_for(server, max_connections=1) as pool:
        b_task: asyncio.Task[Response] | None = None

        async def a() -> Response:
            response = await pool.request(GET)
            assert b_task is not None
            b_task.cancel()  # B's waiter was just resolved by A's release
            return response

        a_task = asyncio.create_task(a())
        await asyncio.sleep(0)
        b_task = asyncio.create_task(pool.request(GET))
        c_task = asyncio.create_task(pool.request(GET))
        assert (await a_task).body == b"r1"
        with pytest.raises(asyncio.CancelledError):
            await b_task
        c = await asyncio.wait_for(c_task, 2.0)
    assert c.body == b"r2"
    assert server.connections == 1


async def test_request_after_close_is_refused() -> None:
    handler = keep_answering(lambda n, i: answer(b"ok"))
    async with serving(handler) as server, pool_for(server) as pool:
        assert (await pool.request(GET)).body == b"ok"
        await pool.close()
        with pytest.raises(HttpError, match="pool closed") as caught:
            await pool.request(GET)
    assert not caught.value.sent and not caught.value.timeout
    assert server.connections == 1


async def test_request_waiting_for_a_connection_fails_when_the_pool_closes() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(1.0)
        writer.write(answer(b"slow"))
        await writer.drain()

    async with serving(handler) as server, pool_for(server, max_connections=1) as pool:
        in_flight = asyncio.create_task(pool.request(GET))
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(pool.request(GET))
        await asyncio.sleep(0.05)
        await pool.close()
        async with asyncio.timeout(0.5):  # the only connection frees up after 1 s
            with pytest.raises(HttpError, match="pool closed") as caught:
                await waiting
        assert (await in_flight).body == b"slow"  # a request in flight still finishes
    assert not caught.value.sent and not caught.value.timeout
    assert server.connections == 1


async def test_connect_refused_is_not_sent() -> None:
    pool = ConnectionPool(
        "127.0.0.1", free_port(), tls=False, max_connections=2, connect_timeout_s=1.0, read_timeout_s=1.0
    )
    try:
        with pytest.raises(HttpError) as caught:
            await pool.request(GET)
        assert not caught.value.sent and not caught.value.timeout
        # The failed connect gave its slot back: the pool is not wedged.
        with pytest.raises(HttpError):
            await asyncio.wait_for(pool.request(GET), 1.0)
        with pytest.raises(HttpError):
            await asyncio.wait_for(pool.request(GET), 1.0)
    finally:
        await pool.close()


async def test_a_body_passed_apart_arrives_after_the_head_intact_and_in_order() -> None:
    # Large request bodies are written as their own buffer after the head (no join): the server
    # must read head then body, byte for byte, and the connection must stay usable.
    import hashlib
    import os

    bodies = [bytearray(os.urandom(3 * 1024 * 1024 + 7)), memoryview(os.urandom(200_000)), b""]
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for _ in range(len(bodies)):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            received.append(body)
            writer.write(answer(hashlib.md5(body).hexdigest().encode()))
            await writer.drain()

    async with serving(handler) as server, pool_for(server, max_connections=1) as pool:
        for body in bodies:
            head = f"PUT /k HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            response = await pool.request(head, body=body)
            assert response.body == hashlib.md5(body).hexdigest().encode()
    assert received == [bytes(body) for body in bodies]
    assert server.connections == 1
