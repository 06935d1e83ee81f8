"""S3batchRunCommand over `s3batch serve`'s S3 Control API: refused (InvalidRequestException)
unless server.toml's allow_commands lists the executable the command resolves to; an allowed one
runs in the server's job worker. boto3's model has no such operation, so CreateJob is sent as
boto3 would serialize it, with the extension element in <Operation>, and signed with SigV4."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.serialize import create_serializer
from tests.integration.conftest import Env, data_manifest, read_report, report_spec
from tests.integration.test_api_boto3 import ACCOUNT_A, KEY_A, ROLE, TAGGING, Server, serving, wait_status

from s3batch.api.auth import AccessKey
from s3batch.api.xml import service_model
from s3batch.operations import run_command as rc

pytestmark = pytest.mark.integration

HTTP_TIMEOUT_S = 10.0
GZIP = shutil.which("gzip", path=rc.DEFAULT_PATH)


def write_server_toml(env: Env, server: str = "") -> None:
    env.home.mkdir(parents=True, exist_ok=True)
    (env.home / "server.toml").write_text(f"[server]\n{server}\n", encoding="utf-8")


def run_command_xml(params: dict[str, Any]) -> str:
    """<S3batchRunCommand> as the server's XML parser reads it (lists of <member>, maps of <entry>)."""
    parts = []
    for name, value in params.items():
        if isinstance(value, list):
            inner = "".join(f"<member>{escape(item)}</member>" for item in value)
        elif isinstance(value, dict):
            inner = "".join(
                f"<entry><key>{escape(k)}</key><value>{escape(v)}</value></entry>" for k, v in value.items()
            )
        else:
            inner = escape(str(value))
        parts.append(f"<{name}>{inner}</{name}>")
    return f"<S3batchRunCommand>{''.join(parts)}</S3batchRunCommand>"


def create_job(
    server: Server, manifest: dict[str, Any], params: dict[str, Any], key: AccessKey = KEY_A
) -> httpx.Response:
    """POST a signed CreateJob whose Operation is S3batchRunCommand `params`."""
    request = {
        "AccountId": key.account_id,
        "Operation": TAGGING,  # replaced below: botocore's model has no S3batchRunCommand
        "Manifest": manifest,
        "Report": report_spec("reports"),
        "Priority": 10,
        "RoleArn": ROLE,
        "ConfirmationRequired": False,
        "ClientRequestToken": f"token-{len(str(params))}-{hash(str(params)) & 0xFFFF}",
    }
    body = (
        create_serializer("rest-xml")
        .serialize_to_request(request, service_model().operation_model("CreateJob"))["body"]
        .decode()
    )
    body, replaced = re.subn(
        r"<Operation>.*?</Operation>", f"<Operation>{run_command_xml(params)}</Operation>", body, flags=re.S
    )
    assert replaced == 1
    signed = AWSRequest(
        method="POST",
        url=f"{server.url}/v20180820/jobs",
        data=body.encode(),
        headers={"x-amz-account-id": key.account_id},
    )
    S3SigV4Auth(Credentials(key.access_key, key.secret_key), "s3", "us-east-1").add_auth(signed)
    prepared = signed.prepare()
    return httpx.post(
        prepared.url, content=prepared.body, headers=dict(prepared.headers.items()), timeout=HTTP_TIMEOUT_S
    )


def gzip_params(command: str = "gzip", **extra: Any) -> dict[str, Any]:
    return {
        "Command": [command, "-c", "-n", "{input}"],
        "TargetResource": "arn:aws:s3:::out",
        "StdoutFile": "{key}.gz",
        **extra,
    }


def assert_refused(response: httpx.Response, message: str, server: Server) -> None:
    assert response.status_code == 400, response.text
    assert "<Code>InvalidRequestException</Code>" in response.text
    assert message in response.text
    assert server.client().list_jobs(AccountId=ACCOUNT_A)["Jobs"] == [], "nothing may be created"


def test_run_command_is_refused_without_an_allow_list(local_env: Env) -> None:
    write_server_toml(local_env)
    manifest = data_manifest(local_env, ["a.txt"], ["a.txt"])
    with serving(local_env) as server:
        for command in ("gzip", str(GZIP), "sh"):
            assert_refused(
                create_job(server, manifest, gzip_params(command)),
                "is not an executable this server runs",
                server,
            )


def test_only_allowed_executables_run(local_env: Env) -> None:
    assert GZIP is not None
    write_server_toml(local_env, 'allow_commands = ["gzip", "/usr/bin/sha256sum"]')
    manifest = data_manifest(local_env, ["a.txt", "b c.txt"], ["a.txt", "b c.txt"])
    local_env.make_bucket("out")
    with serving(local_env) as server:
        for refused in (
            gzip_params("env"),
            gzip_params("python3"),
            gzip_params(
                str(Path(GZIP).parent / ".." / Path(GZIP).parent.name / "gzip")
            ),  # not the exact path
            gzip_params(Environment={"LD_PRELOAD": "/tmp/evil.so"}),
        ):
            response = create_job(server, manifest, refused)
            assert response.status_code == 400 and "InvalidRequestException" in response.text, response.text
        assert server.client().list_jobs(AccountId=ACCOUNT_A)["Jobs"] == []

        response = create_job(server, manifest, gzip_params(Environment={"LANG": "C.UTF-8"}))
        assert response.status_code == 200, response.text
        job_id = re.search(r"<JobId>([^<]+)</JobId>", response.text)
        assert job_id is not None
        job = wait_status(server.client(), job_id.group(1), "Complete", "Failed")
        assert job["Status"] == "Complete", job.get("FailureReasons")
        assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 2
    for key in ("a.txt", "b c.txt"):
        assert gzip.decompress(local_env.get("out", f"{key}.gz") or b"") == key.encode()
    rows = read_report(local_env, "reports", job_id.group(1))["rows"]["succeeded"]
    assert sorted(row[6].split(": ")[-1] for row in rows) == ["a.txt.gz", "b c.txt.gz"]
