"""The ranged reader (storage/s3/ranged.py) against real loopback sockets: a tiny asyncio server,
scripted per test, answers as awkwardly as a real network can."""

from __future__ import annotations

import asyncio
import os

import pytest
from tests.unit.test_http1 import GAP_S, Server, answer, serving, write_in_pieces

from s3batch.storage.s3.http1 import HttpError
from s3batch.storage.s3.ranged import RangeReader

pytestmark = pytest.mark.timeout(20)

GET = b"GET /k HTTP/1.1\r\nHost: test\r\nRange: bytes=0-9\r\nContent-Length: 0\r\n\r\n"


def reader_for(server: Server, read_timeout_s: float = 2.0) -> RangeReader:
    return RangeReader(
        "127.0.0.1", server.port, ssl_context=None, connect_timeout_s=1.0, read_timeout_s=read_timeout_s
    )


async def test_the_body_lands_in_the_buffer_whole_however_it_arrives() -> None:
    body = os.urandom(300_000)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        whole = answer(body, "206 Partial Content", "Content-Range: bytes 0-299999/300000\r\n")
        # The head and the body's start in one piece, then the rest in uneven pieces.
        cut = len(whole) - len(body) + 10
        await write_in_pieces(writer, whole[:cut], whole[cut : cut + 7], whole[cut + 7 :])

    async with serving(handler) as server:
        ranged = reader_for(server)
        buffer = bytearray(len(body))
        try:
            got = await ranged.read_into(GET, buffer)
        finally:
            ranged.close()
    assert got.status == 206 and got.body == b""
    assert got.headers["content-range"] == "bytes 0-299999/300000"
    assert buffer == body


async def test_a_socket_is_kept_alive_for_the_next_read() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for i in range(3):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer(bytes([i]) * 10, "206 Partial Content"))
            await writer.drain()

    async with serving(handler) as server:
        ranged = reader_for(server)
        try:
            for i in range(3):
                buffer = bytearray(10)
                await ranged.read_into(GET, buffer)
                assert buffer == bytes([i]) * 10
        finally:
            ranged.close()
    assert server.connections == 1


async def test_an_error_answer_comes_back_with_its_body_and_fills_nothing() -> None:
    error = b"<Error><Code>PreconditionFailed</Code></Error>"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(error, "412 Precondition Failed"))
        await writer.drain()
        await asyncio.sleep(1)

    async with serving(handler) as server:
        ranged = reader_for(server)
        buffer = bytearray(b"untouched!")
        try:
            got = await ranged.read_into(GET, buffer)
        finally:
            ranged.close()
    assert (got.status, got.body) == (412, error)
    assert buffer == b"untouched!"


@pytest.mark.parametrize(
    "reply",
    [
        answer(b"x" * 9, "206 Partial Content"),  # shorter than the range
        answer(b"x" * 11, "206 Partial Content"),  # longer
        b"HTTP/1.1 206 Partial Content\r\nTransfer-Encoding: chunked\r\n\r\na\r\nxxxxxxxxxx\r\n0\r\n\r\n",
        b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\n\r\nxxxx",  # then the close
        b"garbage\r\n\r\n",
    ],
    ids=["short", "long", "chunked", "cut", "garbage"],
)
async def test_an_answer_that_does_not_fill_the_buffer_exactly_fails(reply: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(reply)
        await writer.drain()

    async with serving(handler) as server:
        ranged = reader_for(server)
        try:
            with pytest.raises(HttpError):
                await ranged.read_into(GET, bytearray(10))
        finally:
            ranged.close()


async def test_a_kept_alive_socket_the_server_closed_is_replaced_once() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"%d" % n * 10, "206 Partial Content"))
        await writer.drain()
        if n == 1:
            writer.close()  # closes the kept-alive socket behind the client's back

    async with serving(handler) as server:
        ranged = reader_for(server)
        try:
            first, second = bytearray(10), bytearray(10)
            await ranged.read_into(GET, first)
            await asyncio.sleep(5 * GAP_S)
            await ranged.read_into(GET, second)
        finally:
            ranged.close()
    assert (first, second) == (b"1" * 10, b"2" * 10)
    assert server.connections == 2


async def test_no_answer_within_the_read_timeout_fails_as_a_timeout() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)

    async with serving(handler) as server:
        ranged = reader_for(server, read_timeout_s=0.3)
        try:
            with pytest.raises(HttpError) as caught:
                await ranged.read_into(GET, bytearray(10))
        finally:
            ranged.close()
    assert caught.value.timeout and caught.value.sent


async def test_close_cuts_a_read_in_flight_short_and_refuses_new_ones() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\n\r\nxx")
        await writer.drain()
        await asyncio.sleep(5)

    async with serving(handler) as server:
        ranged = reader_for(server, read_timeout_s=10.0)
        reading = asyncio.create_task(ranged.read_into(GET, bytearray(10)))
        await asyncio.sleep(10 * GAP_S)
        started = asyncio.get_running_loop().time()
        ranged.close()
        with pytest.raises(HttpError):
            await reading
        assert asyncio.get_running_loop().time() - started < 2.0  # not the 10 s read timeout
        with pytest.raises(HttpError) as refused:
            await ranged.read_into(GET, bytearray(10))
    assert not refused.value.sent


async def test_a_refused_connection_fails_unsent() -> None:
    async with serving(lambda reader, writer, n: asyncio.sleep(0)) as server:
        port = server.port
    ranged = RangeReader("127.0.0.1", port, ssl_context=None, connect_timeout_s=1.0, read_timeout_s=1.0)
    try:
        with pytest.raises(HttpError) as caught:
            await ranged.read_into(GET, bytearray(10))
    finally:
        ranged.close()
    assert not caught.value.sent


async def test_a_request_answered_on_a_reused_socket_is_not_sent_again() -> None:
    # The second read's answer is cut short on the kept-alive socket: that is the answer's
    # failure, not a stale socket's, so the GET is not re-sent behind the caller's back.
    requests: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for i in range(2):
            await reader.readuntil(b"\r\n\r\n")
            requests.append(n)
            if n == 1 and i == 1:
                writer.write(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\n\r\nxxxx")
                await writer.drain()
                writer.close()
                return
            writer.write(answer(b"y" * 10, "206 Partial Content"))
            await writer.drain()

    async with serving(handler) as server:
        ranged = reader_for(server)
        try:
            await ranged.read_into(GET, bytearray(10))
            with pytest.raises(HttpError):
                await ranged.read_into(GET, bytearray(10))
        finally:
            ranged.close()
    assert requests == [1, 1]


async def test_a_cancelled_read_stops_writing_its_buffer_and_frees_its_thread() -> None:
    from s3batch.storage.s3.ranged import READ_THREADS

    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if n <= READ_THREADS:
            writer.write(b"HTTP/1.1 206 Partial Content\r\nContent-Length: 10\r\n\r\nab")
            await writer.drain()
            await release.wait()
            writer.write(b"cdefghij")
        else:
            writer.write(answer(b"z" * 10, "206 Partial Content"))
        await writer.drain()
        await asyncio.sleep(2)

    async with serving(handler) as server:
        ranged = reader_for(server, read_timeout_s=5.0)
        buffers = [bytearray(10) for _ in range(READ_THREADS)]
        try:
            tasks = [asyncio.create_task(ranged.read_into(GET, b)) for b in buffers]
            await asyncio.sleep(0.3)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            fresh = bytearray(10)
            await asyncio.wait_for(ranged.read_into(GET, fresh), 1.0)  # no thread held
            release.set()
            await asyncio.sleep(0.2)
        finally:
            ranged.close()
    assert fresh == b"z" * 10
    assert all(b == b"ab" + bytes(8) for b in buffers)  # nothing written after the cancel


async def test_close_fails_a_queued_read_as_an_http_error() -> None:
    from s3batch.storage.s3.ranged import READ_THREADS

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(5)

    async with serving(handler) as server:
        ranged = reader_for(server, read_timeout_s=5.0)
        tasks = [asyncio.create_task(ranged.read_into(GET, bytearray(10))) for _ in range(READ_THREADS + 1)]
        await asyncio.sleep(0.3)
        ranged.close()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, HttpError) for r in results), results


async def test_a_server_that_ignores_the_range_is_told_apart() -> None:
    from s3batch.storage.s3.ranged import RangeIgnored

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer(b"w" * 30))  # 200, the whole object, no Content-Range
        await writer.drain()

    async with serving(handler) as server:
        ranged = reader_for(server)
        try:
            with pytest.raises(RangeIgnored):
                await ranged.read_into(GET, bytearray(10))
        finally:
            ranged.close()
