"""S3batchRunCommand over `s3batch serve`'s S3 Control API: a caller names a command its operator
registered in server.toml (`CommandName`, [[commands]]) and changes nothing of what runs: no
argument, no environment, no PATH, no cap above the registration's (InvalidRequestException
otherwise, nothing stored). The job records the registration and runs it only while server.toml
still registers it so; rerun-failed checks it again. boto3's model has no such operation, so
CreateJob is sent as boto3 would serialize it, with the extension element in <Operation>, and
signed with SigV4."""

from __future__ import annotations

import asyncio
import gzip
import re
import shutil
import uuid
from typing import Any
from xml.sax.saxutils import escape

import httpx
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.serialize import create_serializer
from tests.integration.conftest import Env, data_manifest, read_report, report_spec
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

from s3batch.api.auth import AccessKey
from s3batch.api.xml import service_model
from s3batch.domain.job import Job
from s3batch.errors import InvalidRequest
from s3batch.operations import run_command as rc
from s3batch.service.jobs import using_service
from s3batch.service.rerun import rerun_failed
from s3batch.settings import Settings

pytestmark = pytest.mark.integration

HTTP_TIMEOUT_S = 10.0
GZIP = shutil.which("gzip", path=rc.DEFAULT_PATH)
SHA256SUM = shutil.which("sha256sum", path=rc.DEFAULT_PATH)
LDD = shutil.which("ldd", path=rc.DEFAULT_PATH)


def registration(name: str, argv: list[str], account: str = "*", **settings: int) -> str:
    """One [[commands]] table of server.toml."""
    quoted = ", ".join(f'"{arg}"' for arg in argv)
    extra = "".join(f"{key} = {value}\n" for key, value in settings.items())
    return f'[[commands]]\naccount_id = "{account}"\nname = "{name}"\nargv = [{quoted}]\n{extra}\n'


def gzip_registration(**settings: int) -> str:
    assert GZIP is not None
    return registration("gzip", [GZIP, "-c", "-n", "{input}"], **settings)


def write_server_toml(env: Env, *commands: str) -> None:
    env.home.mkdir(parents=True, exist_ok=True)
    (env.home / "server.toml").write_text("[server]\n\n" + "".join(commands), encoding="utf-8")


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
    server: Server,
    manifest: dict[str, Any],
    params: dict[str, Any],
    key: AccessKey = KEY_A,
    confirm: bool = False,
) -> httpx.Response:
    """POST a signed CreateJob whose Operation is S3batchRunCommand `params`."""
    request = {
        "AccountId": key.account_id,
        "Operation": TAGGING,  # replaced below: botocore's model has no S3batchRunCommand
        "Manifest": manifest,
        "Report": report_spec("reports"),
        "Priority": 10,
        "RoleArn": f"arn:aws:iam::{key.account_id}:role/batch" if key is not KEY_A else ROLE,
        "ConfirmationRequired": confirm,
        "ClientRequestToken": str(uuid.uuid4()),
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


def created(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    found = re.search(r"<JobId>([^<]+)</JobId>", response.text)
    assert found is not None
    return found.group(1)


def named(name: str = "gzip", **extra: Any) -> dict[str, Any]:
    return {"CommandName": name, "TargetResource": "arn:aws:s3:::out", "StdoutFile": "{key}.gz", **extra}


def assert_refused(response: httpx.Response, message: str, server: Server) -> None:
    assert response.status_code == 400, response.text
    assert re.search(r"<Code>(InvalidRequest|BadRequest)Exception</Code>", response.text), response.text
    assert message in response.text, response.text
    for key, account in ((KEY_A, ACCOUNT_A), (KEY_B, ACCOUNT_B)):
        assert server.client(key).list_jobs(AccountId=account)["Jobs"] == [], "nothing may be created"


def every_key(env: Env, bucket: str) -> list[str]:
    assert env.root is not None
    return sorted(
        str(p.relative_to(env.root / bucket)) for p in (env.root / bucket).rglob("*") if p.is_file()
    )


def test_without_registrations_nothing_runs(local_env: Env) -> None:
    write_server_toml(local_env)
    manifest = data_manifest(local_env, ["a.txt"], ["a.txt"])
    with serving(local_env) as server:
        assert_refused(create_job(server, manifest, named()), "is not a command registered for your", server)
        for command in ("gzip", str(GZIP), "sh"):
            plain = {"Command": [command, "-c", "-n", "{input}"], "TargetResource": "arn:aws:s3:::out"}
            assert_refused(
                create_job(server, manifest, plain), "name one with S3batchRunCommand.CommandName", server
            )


def test_a_caller_cannot_add_arguments_to_read_the_servers_files(local_env: Env) -> None:
    """The exfiltration: with gzip runnable by callers, `gzip -c <HOME>/server.toml` and a
    StdoutFile uploaded every tenant's secret keys to the caller's bucket."""
    write_server_toml(local_env, gzip_registration())
    secret = local_env.home / "server.toml"
    manifest = data_manifest(local_env, ["a.txt"], ["a.txt"])
    local_env.make_bucket("out")
    loot = {
        "Command": ["gzip", "-c", str(secret)],
        "StdoutFile": "loot.gz",
        "TargetResource": "arn:aws:s3:::out",
    }
    with serving(local_env) as server:
        assert_refused(
            create_job(server, manifest, loot), "name one with S3batchRunCommand.CommandName", server
        )
        both = {**loot, "CommandName": "gzip"}
        assert_refused(create_job(server, manifest, both), "give Command or CommandName, not both", server)
    assert every_key(local_env, "out") == []


@pytest.mark.parametrize(
    "environment",
    [
        {"BASH_ENV": "$(id > /tmp/s3batch-pwned)"},  # code in any bash-script executable (ldd)
        {"PATH": "/tmp:/usr/bin:/bin"},  # a lookalike of the registered executable's children
        {"PERL5OPT": "-Mstrict"},
        {"LANG": "C.UTF-8"},  # harmless, yet the environment is the operator's alone
    ],
)
def test_a_caller_sets_no_environment(local_env: Env, environment: dict[str, str]) -> None:
    assert LDD is not None
    write_server_toml(local_env, gzip_registration(), registration("ldd", [LDD, "{input}"]))
    manifest = data_manifest(local_env, ["a.txt"], ["a.txt"])
    with serving(local_env) as server:
        for name in ("gzip", "ldd"):
            assert_refused(
                create_job(server, manifest, named(name, Environment=environment)),
                "Environment: a registered command (CommandName) runs with",
                server,
            )
        free_form = {
            "Command": ["ldd", "{input}"],
            "TargetResource": "arn:aws:s3:::out",
            "Environment": environment,
        }
        assert create_job(server, manifest, free_form).status_code == 400


def test_a_registered_command_runs_exactly_as_registered(local_env: Env) -> None:
    write_server_toml(local_env, gzip_registration())
    manifest = data_manifest(local_env, ["a.txt", "b c.txt"], ["a.txt", "b c.txt"])
    local_env.make_bucket("out")
    with serving(local_env) as server:
        job_id = created(create_job(server, manifest, named(TargetKeyPrefix="gz")))
        job = wait_status(server.client(), job_id, "Complete", "Failed")
        assert job["Status"] == "Complete", job.get("FailureReasons")
        assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 2
    for key in ("a.txt", "b c.txt"):
        assert gzip.decompress(local_env.get("out", f"gz/{key}.gz") or b"") == key.encode()
    rows = read_report(local_env, "reports", job_id)["rows"]["succeeded"]
    assert sorted(row[6].split(": ")[-1] for row in rows) == ["gz/a.txt.gz", "gz/b c.txt.gz"]


def test_a_registration_of_another_account_is_not_yours(local_env: Env) -> None:
    write_server_toml(
        local_env, gzip_registration().replace('account_id = "*"', f'account_id = "{ACCOUNT_B}"')
    )
    manifest = data_manifest(local_env, ["a.txt"], ["a.txt"])
    with serving(local_env) as server:
        assert_refused(
            create_job(server, manifest, named()), "'gzip' is not a command registered for your", server
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("TimeoutSeconds", 86_400),
        ("MaxOutputBytes", 5 << 40),
        ("MaxInputBytes", 11),
        ("MaxDiskBytes", 1 << 40),
    ],
)
def test_caps_are_the_registrations(local_env: Env, field: str, value: int) -> None:
    write_server_toml(
        local_env,
        gzip_registration(
            timeout_seconds=30, max_output_bytes=1 << 20, max_input_bytes=10, max_disk_bytes=1 << 30
        ),
    )
    manifest = data_manifest(local_env, ["a.txt"], ["a.txt"])
    with serving(local_env) as server:
        assert_refused(
            create_job(server, manifest, named(**{field: value})),
            f"S3batchRunCommand.{field} {value} is more than this server allows for the command",
            server,
        )


def test_an_input_over_the_registrations_cap_fails_its_task(local_env: Env) -> None:
    write_server_toml(local_env, gzip_registration(max_input_bytes=10))
    manifest = data_manifest(local_env, ["a.txt", "a-longer-name.txt"], ["a.txt", "a-longer-name.txt"])
    local_env.make_bucket("out")
    with serving(local_env) as server:
        job_id = created(create_job(server, manifest, named()))
        wait_status(server.client(), job_id, "Complete", "Failed")
    rows = read_report(local_env, "reports", job_id)["rows"]
    [failed] = rows["failed"]
    assert failed[1:6] == ["a-longer-name.txt", "", "failed", "400", "InputTooLarge"]
    assert every_key(local_env, "out") == ["a.txt.gz"]


@pytest.mark.parametrize("change", ["removed", "another executable", "another argument"])
def test_a_registration_changed_before_the_job_runs_fails_its_tasks(local_env: Env, change: str) -> None:
    """The registration is checked again when the job runs, not only at CreateJob."""
    assert GZIP is not None and SHA256SUM is not None
    write_server_toml(local_env, gzip_registration())
    manifest = data_manifest(local_env, ["a.txt"], ["a.txt"])
    local_env.make_bucket("out")
    with serving(local_env) as server:
        client = server.client()
        job_id = created(create_job(server, manifest, named(), confirm=True))
        wait_status(client, job_id, "Suspended")
        if change == "removed":
            write_server_toml(local_env)
        elif change == "another executable":
            write_server_toml(local_env, registration("gzip", [SHA256SUM, "{input}"]))
        else:
            write_server_toml(local_env, registration("gzip", [GZIP, "-c", "-n", "/etc/hostname"]))
        client.update_job_status(AccountId=ACCOUNT_A, JobId=job_id, RequestedJobStatus="Ready")
        wait_status(client, job_id, "Complete", "Failed")
    [failed] = read_report(local_env, "reports", job_id)["rows"]["failed"]
    assert failed[3:6] == ["failed", "403", "CommandNotRegistered"]
    assert every_key(local_env, "out") == []


def rerun(env: Env, job_id: str) -> Job:
    return asyncio.run(using_service(Settings(home=env.home), lambda s: rerun_failed(s, job_id, ACCOUNT_A)))


def test_rerun_failed_checks_the_registration_again(local_env: Env) -> None:
    """rerun-failed (run by the operator on the server's HOME) creates the rerun under the
    server's rules: the tenant's command as server.toml registers it now, or nothing."""
    write_server_toml(local_env, gzip_registration(max_input_bytes=10))
    manifest = data_manifest(local_env, ["a.txt", "a-longer-name.txt"], ["a.txt", "a-longer-name.txt"])
    local_env.make_bucket("out")
    with serving(local_env) as server:
        job_id = created(create_job(server, manifest, named()))
        wait_status(server.client(), job_id, "Complete", "Failed")
    write_server_toml(local_env, gzip_registration(max_input_bytes=100))
    again = rerun(local_env, job_id)
    assert again.setup.command is not None
    assert again.setup.command.registration.caps.max_input_bytes == 100
    assert again.setup.command.config == str(local_env.home / "server.toml")

    write_server_toml(local_env)
    with pytest.raises(InvalidRequest, match="'gzip' is not a command registered for your account"):
        rerun(local_env, job_id)
    write_server_toml(local_env, gzip_registration(max_input_bytes=10, timeout_seconds=5))
    rerun(local_env, job_id)  # the original request set no caps: any registration's fit
