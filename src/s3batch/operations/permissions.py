"""Which IAM actions a job and its tasks need: the tables a role is checked against.

Per task, each operation kind states its own needs (`KIND.permissions`, in the vocabulary of
`operations/actions.py`, after AWS's "Granting permissions for Batch Operations" policies);
`task_needs` looks them up by operation name, and `object_actions` / `bucket_actions` derive the
whole table from the registry. S3DeleteObject and S3batchCsvIngest are s3batch extensions;
their actions are S3's own.

The job-level needs (manifest read, report write, generator listing) are in `job_needs`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s3batch.domain.arn import bucket_from_arn, object_from_arn
from s3batch.domain.roles import Need
from s3batch.operations import kind_of, kinds
from s3batch.operations.actions import GET, ObjectAction


def task_needs(operation: str, params: Mapping[str, Any], bucket: str, versioned: bool) -> tuple[Need, ...]:
    """Everything one task of `operation` on an object of `bucket` needs."""
    return kind_of(operation).permissions.needs(params, bucket, versioned)


def object_actions() -> dict[str, tuple[ObjectAction, ...]]:
    """Operation kind → actions on the task's own object (bucket of the manifest row)."""
    return {kind.name: kind.permissions.object_actions for kind in kinds()}


def bucket_actions() -> dict[str, tuple[str, ...]]:
    """Operation kind → bucket-level actions on the task's bucket."""
    return {kind.name: kind.permissions.bucket_actions for kind in kinds()}


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
