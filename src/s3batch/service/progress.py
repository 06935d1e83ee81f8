"""Durable progress of a job: the manifest cut into chunks while Preparing, and, while Active,
where each finished task belongs, its buffered report line, the counters, and the writes that
make them durable.

A task's report line is rendered here, once, when the task finishes (domain.report.report_line);
the job store keeps that text and the completion report's files receive it unchanged.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import itertools
import time
from collections.abc import AsyncIterator, Collection, Sequence
from dataclasses import dataclass, field

from s3batch.domain.job import Progress
from s3batch.domain.manifest import Block, CsvManifestParser
from s3batch.domain.report import report_line, report_tail
from s3batch.domain.task import Task, TaskResult
from s3batch.service.manifest_source import ManifestSource
from s3batch.store.base import Chunk, FinishedTask, JobStore

#: Tasks per chunk, the unit of durable progress and of report compaction.
CHUNK_TASKS = 1000
#: Chunk rows written to the store per transaction while preparing.
CHUNK_INSERT_BATCH = 500
#: Finished tasks are written at least this often (seconds) or every FLUSH_MAX_ROWS rows.
#: A crash can redo only tasks in flight plus those finished within the last interval.
FLUSH_INTERVAL_S = 0.1
FLUSH_MAX_ROWS = 2000


async def plan_chunks(store: JobStore, job_id: str, source: ManifestSource) -> tuple[int, Task | None]:
    """Read the whole manifest once: validate every line and record chunk boundaries.
    Returns the task count and the first task."""
    parser = CsvManifestParser(source.layout)
    plan = ChunkPlan()
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
            await store.add_chunks(job_id, plan.take())
    plan.close()
    await store.add_chunks(job_id, plan.take())
    return plan.seq, first


@dataclass(slots=True)
class ChunkPlan:
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
class ActiveRun:
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

    async def open_pending(self, resumed: bool) -> list[Chunk]:
        """Open the job's unfinished chunks, in order, and return them. `resumed`: tasks were
        recorded before (else the store holds no rows to skip and is not asked for them). Chunks
        whose every row was recorded before a crash are compacted now."""
        pending = await self.store.pending_chunks(self.job_id)
        for chunk in pending:
            recorded = await self.store.chunk_progress(self.job_id, chunk.chunk_no) if resumed else {}
            self.open_chunk(chunk, recorded)
        await self.complete_full_chunks()
        return pending

    def open_chunk(self, chunk: Chunk, recorded: Collection[int]) -> None:
        """Open `chunk`, whose tasks at positions `recorded` already have their rows."""
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
                last, tail, succeeded = result, report_tail(result), result.succeeded
            ok += succeeded
            line = report_line(task, tail)
            buffer.append(FinishedTask(chunk.chunk_no, task.seq - chunk.first_seq, line, succeeded))
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
    def missing(self) -> int:
        """Tasks of open chunks without a recorded result."""
        return sum(c.n_tasks - self.finished_in_chunk[n] for n, c in self.chunks.items())

    @property
    def progress_over_threshold(self) -> bool:
        if not self.failed:  # checked per task: skip building a Progress while nothing failed
            return False
        return Progress(succeeded=self.succeeded, failed=self.failed).over_failure_threshold()


async def pending_tasks(source: ManifestSource, pending: list[Chunk], run: ActiveRun) -> AsyncIterator[Task]:
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
