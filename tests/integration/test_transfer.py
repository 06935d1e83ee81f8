"""S3batchTransfer between real stores on 127.0.0.1: the folder store, moto's S3 server and
`rclone serve s3` (two different S3 implementations). Every direction with awkward keys, an empty
object and a 40 MiB object in parts; a second run that changes nothing; kill -9 of the worker in
the middle of an object and a resume that does not upload the parts again; corrupted parts caught;
and `s3batch serve` refusing stores its operator did not register for the caller."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import boto3
import httpx
import pytest
from aiohttp import web
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.serialize import create_serializer
from tests.faultproxy import HOP_BY_HOP, FaultPlan, FaultProxy
from tests.integration.conftest import Env, data_manifest, report_spec
from tests.integration.test_api_boto3 import (
    ACCOUNT_A,
    ACCOUNT_B,
    KEY_A,
    KEY_B,
    ROLE,
    TAGGING,
    Server,
    serving,
    wait_status,
)
from yarl import URL

from s3batch.api.auth import AccessKey
from s3batch.api.xml import service_model
from s3batch.client import S3Batch
from s3batch.domain.uploads import ObjectAttributes
from s3batch.storage.local import LocalStore

pytestmark = pytest.mark.integration

MIB = 1024**2
#: 40 MiB at 8 MiB parts: five parts.
BIG_BYTES = 40 * MIB
PART_BYTES = 8 * MIB
#: Keys S3 clients get wrong: spaces, non-ASCII, '+' (a space in form encoding) and '%'.
AWKWARD = {
    "a b.txt": b"spaces",
    "\u00fc/\u00f1 \u00e9.txt": b"unicode",
    "plus+sign": b"plus",
    "per%cent": b"percent",
    "empty": b"",
}
#: Bounds on waiting for a worker, a job and a kill, in seconds.
JOB_TIMEOUT_S = 60.0
POLL_S = 0.05
CLI_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def big() -> bytes:
    return os.urandom(BIG_BYTES)


def s3(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def write_stores(home: Path, **endpoints: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    tables = "".join(
        f'[stores.{name}]\nendpoint_url = "{url}"\naddressing_style = "path"\n'
        for name, url in endpoints.items()
    )
    (home / "stores.toml").write_text(tables, encoding="utf-8")


def transfer_job(bucket: str, **params: Any) -> dict[str, Any]:
    return {
        "Operation": {"S3batchTransfer": {"PartSizeBytes": PART_BYTES, **params}},
        "ManifestGenerator": {
            "S3JobManifestGenerator": {
                "SourceBucket": f"arn:aws:s3:::{bucket}",
                "EnableManifestOutput": False,
            }
        },
        "Report": {"Enabled": False},
        "Priority": 10,
        "ConfirmationRequired": False,
    }


def run_job(home: Path, storage: str, request: dict[str, Any]) -> dict[str, tuple[str, str, str]]:
    """Run a job in this process; key → (status, error code, message) of its report rows."""
    with S3Batch(home=home, storage=storage, background=False) as batch:
        job_id = batch.create_job(**request)["JobId"]
        batch.run_until_idle()
        assert batch.describe_job(JobId=job_id)["Job"]["Status"] == "Complete"
        return {row.key: (row.status, row.error_code, row.message) for row in batch.report_rows(job_id)}


def s3_objects(client: Any, bucket: str, prefix: str = "") -> dict[str, bytes]:
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listed}


def uploads(client: Any, bucket: str) -> list[dict[str, Any]]:
    try:
        return list(client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
    except client.exceptions.ClientError as exc:
        if "NoSuchUpload" in str(exc):  # rclone's answer when there is none
            return []
        raise


def encoded(key: str) -> str:
    from urllib.parse import quote_plus

    return quote_plus(key, safe="/")


# -- every direction -------------------------------------------------------------------------------


def test_every_direction_with_awkward_keys_and_a_big_object(
    tmp_path: Path, moto_server: str, rclone_server: str, big: bytes
) -> None:
    home, root, back = tmp_path / "home", tmp_path / "folders", tmp_path / "back"
    write_stores(home, moto=moto_server, rcl=rclone_server)
    expected = {**AWKWARD, "big.bin": big, "typed.json": b'{"a": 1}'}
    for key, body in expected.items():
        (root / "src" / key).parent.mkdir(parents=True, exist_ok=True)
        (root / "src" / key).write_bytes(body)
    attributes = ObjectAttributes(
        content_type="application/json", metadata={"origin": "folder"}, tags={"t": "1"}
    )
    import asyncio

    asyncio.run(
        LocalStore(root).put_with_checksum(
            "src", "typed.json", b'{"a": 1}', attributes=attributes, checksum=None
        )
    )
    moto, rcl = s3(moto_server), s3(rclone_server)
    moto.create_bucket(Bucket="tx-moto")
    rcl.create_bucket(Bucket="tx-rclone")

    # folder → moto
    rows = run_job(
        home, f"file://{root}", transfer_job("src", TargetStore="moto", TargetResource="arn:aws:s3:::tx-moto")
    )
    assert {k: r[0] for k, r in rows.items()} == {encoded(k): "succeeded" for k in expected}
    assert "Checksum=" in rows["a+b.txt"][2] and rows["empty"][2].endswith("Bytes=0")
    assert "Parts=5 (0 reused)" in rows["big.bin"][2]
    assert s3_objects(moto, "tx-moto") == expected
    head = moto.head_object(Bucket="tx-moto", Key="typed.json")
    assert (head["ContentType"], head["Metadata"]) == ("application/json", {"origin": "folder"})
    assert moto.get_object_tagging(Bucket="tx-moto", Key="typed.json")["TagSet"] == [
        {"Key": "t", "Value": "1"}
    ]

    # moto → rclone (S3 to another S3 implementation), under a prefix
    request = transfer_job(
        "tx-moto", TargetStore="rcl", TargetResource="arn:aws:s3:::tx-rclone", TargetKeyPrefix="c/"
    )
    rows = run_job(home, moto_server, request)
    assert all(r[0] == "succeeded" for r in rows.values()), rows
    assert "tags not carried" in rows["typed.json"][2]  # rclone keeps no tags, and the row says so
    assert s3_objects(rcl, "tx-rclone") == {f"c/{k}": v for k, v in expected.items()}
    assert uploads(moto, "tx-moto") == [] and uploads(rcl, "tx-rclone") == []

    # rclone → folder, the prefix taken off again
    request = transfer_job(
        "tx-rclone", TargetStore=f"file://{back}", TargetResource="arn:aws:s3:::out", SourceKeyPrefix="c/"
    )
    (back / "out").mkdir(parents=True)
    rows = run_job(home, rclone_server, request)
    assert all(r[0] == "succeeded" for r in rows.values()), rows
    assert {
        str(p.relative_to(back / "out")): p.read_bytes() for p in (back / "out").rglob("*") if p.is_file()
    } == expected

    # The same moto → rclone job again, with SkipExisting: nothing is written
    with CountingProxy(rclone_server) as counted:
        write_stores(home, moto=moto_server, rcl=counted.url)
        skip = transfer_job(
            "tx-moto", TargetStore="rcl", TargetResource="arn:aws:s3:::tx-rclone", TargetKeyPrefix="c/",
            SkipExisting="SizeAndChecksum",
        )  # fmt: skip
        rows = run_job(home, moto_server, skip)
    assert {r[2].split(" (")[0] for r in rows.values()} == {"skipped: identical"}, rows
    assert [r for r in counted.log if r.method in ("PUT", "POST", "DELETE")] == []


# -- kill -9 and resume ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Logged:
    at: float
    method: str
    path: str
    query: str


class CountingProxy(FaultProxy):
    """FaultProxy that logs every request, and with `corrupt` flips the first byte of the body of
    each PUT (PutObject and UploadPart) before forwarding it."""

    def __init__(self, upstream: str, plan: FaultPlan | None = None, *, corrupt: bool = False) -> None:
        super().__init__(upstream, plan)
        self.corrupt = corrupt
        self.log: list[Logged] = []

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        self.log.append(Logged(time.monotonic(), request.method, request.path, request.query_string))
        body = await request.read()
        if self.corrupt and request.method == "PUT" and body:
            body = bytes([body[0] ^ 1]) + body[1:]
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        assert self._session is not None
        async with self._session.request(
            request.method,
            URL(self.upstream + request.raw_path, encoded=True),
            headers=headers,
            data=body,
            allow_redirects=False,
            skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
        ) as upstream:
            payload = await upstream.read()
            self.stats.forwarded += 1
            return self._relay(request, upstream, payload)


def cli(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "S3BATCH_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "s3batch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
    )
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def wait_for(condition: Any, what: str) -> Any:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def slow_rclone(rclone_server: str) -> Iterator[CountingProxy]:
    """rclone behind a proxy that holds each UploadPart 1 s: a kill lands mid-object."""
    plan = FaultPlan(latency=1.0, latency_s=1.0, methods=frozenset({"PUT"}), query_contains="partNumber")
    with CountingProxy(rclone_server, plan) as proxy:
        yield proxy


def test_kill_9_mid_object_resumes_without_uploading_parts_again(
    tmp_path: Path, rclone_server: str, slow_rclone: CountingProxy, big: bytes
) -> None:
    home, folder = tmp_path / "home", tmp_path / "data" / "kill-src"
    write_stores(home, slow=slow_rclone.url)
    folder.mkdir(parents=True)
    body = big[: 40 * MIB]
    (folder / "big.bin").write_bytes(body)
    rcl = s3(rclone_server)
    rcl.create_bucket(Bucket="tx-kill")
    # 5 MiB parts: eight, the first four in flight together, the next four a second later.
    started = cli(
        home, "transfer", str(folder), "slow:tx-kill", "--part-size-bytes", str(5 * MIB), "--no-wait"
    )
    job_id_text = started.stdout.strip()

    def listed_parts() -> list[dict[str, Any]]:
        (upload,) = uploads(rcl, "tx-kill") or [None]
        if upload is None:
            return []
        return list(
            rcl.list_parts(Bucket="tx-kill", Key="big.bin", UploadId=upload["UploadId"]).get("Parts", [])
        )

    wait_for(listed_parts, "a first part to be uploaded")
    pid = int((home / "worker.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not _alive(pid), "the killed worker to be gone")
    # Parts the proxy was holding still reach the server: count what it holds once they are in.
    wait_for(lambda: slow_rclone.stats.in_flight == 0, "requests sent before the kill to land")
    killed_at = time.monotonic()
    kept = {p["PartNumber"] for p in listed_parts()}
    assert 0 < len(kept) < 8, "the kill must land mid-object"

    done = cli(home, "wait", job_id_text, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert rcl.get_object(Bucket="tx-kill", Key="big.bin")["Body"].read() == body
    again = [
        r for r in slow_rclone.log
        if r.at > killed_at and r.method == "PUT" and "partNumber" in r.query
        and int(dict(p.split("=") for p in r.query.split("&"))["partNumber"]) in kept
    ]  # fmt: skip
    assert again == [], "parts the interrupted upload held were uploaded again"
    with S3Batch(home=home, background=False) as batch:
        (row,) = batch.report_rows(job_id_text)
    assert f"Parts=8 ({len(kept)} reused)" in row.message
    assert uploads(rcl, "tx-kill") == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers signal 0: ask /proc for its state.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False


# -- corruption ------------------------------------------------------------------------------------


def test_corrupted_bytes_fail_the_task_and_leave_nothing_behind(tmp_path: Path, moto_server: str) -> None:
    home, root = tmp_path / "home", tmp_path / "folders"
    (root / "src").mkdir(parents=True)
    (root / "src" / "small").write_bytes(b"a small body")
    (root / "src" / "parts.bin").write_bytes(os.urandom(12 * MIB))
    moto = s3(moto_server)
    moto.create_bucket(Bucket="tx-corrupt")
    with CountingProxy(moto_server, corrupt=True) as proxy:
        write_stores(home, corrupt=proxy.url)
        request = transfer_job(
            "src", TargetStore="corrupt", TargetResource="arn:aws:s3:::tx-corrupt", PartSizeBytes=5 * MIB
        )
        with S3Batch(home=home, storage=f"file://{root}", background=False) as batch:
            job_id = batch.create_job(**request)["JobId"]
            batch.run_until_idle()
            rows = {r.key: r for r in batch.report_rows(job_id)}
    assert {k: (r.status, r.error_code) for k, r in rows.items()} == {
        "small": ("failed", "ChecksumMismatch"),
        "parts.bin": ("failed", "ChecksumMismatch"),
    }
    assert "is not the MD5 of the bytes sent" in rows["small"].message
    assert rows["parts.bin"].message.startswith("part ")
    assert moto.list_objects_v2(Bucket="tx-corrupt").get("Contents", []) == []
    assert uploads(moto, "tx-corrupt") == []


# -- s3batch serve ---------------------------------------------------------------------------------


def test_serve_lets_an_account_name_only_the_stores_registered_for_it(local_env: Env, tmp_path: Path) -> None:
    backup = tmp_path / "backup-root"
    (backup / "copies").mkdir(parents=True)
    local_env.home.mkdir(parents=True, exist_ok=True)
    # The CLI's stores.toml is no business of the server's callers.
    (local_env.home / "stores.toml").write_text(f'[stores.mine]\nroot = "{tmp_path}"\n')
    (local_env.home / "server.toml").write_text(
        f'[[stores]]\naccount_id = "{ACCOUNT_A}"\nname = "backup"\nroot = "{backup}"\n', encoding="utf-8"
    )
    manifest = data_manifest(local_env, ["a.txt"], ["a.txt"])
    local_env.make_bucket("reports")

    def params(store: str) -> dict[str, Any]:
        return {"TargetStore": store, "TargetResource": "arn:aws:s3:::copies"}

    with serving(local_env) as server:
        for store in ("mine", "nope", f"file://{tmp_path}", "s3://"):
            refused = transfer_post(server, manifest, params(store))
            assert refused.status_code == 400 and "InvalidRequestException" in refused.text, refused.text
            assert "not a store this server lets the account name" in refused.text
        ssrf = transfer_post(server, manifest, params("http://169.254.169.254/latest"))
        assert ssrf.status_code == 400 and "TargetStore" in ssrf.text
        other = transfer_post(server, manifest, params("backup"), key=KEY_B)
        assert other.status_code == 400 and "InvalidRequestException" in other.text
        assert server.client().list_jobs(AccountId=ACCOUNT_A)["Jobs"] == []
        assert server.client(KEY_B).list_jobs(AccountId=ACCOUNT_B)["Jobs"] == []

        accepted = transfer_post(server, manifest, params("backup"))
        assert accepted.status_code == 200, accepted.text
        job_id = accepted.text.split("<JobId>")[1].split("</JobId>")[0]
        assert wait_status(server.client(), job_id, "Complete", "Failed")["Status"] == "Complete"
    assert (backup / "copies" / "a.txt").read_bytes() == b"a.txt"


def transfer_post(
    server: Server, manifest: dict[str, Any], params: dict[str, str], key: AccessKey = KEY_A
) -> Any:
    """CreateJob over the S3 Control API, signed as boto3 would sign it, with <S3batchTransfer>
    as the operation (botocore's model has no such member: the XML is put in by hand)."""
    request = {
        "AccountId": key.account_id,
        "Operation": TAGGING,
        "Manifest": manifest,
        "Report": report_spec("reports"),
        "Priority": 10,
        "RoleArn": ROLE,
        "ConfirmationRequired": False,
        "ClientRequestToken": f"token-{key.account_id}-{abs(hash(str(params)))}",
    }
    model = service_model().operation_model("CreateJob")
    body = create_serializer("rest-xml").serialize_to_request(request, model)["body"].decode()
    fields = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in params.items())
    body, replaced = re.subn(
        r"<Operation>.*?</Operation>", f"<Operation><S3batchTransfer>{fields}</S3batchTransfer></Operation>",
        body, flags=re.S,
    )  # fmt: skip
    assert replaced == 1
    signed = AWSRequest(
        method="POST", url=f"{server.url}/v20180820/jobs", data=body.encode(),
        headers={"x-amz-account-id": key.account_id},
    )  # fmt: skip
    S3SigV4Auth(Credentials(key.access_key, key.secret_key), "s3", "us-east-1").add_auth(signed)
    prepared = signed.prepare()
    return httpx.post(
        prepared.url, content=prepared.body, headers=dict(prepared.headers.items()), timeout=10.0
    )
