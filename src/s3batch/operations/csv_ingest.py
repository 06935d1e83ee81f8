"""S3batchCsvIngest (s3batch extension): load each CSV object of the manifest into a table.

One task is one CSV object. Parameters:

    {"Table": {"Backend": "sqlite", "Path": "/abs/path/db.sqlite3", "Name": "orders"},
     "Schema": {"Columns": [{"Name": "id", "Type": "int", "Required": true}, ...],
                "PartitionKey": "id", "SortKey": null},
     "Header": "exact"}

Column types, empty-value rules and header modes are in `s3batch.domain.csv_schema`.

How a file is loaded:
- The object is streamed (READ_CHUNK_BYTES at a time) and decoded as UTF-8 (a byte-order mark
  is dropped) into lines that the csv module parses, so memory stays flat in file size. Parsing
  and table writes run in a worker thread (INGEST_THREADS per process): both are blocking, and
  the event loop keeps serving the job's other tasks meanwhile.
- Rows are upserted by the key (PartitionKey, plus SortKey when given): a row whose key exists
  replaces that row, so running the same job twice leaves the same rows, and a changed row
  overwrites the old one. Within one file the last row of a key wins.
- Rows go to the table in batches of at most MAX_BATCH_ITEMS (25, DynamoDB's BatchWriteItem
  limit, so a DynamoDB backend can take the same batches); a batch never holds one key twice
  (BatchWriteItem refuses that), so a repeated key flushes the batch first. Each batch is one
  transaction: after a crash, the batches written stay, and a retry rewrites them harmlessly.
- Blank lines are skipped and not counted. Line numbers are 1-based physical lines of the file
  (the header is line 1; a record with a quoted newline is numbered by its first line).

Outcome per file (ResultMessage is compact one-line JSON):

    {"rowsRead":3,"rowsWritten":2,"rowsRejected":1,"rejected":[{"line":3,"reason":"..."}]}

- Every row valid: succeeded.
- Some rows rejected: the valid rows are still written, and the task FAILS with error code
  `RowsRejected` (HTTP 400) so the job's failure count and report show the file needs
  attention; the rejected rows are listed (at most MAX_LISTED_REJECTIONS, then
  `"rejectedNotListed": n`). A rejected row is never silently dropped.
- A header that does not match: fails with `InvalidHeader` (400); nothing is written.
- A file that is not UTF-8 or not parseable CSV (`InvalidEncoding`, `MalformedCSV`) or a table
  error (`TableSchemaMismatch`, `TableWriteError`): fails; batches written before the problem
  stay, and the message carries the counts so far plus `"error"`.
- A missing object or other storage error: the storage error (e.g. 404 NoSuchKey).

Backends: `sqlite` (below) and `postgresql` (`csv_postgres`, with `"Url":
"postgresql://user@host:port/db"` instead of `"Path"`). `TableBackend` is the seam for more
(DynamoDB): a backend receives typed values (`csv_schema.Value`) and maps them to its own
column types, and reports its driver's errors as `TableError`.
SQLite has no decimal, date or timestamp type, so those are stored as TEXT: decimals exactly as
written (`1.50` stays `1.50`), dates as `YYYY-MM-DD`, timestamps as UTC ISO 8601 with
microseconds (`2024-01-02T03:04:05.000000+00:00`, which sorts as text); bools as 0/1. The table
is created when missing (primary key = the key columns); an existing table must have every
schema column and the same primary key, else `TableSchemaMismatch`. The database's folder must
exist.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import functools
import json
import sqlite3
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from importlib.util import find_spec
from pathlib import PurePosixPath
from typing import Any, Protocol

from s3batch.domain import pricing
from s3batch.domain.csv_schema import (
    ColumnType,
    CsvSchema,
    HeaderError,
    HeaderMode,
    RowRejected,
    Value,
    convert_row,
    match_header,
    parse_schema,
)
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import BadRequest, StorageError
from s3batch.operations._params import reject_unknown
from s3batch.operations.actions import GET, Permissions, no_extra_needs
from s3batch.operations.base import (
    UNBATCHED,
    NoProbe,
    Operation,
    OperationContext,
    OperationKind,
    PerTask,
    storage_failure,
)
from s3batch.storage.base import ObjectStore

NAME = "S3batchCsvIngest"

#: DynamoDB BatchWriteItem takes at most 25 items; every backend gets batches this size or less.
MAX_BATCH_ITEMS = 25
#: Rejected rows listed in ResultMessage; the rest are counted, keeping report rows readable.
MAX_LISTED_REJECTIONS = 20
#: Bytes asked of the store per read (1 MiB): memory per file in flight stays small.
READ_CHUNK_BYTES = 1 << 20
#: Files parsed at once per process. Their threads are not the event loop's default executor:
#: a parsing thread waits for chunks that a store may read with asyncio.to_thread (the folder
#: store does), so parsers filling the default pool would wait forever on each other.
INGEST_THREADS = 8
#: A line longer than this (16 Mi characters) is refused rather than buffered without bound.
MAX_LINE_CHARS = 16 << 20
#: How long a write waits for another task's transaction on the same SQLite file.
SQLITE_BUSY_TIMEOUT_S = 60.0
#: HTTP status reported for a file whose content is at fault (the GET itself succeeded).
BAD_CONTENT_STATUS = 400
#: HTTP status reported when the table's server cannot be reached (the job's retry policy applies).
UNAVAILABLE_STATUS = 503

BACKENDS = ("sqlite", "postgresql")

_SQLITE_TYPES = {
    ColumnType.STRING: "TEXT",
    ColumnType.INT: "INTEGER",
    ColumnType.FLOAT: "REAL",
    ColumnType.DECIMAL: "TEXT",
    ColumnType.BOOL: "INTEGER",
    ColumnType.DATE: "TEXT",
    ColumnType.TIMESTAMP: "TEXT",
}


@dataclass(frozen=True, slots=True)
class TableSpec:
    backend: str
    #: sqlite: the database file (absolute).
    path: str
    name: str
    #: postgresql: a libpq URL without a password.
    url: str = ""


def _table_spec(params: Mapping[str, Any]) -> TableSpec:
    table = params.get("Table")
    if not isinstance(table, Mapping):
        raise BadRequest(f"{NAME}.Table is required: {{Backend, Path or Url, Name}}")
    reject_unknown(f"{NAME}.Table", table, {"Backend", "Path", "Url", "Name"})
    backend = table.get("Backend")
    if backend not in BACKENDS:
        raise BadRequest(f"{NAME}.Table.Backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    name = table.get("Name")
    if not isinstance(name, str) or not name or "\x00" in name:
        raise BadRequest(f"{NAME}.Table.Name must be a non-empty string")
    if backend == "postgresql":
        return TableSpec("postgresql", "", name, url=_postgres_url(table))
    if "Url" in table:
        raise BadRequest(f"{NAME}.Table.Url is for Backend postgresql; sqlite takes Path")
    path = table.get("Path")
    # Absolute, because tasks may run in a worker process with another working directory.
    if not isinstance(path, str) or not PurePosixPath(path).is_absolute():
        raise BadRequest(f"{NAME}.Table.Path must be an absolute path; got {path!r}")
    return TableSpec("sqlite", path, name)


def _postgres_url(table: Mapping[str, Any]) -> str:
    if "Path" in table:
        raise BadRequest(f"{NAME}.Table.Path is for Backend sqlite; postgresql takes Url")
    url = table.get("Url")
    if not isinstance(url, str):
        raise BadRequest(f"{NAME}.Table.Url is required for postgresql: postgresql://user@host:port/db")
    if find_spec("psycopg") is None:
        raise BadRequest(f"{NAME}: the postgresql backend needs psycopg: pip install 's3batch[postgres]'")
    from s3batch.operations.csv_postgres import check_url

    try:
        check_url(url)
    except ValueError as exc:
        raise BadRequest(f"{NAME}.Table.Url: {exc}") from None
    return url


def _schema(params: Mapping[str, Any]) -> CsvSchema:
    return parse_schema(NAME, params.get("Schema"), params.get("Header"))


def validate(params: Mapping[str, Any]) -> None:
    reject_unknown(NAME, params, {"Table", "Schema", "Header"})
    _table_spec(params)
    _schema(params)


class TableMismatch(Exception):
    """An existing table cannot take the schema's rows."""


class TableError(Exception):
    """The database failed (a write refused, cannot connect); a backend's driver errors as one type.

    `retryable`: the server could not be reached, so the task may succeed when tried again."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class TableBackend(Protocol):
    """Where rows go. Used from one thread at a time; one instance per file."""

    def prepare(self) -> None:
        """Create the table if missing; raise TableMismatch if it cannot take the rows."""
        ...

    def write_batch(self, items: Sequence[Mapping[str, Value]]) -> None:
        """Upsert at most MAX_BATCH_ITEMS items with distinct keys, all or nothing."""
        ...

    def close(self) -> None: ...


def _quote(name: str) -> str:
    """An SQL identifier, quoted so any name (`when`, `order id`) is safe."""
    return '"' + name.replace('"', '""') + '"'


def _sqlite_value(value: Value) -> str | int | float | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):  # before date: a datetime is a date
        return value.isoformat(timespec="microseconds")
    if isinstance(value, date):
        return value.isoformat()
    return value


class SqliteTable:
    """A table in a SQLite file; upserts with INSERT ... ON CONFLICT DO UPDATE."""

    def __init__(self, spec: TableSpec, schema: CsvSchema) -> None:
        self.schema = schema
        self.table = _quote(spec.name)
        self.conn = sqlite3.connect(spec.path, timeout=SQLITE_BUSY_TIMEOUT_S)
        columns = ", ".join(_quote(n) for n in schema.names)
        marks = ", ".join("?" for _ in schema.names)
        keys = ", ".join(_quote(k) for k in schema.key_names)
        others = [n for n in schema.names if n not in schema.key_names]
        # Every non-key column is set, so the row ends up exactly as in the file (PutItem's
        # replace semantics); a key-only schema has nothing to update.
        action = (
            "DO UPDATE SET " + ", ".join(f"{_quote(n)} = excluded.{_quote(n)}" for n in others)
            if others
            else "DO NOTHING"
        )
        self.upsert = f"INSERT INTO {self.table} ({columns}) VALUES ({marks}) ON CONFLICT ({keys}) {action}"

    def prepare(self) -> None:
        columns = ", ".join(f"{_quote(c.name)} {_SQLITE_TYPES[c.type]}" for c in self.schema.columns)
        keys = ", ".join(_quote(k) for k in self.schema.key_names)
        with self.conn:
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ({columns}, PRIMARY KEY ({keys}))")
        info = self.conn.execute(f"PRAGMA table_info({self.table})").fetchall()
        have = {row[1] for row in info}
        missing = [n for n in self.schema.names if n not in have]
        if missing:
            raise TableMismatch(f"table lacks column(s) {', '.join(missing)}")
        primary = tuple(row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5]))
        if primary != self.schema.key_names:
            raise TableMismatch(f"table's primary key is {list(primary)}, not {list(self.schema.key_names)}")

    def write_batch(self, items: Sequence[Mapping[str, Value]]) -> None:
        if len(items) > MAX_BATCH_ITEMS:
            raise ValueError(f"a batch holds at most {MAX_BATCH_ITEMS} items; got {len(items)}")
        rows = [tuple(_sqlite_value(item[n]) for n in self.schema.names) for item in items]
        with self.conn:
            self.conn.executemany(self.upsert, rows)

    def close(self) -> None:
        self.conn.close()


def open_table(spec: TableSpec, schema: CsvSchema) -> TableBackend:
    """The backend named by the job; psycopg is imported only for postgresql."""
    if spec.backend == "postgresql":
        from s3batch.operations.csv_postgres import PostgresTable

        return PostgresTable(spec, schema)
    return SqliteTable(spec, schema)


@dataclass(slots=True)
class Summary:
    rows_read: int = 0
    rows_written: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    rows_rejected: int = 0

    def reject(self, line: int, reason: str) -> None:
        self.rows_rejected += 1
        if len(self.rejected) < MAX_LISTED_REJECTIONS:
            self.rejected.append((line, reason))

    def message(self, error: str | None = None) -> str:
        out: dict[str, Any] = {
            "rowsRead": self.rows_read,
            "rowsWritten": self.rows_written,
            "rowsRejected": self.rows_rejected,
            "rejected": [{"line": line, "reason": reason} for line, reason in self.rejected],
        }
        if self.rows_rejected > len(self.rejected):
            out["rejectedNotListed"] = self.rows_rejected - len(self.rejected)
        if error is not None:
            out["error"] = error
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


class FileFailed(Exception):
    """The file could not be loaded to its end; carries the counts so far."""

    def __init__(self, code: str, reason: str, summary: Summary) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.summary = summary


def decoded_lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """UTF-8 lines (each with its "\\n") from byte chunks, whatever the chunk boundaries.

    Split on "\\n" only: str.splitlines would also split on U+2028 and friends, which CSV
    treats as ordinary characters. "\\r\\n" endings are left to the csv module."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    tail = ""
    for chunk in chunks:
        lines = (tail + decoder.decode(chunk)).split("\n")
        tail = lines.pop()
        if len(tail) > MAX_LINE_CHARS:
            raise csv.Error(f"a line is longer than {MAX_LINE_CHARS} characters")
        for line in lines:
            yield line + "\n"
    tail += decoder.decode(b"", final=True)
    if tail:
        yield tail


class _Batcher:
    """Collects items into batches of at most MAX_BATCH_ITEMS with distinct keys."""

    def __init__(self, schema: CsvSchema, table: TableBackend, summary: Summary) -> None:
        self.keys_of = schema.key_names
        self.table = table
        self.summary = summary
        self.items: list[dict[str, Value]] = []
        self.keys: set[tuple[Value, ...]] = set()

    def add(self, item: dict[str, Value]) -> None:
        key = tuple(item[k] for k in self.keys_of)
        if key in self.keys:  # BatchWriteItem refuses one key twice in a batch
            self.flush()
        self.items.append(item)
        self.keys.add(key)
        if len(self.items) == MAX_BATCH_ITEMS:
            self.flush()

    def flush(self) -> None:
        if self.items:
            self.table.write_batch(self.items)
            self.summary.rows_written += len(self.items)
            self.items = []
            self.keys.clear()


def _records(reader: Any) -> Iterator[tuple[int, list[str]]]:
    """(first physical line, fields) per record, skipping blank lines."""
    while True:
        line = reader.line_num + 1
        try:
            fields: list[str] = next(reader)
        except StopIteration:
            return
        if fields:  # [] is a blank line
            yield line, fields


def ingest(lines: Iterator[str], schema: CsvSchema, table: TableBackend) -> Summary:
    """Load one file's lines into the table. Raises HeaderError before writing anything, and
    FileFailed for a problem after the header."""
    summary = Summary()
    reader = csv.reader(lines)
    batcher = _Batcher(schema, table, summary)
    line = 1
    try:
        rows = _records(reader)
        first = next(rows, None) if schema.header is not HeaderMode.NONE else None
        positions = match_header(schema, None if first is None else first[1])
        table.prepare()
        for line, fields in rows:
            summary.rows_read += 1
            try:
                batcher.add(convert_row(schema, positions, fields))
            except RowRejected as exc:
                summary.reject(line, exc.reason)
        batcher.flush()
    except UnicodeDecodeError as exc:
        raise FileFailed("InvalidEncoding", f"not UTF-8 after line {line}: {exc.reason}", summary) from None
    except csv.Error as exc:
        raise FileFailed("MalformedCSV", f"line {reader.line_num}: {exc}", summary) from None
    except TableMismatch as exc:
        raise FileFailed("TableSchemaMismatch", str(exc), summary) from None
    except sqlite3.Error as exc:
        raise FileFailed("TableWriteError", f"{type(exc).__name__}: {exc}", summary) from None
    except TableError as exc:
        raise FileFailed("TableWriteError", str(exc), summary) from None
    return summary


async def _next_chunk(chunks: AsyncIterator[bytes]) -> bytes:
    return await anext(chunks)


def _bridge(chunks: AsyncIterator[bytes], loop: asyncio.AbstractEventLoop) -> Iterator[bytes]:
    """The store's async chunks as a blocking iterator for the worker thread: each chunk is
    fetched on the event loop, so the store client stays on the loop it belongs to."""
    while True:
        try:
            yield asyncio.run_coroutine_threadsafe(_next_chunk(chunks), loop).result()
        except StopAsyncIteration:
            return


@functools.cache
def _ingest_pool() -> ThreadPoolExecutor:
    """The process's parsing threads (created on first use; its threads end with the process)."""
    return ThreadPoolExecutor(INGEST_THREADS, thread_name_prefix="csv-ingest")


class CsvIngest(Operation):
    name = NAME

    def __init__(self, params: Mapping[str, Any], ctx: OperationContext) -> None:
        self.table = _table_spec(params)
        self.schema = _schema(params)
        self.store: ObjectStore = ctx.store

    def _load(self, chunks: Iterator[bytes]) -> Summary:
        table = open_table(self.table, self.schema)
        try:
            return ingest(decoded_lines(chunks), self.schema, table)
        finally:
            table.close()

    async def apply(self, task: Task) -> TaskResult:
        chunks = self.store.iter_bytes(task.bucket, task.key, task.version_id, chunk_size=READ_CHUNK_BYTES)
        loop = asyncio.get_running_loop()
        try:
            summary = await loop.run_in_executor(_ingest_pool(), self._load, _bridge(chunks, loop))
        except StorageError as exc:
            return storage_failure(exc)
        except HeaderError as exc:
            return TaskResult.fail("InvalidHeader", str(exc), BAD_CONTENT_STATUS)
        except FileFailed as exc:
            return TaskResult.fail(exc.code, exc.summary.message(exc.reason), BAD_CONTENT_STATUS)
        except sqlite3.Error as exc:  # opening the database (e.g. its folder is missing)
            return TaskResult.fail("TableWriteError", f"{type(exc).__name__}: {exc}", BAD_CONTENT_STATUS)
        except TableError as exc:  # opening the table, e.g. the PostgreSQL server is down
            if exc.retryable:
                return TaskResult.fail("TableUnavailable", str(exc), UNAVAILABLE_STATUS, retryable=True)
            return TaskResult.fail("TableWriteError", str(exc), BAD_CONTENT_STATUS)
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        if summary.rows_rejected:
            return TaskResult.fail("RowsRejected", summary.message(), BAD_CONTENT_STATUS)
        return TaskResult.ok(summary.message())


KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(object_actions=(GET,), bucket_actions=(), extra=no_extra_needs),
    requests=PerTask(pricing.GET, 1),
    probe=NoProbe.PLAIN_DATA_PATH,
    batch_size=UNBATCHED,
    create=CsvIngest,
)
