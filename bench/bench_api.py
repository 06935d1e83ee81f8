"""Benchmark: API latency under many pollers, and how much they slow a running job.

    .venv/bin/python bench/bench_api.py                       # 100,000 tasks, 200 callers
    .venv/bin/python bench/bench_api.py --tasks 20000 --callers 50 --intervals 0

Starts `s3batch serve` as its own process (local folder store, S3 Control API and job worker
in one process, exactly as a user runs it), writes `--tasks` small objects and a manifest,
and runs an S3PutObjectTagging job over them:

1. alone (baseline);
2. once per `--intervals` value, with `--callers` concurrent callers alternating signed
   DescribeJob and ListJobs for the whole job: interval 0 is a closed loop (each caller sends
   its next request as soon as the previous one is answered: the worst case), interval 1 is a
   dashboard-like poll every second per caller, the callers' phases spread over the second.

Scenarios run in `--repeat` rounds after an uncounted warm-up job; the slowdown is the median,
over rounds, of a poller run's wall time over the same round's baseline (the machine's speed
drifts between minutes). Job wall time is the server's own (DescribeJob's TerminationDate −
CreationTime), so how often this script looks does not change it. Requests are signed with
SigV4 (botocore) and re-signed every RESIGN_S seconds, so client-side signing does not compete
with the server for the machine's cores; the server still verifies every request. Prints a
table and writes bench/results/bench_api.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from s3batch.client import s3control
from servers import free_port

ACCESS_KEY, SECRET_KEY, ACCOUNT = "AKIDBENCH", "bench-secret", "111122223333"
BUCKET, REPORTS = "bench", "reports"
DEFAULT_TASKS = 100_000
DEFAULT_CALLERS = 200
#: Seconds between one caller's requests; 0 = closed loop.
DEFAULT_INTERVALS = (0.0, 1.0)
#: Seconds a signed request is reused before it is signed again (SigV4 allows 15 minutes).
RESIGN_S = 60.0
#: Seconds to wait for the server to start, for a job to finish, for one request.
STARTUP_TIMEOUT_S = 30.0
JOB_TIMEOUT_S = 1800.0
REQUEST_TIMEOUT_S = 60.0
#: Seconds between DescribeJob calls of the harness itself while it waits for a job.
WATCH_S = 0.5
#: ListJobs page size the pollers ask for.
LIST_PAGE = 20
HTTP_OK = 200
#: Pollers with an interval start at this many evenly spaced offsets within it (the rest wrap).
CALLER_PHASES = 200
RESULTS = Path(__file__).parent / "results" / "bench_api.json"


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    home: Path


def start_server(home: Path, port: int) -> Server:
    env = {
        **os.environ,
        "S3BATCH_HOME": str(home),
        "S3BATCH_ACCESS_KEYS": f"{ACCESS_KEY}:{SECRET_KEY}:{ACCOUNT}",
        "S3BATCH_STORAGE": f"file://{home / 'buckets'}",
    }
    log = (home / "serve.log").open("ab")
    command = [sys.executable, "-m", "s3batch", "serve", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/v20180820/jobs", timeout=1)
            break
        except urllib.error.HTTPError:
            break  # a 403 for the unsigned probe: it is up
        except OSError:
            time.sleep(0.1)
    else:
        process.kill()
        raise RuntimeError(f"s3batch serve did not start; see {home / 'serve.log'}")
    return Server(url, process, home)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(STARTUP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(STARTUP_TIMEOUT_S)


def write_objects(root: Path, tasks: int) -> dict[str, Any]:
    """`tasks` empty objects in BUCKET and a manifest listing them; the Manifest spec."""
    import hashlib

    folder = root / BUCKET / "data"
    folder.mkdir(parents=True, exist_ok=True)
    (root / REPORTS).mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(tasks):
        name = f"{i:08d}.txt"
        (folder / name).touch()
        lines.append(f"{BUCKET},data/{name}\n")
    body = "".join(lines).encode()
    (root / BUCKET / "manifest.csv").write_bytes(body)
    return {
        "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
        "Location": {
            "ObjectArn": f"arn:aws:s3:::{BUCKET}/manifest.csv",
            "ETag": hashlib.md5(body, usedforsecurity=False).hexdigest(),
        },
    }


def create_job(client: Any, manifest: dict[str, Any]) -> str:
    return str(
        client.create_job(
            AccountId=ACCOUNT,
            Operation={"S3PutObjectTagging": {"TagSet": [{"Key": "bench", "Value": "1"}]}},
            Manifest=manifest,
            Report={
                "Bucket": f"arn:aws:s3:::{REPORTS}",
                "Format": "Report_CSV_20180820",
                "Enabled": True,
                "Prefix": "reports",
                "ReportScope": "FailedTasksOnly",
            },
            Priority=10,
            RoleArn=f"arn:aws:iam::{ACCOUNT}:role/bench",
            ConfirmationRequired=False,
        )["JobId"]
    )


def wait_done(client: Any, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        job: dict[str, Any] = client.describe_job(AccountId=ACCOUNT, JobId=job_id)["Job"]
        if job["Status"] in ("Complete", "Failed", "Cancelled"):
            return job
        time.sleep(WATCH_S)
    raise TimeoutError(f"job {job_id} did not finish within {JOB_TIMEOUT_S} s")


class Signer:
    """Signed DescribeJob / ListJobs requests as raw HTTP/1.1 bytes, reused for RESIGN_S s."""

    def __init__(self, url: str, job_id: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.credentials = Credentials(ACCESS_KEY, SECRET_KEY)
        self.targets = {
            "DescribeJob": f"{url}/v20180820/jobs/{job_id}",
            "ListJobs": f"{url}/v20180820/jobs?maxResults={LIST_PAGE}",
        }
        self._cache: dict[str, tuple[float, bytes]] = {}

    def get(self, operation: str) -> bytes:
        now = time.monotonic()
        cached = self._cache.get(operation)
        if cached is None or now - cached[0] > RESIGN_S:
            cached = (now, self._signed(self.targets[operation]))
            self._cache[operation] = cached
        return cached[1]

    def _signed(self, url: str) -> bytes:
        request = AWSRequest(method="GET", url=url, headers={"x-amz-account-id": ACCOUNT})
        S3SigV4Auth(self.credentials, "s3", "us-east-1").add_auth(request)
        prepared = request.prepare()
        target = urllib.parse.urlsplit(prepared.url)
        path = target.path + (f"?{target.query}" if target.query else "")
        headers = {"Host": f"{self.host}:{self.port}", **dict(prepared.headers.items())}
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return f"GET {path} HTTP/1.1\r\n{head}\r\n".encode("latin-1")


@dataclass
class Polls:
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {"DescribeJob": [], "ListJobs": []})
    errors: int = 0


async def poll(signer: Signer, callers: int, interval_s: float, stop: asyncio.Event) -> Polls:
    """`callers` keep-alive connections, each alternating DescribeJob and ListJobs until `stop`.

    Plain asyncio streams, not an HTTP library: with 200 connections httpx's pool cost the
    client ~4 ms of CPU per request (measured), which would have made this benchmark measure
    the client instead of the server."""
    polls = Polls()
    await asyncio.gather(*(_caller(signer, n, interval_s, stop, polls) for n in range(callers)))
    return polls


async def _caller(signer: Signer, n: int, interval_s: float, stop: asyncio.Event, polls: Polls) -> None:
    operation = ("DescribeJob", "ListJobs")[n % 2]
    reader, writer = await asyncio.open_connection(signer.host, signer.port)
    if interval_s:  # spread the callers over the interval, as independent pollers would be
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s * (n % CALLER_PHASES) / CALLER_PHASES)
    try:
        while not stop.is_set():  # bounded: stops when the job ends
            t0 = time.perf_counter()
            writer.write(signer.get(operation))
            status = await asyncio.wait_for(_response_status(reader), REQUEST_TIMEOUT_S)
            if status == HTTP_OK:
                polls.latencies_ms[operation].append((time.perf_counter() - t0) * 1000)
            else:
                polls.errors += 1
            operation = "ListJobs" if operation == "DescribeJob" else "DescribeJob"
            if interval_s:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval_s)
    finally:
        writer.close()


async def _response_status(reader: asyncio.StreamReader) -> int:
    """Read one whole response (the server always sends Content-Length); its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(
        (int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")), 0
    )
    await reader.readexactly(length)
    return int(lines[0].split()[1])


def run_job(
    server: Server, manifest: dict[str, Any], callers: int, interval_s: float | None
) -> dict[str, Any]:
    """One job; with pollers unless `interval_s` is None. Returns its figures."""
    client = s3control(
        server.url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        retries={"max_attempts": 1},
    )
    job_id = create_job(client, manifest)
    polls = Polls()
    if interval_s is not None:
        polls = asyncio.run(_poll_until_done(client, server.url, job_id, callers, interval_s))
    job = wait_done(client, job_id)
    assert job["Status"] == "Complete", job
    wall_s = (job["TerminationDate"] - job["CreationTime"]).total_seconds()
    return {
        "job_id": job_id,
        "wall_s": round(wall_s, 2),
        "tasks": job["ProgressSummary"],
        **summary(polls, wall_s),
    }


async def _poll_until_done(client: Any, url: str, job_id: str, callers: int, interval_s: float) -> Polls:
    stop = asyncio.Event()
    pollers = asyncio.create_task(poll(Signer(url, job_id), callers, interval_s, stop))
    await asyncio.to_thread(wait_done, client, job_id)
    stop.set()
    return await pollers


def interleaved(
    server: Server, manifest: dict[str, Any], callers: int, intervals: list[float], repeat: int
) -> dict[str, dict[str, Any]]:
    """Each scenario `repeat` times, in rounds (baseline, then each interval), after one
    uncounted warm-up job. The machine's speed drifts (a shared VM: the same job took 3.5 s
    and 8 s minutes apart), so each poller run is compared with the baseline of its own round,
    and the median of those ratios is the slowdown. Per scenario, the run of median wall time
    is kept, with every wall time and ratio."""
    run_job(server, manifest, callers, None)  # warm-up: creates the tag sidecars once
    scenarios: dict[str, float | None] = {"no pollers": None}
    for interval in intervals:
        label = "closed loop" if interval == 0 else f"every {interval:g} s"
        scenarios[f"{callers} callers, {label}"] = interval
    rounds = [
        {name: run_job(server, manifest, callers, interval) for name, interval in scenarios.items()}
        for _ in range(repeat)
    ]
    out = {}
    for name in scenarios:
        runs = sorted((r[name] for r in rounds), key=lambda run: run["wall_s"])
        ratios = [r[name]["wall_s"] / r["no pollers"]["wall_s"] for r in rounds]
        out[name] = {
            **runs[len(runs) // 2],
            "wall_s_all": [r[name]["wall_s"] for r in rounds],
            "slowdown_all": [round(x, 2) for x in ratios],
            "slowdown": round(statistics.median(ratios), 2),
        }
    return out


def summary(polls: Polls, wall_s: float) -> dict[str, Any]:
    out: dict[str, Any] = {"errors": polls.errors}
    every = [ms for values in polls.latencies_ms.values() for ms in values]
    for name, values in {**polls.latencies_ms, "all": every}.items():
        if len(values) < 2:
            continue
        cuts = statistics.quantiles(values, n=100)
        out[name] = {
            "requests": len(values),
            "per_s": round(len(values) / wall_s, 1),
            "p50_ms": round(cuts[49], 2),
            "p99_ms": round(cuts[98], 2),
            "max_ms": round(max(values), 2),
        }
    return out


def print_table(results: dict[str, Any]) -> None:
    print(f"\n{results['tasks']:,}-task S3PutObjectTagging job, local folder store, s3batch serve")
    print(f"{'scenario':<34} {'job wall s':>10} {'slowdown':>9} {'req/s':>8}", end=" ")
    print(f"{'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for name, run in results["runs"].items():
        stats = run.get("all", {})
        print(
            f"{name:<34} {run['wall_s']:>10.2f} {run['slowdown']:>8.2f}× "
            f"{stats.get('per_s', 0):>8} {stats.get('p50_ms', '-'):>8} {stats.get('p99_ms', '-'):>8} "
            f"{run['errors']:>6}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--tasks", type=int, default=DEFAULT_TASKS)
    parser.add_argument("--callers", type=int, default=DEFAULT_CALLERS)
    parser.add_argument(
        "--intervals",
        default=",".join(f"{i:g}" for i in DEFAULT_INTERVALS),
        help="seconds between one caller's requests, comma-separated; 0 = closed loop",
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every scenario; medians are kept")
    args = parser.parse_args()
    intervals = [float(x) for x in args.intervals.split(",") if x.strip()]
    home = Path(tempfile.mkdtemp(prefix="bench-api-"))
    manifest = write_objects(home / "buckets", args.tasks)
    server = start_server(home, free_port())
    try:
        runs = interleaved(server, manifest, args.callers, intervals, args.repeat)
    finally:
        stop_server(server)
    results = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "tasks": args.tasks,
        "callers": args.callers,
        "repeat": args.repeat,
        "runs": runs,
    }
    print_table(results)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
