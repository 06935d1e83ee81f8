"""Manifests that are not a plain CSV: S3 Inventory reports and manifest generators.

At Preparing they are materialized once into a normalized CSV manifest (Bucket,Key,VersionId;
keys URL-encoded as in a CSV manifest) in the worker's spool folder. From then on the job runs
exactly like a CSV job: the same chunking, the same resume from a byte offset.

Memory stays flat in manifest size: rows go to temporary files as they are read or listed, and
the finished file is uploaded to the spool with `put_file`.

Listing for a generator is parallel (storage/listing.py): the key space under the listing
prefix is cut into ranges at the common prefixes one or two "/" levels down, each range is
listed by its own task, at most LIST_CONCURRENCY at once, into its own temporary file; the files
are then joined in range order, so the manifest is in key order and deterministic.
`IncludeVersions: All` uses the same ranges with ListObjectVersions (KeyMarker). A range holds
whole keys, so the noncurrent-version filter (domain/versions.py) sees each key's versions
together within one listing. The listing asks for no ETags (`etags=False`): nothing here uses
them, and a folder store would hash every file it has not cached an ETag for.

Reading an inventory needs only the core `ObjectStore`. A generator lists versions on any store,
declared versioned or not (`list_versions` on an unversioned store lists each object once, as
its latest version, like ListObjectVersions on a bucket that never had versioning), so the
listing takes the whole `StorageAdapter`; the replication configuration it reads only where the
store declares one.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import hashlib
import json
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote_plus

from s3batch.domain.arn import bucket_arn
from s3batch.domain.generator import (
    GENERATED_MANIFEST_FORMAT,
    IncludeVersions,
    ManifestFilter,
    ManifestGenerator,
)
from s3batch.domain.inventory import (
    CsvColumns,
    DataFile,
    InventoryFormat,
    InventoryManifest,
    InventoryRow,
    columnar_has_versions,
    columnar_row,
    csv_columns,
    csv_manifest_line,
    parse_csv_line,
    parse_manifest_json,
    required_columnar,
)
from s3batch.domain.job import Job
from s3batch.domain.manifest import LineSplitter, ManifestFormat, RawLine
from s3batch.domain.objects import ObjectInfo
from s3batch.domain.spec import JobRequest
from s3batch.domain.versions import NoncurrentPicker
from s3batch.errors import ManifestError, StorageError
from s3batch.storage.base import ObjectStore
from s3batch.storage.capabilities import StorageAdapter, replication_store
from s3batch.storage.listing import (
    KeyRange,
    plan_ranges,
    range_listing,
    run_ranges,
)

#: Fields of a materialized manifest.
MATERIALIZED_FIELDS = ("Bucket", "Key", "VersionId")
#: Bucket (a sub-folder of HOME/spool) holding materialized manifests.
SPOOL_BUCKET = "manifests"
#: Bytes per read of an inventory data file.
READ_CHUNK_BYTES = 1 << 20
#: Records per batch read from an ORC/Parquet file (bounds memory per batch).
COLUMNAR_BATCH_ROWS = 10_000
#: Key ranges listed at once by a generator (each an in-flight ListObjectsV2 loop).
LIST_CONCURRENCY = 16
#: Layout version written in a generated manifest's manifest.json.
GENERATED_VERSION = "2021-11-30"
_GZIP_WBITS = zlib.MAX_WBITS | 16


def needs_materializing(request: JobRequest) -> bool:
    """Whether the job's tasks come from a file s3batch writes first (a generator's listing or an
    inventory report's data files) rather than straight from a CSV manifest."""
    if request.generator is not None:
        return True
    return request.manifest is not None and request.manifest.format is ManifestFormat.INVENTORY_CSV


def spool_key(job_id: str) -> str:
    return f"{job_id}.csv"


async def materialize(job: Job, objects: StorageAdapter, spool: ObjectStore) -> dict[str, Any]:
    """Write the job's tasks to `spool` at (SPOOL_BUCKET, spool_key(job_id)).

    Returns facts to keep in `job.extra` (e.g. a GeneratedManifestDescriptor). Raises
    ManifestError (naming the file and line where it can) or StorageError.
    """
    facts: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="s3batch-materialize-") as tmp:
        work = Path(tmp)
        out = work / "manifest.csv"
        gen = job.spec.generator
        if gen is not None:
            await write_listing(objects, gen, out, work)
            if gen.enable_output:
                facts = await _write_generated(objects, gen, job.job_id, out, work)
        else:
            await _write_inventory(job, objects, out, work)
        await spool.put_file(SPOOL_BUCKET, spool_key(job.job_id), out, content_type="text/csv")
    return facts


# -- inventory reports ------------------------------------------------------------------


async def _write_inventory(job: Job, objects: ObjectStore, out: Path, work: Path) -> None:
    inventory = await _read_inventory_manifest(job, objects)
    with out.open("w", encoding="utf-8", newline="") as sink:
        for data in inventory.files:
            if inventory.file_format is InventoryFormat.CSV:
                await _csv_data_file(objects, inventory, data, sink)
            else:
                await _columnar_data_file(objects, inventory, data, sink, work)


async def _read_inventory_manifest(job: Job, objects: ObjectStore) -> InventoryManifest:
    loc = job.spec.manifest
    assert loc is not None  # an inventory job has a manifest; a generator job has none
    try:
        info = await objects.head(loc.bucket, loc.key, loc.version_id)
        body = await objects.get_bytes(loc.bucket, loc.key, loc.version_id)
    except StorageError as exc:
        raise ManifestError(f"cannot read inventory s3://{loc.bucket}/{loc.key}: {exc}") from exc
    expected = loc.etag.strip('"')
    if info.etag != expected:
        raise ManifestError(f"ETag mismatch: the job expects {expected}, the object has {info.etag}")
    return parse_manifest_json(body)


async def _data_chunks(objects: ObjectStore, bucket: str, data: DataFile) -> AsyncIterator[bytes]:
    try:
        async for chunk in objects.iter_bytes(bucket, data.key, None, 0, READ_CHUNK_BYTES):
            yield chunk
    except StorageError as exc:
        raise ManifestError(f"inventory file {data.key}: cannot read it ({exc})") from exc


def _check_md5(data: DataFile, digest: str) -> None:
    if digest != data.md5:
        raise ManifestError(
            f"inventory file {data.key}: MD5 mismatch (manifest.json says {data.md5}, the file has {digest})"
        )


async def csv_data_lines(
    objects: ObjectStore, inventory: InventoryManifest, data: DataFile
) -> AsyncIterator[list[RawLine]]:
    """The lines of one CSV data file (gunzipped when its key ends in .gz) as they arrive; the
    file's MD5 is checked before the last lines come."""
    md5 = hashlib.md5(usedforsecurity=False)
    gunzip = _Gunzip() if data.key.endswith(".gz") else None
    splitter = LineSplitter()
    async for chunk in _data_chunks(objects, inventory.destination_bucket, data):
        md5.update(chunk)
        yield splitter.feed(gunzip.feed(chunk, data.key) if gunzip else chunk)
    _check_md5(data, md5.hexdigest())
    if gunzip:
        gunzip.close(data.key)
    yield splitter.close()


async def _csv_data_file(
    objects: ObjectStore, inventory: InventoryManifest, data: DataFile, sink: TextIO
) -> None:
    columns = csv_columns(inventory.file_schema)
    async for lines in csv_data_lines(objects, inventory, data):
        _emit_csv_lines(lines, columns, data, sink)


def _emit_csv_lines(lines: list[RawLine], columns: CsvColumns, data: DataFile, sink: TextIO) -> None:
    for line in lines:
        row = parse_csv_line(line.text, columns, f"inventory file {data.key} line {line.number}")
        if row is not None:
            sink.write(csv_manifest_line(row))


class _Gunzip:
    """Streaming gzip decoder that also reads concatenated members (as `gzip` may write them)."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(_GZIP_WBITS)
        #: True while a member has started but not ended (a cut-off file ends in this state).
        self._open = False

    def feed(self, chunk: bytes, name: str) -> bytes:
        out = []
        # Bounded: each pass ends one gzip member or consumes the rest of `chunk`.
        while chunk:
            self._open = True
            try:
                out.append(self._d.decompress(chunk))
            except zlib.error as exc:
                raise ManifestError(f"inventory file {name}: not valid gzip ({exc})") from exc
            chunk = b""
            if self._d.eof:
                chunk, self._open = self._d.unused_data, False
                self._d = zlib.decompressobj(_GZIP_WBITS)
        return b"".join(out)

    def close(self, name: str) -> None:
        if self._open:
            raise ManifestError(f"inventory file {name}: gzip data is cut off")


async def _columnar_data_file(
    objects: ObjectStore, inventory: InventoryManifest, data: DataFile, sink: TextIO, work: Path
) -> None:
    """ORC/Parquet: download (hashing as it arrives), check the MD5, then read in batches."""
    path = work / "data-file"
    await download_data_file(objects, inventory, data, path)
    reader = _parquet_records if inventory.file_format is InventoryFormat.PARQUET else _orc_records
    await asyncio.to_thread(_write_columnar, reader, path, data, sink)
    path.unlink()


async def download_data_file(
    objects: ObjectStore, inventory: InventoryManifest, data: DataFile, path: Path
) -> None:
    """Download one data file to `path`, hashing as it arrives; raises ManifestError on an MD5
    mismatch."""
    md5 = hashlib.md5(usedforsecurity=False)
    with path.open("wb") as f:
        async for chunk in _data_chunks(objects, inventory.destination_bucket, data):
            md5.update(chunk)
            f.write(chunk)
    _check_md5(data, md5.hexdigest())


def columnar_records(
    file_format: InventoryFormat, path: Path, where: str, columns: list[str]
) -> Iterator[tuple[list[str], list[dict[str, Any]]]]:
    """(all column names, a batch of records with the wanted `columns` present in the file) of a
    downloaded ORC/Parquet data file, COLUMNAR_BATCH_ROWS records at a time."""
    reader = _parquet_records if file_format is InventoryFormat.PARQUET else _orc_records
    return reader(path, where, columns)


def _write_columnar(
    reader: Callable[[Path, str, list[str]], Iterator[tuple[list[str], list[dict[str, Any]]]]],
    path: Path,
    data: DataFile,
    sink: TextIO,
) -> None:
    where = f"inventory file {data.key}"
    n = 0
    for names, records in reader(path, where, _COLUMNS_READ):
        required_columnar(names, where)
        versions = columnar_has_versions(names)
        for record in records:
            n += 1
            row = columnar_row(record, versions, f"{where} record {n}")
            if row is not None:
                sink.write(csv_manifest_line(row))


_COLUMNS_READ = ["bucket", "key", "version_id", "is_delete_marker"]


def _parquet_records(
    path: Path, where: str, columns: list[str]
) -> Iterator[tuple[list[str], list[dict[str, Any]]]]:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        wanted = [c for c in columns if c in names]
        for batch in pf.iter_batches(batch_size=COLUMNAR_BATCH_ROWS, columns=wanted):
            yield names, batch.to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ManifestError(f"{where}: not a readable Parquet file ({exc})") from exc


def _orc_records(
    path: Path, where: str, columns: list[str]
) -> Iterator[tuple[list[str], list[dict[str, Any]]]]:
    import pyarrow.orc as orc  # type: ignore[import-untyped]

    try:
        of = orc.ORCFile(path)
        names = of.schema.names
        wanted = [c for c in columns if c in names]
        for stripe in range(of.nstripes):
            batch = of.read_stripe(stripe, columns=wanted)
            for start in range(0, batch.num_rows, COLUMNAR_BATCH_ROWS):
                yield names, batch.slice(start, COLUMNAR_BATCH_ROWS).to_pylist()
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{where}: not a readable ORC file ({exc})") from exc


# -- manifest generator: parallel listing -----------------------------------------------


async def write_listing(objects: StorageAdapter, gen: ManifestGenerator, out: Path, work: Path) -> int:
    """List the generator's source bucket with its filters into `out` (normalized CSV, key
    order); returns the row count."""
    flt = gen.filter
    if flt.eligible_for_replication:
        replication = replication_store(objects)
        rules = await replication.replication_rules(gen.source_bucket) if replication is not None else []
        if not rules:  # no configuration (or no enabled rule): nothing is eligible
            out.write_bytes(b"")
            return 0
        flt = flt.with_replication_rules([rule.prefix for rule in rules])
    versions = gen.include_versions is IncludeVersions.ALL
    lister = _Lister(objects, gen.source_bucket, flt, versions, now=datetime.now(UTC))
    ranges = await plan_ranges(objects, gen.source_bucket, flt.list_prefix, concurrency=LIST_CONCURRENCY)
    parts = {r: work / f"range-{i:05d}.csv" for i, r in enumerate(ranges)}

    async def one(r: KeyRange) -> int:
        with parts[r].open("w", encoding="utf-8", newline="") as sink:
            return await lister.list_range(r, sink)

    counts = await run_ranges(ranges, one, LIST_CONCURRENCY)
    with out.open("wb") as joined:
        for part in parts.values():  # in range order, as the ranges were planned
            with part.open("rb") as f:
                while block := f.read(READ_CHUNK_BYTES):
                    joined.write(block)
            part.unlink()
    return sum(counts)


@dataclass(frozen=True, slots=True)
class _Lister:
    """Lists one key range of the source bucket (current objects or every version) through the
    filter, into a CSV sink."""

    objects: StorageAdapter
    bucket: str
    flt: ManifestFilter
    versions: bool
    #: The moment NoncurrentDays counts back from.
    now: datetime

    async def list_range(self, r: KeyRange, sink: TextIO) -> int:
        """Matching rows of `r` into `sink`; returns rows written."""
        prefix = self.flt.list_prefix
        # No ETag: neither the filters nor the rows (bucket, key, version) use one, and a folder
        # would read every file to compute it.
        listing = range_listing(self.objects, self.bucket, prefix, r, versions=self.versions, etags=False)
        n = 0
        rule = self.flt.noncurrent
        # Never bypassed: a listing of current objects only (all IsLatest) selects nothing.
        picker = NoncurrentPicker(rule, self.now) if rule is not None else None
        async with contextlib.aclosing(listing):  # type: ignore[type-var]
            async for info in listing:
                n += await self._write_matching(picker.feed(info) if picker else [info], sink)
        if picker is not None:
            n += await self._write_matching(picker.close(), sink)
        return n

    async def _write_matching(self, infos: list[ObjectInfo], sink: TextIO) -> int:
        n = 0
        for info in infos:
            if await self._matches(info):
                sink.write(csv_manifest_line(_listed_row(self.bucket, info)))
                n += 1
        return n

    async def _matches(self, info: ObjectInfo) -> bool:
        if info.is_delete_marker or not self.flt.matches_listing(info):
            return False
        if not self.flt.needs_head:
            return True
        headed = await _head(self.objects, self.bucket, info)
        return headed is not None and self.flt.matches_head(headed)


async def _head(objects: ObjectStore, bucket: str, info: ObjectInfo) -> ObjectInfo | None:
    """HEAD data for filters listings cannot answer; None when the object went away."""
    try:
        return await objects.head(bucket, info.key, info.version_id)
    except StorageError as exc:
        if exc.code in {"NoSuchKey", "NoSuchVersion", "NotFound", "404"}:
            return None
        raise


def _listed_row(bucket: str, info: ObjectInfo) -> InventoryRow:
    return InventoryRow(bucket, quote_plus(info.key, safe="/"), info.version_id)


# -- manifest generator: the saved manifest ---------------------------------------------


def generated_keys(prefix: str, job_id: str) -> tuple[str, str]:
    """(manifest.json key, data file key) of a generated manifest."""
    base = f"{prefix.rstrip('/')}/job-{job_id}" if prefix else f"job-{job_id}"
    return f"{base}/manifest.json", f"{base}/data/{job_id}.csv.gz"


async def _write_generated(
    objects: ObjectStore, gen: ManifestGenerator, job_id: str, listing: Path, work: Path
) -> dict[str, Any]:
    """Save the generated manifest as an inventory report (S3InventoryReport_CSV_20211130)."""
    assert gen.output_bucket is not None  # request validation requires it with EnableManifestOutput
    manifest_key, data_key = generated_keys(gen.output_prefix, job_id)
    versions = gen.include_versions is IncludeVersions.ALL
    data = work / "generated.csv.gz"
    await asyncio.to_thread(_gzip_inventory_rows, listing, data, versions)
    sse = gen.output_sse  # ManifestEncryption: both files of the manifest are encrypted
    await objects.put_file(gen.output_bucket, data_key, data, content_type="application/gzip", extra=sse)
    md5 = await asyncio.to_thread(_file_md5, data)
    doc = {
        "sourceBucket": gen.source_bucket,
        "destinationBucket": bucket_arn(gen.output_bucket),
        "version": GENERATED_VERSION,
        "creationTimestamp": str(int(time.time() * 1000)),
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, VersionId" if versions else "Bucket, Key",
        "files": [{"key": data_key, "size": data.stat().st_size, "MD5checksum": md5}],
    }
    info = await objects.put_bytes(
        gen.output_bucket, manifest_key, json.dumps(doc).encode(), content_type="application/json", extra=sse
    )
    return {
        "GeneratedManifestDescriptor": {
            "Format": GENERATED_MANIFEST_FORMAT,
            "Location": {"ObjectArn": f"{bucket_arn(gen.output_bucket)}/{manifest_key}", "ETag": info.etag},
        }
    }


def _gzip_inventory_rows(listing: Path, data: Path, versions: bool) -> None:
    """Normalized rows → inventory CSV rows (every field double-quoted, as AWS writes them)."""
    width = 3 if versions else 2
    with (
        listing.open(encoding="utf-8", newline="") as src,
        gzip.open(data, "wt", encoding="utf-8", newline="") as gz,
    ):
        writer = csv.writer(gz, quoting=csv.QUOTE_ALL, lineterminator="\n")
        for row in csv.reader(src):
            writer.writerow(row[:width])


def _file_md5(path: Path) -> str:
    md5 = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(READ_CHUNK_BYTES):
            md5.update(block)
    return md5.hexdigest()


__all__ = [
    "MATERIALIZED_FIELDS",
    "SPOOL_BUCKET",
    "KeyRange",
    "columnar_records",
    "csv_data_lines",
    "download_data_file",
    "generated_keys",
    "materialize",
    "needs_materializing",
    "plan_ranges",
    "spool_key",
    "write_listing",
]
