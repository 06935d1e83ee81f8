"""Roles through the real server and unmodified boto3: RoleArn must name a role of the caller's
account, and each task is held to the role's allow-list (AccessDenied in the report, per task)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from tests.integration.conftest import Env, read_report, report_spec
from tests.integration.test_api_boto3 import (
    ACCOUNT_A,
    ACCOUNT_B,
    KEY_B,
    create,
    serving,
    wait_status,
)

from s3batch.domain.roles import Role, RoleBook, Statement

pytestmark = pytest.mark.integration

ROLE_ARN = f"arn:aws:iam::{ACCOUNT_A}:role/tagger"
SECRET = "tagger-secret-never-stored"


def tagger(**credentials: Any) -> Role:
    """May read manifests, write reports and tag objects in bucket `open-*` only."""
    return Role(
        account_id=ACCOUNT_A,
        name="tagger",
        statements=(
            Statement(actions=("s3:GetObject",), buckets=("manifests",)),
            Statement(actions=("s3:PutObject",), buckets=("reports",)),
            Statement(actions=("s3:PutObjectTagging",), buckets=("open-*",)),
        ),
        **credentials,
    )


def arrange(env: Env) -> dict[str, Any]:
    for bucket in ("manifests", "reports", "open-a", "closed-b"):
        env.make_bucket(bucket)
    rows = [("open-a", "1.txt"), ("closed-b", "1.txt"), ("open-a", "2.txt"), ("closed-b", "2.txt")]
    for bucket, key in rows:
        env.put(bucket, key, b"x")
    return env.manifest("manifests", rows)


def test_a_role_allows_bucket_a_and_denies_bucket_b_per_task(env: Env) -> None:
    manifest = arrange(env)
    with serving(env, RoleBook(roles=(tagger(),))) as server:
        client = server.client()
        job_id = create(client, manifest, RoleArn=ROLE_ARN)
        job = wait_status(client, job_id, "Complete", "Failed")
    assert job["Status"] == "Complete", job.get("FailureReasons")
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 2
    assert job["ProgressSummary"]["NumberOfTasksFailed"] == 2
    rows = read_report(env, "reports", job_id)["rows"]
    assert sorted((r[0], r[1]) for r in rows["succeeded"]) == [("open-a", "1.txt"), ("open-a", "2.txt")]
    failed = {(r[0], r[1]): r for r in rows["failed"]}
    assert sorted(failed) == [("closed-b", "1.txt"), ("closed-b", "2.txt")]
    for row in failed.values():
        assert row[-3:-1] == ["403", "AccessDenied"]
        assert "s3:PutObjectTagging" in row[-1] and "closed-b" in row[-1] and ROLE_ARN in row[-1]
    if env.client is not None:  # S3: the denied objects were never touched
        assert env.client.get_object_tagging(Bucket="closed-b", Key="1.txt")["TagSet"] == []
        assert env.client.get_object_tagging(Bucket="open-a", Key="1.txt")["TagSet"] == [
            {"Key": "team", "Value": "data"}
        ]


def test_unknown_role_is_a_bad_request(local_env: Env) -> None:
    manifest = arrange(local_env)
    with serving(local_env, RoleBook(roles=(tagger(),))) as server:
        client = server.client()
        with pytest.raises(client.exceptions.BadRequestException, match="no role 'nobody'"):
            create(client, manifest, RoleArn=f"arn:aws:iam::{ACCOUNT_A}:role/nobody")
        assert client.list_jobs(AccountId=ACCOUNT_A)["Jobs"] == []


def test_another_accounts_role_is_access_denied(local_env: Env) -> None:
    manifest = arrange(local_env)
    with serving(local_env, RoleBook(roles=(tagger(),))) as server:
        client_b = server.client(KEY_B)
        with pytest.raises(ClientError) as caught:
            create(client_b, manifest, account=ACCOUNT_B, RoleArn=ROLE_ARN)
        error = caught.value.response
        assert error["Error"]["Code"] == "AccessDenied"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert "iam:PassRole" in error["Error"]["Message"]
        assert client_b.list_jobs(AccountId=ACCOUNT_B)["Jobs"] == []


def test_a_role_that_cannot_write_the_report_fails_the_job_before_any_task(local_env: Env) -> None:
    manifest = arrange(local_env)
    with serving(local_env, RoleBook(roles=(tagger(),))) as server:
        client = server.client()
        job_id = create(client, manifest, RoleArn=ROLE_ARN, Report=report_spec("open-a"))
        job = wait_status(client, job_id, "Complete", "Failed")
    assert job["Status"] == "Failed"
    reason = job["FailureReasons"][0]
    assert reason["FailureCode"] == "AccessDenied"
    assert "s3:PutObject" in reason["FailureReason"] and "open-a" in reason["FailureReason"]
    assert job["ProgressSummary"]["TotalNumberOfTasks"] == 0


def test_tasks_sign_with_the_roles_profile(moto_env: Env, tmp_path: Path) -> None:
    """The role's profile decides the credentials: a missing one fails the job, a defined one
    (in the shared credentials file, never in server.toml or the job store) runs it."""
    manifest = arrange(moto_env)
    credentials = tmp_path / "no-aws-credentials"  # where tests/conftest.py points AWS
    credentials.write_text(
        f"[tagger-profile]\naws_access_key_id = tagger\naws_secret_access_key = {SECRET}\n"
    )
    roles = RoleBook(roles=(tagger(profile="tagger-profile"), tagger(profile="missing")))
    with serving(moto_env, RoleBook(roles=roles.roles[:1])) as server:
        client = server.client()
        job = wait_status(client, create(client, manifest, RoleArn=ROLE_ARN), "Complete", "Failed")
        assert job["Status"] == "Complete", job.get("FailureReasons")
        assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 2
    stored = b"".join(p.read_bytes() for p in moto_env.home.glob("jobs.sqlite3*"))
    assert stored and SECRET.encode() not in stored
    with serving(moto_env, RoleBook(roles=roles.roles[1:])) as server:
        client = server.client()
        job = wait_status(client, create(client, manifest, RoleArn=ROLE_ARN), "Complete", "Failed")
    assert job["Status"] == "Failed"
    assert "missing" in job["FailureReasons"][0]["FailureReason"]


def test_a_role_removed_from_the_config_fails_its_job_when_it_runs(local_env: Env) -> None:
    """Jobs record the role's name only; the worker looks it up again when it drives the job."""
    manifest = arrange(local_env)
    other = Role(account_id=ACCOUNT_A, name="other", statements=())
    with serving(local_env, RoleBook(roles=(tagger(), other))) as server:
        client = server.client()
        job_id = create(client, manifest, RoleArn=ROLE_ARN, ConfirmationRequired=True)
        wait_status(client, job_id, "Suspended")
    with serving(local_env, RoleBook(roles=(other,))) as server:  # restarted without "tagger"
        client = server.client()
        client.update_job_status(AccountId=ACCOUNT_A, JobId=job_id, RequestedJobStatus="Ready")
        job = wait_status(client, job_id, "Complete", "Failed")
    assert job["Status"] == "Failed"
    assert job["FailureReasons"][0]["FailureCode"] == "AccessDenied"
    assert "no longer defined" in job["FailureReasons"][0]["FailureReason"]
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 0
