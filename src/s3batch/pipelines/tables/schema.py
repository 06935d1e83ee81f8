"""The tables' columns, once, for every backend: SQL types per dialect and Arrow types.

Names follow S3 Inventory's and S3 Metadata's snake_case columns (`e_tag`,
`last_modified_date`, `storage_class`), so a query written for those reads these too.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    ID = "id"
    TEXT = "text"
    #: An object key: sorted byte-wise, as S3 lists keys.
    KEY = "key"
    BIGINT = "bigint"
    #: A UTC instant.
    TIMESTAMP = "timestamp"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind
    not_null: bool = False


JOURNAL = (
    Column("id", Kind.ID, True),
    Column("bucket", Kind.KEY, True),
    Column("key", Kind.KEY, True),
    Column("record_type", Kind.TEXT, True),
    Column("event_name", Kind.TEXT, True),
    Column("origin", Kind.TEXT, True),
    Column("version_id", Kind.TEXT),
    Column("size", Kind.BIGINT),
    Column("e_tag", Kind.TEXT),
    Column("storage_class", Kind.TEXT),
    Column("event_time", Kind.TIMESTAMP),
    Column("sequencer", Kind.TEXT),
    Column("received_at", Kind.TIMESTAMP, True),
)
INVENTORY = (
    Column("bucket", Kind.KEY, True),
    Column("key", Kind.KEY, True),
    Column("version_id", Kind.TEXT),
    Column("size", Kind.BIGINT),
    Column("e_tag", Kind.TEXT),
    Column("storage_class", Kind.TEXT),
    Column("last_modified_date", Kind.TIMESTAMP),
    Column("sequencer", Kind.TEXT),
    Column("updated_at", Kind.TIMESTAMP, True),
)
TOMBSTONES = (
    Column("bucket", Kind.KEY, True),
    Column("key", Kind.KEY, True),
    Column("sequencer", Kind.TEXT),
    Column("deleted_at", Kind.TIMESTAMP),
    Column("updated_at", Kind.TIMESTAMP, True),
)
RECONCILES = (
    Column("id", Kind.ID, True),
    Column("kind", Kind.TEXT, True),
    Column("started_at", Kind.TIMESTAMP, True),
    Column("finished_at", Kind.TIMESTAMP, True),
    Column("listed", Kind.BIGINT, True),
    Column("added", Kind.BIGINT, True),
    Column("changed", Kind.BIGINT, True),
    Column("removed", Kind.BIGINT, True),
    Column("refreshed", Kind.BIGINT, True),
)
META = (Column("name", Kind.TEXT, True), Column("value", Kind.BIGINT, True))
#: Table (by the suffix of its name) → columns and primary key.
TABLES: dict[str, tuple[tuple[Column, ...], tuple[str, ...]]] = {
    "journal": (JOURNAL, ("id",)),
    "inventory": (INVENTORY, ("bucket", "key")),
    "tombstones": (TOMBSTONES, ("bucket", "key")),
    "reconciles": (RECONCILES, ("id",)),
    "meta": (META, ("name",)),
}
#: The tables a user queries (the others are bookkeeping).
PUBLIC_TABLES = ("journal", "inventory", "reconciles")


def arrow_schema(columns: tuple[Column, ...]) -> Any:
    """The Arrow schema of a table's columns (pyarrow is imported only by readers and writers)."""
    import pyarrow as pa  # type: ignore[import-untyped]

    types = {
        Kind.ID: pa.int64(),
        Kind.TEXT: pa.string(),
        Kind.KEY: pa.string(),
        Kind.BIGINT: pa.int64(),
        Kind.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    }
    return pa.schema([pa.field(c.name, types[c.kind], nullable=not c.not_null) for c in columns])


def names(columns: tuple[Column, ...]) -> str:
    return ", ".join(c.name for c in columns)
