"""Which IAM actions each operation kind needs, per task: the table a role is checked against.

Follows AWS's "Granting permissions for Batch Operations" policies: each task needs the
actions below on its own object's bucket, and version-specific actions (s3:GetObjectVersion,
s3:PutObjectVersionTagging, ...) replace the plain ones only when the manifest row carries a
version id. S3PutObjectCopy also needs write actions on its TargetResource bucket; those that
depend on parameters (tags, ACL, Object Lock) are needed only when the job sets them.
S3DeleteObject and S3batchCsvIngest are s3batch extensions; their actions are S3's own.

The job-level needs (manifest read, report write, generator listing) are in `job_needs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from s3batch.domain.arn import bucket_from_arn, object_from_arn
from s3batch.domain.roles import FUNCTION, Need


@dataclass(frozen=True, slots=True)
class ObjectAction:
    """An action on the task's object: the plain name, and the one used with a version id."""

    plain: str
    versioned: str

    def name(self, versioned: bool) -> str:
        return self.versioned if versioned else self.plain


def _object(plain: str, versioned: str | None = None) -> ObjectAction:
    return ObjectAction(plain, versioned or plain)


GET = _object("s3:GetObject", "s3:GetObjectVersion")
GET_TAGS = _object("s3:GetObjectTagging", "s3:GetObjectVersionTagging")

#: Operation kind → actions on the task's own object (bucket of the manifest row).
OBJECT_ACTIONS: dict[str, tuple[ObjectAction, ...]] = {
    "S3PutObjectCopy": (GET,),  # + GET_TAGS when tags are copied; target needs in _copy_needs
    "S3PutObjectTagging": (_object("s3:PutObjectTagging", "s3:PutObjectVersionTagging"),),
    "S3DeleteObjectTagging": (_object("s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging"),),
    "S3PutObjectAcl": (_object("s3:PutObjectAcl", "s3:PutObjectVersionAcl"),),
    "S3InitiateRestoreObject": (_object("s3:RestoreObject"),),
    "S3PutObjectLegalHold": (_object("s3:PutObjectLegalHold"),),
    "S3PutObjectRetention": (_object("s3:PutObjectRetention"),),
    "S3ReplicateObject": (_object("s3:InitiateReplication"),),
    "S3ComputeObjectChecksum": (GET,),
    "S3UpdateObjectEncryption": (_object("s3:UpdateObjectEncryption"),),
    "S3DeleteObject": (_object("s3:DeleteObject", "s3:DeleteObjectVersion"),),
    "S3batchCsvIngest": (GET,),
    "LambdaInvoke": (),  # lambda:InvokeFunction on the function, see _function_needs
}

#: Operation kind → bucket-level actions on the task's bucket.
BUCKET_ACTIONS: dict[str, tuple[str, ...]] = {
    "S3PutObjectLegalHold": ("s3:GetBucketObjectLockConfiguration",),
    "S3PutObjectRetention": ("s3:GetBucketObjectLockConfiguration",),
    "S3ReplicateObject": ("s3:GetReplicationConfiguration",),
}


def task_needs(operation: str, params: Mapping[str, Any], bucket: str, versioned: bool) -> tuple[Need, ...]:
    """Everything one task of `operation` on an object of `bucket` needs."""
    needs = [Need(a.name(versioned), bucket) for a in OBJECT_ACTIONS.get(operation, ())]
    needs += [Need(action, bucket) for action in BUCKET_ACTIONS.get(operation, ())]
    if operation == "S3PutObjectCopy":
        needs += _copy_needs(params, bucket, versioned)
    elif operation == "S3PutObjectRetention" and params.get("BypassGovernanceRetention"):
        needs.append(Need("s3:BypassGovernanceRetention", bucket))
    elif operation == "LambdaInvoke":
        needs.append(Need("lambda:InvokeFunction", str(params.get("FunctionArn", "")), FUNCTION))
    return tuple(needs)


def _copy_needs(params: Mapping[str, Any], source: str, versioned: bool) -> list[Need]:
    target = bucket_from_arn(str(params.get("TargetResource", "")), "TargetResource")
    copies_tags = "NewObjectTagging" not in params  # absent: the source's tags are copied
    needs = [Need("s3:PutObject", target)]
    if copies_tags:
        needs.append(Need(GET_TAGS.name(versioned), source))
    if copies_tags or params.get("NewObjectTagging"):
        needs.append(Need("s3:PutObjectTagging", target))
    if params.get("CannedAccessControlList") or params.get("AccessControlGrants"):
        needs.append(Need("s3:PutObjectAcl", target))
    if params.get("ObjectLockLegalHoldStatus"):
        needs.append(Need("s3:PutObjectLegalHold", target))
    if params.get("ObjectLockMode") or params.get("ObjectLockRetainUntilDate"):
        needs.append(Need("s3:PutObjectRetention", target))
    return needs


def job_needs(request: Mapping[str, Any]) -> tuple[Need, ...]:
    """What the job itself needs before any task runs: read the manifest (or list the
    generator's source and write its manifest), and write the completion report."""
    needs: list[Need] = []
    manifest = request.get("Manifest")
    if manifest is not None:
        location = manifest["Location"]
        loc = object_from_arn(location["ObjectArn"])
        needs.append(Need(GET.name("ObjectVersionId" in location), loc.bucket))
    generator = (request.get("ManifestGenerator") or {}).get("S3JobManifestGenerator")
    if generator is not None:
        needs.append(Need("s3:ListBucket", bucket_from_arn(generator["SourceBucket"], "SourceBucket")))
        output = generator.get("ManifestOutputLocation")
        if generator.get("EnableManifestOutput") and output:
            needs.append(Need("s3:PutObject", bucket_from_arn(output["Bucket"])))
    report = request.get("Report") or {}
    if report.get("Enabled") and report.get("Bucket"):
        needs.append(Need("s3:PutObject", bucket_from_arn(report["Bucket"])))
    return tuple(needs)
