"""`s3batch query` over a pipeline's live tables (docs/query.md, docs/pipeline-tables.md):
pipeline_journal(), pipeline_inventory() and pipeline_reconciles() on the sqlite backend (rows
read from the database) and the parquet backend (files read from the store through s3batch://),
on the folder store and moto; the documented queries; `create-job --manifest-query` over the
live inventory; empty and refused tables."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.integration.conftest import Env
from tests.integration.test_pipeline_tables import (  # its TestClient: imported quietly there
    TestClient,
    bucket_names,
    created,
    delete_object,
    handlers_on_path,  # noqa: F401 (an autouse fixture: the pipeline's handler module)
    post,
    removed,
    sqlite_query,
    wait_until,
    write_pipeline,
)
from tests.integration.test_query import COPY_PREFIX, create_args, ok, rows_of, s3batch

from s3batch.pipelines.config import load_config
from s3batch.pipelines.runner import Pipeline
from s3batch.pipelines.sources import webhook_app

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[2] / "docs"
#: The documented `s3batch query` forms of docs/pipeline-tables.md's two example queries (the
#: test checks both documents carry them verbatim, then runs them with the real file name).
LAST_HOUR_SQL = (
    "SELECT * FROM pipeline_journal('p.toml') WHERE received_at >= now() - INTERVAL 1 HOUR ORDER BY id"
)
BIG_AND_OLD_SQL = (
    "SELECT bucket, key, size, last_modified_date FROM pipeline_inventory('p.toml')\n"
    "WHERE size > 1024 * 1024 * 1024 AND last_modified_date < now() - INTERVAL 1 YEAR"
)
GIB = 1024**3
BACKENDS = ["sqlite", "parquet"]


def tables_section(backend: str, tables_bucket: str) -> str:
    # A long flush interval: the parquet journal file is written when the pipeline closes.
    if backend == "parquet":
        return f'backend = "parquet"\nbucket = "{tables_bucket}"\nflush_interval_s = 3600\n'
    return ""


def live_pipeline(env: Env, tmp_path: Path, backend: str) -> tuple[Path, str]:
    """A pipeline with [tables] that backfilled old/a.txt and old/b.txt, then received: the
    real new/c d.txt; three event-only objects (two of 2 GiB, one 800 days old, small-old.bin
    also 800 days old); the removal of old/a.txt. small-old.bin's journal row is dated two hours
    back. Returns (pipeline file, source bucket); the pipeline is closed (files written)."""
    source, tables_bucket = bucket_names(tmp_path)
    env.make_bucket(source)
    if backend == "parquet":
        env.make_bucket(tables_bucket)
    env.put(source, "old/a.txt", b"a")
    env.put(source, "old/b.txt", b"bb")
    path = write_pipeline(tmp_path, source, tables_section(backend, tables_bucket))
    working = sqlite_query(tmp_path / "p.tables.sqlite3")
    old = (datetime.now(UTC) - timedelta(days=800)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    pipeline = Pipeline(load_config(path), env.storage)
    with TestClient(webhook_app(pipeline)) as client:
        wait_until(lambda: bool(working("SELECT count(*) FROM p_reconciles")[0][0]))
        etag = env.put(source, "new/c d.txt", b"ccc")
        post(client, created(source, "new/c+d.txt", etag, 3, "01"),
             created(source, "big+old.bin", "e2", 2 * GIB, "02", when=old),
             created(source, "big-new.bin", "e3", 2 * GIB, "03"),
             created(source, "small-old.bin", "e4", 10, "04", when=old))  # fmt: skip
        delete_object(env, source, "old/a.txt")
        post(client, removed(source, "old/a.txt", "05"))
        two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%d %H:%M:%S.%f")
        with sqlite3.connect(tmp_path / "p.tables.sqlite3") as db:
            db.execute("UPDATE p_journal SET received_at = ? WHERE key = 'small-old.bin'", (two_hours_ago,))
        wait_until(lambda: client.get("/status").json()["pending"] == 0)
        client.portal.call(pipeline.close)
    return path, source


def on(path: Path, sql: str) -> str:
    return sql.replace("'p.toml'", f"'{path}'")


@pytest.mark.parametrize("backend", BACKENDS)
def test_live_tables_answer_the_documented_questions(env: Env, tmp_path: Path, backend: str) -> None:
    for doc in ("query.md", "pipeline-tables.md"):
        text = (DOCS / doc).read_text(encoding="utf-8")
        assert LAST_HOUR_SQL in text and BIG_AND_OLD_SQL in text, doc
    path, source = live_pipeline(env, tmp_path, backend)

    big = rows_of(env, f"SELECT key, size FROM pipeline_inventory('{path}') WHERE size > 1000 ORDER BY key")
    assert big == [{"key": "big old.bin", "size": 2 * GIB}, {"key": "big-new.bin", "size": 2 * GIB}]
    everything = rows_of(env, f"SELECT key FROM pipeline_inventory('{path}') ORDER BY key")
    assert [r["key"] for r in everything] == [
        "big old.bin", "big-new.bin", "new/c d.txt", "old/b.txt", "small-old.bin"
    ]  # fmt: skip

    last_hour = rows_of(env, on(path, LAST_HOUR_SQL))
    assert [(r["key"], r["record_type"], r["origin"]) for r in last_hour] == [
        ("new/c d.txt", "CREATE", "notification"),
        ("big old.bin", "CREATE", "notification"),
        ("big-new.bin", "CREATE", "notification"),
        ("old/a.txt", "DELETE", "notification"),
    ]  # small-old.bin's row was received two hours ago
    assert all(r["bucket"] == source for r in last_hour)
    big_and_old = rows_of(env, on(path, BIG_AND_OLD_SQL))
    assert [(r["key"], r["size"]) for r in big_and_old] == [("big old.bin", 2 * GIB)]

    typed = rows_of(
        env,
        f"SELECT typeof(received_at) AS t, typeof(size) AS s, count(*) AS n FROM pipeline_journal('{path}') "
        f"GROUP BY ALL",
    )
    assert typed == [{"t": "TIMESTAMP WITH TIME ZONE", "s": "BIGINT", "n": 5}]
    reconciles = rows_of(env, f"SELECT kind, listed, added FROM pipeline_reconciles('{path}')")
    assert reconciles == [{"kind": "backfill", "listed": 2, "added": 2}]


def test_a_table_named_twice_and_a_join_of_two_tables(local_env: Env, tmp_path: Path) -> None:
    """The same call twice is one table, scanned twice (a database's rows are read once)."""
    path, _ = live_pipeline(local_env, tmp_path, "sqlite")
    sql = (
        f"SELECT count(*) AS n FROM pipeline_inventory('{path}') a JOIN pipeline_inventory('{path}') b "
        f"USING (key) WHERE a.size = b.size"
    )
    assert rows_of(local_env, sql) == [{"n": 5}]
    created_still_there = rows_of(
        local_env,
        f"SELECT j.key FROM pipeline_journal('{path}') j JOIN pipeline_inventory('{path}') i USING (key) "
        f"WHERE j.record_type = 'CREATE' AND i.size < 1000 ORDER BY j.id",
    )
    assert created_still_there == [{"key": "new/c d.txt"}, {"key": "small-old.bin"}]


@pytest.mark.parametrize("backend", BACKENDS)
def test_manifest_query_over_the_live_inventory(env: Env, tmp_path: Path, backend: str) -> None:
    path, source = live_pipeline(env, tmp_path, backend)
    env.make_bucket(source + "-dst")
    sql = (
        f"SELECT bucket, key FROM pipeline_inventory('{path}') "
        f"WHERE size < 1000 AND last_modified_date > now() - INTERVAL 1 DAY"
    )
    job = json.loads(ok(s3batch(env, *create_args(source, sql, "--wait"))))["Job"]
    assert job["Status"] == "Complete"
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 2
    assert env.get(source + "-dst", f"{COPY_PREFIX}/old/b.txt") == b"bb"
    assert env.get(source + "-dst", f"{COPY_PREFIX}/new/c d.txt") == b"ccc"
    for absent in ("small-old.bin", "old/a.txt"):
        assert env.get(source + "-dst", f"{COPY_PREFIX}/{absent}") is None


def test_parquet_tables_with_no_file_yet_are_empty_with_their_columns(local_env: Env, tmp_path: Path) -> None:
    source, tables_bucket = bucket_names(tmp_path)
    local_env.make_bucket(tables_bucket)
    path = write_pipeline(tmp_path, source, tables_section("parquet", tables_bucket))  # never ran
    for table in ("journal", "inventory"):
        rows = rows_of(local_env, f"SELECT count(*) AS n FROM pipeline_{table}('{path}')")
        assert rows == [{"n": 0}], table
    described = f"SELECT column_name, column_type FROM (DESCRIBE pipeline_journal('{path}'))"
    columns = rows_of(local_env, described)
    types = {c["column_name"]: c["column_type"] for c in columns}
    assert types["received_at"] == "TIMESTAMP WITH TIME ZONE" and types["size"] == "BIGINT"
    assert list(types)[:3] == ["id", "bucket", "key"]


def refused(env: Env, sql: str) -> str:
    result = s3batch(env, "query", sql)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return str(result.output)


def test_unusable_pipeline_files_are_clear_errors(local_env: Env, tmp_path: Path) -> None:
    no_tables = tmp_path / "plain.toml"
    no_tables.write_text(
        'name = "plain"\nsource = "src"\nfunction = "pipeline_handlers:check"\non_success = "leave"\n'
    )
    message = refused(local_env, f"SELECT * FROM pipeline_inventory('{no_tables}')")
    assert f"pipeline_inventory('{no_tables}')" in message and "has no [tables] section" in message

    missing = refused(local_env, f"SELECT * FROM pipeline_journal('{tmp_path}/nope.toml')")
    assert "cannot read pipeline file" in missing

    never_ran = write_pipeline(tmp_path, "src", "")  # sqlite: no database file yet
    assert "does not exist yet" in refused(local_env, f"SELECT * FROM pipeline_inventory('{never_ran}')")

    no_journal = write_pipeline(tmp_path, "src", "journal = false\n")
    assert "keeps no journal" in refused(local_env, f"SELECT * FROM pipeline_journal('{no_journal}')")

    empty = refused(local_env, "SELECT * FROM pipeline_reconciles('')")
    assert "name the pipeline's TOML or YAML file" in empty


def test_only_the_named_tables_files_are_readable(local_env: Env, tmp_path: Path) -> None:
    path, _ = live_pipeline(local_env, tmp_path, "parquet")
    _, tables_bucket = bucket_names(tmp_path)
    listing = f"read_blob('s3batch://{tables_bucket}/*')"
    before: list[dict[str, Any]] = rows_of(local_env, f"SELECT count(*) AS n FROM {listing}")
    assert before == [{"n": 0}]  # nothing is served until a table names its files
    sql = f"SELECT (SELECT count(*) FROM pipeline_journal('{path}')) AS n, filename FROM {listing}"
    served = rows_of(local_env, sql)
    assert [r["n"] for r in served] == [5] and all("/journal/" in r["filename"] for r in served)
