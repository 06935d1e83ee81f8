"""Benchmark: `s3batch transfer` against `rclone copy` and `s5cmd cp`, between two local servers.

    .venv/bin/python bench/bench_transfer.py [--small 10000] [--small-kib 4] [--large 20]
        [--large-mib 256] [--only small,large] [--directions s3-s3,folder-s3,s3-folder]
        [--skip-s5cmd]

Two `rclone serve s3` processes on 127.0.0.1 (bench/servers.py) stand for two stores: A holds the
source bucket (laid out as files before it starts, and each object HEADed once before any client
runs, so that none pays for A's first hashing of the files: `warm_up`), B receives. s3batch's
modules are byte-compiled first, as an installed package's are (`compile_s3batch`). Workloads:
- small: N objects of K KiB (default 10,000 x 4 KiB);
- large: M objects of S MiB (default 20 x 256 MiB), uploaded in parts.
Directions, each into a fresh destination bucket or folder:
- S3 -> S3 (A -> B): `s3batch transfer a:src b:dst` (named stores in a temporary S3BATCH_HOME)
  against `rclone copy a:src b:dst` (both ends as rclone remotes, --transfers 64 for small objects,
  the defaults for large ones);
- folder -> S3 and S3 -> folder: s3batch against `s5cmd cp` (which copies between a folder and S3,
  not between two endpoints) and `rclone copy`.

Every client is a subprocess, timed by wall clock, started by bench/launch.py: its CPU time and
peak RSS come from wait4() on that very process, and the small launcher keeps the benchmark's
own memory out of the client's peak (see launch.py). s3batch's run includes creating the job,
listing the source (its manifest generator), verifying every checksum and writing its report
rows to SQLite; the peers verify MD5/ETags their own way. s3batch runs with SkipExisting None (a
copy, as the peers are told to copy).

Prints objects/s, MB/s, CPU seconds (the client's, and the two servers' meanwhile), the CPU
seconds the host took from this virtual machine meanwhile ("stolen": a run with much of it is
slow and uneven for every client), the ratio of each peer's time to s3batch's, and peak RSS, and
writes bench/results/bench_transfer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3

from launch import run_launched
from servers import ACCESS_KEY, SECRET_KEY, rclone_binary, rclone_server, venv_binary

SRC_BUCKET = "src"
MIB = 1024**2
#: Bytes per write when laying out large source files.
WRITE_CHUNK_BYTES = 8 * MIB
#: Seconds one client run may take before the benchmark gives up on it.
RUN_TIMEOUT_S = 3600.0
#: rclone's parallelism for many small objects (its default, 4, is meant for large files).
RCLONE_SMALL_TRANSFERS = 64
#: Threads HEADing the source objects before the runs (`warm_up`).
WARM_UP_THREADS = 16
#: s5cmd's workers (its default, 256, is kept; named here so the table says what ran).
S5CMD_WORKERS = 256
RESULTS = Path(__file__).resolve().parent / "results" / "bench_transfer.json"


def lay_out(count: int, size: int) -> Callable[[Path], None]:
    """Files for the source server's bucket (rclone serves a folder's sub-folders as buckets)."""

    def prepare(data: Path) -> None:
        bucket = data / SRC_BUCKET
        for index in range(count):
            path = bucket / f"d{index % 100:02d}" / f"obj {index:06d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as f:
                left = size
                while left:
                    block = os.urandom(min(left, WRITE_CHUNK_BYTES))
                    f.write(block)
                    left -= len(block)

    return prepare


def measured(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run one client through bench/launch.py; its wall time, CPU time (user + system, which a
    shared machine disturbs less than wall time, and each apart) and peak RSS (MiB). The
    launcher starts it so that its peak RSS is its own, not this benchmark's (see launch.py).
    Its output goes to a file, not a pipe: a client that prints a line per object (s5cmd)
    would block on a full pipe nobody reads."""
    with tempfile.TemporaryFile() as output:
        done, usage = run_launched(argv, RUN_TIMEOUT_S, env=env, stdout=output, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            output.seek(0)
            tail = output.read()[-4000:].decode(errors="replace")
            raise RuntimeError(f"{argv[:3]} exited {done.returncode}: {tail}")
    return {
        "seconds": usage["seconds"],
        "cpu_seconds": usage["user_seconds"] + usage["system_seconds"],
        "user_seconds": usage["user_seconds"],
        "system_seconds": usage["system_seconds"],
        "peak_rss_mib": usage["peak_rss_mib"],
        # What any client's peak RSS reads at least: the launcher's own (see launch.py).
        "floor_rss_mib": usage["floor_rss_mib"],
    }


def server_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (0 for pid 0), from /proc."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steal_s() -> float:
    """CPU seconds this (virtual) machine's CPUs have waited for the host so far, all CPUs
    together ("steal" in /proc/stat; 0 where the kernel does not report it)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0


class Bench:
    """Two servers, a scratch folder and the environment every client runs with."""

    def __init__(self, src: str, dst: str, work: Path, servers: tuple[int, int] = (0, 0)) -> None:
        """`servers`: the two servers' PIDs, whose CPU time each run also reports."""
        self.src, self.dst, self.work = src, dst, work
        self.servers = servers
        self.home = work / "home"
        self.home.mkdir()
        (self.home / "stores.toml").write_text(
            f'[stores.a]\nendpoint_url = "{src}"\naddressing_style = "path"\n'
            f'[stores.b]\nendpoint_url = "{dst}"\naddressing_style = "path"\n'
        )
        self.env = {
            **os.environ,
            "S3BATCH_HOME": str(self.home),
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            # rclone remotes "a" and "b", configured from the environment only.
            **{f"RCLONE_CONFIG_{name}_{k}": v for name, url in (("A", src), ("B", dst))
               for k, v in (("TYPE", "s3"), ("PROVIDER", "Other"), ("ENDPOINT", url),
                            ("ACCESS_KEY_ID", ACCESS_KEY), ("SECRET_ACCESS_KEY", SECRET_KEY),
                            ("FORCE_PATH_STYLE", "true"), ("REGION", "us-east-1"))},
        }  # fmt: skip
        self.runs = 0

    def measured(self, argv: list[str]) -> dict[str, float]:
        """`measured`, plus the CPU seconds the servers spent meanwhile (on 2 cores the servers
        and the client compete for the CPU, so a client's cost includes what it makes them do).

        The page cache is flushed first (`os.sync`, not timed): a large run leaves gigabytes of
        dirty pages, and whichever client came next was held back by their writeback (Linux
        throttles writers past `vm.dirty_ratio`), so a client's time depended on who ran
        before it."""
        os.sync()
        before, stolen = [server_cpu_s(pid) for pid in self.servers], steal_s()
        run = measured(argv, self.env)
        run["server_cpu_seconds"] = sum(server_cpu_s(pid) for pid in self.servers) - sum(before)
        # The host's share of the run: a machine whose CPUs wait for their host runs everything,
        # peers included, slower and less evenly. Compare runs with little steal.
        run["steal_seconds"] = steal_s() - stolen
        return run

    def client(self, endpoint: str) -> Any:
        return boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        )  # fmt: skip

    def bucket(self, endpoint: str) -> str:
        """A fresh bucket on `endpoint`."""
        self.runs += 1
        name = f"dst{self.runs:03d}"
        self.client(endpoint).create_bucket(Bucket=name)
        return name

    def objects_in(self, bucket: str) -> int:
        """Objects in a destination bucket (each run is checked to have copied everything)."""
        pages = self.client(self.dst).get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sum(len(page.get("Contents", [])) for page in pages)

    def folder(self) -> Path:
        self.runs += 1
        path = self.work / f"out{self.runs:03d}"
        path.mkdir()
        return path

    def s3batch(self, src: str, dst: str) -> dict[str, float]:
        argv = [sys.executable, "-m", "s3batch", "transfer", src, dst, "--skip-existing", "None"]
        return self.measured(argv)

    def rclone(self, src: str, dst: str, small: bool) -> dict[str, float]:
        argv = [rclone_binary(), "copy", src, dst, "--s3-chunk-size", "8M"]
        if small:
            argv += ["--transfers", str(RCLONE_SMALL_TRANSFERS), "--checkers", str(RCLONE_SMALL_TRANSFERS)]
        return self.measured(argv)

    def s5cmd(self, src: str, dst: str, endpoint: str) -> dict[str, float]:
        binary = venv_binary("s5cmd")
        if binary is None:
            raise RuntimeError("s5cmd not found: ./scripts/install-bench (or run with --skip-s5cmd)")
        argv = [binary, "--endpoint-url", endpoint, "--numworkers", str(S5CMD_WORKERS), "cp", src, dst]
        return self.measured(argv)


#: The directions a run may take (--directions), in the order they run.
DIRECTIONS = ("s3-s3", "folder-s3", "s3-folder")


def compile_s3batch() -> None:
    """Byte-compile s3batch's modules once, as installing a wheel does. From a checkout with
    PYTHONDONTWRITEBYTECODE set (this machine sets it) every run would otherwise compile them
    again: about 0.2 s of each run's start."""
    package = Path(__file__).resolve().parents[1] / "src" / "s3batch"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)


def warm_up(bench: Bench) -> None:
    """List and HEAD every source object once before any client runs. `rclone serve s3` computes a
    file's MD5 (its ETag) on the first request that needs it (a listing does) and keeps it in
    memory, about 0.5 s of its CPU per 256 MiB here: without this, whichever client ran first
    would pay it for all the others."""
    client = bench.client(bench.src)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=SRC_BUCKET)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    started = time.monotonic()
    with ThreadPoolExecutor(WARM_UP_THREADS) as pool:
        list(pool.map(lambda key: client.head_object(Bucket=SRC_BUCKET, Key=key), keys))
    print(
        f"  warmed the source server up: {len(keys)} HEADs in {time.monotonic() - started:.1f} s", flush=True
    )


def workload(
    bench: Bench, source_root: Path, count: int, size: int, s5cmd: bool, directions: set[str]
) -> dict[str, dict[str, float]]:
    """Each direction asked for, every client once; name → {seconds, peak_rss_mib, obj_per_s,
    mb_per_s}."""
    small = size < MIB
    results: dict[str, dict[str, float]] = {}

    def record(name: str, run: dict[str, float], copied: int) -> None:
        if copied != count:
            raise RuntimeError(f"{name} copied {copied} of {count} objects")
        run["obj_per_s"] = count / run["seconds"]
        run["mb_per_s"] = count * size / MIB / run["seconds"]
        results[name] = run
        print(f"  {name:<40}{run['seconds']:>9.2f} s{run['obj_per_s']:>10.0f} obj/s"
              f"{run['mb_per_s']:>9.1f} MiB/s{run['cpu_seconds']:>8.2f} s CPU"
              f" ({run['system_seconds']:.2f} sys)"
              f"{run['peak_rss_mib']:>7.0f} MiB RSS{run['server_cpu_seconds']:>8.2f} s servers' CPU"
              f"{run['steal_seconds']:>7.2f} s stolen", flush=True)  # fmt: skip

    if "s3-s3" in directions:
        dst = bench.bucket(bench.dst)
        record("S3->S3 s3batch transfer", bench.s3batch(f"a:{SRC_BUCKET}", f"b:{dst}"), bench.objects_in(dst))
        dst = bench.bucket(bench.dst)
        record(
            "S3->S3 rclone copy", bench.rclone(f"a:{SRC_BUCKET}", f"b:{dst}", small), bench.objects_in(dst)
        )
    folder = source_root / SRC_BUCKET
    if "folder-s3" in directions:
        folder_to_s3(bench, folder, small, s5cmd, record)
    if "s3-folder" in directions:
        s3_to_folder(bench, small, s5cmd, record)
    return results


Record = Callable[[str, dict[str, float], int], None]


def folder_to_s3(bench: Bench, folder: Path, small: bool, s5cmd: bool, record: Record) -> None:
    dst = bench.bucket(bench.dst)
    record("folder->S3 s3batch transfer", bench.s3batch(str(folder), f"b:{dst}"), bench.objects_in(dst))
    dst = bench.bucket(bench.dst)
    record("folder->S3 rclone copy", bench.rclone(str(folder), f"b:{dst}", small), bench.objects_in(dst))
    if s5cmd:
        dst = bench.bucket(bench.dst)
        record(
            "folder->S3 s5cmd cp",
            bench.s5cmd(f"{folder}/*", f"s3://{dst}/", bench.dst),
            bench.objects_in(dst),
        )


def s3_to_folder(bench: Bench, small: bool, s5cmd: bool, record: Record) -> None:
    out = bench.folder() / "x"
    record("S3->folder s3batch transfer", bench.s3batch(f"a:{SRC_BUCKET}", str(out)), files_in(out))
    out = bench.folder()
    record("S3->folder rclone copy", bench.rclone(f"a:{SRC_BUCKET}", str(out), small), files_in(out))
    if s5cmd:
        out = bench.folder()
        record(
            "S3->folder s5cmd cp", bench.s5cmd(f"s3://{SRC_BUCKET}/*", f"{out}/", bench.src), files_in(out)
        )


def files_in(folder: Path) -> int:
    return sum(1 for path in folder.rglob("*") if path.is_file())


def ratios(results: dict[str, dict[str, float]]) -> None:
    """Each peer's time over s3batch's in the same direction (above 1: s3batch is faster)."""
    for name, run in results.items():
        direction = name.split(" ")[0]
        base = results.get(f"{direction} s3batch transfer")
        if base is not None and run is not base:
            print(f"  {name:<40} takes {run['seconds'] / base['seconds']:.2f}x s3batch's time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=10_000, help="objects in the small workload")
    parser.add_argument("--small-kib", type=int, default=4)
    parser.add_argument("--large", type=int, default=20, help="objects in the large workload")
    parser.add_argument("--large-mib", type=int, default=256)
    parser.add_argument("--only", default="small,large")
    parser.add_argument("--directions", default=",".join(DIRECTIONS))
    parser.add_argument("--skip-s5cmd", action="store_true")
    args = parser.parse_args()
    directions = set(args.directions.split(","))
    if not directions <= set(DIRECTIONS):
        parser.error(f"--directions takes {', '.join(DIRECTIONS)}")
    compile_s3batch()
    report: dict[str, Any] = {"args": vars(args), "workloads": {}}
    plans = {"small": (args.small, args.small_kib * 1024), "large": (args.large, args.large_mib * MIB)}
    for name, (count, size) in plans.items():
        if name not in args.only.split(","):
            continue
        print(f"\n{name}: {count} x {size:,} bytes", flush=True)
        holder: dict[str, Path] = {}

        def prepare(
            data: Path, count: int = count, size: int = size, holder: dict[str, Path] = holder
        ) -> None:
            lay_out(count, size)(data)
            holder["root"] = data

        with rclone_server(prepare) as (src, src_proc), rclone_server() as (dst, dst_proc):
            with tempfile.TemporaryDirectory(prefix="bench-transfer-") as work:
                bench = Bench(src, dst, Path(work), (src_proc.pid, dst_proc.pid))
                warm_up(bench)
                results = workload(bench, holder["root"], count, size, not args.skip_s5cmd, directions)
        ratios(results)
        report["workloads"][name] = {"count": count, "size": size, "results": results}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
