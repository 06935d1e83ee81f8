"""What a store can do beyond the core contract, and how a caller asks for it.

Each `Capability` (storage/base.py) has one Protocol here, extending the core `ObjectStore`
with that capability's methods. A store declares the capabilities it implements in its
`capabilities` attribute; the accessors below read that declaration and hand the store back
typed as the capability's Protocol, or None when it does not declare it:

    lock = object_lock_store(store)   # ObjectLockStore | None
    if lock is None: ...              # no Object Lock here
    await lock.put_legal_hold(bucket, key, "ON")

An accessor is one frozenset lookup: ask once (when a job or an operation starts), never per
task. A declaration is about the adapter; whether the server behind an S3 endpoint supports a
feature is still for the capability probe (service/probe.py) to find out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol, cast, runtime_checkable

from s3batch.domain.checksums import ChecksumAlgorithm, ChecksumType
from s3batch.domain.objects import AclSpec, KmsEncryption, ObjectInfo, ReplicationRule, Retention
from s3batch.domain.uploads import (
    Body,
    CheckedHead,
    ChecksumValue,
    ObjectAttributes,
    UploadedPart,
    WrittenObject,
)
from s3batch.storage.base import Capability, MultipartUpload, ObjectStore, UploadLayout


@runtime_checkable
class AclStore(ObjectStore, Protocol):
    """Capability.ACL: object ACLs."""

    async def put_acl(self, bucket: str, key: str, acl: AclSpec, version_id: str | None = None) -> None:
        """Replace the object's whole ACL."""
        ...


@runtime_checkable
class ObjectLockStore(ObjectStore, Protocol):
    """Capability.OBJECT_LOCK: legal holds and retention."""

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


@runtime_checkable
class RestoreStore(ObjectStore, Protocol):
    """Capability.RESTORE: restoring objects from archive storage classes."""

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


@runtime_checkable
class ReplicationStore(ObjectStore, Protocol):
    """Capability.REPLICATION: the bucket's replication configuration."""

    async def replication_rules(self, bucket: str) -> list[ReplicationRule]:
        """The bucket's enabled replication rules by priority; [] when it has no configuration."""
        ...


@runtime_checkable
class EncryptionStore(ObjectStore, Protocol):
    """Capability.ENCRYPTION: re-encrypting objects in place."""

    async def update_encryption(
        self, bucket: str, key: str, sse: KmsEncryption, version_id: str | None = None
    ) -> None:
        """Re-encrypt the object in place with SSE-KMS, keeping metadata and tags."""
        ...


@runtime_checkable
class VersionedStore(ObjectStore, Protocol):
    """Capability.VERSIONS: object versions and delete markers."""

    def list_versions(
        self, bucket: str, prefix: str = "", start_after: str | None = None, *, etags: bool = True
    ) -> AsyncIterator[ObjectInfo]:
        """Every version and delete marker under `prefix` of keys after `start_after` (S3's
        KeyMarker): key order, newest first per key. Stores without versioning yield each
        object once as its latest version. `etags`: as for `ObjectStore.list_objects`."""
        ...


@runtime_checkable
class MultipartUploadStore(ObjectStore, Protocol):
    """Capability.MULTIPART_UPLOADS: incomplete multipart uploads (the staging-bucket sweep)."""

    def list_multipart_uploads(self, bucket: str, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        """Incomplete multipart uploads under `prefix` (ListMultipartUploads). Stores that
        write each object in one step (folder, memory) have none to list."""
        ...

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Abort one upload and free its parts. An upload that is already gone (completed or
        aborted) raises StorageError("NoSuchUpload")."""
        ...


@runtime_checkable
class PartsStore(ObjectStore, Protocol):
    """Capability.PARTS: the part layout of multipart objects."""

    async def object_parts(self, bucket: str, key: str, version_id: str | None = None) -> list[int] | None:
        """Sizes of the parts a multipart object was uploaded in, or None for one part."""
        ...


@runtime_checkable
class PartUploadStore(MultipartUploadStore, Protocol):
    """Capability.PART_UPLOADS: writes that carry a checksum, in one request or part by part
    (CreateMultipartUpload, UploadPart, ListParts, CompleteMultipartUpload), and the checksum an
    object was stored with (docs/transfer.md). A store declaring it declares MULTIPART_UPLOADS.

    A `checksum` sent with a write is the checksum of the bytes sent: a store that checks it
    refuses a body that does not match with StorageError("BadDigest"), as S3 does. Answers carry
    what the store itself computed or stored, where it says (None where it does not)."""

    async def put_with_checksum(
        self,
        bucket: str,
        key: str,
        body: Body,
        *,
        attributes: ObjectAttributes,
        checksum: ChecksumValue | None,
    ) -> WrittenObject:
        """PutObject with the object's attributes (tags included) and its checksum."""
        ...

    async def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        *,
        attributes: ObjectAttributes,
        algorithm: ChecksumAlgorithm | None,
        checksum_type: ChecksumType,
    ) -> str:
        """Start an upload whose parts carry `algorithm` checksums; returns its upload id."""
        ...

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        body: Body,
        *,
        checksum: ChecksumValue | None,
    ) -> UploadedPart:
        """Upload (or replace) part `number` (1-10,000). NoSuchUpload when it is gone."""
        ...

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> list[UploadedPart]:
        """The parts uploaded so far, by part number. NoSuchUpload when it is gone."""
        ...

    async def complete_multipart_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[UploadedPart],
        *,
        checksum: ChecksumValue | None,
    ) -> WrittenObject:
        """Join `parts` (in part order) into the object. `checksum`: the whole object's, for a
        FULL_OBJECT upload."""
        ...

    async def head_with_checksum(
        self, bucket: str, key: str, version_id: str | None = None, *, etag: bool = True
    ) -> CheckedHead:
        """HeadObject with checksum mode on: size, ETag, stored checksum and tag count.

        `etag=False` says the caller uses the ETag only along with a stored checksum (the
        transfer's own checks, without SkipExisting): a store whose ETag costs work of its own
        may then give it as "" (no object has an empty ETag), as `ObjectStore.list_objects`
        with `etags=False` does, but always gives it for an object with a stored checksum.
        The folder store then opens no object's file; S3 and memory ignore it."""
        ...


class CheckedGet:
    """A GetObject with checksum mode on: `head`, all that `head_with_checksum` tells, and the
    body, unread, as an async iterator of byte strings.

    Close it (`aclose`, idempotent) once done with it, read to its end or not: an open body
    may hold a connection, and one closed before its end drops that connection instead of
    handing it back. `buffered` says the whole body has already arrived (a small object):
    then it holds no connection, and its reader may wait on other requests first."""

    def __init__(
        self,
        head: CheckedHead,
        chunks: AsyncIterator[bytes],
        *,
        buffered: bool,
        release: Callable[[], None] | None = None,
    ) -> None:
        """`release`: frees what the body holds (it runs even when `chunks` was never started)."""
        self.head = head
        self.buffered = buffered
        self._chunks = chunks
        self._release = release
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            if self._release is not None:
                self._release()


@runtime_checkable
class CheckedGetStore(Protocol):
    """A store that answers a whole-object read with its checksum headers: one GetObject gives
    both what a HEAD with checksum mode gives and the body, saving a request per object where
    the reader would otherwise HEAD first (S3batchTransfer). Declared by having the method:
    stores where a HEAD costs no request (the folder store's stat) leave it out.

    Not a `Capability`: nothing outside the transfer asks for it, and a store that lacks it
    is served by HEAD then GET."""

    async def get_with_checksum(self, bucket: str, key: str, version_id: str | None = None) -> CheckedGet:
        """GetObject, not ranged (S3 returns the stored checksum only for the whole object),
        with checksum mode on. A missing object raises StorageError (NoSuchKey, ...) as a HEAD
        would."""
        ...


@runtime_checkable
class RangeReadStore(Protocol):
    """A store that reads a byte range of an object straight into the caller's buffer (S3: a
    ranged GetObject received on sockets of its own, storage/s3/ranged.py; the folder store:
    `preadv`). S3batchTransfer
    reads the parts of a large object this way, several at once, where the source has the
    method and no checksum of the whole body is needed; otherwise it streams the body once.

    Not a `Capability`: nothing outside the transfer asks for it."""

    async def read_range_into(
        self,
        bucket: str,
        key: str,
        version_id: str | None,
        start: int,
        buffer: bytearray,
        *,
        size: int,
        etag: str | None,
    ) -> None:
        """Fill `buffer` with the object's bytes from `start`. The object must be `size` bytes
        long and, with `etag`, have that ETag: PreconditionFailed (412) otherwise."""
        ...


@runtime_checkable
class AssembledUploadStore(Protocol):
    """A store that writes a multipart upload of a known layout straight into one file: each
    part at its offset, so completion moves that file into place instead of joining parts
    (the folder store: storage/local_uploads.py). S3batchTransfer starts its uploads this way
    where the destination has the method, and otherwise as CreateMultipartUpload does.

    Only the start differs: the parts, ListParts, completion, abort and the listing of uploads
    are PartUploadStore's calls, so an upload started either way resumes the same way. An
    assembled upload refuses a part without the upload's checksum, or of another size than
    its layout gives it (the file has one place for each part), and its part and object ETags
    follow from the parts' checksums instead of their MD5s (docs/compatibility.md, "ETags,
    checksums and sidecars").

    Not a `Capability`, like CheckedGetStore: it is no S3 call (S3Store, which declares the
    whole S3 API, has no such method), and nothing outside the transfer asks for it."""

    async def create_assembled_upload(
        self,
        bucket: str,
        key: str,
        *,
        size: int,
        part_size: int,
        attributes: ObjectAttributes,
        algorithm: ChecksumAlgorithm,
        checksum_type: ChecksumType,
    ) -> str:
        """Start an upload of an object of `size` bytes in parts of `part_size` (the last one
        holds the rest), each part carrying its `algorithm` checksum; returns its upload id."""
        ...

    async def upload_layout(self, bucket: str, key: str, upload_id: str) -> UploadLayout | None:
        """The layout an upload was started with; None for one started by
        create_multipart_upload. NoSuchUpload when it is gone."""
        ...

    async def upload_hashed_part(
        self, bucket: str, key: str, upload_id: str, number: int, body: Body, *, checksum: ChecksumValue
    ) -> UploadedPart:
        """UploadPart (of an upload started either way) whose `checksum` the caller computed
        from `body` itself, in this process: the store takes it as the part's checksum instead
        of hashing the same bytes again, as nothing between them could have changed them."""
        ...


@runtime_checkable
class StorageAdapter(
    AclStore,
    ObjectLockStore,
    RestoreStore,
    ReplicationStore,
    EncryptionStore,
    VersionedStore,
    PartUploadStore,  # before MultipartUploadStore, which it extends
    MultipartUploadStore,
    PartsStore,
    Protocol,
):
    """Every method of every capability: what each adapter of this package (S3Store,
    LocalStore, MemoryStore) has, and what `open_store` returns.

    A method of a capability the store does not declare keeps the store's own answer: the
    folder and memory stores raise StorageError("NotImplemented") for ACLs, Object Lock,
    restores and re-encryption, and refuse version ids unless versioned. Code written against
    the whole S3 API takes this; code that needs one capability should take `ObjectStore` and
    ask for it with the accessor below, so the declaration decides instead of a failed call.
    """


#: Everything an S3 endpoint's adapter declares: the S3 API itself.
ALL_CAPABILITIES = frozenset(Capability)


def declares(store: ObjectStore, capability: Capability) -> bool:
    """Whether `store` declares `capability`."""
    return capability in store.capabilities


def acl_store(store: ObjectStore) -> AclStore | None:
    return cast(AclStore, store) if Capability.ACL in store.capabilities else None


def object_lock_store(store: ObjectStore) -> ObjectLockStore | None:
    return cast(ObjectLockStore, store) if Capability.OBJECT_LOCK in store.capabilities else None


def restore_store(store: ObjectStore) -> RestoreStore | None:
    return cast(RestoreStore, store) if Capability.RESTORE in store.capabilities else None


def replication_store(store: ObjectStore) -> ReplicationStore | None:
    return cast(ReplicationStore, store) if Capability.REPLICATION in store.capabilities else None


def encryption_store(store: ObjectStore) -> EncryptionStore | None:
    return cast(EncryptionStore, store) if Capability.ENCRYPTION in store.capabilities else None


def versioned_store(store: ObjectStore) -> VersionedStore | None:
    return cast(VersionedStore, store) if Capability.VERSIONS in store.capabilities else None


def multipart_upload_store(store: ObjectStore) -> MultipartUploadStore | None:
    declared = Capability.MULTIPART_UPLOADS in store.capabilities
    return cast(MultipartUploadStore, store) if declared else None


def parts_store(store: ObjectStore) -> PartsStore | None:
    return cast(PartsStore, store) if Capability.PARTS in store.capabilities else None


def checked_get_store(store: ObjectStore) -> CheckedGetStore | None:
    """`store` when it has `get_with_checksum` (a structural check: ask once, not per task)."""
    return store if isinstance(store, CheckedGetStore) else None


def range_read_store(store: ObjectStore) -> RangeReadStore | None:
    """`store` when it has `read_range_into` (a structural check: ask once, not per task)."""
    return store if isinstance(store, RangeReadStore) else None


def part_upload_store(store: ObjectStore) -> PartUploadStore | None:
    return cast(PartUploadStore, store) if Capability.PART_UPLOADS in store.capabilities else None


def assembled_upload_store(store: ObjectStore) -> AssembledUploadStore | None:
    """`store` when it has `create_assembled_upload` (a structural check: ask once, not per task)."""
    return store if isinstance(store, AssembledUploadStore) else None
