"""Fixtures for end-to-end job tests: one `Env` per object-store backend.

`local`: the embedded default (a folder store + SQLite job store). `moto`: moto's S3 server
over HTTP on 127.0.0.1. Tests arrange and check objects through the backend's own API
(files for the folder store, boto3 for S3), never through s3batch itself.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote_plus

import pytest

from s3batch.client import S3Batch
from s3batch.storage.config import LocalConfig, S3Config, StorageConfig

if TYPE_CHECKING:
    from tests.seaweedfs import SeaweedFS

#: Handler modules used by LambdaInvoke tests (put on PYTHONPATH for worker processes).
FIXTURE_HANDLERS = Path(__file__).parent.parent / "fixtures" / "handlers"
# Headless Chromium for the dashboard tests: Debian's packages (scripts/install-browser), never
# a downloaded browser; the flags keep it off the network.
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


@dataclass
class Env:
    """An object-store backend plus an s3batch client on it (jobs run in-process)."""

    kind: str
    storage: StorageConfig
    home: Path
    client: Any = None  # boto3 S3 client for "moto"
    root: Path | None = None  # folder for "local"
    functions: dict[str, str] = field(default_factory=dict)

    def batch(self, **kwargs: Any) -> S3Batch:
        url = f"file://{self.root}" if self.root else self.storage.endpoint_url  # type: ignore[union-attr]
        return S3Batch(home=self.home, storage=url, functions=self.functions, background=False, **kwargs)

    def make_bucket(self, bucket: str) -> None:
        if self.root is not None:
            (self.root / bucket).mkdir(parents=True, exist_ok=True)
        else:
            self.client.create_bucket(Bucket=bucket)

    def put(self, bucket: str, key: str, body: bytes) -> str:
        if self.root is not None:
            path = self.root / bucket / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)
            return hashlib.md5(body).hexdigest()
        return str(self.client.put_object(Bucket=bucket, Key=key, Body=body)["ETag"]).strip('"')

    def get(self, bucket: str, key: str) -> bytes | None:
        if self.root is not None:
            path = self.root / bucket / key
            return path.read_bytes() if path.is_file() else None
        try:
            return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except self.client.exceptions.NoSuchKey:
            return None

    def manifest(self, bucket: str, rows: list[tuple[str, str]], key: str = "manifest.csv") -> dict[str, Any]:
        """Write a CSV manifest (keys URL-encoded as AWS requires); return the Manifest spec."""
        body = "".join(f"{b},{quote_plus(k, safe='/')}\n" for b, k in rows).encode()
        return self.raw_manifest(bucket, body, key)

    def raw_manifest(self, bucket: str, body: bytes, key: str = "manifest.csv") -> dict[str, Any]:
        etag = self.put(bucket, key, body)
        return {
            "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
            "Location": {"ObjectArn": f"arn:aws:s3:::{bucket}/{key}", "ETag": etag},
        }

    def report_files(self, bucket: str, prefix: str, job_id: str) -> dict[str, bytes]:
        """Every object under the job's report folder, by key relative to it."""
        base = f"{prefix}/job-{job_id}/"
        if self.root is not None:
            folder = self.root / bucket / base
            return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        listed = self.client.list_objects_v2(Bucket=bucket, Prefix=base).get("Contents", [])
        return {o["Key"][len(base) :]: self.get(bucket, o["Key"]) or b"" for o in listed}


def data_manifest(env: Env, present: Sequence[str], listed: Sequence[str]) -> dict[str, Any]:
    """Buckets `data` (holding `present`, each body its own name) and `reports`, and a
    manifest of `listed` keys in `data`."""
    env.make_bucket("data")
    env.make_bucket("reports")
    for name in present:
        env.put("data", name, name.encode())
    return env.manifest("data", [("data", key) for key in listed])


def report_spec(bucket: str, scope: str = "AllTasks", prefix: str = "reports") -> dict[str, Any]:
    return {
        "Bucket": f"arn:aws:s3:::{bucket}",
        "Format": "Report_CSV_20180820",
        "Enabled": True,
        "Prefix": prefix,
        "ReportScope": scope,
    }


def read_report(env: Env, bucket: str, job_id: str, prefix: str = "reports") -> dict[str, Any]:
    files = env.report_files(bucket, prefix, job_id)
    manifest = json.loads(files["manifest.json"])
    rows: dict[str, list[list[str]]] = {}
    import csv
    import io

    for entry in manifest["Results"]:
        body = files[entry["Key"][len(f"{prefix}/job-{job_id}/") :]]
        assert hashlib.md5(body).hexdigest() == entry["MD5Checksum"]
        rows[entry["TaskExecutionStatus"]] = list(csv.reader(io.StringIO(body.decode(), newline="")))
    return {"manifest": manifest, "rows": rows}


@pytest.fixture(params=["local", "moto"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    home = tmp_path / "home"
    if request.param == "local":
        root = tmp_path / "buckets"
        root.mkdir()
        yield Env("local", LocalConfig(root=str(root)), home, root=root)
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    client = request.getfixturevalue("boto3_s3")
    yield Env("moto", S3Config(endpoint_url=endpoint), home, client=client)


@pytest.fixture
def moto_env(tmp_path: Path, s3_endpoint: str, boto3_s3: Any) -> Env:
    return Env("moto", S3Config(endpoint_url=s3_endpoint), tmp_path / "home", client=boto3_s3)


@pytest.fixture
def local_env(tmp_path: Path) -> Env:
    root = tmp_path / "buckets"
    root.mkdir()
    return Env("local", LocalConfig(root=str(root)), tmp_path / "home", root=root)


@pytest.fixture
def seaweedfs_env(tmp_path: Path, seaweedfs_server: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> Env:
    """SeaweedFS, which verifies SigV4: its identity exported the standard AWS way, so s3batch
    (jobs run in-process) signs with it; `client` is a boto3 client for arranging and checking."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs_server.secret_key)
    monkeypatch.setenv("AWS_ENDPOINT_URL", seaweedfs_server.endpoint)
    storage = S3Config(endpoint_url=seaweedfs_server.endpoint)
    return Env("seaweedfs", storage, tmp_path / "home", client=seaweedfs_server.client())


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Any]:
    """A real PostgreSQL (Debian's package) on 127.0.0.1 for the whole session."""
    from tests.integration.postgres_server import PostgresServer

    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(postgres_server: Any, request: pytest.FixtureRequest) -> str:
    """A URL to a fresh, empty database of its own on the session's server."""
    import psycopg

    name = "t_" + hashlib.sha1(request.node.nodeid.encode()).hexdigest()[:16]
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return str(postgres_server.url).rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def browser() -> Iterator[Any]:
    """Headless Chromium through chromedriver; quit at the end (closing its event streams)."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(f"{CHROMIUM} / {CHROMEDRIVER} missing: run scripts/install-browser (Debian packages)")
    from selenium import webdriver  # a pinned dev dependency: missing means a broken setup
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
