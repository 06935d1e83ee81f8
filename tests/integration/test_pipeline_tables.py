"""Live object tables of a pipeline (docs/pipeline-tables.md), end to end: the folder store and
moto; the sqlite, postgresql and parquet backends. Events arrive over the webhook exactly as S3
sends them; tables are checked through the database's (or pyarrow's) own API."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import sqlite3
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from tests.integration.conftest import FIXTURE_HANDLERS, Env

from s3batch.cli import cli
from s3batch.pipelines.config import load_config
from s3batch.pipelines.runner import Pipeline
from s3batch.pipelines.sources import webhook_app

with warnings.catch_warnings():  # starlette prefers httpx2; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

#: Seconds a test waits for background work before failing.
WAIT_S = 30.0
DOCS = Path(__file__).resolve().parents[2] / "docs" / "pipeline-tables.md"
#: The example queries of docs/pipeline-tables.md (the test checks they are there verbatim).
LAST_HOUR_SQL = "SELECT * FROM p_journal WHERE received_at >= datetime('now', '-1 hour') ORDER BY id"
BIG_AND_OLD_SQL = (
    "SELECT bucket, key, size, last_modified_date FROM p_inventory\n"
    "WHERE size > 1024 * 1024 * 1024 AND last_modified_date < datetime('now', '-1 year')"
)

Query = Callable[[str], list[tuple[Any, ...]]]


@pytest.fixture(autouse=True)
def handlers_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FIXTURE_HANDLERS))
    monkeypatch.setenv("PYTHONPATH", str(FIXTURE_HANDLERS))


def bucket_names(tmp_path: Path) -> tuple[str, str]:
    """(source, tables) bucket names of one test (moto's server is shared by the session)."""
    digest = hashlib.sha1(str(tmp_path).encode()).hexdigest()[:10]
    return f"src-{digest}", f"tbl-{digest}"


def write_pipeline(tmp_path: Path, source: str, tables: str, extra: str = "") -> Path:
    path = tmp_path / "p.toml"
    path.write_text(
        f'name = "p"\nsource = "{source}"\nfunction = "pipeline_handlers:check"\non_success = "leave"\n'
        f"workers = 1\n{extra}[tables]\nreconcile_grace_s = 0\n{tables}",
        encoding="utf-8",
    )
    return path


def created(bucket: str, key: str, etag: str, size: int, sequencer: str, when: str = "") -> dict[str, Any]:
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
            "eventTime": when or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "s3": {"bucket": {"name": bucket},
                   "object": {"key": key, "eTag": etag, "size": size, "sequencer": sequencer}}}  # fmt: skip


def removed(bucket: str, key: str, sequencer: str) -> dict[str, Any]:
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectRemoved:Delete",
            "eventTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, "sequencer": sequencer}}}  # fmt: skip


def delete_object(env: Env, bucket: str, key: str) -> None:
    if env.root is not None:
        (env.root / bucket / key).unlink()
    else:
        env.client.delete_object(Bucket=bucket, Key=key)


def wait_until(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def sqlite_query(path: Path) -> Query:
    def query(sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(path) as db:
            return [tuple(r) for r in db.execute(sql)]

    return query


def postgres_query(url: str) -> Query:
    import psycopg

    def query(sql: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(url) as db:
            return [tuple(r) for r in db.execute(sql)]

    return query


def inventory(query: Query) -> dict[str, tuple[Any, ...]]:
    return {r[0]: r[1:] for r in query("SELECT key, e_tag, size, sequencer FROM p_inventory")}


def post(client: TestClient, *records: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/", json={"Records": list(records)})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def run_scenario(env: Env, tmp_path: Path, tables: str, query: Query) -> Pipeline:
    """Backfill, events (a repeated delivery, an overwrite, a delete, out-of-order events), a
    missed delete fixed by a reconcile; checks the tables after each step. Returns the closed
    pipeline."""
    source, _ = bucket_names(tmp_path)
    env.make_bucket(source)
    etag_a = env.put(source, "old/a.txt", b"a")
    env.put(source, "old/b.txt", b"bb")
    env.put(source, "x.txt", b"x")
    pipeline = Pipeline(load_config(write_pipeline(tmp_path, source, tables)), env.storage)
    with TestClient(webhook_app(pipeline)) as client:
        wait_until(lambda: bool(query("SELECT count(*) FROM p_reconciles")[0][0]))
        backfill = query("SELECT kind, listed, added, removed FROM p_reconciles")
        assert backfill == [("backfill", 3, 3, 0)]
        assert inventory(query)["old/a.txt"] == (etag_a, 1, None)
        assert query("SELECT count(*) FROM p_journal") == [(0,)]  # a backfill is not news

        etag_c = env.put(source, "new/c d.txt", b"ccc")
        repeated = [created(source, "new/c+d.txt", etag_c, 3, "0A")]
        assert post(client, *repeated)["accepted"] == 1
        assert post(client, *repeated)["duplicates"] == 1  # the sender delivered it again
        etag_x = env.put(source, "x.txt", b"x2")
        post(client, created(source, "x.txt", etag_x, 2, "0B"))
        delete_object(env, source, "old/b.txt")
        post(client, removed(source, "old/b.txt", "0C"))
        # Out of order: the delete (sequencer 20) comes before the older create (1F).
        post(client, removed(source, "o.txt", "20"))
        post(client, created(source, "o.txt", "0" * 32, 5, "1F"))
        assert "o.txt" not in inventory(query)
        etag_o = env.put(source, "o.txt", b"o")
        post(client, created(source, "o.txt", etag_o, 1, "021"))

        rows = inventory(query)
        assert set(rows) == {"old/a.txt", "new/c d.txt", "x.txt", "o.txt"}
        assert rows["new/c d.txt"] == (etag_c, 3, "0A")
        assert rows["x.txt"] == (etag_x, 2, "0B")
        assert rows["o.txt"] == (etag_o, 1, "021")
        journal = query("SELECT key, event_name, origin, sequencer FROM p_journal ORDER BY id")
        assert journal == [
            ("new/c d.txt", "ObjectCreated:Put", "notification", "0A"),  # once, though sent twice
            ("x.txt", "ObjectCreated:Put", "notification", "0B"),
            ("old/b.txt", "ObjectRemoved:Delete", "notification", "0C"),
            ("o.txt", "ObjectRemoved:Delete", "notification", "20"),
            ("o.txt", "ObjectCreated:Put", "notification", "1F"),  # journaled, though stale
            ("o.txt", "ObjectCreated:Put", "notification", "021"),
        ]

        delete_object(env, source, "old/a.txt")  # no event: a missed delete
        fixed = client.portal.call(pipeline.tables.reconcile_now)  # type: ignore[union-attr]
        assert (fixed.kind, fixed.listed, fixed.fixes.removed, fixed.fixes.added) == ("reconcile", 3, 1, 0)
        assert fixed.fixes.changed == 0 and fixed.fixes.refreshed == 3  # storage classes filled in
        assert set(inventory(query)) == {"new/c d.txt", "x.txt", "o.txt"}
        assert query("SELECT kind, removed FROM p_reconciles ORDER BY id")[-1] == ("reconcile", 1)
        last = query("SELECT key, record_type, event_name, origin FROM p_journal ORDER BY id DESC LIMIT 1")
        assert last == [("old/a.txt", "DELETE", "s3batch:ReconcileRemoved", "reconcile")]
        assert query("SELECT storage_class FROM p_inventory WHERE key = 'x.txt'") == [("STANDARD",)]
        wait_until(lambda: client.get("/status").json()["pending"] == 0)
        client.portal.call(pipeline.close)
    return pipeline


def test_sqlite_backfill_events_and_reconcile(env: Env, tmp_path: Path) -> None:
    run_scenario(env, tmp_path, "", sqlite_query(tmp_path / "p.tables.sqlite3"))


def test_postgresql_backend(local_env: Env, tmp_path: Path, pg_url: str) -> None:
    run_scenario(local_env, tmp_path, f'backend = "postgresql"\nurl = "{pg_url}"\n', postgres_query(pg_url))
    import psycopg

    with psycopg.connect(pg_url) as db:  # native types, keys ordered byte-wise like S3
        types = dict(db.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'p_inventory'"
        ).fetchall())  # fmt: skip
        collation = db.execute(
            "SELECT collation_name FROM information_schema.columns"
            " WHERE table_name = 'p_inventory' AND column_name = 'key'"
        ).fetchone()
    assert types["size"] == "bigint" and types["last_modified_date"] == "timestamp with time zone"
    assert collation == ("C",)


def read_objects(env: Env, bucket: str, prefix: str) -> dict[str, bytes]:
    if env.root is not None:
        folder = env.root / bucket
        return {
            str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.glob(f"{prefix}*"))
            if p.is_file()
        }
    listed = env.client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: env.get(bucket, o["Key"]) or b"" for o in listed}


def test_parquet_backend_files_readable_by_pyarrow(env: Env, tmp_path: Path) -> None:
    _, tables_bucket = bucket_names(tmp_path)
    env.make_bucket(tables_bucket)
    working_copy = tmp_path / "p.tables.sqlite3"
    config = f'backend = "parquet"\nbucket = "{tables_bucket}"\nprefix = "meta/p"\nflush_interval_s = 0.2\n'
    run_scenario(env, tmp_path, config, sqlite_query(working_copy))
    local = sqlite_query(working_copy)

    journal_files = read_objects(env, tables_bucket, "meta/p/journal/")
    assert journal_files and all(k.endswith(".parquet") for k in journal_files)
    journal = pa.concat_tables(pq.read_table(io.BytesIO(body)) for body in journal_files.values())
    assert journal.num_rows == 7  # every journal row, each in exactly one file
    assert journal.column("id").to_pylist() == [r[0] for r in local("SELECT id FROM p_journal ORDER BY id")]
    assert journal.schema.field("received_at").type == pa.timestamp("us", tz="UTC")
    assert journal.schema.field("size").type == pa.int64()

    snapshots = read_objects(env, tables_bucket, "meta/p/inventory/")
    assert 1 <= len(snapshots) <= 2  # the newest two generations are kept
    current = pq.read_table(io.BytesIO(snapshots[max(snapshots)]))
    assert sorted(current.column("key").to_pylist()) == ["new/c d.txt", "o.txt", "x.txt"]
    assert set(current.column("storage_class").to_pylist()) == {"STANDARD"}


async def test_flush_after_a_crash_writes_the_same_file_again(local_env: Env, tmp_path: Path) -> None:
    """A journal file whose PUT happened but was not marked done is written again under the
    same name with the same rows; rows that came meanwhile go to the next file."""
    from s3batch.pipelines.events import ObjectEvent
    from s3batch.pipelines.tables import parquet
    from s3batch.pipelines.tables.live import LiveTables
    from s3batch.pipelines.tables.records import Origin
    from s3batch.pipelines.tables.sql import connect
    from s3batch.storage.config import open_store

    env = local_env
    source, tables_bucket = bucket_names(tmp_path)
    env.make_bucket(tables_bucket)
    cfg = load_config(
        write_pipeline(tmp_path, source, f'backend = "parquet"\nbucket = "{tables_bucket}"\n')
    ).tables
    assert cfg is not None
    store = open_store(env.storage)
    tables = LiveTables(cfg, source, store)
    worker = connect(cfg)

    def events(first: int, count: int) -> list[ObjectEvent]:
        return [ObjectEvent(bucket=source, key=f"k{i}", etag=f"e{i}", size=i, sequencer=f"{i + 1:02X}")
                for i in range(first, first + count)]  # fmt: skip

    try:
        tables.record(events(0, 3), Origin.NOTIFICATION)
        first, last = parquet._next_range(worker)  # saved; the PUT happens; then the process dies
        name = f"tables/p/journal/{first:020d}-{last:020d}.parquet"
        await store.put_bytes(tables_bucket, name, parquet._journal_file(worker, first, last))
        tables.record(events(3, 2), Origin.NOTIFICATION)
        assert await parquet.flush_journal(cfg, worker, store) == 2
        assert await parquet.flush_journal(cfg, worker, store) == 0
    finally:
        worker.close()
        await tables.close()
        await store.close()
    files = read_objects(env, tables_bucket, "tables/p/journal/")
    assert sorted(files)[0] == name and len(files) == 2
    keys = [k for body in files.values() for k in pq.read_table(io.BytesIO(body)).column("key").to_pylist()]
    assert keys == ["k0", "k1", "k2", "k3", "k4"]


def cli_env(env: Env) -> dict[str, str]:
    url = f"file://{env.root}" if env.root else env.storage.endpoint_url  # type: ignore[union-attr]
    return {"S3BATCH_STORAGE": str(url), "PYTHONPATH": str(FIXTURE_HANDLERS)}


def test_poller_archive_and_cli(local_env: Env, tmp_path: Path) -> None:
    """`pipeline run --once` backfills before its scan (existing objects are not news), journals
    a new object once however often it is listed, and the pipeline's own archiving removes rows."""
    env = local_env
    source, _ = bucket_names(tmp_path)
    for bucket in (source, "archive"):
        env.make_bucket(bucket)
    env.put(source, "keep/bad one.txt", b"1")  # the handler fails it: it stays (no error bucket)
    path = write_pipeline(tmp_path, source, "", extra='on_success = "archive"\narchive = "archive"\n')
    path.write_text(path.read_text().replace('on_success = "leave"\n', ""), encoding="utf-8")
    query = sqlite_query(tmp_path / "p.tables.sqlite3")
    runner, cmd_env = CliRunner(), cli_env(env)

    out = runner.invoke(cli, ["pipeline", "run", str(path), "--once"], env=cmd_env)
    assert out.exit_code == 0, out.output
    assert query("SELECT kind, added FROM p_reconciles") == [("backfill", 1)]
    assert query("SELECT count(*) FROM p_journal") == [(0,)]
    env.put(source, "in/new.txt", b"22")
    for _ in range(2):
        out = runner.invoke(cli, ["pipeline", "run", str(path), "--once"], env=cmd_env)
        assert out.exit_code == 0, out.output
    journal = query("SELECT key, record_type, origin FROM p_journal ORDER BY id")
    assert journal == [("in/new.txt", "CREATE", "listing"), ("in/new.txt", "DELETE", "pipeline")]
    assert set(inventory(query)) == {"keep/bad one.txt"}  # archived away, the failed one stays

    out = runner.invoke(cli, ["pipeline", "tables", str(path)], env=cmd_env)
    assert out.exit_code == 0, out.output
    summary = json.loads(out.output)
    assert summary["backend"] == "sqlite" and summary["location"] == str(tmp_path / "p.tables.sqlite3")
    assert summary["tables"]["journal"] == {"name": "p_journal", "rows": 2}
    assert summary["tables"]["inventory"] == {"name": "p_inventory", "rows": 1}
    env.put(source, "missed.txt", b"333")  # no event, no poll: only a reconcile finds it
    out = runner.invoke(cli, ["pipeline", "tables", str(path), "--reconcile"], env=cmd_env)
    assert json.loads(out.output)["reconcile"]["added"] == 1


def test_documented_queries_and_manifest(local_env: Env, tmp_path: Path) -> None:
    env = local_env
    source, _ = bucket_names(tmp_path)
    env.make_bucket(source)
    text = DOCS.read_text(encoding="utf-8")
    assert LAST_HOUR_SQL in text and BIG_AND_OLD_SQL in text
    path = write_pipeline(tmp_path, source, "reconcile_interval_s = 0\n")
    query = sqlite_query(tmp_path / "p.tables.sqlite3")
    old = (datetime.now(UTC) - timedelta(days=800)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    pipeline = Pipeline(load_config(path), env.storage)
    with TestClient(webhook_app(pipeline)) as client:
        wait_until(lambda: bool(query("SELECT count(*) FROM p_reconciles")[0][0]))
        post(client, created(source, "big+old.bin", "e1", 2 * 1024**3, "01", when=old),
             created(source, "big-new.bin", "e2", 2 * 1024**3, "02"),
             created(source, "small-old.bin", "e3", 10, "03", when=old))  # fmt: skip
        client.portal.call(pipeline.close)
    assert [r[2] for r in query(LAST_HOUR_SQL)] == ["big old.bin", "big-new.bin", "small-old.bin"]
    assert [r[1] for r in query(BIG_AND_OLD_SQL)] == ["big old.bin"]

    sql = "SELECT bucket, key FROM p_inventory WHERE size > 1024 * 1024 * 1024 ORDER BY key"
    out = CliRunner().invoke(cli, ["pipeline", "tables", str(path), "--manifest", sql], env=cli_env(env))
    assert out.exit_code == 0, out.output
    assert out.output == f"{source},big+old.bin\n{source},big-new.bin\n"  # keys URL-encoded
    wrong = ["pipeline", "tables", str(path), "--manifest", "SELECT key FROM p_inventory"]
    out = CliRunner().invoke(cli, wrong, env=cli_env(env))
    assert out.exit_code != 0 and "bucket, key" in out.output


def test_events_are_not_acknowledged_when_the_tables_cannot_be_written(
    local_env: Env, tmp_path: Path
) -> None:
    env = local_env
    source, _ = bucket_names(tmp_path)
    env.make_bucket(source)
    path = write_pipeline(tmp_path, source, "inventory = false\n")
    pipeline = Pipeline(load_config(path), env.storage)
    with TestClient(webhook_app(pipeline)) as client:
        with sqlite3.connect(tmp_path / "p.tables.sqlite3") as db:
            db.execute("DROP TABLE p_journal")  # every journal write fails from now on
        response = client.post("/", json={"Records": [created(source, "a.txt", "e1", 1, "01")]})
        assert response.status_code == 503 and "cannot record the events" in response.json()["error"]
        assert pipeline.state.files() == []  # not admitted either: the sender's retry brings it
        client.portal.call(pipeline.close)


def test_table_sources_for_query(local_env: Env, tmp_path: Path) -> None:
    """What `s3batch query` reads: an Arrow reader per SQL table, Parquet files for the parquet
    backend; both answer the documented questions in DuckDB."""
    env = local_env
    source, tables_bucket = bucket_names(tmp_path)
    env.make_bucket(source)
    env.make_bucket(tables_bucket)
    env.put(source, "a.txt", b"a")
    env.put(source, "dir/b.txt", b"bb")
    sqlite_file = write_pipeline(tmp_path, source, "")
    parquet_file = tmp_path / "q.toml"
    parquet_file.write_text(
        sqlite_file.read_text().replace('name = "p"', 'name = "q"')
        + f'backend = "parquet"\nbucket = "{tables_bucket}"\n',
        encoding="utf-8",
    )
    for file in (sqlite_file, parquet_file):
        out = CliRunner().invoke(cli, ["pipeline", "tables", str(file), "--reconcile"], env=cli_env(env))
        assert out.exit_code == 0, out.output
    asyncio.run(query_sources(env, sqlite_file, parquet_file))


async def query_sources(env: Env, sqlite_file: Path, parquet_file: Path) -> None:
    import duckdb

    from s3batch.pipelines.tables.query import table_source
    from s3batch.storage.config import open_store

    store = open_store(env.storage)
    con = duckdb.connect(":memory:")
    try:
        rows = await table_source(sqlite_file, "inventory", store)
        assert rows.reader is not None and not rows.files
        con.register("inv", rows.reader)
        assert con.sql("SELECT key, size FROM inv ORDER BY key").fetchall() == [
            ("a.txt", 1),
            ("dir/b.txt", 2),
        ]
        journal = await table_source(sqlite_file, "journal", store)
        con.register("j", journal.reader)
        assert con.sql("SELECT count(*) FROM j WHERE received_at >= now() - INTERVAL 1 HOUR").fetchall() == [
            (0,)
        ]

        snapshot = await table_source(parquet_file, "inventory", store)
        assert snapshot.reader is None and [f.key for f in snapshot.files] == [
            "tables/q/inventory/00000000000000000001.parquet"
        ]
        paths = [str(env.root / f.bucket / f.key) for f in snapshot.files]  # type: ignore[operator]
        big = con.sql(f"SELECT key FROM read_parquet({paths}) WHERE size > 1 ORDER BY key").fetchall()
        assert big == [("dir/b.txt",)]
        assert str(con.sql(f"SELECT last_modified_date FROM read_parquet({paths})").types[0]) == (
            "TIMESTAMP WITH TIME ZONE"
        )
        reconciles = await table_source(parquet_file, "reconciles", store)
        assert pa.Table.from_batches(list(reconciles.reader)).column("kind").to_pylist() == ["backfill"]
    finally:
        con.close()
        await store.close()
