"""The single per-task step every engine shares: attempts, backoff, errors → results.

With an `AdaptiveLimit`, every attempt (first try and each retry) waits for a slot under the
current limit and reports its result to it; backoff sleeps hold no slot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from s3batch import heap
from s3batch.domain.task import Task, TaskResult
from s3batch.engines.limiter import AdaptiveLimit
from s3batch.operations import get_kind
from s3batch.operations.base import JobContext, Operation, OperationContext
from s3batch.retry import RetryPolicy
from s3batch.storage.base import ObjectStore
from s3batch.storage.config import open_store

log = logging.getLogger(__name__)


def build_operation(job: JobContext, operation: Mapping[str, Any]) -> tuple[Operation, ObjectStore]:
    name, params = next(iter(operation.items()))
    store = open_store(job.storage)
    built = get_kind(name).create(params, OperationContext(job=job, store=store))
    heap.freeze_once()  # the job's modules are imported now (heap.py)
    return built, store


async def apply_safely(op: Operation, task: Task) -> TaskResult:
    try:
        return await op.apply(task)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # an operation bug must fail one task, not the job
        log.exception("operation %s raised on %s/%s", op.name, task.bucket, task.key)
        return TaskResult.fail("InternalError", f"{type(exc).__name__}: {exc}", None)


async def apply_limited(op: Operation, task: Task, limit: AdaptiveLimit | None) -> TaskResult:
    """One attempt, holding a slot of `limit` (if any) while the request is in flight."""
    if limit is None:
        return await apply_safely(op, task)
    async with limit.slot() as report:
        result = await apply_safely(op, task)
        report(result)
    return result


async def execute_task(
    op: Operation,
    task: Task,
    policy: RetryPolicy,
    first: TaskResult | None = None,
    limit: AdaptiveLimit | None = None,
) -> TaskResult:
    """Run one task until it succeeds, fails for good, or attempts run out.

    `first` is a result already obtained (e.g. from a batch call) counting as attempt 1.
    """
    attempt = 1
    result = first if first is not None else await apply_limited(op, task, limit)
    while not result.succeeded and result.retryable and policy.should_retry(attempt):
        await asyncio.sleep(policy.delay_s(attempt))
        attempt += 1
        if limit is not None:
            limit.stats.retries += 1
        result = await apply_limited(op, task, limit)
    return result


async def execute_batch(
    op: Operation, tasks: Sequence[Task], policy: RetryPolicy, limit: AdaptiveLimit | None = None
) -> list[TaskResult]:
    """One apply_many call (one slot), then per-task retries for what failed retryably.

    Retries go one task per `apply` call, whatever the batch size: a batched LambdaInvoke
    redrives a TemporaryFailure in a one-task event, DeleteObjects a key with a DeleteObject.
    """
    firsts = await _apply_many_limited(op, tasks, limit)
    if all(r.succeeded or not r.retryable for r in firsts):
        return firsts  # nothing to retry: skip a gather (an asyncio task per task) per batch
    return list(
        await asyncio.gather(
            *(execute_task(op, t, policy, r, limit) for t, r in zip(tasks, firsts, strict=True))
        )
    )


async def _apply_many_limited(
    op: Operation, tasks: Sequence[Task], limit: AdaptiveLimit | None
) -> list[TaskResult]:
    if limit is None:
        return await _apply_many_safely(op, tasks)
    async with limit.slot() as report:
        firsts = await _apply_many_safely(op, tasks)
        if firsts:  # a batch is one call: its worst outcome speaks for the endpoint
            report(next((r for r in firsts if not r.succeeded and r.retryable), firsts[0]))
    return firsts


async def _apply_many_safely(op: Operation, tasks: Sequence[Task]) -> list[TaskResult]:
    try:
        if len(tasks) == 1 and type(op).apply_many is Operation.apply_many:
            # The default apply_many would gather (one asyncio task) around a single apply.
            return [await op.apply(tasks[0])]
        return list(await op.apply_many(tasks))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("operation %s raised on a batch of %d", op.name, len(tasks))
        failed = TaskResult.fail("InternalError", f"{type(exc).__name__}: {exc}", None, True)
        return [failed] * len(tasks)
