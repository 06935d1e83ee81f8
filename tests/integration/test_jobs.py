"""Jobs end to end through the Python API, on the folder store and on moto's S3 server."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import Env, read_report, report_spec
from s3batch.errors import BadRequest, IdempotencyError, JobStatusError, NotFound

pytestmark = pytest.mark.integration

KEYS = ["plain.txt", "with space.txt", "plus+sign.txt", "100%.txt", "ünïcödé/ключ.txt"]


def seed(env: Env, bucket: str, keys: list[str] = KEYS) -> None:
    env.make_bucket(bucket)
    for key in keys:
        env.put(bucket, key, f"body of {key}".encode())


def create(
    env: Env, bucket: str, operation: dict[str, Any], rows: list[tuple[str, str]], **extra: Any
) -> tuple[Any, str]:
    batch = env.batch()
    request = {
        "Operation": operation,
        "Manifest": env.manifest(bucket, rows),
        "Report": report_spec(bucket),
        "Priority": 10,
        **extra,
    }
    return batch, batch.create_job(**request)["JobId"]


def run(batch: Any, job_id: str) -> dict[str, Any]:
    batch.run_until_idle()
    return batch.describe_job(JobId=job_id)["Job"]


def test_copy_with_awkward_keys_and_a_missing_object(env: Env, bucket_name: str) -> None:
    seed(env, bucket_name)
    env.make_bucket(bucket_name + "-dst")
    rows = [(bucket_name, k) for k in [*KEYS, "missing.txt"]]
    op = {
        "S3PutObjectCopy": {
            "TargetResource": f"arn:aws:s3:::{bucket_name}-dst",
            "TargetKeyPrefix": "copied",
        }
    }
    batch, job_id = create(env, bucket_name, op, rows)
    job = run(batch, job_id)

    assert job["Status"] == "Complete"
    assert job["ProgressSummary"]["TotalNumberOfTasks"] == 6
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 5
    assert job["ProgressSummary"]["NumberOfTasksFailed"] == 1
    for key in KEYS:
        assert env.get(bucket_name + "-dst", f"copied/{key}") == f"body of {key}".encode()
    report = read_report(env, bucket_name, job_id)
    [failed] = report["rows"]["failed"]
    assert failed[:6] == [bucket_name, "missing.txt", "", "failed", "404", "NoSuchKey"]
    # Keys in the report stay as written in the manifest: URL-encoded.
    assert {r[1] for r in report["rows"]["succeeded"]} == {
        "plain.txt", "with+space.txt", "plus%2Bsign.txt", "100%25.txt",
        "%C3%BCn%C3%AFc%C3%B6d%C3%A9/%D0%BA%D0%BB%D1%8E%D1%87.txt",
    }  # fmt: skip
    assert all(
        r[3:6] == ["succeeded", "200", ""] and r[6] == "Successful" for r in report["rows"]["succeeded"]
    )


def test_delete_objects_in_batches(env: Env, bucket_name: str) -> None:
    keys = [f"d/{i:04d} x.bin" for i in range(30)]
    seed(env, bucket_name, keys)
    batch, job_id = create(env, bucket_name, {"S3DeleteObject": {}}, [(bucket_name, k) for k in keys])
    job = run(batch, job_id)
    assert job["Status"] == "Complete"
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 30
    assert all(env.get(bucket_name, k) is None for k in keys)
    assert env.get(bucket_name, "manifest.csv") is not None


def test_failed_tasks_only_report_and_report_layout(env: Env, bucket_name: str) -> None:
    seed(env, bucket_name, ["a.txt"])
    rows = [(bucket_name, "a.txt"), (bucket_name, "gone-1"), (bucket_name, "gone-2")]
    op = {
        "S3PutObjectCopy": {
            "TargetResource": f"arn:aws:s3:::{bucket_name}",
            "TargetKeyPrefix": "c/",
        }
    }
    batch, job_id = create(env, bucket_name, op, rows, Report=report_spec(bucket_name, "FailedTasksOnly"))
    assert run(batch, job_id)["Status"] == "Complete"
    report = read_report(env, bucket_name, job_id)
    assert list(report["rows"]) == ["failed"]
    assert sorted(r[1] for r in report["rows"]["failed"]) == ["gone-1", "gone-2"]
    manifest = report["manifest"]
    assert manifest["Format"] == "Report_CSV_20180820"
    assert manifest["Results"][0]["Bucket"] == bucket_name
    assert manifest["Results"][0]["Key"].startswith(f"reports/job-{job_id}/results/")
    assert len(manifest["Results"][0]["Key"].rsplit("/", 1)[1]) == len("x" * 40 + ".csv")


def test_malformed_manifest_fails_the_job_naming_the_line(env: Env, bucket_name: str) -> None:
    seed(env, bucket_name, ["a.txt"])
    batch = env.batch()
    manifest = env.raw_manifest(bucket_name, f"{bucket_name},a.txt\n{bucket_name}\n".encode())
    job_id = batch.create_job(
        Operation={"S3DeleteObjectTagging": {}},
        Manifest=manifest,
        Report=report_spec(bucket_name),
        Priority=1,
    )["JobId"]
    job = run(batch, job_id)
    assert job["Status"] == "Failed"
    assert "line 2" in job["FailureReasons"][0]["FailureReason"]
    assert env.get(bucket_name, "a.txt") is not None  # nothing was touched


def test_etag_mismatch_fails_the_job(env: Env, bucket_name: str) -> None:
    seed(env, bucket_name, ["a.txt"])
    batch = env.batch()
    manifest = env.manifest(bucket_name, [(bucket_name, "a.txt")])
    manifest["Location"]["ETag"] = "0" * 32
    job_id = batch.create_job(
        Operation={"S3DeleteObject": {}},
        Manifest=manifest,
        Report=report_spec(bucket_name),
        Priority=1,
    )["JobId"]
    job = run(batch, job_id)
    assert job["Status"] == "Failed"
    assert job["FailureReasons"][0]["FailureCode"] == "ManifestETagMismatch"
    assert env.get(bucket_name, "a.txt") is not None
    assert "TerminationDate" in job


def test_failure_threshold_fails_the_job_and_still_writes_the_report(local_env: Env) -> None:
    env, bucket = local_env, "thresh"
    env.make_bucket(bucket)
    rows = [(bucket, f"missing-{i}") for i in range(1500)]
    op = {"S3PutObjectCopy": {"TargetResource": "arn:aws:s3:::thresh", "TargetKeyPrefix": "x"}}
    batch, job_id = create(env, bucket, op, rows)
    job = run(batch, job_id)
    assert job["Status"] == "Failed"
    assert job["FailureReasons"][0]["FailureCode"] == "TaskFailureThresholdExceeded"
    done = job["ProgressSummary"]["NumberOfTasksFailed"]
    assert 1000 <= done < 1500
    report = read_report(env, bucket, job_id)
    assert len(report["rows"]["failed"]) == done  # every task that ran, exactly once


def test_idempotent_create(env: Env, bucket_name: str) -> None:
    seed(env, bucket_name, ["a.txt"])
    batch = env.batch()
    request = {
        "Operation": {"S3PutObjectTagging": {"TagSet": [{"Key": "k", "Value": "v"}]}},
        "Manifest": env.manifest(bucket_name, [(bucket_name, "a.txt")]),
        "Report": {"Enabled": False},
        "Priority": 5,
        "ClientRequestToken": "token-1",
    }
    first = batch.create_job(**request)["JobId"]
    assert batch.create_job(**request)["JobId"] == first
    with pytest.raises(IdempotencyError):
        batch.create_job(**{**request, "Priority": 6})


def test_confirmation_required_waits_in_suspended(env: Env, bucket_name: str) -> None:
    seed(env, bucket_name, ["a.txt"])
    batch, job_id = create(
        env,
        bucket_name,
        {"S3DeleteObject": {}},
        [(bucket_name, "a.txt")],
        ConfirmationRequired=True,
    )
    job = run(batch, job_id)
    assert job["Status"] == "Suspended"
    assert "SuspendedDate" in job and job["SuspendedCause"]
    assert env.get(bucket_name, "a.txt") is not None
    with pytest.raises(JobStatusError):
        batch.update_job_status(JobId=job_id, RequestedJobStatus="Complete")
    confirmed = batch.update_job_status(JobId=job_id, RequestedJobStatus="Ready", StatusUpdateReason="go")
    assert confirmed == {"JobId": job_id, "Status": "Ready", "StatusUpdateReason": "go"}
    job = run(batch, job_id)
    assert job["Status"] == "Complete"
    assert env.get(bucket_name, "a.txt") is None
    with pytest.raises(JobStatusError):
        batch.update_job_status(JobId=job_id, RequestedJobStatus="Cancelled")


def test_cancel_before_start_and_unknown_job(local_env: Env) -> None:
    seed(local_env, "b", ["a.txt"])
    batch, job_id = create(
        local_env, "b", {"S3DeleteObject": {}}, [("b", "a.txt")], ConfirmationRequired=True
    )
    assert batch.update_job_status(JobId=job_id, RequestedJobStatus="Cancelled")["Status"] == "Cancelled"
    job = run(batch, job_id)
    assert job["Status"] == "Cancelled"
    assert local_env.get("b", "a.txt") is not None
    assert local_env.report_files("b", "reports", job_id) == {}  # no task ran: no report
    with pytest.raises(NotFound):
        batch.describe_job(JobId="no-such-job")


def test_higher_priority_runs_first(local_env: Env) -> None:
    seed(local_env, "b", ["a.txt"])
    low_batch, low = create(local_env, "b", {"S3DeleteObjectTagging": {}}, [("b", "a.txt")], Priority=1)
    _, high = create(local_env, "b", {"S3DeleteObjectTagging": {}}, [("b", "a.txt")], Priority=100)
    low_batch.run_until_idle()
    jobs = {j: low_batch.describe_job(JobId=j)["Job"] for j in (low, high)}
    assert jobs[high]["TerminationDate"] < jobs[low]["TerminationDate"]
    assert low_batch.update_job_priority(JobId=low, Priority=7) == {"JobId": low, "Priority": 7}


def test_list_jobs_paginates_and_filters(local_env: Env) -> None:
    seed(local_env, "b", ["a.txt"])
    ids = [create(local_env, "b", {"S3DeleteObjectTagging": {}}, [("b", "a.txt")])[1] for _ in range(3)]
    batch = local_env.batch()
    page = batch.list_jobs(MaxResults=2)
    assert len(page["Jobs"]) == 2 and "NextToken" in page
    rest = batch.list_jobs(MaxResults=2, NextToken=page["NextToken"])
    assert len(rest["Jobs"]) == 1 and "NextToken" not in rest
    seen = [j["JobId"] for j in page["Jobs"] + rest["Jobs"]]
    assert sorted(seen) == sorted(ids)
    assert page["Jobs"][0]["Operation"] == "S3DeleteObjectTagging"
    assert batch.list_jobs(JobStatuses=["Complete"])["Jobs"] == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"Operation": {"S3Nope": {}}}, "unknown operation"),
        ({"Priority": -1}, "Priority"),
        ({"Report": {"Enabled": True}}, "Report.Bucket"),
        ({"Operation": {"S3PutObjectCopy": {}}}, "TargetResource"),
        ({"Operation": {"S3PutObjectTagging": {"TagSet": "x"}}}, "TagSet"),
        ({"Tags": [{"Key": f"k{i}", "Value": "v"} for i in range(51)]}, "at most 50"),
    ],
)
def test_bad_requests_are_refused_before_any_job_exists(
    local_env: Env, change: dict[str, Any], message: str
) -> None:
    seed(local_env, "b", ["a.txt"])
    batch = local_env.batch()
    request = {
        "Operation": {"S3DeleteObject": {}},
        "Manifest": local_env.manifest("b", [("b", "a.txt")]),
        "Report": {"Enabled": False},
        "Priority": 1,
        **change,
    }
    with pytest.raises(Exception, match=message) as err:
        batch.create_job(**request)
    assert isinstance(err.value, BadRequest) or type(err.value).__name__ == "TooManyTags"
    assert batch.list_jobs()["Jobs"] == []


def test_process_engine_runs_the_same_job_unchanged(local_env: Env) -> None:
    from dataclasses import replace

    from s3batch.client import S3Batch
    from s3batch.settings import Settings

    keys = [f"p/{i:03d}.txt" for i in range(450)]
    seed(local_env, "b", keys)
    settings = replace(Settings.from_env(), home=local_env.home, engine="process", processes=2)
    batch = S3Batch(settings=settings, storage=f"file://{local_env.root}", background=False)
    op = {"S3PutObjectCopy": {"TargetResource": "arn:aws:s3:::b", "TargetKeyPrefix": "out"}}
    job_id = batch.create_job(
        Operation=op,
        Manifest=local_env.manifest("b", [("b", k) for k in keys]),
        Report=report_spec("b"),
        Priority=1,
    )["JobId"]
    job = run(batch, job_id)
    assert job["Status"] == "Complete"
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == len(keys)
    assert all(local_env.get("b", f"out/{k}") == f"body of {k}".encode() for k in keys)
    assert len(read_report(local_env, "b", job_id)["rows"]["succeeded"]) == len(keys)


def test_job_tagging(local_env: Env) -> None:
    from s3batch.errors import TooManyTags

    seed(local_env, "b", ["a.txt"])
    batch, job_id = create(
        local_env,
        "b",
        {"S3DeleteObjectTagging": {}},
        [("b", "a.txt")],
        Tags=[{"Key": "team", "Value": "data"}],
    )
    assert batch.get_job_tagging(JobId=job_id) == {"Tags": [{"Key": "team", "Value": "data"}]}
    batch.put_job_tagging(JobId=job_id, Tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": ""}])
    assert batch.get_job_tagging(JobId=job_id)["Tags"] == [
        {"Key": "a", "Value": "1"},
        {"Key": "b", "Value": ""},
    ]
    with pytest.raises(TooManyTags):
        batch.put_job_tagging(JobId=job_id, Tags=[{"Key": f"k{i}", "Value": "v"} for i in range(51)])
    with pytest.raises(BadRequest):
        batch.put_job_tagging(JobId=job_id, Tags=[{"Key": "dup", "Value": "1"}, {"Key": "dup", "Value": "2"}])
    assert len(batch.get_job_tagging(JobId=job_id)["Tags"]) == 2  # refused puts changed nothing
    batch.delete_job_tagging(JobId=job_id)
    assert batch.get_job_tagging(JobId=job_id) == {"Tags": []}
    with pytest.raises(NotFound):
        batch.get_job_tagging(JobId="nope")


def test_finished_jobs_expire_and_unconfirmed_jobs_fail(
    local_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    seed(local_env, "b", ["a.txt"])
    batch, done = create(local_env, "b", {"S3DeleteObjectTagging": {}}, [("b", "a.txt")])
    _, waiting = create(
        local_env, "b", {"S3DeleteObjectTagging": {}}, [("b", "a.txt")], ConfirmationRequired=True
    )
    assert run(batch, done)["Status"] == "Complete"
    assert batch.describe_job(JobId=waiting)["Job"]["Status"] == "Suspended"

    # One second of retention and confirmation time, in days.
    monkeypatch.setenv("S3BATCH_JOB_RETENTION_DAYS", str(1 / 86_400))
    monkeypatch.setenv("S3BATCH_SUSPENDED_TIMEOUT_DAYS", str(1 / 86_400))
    time.sleep(1.2)
    short = local_env.batch()
    with pytest.raises(NotFound, match="expired"):
        short.describe_job(JobId=done)
    assert [j["JobId"] for j in short.list_jobs()["Jobs"]] == [waiting]
    short.run_until_idle()  # the worker fails the unconfirmed job and deletes the expired one
    failed = short.describe_job(JobId=waiting)["Job"]
    assert failed["Status"] == "Failed"
    assert failed["FailureReasons"][0]["FailureCode"] == "SuspendedTimeout"
    monkeypatch.setenv("S3BATCH_JOB_RETENTION_DAYS", "90")
    with pytest.raises(NotFound):  # deleted, not just hidden
        local_env.batch().describe_job(JobId=done)


def test_rerun_failed_runs_exactly_the_failed_tasks(env: Env, bucket_name: str) -> None:
    seed(env, bucket_name, ["ok.txt"])
    env.make_bucket(bucket_name + "-dst")
    rows = [(bucket_name, k) for k in ["ok.txt", "late one.txt", "late+two.txt"]]
    op = {"S3PutObjectCopy": {"TargetResource": f"arn:aws:s3:::{bucket_name}-dst"}}
    batch, job_id = create(env, bucket_name, op, rows)
    assert run(batch, job_id)["ProgressSummary"]["NumberOfTasksFailed"] == 2
    with pytest.raises(BadRequest, match="no failed tasks"):
        ok_batch, ok_job = create(env, bucket_name, op, rows[:1])
        run(ok_batch, ok_job)
        ok_batch.rerun_failed(ok_job)
    for key in ("late one.txt", "late+two.txt"):  # the missing objects arrive
        env.put(bucket_name, key, f"body of {key}".encode())
    rerun_id = batch.rerun_failed(job_id)["JobId"]
    rerun = run(batch, rerun_id)
    assert rerun["Status"] == "Complete"
    assert rerun["ProgressSummary"] == {
        **rerun["ProgressSummary"],
        "TotalNumberOfTasks": 2,
        "NumberOfTasksSucceeded": 2,
    }
    assert rerun["Description"] == f"Rerun of the failed tasks of job {job_id}"
    assert env.get(bucket_name + "-dst", "late one.txt") == b"body of late one.txt"
    reported = {r[1] for r in read_report(env, bucket_name, rerun_id)["rows"]["succeeded"]}
    assert reported == {"late+one.txt", "late%2Btwo.txt"}  # keys as written in the manifest


def test_dry_run_changes_nothing_and_matches_the_real_run(env: Env, bucket_name: str) -> None:
    keys = ["a.txt", "b b.txt", "c+c.txt"]
    seed(env, bucket_name, keys)
    env.make_bucket(bucket_name + "-dst")
    rows = [(bucket_name, k) for k in [*keys, "missing.txt"]]
    batch = env.batch()
    request = {
        "Operation": {"S3PutObjectCopy": {"TargetResource": f"arn:aws:s3:::{bucket_name}-dst"}},
        "Manifest": env.manifest(bucket_name, rows),
        "Report": report_spec(bucket_name),
        "Priority": 1,
    }
    plan = batch.dry_run(**request)
    assert batch.list_jobs()["Jobs"] == []  # no job was created
    assert env.get(bucket_name + "-dst", "a.txt") is None  # nothing was copied
    assert plan["TotalNumberOfTasks"] == 4 and plan["Extrapolated"] is False
    assert plan["MissingObjects"] == 1
    assert plan["TotalBytes"] == sum(len(f"body of {k}") for k in keys)
    assert plan["Requests"] == {"COPY": 4, "GET": 1}
    assert plan["ThroughputSource"].startswith("assumed")
    assert plan["EstimatedAwsCostUSD"]["Total"] == pytest.approx(0.25 + 4e-6 + 4 * 5e-6 + 4e-7, abs=1e-6)

    job = run(batch, batch.create_job(**request)["JobId"])
    summary = job["ProgressSummary"]
    assert summary["TotalNumberOfTasks"] == plan["TotalNumberOfTasks"]
    assert summary["NumberOfTasksFailed"] == plan["MissingObjects"]
    assert summary["NumberOfTasksSucceeded"] + summary["NumberOfTasksFailed"] == plan["Requests"]["COPY"]


def test_versioned_manifest_on_a_store_without_versioning_fails_in_preparing(local_env: Env) -> None:
    seed(local_env, "b", ["a.txt"])
    batch = local_env.batch()
    manifest = local_env.raw_manifest("b", b"b,a.txt,v1\n")
    manifest["Spec"]["Fields"] = ["Bucket", "Key", "VersionId"]
    job_id = batch.create_job(
        Operation={"S3DeleteObject": {}}, Manifest=manifest, Report=report_spec("b"), Priority=1
    )["JobId"]
    job = run(batch, job_id)
    assert job["Status"] == "Failed"
    assert job["FailureReasons"][0]["FailureCode"] == "EndpointCapability"
    assert "versioning" in job["FailureReasons"][0]["FailureReason"]
    assert local_env.get("b", "a.txt") == b"body of a.txt"


def test_a_small_manifest_is_read_once_and_a_resumed_job_reads_it_again(
    local_env: Env, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Preparing keeps a small manifest for the Active phase of the same drive (no second HEAD
    and GET); a job driven again later (here: after confirmation) checks and reads it anew."""
    from s3batch.storage.local import LocalStore

    reads: list[str] = []
    iter_bytes = LocalStore.iter_bytes

    def counting(self: LocalStore, bucket: str, key: str, *args: Any, **kwargs: Any) -> Any:
        reads.append(key)
        return iter_bytes(self, bucket, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "iter_bytes", counting)
    seed(local_env, bucket_name)
    rows = [(bucket_name, k) for k in KEYS]
    op = {"S3PutObjectTagging": {"TagSet": [{"Key": "t", "Value": "1"}]}}
    batch, job_id = create(local_env, bucket_name, op, rows)
    assert run(batch, job_id)["Status"] == "Complete"
    arn = batch.describe_job(JobId=job_id)["Job"]["Manifest"]["Location"]["ObjectArn"]
    manifest_key = arn.split("/", 1)[1]
    assert reads.count(manifest_key) == 1

    reads.clear()
    batch, job_id = create(local_env, bucket_name, op, rows, ConfirmationRequired=True)
    assert run(batch, job_id)["Status"] == "Suspended"  # Preparing ends the drive
    batch.update_job_status(JobId=job_id, RequestedJobStatus="Ready")
    job = run(batch, job_id)
    assert job["Status"] == "Complete" and job["ProgressSummary"]["NumberOfTasksSucceeded"] == len(KEYS)
    assert reads.count(manifest_key) == 2  # Preparing, then Active in a later drive


@pytest.mark.parametrize("operation", ["tagging", "delete"])
def test_a_missing_report_bucket_fails_the_job_before_any_object_changes(
    env: Env, bucket_name: str, operation: str
) -> None:
    seed(env, bucket_name)
    ops = {
        "tagging": {"S3PutObjectTagging": {"TagSet": [{"Key": "k", "Value": "v"}]}},
        "delete": {"S3DeleteObject": {}},
    }
    report = report_spec(bucket_name + "-no-such-reports")
    batch, job_id = create(env, bucket_name, ops[operation], [(bucket_name, k) for k in KEYS], Report=report)
    job = run(batch, job_id)

    assert job["Status"] == "Failed"
    [reason] = job["FailureReasons"]
    assert reason["FailureCode"] == "ReportWriteFailed"
    assert f"s3://{bucket_name}-no-such-reports/reports/job-{job_id}/" in reason["FailureReason"]
    assert "no object was changed" in reason["FailureReason"]
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 0
    for key in KEYS:  # every object still there, untagged
        assert env.get(bucket_name, key) == f"body of {key}".encode()
    assert batch.report_rows(job_id) == []


def test_the_report_check_leaves_nothing_in_the_report_bucket(env: Env, bucket_name: str) -> None:
    seed(env, bucket_name)
    op = {"S3PutObjectTagging": {"TagSet": [{"Key": "k", "Value": "v"}]}}
    batch, job_id = create(env, bucket_name, op, [(bucket_name, k) for k in KEYS])
    assert run(batch, job_id)["Status"] == "Complete"
    files = env.report_files(bucket_name, "reports", job_id)
    assert files and not any(".s3batch-write-check" in key for key in files)
