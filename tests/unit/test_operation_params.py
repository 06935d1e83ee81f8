"""CreateJob-time validation of the storage-backed operations: every bad input is a
BadRequest whose message names the field; good inputs pass."""

from __future__ import annotations

from typing import Any

import pytest

from s3batch.errors import BadRequest
from s3batch.operations import get_kind

KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
GRANT = {"Grantee": {"TypeIdentifier": "id", "Identifier": "abc"}, "Permission": "READ"}
OWNER = {"ID": "owner-id"}

GOOD: list[tuple[str, dict[str, Any]]] = [
    ("S3PutObjectAcl", {"AccessControlPolicy": {"CannedAccessControlList": "public-read"}}),
    ("S3PutObjectAcl", {"AccessControlPolicy": {"AccessControlList": {"Owner": OWNER, "Grants": [GRANT]}}}),
    ("S3InitiateRestoreObject", {"ExpirationInDays": 0, "GlacierJobTier": "BULK"}),
    ("S3InitiateRestoreObject", {}),
    ("S3PutObjectLegalHold", {"LegalHold": {"Status": "OFF"}}),
    (
        "S3PutObjectRetention",
        {"Retention": {"Mode": "GOVERNANCE", "RetainUntilDate": "2030-01-01T00:00:00Z"}},
    ),
    ("S3PutObjectRetention", {"Retention": {}, "BypassGovernanceRetention": True}),
    ("S3ReplicateObject", {}),
    ("S3ReplicateObject", {"DestinationBucket": "arn:aws:s3:::dst"}),
    ("S3UpdateObjectEncryption", {"ObjectEncryption": {"SSEKMS": {"KMSKeyArn": KMS_KEY}}}),
    (
        "S3UpdateObjectEncryption",
        {"ObjectEncryption": {"SSE-KMS": {"KMSKeyArn": KMS_KEY, "BucketKeyEnabled": True}}},
    ),
    ("S3PutObjectCopy", {"TargetResource": "arn:aws:s3:::dst", "AccessControlGrants": [GRANT]}),
]

BAD: list[tuple[str, dict[str, Any], str]] = [
    ("S3PutObjectAcl", {}, "AccessControlPolicy (an object) is required"),
    (
        "S3PutObjectAcl",
        {"AccessControlPolicy": {}},
        "exactly one of AccessControlList or CannedAccessControlList",
    ),
    (
        "S3PutObjectAcl",
        {
            "AccessControlPolicy": {
                "CannedAccessControlList": "private",
                "AccessControlList": {"Owner": OWNER},
            }
        },
        "exactly one of",
    ),
    (
        "S3PutObjectAcl",
        {"AccessControlPolicy": {"CannedAccessControlList": "everyone"}},
        "must be one of private",
    ),
    (
        "S3PutObjectAcl",
        {"AccessControlPolicy": {"AccessControlList": {"Grants": []}}},
        "Owner with a non-empty ID",
    ),
    (
        "S3PutObjectAcl",
        {"AccessControlPolicy": {"AccessControlList": {"Owner": OWNER, "Grants": [{"Permission": "READ"}]}}},
        "needs a Grantee object",
    ),
    (
        "S3PutObjectAcl",
        {
            "AccessControlPolicy": {
                "AccessControlList": {
                    "Owner": OWNER,
                    "Grants": [
                        {"Grantee": {"TypeIdentifier": "arn", "Identifier": "x"}, "Permission": "READ"}
                    ],
                }
            }
        },
        "TypeIdentifier must be one of id, emailAddress, uri",
    ),
    (
        "S3PutObjectAcl",
        {
            "AccessControlPolicy": {
                "AccessControlList": {"Owner": OWNER, "Grants": [{**GRANT, "Permission": "ALL"}]}
            }
        },
        "Permission must be one of FULL_CONTROL",
    ),
    ("S3PutObjectAcl", {"AccessControlPolicy": {"CannedAccessControlList": "private"}, "x": 1}, "unknown"),
    ("S3InitiateRestoreObject", {"ExpirationInDays": -1}, "ExpirationInDays must be a whole number >= 0"),
    ("S3InitiateRestoreObject", {"ExpirationInDays": "3"}, "ExpirationInDays must be a whole number"),
    (
        "S3InitiateRestoreObject",
        {"GlacierJobTier": "EXPEDITED"},
        "GlacierJobTier must be one of BULK, STANDARD",
    ),
    ("S3PutObjectLegalHold", {}, "LegalHold{Status: ON|OFF} is required"),
    ("S3PutObjectLegalHold", {"LegalHold": {"Status": "on"}}, "Status must be one of ON, OFF"),
    ("S3PutObjectRetention", {}, "Retention is required"),
    (
        "S3PutObjectRetention",
        {"Retention": {"Mode": "GOVERNANCE"}},
        "both Mode and RetainUntilDate, or neither",
    ),
    (
        "S3PutObjectRetention",
        {"Retention": {"Mode": "LEGAL", "RetainUntilDate": "2030-01-01T00:00:00Z"}},
        "Mode must be one of COMPLIANCE, GOVERNANCE",
    ),
    (
        "S3PutObjectRetention",
        {"Retention": {"Mode": "GOVERNANCE", "RetainUntilDate": "next year"}},
        "RetainUntilDate must be an ISO 8601 timestamp",
    ),
    ("S3PutObjectRetention", {"Retention": {}, "BypassGovernanceRetention": "yes"}, "must be true or false"),
    ("S3ReplicateObject", {"DestinationBucket": "dst/sub"}, "expected a bucket ARN"),
    (
        "S3ReplicateObject",
        {"Destination": "arn:aws:s3:::dst"},
        "unknown or unsupported parameter(s): Destination",
    ),
    ("S3UpdateObjectEncryption", {}, "ObjectEncryption{SSEKMS{KMSKeyArn}} is required"),
    ("S3UpdateObjectEncryption", {"ObjectEncryption": {"SSEKMS": {}}}, "KMSKeyArn is required"),
    (
        "S3UpdateObjectEncryption",
        {"ObjectEncryption": {"SSEKMS": {"KMSKeyArn": "arn:aws:s3:::not-a-kms-key-at-all"}}},
        "must look like arn:aws:kms",
    ),
    (
        "S3UpdateObjectEncryption",
        {"ObjectEncryption": {"SSEKMS": {"KMSKeyArn": KMS_KEY, "BucketKeyEnabled": "yes"}}},
        "BucketKeyEnabled must be true or false",
    ),
    (
        "S3PutObjectCopy",
        {"TargetResource": "arn:aws:s3:::dst", "AccessControlGrants": [{**GRANT, "Permission": "WRITE"}]},
        "Permission must be one of FULL_CONTROL, READ, READ_ACP, WRITE_ACP",
    ),
    (
        "S3PutObjectCopy",
        {"TargetResource": "arn:aws:s3:::dst", "AccessControlGrants": GRANT},
        "must be a list",
    ),
]


@pytest.mark.parametrize(("name", "params"), GOOD)
def test_valid_parameters_pass(name: str, params: dict[str, Any]) -> None:
    get_kind(name).validate(params)


@pytest.mark.parametrize(("name", "params", "message"), BAD)
def test_bad_parameters_are_bad_requests(name: str, params: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        get_kind(name).validate(params)
    assert message in caught.value.message
    assert name in caught.value.message  # names the operation and field


# -- rules the operations apply per task (no server needed) --------------------------------


def test_compliance_retention_can_only_be_extended() -> None:
    from datetime import UTC, datetime, timedelta

    from s3batch.domain.objects import ObjectInfo, Retention
    from s3batch.operations.retention import compliance_violation

    now = datetime(2030, 1, 1, tzinfo=UTC)
    until = now + timedelta(days=5)
    locked = ObjectInfo(
        bucket="b",
        key="k",
        size=1,
        etag="e",
        last_modified=now,
        lock_mode="COMPLIANCE",
        lock_retain_until=until,
    )
    assert compliance_violation(locked, Retention("COMPLIANCE", until + timedelta(days=1)), now) is None
    assert "only be extended" in str(
        compliance_violation(locked, Retention("COMPLIANCE", until - timedelta(days=1)), now)
    )
    assert "cannot be removed" in str(compliance_violation(locked, Retention(), now))
    assert "GOVERNANCE" in str(compliance_violation(locked, Retention("GOVERNANCE", until), now))
    assert compliance_violation(locked, Retention(), until + timedelta(seconds=1)) is None  # expired


async def test_restore_in_progress_refusal_names_the_rule() -> None:
    from s3batch.domain.task import Task
    from s3batch.errors import StorageError
    from s3batch.operations.base import JobContext, OperationContext
    from s3batch.storage.base import Capability
    from s3batch.storage.config import LocalConfig
    from s3batch.storage.memory import MemoryStore

    class RestoringStore(MemoryStore):
        """Declares restores, as an S3 endpoint does: its `restore` answers what `fail` sets."""

        @property
        def capabilities(self) -> frozenset[Capability]:
            return super().capabilities | {Capability.RESTORE}

    store = RestoringStore()
    await store.create_bucket("b")
    refusal = StorageError("RestoreAlreadyInProgress", "Object restore is already in progress", 409)
    store.fail("restore", refusal, key="k")
    ctx = OperationContext(
        job=JobContext(job_id="j", account_id="0", region="us-east-1", storage=LocalConfig(root="/nowhere")),
        store=store,
    )
    op = get_kind("S3InitiateRestoreObject").create({"ExpirationInDays": 2}, ctx)
    result = await op.apply(Task(seq=0, bucket="b", raw_key="k", key="k"))
    assert (result.error_code, result.http_status) == ("RestoreAlreadyInProgress", 409)
    assert "same ExpirationInDays and a faster tier" in result.message
