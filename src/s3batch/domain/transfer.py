"""S3batchTransfer's rules as pure values: part sizes, key names, skip modes, report messages.

The operation itself (operations/transfer.py) streams bytes between stores; everything here is
arithmetic and text, so it is tested without a store (docs/transfer.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from s3batch.domain.checksums import FULL_OBJECT_ONLY, ChecksumAlgorithm, ChecksumType

MIB = 1024**2
#: s3batch's smallest part, in bytes: fewer, larger requests than S3's own 5 MiB floor.
MIN_PART_BYTES = 8 * MIB
#: S3's limits on one part (and on one PutObject), in bytes, and on parts per upload.
S3_MIN_PART_BYTES = 5 * MIB
MAX_PART_BYTES = 5 * 1024**3
MAX_PARTS = 10_000
#: Part sizes are whole MiB, so a resumed job computes the very same layout.
PART_ALIGN_BYTES = MIB
#: The largest object a multipart upload can hold: MAX_PARTS parts of MAX_PART_BYTES.
MAX_OBJECT_BYTES = MAX_PARTS * MAX_PART_BYTES


class SkipExisting(StrEnum):
    """When an object already at the destination is left alone (DistCp's -update)."""

    #: Always write.
    NONE = "None"
    #: Same size and the same content: equal MD5 ETags, equal stored checksums, or (when
    #: neither settles it) equal checksums computed by reading both.
    SIZE_AND_CHECKSUM = "SizeAndChecksum"
    #: Same size (what `rclone copy --size-only` and DistCp's -update without checksums do).
    SIZE_ONLY = "SizeOnly"


def part_size_for(object_size: int, preferred: int) -> int:
    """The part size of an object: `preferred`, grown to whole MiB until the object fits in
    MAX_PARTS parts. Raises ValueError above what S3 can hold."""
    if object_size > MAX_OBJECT_BYTES:
        raise ValueError(f"{object_size} bytes is more than a multipart upload holds ({MAX_OBJECT_BYTES})")
    needed = math.ceil(object_size / MAX_PARTS)
    aligned = math.ceil(needed / PART_ALIGN_BYTES) * PART_ALIGN_BYTES
    return min(max(preferred, aligned), MAX_PART_BYTES)


def part_sizes(object_size: int, part_size: int) -> list[int]:
    """The size of each part, in order (the last may be shorter)."""
    full, rest = divmod(object_size, part_size)
    return [part_size] * full + ([rest] if rest else [])


def part_ranges(sizes: Sequence[int]) -> Iterator[tuple[int, int, int]]:
    """(part number, first byte, size) for each part."""
    offset = 0
    for number, size in enumerate(sizes, start=1):
        yield number, offset, size
        offset += size


def is_multipart(object_size: int, part_size: int) -> bool:
    """Objects larger than one part go in parts; the rest in one PutObject."""
    return object_size > part_size


def upload_checksum_type(algorithm: ChecksumAlgorithm) -> ChecksumType:
    """The type of a multipart upload's whole-object checksum: composite, as S3 defines it,
    except for CRC64NVME, which S3 only combines into a full-object value."""
    return ChecksumType.FULL_OBJECT if algorithm in FULL_OBJECT_ONLY else ChecksumType.COMPOSITE


@dataclass(frozen=True, slots=True)
class KeyMapping:
    """Source key → destination key: SourceKeyPrefix removed, then TargetKeyPrefix added (with
    a "/" between unless the prefix ends with one, as S3PutObjectCopy does)."""

    source_prefix: str = ""
    target_prefix: str = ""

    def target_key(self, key: str) -> str | None:
        """The destination key, or None when `key` does not start with SourceKeyPrefix."""
        if not key.startswith(self.source_prefix):
            return None
        rest = key[len(self.source_prefix) :]
        if not self.target_prefix:
            return rest
        if self.target_prefix.endswith("/"):
            return self.target_prefix + rest
        return f"{self.target_prefix}/{rest}"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one task did, for its report row's ResultMessage."""

    #: "copied" or "skipped: identical (<how it was decided>)".
    verdict: str
    algorithm: ChecksumAlgorithm
    #: The object's checksum (composite `-<parts>` for a multipart upload), or None when the
    #: task decided without one (SizeOnly).
    checksum: str | None = None
    size: int = 0
    parts: int = 0
    #: Parts an interrupted upload already held with the right bytes, not uploaded again.
    parts_reused: int = 0
    #: What the destination did not get ("tags not carried: ...").
    notes: tuple[str, ...] = ()

    def message(self) -> str:
        """`copied; ChecksumAlgorithm=CRC32C; Checksum=...; Bytes=...[; Parts=n (m reused)]...`"""
        fields = [self.verdict, f"ChecksumAlgorithm={self.algorithm}"]
        if self.checksum is not None:
            fields.append(f"Checksum={self.checksum}")
        fields.append(f"Bytes={self.size}")
        if self.parts:
            fields.append(f"Parts={self.parts} ({self.parts_reused} reused)")
        fields.extend(self.notes)
        return "; ".join(fields)


COPIED = "copied"
#: The start of a skipped task's message (the report filter in docs/transfer.md).
SKIPPED_IDENTICAL = "skipped: identical"


def skipped(how: str) -> str:
    return f"{SKIPPED_IDENTICAL} ({how})"
