"""The job-store contract the service and runner rely on."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from s3batch.domain.job import Job, JobStatus, Progress
from s3batch.domain.report import ReportRow
from s3batch.domain.timeline import Sample


@dataclass(frozen=True, slots=True)
class Chunk:
    """A run of consecutive manifest tasks, the unit of durable progress."""

    chunk_no: int
    #: seq of the chunk's first task (task seqs are consecutive within a chunk).
    first_seq: int
    #: 1-based manifest line and byte offset where the chunk starts.
    first_line: int
    byte_offset: int
    n_tasks: int


class FinishedTask(NamedTuple):
    """A task's report line and its place. A NamedTuple: one per task (see ReportRow).

    `line` is final: rendered once when the task finishes (domain.report.report_line), it is
    the text the store keeps and the report file receives. `succeeded` travels beside it so
    that counting and splitting by status never parse a line back."""

    chunk_no: int
    #: Position within the chunk, 0-based.
    idx: int
    line: str
    succeeded: bool


class JobStore(Protocol):
    async def insert_job(self, job: Job) -> Job:
        """Insert, or return the existing job for the same (account, token) and request hash.
        Raises IdempotencyError when the token was used for a different request."""
        ...

    async def get_job(self, job_id: str, account_id: str | None = None) -> Job:
        """Raises NotFound."""
        ...

    async def list_jobs(
        self,
        account_id: str | None,
        statuses: Collection[JobStatus] | None = None,
        limit: int = 1000,
        after: tuple[float, str] | None = None,
    ) -> list[Job]:
        """Newest first; `after` is the (creation_time, job_id) of the last job already seen."""
        ...

    async def transition(
        self, job_id: str, allowed_from: Collection[JobStatus], to: JobStatus, **fields: Any
    ) -> Job | None:
        """Compare-and-set: move to `to` only from one of `allowed_from`; None if not."""
        ...

    async def update_fields(self, job_id: str, **fields: Any) -> Job: ...

    async def add_chunks(self, job_id: str, chunks: Sequence[Chunk]) -> None: ...

    async def pending_chunks(self, job_id: str) -> list[Chunk]: ...

    async def chunk_progress(self, job_id: str, chunk_no: int) -> dict[int, str]:
        """Report lines already recorded for an unfinished chunk, by idx (to skip them on resume)."""
        ...

    async def record(
        self, job_id: str, finished: Sequence[FinishedTask], full: Mapping[int, int] | None = None
    ) -> Progress:
        """Durably record finished tasks and return the job's updated counters. `full`
        (chunk_no → n_tasks): chunks these rows finish, compacted in the same write (their
        rows never stored one by one)."""
        ...

    async def complete_chunk(self, job_id: str, chunk_no: int, n_tasks: int) -> None:
        """Compact the chunk's recorded rows into its results blob (a chunk found full on
        resume: its last rows were recorded before a crash, the compaction was not)."""
        ...

    def report_lines(self, job_id: str, statuses: Collection[str]) -> AsyncIterator[Mapping[str, bytes]]:
        """The job's recorded report lines of the given task statuses, chunk by chunk in
        manifest order: per chunk, each status's lines (UTF-8, in manifest order) as stored, for
        the statuses that have any. What the completion report's files are made of."""
        ...

    def report_rows(self, job_id: str) -> AsyncIterator[list[ReportRow]]:
        """Every recorded row of the job, parsed, chunk by chunk in manifest order (for
        readers of single rows: the Python API, the CLI, the failures page, reruns)."""
        ...

    async def delete_terminated_before(self, cutoff: float) -> int:
        """Remove jobs that ended before `cutoff` (epoch seconds); returns how many."""
        ...

    async def runnable_jobs(self) -> list[Job]:
        """Jobs a worker should drive, most urgent first."""
        ...

    async def add_sample(self, job_id: str, sample: Sample) -> None:
        """Record one timeline sample of a running job (domain/timeline.py)."""
        ...

    async def samples(self, job_id: str, at_most: int | None = None) -> list[Sample]:
        """The job's timeline samples, oldest first (merged to about `at_most` if given)."""
        ...

    async def close(self) -> None: ...
