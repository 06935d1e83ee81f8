"""_Run writes results behind the engine (issue 6): one write at a time, bounded backlog,
every row recorded once, chunks compacted once full, and a failed write still fails the run."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from s3batch.domain.task import Task, TaskResult
from s3batch.service.runner import FLUSH_MAX_ROWS, _Run
from s3batch.store.base import Chunk, FinishedTask

CHUNK = 1000
OK = TaskResult.ok()


class SlowStore:
    """Records rows after a pause; checks that writes never overlap."""

    def __init__(self, fail: bool = False) -> None:
        self.rows: list[tuple[int, int]] = []
        self.completed: list[int] = []
        self.writing = False
        self.max_pending_rows = 0
        self.fail = fail

    async def record(self, job_id: str, finished: Sequence[FinishedTask]) -> None:
        assert not self.writing, "two writes at once"
        self.writing = True
        await asyncio.sleep(0.01)
        self.writing = False
        if self.fail:
            raise RuntimeError("disk full")
        self.rows.extend((f.chunk_no, f.idx) for f in finished)

    async def complete_chunk(self, job_id: str, chunk_no: int, n_tasks: int) -> None:
        self.completed.append(chunk_no)


def _run(store: SlowStore, n_chunks: int) -> _Run:
    run = _Run(store, "j")  # type: ignore[arg-type]
    for no in range(n_chunks):
        run.open_chunk(Chunk(no, no * CHUNK, 1 + no * CHUNK, 0, CHUNK), {})
    return run


async def test_every_row_is_written_once_and_chunks_complete_once() -> None:
    store = SlowStore()
    run = _run(store, 5)
    for seq in range(5 * CHUNK):
        await run.add(Task(seq=seq, bucket="b", raw_key="k", key="k"), OK)
        assert len(run.buffer) <= FLUSH_MAX_ROWS  # backpressure bounds the backlog
    await run.flush()
    assert sorted(store.rows) == [(no, i) for no in range(5) for i in range(CHUNK)]
    assert sorted(store.completed) == [0, 1, 2, 3, 4]
    assert not run.chunks and run.writing is None


async def test_a_failed_write_fails_the_run() -> None:
    run = _run(SlowStore(fail=True), 5)
    with pytest.raises(RuntimeError, match="disk full"):
        for seq in range(5 * CHUNK):
            await run.add(Task(seq=seq, bucket="b", raw_key="k", key="k"), OK)
        await run.flush()
