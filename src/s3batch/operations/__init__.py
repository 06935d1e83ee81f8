"""The operation registry: every operation kind, by AWS name, one line each.

Adding an operation is its module (exposing `KIND`, see `operations/base.py`) plus one line in
`_MODULES`. Every other table is derived from the registered kinds: the operation names
CreateJob accepts, the IAM actions a task needs (`operations/permissions.py`), the requests a
job makes (the dry run's prices) and the capability probe run in Preparing.

Modules load lazily: a copy job never imports the function pool.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import replace
from importlib import import_module
from importlib.util import find_spec
from typing import Any

from s3batch.errors import BadRequest, ConfigError
from s3batch.operations.base import Operation, OperationContext, OperationKind
from s3batch.operations.guard import RoleCheck, guarded

Creator = Callable[[Mapping[str, Any], OperationContext], Operation]

#: AWS OperationName → the module defining its KIND. The order is the one CreateJob's
#: "unknown operation" message lists.
_MODULES = {
    "LambdaInvoke": "s3batch.operations.invoke",
    "S3PutObjectCopy": "s3batch.operations.copy",
    "S3PutObjectAcl": "s3batch.operations.acl",
    "S3PutObjectTagging": "s3batch.operations.tagging",
    "S3DeleteObjectTagging": "s3batch.operations.delete_tagging",
    "S3InitiateRestoreObject": "s3batch.operations.restore",
    "S3PutObjectLegalHold": "s3batch.operations.legal_hold",
    "S3PutObjectRetention": "s3batch.operations.retention",
    "S3ReplicateObject": "s3batch.operations.replicate",
    "S3ComputeObjectChecksum": "s3batch.operations.checksum",
    "S3UpdateObjectEncryption": "s3batch.operations.encryption",
    # s3batch extensions: AWS has no delete, CSV ingest or run-command operation.
    "S3DeleteObject": "s3batch.operations.delete",
    "S3batchCsvIngest": "s3batch.operations.csv_ingest",
    "S3batchRunCommand": "s3batch.operations.run_command",
    "S3batchTransfer": "s3batch.operations.transfer",
}


def operation_names() -> tuple[str, ...]:
    """Every registered operation name (whether or not its module is installed)."""
    return tuple(_MODULES)


def supported() -> tuple[str, ...]:
    """Operation names whose module is present in this installation."""
    return tuple(name for name, module in _MODULES.items() if find_spec(module) is not None)


def kind_of(name: str) -> OperationKind:
    """The kind registered as `name`, as its module defines it. Raises BadRequest when there is
    none in this installation."""
    module = _MODULES.get(name)
    if module is None or find_spec(module) is None:
        raise BadRequest(f"operation {name} is not supported yet; supported: {', '.join(supported())}")
    return _load(name, module)


@functools.cache
def _load(name: str, module: str) -> OperationKind:
    kind = import_module(module).KIND
    if not isinstance(kind, OperationKind) or kind.name != name:
        raise ConfigError(f"{module}.KIND must be the OperationKind named {name}")
    return kind


def kinds() -> tuple[OperationKind, ...]:
    """Every kind present in this installation (imports all their modules)."""
    return tuple(kind_of(name) for name in supported())


def get_kind(name: str) -> OperationKind:
    """`kind_of(name)`, its `create` wrapping each operation in the job role's per-task check."""
    kind = kind_of(name)
    return replace(kind, create=_role_checked(kind))


def _role_checked(kind: OperationKind) -> Creator:
    """`create`, wrapping the operation in the job role's per-task check when there is one."""
    create = kind.create

    def checked(params: Mapping[str, Any], ctx: OperationContext) -> Operation:
        operation = create(params, ctx)
        role = ctx.job.role
        if role is None:
            return operation
        return guarded(operation, RoleCheck(role, kind.permissions, params))

    return checked
