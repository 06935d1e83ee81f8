"""A task's report line is rendered once, when it finishes, and stays that text: the job store
keeps it beside its status, compacts finished chunks into one blob per status, and hands the
completion report the stored bytes. Stores an older version wrote (lines without a status,
chunks compacted into one interleaved blob) read and resume the same way."""

from __future__ import annotations

import sqlite3
import zlib
from importlib import resources
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from s3batch.domain.job import Job, JobStatus
from s3batch.domain.report import ReportRow, render_row, render_rows, report_line, report_tail
from s3batch.domain.task import Task, TaskResult, TaskStatus
from s3batch.store.base import Chunk, FinishedTask
from s3batch.store.sqlite import SqliteJobStore, _statements

#: Examples per property: enough to find the usual edge cases, quick enough for every run.
EXAMPLES = 300
#: Report fields: any text without NUL (csv cannot read NUL back) or surrogates, mostly plain,
#: with the characters that need quoting mixed in.
TEXT = st.one_of(
    st.sampled_from(["bkt", "k/ü", "", "Successful", "a%2Cb"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40),
    st.sampled_from([",", '"', "\r", "\n", "a,b\r\n", 'say "hi"']),
)
BOTH = ("succeeded", "failed")

OK = ReportRow("b", "ok-1", "", "succeeded", "200", "", "Successful")
BAD = ReportRow("b", "a,b", "v1", "failed", "", "InternalError", 'said "no"\r\nand\rmore')
OK2 = ReportRow("b", "ok,2", "", "succeeded", "204", "", "Successful")
BAD2 = ReportRow("b", "k%2Cx", "", "failed", "404", "NoSuchKey", "")


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    TEXT,
    TEXT,
    st.one_of(st.none(), TEXT),
    st.sampled_from(TaskStatus),
    st.one_of(st.none(), st.integers(100, 599)),
    TEXT,
    TEXT,
)
def test_a_line_is_the_rendered_row(
    bucket: str, key: str, version: str | None, status: TaskStatus, http: int | None, code: str, message: str
) -> None:
    task = Task(seq=0, bucket=bucket, raw_key=key, key=key, version_id=version)
    result = TaskResult(status=status, http_status=http, error_code=code, message=message)
    assert report_line(task, report_tail(result)) == render_row(ReportRow.of(task, result))


def _finished(chunk_no: int, idx: int, row: ReportRow) -> FinishedTask:
    return FinishedTask(chunk_no, idx, render_row(row), row.status == "succeeded")


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


def _grouped(rows: list[ReportRow]) -> dict[str, bytes]:
    """The report files' share of `rows`: each status's lines, rendered, in order."""
    out = {s: "".join(render_row(r) for r in rows if r.status == s).encode() for s in BOTH}
    return {s: text for s, text in out.items() if text}


async def _report(store: SqliteJobStore, statuses: tuple[str, ...] = BOTH) -> list[dict[str, bytes]]:
    return [dict(chunk) async for chunk in store.report_lines("j", statuses)]


async def _rows(store: SqliteJobStore) -> list[ReportRow]:
    return [r async for rows in store.report_rows("j") for r in rows]


def _chunk_counts(path: Path) -> list[tuple[int, int, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT chunk_no, succeeded, failed FROM chunks ORDER BY chunk_no").fetchall()


async def test_lines_are_stored_and_reported_as_rendered_grouped_by_status(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.db")
    await store.insert_job(_job())
    await store.add_chunks("j", [Chunk(0, 0, 1, 0, 4), Chunk(1, 4, 5, 60, 2), Chunk(2, 6, 7, 90, 2)])
    mixed, succeeded, unfinished = [OK, BAD, OK2, BAD2], [OK, OK2], [BAD2]
    try:
        await store.record("j", [_finished(0, 1, BAD)])  # a row first stored on its own
        finishing = [_finished(0, i, r) for i, r in enumerate(mixed) if i != 1][::-1]
        progress = await store.record(
            "j", [*finishing, *(_finished(1, i, r) for i, r in enumerate(succeeded)), _finished(2, 1, BAD2)],
            {0: 4, 1: 2},
        )  # fmt: skip
        assert (progress.succeeded, progress.failed) == (4, 3)
        assert _chunk_counts(tmp_path / "jobs.db") == [(0, 2, 2), (1, 2, 0), (2, 0, 0)]
        # Finished chunks from their blobs, the unfinished one from its recorded lines.
        assert await _report(store) == [_grouped(mixed), _grouped(succeeded), _grouped(unfinished)]
        failed_only = await _report(store, ("failed",))
        assert failed_only == [{"failed": _grouped(mixed)["failed"]}, {}, _grouped(unfinished)]
        # Single rows come back parsed, in manifest order.
        assert await _rows(store) == [*mixed, *succeeded, *unfinished]
    finally:
        await store.close()


def _older_store(path: Path) -> None:
    """A job store as the version before statuses were stored beside lines left it: chunk 0
    compacted into one blob of interleaved lines, chunk 1 with two lines recorded, chunk 2
    with none."""
    conn = sqlite3.connect(path, isolation_level=None)
    for number, name in enumerate(("0001_initial.sql", "0002_task_lines.sql"), start=1):
        script = resources.files("s3batch.store.migrations").joinpath(name).read_text()
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
    chunks = [("j", 0, 0, 1, 0, 4), ("j", 1, 4, 5, 60, 3), ("j", 2, 7, 8, 99, 1)]
    conn.executemany(
        "INSERT INTO chunks (job_id, chunk_no, first_seq, first_line, byte_offset, n_tasks) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        chunks,
    )
    blob = zlib.compress(render_rows([OK, BAD, OK2, BAD2]).encode())
    conn.execute("UPDATE chunks SET done=1, succeeded=2, failed=2, results=? WHERE chunk_no=0", (blob,))
    conn.executemany(
        "INSERT INTO task_lines (job_id, chunk_no, idx, line) VALUES ('j', 1, ?, ?)",
        [(0, render_row(BAD)), (2, render_row(OK))],
    )
    conn.close()


async def test_an_older_store_reads_and_its_unfinished_chunk_resumes(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    _older_store(path)
    store = SqliteJobStore(path)  # applies the newer migrations
    await store.insert_job(_job())
    try:
        assert await store.chunk_progress("j", 1) == {0: render_row(BAD), 2: render_row(OK)}
        before = [[OK, BAD, OK2, BAD2], [BAD, OK]]
        assert await _report(store) == [_grouped(rows) for rows in before] + [{}]
        assert await _rows(store) == [row for rows in before for row in rows]
        # Resume: the missing task of chunk 1 finishes it, chunk 2's only task finishes it.
        progress = await store.record("j", [_finished(1, 1, BAD2), _finished(2, 0, OK2)], {1: 3, 2: 1})
        assert (progress.succeeded, progress.failed) == (1, 1)
        assert _chunk_counts(path) == [(0, 2, 2), (1, 1, 2), (2, 1, 0)]
        after = [[OK, BAD, OK2, BAD2], [BAD, BAD2, OK], [OK2]]
        assert await _report(store) == [_grouped(rows) for rows in after]
        assert await _report(store, ("failed",)) == [
            {"failed": _grouped(after[0])["failed"]},
            {"failed": _grouped(after[1])["failed"]},
            {},
        ]
        assert await _rows(store) == [row for rows in after for row in rows]
    finally:
        await store.close()
