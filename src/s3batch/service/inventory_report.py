"""S3 Inventory reports of a bucket, written the way AWS writes them (docs/inventory.md).

`generate_inventory` lists the source bucket with the generator's parallel plan (key ranges cut
at common prefixes, storage/listing.py), at most LIST_CONCURRENCY listing
workers at once. Each worker streams its objects, BATCH_ROWS at a time, into its own data file
(gzipped CSV, Parquet or ORC in a temporary folder); a file that reaches the row limit is closed,
uploaded and deleted, and the worker starts the next. Memory therefore stays flat in bucket
size: never more than one batch per worker, plus a Parquet/ORC row group, is held.

Upload order is AWS's promise to readers: every data file first, then manifest.json and the
Hive symlink.txt, and manifest.checksum last, so whoever waits for the checksum (as AWS
advises) never sees a manifest that names a file not there yet.

Fields that a listing cannot answer (replication, encryption, Object Lock, bucket key) are
read with one HeadObject per object, HEAD_CONCURRENCY at once. An object deleted between its
listing and its HEAD keeps its row with those fields empty; so does one whose HEAD fails
otherwise (AccessDenied, ...): a per-object problem does not sink the report, and the report
counts such objects (`head_failures`, with the first error) for the caller to show.

`InventoryScheduler` runs `[[inventories]]` of server.toml inside `s3batch serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import logging
import tempfile
import tomllib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from s3batch.domain.inventory import DataFile, InventoryFormat
from s3batch.domain.inventory_writer import (
    REQUIRED_FIELDS,
    ColumnType,
    Field,
    IncludedVersions,
    InventoryConfig,
    ObjectFacts,
    ReportKeys,
    RowFormat,
    ScheduledInventory,
    checked_schedules,
    job_manifest,
    manifest_checksum,
    manifest_json,
    report_keys,
    row_format,
    scheduled_inventory,
    symlink_txt,
)
from s3batch.domain.objects import ObjectInfo
from s3batch.errors import ConfigError, S3BatchError, StorageError
from s3batch.settings import SERVER_FILE
from s3batch.storage import listing
from s3batch.storage.base import Capability
from s3batch.storage.capabilities import StorageAdapter
from s3batch.storage.config import StorageConfig, open_store

log = logging.getLogger(__name__)

#: Rows per data file before the next file starts (AWS also splits a big report into files).
DATA_FILE_MAX_ROWS = 1_000_000
#: Objects a listing worker lists, HEADs and writes at a time.
BATCH_ROWS = 1_000
#: Parquet row group / ORC write size, in rows, buffered as Arrow batches (~100 bytes a row).
COLUMNAR_GROUP_ROWS = 65_536
#: Listing workers at once (each an in-flight ListObjectsV2 loop and one open data file).
LIST_CONCURRENCY = 16
#: HeadObject calls in flight at once over all workers, when a field needs HEAD.
HEAD_CONCURRENCY = 32
#: gzip level of CSV data files (6, gzip's own default, is within 5 % of 9's size at ~3x speed).
GZIP_LEVEL = 6
#: Bytes per read when hashing a finished data file.
READ_CHUNK_BYTES = 1 << 20
#: HEAD errors meaning the object went away after it was listed.
_GONE = frozenset({"NoSuchKey", "NoSuchVersion", "NotFound", "404"})
_CONTENT_TYPES = {
    InventoryFormat.CSV: "application/gzip",
    InventoryFormat.ORC: "application/octet-stream",
    InventoryFormat.PARQUET: "application/octet-stream",
}
#: server.toml table of scheduled inventories.
INVENTORIES_TABLE = "inventories"
#: Scheduled reports `s3batch serve` writes at once (each already lists in parallel).
SCHEDULE_CONCURRENCY = 1
#: Seconds shutdown waits for scheduled reports to unwind after cancelling them.
STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class InventoryReport:
    """A report written to the destination bucket."""

    bucket: str
    manifest_key: str
    #: ETag of manifest.json (what a job's Manifest.Location names).
    manifest_etag: str
    files: tuple[DataFile, ...]
    #: Rows written (objects, or versions and delete markers).
    rows: int
    #: Objects whose HEAD failed (their HEAD fields are empty), and the first such error.
    head_failures: int = 0
    head_error: str | None = None

    def job_manifest(self) -> dict[str, Any]:
        """The Manifest of a job (`create-job --manifest`) over this report."""
        return job_manifest(self.bucket, self.manifest_key, self.manifest_etag)


async def generate_inventory(
    objects: StorageAdapter,
    config: InventoryConfig,
    *,
    max_rows_per_file: int = DATA_FILE_MAX_ROWS,
    started: datetime | None = None,
) -> InventoryReport:
    """List `config.source_bucket` and write its report to the destination. Raises StorageError
    when listing or an upload fails (a failed HEAD only empties that object's HEAD fields).
    `started` (default: now) names the report."""
    if max_rows_per_file < 1:
        raise ConfigError(f"max rows per file must be at least 1, got {max_rows_per_file}")
    when = started or datetime.now(UTC)
    keys = report_keys(config, when)
    lock_known = Capability.OBJECT_LOCK in objects.capabilities
    with tempfile.TemporaryDirectory(prefix="s3batch-inventory-") as tmp:
        fmt = row_format(config.fields, lock_known=lock_known)
        writer = _ReportWriter(objects, config, fmt, Path(tmp), keys, max_rows_per_file)
        files, rows = await writer.run()
    failures, first_error = writer.head_failures, writer.head_error
    manifest = manifest_json(config, when, files)
    dest = config.destination_bucket
    info = await objects.put_bytes(dest, keys.manifest, manifest, content_type="application/json")
    await objects.put_bytes(dest, keys.symlink, symlink_txt(dest, files), content_type="text/plain")
    # Last: its arrival says the report is complete.
    await objects.put_bytes(dest, keys.checksum, manifest_checksum(manifest), content_type="text/plain")
    return InventoryReport(dest, keys.manifest, info.etag, files, rows, failures, first_error)


# -- listing ---------------------------------------------------------------------------------------


async def _batches(items: AsyncIterator[ObjectInfo], size: int) -> AsyncIterator[list[ObjectInfo]]:
    batch: list[ObjectInfo] = []
    async with contextlib.aclosing(items):  # type: ignore[type-var]
        async for item in items:
            batch.append(item)
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch


# -- data files ------------------------------------------------------------------------------------


class _DataFile(Protocol):
    rows: int

    def write(self, objects: Sequence[ObjectFacts]) -> None: ...

    def close(self) -> None: ...


class _CsvGzFile:
    """Quoted CSV lines, gzipped as they come."""

    def __init__(self, path: Path, fmt: RowFormat) -> None:
        self._fmt = fmt
        self._gz = gzip.open(path, "wb", compresslevel=GZIP_LEVEL)
        self.rows = 0

    def write(self, objects: Sequence[ObjectFacts]) -> None:
        self._gz.write("".join(map(self._fmt.csv_line, objects)).encode())
        self.rows += len(objects)

    def close(self) -> None:
        self._gz.close()


def arrow_schema(fields: Sequence[Field], fmt: InventoryFormat) -> Any:
    """The pyarrow schema of a report's columns. Timestamps are milliseconds; Parquet marks
    them UTC (TIMESTAMP_MILLIS, as AWS's schema string says), ORC keeps its plain `timestamp`."""
    import pyarrow as pa  # type: ignore[import-untyped]

    tz = "UTC" if fmt is InventoryFormat.PARQUET else None
    types = {
        ColumnType.STRING: pa.string(),
        ColumnType.BOOLEAN: pa.bool_(),
        ColumnType.BIGINT: pa.int64(),
        ColumnType.TIMESTAMP: pa.timestamp("ms", tz=tz),
    }
    return pa.schema(
        [pa.field(f.column, types[f.kind], nullable=f.name not in REQUIRED_FIELDS) for f in fields]
    )


class _ColumnarFile:
    """Parquet (Snappy) or ORC (ZLIB), as AWS compresses them, in row groups of
    COLUMNAR_GROUP_ROWS."""

    def __init__(self, path: Path, fmt: RowFormat, file_format: InventoryFormat) -> None:
        import pyarrow as pa
        import pyarrow.orc as orc  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        self._pa = pa
        self._fmt = fmt
        self._schema = arrow_schema(fmt.fields, file_format)
        if file_format is InventoryFormat.PARQUET:
            writer = pq.ParquetWriter(path, self._schema, compression="snappy")
            self._write, self._close = writer.write_table, writer.close
        else:
            orc_writer = orc.ORCWriter(path, compression="zlib")
            self._write, self._close = orc_writer.write, orc_writer.close
        self._pending: list[Any] = []
        self._pending_rows = 0
        self._wrote = False
        self.rows = 0

    def write(self, objects: Sequence[ObjectFacts]) -> None:
        rows = [self._fmt.values(o) for o in objects]
        columns = [list(col) for col in zip(*rows, strict=True)]
        arrays = [self._pa.array(col, type=f.type) for col, f in zip(columns, self._schema, strict=True)]
        self._pending.append(self._pa.RecordBatch.from_arrays(arrays, schema=self._schema))
        self._pending_rows += len(rows)
        self.rows += len(rows)
        if self._pending_rows >= COLUMNAR_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        self._write(self._pa.Table.from_batches(self._pending, schema=self._schema))
        self._pending, self._pending_rows, self._wrote = [], 0, True

    def close(self) -> None:
        if self._pending or not self._wrote:  # an empty report still gets a file with the schema
            self._flush()
        self._close()


def _file_md5(path: Path) -> str:
    md5 = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(READ_CHUNK_BYTES):
            md5.update(block)
    return md5.hexdigest()


@dataclass
class _Open:
    """A data file being written, and where it sorts among the report's files."""

    file: _DataFile
    path: Path
    #: (index of the key range its first row came from, files started before it in that range)
    order: tuple[int, int]


@dataclass
class _ReportWriter:
    """The listing workers of one report and the data files they write."""

    objects: StorageAdapter
    config: InventoryConfig
    fmt: RowFormat
    work: Path
    keys: ReportKeys
    max_rows: int
    _done: list[tuple[tuple[int, int], DataFile]] = field(default_factory=list)
    _head_gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(HEAD_CONCURRENCY))
    head_failures: int = 0
    head_error: str | None = None

    async def run(self) -> tuple[tuple[DataFile, ...], int]:
        """Every data file, uploaded, in key order of their first rows; and the row count."""
        c = self.config
        ranges = await listing.plan_ranges(self.objects, c.source_bucket, c.prefix)
        # One listing failing (or the report cancelled) stops the others before the temporary
        # folder they write into goes away.
        counts = await listing.run_workers(ranges, self._worker, LIST_CONCURRENCY)
        if not self._done:  # an empty bucket: one empty file, so the manifest still names one
            opened = self._open((0, 0))
            await self._finish(opened)
        self._done.sort(key=lambda item: item[0])
        return tuple(data for _, data in self._done), sum(counts)

    async def _worker(self, queue: listing.RangeQueue) -> int:
        """Take ranges from the shared queue until none is left; write their rows."""
        c, n, current = self.config, 0, None
        versions = c.versions is IncludedVersions.ALL
        for index, r in queue:  # `queue` is shared: each range goes to one worker
            started_here = 0
            objects = listing.range_listing(self.objects, c.source_bucket, c.prefix, r, versions=versions)
            async for batch in _batches(objects, BATCH_ROWS):
                facts = await self._facts(batch)
                while facts:
                    if current is None:
                        current = self._open((index, started_here))
                        started_here += 1
                    room = self.max_rows - current.file.rows
                    await asyncio.to_thread(current.file.write, facts[:room])
                    n += min(room, len(facts))
                    facts = facts[room:]
                    if current.file.rows >= self.max_rows:
                        await self._finish(current)
                        current = None
        if current is not None:
            await self._finish(current)
        return n

    def _open(self, order: tuple[int, int]) -> _Open:
        fmt = self.config.file_format
        path = self.work / uuid.uuid4().hex
        if fmt is InventoryFormat.CSV:
            return _Open(_CsvGzFile(path, self.fmt), path, order)
        return _Open(_ColumnarFile(path, self.fmt, fmt), path, order)

    async def _finish(self, opened: _Open) -> None:
        """Close, hash, upload and delete one data file."""
        fmt = self.config.file_format
        await asyncio.to_thread(opened.file.close)
        md5 = await asyncio.to_thread(_file_md5, opened.path)
        key = self.keys.data_file(str(uuid.uuid4()), fmt)
        dest = self.config.destination_bucket
        await self.objects.put_file(dest, key, opened.path, content_type=_CONTENT_TYPES[fmt])
        self._done.append((opened.order, DataFile(key, opened.path.stat().st_size, md5)))
        opened.path.unlink()

    async def _facts(self, batch: list[ObjectInfo]) -> list[ObjectFacts]:
        if not self.config.needs_head:
            return [ObjectFacts(info) for info in batch]
        heads = await asyncio.gather(*(self._head(info) for info in batch))
        return [ObjectFacts(info, head) for info, head in zip(batch, heads, strict=True)]

    async def _head(self, info: ObjectInfo) -> ObjectInfo | None:
        if info.is_delete_marker:
            return None
        async with self._head_gate:
            try:
                return await self.objects.head(self.config.source_bucket, info.key, info.version_id)
            except StorageError as exc:
                if exc.code not in _GONE:
                    self.head_failures += 1
                    self.head_error = self.head_error or f"{info.key}: {exc}"
                return None


# -- schedules (`s3batch serve`) ---------------------------------------------------------------------


def load_schedules(home: Path) -> tuple[ScheduledInventory, ...]:
    """`[[inventories]]` of HOME/server.toml (none without the file). Raises ConfigError."""
    path = home / SERVER_FILE
    if not path.is_file():
        return ()
    try:
        entries = tomllib.loads(path.read_text(encoding="utf-8")).get(INVENTORIES_TABLE, [])
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    where = f"{path} [[{INVENTORIES_TABLE}]]"
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: must be an array of tables")
    return checked_schedules(
        [scheduled_inventory(e, f"{where} #{n}") for n, e in enumerate(entries, 1)], where
    )


class InventoryScheduler:
    """Writes each scheduled report now and then every `interval_s`, in the background.

    At most SCHEDULE_CONCURRENCY reports run at once; a report still running when its next
    one is due delays that one (never two of one configuration at once). A failed report is
    logged and the schedule goes on. `stop` cancels whatever runs: its data files may stay in
    the destination, but without manifest.checksum no reader takes them for a report."""

    def __init__(self, schedules: Sequence[ScheduledInventory], storage: StorageConfig) -> None:
        self.schedules = tuple(schedules)
        self.storage = storage
        self.completed: dict[str, int] = {}
        self.failed: dict[str, int] = {}
        self._gate = asyncio.Semaphore(SCHEDULE_CONCURRENCY)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(s)) for s in self.schedules]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S)
        self._tasks = []

    async def _loop(self, schedule: ScheduledInventory) -> None:
        while True:  # ends only by cancellation at shutdown
            started = asyncio.get_running_loop().time()
            async with self._gate:
                await self.run_once(schedule)
            elapsed = asyncio.get_running_loop().time() - started
            await asyncio.sleep(max(0.0, schedule.interval_s - elapsed))

    async def run_once(self, schedule: ScheduledInventory) -> InventoryReport | None:
        """One report; None (and an error logged) when it failed."""
        c = schedule.config
        name = f"{c.source_bucket}/{c.config_id}"
        try:
            store = open_store(self.storage)
            try:
                report = await generate_inventory(store, c)
            finally:
                await store.close()
        except S3BatchError as exc:
            self.failed[name] = self.failed.get(name, 0) + 1
            log.error("inventory %s failed: %s", name, exc)
            return None
        except Exception:  # a bug must not stop the other schedules or the server
            self.failed[name] = self.failed.get(name, 0) + 1
            log.exception("inventory %s failed", name)
            return None
        self.completed[name] = self.completed.get(name, 0) + 1
        log.info("inventory %s: %d rows in %d files, s3://%s/%s", name, report.rows, len(report.files),
                 report.bucket, report.manifest_key)  # fmt: skip
        if report.head_failures:
            log.warning("inventory %s: HEAD failed for %d objects (their HEAD fields are empty), "
                        "first: %s", name, report.head_failures, report.head_error)  # fmt: skip
        return report
