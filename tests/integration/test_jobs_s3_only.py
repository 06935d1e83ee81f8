"""Operations that need S3 features a folder lacks: tags and versions, on moto's server."""

from __future__ import annotations

import pytest
from test_jobs import create, run, seed

from conftest import Env

pytestmark = pytest.mark.integration


def test_tagging_replace_then_delete(moto_env: Env, bucket_name: str) -> None:
    env = moto_env
    seed(env, bucket_name, ["a b.txt", "c+d.txt"])
    env.client.put_object_tagging(
        Bucket=bucket_name, Key="a b.txt", Tagging={"TagSet": [{"Key": "old", "Value": "1"}]}
    )
    rows = [(bucket_name, "a b.txt"), (bucket_name, "c+d.txt"), (bucket_name, "nope")]
    op = {"S3PutObjectTagging": {"TagSet": [{"Key": "team", "Value": "data"}]}}
    batch, job_id = create(env, bucket_name, op, rows)
    job = run(batch, job_id)
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 2
    assert job["ProgressSummary"]["NumberOfTasksFailed"] == 1
    for key in ("a b.txt", "c+d.txt"):
        tags = env.client.get_object_tagging(Bucket=bucket_name, Key=key)["TagSet"]
        assert tags == [{"Key": "team", "Value": "data"}]  # replaced, not merged

    batch, job_id = create(env, bucket_name, {"S3DeleteObjectTagging": {}}, rows[:2])
    assert run(batch, job_id)["Status"] == "Complete"
    assert env.client.get_object_tagging(Bucket=bucket_name, Key="a b.txt")["TagSet"] == []


def test_copy_tags_and_metadata_directives(moto_env: Env, bucket_name: str) -> None:
    env = moto_env
    env.make_bucket(bucket_name)
    env.client.put_object(
        Bucket=bucket_name, Key="src.txt", Body=b"x", Metadata={"origin": "lab"},
        Tagging="color=blue", ContentType="text/plain",
    )  # fmt: skip
    target = f"arn:aws:s3:::{bucket_name}"
    rows = [(bucket_name, "src.txt")]
    batch, job_id = create(
        env,
        bucket_name,
        {"S3PutObjectCopy": {"TargetResource": target, "TargetKeyPrefix": "same"}},
        rows,
    )
    assert run(batch, job_id)["Status"] == "Complete"
    head = env.client.head_object(Bucket=bucket_name, Key="same/src.txt")
    assert head["Metadata"] == {"origin": "lab"}
    assert env.client.get_object_tagging(Bucket=bucket_name, Key="same/src.txt")["TagSet"] == [
        {"Key": "color", "Value": "blue"}
    ]
    op = {
        "S3PutObjectCopy": {
            "TargetResource": target,
            "TargetKeyPrefix": "new",
            "MetadataDirective": "REPLACE",
            "NewObjectMetadata": {
                "ContentType": "application/x-test",
                "UserMetadata": {"stage": "2"},
            },
            "NewObjectTagging": [],
            "StorageClass": "STANDARD_IA",
        }
    }
    batch, job_id = create(env, bucket_name, op, rows)
    assert run(batch, job_id)["Status"] == "Complete"
    head = env.client.head_object(Bucket=bucket_name, Key="new/src.txt")
    assert head["Metadata"] == {"stage": "2"}
    assert head["ContentType"] == "application/x-test"
    assert head.get("StorageClass") == "STANDARD_IA"
    assert env.client.get_object_tagging(Bucket=bucket_name, Key="new/src.txt")["TagSet"] == []


def test_versioned_delete_removes_only_the_listed_version(moto_env: Env, bucket_name: str) -> None:
    env = moto_env
    env.make_bucket(bucket_name)
    env.client.put_bucket_versioning(Bucket=bucket_name, VersioningConfiguration={"Status": "Enabled"})
    v1 = env.client.put_object(Bucket=bucket_name, Key="k", Body=b"one")["VersionId"]
    env.client.put_object(Bucket=bucket_name, Key="k", Body=b"two")
    batch = env.batch()
    body = f"{bucket_name},k,{v1}\n".encode()
    manifest = env.raw_manifest(bucket_name, body)
    manifest["Spec"]["Fields"] = ["Bucket", "Key", "VersionId"]
    job_id = batch.create_job(
        Operation={"S3DeleteObject": {}}, Manifest=manifest, Report={"Enabled": False}, Priority=1
    )["JobId"]
    assert run(batch, job_id)["ProgressSummary"]["NumberOfTasksSucceeded"] == 1
    versions = env.client.list_object_versions(Bucket=bucket_name, Prefix="k")["Versions"]
    assert [v["VersionId"] for v in versions if v["Key"] == "k"] != [] and v1 not in {
        v["VersionId"] for v in versions
    }
    assert env.get(bucket_name, "k") == b"two"


def test_lean_jobs_never_build_a_botocore_client(
    moto_env: Env, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copy, tagging and delete jobs, with their manifest read and report written, go entirely
    through the lean request path: the aiobotocore client (~5 ms of CPU to build, most of a
    small job's fixed cost) is never built."""
    from s3batch.storage.s3 import client as s3_client

    env = moto_env
    seed(env, bucket_name, ["a b.txt", "c+d.txt"])
    built: list[str] = []
    real_create = s3_client._create_client

    def counting_create(*args: object) -> object:
        built.append("client")
        return real_create(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(s3_client, "_create_client", counting_create)
    rows = [(bucket_name, "a b.txt"), (bucket_name, "c+d.txt"), (bucket_name, "missing")]
    target = f"arn:aws:s3:::{bucket_name}"
    for op in [
        {"S3PutObjectCopy": {"TargetResource": target, "TargetKeyPrefix": "copied"}},
        {"S3PutObjectTagging": {"TagSet": [{"Key": "team", "Value": "data"}]}},
        {"S3DeleteObject": {}},
    ]:
        batch, job_id = create(env, bucket_name, op, rows)
        job = run(batch, job_id)
        assert job["Status"] == "Complete", job
        assert job["ProgressSummary"]["NumberOfTasksSucceeded"] >= 2, job
        assert job["Report"]["Enabled"] and built == [], (next(iter(op)), built)
    listed = env.client.list_objects_v2(Bucket=bucket_name)["Contents"]
    keys = {o["Key"] for o in listed}
    assert {"copied/a b.txt", "copied/c+d.txt"} <= keys and "a b.txt" not in keys
    assert any(k.startswith("reports/") and k.endswith(".csv") for k in keys)
