"""The object-store contract: the core every adapter implements, and the capabilities it declares.

Every method raises `s3batch.errors.StorageError` for a failed call, with the S3 error code
(`NoSuchKey`, `NoSuchBucket`, `AccessDenied`, `NotImplemented`, `SlowDown`, ...), the HTTP
status (None when no HTTP answer came back) and `retryable` set for throttling, 5xx, timeouts
and connection errors. Nothing else may escape: callers rely on that to turn a failure into a
failed task instead of a dead job.

ETags are returned without surrounding quotes. Keys are always the decoded key.

`ObjectStore` is the core: reads, writes, copies, deletes, tags and listings. Anything beyond
it is a `Capability` a store declares in its `capabilities`; storage/capabilities.py holds one
Protocol per capability and the accessors that hand a store out typed as one.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

from s3batch.domain.objects import Grant, ObjectInfo


class Capability(enum.Enum):
    """An S3 feature beyond the core contract that a store declares it implements.

    A declaration is about the adapter: whether a given server behind an S3 endpoint supports
    the feature is still for the capability probe (service/probe.py) to find out."""

    #: PutObjectAcl (`AclStore`).
    ACL = "acl"
    #: Object Lock legal holds and retention (`ObjectLockStore`).
    OBJECT_LOCK = "object-lock"
    #: RestoreObject from archive storage classes (`RestoreStore`).
    RESTORE = "restore"
    #: The bucket replication configuration (`ReplicationStore`).
    REPLICATION = "replication"
    #: Re-encrypting an object in place with SSE-KMS (`EncryptionStore`).
    ENCRYPTION = "encryption"
    #: Object versions: version ids address versions, deletes leave delete markers, and
    #: `list_versions` lists them all (`VersionedStore`).
    VERSIONS = "versions"
    #: Listing and aborting incomplete multipart uploads (`MultipartUploadStore`).
    MULTIPART_UPLOADS = "multipart-uploads"
    #: The part sizes a multipart object was uploaded in (`PartsStore`).
    PARTS = "parts"
    #: Checksummed writes, in one request or part by part, and stored checksums (`PartUploadStore`).
    PART_UPLOADS = "part-uploads"


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


@dataclass(frozen=True, slots=True)
class UploadLayout:
    """The part layout of an assembled upload (capabilities.AssembledUploadStore): an object of
    `size` bytes in parts of `part_size` bytes, the last part holding what is left."""

    size: int
    part_size: int

    @property
    def part_count(self) -> int:
        return -(-self.size // self.part_size)

    def part_bytes(self, number: int) -> int:
        """The size of part `number` (1 to part_count)."""
        return min(self.part_size, self.size - self.offset(number))

    def offset(self, number: int) -> int:
        """Where part `number` starts in the object."""
        return (number - 1) * self.part_size


@runtime_checkable
class ObjectStore(Protocol):
    """Async access to one object store (an S3 endpoint or a local folder): the core contract.

    A `version_id` other than None (or "null", the id of an object written while versioning
    was off) needs Capability.VERSIONS: a store without it answers StorageError("NotImplemented").
    """

    @property
    def capabilities(self) -> frozenset[Capability]:
        """What the store implements beyond the core (see storage/capabilities.py)."""
        ...

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
        etags: bool = True,
    ) -> AsyncIterator[ObjectInfo]:
        """Objects under `prefix` with keys after `start_after` and, when `end_before` is
        given, before it, in key order (a caller may stop early, e.g. at the end of a key
        range it lists in parallel with others). With `end_before` an S3 adapter starts with
        small pages, so a range that ends soon does not fetch a full page past its end.

        `etags=False` says the caller uses no ETag of the listing (a manifest generator, which
        keeps bucket, key and version). A store whose ETags cost work of their own may then
        give an object's ETag as "" (no object has an empty ETag) instead of computing it; one
        it holds already it still gives. The folder store then opens no object's file, and
        gives only the ETags its sidecars cache for the files as they are now. Every other
        field is as with `etags=True`. Stores whose listing carries the ETags anyway (S3,
        memory) ignore it. A caller that passes False must not compare, store or report an
        ETag it got so."""
        ...

    async def list_prefixes(self, bucket: str, prefix: str = "", delimiter: str = "/") -> list[str]:
        """The common prefixes one level below `prefix` (ListObjectsV2 with a delimiter)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class BlockingReads(Protocol):
    """A store that can also read an object in the calling thread (the folder store: a read is
    a few system calls, cheaper than any hop to an event loop and back)."""

    def read_now(
        self, bucket: str, key: str, version_id: str | None = None, max_bytes: int | None = None
    ) -> bytes:
        """The body (its first `max_bytes` when given); errors as get_bytes raises them."""
        ...
