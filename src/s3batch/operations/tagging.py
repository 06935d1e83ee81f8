"""S3PutObjectTagging: replace each object's whole tag set (no merge, as in AWS)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s3batch.domain import pricing
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import StorageError
from s3batch.operations._params import reject_unknown, tag_set
from s3batch.operations.actions import Permissions, no_extra_needs, object_action
from s3batch.operations.base import (
    UNBATCHED,
    CapabilityProbe,
    Operation,
    OperationContext,
    OperationKind,
    PerTask,
    storage_failure,
)
from s3batch.storage.base import ObjectStore

NAME = "S3PutObjectTagging"
#: The tag the capability probe sets on its scratch object.
PROBE_TAGS = {"s3batch-probe": "1"}


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


async def check_tagging(
    store: ObjectStore, bucket: str, key: str, vid: str | None, _: Mapping[str, Any]
) -> str | None:
    """Tags set, read back, deleted: shared with S3DeleteObjectTagging."""
    tags = dict(PROBE_TAGS)
    await store.put_tags(bucket, key, tags, vid)
    if await store.get_tags(bucket, key, vid) != tags:
        return "object tags did not read back as written"
    await store.delete_tags(bucket, key, vid)
    if await store.get_tags(bucket, key, vid):
        return "DeleteObjectTagging left tags behind"
    return None


#: Tags are core (`ObjectStore`): every store is asked, none may decline by declaration.
TAGGING_PROBE = CapabilityProbe("object tagging", None, check_tagging)

KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(
        object_actions=(object_action("s3:PutObjectTagging", "s3:PutObjectVersionTagging"),),
        bucket_actions=(),
        extra=no_extra_needs,
    ),
    requests=PerTask(pricing.PUT, 1),
    probe=TAGGING_PROBE,
    batch_size=UNBATCHED,
    create=PutTagging,
)
