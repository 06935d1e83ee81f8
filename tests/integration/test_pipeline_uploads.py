"""The upload side of pipelines against real servers: multipart listing/abort on moto, the
pipeline's stale-upload sweep, and presigned PUT URLs.

What each server enforces on a presigned PUT was probed (see docs/compatibility.md): moto
accepts any presigned request (wrong content type, another key, expired, bad signature), so
it can show that a URL works but not that it is refused; `rclone serve s3` verifies SigV4
query signatures and expiry, so the refusals are asserted there.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tests.integration.conftest import Env

from s3batch.cli import cli
from s3batch.errors import StorageError
from s3batch.pipelines.uploads import abort_stale_uploads
from s3batch.storage.local import LocalStore
from s3batch.storage.s3 import S3Store

pytestmark = pytest.mark.integration

HTTP_TIMEOUT_S = 10.0
#: Seconds an expiring URL lives in the expiry test (and how long past it the test waits).
SHORT_EXPIRY_S = 1
EXPIRY_MARGIN_S = 1.5
#: Seconds a server's upload time may differ from ours (same machine).
CLOCK_SLACK_S = 120


def pipeline_file(tmp_path: Path, source: str, extra: str = "") -> Path:
    path = tmp_path / "up.toml"
    path.write_text(
        f'name = "up"\nsource = "{source}"\nfunction = "pipeline_handlers:check"\non_success = "leave"\n'
        f"{extra}",
        encoding="utf-8",
    )
    return path


def put(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="PUT", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def presign(endpoint: str, file: Path, key: str, *args: str) -> dict[str, Any]:
    out = CliRunner().invoke(
        cli,
        ["pipeline", "presign", str(file), key, "--content-type", "text/csv", *args],
        env={"S3BATCH_STORAGE": endpoint},
    )
    assert out.exit_code == 0, out.output
    result: dict[str, Any] = json.loads(out.output)
    return result


# -- multipart uploads --------------------------------------------------------------------------


async def test_s3_store_lists_and_aborts_incomplete_uploads(moto_env: Env, bucket_name: str) -> None:
    moto_env.make_bucket(bucket_name)
    client = moto_env.client
    started = client.create_multipart_upload(Bucket=bucket_name, Key="in/big file.bin")["UploadId"]
    client.create_multipart_upload(Bucket=bucket_name, Key="other/x.bin")
    store = S3Store(moto_env.storage)  # type: ignore[arg-type]
    try:
        listed = [u async for u in store.list_multipart_uploads(bucket_name, prefix="in/")]
        assert [(u.key, u.upload_id) for u in listed] == [("in/big file.bin", started)]
        # moto answers a fixed Initiated (2010-11-10T20:48:33Z) for every upload, so ages are
        # measured from the listed time with an injected clock here (real times: rclone below).
        initiated = listed[0].initiated
        assert initiated.tzinfo is not None
        await store.abort_multipart_upload(bucket_name, "in/big file.bin", started)
        with pytest.raises(StorageError) as info:
            await store.abort_multipart_upload(bucket_name, "in/big file.bin", started)
        assert info.value.code == "NoSuchUpload"
        hour = timedelta(hours=1)
        assert await abort_stale_uploads(store, bucket_name, 3600, now=initiated + hour / 2) == 0
        assert await abort_stale_uploads(store, bucket_name, 3600, now=initiated + 2 * hour) == 1
    finally:
        await store.close()
    assert client.list_multipart_uploads(Bucket=bucket_name).get("Uploads", []) == []


async def test_sweep_by_real_upload_age_on_rclone(rclone_server: str, rclone_bucket: str) -> None:
    """rclone reports when each upload really started: a fresh one survives an hour's age."""
    from s3batch.storage.config import S3Config

    client = s3v4_client(rclone_server)
    client.create_multipart_upload(Bucket=rclone_bucket, Key="fresh.bin")
    store = S3Store(S3Config(endpoint_url=rclone_server))
    try:
        (upload,) = [u async for u in store.list_multipart_uploads(rclone_bucket)]
        assert abs(time.time() - upload.initiated.timestamp()) < CLOCK_SLACK_S
        assert await abort_stale_uploads(store, rclone_bucket, 3600) == 0
        assert await abort_stale_uploads(store, rclone_bucket, 0) == 1
    finally:
        await store.close()
    assert client.list_multipart_uploads(Bucket=rclone_bucket).get("Uploads", []) == []


async def test_folder_store_has_no_incomplete_uploads(local_env: Env) -> None:
    local_env.make_bucket("staging")
    store = LocalStore(local_env.root)  # type: ignore[arg-type]
    assert [u async for u in store.list_multipart_uploads("staging")] == []
    with pytest.raises(StorageError) as info:
        await store.abort_multipart_upload("staging", "k", "upload-1")
    assert info.value.code == "NoSuchUpload"
    with pytest.raises(StorageError) as missing:
        [u async for u in store.list_multipart_uploads("no-such-bucket")]
    assert missing.value.code == "NoSuchBucket"


def test_pipeline_run_sweeps_stale_uploads(moto_env: Env, bucket_name: str, tmp_path: Path) -> None:
    moto_env.make_bucket(bucket_name)
    client = moto_env.client
    client.create_multipart_upload(Bucket=bucket_name, Key="abandoned.bin")
    env = {"S3BATCH_STORAGE": moto_env.storage.endpoint_url}  # type: ignore[union-attr]
    unset = pipeline_file(tmp_path, bucket_name)
    out = CliRunner().invoke(cli, ["pipeline", "run", str(unset), "--once"], env=env)
    assert out.exit_code == 0, out.output
    assert len(client.list_multipart_uploads(Bucket=bucket_name).get("Uploads", [])) == 1
    sweep = pipeline_file(tmp_path, bucket_name, "abort_incomplete_uploads_after_s = 0\n")
    out = CliRunner().invoke(cli, ["pipeline", "run", str(sweep), "--once"], env=env)
    assert out.exit_code == 0, out.output
    assert client.list_multipart_uploads(Bucket=bucket_name).get("Uploads", []) == []


# -- presigned PUT URLs ---------------------------------------------------------------------------


def test_presigned_put_uploads_to_moto(moto_env: Env, bucket_name: str, tmp_path: Path) -> None:
    moto_env.make_bucket(bucket_name)
    endpoint = moto_env.storage.endpoint_url  # type: ignore[union-attr]
    signed = presign(str(endpoint), pipeline_file(tmp_path, bucket_name), "in/data 1.csv", "--expires", "300")
    assert signed["method"] == "PUT" and signed["headers"] == {"Content-Type": "text/csv"}
    assert (signed["bucket"], signed["key"], signed["expires_s"]) == (bucket_name, "in/data 1.csv", 300)
    assert put(signed["url"], b"a,b\n1,2\n", "text/csv")[0] == 200
    head = moto_env.client.head_object(Bucket=bucket_name, Key="in/data 1.csv")
    assert (head["ContentLength"], head["ContentType"]) == (8, "text/csv")


def test_presign_cli_refuses_bad_requests(moto_env: Env, bucket_name: str, tmp_path: Path) -> None:
    file = pipeline_file(tmp_path, bucket_name, "presign_max_expires_s = 600\n")
    runner = CliRunner()
    env = {"S3BATCH_STORAGE": str(moto_env.storage.endpoint_url)}  # type: ignore[union-attr]
    base = ["pipeline", "presign", str(file), "k.csv"]
    too_long = runner.invoke(cli, [*base, "--content-type", "text/csv", "--expires", "601"], env=env)
    assert too_long.exit_code == 1 and "expires must be 1..600" in too_long.output
    bad_type = runner.invoke(cli, [*base, "--content-type", "nonsense"], env=env)
    assert bad_type.exit_code == 1 and "media type" in bad_type.output
    folder = runner.invoke(cli, [*base, "--content-type", "text/csv", "--expires", "60"],
                           env={"S3BATCH_STORAGE": str(tmp_path)})  # fmt: skip
    assert folder.exit_code == 1 and "need an S3 store" in folder.output


def s3v4_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(signature_version="s3v4")
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", config=config)


@pytest.fixture
def rclone_bucket(rclone_server: str, bucket_name: str) -> str:
    s3v4_client(rclone_server).create_bucket(Bucket=bucket_name)
    return bucket_name


def test_signature_scopes_url_to_key_content_type_and_time(
    rclone_server: str, rclone_bucket: str, tmp_path: Path
) -> None:
    """rclone checks SigV4 query signatures, so what the URL is scoped to is really enforced."""
    file = pipeline_file(tmp_path, rclone_bucket)
    url = presign(rclone_server, file, "in/a.csv")["url"]
    status, body = put(url, b"x", "application/json")
    assert (status, b"SignatureDoesNotMatch" in body) == (403, True)
    status, body = put(url.replace("/in/a.csv?", "/in/b.csv?"), b"x", "text/csv")
    assert (status, b"SignatureDoesNotMatch" in body) == (403, True)
    assert put(url, b"a,b\n", "text/csv")[0] == 200
    short = presign(rclone_server, file, "in/late.csv", "--expires", str(SHORT_EXPIRY_S))["url"]
    time.sleep(SHORT_EXPIRY_S + EXPIRY_MARGIN_S)
    status, body = put(short, b"x", "text/csv")
    assert status in (400, 403) and b"AccessDenied" in body
