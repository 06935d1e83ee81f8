"""`create-job --dry-run`: everything a job would do, changing nothing.

It validates the request, reads the manifest (or materializes an inventory / runs the generator
with every filter, into a throw-away spool), HEADs the objects to learn their sizes and which
are missing (all of them up to HEAD_ALL_LIMIT; beyond that a deterministic random sample of
SAMPLE_SIZE, extrapolated), and prices the job: the operation kind counts its requests
(`OperationKind.requests`), domain.pricing holds the prices. The duration estimate uses
the throughput of the most recent finished job with the same operation in this S3BATCH_HOME, or
a documented assumption when there is none.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from s3batch.domain.job import Job, JobStatus
from s3batch.domain.manifest import CsvManifestParser
from s3batch.domain.pricing import CostEstimate, job_requests, price
from s3batch.domain.task import Task
from s3batch.errors import StorageError
from s3batch.operations import kind_of
from s3batch.service.jobs import JobService, validated
from s3batch.service.manifest_source import ManifestSource
from s3batch.service.manifests import SPOOL_BUCKET, materialize, needs_materializing, spool_key
from s3batch.storage.capabilities import StorageAdapter
from s3batch.storage.config import LocalConfig, StorageConfig, open_store

#: Manifests up to this many tasks get every object HEADed; larger ones a sample.
HEAD_ALL_LIMIT = 10_000
SAMPLE_SIZE = 1_000
#: HEAD requests in flight.
HEAD_CONCURRENCY = 32
#: Objects per second assumed when no finished job measured this machine's throughput.
ASSUMED_OBJECTS_PER_S = 500.0
#: A past job must have run this long for its rate to count as a measurement, in seconds.
MIN_MEASURED_ACTIVE_S = 1.0


@dataclass(slots=True)
class _Scan:
    tasks: int = 0
    buckets: set[str] = field(default_factory=set)
    sample: list[Task] = field(default_factory=list)


async def dry_run(
    service: JobService,
    request: Mapping[str, Any],
    *,
    storage: StorageConfig,
    account_id: str | None = None,
    functions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    normalized = validated(request)
    job = service.new_job(normalized, request, storage, account_id, functions)
    job = job.evolve(job_id=f"dry-run-{uuid.uuid4()}")
    objects = open_store(storage)
    try:
        with tempfile.TemporaryDirectory(prefix="s3batch-dry-run-") as tmp:
            scan = await _scan(job, objects, open_store(LocalConfig(root=tmp)))
        sizes, missing = await _head_sample(objects, scan.sample)
    finally:
        await objects.close()
    return await _summary(service, job, scan, sizes, missing)


async def _scan(job: Job, objects: StorageAdapter, spool: StorageAdapter) -> _Scan:
    if needs_materializing(job.spec):
        await spool.create_bucket(SPOOL_BUCKET)
        await materialize(job, objects, spool)
        info = await spool.head(SPOOL_BUCKET, spool_key(job.job_id))
        job = job.evolve(extra={**job.extra, "materialized": {"etag": info.etag}})
    source = await ManifestSource.open(job, objects, spool)
    parser = CsvManifestParser(source.layout)
    scan, rng = _Scan(), random.Random(0)  # fixed seed: the same manifest gives the same sample
    limit = HEAD_ALL_LIMIT
    async for tasks in source.tasks(parser, 0, 1, 0):
        for task in tasks:
            scan.tasks += 1
            scan.buckets.add(task.bucket)
            _reservoir(scan, task, rng, limit if scan.tasks <= limit else SAMPLE_SIZE)
    return scan


def _reservoir(scan: _Scan, task: Task, rng: random.Random, size: int) -> None:
    """Keep every task until the limit, then a uniform random sample (memory stays flat)."""
    if len(scan.sample) > size:
        scan.sample = rng.sample(scan.sample, size)
    if len(scan.sample) < size:
        scan.sample.append(task)
    elif (slot := rng.randrange(scan.tasks)) < size:
        scan.sample[slot] = task


async def _head_sample(objects: StorageAdapter, sample: list[Task]) -> tuple[list[int], int]:
    gate = asyncio.Semaphore(HEAD_CONCURRENCY)

    async def size(task: Task) -> int | None:
        async with gate:
            try:
                return (await objects.head(task.bucket, task.key, task.version_id)).size
            except StorageError:
                return None

    results = await asyncio.gather(*(size(t) for t in sample))
    return [r for r in results if r is not None], sum(1 for r in results if r is None)


async def _summary(
    service: JobService, job: Job, scan: _Scan, sizes: list[int], missing: int
) -> dict[str, Any]:
    scale = scan.tasks / len(scan.sample) if scan.sample else 0.0
    rate, source = await _throughput(service, job.operation_name)
    operation = job.spec.operation
    cost = estimate(operation.name, operation.params, scan.tasks, len(scan.buckets))
    return {
        "Operation": job.operation_name,
        "TotalNumberOfTasks": scan.tasks,
        "Buckets": sorted(scan.buckets),
        "ObjectsChecked": len(scan.sample),
        "MissingObjects": round(missing * scale),
        "TotalBytes": round(sum(sizes) * scale),
        "Extrapolated": len(scan.sample) < scan.tasks,
        "Requests": cost.requests,
        "ThroughputObjectsPerSecond": round(rate, 1),
        "ThroughputSource": source,
        "EstimatedDurationSeconds": round(scan.tasks / rate, 1) if rate else None,
        "EstimatedAwsCostUSD": {
            "BatchOperationsJob": cost.batch_job_usd,
            "BatchOperationsObjects": round(cost.batch_objects_usd, 6),
            "Requests": round(cost.requests_usd, 6),
            "Total": round(cost.total_usd, 6),
        },
    }


def requests_for(operation: str, params: Mapping[str, Any], tasks: int, buckets: int = 1) -> dict[str, int]:
    """Requests a job of `operation` makes for `tasks` objects in `buckets` buckets (plus the
    manifest GET)."""
    return job_requests(kind_of(operation).requests(params, tasks, buckets))


def estimate(operation: str, params: Mapping[str, Any], tasks: int, buckets: int = 1) -> CostEstimate:
    """The AWS-equivalent cost of such a job."""
    return price(kind_of(operation).requests(params, tasks, buckets), tasks)


async def _throughput(service: JobService, operation: str) -> tuple[float, str]:
    for past in await service.store.list_jobs(None, [JobStatus.COMPLETE], limit=200):
        elapsed = past.progress.elapsed_active_s
        if past.operation_name == operation and elapsed >= MIN_MEASURED_ACTIVE_S and past.progress.done:
            return past.progress.done / elapsed, f"measured by job {past.job_id}"
    return (
        ASSUMED_OBJECTS_PER_S,
        f"assumed ({ASSUMED_OBJECTS_PER_S:g}/s): no finished {operation} job measured yet",
    )
