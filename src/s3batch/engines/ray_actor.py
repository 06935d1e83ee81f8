"""The Ray engine's actor: s3batch's own asyncio engine step, fed chunk by chunk.

Each actor builds a job's operation once, at its first chunk of that job (one connection pool, one
function worker pool), and runs every chunk it is handed through `LocalEngine`'s batch step (attempts,
backoff, the adaptive limit: engines/execute.py), up to the engine's concurrency in batches in
flight across its chunks. A `run_chunk` call returns when every task of its chunk has its final
result, all in one message. Several calls are in flight at once (an async actor), so the actor
never runs dry between chunks.

Requests take slots of the job's cluster-wide limit (engines/ray_limiter.SharedLimit) instead of
a limit of the actor's own. The job's environment (credentials, endpoint) is applied to this
process from the job's first chunk before anything opens a client: it reaches the actor in
memory, never through a file or the process's command line.

Ray restarts a dead actor (its constructor runs again) and retries the calls it was running;
each call carries its job, so the new incarnation starts that job again from the call.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from s3batch import heap
from s3batch.domain.task import Task, TaskResult
from s3batch.engines.base import Finished
from s3batch.engines.batching import cut
from s3batch.engines.execute import build_operation
from s3batch.engines.limiter import AdaptiveLimit, LimitStats
from s3batch.engines.local import LocalEngine
from s3batch.engines.ray_limiter import Grant, Report, SharedLimit
from s3batch.operations.base import JobContext, Operation
from s3batch.retry import RetryPolicy
from s3batch.storage.base import ObjectStore


class _SharedLimitEngine(LocalEngine):
    """LocalEngine whose requests take slots of a limit shared beyond this process."""

    def __init__(self, concurrency: int, retry: RetryPolicy, shared: AdaptiveLimit) -> None:
        super().__init__(concurrency, retry)
        self.shared = shared
        self.stats = shared.stats

    async def _run_batch(self, op: Operation, batch: list[Task], limit: AdaptiveLimit) -> Finished:
        return await super()._run_batch(op, batch, self.shared)

    async def run_batch(self, op: Operation, batch: list[Task]) -> Finished:
        """One of the operation's batches, to its final results (the engine's own step)."""
        return await self._run_batch(op, batch, self.shared)


@dataclass(frozen=True, slots=True)
class ChunkJob:
    """What an actor needs to run one job's chunks. It travels with every chunk (a few KB against
    the chunk's tasks), so an actor serves whichever job calls it: a restarted actor learns its
    job from the call Ray retries, and an actor kept by the driver for the next job
    (engines/ray_pool.py) needs no new constructor."""

    #: One run of the engine: a job driven twice (resumed) is two runs.
    run_id: str
    job: JobContext
    operation: Mapping[str, Any]
    concurrency: int
    retry: RetryPolicy
    env: Mapping[str, str]
    #: The shared limits' actor, by name (a name, not a handle: the message stays small and
    #: inline), and this run's limit in it.
    limiter: str
    limit: str


@dataclass(eq=False)
class _Running:
    """One job's state inside an actor, from its first chunk to its close."""

    job: ChunkJob
    op: Operation
    store: ObjectStore
    engine: _SharedLimitEngine
    shared: SharedLimit
    #: Batches in flight in this actor, all chunks together.
    room: asyncio.Semaphore


class ChunkWorker:
    """One actor. Wrapped by `ray.remote` in the driver (engines/ray.py), not here: this module
    imports without Ray, and the class is found by name on every node.

    It runs one job at a time: the driver hands it to a job, and back to its pool, only between
    a job's close and the next job's first chunk."""

    def __init__(self) -> None:
        heap.enable()  # a process of its own, started for s3batch (heap.py)
        self._running: _Running | None = None
        #: Held while the actor changes jobs: concurrent first chunks start the job once.
        self._switch = asyncio.Lock()
        self._limiters: dict[str, Any] = {}

    async def ready(self) -> bool:
        """Answers once the actor runs: the driver gives chunks only to actors that do."""
        return True

    async def run_chunk(self, job: ChunkJob, tasks: list[Task]) -> list[TaskResult]:
        """The final result of each task of the chunk, in the chunk's order."""
        running = await self._join(job)
        size = max(1, running.op.batch_size)

        async def one_batch(batch: list[Task]) -> Finished:
            async with running.room:
                return await running.engine.run_batch(running.op, batch)

        batches = cut(tasks, size, running.op.batch_spread)
        finished = await asyncio.gather(*(one_batch(batch) for batch in batches))
        return [result for group in finished for _, result in group]

    async def close(self, run_id: str) -> LimitStats:
        """Finish the run: the operation closes (a results sink commits), the lease goes back."""
        async with self._switch:
            running = self._running
            if running is None or running.job.run_id != run_id:
                return LimitStats()
            return await self._stop(running)

    # -- inside the actor ---------------------------------------------------------------

    async def _join(self, job: ChunkJob) -> _Running:
        running = self._running
        if running is not None and running.job.run_id == job.run_id:
            return running
        async with self._switch:
            running = self._running
            if running is not None and running.job.run_id != job.run_id:
                await self._stop(running)  # a run its driver never closed (it stopped mid-job)
            if self._running is None:
                self._running = self._start(job)
            return self._running

    def _start(self, job: ChunkJob) -> _Running:
        _apply_environment(job.env)
        op, store = build_operation(job.job, job.operation)  # raises as LocalEngine.run would
        shared = SharedLimit(_holder_name(), job.concurrency, functools.partial(self._sync, job))
        shared.start()
        engine = _SharedLimitEngine(job.concurrency, job.retry, shared)
        return _Running(job, op, store, engine, shared, asyncio.Semaphore(job.concurrency))

    async def _stop(self, running: _Running) -> LimitStats:
        self._running = None
        try:
            await running.op.close()
        finally:
            await running.store.close()
            await running.shared.stop()
        return running.engine.stats

    async def _sync(self, job: ChunkJob, holder: str, report: Report) -> Grant:
        handle = self._limiters.get(job.limiter)
        if handle is None:
            import ray

            handle = self._limiters[job.limiter] = ray.get_actor(job.limiter)
        grant: Grant = await handle.sync.remote(job.limit, job.concurrency, holder, report)
        return grant


def _apply_environment(env: Mapping[str, str]) -> None:
    """Make this process run as if started with `env`: set the variables, and put PYTHONPATH's
    folders on sys.path as Python does at start-up (function workers are spawned with this
    process's sys.path, not with a fresh reading of PYTHONPATH)."""
    os.environ.update(env)
    folders = [folder for folder in env.get("PYTHONPATH", "").split(os.pathsep) if folder]
    sys.path[:0] = [folder for folder in folders if folder not in sys.path]


def _holder_name() -> str:
    """This actor's name at the shared limit: its Ray actor id, the same after a restart, so a
    new incarnation's first sync replaces the lease of the one that died (whose requests died
    with it)."""
    import ray

    actor_id: str = ray.get_runtime_context().get_actor_id()
    return actor_id
