"""Benchmark: what a first command costs — `s3batch` start-up and a one-object job, beside the AWS
CLI and s5cmd doing one call each against the same local server.

    .venv/bin/python bench/bench_startup.py [--runs 10] [--out docs/bench/bench_startup-DATE.json]

Every figure is the wall time of one whole process, from spawn to exit, as a shell user sees it
(median, min and max of --runs, after one warm-up run that is not counted):

- `python -c pass`: the interpreter's floor; `python -c "import s3batch.cli.jobs"`: the modules a
  job command imports;
- `s3batch --help`, `s3batch --version`;
- `s3batch create-job --wait` of a one-object job (S3PutObjectTagging on a local folder store,
  completion report off and on). "fresh HOME": a new S3BATCH_HOME each run; "reused HOME": one
  S3BATCH_HOME for every run. With no worker of its environment running, `--wait` drives the job
  in its own process, so neither row starts a background worker.
  For these rows the job's own timestamps split the wall time: `startup+create` (process start
  to the job's CreationTime: interpreter, imports, CreateJob), `worker` (CreationTime to
  TerminationDate: the driver's imports, manifest, the task, the report) and `tail`
  (TerminationDate to exit: `--wait` noticing the end, printing, exiting);
- on `rclone serve s3` (127.0.0.1): a one-object S3PutObjectCopy job from `s3batch create-job
  --wait`, `aws --version`, `aws s3api head-object`, `aws s3api copy-object`, and `s5cmd cp`
  (server-side copy) when s5cmd is installed (the table says when it is not).

CPU is the measured process's own user+system time (its reaped children included); a background
worker is not the command's child and is not counted. Writes the results as JSON (default
docs/bench/bench_startup-<date>.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from servers import ACCESS_KEY, SECRET_KEY, rclone_server, venv_binary

ROOT = Path(__file__).resolve().parent.parent
#: Seconds one measured command may take before the benchmark fails.
COMMAND_TIMEOUT_S = 60.0
#: Seconds to wait for a worker the benchmark's command started to exit after SIGTERM.
WORKER_STOP_S = 10.0
#: Poll interval while waiting for that worker to exit, in seconds.
WORKER_POLL_S = 0.02
BUCKET, KEY = "data", "one.txt"
OBJECT_BODY = b"x" * 4096
TAGGING = {"S3PutObjectTagging": {"TagSet": [{"Key": "bench", "Value": "1"}]}}
COPY = {"S3PutObjectCopy": {"TargetResource": f"arn:aws:s3:::{BUCKET}", "TargetKeyPrefix": "copied"}}
REPORT_ON = {
    "Bucket": f"arn:aws:s3:::{BUCKET}",
    "Format": "Report_CSV_20180820",
    "Enabled": True,
    "Prefix": "reports",
    "ReportScope": "AllTasks",
}
REPORT_OFF = {"Enabled": False}


@dataclass(frozen=True, slots=True)
class Sample:
    wall_s: float
    cpu_s: float
    #: Parts of the wall time (job rows only), in seconds.
    parts: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Command:
    argv: list[str]
    env: dict[str, str]
    #: Runs after each run (not timed): e.g. stop the worker a cold run started.
    after: Callable[[], None] | None = None
    #: Builds a fresh environment for each run (not timed), instead of `env`.
    fresh_env: Callable[[], dict[str, str]] | None = None
    #: Whether stdout is a job descriptor to split the wall time by.
    job: bool = False


def run_once(cmd: Command) -> Sample:
    env = cmd.fresh_env() if cmd.fresh_env else cmd.env
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started_wall, started = time.time(), time.perf_counter()
    proc = subprocess.run(
        cmd.argv, env=env, capture_output=True, timeout=COMMAND_TIMEOUT_S, check=False, cwd=ROOT
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd.argv} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    parts = job_parts(proc.stdout, started_wall, started_wall + wall) if cmd.job else {}
    if cmd.after is not None:
        cmd.after()
    return Sample(wall, cpu, parts)


def job_parts(stdout: bytes, start: float, end: float) -> dict[str, float]:
    job = json.loads(stdout)["Job"]
    if job["Status"] != "Complete" or job["ProgressSummary"]["NumberOfTasksSucceeded"] != 1:
        raise RuntimeError(f"the job did not complete its one task: {job}")
    created = datetime.fromisoformat(job["CreationTime"]).timestamp()
    ended = datetime.fromisoformat(job["TerminationDate"]).timestamp()
    return {"startup+create": created - start, "worker": ended - created, "tail": end - ended}


def measure(cmd: Command, runs: int) -> dict[str, Any]:
    run_once(cmd)  # warm-up: page cache, .pyc files
    samples = [run_once(cmd) for _ in range(runs)]
    walls = [s.wall_s * 1000 for s in samples]
    out: dict[str, Any] = {
        "command": shlex.join(Path(a).name if a.startswith("/") else a for a in cmd.argv),
        "wall_ms": {"median": ms(statistics.median(walls)), "min": ms(min(walls)), "max": ms(max(walls))},
        "cpu_ms": ms(statistics.median(s.cpu_s * 1000 for s in samples)),
    }
    if cmd.job:
        out["parts_ms"] = {
            part: ms(statistics.median(s.parts[part] * 1000 for s in samples)) for part in samples[0].parts
        }
    return out


def ms(value: float) -> float:
    return round(value, 1)


def stop_worker(home: Path) -> None:
    """Stop the background worker a job command started for `home` (by the PID it wrote)."""
    pid_file = home / "worker.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + WORKER_STOP_S
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(WORKER_POLL_S)
    raise RuntimeError(f"worker {pid} did not stop")


def manifest(etag: str) -> dict[str, Any]:
    return {
        "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
        "Location": {"ObjectArn": f"arn:aws:s3:::{BUCKET}/manifest.csv", "ETag": etag},
    }


def lay_out(folder: Path) -> str:
    """Bucket BUCKET with one object and a manifest listing it; returns the manifest's ETag."""
    (folder / BUCKET).mkdir(parents=True, exist_ok=True)
    (folder / BUCKET / KEY).write_bytes(OBJECT_BODY)
    body = f"{BUCKET},{KEY}\n".encode()
    (folder / BUCKET / "manifest.csv").write_bytes(body)
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


def job_argv(s3batch: str, op: dict[str, Any], etag: str, report: dict[str, Any]) -> list[str]:
    return [
        s3batch, "create-job", "--operation", json.dumps(op), "--manifest", json.dumps(manifest(etag)),
        "--report", json.dumps(report), "--priority", "1", "--no-confirmation-required", "--wait",
    ]  # fmt: skip


def base_env() -> dict[str, str]:
    """No user AWS configuration; the bench server's keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3BATCH_"))}
    env.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )  # fmt: skip
    return env


class FreshHome:
    """A new S3BATCH_HOME for each run (so each run starts its worker), stopped after the run."""

    def __init__(self, tmp: Path, env: dict[str, str], label: str) -> None:
        self.tmp, self.env, self.label, self.count = tmp, env, label, 0
        self.home = tmp / "unused"

    def env_for_run(self) -> dict[str, str]:
        self.count += 1
        self.home = self.tmp / f"home-{self.label}-{self.count}"
        return {**self.env, "S3BATCH_HOME": str(self.home)}

    def stop(self) -> None:
        stop_worker(self.home)


def local_job_rows(s3batch: str, tmp: Path, runs: int) -> dict[str, dict[str, Any]]:
    etag = lay_out(tmp / "buckets")
    env = {**base_env(), "S3BATCH_STORAGE": f"file://{tmp / 'buckets'}"}
    rows: dict[str, dict[str, Any]] = {}
    for label, report in (("report off", REPORT_OFF), ("report on", REPORT_ON)):
        argv = job_argv(s3batch, TAGGING, etag, report)
        homes = FreshHome(tmp, env, label.replace(" ", "-"))
        cold = Command(argv, env, after=homes.stop, fresh_env=homes.env_for_run, job=True)
        rows[f"s3batch create-job --wait, 1 object, {label}, fresh HOME"] = measure(cold, runs)
        warm_home = tmp / f"home-warm-{label.replace(' ', '-')}"
        warm = Command(argv, {**env, "S3BATCH_HOME": str(warm_home)}, job=True)
        rows[f"s3batch create-job --wait, 1 object, {label}, reused HOME"] = measure(warm, runs)
        stop_worker(warm_home)
    return rows


def server_rows(s3batch: str, tmp: Path, runs: int) -> tuple[dict[str, dict[str, Any]], list[str]]:
    notes: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    etag = ""

    def prepare(folder: Path) -> None:
        nonlocal etag
        etag = lay_out(folder)

    with rclone_server(prepare) as (endpoint, _):
        env = base_env()
        home = tmp / "home-rclone"
        job_env = {**env, "S3BATCH_STORAGE": endpoint, "S3BATCH_HOME": str(home)}
        job = Command(job_argv(s3batch, COPY, etag, REPORT_OFF), job_env, job=True)
        rows["s3batch create-job --wait, 1 object copy, rclone"] = measure(job, runs)
        stop_worker(home)
        aws = str(ROOT / ".venv-awscli" / "bin" / "aws")
        if Path(aws).exists():
            rows["aws --version"] = measure(Command([aws, "--version"], env), runs)
            head = [aws, "--endpoint-url", endpoint, "s3api", "head-object", "--bucket", BUCKET, "--key", KEY]
            rows["aws s3api head-object, rclone"] = measure(Command(head, env), runs)
            copy = [aws, "--endpoint-url", endpoint, "s3api", "copy-object", "--bucket", BUCKET,
                    "--key", "aws-copy", "--copy-source", f"{BUCKET}/{KEY}"]  # fmt: skip
            rows["aws s3api copy-object, rclone"] = measure(Command(copy, env), runs)
        else:
            notes.append(f"AWS CLI not installed at {aws}: its rows are missing")
        s5cmd = venv_binary("s5cmd")
        if s5cmd is not None:
            cp = [
                s5cmd,
                "--endpoint-url",
                endpoint,
                "cp",
                f"s3://{BUCKET}/{KEY}",
                f"s3://{BUCKET}/s5cmd-copy",
            ]
            rows["s5cmd cp (server-side copy), rclone"] = measure(Command(cp, env), runs)
        else:
            notes.append("s5cmd not installed (./scripts/install-bench): its row is missing")
    return rows, notes


def print_table(rows: dict[str, dict[str, Any]]) -> None:
    print(f"\n{'command':<66}{'wall ms':>9}{'min':>8}{'max':>8}{'CPU ms':>8}  parts (median ms)")
    for name, r in rows.items():
        w = r["wall_ms"]
        parts = "  ".join(f"{k} {v:.0f}" for k, v in r.get("parts_ms", {}).items())
        print(f"{name:<66}{w['median']:>9.0f}{w['min']:>8.0f}{w['max']:>8.0f}{r['cpu_ms']:>8.0f}  {parts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="Timed runs per command (median).")
    parser.add_argument("--out", type=Path, help="JSON results file.")
    args = parser.parse_args()
    s3batch = venv_binary("s3batch")
    if s3batch is None:
        raise SystemExit("s3batch is not installed in this interpreter's environment")
    env = base_env()
    rows: dict[str, dict[str, Any]] = {
        "python -c pass": measure(Command([sys.executable, "-c", "pass"], env), args.runs),
        "python -c 'import s3batch.cli.jobs'": measure(
            Command([sys.executable, "-c", "import s3batch.cli.jobs"], env), args.runs
        ),
        "s3batch --help": measure(Command([s3batch, "--help"], env), args.runs),
        "s3batch --version": measure(Command([s3batch, "--version"], env), args.runs),
    }
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as scratch:
        tmp = Path(scratch)
        rows.update(local_job_rows(s3batch, tmp, args.runs))
        more, notes = server_rows(s3batch, tmp, args.runs)
        rows.update(more)
    print_table(rows)
    for note in notes:
        print(f"note: {note}")
    now = datetime.now(UTC)
    results = {
        "benchmark": "bench_startup",
        "date": now.isoformat(timespec="seconds"),
        "runs": args.runs,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "rows": rows,
        "notes": notes,
    }
    out = args.out or ROOT / "docs" / "bench" / f"bench_startup-{now:%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
