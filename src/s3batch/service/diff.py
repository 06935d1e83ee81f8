"""`s3batch diff`: read two sides (inventory reports or live listings), merge them by key, and
write added / removed / changed as CSV manifests a job takes as they are, plus summary.json
(docs/versions.md#diff). The comparison itself is domain/diff.py.

Memory stays flat in the number of objects. Inventory data files are in no particular key
order, so each side is first spilled into its own temporary SQLite file: a WITHOUT ROWID table
keyed by the object key, which SQLite keeps sorted on disk; reading it back ORDER BY key is a
walk of that index, and the merge holds one entry per side. In memory at any time: SQLite's
page cache (SPILL_CACHE_KIB per side), one insert batch (INSERT_BATCH_ROWS entries), one
ORC/Parquet record batch (manifests.COLUMNAR_BATCH_ROWS). On disk, in the temp folder: roughly
(key length + 50 bytes) per object and side, plus one ORC/Parquet data file at a time.
SQLite's default BINARY collation orders UTF-8 bytes, which is the code point order Python
compares keys in, and the order S3 lists them in.

A listing side is listed in parallel key ranges (manifests.plan_ranges, LIST_CONCURRENCY at
once), as the manifest generator does.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s3batch.domain.arn import bucket_arn
from s3batch.domain.diff import (
    COLUMNAR_DIFF_COLUMNS,
    Change,
    DiffSource,
    DiffTally,
    Entry,
    SourceKind,
    compared_prefix,
    csv_entry,
    diff_columns,
    listed_entry,
    manifest_fields,
    manifest_row,
    merge_diff,
    record_entry,
)
from s3batch.domain.inventory import DataFile, InventoryFormat, InventoryManifest, parse_manifest_json
from s3batch.domain.manifest import ManifestFormat
from s3batch.errors import ManifestError, StorageError
from s3batch.service.manifests import (
    LIST_CONCURRENCY,
    KeyRange,
    columnar_records,
    csv_data_lines,
    download_data_file,
    plan_ranges,
)
from s3batch.storage.capabilities import StorageAdapter
from s3batch.storage.listing import range_objects, run_ranges

#: The files written under the output prefix, by kind of difference.
CHANGE_FILES = {Change.ADDED: "added.csv", Change.REMOVED: "removed.csv", Change.CHANGED: "changed.csv"}
SUMMARY_FILE = "summary.json"
#: SQLite page cache per side, in KiB: the spill's whole memory, whatever the object count.
SPILL_CACHE_KIB = 32 * 1024
#: Entries inserted into a spill file per statement.
INSERT_BATCH_ROWS = 5_000
_INSERT = "INSERT INTO entries VALUES (?, ?, ?, ?, ?)"


@dataclass(frozen=True, slots=True)
class DiffRequest:
    old: DiffSource
    new: DiffSource
    output_bucket: str
    #: Folder of the output files ("" for the bucket's top level).
    output_prefix: str
    #: Compare only keys under this prefix (besides what each side covers).
    prefix: str = ""

    def output_key(self, name: str) -> str:
        return f"{self.output_prefix.rstrip('/')}/{name}" if self.output_prefix.strip("/") else name


class _Spill:
    """One side's entries in a temporary SQLite file, sorted by key; plus its totals."""

    def __init__(self, path: Path, side: str, source: DiffSource) -> None:
        self.side = side
        self.source = source
        #: The bucket the listed objects live in (an inventory's sourceBucket).
        self.bucket = source.bucket
        self.versioned = False
        self.objects = 0
        self.bytes = 0
        self.has_etag = False
        self.has_size = False
        # check_same_thread=False: ORC/Parquet batches and the merge run in worker threads,
        # never two at once.
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{SPILL_CACHE_KIB}"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute(
            "CREATE TABLE entries (key TEXT PRIMARY KEY, etag TEXT, size INTEGER, checksum TEXT, "
            "version_id TEXT) WITHOUT ROWID"
        )
        self._db.execute("BEGIN")

    def add(self, entries: list[Entry]) -> None:
        rows = [(e.key, e.etag, e.size, e.checksum, e.version_id) for e in entries]
        # A savepoint per batch: after a duplicate, the batch is undone and replayed row by row
        # to name the key that came twice.
        self._db.execute("SAVEPOINT batch")
        try:
            self._db.executemany(_INSERT, rows)
        except sqlite3.IntegrityError as exc:
            self._db.execute("ROLLBACK TO batch")
            raise ManifestError(
                f"{self.side} ({self.source}) lists a key twice: {self._duplicate(rows)!r}"
            ) from exc
        self._db.execute("RELEASE batch")
        for e in entries:
            self.objects += 1
            self.bytes += e.size or 0
            self.has_etag = self.has_etag or e.etag is not None
            self.has_size = self.has_size or e.size is not None

    def _duplicate(self, rows: list[tuple[Any, ...]]) -> str:
        for row in rows:
            try:
                self._db.execute(_INSERT, row)
            except sqlite3.IntegrityError:
                return str(row[0])
        return "?"

    def entries(self) -> Iterator[Entry]:
        self._db.execute("COMMIT")
        cursor = self._db.execute("SELECT key, etag, size, checksum, version_id FROM entries ORDER BY key")
        for key, etag, size, checksum, version_id in cursor:
            yield Entry(key, etag, size, checksum, version_id)

    def close(self) -> None:
        self._db.close()

    def as_json(self) -> dict[str, Any]:
        return {
            "Source": str(self.source),
            "Kind": self.source.kind.value,
            "Bucket": self.bucket,
            "Objects": self.objects,
            "Bytes": self.bytes,
        }


async def diff(objects: StorageAdapter, request: DiffRequest) -> dict[str, Any]:
    """Compare, write the manifests and summary.json; return the summary. Raises ManifestError
    (a side cannot be read) or StorageError (the output cannot be written)."""
    scope = compared_prefix(request.old, request.new, request.prefix)
    with tempfile.TemporaryDirectory(prefix="s3batch-diff-") as tmp:
        work = Path(tmp)
        old = _Spill(work / "old.sqlite", "OLD", request.old)
        new = _Spill(work / "new.sqlite", "NEW", request.new)
        try:
            await _fill(objects, old, scope, work)
            await _fill(objects, new, scope, work)
            tally = await asyncio.to_thread(_merge, old, new, work)
        finally:
            old.close()
            new.close()
        manifests = await _upload_manifests(objects, request, work, old.versioned, new.versioned)
    summary = _summary(old, new, scope, tally, manifests)
    body = json.dumps(summary, indent=2, ensure_ascii=False).encode()
    await objects.put_bytes(
        request.output_bucket, request.output_key(SUMMARY_FILE), body, content_type="application/json"
    )
    return summary


async def _fill(objects: StorageAdapter, spill: _Spill, scope: str, work: Path) -> None:
    if spill.source.kind is SourceKind.INVENTORY:
        await _fill_inventory(objects, spill, scope, work)
    else:
        await _fill_listing(objects, spill, scope)


# -- inventories --------------------------------------------------------------------------


async def _read_inventory(objects: StorageAdapter, source: DiffSource) -> InventoryManifest:
    try:
        body = await objects.get_bytes(source.bucket, source.path)
    except StorageError as exc:
        raise ManifestError(f"cannot read inventory {source}: {exc}") from exc
    return parse_manifest_json(body)


async def _fill_inventory(objects: StorageAdapter, spill: _Spill, scope: str, work: Path) -> None:
    inventory = await _read_inventory(objects, spill.source)
    spill.bucket = inventory.source_bucket
    for data in inventory.files:
        if inventory.file_format is InventoryFormat.CSV:
            await _fill_csv(objects, inventory, data, spill, scope)
        else:
            path = work / "data-file"
            await download_data_file(objects, inventory, data, path)
            await asyncio.to_thread(_fill_columnar, inventory.file_format, path, data, spill, scope)
            path.unlink()


async def _fill_csv(
    objects: StorageAdapter, inventory: InventoryManifest, data: DataFile, spill: _Spill, scope: str
) -> None:
    where = f"inventory file {data.key}"
    columns = diff_columns(inventory.file_schema, where)
    spill.versioned = columns.version_id is not None
    async for lines in csv_data_lines(objects, inventory, data):
        batch = []
        for line in lines:
            entry = csv_entry(line.text, columns, f"{where} line {line.number}")
            if entry is not None and entry.key.startswith(scope):
                batch.append(entry)
            if len(batch) >= INSERT_BATCH_ROWS:  # a gzip chunk can hold many thousands of lines
                spill.add(batch)
                batch = []
        spill.add(batch)


def _fill_columnar(
    file_format: InventoryFormat, path: Path, data: DataFile, spill: _Spill, scope: str
) -> None:
    where = f"inventory file {data.key}"
    n = 0
    for names, records in columnar_records(file_format, path, where, COLUMNAR_DIFF_COLUMNS):
        if "key" not in names:
            raise ManifestError(f"{where}: no key column (columns: {', '.join(names)})")
        spill.versioned = "version_id" in names
        if spill.versioned and "is_latest" not in names:
            raise ManifestError(f"{where}: a versioned inventory needs is_latest to tell current objects")
        batch = []
        for record in records:
            n += 1
            entry = record_entry(record, spill.versioned, f"{where} record {n}")
            if entry is not None and entry.key.startswith(scope):
                batch.append(entry)
        spill.add(batch)


# -- live listings ------------------------------------------------------------------------


async def _fill_listing(objects: StorageAdapter, spill: _Spill, scope: str) -> None:
    bucket = spill.source.bucket
    ranges = await plan_ranges(objects, bucket, scope)

    async def one(r: KeyRange) -> None:
        batch: list[Entry] = []
        async for info in range_objects(objects, bucket, scope, r):
            batch.append(listed_entry(info))
            if len(batch) >= INSERT_BATCH_ROWS:
                spill.add(batch)  # no await inside: ranges never interleave within an insert
                batch = []
        spill.add(batch)

    try:
        await run_ranges(ranges, one, LIST_CONCURRENCY)
    except StorageError as exc:
        raise ManifestError(f"cannot list {spill.side} ({spill.source}): {exc}") from exc


# -- merge and output ---------------------------------------------------------------------


def _merge(old: _Spill, new: _Spill, work: Path) -> DiffTally:
    """Walk both spills by key into the three CSV files (in `work`)."""
    tally = DiffTally()
    files = {
        change: (work / name).open("w", encoding="utf-8", newline="") for change, name in CHANGE_FILES.items()
    }
    try:
        writers = {change: csv.writer(f, lineterminator="\n") for change, f in files.items()}
        for difference in merge_diff(old.entries(), new.entries()):
            tally.add(difference)
            if difference.change is Change.REMOVED and difference.old is not None:
                writers[Change.REMOVED].writerow(manifest_row(old.bucket, difference.old, old.versioned))
            elif difference.change in (Change.ADDED, Change.CHANGED) and difference.new is not None:
                writers[difference.change].writerow(manifest_row(new.bucket, difference.new, new.versioned))
    finally:
        for f in files.values():
            f.close()
    return tally


async def _upload_manifests(
    objects: StorageAdapter, request: DiffRequest, work: Path, old_versions: bool, new_versions: bool
) -> dict[Change, dict[str, Any]]:
    """Upload the three CSV files; return each one's JobManifest (Spec + Location with ETag)."""
    out: dict[Change, dict[str, Any]] = {}
    for change, name in CHANGE_FILES.items():
        key = request.output_key(name)
        await objects.put_file(request.output_bucket, key, work / name, content_type="text/csv")
        info = await objects.head(request.output_bucket, key)
        location: dict[str, Any] = {
            "ObjectArn": f"{bucket_arn(request.output_bucket)}/{key}",
            "ETag": info.etag,
        }
        if info.version_id and info.version_id != "null":
            location["ObjectVersionId"] = info.version_id
        with_version = old_versions if change is Change.REMOVED else new_versions
        spec = {"Format": ManifestFormat.CSV.value, "Fields": manifest_fields(with_version)}
        out[change] = {"Spec": spec, "Location": location}
    return out


def _summary(
    old: _Spill, new: _Spill, scope: str, tally: DiffTally, manifests: dict[Change, dict[str, Any]]
) -> dict[str, Any]:
    compared = [
        name
        for name, both in (("ETag", old.has_etag and new.has_etag), ("Size", old.has_size and new.has_size))
        if both
    ]
    counts = tally.as_json()
    for change, manifest in manifests.items():
        counts[change.value]["Manifest"] = manifest
    return {"Old": old.as_json(), "New": new.as_json(), "Prefix": scope, "ComparedBy": compared, **counts}
