"""S3batchCsvIngest into a real PostgreSQL server (started by the suite), on the folder store and moto.

Table contents are read back with psycopg directly, never through s3batch.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from test_csv_ingest import count_batches, ingest
from test_jobs import create

from conftest import Env
from s3batch.errors import BadRequest
from s3batch.operations import csv_ingest
from s3batch.operations.csv_postgres import PostgresTable

pytestmark = pytest.mark.integration

COLUMNS: list[dict[str, Any]] = [
    {"Name": "id", "Type": "int", "Required": True},
    {"Name": "day", "Type": "date", "Required": True},
    {"Name": "amount", "Type": "decimal"},
    {"Name": "when", "Type": "timestamp"},
    {"Name": "paid", "Type": "bool"},
    {"Name": "note", "Type": "string", "Empty": "null"},
]
HEADER = "id,day,amount,when,paid,note\n"


def operation(url: str, sort_key: str | None = "day") -> dict[str, Any]:
    return {
        "S3batchCsvIngest": {
            "Table": {"Backend": "postgresql", "Url": url, "Name": "orders"},
            "Schema": {"Columns": COLUMNS, "PartitionKey": "id", "SortKey": sort_key},
        }
    }


def table(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            'SELECT id, day, amount, "when", paid, note FROM orders ORDER BY id, day'
        ).fetchall()


@pytest.fixture
def write_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    return count_batches(monkeypatch, PostgresTable)


def test_typed_upserts_reruns_are_idempotent_and_rejections_reported(
    env: Env, bucket_name: str, pg_url: str, write_calls: list[int]
) -> None:
    good = "".join(
        f"{i},2024-01-0{1 + i % 2},{i}.50,2024-01-02T03:04:05+01:00,true,n{i}\n" for i in range(40)
    )
    bad = "x,2024-01-01,1,,,bad id\n7,2024-13-01,1,,,bad day\n"  # lines 42 and 43
    body = HEADER + good + bad
    job, rows = ingest(env, bucket_name, {"orders.csv": body}, operation(pg_url))
    assert job["Status"] == "Complete"
    row = rows["orders.csv"]
    assert row[3:6] == ["failed", "400", "RowsRejected"], row
    summary = json.loads(row[6])
    assert (summary["rowsRead"], summary["rowsWritten"], summary["rowsRejected"]) == (42, 40, 2)
    assert [r["line"] for r in summary["rejected"]] == [42, 43]
    assert "not an int" in summary["rejected"][0]["reason"]
    assert write_calls == [25, 15]
    first = table(pg_url)
    assert len(first) == 40
    when = datetime(2024, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert first[1] == (1, date(2024, 1, 2), Decimal("1.50"), when, True, "n1")

    # The same file again: the same rows, no duplicates.
    job, rows = ingest(env, bucket_name, {"orders.csv": body}, operation(pg_url))
    assert json.loads(rows["orders.csv"][6])["rowsWritten"] == 40
    assert table(pg_url) == first

    # Changed rows replace theirs in place (key = id + day); a new day is a new row.
    changed = HEADER + "1,2024-01-02,99.00,,false,\n1,2024-02-01,1,,,new day\n"
    job, rows = ingest(env, bucket_name, {"orders.csv": changed}, operation(pg_url))
    assert rows["orders.csv"][3] == "succeeded", rows["orders.csv"]
    after = table(pg_url)
    assert len(after) == 41
    assert after[1] == (1, date(2024, 1, 2), Decimal("99.00"), None, False, None)
    assert after[2] == (1, date(2024, 2, 1), Decimal("1"), None, None, "new day")
    assert after[0] == first[0] and after[3:] == first[2:]
    assert max(write_calls) <= csv_ingest.MAX_BATCH_ITEMS


def test_an_existing_table_with_another_key_or_type_is_refused(
    local_env: Env, bucket_name: str, pg_url: str
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            'CREATE TABLE orders (id bigint PRIMARY KEY, day date, amount numeric(10,2), "when" timestamptz,'
            " paid boolean, note text)"
        )
    body = HEADER + "1,2024-01-01,1.00,,,x\n"
    _, rows = ingest(local_env, bucket_name, {"a.csv": body}, operation(pg_url))
    assert rows["a.csv"][3:6] == ["failed", "400", "TableSchemaMismatch"]
    assert "primary key is ['id'], not ['id', 'day']" in rows["a.csv"][6]

    # With the right key, numeric(10,2) is still a numeric: the rows go in.
    _, rows = ingest(local_env, bucket_name, {"b.csv": body}, operation(pg_url, sort_key=None))
    assert rows["b.csv"][3] == "succeeded", rows["b.csv"]
    assert table(pg_url) == [(1, date(2024, 1, 1), Decimal("1.00"), None, None, "x")]

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE orders ALTER COLUMN note TYPE integer USING NULL")
    _, rows = ingest(local_env, bucket_name, {"c.csv": body}, operation(pg_url, sort_key=None))
    assert rows["c.csv"][3:6] == ["failed", "400", "TableSchemaMismatch"]
    assert "column note is integer, not text" in rows["c.csv"][6]


def test_a_password_in_the_url_is_refused_at_create_job(local_env: Env, bucket_name: str) -> None:
    local_env.make_bucket(bucket_name)
    for url in ("postgresql://u:secret@127.0.0.1/db", "postgresql://u@127.0.0.1/db?password=secret"):
        with pytest.raises(BadRequest, match="must not contain a password"):
            create(local_env, bucket_name, operation(url), [(bucket_name, "a.csv")])
    bad = operation("mysql://u@127.0.0.1/db")
    with pytest.raises(BadRequest, match="must start with postgresql://"):
        create(local_env, bucket_name, bad, [(bucket_name, "a.csv")])
    bad = operation("postgresql://u@127.0.0.1/db")
    bad["S3batchCsvIngest"]["Table"]["Path"] = "/tmp/x.sqlite3"
    with pytest.raises(BadRequest, match="Path is for Backend sqlite"):
        create(local_env, bucket_name, bad, [(bucket_name, "a.csv")])


def test_an_unreachable_server_fails_the_task_as_unavailable(
    local_env: Env, bucket_name: str, postgres_server: Any
) -> None:
    from tests.conftest import free_port

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"  # nothing listens there
    _, rows = ingest(local_env, bucket_name, {"a.csv": HEADER + "1,2024-01-01,1,,,x\n"}, operation(url))
    assert rows["a.csv"][3:6] == ["failed", "503", "TableUnavailable"], rows["a.csv"]
    assert "cannot connect to PostgreSQL" in rows["a.csv"][6]


def test_files_loaded_concurrently_create_the_table_once(
    local_env: Env, bucket_name: str, pg_url: str
) -> None:
    files = {f"part{n}.csv": HEADER + f"{n},2024-01-01,{n},,,p{n}\n" for n in range(8)}
    job, rows = ingest(local_env, bucket_name, files, operation(pg_url))
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 8, rows
    assert [r[5] for r in table(pg_url)] == [f"p{n}" for n in range(8)]
