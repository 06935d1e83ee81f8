"""Where the built-in benchmarks' jobs and bare loops find their inputs (a local folder store, or
an S3 server laid out before it starts), and how they count CPU (this process, its reaped
children and the function workers kept warm between jobs).

Imported by bench_builtins_text.py and bench_builtins_models.py, and by the latter's bare
interpreter too: nothing of s3batch is imported at the top, so that interpreter's start-up time
stays the library's."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from servers import ACCESS_KEY, SECRET_KEY, rclone_binary

BUCKET = "bench"
#: Clock ticks per second of /proc's CPU times.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Timed:
    """Wall seconds and CPU seconds (this process, its reaped children and the function
    workers kept warm between jobs)."""

    wall_s: float
    cpu_s: float


class Readable(Protocol):
    """One input as the bare loop reads it: a file (`Path`) or an object on an S3 server."""

    def read_bytes(self) -> bytes: ...

    def read_text(self) -> str: ...


class S3Object:
    """An object on the S3 server, read by one GetObject per call (as `Path` reads its file)."""

    def __init__(self, s3: Any, bucket: str, key: str) -> None:
        self.s3, self.bucket, self.key = s3, bucket, key

    def read_bytes(self) -> bytes:
        body: bytes = self.s3.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
        return body

    def read_text(self) -> str:
        return self.read_bytes().decode()


def sign_as_the_server_expects() -> None:
    """The test server's credentials in this process's environment. Call it before anything
    makes a client: s3batch, its function workers, boto3 and the bare interpreters (which
    inherit this environment) all sign with them, and the server checks."""
    os.environ.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_REGION="us-east-1",
        AWS_DEFAULT_REGION="us-east-1",
    )


def s3_client(endpoint: str) -> Any:
    """A boto3 client of the server at `endpoint`, signing with the environment's credentials."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"},
        # Checksums only where S3 requires them: botocore's default adds a CRC to every PUT
        # and checks one on every GET, work the bare loop's reads need not do.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client("s3", endpoint_url=endpoint, config=config)


class FolderStore:
    """A local folder store: each sub-folder of `root` a bucket, each file an object."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.storage = f"file://{root}"

    def write(self, inputs: dict[str, bytes]) -> None:
        for key, body in inputs.items():
            path = self.root / BUCKET / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)

    def put_manifest(self, key: str, body: bytes) -> str:
        """Writes the manifest; its ETag (the MD5 of its bytes, as S3's for one PUT)."""
        (self.root / BUCKET / key).parent.mkdir(parents=True, exist_ok=True)
        (self.root / BUCKET / key).write_bytes(body)
        return hashlib.md5(body).hexdigest()

    def readables(self, keys: list[str]) -> list[Readable]:
        """The objects as a bare loop in this process reads them: files."""
        return [self.root / BUCKET / k for k in keys]

    def bare_source(self) -> list[str]:
        """How the bare interpreter finds the objects: `--bare-folder FOLDER`."""
        return ["--bare-folder", str(self.root / BUCKET)]


class ServerStore:
    """An S3 server at `endpoint` whose bucket BUCKET already holds the inputs (laid out in
    its folder before it started); read and written through one boto3 client."""

    def __init__(self, endpoint: str) -> None:
        self.storage = endpoint
        self.s3 = s3_client(endpoint)

    def put_manifest(self, key: str, body: bytes) -> str:
        """PutObject through the server (a file written into its folder might be missed by a
        cached directory listing); the ETag it answers."""
        etag: str = self.s3.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"]
        return etag.strip('"')

    def readables(self, keys: list[str]) -> list[Readable]:
        """The objects as a bare loop in this process reads them: GetObjects by this client."""
        return [S3Object(self.s3, BUCKET, k) for k in keys]

    def bare_source(self) -> list[str]:
        """How the bare interpreter finds the objects: `--bare-s3 ENDPOINT BUCKET` (the
        credentials are in the environment it inherits)."""
        return ["--bare-s3", self.storage, BUCKET]


Store = FolderStore | ServerStore


def lay_out(folder: Path, inputs: dict[str, bytes]) -> None:
    """The inputs as files of the served folder: bucket BUCKET, one file per object."""
    FolderStore(folder).write(inputs)


def rclone_version() -> str:
    """The S3 server, for the record: e.g. "rclone v1.75.2 (serve s3)"."""
    out = subprocess.run([rclone_binary(), "version"], capture_output=True, text=True, check=False).stdout
    return f"{out.splitlines()[0] if out else 'rclone'} (serve s3)"


def cpu_now() -> float:
    """CPU seconds of this process, of its children that have exited (bare interpreters,
    workers stopped), and of the function workers kept warm between jobs (alive, so not in
    RUSAGE_CHILDREN yet; read from /proc). With `--store s3` these are the client's figures
    only: the server runs in its own process, not counted here, and shares the machine's cores
    with the client."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + kept_workers_cpu()


def kept_workers_cpu() -> float:
    """CPU seconds so far of the function workers idle in functions/pool.KEPT (0 off Linux)."""
    # Imported here, not at the top: the models bench's bare interpreter imports this file too,
    # and its start-up time should be the library's, not s3batch's pool's.
    import s3batch.functions.pool as function_pool

    total = 0.0
    for worker in function_pool.KEPT.workers():
        try:
            fields = Path(f"/proc/{worker.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile: its time is in RUSAGE_CHILDREN once reaped
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total
