"""Benchmark: a job through the fault proxy (10 % SlowDown + 2 % resets) with adaptive concurrency.

    .venv/bin/python bench/bench_faults.py [--tasks 20000] [--server rclone|moto] [--concurrency 64]

- rclone (default): S3PutObjectCopy of N × 4 KiB objects into a second bucket (rclone serves
  only the plain data path; tagging there destroys objects);
- moto: S3PutObjectTagging on N objects (moto's server is bound at ~300 req/s).

The proxy (tests/faultproxy.py) faults only the tasks' calls (PUT under `data/` in the
destination/source bucket), so Preparing and the report write run clean. Prints the job's
outcome, retries, throttles, AIMD decreases/increases, the engine's limit over time, the
requests the server saw in flight, and throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from faultproxy import FaultPlan, FaultProxy
from s3batch.client import S3Batch
from s3batch.engines.limiter import LimitStats
from s3batch.engines.local import LocalEngine
from s3batch.retry import RetryPolicy
from s3batch.service.runner import JobRunner
from s3batch.store.sqlite import SqliteJobStore
from servers import ACCESS_KEY, SECRET_KEY, moto_server, rclone_server

SLOWDOWN_RATE, RESET_RATE = 0.10, 0.02
#: Attempts per task: 0.12**10 per task makes a failed task a one-in-a-billion event.
MAX_ATTEMPTS = 10
OBJECT_BYTES = 4096
SEED_THREADS = 32
SOURCE, DEST = "bench-src", "bench-dst"
#: Rows of the "limit over time" table.
TIMELINE_ROWS = 20


def client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(max_pool_connections=SEED_THREADS, retries={"max_attempts": 10}),
    )


def seed(s3: Any, keys: list[str]) -> None:
    for bucket in (SOURCE, DEST):
        s3.create_bucket(Bucket=bucket)
    body = b"x" * OBJECT_BYTES
    with ThreadPoolExecutor(SEED_THREADS) as pool:
        list(pool.map(lambda k: s3.put_object(Bucket=SOURCE, Key=k, Body=body), keys))
    manifest = "".join(f"{SOURCE},{k}\n" for k in keys).encode()
    s3.put_object(Bucket=SOURCE, Key="manifest.csv", Body=manifest)


def run_job(proxy: FaultProxy, s3: Any, server: str, engine: LocalEngine, home: Path) -> dict[str, Any]:
    etag = s3.head_object(Bucket=SOURCE, Key="manifest.csv")["ETag"]
    if server == "rclone":
        operation: dict[str, Any] = {"S3PutObjectCopy": {"TargetResource": f"arn:aws:s3:::{DEST}"}}
    else:
        operation = {"S3PutObjectTagging": {"TagSet": [{"Key": "bench", "Value": "faults"}]}}
    batch = S3Batch(home=home, storage=proxy.url, background=False)
    job_id = batch.create_job(
        Operation=operation,
        Manifest={
            "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
            "Location": {"ObjectArn": f"arn:aws:s3:::{SOURCE}/manifest.csv", "ETag": etag},
        },
        Report={"Bucket": f"arn:aws:s3:::{SOURCE}", "Format": "Report_CSV_20180820", "Enabled": True,
                "Prefix": "reports", "ReportScope": "FailedTasksOnly"},
        Priority=10,
        ConfirmationRequired=False,
    )["JobId"]  # fmt: skip

    async def drive() -> None:
        store = SqliteJobStore(batch.settings.db_path)
        try:
            await JobRunner(store, engine, 1, home / "spool").drive(job_id)
        finally:
            await store.close()

    asyncio.run(drive())
    job: dict[str, Any] = batch.describe_job(JobId=job_id)["Job"]
    return job


def print_timeline(stats: LimitStats) -> None:
    """The engine's limit and requests in flight at evenly spaced moments of the run."""
    samples = stats.samples
    if not samples:
        return
    end = samples[-1].t
    print(f"{'t (s)':>8} {'limit':>6} {'in flight':>10}")
    for i in range(TIMELINE_ROWS + 1):
        t = end * i / TIMELINE_ROWS
        s = max((x for x in samples if x.t <= t), key=lambda x: x.t, default=samples[0])
        print(f"{t:8.2f} {s.limit:6d} {s.in_flight:10d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--server", choices=["rclone", "moto"], default="rclone")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_REGION="us-east-1")
    keys = [f"data/{i:06d}.bin" for i in range(args.tasks)]
    faulted = f"/{DEST if args.server == 'rclone' else SOURCE}/data/"
    plan = FaultPlan(
        slowdown=SLOWDOWN_RATE,
        reset=RESET_RATE,
        seed=args.seed,
        methods=frozenset({"PUT"}),
        path_prefix=faulted,
    )
    start_server = rclone_server if args.server == "rclone" else moto_server
    with start_server() as (endpoint, _), tempfile.TemporaryDirectory() as home:
        s3 = client(endpoint)
        t0 = time.monotonic()
        seed(s3, keys)
        print(f"seeded {args.tasks} objects on {args.server} in {time.monotonic() - t0:.1f} s")
        engine = LocalEngine(args.concurrency, RetryPolicy(max_attempts=MAX_ATTEMPTS))
        with FaultProxy(endpoint, plan) as proxy:
            t0 = time.monotonic()
            job = run_job(proxy, s3, args.server, engine, Path(home))
            elapsed = time.monotonic() - t0
        report(job, engine.stats, proxy, elapsed, args.tasks)


def report(job: dict[str, Any], stats: LimitStats, proxy: FaultProxy, elapsed: float, tasks: int) -> None:
    progress = job["ProgressSummary"]
    print(f"job {job['Status']}: {progress['NumberOfTasksSucceeded']} succeeded, "
          f"{progress['NumberOfTasksFailed']} failed of {tasks}")  # fmt: skip
    print(f"injected: {dict(proxy.stats.injected)}; requests through the proxy: {proxy.stats.requests}")
    print(f"engine: retries {stats.retries}, throttles {stats.throttles}, "
          f"decreases {stats.decreases}, increases {stats.increases}, "
          f"limit min {stats.min_limit} / max in flight {stats.max_in_flight}")  # fmt: skip
    print(f"server saw at most {proxy.stats.max_in_flight} requests in flight")
    print(f"throughput: {tasks / elapsed:.0f} tasks/s ({elapsed:.1f} s, whole job incl. Preparing + report)")
    print_timeline(stats)


if __name__ == "__main__":
    main()
