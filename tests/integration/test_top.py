"""`s3batch top` in a real pseudo-terminal: it draws every job of the home live, and quits
cleanly on `q` and on Ctrl-C, leaving the terminal's settings as they were."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.integration.conftest import Env

from s3batch.cli import cli
from s3batch.cli.top import RateTracker, human_duration, human_rate, progress_bar

pytestmark = pytest.mark.integration

#: Seconds a pty test waits for top to draw or to quit.
SCREEN_TIMEOUT_S = 30.0
TAGGING = {"S3PutObjectTagging": {"TagSet": [{"Key": "k", "Value": "v"}]}}


def _create_job(env: Env, description: str) -> str:
    env.make_bucket("data")
    for i in range(3):
        env.put("data", f"k{i}.txt", b"x")
    out = CliRunner().invoke(
        cli,
        [
            "create-job", "--operation", json.dumps(TAGGING),
            "--manifest", json.dumps(env.manifest("data", [("data", f"k{i}.txt") for i in range(3)])),
            "--report", '{"Enabled": false}', "--priority", "1", "--no-confirmation-required",
            "--wait", *(["--description", description] if description else []),
        ],
        env=_env(env),
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    return str(json.loads(out.stdout)["Job"]["JobId"])


def _env(env: Env) -> dict[str, str]:
    return {"S3BATCH_HOME": str(env.home), "S3BATCH_STORAGE": f"file://{env.root}"}


def _read_until(fd: int, needle: bytes, deadline: float) -> bytes:
    seen = b""
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
    return seen


def _start_top(env: Env) -> tuple[subprocess.Popen[bytes], int]:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "s3batch", "top"],
        stdin=follower, stdout=follower, stderr=follower,
        env={**os.environ, **_env(env), "COLUMNS": "160", "LINES": "40", "TERM": "xterm"},
        start_new_session=True,
    )  # fmt: skip
    os.close(follower)
    return proc, leader


@pytest.mark.parametrize("how", ["q", "ctrl-c"])
def test_top_draws_jobs_live_and_quits_cleanly(local_env: Env, how: str) -> None:
    job_id = _create_job(local_env, "Retag the photos")
    proc, leader = _start_top(local_env)
    try:
        before = termios.tcgetattr(leader)
        screen = _read_until(leader, b"Retag the photos", time.monotonic() + SCREEN_TIMEOUT_S)
        assert b"Retag the photos" in screen, screen[-2000:]
        screen += _read_until(leader, b"Complete", time.monotonic() + SCREEN_TIMEOUT_S)
        assert job_id[:8].encode() in screen and b"Complete" in screen and b"100%" in screen
        if how == "q":
            os.write(leader, b"q")
        else:
            os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=SCREEN_TIMEOUT_S) == 0
        tail = _read_until(leader, b"Traceback", time.monotonic() + 0.5)
        assert b"Traceback" not in tail
        assert termios.tcgetattr(leader)[3] == before[3]  # echo/canonical mode restored
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=SCREEN_TIMEOUT_S)
        os.close(leader)


def test_top_once_prints_the_table_without_a_terminal(local_env: Env, tmp_path: Path) -> None:
    _create_job(local_env, "")
    out = CliRunner().invoke(cli, ["top", "--once"], env=_env(local_env))
    assert out.exit_code == 0, out.output
    assert "Complete" in out.output and "3/3" in out.output and "q to quit" not in out.output


def test_rates_and_durations_are_rounded_for_people() -> None:
    assert human_rate(1094.325) == "1.1k/s"
    assert human_rate(54321.0) == "54k/s" and human_rate(2_500_000.0) == "2.5M/s"
    assert human_rate(3.14159) == "3.1/s" and human_rate(None) == "-"
    assert human_duration(45.4) == "45s" and human_duration(723) == "12m 03s"
    assert human_duration(12_000) == "3h 20m" and human_duration(187_200) == "2d 4h"
    assert progress_bar(1, 4).endswith(" 25%") and progress_bar(0, None).endswith("-")
    tracker = RateTracker(window_s=10.0)
    assert tracker.observe("j", 0, 100.0) is None
    assert tracker.observe("j", 50, 105.0) == 10.0
    assert tracker.observe("j", 250, 125.0) == pytest.approx(10.0)  # window drops the t=100 sample


def test_a_hostile_description_is_plain_text(local_env: Env) -> None:
    """Rich markup and terminal escapes in a Description (anyone's text over serve) are shown
    as text: no crash on "[/]", no escape sequence reaches the terminal."""
    _create_job(local_env, "[/] [bold]x\x1b]0;pwned\x07\x1b[2J")
    out = CliRunner().invoke(cli, ["top", "--once"], env=_env(local_env))
    assert out.exit_code == 0, out.output
    assert "[/] [bold]x" in out.output and "\x1b]0;" not in out.output and "\x1b[2J" not in out.output
