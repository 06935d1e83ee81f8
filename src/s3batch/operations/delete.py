"""S3DeleteObject, an s3batch extension (AWS Batch Operations has no delete).

Version-aware: a row with a VersionId deletes that version, one without deletes the current
object (a delete marker in a versioned bucket). Objects go out in DeleteObjects batches of up to
1,000 per bucket. As in S3, deleting a key that does not exist succeeds: that keeps a re-run or a
resumed job idempotent.

Parameters: none ({}).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from s3batch.domain import pricing
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import StorageError
from s3batch.operations._params import reject_unknown
from s3batch.operations.actions import Permissions, no_extra_needs, object_action
from s3batch.operations.base import NoProbe, Operation, OperationContext, OperationKind, storage_failure
from s3batch.storage.base import VersionRef

NAME = "S3DeleteObject"
#: DeleteObjects' limit per request.
DELETE_BATCH_SIZE = 1000


def validate(params: Mapping[str, Any]) -> None:
    reject_unknown(NAME, params, set())


class DeleteObject(Operation):
    name = NAME
    batch_size = DELETE_BATCH_SIZE

    def __init__(self, params: Mapping[str, Any], ctx: OperationContext) -> None:
        self.store = ctx.store

    async def apply(self, task: Task) -> TaskResult:
        try:
            await self.store.delete(task.bucket, task.key, task.version_id)
        except StorageError as exc:
            return storage_failure(exc)
        return TaskResult.ok(http_status=204)

    async def apply_many(self, tasks: Sequence[Task]) -> list[TaskResult]:
        by_bucket: dict[str, list[int]] = defaultdict(list)
        for i, task in enumerate(tasks):
            by_bucket[task.bucket].append(i)
        results: list[TaskResult] = [TaskResult.ok(http_status=204)] * len(tasks)
        for bucket, positions in by_bucket.items():
            refs = [VersionRef(tasks[i].key, tasks[i].version_id) for i in positions]
            try:
                outcomes: Sequence[Exception | None] = await self.store.delete_many(bucket, refs)
            except StorageError as exc:
                outcomes = [exc] * len(refs)
            for i, outcome in zip(positions, outcomes, strict=True):
                if outcome is not None:
                    results[i] = _failure(outcome)
        return results


def _failure(exc: Exception) -> TaskResult:
    if isinstance(exc, StorageError):
        return storage_failure(exc)
    return TaskResult.fail("InternalError", str(exc), None)


def delete_requests(params: Mapping[str, Any], tasks: int, buckets: int) -> dict[str, int]:
    """One DeleteObjects POST per DELETE_BATCH_SIZE keys, plus one for each further bucket (a
    batch never spans buckets)."""
    return {pricing.POST: math.ceil(tasks / DELETE_BATCH_SIZE) + max(buckets - 1, 0)}


KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(
        object_actions=(object_action("s3:DeleteObject", "s3:DeleteObjectVersion"),),
        bucket_actions=(),
        extra=no_extra_needs,
    ),
    requests=delete_requests,
    probe=NoProbe.PLAIN_DATA_PATH,
    batch_size=DELETE_BATCH_SIZE,
    create=DeleteObject,
)
