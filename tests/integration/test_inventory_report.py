"""`s3batch inventory generate` and scheduled inventories: reports written in AWS's layout on
the folder store and on moto's S3 server, read back by s3batch's own inventory reader as job
manifests, byte-compared with a hand-written AWS sample, and run by `s3batch serve`."""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.orc as orc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient
from tests.integration.conftest import Env, read_report, report_spec
from tests.integration.test_api_boto3 import ACCOUNT_A, KEY_A

from s3batch.api.app import create_app
from s3batch.api.auth import KeyRing
from s3batch.cli import cli
from s3batch.domain.inventory import parse_manifest_json
from s3batch.domain.inventory_writer import inventory_config, scheduled_inventory
from s3batch.errors import StorageError
from s3batch.service.inventory_report import InventoryReport, InventoryScheduler, generate_inventory
from s3batch.settings import Settings
from s3batch.storage.config import LocalConfig, open_store
from s3batch.storage.memory import MemoryStore

pytestmark = pytest.mark.integration

SAMPLES = Path(__file__).parent.parent / "fixtures" / "inventory"
KEYS = ["100%.csv", 'comma,and"quote.txt', "deep/er/x.bin", "plain.txt", "plus+sign.txt", "with space.txt",
        "ünïcödé/ключ.txt"]  # fmt: skip
TAG_OP = {"S3PutObjectTagging": {"TagSet": [{"Key": "seen", "Value": "1"}]}}
#: Upper bound of every wait in these tests, in seconds.
WAIT_S = 30.0
POLL_S = 0.05


def seed(env: Env, bucket: str, keys: list[str]) -> None:
    env.make_bucket(bucket)
    for key in keys:
        env.put(bucket, key, f"body of {key}".encode())


def generate(env: Env, **settings: Any) -> InventoryReport:
    max_rows = settings.pop("max_rows_per_file", 1_000_000)
    config = inventory_config(**settings)

    async def go() -> InventoryReport:
        store = open_store(env.storage)
        try:
            return await generate_inventory(store, config, max_rows_per_file=max_rows)
        finally:
            await store.close()

    return asyncio.run(go())


def run_job(env: Env, bucket: str, manifest: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    batch = env.batch()
    job_id = batch.create_job(Operation=TAG_OP, Report=report_spec(bucket), Priority=10, Manifest=manifest)[
        "JobId"
    ]
    batch.run_until_idle()
    return job_id, batch.describe_job(JobId=job_id)["Job"]


def reason(job: dict[str, Any]) -> str:
    return " ".join(f["FailureCode"] + ": " + f["FailureReason"] for f in job.get("FailureReasons", []))


def data_rows(env: Env, report: InventoryReport, fmt: str) -> list[list[Any]]:
    """Every row of every data file, in manifest order (checking each file's size and MD5)."""
    rows: list[list[Any]] = []
    for f in report.files:
        body = env.get(report.bucket, f.key)
        assert body is not None and (len(body), hashlib.md5(body).hexdigest()) == (f.size, f.md5)
        if fmt == "CSV":
            rows += list(csv.reader(io.StringIO(gzip.decompress(body).decode(), newline="")))
        else:
            read = pq.read_table if fmt == "Parquet" else orc.read_table
            rows += [list(r.values()) for r in read(io.BytesIO(body)).to_pylist()]
    return rows


# -- generate, then run a job over the report --------------------------------------------------------


@pytest.mark.parametrize("fmt", ["CSV", "Parquet", "ORC"])
def test_report_in_aws_layout_drives_a_job_over_every_object(env: Env, bucket_name: str, fmt: str) -> None:
    seed(env, bucket_name, KEYS)
    dest = bucket_name + "-inv"
    env.make_bucket(dest)
    report = generate(env, bucket=bucket_name, destination=f"arn:aws:s3:::{dest}/reports", config_id="daily",
                      file_format=fmt, fields=["Size", "ETag"], max_rows_per_file=2)  # fmt: skip

    base = f"reports/{bucket_name}/daily/"
    assert report.manifest_key.startswith(base) and report.manifest_key.endswith("Z/manifest.json")
    manifest = env.get(dest, report.manifest_key)
    assert manifest is not None
    checksum_key = report.manifest_key.replace("manifest.json", "manifest.checksum")
    assert env.get(dest, checksum_key) == hashlib.md5(manifest).hexdigest().encode()
    doc = parse_manifest_json(manifest)
    assert (doc.source_bucket, doc.destination_bucket, doc.file_format.value) == (bucket_name, dest, fmt)
    assert len(doc.files) >= 4 and all(f.key.startswith(base + "data/") for f in doc.files)  # 2 rows a file
    stamp = report.manifest_key.split("/")[-2]  # YYYY-MM-DDTHH-MMZ → dt=YYYY-MM-DD-HH-MM
    symlink = env.get(dest, f"{base}hive/dt={stamp[:10]}-{stamp[11:16]}/symlink.txt")
    assert symlink == "".join(f"s3://{dest}/{f.key}\n" for f in doc.files).encode()
    rows = data_rows(env, report, fmt)
    assert len(rows) == report.rows == len(KEYS)
    if fmt != "CSV":  # ORC/Parquet keys are plain, sizes are numbers
        assert sorted(r[1] for r in rows) == sorted(KEYS)
        assert all(r[2] == len(f"body of {r[1]}".encode()) for r in rows)

    _, job = run_job(env, dest, report.job_manifest())
    assert job["Status"] == "Complete", reason(job)
    assert job["ProgressSummary"]["TotalNumberOfTasks"] == len(KEYS)
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == len(KEYS)


def test_csv_rows_are_byte_for_byte_the_aws_sample(local_env: Env) -> None:
    seed(local_env, "inv-src", KEYS)
    local_env.make_bucket("inv-dest")
    noon = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()
    assert local_env.root is not None
    for key in KEYS:
        os.utime(local_env.root / "inv-src" / key, (noon, noon))
    fields = ["IsMultipartUploaded", "StorageClass", "ETag", "LastModifiedDate", "Size"]  # any order
    report = generate(local_env, bucket="inv-src", destination="inv-dest", config_id="c", fields=fields,
                      max_rows_per_file=3)  # fmt: skip
    written = b"".join(gzip.decompress(local_env.get("inv-dest", f.key) or b"") for f in report.files)
    assert written == (SAMPLES / "aws_current.csv").read_bytes()


@pytest.mark.parametrize("fmt", ["Parquet", "ORC"])
def test_columnar_values_are_typed_and_utc(local_env: Env, fmt: str) -> None:
    seed(local_env, "src", ["a b"])
    local_env.make_bucket("dst")
    noon = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert local_env.root is not None
    os.utime(local_env.root / "src" / "a b", (noon.timestamp(), noon.timestamp()))
    fields = ["Size", "LastModifiedDate", "IsMultipartUploaded", "ReplicationStatus"]
    report = generate(
        local_env, bucket="src", destination="dst", config_id="c", file_format=fmt, fields=fields
    )
    stamp = noon if fmt == "Parquet" else noon.replace(tzinfo=None)  # ORC's `timestamp` has no zone
    assert data_rows(local_env, report, fmt) == [["src", "a b", len(b"body of a b"), stamp, False, None]]


def test_prefix_limits_the_report(local_env: Env) -> None:
    seed(local_env, "src", ["logs/a", "logs/b c", "logsx", "img/d"])
    local_env.make_bucket("dst")
    report = generate(local_env, bucket="src", prefix="logs/", destination="dst", config_id="logs")
    assert [r[1] for r in data_rows(local_env, report, "CSV")] == ["logs/a", "logs/b+c"]


def test_versioned_report_on_s3(moto_env: Env, bucket_name: str) -> None:
    s3 = moto_env.client
    s3.create_bucket(Bucket=bucket_name)
    s3.put_bucket_versioning(Bucket=bucket_name, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket_name, Key="doc a.txt", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket_name, Key="doc a.txt", Body=b"two")["VersionId"]
    gone = s3.put_object(Bucket=bucket_name, Key="gone.txt", Body=b"x")["VersionId"]
    marker = s3.delete_object(Bucket=bucket_name, Key="gone.txt")["VersionId"]
    dest = bucket_name + "-inv"
    s3.create_bucket(Bucket=dest)
    fields = ["Size", "ETag", "IsMultipartUploaded", "EncryptionStatus", "BucketKeyStatus",
              "ObjectLockLegalHoldStatus", "ObjectOwner"]  # fmt: skip
    report = generate(moto_env, bucket=bucket_name, destination=dest, config_id="all", versions="All",
                      fields=fields)  # fmt: skip

    doc = parse_manifest_json(moto_env.get(dest, report.manifest_key) or b"")
    assert doc.file_schema == (
        "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, ETag, IsMultipartUploaded, "
        "EncryptionStatus, ObjectLockLegalHoldStatus, BucketKeyStatus, ObjectOwner"
    )
    head = s3.head_object(Bucket=bucket_name, Key="doc a.txt")
    sse = {"AES256": "SSE-S3", "aws:kms": "SSE-KMS"}.get(head.get("ServerSideEncryption"), "NOT-SSE")
    etag = hashlib.md5(b"two").hexdigest()
    rows = data_rows(moto_env, report, "CSV")
    assert rows == [
        [bucket_name, "doc+a.txt", v2, "true", "false", "3", etag, "false", sse, "Off", "DISABLED", ""],
        [bucket_name, "doc+a.txt", v1, "false", "false", "3", hashlib.md5(b"one").hexdigest(), "false", sse,
         "Off", "DISABLED", ""],
        [bucket_name, "gone.txt", marker, "true", "true", "", "", "", "", "", "", ""],
        [bucket_name, "gone.txt", gone, "false", "false", "1", hashlib.md5(b"x").hexdigest(), "false", sse,
         "Off", "DISABLED", ""],
    ]  # fmt: skip

    job_id, job = run_job(moto_env, dest, report.job_manifest())
    assert job["Status"] == "Complete", reason(job)
    assert job["ProgressSummary"]["TotalNumberOfTasks"] == 3  # the delete marker is not a task
    succeeded = read_report(moto_env, dest, job_id)["rows"]["succeeded"]
    assert sorted(r[2] for r in succeeded) == sorted([v1, v2, gone])


def test_head_fields_are_empty_where_a_folder_store_cannot_say(local_env: Env) -> None:
    seed(local_env, "src", ["a"])
    local_env.make_bucket("dst")
    fields = ["EncryptionStatus", "ReplicationStatus", "BucketKeyStatus", "ObjectLockLegalHoldStatus"]
    report = generate(local_env, bucket="src", destination="dst", config_id="c", fields=fields)
    assert data_rows(local_env, report, "CSV") == [["src", "a", "", "", "", ""]]


# -- upload order, empty buckets, failures ---------------------------------------------------------


def test_data_files_then_manifest_then_checksum_last() -> None:
    store = MemoryStore()
    config = inventory_config(bucket="src", destination="dst/p", config_id="c", file_format="Parquet")

    async def go() -> InventoryReport:
        await store.create_bucket("src")
        await store.create_bucket("dst")
        for i in range(7):
            await store.put_bytes("src", f"d{i % 3}/k{i}", b"x")
        store.calls.clear()
        return await generate_inventory(store, config, max_rows_per_file=2)

    report = asyncio.run(go())
    writes = [(method, key) for method, bucket, key, *_ in store.calls if bucket == "dst"]
    data = [key for method, key in writes if method == "put_file"]
    assert sorted(data) == sorted(f.key for f in report.files) and len(data) == 4
    assert [key.rsplit("/", 1)[-1] for _, key in writes[len(data) :]] == [
        "manifest.json",
        "symlink.txt",
        "manifest.checksum",
    ]


def test_a_failed_head_leaves_its_fields_empty_and_is_counted() -> None:
    store = MemoryStore()
    config = inventory_config(
        bucket="src", destination="dst", config_id="c", fields=["Size", "EncryptionStatus"]
    )

    async def go() -> tuple[InventoryReport, list[list[str]]]:
        await store.create_bucket("src")
        await store.create_bucket("dst")
        for key in ("a", "b", "gone"):
            await store.put_bytes("src", key, b"x")
        store.fail("head", StorageError("AccessDenied", "no", 403), key="b")
        store.fail("head", StorageError("NoSuchKey", "deleted since listed", 404), key="gone")
        report = await generate_inventory(store, config)
        body = await store.get_bytes("dst", report.files[0].key)
        return report, list(csv.reader(io.StringIO(gzip.decompress(body).decode())))

    report, rows = asyncio.run(go())
    assert [r[1:3] for r in rows] == [["a", "1"], ["b", "1"], ["gone", "1"]]
    assert (report.head_failures, report.head_error) == (1, "b: AccessDenied: no")


def test_a_failed_listing_fails_the_report_without_a_manifest() -> None:
    store = MemoryStore()
    config = inventory_config(bucket="src", destination="dst", config_id="c")

    async def go() -> None:
        await store.create_bucket("src")
        await store.create_bucket("dst")
        for i in range(6):
            await store.put_bytes("src", f"d{i % 3}/k{i}", b"x")
        store.fail("list_objects", StorageError("InternalError", "boom", 500), key="d1/")
        with pytest.raises(StorageError, match="InternalError: boom"):
            await generate_inventory(store, config)
        written = [info.key async for info in store.list_objects("dst")]
        assert all("/data/" in key for key in written)  # at most data files: no manifest
        await asyncio.sleep(0.1)  # no listing task left running behind the error

    asyncio.run(go())


@pytest.mark.parametrize("fmt", ["CSV", "Parquet", "ORC"])
def test_empty_bucket_gets_one_empty_data_file(local_env: Env, fmt: str) -> None:
    local_env.make_bucket("src")
    local_env.make_bucket("dst")
    report = generate(
        local_env, bucket="src", destination="dst", config_id="c", file_format=fmt, fields=["Size"]
    )
    assert (report.rows, len(report.files)) == (0, 1)
    assert data_rows(local_env, report, fmt) == []
    _, job = run_job(local_env, "dst", report.job_manifest())
    assert job["Status"] == "Failed" and "ManifestEmpty" in reason(job)


def test_missing_source_bucket_fails_and_writes_no_manifest(local_env: Env) -> None:
    local_env.make_bucket("dst")
    with pytest.raises(StorageError) as exc:
        generate(local_env, bucket="nope", destination="dst", config_id="c")
    assert exc.value.code == "NoSuchBucket"
    assert local_env.root is not None and not any((local_env.root / "dst").rglob("manifest.*"))


# -- the command -------------------------------------------------------------------------------------


def s3batch(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    proc_env = {**os.environ, "S3BATCH_HOME": str(env.home), "S3BATCH_STORAGE": f"file://{env.root}"}
    return subprocess.run(
        [sys.executable, "-m", "s3batch", *args],
        capture_output=True, text=True, env=proc_env, timeout=WAIT_S, check=False,
    )  # fmt: skip


def test_command_prints_a_manifest_create_job_accepts(local_env: Env) -> None:
    seed(local_env, "src", KEYS)
    local_env.make_bucket("dst")
    out = s3batch(local_env, "inventory", "generate", "--bucket", "src", "--destination",
                  "arn:aws:s3:::dst/inv", "--id", "cli", "--format", "parquet", "--fields", "Size, ETag",
                  "--max-rows-per-file", "3")  # fmt: skip
    assert out.returncode == 0, out.stderr
    manifest = json.loads(out.stdout)
    assert manifest["Location"]["ObjectArn"].startswith("arn:aws:s3:::dst/inv/src/cli/")
    assert f"{len(KEYS)} rows in " in out.stderr

    created = s3batch(local_env, "create-job", "--account-id", "123456789012",
                      "--no-confirmation-required", "--operation", json.dumps(TAG_OP), "--manifest",
                      out.stdout, "--priority", "1", "--report", json.dumps(report_spec("dst")),
                      "--role-arn", "arn:aws:iam::123456789012:role/batch")  # fmt: skip
    assert created.returncode == 0, created.stderr
    job_id = json.loads(created.stdout)["JobId"]
    job = wait_for_job(local_env, job_id)
    assert job["Status"] == "Complete", reason(job)
    assert job["ProgressSummary"]["TotalNumberOfTasks"] == len(KEYS)


def wait_for_job(env: Env, job_id: str) -> dict[str, Any]:
    batch = env.batch()
    deadline = time.monotonic() + WAIT_S
    while True:
        job: dict[str, Any] = batch.describe_job(JobId=job_id)["Job"]
        if job["Status"] in {"Complete", "Failed"} or time.monotonic() > deadline:
            return job
        batch.run_until_idle()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fields", "Size,Colour"], "unknown field 'Colour'"),
        (["--format", "XML"], "format: 'XML' is not one of CSV, ORC, Parquet"),
        (["--destination", "arn:aws:sqs:::q"], "destination: expected"),
    ],
)
def test_command_names_a_bad_option(local_env: Env, args: list[str], message: str) -> None:
    base = {"--bucket": "src", "--destination": "arn:aws:s3:::dst", "--id": "x"}
    base.update(dict(zip(args[::2], args[1::2], strict=True)))
    out = CliRunner().invoke(cli, ["inventory", "generate", *[a for kv in base.items() for a in kv]])
    assert out.exit_code == 2 and message in out.output


# -- schedules in `s3batch serve` ----------------------------------------------------------------------


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)


def test_scheduler_repeats_reports_and_survives_a_failing_one(
    local_env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    seed(local_env, "src", ["a", "b"])
    local_env.make_bucket("dst")
    every = 0.2 / 3600  # hours: a report every 0.2 s
    good = scheduled_inventory(
        {"bucket": "src", "destination": "dst", "id": "ok", "interval_hours": every}, "t"
    )
    bad = scheduled_inventory(
        {"bucket": "missing", "destination": "dst", "id": "bad", "interval_hours": every}, "t"
    )
    scheduler = InventoryScheduler([good, bad], LocalConfig(root=str(local_env.root)))

    async def go() -> None:
        scheduler.start()
        deadline = time.monotonic() + WAIT_S
        while scheduler.completed.get("src/ok", 0) < 2 or scheduler.failed.get("missing/bad", 0) < 2:
            assert time.monotonic() < deadline, (scheduler.completed, scheduler.failed)
            await asyncio.sleep(POLL_S)
        started = time.monotonic()
        await scheduler.stop()
        assert time.monotonic() - started < 5

    with caplog.at_level(logging.ERROR, logger="s3batch.service.inventory_report"):
        asyncio.run(go())
    assert "inventory missing/bad failed" in caplog.text and "NoSuchBucket" in caplog.text
    assert local_env.root is not None and list(
        (local_env.root / "dst" / "src" / "ok").rglob("manifest.checksum")
    )


def test_serve_writes_scheduled_inventories(local_env: Env) -> None:
    seed(local_env, "src", ["a", "b c"])
    local_env.make_bucket("dst")
    local_env.home.mkdir(parents=True, exist_ok=True)
    (local_env.home / "server.toml").write_text(
        '[[inventories]]\nbucket = "src"\ndestination = "arn:aws:s3:::dst/inv"\nid = "nightly"\n'
        'format = "ORC"\nfields = ["Size"]\ninterval_hours = 24\n',
        encoding="utf-8",
    )
    app = create_app(
        Settings(home=local_env.home), keys=KeyRing([KEY_A]), storage=local_env.storage, run_jobs=False
    )
    assert local_env.root is not None
    folder = local_env.root / "dst" / "inv" / "src" / "nightly"
    with TestClient(app):
        wait_until(lambda: bool(list(folder.rglob("manifest.checksum"))), "the scheduled report")
    (checksum,) = folder.rglob("manifest.checksum")
    doc = parse_manifest_json((checksum.parent / "manifest.json").read_bytes())
    assert (
        doc.file_format.value == "ORC" and doc.file_schema == "struct<bucket:string,key:string,size:bigint>"
    )


def test_serve_refuses_a_bad_inventory_schedule(local_env: Env) -> None:
    local_env.home.mkdir(parents=True, exist_ok=True)
    (local_env.home / "server.toml").write_text(
        '[[inventories]]\nbucket = "src"\ndestination = "dst"\nid = "x"\ninterval_hours = -1\n',
        encoding="utf-8",
    )
    env = {
        "S3BATCH_HOME": str(local_env.home),
        "S3BATCH_ACCESS_KEYS": f"{KEY_A.access_key}:{KEY_A.secret_key}:{ACCOUNT_A}",
    }
    out = CliRunner().invoke(cli, ["serve"], env=env)
    assert out.exit_code == 1
    assert "[[inventories]] #1: interval_hours must be a number of hours above 0" in out.output
