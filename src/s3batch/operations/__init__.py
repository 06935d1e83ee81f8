"""Operation kinds by AWS name. Modules load lazily: a copy job never imports the function pool."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from importlib.util import find_spec
from typing import Any

from s3batch.errors import BadRequest
from s3batch.operations.base import Operation, OperationContext, OperationKind
from s3batch.operations.guard import RoleCheck, guarded

Creator = Callable[[Mapping[str, Any], OperationContext], Operation]

_MODULES = {
    "LambdaInvoke": "s3batch.operations.invoke",
    "S3PutObjectCopy": "s3batch.operations.copy",
    "S3PutObjectTagging": "s3batch.operations.tagging",
    "S3DeleteObjectTagging": "s3batch.operations.delete_tagging",
    "S3DeleteObject": "s3batch.operations.delete",
    "S3PutObjectAcl": "s3batch.operations.acl",
    "S3InitiateRestoreObject": "s3batch.operations.restore",
    "S3PutObjectLegalHold": "s3batch.operations.legal_hold",
    "S3PutObjectRetention": "s3batch.operations.retention",
    "S3ReplicateObject": "s3batch.operations.replicate",
    "S3ComputeObjectChecksum": "s3batch.operations.checksum",
    "S3UpdateObjectEncryption": "s3batch.operations.encryption",
    "S3batchCsvIngest": "s3batch.operations.csv_ingest",
}


def supported() -> tuple[str, ...]:
    """Operation names whose module is present in this installation."""
    return tuple(name for name, module in _MODULES.items() if find_spec(module) is not None)


def get_kind(name: str) -> OperationKind:
    module = _MODULES.get(name)
    if module is None or find_spec(module) is None:
        raise BadRequest(f"operation {name} is not supported yet; supported: {', '.join(supported())}")
    kind = import_module(module).KIND
    assert isinstance(kind, OperationKind)
    return OperationKind(kind.name, kind.validate, _role_checked(name, kind.create))


def _role_checked(name: str, create: Creator) -> Creator:
    """`create`, wrapping the operation in the job role's per-task check when there is one."""

    def checked(params: Mapping[str, Any], ctx: OperationContext) -> Operation:
        operation = create(params, ctx)
        role = ctx.job.role
        if role is None:
            return operation
        return guarded(operation, RoleCheck(role, name, params))

    return checked
