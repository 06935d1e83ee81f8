"""A small HTTP/1.1 client for the lean S3 request path: keep-alive connections, one request
in flight per connection, bodies held in memory.

Why not aiohttp or botocore's stack: on this workload (tens of thousands of tiny requests)
their per-request Python cost — ~0.3 ms for aiohttp, ~0.9 ms for botocore on top — is larger
than the server's own cost per request, so the client, not the store, set the pace. This
module does the minimum an S3 call needs: write one request, parse a status line, headers and
a Content-Length or chunked body, and hand the connection back. It is not a general client:
no redirects, no proxies, no request pipelining; callers fall back to aiobotocore for
everything else (S3Store leaves an endpoint reached through a proxy to it). TLS settings are
the caller's: it passes the `ssl.SSLContext` botocore would use.

Bodies are held in memory, except that a caller may ask for a successful answer's larger body
as a stream (`stream_over`): the answer comes back at its headers, and its `BodyStream` yields
the body as it arrives, pausing the socket while STREAM_BUFFER_BYTES wait unread. The
connection goes back to the pool once the whole body has arrived; a stream closed before that
drops its connection, so what the server still sends can never reach another request.

Failures leave as `HttpError` (connection trouble, a read timeout, a closed pool) with `sent`
telling the caller whether the request may have reached the server. A connection found closed
before the request is written fails at once with `sent=False` (the pool then retries a reused
one on a new connection) rather than at the read timeout; a closed pool refuses new requests
and fails the ones waiting for a connection. Chunked bodies are parsed incrementally, so one
arriving in many small segments costs time linear in its size.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
from collections import deque
from dataclasses import dataclass
from typing import cast

#: Largest status line + headers accepted, in bytes: a server sending more is broken.
MAX_HEAD_BYTES = 64 * 1024
#: Largest body accepted, in bytes: S3 answers on this path (a 1,000-key listing is ~300 KiB)
#: are far below it; more means a wrong endpoint, not a bigger page.
MAX_BODY_BYTES = 64 * 1024 * 1024
#: Seconds an idle keep-alive connection is trusted before it is closed instead of reused:
#: servers close idle connections (rclone after ~1 min, S3 after ~20 s), and a write into a
#: half-closed socket would fail the next request.
IDLE_REUSE_S = 15.0

#: Bytes of a streamed body held unread before the socket is paused (read again below it).
STREAM_BUFFER_BYTES = 1024 * 1024

_HEADER_END = b"\r\n\r\n"
#: What a Content-Length or a chunk size may be (int() would also take "+1", "1_0", "0x1", "-1").
_DIGITS = re.compile(r"[0-9]+")
_HEX_DIGITS = re.compile(rb"[0-9A-Fa-f]+")


class HttpError(Exception):
    """No complete HTTP answer. `sent`: the request may have reached the server. `tls`: the
    server's TLS certificate was refused (not trusted, or not for this host)."""

    def __init__(self, message: str, *, sent: bool, timeout: bool = False, tls: bool = False) -> None:
        super().__init__(message)
        self.sent = sent
        self.timeout = timeout
        self.tls = tls


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    #: Lower-case names; repeated headers joined with ", ".
    headers: dict[str, str]
    body: bytes
    #: The body as it arrives, when it was asked for as a stream (`body` is then empty).
    stream: BodyStream | None = None


class _Lease:
    """One request's hold on its connection: handed back to the pool exactly once, by the
    request or, when its body streams, by the stream."""

    __slots__ = ("conn", "done", "pool")

    def __init__(self, pool: ConnectionPool, conn: _Connection) -> None:
        self.pool, self.conn, self.done = pool, conn, False

    def release(self, *, reuse: bool) -> None:
        if self.done:
            return
        self.done = True
        if not reuse:
            self.conn.keep_alive = False
        self.pool._release(self.conn)


class BodyStream:
    """A successful answer's body, read as it arrives (ConnectionPool.request's `stream_over`).

    `read()` gives the next piece, b"" at the end, or raises HttpError (the connection was lost,
    or no byte came within the pool's read timeout). `close()` is idempotent and always
    needed unless the body was read to its end: it drops the connection when bytes are still
    to come."""

    def __init__(self, conn: _Connection, lease: _Lease, read_timeout_s: float) -> None:
        self._conn = conn
        self._lease = lease
        self._read_timeout_s = read_timeout_s
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._ended = False
        self._closed = False
        self._paused = False
        self._error: HttpError | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def ended(self) -> bool:
        """Whether the whole body has arrived (its connection is back in the pool)."""
        return self._ended

    async def read(self) -> bytes:
        while not self._pieces:
            if self._error is not None:
                raise self._error
            if self._ended or self._closed:
                return b""
            await self._wait()
        piece = self._pieces.popleft()
        self._buffered -= len(piece)
        if self._paused and self._buffered < STREAM_BUFFER_BYTES and not self._ended:
            self._paused = False
            if self._conn.transport is not None:
                self._conn.transport.resume_reading()
        return piece

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pieces.clear()
        self._buffered = 0
        if not self._ended and self._error is None:
            # Bytes are still on their way: this connection can carry no other request.
            self._conn.detach(self)
            if self._conn.transport is not None:
                self._conn.transport.abort()
            self._lease.release(reuse=False)
        self._wake()  # a reader waiting meanwhile gets the end (b""), not a wait forever

    async def _wait(self) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        timer = loop.call_later(self._read_timeout_s, self._timed_out)
        try:
            await self._waiter
        finally:
            timer.cancel()
            self._waiter = None

    def _timed_out(self) -> None:
        if not self._ended and not self._closed and self._error is None:
            reason = HttpError(f"no body bytes within {self._read_timeout_s:g} s", sent=True, timeout=True)
            self._conn.abort(reason)
        self._wake()  # whatever the state, the waiting reader looks again

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- the connection's side ----------------------------------------------------------------

    def _push(self, piece: bytes) -> None:
        if self._closed or not piece:
            return
        self._pieces.append(piece)
        self._buffered += len(piece)
        self._wake()

    def _pause_if_full(self) -> None:
        transport = self._conn.transport
        if self._buffered >= STREAM_BUFFER_BYTES and not self._paused and transport is not None:
            self._paused = True
            transport.pause_reading()

    def _end(self) -> None:
        self._ended = True
        self._wake()
        self._lease.release(reuse=True)

    def _fail(self, exc: HttpError) -> None:
        if self._ended or self._closed or self._error is not None:
            return
        self._error = exc
        self._wake()
        self._lease.release(reuse=False)


class _Connection(asyncio.Protocol):
    """One socket; parses the answer to the one request it carries."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._head_only = False
        self._status = 0
        self._headers: dict[str, str] | None = None
        self._length = -1  # -1: until close; -2: chunked
        #: The chunked body's parser (state kept between segments); None unless chunked.
        self._chunks: _Dechunker | None = None
        #: The request's `stream_over` (None: the body is read whole) and its lease.
        self._stream_over: int | None = None
        self._lease: _Lease | None = None
        #: The body being streamed, until it has all arrived, fails or is closed.
        self.stream: BodyStream | None = None
        self.closed = False
        self.keep_alive = True
        self.idle_since = 0.0
        self.used = False
        #: Some of the answer to the current request has arrived: the server has the request.
        self.answered = False

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        if self.stream is not None:
            if self._length > 0 and not self._buf and len(data) <= self._length:
                self._length -= len(data)  # the usual piece: handed on without a copy
                self._stream_piece(data)
                return
            self._buf += data
            self._parse_guarded()
            return
        self._buf += data
        if self._waiter is None:  # bytes nobody asked for: the connection can't be trusted
            self.keep_alive = False
            return
        self.answered = True
        self._parse_guarded()

    def eof_received(self) -> bool | None:
        if self.stream is not None and self._length == -1:
            self._end_stream()  # a streamed body delimited by the close
        elif self._waiter is not None and self._headers is not None and self._length == -1:
            self._finish(bytes(self._buf))  # body delimited by the close
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        reason = str(exc) if exc else "server closed the connection"
        if self._waiter is not None and not self._waiter.done():
            self._fail(HttpError(f"connection lost: {reason}", sent=True))
        elif self.stream is not None:
            self._fail(HttpError(f"connection lost mid-body: {reason}", sent=True))

    # -- one request ------------------------------------------------------------------------

    def send(
        self,
        data: bytes,
        head_only: bool,
        stream_over: int | None = None,
        lease: _Lease | None = None,
        body: bytes | bytearray | memoryview = b"",
    ) -> asyncio.Future[Response]:
        assert self.transport is not None
        # Reset first: a stale `answered` from the last request would block the stale retry.
        self.used, self.answered = True, False
        if self.closed or self.transport.is_closing():
            # The close won the race with this write: connection_lost has already run (or a
            # closing transport drops the write), so nothing would complete a waiter before
            # the read timeout. Nothing was written, hence sent=False.
            self.keep_alive = False
            raise HttpError("connection closed before the request was sent", sent=False)
        self._waiter = self._loop.create_future()
        self._head_only, self._headers, self._length = head_only, None, -1
        self._chunks = None
        self._stream_over, self._lease, self.stream = stream_over, lease, None
        self._buf.clear()
        self.transport.write(data)
        if body:
            self.transport.write(body)
        return self._waiter

    def abort(self, reason: HttpError) -> None:
        self._fail(reason)
        if self.transport is not None:
            self.transport.abort()

    def detach(self, stream: BodyStream) -> None:
        """`stream` was closed by its reader: bytes still arriving go nowhere."""
        if self.stream is stream:
            self.stream = None
            self.keep_alive = False

    def _fail(self, exc: HttpError) -> None:
        self.keep_alive = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        stream, self.stream = self.stream, None
        if stream is not None:
            stream._fail(exc)

    def _finish(self, body: bytes) -> None:
        waiter, self._waiter = self._waiter, None
        assert self._headers is not None
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, self._headers, body))

    def _parse_guarded(self) -> None:
        try:
            self._parse()
        except HttpError as exc:
            self._fail(exc)

    def _parse(self) -> None:
        if self._headers is None:
            if not self._parse_head():
                return
            if self._streams():
                self._start_stream()
        if self.stream is not None:
            self._feed_stream()
            return
        if self._length >= 0:
            if len(self._buf) >= self._length:
                body = bytes(self._buf[: self._length])
                if len(self._buf) > self._length:
                    self.keep_alive = False  # trailing bytes: out of step, don't reuse
                self._finish(body)
        elif self._chunks is not None:
            whole = self._chunks.feed(self._buf)
            if whole is not None:
                if self._buf:
                    self.keep_alive = False  # trailing bytes: out of step, don't reuse
                self._finish(whole)
        elif len(self._buf) > MAX_BODY_BYTES:
            raise HttpError("response body too large", sent=True)

    def _may_stream(self, status: int) -> bool:
        """Whether this answer's body may be streamed: a success (an error's body is the small
        XML that says why), asked for as a stream."""
        return self._stream_over is not None and 200 <= status < 300 and not self._head_only

    def _streams(self) -> bool:
        """Stream a body of unknown length, or one longer than the caller holds in memory."""
        if not self._may_stream(self._status):
            return False
        assert self._stream_over is not None
        return self._length < 0 or self._length > self._stream_over

    def _start_stream(self) -> None:
        """Answer at the headers; the body follows through the stream."""
        assert self._lease is not None and self._headers is not None
        self.stream = BodyStream(self, self._lease, self._lease.pool.read_timeout_s)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, self._headers, b"", self.stream))

    def _feed_stream(self) -> None:
        """Hand what has arrived of a streamed body on; end the stream at the body's end."""
        buf = self._buf
        if self._length >= 0:
            take = min(len(buf), self._length)
            if take:
                with memoryview(buf) as view:
                    piece = bytes(view[:take])
                del buf[:take]
                self._length -= take
                self._stream_piece(piece)
            elif self._length == 0:
                self._end_stream()
        elif self._chunks is not None:
            whole = self._chunks.feed(buf)
            stream = self.stream
            assert stream is not None
            if whole is not None:
                stream._push(whole)  # the chunks not drained before
                self._end_stream()
            else:
                for piece in self._chunks.drain():
                    stream._push(piece)
                stream._pause_if_full()
        elif buf:
            piece = bytes(buf)
            buf.clear()
            self._stream_piece(piece)

    def _stream_piece(self, piece: bytes) -> None:
        stream = self.stream
        assert stream is not None
        stream._push(piece)
        if self._length == 0:
            self._end_stream()
        else:
            stream._pause_if_full()

    def _end_stream(self) -> None:
        stream, self.stream = self.stream, None
        if self._buf:
            self.keep_alive = False  # trailing bytes: out of step, don't reuse
        if stream is not None:
            stream._end()

    def _parse_head(self) -> bool:
        end = self._buf.find(_HEADER_END)
        if end < 0:
            if len(self._buf) > MAX_HEAD_BYTES:
                raise HttpError("response headers too large", sent=True)
            return False
        lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[: end + 4]
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if not (version.startswith("HTTP/1.") and _DIGITS.fullmatch(code) and rest[3:4] in ("", " ")):
            raise HttpError(f"malformed status line {lines[0][:80]!r}", sent=True)
        status = int(code)
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            return self._parse_head() if self._buf else False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self._status, self._headers = status, headers
        # A body that may stream is never held whole: no limit on its size. A chunked one is
        # the exception: a chunk is handed on only once whole, so one huge chunk would be held
        # unread; such bodies keep the limit of one held whole.
        limit = None if self._may_stream(status) else MAX_BODY_BYTES
        self._length = _body_length(status, headers, self._head_only, limit)
        self._chunks = _Dechunker(MAX_BODY_BYTES) if self._length == -2 else None
        connection = headers.get("connection", "").lower()
        if connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive"):
            self.keep_alive = False
        if self._length == -1:
            self.keep_alive = False
        return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a DNS name: where it leads is not known here
        return False


def _body_length(
    status: int, headers: dict[str, str], head_only: bool, limit: int | None = MAX_BODY_BYTES
) -> int:
    if head_only or status in (204, 304):
        return 0
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return -2
    raw = headers.get("content-length")
    if raw is None:
        return -1
    if not _DIGITS.fullmatch(raw):
        raise HttpError(f"malformed Content-Length {raw[:40]!r}", sent=True)
    length = int(raw)
    if limit is not None and length > limit:
        raise HttpError(f"Content-Length {length} out of range", sent=True)
    return length


class _Dechunker:
    """Parses a chunked body out of the connection's buffer as it grows, consuming what it has
    read and keeping its place between calls: rescanning the buffer on every segment made a
    body that arrives in n segments cost O(n²)."""

    __slots__ = ("_limit", "_parts", "_scan", "_size", "_total")

    def __init__(self, limit: int | None = MAX_BODY_BYTES) -> None:
        """`limit`: the most body bytes accepted (None: a streamed body, never held whole)."""
        self._limit = limit
        self._parts: list[bytes] = []
        self._total = 0
        #: -1: a chunk-size line is next; >= 0: that chunk's data (and its CRLF); -2: trailers.
        self._size = -1
        #: Where to resume looking for the CRLF of a line not yet whole (bytes already searched).
        self._scan = 0

    def feed(self, buf: bytearray) -> bytes | None:
        """The whole body once the last chunk and the trailers have arrived, else None (call
        again when `buf` has grown). Consumes the bytes it parsed from the front of `buf`."""
        while True:
            if self._size == -1:
                line = self._line(buf)
                if line is None:
                    return None
                self._start_chunk(line)
            elif self._size == -2:
                line = self._line(buf)
                if line is None:
                    return None
                if not line:  # the empty line that ends the trailers (rare), and the body
                    return b"".join(self._parts)
            elif not self._take_data(buf):
                return None

    def drain(self) -> list[bytes]:
        """The chunks' data parsed so far and not yet drained (for a streamed body); the whole
        body `feed` returns at the end is then only what was not drained."""
        parts, self._parts = self._parts, []
        return parts

    def _line(self, buf: bytearray) -> bytes | None:
        end = buf.find(b"\r\n", self._scan)
        if end < 0:
            if len(buf) > MAX_HEAD_BYTES:
                raise HttpError("chunk size or trailer line too long", sent=True)
            self._scan = max(len(buf) - 1, 0)  # a trailing CR may be half of the CRLF
            return None
        line = bytes(buf[:end])
        del buf[: end + 2]  # amortized O(1): CPython's bytearray drops a prefix by moving its start
        self._scan = 0
        return line

    def _start_chunk(self, line: bytes) -> None:
        size_text = line.split(b";", 1)[0].strip()  # chunk extensions are ignored
        if not _HEX_DIGITS.fullmatch(size_text):
            raise HttpError(f"malformed chunk size {size_text[:20]!r}", sent=True)
        size = int(size_text, 16)
        self._total += size
        # Checked on the size line, before the data: no waiting for bytes that will be refused.
        if self._limit is not None and self._total > self._limit:
            raise HttpError("response body too large", sent=True)
        self._size = size if size else -2

    def _take_data(self, buf: bytearray) -> bool:
        size = self._size
        if len(buf) < size + 2:
            return False
        if buf[size : size + 2] != b"\r\n":
            raise HttpError("malformed chunk: no CRLF after its data", sent=True)
        self._parts.append(bytes(buf[:size]))
        del buf[: size + 2]
        self._size = -1
        return True


class ConnectionPool:
    """Keep-alive connections to one host:port, at most `max_connections` open at once."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: bool,
        max_connections: int,
        connect_timeout_s: float,
        read_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """`ssl_context`: the TLS settings when `tls` (the system's defaults when None)."""
        self._host, self._port = host, port
        self._ssl: ssl.SSLContext | None = None
        if tls:
            self._ssl = ssl_context or ssl.create_default_context()
        self._max = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False

    @property
    def read_timeout_s(self) -> float:
        return self._read_timeout_s

    @property
    def tamper_proof(self) -> bool:
        """Whether no one on a network between here and the server can change the bytes sent:
        TLS with the server's certificate checked, or a loopback address (whose traffic never
        leaves this machine)."""
        if self._ssl is not None:
            # TLS without checking the certificate lets anyone on the way in: not tamper-proof.
            return self._ssl.verify_mode == ssl.CERT_REQUIRED and self._ssl.check_hostname
        return _is_loopback(self._host)

    async def request(
        self,
        data: bytes,
        *,
        head_only: bool = False,
        retry_stale: bool = True,
        stream_over: int | None = None,
        body: bytes | bytearray | memoryview = b"",
    ) -> Response:
        """Send one serialized request and read its answer: `data`, then `body` (a large body
        passed apart is written as it is, not copied into one buffer with the head).

        A request that fails on a reused keep-alive connection before any answer arrived is
        sent once more on a new connection when `retry_stale`: the server may have closed the
        idle socket as we wrote (a race HTTP/1.1 allows), which says nothing about the store.

        `stream_over`: a successful answer whose body is longer than this many bytes, or of a
        length unknown until its end (chunked, or up to the close), comes back at its headers
        with the body in `Response.stream`, which the caller must read to its end or close.
        """
        conn = await self._acquire()
        reused = conn.used
        try:
            return await self._exchange(conn, data, body, head_only, stream_over)
        except HttpError as exc:
            # A timeout, or an answer cut short, means the server has the request: not stale.
            # A pool closed meanwhile would refuse the retry: report the first failure instead.
            if not (reused and retry_stale) or exc.timeout or conn.answered or self._closed:
                raise
        return await self._exchange(await self._acquire(fresh=True), data, body, head_only, stream_over)

    async def _exchange(
        self,
        conn: _Connection,
        data: bytes,
        body: bytes | bytearray | memoryview,
        head_only: bool,
        stream_over: int | None,
    ) -> Response:
        """One request on `conn`, which goes back to the pool (or is closed) either way: at
        once, or when its streamed body has all arrived (or is closed)."""
        lease = _Lease(self, conn)
        try:
            response = await self._read_answer(conn, data, body, head_only, stream_over, lease)
        except BaseException:
            # Failed or cancelled mid-request: a late answer would arrive out of step.
            if not lease.done:
                if conn.stream is not None:
                    conn.stream.close()  # drops the connection, and hands the lease back
                else:
                    lease.release(reuse=False)
            raise
        if response.stream is None:
            lease.release(reuse=True)
        return response

    async def _read_answer(
        self,
        conn: _Connection,
        data: bytes,
        body: bytes | bytearray | memoryview,
        head_only: bool,
        stream_over: int | None,
        lease: _Lease,
    ) -> Response:
        loop = asyncio.get_running_loop()
        waiter = conn.send(data, head_only, stream_over, lease, body)
        timer = loop.call_later(
            self._read_timeout_s,
            conn.abort,
            HttpError(f"no answer within {self._read_timeout_s:g} s", sent=True, timeout=True),
        )
        try:
            return await waiter
        finally:
            timer.cancel()

    async def _acquire(self, fresh: bool = False) -> _Connection:
        if self._closed:
            raise HttpError("connection pool closed", sent=False)
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._idle and not fresh:
            conn = self._idle.pop()
            if conn.keep_alive and not conn.closed and now - conn.idle_since < IDLE_REUSE_S:
                return conn
            self._discard(conn)
        while self._open >= self._max:
            if self._idle:  # fresh wanted but the pool is full of idle ones: drop one
                self._discard(self._idle.pop(0))
                break
            await self._wait_turn(loop)
            if self._idle and not fresh:
                return await self._acquire()
        self._open += 1
        try:
            return await self._connect(loop)
        except BaseException:
            self._open -= 1
            self._wake()
            raise

    async def _wait_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until a connection is released or discarded; raise if the pool closed meanwhile."""
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            elif waiter.done() and not waiter.cancelled():
                self._wake()  # woken, then cancelled before running: pass the turn on
            raise
        if self._closed:
            raise HttpError("connection pool closed", sent=False)

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                transport, conn = await loop.create_connection(
                    lambda: _Connection(loop), self._host, self._port, ssl=self._ssl
                )
        except TimeoutError:
            raise HttpError(
                f"connect to {self._host}:{self._port} timed out after {self._connect_timeout_s:g} s",
                sent=False,
                timeout=True,
            ) from None
        except ssl.SSLCertVerificationError as exc:  # before OSError, of which it is one
            raise HttpError(
                f"TLS certificate of {self._host}:{self._port} refused: {exc.verify_message or exc}",
                sent=False,
                tls=True,
            ) from None
        except OSError as exc:
            raise HttpError(f"connect to {self._host}:{self._port}: {exc}", sent=False) from None
        if conn.transport is None:  # connection_made not run yet (loops may schedule it)
            conn.transport = transport
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.keep_alive and not conn.closed and not self._closed:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)
        else:
            self._discard(conn)
            return
        self._wake()

    def _discard(self, conn: _Connection) -> None:
        if conn.transport is not None:
            conn.transport.close()
        self._open -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        """Close the idle connections and refuse new requests. Requests in flight finish (their
        connections are then closed); requests waiting for a connection fail at once."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn)
        # Wake every waiter, not one: each sees the pool closed and fails instead of waiting
        # for a slot that no release will ever hand it.
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
