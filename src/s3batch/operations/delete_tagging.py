"""S3DeleteObjectTagging: remove every tag from each object."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s3batch.domain import pricing
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import StorageError
from s3batch.operations._params import reject_unknown
from s3batch.operations.actions import Permissions, no_extra_needs, object_action
from s3batch.operations.base import (
    UNBATCHED,
    Operation,
    OperationContext,
    OperationKind,
    PerTask,
    storage_failure,
)
from s3batch.operations.tagging import TAGGING_PROBE

NAME = "S3DeleteObjectTagging"


def validate(params: Mapping[str, Any]) -> None:
    reject_unknown(NAME, params, set())


class DeleteTagging(Operation):
    name = NAME

    def __init__(self, params: Mapping[str, Any], ctx: OperationContext) -> None:
        self.store = ctx.store

    async def apply(self, task: Task) -> TaskResult:
        try:
            await self.store.delete_tags(task.bucket, task.key, task.version_id)
        except StorageError as exc:
            return storage_failure(exc)
        return TaskResult.ok()


KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(
        object_actions=(object_action("s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging"),),
        bucket_actions=(),
        extra=no_extra_needs,
    ),
    requests=PerTask(pricing.DELETE, 1),
    probe=TAGGING_PROBE,
    batch_size=UNBATCHED,
    create=DeleteTagging,
)
