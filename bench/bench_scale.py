"""Benchmark: scale and engine overhead with a no-op operation.

    .venv/bin/python bench/bench_scale.py                 # 10,000,000-line manifest
    .venv/bin/python bench/bench_scale.py --quick         # 1,000,000 lines
    .venv/bin/python bench/bench_scale.py --lines 200000 --profile prof.out
    .venv/bin/python bench/bench_scale.py --only-latency  # create-job → first task only

Writes the manifest straight into a local-folder store (no object files: the operation touches
nothing), runs the job in this process with a benchmark-only no-op operation, and prints
tasks/s (whole job and Active phase), CPU time, peak RSS, job-store growth per task, and the
create-job → first-result-recorded latency for a 1,000-line manifest (median of 5).

The no-op operation is registered here only, at runtime, by adding a module to sys.modules
and its name to `s3batch.operations._MODULES`; it is never part of the public operation set.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import resource
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import s3batch.operations as operations
from s3batch.client import S3Batch
from s3batch.domain.task import Task, TaskResult
from s3batch.operations.actions import Permissions, no_extra_needs
from s3batch.operations.base import UNBATCHED, NoProbe, Operation, OperationContext, OperationKind
from s3batch.service.runner import JobRunner
from s3batch.settings import Settings
from s3batch.store.sqlite import SqliteJobStore

NOOP_NAME = "BenchNoop"
NOOP_MODULE = "s3batch_bench_noop"
BUCKET = "bench"
#: Manifest bytes written per write() call while generating.
WRITE_BATCH_LINES = 100_000
#: Manifest size of the latency measurement, and how many runs its median is over.
LATENCY_LINES = 1000
LATENCY_RUNS = 5
DEFAULT_LINES = 10_000_000
QUICK_LINES = 1_000_000
KIB = 1024
MIB = 1024 * 1024

_OK = TaskResult.ok()


class _Noop(Operation):
    name = NOOP_NAME

    async def apply(self, task: Task) -> TaskResult:
        return _OK


def _validate(params: Mapping[str, Any]) -> None:
    return None


def _create(params: Mapping[str, Any], ctx: OperationContext) -> Operation:
    return _Noop()


def _no_requests(params: Mapping[str, Any], tasks: int, buckets: int) -> dict[str, int]:
    return {}


def register_noop() -> None:
    """Make `BenchNoop` resolvable by `operations.get_kind` for this process only."""
    module = types.ModuleType(NOOP_MODULE)
    module.KIND = OperationKind(  # type: ignore[attr-defined]
        name=NOOP_NAME,
        validate=_validate,
        permissions=Permissions(object_actions=(), bucket_actions=(), extra=no_extra_needs),
        requests=_no_requests,
        probe=NoProbe.PLAIN_DATA_PATH,
        batch_size=UNBATCHED,
        create=_create,
    )
    sys.modules[NOOP_MODULE] = module
    # CreateJob's operation names and every lookup read the registry.
    operations._MODULES[NOOP_NAME] = NOOP_MODULE
    # get_kind checks find_spec(module), which consults sys.modules first; ModuleType has no
    # __spec__, so give it one.
    from importlib.machinery import ModuleSpec

    module.__spec__ = ModuleSpec(NOOP_MODULE, None)


def write_manifest(root: Path, key: str, lines: int) -> str:
    """Stream `lines` rows into root/BUCKET/key; returns the MD5 (the local store's ETag)."""
    path = root / BUCKET / key
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("wb") as f:
        for start in range(0, lines, WRITE_BATCH_LINES):
            stop = min(lines, start + WRITE_BATCH_LINES)
            body = "".join(f"{BUCKET},data/{i:09d}.bin\n" for i in range(start, stop)).encode()
            digest.update(body)
            f.write(body)
    return digest.hexdigest()


def request(key: str, etag: str, report: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "Operation": {NOOP_NAME: {}},
        "Manifest": {
            "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
            "Location": {"ObjectArn": f"arn:aws:s3:::{BUCKET}/{key}", "ETag": etag},
        },
        "Report": {"Enabled": False},
        "Priority": 1,
        "ConfirmationRequired": False,
    }
    if report:
        out["Report"] = {
            "Enabled": True,
            "Bucket": f"arn:aws:s3:::{BUCKET}",
            "Prefix": "reports",
            "Format": "Report_CSV_20180820",
            "ReportScope": "AllTasks",
        }
    return out


def store_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())


class PhaseClock:
    """Times Preparing and Active by wrapping the runner's steps (benchmark-only patch)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.first_record: float | None = None
        self._orig: list[tuple[type, str, Any]] = []

    def __enter__(self) -> PhaseClock:
        self._wrap(JobRunner, "_prepare", "prepare")
        self._wrap(JobRunner, "_execute", "active")
        self._on_first_write()
        return self

    def _on_first_write(self) -> None:
        """A first result is durable when the first JobStore.record returns."""
        orig = SqliteJobStore.record
        clock = self

        async def written(store: SqliteJobStore, *args: Any) -> Any:
            out = await orig(store, *args)
            if clock.first_record is None:
                clock.first_record = time.perf_counter()
            return out

        self._orig.append((SqliteJobStore, "record", orig))
        SqliteJobStore.record = written

    def _wrap(self, cls: type, name: str, label: str) -> None:
        orig = getattr(cls, name)
        seconds = self.seconds

        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await orig(*args, **kwargs)
            finally:
                seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - t0

        self._orig.append((cls, name, orig))
        setattr(cls, name, timed)

    def __exit__(self, *exc: object) -> None:
        for cls, name, orig in reversed(self._orig):
            setattr(cls, name, orig)


def scale_run(lines: int, report: bool, profile: str | None) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    settings = Settings.from_env()
    from dataclasses import replace

    settings = replace(settings, home=home)
    batch = S3Batch(settings=settings, background=False)
    root = settings.buckets_root
    t0 = time.perf_counter()
    etag = write_manifest(root, "manifest.csv", lines)
    gen_s = time.perf_counter() - t0
    job_id = batch.create_job(**request("manifest.csv", etag, report))["JobId"]
    before = store_bytes(settings.db_path)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with PhaseClock() as clock:
        run: Callable[[], int] = batch.run_until_idle
        if profile:
            prof = cProfile.Profile()
            prof.runcall(run)
            prof.dump_stats(profile)
        else:
            run()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    after = store_bytes(settings.db_path)
    job = batch.describe_job(JobId=job_id)["Job"]
    progress = job["ProgressSummary"]
    assert job["Status"] == "Complete", job
    assert progress["NumberOfTasksSucceeded"] == lines, progress
    active = clock.seconds.get("active", float("nan"))
    return {
        "lines": lines,
        "manifest_gen_s": round(gen_s, 2),
        "job_wall_s": round(wall, 2),
        "job_cpu_s": round(cpu, 2),
        "prepare_s": round(clock.seconds.get("prepare", float("nan")), 2),
        "active_s": round(active, 2),
        "tasks_per_s": round(lines / wall),
        # Robust to a loaded machine: tasks per second of this process's CPU (all threads).
        "tasks_per_cpu_s": round(lines / cpu),
        "active_tasks_per_s": round(lines / active),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KIB / MIB, 1),
        "store_bytes_before": before,
        "store_bytes_after": after,
        "store_bytes_per_task": round((after - before) / lines, 1),
    }


def latency_run() -> float:
    """Seconds from create_job to the first task result recorded, for LATENCY_LINES tasks."""
    home = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    from dataclasses import replace

    settings = replace(Settings.from_env(), home=home)
    batch = S3Batch(settings=settings, background=False)
    etag = write_manifest(settings.buckets_root, "small.csv", LATENCY_LINES)
    with PhaseClock() as clock:
        t0 = time.perf_counter()
        batch.create_job(**request("small.csv", etag, report=False))
        batch.run_until_idle()
    assert clock.first_record is not None
    return clock.first_record - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--lines", type=int, default=DEFAULT_LINES)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_LINES:,} lines")
    parser.add_argument("--report", action="store_true", help="also write the completion report")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the job run into FILE")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--only-latency", action="store_true", help="just the create-job → first-task timing")
    args = parser.parse_args()
    register_noop()
    lines = QUICK_LINES if args.quick else args.lines
    out = {} if args.only_latency else scale_run(lines, args.report, args.profile)
    if not args.skip_latency:
        runs = [latency_run() for _ in range(LATENCY_RUNS)]
        out["first_task_ms_median"] = round(statistics.median(runs) * 1000, 1)
        out["first_task_ms_runs"] = [round(r * 1000, 1) for r in runs]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
