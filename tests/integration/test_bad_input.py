"""Bad input, table-driven: every case ends in a clear error or a failed task with a reason,
and leaves no partial state (refused requests create no job; jobs that fail in Preparing change
no object).

Manifest and request cases run on the folder store (fast, same runner code as S3); bucket and
manifest-location cases also on moto; LambdaInvoke cases use the handlers in
tests/fixtures/bad_input/handlers/; CLI cases run `python -m s3batch create-job`.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import Env, read_report, report_spec
from s3batch.domain.lambda_contract import MAX_RESULT_MESSAGE_BYTES, TRUNCATION_MARKER
from s3batch.errors import ApiError

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "fixtures" / "bad_input"
HANDLERS = FIXTURES / "handlers"
#: Objects every manifest case can refer to (keys as stored, i.e. decoded).
SEEDED = ["k1.txt", "k2.txt", "100%.txt", "a b.txt", "a,b.txt", "%zz.txt", "key "]
#: A 1,024-character key (the limit) cut into path segments the folder store can hold.
KEY_1024 = ("d" * 99 + "/") * 10 + "x" * 24
#: Seconds a LambdaInvoke handler may run in the hanging-handler case.
FUNCTION_TIMEOUT_S = "2"
#: Seconds one CLI invocation may take.
CLI_TIMEOUT_S = 60


@dataclass(frozen=True)
class ManifestCase:
    """A manifest body ({b} = the bucket) and what must happen to its job."""

    body: bytes
    #: "Failed" (in Preparing, nothing touched) or "Complete".
    status: str
    #: Substring of the FailureReason (Failed) or of a failed row's ErrorCode/ResultMessage.
    reason: str = ""
    #: For Complete jobs: decoded keys that must have been copied.
    copied: tuple[str, ...] = ()
    fields: tuple[str, ...] | None = ("Bucket", "Key")


def _file(name: str) -> bytes:
    return (FIXTURES / "manifests" / name).read_bytes()


MANIFEST_CASES: dict[str, ManifestCase] = {
    # Python's csv (like most readers) keeps a quote inside an unquoted field as a character.
    "stray-quote-in-field": ManifestCase(b'{b},k1"x.txt\n', "Complete", "NoSuchKey"),
    "unterminated-quote": ManifestCase(b'{b},"k1.txt\n{b},k2.txt\n', "Failed", "line 1"),
    "text-after-closing-quote": ManifestCase(b'{b},"k1".txt\n', "Failed", "malformed CSV"),
    "too-few-columns": ManifestCase(b"{b}\n", "Failed", "expected 2 columns"),
    "too-few-columns-on-line-3": ManifestCase(b"{b},k1.txt\n{b},k2.txt\n{b}\n", "Failed", "line 3"),
    "extra-columns-ignored": ManifestCase(b"{b},k1.txt,extra,more\n", "Complete", copied=("k1.txt",)),
    "blank-lines-accepted": ManifestCase(
        b"\n{b},k1.txt\n\n   \n{b},k2.txt\n\n", "Complete", copied=("k1.txt", "k2.txt")
    ),
    "bom-accepted": ManifestCase(b"\xef\xbb\xbf{b},k1.txt\n", "Complete", copied=("k1.txt",)),
    "crlf-accepted": ManifestCase(b"{b},k1.txt\r\n{b},k2.txt\r\n", "Complete", copied=("k1.txt", "k2.txt")),
    "no-final-newline": ManifestCase(b"{b},k1.txt", "Complete", copied=("k1.txt",)),
    "header-row": ManifestCase(b"Bucket,Key\n{b},k1.txt\n", "Failed", "header row"),
    "header-row-lowercase": ManifestCase(b"bucket,key\n{b},k1.txt\n", "Failed", "header row"),
    "header-row-after-bom": ManifestCase(b"\xef\xbb\xbfBucket,Key\n", "Failed", "header row"),
    "non-utf8-latin1": ManifestCase(_file("latin1.csv"), "Failed", "UTF-8"),
    "utf16": ManifestCase(_file("utf16.csv"), "Failed", "UTF-8"),
    "gzipped": ManifestCase(_file("gzipped.csv"), "Failed", "UTF-8"),
    "nul-byte-in-key": ManifestCase(_file("nul.csv"), "Failed", "line 2"),
    "key-1025-characters": ManifestCase(b"{b}," + b"k" * 1025 + b"\n", "Failed", "limit is 1024"),
    "key-1024-characters-accepted": ManifestCase(
        b"{b}," + KEY_1024.encode() + b"\n", "Complete", copied=(KEY_1024,)
    ),
    # unquote_plus leaves a '%' that starts no valid escape as it is.
    "unencoded-percent": ManifestCase(b"{b},100%.txt\n", "Complete", copied=("100%.txt",)),
    "invalid-escape-kept": ManifestCase(b"{b},%zz.txt\n", "Complete", copied=("%zz.txt",)),
    "encoded-percent": ManifestCase(b"{b},100%25.txt\n", "Complete", copied=("100%.txt",)),
    # A raw '+' means a space, as in AWS's URL-encoded manifests.
    "plus-means-space": ManifestCase(b"{b},a+b.txt\n", "Complete", copied=("a b.txt",)),
    "quoted-comma-in-key": ManifestCase(b'{b},"a,b.txt"\n', "Complete", copied=("a,b.txt",)),
    "trailing-space-kept-in-key": ManifestCase(b"{b},key \n", "Complete", copied=("key ",)),
    "tab-in-key": ManifestCase(b"{b},k\t1.txt\n", "Failed", "control character"),
    "escape-char-in-key": ManifestCase(b"{b},k\x1b1.txt\n", "Failed", "control character"),
    "del-char-in-key": ManifestCase(b"{b},k\x7f1.txt\n", "Failed", "control character"),
    "lone-cr-line-ends": ManifestCase(b"{b},k1.txt\r{b},k2.txt\r", "Failed", "line 1"),
    "empty-file": ManifestCase(b"", "Failed", "ManifestEmpty"),
    "only-blank-lines": ManifestCase(b"\n\n  \r\n\n", "Failed", "ManifestEmpty"),
    "only-bom": ManifestCase(b"\xef\xbb\xbf", "Failed", "ManifestEmpty"),
    "empty-bucket": ManifestCase(b",k1.txt\n", "Failed", "empty bucket"),
    "empty-key": ManifestCase(b"{b},\n", "Failed", "empty key"),
    "only-commas": ManifestCase(b",,\n", "Failed", "empty bucket"),
    "slash-in-bucket": ManifestCase(b"{b}/x,k1.txt\n", "Failed", "invalid bucket name"),
    "space-in-bucket": ManifestCase(b"my bucket,k1.txt\n", "Failed", "invalid bucket name"),
    "versions-on-some-rows-only": ManifestCase(
        b"{b},k1.txt,v1\n{b},k2.txt\n", "Failed", "every row or on none", fields=None
    ),
    "versions-missing-on-first-row": ManifestCase(
        b"{b},k1.txt\n{b},k2.txt,v2\n", "Failed", "line 2", fields=None
    ),
    "extremely-long-line": ManifestCase(b"{b}," + b"k" * 5_000_000 + b"\n", "Failed", "line 1"),
    "bad-line-after-10000-good": ManifestCase(b"{b},k1.txt\n" * 10_000 + b"{b}\n", "Failed", "line 10001"),
    "missing-object": ManifestCase(b"{b},k1.txt\n{b},nope.txt\n", "Complete", "NoSuchKey", ("k1.txt",)),
    "missing-bucket-in-row": ManifestCase(
        b"{b},k1.txt\nno-such-bucket-here,k1.txt\n", "Complete", "NoSuchBucket", ("k1.txt",)
    ),
}


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under the folder store (objects and their metadata sidecars), except the
    manifest's own sidecar, which the folder store may write when the manifest is first read."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("bad-manifest.csv")
    }


def spec(env: Env, bucket: str, body: bytes, fields: tuple[str, ...] | None) -> dict[str, Any]:
    manifest = env.raw_manifest(bucket, body, "bad-manifest.csv")
    if fields is None:
        del manifest["Spec"]["Fields"]
    else:
        manifest["Spec"]["Fields"] = list(fields)
    return manifest


def copy_operation(bucket: str) -> dict[str, Any]:
    return {"S3PutObjectCopy": {"TargetResource": f"arn:aws:s3:::{bucket}-dst"}}


@pytest.fixture
def seeded(local_env: Env, bucket_name: str) -> Env:
    local_env.make_bucket(bucket_name)
    local_env.make_bucket(bucket_name + "-dst")
    for key in [*SEEDED, KEY_1024]:
        local_env.put(bucket_name, key, f"body of {key}".encode())
    return local_env


@pytest.mark.parametrize("name", list(MANIFEST_CASES))
def test_manifest_corpus(seeded: Env, bucket_name: str, name: str) -> None:
    case = MANIFEST_CASES[name]
    assert seeded.root is not None
    body = case.body.replace(b"{b}", bucket_name.encode())
    manifest = spec(seeded, bucket_name, body, case.fields)
    before = snapshot(seeded.root)
    batch = seeded.batch()
    job_id = batch.create_job(
        Operation=copy_operation(bucket_name),
        Manifest=manifest,
        Report=report_spec(bucket_name),
        Priority=1,
        ConfirmationRequired=False,
    )["JobId"]
    batch.run_until_idle()
    job = batch.describe_job(JobId=job_id)["Job"]

    assert job["Status"] == case.status, job.get("FailureReasons")
    if case.status == "Failed":
        reasons = " ".join(f"{r['FailureCode']} {r['FailureReason']}" for r in job["FailureReasons"])
        assert case.reason in reasons
        assert snapshot(seeded.root) == before  # nothing copied, no report, no scratch object
        return
    dst = seeded.root / f"{bucket_name}-dst"
    copied = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file())
    assert copied == sorted(case.copied)
    for key in case.copied:
        assert (dst / key).read_bytes() == f"body of {key}".encode()
    failed = read_report(seeded, bucket_name, job_id)["rows"].get("failed", [])
    if case.reason:
        assert failed and all(case.reason in " ".join(r[5:7]) for r in failed)
    else:
        assert failed == []


# -- requests refused at CreateJob: an error, and no job ---------------------------------------

GOOD_TAGGING = {"S3PutObjectTagging": {"TagSet": [{"Key": "k", "Value": "v"}]}}


def _bad_request(change: str) -> dict[str, Any]:
    """A valid request (bucket "B") with one thing wrong, named by `change`."""
    request: dict[str, Any] = {
        "Operation": copy.deepcopy(GOOD_TAGGING),
        "Manifest": {
            "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
            "Location": {"ObjectArn": "arn:aws:s3:::B/m.csv", "ETag": "0" * 32},
        },
        "Report": report_spec("B"),
        "Priority": 10,
    }
    mutate = REQUEST_MUTATIONS[change]
    mutate(request)
    return request


REQUEST_MUTATIONS: dict[str, Any] = {
    "unknown-operation": lambda r: r.update(Operation={"S3Frobnicate": {}}),
    "two-operations": lambda r: r["Operation"].update({"S3DeleteObjectTagging": {}}),
    "no-operation": lambda r: r.update(Operation={}),
    "operation-not-an-object": lambda r: r.update(Operation="S3PutObjectTagging"),
    "tagset-not-a-list": lambda r: r["Operation"]["S3PutObjectTagging"].update(TagSet="k=v"),
    "tag-value-not-a-string": lambda r: r["Operation"]["S3PutObjectTagging"].update(
        TagSet=[{"Key": "k", "Value": 7}]
    ),
    "eleven-tags": lambda r: r["Operation"]["S3PutObjectTagging"].update(
        TagSet=[{"Key": f"k{i}", "Value": "v"} for i in range(11)]
    ),
    "tag-key-129-characters": lambda r: r["Operation"]["S3PutObjectTagging"].update(
        TagSet=[{"Key": "k" * 129, "Value": "v"}]
    ),
    "copy-without-target": lambda r: r.update(Operation={"S3PutObjectCopy": {"TargetKeyPrefix": "x"}}),
    "priority-a-string": lambda r: r.update(Priority="high"),
    "priority-negative": lambda r: r.update(Priority=-1),
    "priority-a-float": lambda r: r.update(Priority=1.5),
    "no-manifest": lambda r: r.pop("Manifest"),
    "unknown-manifest-format": lambda r: r["Manifest"]["Spec"].update(Format="CSV"),
    "unknown-field-name": lambda r: r["Manifest"]["Spec"].update(Fields=["Bucket", "Name"]),
    "fields-without-key": lambda r: r["Manifest"]["Spec"].update(Fields=["Bucket"]),
    "object-arn-not-s3": lambda r: r["Manifest"]["Location"].update(ObjectArn="arn:aws:sqs:::B/m.csv"),
    "object-arn-without-key": lambda r: r["Manifest"]["Location"].update(ObjectArn="arn:aws:s3:::B"),
    "no-report": lambda r: r.pop("Report"),
    "report-without-bucket": lambda r: r["Report"].pop("Bucket"),
    "report-scope-invalid": lambda r: r["Report"].update(ReportScope="SomeTasks"),
    "report-format-invalid": lambda r: r["Report"].update(Format="JSON"),
    "lambda-arn-malformed": lambda r: r.update(Operation={"LambdaInvoke": {"FunctionArn": "not-an-arn"}}),
    "lambda-schema-unknown": lambda r: r.update(
        Operation={
            "LambdaInvoke": {"FunctionArn": "python:bad_handlers:raises", "InvocationSchemaVersion": "3.0"}
        }
    ),
}


@pytest.mark.parametrize("change", list(REQUEST_MUTATIONS))
def test_refused_requests_create_no_job(local_env: Env, change: str) -> None:
    batch = local_env.batch()
    with pytest.raises(ApiError) as caught:
        batch.create_job(**_bad_request(change))
    assert caught.value.code in {"BadRequestException", "InvalidRequestException"}
    assert caught.value.message  # a reason the caller can act on
    assert batch.list_jobs()["Jobs"] == []


# -- the manifest object itself, and buckets, on moto and the folder store -----------------


def test_wrong_manifest_etag_fails_before_touching_anything(env: Env, bucket_name: str) -> None:
    env.make_bucket(bucket_name)
    env.put(bucket_name, "k1.txt", b"one")
    manifest = env.manifest(bucket_name, [(bucket_name, "k1.txt")])
    manifest["Location"]["ETag"] = "0" * 32
    job = _run_tagging(env, bucket_name, manifest)
    assert job["Status"] == "Failed"
    assert job["FailureReasons"][0]["FailureCode"] == "ManifestETagMismatch"
    assert job["ProgressSummary"]["TotalNumberOfTasks"] == 0
    assert _tags(env, bucket_name, "k1.txt") == []


def test_missing_manifest_object_fails_the_job(env: Env, bucket_name: str) -> None:
    env.make_bucket(bucket_name)
    manifest = env.manifest(bucket_name, [(bucket_name, "k1.txt")])
    manifest["Location"]["ObjectArn"] = f"arn:aws:s3:::{bucket_name}/no-such-manifest.csv"
    job = _run_tagging(env, bucket_name, manifest)
    assert job["Status"] == "Failed"
    assert "no-such-manifest.csv" in json.dumps(job["FailureReasons"])


def test_missing_manifest_bucket_fails_the_job(env: Env, bucket_name: str) -> None:
    env.make_bucket(bucket_name)
    manifest = env.manifest(bucket_name, [(bucket_name, "k1.txt")])
    manifest["Location"]["ObjectArn"] = "arn:aws:s3:::no-such-bucket-anywhere/m.csv"
    job = _run_tagging(env, bucket_name, manifest)
    assert job["Status"] == "Failed"
    assert job["FailureReasons"]


def test_rows_on_a_missing_bucket_fail_with_no_such_bucket(moto_env: Env, bucket_name: str) -> None:
    moto_env.make_bucket(bucket_name)
    moto_env.put(bucket_name, "k1.txt", b"one")
    rows = [(bucket_name, "k1.txt"), ("s3batch-no-such-bucket", "k1.txt")]
    batch = moto_env.batch()
    job_id = batch.create_job(
        Operation=copy_operation(bucket_name),
        Manifest=moto_env.manifest(bucket_name, rows),
        Report=report_spec(bucket_name),
        Priority=1,
        ConfirmationRequired=False,
    )["JobId"]
    moto_env.make_bucket(bucket_name + "-dst")
    batch.run_until_idle()
    report = read_report(moto_env, bucket_name, job_id)
    [failed] = report["rows"]["failed"]
    assert failed[0] == "s3batch-no-such-bucket"
    assert failed[3:6] == ["failed", "404", "NoSuchBucket"]
    assert moto_env.get(bucket_name + "-dst", "k1.txt") == b"one"


def test_key_with_control_characters_as_stored_object(env: Env, bucket_name: str) -> None:
    # Encoded in the manifest (%01), a control character is a valid key: the task runs.
    env.make_bucket(bucket_name)
    key = "ctl\x01key.txt"
    env.put(bucket_name, key, b"x")
    job = _run_tagging(env, bucket_name, env.manifest(bucket_name, [(bucket_name, key)]))
    assert job["Status"] == "Complete"
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 1


def _run_tagging(env: Env, bucket: str, manifest: dict[str, Any]) -> dict[str, Any]:
    batch = env.batch()
    job_id = batch.create_job(
        Operation=copy.deepcopy(GOOD_TAGGING),
        Manifest=manifest,
        Report=report_spec(bucket),
        Priority=1,
        ConfirmationRequired=False,
    )["JobId"]
    batch.run_until_idle()
    job: dict[str, Any] = batch.describe_job(JobId=job_id)["Job"]
    return job


def _tags(env: Env, bucket: str, key: str) -> list[dict[str, str]]:
    if env.client is not None:
        return list(env.client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"])
    return []  # the folder store keeps tags in sidecars; the snapshot tests cover it there


# -- LambdaInvoke handlers that misbehave --------------------------------------------------

#: handler → (task status, substring of its ErrorCode + ResultMessage)
HANDLER_CASES: dict[str, tuple[str, str]] = {
    "returns_garbage": ("failed", ""),
    "returns_none": ("failed", ""),
    # Kept, but cut to MAX_RESULT_MESSAGE_BYTES with a marker: the report stays small.
    "returns_huge_string": ("succeeded", TRUNCATION_MARKER),
    "returns_unknown_task_id": ("failed", ""),
    "returns_unknown_result_code": ("failed", ""),
    "returns_no_results": ("failed", ""),
    "returns_unserializable": ("failed", ""),
    "hangs": ("failed", ""),
    "exits": ("failed", ""),
    "raises": ("failed", "handler bug"),
}


@pytest.fixture
def bad_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    # Handlers are imported in worker processes; they find modules through PYTHONPATH like Lambda.
    monkeypatch.syspath_prepend(str(HANDLERS))
    monkeypatch.setenv("PYTHONPATH", str(HANDLERS))
    monkeypatch.setenv("S3BATCH_FUNCTION_WORKERS", "1")
    monkeypatch.setenv("S3BATCH_FUNCTION_TIMEOUT", FUNCTION_TIMEOUT_S)
    monkeypatch.setenv("S3BATCH_MAX_ATTEMPTS", "1")


@pytest.mark.parametrize("handler", list(HANDLER_CASES))
def test_misbehaving_handler_fails_its_task_with_a_reason(
    local_env: Env, bucket_name: str, bad_handlers: None, handler: str
) -> None:
    local_env.make_bucket(bucket_name)
    local_env.put(bucket_name, "k1.txt", b"one")
    batch = local_env.batch()
    job_id = batch.create_job(
        Operation={"LambdaInvoke": {"FunctionArn": f"python:bad_handlers:{handler}"}},
        Manifest=local_env.manifest(bucket_name, [(bucket_name, "k1.txt")]),
        Report=report_spec(bucket_name),
        Priority=1,
        ConfirmationRequired=False,
    )["JobId"]
    batch.run_until_idle()
    job = batch.describe_job(JobId=job_id)["Job"]
    assert job["Status"] == "Complete"
    status, reason = HANDLER_CASES[handler]
    [row] = read_report(local_env, bucket_name, job_id)["rows"][status]
    assert row[3] == status
    assert row[6]  # a message
    assert reason in " ".join(row[5:7])
    if status == "failed":
        assert row[5]  # and an error code
    assert len(row[6].encode()) <= MAX_RESULT_MESSAGE_BYTES  # a huge answer cannot bloat the report


# -- the CLI: bad options exit non-zero with a message, and create nothing -----------------

CLI_CASES: dict[str, tuple[list[str], str]] = {
    "operation-invalid-json": (["--operation", '{"S3PutObjectTagging": {'], "operation"),
    "operation-a-list": (["--operation", "[]"], "operation"),
    "manifest-missing-file": (["--manifest", "file:///no/such/manifest.json"], "manifest"),
    "priority-not-a-number": (["--priority", "high"], "priority"),
    "unknown-operation": (["--operation", '{"S3Frobnicate": {}}'], "S3Frobnicate"),
    "report-shorthand-garbage": (["--report", "Bucket"], "report"),
}


def _cli_args(override: list[str]) -> list[str]:
    options = {
        "--operation": json.dumps(GOOD_TAGGING),
        "--manifest": json.dumps(_bad_request("no-report")["Manifest"]),
        "--report": json.dumps(report_spec("B")),
        "--priority": "10",
    }
    options[override[0]] = override[1]
    return ["create-job", "--no-confirmation-required", *(x for kv in options.items() for x in kv)]


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_cli_refuses_bad_options(tmp_path: Path, name: str) -> None:
    override, expected = CLI_CASES[name]
    home = tmp_path / "cli-home"
    env = {**os.environ, "S3BATCH_HOME": str(home), "S3BATCH_STORAGE": f"file://{tmp_path / 'buckets'}"}
    done = subprocess.run(
        [sys.executable, "-m", "s3batch", *_cli_args(override)],
        capture_output=True,
        text=True,
        env=env,
        timeout=CLI_TIMEOUT_S,
    )
    assert done.returncode != 0
    assert expected.lower() in (done.stderr + done.stdout).lower()
    assert "Traceback" not in done.stderr
    assert not (home / "jobs.sqlite3").exists() or _no_jobs(home)


def _no_jobs(home: Path) -> bool:
    from s3batch.client import S3Batch

    return S3Batch(home=home, storage=f"file://{home}", background=False).list_jobs()["Jobs"] == []
