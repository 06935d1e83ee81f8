"""LambdaInvoke's results sink (operations/results_sink*.py) on the memory store: parameter
validation, group commit, the column-type rules, and the clean-up that leaves exactly the rows
a job's report points at."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from s3batch.domain.job import Job, JobStatus
from s3batch.domain.lambda_contract import task_id_for
from s3batch.domain.report import ReportRow, render_row
from s3batch.errors import BadRequest, StorageError
from s3batch.operations.base import JobContext, OperationContext
from s3batch.operations.results_sink import (
    ParquetTarget,
    SinkCleanup,
    SinkDataError,
    SinkRow,
    finalize_sink,
    location_reader,
    open_sink,
    parquet_location,
    validate_sink,
    with_location,
)
from s3batch.operations.results_sink_columns import MAX_COLUMN_NAME_BYTES
from s3batch.operations.results_sink_parquet import ParquetSink
from s3batch.service.sink_cleanup import finalize_results_sink
from s3batch.storage.config import LocalConfig
from s3batch.storage.memory import MemoryStore
from s3batch.store.base import Chunk, FinishedTask
from s3batch.store.sqlite import SqliteJobStore

BUCKET = "results"
JOB = "job1"
SINK: dict[str, Any] = {"Parquet": {"Bucket": f"arn:aws:s3:::{BUCKET}", "Prefix": "emb"}}
FOLDER = f"emb/job-{JOB}/"
FUNCTION = "arn:aws:lambda:us-east-1:1:function:f"
#: Bounds every wait in these tests (a commit takes milliseconds).
WAIT_S = 10.0


async def make_store() -> MemoryStore:
    store = MemoryStore()
    await store.create_bucket(BUCKET)
    return store


def sink_on(store: MemoryStore, **group: Any) -> ParquetSink:
    return ParquetSink(ParquetTarget(BUCKET, "emb"), store, JOB, **group)


def row(task: str, data: Mapping[str, Any], key: str | None = None, version: str | None = None) -> SinkRow:
    return SinkRow("data", key or f"{task}.txt", version, task, data)


async def parts(store: MemoryStore, folder: str = FOLDER) -> dict[str, pa.Table]:
    """Every part file under `folder`, read back with pyarrow."""
    keys = [info.key async for info in store.list_objects(BUCKET, folder)]
    return {key: pq.read_table(io.BytesIO(await store.get_bytes(BUCKET, key))) for key in keys}


async def write_all(sink: ParquetSink, rows: list[SinkRow]) -> list[list[str]]:
    """One write() per row, all at once (as a job's concurrent tasks make them)."""
    return await asyncio.wait_for(asyncio.gather(*(sink.write([r]) for r in rows)), WAIT_S)


# -- validation -----------------------------------------------------------------------------

BAD_SINKS = [
    ("parquet", "LambdaInvoke.ResultsSink must be an object with exactly one of Parquet, Table"),
    ({}, "LambdaInvoke.ResultsSink must be an object with exactly one of Parquet, Table"),
    ({"Parquet": {}, "Table": {}}, "LambdaInvoke.ResultsSink must be an object with exactly one of"),
    ({"Csv": {}}, "LambdaInvoke.ResultsSink must be an object with exactly one of Parquet, Table"),
    ({"Parquet": "b"}, "LambdaInvoke.ResultsSink.Parquet must be an object"),
    ({"Parquet": {}}, "LambdaInvoke.ResultsSink.Parquet.Bucket must be a bucket ARN"),
    ({"Parquet": {"Bucket": "results"}}, "LambdaInvoke.ResultsSink.Parquet.Bucket must be a bucket ARN"),
    (
        {"Parquet": {"Bucket": "arn:aws:s3:::b/k"}},
        "LambdaInvoke.ResultsSink.Parquet.Bucket must be a bucket ARN",
    ),
    (
        {"Parquet": {"Bucket": "arn:aws:s3:::b", "Prefix": 3}},
        "LambdaInvoke.ResultsSink.Parquet.Prefix must be",
    ),
    (
        {"Parquet": {"Bucket": "arn:aws:s3:::b", "Prefix": "a b"}},
        "LambdaInvoke.ResultsSink.Parquet.Prefix may",
    ),
    (
        {"Parquet": {"Bucket": "arn:aws:s3:::b", "Prefix": "a//b"}},
        "LambdaInvoke.ResultsSink.Parquet.Prefix may",
    ),
    ({"Parquet": {"Bucket": "arn:aws:s3:::b", "Format": "x"}}, "LambdaInvoke.ResultsSink.Parquet: unknown"),
    ({"Table": {"Backend": "mysql", "Name": "t"}}, "LambdaInvoke.ResultsSink.Table.Backend must be one of"),
    ({"Table": {"Backend": "sqlite", "Path": "/x.db"}}, "LambdaInvoke.ResultsSink.Table.Name must be"),
    (
        {"Table": {"Backend": "sqlite", "Path": "x.db", "Name": "t"}},
        "LambdaInvoke.ResultsSink.Table.Path must be",
    ),
    (
        {"Table": {"Backend": "sqlite", "Url": "postgresql://u@h/d", "Name": "t"}},
        "LambdaInvoke.ResultsSink.Table.Url is for Backend postgresql",
    ),
    (
        {"Table": {"Backend": "postgresql", "Url": "postgresql://u:secret@h/d", "Name": "t"}},
        "LambdaInvoke.ResultsSink.Table.Url: must not contain a password",
    ),
    (
        {"Table": {"Backend": "postgresql", "Path": "/x.db", "Name": "t"}},
        "LambdaInvoke.ResultsSink.Table.Path is for Backend sqlite",
    ),
]


@pytest.mark.parametrize(("raw", "message"), BAD_SINKS)
def test_bad_sink_parameters_name_the_field(raw: object, message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        validate_sink(raw)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    "raw",
    [
        SINK,
        {"Parquet": {"Bucket": "arn:aws:s3:::results"}},
        {"Parquet": {"Bucket": "arn:aws:s3:::results", "Prefix": "a/b-c_(1)/"}},
        {"Table": {"Backend": "sqlite", "Path": "/tmp/r.db", "Name": "emb"}},
        {"Table": {"Backend": "postgresql", "Url": "postgresql://u@h:5432/d?sslmode=require", "Name": "e"}},
    ],
)
def test_good_sink_parameters_pass(raw: Mapping[str, Any]) -> None:
    validate_sink(raw)


async def test_open_sink_builds_the_named_sink() -> None:
    store = await make_store()
    ctx = OperationContext(
        job=JobContext(job_id=JOB, account_id="1", region="us-east-1", storage=LocalConfig(root="/x")),
        store=store,
    )
    sink = open_sink(SINK, ctx)
    assert isinstance(sink, ParquetSink) and sink.folder == FOLDER
    await sink.close()


# -- group commit ---------------------------------------------------------------------------


async def test_concurrent_writes_make_one_file_and_return_once_it_is_written() -> None:
    store = await make_store()
    sink = sink_on(store)
    rows = [row(f"t{i}", {"n": i}) for i in range(50)]
    locations = await write_all(sink, rows)
    files = await parts(store)
    assert sink.commits == 1 and len(files) == 1  # written before any write() returned
    [(key, table)] = files.items()
    assert [loc for [loc] in locations] == [parquet_location(BUCKET, key, f"t{i}") for i in range(50)]
    assert table.column("task_id").to_pylist() == [f"t{i}" for i in range(50)]
    assert table.column("n").to_pylist() == list(range(50))
    assert set(table.column("job_id").to_pylist()) == {JOB}
    assert table.schema.field("written_at").type == pa.timestamp("us", tz="UTC")
    await sink.close()


async def test_the_row_cap_and_the_interval_close_a_batch() -> None:
    store = await make_store()
    sink = sink_on(store, max_rows=10)
    await write_all(sink, [row(f"t{i}", {"n": i}) for i in range(25)])
    assert sink.commits == 3  # 10 + 10 at the cap, the last 5 at the interval
    await sink.write([row("late", {"n": 1})])  # after the batches above: its own file
    assert sink.commits == 4 and len(await parts(store)) == 4
    await sink.close()


async def test_many_waiting_writes_commit_early_once_no_more_come() -> None:
    """When every task in flight waits in the sink, waiting out the interval only idles them;
    a few waiting writes do wait it out, so tasks that finish one by one still share files."""
    store = await make_store()
    sink = sink_on(store, interval_s=WAIT_S, early_rows=4)  # the interval would outlast the test
    await write_all(sink, [row(f"t{i}", {"n": i}) for i in range(6)])
    assert sink.commits == 1
    few = asyncio.ensure_future(write_all(sink, [row(f"u{i}", {"n": i}) for i in range(3)]))
    done, _ = await asyncio.wait([few], timeout=0.2)
    assert not done and sink.commits == 1
    await sink.close()
    assert len(await few) == 3 and sink.commits == 2


async def test_close_commits_what_waits() -> None:
    store = await make_store()
    sink = sink_on(store, interval_s=WAIT_S)  # only close() ends this batch
    pending = asyncio.ensure_future(sink.write([row("t", {"n": 1})]))
    await asyncio.sleep(0)
    await asyncio.wait_for(sink.close(), WAIT_S)
    assert (await pending)[0].startswith(f"s3://{BUCKET}/{FOLDER}part-")
    with pytest.raises(RuntimeError, match="closed"):
        await sink.write([row("u", {"n": 1})])


async def test_a_failed_file_write_fails_every_waiting_write_with_the_storage_error() -> None:
    store = await make_store()
    store.fail("put_bytes", StorageError("SlowDown", "reduce your rate", 503, retryable=True))
    sink = sink_on(store)
    outcomes = await asyncio.gather(
        *(sink.write([row(f"t{i}", {"n": i})]) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(o, StorageError) and o.code == "SlowDown" and o.retryable for o in outcomes)
    assert await parts(store) == {}
    assert len(await sink.write([row("t0", {"n": 0})])) == 1  # the sink goes on
    await sink.close()


async def test_a_cancelled_write_leaves_its_batch() -> None:
    store = await make_store()
    sink = sink_on(store)
    gone = asyncio.ensure_future(sink.write([row("gone", {"n": 1})]))
    kept = asyncio.ensure_future(sink.write([row("kept", {"n": 2})]))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.wait_for(kept, WAIT_S)
    [table] = (await parts(store)).values()
    assert table.column("task_id").to_pylist() == ["kept"]
    await sink.close()


async def test_one_task_twice_in_a_batch_is_one_row_and_both_writers_get_it() -> None:
    store = await make_store()
    sink = sink_on(store)
    first, second = await write_all(sink, [row("t", {"n": 1}), row("t", {"n": 2})])
    assert first == second
    [table] = (await parts(store)).values()
    assert table.column("n").to_pylist() == [2]  # the later attempt wins
    await sink.close()


async def test_a_version_id_and_the_location_text() -> None:
    store = await make_store()
    sink = sink_on(store)
    [[location]] = await write_all(sink, [row("id/with+odd=chars", {"n": 1}, version="v1")])
    assert location.endswith("#task=id%2Fwith%2Bodd%3Dchars")
    assert " " not in location and "," not in location and '"' not in location
    [table] = (await parts(store)).values()
    assert table.column("version_id").to_pylist() == ["v1"]
    await sink.close()


# -- columns --------------------------------------------------------------------------------


async def test_differing_columns_are_united_with_nulls_and_typed() -> None:
    store = await make_store()
    sink = sink_on(store)
    rows = [
        row("a", {"vec": [1, 2.5, 3], "n": 1, "label": "cat", "ok": True}),
        row("b", {"vec": [0.25, 0, 1], "score": 0.5, "tags": ["x", "y"], "none": None}),
        row("c", {"n": 2.5, "tags": [], "empty": []}),
    ]
    await write_all(sink, rows)
    [table] = (await parts(store)).values()
    schema = table.schema
    expected = {
        "vec": pa.list_(pa.float32()), "n": pa.float64(), "label": pa.string(), "ok": pa.bool_(),
        "score": pa.float64(), "tags": pa.list_(pa.string()), "none": pa.null(),
        "empty": pa.list_(pa.float32()),
    }  # fmt: skip
    assert schema.names == ["bucket", "key", "version_id", "task_id", "job_id", "written_at", *expected]
    assert {name: schema.field(name).type for name in expected} == expected
    data = table.to_pydict()
    assert data["vec"] == [[1.0, 2.5, 3.0], [0.25, 0.0, 1.0], None]
    assert data["n"] == [1.0, None, 2.5]  # an integer joins a float column
    assert data["tags"] == [None, ["x", "y"], []]
    assert data["version_id"] == [None, None, None]
    await sink.close()


async def test_a_vector_of_384_floats_is_float32() -> None:
    store = await make_store()
    sink = sink_on(store)
    vector = [i / 384 for i in range(384)]
    await sink.write([row("t", {"embedding": vector})])
    [table] = (await parts(store)).values()
    assert table.schema.field("embedding").type == pa.list_(pa.float32())
    assert table.column("embedding").to_pylist()[0] == pytest.approx(vector, rel=1e-6)
    await sink.close()


async def test_a_type_clash_fails_only_the_write_that_brings_it() -> None:
    store = await make_store()
    sink = sink_on(store)
    outcomes = await asyncio.gather(
        sink.write([row("a", {"vec": [1.0, 2.0]})]),
        sink.write([row("b", {"vec": "not a vector"}), row("c", {"vec": [3.0]})]),
        sink.write([row("d", {"vec": [4.0]})]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], SinkDataError)
    assert (
        str(outcomes[1])
        == "resultData of data/b.txt: column 'vec': the column holds list<float32>; this value is string"
    )
    assert isinstance(outcomes[0], list) and isinstance(outcomes[2], list)
    [table] = (await parts(store)).values()
    assert table.column("task_id").to_pylist() == ["a", "d"]  # nothing of the refused write
    await sink.close()


async def test_an_integer_column_once_written_does_not_widen() -> None:
    store = await make_store()
    sink = sink_on(store)
    await sink.write([row("a", {"n": 1})])
    with pytest.raises(SinkDataError, match="column 'n': the column holds int64; this value is float64"):
        await sink.write([row("b", {"n": 1.5})])
    await sink.write([row("c", {"n": 2})])
    await sink.close()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({"o": {"a": 1}}, "column 'o': objects are not supported"),
        ({"l": [[1.0]]}, "column 'l': a list must hold only numbers or only strings"),
        ({"l": [1, "a"]}, "column 'l': a list must hold only numbers or only strings"),
        ({"l": [True, False]}, "column 'l': a list must hold only numbers or only strings"),
        ({"l": [1e39]}, "column 'l': vector element 1e+39 is outside the float32 range"),
        ({"l": [0.5, 10**400]}, "column 'l': vector element 1000000000"),
        ({"n": 2**63}, "column 'n': integer outside the int64 range"),
        ({"Key": "x"}, "column 'Key': the name is reserved"),
        ({"": 1}, "column '': a column name must be a non-empty string"),
        ({"x" * (MAX_COLUMN_NAME_BYTES + 1): 1}, "a column name may be at most 63 bytes"),
        ({"Score": 1, "score": 2}, "column 'score': differs from column 'Score' only in letter case"),
    ],
)
async def test_unsupported_data_is_refused_with_its_reason(data: Mapping[str, Any], reason: str) -> None:
    store = await make_store()
    sink = sink_on(store)
    with pytest.raises(SinkDataError, match=reason.replace("(", r"\(").replace("+", r"\+")):
        await sink.write([row("t", data)])
    assert await parts(store) == {}
    await sink.close()


# -- clean-up at job end --------------------------------------------------------------------


async def test_finalize_keeps_exactly_the_rows_the_report_points_at() -> None:
    store = await make_store()
    sink = sink_on(store)
    # A first run writes A and B together, then dies before recording B; the resumed run writes
    # B again with C; D was written, then its task ended failed (no location recorded).
    [[a], [_b_first]] = await write_all(sink, [row("A", {"n": 1}), row("B", {"n": 2})])
    [[b], [c]] = await write_all(sink, [row("B", {"n": 20}), row("C", {"n": 3})])
    [[_d]] = await write_all(sink, [row("D", {"n": 4})])
    await store.put_bytes(BUCKET, FOLDER + "notes.txt", b"not ours")
    await store.put_bytes(BUCKET, f"emb/job-other/part-{'0' * 32}.parquet", b"another job's")
    await sink.close()
    referenced = {"A": a, "B": b, "C": c}

    cleanup = await finalize_sink(SINK, store, JOB, referenced)

    assert cleanup == SinkCleanup(files_kept=1, files_rewritten=1, files_deleted=1, rows_removed=1)
    files = await parts(store, FOLDER + "part-")
    rows = {
        task: n
        for table in files.values()
        for task, n in zip(table.column("task_id").to_pylist(), table.column("n").to_pylist(), strict=True)
    }
    assert rows == {"A": 1, "B": 20, "C": 3}
    for task, location in referenced.items():  # every location still finds its row
        key, _, quoted = location.removeprefix(f"s3://{BUCKET}/").partition("#task=")
        assert quoted in files[key].column("task_id").to_pylist(), task
    assert await store.get_bytes(BUCKET, FOLDER + "notes.txt") == b"not ours"
    assert await store.get_bytes(BUCKET, f"emb/job-other/part-{'0' * 32}.parquet") == b"another job's"
    # Idempotent: a job that stops while finishing does it again.
    assert await finalize_sink(SINK, store, JOB, referenced) == SinkCleanup(files_kept=2)


async def test_finalize_reports_locations_that_name_no_row() -> None:
    store = await make_store()
    gone = parquet_location(BUCKET, f"{FOLDER}part-{'a' * 32}.parquet", "X")
    sink = sink_on(store)
    [[a]] = await write_all(sink, [row("A", {"n": 1})])
    await sink.close()
    wrong_task = a.replace("#task=A", "#task=Y")
    cleanup = await finalize_sink(SINK, store, JOB, {"A": a, "X": gone, "Y": wrong_task})
    assert cleanup.files_kept == 1 and sorted(cleanup.missing) == sorted([gone, wrong_task])


async def test_finalize_of_a_table_sink_changes_nothing() -> None:
    table = {"Table": {"Backend": "sqlite", "Path": "/nowhere/r.db", "Name": "t"}}
    assert await finalize_sink(table, MemoryStore(), JOB, {}) == SinkCleanup()
    assert location_reader(table, JOB) is None


def test_a_location_counts_only_at_the_start_of_its_own_tasks_message() -> None:
    mine = parquet_location(BUCKET, f"{FOLDER}part-{'b' * 32}.parquet", "t/1")
    other_file = parquet_location(BUCKET, f"{FOLDER}part-{'c' * 32}.parquet", "t/1")
    other_job = parquet_location(BUCKET, f"emb/job-other/part-{'b' * 32}.parquet", "t/1")
    read = location_reader(SINK, JOB)
    assert read is not None
    assert with_location("msg", mine) == f"{mine} msg"
    assert read(with_location('said "hi", twice', mine), "t/1") == mine
    assert read(with_location("", mine), "t/1") == mine
    # The function's resultString quoting a location, after the real one or in place of it
    # (a task without resultData), names no row for its own task nor for another.
    assert read(with_location(f"echoed: {other_file}", mine), "t/1") == mine
    assert read(f"echoed: {other_file}", "t/1") is None
    assert read(other_file, "t/2") is None  # another task's location at the start
    assert read(with_location("", other_job), "t/1") is None
    assert read(mine + "x", "t/1") is None  # the location of task "t/1x", not of "t/1"


def test_a_quoted_location_cannot_replace_a_tasks_own() -> None:
    """Task A's real location, then task B's message quoting a leftover of A: A keeps its own."""
    read = location_reader(SINK, JOB)
    assert read is not None
    real = parquet_location(BUCKET, f"{FOLDER}part-{'a' * 32}.parquet", "TA")
    fake = parquet_location(BUCKET, f"{FOLDER}part-{'b' * 32}.parquet", "TA")
    b_real = parquet_location(BUCKET, f"{FOLDER}part-{'c' * 32}.parquet", "TB")
    lines = [("TA", with_location("ok", real)), ("TB", with_location(f"echoed: {fake}", b_real))]
    referenced: dict[str, str] = {}
    for task, message in lines:
        if (location := read(message, task)) is not None:
            referenced[task] = location
    assert referenced == {"TA": real, "TB": b_real}


async def test_the_service_reads_the_recorded_lines_and_cleans_the_sink(tmp_path: Path) -> None:
    """Three chunks: 0 finished (seqs 0-2), 1 unfinished (3-5, only seq 4 recorded: the job
    was cancelled), 2 finished (seq 6). Each row's location counts for its own task only."""
    t = [task_id_for(JOB, seq) for seq in range(7)]
    store = await make_store()
    sink = sink_on(store)
    [[t0_leftover]] = await write_all(sink, [row(t[0], {"n": 1})])  # an attempt never recorded
    [[t0], [t4]] = await write_all(sink, [row(t[0], {"n": 10}), row(t[4], {"n": 4})])
    [[t6]] = await write_all(sink, [row(t[6], {"n": 6})])
    await sink.close()
    job = Job(
        job_id=JOB, account_id="1", status=JobStatus.COMPLETING, priority=1, creation_time=0.0, runtime={},
        request={
            "Operation": {"LambdaInvoke": {"FunctionArn": FUNCTION, "ResultsSink": SINK}},
            "Report": {"Enabled": False}, "Priority": 1,
        },
    )  # fmt: skip

    def line(seq: int, status: str, message: str) -> FinishedTask:
        chunk_no, idx = (0, seq) if seq < 3 else (1, seq - 3) if seq < 6 else (2, 0)
        report = ReportRow("data", f"{seq}.txt", "", status, "200", "", message)
        return FinishedTask(chunk_no, idx, render_row(report), status == "succeeded")

    jobs = SqliteJobStore(tmp_path / "jobs.db")
    try:
        await jobs.insert_job(job)
        await jobs.add_chunks(JOB, [Chunk(0, 0, 1, 0, 3), Chunk(1, 3, 4, 0, 3), Chunk(2, 6, 7, 0, 1)])
        finished = [
            line(0, "succeeded", with_location("ok", t0)),
            # Task 1 had no resultData: its message is the function's, quoting task 0's leftover.
            line(1, "succeeded", f"{t0_leftover} echoed"),
            line(2, "failed", "no"),
            line(4, "succeeded", with_location("", t4)),
            line(6, "succeeded", with_location("ok", t6)),
        ]
        await jobs.record(JOB, finished, {0: 3, 2: 1})
        assert [c.chunk_no for c in await jobs.pending_chunks(JOB)] == [1]
        assert await finalize_results_sink(store, jobs, job) is None
    finally:
        await jobs.close()
    kept = {
        task: n
        for table in (await parts(store)).values()
        for task, n in zip(table.column("task_id").to_pylist(), table.column("n").to_pylist(), strict=True)
    }
    assert kept == {t[0]: 10, t[4]: 4, t[6]: 6}

    class Lines:
        """A job store with one finished chunk, for the failure below."""

        async def pending_chunks(self, job_id: str) -> list[Chunk]:
            return []

        async def report_rows(self, job_id: str) -> Any:
            yield []

    # A store error becomes the job's failure reason.
    store.fail("list_objects", StorageError("AccessDenied", "denied", 403))
    reason = await finalize_results_sink(store, Lines(), job)  # type: ignore[arg-type]
    assert (
        reason is not None and reason.code == "ResultsSinkCleanupFailed" and "AccessDenied" in reason.reason
    )
