"""The `s3batch` command in subprocesses: AWS-CLI-shaped commands, background worker, --wait,
report, and resume after `kill -9` of the worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import Env, read_report, report_spec

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parent.parent / "fixtures"
#: Upper bound for any wait on a background job in these tests, in seconds.
JOB_TIMEOUT_S = 60.0


def s3batch(
    env: Env, *args: str, check: bool = True, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    proc_env = {
        **os.environ,
        "S3BATCH_HOME": str(env.home),
        "S3BATCH_STORAGE": f"file://{env.root}",
    }
    proc_env["PYTHONPATH"] = str(FIXTURES / "handlers")
    proc_env.update(extra_env or {})
    result = subprocess.run(
        [sys.executable, "-m", "s3batch", *args],
        capture_output=True, text=True, env=proc_env, timeout=JOB_TIMEOUT_S, check=False,
    )  # fmt: skip
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}\nstdout:{result.stdout}\nstderr:{result.stderr}")
    return result


def wait_for(
    env: Env, job_id: str, until: set[str], extra_env: dict[str, str] | None = None
) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        out = s3batch(env, "describe-job", "--job-id", job_id, extra_env=extra_env).stdout
        job: dict[str, Any] = json.loads(out)["Job"]
        if job["Status"] in until:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached {until}")


def job_args(env: Env, keys: list[str], operation: dict[str, Any]) -> list[str]:
    env.make_bucket("data")
    for key in keys:
        env.put("data", key, key.encode())
    manifest = env.manifest("data", [("data", k) for k in keys])
    return [
        "--operation", json.dumps(operation), "--manifest", json.dumps(manifest),
        "--report", json.dumps(report_spec("data")), "--priority", "10",
        "--role-arn", "arn:aws:iam::123456789012:role/batch", "--account-id", "123456789012",
        "--no-confirmation-required",
    ]  # fmt: skip


def test_create_job_runs_in_the_background_and_prints_aws_json(local_env: Env) -> None:
    args = job_args(local_env, ["a.txt", "b c.txt"], {"S3DeleteObject": {}})
    # The AWS CLI's shorthand syntax, as in AWS's own create-job examples.
    args[5] = (
        "Bucket=arn:aws:s3:::data,Prefix=reports,Format=Report_CSV_20180820,Enabled=true,ReportScope=AllTasks"
    )
    args += ["--tags", "Key=team,Value=data"]
    out = json.loads(s3batch(local_env, "create-job", *args).stdout)
    assert set(out) == {"JobId"}
    job = wait_for(local_env, out["JobId"], {"Complete", "Failed"})
    assert job["Status"] == "Complete"
    assert job["JobArn"].endswith(f":123456789012:job/{out['JobId']}")
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 2
    assert local_env.get("data", "a.txt") is None
    listed = json.loads(s3batch(local_env, "list-jobs", "--account-id", "123456789012").stdout)
    assert [j["JobId"] for j in listed["Jobs"]] == [out["JobId"]]
    # Jobs of another account are invisible.
    assert json.loads(s3batch(local_env, "list-jobs", "--account-id", "999999999999").stdout)["Jobs"] == []


def test_cli_input_json_and_bad_json_option(local_env: Env, tmp_path: Path) -> None:
    args = job_args(local_env, ["a.txt"], {"S3DeleteObject": {}})
    doc = {
        "Operation": json.loads(args[1]),
        "Manifest": json.loads(args[3]),
        "Report": json.loads(args[5]),
        "Priority": 3,
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(doc))
    result = s3batch(local_env, "create-job", "--cli-input-json", f"file://{path}", "--wait")
    job = json.loads(result.stdout)["Job"]
    assert job["Status"] == "Complete" and job["Priority"] == 3
    assert "1/1" in result.stderr  # the progress bar went to stderr

    bad = s3batch(
        local_env,
        "create-job",
        "--operation",
        "{not json",
        "--report",
        "{}",
        "--priority",
        "1",
        check=False,
    )
    assert bad.returncode != 0 and "invalid JSON" in bad.stderr
    assert len(json.loads(s3batch(local_env, "list-jobs").stdout)["Jobs"]) == 1


def test_wait_exits_non_zero_for_a_failed_job_and_report_lists_failures_first(
    local_env: Env,
) -> None:
    args = job_args(
        local_env,
        ["a.txt"],
        {"S3PutObjectCopy": {"TargetResource": "arn:aws:s3:::data", "TargetKeyPrefix": "copy"}},
    )
    manifest = json.loads(args[3])
    manifest["Location"]["ETag"] = "f" * 32
    args[3] = json.dumps(manifest)
    failed = s3batch(local_env, "create-job", "--wait", *args, check=False)
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["Job"]["Status"] == "Failed"

    keys = ["ok.txt", "also ok.txt"]
    args = job_args(
        local_env,
        keys,
        {"S3PutObjectCopy": {"TargetResource": "arn:aws:s3:::data", "TargetKeyPrefix": "copy"}},
    )
    manifest = json.loads(args[3])
    local_env.put("data", "manifest.csv", b"data,ok.txt\ndata,missing.txt\ndata,also+ok.txt\n")
    manifest["Location"]["ETag"] = local_env.put(
        "data", "manifest.csv", b"data,ok.txt\ndata,missing.txt\ndata,also+ok.txt\n"
    )
    args[3] = json.dumps(manifest)
    done = s3batch(local_env, "create-job", "--wait", *args)
    job = json.loads(done.stdout)["Job"]
    assert job["Status"] == "Complete" and job["ProgressSummary"]["NumberOfTasksFailed"] == 1
    table = s3batch(local_env, "report", job["JobId"]).stdout
    assert table.index("missing.txt") < table.index("ok.txt")
    assert "NoSuchKey" in table


def test_kill_9_mid_job_resumes_without_redoing_or_double_reporting(local_env: Env, tmp_path: Path) -> None:
    keys = [f"k{i:03d}" for i in range(120)]
    log = tmp_path / "invocations.log"
    args = job_args(local_env, keys, {"LambdaInvoke": {"FunctionArn": "python:slow_handler:handler"}})
    extra = {
        "SLOW_HANDLER_LOG": str(log),
        "S3BATCH_FUNCTION_WORKERS": "2",
        "S3BATCH_CONCURRENCY": "4",
    }
    job_id = json.loads(s3batch(local_env, "create-job", *args, extra_env=extra).stdout)["JobId"]

    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        done = json.loads(s3batch(local_env, "describe-job", "--job-id", job_id, extra_env=extra).stdout)
        if done["Job"]["ProgressSummary"]["NumberOfTasksSucceeded"] >= 30:
            break
        time.sleep(0.1)
    pid = int((local_env.home / "worker.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    before = len(log.read_text().splitlines())
    assert before < len(keys), "the job finished before it could be killed"

    job = wait_for(local_env, job_id, {"Complete", "Failed"}, extra)
    assert job["Status"] == "Complete"
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == len(keys)
    report = read_report(local_env, "data", job_id)
    reported = [row[1] for row in report["rows"]["succeeded"]]
    assert sorted(reported) == keys  # every task exactly once
    invocations = log.read_text().splitlines()
    # Only tasks in flight at the kill (≤ concurrency 4) or finished within the last flush
    # interval (0.1 s at 2 workers × 20 tasks/s ≈ 4, doubled for scheduling slack) run twice.
    in_flight, unflushed = 4, 8
    assert len(invocations) - len(keys) <= in_flight + unflushed


def test_job_tagging_commands(local_env: Env) -> None:
    args = job_args(local_env, ["a.txt"], {"S3DeleteObjectTagging": {}})
    job_id = json.loads(s3batch(local_env, "create-job", *args).stdout)["JobId"]
    s3batch(local_env, "put-job-tagging", "--job-id", job_id, "--tags", "Key=a,Value=1 Key=b,Value=2")
    tags = json.loads(s3batch(local_env, "get-job-tagging", "--job-id", job_id).stdout)
    assert tags == {"Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]}
    s3batch(local_env, "delete-job-tagging", "--job-id", job_id)
    assert json.loads(s3batch(local_env, "get-job-tagging", "--job-id", job_id).stdout) == {"Tags": []}


def test_create_job_dry_run_prints_the_plan_and_creates_nothing(local_env: Env) -> None:
    args = job_args(local_env, ["a.txt", "b.txt"], {"S3DeleteObject": {}})
    plan = json.loads(s3batch(local_env, "create-job", "--dry-run", *args).stdout)["DryRun"]
    assert plan["TotalNumberOfTasks"] == 2 and plan["Requests"] == {"POST": 1, "GET": 1}
    assert plan["EstimatedAwsCostUSD"]["BatchOperationsJob"] == 0.25
    assert local_env.get("data", "a.txt") == b"a.txt"
    assert json.loads(s3batch(local_env, "list-jobs").stdout)["Jobs"] == []
