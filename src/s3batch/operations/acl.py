"""S3PutObjectAcl: replace each object's whole ACL (docs/aws-contracts.md#operations).

Parameters: `AccessControlPolicy` with exactly one of
- `AccessControlList{Owner{ID, DisplayName} (req.), Grants[S3Grant]}`, or
- `CannedAccessControlList` (private, public-read, ...).

Explicit grants are sent as PutObjectAcl's `x-amz-grant-*` headers (`id="..."`,
`emailAddress="..."`, `uri="..."`), which replace the whole ACL just as a policy body does.
The Owner is required and checked, as AWS requires it, but not sent: PutObjectAcl cannot change
an object's owner. `parse_grants` is shared with S3PutObjectCopy's AccessControlGrants.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s3batch.domain import pricing
from s3batch.domain.objects import AclSpec, Grant
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
from s3batch.storage.capabilities import acl_store
from s3batch.storage.emulated import ACL_FEATURE

NAME = "S3PutObjectAcl"
CANNED_ACLS = (
    "private",
    "public-read",
    "public-read-write",
    "aws-exec-read",
    "authenticated-read",
    "bucket-owner-read",
    "bucket-owner-full-control",
)
GRANTEE_TYPES = ("id", "emailAddress", "uri")
PERMISSIONS = ("FULL_CONTROL", "READ", "WRITE", "READ_ACP", "WRITE_ACP")
#: S3's limit on grants in one ACL.
MAX_GRANTS = 100


def validate(params: Mapping[str, Any]) -> None:
    parse_acl(params)


def parse_acl(params: Mapping[str, Any]) -> AclSpec:
    reject_unknown(NAME, params, {"AccessControlPolicy"})
    policy = params.get("AccessControlPolicy")
    if not isinstance(policy, Mapping):
        raise BadRequest(f"{NAME}.AccessControlPolicy (an object) is required")
    reject_unknown(f"{NAME}.AccessControlPolicy", policy, {"AccessControlList", "CannedAccessControlList"})
    acl, canned = policy.get("AccessControlList"), policy.get("CannedAccessControlList")
    if (acl is None) == (canned is None):
        raise BadRequest(
            f"{NAME}.AccessControlPolicy needs exactly one of AccessControlList or CannedAccessControlList"
        )
    if canned is not None:
        where = f"{NAME}.AccessControlPolicy.CannedAccessControlList"
        return AclSpec(canned=one_of(where, "value", canned, CANNED_ACLS))
    return _explicit_acl(acl)


def _explicit_acl(acl: Any) -> AclSpec:
    where = f"{NAME}.AccessControlPolicy.AccessControlList"
    if not isinstance(acl, Mapping):
        raise BadRequest(f"{where} must be an object with Owner and Grants")
    reject_unknown(where, acl, {"Owner", "Grants"})
    owner = acl.get("Owner")
    if not isinstance(owner, Mapping) or not isinstance(owner.get("ID"), str) or not owner["ID"]:
        raise BadRequest(f"{where}.Owner with a non-empty ID is required")
    display = owner.get("DisplayName")
    return AclSpec(
        owner_id=owner["ID"],
        owner_display=display if isinstance(display, str) else None,
        grants=parse_grants(f"{where}.Grants", acl.get("Grants", [])),
    )


def parse_grants(where: str, value: Any, permissions: tuple[str, ...] = PERMISSIONS) -> tuple[Grant, ...]:
    """A list of S3Grant{Grantee{TypeIdentifier, Identifier, DisplayName}, Permission}."""
    if not isinstance(value, list):
        raise BadRequest(f"{where} must be a list of S3Grant objects")
    if len(value) > MAX_GRANTS:
        raise BadRequest(f"{where}: S3 allows at most {MAX_GRANTS} grants")
    return tuple(_grant(f"{where}[{i}]", item, permissions) for i, item in enumerate(value))


def _grant(where: str, item: Any, permissions: tuple[str, ...]) -> Grant:
    if not isinstance(item, Mapping) or not isinstance(item.get("Grantee"), Mapping):
        raise BadRequest(f"{where} needs a Grantee object and a Permission")
    grantee = item["Grantee"]
    kind = one_of(where, "Grantee.TypeIdentifier", grantee.get("TypeIdentifier"), GRANTEE_TYPES)
    identifier = grantee.get("Identifier")
    if not isinstance(identifier, str) or not identifier or '"' in identifier:
        raise BadRequest(f"{where}.Grantee.Identifier must be a non-empty string without '\"'")
    display = grantee.get("DisplayName")
    return Grant(
        grantee_type=kind,
        identifier=identifier,
        permission=one_of(where, "Permission", item.get("Permission"), permissions),
        display_name=display if isinstance(display, str) else None,
    )


class PutObjectAcl(Operation):
    name = NAME

    def __init__(self, params: Mapping[str, Any], ctx: OperationContext) -> None:
        self.acl = parse_acl(params)
        self.store = acl_store(ctx.store)
        self.undeclared = undeclared(ctx, ACL_FEATURE)

    async def apply(self, task: Task) -> TaskResult:
        if self.store is None:
            return self.undeclared
        try:
            await self.store.put_acl(task.bucket, task.key, self.acl, task.version_id)
        except StorageError as exc:
            return storage_failure(exc)
        return TaskResult.ok()


async def check_acl(
    store: ObjectStore, bucket: str, key: str, vid: str | None, _: Mapping[str, Any]
) -> str | None:
    acls = acl_store(store)
    if acls is None:
        return NOT_DECLARED
    await acls.put_acl(bucket, key, AclSpec(canned="private"), vid)
    return None  # the body check after every probe catches servers that truncate the object


KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(
        object_actions=(object_action("s3:PutObjectAcl", "s3:PutObjectVersionAcl"),),
        bucket_actions=(),
        extra=no_extra_needs,
    ),
    requests=PerTask(pricing.PUT, 1),
    probe=CapabilityProbe("object ACLs", Capability.ACL, check_acl),
    batch_size=UNBATCHED,
    create=PutObjectAcl,
)
