"""Pipelines beyond a function: batch operations as the action (S3PutObjectTagging, LambdaInvoke),
pipelines hosted by `s3batch serve` (webhook with its token, poller, JSON API, presigned uploads),
and the real CLI servers in subprocesses receiving a webhook POST, all on moto."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from click.testing import CliRunner
from tests.conftest import free_port
from tests.integration.conftest import FIXTURE_HANDLERS, Env
from tests.integration.test_api_boto3 import KEY_A
from tests.integration.test_pipeline_flow import record

from s3batch.api.app import create_app
from s3batch.api.auth import KeyRing
from s3batch.api.pipelines import load_hosted
from s3batch.cli import cli
from s3batch.pipelines.sources import MAX_EVENT_BODY_BYTES
from s3batch.settings import Settings

pytestmark = pytest.mark.integration

#: Seconds a test waits for background work (processing, server start) before failing.
WAIT_S = 30.0
POLL_S = 0.05
HTTP_TIMEOUT_S = 10.0
TOKEN = "hook-token-0123456789abcdef"
TAGGING = '{ S3PutObjectTagging = { TagSet = [{ Key = "seen", Value = "yes" }] } }'


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)


def write(tmp_path: Path, name: str, source: str, archive: str, action: str, extra: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\nsource = "{source}"\n{action}\narchive = "{archive}"\n{extra}', encoding="utf-8"
    )
    return path


def buckets(env: Env, base: str, *suffixes: str) -> list[str]:
    names = [f"{base}-{s}" for s in suffixes]
    for name in names:
        env.make_bucket(name)
    return names


def tags(env: Env, bucket: str, key: str) -> dict[str, str]:
    found = env.client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return {t["Key"]: t["Value"] for t in found}


def event_for(bucket: str, key: str, etag: str) -> dict[str, Any]:
    rec = record(key, etag, "0A")
    rec["s3"]["bucket"]["name"] = bucket
    return {"Records": [rec]}


# -- a batch operation as the pipeline's action -------------------------------------------------------


def test_tagging_operation_pipeline_archives_tagged_files(
    moto_env: Env, bucket_name: str, tmp_path: Path
) -> None:
    staging, archive = buckets(moto_env, bucket_name, "in", "ar")
    for key in ("a.txt", "dir/b c.txt"):
        moto_env.put(staging, key, key.encode())
    path = write(tmp_path, "tagger", staging, archive, f"operation = {TAGGING}")
    env = {"S3BATCH_STORAGE": str(moto_env.storage.endpoint_url)}  # type: ignore[union-attr]
    out = CliRunner().invoke(cli, ["pipeline", "run", str(path), "--backlog"], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["files"] == {"archived": 2}
    for key in ("a.txt", "dir/b c.txt"):
        assert moto_env.get(archive, key) == key.encode() and moto_env.get(staging, key) is None
        assert tags(moto_env, archive, key) == {"seen": "yes"}  # tagged, then moved with its tags


def test_lambda_invoke_operation_pipeline(
    moto_env: Env, bucket_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handler written for S3 Batch Operations (AWS docs' pattern) drives the pipeline."""
    monkeypatch.syspath_prepend(str(FIXTURE_HANDLERS))  # for forked handler workers
    staging, archive, errors = buckets(moto_env, bucket_name, "in", "ar", "er")
    moto_env.put(staging, "x y.txt", b"hello")
    action = 'operation = { LambdaInvoke = { FunctionArn = "python:aws_handlers:classic" } }'
    path = write(tmp_path, "invoker", staging, archive, action, f'error = "{errors}"\nworkers = 1\n')
    env = {"S3BATCH_STORAGE": str(moto_env.storage.endpoint_url)}  # type: ignore[union-attr]
    runner = CliRunner()
    out = runner.invoke(cli, ["pipeline", "run", str(path), "--backlog"], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["files"] == {"archived": 1}
    assert moto_env.get(archive, "x y.txt") == b"hello"
    (row,) = runner.invoke(cli, ["pipeline", "report", str(path)], env=env).output.splitlines()
    assert row.startswith(f"{staging},x+y.txt,,succeeded,200,,")
    assert "5d41402abc4b2a76b9719d911017c592" in row  # the handler's md5 of "hello"


def test_lambda_invoke_needs_a_known_function(moto_env: Env, bucket_name: str, tmp_path: Path) -> None:
    staging, archive = buckets(moto_env, bucket_name, "in", "ar")
    moto_env.put(staging, "k.txt", b"1")
    action = 'operation = { LambdaInvoke = { FunctionArn = "unregistered" } }'
    path = write(tmp_path, "unknown", staging, archive, action)
    env = {"S3BATCH_STORAGE": str(moto_env.storage.endpoint_url)}  # type: ignore[union-attr]
    out = CliRunner().invoke(cli, ["pipeline", "run", str(path), "--backlog"], env=env)
    assert out.exit_code == 1 and "functions.toml" in out.output
    assert moto_env.get(staging, "k.txt") == b"1"  # untouched


# -- hosted by `s3batch serve` -----------------------------------------------------------------------


@contextlib.contextmanager
def serving(env: Env, files: list[Path]) -> Iterator[httpx.Client]:
    """create_app with hosted pipelines under uvicorn in a thread; an authenticated client."""
    app = create_app(
        Settings(home=env.home), keys=KeyRing([KEY_A]), storage=env.storage, hosted=load_hosted(files)
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http="h11", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "server start")
        assert server.started
        auth = {"Authorization": f"Bearer {KEY_A.access_key}:{KEY_A.secret_key}"}
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=HTTP_TIMEOUT_S
        ) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
    assert not thread.is_alive(), "uvicorn did not stop"


def counts(client: httpx.Client) -> dict[str, dict[str, int]]:
    listed = client.get("/api/v1/pipelines").json()["pipelines"]
    return {p["name"]: p["files"] for p in listed}


def test_serve_hosts_webhook_and_poller_pipelines(moto_env: Env, bucket_name: str, tmp_path: Path) -> None:
    hook_in, poll_in, archive = buckets(moto_env, bucket_name, "hook", "poll", "ar")
    action = f"operation = {TAGGING}"
    hook = write(tmp_path, "hook", hook_in, archive, action, f'webhook_token = "{TOKEN}"\n')
    poll = write(tmp_path, "poll", poll_in, archive, action, "poll_interval_s = 0.2\n")
    etag = moto_env.put(hook_in, "h.txt", b"h")
    with serving(moto_env, [hook, poll]) as client:
        events = event_for(hook_in, "h.txt", etag)
        assert client.post("/pipelines/hook/events", json=events).status_code == 403
        assert client.post("/pipelines/hook/events?token=nope", json=events).status_code == 403
        answer = client.post(f"/pipelines/hook/events?token={TOKEN}", json=events)
        assert (answer.status_code, answer.json()["accepted"]) == (200, 1)
        assert client.post("/pipelines/poll/events", json=events).status_code == 403  # no token: off
        assert client.post("/pipelines/nope/events", json=events).status_code == 404
        huge = b"x" * (MAX_EVENT_BODY_BYTES + 1)
        assert client.post(f"/pipelines/hook/events?token={TOKEN}", content=huge).status_code == 413
        moto_env.put(poll_in, "p.txt", b"p")  # no event at all: the poller finds it
        wait_until(lambda: counts(client) == {"hook": {"archived": 1}, "poll": {"archived": 1}}, "archive")
        (hook_info,) = [p for p in client.get("/api/v1/pipelines").json()["pipelines"] if p["name"] == "hook"]
        assert hook_info["webhook"] == "/pipelines/hook/events" and hook_info["pending"] == 0
        assert client.get("/api/v1/pipelines/poll").json()["poll_interval_s"] == 0.2
        assert client.get("/api/v1/pipelines/nope").status_code == 404
        assert (
            httpx.get(
                f"{str(client.base_url).rstrip('/')}/api/v1/pipelines", timeout=HTTP_TIMEOUT_S
            ).status_code
            == 401
        )
    assert moto_env.get(archive, "h.txt") == b"h" and tags(moto_env, archive, "h.txt") == {"seen": "yes"}
    assert moto_env.get(archive, "p.txt") == b"p" and moto_env.get(poll_in, "p.txt") is None


def test_serve_issues_presigned_uploads(moto_env: Env, bucket_name: str, tmp_path: Path) -> None:
    staging, archive = buckets(moto_env, bucket_name, "in", "ar")
    file = write(tmp_path, "up", staging, archive, f"operation = {TAGGING}", "presign_max_expires_s = 600\n")
    with serving(moto_env, [file]) as client:
        answer = client.post(
            "/api/v1/pipelines/up/uploads",
            json={"key": "in/n.csv", "content_type": "text/csv", "expires_s": 60},
        )
        assert answer.status_code == 201, answer.text
        signed = answer.json()
        too_long = client.post(
            "/api/v1/pipelines/up/uploads", json={"key": "k", "content_type": "text/csv", "expires_s": 601}
        )
        assert (too_long.status_code, too_long.json()["code"]) == (400, "BadRequestException")
        assert client.post("/api/v1/pipelines/up/uploads", json={"key": "k"}).status_code == 400
        assert client.post("/api/v1/pipelines/nope/uploads", json={}).status_code == 404
    request = urllib.request.Request(
        signed["url"], data=b"a\n", method="PUT", headers=signed["headers"]
    )  # exactly what a browser or curl would send with the answer
    with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
        assert response.status == 200
    head = moto_env.client.head_object(Bucket=staging, Key="in/n.csv")
    assert (head["ContentLength"], head["ContentType"]) == (2, "text/csv")


# -- the real CLI servers ---------------------------------------------------------------------------


@contextlib.contextmanager
def child(cmd: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "s3batch", *cmd],
        env={**os.environ, **env},
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and any function workers
        try:
            proc.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=WAIT_S)


def wait_listening(proc: subprocess.Popen[bytes], url: str) -> None:
    def up() -> bool:
        assert proc.poll() is None, (proc.stderr.read() if proc.stderr else b"").decode()
        try:
            httpx.get(url, timeout=1.0)
        except httpx.TransportError:
            return False
        return True

    wait_until(up, f"{url} to answer")


def test_pipeline_serve_subprocess_archives_on_webhook(
    moto_env: Env, bucket_name: str, tmp_path: Path
) -> None:
    staging, archive = buckets(moto_env, bucket_name, "in", "ar")
    path = write(tmp_path, "sub", staging, archive, 'function = "pipeline_handlers:check"')
    etag = moto_env.put(staging, "in/new file.txt", b"payload")
    port = free_port()
    env = {"S3BATCH_STORAGE": str(moto_env.storage.endpoint_url), "PYTHONPATH": str(FIXTURE_HANDLERS)}  # type: ignore[union-attr]
    with child(["pipeline", "serve", str(path), "--port", str(port)], env) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_listening(proc, f"{base}/status")
        answer = httpx.post(
            base + "/", json=event_for(staging, "in/new+file.txt", etag), timeout=HTTP_TIMEOUT_S
        )
        assert answer.json()["accepted"] == 1
        wait_until(lambda: moto_env.get(archive, "in/new file.txt") == b"payload", "the archived file")
        wait_until(lambda: httpx.get(f"{base}/status", timeout=HTTP_TIMEOUT_S).json()["pending"] == 0, "idle")
    assert moto_env.get(staging, "in/new file.txt") is None


def test_s3batch_serve_subprocess_hosts_a_pipeline(moto_env: Env, bucket_name: str, tmp_path: Path) -> None:
    staging, archive = buckets(moto_env, bucket_name, "in", "ar")
    home = tmp_path / "home"
    home.mkdir()
    path = write(home, "hosted", staging, archive, f"operation = {TAGGING}", f'webhook_token = "{TOKEN}"\n')
    (home / "server.toml").write_text('[[pipelines]]\nfile = "hosted.toml"\n', encoding="utf-8")
    assert path.parent == home  # found through server.toml, relative to HOME
    etag = moto_env.put(staging, "f.txt", b"f")
    port = free_port()
    env = {
        "S3BATCH_HOME": str(home),
        "S3BATCH_STORAGE": str(moto_env.storage.endpoint_url),  # type: ignore[union-attr]
        "S3BATCH_ACCESS_KEYS": f"{KEY_A.access_key}:{KEY_A.secret_key}:{KEY_A.account_id}",
    }
    auth = {"Authorization": f"Bearer {KEY_A.access_key}:{KEY_A.secret_key}"}
    with child(["serve", "--port", str(port)], env) as proc:
        base = f"http://127.0.0.1:{port}"
        wait_listening(proc, f"{base}/api/v1/openapi.json")
        hook = httpx.post(
            f"{base}/pipelines/hosted/events",
            json=event_for(staging, "f.txt", etag),
            headers={"X-S3Batch-Token": TOKEN},
            timeout=HTTP_TIMEOUT_S,
        )
        assert hook.json()["accepted"] == 1

        def archived() -> bool:
            listed = httpx.get(f"{base}/api/v1/pipelines", headers=auth, timeout=HTTP_TIMEOUT_S).json()
            return bool(listed["pipelines"][0]["files"] == {"archived": 1})

        wait_until(archived, "the hosted pipeline to archive the file")
    stderr = proc.stderr.read() if proc.stderr else b""
    # uvicorn re-raises SIGTERM after a graceful shutdown (the lifespan stopped the pipeline).
    assert proc.returncode in (0, -signal.SIGTERM) and b"Application shutdown complete" in stderr, stderr
    assert moto_env.get(archive, "f.txt") == b"f" and tags(moto_env, archive, "f.txt") == {"seen": "yes"}


def test_serve_refuses_clashing_or_unsafe_pipeline_names(tmp_path: Path) -> None:
    one = write(tmp_path, "same", "a", "b", f"operation = {TAGGING}")
    (tmp_path / "other.toml").write_text(one.read_text(encoding="utf-8"), encoding="utf-8")
    unsafe = write(tmp_path, "sp ace", "a", "b", f"operation = {TAGGING}")
    env = {"S3BATCH_ACCESS_KEYS": f"{KEY_A.access_key}:{KEY_A.secret_key}:{KEY_A.account_id}"}
    runner = CliRunner()
    clash = runner.invoke(
        cli, ["serve", "--pipeline", str(one), "--pipeline", str(tmp_path / "other.toml")], env=env
    )
    assert clash.exit_code == 1 and "'same' is already hosted" in clash.output
    bad = runner.invoke(cli, ["serve", "--pipeline", str(unsafe)], env=env)
    assert bad.exit_code == 1 and "must be 1-64 of" in bad.output
