"""The Ray engine's actor: s3batch's own asyncio engine step, fed chunk by chunk.

Each actor builds the job's operation once for its lifetime (one connection pool, one function
worker pool) and runs every chunk it is handed through `LocalEngine`'s batch step (attempts,
backoff, the adaptive limit: engines/execute.py), up to the engine's concurrency in batches in
flight across its chunks. A `run_chunk` call returns when every task of its chunk has its final
result, all in one message. Several calls are in flight at once (an async actor), so the actor
never runs dry between chunks.

Requests take slots of the job's cluster-wide limit (engines/ray_limiter.SharedLimit) instead of
a limit of the actor's own. The job's environment (credentials, endpoint) is applied to this
process from the constructor's arguments before anything opens a client: it reaches the actor
in memory, never through a file or the process's command line.

Ray restarts a dead actor (its constructor runs again) and retries the calls it was running.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from typing import Any

from s3batch.domain.task import Task, TaskResult
from s3batch.engines.base import Finished
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


class ChunkWorker:
    """One actor. Wrapped by `ray.remote` in the driver (engines/ray.py), not here: this module
    imports without Ray, and the class is found by name on every node."""

    def __init__(
        self,
        job: JobContext,
        operation: Mapping[str, Any],
        concurrency: int,
        retry: RetryPolicy,
        env: Mapping[str, str],
        limiter: str,
    ) -> None:
        _apply_environment(env)
        self._job, self._operation = job, dict(operation)
        self._concurrency, self._retry = concurrency, retry
        #: The shared limit's actor name (a name, not a handle: the arguments stay small and
        #: inline, so Ray can always restart this actor with them).
        self._limiter_name = limiter
        self._limiter: Any = None
        self._started: tuple[Operation, ObjectStore, _SharedLimitEngine, asyncio.Semaphore] | None = None
        self._shared: SharedLimit | None = None

    async def run_chunk(self, tasks: list[Task]) -> list[TaskResult]:
        """The final result of each task of the chunk, in the chunk's order."""
        op, _, engine, room = self._start()
        size = max(1, op.batch_size)

        async def one_batch(batch: list[Task]) -> Finished:
            async with room:  # batches in flight in this actor, all chunks together
                return await engine.run_batch(op, batch)

        batches = [tasks[i : i + size] for i in range(0, len(tasks), size)]
        finished = await asyncio.gather(*(one_batch(batch) for batch in batches))
        return [result for group in finished for _, result in group]

    async def close(self) -> LimitStats:
        """Finish: the operation closes (a results sink commits), the lease goes back."""
        if self._started is None:
            return LimitStats()
        op, store, engine, _ = self._started
        self._started = None
        try:
            await op.close()
        finally:
            await store.close()
            if self._shared is not None:
                await self._shared.stop()
        return engine.stats

    # -- inside the actor ---------------------------------------------------------------

    def _start(self) -> tuple[Operation, ObjectStore, _SharedLimitEngine, asyncio.Semaphore]:
        if self._started is None:
            op, store = build_operation(self._job, self._operation)  # raises as LocalEngine.run would
            self._shared = SharedLimit(_holder_name(), self._concurrency, self._sync)
            self._shared.start()
            engine = _SharedLimitEngine(self._concurrency, self._retry, self._shared)
            self._started = (op, store, engine, asyncio.Semaphore(self._concurrency))
        return self._started

    async def _sync(self, holder: str, report: Report) -> Grant:
        if self._limiter is None:
            import ray

            self._limiter = ray.get_actor(self._limiter_name)
        grant: Grant = await self._limiter.sync.remote(holder, report)
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
