"""The Parquet backend: files in a bucket, made from a local SQLite working copy.

    <prefix>/journal/<first id>-<last id>.parquet     append-only, one file per flush
    <prefix>/inventory/<generation>.parquet           a snapshot; the highest generation is current

Events are recorded in the working copy first (durably, before the sender is acknowledged,
exactly as with the sqlite backend); Parquet files are made from it:
- the journal every `flush_interval_s`: the rows after the last flushed id, at most
  JOURNAL_FILE_MAX_ROWS per file. The file's id range is saved before its PUT and the flushed
  id after it, so a crash in between writes the same file (same name, same rows) again: every
  row is in exactly one file. Flushed rows stay in the working copy for DEDUPE_WINDOW_S, so a
  repeated delivery in that window is still recognized (all of them with `inventory = false`:
  then the journal is what tells a listed object was seen before);
- the inventory after every backfill and reconcile, and every `snapshot_interval_s` when it
  changed: the whole table, written to a temporary file in a thread, then one upload. The two
  newest generations are kept, so a reader that picked the previous one can finish.
Each file is one PUT (S3 shows an object whole or not at all; the folder store renames a
temporary file). Staleness: the journal files lag the events by up to `flush_interval_s`, the
snapshot the inventory by up to `snapshot_interval_s` (both plus the maintenance tick).
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from s3batch.errors import StorageError
from s3batch.pipelines.tables.config import TablesConfig
from s3batch.pipelines.tables.schema import INVENTORY, JOURNAL, Column, Kind, arrow_schema
from s3batch.pipelines.tables.sql import CHANGES, TableDb
from s3batch.storage.base import ObjectStore

#: Journal rows per Parquet file at most.
JOURNAL_FILE_MAX_ROWS = 100_000
#: Journal files one flush writes at most (the rest waits for the next flush).
MAX_FILES_PER_FLUSH = 100
#: Flushed journal rows stay in the working copy this long for deduplication (seconds).
DEDUPE_WINDOW_S = 7 * 24 * 3600
#: Inventory rows per Arrow batch while a snapshot is written.
SNAPSHOT_BATCH_ROWS = 50_000
#: Inventory snapshots kept (the newest and the one before it).
SNAPSHOTS_KEPT = 2
PARQUET_COMPRESSION = "snappy"
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
#: Width of the numbers in file names, so names sort as the numbers do.
NAME_DIGITS = 20
SUFFIX = ".parquet"

# Working-copy bookkeeping (meta table).
FLUSHED = "journal_flushed_id"
PENDING_FIRST = "journal_pending_first"
PENDING_LAST = "journal_pending_last"
GENERATION = "snapshot_generation"
SNAPSHOT_CHANGES = "snapshot_changes"


@dataclass(frozen=True, slots=True)
class ParquetObject:
    bucket: str
    key: str
    size: int


def journal_folder(cfg: TablesConfig) -> str:
    return _folder(cfg, "journal")


def inventory_folder(cfg: TablesConfig) -> str:
    return _folder(cfg, "inventory")


def _folder(cfg: TablesConfig, name: str) -> str:
    return f"{cfg.prefix}/{name}/" if cfg.prefix else f"{name}/"


async def flush_journal(cfg: TablesConfig, db: TableDb, store: ObjectStore) -> int:
    """Write the journal rows not yet in a file; returns the files written."""
    assert cfg.bucket is not None
    written = 0
    for _ in range(MAX_FILES_PER_FLUSH):
        first, last = await asyncio.to_thread(_next_range, db)
        if first == 0:
            break
        body = await asyncio.to_thread(_journal_file, db, first, last)
        name = f"{journal_folder(cfg)}{first:0{NAME_DIGITS}d}-{last:0{NAME_DIGITS}d}{SUFFIX}"
        await store.put_bytes(cfg.bucket, name, body, content_type=PARQUET_CONTENT_TYPE)
        await asyncio.to_thread(_flushed, db, last)
        written += 1
    return written


def _next_range(db: TableDb) -> tuple[int, int]:
    """The id range of the next file: the one saved before a PUT that may not have happened,
    else the next rows after the last flushed id; (0, 0) when there is none."""
    first, last = db.get_meta(PENDING_FIRST), db.get_meta(PENDING_LAST)
    if first:
        return first, last
    row = db.execute(
        f"SELECT min(id), max(id) FROM"
        f" (SELECT id FROM {db.journal} WHERE id > :after ORDER BY id LIMIT :n) AS t",
        {"after": db.get_meta(FLUSHED), "n": JOURNAL_FILE_MAX_ROWS},
    ).fetchone()
    if row is None or row[0] is None:
        return 0, 0
    with db.tx():
        db.set_meta({PENDING_FIRST: int(row[0]), PENDING_LAST: int(row[1])})
    return int(row[0]), int(row[1])


def _journal_file(db: TableDb, first: int, last: int) -> bytes:
    batches = db.rows("journal", JOURNAL_FILE_MAX_ROWS, " WHERE id >= :first AND id <= :last",
                      {"first": first, "last": last})  # fmt: skip
    table = pa.Table.from_batches([to_batch(JOURNAL, rows) for rows in batches], schema=arrow_schema(JOURNAL))
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=PARQUET_COMPRESSION)
    return sink.getvalue()


def _flushed(db: TableDb, last: int) -> None:
    cutoff = datetime.now(UTC) - timedelta(seconds=DEDUPE_WINDOW_S)
    with db.tx():
        db.set_meta({FLUSHED: last, PENDING_FIRST: 0, PENDING_LAST: 0})
        if not db.cfg.inventory:  # then the journal is what tells a listed object is not news
            return
        db.execute(
            f"DELETE FROM {db.journal} WHERE id <= :last AND received_at < :cutoff",
            {"last": last, "cutoff": db.d.ts(cutoff)},
        )


def snapshot_due(db: TableDb) -> bool:
    """Whether the inventory changed since the last snapshot (or none was written)."""
    return db.get_meta(GENERATION) == 0 or db.get_meta(CHANGES) != db.get_meta(SNAPSHOT_CHANGES)


async def write_snapshot(cfg: TablesConfig, db: TableDb, store: ObjectStore) -> str:
    """Write the whole inventory as the next generation; returns its key."""
    assert cfg.bucket is not None
    changes = await asyncio.to_thread(db.get_meta, CHANGES)  # before reading: never claims too much
    generation = await asyncio.to_thread(db.get_meta, GENERATION) + 1
    key = f"{inventory_folder(cfg)}{generation:0{NAME_DIGITS}d}{SUFFIX}"
    with tempfile.TemporaryDirectory(prefix="s3batch-tables-") as work:
        path = Path(work) / "inventory.parquet"
        await asyncio.to_thread(_inventory_file, db, path)
        await store.put_file(cfg.bucket, key, path, content_type=PARQUET_CONTENT_TYPE)
    await asyncio.to_thread(db.set_meta, {GENERATION: generation, SNAPSHOT_CHANGES: changes})
    await _drop_old_snapshots(cfg, store, generation)
    return key


def _inventory_file(db: TableDb, path: Path) -> None:
    schema = arrow_schema(INVENTORY)
    with pq.ParquetWriter(path, schema, compression=PARQUET_COMPRESSION) as writer:
        writer.write_table(pa.Table.from_batches([], schema=schema))  # an empty inventory is a file too
        for rows in db.rows("inventory", SNAPSHOT_BATCH_ROWS):
            writer.write_batch(to_batch(INVENTORY, rows))


async def _drop_old_snapshots(cfg: TablesConfig, store: ObjectStore, generation: int) -> None:
    assert cfg.bucket is not None
    keep_from = generation - SNAPSHOTS_KEPT + 1
    old = [o.key for o in await parquet_objects(store, cfg.bucket, inventory_folder(cfg))
           if _number(o.key) < keep_from]  # fmt: skip
    for key in old:
        try:
            await store.delete(cfg.bucket, key)
        except StorageError:  # a leftover file is only an older snapshot; the next write retries
            continue


def _number(key: str) -> int:
    stem = key.rsplit("/", 1)[-1].removesuffix(SUFFIX)
    return int(stem) if stem.isdigit() else 0


async def parquet_objects(store: ObjectStore, bucket: str, folder: str) -> list[ParquetObject]:
    """The Parquet files directly in `folder`, in name order."""
    found = []
    async for info in store.list_objects(bucket, folder):
        if info.key.endswith(SUFFIX) and "/" not in info.key[len(folder) :]:
            found.append(ParquetObject(bucket, info.key, info.size))
    return found


async def current_snapshot(cfg: TablesConfig, store: ObjectStore) -> ParquetObject | None:
    assert cfg.bucket is not None
    files = [o for o in await parquet_objects(store, cfg.bucket, inventory_folder(cfg)) if _number(o.key)]
    return max(files, key=lambda o: _number(o.key), default=None)


def to_batch(columns: tuple[Column, ...], rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
    """Rows as read from the database → one Arrow batch (SQLite's timestamp text parsed)."""
    arrays = []
    for i, column in enumerate(columns):
        values = [r[i] for r in rows]
        if column.kind is Kind.TIMESTAMP:
            arrays.append(_timestamps(values))
        else:
            arrays.append(pa.array(values, type=arrow_schema((column,)).field(0).type))
    return pa.RecordBatch.from_arrays(arrays, schema=arrow_schema(columns))


def _timestamps(values: list[Any]) -> pa.Array:
    utc = pa.timestamp("us", tz="UTC")
    if any(isinstance(v, datetime) for v in values):  # PostgreSQL: datetimes already
        return pa.array(values, type=utc)
    # SQLite's "YYYY-MM-DD HH:MM:SS.ffffff" (UTC) parses as a naive timestamp, then is marked UTC.
    return pa.array(values, type=pa.string()).cast(pa.timestamp("us")).cast(utc)


def iter_batches(
    db: TableDb, table: str, columns: tuple[Column, ...], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    for rows in db.rows(table, batch_rows):
        yield to_batch(columns, rows)
