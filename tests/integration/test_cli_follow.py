"""The CLI after a job is created: `wait` / `describe-job --wait` on an existing job, `report` of a
job that failed before it ran any task, and `pipeline replay`'s counts, on the folder store with a
real SQLite job store and a background worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from tests.integration.conftest import FIXTURE_HANDLERS, Env

from s3batch.cli import cli

pytestmark = pytest.mark.integration

TAGGING = {"S3PutObjectTagging": {"TagSet": [{"Key": "k", "Value": "v"}]}}
#: The AWS CLI's exit status for a service error (an unknown job id).
EXIT_SERVICE_ERROR = 254


def invoke(env: Env, *args: str) -> Result:
    cmd_env = {"S3BATCH_HOME": str(env.home), "S3BATCH_STORAGE": f"file://{env.root}"}
    return CliRunner().invoke(cli, list(args), env=cmd_env)


def create(env: Env, manifest: dict[str, Any], *extra: str, exit_code: int = 0) -> str:
    out = invoke(
        env, "create-job", "--operation", json.dumps(TAGGING), "--manifest", json.dumps(manifest),
        "--report", '{"Enabled": false}', "--priority", "1", "--no-confirmation-required", *extra,
    )  # fmt: skip
    assert out.exit_code == exit_code, out.output
    doc = json.loads(out.stdout)
    return str(doc["Job"]["JobId"] if "Job" in doc else doc["JobId"])


def missing_manifest() -> dict[str, Any]:
    return {
        "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
        "Location": {"ObjectArn": "arn:aws:s3:::data/absent.csv", "ETag": "0" * 32},
    }


def test_wait_follows_an_existing_job_and_exits_by_its_outcome(local_env: Env) -> None:
    local_env.make_bucket("data")
    local_env.put("data", "a.txt", b"a")
    job_id = create(local_env, local_env.manifest("data", [("data", "a.txt")]))
    done = invoke(local_env, "wait", job_id)
    assert done.exit_code == 0, done.output
    job = json.loads(done.stdout)["Job"]
    assert (job["JobId"], job["Status"]) == (job_id, "Complete")
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 1
    assert "1/1" in done.stderr  # the same progress bar as create-job --wait

    failed_id = create(local_env, missing_manifest())
    failed = invoke(local_env, "wait", failed_id)
    assert failed.exit_code == 1 and json.loads(failed.stdout)["Job"]["Status"] == "Failed"
    described = invoke(local_env, "describe-job", "--job-id", failed_id, "--wait")
    assert described.exit_code == 1 and json.loads(described.stdout)["Job"]["JobId"] == failed_id
    # An ended job: --wait returns at once with its outcome; without it, describe-job exits 0.
    assert invoke(local_env, "describe-job", "--job-id", job_id, "--wait").exit_code == 0
    assert invoke(local_env, "describe-job", "--job-id", failed_id).exit_code == 0


def test_wait_for_an_unknown_job_is_a_service_error(local_env: Env) -> None:
    out = invoke(local_env, "wait", "no-such-job")
    assert out.exit_code == EXIT_SERVICE_ERROR, out.output
    assert "NotFoundException" in out.stderr and "no-such-job" in out.stderr
    assert out.stdout == ""
    same = invoke(local_env, "describe-job", "--job-id", "no-such-job")
    assert same.exit_code == EXIT_SERVICE_ERROR and "NotFoundException" in same.stderr


def test_report_of_a_job_that_failed_before_it_ran_shows_its_failure_reasons(local_env: Env) -> None:
    local_env.make_bucket("data")
    job_id = create(local_env, missing_manifest(), "--wait", exit_code=1)
    out = invoke(local_env, "report", job_id)
    assert out.exit_code == 0, out.output
    assert "ManifestReadError" in out.stdout and "absent.csv" in out.stdout
    assert "ResultMessage" not in out.stdout  # no empty task table instead


def write_pipeline(tmp_path: Path) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(
        'name = "p"\nsource = "staging"\nfunction = "pipeline_handlers:check"\non_success = "leave"\n'
        'archive = "archive"\nerror = "errors"\nmax_attempts = 1\n',
        encoding="utf-8",
    )
    return path


def test_pipeline_replay_prints_the_counts_of_its_own_run(
    local_env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(FIXTURE_HANDLERS))
    for bucket in ("staging", "archive", "errors"):
        local_env.make_bucket(bucket)
    for key in ("one.txt", "two.txt", "bad-a.txt", "bad-b.txt", "bad-c.txt"):
        local_env.put("staging", key, key.encode())
    path = write_pipeline(tmp_path)
    cmd_env = {"S3BATCH_STORAGE": f"file://{local_env.root}", "PYTHONPATH": str(FIXTURE_HANDLERS)}
    runner = CliRunner()
    first = runner.invoke(cli, ["pipeline", "run", str(path), "--backlog"], env=cmd_env)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["files"] == {"left": 2, "errored": 3}  # the pipeline's totals

    out = runner.invoke(cli, ["pipeline", "replay", str(path), "--prefix", "bad-a"], env=cmd_env)
    assert out.exit_code == 0, out.output
    replayed = json.loads(out.stdout)
    assert replayed["replayed"] == 1
    assert replayed["files"] == {"errored": 1}  # this replay's one file, not the 5 of every run
    assert replayed["run"] != json.loads(first.stdout)["run"]


def test_report_opens_with_failures_grouped_by_cause(local_env: Env) -> None:
    local_env.make_bucket("data")
    local_env.put("data", "present.txt", b"p")
    listed = ["present.txt", "gone-1.txt", "gone-2.txt"]
    job_id = create(local_env, local_env.manifest("data", [("data", k) for k in listed]), "--wait")
    out = invoke(local_env, "report", job_id)
    assert out.exit_code == 0, out.output
    causes = out.stdout.index("failures by cause")
    rows = out.stdout.index("ResultMessage")
    assert causes < rows  # the summary comes before the rows
    summary = out.stdout[causes:rows]
    assert "NoSuchKey" in summary and "404" in summary
    assert " 2 " in summary  # both missing objects in one cause
