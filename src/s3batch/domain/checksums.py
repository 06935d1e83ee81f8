"""Object checksums as S3 computes them (pure: no I/O).

Hashers share one small interface, `update(data)` then `digest()`, so a body can be fed in
chunks of any size. Digests are big-endian bytes, as S3 puts them (base64) in its
`x-amz-checksum-*` headers: CRC32/CRC32C -> 4 bytes, CRC64NVME/XXHASH64/XXHASH3 -> 8,
XXHASH128 -> 16, MD5 -> 16, SHA1 -> 20, SHA256 -> 32, SHA512 -> 64.

Checksum types:
- FULL_OBJECT: the algorithm over the whole body.
- COMPOSITE: S3's multipart rule: the algorithm over the concatenated binary digests of the
  parts, base64-encoded, then `-<number of parts>` appended (`"abc=-3"`). An object that was
  not uploaded in parts has no composite form; callers use its full-object checksum (no
  suffix), which is what S3 stores for a single-request upload.

A full-object CRC of a multipart object needs no second pass over its bytes: CRCs combine, so
the CRC of the parts laid end to end follows from each part's CRC and length
(`combined_digest`), which is how S3 derives a FULL_OBJECT checksum of a multipart upload.

Which algorithm allows which type: AWS's Compute checksum guide says both types work "for all
supported checksum algorithms", except CRC64NVME, which is full-object only (S3 never builds a
composite CRC64NVME). Unlike uploads, at rest MD5/SHA*/XXHASH* may be full-object even for
multipart objects, and CRC32/CRC32C may be composite.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Protocol

import xxhash
from awscrt import checksums as crt  # type: ignore[import-untyped]  # awscrt ships no type hints


class ChecksumAlgorithm(StrEnum):
    CRC32 = "CRC32"
    CRC32C = "CRC32C"
    CRC64NVME = "CRC64NVME"
    MD5 = "MD5"
    SHA1 = "SHA1"
    SHA256 = "SHA256"
    SHA512 = "SHA512"
    XXHASH64 = "XXHASH64"
    XXHASH3 = "XXHASH3"
    XXHASH128 = "XXHASH128"


class ChecksumType(StrEnum):
    FULL_OBJECT = "FULL_OBJECT"
    COMPOSITE = "COMPOSITE"


#: Algorithms with no composite form (S3 combines CRC64NVME parts into a full-object value).
FULL_OBJECT_ONLY = frozenset({ChecksumAlgorithm.CRC64NVME})


class Hasher(Protocol):
    """An incremental checksum: feed chunks in order, then read the digest once."""

    def update(self, data: bytes | memoryview) -> None: ...

    def digest(self) -> bytes: ...


#: awscrt's CRC functions: (data, previous_crc) -> crc, so a CRC continues across chunks.
CrcFunction = Callable[[bytes | memoryview, int], int]


class _Crc:
    """A CRC carried across chunks through awscrt's `previous_crc` argument."""

    def __init__(self, function: CrcFunction, width_bytes: int) -> None:
        self._function = function
        self._width_bytes = width_bytes
        self._value = 0

    def update(self, data: bytes | memoryview) -> None:
        self._value = self._function(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(self._width_bytes, "big")


#: CRC widths in bytes (the digest is the CRC value, big-endian).
_CRC32_BYTES = 4
_CRC64_BYTES = 8

_FACTORIES: dict[ChecksumAlgorithm, Callable[[], Hasher]] = {
    ChecksumAlgorithm.CRC32: lambda: _Crc(crt.crc32, _CRC32_BYTES),
    ChecksumAlgorithm.CRC32C: lambda: _Crc(crt.crc32c, _CRC32_BYTES),
    ChecksumAlgorithm.CRC64NVME: lambda: _Crc(crt.crc64nvme, _CRC64_BYTES),
    ChecksumAlgorithm.MD5: hashlib.md5,
    ChecksumAlgorithm.SHA1: hashlib.sha1,
    ChecksumAlgorithm.SHA256: hashlib.sha256,
    ChecksumAlgorithm.SHA512: hashlib.sha512,
    # xxhash's digest() is the canonical big-endian form, the bytes S3 (and botocore) encode.
    ChecksumAlgorithm.XXHASH64: xxhash.xxh64,
    ChecksumAlgorithm.XXHASH3: xxhash.xxh3_64,
    ChecksumAlgorithm.XXHASH128: xxhash.xxh3_128,
}


#: awscrt's CRC combine functions: (CRC of A, CRC of B, length of B in bytes) -> CRC of A then B.
CrcCombine = Callable[[int, int, int], int]

#: The CRCs whose digests combine (awscrt releases before the combine functions have none).
_COMBINERS: dict[ChecksumAlgorithm, tuple[CrcCombine, int]] = {
    algorithm: (function, width)
    for algorithm, name, width in (
        (ChecksumAlgorithm.CRC32, "combine_crc32", _CRC32_BYTES),
        (ChecksumAlgorithm.CRC32C, "combine_crc32c", _CRC32_BYTES),
        (ChecksumAlgorithm.CRC64NVME, "combine_crc64nvme", _CRC64_BYTES),
    )
    if (function := getattr(crt, name, None)) is not None
}


def new_hasher(algorithm: ChecksumAlgorithm) -> Hasher:
    return _FACTORIES[algorithm]()


def combines(algorithm: ChecksumAlgorithm) -> bool:
    """Whether `combined_digest` can join digests of `algorithm` (the CRCs do; hashes do not)."""
    return algorithm in _COMBINERS


def combined_digest(algorithm: ChecksumAlgorithm, blocks: Sequence[tuple[bytes, int]]) -> bytes:
    """The digest of blocks laid end to end, from each block's (digest, length in bytes), in
    order: equal to hashing the joined bytes, without reading them. Only for `combines`."""
    if not blocks:
        raise ValueError("a combined checksum needs at least one block")
    combine, width = _COMBINERS[algorithm]
    value = 0  # the CRC of no bytes, for each of these CRCs
    for digest, length in blocks:
        if len(digest) != width:
            raise ValueError(f"a {algorithm} digest has {width} bytes, not {len(digest)}")
        value = combine(value, int.from_bytes(digest, "big"), length)
    return value.to_bytes(width, "big")


def supports(algorithm: ChecksumAlgorithm, checksum_type: ChecksumType) -> bool:
    return checksum_type is ChecksumType.FULL_OBJECT or algorithm not in FULL_OBJECT_ONLY


def encode(digest: bytes) -> str:
    """The digest as S3 writes it in `x-amz-checksum-*` headers: standard base64."""
    return base64.b64encode(digest).decode("ascii")


def full_object_checksum(algorithm: ChecksumAlgorithm, body: bytes) -> str:
    hasher = new_hasher(algorithm)
    hasher.update(body)
    return encode(hasher.digest())


def composite_checksum(algorithm: ChecksumAlgorithm, part_digests: Sequence[bytes]) -> str:
    """S3's composite value from the parts' binary digests, in part order: `<base64>-<n>`."""
    if algorithm in FULL_OBJECT_ONLY:
        raise ValueError(f"{algorithm} has no composite checksum")
    if not part_digests:
        raise ValueError("a composite checksum needs at least one part")
    hasher = new_hasher(algorithm)
    for digest in part_digests:
        hasher.update(digest)
    return f"{encode(hasher.digest())}-{len(part_digests)}"


def result_message(
    algorithm: ChecksumAlgorithm, checksum_type: ChecksumType, checksum: str, object_size: int
) -> str:
    """The completion report's ResultMessage: compact JSON, one line, stable key order."""
    fields = {
        "checksumAlgorithm": str(algorithm),
        "checksumType": str(checksum_type),
        "checksum": checksum,
        "objectSize": object_size,
    }
    return json.dumps(fields, separators=(",", ":"))
