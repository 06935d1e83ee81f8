"""`s3batch serve` against hostile key holders, end to end on 127.0.0.1.

- LambdaInvoke over the S3 Control API (unmodified boto3): only the functions the operator
  registered for the caller's account in server.toml run; `python:` ARNs only when the operator
  allows them; handlers import from the operator's function_path, not the server's cwd.
- The real `s3batch serve` in a subprocess: secrets in query strings never reach the access log;
  X-Forwarded-For counts only from trusted proxies; TLS with a certificate made here, and the
  session cookie is Secure over HTTPS only.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError
from click.testing import CliRunner
from tests.certs import self_signed
from tests.conftest import free_port
from tests.integration.conftest import Env, data_manifest, read_report
from tests.integration.test_api_boto3 import ACCOUNT_A, ACCOUNT_B, KEY_A, KEY_B, create, serving, wait_status

from s3batch.api.auth import AccessKey
from s3batch.api.ratelimit import MAX_FAILURES_PER_KEY
from s3batch.cli import cli
from s3batch.client import strip_account_host_prefix
from s3batch.settings import Settings
from s3batch.store.sqlite import SqliteJobStore

pytestmark = pytest.mark.integration

#: Bounds for a subprocess server to answer and to stop, in seconds.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
POLL_S = 0.1
HTTP_TIMEOUT_S = 10.0
HANDLER_MODULE = "tenant_handlers"
HANDLER_SOURCE = """
def hello(event, context):
    task = event["tasks"][0]
    return {
        "invocationSchemaVersion": event["invocationSchemaVersion"],
        "treatMissingKeysAs": "PermanentFailure",
        "invocationId": event["invocationId"],
        "results": [{"taskId": task["taskId"], "resultCode": "Succeeded",
                     "resultString": "hello " + context.function_name}],
    }
"""


def lambda_arn(account: str, name: str) -> str:
    return f"arn:aws:lambda:us-east-1:{account}:function:{name}"


def invoke(arn: str) -> dict[str, Any]:
    return {"LambdaInvoke": {"FunctionArn": arn}}


def write_server_toml(env: Env, tmp_path: Path, server: str = "") -> Path:
    """HOME/server.toml registering `thumbs` for account A, `bobs` for B and `shared` for all;
    their handler module exists only in the configured function_path."""
    handlers = tmp_path / "operator-handlers"
    handlers.mkdir(exist_ok=True)
    (handlers / f"{HANDLER_MODULE}.py").write_text(HANDLER_SOURCE, encoding="utf-8")
    env.home.mkdir(parents=True, exist_ok=True)
    registrations = "".join(
        f'[[functions]]\naccount_id = "{account}"\nname = "{name}"\nhandler = "{HANDLER_MODULE}:hello"\n\n'
        for account, name in ((ACCOUNT_A, "thumbs"), (ACCOUNT_B, "bobs"), ("*", "shared"))
    )
    text = f'[server]\nfunction_path = ["{handlers}"]\n{server}\n{registrations}'
    (env.home / "server.toml").write_text(text, encoding="utf-8")
    return handlers


def refused(client: Any, manifest: dict[str, Any], arn: str, account: str = ACCOUNT_A) -> str:
    """The error message of a CreateJob naming `arn`, asserting S3 Control's InvalidRequest."""
    with pytest.raises(ClientError) as caught:
        create(client, manifest, account, Operation=invoke(arn))
    error = caught.value.response
    assert error["Error"]["Code"] == "InvalidRequestException", error
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    return str(error["Error"]["Message"])


def recorded_function(home: Path, job_id: str) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        store = SqliteJobStore(Settings(home=home).db_path)
        try:
            job = await store.get_job(job_id, None)
        finally:
            await store.close()
        return dict(job.runtime["function"])

    return asyncio.run(read())


# -- functions over the S3 Control API ----------------------------------------------------------


def test_python_arns_and_unregistered_functions_are_refused(local_env: Env, tmp_path: Path) -> None:
    write_server_toml(local_env, tmp_path)
    manifest = data_manifest(local_env, ["a.txt"], ["a.txt"])
    with serving(local_env) as server:
        client = server.client()
        for arn in ("python:builtins:print", "python:os:system", f"python:{HANDLER_MODULE}:hello"):
            assert "does not run python: handlers" in refused(client, manifest, arn)
        unknown = refused(client, manifest, lambda_arn(ACCOUNT_A, "nobody"))
        # Account B's function is refused to A exactly like one that does not exist.
        others = refused(client, manifest, lambda_arn(ACCOUNT_B, "bobs"))
        assert others == unknown.replace("'nobody'", "'bobs'")
        assert "[[functions]] in server.toml" in others
        assert "'thumbs' is not registered" in refused(server.client(KEY_B), manifest, "thumbs", ACCOUNT_B)
        assert client.list_jobs(AccountId=ACCOUNT_A)["Jobs"] == []


def test_registered_functions_run_from_the_operators_path(local_env: Env, tmp_path: Path) -> None:
    handlers = write_server_toml(local_env, tmp_path)
    manifest = data_manifest(local_env, ["a.txt"], ["a.txt"])
    with serving(local_env) as server:
        own = create(server.client(), manifest, Operation=invoke(lambda_arn(ACCOUNT_A, "thumbs")))
        shared = create(server.client(KEY_B), manifest, ACCOUNT_B, Operation=invoke("shared"))
        for key, job_id, name in ((KEY_A, own, "thumbs"), (KEY_B, shared, "shared")):
            job = wait_status(server.client(key), job_id, "Complete", "Failed", account=key.account_id)
            assert job["Status"] == "Complete", job.get("FailureReasons")
            [row] = read_report(local_env, "reports", job_id)["rows"]["succeeded"]
            assert row[-1] == f"hello {name}"
    function = recorded_function(local_env.home, own)
    assert function["handler"] == f"{HANDLER_MODULE}:hello"
    assert function["sys_path"] == [str(handlers)]  # not the server's working directory
    assert os.getcwd() not in function["sys_path"]


def test_operator_may_allow_python_arns(local_env: Env, tmp_path: Path) -> None:
    write_server_toml(local_env, tmp_path, server="allow_python_functions = true")
    manifest = data_manifest(local_env, ["a.txt"], ["a.txt"])
    with serving(local_env) as server:
        client = server.client()
        job_id = create(client, manifest, Operation=invoke(f"python:{HANDLER_MODULE}:hello"))
        job = wait_status(client, job_id, "Complete", "Failed")
        assert job["Status"] == "Complete", job.get("FailureReasons")
        assert read_report(local_env, "reports", job_id)["rows"]["succeeded"][0][-1] == "hello hello"
        # Registered names still only for their account.
        assert "not registered for your account" in refused(client, manifest, "bobs")


# -- the real `s3batch serve` ------------------------------------------------------------------


@dataclass
class Served:
    url: str
    log: Path
    proc: subprocess.Popen[bytes]

    def read_log(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def key_env(*keys: AccessKey) -> str:
    return ",".join(f"{k.access_key}:{k.secret_key}:{k.account_id}" for k in keys)


@contextlib.contextmanager
def cli_serve(home: Path, *args: str, verify: ssl.SSLContext | None = None) -> Iterator[Served]:
    """`python -m s3batch serve` on a free port; stdout and stderr to one file; stopped on exit."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = home.parent / f"serve-{port}.log"
    env = {**os.environ, "S3BATCH_HOME": str(home), "S3BATCH_ACCESS_KEYS": key_env(KEY_A, KEY_B)}
    env.pop("FORWARDED_ALLOW_IPS", None)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "s3batch", "serve", "--port", str(port), *args],
            env=env,
            cwd=home.parent,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    scheme = "https" if verify is not None else "http"
    served = Served(f"{scheme}://127.0.0.1:{port}", log, proc)
    try:
        wait_answering(served, verify)
        yield served
    finally:
        stop(proc)


def wait_answering(served: Served, verify: ssl.SSLContext | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert served.proc.poll() is None, served.read_log()
        try:
            httpx.get(served.url + "/api/v1/openapi.json", timeout=1.0, verify=verify or True)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"serve did not answer within {START_TIMEOUT_S}s") from None
            time.sleep(POLL_S)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its job worker
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)


def login(client: httpx.Client, key: AccessKey, secret: str | None = None, **headers: str) -> httpx.Response:
    body = {"access_key": key.access_key, "secret_key": key.secret_key if secret is None else secret}
    return client.post("/api/v1/session", json=body, headers=headers)


def test_query_secrets_never_reach_the_access_log(tmp_path: Path) -> None:
    secret, signature = "SECRETVALUE-webhook-9f2c", "0123abcdef-SIGNATURE-5e6f"
    with cli_serve(tmp_path / "home") as served, httpx.Client(base_url=served.url) as http:
        hook = http.post(f"/pipelines/nowhere/events?token={secret}&region=eu-west-1", json={})
        assert hook.status_code == 404
        presigned = http.get(
            f"/v20180820/jobs?X-Amz-Credential=AKIDALICE%2F20250101&X-Amz-Signature={signature}"
            f"&X-Amz-Security-Token={secret}&maxResults=5"
        )
        assert presigned.status_code in (400, 403)
    log = served.read_log()
    assert "/pipelines/nowhere/events?token=REDACTED&region=eu-west-1" in log, log
    assert "X-Amz-Signature=REDACTED" in log and "X-Amz-Security-Token=REDACTED" in log, log
    assert "X-Amz-Credential=REDACTED&" in log and "maxResults=5" in log, log
    assert secret not in log and signature not in log and "AKIDALICE" not in log


def test_forwarded_for_is_ignored_from_untrusted_peers(tmp_path: Path) -> None:
    with cli_serve(tmp_path / "home") as served, httpx.Client(base_url=served.url) as http:
        answers = [
            login(http, KEY_A, "wrong", **{"X-Forwarded-For": f"198.51.100.{n}"}).status_code
            for n in range(MAX_FAILURES_PER_KEY + 1)
        ]
        assert answers == [401] * MAX_FAILURES_PER_KEY + [429]
        # Over plain HTTP the session cookie is not Secure (or local use could not log in).
        ok = login(http, KEY_B)
        assert ok.status_code == 201 and "secure" not in ok.headers["set-cookie"].lower()
    assert "198.51.100." not in served.read_log()  # the access log names the real peer


def test_forwarded_for_counts_from_a_trusted_proxy(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with (
        cli_serve(home, "--forwarded-allow-ips", "127.0.0.1") as served,
        httpx.Client(base_url=served.url) as http,
    ):
        spread = [
            login(http, KEY_A, "wrong", **{"X-Forwarded-For": f"198.51.100.{n}"}).status_code
            for n in range(MAX_FAILURES_PER_KEY + 1)
        ]
        assert spread == [401] * (MAX_FAILURES_PER_KEY + 1)  # each its own client address
        one = [
            login(http, KEY_A, "wrong", **{"X-Forwarded-For": "203.0.113.9"}).status_code
            for _ in range(MAX_FAILURES_PER_KEY + 1)
        ]
        assert one == [401] * MAX_FAILURES_PER_KEY + [429]
        # The proxy's X-Forwarded-Proto says the client used HTTPS: the cookie is Secure.
        cookie = login(http, KEY_B, **{"X-Forwarded-Proto": "https"}).headers["set-cookie"]
        assert "secure" in cookie.lower()
    assert '203.0.113.9:0 - "POST /api/v1/session' in served.read_log()


def test_trusted_proxies_must_be_addresses(tmp_path: Path) -> None:
    env = {"S3BATCH_HOME": str(tmp_path / "home"), "S3BATCH_ACCESS_KEYS": key_env(KEY_A)}
    everyone = CliRunner().invoke(cli, ["serve", "--forwarded-allow-ips", "*"], env=env)
    assert everyone.exit_code == 1 and "'*' is not an IP address or network" in everyone.output
    lone_key = CliRunner().invoke(cli, ["serve", "--tls-keyfile", __file__], env=env)
    assert lone_key.exit_code == 2 and "--tls-keyfile needs --tls-certfile" in lone_key.output


def test_serve_terminates_tls(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    args = ("--tls-certfile", str(cert), "--tls-keyfile", str(key))
    with cli_serve(tmp_path / "home", *args, verify=trust) as served:
        with httpx.Client(base_url=served.url, verify=trust, timeout=HTTP_TIMEOUT_S) as http:
            session = login(http, KEY_A)
            assert session.status_code == 201
            cookie = session.headers["set-cookie"].lower()
            assert "secure" in cookie and "httponly" in cookie
            assert http.get("/api/v1/session").json()["account_id"] == ACCOUNT_A
        s3control = boto3.client(
            "s3control",
            endpoint_url=served.url,
            aws_access_key_id=KEY_A.access_key,
            aws_secret_access_key=KEY_A.secret_key,
            region_name="us-east-1",
            verify=str(cert),
        )
        s3control.meta.events.register("before-sign.s3-control", strip_account_host_prefix)
        assert s3control.list_jobs(AccountId=ACCOUNT_A)["Jobs"] == []
        with pytest.raises(httpx.TransportError):  # plain HTTP is not spoken on that port
            httpx.get(served.url.replace("https://", "http://") + "/", timeout=HTTP_TIMEOUT_S)
