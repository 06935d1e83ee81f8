"""MemoryStore: an in-memory ObjectStore for unit tests.

Same answers as LocalStore (errors, default content type, copy rules: storage/emulated.py)
without a filesystem, so keys are only held to S3's own rules. `MemoryStore(versioned=True)` behaves like a
versioned bucket: every write adds a version, a plain delete adds a delete marker. `calls`
records each method call as (method name, bucket, key, ...) for assertions, and `fail`
makes chosen calls raise a given StorageError.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from s3batch.errors import StorageError
from s3batch.storage.base import Capability, CopyOptions, CopyResult, MultipartUpload, VersionRef
from s3batch.storage.emulated import (
    ACL_FEATURE,
    DEFAULT_COPY_OPTIONS,
    EMULATED_CAPABILITIES,
    ENCRYPTION_FEATURE,
    LEGAL_HOLD_FEATURE,
    NULL_VERSION,
    RESTORE_FEATURE,
    RETENTION_FEATURE,
    ObjectAttrs,
    check_copy,
    check_key_length,
    check_put_extra,
    check_range,
    check_tags,
    check_unversioned,
    common_prefixes,
    copied_attrs,
    etag_of,
    new_attrs,
    new_version_id,
    no_such_bucket,
    no_such_key,
    not_implemented,
    object_info,
)
from s3batch.storage.emulated_uploads import (
    StagedUpload,
    check_sent,
    check_sent_whole,
    checksum_of,
    chosen_parts,
    completed_checksum,
    full_hasher,
    multipart_etag,
    no_such_upload,
    object_attrs,
    part_answer,
)

#: What a versioned memory store declares: the emulated features plus its versions.
_VERSIONED_CAPABILITIES = EMULATED_CAPABILITIES | {Capability.VERSIONS}
_MEMORY = "memory store"


@dataclass(frozen=True, slots=True)
class _Version:
    version_id: str
    #: None for a delete marker.
    body: bytes | None
    etag: str
    last_modified: datetime
    attrs: ObjectAttrs
    #: Part sizes of an object completed from a multipart upload; None: one part.
    parts: tuple[int, ...] | None = None


@dataclass(slots=True)
class _Failure:
    error: StorageError
    key: str | None
    times: int


class MemoryStore:
    """ObjectStore kept in dicts. Buckets must be created first, as in S3."""

    def __init__(self, *, versioned: bool = False) -> None:
        self.versioned = versioned
        self.calls: list[tuple[str, ...]] = []
        #: bucket → key → versions, oldest first (one version when not versioned).
        self._buckets: dict[str, dict[str, list[_Version]]] = {}
        self._failures: dict[str, list[_Failure]] = {}
        #: bucket → upload id → the upload; only `start_multipart_upload` adds one (a test hook:
        #: puts here never leave an upload behind).
        self._uploads: dict[str, dict[str, MultipartUpload]] = {}
        #: upload id → what create_multipart_upload recorded, and its parts (bytes and answer).
        self._staged: dict[str, tuple[StagedUpload, dict[int, tuple[bytes, UploadedPart]]]] = {}

    @property
    def capabilities(self) -> frozenset[Capability]:
        """The emulated S3 features (storage/emulated.py), plus versions when versioned."""
        return _VERSIONED_CAPABILITIES if self.versioned else EMULATED_CAPABILITIES

    def fail(self, method: str, error: StorageError, *, key: str | None = None, times: int = 1) -> None:
        """Make the next `times` calls of `method` (on `key`, or any key) raise `error`."""
        self._failures.setdefault(method, []).append(_Failure(error, key, times))

    def _record(self, method: str, *args: str) -> None:
        self.calls.append((method, *args))
        key = args[1] if len(args) > 1 else None  # the key (source key for copy)
        for failure in self._failures.get(method, []):
            if failure.times > 0 and failure.key in (None, key):
                failure.times -= 1
                raise failure.error

    # -- lookups ----------------------------------------------------------------------------

    def _bucket(self, bucket: str) -> dict[str, list[_Version]]:
        try:
            return self._buckets[bucket]
        except KeyError:
            raise no_such_bucket(bucket) from None

    def _version(self, bucket: str, key: str, version_id: str | None) -> _Version:
        """The version to read; the latest when `version_id` is None."""
        self._check_version(version_id)
        versions = self._bucket(bucket).get(key, [])
        if version_id is None or not self.versioned:
            if not versions or versions[-1].body is None:
                raise no_such_key(key)
            return versions[-1]
        for version in versions:
            if version.version_id == version_id:
                if version.body is None:
                    raise StorageError("MethodNotAllowed", "The specified method is not allowed", 405)
                return version
        raise StorageError("NoSuchVersion", "The specified version does not exist.", 404)

    def _check_version(self, version_id: str | None) -> None:
        if not self.versioned:
            check_unversioned(version_id, "versioning is off for this memory store")

    def _info(self, bucket: str, key: str, version: _Version) -> ObjectInfo:
        return object_info(
            bucket,
            key,
            size=len(version.body or b""),
            etag=version.etag,
            last_modified=version.last_modified,
            attrs=version.attrs,
            version_id=version.version_id if self.versioned else None,
        )

    def _store(
        self,
        bucket: str,
        key: str,
        body: bytes | None,
        attrs: ObjectAttrs,
        parts: Sequence[UploadedPart] | None = None,
    ) -> _Version:
        """A new version of `key`; `parts`: completed from those (S3's multipart ETag)."""
        objects = self._bucket(bucket)
        check_key_length(key)
        version = _Version(
            version_id=new_version_id() if self.versioned else NULL_VERSION,
            body=body,
            etag=etag_of(body or b"") if parts is None else multipart_etag(parts),
            last_modified=datetime.now(UTC),
            attrs=attrs,
            parts=None if parts is None else tuple(part.size for part in parts),
        )
        if self.versioned:
            objects.setdefault(key, []).append(version)
        else:
            objects[key] = [version]
        return version

    def _retag(self, bucket: str, key: str, version_id: str | None, tags: Mapping[str, str]) -> None:
        current = self._version(bucket, key, version_id)
        versions = self._bucket(bucket)[key]
        retagged = replace(current, attrs=replace(current.attrs, tags=dict(tags)))
        position = next(i for i, v in enumerate(versions) if v is current)
        versions[position] = retagged

    # -- the contract -----------------------------------------------------------------------

    async def create_bucket(self, bucket: str) -> None:
        self._record("create_bucket", bucket)
        self._buckets.setdefault(bucket, {})

    async def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
        self._record("head", bucket, key)
        return self._info(bucket, key, self._version(bucket, key, version_id))

    async def get_bytes(self, bucket: str, key: str, version_id: str | None = None) -> bytes:
        self._record("get_bytes", bucket, key)
        return self._version(bucket, key, version_id).body or b""

    async def iter_bytes(
        self,
        bucket: str,
        key: str,
        version_id: str | None = None,
        start: int = 0,
        chunk_size: int = 1 << 20,
    ) -> AsyncIterator[bytes]:
        self._record("iter_bytes", bucket, key)
        body = self._version(bucket, key, version_id).body or b""
        check_range(start, len(body))
        for offset in range(start, len(body), chunk_size):
            yield body[offset : offset + chunk_size]

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
        self._record("put_bytes", bucket, key)
        check_put_extra(_MEMORY, extra)
        version = self._store(bucket, key, bytes(body), new_attrs(content_type, metadata))
        return replace(self._info(bucket, key, version), content_type=content_type)

    async def put_file(
        self,
        bucket: str,
        key: str,
        path: Path,
        *,
        content_type: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self._record("put_file", bucket, key)
        check_put_extra(_MEMORY, extra)
        try:
            body = await asyncio.to_thread(path.read_bytes)
        except OSError as exc:
            raise StorageError("LocalFileError", f"{path}: {exc}") from exc
        self._store(bucket, key, body, new_attrs(content_type, None))

    async def copy(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        *,
        src_version_id: str | None = None,
        options: CopyOptions = DEFAULT_COPY_OPTIONS,
    ) -> CopyResult:
        self._record("copy", src_bucket, src_key, dst_bucket, dst_key)
        self._check_version(src_version_id)
        check_copy((src_bucket, src_key), (dst_bucket, dst_key), src_version_id, options)
        source = self._version(src_bucket, src_key, src_version_id)
        version = self._store(dst_bucket, dst_key, source.body, copied_attrs(source.attrs, options))
        return CopyResult(version.etag, version.version_id if self.versioned else None)

    async def get_tags(self, bucket: str, key: str, version_id: str | None = None) -> dict[str, str]:
        self._record("get_tags", bucket, key)
        return dict(self._version(bucket, key, version_id).attrs.tags)

    async def put_tags(
        self, bucket: str, key: str, tags: Mapping[str, str], version_id: str | None = None
    ) -> None:
        self._record("put_tags", bucket, key)
        check_tags(tags)
        self._retag(bucket, key, version_id, tags)

    async def delete_tags(self, bucket: str, key: str, version_id: str | None = None) -> None:
        self._record("delete_tags", bucket, key)
        self._retag(bucket, key, version_id, {})

    async def delete(self, bucket: str, key: str, version_id: str | None = None) -> None:
        self._record("delete", bucket, key)
        self._delete(bucket, key, version_id)

    def _delete(self, bucket: str, key: str, version_id: str | None) -> None:
        self._check_version(version_id)
        objects = self._bucket(bucket)
        check_key_length(key)
        if self.versioned and version_id is None:
            self._store(bucket, key, None, ObjectAttrs())  # a delete marker hides the key
            return
        kept = [v for v in objects.get(key, []) if self.versioned and v.version_id != version_id]
        if kept:
            objects[key] = kept
        else:
            objects.pop(key, None)  # deleting what is not there succeeds, as in S3

    async def delete_many(self, bucket: str, objects: Sequence[VersionRef]) -> list[Exception | None]:
        self._record("delete_many", bucket, *(ref.key for ref in objects))
        self._bucket(bucket)
        outcomes: list[Exception | None] = []
        for ref in objects:
            try:
                self._delete(bucket, ref.key, ref.version_id)
                outcomes.append(None)
            except StorageError as exc:
                outcomes.append(exc)
        return outcomes

    async def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        start_after: str | None = None,
        *,
        end_before: str | None = None,
        etags: bool = True,
    ) -> AsyncIterator[ObjectInfo]:
        # `etags` is ignored: an ETag here costs nothing.
        self._record("list_objects", bucket, prefix)
        objects = self._bucket(bucket)
        for key in _listed_keys(objects, prefix, start_after, end_before):
            versions = objects.get(key)
            if versions and versions[-1].body is not None:
                info = self._info(bucket, key, versions[-1])
                # ListObjectsV2 carries no version, type or metadata: neither does this.
                yield replace(info, version_id=None, content_type=None, metadata={}, headers={})

    async def list_prefixes(self, bucket: str, prefix: str = "", delimiter: str = "/") -> list[str]:
        self._record("list_prefixes", bucket, prefix)
        objects = self._bucket(bucket)
        live = sorted(k for k, versions in objects.items() if versions and versions[-1].body is not None)
        return common_prefixes(live, prefix, delimiter)

    async def list_versions(
        self, bucket: str, prefix: str = "", start_after: str | None = None, *, etags: bool = True
    ) -> AsyncIterator[ObjectInfo]:
        self._record("list_versions", bucket, prefix)
        objects = self._bucket(bucket)
        for key in _listed_keys(objects, prefix, start_after, None):
            versions = objects[key]
            for position, version in reversed(list(enumerate(versions))):
                yield self._listed_version(bucket, key, version, latest=position == len(versions) - 1)

    def _listed_version(self, bucket: str, key: str, version: _Version, *, latest: bool) -> ObjectInfo:
        info = replace(self._info(bucket, key, version), content_type=None, metadata={}, headers={})
        return replace(info, is_latest=latest, is_delete_marker=version.body is None)

    async def object_parts(self, bucket: str, key: str, version_id: str | None = None) -> list[int] | None:
        self._record("object_parts", bucket, key)
        version = self._version(bucket, key, version_id)  # a missing key is still NoSuchKey
        return None if version.parts is None else list(version.parts)

    # -- S3 features this store does not model --------------------------------------------

    async def put_acl(self, bucket: str, key: str, acl: AclSpec, version_id: str | None = None) -> None:
        self._record("put_acl", bucket, key)
        raise not_implemented(_MEMORY, ACL_FEATURE)

    async def restore(
        self,
        bucket: str,
        key: str,
        days: int | None,
        tier: str | None,
        version_id: str | None = None,
    ) -> None:
        self._record("restore", bucket, key)
        raise not_implemented(_MEMORY, RESTORE_FEATURE)

    async def put_legal_hold(self, bucket: str, key: str, status: str, version_id: str | None = None) -> None:
        self._record("put_legal_hold", bucket, key)
        raise not_implemented(_MEMORY, LEGAL_HOLD_FEATURE)

    async def put_retention(
        self,
        bucket: str,
        key: str,
        retention: Retention,
        version_id: str | None = None,
        *,
        bypass_governance: bool = False,
    ) -> None:
        self._record("put_retention", bucket, key)
        raise not_implemented(_MEMORY, RETENTION_FEATURE)

    async def replication_rules(self, bucket: str) -> list[ReplicationRule]:
        self._record("replication_rules", bucket)
        return []  # no replication configuration (see LocalStore.replication_rules)

    async def update_encryption(
        self, bucket: str, key: str, sse: KmsEncryption, version_id: str | None = None
    ) -> None:
        self._record("update_encryption", bucket, key)
        raise not_implemented(_MEMORY, ENCRYPTION_FEATURE)

    def start_multipart_upload(self, bucket: str, key: str, initiated: datetime | None = None) -> str:
        """Leave an incomplete upload behind, as a client that died mid-upload would."""
        self._bucket(bucket)
        upload = MultipartUpload(key, uuid.uuid4().hex, initiated or datetime.now(UTC))
        self._uploads.setdefault(bucket, {})[upload.upload_id] = upload
        return upload.upload_id

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        self._record("list_multipart_uploads", bucket)
        self._bucket(bucket)
        uploads = self._uploads.get(bucket, {}).values()
        for upload in sorted(uploads, key=lambda u: (u.key, u.initiated)):
            if upload.key.startswith(prefix):
                yield upload

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self._record("abort_multipart_upload", bucket, key)
        upload = self._uploads.get(bucket, {}).get(upload_id)
        if upload is None or upload.key != key:
            raise StorageError("NoSuchUpload", f"no upload {upload_id} for {key}", 404)
        del self._uploads[bucket][upload_id]
        self._staged.pop(upload_id, None)

    # -- checksummed writes and multipart uploads (Capability.PART_UPLOADS) -------------------

    async def put_with_checksum(
        self,
        bucket: str,
        key: str,
        body: Body,
        *,
        attributes: ObjectAttributes,
        checksum: ChecksumValue | None,
    ) -> WrittenObject:
        self._record("put_with_checksum", bucket, key)
        check_sent(body, checksum)
        version = self._store(bucket, key, bytes(body), object_attrs(attributes))
        answer = (
            None
            if checksum is None
            else ChecksumValue(checksum.algorithm, checksum_of(checksum.algorithm, body))
        )
        return WrittenObject(version.etag, version.version_id if self.versioned else None, answer)

    async def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        *,
        attributes: ObjectAttributes,
        algorithm: ChecksumAlgorithm | None,
        checksum_type: ChecksumType,
    ) -> str:
        self._record("create_multipart_upload", bucket, key)
        self._bucket(bucket)
        check_key_length(key)
        object_attrs(attributes)  # refuse bad tags now, as S3 does
        staged = StagedUpload(
            key=key, initiated=datetime.now(UTC), attributes=attributes, algorithm=algorithm,
            checksum_type=checksum_type,
        )  # fmt: skip
        upload_id = uuid.uuid4().hex
        self._uploads.setdefault(bucket, {})[upload_id] = MultipartUpload(key, upload_id, staged.initiated)
        self._staged[upload_id] = (staged, {})
        return upload_id

    def _staged_upload(
        self, bucket: str, key: str, upload_id: str
    ) -> tuple[StagedUpload, dict[int, tuple[bytes, UploadedPart]]]:
        upload = self._uploads.get(bucket, {}).get(upload_id)
        if upload is None or upload.key != key:
            raise no_such_upload(upload_id)
        # An upload left by start_multipart_upload (a test hook) has no record yet.
        return self._staged.setdefault(upload_id, (StagedUpload(key=key, initiated=upload.initiated), {}))

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
        self._record("upload_part", bucket, key, str(number))
        staged, parts = self._staged_upload(bucket, key, upload_id)
        part = part_answer(number, body, checksum, staged.algorithm)
        parts[number] = (bytes(body), part)
        return part

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> list[UploadedPart]:
        self._record("list_parts", bucket, key)
        _, parts = self._staged_upload(bucket, key, upload_id)
        return [parts[number][1] for number in sorted(parts)]

    async def complete_multipart_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[UploadedPart],
        *,
        checksum: ChecksumValue | None,
    ) -> WrittenObject:
        self._record("complete_multipart_upload", bucket, key)
        staged, stored = self._staged_upload(bucket, key, upload_id)
        chosen = chosen_parts({n: answer for n, (_, answer) in stored.items()}, parts)
        body = b"".join(stored[part.number][0] for part in chosen)
        full = full_hasher(staged)
        if full is not None:
            full.update(body)
        result = completed_checksum(staged, chosen, full)
        check_sent_whole(result, checksum)
        version = self._store(bucket, key, body, object_attrs(staged.attributes), parts=chosen)
        del self._uploads[bucket][upload_id]
        del self._staged[upload_id]
        return WrittenObject(version.etag, version.version_id if self.versioned else None, result)

    async def head_with_checksum(
        self, bucket: str, key: str, version_id: str | None = None, *, etag: bool = True
    ) -> CheckedHead:
        # `etag` is ignored: an ETag here costs nothing.
        self._record("head_with_checksum", bucket, key)
        version = self._version(bucket, key, version_id)
        return CheckedHead(self._info(bucket, key, version), None, len(version.attrs.tags))

    async def close(self) -> None:
        self.calls.append(("close",))


def _listed_keys(
    keys: Iterable[str], prefix: str, start_after: str | None, end_before: str | None
) -> list[str]:
    """Keys under `prefix`, after `start_after`, before `end_before` (None: unbounded), sorted."""
    return sorted(
        k
        for k in keys
        if k.startswith(prefix)
        and (start_after is None or k > start_after)
        and (end_before is None or k < end_before)
    )
