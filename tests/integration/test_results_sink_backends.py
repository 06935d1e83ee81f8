"""LambdaInvoke's results sink against real backends: Parquet files through moto's S3 server
and the folder store (read back with pyarrow, from the backend's own API), the job runner's
clean-up at job end, and table upserts into a real SQLite file and a real PostgreSQL server.
Tables are read back with sqlite3 / psycopg directly, never through s3batch."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import Env, report_spec
from s3batch.domain.job import Job, JobStatus, Progress
from s3batch.domain.lambda_contract import task_id_for
from s3batch.domain.report import ReportRow, render_row
from s3batch.domain.stores import to_dict
from s3batch.engines.local import LocalEngine
from s3batch.errors import StorageError
from s3batch.operations.base import JobContext, OperationContext
from s3batch.operations.results_sink import (
    GroupCommitSink,
    ResultsSink,
    SinkCleanup,
    SinkDataError,
    SinkRow,
    finalize_sink,
    open_sink,
    with_location,
)
from s3batch.retry import RetryPolicy
from s3batch.service.runner import JobRunner
from s3batch.storage.config import open_store
from s3batch.storage.memory import MemoryStore
from s3batch.store.base import Chunk, FinishedTask
from s3batch.store.sqlite import SqliteJobStore

pytestmark = pytest.mark.integration

JOB = "job-under-test"
#: Bounds every wait here (a commit takes milliseconds, a PostgreSQL one a little more).
WAIT_S = 30.0
VECTOR = [i / 384 for i in range(384)]


def parquet_sink(bucket: str, prefix: str = "emb") -> dict[str, Any]:
    return {"Parquet": {"Bucket": f"arn:aws:s3:::{bucket}", "Prefix": prefix}}


def context(env: Env, store: Any) -> OperationContext:
    job = JobContext(job_id=JOB, account_id="1", region="us-east-1", storage=env.storage)
    return OperationContext(job=job, store=store)


def row(task: str, data: Mapping[str, Any], key: str | None = None, version: str | None = None) -> SinkRow:
    return SinkRow("data", key or f"docs/{task}.txt", version, task, data)


async def write_each(sink: ResultsSink, rows: list[SinkRow]) -> list[str]:
    """One write() per row, all at once; each row's location."""
    answers = await asyncio.wait_for(asyncio.gather(*(sink.write([r]) for r in rows)), WAIT_S)
    return [location for [location] in answers]


def parts_of(env: Env, bucket: str, prefix: str = "emb") -> dict[str, pa.Table]:
    """The job's part files in `bucket`, read through the backend's own API."""
    files = env.report_files(bucket, prefix, JOB)
    return {name: pq.read_table(io.BytesIO(body)) for name, body in files.items()}


# -- Parquet --------------------------------------------------------------------------------


async def test_parquet_files_group_commit_and_read_back(env: Env, bucket_name: str) -> None:
    env.make_bucket(bucket_name)
    store = open_store(env.storage)
    sink = open_sink(parquet_sink(bucket_name), context(env, store))
    try:
        first = [row(f"t{i}", {"embedding": VECTOR, "chars": i}) for i in range(40)]
        locations = await write_each(sink, first)
        second = await write_each(sink, [row("x", {"text": "OCR text, with a comma", "labels": ["a", "b"]})])
    finally:
        await sink.close()
        await store.close()
    files = parts_of(env, bucket_name)
    assert len(files) == 2  # 40 concurrent writes: one file; the later write: another
    name = locations[0].split(f"job-{JOB}/", 1)[1].split("#")[0]
    table = files[name]
    assert {loc.split("#")[0] for loc in locations} == {f"s3://{bucket_name}/emb/job-{JOB}/{name}"}
    assert table.column("task_id").to_pylist() == [f"t{i}" for i in range(40)]
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    assert table.column("embedding").to_pylist()[5] == pytest.approx(VECTOR, rel=1e-6)
    assert table.column("key").to_pylist()[0] == "docs/t0.txt"
    # Files with different data columns read as one table by name.
    other = files[second[0].split(f"job-{JOB}/", 1)[1].split("#")[0]]
    merged = pa.concat_tables([table, other], promote_options="default")  # columns united by name
    assert merged.num_rows == 41 and merged.column("text").to_pylist()[-1] == "OCR text, with a comma"
    assert merged.column("labels").to_pylist()[-1] == ["a", "b"]


async def test_a_failed_file_write_raises_storage_error(env: Env, bucket_name: str) -> None:
    store = open_store(env.storage)
    sink = open_sink(parquet_sink(f"{bucket_name}-missing"), context(env, store))
    try:
        with pytest.raises(StorageError) as caught:
            await asyncio.wait_for(sink.write([row("t", {"n": 1})]), WAIT_S)
        assert caught.value.code == "NoSuchBucket"
    finally:
        await sink.close()
        await store.close()


async def test_finalize_removes_rows_no_report_row_points_at(env: Env, bucket_name: str) -> None:
    env.make_bucket(bucket_name)
    store = open_store(env.storage)
    sink = open_sink(parquet_sink(bucket_name), context(env, store))
    try:
        a, _b_first = await write_each(sink, [row("A", {"n": 1}), row("B", {"n": 2})])
        b, c = await write_each(sink, [row("B", {"n": 20}), row("C", {"n": 3})])
        await write_each(sink, [row("D", {"n": 4})])
        await sink.close()
        cleanup = await finalize_sink(parquet_sink(bucket_name), store, JOB, {"A": a, "B": b, "C": c})
    finally:
        await store.close()
    assert cleanup == SinkCleanup(files_kept=1, files_rewritten=1, files_deleted=1, rows_removed=1)
    tables = parts_of(env, bucket_name).values()
    found = {
        t: n
        for table in tables
        for t, n in zip(*table.select(["task_id", "n"]).to_pydict().values(), strict=True)
    }
    assert found == {"A": 1, "B": 20, "C": 3}


# -- the runner's clean-up at job end --------------------------------------------------------


def completing_job(env: Env, bucket: str, reports: str, done: int) -> Job:
    operation = {"FunctionArn": "arn:aws:lambda:us-east-1:1:function:f", "ResultsSink": parquet_sink(bucket)}
    return Job(
        job_id=JOB, account_id="1", status=JobStatus.COMPLETING, priority=1, creation_time=0.0,
        request={"Operation": {"LambdaInvoke": operation}, "Report": report_spec(reports), "Priority": 1},
        runtime={"storage": to_dict(env.storage), "region": "us-east-1"},
        progress=Progress(total=done),
    )  # fmt: skip


async def test_a_completing_job_cleans_its_sink_before_writing_its_report(env: Env, bucket_name: str) -> None:
    """A job resumed after a crash: A was written twice (the first attempt never recorded),
    B's task failed after writing. At completion only A's recorded row stays."""
    env.make_bucket(bucket_name)
    env.make_bucket(f"{bucket_name}-r")
    objects = open_store(env.storage)
    sink = open_sink(parquet_sink(bucket_name), context(env, objects))
    task_a, task_b = task_id_for(JOB, 0), task_id_for(JOB, 1)  # the tasks at seqs 0 and 1
    try:
        _a_first, _b = await write_each(sink, [row(task_a, {"n": 1}), row(task_b, {"n": 2})])
        [a] = await write_each(sink, [row(task_a, {"n": 10})])
    finally:
        await sink.close()
        await objects.close()
    lines = [
        render_row(ReportRow("data", "docs/A.txt", "", "succeeded", "200", "", with_location("done", a))),
        render_row(ReportRow("data", "docs/B.txt", "", "failed", "200", "PermanentFailure", "bad")),
    ]
    store = SqliteJobStore(env.home / "jobs.db")
    try:
        await store.insert_job(completing_job(env, bucket_name, f"{bucket_name}-r", 2))
        await store.add_chunks(JOB, [Chunk(0, 0, 1, 0, 2)])
        await store.record(JOB, [FinishedTask(0, i, line, i == 0) for i, line in enumerate(lines)], {0: 2})
        job = await JobRunner(store, LocalEngine(1, RetryPolicy()), 1, env.home / "spool").drive(JOB)
    finally:
        await store.close()
    assert job.status is JobStatus.COMPLETE, job.failure_reasons
    [table] = parts_of(env, bucket_name).values()
    assert table.select(["task_id", "n"]).to_pylist() == [{"task_id": task_a, "n": 10}]
    report = env.report_files(f"{bucket_name}-r", "reports", JOB)
    assert "manifest.json" in report and any(a.encode() in body for body in report.values())


async def test_a_sink_that_cannot_be_cleaned_fails_the_job_with_a_reason(local_env: Env) -> None:
    local_env.make_bucket("reports")  # no sink bucket: listing it fails
    store = SqliteJobStore(local_env.home / "jobs.db")
    line = render_row(ReportRow("data", "docs/A.txt", "", "succeeded", "200", "", "done"))
    try:
        await store.insert_job(completing_job(local_env, "sink", "reports", 1))
        await store.add_chunks(JOB, [Chunk(0, 0, 1, 0, 1)])
        await store.record(JOB, [FinishedTask(0, 0, line, True)], {0: 1})
        job = await JobRunner(store, LocalEngine(1, RetryPolicy()), 1, local_env.home / "spool").drive(JOB)
    finally:
        await store.close()
    assert job.status is JobStatus.FAILED
    assert [r.code for r in job.failure_reasons] == ["ResultsSinkCleanupFailed"]
    assert "NoSuchBucket" in job.failure_reasons[0].reason
    assert job.report_manifest is not None  # the report is still written


# -- tables ---------------------------------------------------------------------------------


def sqlite_sink(path: Path, name: str = "emb") -> dict[str, Any]:
    return {"Table": {"Backend": "sqlite", "Path": str(path), "Name": name}}


async def open_table(raw: Mapping[str, Any], local_env: Env) -> GroupCommitSink:
    sink = open_sink(raw, context(local_env, MemoryStore()))  # a table sink uses no object store
    assert isinstance(sink, GroupCommitSink)
    return sink


def sqlite_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


async def test_sqlite_upserts_one_row_per_object_and_replaces_it_whole(
    local_env: Env, tmp_path: Path
) -> None:
    path = tmp_path / "results.sqlite3"
    sink = await open_table(sqlite_sink(path), local_env)
    try:
        first = await write_each(sink, [
            row("a", {"embedding": [0.5, -1.0, 2], "label": "cat", "ok": True, "tags": ["x", "é"]}),
            row("b", {"embedding": VECTOR, "score": 3}),
            row("v", {"label": "versioned"}, key="docs/a.txt", version="v1"),
        ])  # fmt: skip
        assert first == ["table:emb"] * 3 and sink.commits == 1
        # The task retried (or a resumed job re-ran it): same object, new data, one row.
        await write_each(sink, [row("a2", {"label": "dog"}, key="docs/a.txt")])
    finally:
        await sink.close()
    rows = sqlite_rows(
        path,
        "SELECT bucket, key, version_id, task_id, label, ok, tags, score FROM emb ORDER BY key, version_id",
    )
    assert rows == [
        ("data", "docs/a.txt", "", "a2", "dog", None, None, None),  # replaced whole: the rest is NULL
        ("data", "docs/a.txt", "v1", "v", "versioned", None, None, None),
        ("data", "docs/b.txt", "", "b", None, None, None, 3),
    ]
    [(blob,)] = sqlite_rows(path, "SELECT embedding FROM emb WHERE key = 'docs/b.txt'")
    assert list(struct.unpack(f"<{len(VECTOR)}f", blob)) == pytest.approx(VECTOR, rel=1e-6)
    types = {r[1]: r[2] for r in sqlite_rows(path, "PRAGMA table_info(emb)")}
    assert types == {
        "bucket": "TEXT", "key": "TEXT", "version_id": "TEXT", "task_id": "TEXT", "job_id": "TEXT",
        "written_at": "TEXT", "embedding": "BLOB", "label": "TEXT", "ok": "BOOLEAN", "tags": "JSON_TEXT",
        "score": "INTEGER",
    }  # fmt: skip
    [(tags, job_id, written_at)] = sqlite_rows(
        path, "SELECT tags, job_id, written_at FROM emb WHERE task_id='a2'"
    )
    assert (tags, job_id) == (None, JOB) and written_at.endswith("+00:00")


async def test_sqlite_an_existing_tables_types_hold_across_sinks(local_env: Env, tmp_path: Path) -> None:
    path = tmp_path / "results.sqlite3"
    first = await open_table(sqlite_sink(path), local_env)
    try:
        await write_each(first, [row("a", {"n": 1, "tags": ["x"]})])
    finally:
        await first.close()
    again = await open_table(sqlite_sink(path), local_env)  # a resumed job, a new process
    try:
        with pytest.raises(SinkDataError, match="column 'n': the column holds int64; this value is float64"):
            await again.write([row("b", {"n": 1.5})])
        await write_each(again, [row("a", {"n": 2})])
    finally:
        await again.close()
    assert sqlite_rows(path, "SELECT task_id, n, tags FROM emb") == [("a", 2, None)]


async def test_sqlite_a_table_of_another_layout_or_a_missing_folder_fails_clearly(
    local_env: Env, tmp_path: Path
) -> None:
    path = tmp_path / "other.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE emb (id INTEGER PRIMARY KEY, note TEXT)")
    cases = [
        (sqlite_sink(path), "TableSchemaMismatch"),
        (sqlite_sink(tmp_path / "no" / "db"), "TableWriteError"),
    ]
    for raw, code in cases:
        sink = await open_table(raw, local_env)
        try:
            with pytest.raises(StorageError) as caught:
                await sink.write([row("a", {"n": 1})])
            assert caught.value.code == code and not caught.value.retryable
        finally:
            await sink.close()


async def test_postgresql_upserts_native_arrays_without_duplicates(local_env: Env, pg_url: str) -> None:
    raw = {"Table": {"Backend": "postgresql", "Url": pg_url, "Name": "emb"}}
    sink = await open_table(raw, local_env)
    try:
        await write_each(sink, [
            row("a", {"embedding": [0.5, -1, 2], "label": "cat", "ok": True, "tags": ["x", "é"],
                      "score": 0.25}),
            row("b", {"embedding": VECTOR, "n": 7}),
        ])  # fmt: skip
        assert sink.commits == 1
        await write_each(sink, [row("a2", {"label": "dog", "n": 1}, key="docs/a.txt")])
        with pytest.raises(SinkDataError, match="column 'n'"):
            await sink.write([row("c", {"n": "seven"})])
    finally:
        await sink.close()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT key, version_id, task_id, job_id, label, ok, tags, score, n FROM emb ORDER BY key"
        ).fetchall()
        [(embedding,)] = conn.execute("SELECT embedding FROM emb WHERE key = 'docs/b.txt'").fetchall()
        types = dict(conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
            " WHERE attrelid = 'emb'::regclass AND attnum > 0"
        ).fetchall())  # fmt: skip
    assert rows == [
        ("docs/a.txt", "", "a2", JOB, "dog", None, None, None, 1),
        ("docs/b.txt", "", "b", JOB, None, None, None, None, 7),
    ]
    assert embedding == pytest.approx(VECTOR, rel=1e-6)
    assert {n: types[n] for n in ("embedding", "tags", "score", "n", "ok", "written_at")} == {
        "embedding": "real[]", "tags": "text[]", "score": "double precision", "n": "bigint",
        "ok": "boolean", "written_at": "timestamp with time zone",
    }  # fmt: skip


async def test_postgresql_an_unreachable_server_is_retryable(local_env: Env) -> None:
    from tests.conftest import free_port

    raw = {
        "Table": {"Backend": "postgresql", "Url": f"postgresql://u@127.0.0.1:{free_port()}/d", "Name": "e"}
    }
    sink = await open_table(raw, local_env)
    try:
        with pytest.raises(StorageError) as caught:
            await sink.write([row("a", {"n": 1})])
        assert caught.value.code == "TableUnavailable" and caught.value.retryable
    finally:
        await sink.close()
