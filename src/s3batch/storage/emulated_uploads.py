"""Capability.PART_UPLOADS as the folder and memory stores emulate it: S3's rules for checksummed
writes and multipart uploads in one place, so both stores give the same answers.

- A checksum sent with a write is checked against the bytes: a mismatch is BadDigest (400).
- Each part's answer carries its MD5 ETag and its checksum in the upload's algorithm, computed
  by the store from the bytes it received.
- CompleteMultipartUpload takes the listed parts in ascending order, each with the ETag the
  store gave it (InvalidPartOrder / InvalidPart otherwise); the result's checksum is S3's
  composite of the parts' checksums (`-<parts>`), or for a FULL_OBJECT upload the checksum of
  the joined bytes: for a CRC (the only algorithms S3 allows FULL_OBJECT uploads for) combined
  from the parts' CRCs and sizes, as S3 derives it, so the joined bytes need no second pass;
  for any other algorithm hashed from the joined bytes.
- `multipart_etag` is the ETag S3 gives a completed multipart object: the MD5 of the parts'
  binary MD5s, `-<parts>`.
- Neither store keeps checksums at rest: `head_with_checksum` reports none (except, in the
  folder store, for an object completed from an assembled upload: storage/local_uploads.py).

An assembled upload (capabilities.AssembledUploadStore; the folder store's) has a layout: each
part must come with the upload's checksum and the size the layout gives it, and its ETag is
derived from that checksum (`assembled_part_etag`), so no MD5 of its bytes is computed. The
completed object's ETag is then `multipart_etag` of those ETags: S3's form, `<hex>-<parts>`,
but not an MD5 of MD5s, as S3's own ETags are not for SSE-KMS objects.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from s3batch.domain.checksums import (
    ChecksumAlgorithm,
    ChecksumType,
    Hasher,
    combined_digest,
    combines,
    composite_checksum,
    encode,
    new_hasher,
)
from s3batch.domain.uploads import Body, ChecksumValue, ObjectAttributes, UploadedPart
from s3batch.errors import StorageError
from s3batch.storage.base import UploadLayout
from s3batch.storage.emulated import ObjectAttrs, check_tags

#: Upload ids the emulated stores hand out: 32 hex digits (a uuid4), so one can name a folder.
UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
#: S3's part numbers.
MIN_PART_NUMBER = 1
MAX_PART_NUMBER = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class StagedUpload:
    """An upload started and not yet completed or aborted."""

    key: str
    initiated: datetime
    attributes: ObjectAttributes = field(default_factory=ObjectAttributes)
    algorithm: ChecksumAlgorithm | None = None
    checksum_type: ChecksumType = ChecksumType.COMPOSITE
    #: An assembled upload's layout; None for one started by create_multipart_upload.
    layout: UploadLayout | None = None

    def to_json(self) -> dict[str, Any]:
        a = self.attributes
        layout = {} if self.layout is None else {"size": self.layout.size, "part_size": self.layout.part_size}
        return {
            **layout,
            "key": self.key,
            "initiated": self.initiated.isoformat(),
            "content_type": a.content_type,
            "metadata": dict(a.metadata),
            "headers": {k: v.isoformat() if isinstance(v, datetime) else v for k, v in a.headers.items()},
            "tags": dict(a.tags),
            "algorithm": None if self.algorithm is None else self.algorithm.value,
            "checksum_type": self.checksum_type.value,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StagedUpload:
        headers = dict(data.get("headers") or {})
        if isinstance(headers.get("Expires"), str):
            headers["Expires"] = datetime.fromisoformat(headers["Expires"])
        attributes = ObjectAttributes(
            content_type=data.get("content_type"),
            metadata=dict(data.get("metadata") or {}),
            headers=headers,
            tags=dict(data.get("tags") or {}),
        )
        algorithm = data.get("algorithm")
        return cls(
            key=str(data["key"]),
            initiated=datetime.fromisoformat(data["initiated"]),
            attributes=attributes,
            algorithm=None if algorithm is None else ChecksumAlgorithm(algorithm),
            checksum_type=ChecksumType(data.get("checksum_type", ChecksumType.COMPOSITE.value)),
            layout=UploadLayout(int(data["size"]), int(data["part_size"])) if "size" in data else None,
        )


def object_attrs(attributes: ObjectAttributes) -> ObjectAttrs:
    """The stores' own attribute record for a written object; tags held to S3's limits."""
    check_tags(attributes.tags)
    return ObjectAttrs(
        content_type=attributes.content_type,
        metadata={k.lower(): v for k, v in attributes.metadata.items()},
        headers=dict(attributes.headers),
        tags=dict(attributes.tags),
    )


def checksum_of(algorithm: ChecksumAlgorithm, body: Body | memoryview) -> str:
    hasher = new_hasher(algorithm)
    hasher.update(memoryview(body))
    return encode(hasher.digest())


def check_sent(body: Body | memoryview, sent: ChecksumValue | None) -> None:
    """BadDigest unless `body` has the checksum the caller sent with it."""
    if sent is not None and checksum_of(sent.algorithm, body) != sent.value:
        raise bad_digest(sent.algorithm)


def bad_digest(algorithm: ChecksumAlgorithm) -> StorageError:
    return StorageError(
        "BadDigest", f"The {algorithm} you specified did not match the calculated checksum.", 400
    )


def part_answer(
    number: int, body: Body | memoryview, sent: ChecksumValue | None, algorithm: ChecksumAlgorithm | None
) -> UploadedPart:
    """The part's record after checking what was sent: its MD5 ETag and (with an algorithm,
    the upload's or the one sent) its checksum."""
    check_part_number(number)
    check_sent(body, sent)
    digest = hashlib.md5(usedforsecurity=False)  # the ETag, as emulated.etag_of computes it
    digest.update(body)
    use = algorithm or (sent.algorithm if sent is not None else None)
    return UploadedPart(
        number, len(body), digest.hexdigest(), None if use is None else checksum_of(use, body)
    )


def check_layout(layout: UploadLayout) -> None:
    """InvalidArgument unless `layout` is one an upload can have (1-10,000 parts)."""
    if layout.size < 1 or layout.part_size < 1 or layout.part_count > MAX_PART_NUMBER:
        raise StorageError(
            "InvalidArgument",
            f"an upload of {layout.size} bytes in parts of {layout.part_size} needs 1 to "
            f"{MAX_PART_NUMBER} parts",
            400,
        )


def assembled_part_etag(algorithm: ChecksumAlgorithm, checksum: str) -> str:
    """An assembled upload's part ETag: 32 hex digits, as S3's, derived from the part's checksum
    (the MD5 of `<algorithm>:<base64 checksum>`, a few bytes) instead of its bytes."""
    return hashlib.md5(f"{algorithm}:{checksum}".encode(), usedforsecurity=False).hexdigest()


def check_part_number(number: int) -> None:
    if not MIN_PART_NUMBER <= number <= MAX_PART_NUMBER:
        raise StorageError(
            "InvalidArgument",
            f"Part number must be an integer between 1 and 10000, inclusive ({number})",
            400,
        )


def no_such_upload(upload_id: str) -> StorageError:
    return StorageError(
        "NoSuchUpload",
        f"The specified multipart upload does not exist ({upload_id}): "
        "it may have been aborted or completed.",
        404,
    )


def chosen_parts(stored: Mapping[int, UploadedPart], requested: Sequence[UploadedPart]) -> list[UploadedPart]:
    """The stored parts CompleteMultipartUpload names, checked as S3 checks them."""
    if not requested:
        raise StorageError("MalformedXML", "You must specify at least one part", 400)
    numbers = [p.number for p in requested]
    if numbers != sorted(set(numbers)):
        raise StorageError("InvalidPartOrder", "The list of parts was not in ascending order.", 400)
    chosen = []
    for part in requested:
        have = stored.get(part.number)
        if have is None or have.etag != part.etag.strip('"'):
            raise StorageError(
                "InvalidPart", f"One or more of the specified parts could not be found ({part.number}).", 400
            )
        chosen.append(have)
    return chosen


def completed_checksum(
    upload: StagedUpload, parts: Sequence[UploadedPart], full: Hasher | None
) -> ChecksumValue | None:
    """The joined object's checksum: the parts' composite; for a FULL_OBJECT upload the parts'
    CRCs combined, or `full`'s digest where `full_hasher` gave one (the joined bytes fed to it)."""
    algorithm = upload.algorithm
    if algorithm is None:
        return None
    if upload.checksum_type is ChecksumType.FULL_OBJECT:
        if full is not None:
            return ChecksumValue(algorithm, encode(full.digest()), ChecksumType.FULL_OBJECT)
        blocks = [(_digest(p.checksum), p.size) for p in parts]
        try:
            combined = combined_digest(algorithm, blocks)
        except ValueError as exc:  # a part record holding a digest of another width
            raise StorageError("InvalidPart", f"unreadable part checksum: {exc}", 400) from exc
        return ChecksumValue(algorithm, encode(combined), ChecksumType.FULL_OBJECT)
    digests = [_digest(p.checksum) for p in parts]
    return ChecksumValue(algorithm, composite_checksum(algorithm, digests), ChecksumType.COMPOSITE)


def full_hasher(upload: StagedUpload) -> Hasher | None:
    """A hasher the joined bytes must be fed to: only for a FULL_OBJECT upload whose algorithm's
    part digests do not combine (not a CRC; S3 itself refuses such an upload)."""
    if upload.algorithm is None or upload.checksum_type is not ChecksumType.FULL_OBJECT:
        return None
    if combines(upload.algorithm):
        return None  # completed_checksum combines the parts' CRCs
    return new_hasher(upload.algorithm)


def multipart_etag(parts: Sequence[UploadedPart]) -> str:
    """The ETag S3 gives an object completed from `parts` (in order): the MD5 of the parts'
    binary MD5s (their ETags), then `-<number of parts>`."""
    digest = hashlib.md5(usedforsecurity=False)
    for part in parts:
        digest.update(bytes.fromhex(part.etag))
    return f"{digest.hexdigest()}-{len(parts)}"


def check_sent_whole(result: ChecksumValue | None, sent: ChecksumValue | None) -> None:
    """BadDigest when the caller's whole-object checksum does not match the joined bytes'."""
    if sent is None or sent.type is not ChecksumType.FULL_OBJECT or result is None:
        return
    if result.type is ChecksumType.FULL_OBJECT and result.value != sent.value:
        raise bad_digest(sent.algorithm)


def _digest(value: str | None) -> bytes:
    if value is None:
        raise StorageError("InvalidPart", "a part was uploaded without the upload's checksum", 400)
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise StorageError("InvalidPart", f"unreadable part checksum {value!r}", 400) from exc
