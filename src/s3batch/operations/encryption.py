"""S3UpdateObjectEncryption: re-encrypt each object in place with SSE-KMS (docs/aws-contracts.md#operations).

Parameters: `ObjectEncryption{SSEKMS{KMSKeyArn (req.), BucketKeyEnabled}}` (the XML element is
`SSE-KMS`; both spellings are accepted).

AWS changes the encryption without copying data. Through the S3 API the only way is a
CopyObject onto the object itself with ServerSideEncryption=aws:kms, SSEKMSKeyId and
BucketKeyEnabled, metadata and tags copied (the storage adapter's `update_encryption`; above
5 GiB it is a multipart copy). In a versioned bucket this writes a new current version; a row
with a VersionId copies that version onto the key. Endpoints without SSE-KMS answer with their
own error per task; the folder and memory stores answer NotImplemented (501).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from s3batch.domain import pricing
from s3batch.domain.objects import KmsEncryption
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import BadRequest, StorageError
from s3batch.operations._params import reject_unknown
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
from s3batch.storage.capabilities import encryption_store
from s3batch.storage.emulated import ENCRYPTION_FEATURE

NAME = "S3UpdateObjectEncryption"
#: The model's KMSKeyArn pattern, and its length limits in characters.
_KMS_KEY_ARN = re.compile(r"^arn:aws[a-zA-Z0-9-]*:kms:.*:key/.*$")
KMS_ARN_MIN_CHARS, KMS_ARN_MAX_CHARS = 20, 2048
_SSE_KMS_NAMES = ("SSEKMS", "SSE-KMS")


def validate(params: Mapping[str, Any]) -> None:
    parse_encryption(params)


def parse_encryption(params: Mapping[str, Any]) -> KmsEncryption:
    reject_unknown(NAME, params, {"ObjectEncryption"})
    outer = params.get("ObjectEncryption")
    if not isinstance(outer, Mapping):
        raise BadRequest(f"{NAME}.ObjectEncryption{{SSEKMS{{KMSKeyArn}}}} is required")
    reject_unknown(f"{NAME}.ObjectEncryption", outer, set(_SSE_KMS_NAMES))
    sse = next((outer[name] for name in _SSE_KMS_NAMES if name in outer), None)
    if not isinstance(sse, Mapping):
        raise BadRequest(f"{NAME}.ObjectEncryption.SSEKMS (an object with KMSKeyArn) is required")
    where = f"{NAME}.ObjectEncryption.SSEKMS"
    reject_unknown(where, sse, {"KMSKeyArn", "BucketKeyEnabled"})
    arn = sse.get("KMSKeyArn")
    if not isinstance(arn, str) or not KMS_ARN_MIN_CHARS <= len(arn) <= KMS_ARN_MAX_CHARS:
        raise BadRequest(f"{where}.KMSKeyArn is required: a KMS key ARN of 20-2048 characters")
    if not _KMS_KEY_ARN.match(arn):
        raise BadRequest(f"{where}.KMSKeyArn must look like arn:aws:kms:REGION:ACCOUNT:key/ID, got {arn!r}")
    bucket_key = sse.get("BucketKeyEnabled", False)
    if not isinstance(bucket_key, bool):
        raise BadRequest(f"{where}.BucketKeyEnabled must be true or false")
    return KmsEncryption(arn, bucket_key)


class UpdateObjectEncryption(Operation):
    name = NAME

    def __init__(self, params: Mapping[str, Any], ctx: OperationContext) -> None:
        self.sse = parse_encryption(params)
        self.store = encryption_store(ctx.store)
        self.undeclared = undeclared(ctx, ENCRYPTION_FEATURE)

    async def apply(self, task: Task) -> TaskResult:
        if self.store is None:
            return self.undeclared
        try:
            await self.store.update_encryption(task.bucket, task.key, self.sse, task.version_id)
        except StorageError as exc:
            return storage_failure(exc)
        return TaskResult.ok()


async def check_encryption(
    store: ObjectStore, bucket: str, key: str, vid: str | None, params: Mapping[str, Any]
) -> str | None:
    encrypting = encryption_store(store)
    if encrypting is None:
        return NOT_DECLARED
    sse = params.get("ObjectEncryption", {}).get("SSEKMS", {})
    await encrypting.update_encryption(bucket, key, KmsEncryption(str(sse.get("KMSKeyArn", ""))), vid)
    if (await encrypting.head(bucket, key)).encryption != "SSE-KMS":
        return "the object was not SSE-KMS encrypted afterwards"
    return None


KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(
        object_actions=(object_action("s3:UpdateObjectEncryption"),), bucket_actions=(), extra=no_extra_needs
    ),
    requests=PerTask(pricing.COPY, 1),
    probe=CapabilityProbe("SSE-KMS encryption", Capability.ENCRYPTION, check_encryption),
    batch_size=UNBATCHED,
    create=UpdateObjectEncryption,
)
