"""S3PutObjectTagging: replace each object's whole tag set (no merge, as in AWS)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s3batch.domain.task import Task, TaskResult
from s3batch.errors import StorageError
from s3batch.operations._params import reject_unknown, tag_set
from s3batch.operations.base import Operation, OperationContext, OperationKind, storage_failure

NAME = "S3PutObjectTagging"


def validate(params: Mapping[str, Any]) -> None:
    reject_unknown(NAME, params, {"TagSet"})
    tag_set(NAME, "TagSet", params.get("TagSet", []))


class PutTagging(Operation):
    name = NAME

    def __init__(self, params: Mapping[str, Any], ctx: OperationContext) -> None:
        self.tags = tag_set(NAME, "TagSet", params.get("TagSet", []))
        self.store = ctx.store

    async def apply(self, task: Task) -> TaskResult:
        try:
            await self.store.put_tags(task.bucket, task.key, self.tags, task.version_id)
        except StorageError as exc:
            return storage_failure(exc)
        return TaskResult.ok()


KIND = OperationKind(NAME, validate, PutTagging)
