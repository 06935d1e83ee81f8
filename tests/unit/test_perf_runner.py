"""ActiveRun writes results behind the engine: one write at a time, bounded backlog,
every row recorded once, each chunk compacted once, by the write that finishes it, and a
failed write still fails the run."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from s3batch.domain.task import Task, TaskResult
from s3batch.service.progress import FLUSH_MAX_ROWS, ActiveRun
from s3batch.store.base import Chunk, FinishedTask

CHUNK = 1000
OK = TaskResult.ok()


class SlowStore:
    """Records rows after a pause; checks that writes never overlap."""

    def __init__(self, fail: bool = False) -> None:
        self.rows: list[tuple[int, int]] = []
        #: Chunks compacted, in order (by the write that finished them, or on resume).
        self.completed: list[int] = []
        #: Rows of each write that finished chunks.
        self.finishing_writes: list[int] = []
        self.writing = False
        self.fail = fail

    async def record(
        self, job_id: str, finished: Sequence[FinishedTask], full: Mapping[int, int] | None = None
    ) -> None:
        assert not self.writing, "two writes at once"
        self.writing = True
        await asyncio.sleep(0.01)
        self.writing = False
        if self.fail:
            raise RuntimeError("disk full")
        self.rows.extend((f.chunk_no, f.idx) for f in finished)
        for no, n_tasks in (full or {}).items():
            assert n_tasks == CHUNK and sum(1 for r in self.rows if r[0] == no) == CHUNK, "not full"
            self.completed.append(no)

    async def complete_chunk(self, job_id: str, chunk_no: int, n_tasks: int) -> None:
        self.completed.append(chunk_no)


def _task(seq: int) -> Task:
    key = f"k{seq % CHUNK}"
    return Task(seq=seq, bucket="b", raw_key=key, key=key)


def _run(store: SlowStore, n_chunks: int) -> ActiveRun:
    run = ActiveRun(store, "j")  # type: ignore[arg-type]
    for no in range(n_chunks):
        run.open_chunk(Chunk(no, no * CHUNK, 1 + no * CHUNK, 0, CHUNK), {})
    return run


async def test_every_row_is_written_once_and_chunks_complete_once() -> None:
    store = SlowStore()
    run = _run(store, 5)
    for seq in range(5 * CHUNK):
        await run.add_many([(_task(seq), OK)])
        assert len(run.buffer) <= FLUSH_MAX_ROWS  # backpressure bounds the backlog
    await run.flush()
    assert sorted(store.rows) == [(no, i) for no in range(5) for i in range(CHUNK)]
    assert sorted(store.completed) == [0, 1, 2, 3, 4]
    assert not run.chunks and run.writing is None


def _group(chunk_no: int, idx: range) -> list[tuple[Task, TaskResult]]:
    """Tasks of one chunk finishing together (as one DeleteObjects batch does), shuffled."""
    group = [(_task(chunk_no * CHUNK + i), OK) for i in idx]
    return group[1::2] + group[::2]


async def test_the_write_that_finishes_a_chunk_compacts_it() -> None:
    store = SlowStore()
    run = _run(store, 3)
    run.last_flush = 0.0  # every add is due for a write
    await run.add_many(_group(0, range(CHUNK)))  # chunk 0 in one group
    await run.add_many(_group(1, range(400)))  # chunk 1 in two groups: rows, then the rest
    await run.flush()
    assert store.completed == [0]
    await run.add_many(_group(1, range(400, CHUNK)))
    await run.add_many(_group(2, range(CHUNK)))
    await run.flush()
    assert store.completed == [0, 1, 2]  # each by the write holding its last rows
    assert sorted(store.rows) == [(no, i) for no in range(3) for i in range(CHUNK)]
    assert not run.chunks and (run.succeeded, run.failed) == (3 * CHUNK, 0)


async def test_a_resumed_chunk_is_finished_by_its_remaining_rows() -> None:
    store = SlowStore()
    run = _run(store, 1)
    run.finished_in_chunk[0] = 1  # one row was recorded before a crash
    store.rows.append((0, 0))
    await run.add_many(_group(0, range(1, CHUNK)))
    await run.flush()
    assert store.completed == [0] and len(store.rows) == CHUNK
    assert not run.chunks


async def test_a_failed_write_fails_the_run() -> None:
    run = _run(SlowStore(fail=True), 5)
    with pytest.raises(RuntimeError, match="disk full"):
        for seq in range(5 * CHUNK):
            await run.add_many([(_task(seq), OK)])
        await run.flush()
