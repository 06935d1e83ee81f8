"""S3ReplicateObject: Batch Replication — copy each object (version) to its replication
destination (docs/aws-contracts.md#operations).

The destination comes from the source bucket's replication configuration (GetBucketReplication,
read once per source bucket per job): the first enabled rule, by Priority, whose filter prefix
matches the key gives `Destination.Bucket` (an ARN) and `Destination.StorageClass`.

s3batch extension: where the endpoint keeps no replication configuration (ours, MinIO without
site replication, moto without one set), the job may name the destination itself:
`{"S3ReplicateObject": {"DestinationBucket": "arn:aws:s3:::dst"}}`. AWS sends
`<S3ReplicateObject/>` empty, so the parameter is optional; a bucket's own configuration wins
over it. With neither, the task fails with ReplicationConfigurationNotFoundError (404). A
store that declares no Capability.REPLICATION keeps no configuration: the job's own
DestinationBucket then applies to every bucket.

The copy keeps the key, the user metadata and system headers, and the tags (CopyObject with
both directives COPY); a row with a VersionId replicates that version. The report's
ResultMessage is "Successful". Not done: setting x-amz-replication-status (COMPLETED on the
source, REPLICA on the copy) — the S3 API offers clients no way to write it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from s3batch.domain import pricing
from s3batch.domain.arn import bucket_from_arn
from s3batch.domain.objects import ReplicationRule
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import BadRequest, StorageError
from s3batch.operations._params import reject_unknown
from s3batch.operations.actions import Permissions, no_extra_needs, object_action
from s3batch.operations.base import (
    UNBATCHED,
    NoProbe,
    Operation,
    OperationContext,
    OperationKind,
    PerTask,
    storage_failure,
)
from s3batch.storage.base import CopyOptions
from s3batch.storage.capabilities import replication_store

NAME = "S3ReplicateObject"
NO_CONFIGURATION = "ReplicationConfigurationNotFoundError"
NO_MATCHING_RULE = "NoMatchingReplicationRule"


def validate(params: Mapping[str, Any]) -> None:
    parse_destination(params)


def parse_destination(params: Mapping[str, Any]) -> str | None:
    """The extension's DestinationBucket as a bucket name, or None."""
    reject_unknown(NAME, params, {"DestinationBucket"})
    arn = params.get("DestinationBucket")
    if arn is None:
        return None
    if not isinstance(arn, str):
        raise BadRequest(f"{NAME}.DestinationBucket must be a bucket ARN like arn:aws:s3:::dst")
    return bucket_from_arn(arn, f"{NAME}.DestinationBucket")


class ReplicateObject(Operation):
    name = NAME

    def __init__(self, params: Mapping[str, Any], ctx: OperationContext) -> None:
        self.fallback = parse_destination(params)
        self.store = ctx.store
        self.replication = replication_store(ctx.store)
        self._rules: dict[str, list[ReplicationRule]] = {}
        self._lock = asyncio.Lock()

    async def _rules_of(self, bucket: str) -> list[ReplicationRule]:
        if self.replication is None:
            return []  # no configuration to read
        async with self._lock:  # one GetBucketReplication per bucket, not one per task
            if bucket not in self._rules:
                self._rules[bucket] = await self.replication.replication_rules(bucket)
            return self._rules[bucket]

    async def _destination(self, task: Task) -> tuple[str, str | None] | TaskResult:
        """(destination bucket, storage class), or the failed result explaining why none."""
        rules = await self._rules_of(task.bucket)
        if not rules:
            if self.fallback is None:
                return TaskResult.fail(
                    NO_CONFIGURATION,
                    f"bucket {task.bucket} has no replication configuration and the job names no "
                    "DestinationBucket",
                    404,
                )
            return self.fallback, None
        rule = next((r for r in rules if task.key.startswith(r.prefix)), None)
        if rule is None:
            return TaskResult.fail(NO_MATCHING_RULE, f"no enabled replication rule matches {task.key!r}", 400)
        return bucket_from_arn(rule.destination, "Destination.Bucket"), rule.storage_class

    async def apply(self, task: Task) -> TaskResult:
        try:
            target = await self._destination(task)
            if isinstance(target, TaskResult):
                return target
            bucket, storage_class = target
            options = CopyOptions(storage_class=storage_class)
            await self.store.copy(
                task.bucket, task.key, bucket, task.key, src_version_id=task.version_id, options=options
            )
        except StorageError as exc:
            return storage_failure(exc)
        return TaskResult.ok()


KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(
        object_actions=(object_action("s3:InitiateReplication"),),
        bucket_actions=("s3:GetReplicationConfiguration",),
        extra=no_extra_needs,
    ),
    requests=PerTask(pricing.COPY, 1),
    probe=NoProbe.PLAIN_DATA_PATH,
    batch_size=UNBATCHED,
    create=ReplicateObject,
)
