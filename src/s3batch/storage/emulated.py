"""The S3 behaviour the folder store (LocalStore) and the memory store (MemoryStore) both
emulate, in one place so the two give the same answers.

Key and tag limits, ETags (the MD5 of the content), what CopyObject copies, the default
content type, which put parameters are accepted, S3's errors for missing buckets, keys and
ranges, the answer to a feature neither has (ACLs, Object Lock, restores, re-encryption) and
what both declare beyond the core contract. What only one of them needs (the folder's key
rules, sidecars and symlink safety; the memory store's versions) stays in its own module.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from s3batch.domain.objects import ObjectInfo
from s3batch.errors import StorageError
from s3batch.storage.base import SSE_PARAMS, Capability, CopyOptions

#: What both declare beyond the core contract (see storage/capabilities.py), each with an
#: emulated answer: no replication configuration ([]), no incomplete multipart uploads but
#: those started with create_multipart_upload (PART_UPLOADS: storage/emulated_uploads.py),
#: every object in one part, and checksummed part uploads. ACLs, Object Lock, restores and
#: re-encryption are not emulated: those calls answer `not_implemented`. Versions are the
#: memory store's alone (`MemoryStore(versioned=True)`).
EMULATED_CAPABILITIES = frozenset(
    {Capability.REPLICATION, Capability.MULTIPART_UPLOADS, Capability.PARTS, Capability.PART_UPLOADS}
)

#: S3's limit on key length, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
#: What S3 reports for an object stored without a Content-Type.
DEFAULT_CONTENT_TYPE = "binary/octet-stream"
#: S3's tag limits: tags per object, characters per key and per value.
MAX_TAGS = 10
MAX_TAG_KEY_CHARS = 128
MAX_TAG_VALUE_CHARS = 256
#: Characters S3 allows in tags besides letters, digits and spaces.
TAG_PUNCTUATION = "+-=._:/@"
#: System headers an object keeps (botocore names); ContentType is kept separately.
HEADER_NAMES = ("CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage", "Expires")
#: CopyObject as S3 does it by default: metadata and tags copied from the source.
DEFAULT_COPY_OPTIONS = CopyOptions()
#: The version id S3 gives objects written while versioning is off.
NULL_VERSION = "null"

#: The features neither store emulates, as `not_implemented` names them.
ACL_FEATURE = "PutObjectAcl (object ACLs)"
RESTORE_FEATURE = "RestoreObject (archive storage classes)"
LEGAL_HOLD_FEATURE = "PutObjectLegalHold (Object Lock)"
RETENTION_FEATURE = "PutObjectRetention (Object Lock)"
ENCRYPTION_FEATURE = "SSE-KMS encryption"


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


def check_unversioned(version_id: str | None, why: str) -> None:
    """A store without versions knows only the "null" version: any other id is NotImplemented."""
    if version_id not in (None, NULL_VERSION):
        raise StorageError("NotImplemented", why, 501)


def new_version_id() -> str:
    """A fresh version id, as a versioned bucket gives each write."""
    return uuid.uuid4().hex


class Digest(Protocol):
    """A running hash, as hashlib makes them."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def etag_hasher() -> Digest:
    """The running hash whose hex digest is a single-part object's ETag (MD5 of the content)."""
    return hashlib.md5(usedforsecurity=False)


def etag_of(body: bytes) -> str:
    """The ETag of a single-part object with content `body`."""
    return hashlib.md5(body, usedforsecurity=False).hexdigest()
