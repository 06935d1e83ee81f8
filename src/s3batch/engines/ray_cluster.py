"""Joining a Ray cluster: the user's (S3BATCH_RAY_ADDRESS), or a private one on this machine.

Ray out of the box is neither quiet nor loopback-only: its servers listen on every interface,
it finds the node's address by routing a UDP socket towards a public resolver, and a node probes
cloud metadata addresses and writes a token under ~/.ray. s3batch's private cluster (no address
given) is started with settings that keep every listener and every connection on 127.0.0.1 and
every file in a private temporary folder (`quiet_environment`): `ray start --head --block` in a
child process whose whole environment s3batch chooses (no AWS credentials in it), stopped by
SIGTERM to that one PID when this process exits (or dies: the child gets SIGTERM from the
kernel then). A user's cluster is theirs: it is joined as its owner configured it.

Ray is imported here only, lazily: s3batch imports and runs without it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib.util
import logging
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import s3batch
from s3batch.domain.hosts import is_loopback_host
from s3batch.errors import ConfigError

log = logging.getLogger(__name__)

#: The Ray namespace s3batch's actors are named in.
NAMESPACE = "s3batch"
#: How to install what S3BATCH_ENGINE=ray needs.
INSTALL_HINT = "pip install 's3batch[ray]'"
#: Seconds the private cluster may take to start, and to stop after SIGTERM.
PRIVATE_START_TIMEOUT_S = 60.0
PRIVATE_STOP_TIMEOUT_S = 10.0
#: Seconds between checks that the private cluster has started.
PRIVATE_POLL_S = 0.1
#: Shared memory of the private cluster's object store, in bytes: chunks and results are small.
PRIVATE_OBJECT_STORE_BYTES = 256 * 1024**2
#: What `ray start` prints once every process of the head is up.
STARTED_LINE = "Ray runtime started"
#: Temporary folders live here, not in a long TMPDIR: Ray's Unix socket paths must stay under
#: ~107 bytes.
SHORT_TMP = "/tmp"
#: The private cluster's folders: SHORT_TMP/TEMP_PREFIX*, each naming the PID that owns it.
TEMP_PREFIX = "s3b-ray-"
OWNER_FILE = "owner.pid"
#: Ray reads this at import: 0 makes it take 127.0.0.1 as the node's address instead of
#: routing a socket towards a public resolver to find an outward one.
LOOPBACK_NODE_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Ray's setting for the niceness of its worker processes (actors): 15 unless set.
WORKER_NICENESS_VAR = "RAY_worker_niceness"
#: Linux prctl(2) option: a signal the kernel sends a child when its parent dies.
_PR_SET_PDEATHSIG = 1


def require_ray() -> None:
    """Raise ConfigError when Ray is not installed."""
    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):  # a broken install, or one blocked in sys.modules
        found = False
    if not found:
        raise ConfigError(f"S3BATCH_ENGINE=ray needs Ray, which is not installed: {INSTALL_HINT}")


def quiet_environment(temp_dir: Path, token: str) -> dict[str, str]:
    """Environment variables that keep a Ray node on loopback, quiet and inside `temp_dir`."""
    home = temp_dir / "home"
    home.mkdir(parents=True, exist_ok=True)
    # An empty bootstrap config in HOME: Ray then does not probe cloud metadata addresses.
    (home / "ray_bootstrap_config.yaml").write_text("{}\n")
    return {
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_USAGE_STATS_REPORT_URL": "http://127.0.0.1:9/",
        LOOPBACK_NODE_VAR: "0",
        "HOME": str(home),
        "RAY_TMPDIR": str(temp_dir),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
    }


def is_loopback(address: str) -> bool:
    """Whether a host:port names this machine's loopback interface."""
    return is_loopback_host(address.rsplit(":", 1)[0])


@dataclass
class PrivateCluster:
    """A one-node cluster s3batch started and owns."""

    process: subprocess.Popen[bytes]
    address: str
    temp_dir: Path
    token: str

    def stop(self) -> None:
        """SIGTERM to the one PID that owns the cluster: it drains and takes Ray's children."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(PRIVATE_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_private_cluster(cpus: int) -> PrivateCluster:
    """`ray start --head --block` on 127.0.0.1 with the quiet settings; returns once it is up."""
    _remove_stale_folders()
    temp_dir = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=SHORT_TMP))
    (temp_dir / OWNER_FILE).write_text(str(os.getpid()))
    token = secrets.token_hex(32)
    port = _free_loopback_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        # The workers import this s3batch, wherever it is installed.
        "PYTHONPATH": str(Path(s3batch.__file__).resolve().parent.parent),
        # The actors do the job's work, as the other engines' processes do: at this process's
        # priority, not Ray's default of nice 15 (only the CPU nothing else on the machine wants).
        WORKER_NICENESS_VAR: "0",
        **quiet_environment(temp_dir, token),
    }
    command = [
        sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
        "--node-ip-address=127.0.0.1", f"--port={port}", f"--num-cpus={cpus}",
        "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}",
        "--include-log-monitor=false",  # it only forwards workers' output to drivers: none here
        f"--object-store-memory={PRIVATE_OBJECT_STORE_BYTES}",
    ]  # fmt: skip
    output = temp_dir / "ray-start.log"
    process = _spawn_tied_to_this_process(command, env, output)
    cluster = PrivateCluster(process, f"127.0.0.1:{port}", temp_dir, token)
    try:
        _wait_started(process, output)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _remove_stale_folders() -> None:
    """Remove the folders of private clusters whose owner died without cleaning up (kill -9:
    its cluster got SIGTERM from the kernel, but nothing removed the folder)."""
    for folder in Path(SHORT_TMP).glob(f"{TEMP_PREFIX}*"):
        try:
            if folder.stat().st_uid != os.getuid():
                continue
            owner = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _alive(owner):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_tied_to_this_process(
    command: list[str], env: dict[str, str], output: Path
) -> subprocess.Popen[bytes]:
    """Start `command` from a thread that lives as long as this process.

    The child asks the kernel for SIGTERM when its parent *thread* ends (that is how Linux's
    parent-death signal works), so it is spawned from a daemon thread that then waits on it:
    the thread ends with this process, however it ends (kill -9 included).
    """
    spawned: queue.Queue[subprocess.Popen[bytes] | BaseException] = queue.Queue()

    def keeper() -> None:
        try:
            with output.open("wb") as sink:
                child = subprocess.Popen(
                    command, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                    start_new_session=True, preexec_fn=_die_with_parent,
                )  # fmt: skip
        except BaseException as exc:
            spawned.put(exc)
            return
        spawned.put(child)
        child.wait()

    threading.Thread(target=keeper, name="s3batch-ray-cluster", daemon=True).start()
    result = spawned.get()
    if isinstance(result, BaseException):
        raise ConfigError(f"could not start a private Ray cluster: {result}") from result
    return result


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_started(process: subprocess.Popen[bytes], output: Path) -> None:
    deadline = time.monotonic() + PRIVATE_START_TIMEOUT_S
    while STARTED_LINE not in output.read_text(errors="replace"):
        if process.poll() is not None:
            tail = output.read_text(errors="replace")[-2000:]
            raise ConfigError(f"the private Ray cluster exited with status {process.returncode}: {tail}")
        if time.monotonic() > deadline:
            raise ConfigError(f"the private Ray cluster did not start within {PRIVATE_START_TIMEOUT_S} s")
        time.sleep(PRIVATE_POLL_S)


class _Connection:
    """This process's one connection to a cluster (Ray allows one per process)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.address: str | None = None
        self.private: PrivateCluster | None = None

    def join(self, address: str | None, cpus: int) -> Any:
        """The `ray` module, connected to the cluster at `address` (None: a private one)."""
        with self.lock:
            wanted = address or "private"
            if self.address is not None:
                if self.address != wanted:
                    raise ConfigError(
                        f"this process already uses the Ray cluster {self.address!r}; "
                        f"S3BATCH_RAY_ADDRESS={address!r} needs a new process"
                    )
                import ray

                return ray
            try:
                ray = self._init(address, cpus)
            except BaseException:
                if self.private is not None:  # started, but this process could not join it
                    self.private.stop()
                    self.private = None
                raise
            self.address = wanted
            atexit.register(self.leave)
            return ray

    def _init(self, address: str | None, cpus: int) -> Any:
        target = address
        if address is None:
            self.private = start_private_cluster(cpus)
            target = self.private.address
            # This process is a client of its own cluster: same token, same loopback rule; no
            # HOME or temp-folder change here (they are this process's, not Ray's).
            os.environ.update(
                {
                    "RAY_AUTH_MODE": "token",
                    "RAY_AUTH_TOKEN": self.private.token,
                    "RAY_USAGE_STATS_ENABLED": "0",
                }
            )
        if target is not None and is_loopback(target):
            _keep_node_on_loopback()
        # Ray says it set no SIGTERM handler when joined from a thread: this process keeps its own.
        logging.getLogger("ray._private.worker").addFilter(_NoSignalNotice())
        import ray

        if not ray.is_initialized():
            ray.init(
                address=target,
                namespace=NAMESPACE,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
        return ray

    def leave(self) -> None:
        with self.lock:
            if self.address is None:
                return
            with contextlib.suppress(Exception):
                import ray

                ray.shutdown()
            if self.private is not None:
                self.private.stop()
                self.private = None
            self.address = None


class _NoSignalNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def _keep_node_on_loopback() -> None:
    """Make this driver take 127.0.0.1 as its node's address (for a cluster on loopback).

    Ray reads the variable when it is first imported; if it already was, the constant it set
    is corrected too, or the driver would look for the cluster at an outward address.
    """
    os.environ[LOOPBACK_NODE_VAR] = "0"
    constants: Any = sys.modules.get("ray._private.ray_constants")
    if constants is not None:
        constants.ENABLE_RAY_CLUSTER = False


_connection = _Connection()


def join(address: str | None, cpus: int) -> Any:
    """Connect this process to the cluster (once per process); returns the `ray` module."""
    require_ray()
    return _connection.join(address, cpus)


def private_cluster() -> PrivateCluster | None:
    """The private cluster this process started, if any (for tests and diagnostics)."""
    return _connection.private


def leave() -> None:
    """Disconnect, and stop the private cluster if this process started one."""
    _connection.leave()
