"""LambdaInvoke jobs end to end: unchanged AWS handlers, both schemas, redrives, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import FIXTURE_HANDLERS, Env, read_report, report_spec

pytestmark = pytest.mark.integration
SENTIMENT_ARN = "arn:aws:lambda:us-east-1:123456789012:function:s3batch-sentiment"


@pytest.fixture(autouse=True)
def handlers_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Handlers are imported in worker processes; they find modules through PYTHONPATH like Lambda.
    monkeypatch.syspath_prepend(str(FIXTURE_HANDLERS))
    monkeypatch.setenv("PYTHONPATH", str(FIXTURE_HANDLERS))
    monkeypatch.setenv("S3BATCH_FUNCTION_WORKERS", "2")
    monkeypatch.setenv("S3BATCH_MAX_ATTEMPTS", "3")


def invoke_job(
    env: Env, bucket: str, keys: list[str], operation: dict[str, object]
) -> tuple[dict[str, object], dict[str, object]]:
    env.make_bucket(bucket)
    for key in keys:
        if not key.startswith("missing"):
            env.put(bucket, key, b"0123456789")
    batch = env.batch()
    job_id = batch.create_job(
        Operation={"LambdaInvoke": operation},
        Manifest=env.manifest(bucket, [(bucket, k) for k in keys]),
        Report=report_spec(bucket),
        Priority=1,
    )["JobId"]
    batch.run_until_idle()
    return batch.describe_job(JobId=job_id)["Job"], read_report(env, bucket, job_id)


@pytest.mark.parametrize("schema", ["1.0", "2.0"])
def test_unchanged_boto3_handler_on_s3(moto_env: Env, bucket_name: str, schema: str) -> None:
    env = moto_env
    op: dict[str, object] = {
        "FunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:reader",
        "InvocationSchemaVersion": schema,
    }
    if schema == "2.0":
        op["UserArguments"] = {"suffix": "ok"}
    env.functions["reader"] = "job_handlers:read_with_boto3"
    keys = ["a b.txt", "c+d.txt", "ü/%.txt", "missing.txt"]
    job, report = invoke_job(env, bucket_name, keys, op)
    assert job["Status"] == "Complete"
    succeeded = {r[1]: r[6] for r in report["rows"]["succeeded"]}
    expected = "10 bytes ok" if schema == "2.0" else "10 bytes"
    assert sorted(succeeded.values()) == [expected] * 3
    [failed] = report["rows"]["failed"]
    assert failed[1] == "missing.txt" and failed[3:7] == ["failed", "200", "PermanentFailure", "no such key"]


def test_temporary_failure_is_redriven(
    local_env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLAKY_DIR", str(tmp_path))
    job, report = invoke_job(local_env, "b", ["x1", "x2"], {"FunctionArn": "python:job_handlers:flaky"})
    assert job["Status"] == "Complete"
    assert [r[6] for r in report["rows"]["succeeded"]] == ["second time lucky"] * 2


def test_temporary_failure_that_never_clears_fails_after_the_last_attempt(local_env: Env) -> None:
    job, report = invoke_job(local_env, "b", ["y"], {"FunctionArn": "python:job_handlers:always_temporary"})
    assert job["Status"] == "Complete"
    [row] = report["rows"]["failed"]
    assert row[3:7] == ["failed", "200", "TemporaryFailure", "still busy"]


def test_handler_exception_is_a_failed_task_with_aws_message(local_env: Env) -> None:
    job, report = invoke_job(local_env, "b", ["boom.txt"], {"FunctionArn": "python:job_handlers:raises"})
    assert job["Status"] == "Complete"
    [row] = report["rows"]["failed"]
    assert row[5] == "PermanentFailure"
    assert row[6].startswith("Lambda returned function error: ")
    assert "cannot handle boom.txt" in row[6]


def test_builtin_sentiment_classifies_the_demo_letters(local_env: Env) -> None:
    from s3batch.functions.builtin.demo_texts import DEMO_TEXTS

    local_env.make_bucket("letters")
    for name, text in DEMO_TEXTS.items():
        local_env.put("letters", name, text.encode())
    batch = local_env.batch()
    job_id = batch.create_job(
        Operation={"LambdaInvoke": {"FunctionArn": SENTIMENT_ARN}},
        Manifest=local_env.manifest("letters", [("letters", n) for n in DEMO_TEXTS]),
        Report=report_spec("letters"),
        Priority=1,
    )["JobId"]
    batch.run_until_idle()
    import json

    rows = read_report(local_env, "letters", job_id)["rows"]["succeeded"]
    sentiment = {r[1]: json.loads(r[6])["Sentiment"] for r in rows}
    assert sentiment == {
        "love-poem.txt": "POSITIVE",
        "rude-love-letter.txt": "NEGATIVE",
        "neutral-speech.txt": "NEUTRAL",
    }


def test_cancel_a_running_job_reports_exactly_the_tasks_that_ran(
    local_env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from s3batch.client import S3Batch

    monkeypatch.setenv("SLOW_HANDLER_LOG", str(tmp_path / "log"))
    keys = [f"s{i:03d}" for i in range(200)]
    local_env.make_bucket("b")
    for key in keys:
        local_env.put("b", key, b"x")
    batch = S3Batch(home=local_env.home, storage=f"file://{local_env.root}", background=True)
    job_id = batch.create_job(
        Operation={"LambdaInvoke": {"FunctionArn": "python:slow_handler:handler"}},
        Manifest=local_env.manifest("b", [("b", k) for k in keys]),
        Report=report_spec("b"),
        Priority=1,
    )["JobId"]
    deadline = time.monotonic() + 30
    while batch.describe_job(JobId=job_id)["Job"]["ProgressSummary"]["NumberOfTasksSucceeded"] < 10:
        assert time.monotonic() < deadline, "job made no progress"
        time.sleep(0.05)
    assert batch.update_job_status(JobId=job_id, RequestedJobStatus="Cancelled")["Status"] == "Cancelling"
    job = batch.wait(job_id, timeout_s=30)
    assert job["Status"] == "Cancelled"
    ran = job["ProgressSummary"]["NumberOfTasksSucceeded"] + job["ProgressSummary"]["NumberOfTasksFailed"]
    assert 10 <= ran < len(keys)
    rows = read_report(local_env, "b", job_id)["rows"]
    assert len(rows.get("succeeded", [])) + len(rows.get("failed", [])) == ran


def test_higher_priority_job_pauses_a_running_one_which_then_resumes(
    local_env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from s3batch.client import S3Batch

    monkeypatch.setenv("SLOW_HANDLER_LOG", str(tmp_path / "log"))
    keys = [f"s{i:03d}" for i in range(120)]
    local_env.make_bucket("b")
    for key in keys:
        local_env.put("b", key, b"x")
    batch = S3Batch(home=local_env.home, storage=f"file://{local_env.root}", background=True)

    def submit(priority: int, rows: list[str], name: str) -> str:
        return str(
            batch.create_job(
                Operation={"LambdaInvoke": {"FunctionArn": "python:slow_handler:handler"}},
                Manifest=local_env.manifest("b", [("b", k) for k in rows], key=name),
                Report=report_spec("b"),
                Priority=priority,
            )["JobId"]
        )

    low = submit(1, keys, "low.csv")
    deadline = time.monotonic() + 30
    while batch.describe_job(JobId=low)["Job"]["ProgressSummary"]["NumberOfTasksSucceeded"] < 5:
        assert time.monotonic() < deadline, "low-priority job made no progress"
        time.sleep(0.05)
    high = submit(100, keys[:3], "high.csv")
    statuses = set()
    while batch.describe_job(JobId=high)["Job"]["Status"] != "Complete":
        statuses.add(batch.describe_job(JobId=low)["Job"]["Status"])
        assert time.monotonic() < deadline + 30, "high-priority job did not finish"
        time.sleep(0.02)
    low_job = batch.wait(low, timeout_s=60)
    assert "Paused" in statuses or "Pausing" in statuses
    assert low_job["Status"] == "Complete"
    assert low_job["ProgressSummary"]["NumberOfTasksSucceeded"] == len(keys)
    high_job = batch.describe_job(JobId=high)["Job"]
    assert high_job["TerminationDate"] < low_job["TerminationDate"]
    assert len(read_report(local_env, "b", low)["rows"]["succeeded"]) == len(keys)
