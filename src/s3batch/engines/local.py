"""The default engine: asyncio in this process, a bounded number of tasks in flight.

S3 calls are I/O-bound, so one event loop with many requests in flight keeps an endpoint busy
with little CPU. CPU-heavy user functions run in the function pool's processes, not here.

Two bounds: at most `concurrency` task groups exist at once (memory; a task sleeping between
retries counts), and at most `AdaptiveLimit.limit` requests are in flight (load on the endpoint;
it shrinks under throttling, see engines/limiter.py). `stats` describes the latest run.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

from s3batch.domain.task import Task, TaskResult
from s3batch.engines.execute import build_operation, execute_batch
from s3batch.engines.limiter import DEFAULT_INCREASE_AFTER, AdaptiveLimit, LimitStats
from s3batch.operations.base import JobContext, Operation
from s3batch.retry import RetryPolicy

Done = list[tuple[Task, TaskResult]]


class LocalEngine:
    def __init__(
        self, concurrency: int, retry: RetryPolicy, increase_after: int = DEFAULT_INCREASE_AFTER
    ) -> None:
        self.concurrency = concurrency
        self.retry = retry
        self.increase_after = increase_after
        #: Limit samples, retries and throttles of the latest (or current) run.
        self.stats = LimitStats()

    async def run(
        self, job: JobContext, operation: Mapping[str, Any], tasks: AsyncIterator[Task]
    ) -> AsyncIterator[tuple[Task, TaskResult]]:
        op, store = build_operation(job, operation)
        limit = AdaptiveLimit(self.concurrency, self.increase_after)
        self.stats = limit.stats
        pending: set[asyncio.Task[Done]] = set()
        try:
            async for batch in _batches(tasks, op.batch_size):
                pending.add(asyncio.create_task(self._run_batch(op, batch, limit)))
                while len(pending) >= self.concurrency:
                    for item in await self._drain(pending):
                        yield item
            while pending:
                for item in await self._drain(pending):
                    yield item
        finally:
            for t in pending:
                t.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*pending, return_exceptions=True)
            await op.close()
            await store.close()

    async def _run_batch(self, op: Operation, batch: list[Task], limit: AdaptiveLimit) -> Done:
        results = await execute_batch(op, batch, self.retry, limit)
        return list(zip(batch, results, strict=True))

    @staticmethod
    async def _drain(pending: set[asyncio.Task[Done]]) -> Done:
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        pending.difference_update(done)
        return [item for d in done for item in d.result()]


async def _batches(tasks: AsyncIterator[Task], size: int) -> AsyncIterator[list[Task]]:
    """Group tasks for apply_many (size 1 for per-object operations)."""
    batch: list[Task] = []
    async for task in tasks:
        batch.append(task)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
