"""The tables for `s3batch query` (and any other reader): where each one is and how to read it.

`table_source(file, table, store)` answers for one table of a pipeline file:
- sqlite and postgresql: an Arrow record-batch reader streaming the table (its own read-only
  connection, closed when the reader is exhausted);
- parquet: the journal's files, and the inventory's current snapshot file, as (bucket, key,
  size) to be read from the object store; the `reconciles` table from the working copy.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pyarrow as pa  # type: ignore[import-untyped]

from s3batch.errors import ConfigError
from s3batch.pipelines.tables import parquet
from s3batch.pipelines.tables.config import Backend, TablesConfig
from s3batch.pipelines.tables.parquet import ParquetObject
from s3batch.pipelines.tables.schema import PUBLIC_TABLES, TABLES, arrow_schema
from s3batch.pipelines.tables.sql import SQLITE, TableDb, TablesError, connect
from s3batch.storage.base import ObjectStore

#: Rows per Arrow batch (or manifest lines per fetch) read from SQLite or PostgreSQL.
READ_BATCH_ROWS = 10_000
#: Columns a manifest query returns: bucket, key and optionally version_id.
MANIFEST_COLUMNS = ("bucket", "key")
MANIFEST_VERSION = "version_id"


@dataclass(frozen=True, slots=True)
class TableSource:
    """One table to read: `reader` (rows) or `files` (Parquet objects); `schema` either way."""

    table: str
    schema: pa.Schema
    reader: pa.RecordBatchReader | None = None
    files: tuple[ParquetObject, ...] = ()


def tables_config(file: Path) -> TablesConfig:
    """The `[tables]` section of a pipeline file. Raises ConfigError when it has none."""
    from s3batch.pipelines.config import load_config

    cfg = load_config(file)
    if cfg.tables is None:
        raise ConfigError(f"{file}: the pipeline has no [tables] section")
    return cfg.tables


async def table_source(file: Path, table: str, store: ObjectStore) -> TableSource:
    """How to read `table` (journal, inventory or reconciles) of the pipeline in `file`."""
    if table not in PUBLIC_TABLES:
        raise ConfigError(f"no table {table!r}; the tables are {', '.join(PUBLIC_TABLES)}")
    cfg = tables_config(file)
    if (table == "journal" and not cfg.journal) or (table == "inventory" and not cfg.inventory):
        raise ConfigError(f"{file}: the pipeline keeps no {table} (tables.{table} = false)")
    schema = arrow_schema(TABLES[table][0])
    if cfg.backend is Backend.PARQUET and table == "journal":
        assert cfg.bucket is not None
        files = await parquet.parquet_objects(store, cfg.bucket, parquet.journal_folder(cfg))
        return TableSource(table, schema, files=tuple(files))
    if cfg.backend is Backend.PARQUET and table == "inventory":
        current = await parquet.current_snapshot(cfg, store)
        return TableSource(table, schema, files=(current,) if current else ())
    return TableSource(table, schema, reader=table_reader(cfg, table))


def table_reader(cfg: TablesConfig, table: str) -> pa.RecordBatchReader:
    """A streaming reader of one table of a sqlite or postgresql backend (or of Parquet's
    working copy). Raises TablesError when the database cannot be opened."""
    db = _read_only(cfg)
    columns = TABLES[table][0]

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            yield from parquet.iter_batches(db, table, columns, READ_BATCH_ROWS)
        finally:
            db.close()

    return pa.RecordBatchReader.from_batches(arrow_schema(columns), batches())


def manifest_lines(cfg: TablesConfig, sql: str) -> Iterator[str]:
    """The answer of `sql` (columns bucket, key[, version_id]) as CSV manifest lines, keys
    URL-encoded as a CSV manifest's are (docs/aws-contracts.md#manifests). The SQL runs on a
    read-only connection (Parquet: on the working copy). Raises TablesError for other columns
    or an empty bucket or key, naming the row."""
    db = _read_only(cfg)
    try:
        cur = db.execute(sql)
        columns = tuple(str(d[0]).lower() for d in cur.description or ())
        if columns not in (MANIFEST_COLUMNS, (*MANIFEST_COLUMNS, MANIFEST_VERSION)):
            raise TablesError(
                f"the manifest query must return bucket, key[, version_id]; got {', '.join(columns)}"
            )
        number = 0
        while batch := cur.fetchmany(READ_BATCH_ROWS):
            for row in batch:
                number += 1
                yield _manifest_line(row, number)
    finally:
        db.close()


def _manifest_line(row: tuple[Any, ...], number: int) -> str:
    bucket, key = row[0], row[1]
    if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
        raise TablesError(f"manifest query row {number}: bucket and key must be non-empty")
    fields = [bucket, quote_plus(key, safe="/")]
    if len(row) > 2:
        fields.append("" if row[2] is None else str(row[2]))
    return ",".join(fields) + "\n"


def _read_only(cfg: TablesConfig) -> TableDb:
    if cfg.backend is Backend.POSTGRESQL:
        return connect(cfg, read_only=True)
    assert cfg.path is not None
    if not cfg.path.is_file():
        raise TablesError(f"the tables' SQLite file {cfg.path} does not exist yet (the pipeline never ran)")
    try:
        conn = sqlite3.connect(f"{cfg.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        raise TablesError(f"cannot open {cfg.path}: {exc}") from None
    return TableDb(cfg, conn, SQLITE)
