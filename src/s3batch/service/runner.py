"""JobRunner: drives one job through its statuses (docs/aws-contracts.md#job-statuses) and records every
result durably.

New → Preparing → (Suspended) → Ready → Active → Completing → Complete
                                         Active → Cancelling → Cancelled (user)
                                         Active → Failing → Failed (failure threshold)
Preparing → Failed (manifest unreadable, ETag mismatch, parse error naming the line)
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import itertools
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from s3batch.domain.arn import object_from_arn
from s3batch.domain.job import FailureReason, Job, JobStatus, Progress
from s3batch.domain.manifest import Block, CsvLayout, CsvManifestParser, LineSplitter
from s3batch.domain.report import ReportRow, outcome_fields
from s3batch.domain.roles import Role, RoleBook, first_denied
from s3batch.domain.task import Task, TaskResult
from s3batch.engines.base import Engine
from s3batch.errors import ConfigError, ManifestError, StorageError
from s3batch.operations.base import FunctionSpec, JobContext
from s3batch.operations.permissions import job_needs, task_needs
from s3batch.service.manifests import (
    MATERIALIZED_FIELDS,
    SPOOL_BUCKET,
    materialize,
    needs_materializing,
    spool_key,
)
from s3batch.service.probe import probe
from s3batch.service.reporting import check_destination, write_report
from s3batch.service.roles import role_storage
from s3batch.storage.base import ObjectStore
from s3batch.storage.config import from_dict, open_store
from s3batch.storage.local import LocalStore
from s3batch.storage.retrying import RetryingStore
from s3batch.store.base import Chunk, FinishedTask, JobStore

log = logging.getLogger(__name__)

#: Tasks per chunk, the unit of durable progress and of report compaction.
CHUNK_TASKS = 1000
#: Chunk rows written to the store per transaction while preparing.
CHUNK_INSERT_BATCH = 500
#: Finished tasks are written at least this often (seconds) or every FLUSH_MAX_ROWS rows.
#: A crash can redo only tasks in flight plus those finished within the last interval.
FLUSH_INTERVAL_S = 0.1
FLUSH_MAX_ROWS = 2000
#: How often a running job checks for a cancel request, in seconds.
STATUS_POLL_S = 0.5
SUSPENDED_CAUSE = "Awaiting confirmation: update-job-status --requested-job-status Ready"
#: Bytes read from the manifest per request.
MANIFEST_READ_BYTES = 1 << 20
#: A manifest up to this size, in bytes, read by Preparing is kept in memory for the Active
#: phase that follows in the same drive (no second HEAD + GET; Active runs exactly the bytes
#: Preparing validated). Larger ones are read again.
MANIFEST_KEEP_BYTES = 8 << 20


class _Stop(Exception):
    """Ends an Active run early with a target status."""

    def __init__(self, status: JobStatus, reasons: tuple[FailureReason, ...] = ()) -> None:
        super().__init__(status.value)
        self.status, self.reasons = status, reasons


class JobRunner:
    def __init__(
        self,
        store: JobStore,
        engine: Engine,
        function_workers: int = 2,
        spool_root: Path | None = None,
        roles: Callable[[], RoleBook] = RoleBook,
        accepts: Callable[[Job], bool] = lambda job: True,
    ) -> None:
        self.store = store
        self.engine = engine
        self.function_workers = function_workers
        #: Where inventory/generated manifests are materialized (see service.manifests).
        self.spool_root = spool_root or Path(tempfile.gettempdir()) / "s3batch-spool"
        #: The server's roles, read when a job that runs as a role starts (service/roles.py).
        self.roles = roles
        #: The role of each job being driven (jobs created through the server), by job id.
        self._job_roles: dict[str, Role] = {}
        #: Manifests Preparing kept in memory for Active in the same drive, by job id.
        self._kept: dict[str, ManifestSource] = {}
        #: Which jobs this runner's worker drives: only those can pre-empt the running one.
        self.accepts = accepts

    def _spool(self) -> ObjectStore:
        return LocalStore(self.spool_root)

    async def drive(self, job_id: str) -> Job:
        """Advance the job until it is terminal or waits for confirmation."""
        job = await self.store.get_job(job_id)
        storage = from_dict(job.runtime["storage"])
        if "role" in job.runtime:
            role = self._lookup_role(job)
            if isinstance(role, FailureReason):
                return await self._move(
                    job, [job.status], JobStatus.FAILED,
                    failure_reasons=(role,), termination_date=time.time(), active_since=None,
                )  # fmt: skip
            self._job_roles[job_id], storage = role, role_storage(role, storage)
        # The job's own I/O (manifest, probe, reports) retries throttling and 5xx; tasks retry
        # on their own, in the engine.
        objects = cast(ObjectStore, RetryingStore(open_store(storage)))
        try:
            while not job.status.terminal and job.status is not JobStatus.SUSPENDED:
                before = job.status
                job = await self._step(job, objects)
                if before is JobStatus.PAUSING and job.status is JobStatus.PAUSED:
                    break  # pre-empted: the worker now drives the more urgent job
        finally:
            self._job_roles.pop(job_id, None)
            self._kept.pop(job_id, None)
            await objects.close()
        return job

    def _lookup_role(self, job: Job) -> Role | FailureReason:
        """The job's role as the server defines it now, or why the job cannot run."""
        ref = job.runtime["role"]
        arn = job.request.get("RoleArn", ref["name"])
        try:
            role = self.roles().get(ref["account_id"], ref["name"])
        except ConfigError as exc:
            return FailureReason("AccessDenied", f"cannot read the roles of the server: {exc}"[:256])
        if role is None:
            return FailureReason("AccessDenied", f"role {arn} is no longer defined by the server"[:256])
        return role

    async def _step(self, job: Job, objects: ObjectStore) -> Job:
        s = job.status
        if s is JobStatus.NEW:
            return await self._move(job, [s], JobStatus.PREPARING)
        if s is JobStatus.PREPARING:
            return await self._prepare(job, objects)
        if s is JobStatus.READY:
            return await self._move(job, [s], JobStatus.ACTIVE, active_since=time.time())
        if s is JobStatus.PAUSING:
            return await self._move(job, [s], JobStatus.PAUSED)
        if s is JobStatus.PAUSED:
            return await self._move(job, [s], JobStatus.ACTIVE, active_since=time.time())
        if s is JobStatus.ACTIVE:
            return await self._execute(job, objects)
        return await self._finish(job, objects)

    async def _move(self, job: Job, allowed: Sequence[JobStatus], to: JobStatus, **fields: Any) -> Job:
        moved = await self.store.transition(job.job_id, allowed, to, **fields)
        # None: someone else (a user cancel) moved it first; carry on from where it is now.
        return moved if moved is not None else await self.store.get_job(job.job_id)

    # -- Preparing ----------------------------------------------------------------------

    async def _prepare(self, job: Job, objects: ObjectStore) -> Job:
        role = self._job_roles.get(job.job_id)
        denial = first_denied(role, job_needs(job.request)) if role else None
        if denial is not None:  # AWS too fails the job when its role cannot read or report
            return await self._fail_early(job, FailureReason("AccessDenied", denial.message[:256]))
        try:
            if needs_materializing(job.request):
                job = await self._materialize(job, objects)
            total, first = await self._plan_chunks(job, objects)
        except (ManifestError, StorageError) as exc:
            return await self._fail_early(job, _failure(exc))
        if total == 0 or first is None:
            return await self._fail_early(job, FailureReason("ManifestEmpty", "manifest has no tasks"))
        unfit = await check_destination(objects, job)
        if unfit is None and not self._denied(job, first):
            unfit = await probe(objects, job.request["Operation"], first)
        if unfit is not None:
            return await self._fail_early(job, unfit)
        if job.request.get("ConfirmationRequired"):
            return await self._move(
                job,
                [JobStatus.PREPARING],
                JobStatus.SUSPENDED,
                total_tasks=total,
                suspended_date=time.time(),
                suspended_cause=SUSPENDED_CAUSE,
            )
        return await self._move(job, [JobStatus.PREPARING], JobStatus.READY, total_tasks=total)

    def _denied(self, job: Job, task: Task) -> bool:
        """Whether the job's role refuses `task`: the probe then leaves its bucket alone too."""
        role = self._job_roles.get(job.job_id)
        if role is None:
            return False
        name, params = next(iter(job.request["Operation"].items()))
        return first_denied(role, task_needs(name, params, task.bucket, bool(task.version_id))) is not None

    async def _materialize(self, job: Job, objects: ObjectStore) -> Job:
        spool = self._spool()
        try:
            await spool.create_bucket(SPOOL_BUCKET)
            facts = await materialize(job, objects, spool)
            info = await spool.head(SPOOL_BUCKET, spool_key(job.job_id))
        finally:
            await spool.close()
        extra = {**job.extra, **facts, "materialized": {"etag": info.etag}}
        return await self.store.update_fields(job.job_id, extra=extra)

    async def _fail_early(self, job: Job, reason: FailureReason) -> Job:
        return await self._move(
            job,
            [JobStatus.PREPARING],
            JobStatus.FAILED,
            failure_reasons=(reason,),
            termination_date=time.time(),
        )

    async def _plan_chunks(self, job: Job, objects: ObjectStore) -> tuple[int, Task | None]:
        """Read the whole manifest once: validate every line and record chunk boundaries.
        Returns the task count and the first task."""
        source = await ManifestSource.open(job, objects, self._spool())
        parser = CsvManifestParser(source.layout)
        plan = _ChunkPlan()
        first: Task | None = None
        async for block in source.blocks(0, 1, keep=True):
            plain = parser.count_block(block)
            if plain is not None:  # one task per line: only chunk starts need offsets
                plan.add_block(block, plain)
            else:
                for line in block.lines():
                    task = parser.parse(line, plan.seq)
                    if task is not None:
                        first = first or task
                        plan.add_task(line.number, line.offset)
            if len(plan.unsaved) >= CHUNK_INSERT_BATCH:
                await self.store.add_chunks(job.job_id, plan.take())
        plan.close()
        await self.store.add_chunks(job.job_id, plan.take())
        if source.kept is not None:
            self._kept[job.job_id] = source
        return plan.seq, first

    # -- Active -------------------------------------------------------------------------

    async def _execute(self, job: Job, objects: ObjectStore) -> Job:
        try:
            source = self._kept.pop(job.job_id, None)
            source = source or await ManifestSource.open(job, objects, self._spool())
        except (ManifestError, StorageError) as exc:
            return await self._leave_active(job, JobStatus.FAILING, (_failure(exc),))
        run = _Run(self.store, job.job_id, succeeded=job.progress.succeeded, failed=job.progress.failed)
        consume = asyncio.create_task(self._consume(job, source, run))
        watch = asyncio.create_task(self._watch(job.job_id, consume))
        try:
            await consume
            target, reasons = JobStatus.COMPLETING, tuple[FailureReason, ...]()
        except _Stop as stop:
            target, reasons = stop.status, stop.reasons
        except asyncio.CancelledError:
            if not watch.done() or watch.cancelled() or watch.result() is None:
                raise
            target, reasons = watch.result() or JobStatus.CANCELLING, ()
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
        return await self._leave_active(job, target, reasons)

    async def _leave_active(self, job: Job, target: JobStatus, reasons: tuple[FailureReason, ...]) -> Job:
        current = await self.store.get_job(job.job_id)
        if current.status is JobStatus.CANCELLING:
            target = JobStatus.CANCELLING
        fields: dict[str, Any] = {
            "elapsed_active_s": current.progress.elapsed_active_s,
            "active_since": None,
        }
        if reasons:
            fields["failure_reasons"] = reasons
        running = [JobStatus.ACTIVE, JobStatus.CANCELLING]
        return await self._move(current, running, target, **fields)

    async def _watch(self, job_id: str, consume: asyncio.Task[None]) -> JobStatus | None:
        """Stop the run when a user cancels it (→ Cancelling) or a higher-priority job waits
        (→ Pausing). Returns the status to move to; bounded: ends with the run."""
        while not consume.done():
            await asyncio.sleep(STATUS_POLL_S)
            job = await self.store.get_job(job_id)
            target = JobStatus.CANCELLING if job.status is JobStatus.CANCELLING else None
            if target is None and await self._outranked(job):
                target = JobStatus.PAUSING
            if target is not None:
                consume.cancel()
                return target
        return None

    async def _outranked(self, job: Job) -> bool:
        waiting = {JobStatus.NEW, JobStatus.PREPARING, JobStatus.READY, JobStatus.PAUSED}
        return any(
            other.priority > job.priority
            and other.status in waiting
            and other.job_id != job.job_id
            and self.accepts(other)
            for other in await self.store.runnable_jobs()
        )

    async def _consume(self, job: Job, source: ManifestSource, run: _Run) -> None:
        pending = await self.store.pending_chunks(job.job_id)
        started = job.progress.succeeded + job.progress.failed > 0  # else no chunk has rows yet
        for chunk in pending:
            recorded = await self.store.chunk_progress(job.job_id, chunk.chunk_no) if started else {}
            run.open_chunk(chunk, recorded)
        await run.complete_full_chunks()
        tasks = _pending_tasks(source, pending, run)
        results = self.engine.run(self._context(job), job.request["Operation"], tasks)
        try:
            async for finished in results:
                await run.add_many(finished)
                if run.progress_over_threshold:
                    raise _Stop(JobStatus.FAILING, (_threshold_reason(run),))
        finally:
            await asyncio.shield(run.flush())
            with contextlib.suppress(Exception):
                await results.aclose()  # type: ignore[attr-defined]
        if run.chunks:  # every task must have a result before the job may complete
            missing = sum(c.n_tasks - run.finished_in_chunk[n] for n, c in run.chunks.items())
            raise _Stop(
                JobStatus.FAILING,
                (FailureReason("InternalError", f"{missing} tasks finished without a result"),),
            )

    def _context(self, job: Job) -> JobContext:
        function = job.runtime.get("function")
        role = self._job_roles.get(job.job_id)
        storage = from_dict(job.runtime["storage"])
        return JobContext(
            job_id=job.job_id,
            account_id=job.account_id,
            region=job.runtime.get("region", "us-east-1"),
            storage=role_storage(role, storage) if role else storage,
            function=FunctionSpec(**{**function, "sys_path": tuple(function["sys_path"])})
            if function
            else None,
            function_workers=self.function_workers,
            function_env=_role_env(role, job.runtime.get("function_env", {})),
            role=role,
        )

    # -- Completing / Cancelling / Failing ---------------------------------------------

    async def _finish(self, job: Job, objects: ObjectStore) -> Job:
        final = {
            JobStatus.COMPLETING: JobStatus.COMPLETE,
            JobStatus.CANCELLING: JobStatus.CANCELLED,
            JobStatus.FAILING: JobStatus.FAILED,
        }[job.status]
        fields: dict[str, Any] = {"termination_date": time.time()}
        try:
            location = await write_report(objects, self.store, job)
            if location:
                fields["report_manifest"] = location
        except StorageError as exc:
            final = JobStatus.FAILED
            fields["failure_reasons"] = (
                *job.failure_reasons,
                FailureReason("ReportWriteFailed", f"could not write the completion report: {exc}"),
            )
        return await self._move(job, [job.status], final, **fields)


@dataclass(slots=True)
class _Run:
    """Book-keeping of an Active run: where each task belongs, buffered results, counters."""

    store: JobStore
    job_id: str
    chunks: dict[int, Chunk] = field(default_factory=dict)
    #: Every chunk opened, by first_seq, for bisecting; closed ones stay (looked up in chunks).
    starts: list[int] = field(default_factory=list)
    opened: list[Chunk] = field(default_factory=list)
    finished_in_chunk: dict[int, int] = field(default_factory=dict)
    done_idx: dict[int, set[int]] = field(default_factory=dict)
    buffer: list[FinishedTask] = field(default_factory=list)
    last_flush: float = field(default_factory=time.monotonic)
    #: The write started by the latest flush, if any (see _flush_behind).
    writing: asyncio.Task[None] | None = None
    succeeded: int = 0
    failed: int = 0

    def open_chunk(self, chunk: Chunk, recorded: dict[int, ReportRow]) -> None:
        self.chunks[chunk.chunk_no] = chunk
        self.starts.append(chunk.first_seq)  # pending chunks arrive in seq order
        self.opened.append(chunk)
        self.finished_in_chunk[chunk.chunk_no] = len(recorded)
        self.done_idx[chunk.chunk_no] = set(recorded)

    def chunk_of(self, seq: int) -> Chunk | None:
        i = bisect.bisect_right(self.starts, seq) - 1
        if i < 0:
            return None
        chunk = self.opened[i]
        inside = seq < chunk.first_seq + chunk.n_tasks
        return chunk if inside and chunk.chunk_no in self.chunks else None

    async def add_many(self, finished: Sequence[tuple[Task, TaskResult]]) -> None:
        """Buffer tasks that finished together; start a write when the buffer is due."""
        buffer, ok = self.buffer, 0
        last: TaskResult | None = None  # a batch's tasks often share one result object
        chunk, end = None, -1  # the chunk of the previous task, and where it ends
        for task, result in finished:
            if chunk is None or not chunk.first_seq <= task.seq < end:
                chunk = self.chunk_of(task.seq)
                assert chunk is not None, f"task {task.seq} belongs to no open chunk"
                end = chunk.first_seq + chunk.n_tasks
            if result is not last:
                last, outcome, succeeded = result, outcome_fields(result), result.succeeded
            ok += succeeded
            row = ReportRow.with_outcome(task, outcome)
            buffer.append(FinishedTask(chunk.chunk_no, task.seq - chunk.first_seq, row))
        self.succeeded += ok
        self.failed += len(finished) - ok
        if len(buffer) >= FLUSH_MAX_ROWS or time.monotonic() - self.last_flush >= FLUSH_INTERVAL_S:
            await self._flush_behind()

    async def _flush_behind(self) -> None:
        """Start writing the buffer while tasks keep finishing, one write at a time.

        The SQLite work runs in a thread; awaiting it here stalled the engine for every
        write (profiled: about a quarter of a no-op job's wall time). Rows become durable as soon as
        before, one write later at most; the consumer waits only when the previous write is
        still going and FLUSH_MAX_ROWS rows have piled up again (bounded memory).
        """
        writing = self.writing
        if writing is not None:
            if not writing.done():
                if len(self.buffer) < FLUSH_MAX_ROWS:
                    return
                await asyncio.shield(writing)  # a cancelled run still lets the write finish
            self.writing = None
            writing.result()  # a failed write fails the run, as an awaited one did
        self.last_flush = time.monotonic()
        batch, self.buffer = self.buffer, []
        self.writing = asyncio.create_task(self._write(batch))

    async def flush(self) -> None:
        """Write everything finished so far and wait for it (end of a run, stop, cancel)."""
        if self.writing is not None:
            writing, self.writing = self.writing, None
            await writing
        self.last_flush = time.monotonic()
        if not self.buffer:
            return
        batch, self.buffer = self.buffer, []
        await self._write(batch)

    async def _write(self, batch: list[FinishedTask]) -> None:
        """Record `batch`; the chunks it finishes are compacted in the same write."""
        added = collections.Counter(item.chunk_no for item in batch)
        finished, chunks = self.finished_in_chunk, self.chunks
        full = {no: chunks[no].n_tasks for no, n in added.items() if finished[no] + n >= chunks[no].n_tasks}
        await self.store.record(self.job_id, batch, full)
        for no, n in added.items():
            finished[no] += n
        for no in full:
            self._close(no)

    def _close(self, chunk_no: int) -> None:
        del self.chunks[chunk_no], self.finished_in_chunk[chunk_no], self.done_idx[chunk_no]

    async def complete_full_chunks(self) -> None:
        """Compact every open chunk whose rows were all recorded before a crash."""
        for no in sorted(self.chunks):
            chunk = self.chunks[no]
            if self.finished_in_chunk[no] >= chunk.n_tasks:
                await self.store.complete_chunk(self.job_id, no, chunk.n_tasks)
                self._close(no)

    @property
    def progress_over_threshold(self) -> bool:
        if not self.failed:  # checked per task: skip building a Progress while nothing failed
            return False
        return Progress(succeeded=self.succeeded, failed=self.failed).over_failure_threshold()


def _threshold_reason(run: _Run) -> FailureReason:
    done = run.succeeded + run.failed
    return FailureReason(
        "TaskFailureThresholdExceeded",
        f"{run.failed} of {done} tasks failed (more than 50% after at least 1,000 tasks)",
    )


async def _pending_tasks(source: ManifestSource, pending: list[Chunk], run: _Run) -> AsyncIterator[Task]:
    """Tasks of unfinished chunks not yet recorded, read from the first such chunk on."""
    if not pending:
        return
    first = pending[0]
    end = pending[-1].first_seq + pending[-1].n_tasks
    parser = CsvManifestParser(source.layout, resuming=first.first_line > 1)
    chunk: Chunk | None = None
    done: set[int] = set()  # recorded idx of `chunk` (empty unless the job resumed)
    async for tasks in source.tasks(parser, first.byte_offset, first.first_line, first.first_seq):
        for task in tasks:
            seq = task.seq
            if seq >= end:
                return
            if chunk is None or not chunk.first_seq <= seq < chunk.first_seq + chunk.n_tasks:
                chunk = run.chunk_of(seq)
                if chunk is None:  # a chunk finished before the resume
                    continue
                done = run.done_idx[chunk.chunk_no]
            if not done or (seq - chunk.first_seq) not in done:
                yield task


@dataclass(slots=True)
class _ChunkPlan:
    """Cuts the manifest's tasks into chunks of CHUNK_TASKS while Preparing reads it."""

    seq: int = 0
    n_chunks: int = 0
    #: (line number, byte offset, seq) of the open chunk's first task.
    start: tuple[int, int, int] | None = None
    unsaved: list[Chunk] = field(default_factory=list)

    def add_task(self, line: int, offset: int) -> None:
        if self.start is None:
            self.start = (line, offset, self.seq)
        self.seq += 1
        if self.seq - self.start[2] == CHUNK_TASKS:
            self.close()

    def add_block(self, block: Block, n_tasks: int) -> None:
        """`n_tasks` tasks, one per line of `block`."""
        ends: list[int] | None = None  # byte length of lines[:i+1], computed if a chunk starts
        i = 0
        while i < n_tasks:
            if self.start is None:
                if ends is None:
                    ends = list(itertools.accumulate(len(x) + 1 for x in block.data.split(b"\n")))
                self.start = (block.first_line + i, block.offset + (ends[i - 1] if i else 0), self.seq)
            take = min(n_tasks - i, CHUNK_TASKS - (self.seq - self.start[2]))
            self.seq, i = self.seq + take, i + take
            if self.seq - self.start[2] == CHUNK_TASKS:
                self.close()

    def close(self) -> None:
        """End the open chunk (full, or the manifest's last)."""
        if self.start is not None:
            line, offset, first_seq = self.start
            self.unsaved.append(Chunk(self.n_chunks, first_seq, line, offset, self.seq - first_seq))
            self.n_chunks, self.start = self.n_chunks + 1, None

    def take(self) -> list[Chunk]:
        taken, self.unsaved = self.unsaved, []
        return taken


@dataclass(slots=True)
class ManifestSource:
    """The job's manifest object, ETag-checked, readable from any byte offset."""

    objects: ObjectStore
    bucket: str
    key: str
    version_id: str | None
    layout: CsvLayout
    #: The whole manifest, once read with keep=True (see MANIFEST_KEEP_BYTES).
    kept: bytes | None = None

    @classmethod
    async def open(cls, job: Job, objects: ObjectStore, spool: ObjectStore) -> ManifestSource:
        materialized = job.extra.get("materialized")
        if materialized is not None:
            return await cls._checked(
                spool,
                SPOOL_BUCKET,
                spool_key(job.job_id),
                None,
                materialized["etag"],
                list(MATERIALIZED_FIELDS),
            )
        manifest = job.request["Manifest"]
        loc = object_from_arn(manifest["Location"]["ObjectArn"])
        version = manifest["Location"].get("ObjectVersionId")
        etag = manifest["Location"]["ETag"]
        return await cls._checked(objects, loc.bucket, loc.key, version, etag, manifest["Spec"].get("Fields"))

    @classmethod
    async def _checked(
        cls,
        objects: ObjectStore,
        bucket: str,
        key: str,
        version: str | None,
        etag: str,
        fields: list[str] | None,
    ) -> ManifestSource:
        try:
            info = await objects.head(bucket, key, version)
        except StorageError as exc:
            raise ManifestError(f"cannot read s3://{bucket}/{key}: {exc}") from exc
        expected = etag.strip('"')
        if info.etag != expected:
            raise ManifestError(f"ETag mismatch: the job expects {expected}, the object has {info.etag}")
        return cls(objects, bucket, key, version, CsvLayout.from_fields(fields))

    async def blocks(self, offset: int, first_line: int, keep: bool = False) -> AsyncIterator[Block]:
        """The manifest from `offset` on, as blocks of whole lines (the last may lack its LF).
        `keep`: when read whole and no larger than MANIFEST_KEEP_BYTES, keep it in `kept`."""
        splitter = LineSplitter(offset, first_line)
        kept: list[bytes] | None = [] if keep and offset == 0 and self.kept is None else None
        size = 0
        async for chunk in self._chunks(offset):
            if kept is not None:
                size += len(chunk)
                if size <= MANIFEST_KEEP_BYTES:
                    kept.append(chunk)
                else:
                    kept = None
            for block in splitter.feed_blocks(chunk):
                yield block
        if (tail := splitter.close_block()) is not None:
            yield tail
        if kept is not None:
            self.kept = b"".join(kept)

    async def _chunks(self, offset: int) -> AsyncIterator[bytes]:
        if self.kept is not None:
            for start in range(offset, len(self.kept), MANIFEST_READ_BYTES):
                yield self.kept[start : start + MANIFEST_READ_BYTES]
            return
        stream = self.objects.iter_bytes(self.bucket, self.key, self.version_id, offset, MANIFEST_READ_BYTES)
        async for chunk in stream:
            yield chunk

    async def tasks(
        self, parser: CsvManifestParser, offset: int, first_line: int, seq: int
    ) -> AsyncIterator[list[Task]]:
        """The tasks from `offset` on, numbered from `seq`, a block at a time."""
        async for block in self.blocks(offset, first_line):
            tasks = parser.parse_block(block, seq)
            if tasks is None:
                tasks = []
                for line in block.lines():
                    task = parser.parse(line, seq + len(tasks))
                    if task is not None:
                        tasks.append(task)
            seq += len(tasks)
            yield tasks


def _role_env(role: Role | None, env: dict[str, str]) -> dict[str, str]:
    """Function handlers' boto3 signs with the role's profile and reaches its endpoint too."""
    if role is None:
        return env
    extra = {"AWS_PROFILE": role.profile} if role.profile else {}
    if role.endpoint_url:
        extra |= {"AWS_ENDPOINT_URL": role.endpoint_url, "AWS_ENDPOINT_URL_S3": role.endpoint_url}
    return {**env, **extra}


def _failure(exc: Exception) -> FailureReason:
    if isinstance(exc, ManifestError):
        code = "ManifestETagMismatch" if "ETag mismatch" in str(exc) else "ManifestReadError"
        return FailureReason(code, str(exc)[:256])
    return FailureReason("ManifestReadError", str(exc)[:256])
