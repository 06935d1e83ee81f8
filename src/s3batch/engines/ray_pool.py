"""The Ray engine's idle actors, kept by the driver for its next job of the same shape.

Starting an actor costs about a second (a Ray worker process, s3batch's imports, its first
connection pool): a worker driving job after job would pay it per job. A run that ended cleanly
hands its actors back here; the next run with the same key takes them instead of starting new
ones. The key holds what an actor cannot change between jobs: the Ray session it lives in,
what it reserves (CPUs, GPUs) and the environment it was given (credentials among it: an actor
only ever serves the environment it already has; the digest stays in memory).

Idle actors hold their reservation, so they are released after `IDLE_S` without a job, and at
once when a run needs actors of another key (they would compete with it for the cluster's
CPUs). A run that failed kills its actors instead of keeping them.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: Seconds an actor waits here for the next job before it is released.
IDLE_S = 60.0
#: Shortest wait of the release timer, in seconds.
MIN_TIMER_S = 0.01


@dataclass(frozen=True, slots=True)
class PoolKey:
    session: str
    cpus: float
    gpus: float
    env_digest: str


def pool_key(session: str, cpus: float, gpus: float, env: Mapping[str, str]) -> PoolKey:
    digest = hashlib.sha256(repr(sorted(env.items())).encode()).hexdigest()
    return PoolKey(session, cpus, gpus, digest)


class ActorPool:
    """Idle actor handles by key. Thread-safe: runs may end on different event loops."""

    def __init__(self, idle_s: float = IDLE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: dict[PoolKey, list[tuple[Any, float]]] = {}
        self._timer: threading.Timer | None = None

    def take(self, key: PoolKey, count: int, kill: Callable[[Any], None]) -> list[Any]:
        """Up to `count` idle actors of `key`; idle actors of other keys are released."""
        with self._lock:
            mine = self._idle.pop(key, [])
            others = [handle for entries in self._idle.values() for handle, _ in entries]
            self._idle = {key: mine[count:]} if mine[count:] else {}
        for handle in others:
            kill(handle)
        return [handle for handle, _ in mine[:count]]

    def give_back(self, key: PoolKey, handles: list[Any], kill: Callable[[Any], None]) -> None:
        now = self._clock()
        with self._lock:
            self._idle.setdefault(key, []).extend((handle, now) for handle in handles)
            if self._timer is None:
                self._schedule(kill)

    def expire(self, kill: Callable[[Any], None]) -> int:
        """Release the actors idle for `idle_s` or more; how many were released."""
        cutoff = self._clock() - self.idle_s
        with self._lock:
            expired = [
                handle for entries in self._idle.values() for handle, since in entries if since <= cutoff
            ]
            kept = {key: [e for e in entries if e[1] > cutoff] for key, entries in self._idle.items()}
            self._idle = {key: entries for key, entries in kept.items() if entries}
        for handle in expired:
            kill(handle)
        return len(expired)

    def clear(self, kill: Callable[[Any], None]) -> int:
        """Release every idle actor now; how many were released."""
        with self._lock:
            handles = [handle for entries in self._idle.values() for handle, _ in entries]
            self._idle = {}
        for handle in handles:
            kill(handle)
        return len(handles)

    def idle(self) -> int:
        with self._lock:
            return sum(len(entries) for entries in self._idle.values())

    def _schedule(self, kill: Callable[[Any], None]) -> None:
        def fire() -> None:
            self.expire(kill)
            with self._lock:
                self._timer = None
                if self._idle:
                    self._schedule(kill)

        oldest = min(since for entries in self._idle.values() for _, since in entries)
        delay_s = max(MIN_TIMER_S, oldest + self.idle_s - self._clock())
        self._timer = threading.Timer(delay_s, fire)
        self._timer.daemon = True
        self._timer.start()


#: The driver's pool (one per process: a process joins one Ray cluster in its life).
POOL = ActorPool()
