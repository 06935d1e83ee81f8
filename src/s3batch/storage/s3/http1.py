"""A small HTTP/1.1 client for the lean S3 request path: keep-alive connections, one request
in flight per connection, bodies held in memory.

Why not aiohttp or botocore's stack: on this workload (tens of thousands of tiny requests)
their per-request Python cost — ~0.3 ms for aiohttp, ~0.9 ms for botocore on top — is larger
than the server's own cost per request, so the client, not the store, set the pace. This
module does the minimum an S3 call needs: write one request, parse a status line, headers and
a Content-Length or chunked body, and hand the connection back. It is not a general client:
no redirects, no proxies, no streaming, no request pipelining; callers fall back to
aiobotocore for everything else (S3Store leaves an endpoint reached through a proxy to it).
TLS settings are the caller's: it passes the `ssl.SSLContext` botocore would use.

Failures leave as `HttpError` (connection trouble, a read timeout, a closed pool) with `sent`
telling the caller whether the request may have reached the server. A connection found closed
before the request is written fails at once with `sent=False` (the pool then retries a reused
one on a new connection) rather than at the read timeout; a closed pool refuses new requests
and fails the ones waiting for a connection. Chunked bodies are parsed incrementally, so one
arriving in many small segments costs time linear in its size.
"""

from __future__ import annotations

import asyncio
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
        self._buf += data
        if self._waiter is None:  # bytes nobody asked for: the connection can't be trusted
            self.keep_alive = False
            return
        self.answered = True
        try:
            self._parse()
        except HttpError as exc:
            self._fail(exc)

    def eof_received(self) -> bool | None:
        if self._waiter is not None and self._headers is not None and self._length == -1:
            self._finish(bytes(self._buf))  # body delimited by the close
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            reason = str(exc) if exc else "server closed the connection"
            self._fail(HttpError(f"connection lost: {reason}", sent=True))

    # -- one request ------------------------------------------------------------------------

    def send(self, data: bytes, head_only: bool) -> asyncio.Future[Response]:
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
        self._buf.clear()
        self.transport.write(data)
        return self._waiter

    def abort(self, reason: HttpError) -> None:
        self._fail(reason)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: HttpError) -> None:
        self.keep_alive = False
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _finish(self, body: bytes) -> None:
        waiter, self._waiter = self._waiter, None
        assert self._headers is not None
        if waiter is not None and not waiter.done():
            waiter.set_result(Response(self._status, self._headers, body))

    def _parse(self) -> None:
        if self._headers is None and not self._parse_head():
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
        self._length = _body_length(status, headers, self._head_only)
        self._chunks = _Dechunker() if self._length == -2 else None
        connection = headers.get("connection", "").lower()
        if connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive"):
            self.keep_alive = False
        if self._length == -1:
            self.keep_alive = False
        return True


def _body_length(status: int, headers: dict[str, str], head_only: bool) -> int:
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
    if length > MAX_BODY_BYTES:
        raise HttpError(f"Content-Length {length} out of range", sent=True)
    return length


class _Dechunker:
    """Parses a chunked body out of the connection's buffer as it grows, consuming what it has
    read and keeping its place between calls: rescanning the buffer on every segment made a
    body that arrives in n segments cost O(n²)."""

    __slots__ = ("_parts", "_scan", "_size", "_total")

    def __init__(self) -> None:
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
        if self._total > MAX_BODY_BYTES:
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

    async def request(self, data: bytes, *, head_only: bool = False, retry_stale: bool = True) -> Response:
        """Send one serialized request and read its answer.

        A request that fails on a reused keep-alive connection before any answer arrived is
        sent once more on a new connection when `retry_stale`: the server may have closed the
        idle socket as we wrote (a race HTTP/1.1 allows), which says nothing about the store.
        """
        conn = await self._acquire()
        reused = conn.used
        try:
            return await self._exchange(conn, data, head_only)
        except HttpError as exc:
            # A timeout, or an answer cut short, means the server has the request: not stale.
            # A pool closed meanwhile would refuse the retry: report the first failure instead.
            if not (reused and retry_stale) or exc.timeout or conn.answered or self._closed:
                raise
        return await self._exchange(await self._acquire(fresh=True), data, head_only)

    async def _exchange(self, conn: _Connection, data: bytes, head_only: bool) -> Response:
        """One request on `conn`, which goes back to the pool (or is closed) either way."""
        try:
            response = await self._read_answer(conn, data, head_only)
        except BaseException:
            # Failed or cancelled mid-request: a late answer would arrive out of step.
            conn.keep_alive = False
            self._release(conn)
            raise
        self._release(conn)
        return response

    async def _read_answer(self, conn: _Connection, data: bytes, head_only: bool) -> Response:
        loop = asyncio.get_running_loop()
        waiter = conn.send(data, head_only)
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
