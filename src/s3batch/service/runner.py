"""JobRunner: drives one job through its statuses (docs/aws-contracts.md#job-statuses) and records every
result durably.

New → Preparing → (Suspended) → Ready → Active → Completing → Complete
                                         Active → Cancelling → Cancelled (user)
                                         Active → Failing → Failed (failure threshold)
Preparing → Failed (manifest unreadable, ETag mismatch, parse error naming the line)

The manifest is read through service.manifest_source; chunks, finished tasks' report lines and
their durable writes are kept by service.progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from s3batch.domain.job import FailureReason, Job, JobStatus
from s3batch.domain.roles import Role, RoleBook, RoleRef, first_denied
from s3batch.domain.task import Task
from s3batch.engines.base import Engine
from s3batch.errors import ConfigError, ManifestError, StorageError
from s3batch.operations.base import JobContext
from s3batch.operations.permissions import job_needs, task_needs
from s3batch.service.manifest_source import ManifestSource
from s3batch.service.manifests import SPOOL_BUCKET, materialize, needs_materializing, spool_key
from s3batch.service.probe import probe
from s3batch.service.progress import ActiveRun, pending_tasks, plan_chunks
from s3batch.service.reporting import check_destination, write_report
from s3batch.service.roles import role_env, role_storage
from s3batch.service.sink_cleanup import finalize_results_sink
from s3batch.service.timeline import Sampler
from s3batch.storage.capabilities import StorageAdapter
from s3batch.storage.config import LocalConfig, open_store
from s3batch.storage.retrying import RetryingStore
from s3batch.store.base import JobStore

log = logging.getLogger(__name__)

#: How often a running job checks for a cancel request, in seconds.
STATUS_POLL_S = 0.5
SUSPENDED_CAUSE = "Awaiting confirmation: update-job-status --requested-job-status Ready"


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
        #: Which waiting jobs may pre-empt the running one: only those this worker would drive.
        self.accepts = accepts

    def _spool(self) -> StorageAdapter:
        return open_store(LocalConfig(root=str(self.spool_root)))

    async def drive(self, job_id: str) -> Job:
        """Advance the job until it is terminal or waits for confirmation."""
        job = await self.store.get_job(job_id)
        storage = job.setup.storage
        if job.setup.role is not None:
            role = self._lookup_role(job, job.setup.role)
            if isinstance(role, FailureReason):
                return await self._move(
                    job, [job.status], JobStatus.FAILED,
                    failure_reasons=(role,), termination_date=time.time(), active_since=None,
                )  # fmt: skip
            self._job_roles[job_id], storage = role, role_storage(role, storage)
        # The job's own I/O (manifest, probe, reports) retries throttling and 5xx; tasks retry
        # on their own, in the engine.
        objects = cast(StorageAdapter, RetryingStore(open_store(storage)))
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

    def _lookup_role(self, job: Job, ref: RoleRef) -> Role | FailureReason:
        """The job's role as the server defines it now, or why the job cannot run."""
        arn = job.spec.role_arn or ref.name
        try:
            role = self.roles().get(ref.account_id, ref.name)
        except ConfigError as exc:
            return FailureReason("AccessDenied", f"cannot read the roles of the server: {exc}"[:256])
        if role is None:
            return FailureReason("AccessDenied", f"role {arn} is no longer defined by the server"[:256])
        return role

    async def _step(self, job: Job, objects: StorageAdapter) -> Job:
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

    async def _prepare(self, job: Job, objects: StorageAdapter) -> Job:
        role = self._job_roles.get(job.job_id)
        denial = first_denied(role, job_needs(job.request)) if role else None
        if denial is not None:  # AWS too fails the job when its role cannot read or report
            return await self._fail_early(job, FailureReason("AccessDenied", denial.message[:256]))
        try:
            if needs_materializing(job.spec):
                job = await self._materialize(job, objects)
            total, first = await self._plan_chunks(job, objects)
        except (ManifestError, StorageError) as exc:
            return await self._fail_early(job, _failure(exc))
        if total == 0 or first is None:
            return await self._fail_early(job, FailureReason("ManifestEmpty", "manifest has no tasks"))
        unfit = await check_destination(objects, job)
        if unfit is None and not self._denied(job, first):
            unfit = await probe(objects, job.spec.operation.as_json, first)
        if unfit is not None:
            return await self._fail_early(job, unfit)
        if job.spec.confirmation_required:
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
        name, params = job.spec.operation.name, job.spec.operation.params
        return first_denied(role, task_needs(name, params, task.bucket, bool(task.version_id))) is not None

    async def _materialize(self, job: Job, objects: StorageAdapter) -> Job:
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

    async def _plan_chunks(self, job: Job, objects: StorageAdapter) -> tuple[int, Task | None]:
        """Cut the manifest into chunks (service.progress); returns the task count and the first
        task. A small manifest stays in memory for the Active phase of this drive."""
        source = await ManifestSource.open(job, objects, self._spool())
        total, first = await plan_chunks(self.store, job.job_id, source)
        if source.kept is not None:
            self._kept[job.job_id] = source
        return total, first

    # -- Active -------------------------------------------------------------------------

    async def _execute(self, job: Job, objects: StorageAdapter) -> Job:
        try:
            source = self._kept.pop(job.job_id, None)
            source = source or await ManifestSource.open(job, objects, self._spool())
        except (ManifestError, StorageError) as exc:
            return await self._leave_active(job, JobStatus.FAILING, (_failure(exc),))
        run = ActiveRun(self.store, job.job_id, succeeded=job.progress.succeeded, failed=job.progress.failed)
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

    async def _consume(self, job: Job, source: ManifestSource, run: ActiveRun) -> None:
        pending = await run.open_pending(resumed=job.progress.done > 0)
        tasks = pending_tasks(source, pending, run)
        results = self.engine.run(self._context(job), job.spec.operation.as_json, tasks)
        try:
            async with Sampler(self.store, job.job_id, job.progress, run, self.engine):
                async for finished in results:
                    await run.add_many(finished)
                    if run.progress_over_threshold:
                        raise _Stop(JobStatus.FAILING, (_threshold_reason(run),))
        finally:
            await asyncio.shield(run.flush())
            with contextlib.suppress(Exception):
                await results.aclose()  # type: ignore[attr-defined]
        if run.chunks:  # every task must have a result before the job may complete
            raise _Stop(
                JobStatus.FAILING,
                (FailureReason("InternalError", f"{run.missing} tasks finished without a result"),),
            )

    def _context(self, job: Job) -> JobContext:
        setup, role = job.setup, self._job_roles.get(job.job_id)
        return JobContext(
            job_id=job.job_id,
            account_id=job.account_id,
            region=setup.region,
            storage=role_storage(role, setup.storage) if role else setup.storage,
            function=setup.function,
            function_workers=self.function_workers,
            function_env=role_env(role, setup.function_env or {}),
            role=role,
            command=setup.command,
            stores=setup.stores or {},
        )

    # -- Completing / Cancelling / Failing ---------------------------------------------

    async def _finish(self, job: Job, objects: StorageAdapter) -> Job:
        final = {
            JobStatus.COMPLETING: JobStatus.COMPLETE,
            JobStatus.CANCELLING: JobStatus.CANCELLED,
            JobStatus.FAILING: JobStatus.FAILED,
        }[job.status]
        fields: dict[str, Any] = {"termination_date": time.time()}
        reasons = job.failure_reasons
        # Before the report: a reader who finds its manifest.json finds a clean results sink.
        sink_failure = await finalize_results_sink(objects, self.store, job)
        if sink_failure is not None:
            final, reasons = JobStatus.FAILED, (*reasons, sink_failure)
            fields["failure_reasons"] = reasons
        try:
            location = await write_report(objects, self.store, job)
            if location:
                fields["report_manifest"] = location
        except StorageError as exc:
            final = JobStatus.FAILED
            fields["failure_reasons"] = (
                *reasons,
                FailureReason("ReportWriteFailed", f"could not write the completion report: {exc}"),
            )
        return await self._move(job, [job.status], final, **fields)


def _threshold_reason(run: ActiveRun) -> FailureReason:
    done = run.succeeded + run.failed
    return FailureReason(
        "TaskFailureThresholdExceeded",
        f"{run.failed} of {done} tasks failed (more than 50% after at least 1,000 tasks)",
    )


def _failure(exc: Exception) -> FailureReason:
    if isinstance(exc, ManifestError):
        code = "ManifestETagMismatch" if "ETag mismatch" in str(exc) else "ManifestReadError"
        return FailureReason(code, str(exc)[:256])
    return FailureReason("ManifestReadError", str(exc)[:256])
