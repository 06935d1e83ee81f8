"""S3InitiateRestoreObject: start restoring archived objects (docs/aws-contracts.md#operations).

Parameters: `ExpirationInDays` (int >= 0) and `GlacierJobTier` (BULK | STANDARD). A task
succeeds once the restore is initiated; completion is not tracked, as in AWS.

Objects already under restore: the only client-visible restore state is HEAD's
`x-amz-restore` (`ongoing-request="true"`, or `"false"` plus `expiry-date` once finished;
`ObjectInfo.restore`). It does not say which days or tier a running restore was started with,
so a client cannot check AWS's "same days and a faster tier" rule; only the endpoint knows.
s3batch therefore does not HEAD first (one request per task, not two) and sends RestoreObject
each time, letting the endpoint apply the rules as S3 does:
- a finished restore: S3 answers 200 and moves the expiry date → the task succeeds;
- a running one with other days or a same-or-slower tier: S3 answers 409
  RestoreAlreadyInProgress → the task fails with that code and a message naming the rule;
- a missing object → NoSuchKey (404); an object not in an archive class → InvalidObjectState.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s3batch.domain import pricing
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import BadRequest, StorageError
from s3batch.operations._params import one_of, reject_unknown
from s3batch.operations.actions import Permissions, no_extra_needs, object_action
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
from s3batch.storage.capabilities import restore_store
from s3batch.storage.emulated import RESTORE_FEATURE

NAME = "S3InitiateRestoreObject"
TIERS = ("BULK", "STANDARD")
#: GlacierJobTier → RestoreObject's Tier.
_RESTORE_TIERS = {"BULK": "Bulk", "STANDARD": "Standard"}
ALREADY_IN_PROGRESS = "RestoreAlreadyInProgress"
IN_PROGRESS_RULE = (
    "a restore of this object is in progress: a second request must ask for the same "
    "ExpirationInDays and a faster tier"
)


def validate(params: Mapping[str, Any]) -> None:
    parse_request(params)


def parse_request(params: Mapping[str, Any]) -> tuple[int | None, str | None]:
    """(days, RestoreObject tier) — either may be None (omitted)."""
    reject_unknown(NAME, params, {"ExpirationInDays", "GlacierJobTier"})
    days = params.get("ExpirationInDays")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 0):
        raise BadRequest(f"{NAME}.ExpirationInDays must be a whole number >= 0, got {days!r}")
    tier = params.get("GlacierJobTier")
    if tier is None:
        return days, None
    return days, _RESTORE_TIERS[one_of(NAME, "GlacierJobTier", tier, TIERS)]


class InitiateRestore(Operation):
    name = NAME

    def __init__(self, params: Mapping[str, Any], ctx: OperationContext) -> None:
        self.days, self.tier = parse_request(params)
        self.store = restore_store(ctx.store)
        self.undeclared = undeclared(ctx, RESTORE_FEATURE)

    async def apply(self, task: Task) -> TaskResult:
        if self.store is None:
            return self.undeclared
        try:
            await self.store.restore(task.bucket, task.key, self.days, self.tier, task.version_id)
        except StorageError as exc:
            if exc.code == ALREADY_IN_PROGRESS:
                return TaskResult.fail(exc.code, f"{IN_PROGRESS_RULE} ({exc.message})", exc.http_status)
            return storage_failure(exc)
        return TaskResult.ok()


async def check_restore(
    store: ObjectStore, bucket: str, key: str, vid: str | None, _: Mapping[str, Any]
) -> str | None:
    restoring = restore_store(store)
    if restoring is None:
        return NOT_DECLARED
    try:
        await restoring.restore(bucket, key, 1, "Standard", vid)
    except StorageError as exc:
        if exc.code != "InvalidObjectState":  # the API exists: the scratch object is not archived
            raise
    return None


KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(
        object_actions=(object_action("s3:RestoreObject"),), bucket_actions=(), extra=no_extra_needs
    ),
    requests=PerTask(pricing.POST, 1),
    probe=CapabilityProbe("restore from archive", Capability.RESTORE, check_restore),
    batch_size=UNBATCHED,
    create=InitiateRestore,
)
