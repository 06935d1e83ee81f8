"""S3PutObjectLegalHold: set each object's Object Lock legal hold ON or OFF
(docs/aws-contracts.md#operations).

Parameters: `LegalHold{Status ON|OFF}` (required). AWS checks the bucket's Object Lock
configuration first; s3batch leaves that to each PutObjectLegalHold call, whose refusal
(InvalidRequest "Bucket is missing ObjectLockConfiguration") becomes the task's failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s3batch.domain.task import Task, TaskResult
from s3batch.errors import BadRequest, StorageError
from s3batch.operations._params import one_of, reject_unknown
from s3batch.operations.base import Operation, OperationContext, OperationKind, storage_failure

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
        self.store = ctx.store

    async def apply(self, task: Task) -> TaskResult:
        try:
            await self.store.put_legal_hold(task.bucket, task.key, self.status, task.version_id)
        except StorageError as exc:
            return storage_failure(exc)
        return TaskResult.ok()


KIND = OperationKind(NAME, validate, PutObjectLegalHold)
