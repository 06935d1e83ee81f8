"""`s3batch diff` and the keep-newest-noncurrent-versions generator filter, end to end on the
folder store and on moto's S3 server: inventories written as AWS writes them, live listings,
jobs that consume the diff's manifests, and a keep-N delete job checked against its dry run."""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
from typing import Any
from urllib.parse import quote

import pytest

from conftest import Env, report_spec
from s3batch.domain.diff import parse_source
from s3batch.domain.versions import NoncurrentPicker, NoncurrentRule
from s3batch.errors import ManifestError
from s3batch.service.diff import DiffRequest, diff
from s3batch.storage.config import open_store
from s3batch.storage.s3.shapes import page_versions

pytestmark = pytest.mark.integration

INVENTORY_FORMAT = "S3InventoryReport_CSV_20161130"
SCHEMA = "Bucket, Key, Size, LastModifiedDate, ETag"
VERSIONED_SCHEMA = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag"
#: Seconds a CLI subprocess may take.
CLI_TIMEOUT_S = 60
#: Keys with characters a CSV manifest must URL-encode.
KEYS = ["same.txt", "edit me.txt", "grow+1.txt", "gone/ключ.txt", "stay/é.bin"]


# -- arranging ----------------------------------------------------------------------------


def current_objects(env: Env, bucket: str) -> list[tuple[str, int, str]]:
    """(key, size, ETag) of every current object, through the backend's own API."""
    if env.root is not None:
        folder = env.root / bucket
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        out = [
            (str(p.relative_to(folder)), p.stat().st_size, hashlib.md5(p.read_bytes()).hexdigest())
            for p in files
        ]
        return sorted(out)
    listed = env.client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return [(o["Key"], o["Size"], o["ETag"].strip('"')) for o in listed]


def gzip_csv(rows: list[list[str]]) -> bytes:
    text = io.StringIO()
    csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return gzip.compress(text.getvalue().encode())


def put_inventory(
    env: Env, inv_bucket: str, source: str, name: str, schema: str, rows: list[list[str]]
) -> str:
    """An inventory report in AWS's layout (rows in reverse key order: AWS promises no order);
    returns its manifest.json as an s3:// location."""
    data = gzip_csv(list(reversed(rows)))
    data_key = f"inv/{source}/cfg/data/{name}.csv.gz"
    env.put(inv_bucket, data_key, data)
    doc = {
        "sourceBucket": source,
        "destinationBucket": f"arn:aws:s3:::{inv_bucket}",
        "version": "2016-11-30",
        "creationTimestamp": "1714521600000",
        "fileFormat": "CSV",
        "fileSchema": schema,
        "files": [{"key": data_key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()}],
    }
    manifest_key = f"inv/{source}/cfg/{name}/manifest.json"
    env.put(inv_bucket, manifest_key, json.dumps(doc).encode())
    return f"s3://{inv_bucket}/{manifest_key}"


def snapshot(env: Env, inv_bucket: str, source: str, name: str) -> str:
    """An inventory of `source`'s current objects as they are now (keys %-encoded, as AWS does)."""
    rows = [
        [source, quote(key), str(size), "2024-05-01T00:00:00.000Z", etag]
        for key, size, etag in current_objects(env, source)
    ]
    return put_inventory(env, inv_bucket, source, name, SCHEMA, rows)


def seed_and_change(env: Env, data: str, inv: str) -> tuple[str, str]:
    """`data` before and after a change (an OLD and a NEW inventory): one object added, one
    removed, one rewritten at the same size, one grown."""
    env.make_bucket(data)
    env.make_bucket(inv)
    for key in KEYS:
        env.put(data, key, f"v1 {key}".encode())
    old = snapshot(env, inv, data, "old")
    env.put(data, "edit me.txt", b"v2 edit me.txt")  # same size, new content
    env.put(data, "grow+1.txt", b"v1 grow+1.txt and more")
    env.put(data, "new/ñ file.txt", b"fresh")
    delete(env, data, "gone/ключ.txt")
    return old, snapshot(env, inv, data, "new")


def delete(env: Env, bucket: str, key: str) -> None:
    if env.root is not None:
        (env.root / bucket / key).unlink()
    else:
        env.client.delete_object(Bucket=bucket, Key=key)


def run_diff(env: Env, old: str, new: str, output: str, prefix: str = "") -> dict[str, Any]:
    request = DiffRequest(parse_source(old, "OLD"), parse_source(new, "NEW"), output, "diffs/run1", prefix)

    async def go() -> dict[str, Any]:
        store = open_store(env.storage)
        try:
            return await diff(store, request)
        finally:
            await store.close()

    return asyncio.run(go())


def manifest_keys(env: Env, manifest: dict[str, Any]) -> list[list[str]]:
    bucket, key = manifest["Location"]["ObjectArn"].split(":::", 1)[1].split("/", 1)
    body = env.get(bucket, key)
    assert body is not None and hashlib.md5(body).hexdigest() == manifest["Location"]["ETag"]
    return list(csv.reader(io.StringIO(body.decode())))


def run_job(env: Env, report_bucket: str, **request: Any) -> dict[str, Any]:
    batch = env.batch()
    job_id = batch.create_job(Report=report_spec(report_bucket), Priority=10, **request)["JobId"]
    batch.run_until_idle()
    job: dict[str, Any] = batch.describe_job(JobId=job_id)["Job"]
    return job


def reason(job: dict[str, Any]) -> str:
    return " ".join(f["FailureCode"] + ": " + f["FailureReason"] for f in job.get("FailureReasons", []))


EXPECTED = {
    "Added": [["new/%C3%B1+file.txt"]],
    "Removed": [["gone/%D0%BA%D0%BB%D1%8E%D1%87.txt"]],
    "Changed": [["edit+me.txt"], ["grow%2B1.txt"]],
}


def check_summary(env: Env, summary: dict[str, Any], data: str) -> None:
    for change, keys in EXPECTED.items():
        assert summary[change]["Objects"] == len(keys), change
        rows = manifest_keys(env, summary[change]["Manifest"])
        assert [r[1:] for r in rows] == keys, change
        assert {r[0] for r in rows} == {data}
        assert summary[change]["Manifest"]["Spec"]["Fields"] == ["Bucket", "Key"]
    assert summary["Changed"]["ByReason"] == {"ETag": 2}
    assert summary["Changed"]["Bytes"] == len(b"v2 edit me.txt") + len(b"v1 grow+1.txt and more")
    assert summary["Changed"]["BytesBefore"] == len(b"v1 edit me.txt") + len(b"v1 grow+1.txt")
    assert summary["Added"]["Bytes"] == len(b"fresh")
    assert summary["Removed"]["Bytes"] == len("v1 gone/ключ.txt".encode())
    assert summary["Unchanged"] == {
        "Objects": 2,
        "Bytes": len(b"v1 same.txt") + len("v1 stay/é.bin".encode()),
    }
    assert summary["ComparedBy"] == ["ETag", "Size"]


# -- diff ---------------------------------------------------------------------------------


def test_diff_of_two_inventories(env: Env, bucket_name: str) -> None:
    data, inv = bucket_name, bucket_name + "-inv"
    old, new = seed_and_change(env, data, inv)
    summary = run_diff(env, old, new, inv)

    check_summary(env, summary, data)
    assert summary["Old"]["Objects"] == summary["New"]["Objects"] == len(KEYS)
    assert summary["Old"]["Kind"] == "inventory" and summary["Old"]["Bucket"] == data
    saved = json.loads(env.get(inv, "diffs/run1/summary.json") or b"{}")
    assert saved == summary


def test_diff_of_an_inventory_and_a_live_listing_and_a_job_on_the_changed_manifest(
    env: Env, bucket_name: str
) -> None:
    data, inv = bucket_name, bucket_name + "-inv"
    old, _ = seed_and_change(env, data, inv)
    summary = run_diff(env, old, f"s3://{data}", inv)

    check_summary(env, summary, data)
    assert summary["New"]["Kind"] == "listing"
    # The changed manifest drives a job as it is.
    op = {"S3PutObjectTagging": {"TagSet": [{"Key": "changed", "Value": "yes"}]}}
    job = run_job(env, inv, Operation=op, Manifest=summary["Changed"]["Manifest"])
    assert job["Status"] == "Complete", reason(job)
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 2
    batch_store = open_store(env.storage)

    async def tags() -> dict[str, dict[str, str]]:
        try:
            return {k: await batch_store.get_tags(data, k) for k in ["edit me.txt", "grow+1.txt", "same.txt"]}
        finally:
            await batch_store.close()

    assert asyncio.run(tags()) == {
        "edit me.txt": {"changed": "yes"},
        "grow+1.txt": {"changed": "yes"},
        "same.txt": {},
    }


def test_diff_limited_to_the_listed_prefix(env: Env, bucket_name: str) -> None:
    data, inv = bucket_name, bucket_name + "-inv"
    old, _ = seed_and_change(env, data, inv)
    # NEW lists stay/ only: keys elsewhere in the whole-bucket inventory are not "removed".
    summary = run_diff(env, old, f"s3://{data}/stay/", inv)
    assert summary["Prefix"] == "stay/"
    assert (summary["Removed"]["Objects"], summary["Added"]["Objects"], summary["Unchanged"]["Objects"]) == (
        0,
        0,
        1,
    )


def test_removed_versions_of_a_versioned_inventory_restore_deleted_objects(
    moto_env: Env, bucket_name: str
) -> None:
    s3 = moto_env.client
    data, inv = bucket_name, bucket_name + "-inv"
    s3.create_bucket(Bucket=data)
    s3.create_bucket(Bucket=inv)
    s3.put_bucket_versioning(Bucket=data, VersioningConfiguration={"Status": "Enabled"})
    rows = []
    for key in ["keep", "lost one"]:
        s3.put_object(Bucket=data, Key=key, Body=b"first")
        head = s3.put_object(Bucket=data, Key=key, Body=f"latest {key}".encode())
        size = len(f"latest {key}")
        rows.append(
            [data, quote(key), head["VersionId"], "true", "false", str(size), "t", head["ETag"].strip('"')]
        )
    old = put_inventory(moto_env, inv, data, "old", VERSIONED_SCHEMA, rows)
    s3.delete_object(Bucket=data, Key="lost one")  # a delete marker: gone from the listing

    summary = run_diff(moto_env, old, f"s3://{data}", inv)
    removed = summary["Removed"]["Manifest"]
    assert removed["Spec"]["Fields"] == ["Bucket", "Key", "VersionId"]
    assert [r[:2] for r in manifest_keys(moto_env, removed)] == [[data, "lost+one"]]
    # Copying the removed versions back restores what was deleted.
    op = {"S3PutObjectCopy": {"TargetResource": f"arn:aws:s3:::{data}"}}
    job = run_job(moto_env, inv, Operation=op, Manifest=removed)
    assert job["Status"] == "Complete", reason(job)
    assert moto_env.get(data, "lost one") == b"latest lost one"


@pytest.mark.parametrize("fmt", ["Parquet", "ORC"])
def test_diff_of_a_columnar_versioned_inventory_and_a_listing(
    local_env: Env, bucket_name: str, fmt: str
) -> None:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.orc as orc  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    data, inv = bucket_name, bucket_name + "-inv"
    local_env.make_bucket(data)
    local_env.make_bucket(inv)
    for key in ["a b", "c+d", "é"]:
        local_env.put(data, key, key.encode())
    records = [
        {"bucket": data, "key": k, "version_id": "null", "is_latest": True, "is_delete_marker": False,
         "size": s, "e_tag": e}
        for k, s, e in current_objects(local_env, data)
    ]  # fmt: skip
    # A noncurrent version and a delete marker: neither is a current object.
    records.append({**records[0], "version_id": "old", "is_latest": False, "e_tag": "0" * 32})
    records.append({**records[1], "key": "deleted", "is_delete_marker": True, "size": None, "e_tag": None})
    local_env.put(data, "c+d", b"rewritten")
    sink = io.BytesIO()
    (pq.write_table if fmt == "Parquet" else orc.write_table)(pa.Table.from_pylist(records), sink)
    body = sink.getvalue()
    data_key = "inv/cfg/data/x." + fmt.lower()
    local_env.put(inv, data_key, body)
    doc = {
        "sourceBucket": data,
        "destinationBucket": f"arn:aws:s3:::{inv}",
        "fileFormat": fmt,
        "fileSchema": "struct<bucket:string,key:string,...>",
        "files": [{"key": data_key, "size": len(body), "MD5checksum": hashlib.md5(body).hexdigest()}],
    }
    local_env.put(inv, "inv/cfg/manifest.json", json.dumps(doc).encode())

    summary = run_diff(local_env, f"s3://{inv}/inv/cfg/manifest.json", f"s3://{data}", inv)
    assert summary["Old"]["Objects"] == 3
    assert (summary["Added"]["Objects"], summary["Removed"]["Objects"]) == (0, 0)
    assert summary["Changed"]["Objects"] == 1 and summary["Unchanged"]["Objects"] == 2
    assert manifest_keys(local_env, summary["Changed"]["Manifest"]) == [[data, "c%2Bd"]]


def test_an_inventory_listing_a_current_key_twice_is_refused(local_env: Env, bucket_name: str) -> None:
    data, inv = bucket_name, bucket_name + "-inv"
    local_env.make_bucket(data)
    local_env.make_bucket(inv)
    rows = [[data, f"k{i}", str(i), "t", "e"] for i in range(3)] + [[data, "k1", "9", "t", "f"]]
    old = put_inventory(local_env, inv, data, "old", SCHEMA, rows)
    with pytest.raises(ManifestError, match=r"OLD \(s3://.*manifest.json\) lists a key twice: 'k1'"):
        run_diff(local_env, old, f"s3://{data}", inv)


def s3batch_cli(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    storage = f"file://{env.root}" if env.root else "s3://"
    proc_env = {**os.environ, "S3BATCH_HOME": str(env.home), "S3BATCH_STORAGE": storage}
    return subprocess.run(
        [sys.executable, "-m", "s3batch", *args],
        capture_output=True, text=True, env=proc_env, timeout=CLI_TIMEOUT_S, check=False,
    )  # fmt: skip


def test_diff_command(env: Env, bucket_name: str) -> None:
    data, inv = bucket_name, bucket_name + "-inv"
    old, new = seed_and_change(env, data, inv)
    out = s3batch_cli(env, "diff", old, new, "--output", f"arn:aws:s3:::{inv}/cli")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    check_summary(env, summary, data)
    assert "Changed:          2 objects" in out.stderr
    assert env.get(inv, "cli/changed.csv") == b"%s,edit+me.txt\n%s,grow%%2B1.txt\n" % (
        data.encode(),
        data.encode(),
    )

    bad = s3batch_cli(env, "diff", "/tmp/x", new, "--output", f"s3://{inv}")
    assert bad.returncode == 2 and "OLD: expected s3://bucket/path" in bad.stderr
    disjoint = s3batch_cli(env, "diff", f"s3://{data}/a/", f"s3://{data}/b/", "--output", f"s3://{inv}")
    assert disjoint.returncode == 2 and "share no keys" in disjoint.stderr
    missing = s3batch_cli(env, "diff", f"s3://{inv}/nope/manifest.json", new, "--output", f"s3://{inv}")
    assert missing.returncode == 1 and "cannot read inventory" in missing.stderr


# -- keep the newest N noncurrent versions ------------------------------------------------


def all_versions(s3: Any, bucket: str) -> list[dict[str, Any]]:
    """Every version and delete marker, grouped by key, newest first (one big page)."""
    page = s3.list_object_versions(Bucket=bucket)
    entries = [{**v, "Marker": False} for v in page.get("Versions", [])]
    entries += [{**m, "Marker": True, "Size": 0} for m in page.get("DeleteMarkers", [])]
    return entries


def history(s3: Any, bucket: str) -> dict[str, list[tuple[str, bool]]]:
    """key → [(version id, is delete marker)], as ListObjectVersions orders them."""
    out: dict[str, list[tuple[str, bool]]] = {}
    for info in page_versions(bucket, s3.list_object_versions(Bucket=bucket)):
        out.setdefault(info.key, []).append((str(info.version_id), info.is_delete_marker))
    return out


def versioned_history(s3: Any, bucket: str) -> dict[str, list[int]]:
    """Writes keys with version sizes that tell versions apart; returns key → sizes oldest first."""
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    plan = {
        "five": [1, 2, 3, 4, 5],
        "dir/two versions": [10, 20],
        "marker latest": [100, 200, 300, -1],  # -1: a delete marker
        "single": [7],
        "marker between": [11, -1, 13, 14],
    }
    for key, sizes in plan.items():
        for size in sizes:
            if size < 0:
                s3.delete_object(Bucket=bucket, Key=key)
            else:
                s3.put_object(Bucket=bucket, Key=key, Body=b"x" * size)
    return plan


def expected_deleted(before: dict[str, list[tuple[str, bool]]], keep: int | None) -> set[tuple[str, str]]:
    """Per key: noncurrent versions (not markers) beyond the `keep` newest (None: all)."""
    out = set()
    for key, entries in before.items():
        noncurrent = [vid for vid, marker in entries[1:] if not marker]
        out |= {(key, vid) for vid in noncurrent[keep or 0 :]}
    return out


@pytest.mark.parametrize(
    ("flt", "keep"),
    [
        ({"NewerNoncurrentVersions": 1}, 1),
        ({"NewerNoncurrentVersions": 2, "NoncurrentDays": 0}, 2),
        ({"NoncurrentDays": 0}, None),
    ],
)
def test_keep_newest_noncurrent_delete_job_matches_its_dry_run(
    moto_env: Env, bucket_name: str, flt: dict[str, Any], keep: int | None
) -> None:
    s3 = moto_env.client
    versioned_history(s3, bucket_name)
    before = history(s3, bucket_name)
    sizes = {(v["Key"], v["VersionId"]): v["Size"] for v in all_versions(s3, bucket_name)}
    doomed = expected_deleted(before, keep)
    assert doomed  # the case deletes something
    gen = {
        "S3JobManifestGenerator": {
            "SourceBucket": f"arn:aws:s3:::{bucket_name}",
            "EnableManifestOutput": False,
            "IncludeVersions": "All",
            "Filter": flt,
        }
    }
    reports = bucket_name + "-reports"  # unversioned, so the job's own writes stay out of the history
    s3.create_bucket(Bucket=reports)
    request = {
        "Operation": {"S3DeleteObject": {}},
        "ManifestGenerator": gen,
        "Report": report_spec(reports),
        "Priority": 10,
    }

    plan = moto_env.batch().dry_run(**request)
    assert plan["TotalNumberOfTasks"] == len(doomed)
    assert plan["TotalBytes"] == sum(sizes[v] for v in doomed)
    assert plan["Extrapolated"] is False and plan["MissingObjects"] == 0

    job = run_job(moto_env, reports, Operation=request["Operation"], ManifestGenerator=gen)
    assert job["Status"] == "Complete", reason(job)
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == len(doomed)
    after = history(s3, bucket_name)
    assert after == {k: [e for e in entries if (k, e[0]) not in doomed] for k, entries in before.items()}
    for key, entries in after.items():
        assert entries[0] == before[key][0]  # the latest (version or marker) stays
        markers = [e for e in before[key] if e[1]]
        assert all(m in entries for m in markers)  # every delete marker stays
        noncurrent = [e for e in entries[1:] if not e[1]]
        expected = [e for e in before[key][1:] if not e[1]][: keep or 0]
        assert noncurrent == expected  # exactly the newest `keep` noncurrent versions stay


def test_version_groups_span_listing_pages_on_moto(moto_env: Env, bucket_name: str) -> None:
    s3 = moto_env.client
    versioned_history(s3, bucket_name)
    pages, params = [], {"Bucket": bucket_name, "MaxKeys": 2}
    for _ in range(50):  # bounded: 12 entries at 2 per page
        page = s3.list_object_versions(**params)
        pages.append(page_versions(bucket_name, page))
        if not page.get("IsTruncated"):
            break
        params = {
            **params,
            "KeyMarker": page["NextKeyMarker"],
            "VersionIdMarker": page["NextVersionIdMarker"],
        }
    paged = [info for page in pages for info in page]
    whole = page_versions(bucket_name, s3.list_object_versions(Bucket=bucket_name))
    assert len(pages) > 5
    # Each key's entries together, and its versions newest first as in one big page. Where a
    # delete marker sits among versions of the same second is not kept (botocore parses
    # Versions and DeleteMarkers into two lists); a marker is never selected and, tied, makes
    # no difference to when its neighbour became noncurrent.
    keys = [i.key for i in paged]
    assert keys == sorted(keys)
    assert sorted((i.key, str(i.version_id)) for i in paged) == sorted(
        (i.key, str(i.version_id)) for i in whole
    )

    def versions_only(listing: list[Any]) -> list[tuple[str, str | None]]:
        return [(i.key, i.version_id) for i in listing if not i.is_delete_marker]

    assert versions_only(paged) == versions_only(whole)

    def picked(listing: list[Any]) -> list[tuple[str, str | None]]:
        picker = NoncurrentPicker(NoncurrentRule(newer_noncurrent_versions=1), whole[0].last_modified)
        out = [v for info in listing for v in picker.feed(info)] + picker.close()
        return [(v.key, v.version_id) for v in out]

    assert picked(paged) == picked(whole) != []


def test_folder_store_has_no_noncurrent_versions_to_select(local_env: Env, bucket_name: str) -> None:
    local_env.make_bucket(bucket_name)
    for key in ["a", "b/c"]:
        local_env.put(bucket_name, key, b"only version")
    gen = {
        "S3JobManifestGenerator": {
            "SourceBucket": f"arn:aws:s3:::{bucket_name}",
            "EnableManifestOutput": False,
            "IncludeVersions": "All",
            "Filter": {"NoncurrentDays": 0},
        }
    }
    job = run_job(local_env, bucket_name, Operation={"S3DeleteObject": {}}, ManifestGenerator=gen)
    # A folder keeps one version per key, always the latest: nothing is selected.
    assert job["Status"] == "Failed" and "ManifestEmpty" in reason(job)
    assert local_env.get(bucket_name, "a") == b"only version"
    assert local_env.get(bucket_name, "b/c") == b"only version"
