"""The HTTP API end to end: `s3batch.api` under uvicorn on 127.0.0.1, called by unmodified
boto3 (through `s3batch.client.s3control`, i.e. a plain client plus the documented hook), by
boto3 through the HTTP-proxy workaround, and by raw httpx for the authentication failures."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import uvicorn
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from tests.conftest import free_port
from tests.integration.conftest import Env, data_manifest, read_report, report_spec

from s3batch.api.app import create_app
from s3batch.api.auth import AccessKey, KeyRing
from s3batch.client import s3control
from s3batch.domain.roles import RoleBook
from s3batch.settings import Settings

pytestmark = pytest.mark.integration

ACCOUNT_A, ACCOUNT_B = "111111111111", "222222222222"
KEY_A = AccessKey("AKIDALICE", "alice-secret", ACCOUNT_A)
KEY_B = AccessKey("AKIDBOB", "bob-secret", ACCOUNT_B)
#: Bounds for waiting on the server and on jobs, in seconds.
STARTUP_TIMEOUT_S = 10.0
JOB_TIMEOUT_S = 30.0
POLL_S = 0.05
ROLE = f"arn:aws:iam::{ACCOUNT_A}:role/batch"
TAGGING = {"S3PutObjectTagging": {"TagSet": [{"Key": "team", "Value": "data"}]}}


@dataclass
class Server:
    url: str
    port: int
    home: Path

    def client(self, key: AccessKey = KEY_A, **config: Any) -> Any:
        return s3control(
            self.url,
            aws_access_key_id=key.access_key,
            aws_secret_access_key=key.secret_key,
            retries={"max_attempts": 1},
            **config,
        )


@contextlib.contextmanager
def serving(env: Env, roles: RoleBook | None = None) -> Iterator[Server]:
    """The API (and its job worker) under uvicorn in a thread; stopped on exit."""
    settings = Settings(home=env.home, function_workers=1)
    # Roles built in memory exist only in this process: drive their jobs here too.
    app = create_app(
        settings, keys=KeyRing([KEY_A, KEY_B]), storage=env.storage, roles=roles, worker_process=roles is None
    )
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http="h11", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait_for(lambda: server.started or not thread.is_alive(), STARTUP_TIMEOUT_S, "server start")
        assert server.started, "uvicorn did not start"
        yield Server(f"http://127.0.0.1:{port}", port, env.home)
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT_S)
    assert not thread.is_alive(), "uvicorn did not stop"


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: still waiting after {timeout_s}s")
        time.sleep(POLL_S)


@pytest.fixture
def server(local_env: Env) -> Iterator[Server]:
    with serving(local_env) as running:
        yield running


@pytest.fixture
def manifest(local_env: Env) -> dict[str, Any]:
    names = ["a.txt", "b.txt", "c d.txt"]
    return data_manifest(local_env, names, names)


def create(client: Any, manifest: dict[str, Any], account: str = ACCOUNT_A, **extra: Any) -> str:
    params: dict[str, Any] = {
        "AccountId": account,
        "Operation": TAGGING,
        "Manifest": manifest,
        "Report": report_spec("reports"),
        "Priority": 10,
        "RoleArn": ROLE,
        "ConfirmationRequired": False,
        **extra,
    }
    return str(client.create_job(**params)["JobId"])


def wait_status(client: Any, job_id: str, *statuses: str, account: str = ACCOUNT_A) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def reached() -> bool:
        found.update(client.describe_job(AccountId=account, JobId=job_id)["Job"])
        return found["Status"] in statuses

    _wait_for(reached, JOB_TIMEOUT_S, f"job {job_id} to reach {statuses}")
    return found


# -- every operation ----------------------------------------------------------------------------


def test_create_job_runs_to_complete_with_report(
    server: Server, local_env: Env, manifest: dict[str, Any]
) -> None:
    client = server.client()
    job_id = create(client, manifest, Description="tag them", Tags=[{"Key": "k", "Value": "v"}])
    job = wait_status(client, job_id, "Complete", "Failed")
    assert job["Status"] == "Complete", job.get("FailureReasons")
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 3
    assert job["JobArn"] == f"arn:aws:s3:us-east-1:{ACCOUNT_A}:job/{job_id}"
    assert (job["Description"], job["Priority"], job["Operation"]) == ("tag them", 10, TAGGING)
    assert job["Manifest"] == manifest and job["CreationTime"] <= job["TerminationDate"]
    report = read_report(local_env, "reports", job_id)
    assert sorted(row[1] for row in report["rows"]["succeeded"]) == ["a.txt", "b.txt", "c+d.txt"]


def test_same_token_same_job_and_idempotency_error(server: Server, manifest: dict[str, Any]) -> None:
    client = server.client()
    first = create(client, manifest, ClientRequestToken="tok-1", ConfirmationRequired=True)
    assert create(client, manifest, ClientRequestToken="tok-1", ConfirmationRequired=True) == first
    with pytest.raises(client.exceptions.IdempotencyException):
        create(client, manifest, ClientRequestToken="tok-1", Priority=99, ConfirmationRequired=True)


def test_list_jobs_filters_and_paginates(server: Server, manifest: dict[str, Any]) -> None:
    client = server.client()
    ids = {create(client, manifest, ConfirmationRequired=True) for _ in range(3)}
    for job_id in ids:
        wait_status(client, job_id, "Suspended")
    seen: list[str] = []
    page = client.list_jobs(AccountId=ACCOUNT_A, JobStatuses=["Suspended", "Active"], MaxResults=2)
    seen += [j["JobId"] for j in page["Jobs"]]
    assert len(page["Jobs"]) == 2 and page["NextToken"]
    page = client.list_jobs(
        AccountId=ACCOUNT_A, JobStatuses=["Suspended"], MaxResults=2, NextToken=page["NextToken"]
    )
    seen += [j["JobId"] for j in page["Jobs"]]
    assert "NextToken" not in page
    assert sorted(seen) == sorted(ids)
    assert {j["Status"] for j in page["Jobs"]} == {"Suspended"}
    assert client.list_jobs(AccountId=ACCOUNT_A, JobStatuses=["Complete"])["Jobs"] == []
    with pytest.raises(client.exceptions.InvalidNextTokenException):
        client.list_jobs(AccountId=ACCOUNT_A, NextToken="not-a-token")


def test_priority_and_confirmation(server: Server, manifest: dict[str, Any]) -> None:
    client = server.client()
    job_id = create(client, manifest, ConfirmationRequired=True)
    assert wait_status(client, job_id, "Suspended")["SuspendedDate"]
    answer = client.update_job_priority(AccountId=ACCOUNT_A, JobId=job_id, Priority=42)
    assert (answer["JobId"], answer["Priority"]) == (job_id, 42)
    assert client.describe_job(AccountId=ACCOUNT_A, JobId=job_id)["Job"]["Priority"] == 42
    answer = client.update_job_status(
        AccountId=ACCOUNT_A, JobId=job_id, RequestedJobStatus="Ready", StatusUpdateReason="go now"
    )
    assert (answer["Status"], answer["StatusUpdateReason"]) == ("Ready", "go now")
    job = wait_status(client, job_id, "Complete", "Failed")
    assert (job["Status"], job["StatusUpdateReason"]) == ("Complete", "go now")


def test_cancel_and_job_status_errors(server: Server, manifest: dict[str, Any]) -> None:
    client = server.client()
    job_id = create(client, manifest, ConfirmationRequired=True)
    wait_status(client, job_id, "Suspended")
    answer = client.update_job_status(AccountId=ACCOUNT_A, JobId=job_id, RequestedJobStatus="Cancelled")
    assert answer["Status"] == "Cancelled"
    assert client.describe_job(AccountId=ACCOUNT_A, JobId=job_id)["Job"]["Status"] == "Cancelled"
    for requested in ("Cancelled", "Ready"):
        with pytest.raises(client.exceptions.JobStatusException):
            client.update_job_status(AccountId=ACCOUNT_A, JobId=job_id, RequestedJobStatus=requested)


def test_job_tagging(server: Server, manifest: dict[str, Any]) -> None:
    client = server.client()
    job_id = create(client, manifest, ConfirmationRequired=True, Tags=[{"Key": "a", "Value": "1"}])
    assert client.get_job_tagging(AccountId=ACCOUNT_A, JobId=job_id)["Tags"] == [{"Key": "a", "Value": "1"}]
    tags = [{"Key": "x", "Value": "y"}, {"Key": "empty", "Value": ""}]
    client.put_job_tagging(AccountId=ACCOUNT_A, JobId=job_id, Tags=tags)
    assert client.get_job_tagging(AccountId=ACCOUNT_A, JobId=job_id)["Tags"] == tags
    too_many = [{"Key": f"k{n}", "Value": "v"} for n in range(51)]
    with pytest.raises(client.exceptions.TooManyTagsException):
        client.put_job_tagging(AccountId=ACCOUNT_A, JobId=job_id, Tags=too_many)
    assert client.get_job_tagging(AccountId=ACCOUNT_A, JobId=job_id)["Tags"] == tags
    answer = client.delete_job_tagging(AccountId=ACCOUNT_A, JobId=job_id)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert client.get_job_tagging(AccountId=ACCOUNT_A, JobId=job_id)["Tags"] == []


def test_modeled_errors(server: Server, manifest: dict[str, Any]) -> None:
    client = server.client()
    missing = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(client.exceptions.NotFoundException):
        client.describe_job(AccountId=ACCOUNT_A, JobId=missing)
    with pytest.raises(client.exceptions.NotFoundException):
        client.update_job_priority(AccountId=ACCOUNT_A, JobId=missing, Priority=1)
    with pytest.raises(client.exceptions.NotFoundException):
        client.get_job_tagging(AccountId=ACCOUNT_A, JobId=missing)
    with pytest.raises(client.exceptions.BadRequestException) as caught:
        # both a Manifest and a ManifestGenerator: refused by the server, not by botocore
        create(
            client,
            manifest,
            ManifestGenerator={
                "S3JobManifestGenerator": {"SourceBucket": "arn:aws:s3:::data", "EnableManifestOutput": False}
            },
        )
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert client.list_jobs(AccountId=ACCOUNT_A)["Jobs"] == []


def test_jobs_survive_a_server_restart(local_env: Env, manifest: dict[str, Any]) -> None:
    with serving(local_env) as first:
        job_id = create(first.client(), manifest, ConfirmationRequired=True)
        wait_status(first.client(), job_id, "Suspended")
    with serving(local_env) as second:
        client = second.client()
        client.update_job_status(AccountId=ACCOUNT_A, JobId=job_id, RequestedJobStatus="Ready")
        assert wait_status(client, job_id, "Complete", "Failed")["Status"] == "Complete"


# -- the HTTP-proxy workaround (docs/aws-contracts.md#local-endpoints-and-clients): no hook, absolute-form
# request targets ---------------


def test_http_proxy_route_without_hook(server: Server, manifest: dict[str, Any]) -> None:
    client = boto3.client(
        "s3control",
        endpoint_url=f"http://s3-control.emulator:{server.port}",
        aws_access_key_id=KEY_A.access_key,
        aws_secret_access_key=KEY_A.secret_key,
        region_name="us-east-1",
        config=Config(proxies={"http": f"http://127.0.0.1:{server.port}"}, retries={"max_attempts": 1}),
    )
    job_id = create(client, manifest, ConfirmationRequired=True)
    assert [j["JobId"] for j in client.list_jobs(AccountId=ACCOUNT_A)["Jobs"]] == [job_id]
    assert client.describe_job(AccountId=ACCOUNT_A, JobId=job_id)["Job"]["JobId"] == job_id


# -- accounts -----------------------------------------------------------------------------------


def test_accounts_are_isolated(server: Server, manifest: dict[str, Any]) -> None:
    alice, bob = server.client(KEY_A), server.client(KEY_B)
    job_id = create(alice, manifest, ConfirmationRequired=True)
    with pytest.raises(bob.exceptions.NotFoundException):
        bob.describe_job(AccountId=ACCOUNT_B, JobId=job_id)
    with pytest.raises(bob.exceptions.NotFoundException):
        bob.update_job_status(AccountId=ACCOUNT_B, JobId=job_id, RequestedJobStatus="Cancelled")
    with pytest.raises(bob.exceptions.NotFoundException):
        bob.put_job_tagging(AccountId=ACCOUNT_B, JobId=job_id, Tags=[])
    assert bob.list_jobs(AccountId=ACCOUNT_B)["Jobs"] == []
    with pytest.raises(bob.exceptions.ClientError) as caught:
        bob.describe_job(AccountId=ACCOUNT_A, JobId=job_id)  # claiming Alice's account
    assert caught.value.response["Error"]["Code"] == "AccessDenied"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert alice.describe_job(AccountId=ACCOUNT_A, JobId=job_id)["Job"]["Status"] != "Cancelled"


# -- authentication failures with raw requests -------------------------------------------------


def signed_create(server: Server, manifest: dict[str, Any], key: AccessKey = KEY_A) -> AWSRequest:
    """A CreateJob request exactly as boto3 would send it, signed with `key`."""
    from botocore.serialize import create_serializer

    from s3batch.api.xml import service_model

    params = {
        "AccountId": key.account_id,
        "Operation": TAGGING,
        "Manifest": manifest,
        "Report": report_spec("reports"),
        "Priority": 1,
        "RoleArn": ROLE,
        "ClientRequestToken": "raw",
    }
    body = create_serializer("rest-xml").serialize_to_request(
        params, service_model().operation_model("CreateJob")
    )
    request = AWSRequest(
        method="POST",
        url=f"{server.url}/v20180820/jobs",
        data=body["body"],
        headers={"x-amz-account-id": key.account_id},
    )
    S3SigV4Auth(Credentials(key.access_key, key.secret_key), "s3", "us-east-1").add_auth(request)
    return request


def send(request: AWSRequest, body: bytes | None = None, **headers: str | None) -> httpx.Response:
    prepared = request.prepare()
    merged = {k: v for k, v in {**dict(prepared.headers.items()), **headers}.items() if v is not None}
    data = prepared.body if body is None else body
    return httpx.post(prepared.url, content=data, headers=merged, timeout=10)


def assert_refused(response: httpx.Response, status: int, code: str, server: Server) -> None:
    assert response.status_code == status, response.text
    assert f"<Code>{code}</Code>" in response.text
    assert "<RequestId>" in response.text
    assert server.client().list_jobs(AccountId=ACCOUNT_A)["Jobs"] == [], "nothing may be created"


def test_a_correct_raw_request_is_accepted(server: Server, manifest: dict[str, Any]) -> None:
    response = send(signed_create(server, manifest))
    assert response.status_code == 200 and "<JobId>" in response.text


def test_unsigned_request(server: Server, manifest: dict[str, Any]) -> None:
    response = send(signed_create(server, manifest), Authorization=None)
    assert_refused(response, 403, "AccessDenied", server)


def test_unknown_access_key(server: Server, manifest: dict[str, Any]) -> None:
    stranger = AccessKey("AKIDNOBODY", "whatever", ACCOUNT_A)
    assert_refused(send(signed_create(server, manifest, stranger)), 403, "InvalidAccessKeyId", server)


def test_wrong_secret(server: Server, manifest: dict[str, Any]) -> None:
    forged = AccessKey(KEY_A.access_key, "not-alices-secret", ACCOUNT_A)
    assert_refused(send(signed_create(server, manifest, forged)), 403, "SignatureDoesNotMatch", server)


def test_skewed_clock(server: Server, manifest: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime, timedelta

    past = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=20)
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda *a, **k: past)
    assert_refused(send(signed_create(server, manifest)), 403, "RequestTimeTooSkewed", server)


def test_tampered_body(server: Server, manifest: dict[str, Any]) -> None:
    request = signed_create(server, manifest)
    original = bytes(request.prepare().body)
    tampered = original.replace(b"<Priority>1</Priority>", b"<Priority>9</Priority>")
    assert tampered != original
    assert_refused(send(request, tampered), 400, "XAmzContentSHA256Mismatch", server)
    rehashed = send(request, tampered, **{"X-Amz-Content-SHA256": hashlib.sha256(tampered).hexdigest()})
    assert_refused(rehashed, 403, "SignatureDoesNotMatch", server)


def test_body_over_the_limit(server: Server) -> None:
    from s3batch.api.control import MAX_BODY_BYTES

    response = httpx.post(f"{server.url}/v20180820/jobs", content=b"x" * (MAX_BODY_BYTES + 1), timeout=10)
    assert_refused(response, 413, "EntityTooLarge", server)


def test_unknown_path_is_an_xml_error(server: Server) -> None:
    response = httpx.get(f"{server.url}/v20180820/nothing", timeout=10)
    assert response.status_code == 404 and "<Code>NotFound</Code>" in response.text
