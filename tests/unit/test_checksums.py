"""Checksums: known answers for every algorithm, chunking, S3's composite rule, the operation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import zlib
from collections.abc import AsyncIterator, Callable

import pytest
import xxhash
from botocore import httpchecksum
from hypothesis import given
from hypothesis import strategies as st

from s3batch.domain.checksums import (
    ChecksumAlgorithm,
    ChecksumType,
    combined_digest,
    combines,
    composite_checksum,
    encode,
    full_object_checksum,
    new_hasher,
    result_message,
    supports,
)
from s3batch.domain.task import Task
from s3batch.errors import BadRequest, StorageError
from s3batch.operations import checksum as op
from s3batch.operations.base import JobContext, OperationContext
from s3batch.storage.base import Capability
from s3batch.storage.config import LocalConfig

CHECK_INPUT = b"123456789"  # the CRC catalogue's standard check input
#: Published check values (reveng CRC catalogue) for CRC-32C and CRC-64/NVME.
CRC32C_CHECK = 0xE3069283
CRC64NVME_CHECK = 0xAE8B14860A799888


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


#: Independent one-shot references: algorithm -> body -> binary digest.
REFERENCES: dict[ChecksumAlgorithm, Callable[[bytes], bytes]] = {
    ChecksumAlgorithm.CRC32: lambda b: zlib.crc32(b).to_bytes(4, "big"),
    ChecksumAlgorithm.MD5: lambda b: hashlib.md5(b).digest(),
    ChecksumAlgorithm.SHA1: lambda b: hashlib.sha1(b).digest(),
    ChecksumAlgorithm.SHA256: lambda b: hashlib.sha256(b).digest(),
    ChecksumAlgorithm.SHA512: lambda b: hashlib.sha512(b).digest(),
    ChecksumAlgorithm.XXHASH64: lambda b: xxhash.xxh64(b).digest(),
    ChecksumAlgorithm.XXHASH3: lambda b: xxhash.xxh3_64(b).digest(),
    ChecksumAlgorithm.XXHASH128: lambda b: xxhash.xxh3_128(b).digest(),
}

#: botocore's own (CRT-backed) implementations, where it has one.
BOTOCORE = {
    ChecksumAlgorithm.CRC32: httpchecksum.CrtCrc32Checksum,
    ChecksumAlgorithm.CRC32C: httpchecksum.CrtCrc32cChecksum,
    ChecksumAlgorithm.CRC64NVME: httpchecksum.CrtCrc64NvmeChecksum,
    ChecksumAlgorithm.SHA1: httpchecksum.Sha1Checksum,
    ChecksumAlgorithm.SHA256: httpchecksum.Sha256Checksum,
    ChecksumAlgorithm.SHA512: httpchecksum.Sha512Checksum,
    ChecksumAlgorithm.XXHASH64: httpchecksum.CrtXxhash64Checksum,
    ChecksumAlgorithm.XXHASH3: httpchecksum.CrtXxhash3Checksum,
    ChecksumAlgorithm.XXHASH128: httpchecksum.CrtXxhash128Checksum,
}

SAMPLES = [b"", b"a", CHECK_INPUT, bytes(range(256)) * 300]


def reference(algorithm: ChecksumAlgorithm, body: bytes) -> bytes:
    if algorithm is ChecksumAlgorithm.CRC32C or algorithm is ChecksumAlgorithm.CRC64NVME:
        checksum = BOTOCORE[algorithm]()
        checksum.update(body)
        return base64.b64decode(checksum.b64digest())
    return REFERENCES[algorithm](body)


# --- known answers --------------------------------------------------------------------------


def test_crc_check_values_are_the_published_ones() -> None:
    assert full_object_checksum(ChecksumAlgorithm.CRC32C, CHECK_INPUT) == b64(CRC32C_CHECK.to_bytes(4, "big"))
    assert full_object_checksum(ChecksumAlgorithm.CRC64NVME, CHECK_INPUT) == b64(
        CRC64NVME_CHECK.to_bytes(8, "big")
    )
    assert full_object_checksum(ChecksumAlgorithm.CRC32, CHECK_INPUT) == b64((0xCBF43926).to_bytes(4, "big"))


@pytest.mark.parametrize("body", SAMPLES, ids=lambda b: f"{len(b)}B")
@pytest.mark.parametrize("algorithm", list(REFERENCES))
def test_matches_python_references(algorithm: ChecksumAlgorithm, body: bytes) -> None:
    assert full_object_checksum(algorithm, body) == b64(REFERENCES[algorithm](body))


@pytest.mark.parametrize("body", SAMPLES, ids=lambda b: f"{len(b)}B")
@pytest.mark.parametrize("algorithm", list(BOTOCORE))
def test_matches_botocore_base64(algorithm: ChecksumAlgorithm, body: bytes) -> None:
    checksum = BOTOCORE[algorithm]()
    checksum.update(body)
    assert full_object_checksum(algorithm, body) == checksum.b64digest()


def test_md5_known_answer() -> None:
    # RFC 1321 test suite: MD5("abc").
    assert new_hasher_digest(ChecksumAlgorithm.MD5, b"abc").hex() == "900150983cd24fb0d6963f7d28e17f72"


@pytest.mark.parametrize(
    ("algorithm", "size"),
    [
        (ChecksumAlgorithm.CRC32, 4),
        (ChecksumAlgorithm.CRC32C, 4),
        (ChecksumAlgorithm.CRC64NVME, 8),
        (ChecksumAlgorithm.MD5, 16),
        (ChecksumAlgorithm.SHA1, 20),
        (ChecksumAlgorithm.SHA256, 32),
        (ChecksumAlgorithm.SHA512, 64),
        (ChecksumAlgorithm.XXHASH64, 8),
        (ChecksumAlgorithm.XXHASH3, 8),
        (ChecksumAlgorithm.XXHASH128, 16),
    ],
)
def test_digest_sizes(algorithm: ChecksumAlgorithm, size: int) -> None:
    assert len(new_hasher_digest(algorithm, b"x")) == size


def new_hasher_digest(algorithm: ChecksumAlgorithm, body: bytes) -> bytes:
    hasher = new_hasher(algorithm)
    hasher.update(body)
    return hasher.digest()


# --- incremental == one-shot ----------------------------------------------------------------


@given(
    algorithm=st.sampled_from(list(ChecksumAlgorithm)),
    body=st.binary(max_size=4096),
    cuts=st.lists(st.integers(min_value=0, max_value=4096), max_size=8),
)
def test_any_chunking_gives_the_one_shot_digest(
    algorithm: ChecksumAlgorithm, body: bytes, cuts: list[int]
) -> None:
    bounds = [0, *sorted(c % (len(body) + 1) for c in cuts), len(body)]
    hasher = new_hasher(algorithm)
    for start, end in itertools.pairwise(bounds):
        hasher.update(memoryview(body)[start:end])
    assert hasher.digest() == reference(algorithm, body)


# --- composite rule --------------------------------------------------------------------------


def test_composite_of_three_parts_by_hand() -> None:
    parts = [b"first part ", b"second part ", b"third"]
    digests = [hashlib.sha256(p).digest() for p in parts]
    expected = b64(hashlib.sha256(digests[0] + digests[1] + digests[2]).digest()) + "-3"
    assert composite_checksum(ChecksumAlgorithm.SHA256, digests) == expected
    crcs = b"".join(zlib.crc32(p).to_bytes(4, "big") for p in parts)
    expected_crc = b64(zlib.crc32(crcs).to_bytes(4, "big")) + "-3"
    assert composite_checksum(ChecksumAlgorithm.CRC32, [zlib.crc32(p).to_bytes(4, "big") for p in parts]) == (
        expected_crc
    )


def test_composite_rules() -> None:
    assert not supports(ChecksumAlgorithm.CRC64NVME, ChecksumType.COMPOSITE)
    assert supports(ChecksumAlgorithm.CRC64NVME, ChecksumType.FULL_OBJECT)
    others = [a for a in ChecksumAlgorithm if a is not ChecksumAlgorithm.CRC64NVME]
    assert all(supports(a, t) for a in others for t in ChecksumType)
    with pytest.raises(ValueError, match="no composite"):
        composite_checksum(ChecksumAlgorithm.CRC64NVME, [b"\0" * 8])
    with pytest.raises(ValueError, match="at least one part"):
        composite_checksum(ChecksumAlgorithm.SHA1, [])


# --- combining CRCs (a multipart object's full-object CRC from its parts') ---------------------

CRCS = [ChecksumAlgorithm.CRC32, ChecksumAlgorithm.CRC32C, ChecksumAlgorithm.CRC64NVME]


@given(
    algorithm=st.sampled_from(CRCS),
    body=st.binary(max_size=4096),
    cuts=st.lists(st.integers(min_value=0, max_value=4096), max_size=8),
)
def test_combined_part_crcs_are_the_crc_of_the_joined_bytes(
    algorithm: ChecksumAlgorithm, body: bytes, cuts: list[int]
) -> None:
    bounds = [0, *sorted(c % (len(body) + 1) for c in cuts), len(body)]
    blocks = [
        (reference(algorithm, body[start:end]), end - start) for start, end in itertools.pairwise(bounds)
    ]
    assert combined_digest(algorithm, blocks) == reference(algorithm, body)


def test_combining_crcs_of_large_parts_by_hand() -> None:
    parts = [bytes(range(256)) * 4096, b"", b"tail"]  # 1 MiB, an empty part, 4 bytes
    blocks = [(zlib.crc32(p).to_bytes(4, "big"), len(p)) for p in parts]
    assert combined_digest(ChecksumAlgorithm.CRC32, blocks) == zlib.crc32(b"".join(parts)).to_bytes(4, "big")


def test_only_crcs_combine() -> None:
    assert [a for a in ChecksumAlgorithm if combines(a)] == CRCS
    with pytest.raises(KeyError):
        combined_digest(ChecksumAlgorithm.SHA256, [(hashlib.sha256(b"x").digest(), 1)])
    with pytest.raises(ValueError, match="at least one block"):
        combined_digest(ChecksumAlgorithm.CRC32, [])
    with pytest.raises(ValueError, match="4 bytes"):
        combined_digest(ChecksumAlgorithm.CRC32C, [(b"\0" * 8, 1)])


def test_result_message_is_compact_json() -> None:
    message = result_message(
        ChecksumAlgorithm.CRC32C, ChecksumType.FULL_OBJECT, encode(b"\xe3\x06\x92\x83"), 9
    )
    assert (
        message
        == '{"checksumAlgorithm":"CRC32C","checksumType":"FULL_OBJECT","checksum":"4waSgw==","objectSize":9}'
    )


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({}, "ChecksumAlgorithm must be one of"),
        ({"ChecksumAlgorithm": "CRC16"}, "ChecksumAlgorithm must be one of"),
        ({"ChecksumAlgorithm": "SHA256", "ChecksumType": "PARTIAL"}, "ChecksumType must be one of"),
        ({"ChecksumAlgorithm": "CRC64NVME", "ChecksumType": "COMPOSITE"}, "only the FULL_OBJECT"),
        ({"ChecksumAlgorithm": "SHA256", "Extra": 1}, "unknown or unsupported"),
    ],
)
def test_validate_refuses(params: dict[str, object], error: str) -> None:
    with pytest.raises(BadRequest, match=error):
        op.validate(params)


@pytest.mark.parametrize("algorithm", list(ChecksumAlgorithm))
def test_validate_accepts_every_algorithm(algorithm: ChecksumAlgorithm) -> None:
    op.validate({"ChecksumAlgorithm": algorithm.value})
    op.validate({"ChecksumAlgorithm": algorithm.value, "ChecksumType": "FULL_OBJECT"})
    assert op._checksum_type({"ChecksumAlgorithm": algorithm.value}) is ChecksumType.FULL_OBJECT


# --- the operation on a fake store with parts -----------------------------------------------


class PartedStore:
    """Just what the operation reads: a body (served in uneven chunks) and its part sizes."""

    #: It can tell an object's part sizes (object_parts).
    capabilities = frozenset({Capability.PARTS})

    def __init__(self, body: bytes, parts: list[int] | None, chunk: int = 7) -> None:
        self.body, self.parts, self.chunk = body, parts, chunk
        self.chunk_sizes_asked: list[int] = []

    async def object_parts(self, bucket: str, key: str, version_id: str | None = None) -> list[int] | None:
        return self.parts

    async def iter_bytes(
        self, bucket: str, key: str, version_id: str | None = None, start: int = 0, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        self.chunk_sizes_asked.append(chunk_size)
        if key == "missing":
            raise StorageError("NoSuchKey", "The specified key does not exist.", 404)
        for offset in range(start, len(self.body), self.chunk):
            yield self.body[offset : offset + self.chunk]


def run_op(store: PartedStore, params: dict[str, str], key: str = "k") -> dict[str, object] | str:
    ctx = OperationContext(
        job=JobContext(
            job_id="j", account_id="0", region="us-east-1", storage=LocalConfig(root="/nonexistent")
        ),
        store=store,  # type: ignore[arg-type]  # a partial fake: only what the operation calls
    )
    task = Task(seq=0, bucket="b", raw_key=key, key=key)
    result = asyncio.run(op.KIND.create(params, ctx).apply(task))
    if not result.succeeded:
        return f"{result.error_code} {result.http_status} {result.retryable}"
    parsed: dict[str, object] = json.loads(result.message)
    return parsed


def test_operation_composite_splits_at_part_boundaries() -> None:
    parts = [b"A" * 10, b"B" * 15, b"C" * 4]
    store = PartedStore(b"".join(parts), [10, 15, 4])
    digests = b"".join(hashlib.sha1(p).digest() for p in parts)
    assert run_op(store, {"ChecksumAlgorithm": "SHA1", "ChecksumType": "COMPOSITE"}) == {
        "checksumAlgorithm": "SHA1",
        "checksumType": "COMPOSITE",
        "checksum": b64(hashlib.sha1(digests).digest()) + "-3",
        "objectSize": 29,
    }
    assert store.chunk_sizes_asked == [op.READ_CHUNK_BYTES]


def test_operation_composite_on_single_part_object_is_full_object() -> None:
    store = PartedStore(CHECK_INPUT, None)
    assert run_op(store, {"ChecksumAlgorithm": "CRC32C", "ChecksumType": "COMPOSITE"}) == {
        "checksumAlgorithm": "CRC32C",
        "checksumType": "FULL_OBJECT",
        "checksum": b64(CRC32C_CHECK.to_bytes(4, "big")),
        "objectSize": 9,
    }


def test_operation_full_object_ignores_parts_and_hashes_big_chunks_in_threads() -> None:
    body = bytes(range(256)) * (3 * op.THREAD_MIN_BYTES // 256 + 5)  # > 3 MiB, uneven tail
    store = PartedStore(body, [len(body) // 2, len(body) - len(body) // 2], chunk=op.THREAD_MIN_BYTES + 3)
    result = run_op(store, {"ChecksumAlgorithm": "XXHASH128"})
    assert result == {
        "checksumAlgorithm": "XXHASH128",
        "checksumType": "FULL_OBJECT",
        "checksum": b64(xxhash.xxh3_128(body).digest()),
        "objectSize": len(body),
    }


def test_operation_zero_byte_single_part_upload() -> None:
    store = PartedStore(b"", [0])
    expected = b64(hashlib.md5(hashlib.md5(b"").digest()).digest()) + "-1"
    result = run_op(store, {"ChecksumAlgorithm": "MD5", "ChecksumType": "COMPOSITE"})
    assert isinstance(result, dict) and result["checksum"] == expected


@pytest.mark.parametrize("parts", [[10, 10], [10, 30]], ids=["body-longer", "body-shorter"])
def test_operation_parts_not_matching_body_fail_retryably(parts: list[int]) -> None:
    store = PartedStore(b"x" * 25, parts)
    assert (
        run_op(store, {"ChecksumAlgorithm": "CRC32", "ChecksumType": "COMPOSITE"})
        == "InternalError None True"
    )


def test_operation_storage_error_is_a_failed_task() -> None:
    store = PartedStore(b"", None)
    assert run_op(store, {"ChecksumAlgorithm": "SHA256"}, key="missing") == "NoSuchKey 404 False"
