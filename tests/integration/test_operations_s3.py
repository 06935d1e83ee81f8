"""The storage-backed operations (ACL, restore, legal hold, retention, replication, encryption)
as whole jobs: on moto's S3 server, effects read back with boto3; on the folder store, each
fails per task with NotImplemented (501) while the job still completes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_jobs import create, run

from conftest import Env, read_report

pytestmark = pytest.mark.integration

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
DAYS = timedelta(days=1)


def failed_rows(env: Env, bucket: str, job_id: str) -> dict[str, list[str]]:
    """Failed report rows by key: [TaskStatus, HTTPStatusCode, ErrorCode, ResultMessage]."""
    rows = read_report(env, bucket, job_id)["rows"].get("failed", [])
    return {row[1]: row[3:] for row in rows}


def run_job(env: Env, bucket: str, op: dict[str, Any], keys: list[str]) -> tuple[dict[str, Any], str]:
    batch, job_id = create(env, bucket, op, [(bucket, k) for k in keys])
    job = run(batch, job_id)
    assert job["Status"] == "Complete", job
    return job, job_id


def counts(job: dict[str, Any]) -> tuple[int, int]:
    summary = job["ProgressSummary"]
    return summary["NumberOfTasksSucceeded"], summary["NumberOfTasksFailed"]


def lock_bucket(env: Env, bucket: str) -> None:
    env.client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)


def assert_missing_failed(env: Env, bucket: str, job_id: str, key: str = "missing") -> None:
    row = failed_rows(env, bucket, job_id)[key]
    assert row[:3] == ["failed", "404", "NoSuchKey"], row


# -- S3PutObjectAcl -----------------------------------------------------------------------


def test_acl_grants_and_canned(moto_env: Env, bucket_name: str) -> None:
    env = moto_env
    env.make_bucket(bucket_name)
    env.put(bucket_name, "a.txt", b"a")
    op = {
        "S3PutObjectAcl": {
            "AccessControlPolicy": {
                "AccessControlList": {
                    "Owner": {"ID": "owner-id", "DisplayName": "me"},
                    "Grants": [
                        {"Grantee": {"TypeIdentifier": "uri", "Identifier": ALL_USERS}, "Permission": "READ"},
                        {"Grantee": {"TypeIdentifier": "id", "Identifier": "abc"}, "Permission": "READ_ACP"},
                    ],
                }
            }
        }
    }
    job, job_id = run_job(env, bucket_name, op, ["a.txt", "missing"])
    assert counts(job) == (1, 1)
    grants = env.client.get_object_acl(Bucket=bucket_name, Key="a.txt")["Grants"]
    assert {(g["Grantee"].get("URI") or g["Grantee"].get("ID"), g["Permission"]) for g in grants} == {
        (ALL_USERS, "READ"),
        ("abc", "READ_ACP"),
    }  # replaced: the owner's FULL_CONTROL is gone
    assert_missing_failed(env, bucket_name, job_id)

    canned = {"S3PutObjectAcl": {"AccessControlPolicy": {"CannedAccessControlList": "private"}}}
    job, _ = run_job(env, bucket_name, canned, ["a.txt"])
    grants = env.client.get_object_acl(Bucket=bucket_name, Key="a.txt")["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]


def test_copy_access_control_grants(moto_env: Env, bucket_name: str) -> None:
    env = moto_env
    env.make_bucket(bucket_name)
    env.put(bucket_name, "src.txt", b"x")
    grants = [{"Grantee": {"TypeIdentifier": "uri", "Identifier": ALL_USERS}, "Permission": "READ"}]
    op = {
        "S3PutObjectCopy": {
            "TargetResource": f"arn:aws:s3:::{bucket_name}",
            "TargetKeyPrefix": "copied",
            "AccessControlGrants": grants,
        }
    }
    run_job(env, bucket_name, op, ["src.txt"])
    acl = env.client.get_object_acl(Bucket=bucket_name, Key="copied/src.txt")["Grants"]
    assert (ALL_USERS, "READ") in {(g["Grantee"].get("URI"), g["Permission"]) for g in acl}


# -- S3InitiateRestoreObject --------------------------------------------------------------


def restore_expiry(env: Env, bucket: str, key: str) -> str:
    header = str(env.client.head_object(Bucket=bucket, Key=key).get("Restore", ""))
    assert 'ongoing-request="false"' in header, header  # moto completes restores at once
    return header


def test_restore_initiates_and_a_finished_restore_is_extended(moto_env: Env, bucket_name: str) -> None:
    env = moto_env
    env.make_bucket(bucket_name)
    env.client.put_object(Bucket=bucket_name, Key="cold", Body=b"x", StorageClass="GLACIER")
    env.put(bucket_name, "warm", b"x")
    op = {"S3InitiateRestoreObject": {"ExpirationInDays": 1, "GlacierJobTier": "BULK"}}
    job, job_id = run_job(env, bucket_name, op, ["cold", "missing", "warm"])
    assert counts(job) == (1, 2)
    first = restore_expiry(env, bucket_name, "cold")
    failed = failed_rows(env, bucket_name, job_id)
    assert_missing_failed(env, bucket_name, job_id)
    assert failed["warm"][2] == "InvalidObjectState"  # not in an archive class

    # Restoring a finished restore again succeeds and moves the expiry (AWS rule).
    op = {"S3InitiateRestoreObject": {"ExpirationInDays": 5, "GlacierJobTier": "STANDARD"}}
    job, _ = run_job(env, bucket_name, op, ["cold"])
    assert counts(job) == (1, 0)
    assert restore_expiry(env, bucket_name, "cold") != first


# -- S3PutObjectLegalHold -----------------------------------------------------------------


def test_legal_hold_on_and_off(moto_env: Env, bucket_name: str) -> None:
    env = moto_env
    lock_bucket(env, bucket_name)
    env.put(bucket_name, "k", b"x")
    op = {"S3PutObjectLegalHold": {"LegalHold": {"Status": "ON"}}}
    job, job_id = run_job(env, bucket_name, op, ["k", "missing"])
    assert counts(job) == (1, 1)
    assert env.client.get_object_legal_hold(Bucket=bucket_name, Key="k")["LegalHold"]["Status"] == "ON"
    assert_missing_failed(env, bucket_name, job_id)  # moto itself answers 500 here

    run_job(env, bucket_name, {"S3PutObjectLegalHold": {"LegalHold": {"Status": "OFF"}}}, ["k"])
    assert env.client.get_object_legal_hold(Bucket=bucket_name, Key="k")["LegalHold"]["Status"] == "OFF"


def test_legal_hold_without_object_lock_fails_in_preparing(moto_env: Env, bucket_name: str) -> None:
    # AWS checks the bucket's Object Lock configuration before the job runs; the capability
    # probe does the same with a scratch object, so no task is attempted.
    env = moto_env
    env.make_bucket(bucket_name)
    env.put(bucket_name, "k", b"x")
    batch, job_id = create(
        env, bucket_name, {"S3PutObjectLegalHold": {"LegalHold": {"Status": "ON"}}}, [(bucket_name, "k")]
    )
    job = run(batch, job_id)
    assert job["Status"] == "Failed"
    [reason] = job["FailureReasons"]
    assert reason["FailureCode"] == "EndpointCapability" and "InvalidRequest" in reason["FailureReason"]
    assert counts(job) == (0, 0)
    assert env.client.list_objects_v2(Bucket=bucket_name)["KeyCount"] == 2  # k + manifest: no scratch left


# -- S3PutObjectRetention -----------------------------------------------------------------


def retention_op(mode: str | None, until: datetime | None, bypass: bool = False) -> dict[str, Any]:
    retention = {} if mode is None else {"Mode": mode, "RetainUntilDate": until.isoformat()}  # type: ignore[union-attr]
    return {"S3PutObjectRetention": {"Retention": retention, "BypassGovernanceRetention": bypass}}


def test_retention_set_extend_and_refuse_shortening(moto_env: Env, bucket_name: str) -> None:
    env = moto_env
    lock_bucket(env, bucket_name)
    env.put(bucket_name, "k", b"x")
    until = datetime.now(UTC).replace(microsecond=0) + 5 * DAYS
    job, job_id = run_job(env, bucket_name, retention_op("COMPLIANCE", until), ["k", "missing"])
    assert counts(job) == (1, 1)
    head = env.client.head_object(Bucket=bucket_name, Key="k")
    assert (head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]) == ("COMPLIANCE", until)
    assert_missing_failed(env, bucket_name, job_id)

    for weaker in (retention_op("COMPLIANCE", until - DAYS), retention_op(None, None, bypass=True)):
        job, job_id = run_job(env, bucket_name, weaker, ["k"])
        assert counts(job) == (0, 1)
        row = failed_rows(env, bucket_name, job_id)["k"]
        assert row[1:3] == ["403", "AccessDenied"] and "COMPLIANCE" in row[3]
    assert env.client.head_object(Bucket=bucket_name, Key="k")["ObjectLockRetainUntilDate"] == until

    job, _ = run_job(env, bucket_name, retention_op("COMPLIANCE", until + DAYS), ["k"])
    assert counts(job) == (1, 0)
    assert env.client.head_object(Bucket=bucket_name, Key="k")["ObjectLockRetainUntilDate"] == until + DAYS


def test_governance_retention_can_be_removed(moto_env: Env, bucket_name: str) -> None:
    env = moto_env
    lock_bucket(env, bucket_name)
    env.put(bucket_name, "k", b"x")
    until = datetime.now(UTC).replace(microsecond=0) + 2 * DAYS
    run_job(env, bucket_name, retention_op("GOVERNANCE", until), ["k"])
    assert env.client.head_object(Bucket=bucket_name, Key="k")["ObjectLockMode"] == "GOVERNANCE"
    job, _ = run_job(env, bucket_name, retention_op(None, None, bypass=True), ["k"])
    assert counts(job) == (1, 0)
    assert "ObjectLockMode" not in env.client.head_object(Bucket=bucket_name, Key="k")


# -- S3ReplicateObject --------------------------------------------------------------------


def test_replicate_by_bucket_configuration(moto_env: Env, bucket_name: str) -> None:
    env = moto_env
    dst = bucket_name + "-dst"
    env.make_bucket(bucket_name)
    env.make_bucket(dst)
    env.client.put_bucket_versioning(Bucket=bucket_name, VersioningConfiguration={"Status": "Enabled"})
    env.client.put_bucket_replication(
        Bucket=bucket_name,
        ReplicationConfiguration={
            "Role": "arn:aws:iam::123456789012:role/replication",
            "Rules": [
                {
                    "ID": "all",
                    "Priority": 1,
                    "Status": "Enabled",
                    "Filter": {"Prefix": ""},
                    "DeleteMarkerReplication": {"Status": "Disabled"},
                    "Destination": {"Bucket": f"arn:aws:s3:::{dst}", "StorageClass": "STANDARD_IA"},
                }
            ],
        },
    )
    env.client.put_object(
        Bucket=bucket_name, Key="r.txt", Body=b"data", Metadata={"origin": "lab"}, Tagging="color=blue"
    )
    job, job_id = run_job(env, bucket_name, {"S3ReplicateObject": {}}, ["r.txt", "missing"])
    assert counts(job) == (1, 1)
    head = env.client.head_object(Bucket=dst, Key="r.txt")
    assert head["Metadata"] == {"origin": "lab"} and head["StorageClass"] == "STANDARD_IA"
    assert env.client.get_object_tagging(Bucket=dst, Key="r.txt")["TagSet"] == [
        {"Key": "color", "Value": "blue"}
    ]
    assert env.get(dst, "r.txt") == b"data"
    assert_missing_failed(env, bucket_name, job_id)
    succeeded = read_report(env, bucket_name, job_id)["rows"]["succeeded"]
    assert [row[-1] for row in succeeded] == ["Successful"]


def test_replicate_with_destination_extension_or_nothing(moto_env: Env, bucket_name: str) -> None:
    env = moto_env
    dst = bucket_name + "-dst"
    env.make_bucket(bucket_name)
    env.make_bucket(dst)
    env.put(bucket_name, "r.txt", b"data")
    job, job_id = run_job(env, bucket_name, {"S3ReplicateObject": {}}, ["r.txt"])
    assert counts(job) == (0, 1)
    assert failed_rows(env, bucket_name, job_id)["r.txt"][2] == "ReplicationConfigurationNotFoundError"

    op = {"S3ReplicateObject": {"DestinationBucket": f"arn:aws:s3:::{dst}"}}
    job, _ = run_job(env, bucket_name, op, ["r.txt"])
    assert counts(job) == (1, 0)
    assert env.get(dst, "r.txt") == b"data"


# -- S3UpdateObjectEncryption -------------------------------------------------------------


def test_update_encryption_to_sse_kms_keeps_tags(moto_env: Env, bucket_name: str) -> None:
    env = moto_env
    env.make_bucket(bucket_name)
    env.client.put_object(Bucket=bucket_name, Key="e.txt", Body=b"secret", Tagging="t=1", Metadata={"m": "v"})
    op = {
        "S3UpdateObjectEncryption": {
            "ObjectEncryption": {"SSEKMS": {"KMSKeyArn": KMS_KEY, "BucketKeyEnabled": True}}
        }
    }
    job, job_id = run_job(env, bucket_name, op, ["e.txt", "missing"])
    assert counts(job) == (1, 1)
    head = env.client.head_object(Bucket=bucket_name, Key="e.txt")
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"], head["BucketKeyEnabled"]) == (
        "aws:kms",
        KMS_KEY,
        True,
    )
    assert head["Metadata"] == {"m": "v"}
    assert env.client.get_object_tagging(Bucket=bucket_name, Key="e.txt")["TagSet"] == [
        {"Key": "t", "Value": "1"}
    ]
    assert env.get(bucket_name, "e.txt") == b"secret"
    assert_missing_failed(env, bucket_name, job_id)


# -- the folder store ---------------------------------------------------------------------

FOLDER_OPERATIONS = {
    "acl": {"S3PutObjectAcl": {"AccessControlPolicy": {"CannedAccessControlList": "private"}}},
    "restore": {"S3InitiateRestoreObject": {"ExpirationInDays": 1}},
    "legal_hold": {"S3PutObjectLegalHold": {"LegalHold": {"Status": "ON"}}},
    "retention": {"S3PutObjectRetention": {"Retention": {}}},
    "encryption": {"S3UpdateObjectEncryption": {"ObjectEncryption": {"SSEKMS": {"KMSKeyArn": KMS_KEY}}}},
}


@pytest.mark.parametrize("op", FOLDER_OPERATIONS.values(), ids=FOLDER_OPERATIONS.keys())
def test_folder_store_refuses_what_it_cannot_do_in_preparing(
    local_env: Env, bucket_name: str, op: dict[str, Any]
) -> None:
    env = local_env
    env.make_bucket(bucket_name)
    env.put(bucket_name, "a.txt", b"a")
    env.put(bucket_name, "b.txt", b"b")
    batch, job_id = create(env, bucket_name, op, [(bucket_name, k) for k in ("a.txt", "b.txt")])
    job = run(batch, job_id)
    assert job["Status"] == "Failed"
    [reason] = job["FailureReasons"]
    assert reason["FailureCode"] == "EndpointCapability"
    assert "NotImplemented" in reason["FailureReason"]
    assert counts(job) == (0, 0)  # no task ran
    assert env.get(bucket_name, "a.txt") == b"a" and env.get(bucket_name, "b.txt") == b"b"
    assert sorted(p.name for p in (env.root / bucket_name).iterdir()) == ["a.txt", "b.txt", "manifest.csv"]


def test_folder_store_replicates_to_the_destination_named_in_the_job(
    local_env: Env, bucket_name: str
) -> None:
    env = local_env
    env.make_bucket(bucket_name)
    env.make_bucket("elsewhere")
    env.put(bucket_name, "a.txt", b"a")
    op = {"S3ReplicateObject": {"DestinationBucket": "arn:aws:s3:::elsewhere"}}
    job, _ = run_job(env, bucket_name, op, ["a.txt"])
    assert job["Status"] == "Complete" and counts(job) == (1, 0)
    assert env.get("elsewhere", "a.txt") == b"a"
