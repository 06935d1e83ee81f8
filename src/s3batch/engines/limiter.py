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
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
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


class AdaptiveLimit:
    """An AIMD limit on concurrent requests with an async gate in front of it."""

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
        self.in_flight = 0
        self.stats = LimitStats()
        self._clock = clock
        self._start = clock()
        self._last_sample_t = float("-inf")
        self._epoch = 0
        self._successes = 0
        self._changed: asyncio.Condition | None = None
        self._sample(force=True)

    # -- the pure AIMD rule (no waiting; deterministic) -----------------------------------

    def open(self) -> _Slot:
        """Count a request as started, without waiting (the caller checked `has_room`)."""
        self.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.in_flight)
        self._sample()
        return _Slot(self._epoch)

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
            if epoch is None or epoch == self._epoch:
                self._decrease()
        elif result.succeeded:
            self._successes += 1
            if self._successes >= self.increase_after:
                self._successes = 0
                self._increase()

    def _decrease(self) -> None:
        new = max(self.minimum, int(self.limit * DECREASE_FACTOR))
        self._epoch += 1  # a new window starts even at the floor: in-flight throttles are old news
        if new != self.limit:
            self.limit = new
            self.stats.decreases += 1
            self._sample(force=True)

    def _increase(self) -> None:
        if self.limit < self.maximum:
            self.limit += 1
            self.stats.increases += 1
            self._sample(force=True)

    def _sample(self, force: bool = False) -> None:
        now = self._clock() - self._start
        if not force and now - self._last_sample_t < SAMPLE_INTERVAL_S:
            return
        self._last_sample_t = now
        samples = self.stats.samples
        samples.append(Sample(round(now, 4), self.limit, self.in_flight))
        if len(samples) > MAX_SAMPLES:
            del samples[::2]

    # -- the async gate -----------------------------------------------------------------

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Callable[[TaskResult], None]]:
        """Wait for room under the limit, hold one slot, release it on exit.

        Yields a callback taking the request's result; a slot left without a result
        (cancelled, raised) is released without changing the limit.
        """
        changed = self._condition()
        async with changed:
            await changed.wait_for(self.has_room)
            slot = self.open()
        outcome: list[TaskResult] = []
        try:
            yield outcome.append
        finally:
            self.close(slot, outcome[-1] if outcome else None)
            await self._notify(changed)

    def _condition(self) -> asyncio.Condition:
        # Created lazily so the limiter binds to the loop that runs the engine.
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    @staticmethod
    async def _notify(changed: asyncio.Condition) -> None:
        # notify_all: the limit may have grown by one while several waiters queue.
        async with changed:
            changed.notify_all()
