"""Operation kinds by AWS name. Modules load lazily: a copy job never imports the function pool."""

from __future__ import annotations

from importlib import import_module

from s3batch.errors import BadRequest
from s3batch.operations.base import OperationKind

_MODULES = {
    "LambdaInvoke": "s3batch.operations.invoke",
    "S3PutObjectCopy": "s3batch.operations.copy",
    "S3PutObjectTagging": "s3batch.operations.tagging",
    "S3DeleteObjectTagging": "s3batch.operations.delete_tagging",
    "S3DeleteObject": "s3batch.operations.delete",
}


def supported() -> tuple[str, ...]:
    return tuple(_MODULES)


def get_kind(name: str) -> OperationKind:
    module = _MODULES.get(name)
    if module is None:
        raise BadRequest(f"operation {name} is not supported yet; supported: {', '.join(_MODULES)}")
    kind = import_module(module).KIND
    assert isinstance(kind, OperationKind)
    return kind
