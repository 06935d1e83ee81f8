"""`rerun-failed`: a new job over exactly the failed tasks of a finished job.

The failed rows come from the job store (so it works with the report disabled too); they are
written as a CSV manifest next to the original job's report (or, without a report, under
`s3batch-rerun/` in the original manifest's bucket) and submitted with the original operation,
report settings and priority.

The rerun is created under the rules the original was: an S3batchRunCommand job of a server's
caller (one that recorded a registered command) names its command again, checked against
server.toml's `[[commands]]` as it is now, exactly as the server checks a CreateJob.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from s3batch.domain.job import Job
from s3batch.domain.manifest import ManifestFormat
from s3batch.domain.report import ReportRow
from s3batch.errors import BadRequest, JobStatusError
from s3batch.functions.registry import FunctionScope
from s3batch.operations.run_command import load_server_commands
from s3batch.service.jobs import JobService
from s3batch.service.roles import load_roles
from s3batch.settings import SERVER_FILE
from s3batch.storage.config import open_store

MAX_DESCRIPTION_CHARS = 256


async def rerun_failed(service: JobService, job_id: str, account_id: str | None = None) -> Job:
    job = await service.describe_job(job_id, account_id)
    if not job.status.terminal:
        raise JobStatusError(f"job {job_id} is {job.status.value}; rerun-failed needs a finished job")
    rows = [r async for batch in service.store.report_rows(job.job_id) for r in batch if r.status == "failed"]
    if not rows:
        raise BadRequest(f"job {job_id} has no failed tasks to rerun")
    bucket, key = _manifest_location(job)
    body, fields = _manifest(rows)
    objects = open_store(job.setup.storage)
    try:
        await objects.put_bytes(bucket, key, body, content_type="text/csv")
    finally:
        await objects.close()
    request = _rerun_request(job, bucket, key, body, fields)
    functions = _functions(job, service.settings.home / SERVER_FILE)
    # A job that ran as a role reruns as that role (looked up again in HOME's server.toml).
    roles = load_roles(service.settings.home) if job.setup.role is not None else None
    return await service.create_job(
        request,
        storage=job.setup.storage,
        account_id=job.account_id,
        functions=functions,
        roles=roles,
    )


def _manifest_location(job: Job) -> tuple[str, str]:
    spec = job.spec
    if spec.report.enabled and spec.report.bucket is not None:
        prefix = (spec.report.prefix or "").rstrip("/")
        base = f"{prefix}/job-{job.job_id}" if prefix else f"job-{job.job_id}"
        return spec.report.bucket, f"{base}/rerun/failed-manifest.csv"
    if spec.manifest is not None:
        source = spec.manifest.bucket
    else:
        assert spec.generator is not None  # exactly one of the two
        source = spec.generator.source_bucket
    return source, f"s3batch-rerun/job-{job.job_id}/failed-manifest.csv"


def _manifest(rows: list[ReportRow]) -> tuple[bytes, list[str]]:
    """Rows as written in the original manifest: keys stay URL-encoded."""
    versioned = any(r.version_id for r in rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for r in rows:
        writer.writerow([r.bucket, r.key, r.version_id] if versioned else [r.bucket, r.key])
    fields = ["Bucket", "Key", "VersionId"] if versioned else ["Bucket", "Key"]
    return out.getvalue().encode(), fields


def _rerun_request(job: Job, bucket: str, key: str, body: bytes, fields: list[str]) -> dict[str, Any]:
    etag = hashlib.md5(body, usedforsecurity=False).hexdigest()
    request = {k: v for k, v in job.request.items() if k not in ("ManifestGenerator", "Manifest")}
    request["Manifest"] = {
        "Spec": {"Format": ManifestFormat.CSV.value, "Fields": fields},
        "Location": {"ObjectArn": f"arn:aws:s3:::{bucket}/{key}", "ETag": etag},
    }
    request["Description"] = f"Rerun of the failed tasks of job {job.job_id}"[:MAX_DESCRIPTION_CHARS]
    request["ConfirmationRequired"] = False
    return request


def _functions(job: Job, server_file: Path) -> Mapping[str, str] | FunctionScope:
    """The original job's resolved function, so the rerun calls the same handler; for a job
    that ran a server's registered command, its account's commands as registered now."""
    function = job.setup.function
    registry = {} if function is None else {function.name: function.handler}
    if job.setup.command is None:
        return registry
    commands = load_server_commands(server_file).for_account(job.account_id)
    return FunctionScope(registry, commands=commands)
