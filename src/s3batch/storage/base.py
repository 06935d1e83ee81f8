"""The object-store contract every adapter implements.

Every method raises `s3batch.errors.StorageError` for a failed call, with the S3 error code
(`NoSuchKey`, `NoSuchBucket`, `AccessDenied`, `NotImplemented`, `SlowDown`, ...), the HTTP
status (None when no HTTP answer came back) and `retryable` set for throttling, 5xx, timeouts
and connection errors. Nothing else may escape: callers rely on that to turn a failure into a
failed task instead of a dead job.

ETags are returned without surrounding quotes. Keys are always the decoded key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    #: Without quotes. MD5 of the content for single-part objects.
    etag: str
    last_modified: datetime
    version_id: str | None = None
    storage_class: str = "STANDARD"
    content_type: str | None = None
    #: User metadata (x-amz-meta-*), keys lower-cased.
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: Other system headers kept on copy: CacheControl, ContentDisposition, ContentEncoding,
    #: ContentLanguage, Expires (as botocore names them).
    headers: Mapping[str, Any] = field(default_factory=dict)
    #: For version listings: whether this is the current version / a delete marker.
    is_latest: bool = True
    is_delete_marker: bool = False
    #: COMPLETED | FAILED | REPLICA | PENDING, or None (never replicated). Filled by head(),
    #: not by listings (S3 lists don't carry it).
    replication_status: str | None = None
    #: "SSE-S3" | "SSE-KMS" | "DSSE-KMS" | "SSE-C" | "NOT-SSE", or None when unknown (listings).
    encryption: str | None = None
    kms_key_id: str | None = None
    bucket_key_enabled: bool = False
    #: The archive restore state from HEAD's `x-amz-restore`, None when never restored.
    restore: RestoreState | None = None
    #: Object Lock state from HEAD (COMPLIANCE | GOVERNANCE, the date, ON | OFF), if any.
    lock_mode: str | None = None
    lock_retain_until: datetime | None = None
    legal_hold: str | None = None


@dataclass(frozen=True, slots=True)
class RestoreState:
    """`x-amz-restore`: a restore still running (no expiry yet) or a finished one."""

    ongoing: bool
    expiry: datetime | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """One ACL grant. `grantee_type` is S3 Batch's TypeIdentifier: id | emailAddress | uri."""

    grantee_type: str
    identifier: str
    #: FULL_CONTROL | READ | WRITE | READ_ACP | WRITE_ACP
    permission: str
    display_name: str | None = None


#: ACL permission → the PutObjectAcl / CopyObject grant parameter (botocore name).
GRANT_PARAMS = {
    "FULL_CONTROL": "GrantFullControl",
    "READ": "GrantRead",
    "WRITE": "GrantWrite",
    "READ_ACP": "GrantReadACP",
    "WRITE_ACP": "GrantWriteACP",
}


def grant_params(grants: Sequence[Grant]) -> dict[str, str]:
    """Grant* parameters (`id="..."`, `emailAddress="..."`, `uri="..."`), grouped by permission,
    as S3 adapters send them and as CopyOptions.extra carries them."""
    by_param: dict[str, list[str]] = {}
    for grant in grants:
        value = f'{grant.grantee_type}="{grant.identifier}"'
        by_param.setdefault(GRANT_PARAMS[grant.permission], []).append(value)
    return {param: ", ".join(values) for param, values in by_param.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class AclSpec:
    """A whole object ACL: a canned ACL, or an owner plus explicit grants."""

    canned: str | None = None
    owner_id: str | None = None
    owner_display: str | None = None
    grants: tuple[Grant, ...] = ()


@dataclass(frozen=True, slots=True)
class Retention:
    """Object Lock retention; both None removes the retention."""

    mode: str | None = None
    retain_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class KmsEncryption:
    """SSE-KMS settings for re-encrypting an object in place."""

    key_arn: str
    bucket_key_enabled: bool = False


@dataclass(frozen=True, slots=True)
class ReplicationRule:
    """An enabled rule of a bucket's replication configuration, in priority order."""

    prefix: str
    #: Destination bucket ARN (arn:aws:s3:::name).
    destination: str
    storage_class: str | None = None


#: Server-side encryption parameters of PutObject / CreateMultipartUpload (botocore names).
SSE_PARAMS = frozenset({"ServerSideEncryption", "SSEKMSKeyId", "SSEKMSEncryptionContext", "BucketKeyEnabled"})


class VersionRef(NamedTuple):
    """One object (version) to delete in a batch. A NamedTuple: a delete job makes one per
    task, and the lean path sends it as the (key, version_id) pair it is."""

    key: str
    version_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CopyOptions:
    """How CopyObject builds the destination.

    `replace_metadata=False` copies the source's user metadata and system headers; True uses
    `metadata` and `headers` instead. `tags=None` copies the source's tags; a mapping (even
    empty) replaces them. `extra` carries further S3 CopyObject parameters verbatim
    (botocore names: ACL, ServerSideEncryption, ObjectLockMode, ...); adapters that cannot
    honour one raise StorageError("NotImplemented").
    """

    replace_metadata: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] | None = None
    storage_class: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CopyResult:
    etag: str
    version_id: str | None = None


@dataclass(frozen=True, slots=True)
class MultipartUpload:
    """A multipart upload that was started and neither completed nor aborted yet."""

    key: str
    upload_id: str
    #: When CreateMultipartUpload was called (timezone-aware).
    initiated: datetime


@runtime_checkable
class ObjectStore(Protocol):
    """Async access to one object store (an S3 endpoint or a local folder)."""

    async def create_bucket(self, bucket: str) -> None:
        """Create the bucket; succeed quietly if it already exists and is ours."""
        ...

    async def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo: ...

    async def get_bytes(self, bucket: str, key: str, version_id: str | None = None) -> bytes:
        """The whole body. For small objects (manifests, function inputs)."""
        ...

    def iter_bytes(
        self,
        bucket: str,
        key: str,
        version_id: str | None = None,
        start: int = 0,
        chunk_size: int = 1 << 20,
    ) -> AsyncIterator[bytes]:
        """The body from byte `start` on, in chunks; memory stays flat in object size."""
        ...

    async def put_bytes(
        self,
        bucket: str,
        key: str,
        body: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ObjectInfo:
        """Write a small object. `extra`: see `put_file`."""
        ...

    async def put_file(
        self,
        bucket: str,
        key: str,
        path: Path,
        *,
        content_type: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Upload a local file; multipart when large.

        `extra` carries further PutObject / CreateMultipartUpload parameters verbatim (botocore
        names). Stores without server-side encryption (folder, memory) accept and ignore the
        SSE ones (`SSE_PARAMS`), as their objects are only as protected as their disk, and
        raise StorageError("NotImplemented") for any other."""
        ...

    async def copy(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        *,
        src_version_id: str | None = None,
        options: CopyOptions = CopyOptions(),
    ) -> CopyResult:
        """Server-side copy; multipart copy above the single-request limit (5 GiB)."""
        ...

    async def get_tags(self, bucket: str, key: str, version_id: str | None = None) -> dict[str, str]: ...

    async def put_tags(
        self, bucket: str, key: str, tags: Mapping[str, str], version_id: str | None = None
    ) -> None:
        """Replace the whole tag set."""
        ...

    async def delete_tags(self, bucket: str, key: str, version_id: str | None = None) -> None: ...

    async def delete(self, bucket: str, key: str, version_id: str | None = None) -> None:
        """Delete an object (or one version). Deleting a missing key succeeds, as in S3."""
        ...

    async def delete_many(self, bucket: str, objects: Sequence[VersionRef]) -> list[Exception | None]:
        """Delete up to 1,000 objects; one entry per input, None for success."""
        ...

    def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        start_after: str | None = None,
        *,
        end_before: str | None = None,
    ) -> AsyncIterator[ObjectInfo]:
        """Objects under `prefix` with keys after `start_after` and, when `end_before` is
        given, before it, in key order (a caller may stop early, e.g. at the end of a key
        range it lists in parallel with others). With `end_before` an S3 adapter starts with
        small pages, so a range that ends soon does not fetch a full page past its end."""
        ...

    async def list_prefixes(self, bucket: str, prefix: str = "", delimiter: str = "/") -> list[str]:
        """The common prefixes one level below `prefix` (ListObjectsV2 with a delimiter)."""
        ...

    def list_versions(
        self, bucket: str, prefix: str = "", start_after: str | None = None
    ) -> AsyncIterator[ObjectInfo]:
        """Every version and delete marker under `prefix` of keys after `start_after` (S3's
        KeyMarker): key order, newest first per key. Stores without versioning yield each
        object once as its latest version."""
        ...

    async def object_parts(self, bucket: str, key: str, version_id: str | None = None) -> list[int] | None:
        """Sizes of the parts a multipart object was uploaded in, or None for one part."""
        ...

    async def put_acl(self, bucket: str, key: str, acl: AclSpec, version_id: str | None = None) -> None:
        """Replace the object's whole ACL."""
        ...

    async def restore(
        self,
        bucket: str,
        key: str,
        days: int | None,
        tier: str | None,
        version_id: str | None = None,
    ) -> None:
        """Start restoring an archived object (RestoreObject); `tier` is Bulk | Standard."""
        ...

    async def put_legal_hold(self, bucket: str, key: str, status: str, version_id: str | None = None) -> None:
        """Set Object Lock legal hold ON or OFF."""
        ...

    async def put_retention(
        self,
        bucket: str,
        key: str,
        retention: Retention,
        version_id: str | None = None,
        *,
        bypass_governance: bool = False,
    ) -> None:
        """Set (or, with an empty Retention, remove) Object Lock retention."""
        ...

    async def replication_rules(self, bucket: str) -> list[ReplicationRule]:
        """The bucket's enabled replication rules by priority; [] when it has no configuration."""
        ...

    def list_multipart_uploads(self, bucket: str, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        """Incomplete multipart uploads under `prefix` (ListMultipartUploads). Stores that
        write each object in one step (folder, memory) have none to list."""
        ...

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Abort one upload and free its parts. An upload that is already gone (completed or
        aborted) raises StorageError("NoSuchUpload")."""
        ...

    async def update_encryption(
        self, bucket: str, key: str, sse: KmsEncryption, version_id: str | None = None
    ) -> None:
        """Re-encrypt the object in place with SSE-KMS, keeping metadata and tags."""
        ...

    async def close(self) -> None: ...
