"""S3PutObjectCopy: server-side copy of each object into TargetResource (docs/aws-contracts.md#operations).

- The destination key is TargetKeyPrefix + "/" + key (no extra "/" when the prefix already
  ends with one), the key decoded from the manifest.
- NewObjectTagging absent copies the source tags; [] clears them; a list replaces them.
- MetadataDirective REPLACE (or NewObjectMetadata given without a directive) uses
  NewObjectMetadata; COPY (the default) keeps the source's.
- Objects above 5 GiB are copied in parts by the storage adapter instead of failing.
- AccessControlGrants become CopyObject's x-amz-grant-* headers (`id="..."`, `emailAddress="..."`,
  `uri="..."`), several grantees of one permission joined with ", ". WRITE is refused: CopyObject
  has no header for it (it does not apply to objects).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s3batch.domain import pricing
from s3batch.domain.arn import bucket_from_arn
from s3batch.domain.roles import Need
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import BadRequest, StorageError
from s3batch.operations._params import one_of, reject_unknown, tag_set
from s3batch.operations.acl import CANNED_ACLS, parse_grants
from s3batch.operations.actions import GET, GET_TAGS, Permissions
from s3batch.operations.base import (
    UNBATCHED,
    NoProbe,
    Operation,
    OperationContext,
    OperationKind,
    PerTask,
    storage_failure,
)
from s3batch.storage.base import CopyOptions, grant_params

NAME = "S3PutObjectCopy"
STORAGE_CLASSES = (
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "GLACIER",
    "INTELLIGENT_TIERING",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
)
#: Grant permissions CopyObject has a header for (no WRITE).
COPY_PERMISSIONS = ("FULL_CONTROL", "READ", "READ_ACP", "WRITE_ACP")
CHECKSUM_ALGORITHMS = ("CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME")
#: NewObjectMetadata field → CopyObject header parameter.
_HEADER_FIELDS = {
    "CacheControl": "CacheControl",
    "ContentDisposition": "ContentDisposition",
    "ContentEncoding": "ContentEncoding",
    "ContentLanguage": "ContentLanguage",
    "ContentType": "ContentType",
    "HttpExpiresDate": "Expires",
}
_METADATA_FIELDS = {*_HEADER_FIELDS, "UserMetadata", "SSEAlgorithm"}
_KNOWN = {
    "TargetResource",
    "TargetKeyPrefix",
    "StorageClass",
    "MetadataDirective",
    "NewObjectMetadata",
    "NewObjectTagging",
    "CannedAccessControlList",
    "AccessControlGrants",
    "RequesterPays",
    "SSEAwsKmsKeyId",
    "BucketKeyEnabled",
    "ChecksumAlgorithm",
    "ModifiedSinceConstraint",
    "UnModifiedSinceConstraint",
    "ObjectLockLegalHoldStatus",
    "ObjectLockMode",
    "ObjectLockRetainUntilDate",
}


def validate(params: Mapping[str, Any]) -> None:
    _Plan.from_params(params)


class _Plan:
    """Parsed, checked parameters."""

    def __init__(self, bucket: str, prefix: str, options: CopyOptions) -> None:
        self.bucket, self.prefix, self.options = bucket, prefix, options

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> _Plan:
        reject_unknown(NAME, params, _KNOWN)
        target = params.get("TargetResource")
        if not isinstance(target, str):
            raise BadRequest(f"{NAME}.TargetResource (a bucket ARN) is required")
        bucket = bucket_from_arn(target, f"{NAME}.TargetResource")
        prefix = params.get("TargetKeyPrefix") or ""
        if not isinstance(prefix, str) or len(prefix) > 1024:
            raise BadRequest(f"{NAME}.TargetKeyPrefix must be a string of at most 1024 characters")
        return cls(bucket, prefix, _options(params))

    def target_key(self, key: str) -> str:
        if not self.prefix:
            return key
        return self.prefix + key if self.prefix.endswith("/") else f"{self.prefix}/{key}"


def _options(params: Mapping[str, Any]) -> CopyOptions:
    meta = params.get("NewObjectMetadata")
    if meta is not None and not isinstance(meta, Mapping):
        raise BadRequest(f"{NAME}.NewObjectMetadata must be an object")
    default = "REPLACE" if meta else "COPY"
    directive = one_of(
        NAME, "MetadataDirective", params.get("MetadataDirective", default), ("COPY", "REPLACE")
    )
    tags = params.get("NewObjectTagging")
    return CopyOptions(
        replace_metadata=directive == "REPLACE",
        metadata=_user_metadata(meta or {}),
        headers=_headers(meta or {}),
        tags=None if tags is None else tag_set(NAME, "NewObjectTagging", tags),
        storage_class=(
            one_of(NAME, "StorageClass", params["StorageClass"], STORAGE_CLASSES)
            if "StorageClass" in params
            else None
        ),
        extra=_extra(params, meta or {}),
    )


def _user_metadata(meta: Mapping[str, Any]) -> dict[str, str]:
    unknown = set(meta) - _METADATA_FIELDS
    if unknown:
        raise BadRequest(f"{NAME}.NewObjectMetadata: unsupported field(s) {sorted(unknown)}")
    user = meta.get("UserMetadata") or {}
    if not isinstance(user, Mapping) or not all(isinstance(v, str) for v in user.values()):
        raise BadRequest(f"{NAME}.NewObjectMetadata.UserMetadata must map strings to strings")
    return {str(k).lower(): v for k, v in user.items()}


def _headers(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {_HEADER_FIELDS[k]: v for k, v in meta.items() if k in _HEADER_FIELDS}


def _extra(params: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters passed to CopyObject as they are (botocore names)."""
    extra: dict[str, Any] = {}
    if "CannedAccessControlList" in params:
        extra["ACL"] = one_of(NAME, "CannedAccessControlList", params["CannedAccessControlList"], CANNED_ACLS)
    if "AccessControlGrants" in params:
        # CopyObject has no x-amz-grant-write header: WRITE does not apply to objects.
        grants = parse_grants(f"{NAME}.AccessControlGrants", params["AccessControlGrants"], COPY_PERMISSIONS)
        extra.update(grant_params(grants))
    if params.get("RequesterPays"):
        extra["RequestPayer"] = "requester"
    if params.get("SSEAwsKmsKeyId"):
        extra["ServerSideEncryption"] = "aws:kms"
        extra["SSEKMSKeyId"] = params["SSEAwsKmsKeyId"]
    elif meta.get("SSEAlgorithm"):
        alg = one_of(NAME, "NewObjectMetadata.SSEAlgorithm", meta["SSEAlgorithm"], ("AES256", "KMS"))
        extra["ServerSideEncryption"] = "aws:kms" if alg == "KMS" else "AES256"
    if "BucketKeyEnabled" in params:
        extra["BucketKeyEnabled"] = bool(params["BucketKeyEnabled"])
    if "ChecksumAlgorithm" in params:
        extra["ChecksumAlgorithm"] = one_of(
            NAME, "ChecksumAlgorithm", params["ChecksumAlgorithm"], CHECKSUM_ALGORITHMS
        )
    for src, dst in (
        ("ModifiedSinceConstraint", "CopySourceIfModifiedSince"),
        ("UnModifiedSinceConstraint", "CopySourceIfUnmodifiedSince"),
        ("ObjectLockLegalHoldStatus", "ObjectLockLegalHoldStatus"),
        ("ObjectLockMode", "ObjectLockMode"),
        ("ObjectLockRetainUntilDate", "ObjectLockRetainUntilDate"),
    ):
        if src in params:
            extra[dst] = params[src]
    return extra


class PutObjectCopy(Operation):
    name = NAME

    def __init__(self, params: Mapping[str, Any], ctx: OperationContext) -> None:
        self.plan = _Plan.from_params(params)
        self.store = ctx.store

    async def apply(self, task: Task) -> TaskResult:
        try:
            await self.store.copy(
                task.bucket,
                task.key,
                self.plan.bucket,
                self.plan.target_key(task.key),
                src_version_id=task.version_id,
                options=self.plan.options,
            )
        except StorageError as exc:
            return storage_failure(exc)
        return TaskResult.ok()


def target_needs(params: Mapping[str, Any], source: str, versioned: bool) -> list[Need]:
    """Write actions on the TargetResource bucket (those tied to a parameter only when the job
    sets it), and reading the source's tags when they are copied."""
    target = bucket_from_arn(str(params.get("TargetResource", "")), "TargetResource")
    copies_tags = "NewObjectTagging" not in params  # absent: the source's tags are copied
    needs = [Need("s3:PutObject", target)]
    if copies_tags:
        needs.append(Need(GET_TAGS.name(versioned), source))
    if copies_tags or params.get("NewObjectTagging"):
        needs.append(Need("s3:PutObjectTagging", target))
    if params.get("CannedAccessControlList") or params.get("AccessControlGrants"):
        needs.append(Need("s3:PutObjectAcl", target))
    if params.get("ObjectLockLegalHoldStatus"):
        needs.append(Need("s3:PutObjectLegalHold", target))
    if params.get("ObjectLockMode") or params.get("ObjectLockRetainUntilDate"):
        needs.append(Need("s3:PutObjectRetention", target))
    return needs


KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(object_actions=(GET,), bucket_actions=(), extra=target_needs),
    requests=PerTask(pricing.COPY, 1),
    probe=NoProbe.PLAIN_DATA_PATH,
    batch_size=UNBATCHED,
    create=PutObjectCopy,
)
