"""The tables in SQLite or PostgreSQL: one class, two dialects.

Every write is one transaction: an admitted batch of events (journal rows and inventory
changes together), or one key range of a reconcile. SQLite is opened like the pipeline's own
state DB (WAL, a busy timeout, autocommit outside explicit transactions); PostgreSQL through
psycopg 3 like S3batchCsvIngest's table backend (`operations/csv_postgres.py`: no password in
the URL, libpq finds it; a connect and a statement timeout).

Timestamps are UTC: TIMESTAMPTZ in PostgreSQL; in SQLite, TEXT in SQLite's own datetime form
`YYYY-MM-DD HH:MM:SS.ffffff`, which sorts as text and compares directly with `datetime('now',
'-1 hour')`. Keys are ordered byte-wise (`COLLATE "C"` in PostgreSQL, SQLite's default), as S3
lists them, so a reconcile's key ranges mean the same in the listing and in the table.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from s3batch.errors import S3BatchError
from s3batch.pipelines.events import padded_sequencer
from s3batch.pipelines.tables.config import Backend, TablesConfig
from s3batch.pipelines.tables.records import (
    RECONCILE_ADDED,
    RECONCILE_CHANGED,
    RECONCILE_REMOVED,
    Action,
    Change,
    Current,
    Origin,
    RecordType,
    Tombstone,
    decide,
)
from s3batch.pipelines.tables.schema import TABLES, Column, Kind, names

#: Seconds a SQLite writer waits for the lock (the pipeline and a reconcile write the same file).
BUSY_TIMEOUT_S = 30.0
#: Seconds libpq waits for the server when connecting.
CONNECT_TIMEOUT_S = 10
#: Seconds one PostgreSQL statement may run before the server cancels it.
STATEMENT_TIMEOUT_S = 300
#: SQLite's datetime text form, in UTC.
SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
#: Name of a reconcile's listing table (TEMP: private to the reconcile's own connection).
STAGE = "s3batch_reconcile_listing"
#: Meta counter of inventory changes (a Parquet snapshot is due when it moved).
CHANGES = "inventory_changes"

_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


class TablesError(S3BatchError):
    """The tables' database failed (cannot connect, a write refused)."""


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    types: Mapping[Kind, str]
    #: Null-safe "differs" and "equals".
    differs: str
    equals: str
    #: Appended to the reads that decide a write.
    lock: str

    def sql(self, text: str) -> str:
        """`:name` parameters in this driver's style."""
        return text if self.name == "sqlite" else _PARAM.sub(r"%(\1)s", text)

    def ts(self, value: datetime | None) -> Any:
        if value is None or self.name != "sqlite":
            return value
        return value.astimezone(UTC).strftime(SQLITE_TIME_FORMAT)

    def from_ts(self, value: Any) -> datetime | None:
        if value is None or isinstance(value, datetime):
            return value
        return datetime.strptime(str(value), SQLITE_TIME_FORMAT).replace(tzinfo=UTC)


SQLITE = Dialect(
    "sqlite",
    {Kind.ID: "INTEGER PRIMARY KEY AUTOINCREMENT", Kind.TEXT: "TEXT", Kind.KEY: "TEXT",
     Kind.BIGINT: "INTEGER", Kind.TIMESTAMP: "TEXT"},
    differs="IS NOT", equals="IS", lock="",
)  # fmt: skip
POSTGRESQL = Dialect(
    "postgresql",
    {Kind.ID: "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", Kind.TEXT: "TEXT",
     Kind.KEY: 'TEXT COLLATE "C"', Kind.BIGINT: "BIGINT", Kind.TIMESTAMP: "TIMESTAMPTZ"},
    differs="IS DISTINCT FROM", equals="IS NOT DISTINCT FROM", lock=" FOR UPDATE",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Listed:
    """One object of a reconcile's listing."""

    key: str
    version_id: str | None
    size: int
    e_tag: str
    storage_class: str | None
    last_modified: datetime


@dataclass(slots=True)
class Fixes:
    """What a reconcile changed: rows added (missed creates), changed (missed overwrites),
    removed (missed deletes); refreshed: only storage class or last-modified time differed."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    refreshed: int = 0

    def add(self, other: Fixes) -> None:
        self.added += other.added
        self.changed += other.changed
        self.removed += other.removed
        self.refreshed += other.refreshed

    @property
    def fixed(self) -> int:
        return self.added + self.changed + self.removed


def connect(cfg: TablesConfig, *, read_only: bool = False) -> TableDb:
    """A connection to the tables' database (SQLite for sqlite and parquet's working copy)."""
    if cfg.backend is Backend.POSTGRESQL:
        return TableDb(cfg, _postgres(cfg, read_only), POSTGRESQL)
    assert cfg.path is not None  # parse_tables sets it for these backends
    try:
        cfg.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(cfg.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
    except (OSError, sqlite3.Error) as exc:
        raise TablesError(f"cannot open the tables' SQLite file {cfg.path}: {exc}") from None
    return TableDb(cfg, db, SQLITE)


def _postgres(cfg: TablesConfig, read_only: bool) -> Any:
    try:
        import psycopg
    except ImportError:
        raise TablesError(
            "tables.backend = 'postgresql' needs psycopg: pip install 's3batch[postgres]'"
        ) from None
    try:
        return psycopg.connect(
            cfg.url or "", autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000}"
            + (" -c default_transaction_read_only=on" if read_only else ""),
        )  # fmt: skip
    except psycopg.Error as exc:
        raise TablesError(f"cannot connect to PostgreSQL: {exc}".strip()) from None


def _errors() -> tuple[type[Exception], ...]:
    try:
        import psycopg
    except ImportError:
        return (sqlite3.Error,)
    return (sqlite3.Error, psycopg.Error)


class TableDb:
    """One connection to the tables. Not shared between threads at the same time."""

    def __init__(self, cfg: TablesConfig, conn: Any, dialect: Dialect) -> None:
        self.cfg, self.conn, self.d = cfg, conn, dialect
        self.journal, self.inventory = cfg.table("journal"), cfg.table("inventory")
        self.tombstones, self.reconciles, self.meta = (
            cfg.table("tombstones"), cfg.table("reconciles"), cfg.table("meta")
        )  # fmt: skip
        self._errors = _errors()

    def close(self) -> None:
        self.conn.close()

    # -- plumbing ------------------------------------------------------------------------

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        try:
            return self.conn.execute(self.d.sql(sql), params or {})
        except self._errors as exc:
            raise TablesError(f"{type(exc).__name__}: {exc}".strip()) from None

    def executemany(self, sql: str, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        try:
            if self.d is SQLITE:
                self.conn.executemany(sql, rows)
            else:
                with self.conn.cursor() as cur:
                    cur.executemany(self.d.sql(sql), rows)
        except self._errors as exc:
            raise TablesError(f"{type(exc).__name__}: {exc}".strip()) from None

    @contextmanager
    def tx(self) -> Iterator[None]:
        """One transaction; SQLite takes the write lock at its start (BEGIN IMMEDIATE)."""
        try:
            if self.d is SQLITE:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    yield
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
                self.conn.execute("COMMIT")
            else:
                with self.conn.transaction():
                    yield
        except self._errors as exc:
            raise TablesError(f"{type(exc).__name__}: {exc}".strip()) from None

    def create_schema(self) -> None:
        with self.tx():
            if self.d is POSTGRESQL:  # two processes creating the tables at once race on the catalog
                self.execute("SELECT pg_advisory_xact_lock(hashtext(:name))", {"name": self.journal})
            for suffix, (columns, key) in TABLES.items():
                self.execute(self._create_table(self.cfg.table(suffix), columns, key))
            j = self.journal
            # A delivery repeated by the sender (same key, version, sequencer, event) is one row.
            self.execute(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {j}_dedupe ON {j} (bucket, key,"
                " coalesce(version_id, e_tag, ''), coalesce(sequencer, ''), event_name)"
                " WHERE origin = 'notification'"
            )
            self.execute(f"CREATE INDEX IF NOT EXISTS {j}_key ON {j} (bucket, key)")
            self.execute(f"CREATE INDEX IF NOT EXISTS {j}_received ON {j} (received_at)")

    def _create_table(self, name: str, columns: tuple[Column, ...], key: tuple[str, ...]) -> str:
        parts = [f"{c.name} {self.d.types[c.kind]}{' NOT NULL' if c.not_null else ''}" for c in columns]
        if key != ("id",):  # an ID column carries its own PRIMARY KEY
            parts.append(f"PRIMARY KEY ({', '.join(key)})")
        return f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(parts)})"

    # -- events --------------------------------------------------------------------------

    def apply(self, changes: Sequence[Change], now: datetime) -> int:
        """Journal and apply `changes` in one transaction; returns inventory rows changed."""
        changed = 0
        with self.tx():
            for change in changes:
                changed += self._apply_one(change, now)
            if changed:
                self._bump(CHANGES, changed)
        return changed

    def _apply_one(self, change: Change, now: datetime) -> int:
        journal, inventory = self.cfg.journal, self.cfg.inventory
        if journal and change.origin is Origin.NOTIFICATION and not self._journal(change, now, dedupe=True):
            return 0  # the same event again: applied when it first came
        changed = self._inventory(change, now) if inventory else False
        if journal and change.origin is not Origin.NOTIFICATION and self._journal_wanted(change, changed):
            self._journal(change, now, dedupe=False)
        return int(changed)

    def _journal_wanted(self, change: Change, changed: bool) -> bool:
        """A listed object or the pipeline's own removal is journaled when it changed the
        inventory (a poller sees the same objects on every pass); without an inventory, a
        listed object once per version."""
        if self.cfg.inventory:
            return changed
        if change.origin is Origin.LISTING:
            ident = change.version_id or change.e_tag or ""
            seen = self.execute(
                f"SELECT 1 FROM {self.journal} WHERE bucket = :bucket AND key = :key"
                " AND record_type = 'CREATE' AND coalesce(version_id, e_tag, '') = :ident",
                {"bucket": change.bucket, "key": change.key, "ident": ident},
            ).fetchone()
            return seen is None
        return True

    def _journal(self, change: Change, now: datetime, *, dedupe: bool) -> bool:
        """Insert the journal row; False when `dedupe` found the same event already there."""
        cur = self.execute(
            f"INSERT INTO {self.journal} (bucket, key, record_type, event_name, origin, version_id, size,"
            " e_tag, storage_class, event_time, sequencer, received_at) VALUES (:bucket, :key, :record_type,"
            " :event_name, :origin, :version_id, :size, :e_tag, :storage_class, :event_time, :sequencer,"
            f" :received_at){' ON CONFLICT DO NOTHING' if dedupe else ''}",
            self._journal_row(change, now),
        )
        return bool(cur.rowcount)

    def _journal_row(self, change: Change, now: datetime) -> dict[str, Any]:
        return {
            "bucket": change.bucket, "key": change.key, "record_type": change.record_type.value,
            "event_name": change.event_name, "origin": change.origin.value, "version_id": change.version_id,
            "size": change.size, "e_tag": change.e_tag, "storage_class": change.storage_class,
            "event_time": self.d.ts(change.event_time), "sequencer": change.sequencer,
            "received_at": self.d.ts(now),
        }  # fmt: skip

    def _inventory(self, change: Change, now: datetime) -> bool:
        """Apply `change` to the key's row; whether a row was written or deleted."""
        where = {"bucket": change.bucket, "key": change.key}
        found = self.execute(
            f"SELECT version_id, e_tag, size, sequencer FROM {self.inventory}"
            f" WHERE bucket = :bucket AND key = :key{self.d.lock}",
            where,
        ).fetchone()
        dead = self.execute(
            f"SELECT sequencer, deleted_at FROM {self.tombstones}"
            f" WHERE bucket = :bucket AND key = :key{self.d.lock}",
            where,
        ).fetchone()
        row = None if found is None else Current(*found)
        tomb = None if dead is None else Tombstone(dead[0], self.d.from_ts(dead[1]))
        action = decide(change, row, tomb)
        if action is Action.UPSERT:
            self._upsert(change, _highest(change.sequencer, row, tomb), now)
            if change.sequencer:  # the row now holds the key's highest sequencer
                self.execute(f"DELETE FROM {self.tombstones} WHERE bucket = :bucket AND key = :key", where)
        elif action is Action.DELETE:
            self.execute(f"DELETE FROM {self.inventory} WHERE bucket = :bucket AND key = :key", where)
            self._tombstones([(change.key, _highest(change.sequencer, row, tomb))], change.bucket,
                             change.event_time or now, now)  # fmt: skip
        return action is Action.UPSERT or (action is Action.DELETE and row is not None)

    def _upsert(self, change: Change, sequencer: str | None, now: datetime) -> None:
        self.execute(
            f"INSERT INTO {self.inventory} (bucket, key, version_id, size, e_tag, storage_class,"
            " last_modified_date, sequencer, updated_at) VALUES (:bucket, :key, :version_id, :size, :e_tag,"
            " :storage_class, :last_modified_date, :sequencer, :updated_at)"
            " ON CONFLICT (bucket, key) DO UPDATE SET version_id = excluded.version_id,"
            " size = excluded.size, e_tag = excluded.e_tag,"
            " storage_class = excluded.storage_class, last_modified_date = excluded.last_modified_date,"
            " sequencer = excluded.sequencer, updated_at = excluded.updated_at",
            {
                "bucket": change.bucket, "key": change.key, "version_id": change.version_id,
                "size": change.size, "e_tag": change.e_tag, "storage_class": change.storage_class,
                "last_modified_date": self.d.ts(change.event_time or now), "sequencer": sequencer,
                "updated_at": self.d.ts(now),
            },
        )  # fmt: skip

    def _tombstones(
        self, keys: Sequence[tuple[str, str | None]], bucket: str, deleted_at: datetime, now: datetime
    ) -> None:
        self.executemany(
            f"INSERT INTO {self.tombstones} (bucket, key, sequencer, deleted_at, updated_at)"
            " VALUES (:bucket, :key, :sequencer, :deleted_at, :updated_at) ON CONFLICT (bucket, key)"
            " DO UPDATE SET sequencer = excluded.sequencer, deleted_at = excluded.deleted_at,"
            " updated_at = excluded.updated_at",
            [{"bucket": bucket, "key": key, "sequencer": seq, "deleted_at": self.d.ts(deleted_at),
              "updated_at": self.d.ts(now)} for key, seq in keys],
        )  # fmt: skip

    # -- reconcile -----------------------------------------------------------------------

    def stage_start(self) -> None:
        """An empty listing table on this connection."""
        types = self.d.types
        self.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} (key {types[Kind.KEY]} PRIMARY KEY,"
            f" version_id TEXT, size {types[Kind.BIGINT]}, e_tag TEXT, storage_class TEXT,"
            f" last_modified_date {types[Kind.TIMESTAMP]})"
        )
        self.execute(f"DELETE FROM {STAGE}")

    def stage(self, rows: Sequence[Listed]) -> None:
        with self.tx():
            self.executemany(
                f"INSERT INTO {STAGE} (key, version_id, size, e_tag, storage_class, last_modified_date)"
                " VALUES (:key, :version_id, :size, :e_tag, :storage_class, :last_modified)"
                " ON CONFLICT DO NOTHING",
                [{"key": r.key, "version_id": r.version_id, "size": r.size, "e_tag": r.e_tag,
                  "storage_class": r.storage_class, "last_modified": self.d.ts(r.last_modified)}
                 for r in rows],
            )  # fmt: skip

    def stage_drop(self) -> None:
        self.execute(f"DROP TABLE IF EXISTS {STAGE}")

    def nth_key_after(self, after: str | None, n: int) -> str | None:
        """The n-th listed key after `after` (from the start when None); None if fewer are left."""
        where = "" if after is None else " WHERE key > :after"
        row = self.execute(
            f"SELECT key FROM {STAGE}{where} ORDER BY key LIMIT 1 OFFSET :skip",
            {"after": after, "skip": n - 1},
        ).fetchone()
        return None if row is None else str(row[0])

    def fix_range(self, fix: RangeFix) -> Fixes:
        """Make the inventory's keys in (fix.lo, fix.hi] match the listing, in one transaction.
        Rows changed at or after `fix.guard`, and listed objects modified then, are left alone:
        their events may still be on the way."""
        with self.tx():
            changed = self._fix(_CHANGED, fix, RECONCILE_CHANGED, RecordType.CREATE)
            refreshed = self._fixed_rows(_REFRESHED, fix)
            added = self._fix(_ADDED, fix, RECONCILE_ADDED, RecordType.CREATE)
            removed = self._fixed_rows(_REMOVED, fix)
            if removed:
                self._tombstones([(r[0], r[6]) for r in removed], fix.bucket, fix.now, fix.now)
                self._journal_fixes(removed, fix, RECONCILE_REMOVED, RecordType.DELETE)
            total = len(changed) + len(added) + len(removed) + len(refreshed)
            if total:
                self._bump(CHANGES, total)
        return Fixes(len(added), len(changed), len(removed), len(refreshed))

    def _fix(self, template: str, fix: RangeFix, event_name: str, kind: RecordType) -> list[tuple[Any, ...]]:
        rows = self._fixed_rows(template, fix)
        self._journal_fixes(rows, fix, event_name, kind)
        return rows

    def _fixed_rows(self, template: str, fix: RangeFix) -> list[tuple[Any, ...]]:
        sql = template.format(
            inv=self.inventory, tomb=self.tombstones, stage=STAGE,
            differs=self.d.differs, equals=self.d.equals, r="" if self.d is SQLITE else "i.",
            range=_key_range("{alias}.key", fix).format(alias="i" if template is _REMOVED else "l"),
            listed=_listed_before(fix),
        )  # fmt: skip
        params = {"bucket": fix.bucket, "lo": fix.lo, "hi": fix.hi, "guard": self.d.ts(fix.guard),
                  "listed_before": self.d.ts(fix.listed_before), "now": self.d.ts(fix.now)}  # fmt: skip
        return [tuple(r) for r in self.execute(sql, params).fetchall()]

    def _journal_fixes(
        self, rows: list[tuple[Any, ...]], fix: RangeFix, event_name: str, kind: RecordType
    ) -> None:
        if not (rows and self.cfg.journal and fix.journal):
            return
        deleted = kind is RecordType.DELETE
        changes = [
            Change(bucket=fix.bucket, key=r[0], record_type=kind, event_name=event_name,
                   origin=Origin.RECONCILE, version_id=r[1], size=r[2], e_tag=r[3], storage_class=r[4],
                   event_time=fix.now if deleted else self.d.from_ts(r[5]))
            for r in rows
        ]  # fmt: skip
        columns = (
            "bucket, key, record_type, event_name, origin, version_id, size, e_tag, storage_class, event_time"
        )
        values = ":" + ", :".join(columns.split(", "))
        self.executemany(
            f"INSERT INTO {self.journal} ({columns}, sequencer, received_at) VALUES ({values}, :sequencer,"
            " :received_at)",
            [self._journal_row(c, fix.now) for c in changes],
        )

    def prune_tombstones(self, before: datetime) -> None:
        self.execute(
            f"DELETE FROM {self.tombstones} WHERE updated_at < :before", {"before": self.d.ts(before)}
        )

    def record_reconcile(
        self, kind: str, started: datetime, finished: datetime, listed: int, fixes: Fixes
    ) -> None:
        self.execute(
            f"INSERT INTO {self.reconciles} (kind, started_at, finished_at, listed, added, changed,"
            " removed, refreshed) VALUES (:kind, :started, :finished, :listed, :added, :changed, :removed,"
            " :refreshed)",
            {"kind": kind, "started": self.d.ts(started), "finished": self.d.ts(finished), "listed": listed,
             "added": fixes.added, "changed": fixes.changed, "removed": fixes.removed,
             "refreshed": fixes.refreshed},
        )  # fmt: skip

    def last_reconcile(self) -> dict[str, Any] | None:
        row = self.execute(
            f"SELECT kind, started_at, finished_at, listed, added, changed, removed, refreshed FROM"
            f" {self.reconciles} ORDER BY id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        names_ = ("kind", "started_at", "finished_at", "listed", "added", "changed", "removed", "refreshed")
        found = dict(zip(names_, row, strict=True))
        found["started_at"], found["finished_at"] = self.d.from_ts(row[1]), self.d.from_ts(row[2])
        return found

    # -- meta and reading ----------------------------------------------------------------

    def get_meta(self, name: str) -> int:
        row = self.execute(f"SELECT value FROM {self.meta} WHERE name = :name", {"name": name}).fetchone()
        return 0 if row is None else int(row[0])

    def set_meta(self, values: Mapping[str, int]) -> None:
        for name, value in values.items():
            self.execute(
                f"INSERT INTO {self.meta} (name, value) VALUES (:name, :value) ON CONFLICT (name)"
                " DO UPDATE SET value = excluded.value",
                {"name": name, "value": value},
            )

    def _bump(self, name: str, by: int) -> None:
        self.execute(
            f"INSERT INTO {self.meta} (name, value) VALUES (:name, :by) ON CONFLICT (name)"
            f" DO UPDATE SET value = {self.meta}.value + excluded.value",
            {"name": name, "by": by},
        )

    def count(self, suffix: str) -> int:
        (n,) = self.execute(f"SELECT count(*) FROM {self.cfg.table(suffix)}").fetchone()
        return int(n)

    def rows(
        self, suffix: str, batch_rows: int, where: str = "", params: Mapping[str, Any] | None = None
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Every row of a table, in batches, ordered by its primary key."""
        columns, key = TABLES[suffix]
        cur = self.execute(
            f"SELECT {names(columns)} FROM {self.cfg.table(suffix)}{where} ORDER BY {', '.join(key)}", params
        )
        while batch := cur.fetchmany(batch_rows):
            yield [tuple(r) for r in batch]


@dataclass(frozen=True, slots=True)
class RangeFix:
    """One key range of a reconcile: keys k with lo < k <= hi (None: unbounded)."""

    bucket: str
    lo: str | None
    hi: str | None
    #: Rows written at or after this are not touched.
    guard: datetime
    #: Listed objects modified at or after this are not added or changed (None: no limit).
    listed_before: datetime | None
    now: datetime
    #: Whether fixes are journaled (not for the first backfill).
    journal: bool


def _key_range(column: str, fix: RangeFix) -> str:
    parts = ([f"{column} > :lo"] if fix.lo is not None else []) + (
        [f"{column} <= :hi"] if fix.hi is not None else []
    )
    return " AND ".join(parts) or "1 = 1"


def _listed_before(fix: RangeFix) -> str:
    return "1 = 1" if fix.listed_before is None else "l.last_modified_date < :listed_before"


def _highest(sequencer: str | None, row: Current | None, tomb: Tombstone | None) -> str | None:
    """The key's sequencer after a change: the highest of the change's, the row's, the tombstone's."""
    found = [s for s in (sequencer, row and row.sequencer, tomb and tomb.sequencer) if s]
    return max(found, key=padded_sequencer, default=None)


#: `{r}`: "i." in PostgreSQL (where FROM's columns would be ambiguous); SQLite's RETURNING
#: names only the modified table's columns, unqualified.
_RETURNING = "RETURNING {r}key, {r}version_id, {r}size, {r}e_tag, {r}storage_class, {r}last_modified_date"
#: A listed object whose content differs from its row (a missed overwrite).
_CHANGED = (
    "UPDATE {inv} AS i SET version_id = l.version_id, size = l.size, e_tag = l.e_tag,"
    " storage_class = l.storage_class, last_modified_date = l.last_modified_date, updated_at = :now"
    " FROM {stage} AS l WHERE i.bucket = :bucket AND i.key = l.key AND {range} AND {listed}"
    " AND i.updated_at < :guard AND (i.e_tag {differs} l.e_tag OR i.size {differs} l.size"
    " OR (l.version_id IS NOT NULL AND i.version_id {differs} l.version_id)) " + _RETURNING
)
#: Same content, other storage class or time (a transition, or a row made from an event).
_REFRESHED = (
    "UPDATE {inv} AS i SET storage_class = l.storage_class, last_modified_date = l.last_modified_date"
    " FROM {stage} AS l WHERE i.bucket = :bucket AND i.key = l.key AND {range} AND i.updated_at < :guard"
    " AND i.e_tag {equals} l.e_tag AND i.size {equals} l.size"
    " AND (i.storage_class {differs} l.storage_class OR i.last_modified_date {differs} l.last_modified_date)"
    " RETURNING {r}key"
)
#: A listed object without a row (a missed create), unless it was deleted lately.
_ADDED = (
    "INSERT INTO {inv} AS i (bucket, key, version_id, size, e_tag, storage_class, last_modified_date,"
    " sequencer, updated_at) SELECT :bucket, l.key, l.version_id, l.size, l.e_tag, l.storage_class,"
    " l.last_modified_date, NULL, :now FROM {stage} AS l WHERE {range} AND {listed}"
    " AND NOT EXISTS (SELECT 1 FROM {inv} AS x WHERE x.bucket = :bucket AND x.key = l.key)"
    " AND NOT EXISTS (SELECT 1 FROM {tomb} AS t WHERE t.bucket = :bucket AND t.key = l.key"
    " AND t.updated_at >= :guard) ON CONFLICT DO NOTHING " + _RETURNING
)
#: A row whose object the listing did not find (a missed delete).
_REMOVED = (
    "DELETE FROM {inv} AS i WHERE i.bucket = :bucket AND {range} AND i.updated_at < :guard"
    " AND NOT EXISTS (SELECT 1 FROM {stage} AS l WHERE l.key = i.key) " + _RETURNING + ", {r}sequencer"
)
