"""Run admitted files through the operation or function, then archive, delete or move to errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote_plus

from s3batch.domain.function import FunctionSpec
from s3batch.domain.report import ReportRow, ResultFile, manifest_key, render_manifest, render_rows
from s3batch.domain.task import Task, TaskResult
from s3batch.engines.execute import build_operation, execute_task
from s3batch.errors import S3BatchError, StorageError
from s3batch.functions.pool import FunctionPool
from s3batch.operations.base import JobContext
from s3batch.pipelines.config import OnSuccess, PipelineConfig
from s3batch.pipelines.events import ObjectEvent, from_listing, to_record
from s3batch.pipelines.notify.base import Delivery
from s3batch.pipelines.notify.messages import FileOutcome
from s3batch.pipelines.notify.pipeline import PipelineNotifications
from s3batch.pipelines.state import Admission, FileRow, FileState, PipelineState
from s3batch.pipelines.tables.records import Origin
from s3batch.retry import RetryPolicy
from s3batch.storage.base import ObjectStore
from s3batch.storage.config import StorageConfig, open_store

if TYPE_CHECKING:
    from s3batch.pipelines.tables.live import LiveTables

log = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
ERROR_SUFFIX = ".error.json"
#: Seconds before a file that failed retryably is tried again (first retry; the pipeline goes
#: on with other files meanwhile).
RETRY_DELAY_S = 0.5
#: Longest wait before a retry, in seconds (the delay doubles per attempt up to this).
RETRY_MAX_DELAY_S = 30.0
#: Concurrent operation calls (functions are bounded by their worker count instead).
OPERATION_CONCURRENCY = 16


def raw_key(key: str) -> str:
    """The key as S3 writes it in reports and notification records (form-URL-encoded)."""
    return quote_plus(key, safe="/")


def file_outcome(row: FileRow, final: FileState) -> FileOutcome:
    return FileOutcome(
        bucket=row.bucket, key=row.key, version_id=row.version_id, etag=row.etag, size=row.size,
        succeeded=bool(row.succeeded), disposition=final.value, attempts=row.attempts,
        http_status=row.http_status, error_code=row.error_code, message=row.message,
    )  # fmt: skip


def row_event(row: FileRow) -> ObjectEvent:
    return ObjectEvent(
        bucket=row.bucket, key=row.key, etag=row.etag, size=row.size, version_id=row.version_id,
        sequencer=row.sequencer, event_name=row.event_name,
    )  # fmt: skip


class Executor(Protocol):
    async def run(self, rows: Sequence[FileRow]) -> list[TaskResult]: ...
    async def close(self) -> None: ...


class OperationExecutor:
    """Any batch operation, one task per file, retried by the job retry policy."""

    def __init__(self, cfg: PipelineConfig, storage: StorageConfig, region: str) -> None:
        assert cfg.operation is not None
        self._op, self._store = build_operation(operation_job(cfg, storage, region), cfg.operation)
        self._policy = RetryPolicy(max_attempts=1)  # the pipeline counts attempts itself
        self._slots = asyncio.Semaphore(OPERATION_CONCURRENCY)

    async def run(self, rows: Sequence[FileRow]) -> list[TaskResult]:
        return list(await asyncio.gather(*(self._one(r) for r in rows)))

    async def _one(self, row: FileRow) -> TaskResult:
        task = Task(seq=row.id, bucket=row.bucket, raw_key=raw_key(row.key), key=row.key,
                    version_id=row.version_id)  # fmt: skip
        async with self._slots:
            return await execute_task(self._op, task, self._policy)

    async def close(self) -> None:
        await self._op.close()
        await self._store.close()


def operation_job(cfg: PipelineConfig, storage: StorageConfig, region: str) -> JobContext:
    """The job an operation runs in; for LambdaInvoke, with its FunctionArn resolved as CreateJob
    would (`python:module:callable`, or a name in S3BATCH_HOME/functions.toml)."""
    job_id = f"pipeline-{cfg.name}"
    invoke = (cfg.operation or {}).get("LambdaInvoke")
    if invoke is None:
        return JobContext(job_id=job_id, account_id=ACCOUNT_ID, region=region, storage=storage)
    from s3batch.functions.registry import load_registry, resolve_function
    from s3batch.operations.invoke import validate
    from s3batch.settings import Settings

    validate(invoke)
    registry = load_registry(Settings.from_env().functions_file)
    arn = str(invoke["FunctionArn"])
    spec = resolve_function(arn, registry, cwd=str(cfg.base_dir), timeout_s=cfg.timeout_s)
    return JobContext(job_id=job_id, account_id=ACCOUNT_ID, region=region, storage=storage, function=spec,
                      function_workers=cfg.workers)  # fmt: skip


class FunctionExecutor:
    """A handler for S3 event notifications: `{"Records": [...]}`, `records_per_call` per call."""

    def __init__(self, cfg: PipelineConfig, region: str) -> None:
        assert cfg.function is not None
        name = cfg.function.rsplit(":", 1)[-1]
        spec = FunctionSpec(
            arn=f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}", name=name, handler=cfg.function,
            sys_path=(str(cfg.base_dir), os.getcwd()), timeout_s=cfg.timeout_s,
        )  # fmt: skip
        self._pool = FunctionPool(spec, workers=cfg.workers)
        self._per_call = cfg.records_per_call
        self._region = region

    async def run(self, rows: Sequence[FileRow]) -> list[TaskResult]:
        chunks = [rows[i : i + self._per_call] for i in range(0, len(rows), self._per_call)]
        results = await asyncio.gather(*(self._call(c) for c in chunks))
        return [r for chunk in results for r in chunk]

    async def _call(self, rows: Sequence[FileRow]) -> list[TaskResult]:
        event = {"Records": [to_record(row_event(r), self._region) for r in rows]}
        outcome = await self._pool.invoke(event)
        if outcome.error is not None:
            code = str(outcome.error.get("errorType", "Unhandled"))
            message = f"Lambda returned function error: {json.dumps(outcome.error)}"
            # Lambda retries asynchronous invocations that failed; so does the pipeline.
            return [TaskResult.fail(code, message, 200, retryable=True)] * len(rows)
        message = "Successful" if outcome.payload is None else json.dumps(outcome.payload)
        return [TaskResult.ok(message)] * len(rows)

    async def close(self) -> None:
        await self._pool.close()


@dataclass(slots=True)
class Counts:
    accepted: int = 0
    duplicates: int = 0
    stale: int = 0
    filtered: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "stale": self.stale,
                "filtered": self.filtered}  # fmt: skip


@dataclass(slots=True)
class Pipeline:
    """One run of a pipeline: admits events, processes them and disposes of the files."""

    cfg: PipelineConfig
    storage: StorageConfig
    region: str = field(default_factory=lambda: os.environ.get("AWS_REGION") or DEFAULT_REGION)
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    state: PipelineState = field(init=False)
    store: ObjectStore = field(init=False)
    _executor: Executor | None = field(init=False, default=None)
    #: The source bucket's live tables when the file has `[tables]` (docs/pipeline-tables.md).
    tables: LiveTables | None = field(init=False, default=None)
    _lock: asyncio.Lock = field(init=False, default_factory=asyncio.Lock)
    notices: PipelineNotifications = field(init=False)

    def __post_init__(self) -> None:
        self.state = PipelineState(self.cfg.state_path)
        self.store = open_store(self.storage)
        if self.cfg.tables is not None:
            from s3batch.pipelines.tables.live import LiveTables

            self.tables = LiveTables(self.cfg.tables, self.cfg.source, self.store)
        self.notices = PipelineNotifications(
            self.cfg.name, self.run_id, self.cfg.notify, self._record_delivery
        )
        self.state.start_run(self.run_id, os.getpid())

    def _record_delivery(self, delivery: Delivery) -> None:
        self.state.record_notification(self.run_id, delivery)

    async def close(self) -> None:
        await self.notices.close()  # before the state DB closes: outcomes are recorded there
        if self._executor is not None:
            await self._executor.close()
        await self.write_reports(final=True)
        if self.tables is not None:
            await self.tables.close()
        await self.store.close()
        self.state.close()

    def submit(
        self,
        events: Sequence[ObjectEvent],
        *,
        force: bool = False,
        removed: Sequence[ObjectEvent] = (),
        origin: Origin = Origin.LISTING,
    ) -> Counts:
        """Durably admit matching events (before the sender is acknowledged). With tables,
        every created and `removed` event of the source bucket is recorded first."""
        if self.tables is not None:
            self.tables.record([*events, *removed], origin)
        counts = Counts()
        wanted = [e for e in events if e.bucket == self.cfg.source and self.cfg.filter.matches(e)]
        counts.filtered = len(events) - len(wanted)
        for admission in self.state.admit_many(wanted, force=force):
            if admission is Admission.NEW:
                counts.accepted += 1
            elif admission is Admission.DUPLICATE:
                counts.duplicates += 1
            else:
                counts.stale += 1
        return counts

    async def drain(self, *, end_batch: bool = True) -> None:
        """Process until nothing is pending (one drain at a time; bounded by max_attempts).
        `end_batch`: the files finished so far make one batch notification."""
        async with self._lock:
            await self.write_reports(final=False)  # of runs that were killed before writing theirs
            await self._dispose_all()  # finish what a crashed run had already processed
            while True:  # bounded: each file is tried at most max_attempts times
                if rows := self.state.claim(self._batch_size()):
                    await self._process(rows)
                    await self._dispose_all()
                elif (wait_s := self.state.retry_wait_s()) is not None:
                    await asyncio.sleep(wait_s)  # only files waiting for a retry are left
                else:
                    break
            if end_batch:
                self.notices.end_batch()

    def _batch_size(self) -> int:
        if self.cfg.function is not None:
            return self.cfg.records_per_call * self.cfg.workers
        return OPERATION_CONCURRENCY

    def _executor_now(self) -> Executor:
        if self._executor is None:
            if self.cfg.function is not None:
                self._executor = FunctionExecutor(self.cfg, self.region)
            else:
                self._executor = OperationExecutor(self.cfg, self.storage, self.region)
        return self._executor

    async def _process(self, rows: Sequence[FileRow]) -> None:
        live = [r for r in rows if await self._still_there(r)]
        results = await self._executor_now().run(live) if live else []
        for row, result in zip(live, results, strict=True):
            attempt = row.attempts + 1
            if not result.succeeded and result.retryable and attempt < self.cfg.max_attempts:
                self.state.retry_later(row.id, min(RETRY_DELAY_S * 2 ** (attempt - 1), RETRY_MAX_DELAY_S))
                continue
            task = Task(seq=row.id, bucket=row.bucket, raw_key=raw_key(row.key), key=row.key,
                        version_id=row.version_id)  # fmt: skip
            self.state.processed(row.id, ReportRow.of(task, result), self.run_id)

    async def _still_there(self, row: FileRow) -> bool:
        """Skip a file that vanished or was overwritten since its event (the newer PUT has its own)."""
        try:
            info = await self.store.head(row.bucket, row.key, row.version_id)
        except StorageError as exc:
            if exc.code not in ("NoSuchKey", "NotFound", "404"):
                raise
            self.state.set_state(row.id, FileState.GONE)
            return False
        if row.etag and not row.version_id and info.etag != row.etag:
            self.state.set_state(row.id, FileState.SUPERSEDED)
            return False
        return True

    async def _dispose_all(self) -> None:
        for row in self.state.to_dispose():
            try:
                final = await self._dispose(row)
                self._note_removed(row, final)
                self.state.set_state(row.id, final)
            except StorageError as exc:  # stays "processed": the next drain tries again
                log.warning("cannot dispose of %s/%s: %s", row.bucket, row.key, exc)
                continue
            self.notices.file_finished(file_outcome(row, final))

    def _note_removed(self, row: FileRow, final: FileState) -> None:
        """Tell the tables the file left the source bucket (a failure only logs: the next
        reconcile fixes the row)."""
        moved = final in (FileState.ARCHIVED, FileState.DELETED) or (
            final is FileState.ERRORED and self.cfg.error is not None
        )
        if self.tables is None or not moved:
            return
        try:
            self.tables.removed_by_pipeline(row_event(row))
        except S3BatchError as exc:
            log.warning("tables: cannot record the removal of %s/%s: %s", row.bucket, row.key, exc)

    async def _dispose(self, row: FileRow) -> FileState:
        if not row.succeeded:
            return await self._to_errors(row)
        if self.cfg.on_success is OnSuccess.ARCHIVE:
            assert self.cfg.archive is not None
            await self._move(row, self.cfg.archive)
            return FileState.ARCHIVED
        if self.cfg.on_success is OnSuccess.DELETE:
            await self.store.delete(row.bucket, row.key, row.version_id)
            return FileState.DELETED
        return FileState.LEFT

    async def _to_errors(self, row: FileRow) -> FileState:
        if self.cfg.error is None:
            return FileState.ERRORED  # left in staging; the outcome stays in the state DB
        record = {
            "bucket": row.bucket, "key": row.key, "versionId": row.version_id, "etag": row.etag,
            "code": row.error_code, "reason": row.message, "httpStatus": row.http_status,
            "attempts": row.attempts, "time": datetime.now(UTC).isoformat(),
        }  # fmt: skip
        await self.store.put_bytes(self.cfg.error, row.key + ERROR_SUFFIX, json.dumps(record).encode(),
                                   content_type="application/json")  # fmt: skip
        await self._move(row, self.cfg.error)
        return FileState.ERRORED

    async def _move(self, row: FileRow, bucket: str) -> None:
        """Copy, verify the copy, then delete the source. Safe to repeat after a crash."""
        try:
            source = await self.store.head(row.bucket, row.key, row.version_id)
        except StorageError as exc:
            if exc.code not in ("NoSuchKey", "NotFound", "404"):
                raise
            await self._verify(row, bucket, row.size, row.etag)  # deleted by a run that then died
            return
        await self.store.copy(row.bucket, row.key, bucket, row.key, src_version_id=row.version_id)
        await self._verify(row, bucket, source.size, source.etag)
        await self.store.delete(row.bucket, row.key, row.version_id)

    async def _verify(self, row: FileRow, bucket: str, size: int | None, etag: str) -> None:
        copy = await self.store.head(bucket, row.key)
        # A multipart source's copy may get a different ETag ("-N" form): compare sizes then.
        same_etag = not etag or "-" in etag or copy.etag == etag
        if (size is not None and copy.size != size) or not same_etag:
            raise StorageError("CopyVerificationFailed", f"{bucket}/{row.key} does not match its source")

    async def write_reports(self, *, final: bool) -> None:
        """Write the completion report of every run that ended without writing one (killed:
        its process is gone), and this run's own when `final`.

        Report object names derive from the run id and the rows, so a crash between writing a
        report and marking it written only makes the next run write the same objects again:
        every file is in exactly one run's report.
        """
        for run_id, pid in self.state.unreported_runs():
            if (run_id != self.run_id and _alive(pid)) or (run_id == self.run_id and not final):
                continue  # a run still going (here or in another process) reports when it ends
            await self._write_report(run_id)
            self.state.mark_reported(run_id)

    async def _write_report(self, run_id: str) -> None:
        """A run's rows in AWS's completion-report layout, if a report bucket is configured."""
        target = self.cfg.report
        rows = [r for _, r in self.state.report_rows(run_id)]
        if target is None or not rows:
            return
        prefix = f"{target.prefix.rstrip('/')}/{self.cfg.name}"
        files = []
        for status in ("succeeded", "failed"):
            body = render_rows(r for r in rows if r.status == status).encode()
            if body:
                name = hashlib.sha1(body).hexdigest()
                key = f"{prefix}/job-{run_id}/results/{name}.csv"
                await self.store.put_bytes(target.bucket, key, body, content_type="text/csv")
                files.append(ResultFile(status, target.bucket, key, hashlib.md5(body).hexdigest()))
        manifest = render_manifest(files, datetime.now(UTC)).encode()
        await self.store.put_bytes(target.bucket, manifest_key(prefix, run_id), manifest)

    def listing_events(self, infos: Sequence[Any]) -> list[ObjectEvent]:
        return [from_listing(i) for i in infos if not i.key.endswith(ERROR_SUFFIX)]


def _alive(pid: int) -> bool:
    """Whether process `pid` exists (a reused pid only delays a dead run's report)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
