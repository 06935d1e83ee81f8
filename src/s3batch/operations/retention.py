"""S3PutObjectRetention: set or remove each object's Object Lock retention (docs/aws-contracts.md#operations).

Parameters: `Retention{Mode COMPLIANCE|GOVERNANCE, RetainUntilDate}` (required; omitting both
Mode and RetainUntilDate removes the retention) and `BypassGovernanceRetention` (bool).

COMPLIANCE retention can only be extended. S3 enforces that itself, but not every endpoint
does (moto 5.2 accepts a shorter date, and has no GetObjectRetention), so each task first reads
the current retention from HEAD (`ObjectLockMode`, `ObjectLockRetainUntilDate`) and refuses,
as S3 does, with AccessDenied (403): a shorter date, another mode, or removal while an
unexpired COMPLIANCE retention is in force. That HEAD also makes a missing object NoSuchKey.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from s3batch.domain import pricing
from s3batch.domain.objects import ObjectInfo, Retention
from s3batch.domain.roles import Need
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import BadRequest, StorageError
from s3batch.operations._params import one_of, reject_unknown
from s3batch.operations.actions import GET_LOCK_CONFIGURATION, Permissions, object_action
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
from s3batch.storage.emulated import RETENTION_FEATURE

NAME = "S3PutObjectRetention"
MODES = ("COMPLIANCE", "GOVERNANCE")
#: What S3 answers when a COMPLIANCE retention would be weakened.
COMPLIANCE_REFUSAL = ("AccessDenied", 403)
#: GOVERNANCE retention the capability probe sets and removes again (never COMPLIANCE: it could not).
PROBE_RETENTION = timedelta(days=1)


def validate(params: Mapping[str, Any]) -> None:
    parse_retention(params)


def parse_retention(params: Mapping[str, Any]) -> tuple[Retention, bool]:
    """(the retention to set, BypassGovernanceRetention)."""
    reject_unknown(NAME, params, {"Retention", "BypassGovernanceRetention"})
    value = params.get("Retention")
    if not isinstance(value, Mapping):
        raise BadRequest(f"{NAME}.Retention is required ({{}} removes retention)")
    reject_unknown(f"{NAME}.Retention", value, {"Mode", "RetainUntilDate"})
    bypass = params.get("BypassGovernanceRetention", False)
    if not isinstance(bypass, bool):
        raise BadRequest(f"{NAME}.BypassGovernanceRetention must be true or false")
    mode, until = value.get("Mode"), value.get("RetainUntilDate")
    if (mode is None) != (until is None):
        raise BadRequest(f"{NAME}.Retention needs both Mode and RetainUntilDate, or neither to remove it")
    if mode is None:
        return Retention(), bypass
    return Retention(one_of(f"{NAME}.Retention", "Mode", mode, MODES), _date(until)), bypass


def _date(value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(
                f"{NAME}.Retention.RetainUntilDate must be an ISO 8601 timestamp, got {value!r}"
            ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def compliance_violation(current: ObjectInfo, wanted: Retention, now: datetime) -> str | None:
    """Why `wanted` would weaken the object's COMPLIANCE retention, or None if it does not."""
    until = current.lock_retain_until
    if current.lock_mode != "COMPLIANCE" or until is None or until <= now:
        return None
    if wanted.mode is None:
        return f"COMPLIANCE retention until {until.isoformat()} cannot be removed"
    if wanted.mode != "COMPLIANCE":
        return "COMPLIANCE retention cannot be changed to GOVERNANCE"
    if wanted.retain_until is not None and wanted.retain_until < until:
        return f"COMPLIANCE retention can only be extended; it runs until {until.isoformat()}"
    return None


class PutObjectRetention(Operation):
    name = NAME

    def __init__(self, params: Mapping[str, Any], ctx: OperationContext) -> None:
        self.retention, self.bypass = parse_retention(params)
        self.store = ctx.store
        self.lock = object_lock_store(ctx.store)
        self.undeclared = undeclared(ctx, RETENTION_FEATURE)

    async def apply(self, task: Task) -> TaskResult:
        try:
            current = await self.store.head(task.bucket, task.key, task.version_id)
            why = compliance_violation(current, self.retention, datetime.now(UTC))
            if why is not None:
                code, status = COMPLIANCE_REFUSAL
                return TaskResult.fail(code, why, status)
            if self.lock is None:  # after the HEAD, as ever: a missing object is still NoSuchKey
                return self.undeclared
            await self.lock.put_retention(
                task.bucket, task.key, self.retention, task.version_id, bypass_governance=self.bypass
            )
        except StorageError as exc:
            return storage_failure(exc)
        return TaskResult.ok()


def bypass_needs(params: Mapping[str, Any], bucket: str, versioned: bool) -> tuple[Need, ...]:
    """BypassGovernanceRetention needs its own action."""
    if params.get("BypassGovernanceRetention"):
        return (Need("s3:BypassGovernanceRetention", bucket),)
    return ()


async def check_retention(
    store: ObjectStore, bucket: str, key: str, vid: str | None, _: Mapping[str, Any]
) -> str | None:
    lock = object_lock_store(store)
    if lock is None:
        return NOT_DECLARED
    until = (datetime.now(UTC) + PROBE_RETENTION).replace(microsecond=0)
    await lock.put_retention(bucket, key, Retention("GOVERNANCE", until), vid)
    if (await lock.head(bucket, key, vid)).lock_mode != "GOVERNANCE":
        return "the retention did not read back as GOVERNANCE"
    await lock.put_retention(bucket, key, Retention(), vid, bypass_governance=True)
    return None


KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(
        object_actions=(object_action("s3:PutObjectRetention"),),
        bucket_actions=(GET_LOCK_CONFIGURATION,),
        extra=bypass_needs,
    ),
    requests=PerTask(pricing.PUT, 1),
    probe=CapabilityProbe("Object Lock retention", Capability.OBJECT_LOCK, check_retention),
    batch_size=UNBATCHED,
    create=PutObjectRetention,
)
