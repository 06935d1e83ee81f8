"""A job in progress when s3batch is upgraded: its job store was last written by the version
that kept report lines without their status and compacted each chunk into one blob of
interleaved lines. The upgraded version migrates the file, resumes the job where it stopped
(no recorded task runs again), and reports every task exactly once, with the counts right."""

from __future__ import annotations

import sqlite3
import zlib
from importlib import resources
from pathlib import Path

import pytest

import s3batch.service.progress as progress
from conftest import Env, read_report, report_spec
from s3batch.domain.report import ReportRow, render_row, render_rows
from s3batch.store.sqlite import _statements

pytestmark = pytest.mark.integration

BUCKET = "data"
KEYS = [f"k{i:02d}" for i in range(12)]
MISSING = {"k05", "k09"}
#: Tasks per chunk in this test: chunks k00-k03, k04-k07, k08-k11.
CHUNK_TASKS = 4
#: The message of rows recorded before the upgrade: a task that ran again would say otherwise.
EARLIER = "recorded before the upgrade"
#: Tables later versions added (migration 0004: timeline samples), absent from the older store.
NEWER_TABLES = ("job_samples",)
#: Columns the upgraded version added (migration 0003), absent from the older store.
NEWER_COLUMNS = {"task_lines": ["succeeded"], "chunks": ["succeeded_lines", "failed_lines", "statuses"]}


def _row(key: str, succeeded: bool) -> ReportRow:
    if succeeded:
        return ReportRow(BUCKET, key, "", "succeeded", "200", "", EARLIER)
    return ReportRow(BUCKET, key, "", "failed", "503", "SlowDown", EARLIER)


def _columns(conn: sqlite3.Connection) -> dict[str, list[str]]:
    return {
        t: [r[1] for r in conn.execute(f"PRAGMA table_info({t})")] for t in ("jobs", "chunks", "task_lines")
    }


def _older_columns(tmp_path: Path) -> dict[str, list[str]]:
    """The tables as migrations 0001 and 0002 alone create them."""
    conn = sqlite3.connect(tmp_path / "older.db", isolation_level=None)
    for name in ("0001_initial.sql", "0002_task_lines.sql"):
        for statement in _statements(resources.files("s3batch.store.migrations").joinpath(name).read_text()):
            conn.execute(statement)
    try:
        return _columns(conn)
    finally:
        conn.close()


def _as_the_older_version_left_it(db: Path, job_id: str, tmp_path: Path) -> None:
    """Rewrite the store of a prepared job into the older version's schema and give it the
    progress that version records: chunk 0 finished (one interleaved blob, k02 failed), chunk 1
    with k04 and k05 recorded as lines without a status."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for table, columns in NEWER_COLUMNS.items():
            for column in columns:
                conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        for table in NEWER_TABLES:
            conn.execute(f"DROP TABLE {table}")
        conn.execute("PRAGMA user_version = 2")
        assert _columns(conn) == _older_columns(tmp_path)
        first = [_row(k, k != "k02") for k in KEYS[:4]]
        blob = zlib.compress(render_rows(first).encode())
        conn.execute(
            "UPDATE chunks SET done=1, succeeded=3, failed=1, results=? WHERE job_id=? AND chunk_no=0",
            (blob, job_id),
        )
        conn.executemany(
            "INSERT INTO task_lines (job_id, chunk_no, idx, line) VALUES (?, 1, ?, ?)",
            [(job_id, 0, render_row(_row("k04", True))), (job_id, 1, render_row(_row("k05", False)))],
        )
        conn.execute("UPDATE jobs SET succeeded=4, failed=2 WHERE job_id=?", (job_id,))
    finally:
        conn.close()


def test_a_job_in_progress_across_the_upgrade_resumes_and_reports_each_task_once(
    local_env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress, "CHUNK_TASKS", CHUNK_TASKS)
    env = local_env
    env.make_bucket(BUCKET)
    for key in KEYS:
        if key not in MISSING:
            env.put(BUCKET, key, key.encode())
    batch = env.batch()
    job_id = batch.create_job(
        Operation={"S3PutObjectCopy": {"TargetResource": f"arn:aws:s3:::{BUCKET}", "TargetKeyPrefix": "c/"}},
        Manifest=env.manifest(BUCKET, [(BUCKET, k) for k in KEYS]),
        Report=report_spec(BUCKET),
        Priority=1,
        ConfirmationRequired=True,
    )["JobId"]
    batch.run_until_idle()  # Preparing cuts the chunks, then the job waits for confirmation
    assert batch.describe_job(JobId=job_id)["Job"]["Status"] == "Suspended"
    batch.close()

    _as_the_older_version_left_it(batch.settings.db_path, job_id, tmp_path)

    batch.update_job_status(JobId=job_id, RequestedJobStatus="Ready")  # opens, so migrates, the store
    batch.run_until_idle()
    job = batch.describe_job(JobId=job_id)["Job"]
    assert job["Status"] == "Complete"
    summary = job["ProgressSummary"]
    assert (summary["NumberOfTasksSucceeded"], summary["NumberOfTasksFailed"]) == (9, 3)

    report = read_report(env, BUCKET, job_id)
    reported = [r[1] for rows in report["rows"].values() for r in rows]
    assert sorted(reported) == KEYS  # every task exactly once
    failed = {r[1]: r for r in report["rows"]["failed"]}
    assert set(failed) == {"k02", "k05", "k09"}
    assert failed["k09"][5] == "NoSuchKey"  # the one failure of this version's run
    earlier = {r[1] for rows in report["rows"].values() for r in rows if r[6] == EARLIER}
    assert earlier == {"k00", "k01", "k02", "k03", "k04", "k05"}
    # Recorded tasks did not run again: only the others made their copies.
    copied = {k for k in KEYS if env.get(BUCKET, f"c/{k}") is not None}
    assert copied == {"k06", "k07", "k08", "k10", "k11"}
    # Each status's report file lists its tasks in manifest order.
    assert [r[1] for r in report["rows"]["succeeded"]] == [
        "k00",
        "k01",
        "k03",
        "k04",
        "k06",
        "k07",
        "k08",
        "k10",
        "k11",
    ]
    assert list(failed) == ["k02", "k05", "k09"]
    assert [r.key for r in batch.report_rows(job_id)] == KEYS  # the Python API: manifest order
    batch.close()
