"""Job store rows as report lines (migration 0002, issue 6): round trip through record,
resume and compaction, and conversion of rows an older version wrote as JSON."""

from __future__ import annotations

import json
import sqlite3
from importlib import resources
from pathlib import Path

from s3batch.domain.job import Job, JobStatus
from s3batch.domain.report import ReportRow
from s3batch.store.base import Chunk, FinishedTask
from s3batch.store.sqlite import SqliteJobStore, _statements

TRICKY = [
    ReportRow("b", "plain", "", "succeeded", "200", "", "Successful"),
    ReportRow("b", "a,b", "v1", "failed", "", "InternalError", 'said "no"\r\nand\rmore'),
    ReportRow("b", "k%2Cx", "", "failed", "404", "NoSuchKey", ""),
]


async def test_lines_round_trip_through_resume_and_compaction(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    job = Job(
        job_id="j",
        account_id="1",
        status=JobStatus.ACTIVE,
        priority=1,
        request={},
        runtime={},
        creation_time=0.0,
    )
    await store.insert_job(job)
    await store.add_chunks("j", [Chunk(0, 0, 1, 0, len(TRICKY))])
    try:
        await store.record("j", [FinishedTask(0, i, r) for i, r in enumerate(TRICKY)])
        assert await store.chunk_progress("j", 0) == dict(enumerate(TRICKY))
        await store.complete_chunk("j", 0, len(TRICKY))
        assert await store.chunk_progress("j", 0) == {}
        assert [r async for rows in store.report_rows("j") for r in rows] == TRICKY
        assert (await store.get_job("j")).progress.failed == 2
    finally:
        await store.close()


def test_json_rows_of_an_older_store_become_report_lines(tmp_path: Path) -> None:
    from s3batch.domain.report import render_row

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
