"""Job store rows as report lines (migration 0002): round trip through record,
resume and compaction, and conversion of rows an older version wrote as JSON."""

from __future__ import annotations

import json
import sqlite3
from importlib import resources
from pathlib import Path

import pytest

from s3batch.domain.job import Job, JobStatus
from s3batch.domain.report import ReportRow, render_row
from s3batch.store.base import Chunk, FinishedTask
from s3batch.store.sqlite import SqliteJobStore, _statements

TRICKY = [
    ReportRow("b", "plain", "", "succeeded", "200", "", "Successful"),
    ReportRow("b", "a,b", "v1", "failed", "", "InternalError", 'said "no"\r\nand\rmore'),
    ReportRow("b", "k%2Cx", "", "failed", "404", "NoSuchKey", ""),
]


def _finished(chunk_no: int, idx: int, row: ReportRow) -> FinishedTask:
    """`row` recorded as the runner records it: its report line and status."""
    return FinishedTask(chunk_no, idx, render_row(row), row.status == "succeeded")


def _lines(rows: dict[int, ReportRow]) -> dict[int, str]:
    return {idx: render_row(row) for idx, row in rows.items()}


def _job() -> Job:
    return Job(
        job_id="j",
        account_id="1",
        status=JobStatus.ACTIVE,
        priority=1,
        request={},
        runtime={},
        creation_time=0.0,
    )


async def test_lines_round_trip_through_resume_and_compaction(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    await store.insert_job(_job())
    await store.add_chunks("j", [Chunk(0, 0, 1, 0, len(TRICKY))])
    try:
        await store.record("j", [_finished(0, i, r) for i, r in enumerate(TRICKY)])
        assert await store.chunk_progress("j", 0) == _lines(dict(enumerate(TRICKY)))
        await store.complete_chunk("j", 0, len(TRICKY))
        assert await store.chunk_progress("j", 0) == {}
        assert [r async for rows in store.report_rows("j") for r in rows] == TRICKY
        assert (await store.get_job("j")).progress.failed == 2
    finally:
        await store.close()


async def test_chunks_a_record_finishes_are_stored_compacted_in_the_same_write(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    await store.insert_job(_job())
    chunks = [Chunk(0, 0, 1, 0, len(TRICKY)), Chunk(1, 3, 4, 99, 1), Chunk(2, 4, 5, 120, 1)]
    await store.add_chunks("j", chunks)
    try:
        rows = [_finished(0, i, r) for i, r in enumerate(TRICKY)][::-1]  # in any order
        progress = await store.record("j", [*rows, _finished(1, 0, TRICKY[0])], {0: 3, 1: 1})
        assert (progress.succeeded, progress.failed) == (2, 2)
        assert [c.chunk_no for c in await store.pending_chunks("j")] == [2]  # the others are done
        assert await store.chunk_progress("j", 0) == {}  # no per-task rows were left behind
        # Chunk 2 has not finished: the report holds the finished chunks' rows, in order.
        assert [r async for rows in store.report_rows("j") for r in rows] == [*TRICKY, TRICKY[0]]
        # Recording a done chunk again would count its tasks twice: refused, nothing changes.
        again = [_finished(1, 0, TRICKY[0]), _finished(2, 0, TRICKY[0])]
        with pytest.raises(RuntimeError, match="chunk 1 of job j is not open"):
            await store.record("j", again, {1: 1, 2: 1})
        assert [c.chunk_no for c in await store.pending_chunks("j")] == [2]
        assert (await store.get_job("j")).progress.succeeded == 2
    finally:
        await store.close()


async def test_a_chunk_finished_across_writes_keeps_its_earlier_rows(tmp_path: Path) -> None:
    """Rows recorded one write (or one crash) earlier and the rows that finish the chunk end up
    in one compacted blob, in task order; a write that does not finish it is refused."""
    store = SqliteJobStore(tmp_path / "jobs.db")
    await store.insert_job(_job())
    await store.add_chunks("j", [Chunk(0, 0, 1, 0, len(TRICKY))])
    try:
        await store.record("j", [_finished(0, 1, TRICKY[1])])
        with pytest.raises(RuntimeError, match="2 results for 3 tasks"):
            await store.record("j", [_finished(0, 2, TRICKY[2])], {0: 3})
        assert await store.chunk_progress("j", 0) == _lines({1: TRICKY[1]})  # rolled back
        progress = await store.record("j", [_finished(0, 2, TRICKY[2]), _finished(0, 0, TRICKY[0])], {0: 3})
        assert (progress.succeeded, progress.failed) == (1, 2)
        assert await store.chunk_progress("j", 0) == {}
        assert [r async for rows in store.report_rows("j") for r in rows] == TRICKY
        assert await store.pending_chunks("j") == []
    finally:
        await store.close()


def test_json_rows_of_an_older_store_become_report_lines(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    conn = sqlite3.connect(path, isolation_level=None)
    first = resources.files("s3batch.store.migrations").joinpath("0001_initial.sql").read_text()
    for statement in _statements(first):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.executemany(
        "INSERT INTO task_results (job_id, chunk_no, idx, row) VALUES (?, ?, ?, ?)",
        [("j", 4, i, json.dumps(r.as_list())) for i, r in enumerate(TRICKY)],
    )
    conn.close()

    SqliteJobStore(path)  # applies 0002
    conn = sqlite3.connect(path)
    lines = conn.execute("SELECT idx, line FROM task_lines WHERE job_id='j' AND chunk_no=4 ORDER BY idx")
    assert [line for _, line in lines] == [render_row(r) for r in TRICKY]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "task_results" not in tables
    conn.close()
