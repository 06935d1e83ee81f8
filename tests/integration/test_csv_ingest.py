"""S3batchCsvIngest jobs end to end, on the folder store and on moto's S3 server.

Table contents are read back with sqlite3 directly, never through s3batch.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from test_jobs import create, run

from conftest import Env, read_report
from s3batch.domain.csv_schema import Value
from s3batch.operations import csv_ingest

pytestmark = pytest.mark.integration

COLUMNS: list[dict[str, Any]] = [
    {"Name": "id", "Type": "int", "Required": True},
    {"Name": "amount", "Type": "decimal"},
    {"Name": "when", "Type": "timestamp"},
    {"Name": "note", "Type": "string", "Empty": "null"},
]
HEADER = "id,amount,when,note\n"


def operation(db: Path, header: str = "exact", sort_key: str | None = None) -> dict[str, Any]:
    return {
        "S3batchCsvIngest": {
            "Table": {"Backend": "sqlite", "Path": str(db), "Name": "orders"},
            "Schema": {"Columns": COLUMNS, "PartitionKey": "id", "SortKey": sort_key},
            "Header": header,
        }
    }


def table(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute('SELECT id, amount, "when", note FROM orders ORDER BY id').fetchall()


def ingest(env: Env, bucket: str, files: dict[str, str], op: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Put `files` in `bucket`, run `op` over them; returns (the job, report rows by key)."""
    env.make_bucket(bucket)
    for key, body in files.items():
        env.put(bucket, key, body.encode())
    batch, job_id = create(env, bucket, op, [(bucket, k) for k in files])
    job = run(batch, job_id)
    rows = read_report(env, bucket, job_id)["rows"]
    return job, {row[1]: row for status in rows.values() for row in status}


def ingest_job(
    env: Env, bucket: str, files: dict[str, str], db: Path, **op: Any
) -> tuple[Any, dict[str, Any]]:
    return ingest(env, bucket, files, operation(db, **op))


def count_batches(monkeypatch: pytest.MonkeyPatch, table_class: Any) -> list[int]:
    """Sizes of every batch `table_class` (a SqliteTable or PostgresTable) writes."""
    sizes: list[int] = []
    original = table_class.write_batch

    def counted(self: Any, items: Sequence[Mapping[str, Value]]) -> None:
        sizes.append(len(items))
        original(self, items)

    monkeypatch.setattr(table_class, "write_batch", counted)
    return sizes


@pytest.fixture
def write_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sizes of every batch written to a SQLite table."""
    return count_batches(monkeypatch, csv_ingest.SqliteTable)


def test_typed_rows_are_written_and_reruns_are_idempotent(
    env: Env, bucket_name: str, tmp_path: Path, write_calls: list[int]
) -> None:
    db = tmp_path / "db.sqlite3"
    body = HEADER + "".join(f"{i},{i}.50,2024-01-02T03:04:05+01:00,n{i}\n" for i in range(60))
    body += "60,,,\n"  # empty optional values are NULL
    job, rows = ingest_job(env, bucket_name, {"orders.csv": body}, db)
    assert job["Status"] == "Complete"
    row = rows["orders.csv"]
    assert row[3:6] == ["succeeded", "200", ""], row
    summary = json.loads(row[6])
    assert summary == {"rowsRead": 61, "rowsWritten": 61, "rowsRejected": 0, "rejected": []}
    assert write_calls == [25, 25, 11]
    first = table(db)
    assert len(first) == 61
    assert first[1] == (1, "1.50", "2024-01-02T02:04:05.000000+00:00", "n1")
    assert first[60] == (60, None, None, None)

    # The same job again: same rows, no duplicates.
    env.put(bucket_name, "orders.csv", body.encode())
    batch, job_id = create(env, bucket_name, operation(db), [(bucket_name, "orders.csv")])
    assert run(batch, job_id)["Status"] == "Complete"
    assert table(db) == first

    # A changed row upserts in place.
    changed = HEADER + "1,99.00,2025-05-05T00:00:00Z,changed\n"
    env.put(bucket_name, "orders.csv", changed.encode())
    batch, job_id = create(env, bucket_name, operation(db), [(bucket_name, "orders.csv")])
    assert run(batch, job_id)["Status"] == "Complete"
    after = table(db)
    assert len(after) == 61
    assert after[1] == (1, "99.00", "2025-05-05T00:00:00.000000+00:00", "changed")
    assert after[2] == first[2]
    assert max(write_calls) <= csv_ingest.MAX_BATCH_ITEMS


def test_rejected_rows_are_listed_with_line_numbers_and_valid_rows_still_written(
    env: Env, bucket_name: str, tmp_path: Path
) -> None:
    db = tmp_path / "db.sqlite3"
    body = (
        HEADER
        + "1,1.00,2024-01-01T00:00:00Z,ok\n"  # line 2
        + "x,1.00,,bad id\n"  # line 3
        + '2,2.00,,"multi\nline"\n'  # line 4-5
        + "\n"  # line 6: blank, skipped
        + ",3.00,,no id\n"  # line 7
        + "4,4.00,2024-01-01T00:00:00,naive\n"  # line 8
        + "5,5\n"  # line 9
    )
    job, rows = ingest_job(env, bucket_name, {"mixed.csv": body}, db)
    assert job["Status"] == "Complete"
    row = rows["mixed.csv"]
    assert row[3:6] == ["failed", "400", "RowsRejected"], row
    summary = json.loads(row[6])
    assert summary["rowsRead"] == 6
    assert summary["rowsWritten"] == 2
    assert summary["rowsRejected"] == 4
    assert [r["line"] for r in summary["rejected"]] == [3, 7, 8, 9]
    reasons = [r["reason"] for r in summary["rejected"]]
    assert "'id'" in reasons[0] and "not an int" in reasons[0]
    assert "required" in reasons[1]
    assert "no UTC offset" in reasons[2]
    assert "expected 4 fields, got 2" in reasons[3]
    assert table(db) == [
        (1, "1.00", "2024-01-01T00:00:00.000000+00:00", "ok"),
        (2, "2.00", None, "multi\nline"),
    ]


def test_rejections_beyond_the_cap_are_counted(local_env: Env, bucket_name: str, tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    body = HEADER + "bad,,,\n" * (csv_ingest.MAX_LISTED_REJECTIONS + 5)
    _, rows = ingest_job(local_env, bucket_name, {"bad.csv": body}, db)
    summary = json.loads(rows["bad.csv"][6])
    assert summary["rowsRejected"] == csv_ingest.MAX_LISTED_REJECTIONS + 5
    assert len(summary["rejected"]) == csv_ingest.MAX_LISTED_REJECTIONS
    assert summary["rejectedNotListed"] == 5


def test_wrong_header_fails_the_file_and_missing_object_is_404(
    env: Env, bucket_name: str, tmp_path: Path, write_calls: list[int]
) -> None:
    db = tmp_path / "db.sqlite3"
    env.make_bucket(bucket_name)
    env.put(bucket_name, "swapped.csv", b"amount,id,when,note\n1,1,,\n")
    env.put(bucket_name, "good.csv", (HEADER + "7,1,,x\n").encode())
    keys = ["swapped.csv", "good.csv", "missing.csv"]
    batch, job_id = create(env, bucket_name, operation(db), [(bucket_name, k) for k in keys])
    job = run(batch, job_id)
    assert job["ProgressSummary"]["NumberOfTasksFailed"] == 2
    rows = {r[1]: r for rs in read_report(env, bucket_name, job_id)["rows"].values() for r in rs}
    assert rows["swapped.csv"][3:6] == ["failed", "400", "InvalidHeader"]
    assert "same names, same order" in rows["swapped.csv"][6]
    assert rows["missing.csv"][3:6] == ["failed", "404", "NoSuchKey"]
    assert rows["good.csv"][3] == "succeeded"
    assert table(db) == [(7, "1", None, "x")]
    assert write_calls == [1]


def test_by_name_header_and_bom(local_env: Env, bucket_name: str, tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    body = "\ufeffnote,when,id,amount\r\nhello,,3,0.1\r\n"
    _, rows = ingest_job(local_env, bucket_name, {"crlf.csv": body}, db, header="by-name")
    assert rows["crlf.csv"][3] == "succeeded", rows["crlf.csv"]
    assert table(db) == [(3, "0.1", None, "hello")]


def test_repeated_key_in_one_file_last_row_wins_and_never_shares_a_batch(
    local_env: Env, bucket_name: str, tmp_path: Path, write_calls: list[int]
) -> None:
    db = tmp_path / "db.sqlite3"
    body = HEADER + "1,1,,first\n2,2,,x\n1,1,,second\n"
    _, rows = ingest_job(local_env, bucket_name, {"dup.csv": body}, db)
    assert json.loads(rows["dup.csv"][6])["rowsWritten"] == 3
    assert write_calls == [2, 1]
    assert [r[3] for r in table(db)] == ["second", "x"]


def test_a_50000_row_file_is_streamed(
    env: Env, bucket_name: str, tmp_path: Path, write_calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small reads, so the file arrives in many chunks that split lines and records.
    monkeypatch.setattr(csv_ingest, "READ_CHUNK_BYTES", 64 << 10)
    db = tmp_path / "db.sqlite3"
    count = 50_000
    body = HEADER + "".join(f'{i},{i}.{i % 100:02d},2024-06-01T12:00:00Z,"row, {i}"\n' for i in range(count))
    job, rows = ingest_job(env, bucket_name, {"big.csv": body}, db)
    assert job["Status"] == "Complete"
    summary = json.loads(rows["big.csv"][6])
    assert summary["rowsRead"] == summary["rowsWritten"] == count
    assert len(write_calls) == -(-count // csv_ingest.MAX_BATCH_ITEMS)
    assert max(write_calls) == csv_ingest.MAX_BATCH_ITEMS
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM orders").fetchone() == (count, count)
        assert conn.execute("SELECT note FROM orders WHERE id = 49999").fetchone() == ("row, 49999",)


def test_bad_parameters_are_refused_at_create_job(local_env: Env, bucket_name: str) -> None:
    from s3batch.errors import BadRequest

    local_env.make_bucket(bucket_name)
    bad = operation(Path("relative.sqlite3"))
    with pytest.raises(BadRequest, match="absolute path"):
        create(local_env, bucket_name, bad, [(bucket_name, "a.csv")])
    bad = operation(Path("/tmp/x.sqlite3"))
    bad["S3batchCsvIngest"]["Table"]["Backend"] = "mysql"
    with pytest.raises(BadRequest, match="Backend must be one of sqlite, postgresql"):
        create(local_env, bucket_name, bad, [(bucket_name, "a.csv")])


def test_more_files_than_worker_threads_all_load(local_env: Env, bucket_name: str, tmp_path: Path) -> None:
    # More files in flight than the default executor has threads: parsing threads waiting for
    # chunks must not starve the folder store's own reads (this once hung).
    db = tmp_path / "db.sqlite3"
    count = 3 * csv_ingest.INGEST_THREADS
    files = {f"part{n:02d}.csv": HEADER + f"{n},{n},,p{n}\n" for n in range(count)}
    job, rows = ingest_job(local_env, bucket_name, files, db)
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == count, rows
    assert [r[3] for r in table(db)] == [f"p{n}" for n in range(count)]
