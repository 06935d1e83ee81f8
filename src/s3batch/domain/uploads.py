"""Values of checksummed writes and multipart uploads (Capability.PART_UPLOADS), no I/O.

A store that declares the capability (storage/capabilities.PartUploadStore) writes an object in
one request or part by part, each request carrying the checksum of its bytes, and answers with
what it computed itself, so a caller can compare the two (docs/transfer.md, "Checksums").
Checksum values are base64, as in S3's `x-amz-checksum-*` headers; a composite one ends in
`-<parts>` (domain/checksums.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from s3batch.domain.checksums import ChecksumAlgorithm, ChecksumType
from s3batch.domain.objects import ObjectInfo

#: Object bytes held in memory for one write: a bytearray where the bytes were assembled from a
#: stream (botocore sends a bytearray without copying it; see storage/s3/uploads.py).
Body = bytes | bytearray
#: An ETag that is the MD5 of the bytes (a single-request upload, or one part, without SSE-KMS).
_MD5_ETAG = re.compile(r"[0-9a-f]{32}")
#: A multipart object's ETag: the MD5 of its parts' MD5s and the part count.
_MULTIPART_ETAG = re.compile(r"[0-9a-f]{32}-[0-9]+")


@dataclass(frozen=True, slots=True)
class ChecksumValue:
    """One checksum: its algorithm, its base64 value and whether it covers the whole body or is
    S3's composite of part checksums (`<base64>-<parts>`)."""

    algorithm: ChecksumAlgorithm
    value: str
    type: ChecksumType = ChecksumType.FULL_OBJECT

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.value}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectAttributes:
    """What a written object carries besides its bytes."""

    content_type: str | None = None
    #: User metadata (x-amz-meta-*), keys lower-cased.
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: CacheControl, ContentDisposition, ContentEncoding, ContentLanguage, Expires (botocore names).
    headers: Mapping[str, Any] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UploadedPart:
    """A part of a multipart upload, as UploadPart answered or ListParts lists it."""

    number: int
    size: int
    #: Without quotes; the MD5 of the part's bytes on S3 without SSE-KMS.
    etag: str
    #: The part's checksum in the upload's algorithm, when the store returned one.
    checksum: str | None = None


@dataclass(frozen=True, slots=True)
class WrittenObject:
    """What a store answered to a completed write."""

    etag: str
    version_id: str | None = None
    #: The checksum the store computed (or stored) for the object, when it returned one.
    checksum: ChecksumValue | None = None


@dataclass(frozen=True, slots=True)
class CheckedHead:
    """HeadObject with checksum mode on: the object, its stored checksum (None when the store
    keeps none) and its tag count (None when the store did not say: S3 sends the count only
    for an object that has tags)."""

    info: ObjectInfo
    checksum: ChecksumValue | None = None
    tag_count: int | None = None

    @property
    def size(self) -> int:
        return self.info.size

    @property
    def etag(self) -> str:
        return self.info.etag


def is_md5_etag(etag: str) -> bool:
    """Whether `etag` looks like the MD5 of the bytes (32 hex digits, no part count)."""
    return _MD5_ETAG.fullmatch(etag) is not None


def is_multipart_etag(etag: str) -> bool:
    return _MULTIPART_ETAG.fullmatch(etag) is not None


def parse_checksum(algorithm: ChecksumAlgorithm, value: str, checksum_type: str | None) -> ChecksumValue:
    """A stored checksum as a server reports it; the type from the server when it says, else
    from the `-<parts>` suffix."""
    if checksum_type in (ChecksumType.FULL_OBJECT.value, ChecksumType.COMPOSITE.value):
        return ChecksumValue(algorithm, value, ChecksumType(checksum_type))
    composite = re.fullmatch(r".+-[0-9]+", value) is not None
    return ChecksumValue(algorithm, value, ChecksumType.COMPOSITE if composite else ChecksumType.FULL_OBJECT)
