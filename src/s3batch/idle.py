"""Idle workers kept for the next job that can use them: Ray actors, function worker processes.

Starting a worker costs from a few hundred milliseconds (a Python process importing s3batch and a
library) to seconds (a Ray actor, a model loaded): a process driving job after job would pay it
per job. A run that ended cleanly hands its idle workers back here under a key; the next run
with the same key takes them instead of starting new ones, as Lambda reuses a warm execution
environment. The key holds everything a worker cannot change between jobs (what it runs, the
environment and credentials it was started with: a worker only ever serves the key it has).

Idle workers hold memory and reservations, so they are released after `idle_s` without a job,
and at once when a run takes workers of another key (they would compete with it).
Thread-safe: runs may end on different event loops, and the release timer is a thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

#: Shortest wait of the release timer, in seconds.
MIN_TIMER_S = 0.01

K = TypeVar("K", bound=Hashable)
W = TypeVar("W")


class IdlePool(Generic[K, W]):
    """Idle workers by key; `kill` (given with each call) releases one, without blocking long."""

    def __init__(self, idle_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: dict[K, list[tuple[W, float]]] = {}
        self._timer: threading.Timer | None = None

    def take(self, key: K, count: int, kill: Callable[[W], None]) -> list[W]:
        """Up to `count` idle workers of `key`; idle workers of other keys are released."""
        with self._lock:
            mine = self._idle.pop(key, [])
            others = [worker for entries in self._idle.values() for worker, _ in entries]
            self._idle = {key: mine[count:]} if mine[count:] else {}
        for worker in others:
            kill(worker)
        return [worker for worker, _ in mine[:count]]

    def give_back(self, key: K, workers: list[W], kill: Callable[[W], None]) -> None:
        if not workers:
            return
        now = self._clock()
        with self._lock:
            self._idle.setdefault(key, []).extend((worker, now) for worker in workers)
            if self._timer is None:
                self._schedule(kill)

    def expire(self, kill: Callable[[W], None]) -> int:
        """Release the workers idle for `idle_s` or more; how many were released."""
        cutoff = self._clock() - self.idle_s
        with self._lock:
            expired = [
                worker for entries in self._idle.values() for worker, since in entries if since <= cutoff
            ]
            kept = {key: [e for e in entries if e[1] > cutoff] for key, entries in self._idle.items()}
            self._idle = {key: entries for key, entries in kept.items() if entries}
        for worker in expired:
            kill(worker)
        return len(expired)

    def clear(self, kill: Callable[[W], None]) -> int:
        """Release every idle worker now; how many were released."""
        with self._lock:
            workers = [worker for entries in self._idle.values() for worker, _ in entries]
            self._idle = {}
        for worker in workers:
            kill(worker)
        return len(workers)

    def idle(self) -> int:
        with self._lock:
            return sum(len(entries) for entries in self._idle.values())

    def workers(self) -> list[W]:
        """The idle workers now (for monitoring)."""
        with self._lock:
            return [worker for entries in self._idle.values() for worker, _ in entries]

    def _schedule(self, kill: Callable[[W], None]) -> None:
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
