"""Pipelines end to end on the folder store and moto: webhook, poller, backlog, replay, crash resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tests.integration.conftest import FIXTURE_HANDLERS, Env

from s3batch.cli import cli
from s3batch.pipelines.config import load_config
from s3batch.pipelines.runner import Pipeline
from s3batch.pipelines.sources import webhook_app
from s3batch.pipelines.state import PipelineState

with warnings.catch_warnings():  # starlette prefers httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

#: Seconds a test waits for background processing before failing.
WAIT_S = 30.0


def write_pipeline(tmp_path: Path, function: str, on_success: str = "archive", extra: str = "") -> Path:
    path = tmp_path / "p.toml"
    path.write_text(
        f'name = "p"\nsource = "staging"\nfunction = "{function}"\non_success = "{on_success}"\n'
        f'archive = "archive"\nerror = "errors"\nmax_attempts = 2\n{extra}',
        encoding="utf-8",
    )
    return path


def setup_buckets(env: Env) -> None:
    for bucket in ("staging", "archive", "errors", "reports"):
        env.make_bucket(bucket)


def record(key: str, etag: str, sequencer: str) -> dict[str, Any]:
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "s3": {"bucket": {"name": "staging"},
                   "object": {"key": key, "eTag": etag, "size": 1, "sequencer": sequencer}}}  # fmt: skip


def cli_env(env: Env) -> dict[str, str]:
    url = f"file://{env.root}" if env.root else env.storage.endpoint_url  # type: ignore[union-attr]
    return {"S3BATCH_STORAGE": str(url), "PYTHONPATH": str(FIXTURE_HANDLERS)}


@pytest.fixture(autouse=True)
def handlers_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FIXTURE_HANDLERS))
    monkeypatch.setenv("PYTHONPATH", str(FIXTURE_HANDLERS))


def wait_until(check: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_webhook_duplicates_out_of_order_and_errors(env: Env, tmp_path: Path) -> None:
    setup_buckets(env)
    good = env.put("staging", "in/a b.txt", b"v2")
    bad = env.put("staging", "in/bad.txt", b"x")
    path = write_pipeline(tmp_path, "pipeline_handlers:check", extra='[report]\nbucket = "reports"\n')
    pipeline = Pipeline(load_config(path), env.storage)
    newer, older = record("in/a+b.txt", good, "0100"), record("in/a+b.txt", "0" * 32, "FF")
    with TestClient(webhook_app(pipeline)) as client:
        test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "staging"}
        assert client.post("/", json=test_event).json()["ignored"] == 1
        assert client.post("/", json={"Records": [newer]}).json()["accepted"] == 1
        assert client.post("/", json={"Records": [newer]}).json()["duplicates"] == 1
        assert client.post("/", json={"Records": [older]}).json()["stale"] == 1
        assert (
            client.post("/hook", json={"Records": [record("in/bad.txt", bad, "01")]}).json()["accepted"] == 1
        )
        assert client.post("/", content=b"nope").status_code == 400
        wait_until(lambda: client.get("/status").json()["pending"] == 0)
        rows = {r.key: r for _, r in pipeline.state.report_rows()}
        run_id = pipeline.run_id
        client.portal.call(pipeline.close)  # on the loop the store's session belongs to
    assert env.get("archive", "in/a b.txt") == b"v2" and env.get("staging", "in/a b.txt") is None
    assert env.get("errors", "in/bad.txt") == b"x" and env.get("staging", "in/bad.txt") is None
    error = json.loads(env.get("errors", "in/bad.txt.error.json") or b"{}")
    assert (error["code"], error["attempts"]) == ("ValueError", 2)
    assert rows["in/a+b.txt"].status == "succeeded" and rows["in/bad.txt"].error_code == "ValueError"
    assert set(rows) == {"in/a+b.txt", "in/bad.txt"}  # the report key stays URL-encoded
    manifest = json.loads(env.get("reports", f"pipelines/p/job-{run_id}/manifest.json") or b"{}")
    assert sorted(r["TaskExecutionStatus"] for r in manifest["Results"]) == ["failed", "succeeded"]


def test_backlog_poller_report_and_replay_via_cli(local_env: Env, tmp_path: Path) -> None:
    env = local_env
    setup_buckets(env)
    env.put("staging", "one.txt", b"1")
    env.put("staging", "bad one.txt", b"2")
    path = write_pipeline(tmp_path, "pipeline_handlers:check", on_success="leave")
    runner = CliRunner()
    cmd_env = cli_env(env)
    out = runner.invoke(cli, ["pipeline", "run", str(path), "--backlog"], env=cmd_env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["files"] == {"left": 1, "errored": 1}
    env.put("staging", "two.txt", b"3")
    out = runner.invoke(cli, ["pipeline", "run", str(path), "--once"], env=cmd_env)
    assert json.loads(out.output)["files"] == {"left": 2, "errored": 1}  # one.txt not re-processed
    report = runner.invoke(cli, ["pipeline", "report", str(path)], env=cmd_env).output.splitlines()
    assert sorted(report)[0].startswith("staging,bad+one.txt,,failed,200,ValueError,")
    assert len(report) == 3
    # Fix the handler's complaint by renaming nothing: replay still fails, but runs again.
    out = runner.invoke(cli, ["pipeline", "replay", str(path), "--from", "error"], env=cmd_env)
    assert json.loads(out.output)["replayed"] == 1
    state = PipelineState(tmp_path / "p.pipeline.sqlite3")
    (bad_row,) = [r for r in state.files() if r.key == "bad one.txt"]
    assert bad_row.attempts == 2 and bad_row.state == "errored"
    assert env.get("errors", "bad one.txt.error.json") is not None


def test_unchanged_tutorial_handler_on_moto(
    moto_env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = moto_env
    setup_buckets(env)
    monkeypatch.setenv("DESTINATION_BUCKET", "archive")
    keys = ["photos/summer 2024.jpg", "a+b=c.txt", "plain.txt"]
    for key in keys:
        env.put("staging", key, key.encode())
    path = write_pipeline(tmp_path, "pipeline_handlers:tutorial", on_success="leave",
                          extra="records_per_call = 2\n")  # fmt: skip
    out = CliRunner().invoke(cli, ["pipeline", "run", str(path), "--backlog"], env=cli_env(env))
    assert out.exit_code == 0, out.output
    for key in keys:
        assert env.get("archive", key) == key.encode() and env.get("staging", key) is None


def test_crash_resume_archives_every_file_once(local_env: Env, tmp_path: Path) -> None:
    env = local_env
    setup_buckets(env)
    keys = [f"f{i:02d}.txt" for i in range(12)]
    for key in keys:
        env.put("staging", key, key.encode())
    path = write_pipeline(tmp_path, "pipeline_handlers:slow", extra="workers = 1\n")
    cmd = [sys.executable, "-m", "s3batch", "pipeline", "run", str(path), "--backlog"]
    child_env = {**os.environ, **cli_env(env), "PIPELINE_SLOW_S": "0.2"}
    proc = subprocess.Popen(cmd, env=child_env, start_new_session=True, stdout=subprocess.PIPE)
    try:
        wait_until(lambda: len(list((env.root / "archive").glob("*"))) >= 3)  # type: ignore[operator]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the pipeline and its function workers
        proc.wait(timeout=10)
    assert env.get("staging", keys[-1]) is not None  # really interrupted mid-way
    done = subprocess.run(cmd, env=child_env, capture_output=True, timeout=120, check=True)
    assert json.loads(done.stdout)["files"] == {"archived": len(keys)}
    assert sorted(p.name for p in (env.root / "archive").iterdir()) == keys  # type: ignore[operator]
    assert list((env.root / "staging").iterdir()) == []  # type: ignore[operator]
