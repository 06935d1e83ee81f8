"""Writes the completion report into the report bucket in AWS's layout (docs/compatibility.md).

    <Prefix>/job-<id>/manifest.json
    <Prefix>/job-<id>/results/<40-hex>.csv     one file per task status that has rows

Each status's report lines stream from the job store, byte for byte as stored, into temporary
files (memory stays flat in job size; no row is parsed or rendered again), the MD5 is taken while
writing, and manifest.json goes last so a reader that finds it finds every file.
A report is written for Complete, Failed and Cancelled jobs when at least one task ran.
"""

from __future__ import annotations

import hashlib
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from s3batch.domain.job import FailureReason, Job
from s3batch.domain.report import ResultFile, manifest_key, render_manifest, results_key
from s3batch.errors import StorageError
from s3batch.service.probe import unreachable, unreachable_reason
from s3batch.storage.base import ObjectStore
from s3batch.store.base import JobStore

STATUSES = ("succeeded", "failed")
#: Scratch object Preparing writes, then deletes, in the job's report folder.
WRITE_CHECK_NAME = ".s3batch-write-check"
WRITE_CHECK_BODY = b"s3batch: checking that the completion report can be written; deleted right away\n"


class _ResultsFile:
    """One status's results file: the stored lines, written as they are, MD5 taken meanwhile."""

    def __init__(self, directory: Path, status: str) -> None:
        self.path = directory / f"{status}.csv"
        self.handle: IO[bytes] = self.path.open("wb")
        self.digest = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def write(self, lines: bytes) -> None:
        self.handle.write(lines)
        self.digest.update(lines)
        self.size += len(lines)

    def finish(self) -> str:
        self.handle.close()
        return self.digest.hexdigest()


async def write_report(objects: ObjectStore, store: JobStore, job: Job) -> str | None:
    """Write the report; return the manifest.json location (s3://bucket/key) or None."""
    spec = job.spec.report
    if not spec.enabled or spec.bucket is None or job.progress.done == 0:
        return None
    bucket, prefix = spec.bucket, spec.prefix
    wanted = ("failed",) if spec.failed_only else STATUSES
    with tempfile.TemporaryDirectory(prefix="s3batch-report-") as tmp:
        files = {status: _ResultsFile(Path(tmp), status) for status in wanted}
        async for chunk in store.report_lines(job.job_id, wanted):
            for status, lines in chunk.items():
                files[status].write(lines)
        written = []
        for status, results in files.items():
            md5 = results.finish()
            if results.size == 0:  # no rows of this status
                continue
            name = hashlib.sha1(f"{job.job_id}:{status}".encode(), usedforsecurity=False).hexdigest()
            key = results_key(prefix, job.job_id, name)
            await objects.put_file(bucket, key, results.path, content_type="text/csv")
            written.append(ResultFile(status, bucket, key, md5))
    key = manifest_key(prefix, job.job_id)
    body = render_manifest(written, datetime.now(UTC)).encode()
    await objects.put_bytes(bucket, key, body, content_type="application/json")
    return f"s3://{bucket}/{key}"


async def check_destination(objects: ObjectStore, job: Job) -> FailureReason | None:
    """Why the job's completion report could not be written, found out before any task runs.

    A job whose report bucket is missing or refuses writes would otherwise change every
    object and only then fail: Preparing writes a scratch object where the report goes
    (`<Prefix>/job-<id>/`) and deletes that exact version again."""
    spec = job.spec.report
    if not spec.enabled or spec.bucket is None:
        return None
    bucket = spec.bucket
    folder = manifest_key(spec.prefix, job.job_id).rpartition("/")[0]
    key = f"{folder}/{WRITE_CHECK_NAME}"
    try:
        info = await objects.put_bytes(bucket, key, WRITE_CHECK_BODY, content_type="text/plain")
    except StorageError as exc:
        if unreachable(exc):
            return unreachable_reason(exc, "check the report destination")
        where = f"s3://{bucket}/{folder}/"
        why = f"the completion report cannot be written to {where} ({exc.code}: {exc.message})"
        return FailureReason("ReportWriteFailed", f"{why}; no object was changed"[:256])
    try:
        await objects.delete(bucket, key, info.version_id)  # that version: no delete marker left
    except StorageError:
        pass  # a leftover scratch object is harmless; the report can be written
    return None
