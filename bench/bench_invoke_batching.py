"""Benchmark: LambdaInvoke with InvocationBatchSize 1, 10, 100 (an s3batch extension).

    .venv/bin/python bench/bench_invoke_batching.py [--objects 5000] [--sizes 1,10,100]
        [--workers 1] [--store folder|rclone]

One job per batch size over the same manifest of N keys. The function is cheap: it reads no
object and answers Succeeded for every task, stamping each result with its invocation's id and
its own start and end (CLOCK_MONOTONIC, shared by all processes), so the report tells how many
invocations there were and how long the function itself ran.

Per size it prints:
- tasks/s over the invocation span (first invocation's start → last one's end: the steady
  state, without the pool's start, the manifest read and the report write), and over the whole
  job (CreateJob → Complete), each with its speed-up over size 1;
- invocations and tasks per invocation (batches form from what is ready, so some are partial);
- per invocation: wall time (span × workers / invocations), the function's own time, and the
  difference, the per-call overhead of s3batch (event, pipe round trip, JSON, interpretation,
  engine). At size 1 that difference is the cost a batch spreads over its tasks.

`--store rclone` runs the same jobs against `rclone serve s3` (bench/servers.py), so the
manifest and report go over S3; the function still reads nothing. Results go to
bench/results/bench_invoke_batching.json.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from s3batch.client import S3Batch

BUCKET = "bench"
FUNCTION_ARN = "python:bench_invoke_handler:handler"
REPORT_PREFIX = "reports"
#: The function, written to a temporary module: one result per task, each carrying
#: "<invocationId> <start ns> <end ns>" of its invocation.
HANDLER = """
import time


def handler(event, context):
    start = time.monotonic_ns()
    tasks = event["tasks"]
    results = [{"taskId": t["taskId"], "resultCode": "Succeeded"} for t in tasks]
    end = time.monotonic_ns()
    stamp = f"{event['invocationId']} {start} {end}"
    for result in results:
        result["resultString"] = stamp
    return {
        "invocationSchemaVersion": event["invocationSchemaVersion"],
        "treatMissingKeysAs": "PermanentFailure",
        "invocationId": event["invocationId"],
        "results": results,
    }
"""


def manifest_body(n: int) -> bytes:
    return "".join(f"{BUCKET},data/{i:07d}.txt\n" for i in range(n)).encode()


@contextmanager
def folder_store(body: bytes) -> Iterator[tuple[str, Path]]:
    """A folder store holding the manifest; yields (storage URL, bucket folder)."""
    with tempfile.TemporaryDirectory(prefix="bench-invoke-") as root:
        bucket = Path(root) / BUCKET
        bucket.mkdir()
        (bucket / "manifest.csv").write_bytes(body)
        yield f"file://{root}", bucket


@contextmanager
def rclone_store(body: bytes) -> Iterator[tuple[str, Path]]:
    """`rclone serve s3` over a folder holding the manifest; yields (endpoint, bucket folder)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from servers import ACCESS_KEY, SECRET_KEY, rclone_server

    folder: list[Path] = []

    def prepare(data: Path) -> None:
        (data / BUCKET).mkdir()
        (data / BUCKET / "manifest.csv").write_bytes(body)
        folder.append(data / BUCKET)

    os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    with rclone_server(prepare) as (endpoint, _):
        yield endpoint, folder[0]


def run_job(batch: S3Batch, etag: str, size: int) -> tuple[str, float]:
    op: dict[str, Any] = {
        "FunctionArn": "python:bench_invoke_handler:handler",
        "InvocationSchemaVersion": "2.0",
    }
    if size > 1:
        op["InvocationBatchSize"] = size
    started = time.perf_counter()
    job_id = batch.create_job(
        Operation={"LambdaInvoke": op},
        Manifest={
            "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
            "Location": {"ObjectArn": f"arn:aws:s3:::{BUCKET}/manifest.csv", "ETag": etag},
        },
        Report={
            "Bucket": f"arn:aws:s3:::{BUCKET}",
            "Format": "Report_CSV_20180820",
            "Enabled": True,
            "Prefix": REPORT_PREFIX,
            "ReportScope": "AllTasks",
        },
        Priority=1,
    )["JobId"]
    batch.run_until_idle()
    wall = time.perf_counter() - started
    job = batch.describe_job(JobId=job_id)["Job"]
    if job["Status"] != "Complete" or job["ProgressSummary"]["NumberOfTasksFailed"]:
        raise RuntimeError(f"job {job_id} ended {job['Status']}: {job['ProgressSummary']}")
    return job_id, wall


def stamps(bucket: Path, job_id: str) -> dict[str, tuple[int, int, int]]:
    """invocationId → (start ns, end ns, tasks), from the job's completion report."""
    folder = bucket / REPORT_PREFIX / f"job-{job_id}"
    out: dict[str, tuple[int, int, int]] = {}
    for path in (folder / "results").glob("*.csv"):
        for row in csv.reader(io.StringIO(path.read_text(), newline="")):
            inv, start, end = row[6].split()
            tasks = out[inv][2] + 1 if inv in out else 1
            out[inv] = (int(start), int(end), tasks)
    return out


def measure(batch: S3Batch, bucket: Path, etag: str, n: int, size: int, workers: int) -> dict[str, float]:
    job_id, wall = run_job(batch, etag, size)
    calls = stamps(bucket, job_id)
    if sum(c[2] for c in calls.values()) != n:
        raise RuntimeError(f"report of job {job_id} does not hold {n} tasks")
    span_ns = max(c[1] for c in calls.values()) - min(c[0] for c in calls.values())
    own_us = statistics.fmean((c[1] - c[0]) / 1000 for c in calls.values())
    per_call_us = span_ns / 1000 * workers / len(calls)
    return {
        "size": size,
        "tasks_per_s_span": n / (span_ns / 1e9),
        "tasks_per_s_job": n / wall,
        "job_wall_s": wall,
        "invocations": len(calls),
        "tasks_per_invocation": n / len(calls),
        "wall_per_invocation_us": per_call_us,
        "function_own_us": own_us,
        "overhead_per_invocation_us": per_call_us - own_us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--sizes", default="1,10,100")
    parser.add_argument("--workers", type=int, default=1, help="function worker processes")
    parser.add_argument("--store", choices=("folder", "rclone"), default="folder")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    body = manifest_body(args.objects)
    etag = hashlib.md5(body).hexdigest()
    with tempfile.TemporaryDirectory(prefix="bench-invoke-handler-") as code:
        (Path(code) / "bench_invoke_handler.py").write_text(textwrap.dedent(HANDLER))
        sys.path.insert(0, code)  # handler processes start with this process's module path
        os.environ["S3BATCH_FUNCTION_WORKERS"] = str(args.workers)
        store = folder_store if args.store == "folder" else rclone_store
        with store(body) as (url, bucket), tempfile.TemporaryDirectory(prefix="bench-home-") as home:
            batch = S3Batch(home=home, storage=url, background=False)
            rows = [measure(batch, bucket, etag, args.objects, size, args.workers) for size in sizes]
    base = rows[0]
    print(f"LambdaInvoke, {args.objects} tasks, {args.workers} function worker(s), {args.store} store")
    print(f"{'size':>5} {'tasks/s':>9} {'x':>6} {'job t/s':>8} {'x':>6} {'calls':>6} "
          f"{'wall/call µs':>13} {'own µs':>7} {'overhead µs':>12}")  # fmt: skip
    for r in rows:
        speedup_span = r["tasks_per_s_span"] / base["tasks_per_s_span"]
        speedup_job = r["tasks_per_s_job"] / base["tasks_per_s_job"]
        print(
            f"{r['size']:>5} {r['tasks_per_s_span']:>9.0f} {speedup_span:>6.1f}"
            f" {r['tasks_per_s_job']:>8.0f} {speedup_job:>6.1f}"
            f" {r['invocations']:>6} {r['wall_per_invocation_us']:>13.0f} {r['function_own_us']:>7.0f}"
            f" {r['overhead_per_invocation_us']:>12.0f}"
        )
    out = Path(__file__).parent / "results" / "bench_invoke_batching.json"
    out.parent.mkdir(exist_ok=True)
    settings = {"objects": args.objects, "workers": args.workers, "store": args.store}
    out.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
