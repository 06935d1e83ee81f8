"""Record a running job's timeline samples (domain/timeline.py) while its tasks run.

`Sampler` writes one sample every `SAMPLE_INTERVAL_S` from the run's counters and the engine's
limiter statistics (requests in flight, the current limit, throttling answers), and a last one
when the run stops, so the chart ends where the job did. A failed sample write is logged and
skipped: the timeline is for people, and must never stop a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from s3batch.domain.job import Progress
from s3batch.domain.timeline import SAMPLE_INTERVAL_S, Sample
from s3batch.engines.limiter import LimitStats
from s3batch.service.progress import ActiveRun
from s3batch.store.base import JobStore

log = logging.getLogger(__name__)


class Sampler:
    """Samples one Active run of one job; use `async with Sampler(...)` around the run."""

    def __init__(self, store: JobStore, job_id: str, before: Progress, run: ActiveRun, engine: Any) -> None:
        self.store, self.job_id, self.before, self.run = store, job_id, before, run
        self.engine = engine
        self._throttles_seen = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Sampler:
        await self.record()
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await asyncio.shield(self.record())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL_S)
            await self.record()

    def sample(self, now: float) -> Sample:
        """The run's state now (cumulative counts include tasks recorded before this run)."""
        stats = getattr(self.engine, "stats", None)
        in_flight = limit = None
        throttled = 0
        if isinstance(stats, LimitStats):
            throttled, self._throttles_seen = stats.throttles - self._throttles_seen, stats.throttles
            if stats.samples:
                in_flight, limit = stats.samples[-1].in_flight, stats.samples[-1].limit
        return Sample(
            at=round(now, 3),
            succeeded=self.before.succeeded + self.run.succeeded,
            failed=self.before.failed + self.run.failed,
            throttled=max(throttled, 0),
            in_flight=in_flight,
            limit=limit,
        )

    async def record(self) -> None:
        try:
            await self.store.add_sample(self.job_id, self.sample(time.time()))
        except Exception:  # the chart loses a point; the job goes on
            log.warning("job %s: could not record a timeline sample", self.job_id, exc_info=True)
