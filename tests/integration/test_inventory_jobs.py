"""Whole jobs whose tasks come from an S3 Inventory report or a ManifestGenerator, on the folder
store and on moto's S3 server. The tests write realistic inventories themselves (quoted gzip
CSV, Parquet, ORC, URL-encoded keys, versions with a delete marker)."""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.orc as orc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest

from conftest import Env, read_report, report_spec
from s3batch.domain.generator import generator_from_json, normalize_generator
from s3batch.domain.objects import ObjectInfo, ReplicationRule
from s3batch.errors import StorageError
from s3batch.service.manifests import write_listing
from s3batch.storage.config import LocalConfig, open_store
from s3batch.storage.memory import MemoryStore

pytestmark = pytest.mark.integration

KEYS = ["plain.txt", "with space.txt", "plus+sign.txt", "ünïcödé/ключ.txt", "deep/er/x.bin"]
INVENTORY_FORMAT = "S3InventoryReport_CSV_20161130"
DATA_PREFIX = "inv/src/cfg/data"
TAG_OP = {"S3PutObjectTagging": {"TagSet": [{"Key": "seen", "Value": "1"}]}}
KMS_KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/0b6e3a2c-1111-2222-3333-444455556666"


def seed(env: Env, bucket: str, keys: list[str]) -> None:
    env.make_bucket(bucket)
    for key in keys:
        env.put(bucket, key, f"body of {key}".encode())


def gzip_csv(rows: list[list[str]]) -> bytes:
    text = io.StringIO()
    csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return gzip.compress(text.getvalue().encode())


def columnar(fmt: str, records: list[dict[str, Any]]) -> bytes:
    table = pa.Table.from_pylist(records)
    sink = io.BytesIO()
    if fmt == "Parquet":
        pq.write_table(table, sink)
    else:
        orc.write_table(table, sink)
    return sink.getvalue()


def put_inventory(
    env: Env, bucket: str, fmt: str, schema: str, data: bytes, md5: str | None = None
) -> dict[str, Any]:
    """Write one data file and its manifest.json in AWS's layout; return the job's Manifest."""
    ext = {"CSV": "csv.gz", "Parquet": "parquet", "ORC": "orc"}[fmt]
    data_key = f"{DATA_PREFIX}/4c2f-a1.{ext}"
    env.put(bucket, data_key, data)
    doc = {
        "sourceBucket": bucket,
        "destinationBucket": f"arn:aws:s3:::{bucket}",
        "version": "2016-11-30",
        "creationTimestamp": "1714521600000",
        "fileFormat": fmt,
        "fileSchema": schema,
        "files": [{"key": data_key, "size": len(data), "MD5checksum": md5 or hashlib.md5(data).hexdigest()}],
    }
    manifest_key = "inv/src/cfg/2024-05-01T00-00Z/manifest.json"
    etag = env.put(bucket, manifest_key, json.dumps(doc).encode())
    return {
        "Spec": {"Format": INVENTORY_FORMAT},
        "Location": {"ObjectArn": f"arn:aws:s3:::{bucket}/{manifest_key}", "ETag": etag},
    }


def run_job(env: Env, bucket: str, operation: dict[str, Any], **source: Any) -> tuple[str, dict[str, Any]]:
    batch = env.batch()
    request = {"Operation": operation, "Report": report_spec(bucket), "Priority": 10, **source}
    job_id = batch.create_job(**request)["JobId"]
    batch.run_until_idle()
    return job_id, batch.describe_job(JobId=job_id)["Job"]


def reason(job: dict[str, Any]) -> str:
    return " ".join(f["FailureCode"] + ": " + f["FailureReason"] for f in job.get("FailureReasons", []))


# -- inventory reports --------------------------------------------------------------------


def test_csv_inventory_drives_a_copy(env: Env, bucket_name: str) -> None:
    seed(env, bucket_name, [*KEYS, "not-listed.txt"])
    env.make_bucket(bucket_name + "-dst")
    # AWS percent-encodes inventory keys (space as %20) and quotes every field.
    rows = [[bucket_name, quote(k), "5", "2024-05-01T00:00:00.000Z", "STANDARD"] for k in KEYS]
    manifest = put_inventory(
        env, bucket_name, "CSV", "Bucket, Key, Size, LastModifiedDate, StorageClass", gzip_csv(rows)
    )
    op = {"S3PutObjectCopy": {"TargetResource": f"arn:aws:s3:::{bucket_name}-dst", "TargetKeyPrefix": "c"}}
    job_id, job = run_job(env, bucket_name, op, Manifest=manifest)

    assert job["Status"] == "Complete", reason(job)
    assert job["Manifest"]["Spec"]["Format"] == INVENTORY_FORMAT
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == len(KEYS)
    for key in KEYS:
        assert env.get(bucket_name + "-dst", f"c/{key}") == f"body of {key}".encode()
    assert env.get(bucket_name + "-dst", "c/not-listed.txt") is None
    report = read_report(env, bucket_name, job_id)
    assert sorted(r[1] for r in report["rows"]["succeeded"]) == sorted(quote(k) for k in KEYS)


@pytest.mark.parametrize("fmt", ["Parquet", "ORC"])
def test_columnar_inventory_drives_a_delete(env: Env, bucket_name: str, fmt: str) -> None:
    seed(env, bucket_name, [*KEYS, "keep.txt"])
    records = [{"bucket": bucket_name, "key": k, "size": 5} for k in KEYS]
    schema = "struct<bucket:string,key:string,size:bigint>"
    manifest = put_inventory(env, bucket_name, fmt, schema, columnar(fmt, records))
    job_id, job = run_job(env, bucket_name, {"S3DeleteObject": {}}, Manifest=manifest)

    assert job["Status"] == "Complete", reason(job)
    assert job["ProgressSummary"]["TotalNumberOfTasks"] == len(KEYS)
    assert all(env.get(bucket_name, k) is None for k in KEYS)
    assert env.get(bucket_name, "keep.txt") == b"body of keep.txt"
    # Plain keys from ORC/Parquet are reported URL-encoded, as a CSV manifest would write them.
    succeeded = {r[1] for r in read_report(env, bucket_name, job_id)["rows"]["succeeded"]}
    assert "with+space.txt" in succeeded and "plus%2Bsign.txt" in succeeded


def test_versioned_inventory_acts_on_listed_versions_and_skips_delete_markers(
    moto_env: Env, bucket_name: str
) -> None:
    s3 = moto_env.client
    s3.create_bucket(Bucket=bucket_name)
    s3.put_bucket_versioning(Bucket=bucket_name, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket_name, Key="doc a.txt", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket_name, Key="doc a.txt", Body=b"two")["VersionId"]
    gone = s3.put_object(Bucket=bucket_name, Key="gone.txt", Body=b"x")["VersionId"]
    marker = s3.delete_object(Bucket=bucket_name, Key="gone.txt")["VersionId"]
    schema = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size"
    rows = [
        [bucket_name, "doc%20a.txt", v2, "true", "false", "3"],
        [bucket_name, "doc%20a.txt", v1, "false", "false", "3"],
        [bucket_name, "gone.txt", marker, "true", "true", ""],
        [bucket_name, "gone.txt", gone, "false", "false", "1"],
    ]
    manifest = put_inventory(moto_env, bucket_name, "CSV", schema, gzip_csv(rows))
    op = {"S3PutObjectTagging": {"TagSet": [{"Key": "seen", "Value": "yes"}]}}
    job_id, job = run_job(moto_env, bucket_name, op, Manifest=manifest)

    assert job["Status"] == "Complete", reason(job)
    assert job["ProgressSummary"]["TotalNumberOfTasks"] == 3  # the delete marker is not a task
    for key, version in [("doc a.txt", v1), ("doc a.txt", v2), ("gone.txt", gone)]:
        tags = s3.get_object_tagging(Bucket=bucket_name, Key=key, VersionId=version)["TagSet"]
        assert tags == [{"Key": "seen", "Value": "yes"}]
    rows_out = read_report(moto_env, bucket_name, job_id)["rows"]["succeeded"]
    assert sorted(r[2] for r in rows_out) == sorted([v1, v2, gone])


@pytest.mark.parametrize(
    ("schema", "md5", "expected"),
    [
        ("Bucket, Key", "0" * 32, "MD5 mismatch"),
        ("Bucket, Size", None, "no Key column"),
    ],
)
def test_bad_inventory_fails_the_job_naming_the_problem(
    env: Env, bucket_name: str, schema: str, md5: str | None, expected: str
) -> None:
    seed(env, bucket_name, ["a.txt"])
    manifest = put_inventory(env, bucket_name, "CSV", schema, gzip_csv([[bucket_name, "a.txt"]]), md5=md5)
    _, job = run_job(env, bucket_name, {"S3DeleteObject": {}}, Manifest=manifest)
    assert job["Status"] == "Failed"
    assert expected in reason(job)
    if md5:
        assert f"{DATA_PREFIX}/4c2f-a1.csv.gz" in reason(job)
    assert env.get(bucket_name, "a.txt") == b"body of a.txt"


def test_inventory_manifest_etag_mismatch(env: Env, bucket_name: str) -> None:
    seed(env, bucket_name, ["a.txt"])
    manifest = put_inventory(env, bucket_name, "CSV", "Bucket, Key", gzip_csv([[bucket_name, "a.txt"]]))
    manifest["Location"]["ETag"] = "0" * 32
    _, job = run_job(env, bucket_name, {"S3DeleteObject": {}}, Manifest=manifest)
    assert job["Status"] == "Failed"
    assert job["FailureReasons"][0]["FailureCode"] == "ManifestETagMismatch"


# -- manifest generator -------------------------------------------------------------------


def generator(bucket: str, flt: dict[str, Any] | None = None, output: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "SourceBucket": f"arn:aws:s3:::{bucket}",
        "EnableManifestOutput": output is not None,
    }
    if flt:
        body["Filter"] = flt
    if output is not None:
        body["ManifestOutputLocation"] = {
            "Bucket": f"arn:aws:s3:::{output}",
            "ManifestFormat": "S3InventoryReport_CSV_20211130",
            "ManifestPrefix": "generated",
        }
    return {"S3JobManifestGenerator": body}


def test_generator_with_key_and_size_filters(env: Env, bucket_name: str) -> None:
    src = bucket_name + "-src"
    env.make_bucket(src)
    sizes = {"logs/a.gz": 10, "logs/b.gz": 11, "logs/c.txt": 11, "logs/d d.gz": 20, "img/e.gz": 11}
    for key, size in sizes.items():
        env.put(src, key, b"x" * size)
    env.make_bucket(bucket_name)
    flt = {
        "KeyNameConstraint": {"MatchAnyPrefix": ["logs/"], "MatchAnySuffix": [".gz"]},
        "ObjectSizeGreaterThanBytes": 10,
        "ObjectSizeLessThanBytes": 20,
    }
    _, job = run_job(env, bucket_name, {"S3DeleteObject": {}}, ManifestGenerator=generator(src, flt))

    assert job["Status"] == "Complete", reason(job)
    assert "Manifest" not in job and job["ManifestGenerator"]["S3JobManifestGenerator"]["Filter"] == flt
    assert job["ProgressSummary"]["TotalNumberOfTasks"] == 1
    assert env.get(src, "logs/b.gz") is None
    assert all(env.get(src, k) is not None for k in sizes if k != "logs/b.gz")


def test_generator_storage_class_filter(moto_env: Env, bucket_name: str) -> None:
    s3 = moto_env.client
    s3.create_bucket(Bucket=bucket_name)
    for i in range(6):
        cls = "STANDARD_IA" if i % 2 else "STANDARD"
        s3.put_object(Bucket=bucket_name, Key=f"p{i}/k", Body=b"x", StorageClass=cls)
    flt = {"MatchAnyStorageClass": ["STANDARD_IA"]}
    job_id, job = run_job(
        moto_env, bucket_name, {"S3DeleteObject": {}}, ManifestGenerator=generator(bucket_name, flt)
    )
    assert job["Status"] == "Complete", reason(job)
    assert sorted(r[1] for r in read_report(moto_env, bucket_name, job_id)["rows"]["succeeded"]) == [
        "p1/k",
        "p3/k",
        "p5/k",
    ]


def test_generated_manifest_is_saved_and_reusable(env: Env, bucket_name: str) -> None:
    keys = [f"d{i % 3}/k {i}.txt" for i in range(9)]
    seed(env, bucket_name, keys)
    out = bucket_name + "-out"
    env.make_bucket(out)
    op = {"S3PutObjectTagging": {"TagSet": [{"Key": "t", "Value": "1"}]}}
    job_id, job = run_job(env, bucket_name, op, ManifestGenerator=generator(bucket_name, output=out))

    assert job["Status"] == "Complete", reason(job)
    desc = job["GeneratedManifestDescriptor"]
    assert desc["Format"] == "S3InventoryReport_CSV_20211130"
    manifest_key = f"generated/job-{job_id}/manifest.json"
    assert desc["Location"]["ObjectArn"] == f"arn:aws:s3:::{out}/{manifest_key}"
    body = env.get(out, manifest_key)
    assert body is not None and hashlib.md5(body).hexdigest() == desc["Location"]["ETag"]
    doc = json.loads(body)
    assert doc["fileFormat"] == "CSV" and doc["fileSchema"] == "Bucket, Key"
    data = env.get(out, doc["files"][0]["key"])
    assert data is not None and hashlib.md5(data).hexdigest() == doc["files"][0]["MD5checksum"]
    rows = list(csv.reader(io.StringIO(gzip.decompress(data).decode())))
    assert rows == [[bucket_name, k.replace(" ", "+")] for k in sorted(keys)]
    assert b'"' in gzip.decompress(data)  # every field quoted, as AWS writes inventories

    # The saved manifest is an inventory report another job can run from.
    again = {"Spec": {"Format": INVENTORY_FORMAT}, "Location": desc["Location"]}
    _, second = run_job(env, bucket_name, {"S3DeleteObject": {}}, Manifest=again)
    assert second["Status"] == "Complete", reason(second)
    assert second["ProgressSummary"]["NumberOfTasksSucceeded"] == len(keys)
    assert all(env.get(bucket_name, k) is None for k in keys)


# -- generator: replication eligibility, manifest encryption, parallel version listing ----


def replication_config(dst: str, status: str = "Enabled") -> dict[str, Any]:
    rule = {
        "ID": "logs",
        "Priority": 1,
        "Status": status,
        "Filter": {"Prefix": "logs/"},
        "DeleteMarkerReplication": {"Status": "Disabled"},
        "Destination": {"Bucket": f"arn:aws:s3:::{dst}"},
    }
    return {"Role": "arn:aws:iam::123456789012:role/replication", "Rules": [rule]}


def generated_rows(env: Env, out: str, job: dict[str, Any]) -> list[list[str]]:
    """The rows of a job's generated manifest (its data file, gunzipped)."""
    key = job["GeneratedManifestDescriptor"]["Location"]["ObjectArn"].split(":::", 1)[1].split("/", 1)[1]
    doc = json.loads(env.get(out, key) or b"{}")
    data = env.get(out, doc["files"][0]["key"])
    assert data is not None
    return list(csv.reader(io.StringIO(gzip.decompress(data).decode())))


@pytest.mark.parametrize(("rule_status", "expected"), [("Enabled", ["logs/a", "logs/b"]), ("Disabled", [])])
def test_generator_eligible_for_replication_on_moto(
    moto_env: Env, bucket_name: str, rule_status: str, expected: list[str]
) -> None:
    s3 = moto_env.client
    s3.create_bucket(Bucket=bucket_name)
    s3.put_bucket_versioning(Bucket=bucket_name, VersioningConfiguration={"Status": "Enabled"})
    # moto (5.x) stores every rule's filter prefix as "": an enabled rule covers every key,
    # so the prefix half of the rule is checked by KeyNameConstraint here and by the
    # memory-store test below.
    s3.put_bucket_replication(
        Bucket=bucket_name, ReplicationConfiguration=replication_config("dst", rule_status)
    )
    for key in ["logs/a", "logs/b", "img/c"]:
        s3.put_object(Bucket=bucket_name, Key=key, Body=b"x")
    out = bucket_name + "-out"
    s3.create_bucket(Bucket=out)
    flt = {"EligibleForReplication": True, "KeyNameConstraint": {"MatchAnyPrefix": ["logs/"]}}
    op = {"S3PutObjectTagging": {"TagSet": [{"Key": "t", "Value": "1"}]}}
    _, job = run_job(moto_env, bucket_name, op, ManifestGenerator=generator(bucket_name, flt, output=out))

    assert [row[1] for row in generated_rows(moto_env, out, job)] == expected
    if expected:
        assert job["Status"] == "Complete", reason(job)
        assert job["ProgressSummary"]["TotalNumberOfTasks"] == len(expected)
    else:  # a disabled rule makes nothing eligible, and an empty manifest fails the job
        assert job["Status"] == "Failed" and "ManifestEmpty" in reason(job)


def test_generator_eligible_for_replication_without_configuration_is_empty(
    env: Env, bucket_name: str
) -> None:
    seed(env, bucket_name, ["a", "b/c"])
    _, job = run_job(
        env,
        bucket_name,
        {"S3DeleteObject": {}},
        ManifestGenerator=generator(bucket_name, {"EligibleForReplication": True}),
    )
    # No configuration: nothing is eligible, and an empty manifest fails the job.
    assert job["Status"] == "Failed" and "ManifestEmpty" in reason(job)
    assert env.get(bucket_name, "a") == b"body of a"
    # false filters nothing (documented): every object is a task.
    _, every = run_job(
        env,
        bucket_name,
        {"S3DeleteObject": {}},
        ManifestGenerator=generator(bucket_name, {"EligibleForReplication": False}),
    )
    assert every["ProgressSummary"]["TotalNumberOfTasks"] == 2


class _ReplicatingStore(MemoryStore):
    """A memory store with one enabled rule on "logs/" whose "*.replica" objects are replicas."""

    async def replication_rules(self, bucket: str) -> list[ReplicationRule]:
        return [ReplicationRule("logs/", "arn:aws:s3:::dst")]

    async def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
        info = await super().head(bucket, key, version_id)
        return replace(info, replication_status="REPLICA" if key.endswith(".replica") else "COMPLETED")


def test_replication_eligibility_rule_prefix_and_replicas(tmp_path: Path) -> None:
    store = _ReplicatingStore()

    async def go() -> int:
        await store.create_bucket("src")
        for key in ["logs/a", "logs/b.replica", "logsx", "img/c", "logs/d/e"]:
            await store.put_bytes("src", key, b"x")
        gen = generator_from_json(normalize_generator(generator("src", {"EligibleForReplication": True})))
        return await write_listing(store, gen, tmp_path / "out.csv", tmp_path)

    assert asyncio.run(go()) == 2
    assert (tmp_path / "out.csv").read_text().splitlines() == ["src,logs/a,", "src,logs/d/e,"]
    # Only objects under the rule's prefix were HEADed (the replica check needs HEAD).
    heads = sorted(call[2] for call in store.calls if call[0] == "head")
    assert heads == ["logs/a", "logs/b.replica", "logs/d/e"]


@pytest.mark.parametrize(
    ("encryption", "sse", "kms_key"),
    [
        ({"SSES3": {}}, "AES256", None),
        ({"SSEKMS": {"KeyId": KMS_KEY_ARN}}, "aws:kms", KMS_KEY_ARN),
    ],
)
def test_generated_manifest_is_encrypted(
    moto_env: Env, bucket_name: str, encryption: dict[str, Any], sse: str, kms_key: str | None
) -> None:
    seed(moto_env, bucket_name, ["a", "b"])
    out = bucket_name + "-out"
    moto_env.make_bucket(out)
    gen = generator(bucket_name, output=out)
    gen["S3JobManifestGenerator"]["ManifestOutputLocation"]["ManifestEncryption"] = encryption
    _, job = run_job(moto_env, bucket_name, TAG_OP, ManifestGenerator=gen)

    assert job["Status"] == "Complete", reason(job)
    manifest_key = job["GeneratedManifestDescriptor"]["Location"]["ObjectArn"].split(f"{out}/", 1)[1]
    data_key = json.loads(moto_env.get(out, manifest_key) or b"{}")["files"][0]["key"]
    for key in (manifest_key, data_key):
        head = moto_env.client.head_object(Bucket=out, Key=key)
        assert head.get("ServerSideEncryption") == sse
        assert head.get("SSEKMSKeyId") == kms_key


def test_folder_store_ignores_sse_but_refuses_other_put_parameters(tmp_path: Path) -> None:
    store = open_store(LocalConfig(root=str(tmp_path)))
    sse = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": KMS_KEY_ARN}

    async def go() -> None:
        await store.create_bucket("b")
        await store.put_bytes("b", "k", b"x", extra=sse)
        with pytest.raises(StorageError) as exc:
            await store.put_bytes("b", "acl", b"x", extra={"ACL": "public-read"})
        assert exc.value.code == "NotImplemented"

    asyncio.run(go())
    assert (tmp_path / "b" / "k").read_bytes() == b"x"
    assert not (tmp_path / "b" / "acl").exists()


def put_version(s3: Any, bucket: str, key: str) -> str:
    return str(s3.put_object(Bucket=bucket, Key=key, Body=b"v")["VersionId"])


def test_all_versions_are_listed_in_parallel_ranges(moto_env: Env, bucket_name: str) -> None:
    s3 = moto_env.client
    s3.create_bucket(Bucket=bucket_name)
    s3.put_bucket_versioning(Bucket=bucket_name, VersioningConfiguration={"Status": "Enabled"})
    # Common prefixes two levels down plus keys between them, so ranges start mid-bucket.
    keys = ["a/x/1", "a/y/2", "a/z", "b/3", "b0", "c/4", "d"]
    versions = {k: [put_version(s3, bucket_name, k) for _ in range(2)] for k in keys}
    s3.delete_object(Bucket=bucket_name, Key="b0")  # a delete marker: skipped
    out = bucket_name + "-out"
    s3.create_bucket(Bucket=out)
    gen = generator(bucket_name, output=out)
    gen["S3JobManifestGenerator"]["IncludeVersions"] = "All"
    _, job = run_job(moto_env, bucket_name, TAG_OP, ManifestGenerator=gen)

    assert job["Status"] == "Complete", reason(job)
    assert job["ProgressSummary"]["TotalNumberOfTasks"] == 2 * len(keys)
    rows = generated_rows(moto_env, out, job)
    assert [(r[1], r[2]) for r in rows] == [(k, v) for k in keys for v in reversed(versions[k])]


@pytest.mark.parametrize("kind", ["local", "moto"])
def test_bounded_listings_and_version_key_marker(
    request: pytest.FixtureRequest, kind: str, bucket_name: str
) -> None:
    env: Env = request.getfixturevalue(f"{kind}_env")
    keys = [f"k{i:02d}" for i in range(30)]
    seed(env, bucket_name, keys)
    store = open_store(env.storage)

    async def go() -> tuple[list[str], list[str]]:
        try:
            bounded = [i.key async for i in store.list_objects(bucket_name, "k", "k03", end_before="k27")]
            after = [i.key async for i in store.list_versions(bucket_name, "k", "k25")]
            return bounded, after
        finally:
            await store.close()

    bounded, after = asyncio.run(go())
    assert bounded == keys[4:27]  # past the first small pages, stopping before the bound
    assert after == keys[26:]
