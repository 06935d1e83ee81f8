"""A two-node Ray cluster on 127.0.0.1 for tests and benchmarks, owned by one child process.

    with TwoNodeCluster.start() as cluster:
        cluster.address, cluster.token, cluster.worker_node_pids(), cluster.pids()

The child (this file run as a script) starts a head node and a second node with
`ray.cluster_utils.Cluster`, with s3batch's quiet loopback settings
(s3batch.engines.ray_cluster.quiet_environment) and fast node health checks, prints one JSON
line (address, the second node's raylet PID, the session folder), and keeps the cluster until
its standard input closes (the parent exits or calls stop()); it then removes both nodes. Every
process of the cluster descends from that child, so tests find them by PID (never by name),
and nothing is stopped with `ray stop`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

#: CPUs of each node: one actor per CPU by default.
NODE_CPUS = 2
#: Seconds the cluster may take to start, and to stop.
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
#: Shared memory of each node's object store, in bytes.
OBJECT_STORE_BYTES = 128 * 1024**2
#: Node health checks: a killed node is declared dead after about 0.5 s x 3 instead of Ray's
#: default of about 15 s, so the node-kill test stays short.
#: The line on the child's standard input that asks for one more node.
ADD_NODE = "add-node"
FAST_HEALTH_CHECKS = {
    "health_check_initial_delay_ms": 0,
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
}


@dataclass
class TwoNodeCluster:
    process: subprocess.Popen[str]
    address: str
    token: str
    temp_dir: Path
    worker_raylet_pid: int

    @classmethod
    def start(cls) -> TwoNodeCluster:
        from s3batch.engines.ray_cluster import quiet_environment

        temp_dir = Path(tempfile.mkdtemp(prefix="s3b-test-ray-", dir="/tmp"))
        token = secrets.token_hex(32)
        env = {"PATH": os.environ.get("PATH", ""), **quiet_environment(temp_dir, token)}
        process = subprocess.Popen(
            [sys.executable, __file__, str(temp_dir)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(temp_dir / "cluster.log").open("w"),
            text=True,
            start_new_session=True,
        )
        assert process.stdout is not None
        line = _read_line(process, START_TIMEOUT_S)
        if not line:
            process.kill()
            log = (temp_dir / "cluster.log").read_text()[-3000:]
            raise RuntimeError(f"the test Ray cluster did not start: {log}")
        info = json.loads(line)
        return cls(process, info["address"], token, temp_dir, info["worker_raylet_pid"])

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()  # the child removes both nodes and exits
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                for pid in self.pids():
                    _kill(pid)
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def __enter__(self) -> TwoNodeCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def driver_env(self) -> dict[str, str]:
        """What a driver process needs to join: the address and the cluster's token."""
        return {"S3BATCH_RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token}

    def pids(self) -> list[int]:
        """Every live process of the cluster (the child and all its descendants)."""
        return descendants(self.process.pid, include_self=True)

    def worker_node_pids(self) -> list[int]:
        """The second node's raylet and everything it started (its actors' processes too)."""
        return descendants(self.worker_raylet_pid, include_self=True)

    def add_worker_node(self) -> None:
        """Start another second node (after `kill_worker_node`), so later tests have two again."""
        assert self.process.stdin is not None
        self.process.stdin.write(ADD_NODE + "\n")
        self.process.stdin.flush()
        line = _read_line(self.process, START_TIMEOUT_S)
        if not line:
            raise RuntimeError("the test Ray cluster did not add a node")
        self.worker_raylet_pid = int(json.loads(line)["worker_raylet_pid"])

    def kill_worker_node(self) -> list[int]:
        """kill -9 every process of the second node, as when its machine fails."""
        pids = self.worker_node_pids()
        for pid in pids:
            _kill(pid)
        return pids


def descendants(root: int, include_self: bool = False) -> list[int]:
    """PIDs below `root` in the process tree (from /proc), `root` first if asked."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found if include_self else found[1:]


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def listening_addresses(pids: list[int]) -> list[tuple[int, str]]:
    """(pid, local address) of every TCP listener and UDP socket the processes hold."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue  # the process ended meanwhile
    found = []
    for table, listen_only in (("tcp", True), ("tcp6", True), ("udp", False), ("udp6", False)):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if inode in inodes and (state == "0A" or not listen_only):
                found.append((inodes[inode], _address(local)))
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def chunk_workers(pids: list[int]) -> Iterator[int]:
    """PIDs among `pids` that run the Ray engine's actor."""
    for pid in pids:
        if "ChunkWorker" in command_line(pid):
            yield pid


def _address(hex_address: str) -> str:
    """The IP of /proc/net/tcp's hex "ADDR:PORT" (little-endian 32-bit words)."""
    raw = bytes.fromhex(hex_address.split(":")[0])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_line(process: subprocess.Popen[str], timeout_s: float) -> str:
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and process.poll() is None:
            if selector.select(timeout=0.2):
                return process.stdout.readline()
    return ""


def _serve(temp_dir: str) -> None:  # pragma: no cover - runs in the child
    """Start the head and a second node, report them, hold them until stdin closes."""
    from ray.cluster_utils import Cluster

    (Path(temp_dir) / "ray").mkdir(exist_ok=True)  # Ray notes the address in RAY_TMPDIR/ray
    node = {"num_cpus": NODE_CPUS, "object_store_memory": OBJECT_STORE_BYTES, "include_dashboard": False}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={**node, "temp_dir": temp_dir, "_system_config": FAST_HEALTH_CHECKS},
    )
    try:
        print(json.dumps({"address": cluster.address, "worker_raylet_pid": _add(cluster, node)}), flush=True)
        for line in iter(sys.stdin.readline, ""):
            if line.strip() == ADD_NODE:
                print(json.dumps({"worker_raylet_pid": _add(cluster, node)}), flush=True)
    finally:
        cluster.shutdown()


def _add(cluster: Any, node: dict[str, Any]) -> int:  # pragma: no cover - runs in the child
    added = cluster.add_node(**node)
    return int(added.all_processes["raylet"][0].process.pid)


def main() -> None:  # pragma: no cover - runs in the child
    _serve(sys.argv[1])


if __name__ == "__main__":
    main()
