"""The PostgreSQL table backend of S3batchCsvIngest (psycopg 3, imported only when used).

Selected by `"Table": {"Backend": "postgresql", "Url": "postgresql://user@host:port/db",
"Name": "orders"}`. The URL must not carry a password: job parameters are stored in the job
store and returned by DescribeJob. libpq finds the password itself (PGPASSWORD, PGPASSFILE or
~/.pgpass of the user running the worker), and any libpq parameter can go in the query string
(`?sslmode=require`, `?host=/run/postgresql` for a unix socket).

Same semantics as the SQLite backend: the table (in the connection's current schema) is
created when missing with the key columns as its primary key; each batch of at most
MAX_BATCH_ITEMS rows is one transaction of `INSERT ... ON CONFLICT (key) DO UPDATE`, so
re-running a file leaves the same rows and a changed row replaces the old one. Columns have
native types (see _PG_TYPES): decimals keep their digits (NUMERIC), timestamps are TIMESTAMPTZ.
An existing table must have every schema column with that type (NUMERIC(p,s) counts as
NUMERIC) and the same primary key, else TableMismatch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from s3batch.domain.csv_schema import ColumnType, CsvSchema, Value
from s3batch.operations.csv_ingest import MAX_BATCH_ITEMS, TableError, TableMismatch, TableSpec

if TYPE_CHECKING:
    import psycopg

SCHEMES = ("postgresql", "postgres")
#: Seconds libpq waits for the server when connecting.
CONNECT_TIMEOUT_S = 10
#: Seconds one statement may run before the server cancels it (a lock held elsewhere, say).
STATEMENT_TIMEOUT_S = 300

_PG_TYPES = {
    ColumnType.STRING: "text",
    ColumnType.INT: "bigint",
    ColumnType.FLOAT: "double precision",
    ColumnType.DECIMAL: "numeric",
    ColumnType.BOOL: "boolean",
    ColumnType.DATE: "date",
    ColumnType.TIMESTAMP: "timestamp with time zone",
}

_COLUMNS_SQL = (
    "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute"
    " WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped"
)
_PRIMARY_KEY_SQL = (
    "SELECT a.attname FROM pg_index i"
    " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)"
    " WHERE i.indrelid = %s::regclass AND i.indisprimary"
    " ORDER BY array_position(i.indkey::int2[], a.attnum)"
)


def check_url(url: str) -> None:
    """Raise ValueError unless `url` is a postgresql:// URL without a password."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"must start with postgresql://; got {parts.scheme or url!r}")
    if parts.password is not None or "password" in parse_qs(parts.query):
        raise ValueError(
            "must not contain a password (job parameters are stored and shown by DescribeJob);"
            " use PGPASSWORD or a .pgpass file"
        )


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class PostgresTable:
    """A table in PostgreSQL; one connection per file, each batch one transaction."""

    def __init__(self, spec: TableSpec, schema: CsvSchema) -> None:
        import psycopg

        self.schema = schema
        self.name = spec.name
        self.table = _quote(spec.name)
        self._errors: type[Exception] = psycopg.Error
        options = f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000}"
        try:
            self.conn: psycopg.Connection[tuple[object, ...]] = psycopg.connect(
                spec.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, options=options
            )
        except psycopg.OperationalError as exc:
            raise TableError(f"cannot connect to PostgreSQL: {exc}".strip(), retryable=True) from None
        self.upsert = self._upsert_sql()

    def _upsert_sql(self) -> str:
        columns = ", ".join(_quote(c.name) for c in self.schema.columns)
        # Explicit casts: every row of a batch binds the same types, whatever Python value came.
        values = ", ".join(f"%s::{_PG_TYPES[c.type]}" for c in self.schema.columns)
        keys = ", ".join(_quote(k) for k in self.schema.key_names)
        others = [n for n in self.schema.names if n not in self.schema.key_names]
        action = (
            "DO UPDATE SET " + ", ".join(f"{_quote(n)} = EXCLUDED.{_quote(n)}" for n in others)
            if others
            else "DO NOTHING"
        )
        return f"INSERT INTO {self.table} ({columns}) VALUES ({values}) ON CONFLICT ({keys}) {action}"

    def prepare(self) -> None:
        try:
            self._create()
            types = {name: kind for name, kind in self._fetch(_COLUMNS_SQL)}
            primary = tuple(name for (name,) in self._fetch(_PRIMARY_KEY_SQL))
        except self._errors as exc:
            raise TableError(f"{type(exc).__name__}: {exc}") from None
        self._check(types, primary)

    def _create(self) -> None:
        columns = ", ".join(f"{_quote(c.name)} {_PG_TYPES[c.type]}" for c in self.schema.columns)
        keys = ", ".join(_quote(k) for k in self.schema.key_names)
        with self.conn.transaction():
            # Two files creating one table at once would race on the catalog even with IF NOT EXISTS.
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.name,))
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS {self.table} ({columns}, PRIMARY KEY ({keys}))")

    def _fetch(self, sql: str) -> list[tuple[str, ...]]:
        rows = self.conn.execute(sql, (self.table,)).fetchall()
        return [tuple(str(v) for v in row) for row in rows]

    def _check(self, types: Mapping[str, str], primary: tuple[str, ...]) -> None:
        missing = [n for n in self.schema.names if n not in types]
        if missing:
            raise TableMismatch(f"table lacks column(s) {', '.join(missing)}")
        for column in self.schema.columns:
            have = types[column.name].split("(", 1)[0]
            if have != _PG_TYPES[column.type]:
                raise TableMismatch(f"column {column.name} is {have}, not {_PG_TYPES[column.type]}")
        if primary != self.schema.key_names:
            raise TableMismatch(f"table's primary key is {list(primary)}, not {list(self.schema.key_names)}")

    def write_batch(self, items: Sequence[Mapping[str, Value]]) -> None:
        if len(items) > MAX_BATCH_ITEMS:
            raise ValueError(f"a batch holds at most {MAX_BATCH_ITEMS} items; got {len(items)}")
        rows = [tuple(item[n] for n in self.schema.names) for item in items]
        try:
            with self.conn.transaction(), self.conn.cursor() as cur:
                cur.executemany(self.upsert, rows)
        except self._errors as exc:
            raise TableError(f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self.conn.close()
