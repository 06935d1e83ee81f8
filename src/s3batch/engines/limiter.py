"""Adaptive concurrency: AIMD (additive increase, multiplicative decrease) on requests in flight.

A throttled endpoint (SlowDown, 503, 429, 5xx, connection resets) must see *fewer* requests,
not the same number retried. Each engine run owns one `AdaptiveLimit`: it starts at the
configured concurrency, halves on a throttling result, and grows by one after
`increase_after` consecutive successes, never above the configured maximum nor below
an eighth of it (`MIN_LIMIT_FRACTION`). Every attempt, first try or retry, takes a slot
first, so backoff plus this limit together shed load.

One decrease per window: requests already in flight when the limit was cut were sent at the
old rate, so their throttles say nothing new about the new limit. Only a throttle on a request
that started after the last cut halves the limit again (as TCP halves its window once per
round trip, not once per lost packet). Without this, 64 requests throttled together would cut
64 → 1 at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from s3batch.domain.task import TaskResult

#: The limit never goes below this many requests in flight: progress must continue.
MIN_LIMIT = 1
#: ...nor below this fraction of the configured concurrency. Throttles that do not depend on
#: load (a flaky proxy, one hot prefix) would otherwise pin the limit at 1-2 for good: measured
#: 179 tasks/s at 10 % random SlowDown with a floor of 1. An 8x cut still relieves a truly
#: overloaded endpoint, and each retry also backs off.
MIN_LIMIT_FRACTION = 1 / 8
#: Consecutive successes that earn one more slot.
DEFAULT_INCREASE_AFTER = 8
#: Multiplicative decrease factor on a throttle.
DECREASE_FACTOR = 0.5
#: Error codes that mean "slow down" whatever the HTTP status says.
THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequests",
        "RequestLimitExceeded",
        "RequestTimeout",
        "ServiceUnavailable",
    }
)
#: HTTP 429 Too Many Requests; 5xx (>= this) are server trouble, also a reason to back off.
HTTP_TOO_MANY_REQUESTS = 429
HTTP_SERVER_ERROR = 500
#: Samples kept per run; beyond it every other sample is dropped (time resolution halves).
MAX_SAMPLES = 4096
#: Seconds between samples taken when the limit did not change.
SAMPLE_INTERVAL_S = 0.05


def is_throttle(result: TaskResult) -> bool:
    """True for a result that says the endpoint is overloaded: back off, send less.

    Retryable failures with a 429/5xx status, no HTTP answer at all (reset, timeout), or a
    throttling error code. Lambda's TemporaryFailure (HTTP 200) is retryable but says nothing
    about the endpoint, so it does not count.
    """
    if result.succeeded or not result.retryable:
        return False
    status = result.http_status
    if status is None or status == HTTP_TOO_MANY_REQUESTS or status >= HTTP_SERVER_ERROR:
        return True
    return result.error_code in THROTTLE_CODES


@dataclass(frozen=True, slots=True)
class Sample:
    """The limit and the requests in flight at `t` seconds after the run started."""

    t: float
    limit: int
    in_flight: int


@dataclass(slots=True)
class LimitStats:
    """What one engine run did under load, for callers, tests and benchmarks."""

    samples: list[Sample] = field(default_factory=list)
    #: Attempts after the first, over all tasks.
    retries: int = 0
    #: Results classified as throttling by `is_throttle`.
    throttles: int = 0
    decreases: int = 0
    increases: int = 0
    #: Most requests ever in flight at once.
    max_in_flight: int = 0

    @property
    def min_limit(self) -> int:
        return min((s.limit for s in self.samples), default=0)


@dataclass(slots=True)
class _Slot:
    """One request in flight; remembers the window (epoch) it started in."""

    epoch: int


class AimdLimit:
    """The AIMD rule itself: the bounds, a cut by `DECREASE_FACTOR` once per window (`epoch`),
    +1 after every `increase_after` successes, and the samples of the limit over time. Shared
    by this process's `AdaptiveLimit` and the Ray engine's cluster-wide `LeasedLimit`
    (engines/ray_limiter.py); each says what counts as in flight."""

    def __init__(
        self,
        maximum: int,
        increase_after: int = DEFAULT_INCREASE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if maximum < MIN_LIMIT:
            raise ValueError(f"maximum concurrency must be at least {MIN_LIMIT}, got {maximum}")
        if increase_after < 1:
            raise ValueError(f"increase_after must be at least 1, got {increase_after}")
        self.maximum = maximum
        self.minimum = max(MIN_LIMIT, math.ceil(maximum * MIN_LIMIT_FRACTION))
        self.limit = maximum
        self.increase_after = increase_after
        #: The window new requests start in; a cut starts the next one.
        self.epoch = 0
        self.stats = LimitStats()
        self._successes = 0
        self._clock = clock
        self._start = clock()
        self._last_sample_t = float("-inf")

    def _in_flight(self) -> int:
        raise NotImplementedError

    def _decrease(self) -> None:
        new = max(self.minimum, int(self.limit * DECREASE_FACTOR))
        self.epoch += 1  # a new window starts even at the floor: in-flight throttles are old news
        if new != self.limit:
            self.limit = new
            self.stats.decreases += 1
            self._sample(force=True)

    def _increase(self) -> None:
        if self.limit < self.maximum:
            self.limit += 1
            self.stats.increases += 1
            self._sample(force=True)

    def _sample(self, force: bool = False, in_flight: int | None = None) -> None:
        now = self._clock() - self._start
        if not force and now - self._last_sample_t < SAMPLE_INTERVAL_S:
            return
        self._last_sample_t = now
        samples = self.stats.samples
        samples.append(
            Sample(round(now, 4), self.limit, self._in_flight() if in_flight is None else in_flight)
        )
        if len(samples) > MAX_SAMPLES:
            del samples[::2]


class AdaptiveLimit(AimdLimit):
    """An AIMD limit on concurrent requests with an async gate in front of it."""

    def __init__(
        self,
        maximum: int,
        increase_after: int = DEFAULT_INCREASE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(maximum, increase_after, clock)
        self.in_flight = 0
        #: Attempts parked until there is room, first come first served.
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._sample(force=True)

    def _in_flight(self) -> int:
        return self.in_flight

    # -- the pure AIMD rule (no waiting; deterministic) -----------------------------------

    def open(self) -> _Slot:
        """Count a request as started, without waiting (the caller checked `has_room`)."""
        self.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.in_flight)
        self._sample()
        return _Slot(self.epoch)

    def has_room(self) -> bool:
        return self.in_flight < self.limit

    def close(self, slot: _Slot, result: TaskResult | None) -> None:
        """Count a request as finished and adjust the limit by its result (None: cancelled)."""
        self.in_flight -= 1
        if result is not None:
            self.record(result, slot.epoch)
        self._sample()

    def record(self, result: TaskResult, epoch: int | None = None) -> None:
        """Apply AIMD for one finished request that started in window `epoch`."""
        if is_throttle(result):
            self.stats.throttles += 1
            self._successes = 0
            if epoch is None or epoch == self.epoch:
                self._decrease()
        elif result.succeeded:
            self._successes += 1
            if self._successes >= self.increase_after:
                self._successes = 0
                self._increase()

    # -- the async gate -----------------------------------------------------------------

    def slot(self) -> _Gate:
        """Wait for room under the limit, hold one slot, release it on exit.

        `async with limit.slot() as report:` yields a callback taking the request's result; a
        slot left without a result (cancelled, raised) is released without changing the limit.
        """
        return _Gate(self)

    async def _wait_for_room(self) -> None:
        # FIFO of parked waiters; a woken waiter re-checks (the limit may have shrunk since).
        loop = asyncio.get_running_loop()
        waiters = self._waiters
        first = True
        while first or not self.has_room():
            fut: asyncio.Future[None] = loop.create_future()
            if first:
                waiters.append(fut)
            else:  # woken but beaten to the slot: keep its place at the head
                waiters.appendleft(fut)
            first = False
            try:
                await fut
            except asyncio.CancelledError:
                if fut in waiters:
                    waiters.remove(fut)
                elif not fut.cancelled():
                    self._wake()  # pass on the wake-up this waiter will not use
                raise

    def _wake(self) -> None:
        """Wake as many parked waiters as there is room for (the limit may have grown)."""
        waiters = self._waiters
        room = self.limit - self.in_flight
        while waiters and room > 0:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                room -= 1


class _Gate:
    """`async with` for one slot. A class, not @asynccontextmanager: this runs once per attempt,
    and the generator machinery cost more than the rest of the gate for cheap operations.
    The uncontended path (room, nobody queued) takes a slot without suspending."""

    __slots__ = ("_limit", "_outcome", "_slot")

    def __init__(self, limit: AdaptiveLimit) -> None:
        self._limit = limit
        self._slot: _Slot | None = None
        self._outcome: list[TaskResult] = []

    async def __aenter__(self) -> Callable[[TaskResult], None]:
        limit = self._limit
        if limit._waiters or not limit.has_room():
            await limit._wait_for_room()
        self._slot = limit.open()
        return self._outcome.append

    async def __aexit__(self, *exc: object) -> None:
        limit, outcome = self._limit, self._outcome
        assert self._slot is not None
        limit.close(self._slot, outcome[-1] if outcome else None)
        limit._wake()
