"""CreateJob requests as typed values: every field of a normalized request reaches its typed home."""

from __future__ import annotations

from typing import Any

import pytest

from s3batch.domain.generator import IncludeVersions
from s3batch.domain.manifest import ManifestFormat
from s3batch.domain.report import ReportScope
from s3batch.domain.request import normalize_create_job
from s3batch.domain.spec import JobRequest, ManifestSpec, OperationSpec, ReportSpec
from s3batch.operations import operation_names

TAGGING = {"S3PutObjectTagging": {"TagSet": [{"Key": "k", "Value": "v"}]}}
MANIFEST = {
    "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key", "VersionId"]},
    "Location": {
        "ObjectArn": "arn:aws:s3:::m-bucket/path/manifest.csv",
        "ETag": "abc",
        "ObjectVersionId": "v1",
    },
}


def parse(**request: Any) -> JobRequest:
    base: dict[str, Any] = {
        "Operation": TAGGING,
        "Report": {"Enabled": False},
        "Priority": 7,
        "Manifest": MANIFEST,
    }
    return JobRequest.parse(normalize_create_job({**base, **request}, operations=operation_names()))


def test_a_manifest_request_parses_into_typed_values() -> None:
    spec = parse(
        Report={"Enabled": True, "Bucket": "arn:aws:s3:::reports", "Prefix": "out",
                "ReportScope": "FailedTasksOnly", "Format": "Report_CSV_20180820"},
        ConfirmationRequired=True, Description="d", RoleArn="arn:aws:iam::123456789012:role/r",
        Tags=[{"Key": "team", "Value": "data"}],
    )  # fmt: skip
    assert spec.operation == OperationSpec("S3PutObjectTagging", TAGGING["S3PutObjectTagging"])
    assert spec.operation.as_json == TAGGING
    assert spec.manifest == ManifestSpec(
        format=ManifestFormat.CSV, fields=("Bucket", "Key", "VersionId"),
        bucket="m-bucket", key="path/manifest.csv", etag="abc", version_id="v1",
    )  # fmt: skip
    assert spec.report == ReportSpec(
        enabled=True, bucket="reports", prefix="out", scope=ReportScope.FAILED_ONLY
    )
    assert spec.report.failed_only
    assert (spec.priority, spec.confirmation_required) == (7, True)
    assert (spec.description, spec.role_arn) == ("d", "arn:aws:iam::123456789012:role/r")
    assert spec.tags == (("team", "data"),)
    assert spec.generator is None
    assert spec.raw["Manifest"]["Location"]["ETag"] == "abc"


def test_defaults_when_optional_fields_are_absent() -> None:
    spec = parse()
    assert spec.report == ReportSpec(enabled=False)
    assert not spec.report.failed_only
    assert (spec.confirmation_required, spec.description, spec.role_arn, spec.tags) == (False, None, None, ())


def test_a_generator_request_has_a_generator_and_no_manifest() -> None:
    generator = {
        "S3JobManifestGenerator": {
            "SourceBucket": "arn:aws:s3:::src",
            "EnableManifestOutput": False,
            "Filter": {"KeyNameConstraint": {"MatchAnyPrefix": ["logs/"]}},
        }
    }
    spec = JobRequest.parse(
        normalize_create_job(
            {
                "Operation": TAGGING,
                "Report": {"Enabled": False},
                "Priority": 1,
                "ManifestGenerator": generator,
            },
            operations=operation_names(),
        )
    )
    assert spec.manifest is None
    assert spec.generator is not None
    assert spec.generator.source_bucket == "src"
    assert spec.generator.include_versions is IncludeVersions.CURRENT
    assert spec.generator.filter.prefixes == ("logs/",)


@pytest.mark.parametrize("fmt", ["S3InventoryReport_CSV_20161130"])
def test_an_inventory_manifest_has_no_fields(fmt: str) -> None:
    spec = parse(Manifest={"Spec": {"Format": fmt}, "Location": MANIFEST["Location"]})
    assert spec.manifest is not None
    assert spec.manifest.format is ManifestFormat(fmt) and spec.manifest.fields is None


def test_the_runtime_record_round_trips_through_its_stored_form() -> None:
    from s3batch.domain.function import FunctionSpec
    from s3batch.domain.roles import RoleRef
    from s3batch.domain.spec import JobRuntime
    from s3batch.domain.stores import LocalConfig, S3Config

    full = JobRuntime(
        storage=S3Config(endpoint_url="http://127.0.0.1:9000", region="eu-west-1"),
        region="eu-west-1",
        identity="f" * 32,
        function=FunctionSpec(arn="python:m:h", name="h", handler="m:h", sys_path=("/src",)),
        function_env={"AWS_REGION": "eu-west-1"},
        role=RoleRef("111122223333", "batch"),
    )
    stored = full.as_json()
    assert tuple(stored["function"]["sys_path"]) == ("/src",)
    assert JobRuntime.parse(stored) == full
    bare = JobRuntime(storage=LocalConfig(root="/data"), region="us-east-1")
    assert bare.as_json() == {"storage": {"root": "/data", "kind": "local"}, "region": "us-east-1"}
    assert JobRuntime.parse(bare.as_json()) == bare
    # A record written before regions and fingerprints were recorded.
    assert JobRuntime.parse({"storage": {"root": "/data", "kind": "local"}}) == bare


def test_a_job_parses_its_request_once_and_again_after_evolve() -> None:
    from s3batch.domain.job import Job, JobStatus

    normalized = normalize_create_job(
        {"Operation": TAGGING, "Report": {"Enabled": False}, "Priority": 3, "Manifest": MANIFEST},
        operations=operation_names(),
    )
    job = Job(
        job_id="j", account_id="1", status=JobStatus.NEW, priority=3, request=normalized,
        runtime={"storage": {"root": "/data", "kind": "local"}}, creation_time=0.0,
    )  # fmt: skip
    assert job.spec is job.spec  # parsed once
    assert job.spec.operation.name == "S3PutObjectTagging"
    assert job.setup.storage.kind == "local"
    moved = job.evolve(status=JobStatus.PREPARING)
    assert moved.spec == job.spec and moved == job.evolve(status=JobStatus.PREPARING)
