"""Benchmark: s3batch vs a boto3 ThreadPool(64) on the same local servers, in one run.

    .venv/bin/python bench/bench_core.py [--objects 5000] [--runs 3]

- copy N × 4 KiB objects on `rclone serve s3` (plain data path only: rclone answers tagging
  calls by destroying objects: see "Test servers" in README.md);
- put tagging on N objects on moto's server (server-bound at ~300 req/s: compare client CPU).

Prints objects/s and client CPU-ms per object (medians of --runs), and the ratios; writes
bench/results/bench_core.json. Client CPU is this process's CPU time (all threads); each
server runs in its own process and is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from s3batch.client import S3Batch
from servers import ACCESS_KEY, SECRET_KEY, moto_server, rclone_server

#: Object size for the copy workload, in bytes.
OBJECT_BYTES = 4096
#: Threads of the boto3 peer (the figure users tune to in practice).
BOTO3_THREADS = 64


def boto3_client(endpoint: str) -> Any:
    config = Config(
        max_pool_connections=BOTO3_THREADS,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client("s3", endpoint_url=endpoint, config=config, region_name="us-east-1")


def seed(client: Any, bucket: str, n: int) -> list[str]:
    client.create_bucket(Bucket=bucket)
    keys = [f"data/{i:06d}.bin" for i in range(n)]
    body = os.urandom(OBJECT_BYTES)
    with ThreadPoolExecutor(BOTO3_THREADS) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=body), keys))
    return keys


def measure(fn: Callable[[], None]) -> tuple[float, float]:
    wall0, cpu0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall0, time.process_time() - cpu0


def s3batch_job(
    endpoint: str,
    client: Any,
    bucket: str,
    keys: list[str],
    op: dict[str, Any],
    report: dict[str, Any] | None = None,
) -> Callable[[], None]:
    """A timed runner for one whole job (CreateJob → Complete); `report` is the job's Report
    (None: the completion report is off)."""
    body = "".join(f"{bucket},{k}\n" for k in keys).encode()
    key = f"manifest-{time.time_ns()}.csv"
    etag = client.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"')
    home = tempfile.mkdtemp(prefix="bench-home-")
    batch = S3Batch(home=home, endpoint_url=endpoint, background=False)
    request = {
        "Operation": op,
        "Manifest": {
            "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
            "Location": {"ObjectArn": f"arn:aws:s3:::{bucket}/{key}", "ETag": etag},
        },
        "Report": report or {"Enabled": False},
        "Priority": 1,
    }

    def run() -> None:
        job_id = batch.create_job(**request)["JobId"]
        batch.run_until_idle()
        job = batch.describe_job(JobId=job_id)["Job"]
        ok = job["ProgressSummary"]["NumberOfTasksSucceeded"]
        if job["Status"] != "Complete" or ok != len(keys):
            raise RuntimeError(f"s3batch job ended {job['Status']} with {ok}/{len(keys)} succeeded")

    return run


def copy_one(client: Any, bucket: str, key: str, prefix: str) -> None:
    client.copy_object(Bucket=bucket, Key=f"{prefix}/{key}", CopySource={"Bucket": bucket, "Key": key})


def boto3_copy(client: Any, bucket: str, keys: list[str], prefix: str) -> Callable[[], None]:
    def run() -> None:
        with ThreadPoolExecutor(BOTO3_THREADS) as pool:
            list(pool.map(lambda k: copy_one(client, bucket, k, prefix), keys))

    return run


def boto3_tag(client: Any, bucket: str, keys: list[str]) -> Callable[[], None]:
    tagging = {"TagSet": [{"Key": "bench", "Value": "boto3"}]}

    def run() -> None:
        with ThreadPoolExecutor(BOTO3_THREADS) as pool:
            list(pool.map(lambda k: client.put_object_tagging(Bucket=bucket, Key=k, Tagging=tagging), keys))

    return run


def medians(fn_factory: Callable[[int], Callable[[], None]], runs: int, n: int) -> dict[str, float]:
    samples = [measure(fn_factory(i)) for i in range(runs)]
    wall = statistics.median(s[0] for s in samples)
    cpu = statistics.median(s[1] for s in samples)
    return {"obj_per_s": n / wall, "cpu_ms_per_obj": 1000 * cpu / n, "wall_s": wall}


def copy_op(i: int) -> dict[str, Any]:
    return {"S3PutObjectCopy": {"TargetResource": "arn:aws:s3:::src", "TargetKeyPrefix": f"s3batch-{i}"}}


def copy_workload(n: int, runs: int) -> dict[str, dict[str, float]]:
    with rclone_server() as (endpoint, _):
        os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
        client = boto3_client(endpoint)
        keys = seed(client, "src", n)
        return {
            "s3batch": medians(lambda i: s3batch_job(endpoint, client, "src", keys, copy_op(i)), runs, n),
            "boto3 ThreadPool(64)": medians(lambda i: boto3_copy(client, "src", keys, f"boto3-{i}"), runs, n),
        }


def tag_workload(n: int, runs: int) -> dict[str, dict[str, float]]:
    with moto_server() as (endpoint, _):
        os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
        client = boto3_client(endpoint)
        keys = seed(client, "tags", n)
        op = {"S3PutObjectTagging": {"TagSet": [{"Key": "bench", "Value": "s3batch"}]}}
        return {
            "s3batch": medians(lambda i: s3batch_job(endpoint, client, "tags", keys, op), runs, n),
            "boto3 ThreadPool(64)": medians(lambda i: boto3_tag(client, "tags", keys), runs, n),
        }


def print_table(
    title: str, rows: dict[str, dict[str, float]], base_name: str = "boto3 ThreadPool(64)"
) -> None:
    """Rows with objects/s, CPU-ms per object and both as ratios to `base_name`'s row (the
    first row when that one was not run). Nothing when no client of the table ran (--only)."""
    if not rows:
        return
    base_name = base_name if base_name in rows else next(iter(rows))
    base = rows[base_name]
    # A long base name ("s3batch, report off") is cut at its comma in the headers, and named in full.
    vs = f"vs {base_name.split(',')[0]}"[:16]
    print(f"\n{title}" + (f" (ratios against {base_name!r})" if "," in base_name else ""))
    print(f"{'client':<34}{'obj/s':>9}{'CPU ms/obj':>12}{'obj/s ' + vs:>24}{'CPU ' + vs:>22}")
    for name, r in rows.items():
        rate = f"{r['obj_per_s']:,.0f}" if r["obj_per_s"] >= 100 else f"{r['obj_per_s']:.2f}"
        print(
            f"{name:<34}{rate:>9}{r['cpu_ms_per_obj']:>12.3f}"
            f"{r['obj_per_s'] / base['obj_per_s']:>23.2f}x"
            f"{r['cpu_ms_per_obj'] / base['cpu_ms_per_obj']:>21.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("AWS_REGION", "us-east-1")
    results = {
        "copy_rclone": copy_workload(args.objects, args.runs),
        "tag_moto": tag_workload(args.objects, args.runs),
        "objects": args.objects,
        "runs": args.runs,
    }
    print_table(
        f"copy {args.objects} x 4 KiB on rclone serve s3 (medians of {args.runs})",
        results["copy_rclone"],
    )
    print_table(
        f"put tagging on {args.objects} objects on moto (medians of {args.runs})",
        results["tag_moto"],
    )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_core.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
