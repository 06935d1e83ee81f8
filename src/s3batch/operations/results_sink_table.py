"""The table results sinks: SQLite and PostgreSQL, named as S3batchCsvIngest names its tables.

    "Table": {"Backend": "sqlite", "Path": "/abs/results.sqlite3", "Name": "embeddings"}
    "Table": {"Backend": "postgresql", "Url": "postgresql://user@host:5432/db", "Name": "embeddings"}

The URL carries no password (job parameters are stored and shown by DescribeJob): libpq reads
PGPASSWORD, PGPASSFILE or ~/.pgpass of the user running the worker (operations/csv_postgres.py).

The table is created when missing:

    bucket, key, version_id   text, NOT NULL; the PRIMARY KEY. version_id is '' for an
                              unversioned object (a key column cannot be NULL)
    task_id, job_id           text: the task and job that wrote the row last
    written_at                SQLite: TEXT, UTC ISO 8601 with microseconds; PostgreSQL: timestamptz

and each data column is added (ALTER TABLE ... ADD COLUMN) when a row first has it:

    type      SQLite                          PostgreSQL
    STRING    TEXT                            text
    INT       INTEGER                         bigint
    FLOAT     REAL                            double precision
    BOOL      BOOLEAN (0/1)                   boolean
    VECTOR    BLOB: little-endian float32s    real[]   (castable to pgvector's vector)
    STRINGS   JSON_TEXT: a JSON array         text[]

Each group commit is one transaction of `INSERT ... ON CONFLICT (bucket, key, version_id) DO
UPDATE` that sets every column the sink knows, so a row is replaced whole (a column the new
data lacks becomes NULL): a retried task, a resumed job or a re-run job leaves one row per
object, the latest. An existing table must have the six columns above and that primary key;
its data columns keep their types (a row whose value does not fit fails: SinkDataError), and
columns of types this sink does not write are left alone. Database calls run in the sink's own
thread, one at a time, so the event loop keeps serving the job's other tasks.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import struct
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from s3batch.errors import StorageError
from s3batch.operations.csv_ingest import (
    BAD_CONTENT_STATUS,
    SQLITE_BUSY_TIMEOUT_S,
    UNAVAILABLE_STATUS,
    TableError,
    TableMismatch,
    TableSpec,
)
from s3batch.operations.results_sink import GroupCommitSink, SinkRow, table_location
from s3batch.operations.results_sink_columns import RESERVED_COLUMNS, ColumnType, ColumnTypes

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")

#: The primary key: one row per object version.
KEY_COLUMNS = ("bucket", "key", "version_id")

SQLITE_TYPES = {
    ColumnType.STRING: "TEXT",
    ColumnType.INT: "INTEGER",
    ColumnType.FLOAT: "REAL",
    ColumnType.BOOL: "BOOLEAN",
    ColumnType.VECTOR: "BLOB",
    ColumnType.STRINGS: "JSON_TEXT",
}
POSTGRES_TYPES = {
    ColumnType.STRING: "text",
    ColumnType.INT: "bigint",
    ColumnType.FLOAT: "double precision",
    ColumnType.BOOL: "boolean",
    ColumnType.VECTOR: "real[]",
    ColumnType.STRINGS: "text[]",
}
_SQLITE_KINDS = {declared: kind for kind, declared in SQLITE_TYPES.items()}
_POSTGRES_KINDS = {declared: kind for kind, declared in POSTGRES_TYPES.items()}
_SQLITE_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

#: A row as bound: the six fixed columns, then the data columns in statement order.
Bound = tuple[Any, ...]


def _quote(name: str) -> str:
    """An SQL identifier, quoted so any name (`when`, `order id`) is safe."""
    return '"' + name.replace('"', '""') + '"'


def vector_blob(values: Sequence[float]) -> bytes:
    """A VECTOR as SQLite stores it: little-endian float32s (numpy.frombuffer(b, "<f4") reads it)."""
    return struct.pack(f"<{len(values)}f", *values)


class Database(Protocol):
    """One table's connection. Used from the sink's thread only; raises TableError/TableMismatch."""

    def prepare(self) -> tuple[dict[str, ColumnType], set[str]]:
        """Create the table if missing; its typed data columns and the others (foreign)."""
        ...

    def add_column(self, name: str, kind: ColumnType) -> None:
        """Make sure the table has column `name` of `kind` (another writer may have added it)."""
        ...

    def upsert(self, names: Sequence[str], kinds: Mapping[str, ColumnType], rows: Sequence[Bound]) -> None:
        """Upsert `rows` (fixed columns + `names`) in one transaction."""
        ...

    def value(self, kind: ColumnType, value: Any) -> Any:
        """A JSON value of a column of `kind` as the driver binds it."""
        ...

    def stamp(self, when: datetime) -> Any:
        """written_at as bound."""
        ...

    def close(self) -> None: ...


def _upsert_sql(table: str, names: Sequence[str], marks: Sequence[str]) -> str:
    columns = [*RESERVED_COLUMNS, *names]
    updates = ", ".join(f"{_quote(n)} = excluded.{_quote(n)}" for n in columns if n not in KEY_COLUMNS)
    return (
        f"INSERT INTO {table} ({', '.join(map(_quote, columns))}) VALUES ({', '.join(marks)})"
        f" ON CONFLICT ({', '.join(map(_quote, KEY_COLUMNS))}) DO UPDATE SET {updates}"
    )


def _check_layout(columns: Mapping[str, str], primary: Sequence[str]) -> None:
    missing = [name for name in RESERVED_COLUMNS if name not in columns]
    if missing:
        raise TableMismatch(f"table lacks column(s) {', '.join(missing)}")
    if tuple(primary) != KEY_COLUMNS:
        raise TableMismatch(f"table's primary key is {list(primary)}, not {list(KEY_COLUMNS)}")


def _data_columns(
    columns: Mapping[str, str], kinds: Mapping[str, ColumnType]
) -> tuple[dict[str, ColumnType], set[str]]:
    typed = {n: kinds[t] for n, t in columns.items() if n not in RESERVED_COLUMNS and t in kinds}
    return typed, {n for n in columns if n not in RESERVED_COLUMNS and n not in typed}


class SqliteDatabase:
    """The table in a SQLite file (its folder must exist)."""

    def __init__(self, spec: TableSpec) -> None:
        self.table = _quote(spec.name)
        try:
            self.conn = sqlite3.connect(spec.path, timeout=SQLITE_BUSY_TIMEOUT_S)
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from None

    def prepare(self) -> tuple[dict[str, ColumnType], set[str]]:
        fixed = ", ".join(f"{_quote(n)} TEXT NOT NULL" for n in RESERVED_COLUMNS)
        keys = ", ".join(map(_quote, KEY_COLUMNS))
        self._run(f"CREATE TABLE IF NOT EXISTS {self.table} ({fixed}, PRIMARY KEY ({keys}))")
        columns, primary = self._layout()
        _check_layout(columns, primary)
        return _data_columns(columns, _SQLITE_KINDS)

    def _layout(self) -> tuple[dict[str, str], list[str]]:
        info = self.conn.execute(f"PRAGMA table_info({self.table})").fetchall()
        columns = {row[1]: str(row[2]).upper() for row in info}
        return columns, [row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5])]

    def _run(self, sql: str) -> None:
        try:
            with self.conn:
                self.conn.execute(sql)
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from None

    def add_column(self, name: str, kind: ColumnType) -> None:
        try:
            with self.conn:
                self.conn.execute(f"ALTER TABLE {self.table} ADD COLUMN {_quote(name)} {SQLITE_TYPES[kind]}")
            return
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise _sqlite_error(exc) from None
        have = self._layout()[0].get(name)  # another writer added it: it must be of our type
        if have != SQLITE_TYPES[kind]:
            raise TableMismatch(f"column {name} is {have}, not {SQLITE_TYPES[kind]}")

    def upsert(self, names: Sequence[str], kinds: Mapping[str, ColumnType], rows: Sequence[Bound]) -> None:
        sql = _upsert_sql(self.table, names, ["?"] * (len(RESERVED_COLUMNS) + len(names)))
        try:
            with self.conn:
                self.conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise _sqlite_error(exc) from None

    def value(self, kind: ColumnType, value: Any) -> Any:
        if value is None:
            return None
        if kind is ColumnType.VECTOR:
            return vector_blob(value)
        if kind is ColumnType.STRINGS:
            return json.dumps(value, ensure_ascii=False)
        if kind is ColumnType.BOOL:
            return int(value)
        return float(value) if kind is ColumnType.FLOAT else value

    def stamp(self, when: datetime) -> Any:
        return when.isoformat(timespec="microseconds")

    def close(self) -> None:
        self.conn.close()


def _sqlite_error(exc: sqlite3.Error) -> TableError:
    busy = getattr(exc, "sqlite_errorcode", None) in _SQLITE_BUSY_CODES
    return TableError(f"SQLite: {type(exc).__name__}: {exc}", retryable=busy)


_PG_COLUMNS_SQL = (
    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
    " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
)
_PG_PRIMARY_KEY_SQL = (
    "SELECT a.attname FROM pg_index i"
    " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)"
    " WHERE i.indrelid = %s::regclass AND i.indisprimary"
    " ORDER BY array_position(i.indkey::int2[], a.attnum)"
)
_PG_FIXED_TYPES = {"written_at": "timestamp with time zone"}


class PostgresDatabase:
    """The table in PostgreSQL (the connection's current schema); psycopg imported only here."""

    def __init__(self, spec: TableSpec) -> None:
        import psycopg

        from s3batch.operations.csv_postgres import CONNECT_TIMEOUT_S, STATEMENT_TIMEOUT_S

        self.name = spec.name
        self.table = _quote(spec.name)
        self._errors: type[Exception] = psycopg.Error
        self._lost: type[Exception] = psycopg.OperationalError
        options = f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000}"
        try:
            self.conn: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(
                spec.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, options=options
            )
        except psycopg.OperationalError as exc:
            raise TableError(f"cannot connect to PostgreSQL: {exc}".strip(), retryable=True) from None

    def _guard(self, work: Callable[[], T]) -> T:
        try:
            return work()
        except self._errors as exc:
            lost = isinstance(exc, self._lost)  # the server went away: trying again may work
            raise TableError(f"PostgreSQL: {type(exc).__name__}: {exc}", retryable=lost) from None

    def prepare(self) -> tuple[dict[str, ColumnType], set[str]]:
        self._guard(self._create)
        columns, primary = self._guard(self._layout)
        _check_layout(columns, primary)
        return _data_columns(columns, _POSTGRES_KINDS)

    def _create(self) -> None:
        fixed = ", ".join(f"{_quote(n)} {_PG_FIXED_TYPES.get(n, 'text')} NOT NULL" for n in RESERVED_COLUMNS)
        keys = ", ".join(map(_quote, KEY_COLUMNS))
        with self.conn.transaction():
            # Two processes creating one table at once would race on the catalog even with IF NOT EXISTS.
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.name,))
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ({fixed}, PRIMARY KEY ({keys}))")

    def _layout(self) -> tuple[dict[str, str], list[str]]:
        columns = self.conn.execute(_PG_COLUMNS_SQL, (self.table,)).fetchall()
        primary = self.conn.execute(_PG_PRIMARY_KEY_SQL, (self.table,)).fetchall()
        return {str(n): str(t) for n, t in columns}, [str(n) for (n,) in primary]

    def add_column(self, name: str, kind: ColumnType) -> None:
        declared = POSTGRES_TYPES[kind]
        sql = f"ALTER TABLE {self.table} ADD COLUMN IF NOT EXISTS {_quote(name)} {declared}"
        self._guard(lambda: self.conn.execute(sql))
        have = self._guard(self._layout)[0].get(name)
        if have != declared:
            raise TableMismatch(f"column {name} is {have}, not {declared}")

    def upsert(self, names: Sequence[str], kinds: Mapping[str, ColumnType], rows: Sequence[Bound]) -> None:
        fixed = [f"%s::{_PG_FIXED_TYPES.get(n, 'text')}" for n in RESERVED_COLUMNS]
        # Explicit casts: every row binds the same types, whatever Python value came.
        marks = [*fixed, *(f"%s::{POSTGRES_TYPES[kinds[n]]}" for n in names)]
        sql = _upsert_sql(self.table, names, marks)

        def run() -> None:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.executemany(sql, rows)

        self._guard(run)

    def value(self, kind: ColumnType, value: Any) -> Any:
        if value is None:
            return None
        if kind is ColumnType.VECTOR:
            return [float(v) for v in value]
        return float(value) if kind is ColumnType.FLOAT else value

    def stamp(self, when: datetime) -> Any:
        return when

    def close(self) -> None:
        self.conn.close()


class TableSink(GroupCommitSink):
    """Upserts each group of rows into the table in one transaction."""

    def __init__(self, spec: TableSpec, job_id: str, connect: Callable[[], Database], **group: Any) -> None:
        super().__init__(**group)
        self.spec = spec
        self.job_id = job_id
        self._connect = connect
        self._db: Database | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="results-sink")
        self._prepared = asyncio.Lock()
        #: The table's typed data columns (the thread's view; it adds to it).
        self._table: dict[str, ColumnType] | None = None

    async def _in_thread(self, work: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, work)
        except TableMismatch as exc:
            raise StorageError("TableSchemaMismatch", str(exc), BAD_CONTENT_STATUS) from None
        except TableError as exc:
            if exc.retryable:
                raise StorageError("TableUnavailable", str(exc), UNAVAILABLE_STATUS, retryable=True) from None
            raise StorageError("TableWriteError", str(exc), BAD_CONTENT_STATUS) from None

    def _database(self) -> Database:
        if self._db is None:
            self._db = self._connect()
        return self._db

    def _guarded(self, work: Callable[[Database], T]) -> T:
        """`work` on the connection; a connection that failed is dropped, the next call reconnects."""
        db = self._database()
        try:
            return work(db)
        except TableError as exc:
            if exc.retryable:
                self._db = None
                db.close()
            raise

    async def _ready(self) -> None:
        """Read the table's columns once (creating it), so writes are checked against them."""
        if self._table is not None:
            return
        async with self._prepared:
            if self._table is None:
                typed, foreign = await self._in_thread(lambda: self._guarded(lambda db: db.prepare()))
                self.columns = ColumnTypes(typed, foreign)
                self._table = dict(typed)

    async def _commit(
        self, rows: Sequence[SinkRow], types: Mapping[str, ColumnType | None]
    ) -> Mapping[str, str]:
        when = datetime.now(UTC)
        await self._in_thread(lambda: self._guarded(lambda db: self._upsert(db, rows, types, when)))
        location = table_location(self.spec.name)
        return {row.task_id: location for row in rows}

    def _upsert(
        self, db: Database, rows: Sequence[SinkRow], types: Mapping[str, ColumnType | None], when: datetime
    ) -> None:
        table = self._table
        assert table is not None, "_ready runs before any write"
        for name, kind in types.items():
            if kind is not None and name not in table:
                db.add_column(name, kind)
                table[name] = kind
        names = list(table)  # every column: the ones a row lacks become NULL (a whole replace)
        stamp = db.stamp(when)
        bound = [
            (row.bucket, row.key, row.version_id or "", row.task_id, self.job_id, stamp,
             *(db.value(table[n], row.data.get(n)) for n in names))
            for row in rows
        ]  # fmt: skip
        db.upsert(names, table, bound)

    async def _release(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, db.close)
        self._thread.shutdown(wait=False)


def open_table_sink(spec: TableSpec, job_id: str, **group: Any) -> TableSink:
    """The sink for the table `spec` names; connects on the first write."""
    if spec.backend == "postgresql":
        return TableSink(spec, job_id, lambda: PostgresDatabase(spec), **group)
    return TableSink(spec, job_id, lambda: SqliteDatabase(spec), **group)
