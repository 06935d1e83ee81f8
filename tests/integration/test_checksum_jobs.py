"""S3ComputeObjectChecksum jobs end to end, on the folder store and on moto's S3 server.

Expected values are computed here independently (hashlib, zlib, xxhash, botocore's CRT
checksums) or read from the server (`head_object(ChecksumMode="ENABLED")`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import xxhash
from botocore import httpchecksum
from test_jobs import create, run

from conftest import Env, read_report
from s3batch.errors import BadRequest

pytestmark = pytest.mark.integration

MiB = 1 << 20
#: S3's minimum size for every part but the last.
PART_BYTES = 5 * MiB


def _crt(cls: Any) -> Callable[[bytes], bytes]:
    def digest(body: bytes) -> bytes:
        checksum = cls()
        checksum.update(body)
        return base64.b64decode(checksum.b64digest())

    return digest


#: Independent references: algorithm -> body -> binary digest.
DIGESTS: dict[str, Callable[[bytes], bytes]] = {
    "CRC32": lambda b: zlib.crc32(b).to_bytes(4, "big"),
    "CRC32C": _crt(httpchecksum.CrtCrc32cChecksum),
    "CRC64NVME": _crt(httpchecksum.CrtCrc64NvmeChecksum),
    "MD5": lambda b: hashlib.md5(b).digest(),
    "SHA1": lambda b: hashlib.sha1(b).digest(),
    "SHA256": lambda b: hashlib.sha256(b).digest(),
    "SHA512": lambda b: hashlib.sha512(b).digest(),
    "XXHASH64": lambda b: xxhash.xxh64(b).digest(),
    "XXHASH3": lambda b: xxhash.xxh3_64(b).digest(),
    "XXHASH128": lambda b: xxhash.xxh3_128(b).digest(),
}

#: Algorithms S3 (and moto) can store at upload time.
SERVER_ALGORITHMS = ["CRC32", "CRC32C", "SHA1", "SHA256", "CRC64NVME"]

BODIES = {"plain.txt": b"123456789", "with space/empty.bin": b"", "bytes.bin": bytes(range(256)) * 41}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def checksum_job(env: Env, bucket: str, keys: list[str], algorithm: str, kind: str = "FULL_OBJECT") -> Any:
    """Run a checksum job; returns (job, {key: report row})."""
    op = {"S3ComputeObjectChecksum": {"ChecksumAlgorithm": algorithm, "ChecksumType": kind}}
    batch, job_id = create(env, bucket, op, [(bucket, k) for k in keys])
    job = run(batch, job_id)
    rows = read_report(env, bucket, job_id)["rows"]
    by_key = {row[1]: row for status in rows.values() for row in status}
    return job, by_key


def message(row: list[str]) -> dict[str, Any]:
    assert row[3:6] == ["succeeded", "200", ""], row
    parsed: dict[str, Any] = json.loads(row[6])
    return parsed


@pytest.mark.parametrize("algorithm", list(DIGESTS))
def test_every_algorithm_matches_an_independent_value(env: Env, bucket_name: str, algorithm: str) -> None:
    env.make_bucket(bucket_name)
    for key, body in BODIES.items():
        env.put(bucket_name, key, body)
    job, rows = checksum_job(env, bucket_name, list(BODIES), algorithm)
    assert job["Status"] == "Complete"
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == len(BODIES)
    for key, body in BODIES.items():
        assert message(rows[key.replace(" ", "+")]) == {
            "checksumAlgorithm": algorithm,
            "checksumType": "FULL_OBJECT",
            "checksum": b64(DIGESTS[algorithm](body)),
            "objectSize": len(body),
        }


@pytest.mark.parametrize("algorithm", SERVER_ALGORITHMS)
def test_matches_the_checksum_the_server_stored(moto_env: Env, bucket_name: str, algorithm: str) -> None:
    env = moto_env
    env.make_bucket(bucket_name)
    body = os.urandom(70_000)
    env.client.put_object(Bucket=bucket_name, Key="obj", Body=body, ChecksumAlgorithm=algorithm)
    head = env.client.head_object(Bucket=bucket_name, Key="obj", ChecksumMode="ENABLED")
    _, rows = checksum_job(env, bucket_name, ["obj"], algorithm)
    assert message(rows["obj"])["checksum"] == head[f"Checksum{algorithm}"] == b64(DIGESTS[algorithm](body))


def _multipart_upload(env: Env, bucket: str, key: str, parts: list[bytes]) -> None:
    client = env.client
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256")["UploadId"]
    done = []
    for number, body in enumerate(parts, start=1):
        part = client.upload_part(
            Bucket=bucket,
            Key=key,
            PartNumber=number,
            UploadId=upload_id,
            Body=body,
            ChecksumAlgorithm="SHA256",
        )
        done.append({"PartNumber": number, "ETag": part["ETag"], "ChecksumSHA256": part["ChecksumSHA256"]})
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
    )


MULTIPART = [os.urandom(PART_BYTES), os.urandom(PART_BYTES), b"the tail"]


def test_multipart_composite_matches_s3(moto_env: Env, bucket_name: str) -> None:
    env = moto_env
    env.make_bucket(bucket_name)
    _multipart_upload(env, bucket_name, "mp.bin", MULTIPART)
    by_hand = b64(hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in MULTIPART)).digest()) + "-3"
    _, rows = checksum_job(env, bucket_name, ["mp.bin"], "SHA256", "COMPOSITE")
    result = message(rows["mp.bin"])
    assert result == {
        "checksumAlgorithm": "SHA256",
        "checksumType": "COMPOSITE",
        "checksum": by_hand,
        "objectSize": sum(map(len, MULTIPART)),
    }
    stored = env.client.head_object(Bucket=bucket_name, Key="mp.bin", ChecksumMode="ENABLED")[
        "ChecksumSHA256"
    ]
    # AWS S3 returns "<base64>-3"; moto 5.2 returns the same base64 without the "-3" suffix.
    assert result["checksum"].removesuffix("-3") == stored.removesuffix("-3")


def test_multipart_full_object_is_the_whole_body(moto_env: Env, bucket_name: str) -> None:
    env = moto_env
    env.make_bucket(bucket_name)
    _multipart_upload(env, bucket_name, "mp.bin", MULTIPART)
    _, rows = checksum_job(env, bucket_name, ["mp.bin"], "MD5")
    assert message(rows["mp.bin"])["checksum"] == b64(hashlib.md5(b"".join(MULTIPART)).digest())


def test_composite_on_a_single_part_object_reports_full_object(env: Env, bucket_name: str) -> None:
    env.make_bucket(bucket_name)
    env.put(bucket_name, "one.txt", b"123456789")
    _, rows = checksum_job(env, bucket_name, ["one.txt"], "CRC32C", "COMPOSITE")
    assert message(rows["one.txt"]) == {
        "checksumAlgorithm": "CRC32C",
        "checksumType": "FULL_OBJECT",
        "checksum": b64((0xE3069283).to_bytes(4, "big")),
        "objectSize": 9,
    }


def test_missing_object_is_a_failed_404_row(env: Env, bucket_name: str) -> None:
    env.make_bucket(bucket_name)
    env.put(bucket_name, "here.txt", b"x")
    job, rows = checksum_job(env, bucket_name, ["here.txt", "gone.txt"], "SHA1")
    assert job["Status"] == "Complete"
    assert job["ProgressSummary"]["NumberOfTasksFailed"] == 1
    assert rows["gone.txt"][3:6] == ["failed", "404", "NoSuchKey"]
    assert message(rows["here.txt"])["checksum"] == b64(hashlib.sha1(b"x").digest())


def test_a_20_mib_object_is_streamed(env: Env, bucket_name: str) -> None:
    env.make_bucket(bucket_name)
    body = os.urandom(20 * MiB + 123)  # not a multiple of the read size
    env.put(bucket_name, "big.bin", body)
    _, rows = checksum_job(env, bucket_name, ["big.bin"], "CRC64NVME")
    assert message(rows["big.bin"]) == {
        "checksumAlgorithm": "CRC64NVME",
        "checksumType": "FULL_OBJECT",
        "checksum": b64(DIGESTS["CRC64NVME"](body)),
        "objectSize": len(body),
    }


def test_crc64nvme_composite_is_refused_at_create_job(local_env: Env, bucket_name: str) -> None:
    local_env.make_bucket(bucket_name)
    op = {"S3ComputeObjectChecksum": {"ChecksumAlgorithm": "CRC64NVME", "ChecksumType": "COMPOSITE"}}
    with pytest.raises(BadRequest, match="only the FULL_OBJECT"):
        create(local_env, bucket_name, op, [(bucket_name, "k")])
