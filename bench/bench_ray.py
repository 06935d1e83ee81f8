"""Benchmark: the Ray engine against the process engine on one machine, and the driver's cost.

    .venv/bin/python bench/bench_ray.py [--invoke-tasks 6000] [--copy-objects 8000] [--workers 2]
        [--runs 3] [--only invoke|copy] [--out bench/results/bench_ray.json]

Two workloads, each run with the process engine (S3BATCH_ENGINE=process, `--workers`
processes) and the Ray engine (`--workers` actors on its private cluster), jobs driven in this
process as a worker drives them:
- invoke: LambdaInvoke of a CPU-bound function (~2 ms of CPU per task, a busy loop on the
  thread's CPU clock), one function worker per process / actor; the manifest lives in a folder.
- copy: S3PutObjectCopy of small objects on `rclone serve s3` (bench/servers.py).

Two Ray rows: `ray` runs on the actors the previous job kept (engines/ray_pool.py: what a worker
that drives job after job gets), `ray-cold` starts its actors inside the timed job (the first
job of a worker). Per run it prints tasks/s over the whole Active phase (CreateJob → Complete,
including each engine's start of its processes / actors) and in steady state (first result → last result),
the ratio ray / process (the goal is ≥ 0.9), and the driver's CPU per recorded task
(resource.getrusage of this process: the runner, the job store's writes, the engine's driver
side; not the actors' or workers' processes) with the tasks/s ceiling it implies for one
driver core. The Ray cluster is started once, by a warm-up job, before anything is timed.
Each engine runs `--runs` jobs per workload, alternating which goes first (other load on the
machine drifts); the medians are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from s3batch.client import S3Batch
from s3batch.domain.task import Task
from s3batch.engines.base import Engine, Finished
from s3batch.engines.process import ProcessEngine
from s3batch.engines.ray import RayEngine
from s3batch.engines.ray_pool import POOL
from s3batch.operations.base import JobContext
from s3batch.retry import RetryPolicy
from s3batch.service.runner import JobRunner
from s3batch.store.sqlite import SqliteJobStore
from servers import ACCESS_KEY, SECRET_KEY, rclone_server

BUCKET = "bench"
#: Seconds of CPU the function burns per task.
FUNCTION_CPU_S = 0.002
FUNCTION_MODULE = "bench_ray_handler"
HANDLER = f"""
import time


def handler(event, context):
    task = event["tasks"][0]
    end = time.thread_time() + {FUNCTION_CPU_S}
    while time.thread_time() < end:
        pass
    return {{
        "invocationSchemaVersion": event["invocationSchemaVersion"],
        "treatMissingKeysAs": "PermanentFailure",
        "invocationId": event["invocationId"],
        "results": [{{"taskId": task["taskId"], "resultCode": "Succeeded", "resultString": "ok"}}],
    }}
"""
#: Requests in flight per process engine worker; the Ray engine's cluster-wide limit is this
#: times the workers, so both may have as many requests in flight.
CONCURRENCY = 64
#: Tasks of the warm-up job that starts the Ray cluster.
WARMUP_TASKS = 200
DEFAULT_INVOKE_TASKS = 6000
DEFAULT_COPY_OBJECTS = 8000
DEFAULT_WORKERS = 2
#: Jobs per engine and workload; the median is reported.
DEFAULT_RUNS = 3
RATIO_GOAL = 0.9


class Timed:
    """Wraps an engine: when the first and last results came back, and this process's CPU then."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.first_t = self.last_t = self.first_cpu = self.last_cpu = 0.0
        self.first_n = self.total = 0

    async def run(
        self, job: JobContext, operation: Mapping[str, Any], tasks: AsyncIterator[Task]
    ) -> AsyncIterator[Finished]:
        async for group in self.engine.run(job, operation, tasks):
            now, cpu = time.perf_counter(), cpu_s()
            if not self.total:
                self.first_t, self.first_cpu, self.first_n = now, cpu, len(group)
            self.last_t, self.last_cpu = now, cpu
            self.total += len(group)
            yield group

    def steady(self) -> dict[str, float | None]:
        """Rates between the first and the last result (fixed start-up costs left out)."""
        tasks, span, cpu = (
            self.total - self.first_n,
            self.last_t - self.first_t,
            self.last_cpu - self.first_cpu,
        )
        if tasks <= 0 or span <= 0:
            return {
                "steady_tasks_per_s": None,
                "driver_cpu_us_per_task": None,
                "driver_ceiling_tasks_per_s": None,
            }
        return {
            "steady_tasks_per_s": round(tasks / span, 1),
            "driver_cpu_us_per_task": round(cpu / tasks * 1e6, 1),
            "driver_ceiling_tasks_per_s": round(tasks / cpu) if cpu > 0 else None,
        }


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def drive(batch: S3Batch, job_id: str, engine: Engine, workers: int) -> dict[str, Any]:
    timed = Timed(engine)

    async def go() -> None:
        store = SqliteJobStore(batch.settings.db_path)
        try:
            await JobRunner(store, timed, workers, batch.settings.home / "spool").drive(job_id)
        finally:
            await store.close()

    cpu0, t0 = cpu_s(), time.perf_counter()
    asyncio.run(go())
    wall, cpu = time.perf_counter() - t0, cpu_s() - cpu0
    job = batch.describe_job(JobId=job_id)["Job"]
    done = job["ProgressSummary"]["NumberOfTasksSucceeded"]
    if job["Status"] != "Complete" or done != timed.total:
        reasons = job.get("FailureReasons")
        raise RuntimeError(f"job {job_id}: {job['Status']}, {done} of {timed.total} succeeded; {reasons}")
    return {
        "tasks": done,
        "wall_s": round(wall, 3),
        "tasks_per_s": round(done / wall, 1),
        "driver_cpu_s": round(cpu, 3),
        **timed.steady(),
    }


def manifest_body(keys: int) -> bytes:
    return "".join(f"{BUCKET},data/{i:07d}\n" for i in range(keys)).encode()


def write_manifests(bucket_dir: Path, *sizes: int) -> None:
    """Manifests over data/0000000.. into the bucket's folder, before the store serves it
    (rclone serve s3 caches what it listed: files added later stay unseen for minutes)."""
    (bucket_dir / "manifests").mkdir(parents=True, exist_ok=True)
    for keys in sizes:
        (bucket_dir / "manifests" / f"{keys}.csv").write_bytes(manifest_body(keys))


def create(batch: S3Batch, operation: dict[str, Any], keys: int) -> str:
    body = manifest_body(keys)
    job_id: str = batch.create_job(
        Operation=operation,
        Manifest={
            "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
            "Location": {
                "ObjectArn": f"arn:aws:s3:::{BUCKET}/manifests/{keys}.csv",
                "ETag": hashlib.md5(body).hexdigest(),
            },
        },
        Report={"Enabled": False},
        Priority=10,
        ConfirmationRequired=False,
    )["JobId"]
    return job_id


class ColdRay:
    """The Ray engine with no actor kept from an earlier job: each starts inside the timed job."""

    def __init__(self, engine: RayEngine) -> None:
        self.engine = engine

    async def run(
        self, job: JobContext, operation: Mapping[str, Any], tasks: AsyncIterator[Task]
    ) -> AsyncIterator[Finished]:
        import ray

        POOL.clear(lambda handle: ray.kill(handle, no_restart=True))
        async for group in self.engine.run(job, operation, tasks):
            yield group


def engines(workers: int) -> dict[str, Engine]:
    """Both engines with the same requests in flight: the process engine's limit is per process,
    the Ray engine's is one for the whole cluster (docs/ray.md)."""
    retry, cluster_wide = RetryPolicy(), CONCURRENCY * workers
    return {
        "process": ProcessEngine(workers, CONCURRENCY, retry),
        "ray": RayEngine(None, workers, cluster_wide, retry),
        "ray-cold": ColdRay(RayEngine(None, workers, cluster_wide, retry)),
    }


@contextmanager
def handler_on_path() -> Iterator[None]:
    with tempfile.TemporaryDirectory(prefix="bench-ray-handler-") as folder:
        (Path(folder) / f"{FUNCTION_MODULE}.py").write_text(HANDLER)
        sys.path.insert(0, folder)
        os.environ["PYTHONPATH"] = folder
        try:
            yield
        finally:
            sys.path.remove(folder)
            os.environ.pop("PYTHONPATH", None)


def bench_invoke(home: Path, tasks: int, workers: int, runs: int) -> dict[str, Any]:
    operation = {"LambdaInvoke": {"FunctionArn": f"python:{FUNCTION_MODULE}:handler"}}
    with tempfile.TemporaryDirectory(prefix="bench-ray-folder-") as root:
        (Path(root) / BUCKET).mkdir()
        batch = S3Batch(home=home / "invoke", storage=f"file://{root}", background=False)
        write_manifests(Path(root) / BUCKET, tasks, warmup(tasks))
        with handler_on_path():
            return compare(batch, operation, tasks, workers, runs)


def bench_copy(home: Path, objects: int, workers: int, runs: int) -> dict[str, Any]:
    def lay_out(data: Path) -> None:
        write_manifests(data / BUCKET, objects, warmup(objects))
        folder = data / BUCKET / "data"
        folder.mkdir(parents=True)
        for i in range(objects):
            (folder / f"{i:07d}").write_bytes(b"x" * 1024)

    os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    os.environ.setdefault("AWS_REGION", "us-east-1")
    with rclone_server(lay_out) as (endpoint, _):
        batch = S3Batch(home=home / "copy", storage=endpoint, background=False)
        operation = {
            "S3PutObjectCopy": {"TargetResource": f"arn:aws:s3:::{BUCKET}", "TargetKeyPrefix": "copy"}
        }
        return compare(batch, operation, objects, workers, runs)


def warmup(tasks: int) -> int:
    return min(WARMUP_TASKS, tasks - 1)


def _median_run(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(rows, key=lambda row: float(row["tasks_per_s"]))
    return ordered[(len(ordered) - 1) // 2]


def compare(batch: S3Batch, operation: dict[str, Any], tasks: int, workers: int, runs: int) -> dict[str, Any]:
    """`runs` jobs per engine, alternating which goes first (the machine's load drifts); the
    median run of each (by tasks/s over the whole job) and their ratio."""
    pool = engines(workers)
    # The private cluster starts here, untimed (a worker keeps it for its life); so do the imports.
    drive(batch, create(batch, operation, warmup(tasks)), pool["ray"], workers)
    measured: dict[str, list[dict[str, Any]]] = {name: [] for name in pool}
    for run in range(runs):
        for name in sorted(pool, reverse=run % 2 == 1):  # ray-cold right after ray: no idle actor helps it
            measured[name].append(drive(batch, create(batch, operation, tasks), pool[name], workers))
            print(f"  {name:8s} {json.dumps(measured[name][-1])}", flush=True)
    median = {name: _median_run(rows) for name, rows in measured.items()}
    ratios = {}
    for name in ("ray", "ray-cold"):
        ratios[name] = round(median[name]["tasks_per_s"] / median["process"]["tasks_per_s"], 3)
        print(f"  {name}/process, medians of {runs}: {ratios[name]:.2f} tasks/s (goal >= {RATIO_GOAL})")
    return {"median": median, "ratio": ratios["ray"], "ratio_cold": ratios["ray-cold"], "runs": measured}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--invoke-tasks", type=int, default=DEFAULT_INVOKE_TASKS)
    parser.add_argument("--copy-objects", type=int, default=DEFAULT_COPY_OBJECTS)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS)
    parser.add_argument("--only", choices=("invoke", "copy"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/bench_ray.json"))
    args = parser.parse_args()
    results: dict[str, Any] = {"cpus": os.cpu_count(), "workers": args.workers, "concurrency": CONCURRENCY}
    with tempfile.TemporaryDirectory(prefix="bench-ray-home-") as home:
        if args.only in (None, "invoke"):
            print(f"invoke: {args.invoke_tasks} tasks, {FUNCTION_CPU_S * 1000:.0f} ms CPU each", flush=True)
            results["invoke"] = bench_invoke(Path(home), args.invoke_tasks, args.workers, args.runs)
        if args.only in (None, "copy"):
            print(f"copy: {args.copy_objects} objects of 1 KiB on rclone serve s3", flush=True)
            results["copy"] = bench_copy(Path(home), args.copy_objects, args.workers, args.runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
