"""The `[tables]` section of a pipeline file.

```toml
[tables]
journal = true                  # every created/removed object event, one row each
inventory = true                # one row per object, kept current
backend = "sqlite"              # sqlite | postgresql | parquet
path = "ingest.tables.sqlite3"  # sqlite (and parquet's working copy); relative to the file
# url = "postgresql://s3batch@db.example.com/metadata"   # postgresql: no password in the URL
# bucket = "analytics"          # parquet: where the files go
# prefix = "tables/ingest"      # parquet: default tables/<pipeline name>
table_prefix = "ingest"         # tables are <table_prefix>_journal, _inventory, ...
reconcile_interval_s = 86400    # a reconciling listing this often; 0: only the first backfill
```

Secrets stay out of the file: PostgreSQL's password comes from libpq's environment
(PGPASSWORD, PGPASSFILE, ~/.pgpass), as for S3batchCsvIngest.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from s3batch.errors import ConfigError

#: A reconciling listing once a day unless the file says otherwise (seconds).
DEFAULT_RECONCILE_INTERVAL_S = 86_400.0
#: Rows and objects that changed this recently are left alone by a reconcile: their events may
#: still be on the way (seconds).
DEFAULT_RECONCILE_GRACE_S = 60.0
#: Parquet: the journal rows received since the last flush become one file this often (seconds).
DEFAULT_FLUSH_INTERVAL_S = 60.0
#: Parquet: a changed inventory is written as a new snapshot file this often (seconds).
DEFAULT_SNAPSHOT_INTERVAL_S = 300.0
#: Table names are used unquoted in SQL: letters, digits, underscores.
_TABLE_PREFIX = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")
_KEYS = frozenset({
    "journal", "inventory", "backend", "path", "url", "bucket", "prefix", "table_prefix",
    "reconcile_interval_s", "reconcile_grace_s", "flush_interval_s", "snapshot_interval_s",
})  # fmt: skip


class Backend(StrEnum):
    SQLITE = "sqlite"
    POSTGRESQL = "postgresql"
    PARQUET = "parquet"


@dataclass(frozen=True, slots=True, kw_only=True)
class TablesConfig:
    backend: Backend
    table_prefix: str
    journal: bool = True
    inventory: bool = True
    #: The SQLite file (sqlite), or the local working copy the Parquet files are made from.
    path: Path | None = None
    #: postgresql:// URL without a password.
    url: str | None = None
    #: Parquet: the bucket and key prefix of the files.
    bucket: str | None = None
    prefix: str = ""
    #: None: the inventory is listed once (the backfill) and then kept by events only.
    reconcile_interval_s: float | None = DEFAULT_RECONCILE_INTERVAL_S
    reconcile_grace_s: float = DEFAULT_RECONCILE_GRACE_S
    flush_interval_s: float = DEFAULT_FLUSH_INTERVAL_S
    snapshot_interval_s: float = DEFAULT_SNAPSHOT_INTERVAL_S

    def table(self, kind: str) -> str:
        """The SQL name of one of the tables (journal, inventory, tombstones, reconciles, meta)."""
        return f"{self.table_prefix}_{kind}"


def parse_tables(data: Any, base_dir: Path, pipeline_name: str, *, source: str) -> TablesConfig | None:
    """The `[tables]` table of a pipeline file (None when absent). Raises ConfigError naming
    the key at fault."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise ConfigError("tables must be a table ([tables])")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"tables: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    backend = _backend(data.get("backend", Backend.SQLITE.value))
    prefix = str(data.get("table_prefix", re.sub(r"\W", "_", pipeline_name, flags=re.ASCII)))
    if not _TABLE_PREFIX.match(prefix):
        raise ConfigError(
            f"tables.table_prefix {prefix!r}: 1-41 letters, digits or _, not starting with a digit"
        )
    cfg = TablesConfig(
        backend=backend,
        table_prefix=prefix,
        journal=_bool(data, "journal"),
        inventory=_bool(data, "inventory"),
        path=_path(data, base_dir, pipeline_name, backend),
        url=_url(data, backend),
        bucket=_bucket(data, backend, source),
        prefix=str(data.get("prefix", f"tables/{pipeline_name}")).strip("/"),
        reconcile_interval_s=_interval(data),
        reconcile_grace_s=_seconds(data, "reconcile_grace_s", DEFAULT_RECONCILE_GRACE_S, minimum=0.0),
        flush_interval_s=_seconds(data, "flush_interval_s", DEFAULT_FLUSH_INTERVAL_S),
        snapshot_interval_s=_seconds(data, "snapshot_interval_s", DEFAULT_SNAPSHOT_INTERVAL_S),
    )
    if not (cfg.journal or cfg.inventory):
        raise ConfigError("tables: journal and inventory are both false; remove [tables] instead")
    return cfg


def _backend(value: Any) -> Backend:
    try:
        return Backend(str(value))
    except ValueError:
        choices = ", ".join(b.value for b in Backend)
        raise ConfigError(f"tables.backend must be one of {choices}; got {value!r}") from None


def _bool(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, True)
    if not isinstance(value, bool):
        raise ConfigError(f"tables.{key} must be true or false; got {value!r}")
    return value


def _path(data: Mapping[str, Any], base_dir: Path, name: str, backend: Backend) -> Path | None:
    if backend is Backend.POSTGRESQL:
        if "path" in data:
            raise ConfigError("tables.path is for the sqlite and parquet backends; postgresql takes url")
        return None
    return base_dir / str(data.get("path", f"{name}.tables.sqlite3"))


def _url(data: Mapping[str, Any], backend: Backend) -> str | None:
    url = data.get("url")
    if backend is not Backend.POSTGRESQL:
        if url is not None:
            raise ConfigError("tables.url is for backend = 'postgresql'")
        return None
    if not isinstance(url, str):
        raise ConfigError("tables.url is required for postgresql: postgresql://user@host:port/db")
    from s3batch.operations.csv_postgres import check_url

    try:
        check_url(url)
    except ValueError as exc:
        raise ConfigError(f"tables.url: {exc}") from None
    return url


def _bucket(data: Mapping[str, Any], backend: Backend, source: str) -> str | None:
    bucket = data.get("bucket")
    if backend is not Backend.PARQUET:
        if bucket is not None or "prefix" in data:
            raise ConfigError("tables.bucket and tables.prefix are for backend = 'parquet'")
        return None
    if not isinstance(bucket, str) or not bucket:
        raise ConfigError("tables.bucket is required for backend = 'parquet'")
    if bucket == source:  # the files would be new objects the pipeline itself picks up
        raise ConfigError("tables.bucket must not be the pipeline's source bucket")
    return bucket


def _interval(data: Mapping[str, Any]) -> float | None:
    seconds = _seconds(data, "reconcile_interval_s", DEFAULT_RECONCILE_INTERVAL_S, minimum=0.0)
    return seconds or None


def _seconds(data: Mapping[str, Any], key: str, default: float, minimum: float | None = None) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"tables.{key} must be a number of seconds; got {value!r}")
    seconds = float(value)
    if (minimum is None and not seconds > 0) or (minimum is not None and not seconds >= minimum):
        raise ConfigError(f"tables.{key} must be {'0 or more' if minimum is not None else 'more than 0'}")
    return seconds
