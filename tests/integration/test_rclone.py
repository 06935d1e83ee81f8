"""Jobs on `rclone serve s3`: the plain data path works; tagging is refused by the capability
probe before rclone can destroy a single object (it answers 200 to PutObjectTagging while
replacing the object's body with the XML)."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.config import Config

from conftest import Env, read_report, report_spec
from s3batch.errors import StorageError
from s3batch.storage.config import S3Config
from s3batch.storage.s3 import S3Store

pytestmark = pytest.mark.integration


@pytest.fixture
def rclone_env(rclone_server: str, tmp_path: Any, bucket_name: str) -> Env:
    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    client = boto3.client("s3", endpoint_url=rclone_server, config=config, region_name="us-east-1")
    return Env("rclone", S3Config(endpoint_url=rclone_server), tmp_path / "home", client=client)


def test_copy_and_delete_work_on_rclone(rclone_env: Env, bucket_name: str) -> None:
    env = rclone_env
    env.make_bucket(bucket_name)
    keys = ["a.txt", "with space.txt", "ü.txt"]
    for key in keys:
        env.put(bucket_name, key, key.encode())
    batch = env.batch()
    copy = {"S3PutObjectCopy": {"TargetResource": f"arn:aws:s3:::{bucket_name}", "TargetKeyPrefix": "copy"}}
    job_id = batch.create_job(
        Operation=copy,
        Manifest=env.manifest(bucket_name, [(bucket_name, k) for k in keys]),
        Report=report_spec(bucket_name),
        Priority=1,
    )["JobId"]
    batch.run_until_idle()
    assert batch.describe_job(JobId=job_id)["Job"]["Status"] == "Complete"
    assert all(env.get(bucket_name, f"copy/{k}") == k.encode() for k in keys)
    assert len(read_report(env, bucket_name, job_id)["rows"]["succeeded"]) == 3

    job_id = batch.create_job(
        Operation={"S3DeleteObject": {}},
        Manifest=env.manifest(bucket_name, [(bucket_name, f"copy/{k}") for k in keys], key="del.csv"),
        Report={"Enabled": False},
        Priority=1,
    )["JobId"]
    batch.run_until_idle()
    assert batch.describe_job(JobId=job_id)["Job"]["ProgressSummary"]["NumberOfTasksSucceeded"] == 3
    assert all(env.get(bucket_name, f"copy/{k}") is None for k in keys)


def test_tagging_is_refused_in_preparing_and_no_object_is_damaged(rclone_env: Env, bucket_name: str) -> None:
    env = rclone_env
    env.make_bucket(bucket_name)
    env.put(bucket_name, "precious.txt", b"do not destroy me")
    batch = env.batch()
    job_id = batch.create_job(
        Operation={"S3PutObjectTagging": {"TagSet": [{"Key": "k", "Value": "v"}]}},
        Manifest=env.manifest(bucket_name, [(bucket_name, "precious.txt")]),
        Report=report_spec(bucket_name),
        Priority=1,
    )["JobId"]
    batch.run_until_idle()
    job = batch.describe_job(JobId=job_id)["Job"]
    assert job["Status"] == "Failed"
    [reason] = job["FailureReasons"]
    assert reason["FailureCode"] == "EndpointCapability"
    assert "tagging" in reason["FailureReason"]
    assert env.get(bucket_name, "precious.txt") == b"do not destroy me"
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 0


def test_tagging_passes_the_probe_on_a_server_that_supports_it(moto_env: Env, bucket_name: str) -> None:
    env = moto_env
    env.make_bucket(bucket_name)
    env.put(bucket_name, "a.txt", b"x")
    batch = env.batch()
    job_id = batch.create_job(
        Operation={"S3PutObjectTagging": {"TagSet": [{"Key": "k", "Value": "v"}]}},
        Manifest=env.manifest(bucket_name, [(bucket_name, "a.txt")]),
        Report={"Enabled": False},
        Priority=1,
    )["JobId"]
    batch.run_until_idle()
    assert batch.describe_job(JobId=job_id)["Job"]["Status"] == "Complete"
    listed = env.client.list_objects_v2(Bucket=bucket_name).get("Contents", [])
    assert [o["Key"] for o in listed] == ["a.txt", "manifest.csv"]  # the scratch object is gone


async def test_a_read_continued_from_a_replaced_object_fails_on_rclone(
    rclone_env: Env, rclone_server: str, bucket_name: str
) -> None:
    """rclone serve s3 ignores If-Match: the second request of a read still says which object
    it sent, and the read fails (412) rather than splice two objects' bytes."""
    client = rclone_env.client
    client.create_bucket(Bucket=bucket_name)
    client.put_object(Bucket=bucket_name, Key="r", Body=b"A" * 4096)
    store = S3Store(S3Config(endpoint_url=rclone_server, addressing_style="path"))
    try:
        read = store.iter_bytes(bucket_name, "r", chunk_size=1024)
        assert await anext(read) == b"A" * 1024
        client.put_object(Bucket=bucket_name, Key="r", Body=b"B" * 4096)
        with pytest.raises(StorageError) as caught:
            await anext(read)
        assert (caught.value.code, caught.value.http_status) == ("PreconditionFailed", 412)
    finally:
        await store.close()
