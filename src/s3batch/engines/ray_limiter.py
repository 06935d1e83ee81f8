"""One adaptive concurrency limit for a job's endpoint, shared by every actor of the Ray engine.

engines/limiter.py's AIMD rule, held in one place for the whole cluster: a throttle seen by any
actor halves the cluster-wide limit (once per window, as there), successes anywhere grow it.
Actors never ask per request. Each holds a *lease* of permits and syncs with the limiter at
most every `SYNC_INTERVAL_S` (sooner only when its requests wait for room or it saw a
throttle): one remote call reports what finished since the last sync (successes, throttles with
the window each throttled request started in, retries, requests in flight) and asks for a
lease sized to what it needs now plus `LEASE_HEADROOM`. The limiter grants what fits under the
limit: the sum of leases never exceeds it when granted, so requests in flight across the cluster
never exceed the limit either (a cut lowers the leases at their next sync; requests already in
flight finish, as under the local limiter). A lease not renewed within `LEASE_TTL_S` (its
actor died) returns to the pool.

`LeasedLimit` is the pure rule (no Ray; tested on its own); `LimiterActor` is its Ray actor
wrapper; `SharedLimit` is what an actor's engine uses in place of its own `AdaptiveLimit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from s3batch.domain.task import TaskResult
from s3batch.engines.limiter import (
    DEFAULT_INCREASE_AFTER,
    AdaptiveLimit,
    AimdLimit,
    LimitStats,
    is_throttle,
)

log = logging.getLogger(__name__)

#: Shortest time between two syncs of one actor, in seconds (bounds remote calls per actor).
SYNC_INTERVAL_S = 0.1
#: Permits an actor asks for beyond what its requests need right now, so that new requests
#: rarely wait for a sync.
LEASE_HEADROOM = 8
#: Seconds after its last sync at which an actor's lease is taken back: it is gone for good (a
#: restarted actor replaces its lease at once). Long, because a live actor busy starting (its
#: first client) may not sync for seconds, and its requests must keep counting meanwhile.
LEASE_TTL_S = 30.0
#: Seconds an actor with nothing in flight keeps its lease before handing it back.
IDLE_RELEASE_S = 0.2
#: Seconds between samples of the cluster-wide limit when it did not change.
SAMPLE_INTERVAL_S = 0.05


@dataclass(frozen=True, slots=True)
class Report:
    """What one actor says at a sync: its need and what finished since its last sync."""

    #: Permits wanted now (0: hand the lease back).
    want: int
    in_flight: int
    successes: int = 0
    #: Throttled requests by the window (epoch) they started in.
    throttles: Mapping[int, int] = field(default_factory=dict)
    retries: int = 0


@dataclass(frozen=True, slots=True)
class Grant:
    """The limiter's answer: the actor's lease and the window new requests start in."""

    permits: int
    epoch: int


@dataclass(frozen=True, slots=True)
class SharedStats:
    """The cluster-wide limit's record of one run."""

    maximum: int
    limit: int
    #: Samples of (limit, requests in flight as last reported by all actors).
    stats: LimitStats
    #: Most permits ever leased at once (never above `maximum`).
    max_leased: int
    #: Actors that ever synced.
    actors: int


@dataclass(slots=True)
class _Lease:
    permits: int
    want: int
    in_flight: int
    seen: float


class LeasedLimit(AimdLimit):
    """The AIMD limit of engines/limiter.py, handed out as leases to several holders."""

    def __init__(
        self,
        maximum: int,
        increase_after: int = DEFAULT_INCREASE_AFTER,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(maximum, increase_after, clock)
        self.max_leased = 0
        self._leases: dict[str, _Lease] = {}
        self._seen: set[str] = set()
        self._sample(force=True)

    def _in_flight(self) -> int:
        return sum(lease.in_flight for lease in self._leases.values())

    @property
    def leased(self) -> int:
        return sum(lease.permits for lease in self._leases.values())

    def sync(self, holder: str, report: Report) -> Grant:
        """Apply `holder`'s outcomes to the limit, then size its lease."""
        now = self._clock()
        self._expire(now)
        self._seen.add(holder)
        self._apply(report)
        lease = self._leases.get(holder) or _Lease(0, 0, 0, now)
        lease.want, lease.in_flight, lease.seen = report.want, report.in_flight, now
        lease.permits = self._size(holder, report.want)
        if lease.permits == 0 and lease.want == 0:
            self._leases.pop(holder, None)
        else:
            self._leases[holder] = lease
        leased = self.leased
        self.max_leased = max(self.max_leased, leased)
        in_flight = sum(other.in_flight for other in self._leases.values())
        self.stats.max_in_flight = max(self.stats.max_in_flight, in_flight)
        self._sample(in_flight=in_flight)
        return Grant(lease.permits, self.epoch)

    def snapshot(self) -> SharedStats:
        return SharedStats(self.maximum, self.limit, self.recent(None), self.max_leased, len(self._seen))

    def recent(self, samples: int | None = 1) -> LimitStats:
        """The counters, with the last `samples` samples (None: all of them)."""
        kept = self.stats.samples if samples is None else self.stats.samples[-samples:]
        return LimitStats(
            samples=list(kept),
            retries=self.stats.retries,
            throttles=self.stats.throttles,
            decreases=self.stats.decreases,
            increases=self.stats.increases,
            max_in_flight=self.stats.max_in_flight,
        )

    # -- the AIMD rule (engines/limiter.AimdLimit), fed by reports ------------------------

    def _apply(self, report: Report) -> None:
        self.stats.retries += report.retries
        throttled = sum(report.throttles.values())
        if throttled:
            self.stats.throttles += throttled
            self._successes = 0  # a throttle breaks the run of successes, as locally
            if report.throttles.get(self.epoch, 0):
                self._decrease()  # only a request started in this window says the cut was not enough
            return
        self._successes += report.successes
        while self._successes >= self.increase_after:
            self._successes -= self.increase_after
            self._increase()

    # -- leases -------------------------------------------------------------------------

    def _size(self, holder: str, want: int) -> int:
        """The holder's new lease: what it wants, within what the others leave free, and no
        more than a fair share while another holder gets less than its own.

        A holder whose lease was cut or trimmed may still have more requests in flight than its
        lease (they finish; no new ones start): until it reports them done they count, so the
        requests in flight across the cluster never exceed the limit."""
        others = [lease for name, lease in self._leases.items() if name != holder]
        free = self.limit - sum(max(lease.permits, lease.in_flight) for lease in others)
        permits = max(0, min(want, free))
        active = 1 + sum(1 for lease in others if lease.want > 0)
        fair = max(1, self.limit // active)
        if any(lease.permits < min(lease.want, fair) for lease in others):
            permits = min(permits, fair)
        return permits

    def _expire(self, now: float) -> None:
        for name in [n for n, lease in self._leases.items() if now - lease.seen > LEASE_TTL_S]:
            log.warning("lease of %s expired: its actor stopped syncing", name)
            del self._leases[name]


class LimiterActor:
    """The driver's shared limits as one Ray actor: a `LeasedLimit` per job run and endpoint,
    named by the run (engines/ray.py). One actor for the driver's life, not one per job: a job
    then starts no process for its limit. A sync names its limit's maximum, so a limit the actor
    does not hold (it was restarted and lost them) starts again from the first sync."""

    def __init__(self) -> None:
        self._limits: dict[str, LeasedLimit] = {}

    def sync(self, limit: str, maximum: int, holder: str, report: Report) -> Grant:
        held = self._limits.get(limit)
        if held is None:
            held = self._limits[limit] = LeasedLimit(maximum)
        return held.sync(holder, report)

    def snapshot(self, limit: str) -> SharedStats | None:
        held = self._limits.get(limit)
        return None if held is None else held.snapshot()

    def recent(self, limit: str) -> LimitStats | None:
        held = self._limits.get(limit)
        return None if held is None else held.recent()

    def close(self, limit: str) -> SharedStats | None:
        """The limit's final record; the limit is forgotten."""
        held = self._limits.pop(limit, None)
        return None if held is None else held.snapshot()

    def held(self) -> int:
        return len(self._limits)


#: Sends one report for a holder and returns the grant (a remote call to the limiter actor).
SyncCall = Callable[[str, Report], Awaitable[Grant]]


class SharedLimit(AdaptiveLimit):
    """An actor's gate in front of the cluster-wide limit.

    The local gate of `AdaptiveLimit` (FIFO waiters, slots, epochs) with `limit` set to the
    actor's lease instead of a limit of its own; outcomes are counted for the next sync
    instead of changing a local limit. A background task (`start`) keeps the lease in step.
    """

    def __init__(self, holder: str, maximum: int, sync: SyncCall) -> None:
        super().__init__(maximum)
        self.limit = 0  # nothing leased yet: the first request asks
        self.holder = holder
        self._sync_call = sync
        self._successes_due = 0
        self._throttles_due: Counter[int] = Counter()
        self._retries_reported = 0
        self._poke = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._sync_loop())

    async def stop(self) -> None:
        """Stop syncing and hand the lease back."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self._sync(want=0)

    def record(self, result: TaskResult, epoch: int | None = None) -> None:
        """Count one finished request for the next sync (the cluster applies AIMD)."""
        if is_throttle(result):
            self.stats.throttles += 1
            self._throttles_due[self.epoch if epoch is None else epoch] += 1
            self._poke.set()  # the cluster should cut now, not at the next interval
        elif result.succeeded:
            self._successes_due += 1

    async def _wait_for_room(self) -> None:
        self._poke.set()  # a request waits: ask for a larger lease
        await super()._wait_for_room()

    def _want(self) -> int:
        need = self.in_flight + len(self._waiters)
        return min(self.maximum, need + LEASE_HEADROOM) if need else 0

    async def _sync_loop(self) -> None:
        idle_since: float | None = None
        while True:
            holding = self.limit > 0 or self._want() > 0 or self._successes_due or self._throttles_due
            if holding:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._poke.wait(), SYNC_INTERVAL_S)
            else:
                await self._poke.wait()
            self._poke.clear()
            want = self._want()
            if want == 0 and self.limit > 0:  # keep an idle lease briefly: the next chunk may come
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since < IDLE_RELEASE_S:
                    want = self.limit
            else:
                idle_since = None
            try:
                await self._sync(want)
            except Exception:  # the limiter restarts (Ray restarts it): keep the lease meanwhile
                log.warning("shared limit: sync failed; retrying", exc_info=True)
            await asyncio.sleep(SYNC_INTERVAL_S)

    async def _sync(self, want: int) -> None:
        report = Report(
            want=want,
            in_flight=self.in_flight,
            successes=self._successes_due,
            throttles=dict(self._throttles_due),
            retries=self.stats.retries - self._retries_reported,
        )
        grant = await self._sync_call(self.holder, report)
        # Counted only once delivered: a failed sync reports them again with the next one.
        self._successes_due -= report.successes
        self._throttles_due.subtract(report.throttles)
        self._throttles_due = +self._throttles_due  # drop the zeroed windows
        self._retries_reported += report.retries
        self.limit, self.epoch = grant.permits, grant.epoch
        self._sample(force=True)
        self._wake()
