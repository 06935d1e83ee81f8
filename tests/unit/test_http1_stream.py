"""The lean HTTP/1.1 client's streamed bodies (ConnectionPool.request's `stream_over`) against
real loopback sockets: what streams and what does not, every framing, the connection handed back
once the body has all arrived and dropped when the stream is closed before, flow control, and
failures mid-body."""

from __future__ import annotations

import asyncio
import time

import pytest
from tests.unit.test_http1 import GET, answer, keep_answering, pool_for, serving, write_in_pieces

from s3batch.storage.s3.http1 import MAX_BODY_BYTES, STREAM_BUFFER_BYTES, BodyStream, HttpError

pytestmark = pytest.mark.timeout(20)

#: Bodies longer than this stream in these tests.
OVER = 16


async def read_all(stream: BodyStream) -> bytes:
    pieces = []
    while piece := await stream.read():
        pieces.append(piece)
    return b"".join(pieces)


def head_only(length: int, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n{extra}\r\n".encode()


async def test_a_long_body_streams_and_its_connection_is_reused_once_it_has_arrived() -> None:
    body = bytes(range(256)) * 40

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await write_in_pieces(writer, head_only(len(body)) + body[:5], body[5:3000], body[3000:])
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"second"))

    async with serving(handler) as server, pool_for(server, max_connections=1) as pool:
        first = await pool.request(GET, stream_over=OVER)
        assert first.stream is not None and first.body == b""
        assert first.headers["content-length"] == str(len(body))
        assert await read_all(first.stream) == body
        assert first.stream.ended
        second = await pool.request(GET, stream_over=OVER)
    assert (second.stream, second.body) == (None, b"second")
    assert server.connections == 1


async def test_a_short_body_and_an_error_come_whole() -> None:
    error = b"<Error><Code>NoSuchKey</Code><Message>" + b"x" * 100 + b"</Message></Error>"

    def make(n: int, i: int) -> bytes:
        return answer(b"short") if i == 1 else answer(error, "404 Not Found")

    async with serving(keep_answering(make)) as server, pool_for(server) as pool:
        short = await pool.request(GET, stream_over=OVER)
        missing = await pool.request(GET, stream_over=OVER)
    assert (short.stream, short.body) == (None, b"short")
    assert (missing.status, missing.stream, missing.body) == (404, None, error)
    assert server.connections == 1


async def test_a_chunked_body_streams_chunk_by_chunk() -> None:
    chunks = [b"a" * 40, b"b" * 7, b"c" * 300]
    framed = b"".join(f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks) + b"0\r\n\r\n"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        await write_in_pieces(writer, head, framed[:30], framed[30:100], framed[100:])
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"second"))

    async with serving(handler) as server, pool_for(server) as pool:
        first = await pool.request(GET, stream_over=OVER)
        assert first.stream is not None
        assert await read_all(first.stream) == b"".join(chunks)
        second = await pool.request(GET, stream_over=OVER)
    assert second.body == b"second" and server.connections == 1


async def test_a_body_delimited_by_the_close_streams_to_the_close() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await write_in_pieces(writer, b"HTTP/1.1 200 OK\r\n\r\nfirst piece;", b"second piece")
        writer.close()

    async with serving(handler) as server, pool_for(server) as pool:
        response = await pool.request(GET, stream_over=OVER)
        assert response.stream is not None
        assert await read_all(response.stream) == b"first piece;second piece"


async def test_a_stream_closed_early_drops_its_connection_and_frees_its_slot() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if n == 1:
            writer.write(head_only(10_000_000) + b"x" * 1000)  # and the rest never comes
            await writer.drain()
            await asyncio.sleep(5)
        writer.write(answer(f"conn{n}".encode()))

    async with serving(handler) as server, pool_for(server, max_connections=1) as pool:
        response = await pool.request(GET, stream_over=OVER)
        assert response.stream is not None
        assert await response.stream.read()
        response.stream.close()
        response.stream.close()  # idempotent
        assert await response.stream.read() == b""
        # One connection allowed: this waits forever unless the closed stream freed it.
        after = await asyncio.wait_for(pool.request(GET), 2.0)
    assert after.body == b"conn2"  # never on the dropped connection, whose body was unread
    assert server.connections == 2


async def test_an_unread_stream_pauses_the_socket() -> None:
    body = bytes(range(256)) * (8 * STREAM_BUFFER_BYTES // 256)
    sent = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head_only(len(body)))
        writer.write(body)
        await writer.drain()  # returns only once the client has read (nearly) all of it
        sent.set()

    async with serving(handler) as server, pool_for(server) as pool:
        response = await pool.request(GET, stream_over=OVER)
        stream = response.stream
        assert stream is not None
        await asyncio.sleep(0.3)
        held = stream._buffered
        assert STREAM_BUFFER_BYTES <= held < 2 * STREAM_BUFFER_BYTES  # paused, not all of it
        assert not sent.is_set()
        assert await read_all(stream) == body
        await asyncio.wait_for(sent.wait(), 2.0)


async def test_a_streamed_body_may_be_longer_than_a_whole_body_may() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head_only(MAX_BODY_BYTES + 1) + b"start")
        await writer.drain()
        await asyncio.sleep(5)

    async with serving(handler) as server, pool_for(server) as pool:
        with pytest.raises(HttpError, match="out of range"):
            await pool.request(GET)
        response = await pool.request(GET, stream_over=OVER)
        assert response.stream is not None
        assert await response.stream.read() == b"start"
        response.stream.close()


async def test_a_connection_lost_mid_body_fails_the_read_and_frees_the_slot() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if n == 1:
            await write_in_pieces(writer, head_only(1000) + b"only part")
            return  # closed with 991 bytes still owed
        writer.write(answer(b"next"))

    async with serving(handler) as server, pool_for(server, max_connections=1) as pool:
        response = await pool.request(GET, stream_over=OVER)
        assert response.stream is not None
        with pytest.raises(HttpError, match="mid-body") as caught:
            await read_all(response.stream)
        assert caught.value.sent and not caught.value.timeout
        response.stream.close()
        assert (await asyncio.wait_for(pool.request(GET), 2.0)).body == b"next"
    assert server.connections == 2


async def test_a_stalled_body_times_out_within_the_read_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head_only(1000) + b"some")
        await writer.drain()
        await asyncio.sleep(5)

    async with serving(handler) as server, pool_for(server, read_timeout_s=0.2) as pool:
        response = await pool.request(GET, stream_over=OVER)
        assert response.stream is not None
        assert await response.stream.read() == b"some"
        started = time.monotonic()
        with pytest.raises(HttpError) as caught:
            await response.stream.read()
        elapsed = time.monotonic() - started
        response.stream.close()
    assert caught.value.timeout and 0.15 <= elapsed < 1.0


async def test_trailing_bytes_after_a_streamed_body_retire_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if n == 1:
            writer.write(head_only(20) + b"x" * 20 + b"GARBAGE")
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(f"conn{n}".encode()))

    async with serving(handler) as server, pool_for(server) as pool:
        response = await pool.request(GET, stream_over=OVER)
        assert response.stream is not None and await read_all(response.stream) == b"x" * 20
        assert (await pool.request(GET)).body == b"conn2"


async def test_a_request_cancelled_once_its_body_streams_frees_the_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if n == 1:
            writer.write(head_only(1000) + b"part")
            await writer.drain()
            await asyncio.sleep(5)
        writer.write(answer(f"conn{n}".encode()))

    async def reader_task(pool: object) -> None:
        response = await pool.request(GET, stream_over=OVER)  # type: ignore[attr-defined]
        try:
            await read_all(response.stream)
        finally:
            response.stream.close()

    async with serving(handler) as server, pool_for(server, max_connections=1) as pool:
        task = asyncio.create_task(reader_task(pool))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await asyncio.wait_for(pool.request(GET), 2.0)).body == b"conn2"


async def test_closing_a_stream_wakes_a_reader_waiting_on_it() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head_only(1_000_000) + b"x" * 10)  # then nothing more
        await writer.drain()
        await asyncio.sleep(15)

    async with serving(handler) as server, pool_for(server, max_connections=1) as pool:
        first = await pool.request(GET, stream_over=OVER)
        assert first.stream is not None
        assert await first.stream.read() == b"x" * 10
        waiting = asyncio.create_task(first.stream.read())
        await asyncio.sleep(0.05)
        first.stream.close()
        assert await asyncio.wait_for(waiting, 5) == b""
    assert server.connections == 1
