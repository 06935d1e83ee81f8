"""Each job runs with the endpoint and credentials of the command that created it.

Background workers are keyed by a fingerprint of their environment's credentials and
connection settings (service/identity.py); these tests create jobs from different
environments back to back and check each one ran as its creator, and that no secret reaches
the job store or the worker log.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest

from conftest import FIXTURE_HANDLERS, Env, report_spec
from s3batch.client import S3Batch
from s3batch.service.identity import SALT_FILE, environment_key

pytestmark = pytest.mark.integration

#: Upper bound for any wait on a background job in these tests, in seconds.
JOB_TIMEOUT_S = 60.0
#: rclone_server's keys (it checks signatures); moto's server accepts any.
RCLONE_KEYS = ("testing", "testing")
MOTO_KEYS = ("moto-access-key", "moto-secret-key-0123456789")


def cli(home: Path, env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run `s3batch ARGS` with exactly the AWS variables in `env`; its JSON output."""
    proc_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3BATCH_"))}
    proc_env.update({"S3BATCH_HOME": str(home), "AWS_REGION": "us-east-1", **env})
    result = subprocess.run(
        [sys.executable, "-m", "s3batch", *args],
        capture_output=True, text=True, env=proc_env, timeout=JOB_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def s3_env(endpoint: str, keys: tuple[str, str]) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": keys[0], "AWS_SECRET_ACCESS_KEY": keys[1]}


def seed(endpoint: str, keys: tuple[str, str], bucket: str, names: list[str]) -> dict[str, Any]:
    """A bucket holding `names` and a manifest of them; returns the JobManifest."""
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=keys[0], aws_secret_access_key=keys[1],
    )  # fmt: skip
    client.create_bucket(Bucket=bucket)
    for name in names:
        client.put_object(Bucket=bucket, Key=name, Body=name.encode())
    body = "".join(f"{bucket},{name}\n" for name in names).encode()
    etag = client.put_object(Bucket=bucket, Key="manifest.csv", Body=body)["ETag"].strip('"')
    return {
        "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
        "Location": {"ObjectArn": f"arn:aws:s3:::{bucket}/manifest.csv", "ETag": etag},
    }


def copy_job(bucket: str, manifest: dict[str, Any]) -> list[str]:
    operation = {"S3PutObjectCopy": {"TargetResource": f"arn:aws:s3:::{bucket}", "TargetKeyPrefix": "copied"}}
    return [
        "create-job", "--operation", json.dumps(operation), "--manifest", json.dumps(manifest),
        "--report", json.dumps(report_spec(bucket)), "--priority", "10", "--no-confirmation-required",
    ]  # fmt: skip


def wait_all(home: Path, jobs: dict[str, dict[str, str]]) -> dict[str, dict[str, Any]]:
    """Poll each job (from its own environment) until every one has ended."""
    deadline, done = time.monotonic() + JOB_TIMEOUT_S, dict[str, dict[str, Any]]()
    while len(done) < len(jobs) and time.monotonic() < deadline:
        for job_id, env in jobs.items():
            job = cli(home, env, "describe-job", "--job-id", job_id)["Job"]
            if job["Status"] in ("Complete", "Failed", "Cancelled"):
                done[job_id] = job
        time.sleep(0.2)
    assert len(done) == len(jobs), f"jobs still running after {JOB_TIMEOUT_S}s"
    return done


def test_two_jobs_on_two_endpoints_with_different_keys_both_complete(
    tmp_path: Path, moto_server: str, rclone_server: str, bucket_name: str
) -> None:
    home = tmp_path / "home"
    moto_env, rclone_env = s3_env(moto_server, MOTO_KEYS), s3_env(rclone_server, RCLONE_KEYS)
    names = ["a.txt", "b c.txt"]
    moto_job = cli(home, moto_env, *copy_job(bucket_name, seed(moto_server, MOTO_KEYS, bucket_name, names)))
    rclone_manifest = seed(rclone_server, RCLONE_KEYS, bucket_name, names)
    rclone_job = cli(home, rclone_env, *copy_job(bucket_name, rclone_manifest))

    ended = wait_all(home, {moto_job["JobId"]: moto_env, rclone_job["JobId"]: rclone_env})

    for job in ended.values():
        assert job["Status"] == "Complete", job.get("FailureReasons")
        assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == len(names)
    store_bytes = (home / "jobs.sqlite3").read_bytes() + (home / "jobs.sqlite3-wal").read_bytes()
    log = (home / "worker.log").read_bytes()
    for secret in (MOTO_KEYS[1], RCLONE_KEYS[1] + "x"):  # rclone's secret is a common word
        assert secret.encode() not in store_bytes
        assert secret.encode() not in log


def test_a_job_created_after_exporting_credentials_runs_with_them(
    tmp_path: Path, moto_server: str, rclone_server: str, bucket_name: str
) -> None:
    """A worker started by a command without credentials does not take a later job."""
    home = tmp_path / "home"
    local = {"S3BATCH_STORAGE": f"file://{tmp_path / 'buckets'}"}
    (tmp_path / "buckets").mkdir()
    cli(home, local, "list-jobs")  # starts this environment's (credential-less) worker
    rclone_env = s3_env(rclone_server, RCLONE_KEYS)
    job = cli(home, rclone_env, *copy_job(bucket_name, seed(rclone_server, RCLONE_KEYS, bucket_name, ["x"])))

    [ended] = wait_all(home, {job["JobId"]: rclone_env}).values()
    assert ended["Status"] == "Complete", ended.get("FailureReasons")


def test_a_worker_drives_only_the_jobs_of_its_environment(
    moto_env: Env, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto_env.make_bucket(bucket_name)
    moto_env.put(bucket_name, "k", b"body")
    request = {
        "Operation": {"S3PutObjectTagging": {"TagSet": [{"Key": "t", "Value": "1"}]}},
        "Manifest": moto_env.manifest(bucket_name, [(bucket_name, "k")]),
        "Report": {"Enabled": False},
        "Priority": 10,
        "ConfirmationRequired": False,
    }
    batch = moto_env.batch()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "first-secret")
    first = batch.create_job(**request)["JobId"]
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "second-secret")
    second = batch.create_job(**{**request, "Priority": 1})["JobId"]

    assert batch.run_until_idle() == 1  # this process now has the second job's environment
    assert batch.describe_job(JobId=second)["Job"]["Status"] == "Complete"
    assert batch.describe_job(JobId=first)["Job"]["Status"] == "New"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "first-secret")
    assert batch.run_until_idle() == 1
    assert batch.describe_job(JobId=first)["Job"]["Status"] == "Complete"


def test_the_fingerprint_covers_credentials_and_endpoints_only(tmp_path: Path) -> None:
    base = {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK", "TERM": "xterm"}
    key = environment_key(base, tmp_path)
    assert environment_key(dict(base), tmp_path) == key
    assert environment_key({**base, "TERM": "dumb", "S3BATCH_CONCURRENCY": "8"}, tmp_path) == key
    for changed in (
        {"AWS_SECRET_ACCESS_KEY": "SK2"},
        {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"},
        {"AWS_PROFILE": "other"},
        {"HTTPS_PROXY": "http://127.0.0.1:3128"},
        {"PGPASSWORD": "pw"},
    ):
        assert environment_key({**base, **changed}, tmp_path) != key, changed
    # Keyed by HOME's own salt, readable by its owner only: the job store alone does not let
    # anyone test guesses of a secret.
    assert stat.S_IMODE((tmp_path / SALT_FILE).stat().st_mode) == 0o600
    other_home = tmp_path / "other"
    assert environment_key(base, other_home) != key


def test_serve_records_the_key_its_worker_process_drives(tmp_path: Path) -> None:
    """`serve` runs jobs in a child worker whose environment adds settings to its own: the
    child's fingerprint must equal that of the server's own environment."""
    from s3batch.settings import Settings

    settings = Settings.from_env()
    child = {**os.environ, **settings.to_env()}
    assert environment_key(child, settings.home) == environment_key(os.environ, settings.home)


def test_client_and_cli_workers_agree_on_the_key(local_env: Env) -> None:
    """The Python API records the same fingerprint a CLI-started worker computes."""
    assert isinstance(local_env.batch(), S3Batch)
    key = environment_key(os.environ, local_env.home.resolve())
    result = subprocess.run(
        [sys.executable, "-c", "from pathlib import Path; from s3batch.service.identity import current_key;"
         f"print(current_key(Path({str(local_env.home.resolve())!r})))"],
        capture_output=True, text=True, timeout=JOB_TIMEOUT_S, check=True,
    )  # fmt: skip
    assert result.stdout.strip() == key


WHERE_HANDLER = """
import os


def handler(event, context):
    task = event["tasks"][0]
    return {
        "invocationSchemaVersion": "1.0",
        "treatMissingKeysAs": "PermanentFailure",
        "invocationId": event["invocationId"],
        "results": [{"taskId": task["taskId"], "resultCode": "Succeeded",
                     "resultString": os.getcwd() + "|" + __file__}],
    }
"""


def test_handlers_import_from_and_run_in_the_creators_folder(tmp_path: Path) -> None:
    """A worker started from another project's folder neither imports that project's module of
    the same name nor runs the handler there."""
    home, buckets = tmp_path / "home", tmp_path / "buckets"
    (buckets / "data").mkdir(parents=True)
    (buckets / "data" / "obj").write_bytes(b"x")
    (buckets / "data" / "manifest.csv").write_bytes(b"data,obj\n")
    projects = {name: tmp_path / name for name in ("other", "mine")}
    for folder in projects.values():
        folder.mkdir()
        (folder / "where.py").write_text(WHERE_HANDLER)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3BATCH_"))}
    env.update({"S3BATCH_HOME": str(home), "S3BATCH_STORAGE": f"file://{buckets}"})

    def s3batch(cwd: Path, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "s3batch", *args], cwd=cwd, env=env,
            capture_output=True, text=True, timeout=JOB_TIMEOUT_S, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        return result.stdout

    s3batch(projects["other"], "list-jobs")  # the worker starts from the other project's folder
    manifest = {
        "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
        "Location": {
            "ObjectArn": "arn:aws:s3:::data/manifest.csv",
            "ETag": hashlib.md5(b"data,obj\n", usedforsecurity=False).hexdigest(),
        },
    }
    out = s3batch(
        projects["mine"], "create-job", "--operation",
        json.dumps({"LambdaInvoke": {"FunctionArn": "python:where:handler"}}),
        "--manifest", json.dumps(manifest), "--report", json.dumps({"Enabled": False}),
        "--priority", "1", "--no-confirmation-required", "--wait",
    )  # fmt: skip
    job_id = json.loads(out)["Job"]["JobId"]
    [row] = S3Batch(home=home, storage=f"file://{buckets}").report_rows(job_id)
    assert row.status == "succeeded", row
    cwd, module = row.message.split("|")
    assert Path(cwd) == projects["mine"]
    assert Path(module) == projects["mine"] / "where.py"


def local_job_env(tmp_path: Path, names: list[str]) -> tuple[dict[str, str], dict[str, Any]]:
    """A folder store holding `names` in bucket "data"; the CLI environment and the manifest."""
    buckets = tmp_path / "buckets"
    (buckets / "data").mkdir(parents=True)
    for name in names:
        (buckets / "data" / name).write_bytes(name.encode())
    body = "".join(f"data,{name}\n" for name in names).encode()
    (buckets / "data" / "manifest.csv").write_bytes(body)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3BATCH_"))}
    env.update({"S3BATCH_HOME": str(tmp_path / "home"), "S3BATCH_STORAGE": f"file://{buckets}"})
    manifest = {
        "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
        "Location": {
            "ObjectArn": "arn:aws:s3:::data/manifest.csv",
            "ETag": hashlib.md5(body, usedforsecurity=False).hexdigest(),
        },
    }
    return env, manifest


def test_wait_drives_the_job_in_its_own_process(tmp_path: Path) -> None:
    env, manifest = local_job_env(tmp_path, ["a.txt"])
    op = {"S3PutObjectTagging": {"TagSet": [{"Key": "k", "Value": "v"}]}}
    result = subprocess.run(
        [sys.executable, "-m", "s3batch", "create-job", "--operation", json.dumps(op),
         "--manifest", json.dumps(manifest), "--report", '{"Enabled": false}', "--priority", "1",
         "--no-confirmation-required", "--wait"],
        env=env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["Job"]["Status"] == "Complete"
    # No background worker was needed (one is started only through worker.log).
    assert not (tmp_path / "home" / "worker.log").exists()


def test_ctrl_c_while_waiting_hands_the_job_to_a_background_worker(tmp_path: Path) -> None:
    names = [f"k{i:03d}" for i in range(120)]
    env, manifest = local_job_env(tmp_path, names)
    log = tmp_path / "invocations.log"
    env.update({"SLOW_HANDLER_LOG": str(log), "S3BATCH_FUNCTION_WORKERS": "2"})
    op = {"LambdaInvoke": {"FunctionArn": "python:slow_handler:handler"}}
    proc = subprocess.Popen(
        [sys.executable, "-m", "s3batch", "create-job", "--operation", json.dumps(op),
         "--manifest", json.dumps(manifest), "--report", '{"Enabled": false}', "--priority", "1",
         "--no-confirmation-required", "--wait"],
        env=env, cwd=FIXTURE_HANDLERS, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while not (log.exists() and len(log.read_text().splitlines()) >= 10):
            assert time.monotonic() < deadline and proc.poll() is None, "the job never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=JOB_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    batch = S3Batch(home=tmp_path / "home", storage=env["S3BATCH_STORAGE"], background=False)
    [job_id] = [j["JobId"] for j in batch.list_jobs()["Jobs"]]
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while (job := batch.describe_job(JobId=job_id)["Job"])["Status"] != "Complete":
        assert time.monotonic() < deadline, f"the job was left {job['Status']}"
        time.sleep(0.1)
    assert (tmp_path / "home" / "worker.log").exists()  # a background worker finished it
    rows = batch.report_rows(job_id)
    assert sorted(r.key for r in rows) == names and {r.status for r in rows} == {"succeeded"}


def test_waiting_on_another_environments_job_says_how_to_resume_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, manifest = local_job_env(tmp_path, ["a.txt"])
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "the-creator")  # created here; no worker started
    batch = S3Batch(home=tmp_path / "home", storage=env["S3BATCH_STORAGE"], background=False)
    job_id = batch.create_job(
        Operation={"S3PutObjectTagging": {"TagSet": [{"Key": "k", "Value": "v"}]}},
        Manifest=manifest, Report={"Enabled": False}, Priority=1, ConfirmationRequired=False,
    )["JobId"]  # fmt: skip
    with pytest.raises(subprocess.TimeoutExpired) as waited:
        subprocess.run(
            [sys.executable, "-m", "s3batch", "wait", job_id],
            env={**env, "AWS_ACCESS_KEY_ID": "someone-else"}, capture_output=True, timeout=5, check=False,
        )  # fmt: skip
    assert b"created from another environment" in (waited.value.stderr or b"")
    assert batch.describe_job(JobId=job_id)["Job"]["Status"] == "New"  # nobody ran it as someone else
    # The other environment takes the job over and runs it to the end.
    adopted = subprocess.run(
        [sys.executable, "-m", "s3batch", "adopt-job", job_id, "--wait"],
        env={**env, "AWS_ACCESS_KEY_ID": "someone-else"}, capture_output=True, text=True,
        timeout=JOB_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert adopted.returncode == 0, adopted.stderr
    assert json.loads(adopted.stdout)["Job"]["Status"] == "Complete"


def test_relative_paths_are_made_absolute_for_the_worker_and_the_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s3batch.service.identity import identity_variables, worker_environment

    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    env = {"AWS_SHARED_CREDENTIALS_FILE": ".aws/credentials", "PYTHONPATH": "src:lib", "AWS_PAGER": "less"}
    monkeypatch.chdir(one)
    in_one = environment_key(env, tmp_path)
    assert worker_environment(env)["AWS_SHARED_CREDENTIALS_FILE"] == str(one / ".aws/credentials")
    assert worker_environment(env)["PYTHONPATH"] == f"{one / 'src'}:{one / 'lib'}"
    assert "AWS_PAGER" not in identity_variables(env)  # output settings are not an identity
    # A worker started elsewhere with the absolute environment has the creator's fingerprint...
    absolute = worker_environment(env)
    monkeypatch.chdir(two)
    assert environment_key(absolute, tmp_path) == in_one
    # ...and the same relative settings in another project name other files: another fingerprint.
    assert environment_key(env, tmp_path) != in_one
