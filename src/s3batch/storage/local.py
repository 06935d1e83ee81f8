"""LocalStore: the ObjectStore contract over a local folder.

Layout under `root`:

    <bucket>/<key>                          the object's bytes; users may drop files in
    .s3batch-meta/<bucket>/<key>.json       its sidecar: content type, user metadata, system
                                            headers, tags, storage class, cached ETag

In the sidecar tree every folder level of the key gets a `.d` suffix (`a/b/c` → `a.d/b.d/c.json`),
so the sidecar of key `a` (`a.json`) can never collide with the folder of key `a.json/b`.
Every write goes to a temp file first and is moved into place with os.replace, so a crash
leaves the old or the new version, never a torn one. A version_id other than None/"null"
raises NotImplemented: a folder keeps one version per key.

A file changed outside the store keeps its sidecar's attributes; only its cached ETag is
recomputed (the cache is keyed by size and mtime_ns).

Sidecar read-modify-write sequences contain no `await`, so coroutines of one process never
interleave inside one; separate processes writing the same key at the same instant may still
lose a metadata update (last writer wins), as with any plain folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import json
import logging
import os
import stat
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from s3batch.errors import StorageError
from s3batch.storage.base import (
    SSE_PARAMS,
    AclSpec,
    CopyOptions,
    CopyResult,
    KmsEncryption,
    MultipartUpload,
    ObjectInfo,
    ReplicationRule,
    Retention,
    VersionRef,
)

log = logging.getLogger(__name__)

META_DIR_NAME = ".s3batch-meta"
#: Marks temp files (content and sidecars) being written; they are never listed.
TEMP_MARKER = ".s3batch-tmp-"
SIDECAR_SUFFIX = ".json"
#: Suffix of each folder level in the sidecar tree (see the module docstring).
SIDECAR_DIR_SUFFIX = ".d"
#: Block size for reading, writing and hashing files, in bytes.
IO_CHUNK_BYTES = 1024 * 1024
#: S3's limit on key length, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
#: Longest key segment, in UTF-8 bytes: the filesystem's 255 less the sidecar suffix.
MAX_SEGMENT_BYTES = 255 - len(SIDECAR_SUFFIX)
#: What S3 reports for an object stored without a Content-Type.
DEFAULT_CONTENT_TYPE = "binary/octet-stream"
#: fsync each file before moving it into place. Off: os.replace already protects against a
#: killed process; only a power loss can lose the newest writes.
FSYNC_WRITES = False
#: Attempts at creating a folder that a concurrent delete may be removing as empty.
DIR_RACE_ATTEMPTS = 3
#: S3's tag limits: tags per object, characters per key and per value.
MAX_TAGS = 10
MAX_TAG_KEY_CHARS = 128
MAX_TAG_VALUE_CHARS = 256
#: Characters S3 allows in tags besides letters, digits and spaces.
TAG_PUNCTUATION = "+-=._:/@"
#: System headers an object keeps (botocore names); ContentType is kept separately.
HEADER_NAMES = ("CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage", "Expires")
_DATETIME_TAG = "$datetime"
#: CopyObject as S3 does it by default: metadata and tags copied from the source.
DEFAULT_COPY_OPTIONS = CopyOptions()
_FOLDER = "local folder store"


# -- rules shared with MemoryStore --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ObjectAttrs:
    """Everything about an object besides its bytes that S3 keeps with it."""

    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    storage_class: str = "STANDARD"


def new_attrs(content_type: str | None, metadata: Mapping[str, str] | None) -> ObjectAttrs:
    return ObjectAttrs(content_type, {k.lower(): v for k, v in (metadata or {}).items()})


def check_tags(tags: Mapping[str, str]) -> None:
    """Raise S3's answer to a tag set it would refuse."""
    if len(tags) > MAX_TAGS:
        raise StorageError("BadRequest", f"Object tags cannot be greater than {MAX_TAGS}", 400)
    for key, value in tags.items():
        if not key or len(key) > MAX_TAG_KEY_CHARS or len(value) > MAX_TAG_VALUE_CHARS:
            raise StorageError(
                "InvalidTag",
                f"tag {key[:MAX_TAG_KEY_CHARS]!r}: keys are 1-{MAX_TAG_KEY_CHARS} characters, "
                f"values at most {MAX_TAG_VALUE_CHARS}",
                400,
            )
        if not all(_tag_char_ok(c) for c in key + value):
            raise StorageError(
                "InvalidTag",
                f"tag {key!r}: only letters, digits, spaces and {TAG_PUNCTUATION} are allowed",
                400,
            )


def _tag_char_ok(char: str) -> bool:
    return char.isalnum() or char.isspace() or char in TAG_PUNCTUATION


def check_copy(
    src: tuple[str, str], dst: tuple[str, str], src_version_id: str | None, options: CopyOptions
) -> None:
    """Refuse what a folder or memory store cannot honour, and what S3 itself refuses."""
    if options.extra:
        raise StorageError(
            "NotImplemented",
            f"copy parameter(s) {sorted(options.extra)} are not supported by this store",
            501,
        )
    unknown = set(options.headers) - {*HEADER_NAMES, "ContentType"}
    if unknown:
        raise StorageError("InvalidArgument", f"unknown header(s) {sorted(unknown)}", 400)
    if options.tags is not None:
        check_tags(options.tags)
    unchanged = not options.replace_metadata and options.storage_class is None
    if src == dst and src_version_id is None and unchanged:
        raise StorageError(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself "
            "without changing the object's metadata, storage class, website redirect location "
            "or encryption attributes.",
            400,
        )


def copied_attrs(source: ObjectAttrs, options: CopyOptions) -> ObjectAttrs:
    """The destination's attributes, as CopyObject builds them."""
    attrs = source
    if options.replace_metadata:
        headers = {k: v for k, v in options.headers.items() if k != "ContentType"}
        attrs = replace(
            attrs,
            content_type=options.headers.get("ContentType"),
            metadata={k.lower(): v for k, v in options.metadata.items()},
            headers=headers,
        )
    if options.tags is not None:
        attrs = replace(attrs, tags=dict(options.tags))
    # CopyObject writes STANDARD unless told otherwise; it never keeps the source's class.
    return replace(attrs, storage_class=options.storage_class or "STANDARD")


def object_info(
    bucket: str,
    key: str,
    *,
    size: int,
    etag: str,
    last_modified: datetime,
    attrs: ObjectAttrs,
    version_id: str | None = None,
) -> ObjectInfo:
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=size,
        etag=etag,
        last_modified=last_modified,
        version_id=version_id,
        storage_class=attrs.storage_class,
        content_type=attrs.content_type or DEFAULT_CONTENT_TYPE,
        metadata=dict(attrs.metadata),
        headers=dict(attrs.headers),
    )


def check_range(start: int, size: int) -> None:
    """Reading from the very end is an empty read; past it is S3's InvalidRange."""
    if start < 0 or start > size:
        raise StorageError("InvalidRange", f"start {start} is outside the object (size {size})", 416)


def no_such_bucket(bucket: str) -> StorageError:
    return StorageError("NoSuchBucket", f"The specified bucket does not exist: {bucket}", 404)


def no_such_key(key: str) -> StorageError:
    return StorageError("NoSuchKey", f"The specified key does not exist: {key}", 404)


def not_implemented(store: str, what: str) -> StorageError:
    """The answer to an S3 feature a folder or memory store does not have."""
    return StorageError("NotImplemented", f"{what} is not supported by a {store}", 501)


def check_put_extra(store: str, extra: Mapping[str, Any] | None) -> None:
    """put_* `extra` on a store without S3 features: server-side encryption parameters are
    accepted and ignored (nothing is recorded; the bytes are as safe as the disk under them),
    anything else is refused, as CopyOptions.extra is, rather than silently dropped."""
    unsupported = sorted(set(extra or {}) - SSE_PARAMS)
    if unsupported:
        raise not_implemented(store, f"PutObject parameter(s) {', '.join(unsupported)}")


def common_prefixes(keys: Sequence[str], prefix: str, delimiter: str) -> list[str]:
    """ListObjectsV2's CommonPrefixes for sorted `keys`: each distinct prefix up to a delimiter."""
    found: list[str] = []
    for key in keys:
        if not key.startswith(prefix) or not delimiter:
            continue
        cut = key.find(delimiter, len(prefix))
        if cut >= 0:
            common = key[: cut + len(delimiter)]
            if not found or found[-1] != common:
                found.append(common)
    return found


def check_key_length(key: str) -> bytes:
    """S3's own key rules: 1 to 1,024 UTF-8 bytes."""
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise StorageError("InvalidArgument", f"key {key!r} is not valid UTF-8", 400) from exc
    if not encoded:
        raise StorageError("InvalidArgument", "the key must not be empty", 400)
    if len(encoded) > MAX_KEY_BYTES:
        raise StorageError("KeyTooLongError", f"keys are at most {MAX_KEY_BYTES} bytes", 400)
    return encoded


# -- the folder store ---------------------------------------------------------------------


@dataclass(slots=True)
class _Sidecar:
    """The sidecar file's content: attributes plus the ETag cached for one file state."""

    attrs: ObjectAttrs = field(default_factory=ObjectAttrs)
    etag: str | None = None
    #: (size, mtime_ns) of the file the cached etag belongs to.
    stamp: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        a = self.attrs
        return {
            "content_type": a.content_type,
            "metadata": dict(a.metadata),
            "headers": {k: _encode_header(v) for k, v in a.headers.items()},
            "tags": dict(a.tags),
            "storage_class": a.storage_class,
            "etag": self.etag,
            "stamp": list(self.stamp) if self.stamp else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Sidecar:
        attrs = ObjectAttrs(
            content_type=data.get("content_type"),
            metadata=dict(data.get("metadata") or {}),
            headers={k: _decode_header(v) for k, v in (data.get("headers") or {}).items()},
            tags=dict(data.get("tags") or {}),
            storage_class=data.get("storage_class") or "STANDARD",
        )
        stamp = data.get("stamp")
        return cls(attrs, data.get("etag"), (int(stamp[0]), int(stamp[1])) if stamp else None)


class LocalStore:
    """ObjectStore over a folder: sub-folders are buckets, files below them objects."""

    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        self._meta = self._root / META_DIR_NAME

    # -- paths and checks -------------------------------------------------------------------

    def _bucket_dir(self, bucket: str) -> Path:
        if not bucket or bucket.startswith(".") or "/" in bucket or "\x00" in bucket:
            raise StorageError("InvalidBucketName", f"bucket name {bucket!r} is not valid", 400)
        path = self._root / bucket
        if not path.is_dir():
            raise no_such_bucket(bucket)
        return path

    def _object_path(self, bucket: str, key: str) -> Path:
        """The file for `key`, after checking the bucket exists and the key stays inside it."""
        _check_key(key)
        return self._bucket_dir(bucket) / key

    def _sidecar_path(self, bucket: str, key: str) -> Path:
        *folders, name = key.split("/")
        parts = [f + SIDECAR_DIR_SUFFIX for f in folders]
        return self._meta.joinpath(bucket, *parts, name + SIDECAR_SUFFIX)

    def _stat(self, path: Path, key: str) -> os.stat_result:
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise no_such_key(key) from exc
        if not _is_file(st):
            raise no_such_key(key)  # a folder of other keys is not an object
        return st

    # -- sidecars ---------------------------------------------------------------------------

    def _read_sidecar(self, bucket: str, key: str) -> _Sidecar:
        path = self._sidecar_path(bucket, key)
        try:
            raw = path.read_text("utf-8")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return _Sidecar()  # a file dropped in by hand: no metadata yet
        try:
            return _Sidecar.from_json(json.loads(raw))
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            log.warning("ignoring unreadable metadata file %s", path)
            return _Sidecar()

    def _write_sidecar(self, bucket: str, key: str, sidecar: _Sidecar) -> None:
        data = json.dumps(sidecar.to_json(), ensure_ascii=False).encode("utf-8")
        _atomic_write(self._sidecar_path(bucket, key), lambda f: f.write(data))

    def _update_attrs(self, bucket: str, key: str, change: Callable[[ObjectAttrs], ObjectAttrs]) -> None:
        sidecar = self._read_sidecar(bucket, key)
        sidecar.attrs = change(sidecar.attrs)
        self._write_sidecar(bucket, key, sidecar)

    async def _etag(self, bucket: str, key: str, path: Path, st: os.stat_result, sidecar: _Sidecar) -> str:
        """MD5 of the file, from the sidecar's cache when the file has not changed."""
        stamp = _stamp(st)
        if sidecar.etag and sidecar.stamp == stamp:
            return sidecar.etag
        etag = await asyncio.to_thread(_md5_file, path)
        with contextlib.suppress(OSError):  # the cache is best effort (read-only folder, races)
            if _stamp(path.stat()) == stamp:
                # Re-read so an attribute change made while hashing is kept, not overwritten.
                fresh = self._read_sidecar(bucket, key)
                fresh.etag, fresh.stamp = etag, stamp
                self._write_sidecar(bucket, key, fresh)
        return etag

    # -- writes -----------------------------------------------------------------------------

    async def _write(
        self, bucket: str, key: str, fill: Callable[[BinaryIO], str], attrs: ObjectAttrs
    ) -> tuple[os.stat_result, str]:
        """Write content via a temp file, move it into place, then write its sidecar."""
        path = self._object_path(bucket, key)
        temp = _temp_path(path)
        try:
            etag = await asyncio.to_thread(_write_new_file, temp, fill, key)
            st = temp.stat()  # os.replace keeps the inode, so this is the object's stamp
            try:
                os.replace(temp, path)
            except IsADirectoryError as exc:
                raise _key_clash(key, "names an existing folder of other keys") from exc
            self._write_sidecar(bucket, key, _Sidecar(attrs, etag, _stamp(st)))
        except BaseException:
            # A cancelled write thread may still create the file after this; it stays hidden.
            _discard(temp)
            raise
        return st, etag

    # -- the contract -----------------------------------------------------------------------

    async def create_bucket(self, bucket: str) -> None:
        with _io_errors(bucket):
            try:
                self._bucket_dir(bucket)
            except StorageError as exc:
                if exc.code != "NoSuchBucket":
                    raise
                (self._root / bucket).mkdir(parents=True, exist_ok=True)

    async def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
        _check_version(version_id)
        with _io_errors(key):
            path = self._object_path(bucket, key)
            st = self._stat(path, key)
            sidecar = self._read_sidecar(bucket, key)
            etag = await self._etag(bucket, key, path, st, sidecar)
        return object_info(
            bucket, key, size=st.st_size, etag=etag, last_modified=_mtime(st), attrs=sidecar.attrs
        )

    async def get_bytes(self, bucket: str, key: str, version_id: str | None = None) -> bytes:
        _check_version(version_id)
        with _io_errors(key):
            path = self._object_path(bucket, key)
            self._stat(path, key)
            return await asyncio.to_thread(path.read_bytes)

    async def iter_bytes(
        self,
        bucket: str,
        key: str,
        version_id: str | None = None,
        start: int = 0,
        chunk_size: int = 1 << 20,
    ) -> AsyncIterator[bytes]:
        _check_version(version_id)
        with _io_errors(key):
            path = self._object_path(bucket, key)
            check_range(start, self._stat(path, key).st_size)
            f = await asyncio.to_thread(path.open, "rb")
            try:
                await asyncio.to_thread(f.seek, start)
                while chunk := await asyncio.to_thread(f.read, chunk_size):
                    yield chunk
            finally:
                f.close()

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
        check_put_extra(_FOLDER, extra)
        attrs = new_attrs(content_type, metadata)
        with _io_errors(key):
            st, etag = await self._write(bucket, key, lambda f: _write_bytes(f, body), attrs)
        info = object_info(bucket, key, size=st.st_size, etag=etag, last_modified=_mtime(st), attrs=attrs)
        return replace(info, content_type=content_type)  # as requested, like S3Store

    async def put_file(
        self,
        bucket: str,
        key: str,
        path: Path,
        *,
        content_type: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        check_put_extra(_FOLDER, extra)
        if not path.is_file():  # the caller's file, not an object: not a NoSuchKey
            raise StorageError("LocalFileError", f"{path} is not a readable file")
        with _io_errors(key):
            await self._write(bucket, key, lambda f: _copy_file(path, f), new_attrs(content_type, None))

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
        _check_version(src_version_id)
        check_copy((src_bucket, src_key), (dst_bucket, dst_key), src_version_id, options)
        with _io_errors(src_key):
            src = self._object_path(src_bucket, src_key)
            self._stat(src, src_key)
            attrs = copied_attrs(self._read_sidecar(src_bucket, src_key).attrs, options)
            _, etag = await self._write(dst_bucket, dst_key, lambda f: _copy_file(src, f), attrs)
        return CopyResult(etag)

    async def get_tags(self, bucket: str, key: str, version_id: str | None = None) -> dict[str, str]:
        _check_version(version_id)
        with _io_errors(key):
            self._stat(self._object_path(bucket, key), key)
            return dict(self._read_sidecar(bucket, key).attrs.tags)

    async def put_tags(
        self, bucket: str, key: str, tags: Mapping[str, str], version_id: str | None = None
    ) -> None:
        _check_version(version_id)
        check_tags(tags)
        with _io_errors(key):
            self._stat(self._object_path(bucket, key), key)
            self._update_attrs(bucket, key, lambda a: replace(a, tags=dict(tags)))

    async def delete_tags(self, bucket: str, key: str, version_id: str | None = None) -> None:
        await self.put_tags(bucket, key, {}, version_id)

    async def delete(self, bucket: str, key: str, version_id: str | None = None) -> None:
        _check_version(version_id)
        with _io_errors(key):
            bucket_dir = self._bucket_dir(bucket)
            _check_key(key)
            path = bucket_dir / key
            sidecar = self._sidecar_path(bucket, key)
            with contextlib.suppress(FileNotFoundError, NotADirectoryError, IsADirectoryError):
                path.unlink()  # a missing key (or a folder of other keys) deletes nothing
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                sidecar.unlink()
            _prune_empty(path.parent, bucket_dir)
            _prune_empty(sidecar.parent, self._meta / bucket)

    async def delete_many(self, bucket: str, objects: Sequence[VersionRef]) -> list[Exception | None]:
        with _io_errors(bucket):
            self._bucket_dir(bucket)  # a missing bucket fails the whole request, as in S3
        outcomes: list[Exception | None] = []
        for ref in objects:
            try:
                await self.delete(bucket, ref.key, ref.version_id)
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
    ) -> AsyncIterator[ObjectInfo]:
        with _io_errors(bucket):
            bucket_dir = self._bucket_dir(bucket)
            async for key, path in self._walk(bucket_dir, "", prefix):
                if start_after is not None and key <= start_after:
                    continue
                if end_before is not None and key >= end_before:
                    return  # the walk is in key order: nothing after this is wanted
                sidecar = self._read_sidecar(bucket, key)
                try:
                    st = self._stat(path, key)
                    etag = await self._etag(bucket, key, path, st, sidecar)
                except (StorageError, FileNotFoundError):
                    continue  # deleted while listing
                yield ObjectInfo(
                    bucket=bucket,
                    key=key,
                    size=st.st_size,
                    etag=etag,
                    last_modified=_mtime(st),
                    storage_class=sidecar.attrs.storage_class,
                )

    async def list_prefixes(self, bucket: str, prefix: str = "", delimiter: str = "/") -> list[str]:
        keys = [info.key async for info in self.list_objects(bucket, prefix)]
        return common_prefixes(keys, prefix, delimiter)

    async def list_versions(
        self, bucket: str, prefix: str = "", start_after: str | None = None
    ) -> AsyncIterator[ObjectInfo]:
        # One version per file: each object is its own latest version.
        async for info in self.list_objects(bucket, prefix, start_after):
            yield info

    async def object_parts(self, bucket: str, key: str, version_id: str | None = None) -> list[int] | None:
        await self.head(bucket, key, version_id)  # a missing key is still NoSuchKey
        return None  # a file is one part

    # -- S3 features a folder does not have ----------------------------------------------

    async def put_acl(self, bucket: str, key: str, acl: AclSpec, version_id: str | None = None) -> None:
        raise not_implemented(_FOLDER, "PutObjectAcl (object ACLs)")

    async def restore(
        self,
        bucket: str,
        key: str,
        days: int | None,
        tier: str | None,
        version_id: str | None = None,
    ) -> None:
        raise not_implemented(_FOLDER, "RestoreObject (archive storage classes)")

    async def put_legal_hold(self, bucket: str, key: str, status: str, version_id: str | None = None) -> None:
        raise not_implemented(_FOLDER, "PutObjectLegalHold (Object Lock)")

    async def put_retention(
        self,
        bucket: str,
        key: str,
        retention: Retention,
        version_id: str | None = None,
        *,
        bypass_governance: bool = False,
    ) -> None:
        raise not_implemented(_FOLDER, "PutObjectRetention (Object Lock)")

    async def replication_rules(self, bucket: str) -> list[ReplicationRule]:
        # A folder has no replication configuration, which is an answer, not an error: a job
        # can still name its destination (the S3ReplicateObject DestinationBucket extension).
        self._bucket_dir(bucket)
        return []

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        # A folder has no multipart uploads: put_file writes a temp file and renames it, and a
        # crash leaves only a temp file, which is never listed (see TEMP_MARKER).
        self._bucket_dir(bucket)
        none: tuple[MultipartUpload, ...] = ()
        for upload in none:
            yield upload

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self._bucket_dir(bucket)
        raise StorageError("NoSuchUpload", f"a folder store has no multipart uploads ({upload_id})", 404)

    async def update_encryption(
        self, bucket: str, key: str, sse: KmsEncryption, version_id: str | None = None
    ) -> None:
        raise not_implemented(_FOLDER, "SSE-KMS encryption")

    async def _walk(self, folder: Path, key_prefix: str, prefix: str) -> AsyncIterator[tuple[str, Path]]:
        """(key, path) of each file under `folder` whose key starts with `prefix`, in key order.

        Sorting each folder's entries with "/" appended to folder names gives global key
        order: every key below folder `a` starts with "a/", and that is where it sorts.
        """
        for name, is_dir in await asyncio.to_thread(_sorted_entries, folder):
            key = key_prefix + name
            if is_dir:
                below = key + "/"
                if below.startswith(prefix) or prefix.startswith(below):
                    async for found in self._walk(folder / name, below, prefix):
                        yield found
            elif key.startswith(prefix):
                yield key, folder / name

    async def close(self) -> None:
        return None


# -- helpers ------------------------------------------------------------------------------


def _check_version(version_id: str | None) -> None:
    if version_id not in (None, "null"):
        raise StorageError("NotImplemented", "versioning is not supported by a local folder store", 501)


def _check_key(key: str) -> None:
    """Refuse keys that would leave the bucket folder or cannot be one file in it."""
    check_key_length(key)
    if "\x00" in key:
        raise StorageError("InvalidArgument", f"key {key!r} contains a NUL character", 400)
    if key.startswith("/") or key.endswith("/"):
        raise _key_clash(key, "starts or ends with '/': a folder store cannot hold it")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise _key_clash(key, "has an empty, '.' or '..' path segment")
        if TEMP_MARKER in segment:
            raise _key_clash(key, f"contains {TEMP_MARKER!r}, reserved for temp files")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise StorageError(
                "KeyTooLongError",
                f"key {key!r}: each '/'-separated part is at most {MAX_SEGMENT_BYTES} bytes here",
                400,
            )


def _key_clash(key: str, why: str) -> StorageError:
    return StorageError("InvalidArgument", f"key {key!r} {why}", 400)


def _is_file(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


def _stamp(st: os.stat_result) -> tuple[int, int]:
    return st.st_size, st.st_mtime_ns


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, UTC)


def _temp_path(path: Path) -> Path:
    # Same folder as the target, so os.replace is a rename within one filesystem.
    return path.with_name(f"{TEMP_MARKER}{uuid.uuid4().hex}")


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(IO_CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def _write_bytes(f: BinaryIO, body: bytes) -> str:
    f.write(body)
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def _copy_file(source: Path, f: BinaryIO) -> str:
    """Copy `source` into `f`; the MD5 of what was copied."""
    digest = hashlib.md5(usedforsecurity=False)
    with source.open("rb") as src:
        while block := src.read(IO_CHUNK_BYTES):
            digest.update(block)
            f.write(block)
    return digest.hexdigest()


def _write_new_file(temp: Path, fill: Callable[[BinaryIO], str], key: str) -> str:
    """Create `temp` (and its folders) and fill it; runs in a worker thread."""
    for attempt in range(DIR_RACE_ATTEMPTS):
        try:
            temp.parent.mkdir(parents=True, exist_ok=True)
            with temp.open("xb") as f:
                result = fill(f)
                if FSYNC_WRITES:
                    f.flush()
                    os.fsync(f.fileno())
            return result
        except (FileExistsError, NotADirectoryError) as exc:
            raise _key_clash(key, "runs through an existing object (a key prefix is a file)") from exc
        except FileNotFoundError:
            if attempt == DIR_RACE_ATTEMPTS - 1 or temp.parent.exists():
                raise  # not the folder race: the source itself is gone
    raise AssertionError("unreachable")


def _atomic_write(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    temp = _temp_path(path)
    try:
        _write_new_file(temp, lambda f: str(fill(f)), path.name)
        os.replace(temp, path)
    except BaseException:
        _discard(temp)
        raise


def _discard(temp: Path) -> None:
    """Remove a temp file if it exists, keeping the error that made it useless."""
    with contextlib.suppress(OSError):
        temp.unlink()


def _prune_empty(folder: Path, stop: Path) -> None:
    """Remove `folder` and its parents while empty, up to (not including) `stop`."""
    while folder != stop and stop in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (or already gone): nothing above can be empty either
        folder = folder.parent


def _sorted_entries(folder: Path) -> list[tuple[str, bool]]:
    """(name, is_folder) of the entries in `folder`, sorted as their keys sort."""
    try:
        entries = [
            (e.name, e.is_dir(follow_symlinks=False)) for e in os.scandir(folder) if TEMP_MARKER not in e.name
        ]
    except (FileNotFoundError, NotADirectoryError):
        return []  # removed while listing
    return sorted(entries, key=lambda entry: entry[0] + "/" if entry[1] else entry[0])


def _encode_header(value: Any) -> Any:
    if isinstance(value, datetime):
        return {_DATETIME_TAG: value.isoformat()}
    return value


def _decode_header(value: Any) -> Any:
    if isinstance(value, dict) and _DATETIME_TAG in value:
        return datetime.fromisoformat(value[_DATETIME_TAG])
    return value


@contextlib.contextmanager
def _io_errors(name: str) -> Iterator[None]:
    """Turn filesystem errors into StorageErrors, as the contract requires."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as exc:
        raise StorageError("NoSuchKey", f"{name}: {exc.strerror}", 404) from exc
    except PermissionError as exc:
        raise StorageError("AccessDenied", f"{name}: {exc}", 403) from exc
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise StorageError("KeyTooLongError", f"{name}: {exc.strerror}", 400) from exc
        raise StorageError("InternalError", f"{name}: {exc}") from exc
