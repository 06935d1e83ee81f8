"""A fault-injecting HTTP reverse proxy in front of a real S3 server, for tests and benchmarks.

    with FaultProxy(upstream, FaultPlan(slowdown=0.10, reset=0.02, path_prefix="/b/data/")) as p:
        ...  # point the S3 client at p.url
        p.stats.injected["slowdown"], p.stats.max_in_flight

It listens on 127.0.0.1 (an ephemeral port) with its own event loop in a background thread.
A request that matches the plan's filter draws from a seeded RNG and may get, instead of the
server's answer: 503 SlowDown, 500 InternalError or 429 SlowDown (each with an S3 XML error
body), a connection reset (the transport is aborted with no response), or extra latency before
it is forwarded. Everything else is forwarded byte for byte: method, path and query as sent,
every header including Host (the client signed for the proxy's host:port, and the Host it
signed is what the server sees, so SigV4-checking servers such as rclone accept it; moto accepts
any signature), and the body; the answer comes back with its status, headers and body as is.

Only requests matching the filter (methods, path prefix, query substring) are faulted, so a
test can throttle the tasks' calls without breaking its own setup, the manifest read or the
report write. Imported by tests (tests/ is on sys.path via rootdir conftest) and by
bench/bench_faults.py (which puts tests/ on sys.path).
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType

import aiohttp
from aiohttp import web
from yarl import URL

#: Seconds start() waits for the server thread to listen, and stop() for it to finish.
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
#: Seconds one forwarded request may take upstream before the proxy answers 504.
UPSTREAM_TIMEOUT_S = 60.0
#: Connections the proxy keeps to the upstream server.
UPSTREAM_CONNECTIONS = 256
#: Samples of requests in flight kept (every SAMPLE_INTERVAL_S at most).
MAX_SAMPLES = 10_000
SAMPLE_INTERVAL_S = 0.05
#: Headers that describe one hop, not the message (RFC 9110 §7.6.1); never forwarded.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"}
)
#: What each injected status looks like, as S3 sends it.
ERRORS: dict[str, tuple[int, str, str]] = {
    "slowdown": (503, "SlowDown", "Please reduce your request rate."),
    "internal_error": (500, "InternalError", "We encountered an internal error. Please try again."),
    "too_many_requests": (429, "SlowDown", "Please reduce your request rate."),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultPlan:
    """Fault rates (each a probability per matching request, summed at most 1) and a filter."""

    slowdown: float = 0.0
    internal_error: float = 0.0
    too_many_requests: float = 0.0
    reset: float = 0.0
    #: Probability of delaying a request that is forwarded, and by how long (seconds).
    latency: float = 0.0
    latency_s: float = 0.0
    seed: int = 0
    #: Only requests with one of these methods are faulted (None: all methods).
    methods: frozenset[str] | None = None
    #: Only requests whose path starts with this (e.g. "/bucket/data/") are faulted.
    path_prefix: str = "/"
    #: Only requests whose raw query string contains this (e.g. "tagging") are faulted.
    query_contains: str = ""

    def __post_init__(self) -> None:
        total = self.slowdown + self.internal_error + self.too_many_requests + self.reset
        if not 0.0 <= total <= 1.0:
            raise ValueError(f"fault rates sum to {total}; expected 0..1")

    def matches(self, method: str, path: str, query: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return path.startswith(self.path_prefix) and self.query_contains in query

    def draw(self, rng: random.Random) -> str | None:
        """The fault for one matching request: an ERRORS name, "reset", or None."""
        x = rng.random()
        for name in ("slowdown", "internal_error", "too_many_requests", "reset"):
            x -= getattr(self, name)
            if x < 0:
                return name
        return None


@dataclass(slots=True)
class ProxyStats:
    """Counted on the proxy's loop; read it after stop() (or accept a slightly stale view)."""

    requests: int = 0
    forwarded: int = 0
    #: Faults by name: slowdown, internal_error, too_many_requests, reset, latency.
    injected: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    #: (seconds since start, requests in flight) over time.
    samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def faults(self) -> int:
        return sum(n for name, n in self.injected.items() if name != "latency")


def error_body(code: str, message: str, resource: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{resource}</Resource><RequestId>faultproxy</RequestId></Error>"
    ).encode()


class FaultProxy:
    """The proxy; a context manager that starts and stops it."""

    def __init__(self, upstream: str, plan: FaultPlan | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.plan = plan or FaultPlan()
        self.stats = ProxyStats()
        self.port = 0
        self._rng = random.Random(self.plan.seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._t0 = time.monotonic()
        self._last_sample = float("-inf")
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_plan(self, plan: FaultPlan) -> None:
        """Change the faults for later requests (the RNG is re-seeded from the new plan)."""
        self.plan = plan
        self._rng = random.Random(plan.seed)

    # -- lifecycle (caller's thread) -------------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._thread_main, name="faultproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise RuntimeError(f"fault proxy did not start within {START_TIMEOUT_S} s")
        if self._error is not None:
            raise RuntimeError("fault proxy failed to start") from self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                raise RuntimeError(f"fault proxy did not stop within {STOP_TIMEOUT_S} s")
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- the server (proxy thread) ---------------------------------------------------------

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # surfaced by start(); a thread cannot raise to its caller
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        connector = aiohttp.TCPConnector(limit=UPSTREAM_CONNECTIONS)
        timeout = aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_S)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, auto_decompress=False
        ) as session:
            self._session = session
            app = web.Application(client_max_size=1024**3)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert isinstance(server, asyncio.base_events.Server)
            self.port = int(server.sockets[0].getsockname()[1])
            self._ready.set()
            try:
                await self._stopping.wait()
            finally:
                await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        self._sample()
        try:
            return await self._answer(request)
        finally:
            stats.in_flight -= 1
            self._sample()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        plan = self.plan
        fault = None
        if plan.matches(request.method, request.path, request.query_string):
            fault = plan.draw(self._rng)
            if fault is None and plan.latency and self._rng.random() < plan.latency:
                self.stats.injected["latency"] += 1
                await asyncio.sleep(plan.latency_s)
        if fault == "reset":
            self.stats.injected["reset"] += 1
            await request.read()  # take the body so the client is waiting for the answer
            assert request.transport is not None
            request.transport.abort()  # no response at all: the client sees a dropped connection
            raise asyncio.CancelledError  # aiohttp's handler ends quietly on a cancelled request
        if fault is not None:
            self.stats.injected[fault] += 1
            status, code, message = ERRORS[fault]
            body = error_body(code, message, request.path)
            return web.Response(status=status, body=body, content_type="application/xml")
        return await self._forward(request)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        url = self.upstream + request.raw_path  # raw: the exact encoding the client signed
        assert self._session is not None
        async with self._session.request(
            request.method,
            URL(url, encoded=True),
            headers=headers,
            data=body,
            allow_redirects=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        ) as upstream:
            payload = await upstream.read()
            self.stats.forwarded += 1
            return self._relay(request, upstream, payload)

    @staticmethod
    def _relay(request: web.Request, upstream: aiohttp.ClientResponse, payload: bytes) -> web.Response:
        response = web.Response(status=upstream.status, reason=upstream.reason)
        for name, value in upstream.headers.items():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                response.headers.add(name, value)
        if request.method == "HEAD":
            # A HEAD answer has no body but must keep the object's Content-Length.
            length = upstream.headers.get("Content-Length")
            if length is not None:
                response.headers["Content-Length"] = length
        else:
            response.body = payload
        return response

    def _sample(self) -> None:
        now = time.monotonic() - self._t0
        if now - self._last_sample < SAMPLE_INTERVAL_S or len(self.stats.samples) >= MAX_SAMPLES:
            return
        self._last_sample = now
        self.stats.samples.append((round(now, 3), self.stats.in_flight))
