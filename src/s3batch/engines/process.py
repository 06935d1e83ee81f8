"""ProcessEngine: N worker processes, each running the asyncio engine over its share of tasks.

For when the client's own CPU is the limit (request signing and XML parsing cost ~1 ms per S3
call in Python): each process has its own event loop and connection pool. Tasks travel in
batches over bounded multiprocessing queues (bounded, so the manifest is read only as fast as
tasks are done); results come back in batches.

Operations are built inside each worker from the job's picklable context, exactly as the
asyncio engine builds them, so no operation knows which engine runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import queue
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from multiprocessing.process import BaseProcess
from typing import Any

from s3batch import eventloop, heap
from s3batch.domain.task import Task
from s3batch.engines.base import Finished
from s3batch.engines.batching import ready_batches
from s3batch.engines.local import LocalEngine
from s3batch.operations.base import JobContext
from s3batch.retry import RetryPolicy

#: Tasks per message to a worker, and results per message back.
TASK_BATCH = 200
RESULT_BATCH = 200
#: Longest a finished result waits in a worker before it is sent, in seconds.
RESULT_MAX_DELAY_S = 0.1
#: Task batches queued per worker beyond those being worked on (backpressure).
QUEUE_DEPTH_PER_WORKER = 2
#: Seconds a worker may take to exit after its last task before it is killed.
SHUTDOWN_TIMEOUT_S = 10.0
#: Seconds between checks that workers are alive while waiting for results.
RESULT_POLL_S = 0.5

_DONE = None


class WorkerDied(RuntimeError):
    """A worker process exited without finishing its tasks."""


class ProcessEngine:
    def __init__(self, processes: int, concurrency: int, retry: RetryPolicy) -> None:
        self.processes = processes
        self.concurrency = concurrency
        self.retry = retry

    async def run(
        self, job: JobContext, operation: Mapping[str, Any], tasks: AsyncIterator[Task]
    ) -> AsyncIterator[Finished]:
        ctx = mp.get_context("spawn")  # never fork a process that runs an event loop
        inbox: Any = ctx.Queue(self.processes * QUEUE_DEPTH_PER_WORKER)
        outbox: Any = ctx.Queue()
        per_worker = max(1, self.concurrency // self.processes)
        workers = [
            ctx.Process(
                target=_worker_main,
                args=(job, dict(operation), per_worker, self.retry, inbox, outbox),
                # Not daemonic: a LambdaInvoke worker starts its function's own processes, which
                # a daemonic process may not. `_stop` joins (then kills) every worker in `finally`.
                daemon=False,
            )
            for _ in range(self.processes)
        ]
        for w in workers:
            w.start()
        feeder = asyncio.create_task(_feed(tasks, inbox, self.processes))
        try:
            finished = 0
            while finished < self.processes:
                message = await _next_result(outbox, workers)
                if message is _DONE:
                    finished += 1
                    continue
                yield message
            await feeder
        finally:
            feeder.cancel()
            with contextlib.suppress(BaseException):
                await feeder
            _stop(workers)


async def _feed(tasks: AsyncIterator[Task], inbox: Any, processes: int) -> None:
    # Batches form from what is ready (engines/batching.py): a slow stream never holds tasks
    # back in a partial message. Each worker's own engine regroups them for its operation's
    # batch size (LambdaInvoke's InvocationBatchSize is per job, read where the operation is built).
    batches = ready_batches(tasks, TASK_BATCH)
    try:
        async for batch in batches:
            await asyncio.to_thread(inbox.put, batch)
    finally:
        await batches.aclose()
    for _ in range(processes):
        await asyncio.to_thread(inbox.put, _DONE)


async def _next_result(outbox: Any, workers: Sequence[BaseProcess]) -> Any:
    while True:
        try:
            return await asyncio.to_thread(outbox.get, True, RESULT_POLL_S)
        except queue.Empty:
            dead = [w for w in workers if not w.is_alive() and w.exitcode not in (0, None)]
            if dead:
                raise WorkerDied(f"engine worker exited with code {dead[0].exitcode}") from None


def _stop(workers: Sequence[BaseProcess]) -> None:
    for w in workers:
        w.join(timeout=SHUTDOWN_TIMEOUT_S / len(workers))
        if w.is_alive():
            w.kill()
            w.join()


def _worker_main(
    job: JobContext, operation: dict[str, Any], concurrency: int, retry: RetryPolicy, inbox: Any, outbox: Any
) -> None:
    heap.enable()
    eventloop.run(_worker(job, operation, concurrency, retry, inbox, outbox))


async def _worker(
    job: JobContext, operation: dict[str, Any], concurrency: int, retry: RetryPolicy, inbox: Any, outbox: Any
) -> None:
    engine = LocalEngine(concurrency, retry)
    out: Finished = []
    sent = time.monotonic()
    async for finished in engine.run(job, operation, _inbox_tasks(inbox)):
        out.extend(finished)
        if len(out) >= RESULT_BATCH or time.monotonic() - sent > RESULT_MAX_DELAY_S:
            outbox.put(out)
            out, sent = [], time.monotonic()
    if out:
        outbox.put(out)
    outbox.put(_DONE)


async def _inbox_tasks(inbox: Any) -> AsyncIterator[Task]:
    while (batch := await asyncio.to_thread(inbox.get)) is not _DONE:
        for task in batch:
            yield task
