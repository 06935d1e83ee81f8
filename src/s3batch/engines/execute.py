"""The single per-task step every engine shares: attempts, backoff, errors → results."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from s3batch.domain.task import Task, TaskResult
from s3batch.operations import get_kind
from s3batch.operations.base import JobContext, Operation, OperationContext
from s3batch.retry import RetryPolicy
from s3batch.storage.base import ObjectStore
from s3batch.storage.config import open_store

log = logging.getLogger(__name__)


def build_operation(job: JobContext, operation: Mapping[str, Any]) -> tuple[Operation, ObjectStore]:
    name, params = next(iter(operation.items()))
    store = open_store(job.storage)
    return get_kind(name).create(params, OperationContext(job=job, store=store)), store


async def apply_safely(op: Operation, task: Task) -> TaskResult:
    try:
        return await op.apply(task)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # an operation bug must fail one task, not the job
        log.exception("operation %s raised on %s/%s", op.name, task.bucket, task.key)
        return TaskResult.fail("InternalError", f"{type(exc).__name__}: {exc}", None)


async def execute_task(
    op: Operation, task: Task, policy: RetryPolicy, first: TaskResult | None = None
) -> TaskResult:
    """Run one task until it succeeds, fails for good, or attempts run out.

    `first` is a result already obtained (e.g. from a batch call) counting as attempt 1.
    """
    attempt, result = 1, first if first is not None else await apply_safely(op, task)
    while not result.succeeded and result.retryable and policy.should_retry(attempt):
        await asyncio.sleep(policy.delay_s(attempt))
        attempt += 1
        result = await apply_safely(op, task)
    return result


async def execute_batch(op: Operation, tasks: Sequence[Task], policy: RetryPolicy) -> list[TaskResult]:
    """One apply_many call, then per-task retries for what failed retryably."""
    try:
        firsts = await op.apply_many(tasks)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("operation %s raised on a batch of %d", op.name, len(tasks))
        failed = TaskResult.fail("InternalError", f"{type(exc).__name__}: {exc}", None, True)
        firsts = [failed] * len(tasks)
    return list(
        await asyncio.gather(*(execute_task(op, t, policy, r) for t, r in zip(tasks, firsts, strict=True)))
    )
