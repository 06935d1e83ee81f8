"""S3PutObjectLegalHold: set each object's Object Lock legal hold ON or OFF
(docs/aws-contracts.md#operations).

Parameters: `LegalHold{Status ON|OFF}` (required). AWS checks the bucket's Object Lock
configuration first; s3batch leaves that to each PutObjectLegalHold call, whose refusal
(InvalidRequest "Bucket is missing ObjectLockConfiguration") becomes the task's failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s3batch.domain import pricing
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import BadRequest, StorageError
from s3batch.operations._params import one_of, reject_unknown
from s3batch.operations.actions import GET_LOCK_CONFIGURATION, Permissions, no_extra_needs, object_action
from s3batch.operations.base import (
    NOT_DECLARED,
    UNBATCHED,
    CapabilityProbe,
    Operation,
    OperationContext,
    OperationKind,
    PerTask,
    storage_failure,
    undeclared,
)
from s3batch.storage.base import Capability, ObjectStore
from s3batch.storage.capabilities import object_lock_store
from s3batch.storage.emulated import LEGAL_HOLD_FEATURE

NAME = "S3PutObjectLegalHold"
STATUSES = ("ON", "OFF")


def validate(params: Mapping[str, Any]) -> None:
    parse_status(params)


def parse_status(params: Mapping[str, Any]) -> str:
    reject_unknown(NAME, params, {"LegalHold"})
    hold = params.get("LegalHold")
    if not isinstance(hold, Mapping) or "Status" not in hold:
        raise BadRequest(f"{NAME}.LegalHold{{Status: ON|OFF}} is required")
    reject_unknown(f"{NAME}.LegalHold", hold, {"Status"})
    return one_of(f"{NAME}.LegalHold", "Status", hold["Status"], STATUSES)


class PutObjectLegalHold(Operation):
    name = NAME

    def __init__(self, params: Mapping[str, Any], ctx: OperationContext) -> None:
        self.status = parse_status(params)
        self.store = object_lock_store(ctx.store)
        self.undeclared = undeclared(ctx, LEGAL_HOLD_FEATURE)

    async def apply(self, task: Task) -> TaskResult:
        if self.store is None:
            return self.undeclared
        try:
            await self.store.put_legal_hold(task.bucket, task.key, self.status, task.version_id)
        except StorageError as exc:
            return storage_failure(exc)
        return TaskResult.ok()


async def check_legal_hold(
    store: ObjectStore, bucket: str, key: str, vid: str | None, _: Mapping[str, Any]
) -> str | None:
    lock = object_lock_store(store)
    if lock is None:
        return NOT_DECLARED
    await lock.put_legal_hold(bucket, key, "ON", vid)
    if (await lock.head(bucket, key, vid)).legal_hold != "ON":
        return "the legal hold did not read back as ON"
    await lock.put_legal_hold(bucket, key, "OFF", vid)
    return None


KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(
        object_actions=(object_action("s3:PutObjectLegalHold"),),
        bucket_actions=(GET_LOCK_CONFIGURATION,),
        extra=no_extra_needs,
    ),
    requests=PerTask(pricing.PUT, 1),
    probe=CapabilityProbe("Object Lock legal holds", Capability.OBJECT_LOCK, check_legal_hold),
    batch_size=UNBATCHED,
    create=PutObjectLegalHold,
)
