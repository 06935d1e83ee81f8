"""The real AWS CLI (`aws s3control`, awscli 1.x in .venv-awscli) against the running server,
through the HTTP-proxy route README documents: every job operation and every modeled error,
checked on the CLI's own output and exit status."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.integration.conftest import Env, data_manifest, report_spec
from tests.integration.test_api_boto3 import ACCOUNT_A, KEY_A, ROLE, TAGGING, Server, serving

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AWS = REPO / ".venv-awscli" / "bin" / "aws"
#: Seconds one CLI call may take (it starts a Python interpreter and loads botocore's models).
CALL_TIMEOUT_S = 60
#: Seconds to install the CLI when it is missing (scripts/install-awscli, from PyPI).
INSTALL_TIMEOUT_S = 300
JOB_TIMEOUT_S = 30.0
POLL_S = 0.2
#: awscli 1.x exit status for a service error (ClientError); v2 would say 254.
SERVICE_ERROR_RC = 255
#: The proxy route: any host name works, the server answers for it (README,
#: docs/aws-contracts.md#local-endpoints-and-clients).
EMULATOR_HOST = "s3-control.emulator"


@pytest.fixture(scope="session")
def aws_cli() -> Path:
    """The pinned CLI, installed by the idempotent script if this checkout lacks it."""
    subprocess.run([REPO / "scripts" / "install-awscli"], check=True, timeout=INSTALL_TIMEOUT_S)
    assert AWS.is_file()
    return AWS


@dataclass
class Cli:
    aws: Path
    server: Server
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        endpoint = f"http://{EMULATOR_HOST}:{self.server.port}"
        command = [str(self.aws), "s3control", *args, "--account-id", ACCOUNT_A, "--endpoint-url", endpoint]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=CALL_TIMEOUT_S)

    def ok(self, *args: str) -> dict[str, Any]:
        done = self.run(*args)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if done.stdout.strip() else {}

    def error(self, code: str, *args: str) -> str:
        """Run a call that must fail with the modeled error `code`; its message."""
        done = self.run(*args)
        assert done.returncode == SERVICE_ERROR_RC, (done.returncode, done.stderr)
        assert f"An error occurred ({code})" in done.stderr, done.stderr
        assert done.stdout == ""
        return done.stderr


@pytest.fixture
def cli(aws_cli: Path, local_env: Env, tmp_path: Path) -> Iterator[Cli]:
    home = tmp_path / "cli-home"
    home.mkdir()
    with serving(local_env) as server:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),  # no ~/.aws of the machine's user
            "AWS_CONFIG_FILE": str(home / "absent-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "absent-credentials"),
            "AWS_ACCESS_KEY_ID": KEY_A.access_key,
            "AWS_SECRET_ACCESS_KEY": KEY_A.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_MAX_ATTEMPTS": "1",  # an error is answered once, not retried
            "AWS_EC2_METADATA_DISABLED": "true",
            "HTTP_PROXY": server.url,
            "http_proxy": server.url,
            "NO_PROXY": "",
            "no_proxy": "",
        }
        yield Cli(aws_cli, server, env)


@pytest.fixture
def manifest(local_env: Env) -> dict[str, Any]:
    return data_manifest(local_env, ["a.txt", "b.txt"], ["a.txt", "b.txt"])


def create_args(manifest: dict[str, Any], *extra: str, token: str | None = None) -> list[str]:
    args = [
        "create-job",
        "--operation", json.dumps(TAGGING),
        "--manifest", json.dumps(manifest),
        "--report", json.dumps(report_spec("reports")),
        "--priority", "10",
        "--role-arn", ROLE,
        *extra,
    ]  # fmt: skip
    if token is not None:
        args += ["--client-request-token", token]
    if "--confirmation-required" not in extra:
        args.append("--no-confirmation-required")
    return args


def wait_status(cli: Cli, job_id: str, *statuses: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while True:
        job: dict[str, Any] = cli.ok("describe-job", "--job-id", job_id)["Job"]
        if job["Status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['Status']}, waiting for {statuses}"
        time.sleep(POLL_S)


def test_create_describe_and_idempotency(cli: Cli, manifest: dict[str, Any]) -> None:
    args = create_args(manifest, "--description", "from the CLI", token="tok-1")
    job_id = cli.ok(*args)["JobId"]
    job = wait_status(cli, job_id, "Complete", "Failed")
    assert job["Status"] == "Complete", job.get("FailureReasons")
    assert job["Description"] == "from the CLI"
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 2
    assert job["RoleArn"] == ROLE
    assert cli.ok(*args)["JobId"] == job_id  # same token, same request: the same job
    changed = create_args(manifest, "--description", "another", token="tok-1")
    cli.error("IdempotencyException", *changed)
    assert [j["JobId"] for j in cli.ok("list-jobs")["Jobs"]] == [job_id]


def test_list_jobs_status_filter_and_pagination(cli: Cli, manifest: dict[str, Any]) -> None:
    suspended = {cli.ok(*create_args(manifest, "--confirmation-required"))["JobId"] for _ in range(3)}
    for job_id in suspended:
        wait_status(cli, job_id, "Suspended")
    seen: list[str] = []
    page = cli.ok("list-jobs", "--job-statuses", "Suspended", "--max-results", "2")
    seen += [j["JobId"] for j in page["Jobs"]]
    assert len(page["Jobs"]) == 2 and page["NextToken"]
    page = cli.ok(
        "list-jobs", "--job-statuses", "Suspended", "--max-results", "2", "--next-token", page["NextToken"]
    )
    seen += [j["JobId"] for j in page["Jobs"]]
    assert "NextToken" not in page
    assert sorted(seen) == sorted(suspended)
    assert cli.ok("list-jobs", "--job-statuses", "Active", "Complete")["Jobs"] == []
    cli.error("InvalidNextTokenException", "list-jobs", "--next-token", "not-a-token")


def test_priority_status_and_job_status_errors(cli: Cli, manifest: dict[str, Any]) -> None:
    job_id = cli.ok(*create_args(manifest, "--confirmation-required"))["JobId"]
    wait_status(cli, job_id, "Suspended")
    assert cli.ok("update-job-priority", "--job-id", job_id, "--priority", "42") == {
        "JobId": job_id,
        "Priority": 42,
    }
    assert cli.ok("describe-job", "--job-id", job_id)["Job"]["Priority"] == 42
    # Above the model's range: botocore checks only the minimum, so the server must refuse it.
    too_high = str(2**31)
    cli.error("BadRequestException", "update-job-priority", "--job-id", job_id, "--priority", too_high)
    cli.error(
        "JobStatusException", "update-job-status", "--job-id", job_id, "--requested-job-status", "Complete"
    )
    confirmed = cli.ok("update-job-status", "--job-id", job_id, "--requested-job-status", "Ready")
    assert confirmed["JobId"] == job_id and confirmed["Status"] == "Ready"
    wait_status(cli, job_id, "Complete")
    cli.error(
        "JobStatusException", "update-job-status", "--job-id", job_id, "--requested-job-status", "Cancelled"
    )
    other = cli.ok(*create_args(manifest, "--confirmation-required"))["JobId"]
    wait_status(cli, other, "Suspended")
    cancelled = cli.ok(
        "update-job-status", "--job-id", other, "--requested-job-status", "Cancelled",
        "--status-update-reason", "not needed",
    )  # fmt: skip
    assert cancelled["Status"] == "Cancelled" and cancelled["StatusUpdateReason"] == "not needed"


def test_job_tagging(cli: Cli, manifest: dict[str, Any]) -> None:
    job_id = cli.ok(*create_args(manifest, "--confirmation-required"))["JobId"]
    assert cli.ok("get-job-tagging", "--job-id", job_id) == {"Tags": []}
    tags = [{"Key": "team", "Value": "data"}, {"Key": "empty", "Value": ""}]
    assert cli.ok("put-job-tagging", "--job-id", job_id, "--tags", json.dumps(tags)) == {}
    assert cli.ok("get-job-tagging", "--job-id", job_id)["Tags"] == tags
    too_many = [{"Key": f"k{n}", "Value": "v"} for n in range(51)]
    cli.error("TooManyTagsException", "put-job-tagging", "--job-id", job_id, "--tags", json.dumps(too_many))
    assert cli.ok("get-job-tagging", "--job-id", job_id)["Tags"] == tags  # unchanged
    assert cli.ok("delete-job-tagging", "--job-id", job_id) == {}
    assert cli.ok("get-job-tagging", "--job-id", job_id) == {"Tags": []}


def test_not_found_and_bad_request(cli: Cli, manifest: dict[str, Any]) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    for args in (
        ["describe-job", "--job-id", missing],
        ["update-job-priority", "--job-id", missing, "--priority", "1"],
        ["update-job-status", "--job-id", missing, "--requested-job-status", "Cancelled"],
        ["get-job-tagging", "--job-id", missing],
        ["put-job-tagging", "--job-id", missing, "--tags", "[]"],
        ["delete-job-tagging", "--job-id", missing],
    ):
        assert missing in cli.error("NotFoundException", *args)
    # Both a Manifest and a ManifestGenerator: the CLI sends it, the server refuses it.
    generator = {
        "S3JobManifestGenerator": {"SourceBucket": "arn:aws:s3:::data", "EnableManifestOutput": False}
    }
    cli.error("BadRequestException", *create_args(manifest, "--manifest-generator", json.dumps(generator)))
    assert cli.ok("list-jobs")["Jobs"] == []
