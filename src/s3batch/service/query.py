"""`s3batch query`: SQL (DuckDB) over S3 Inventory reports, job completion reports and jobs.

A query runs in a private, in-memory DuckDB database that reaches nothing but what s3batch puts
there (docs/query.md, "Safety"):
- `inventory('…/manifest.json')` is read through the job's object store (service/query_fs.py):
  DuckDB's own Parquet and CSV readers read the listed data files from `s3batch://` paths that
  only those files answer; ORC (DuckDB has no ORC reader) is scanned as an Arrow dataset;
- `report('JOB_ID')` and the `reports` table stream a job's stored report lines from the job
  store into CSV files in the session's temporary folder, which DuckDB reads;
- `jobs` and `pipeline_report(...)` are small Arrow tables;
- `pipeline_journal(...)`, `pipeline_inventory(...)` and `pipeline_reconciles(...)` are a
  pipeline's live tables, handed over by the caller (`LiveTables`: this layer does not know
  pipelines): Parquet files in the object store are read as inventories' are, through
  `s3batch://`; rows from a database are written once to a Parquet file in the session folder
  (a reader streams only once, and a query may scan a table twice); no file yet is an empty
  table with the table's columns.
Then the connection is locked down: no file or network access beyond the `s3batch://` file
system and the session folder (`allowed_directories` with `enable_external_access=false`), no
extension installed or loaded, no Python variable scanned by name, and the configuration locked
so the query itself cannot undo any of it.

Memory stays flat in data size: data files are read in blocks while DuckDB scans them, report
lines go to disk chunk by chunk, and the answer is fetched in record batches.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]

from s3batch.domain.arn import ObjectLocation, bucket_from_arn, object_from_arn
from s3batch.domain.inventory import (
    NULL_VERSION,
    InventoryFormat,
    InventoryManifest,
    parse_manifest_json,
    schema_names,
)
from s3batch.domain.job import Job
from s3batch.domain.manifest import ManifestFormat
from s3batch.domain.query import (
    MANIFEST_COLUMNS,
    MANIFEST_VERSION_COLUMN,
    PIPELINE_TABLES,
    TableCall,
    inventory_location,
    is_job_id,
    manifest_has_versions,
    manifest_line,
    rewrite,
    snake_name,
)
from s3batch.errors import BadRequest, ManifestError, NotFound, S3BatchError, StorageError
from s3batch.service.query_fs import LoopThread, ServedFileSystem, ServedObject
from s3batch.settings import Settings
from s3batch.storage.base import ObjectStore
from s3batch.storage.config import StorageConfig, open_store
from s3batch.store.base import JobStore

#: Rows per record batch fetched from DuckDB (bounds the answer's memory while it is printed).
FETCH_BATCH_ROWS = 10_000
#: Jobs per page read from the job store for the `jobs` and `reports` tables.
JOBS_PAGE_SIZE = 1000
#: Most pages read for those tables (JOBS_PAGE_SIZE × this many jobs), so the loop is bounded.
MAX_JOB_PAGES = 100_000
#: Report files per job in the session folder: one per task status, as the store keeps them.
REPORT_STATUSES = ("succeeded", "failed")
#: Columns of a completion report, in AWS's ReportSchema order (docs/query.md).
REPORT_COLUMNS = {
    "bucket": "VARCHAR",
    "key": "VARCHAR",
    "version_id": "VARCHAR",
    "task_status": "VARCHAR",
    "error_code": "VARCHAR",
    "http_status_code": "INTEGER",
    "result_message": "VARCHAR",
}
#: The order the stored lines are in (AWS writes HTTPStatusCode before ErrorCode).
_REPORT_LINE_FIELDS = (
    "bucket", "key", "version_id", "task_status", "http_status_code", "error_code", "result_message"
)  # fmt: skip
#: Inventory CSV columns that are not text, by their snake_case name.
INVENTORY_CSV_TYPES = {
    "size": "BIGINT",
    "last_modified_date": "TIMESTAMPTZ",
    "object_lock_retain_until_date": "TIMESTAMPTZ",
    "is_latest": "BOOLEAN",
    "is_delete_marker": "BOOLEAN",
    "is_multipart_uploaded": "BOOLEAN",
}
#: How the CSV files read here are written: RFC 4180, no header (reports, AWS inventories).
_CSV_OPTIONS = "header = false, auto_detect = false, delim = ',', quote = '\"', escape = '\"'"
#: A CSV key as written in manifests, reports and CSV inventories (form-URL-encoded) → the key.
_DECODE_KEY = "url_decode(replace(key, '+', ' '))"
#: A pipeline file's completion-report rows, as (run id, report row fields in line order).
PipelineRows = Callable[[str], list[tuple[str, tuple[str, ...]]]]


@dataclass(frozen=True, slots=True)
class LiveTable:
    """One of a pipeline's live tables: `reader` (rows from its database) or `files` (Parquet
    objects in the store); neither when no file is written yet. `schema` either way."""

    schema: pa.Schema
    reader: pa.RecordBatchReader | None = None
    files: tuple[ServedObject, ...] = ()


#: (pipeline file, table: journal, inventory or reconciles, the session's object store) → the
#: table. Raises BadRequest naming the call when the file or its tables cannot be read.
LiveTables = Callable[[str, str, ObjectStore], Coroutine[Any, Any, LiveTable]]


class QueryError(S3BatchError):
    """DuckDB refused or failed the query (bad SQL, a bad value in a data file...)."""


@dataclass(frozen=True, slots=True)
class QueryResult:
    """The answer: column names, their DuckDB types, and the rows in record batches."""

    columns: tuple[str, ...]
    types: tuple[str, ...]
    batches: Iterator[pa.RecordBatch]


class QuerySession:
    """One private DuckDB database and what it may read, over the object store `storage` and
    the job store of `settings`' HOME. `pipeline_rows` serves pipeline_report(). Use as a
    context manager: closing it closes the stores and removes the session folder."""

    def __init__(
        self,
        settings: Settings,
        storage: StorageConfig,
        pipeline_rows: PipelineRows | None = None,
        pipeline_tables: LiveTables | None = None,
    ) -> None:
        self.settings, self.storage, self.pipeline_rows = settings, storage, pipeline_rows
        self.pipeline_tables = pipeline_tables
        self._io = LoopThread()
        self._tmp = Path(tempfile.mkdtemp(prefix="s3batch-query-"))
        self._objects: ObjectStore | None = None
        self._jobs: JobStore | None = None
        self._fs: ServedFileSystem | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._report_dirs: dict[str, Path] = {}

    def __enter__(self) -> QuerySession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        self._io.call(self._close_stores())
        self._io.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    async def _close_stores(self) -> None:
        if self._objects is not None:
            await self._objects.close()
        if self._jobs is not None:
            await self._jobs.close()

    # -- running -------------------------------------------------------------------------

    def run(self, sql: str) -> QueryResult:
        """Run one SQL statement. Raises BadRequest (a call s3batch cannot serve), NotFound
        (no such job), QueryError (DuckDB's error), ManifestError or StorageError."""
        rewritten = rewrite(sql)
        con = self._connection()
        for call in rewritten.calls:
            self._register(con, call)
        for name in sorted(rewritten.tables):
            self._register_table(con, name)
        try:
            relation = con.sql(rewritten.sql)  # a relation streams; None: nothing to answer
            reader = None if relation is None else relation.to_arrow_reader(FETCH_BATCH_ROWS)
        except duckdb.Error as exc:
            raise QueryError(_duckdb_message(exc)) from exc
        if relation is None or reader is None:
            return QueryResult((), (), iter(()))
        types = tuple(str(t) for t in relation.types)
        return QueryResult(tuple(reader.schema.names), types, _batches(reader))

    def _connection(self) -> duckdb.DuckDBPyConnection:
        if self._con is not None:
            return self._con
        spill = self._tmp / "spill"
        spill.mkdir(exist_ok=True)
        con = duckdb.connect(":memory:", config=_LOCKED_CONFIG | {"temp_directory": str(spill)})
        self._fs = ServedFileSystem(self._io, self._store())
        con.register_filesystem(self._fs)
        allowed = [f"{self._fs.protocol}://", f"{self._tmp}/"]
        con.execute("SET TimeZone = 'UTC'")  # timestamps print the same on every machine
        con.execute(f"SET allowed_directories = {_sql_list(allowed)}")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        self._con = con
        return con

    def _store(self) -> ObjectStore:
        if self._objects is None:
            self._objects = self._io.call(_open_objects(self.storage))
        return self._objects

    def _job_store(self) -> JobStore:
        if self._jobs is None:
            self._jobs = self._io.call(_open_jobs(self.settings))
        return self._jobs

    # -- table functions -----------------------------------------------------------------

    def _register(self, con: duckdb.DuckDBPyConnection, call: TableCall) -> None:
        if call.function == "inventory":
            self._register_inventory(con, call)
        elif call.function == "report":
            job = self._io.call(_get_job(self._job_store(), call.argument))
            self._create_view(con, call.view, self._report_select([job.job_id], with_job_id=False))
        elif call.function == "pipeline_report":
            if self.pipeline_rows is None:
                raise BadRequest("pipeline_report() is not available here")
            con.register(call.view, _pipeline_table(self.pipeline_rows(call.argument)))
        elif call.function in PIPELINE_TABLES:
            self._register_live(con, call)

    def _register_inventory(self, con: duckdb.DuckDBPyConnection, call: TableCall) -> None:
        location = inventory_location(call.argument)
        inventory = self._io.call(_read_inventory(self._store(), location, call.argument))
        served = [ServedObject(inventory.destination_bucket, f.key, f.size) for f in inventory.files]
        assert self._fs is not None  # made with the connection
        self._fs.serve(served)
        urls = _sql_list([obj.url for obj in served])
        if inventory.file_format is InventoryFormat.PARQUET:
            self._create_view(con, call.view, f"SELECT * FROM read_parquet({urls}, union_by_name = true)")
        elif inventory.file_format is InventoryFormat.CSV:
            self._create_view(con, call.view, _inventory_csv_select(urls, inventory.file_schema))
        else:
            con.register(call.view, _orc_dataset(self._fs, served))

    def _register_live(self, con: duckdb.DuckDBPyConnection, call: TableCall) -> None:
        if self.pipeline_tables is None:
            raise BadRequest(f"{call.function}() is not available here")
        name = PIPELINE_TABLES[call.function]
        table = self._io.call(self.pipeline_tables(call.argument, name, self._store()))
        if table.reader is not None:
            path = self._tmp / "live" / f"{call.view}.parquet"
            _spool_parquet(table.reader, path, f"{call.function}({call.argument!r})")
            self._create_view(con, call.view, f"SELECT * FROM read_parquet({_sql_string(str(path))})")
        elif table.files:
            assert self._fs is not None  # made with the connection
            self._fs.serve(table.files)
            urls = _sql_list([obj.url for obj in table.files])
            self._create_view(con, call.view, f"SELECT * FROM read_parquet({urls}, union_by_name = true)")
        else:  # no file written yet: the columns, no rows
            con.register(call.view, table.schema.empty_table())

    def _register_table(self, con: duckdb.DuckDBPyConnection, name: str) -> None:
        jobs = self._io.call(_all_jobs(self._job_store()))
        if name == "jobs":
            con.register(name, _jobs_table(jobs))
        else:  # reports
            self._create_view(con, name, self._report_select([j.job_id for j in jobs], with_job_id=True))

    def _create_view(self, con: duckdb.DuckDBPyConnection, name: str, select: str) -> None:
        try:
            con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {select}")
        except duckdb.Error as exc:
            raise QueryError(_duckdb_message(exc)) from exc

    # -- a manifest from a query ---------------------------------------------------------

    def write_manifest(self, sql: str, where: ObjectLocation) -> QueryManifest:
        """Run `sql` (columns bucket, key[, version_id]) and write its rows as a CSV manifest at
        `where` (keys URL-encoded, as a CSV manifest's are). Raises BadRequest for other
        columns, an empty bucket or key, or no rows at all."""
        result = self.run(sql)
        versioned = manifest_has_versions(result.columns)
        path = self._tmp / f"manifest-{uuid.uuid4()}.csv"
        with path.open("w", encoding="utf-8", newline="") as sink:
            rows = _write_manifest_rows(result, versioned, sink)
        if rows == 0:
            raise BadRequest("--manifest-query selected no objects; no job was created")
        etag = self._io.call(_upload(self._store(), where, path))
        path.unlink()
        return QueryManifest(where.bucket, where.key, etag, rows, versioned)

    # -- completion reports --------------------------------------------------------------

    def _report_select(self, job_ids: list[str], *, with_job_id: bool) -> str:
        files = [path for job_id in job_ids for path in self._report_files(job_id)]
        if not files:  # no job at all: the columns, no rows
            typed = [f"NULL::{kind} AS {name}" for name, kind in REPORT_COLUMNS.items()]
            return f"SELECT NULL::VARCHAR AS job_id, {', '.join(typed)} WHERE false"
        columns = ", ".join(f"'{c}': '{REPORT_COLUMNS[c]}'" for c in _REPORT_LINE_FIELDS)
        source = (
            f"read_csv({_sql_list([str(p) for p in files])}, columns = {{{columns}}}, {_CSV_OPTIONS}, "
            "filename = true)"
        )
        ordered = ", ".join(_DECODE_KEY + " AS key" if c == "key" else c for c in REPORT_COLUMNS)
        if not with_job_id:
            return f"SELECT {ordered} FROM {source}"
        # The file's folder is named after its job (see _report_files).
        job_id = "regexp_extract(filename, '([^/]+)/[^/]+$', 1) AS job_id"
        return f"SELECT {job_id}, {ordered} FROM {source}"

    def _report_files(self, job_id: str) -> list[Path]:
        """The job's report lines, as stored, in one CSV file per task status (written once
        per session, chunk by chunk)."""
        folder = self._report_dirs.get(job_id)
        if folder is None:
            if not is_job_id(job_id):  # it names a folder below
                raise BadRequest(f"the job store holds a job id s3batch cannot query: {job_id!r}")
            folder = self._tmp / "reports" / job_id
            folder.mkdir(parents=True)
            self._io.call(_write_report_lines(self._job_store(), job_id, folder))
            self._report_dirs[job_id] = folder
        return [folder / f"{status}.csv" for status in REPORT_STATUSES]


_LOCKED_CONFIG: dict[str, Any] = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "allow_community_extensions": False,
    "allow_unsigned_extensions": False,
    # A query could otherwise scan any Python object in scope by its variable name.
    "python_enable_replacements": False,
}


def _batches(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    try:
        yield from reader
    except duckdb.Error as exc:
        raise QueryError(_duckdb_message(exc)) from exc
    except pa.ArrowException as exc:
        raise QueryError(str(exc)) from exc


def _duckdb_message(exc: duckdb.Error) -> str:
    """DuckDB's message; a Python error raised in the s3batch:// file system comes with its
    traceback, of which only the last line (the error itself) says anything to the user."""
    text = str(exc).strip()
    before, marker, trace = text.partition("Traceback (most recent call last):")
    if not marker:
        return text
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    return (before.strip() + " " + (lines[-1] if lines else "")).strip()


def _sql_list(values: list[str]) -> str:
    return "[" + ", ".join(_sql_string(v) for v in values) + "]"


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def _open_objects(config: StorageConfig) -> ObjectStore:
    return open_store(config)


async def _open_jobs(settings: Settings) -> JobStore:
    from s3batch.store import open_job_store

    return open_job_store(settings)


async def _read_inventory(objects: ObjectStore, where: ObjectLocation, argument: str) -> InventoryManifest:
    try:
        body = await objects.get_bytes(where.bucket, where.key)
    except StorageError as exc:
        raise BadRequest(
            f"inventory({argument!r}): cannot read s3://{where.bucket}/{where.key} ({exc})"
        ) from exc
    try:
        return parse_manifest_json(body)
    except ManifestError as exc:
        raise BadRequest(f"inventory({argument!r}): {exc.reason}") from exc


def _inventory_csv_select(urls: str, file_schema: str) -> str:
    names = [snake_name(n) for n in schema_names(file_schema)]
    if len(set(names)) != len(names) or "key" not in names:
        raise BadRequest(f"inventory fileSchema {file_schema!r}: needs a Key column and distinct names")
    columns = ", ".join(f"'{n}': '{INVENTORY_CSV_TYPES.get(n, 'VARCHAR')}'" for n in names)
    source = f"read_csv({urls}, columns = {{{columns}}}, {_CSV_OPTIONS})"
    # AWS URL-encodes CSV keys (Parquet and ORC keys are plain): every format reads the same.
    return f"SELECT * REPLACE ({_DECODE_KEY} AS key) FROM {source}"


def _orc_dataset(fs: ServedFileSystem, served: list[ServedObject]) -> Any:
    import pyarrow.dataset as ds  # type: ignore[import-untyped]
    import pyarrow.fs as pafs  # type: ignore[import-untyped]

    arrow_fs = pafs.PyFileSystem(pafs.FSSpecHandler(fs))
    return ds.dataset([obj.path for obj in served], format="orc", filesystem=arrow_fs)


async def _get_job(jobs: JobStore, job_id: str) -> Job:
    try:
        return await jobs.get_job(job_id)
    except NotFound as exc:
        raise NotFound(f"report({job_id!r}): no such job in this S3BATCH_HOME's job store") from exc


async def _all_jobs(jobs: JobStore) -> list[Job]:
    found: list[Job] = []
    after: tuple[float, str] | None = None
    for _ in range(MAX_JOB_PAGES):
        page = await jobs.list_jobs(None, None, JOBS_PAGE_SIZE, after)
        found += page
        if len(page) < JOBS_PAGE_SIZE:
            break
        after = (page[-1].creation_time, page[-1].job_id)
    return found


async def _write_report_lines(jobs: JobStore, job_id: str, folder: Path) -> None:
    files = {status: (folder / f"{status}.csv").open("wb") for status in REPORT_STATUSES}
    try:
        async for chunk in jobs.report_lines(job_id, REPORT_STATUSES):
            for status, lines in chunk.items():
                files[status].write(lines)
    finally:
        for f in files.values():
            f.close()


def _spool_parquet(reader: pa.RecordBatchReader, path: Path, call: str) -> None:
    """Write the reader's rows to `path`, one record batch at a time (memory stays flat)."""
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    path.parent.mkdir(exist_ok=True)
    try:
        with pq.ParquetWriter(path, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
    except S3BatchError as exc:  # the table's database failed while it was read
        raise BadRequest(f"{call}: {exc}") from exc
    finally:
        reader.close()


def _timestamp(epoch_s: float | None) -> datetime | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC)


def _jobs_table(jobs: list[Job]) -> pa.Table:
    rows = [
        {
            "job_id": j.job_id,
            "status": j.status.value,
            "operation": j.operation_name,
            "priority": j.priority,
            "description": j.spec.description,
            "created": _timestamp(j.creation_time),
            "terminated": _timestamp(j.termination_date),
            "total_tasks": j.progress.total,
            "succeeded": j.progress.succeeded,
            "failed": j.progress.failed,
            "failure_reasons": "; ".join(f"{r.code}: {r.reason}" for r in j.failure_reasons) or None,
            "report": j.report_manifest,
            "account_id": j.account_id,
        }
        for j in jobs
    ]
    return pa.Table.from_pylist(rows, schema=JOBS_SCHEMA)


JOBS_SCHEMA = pa.schema(
    [
        ("job_id", pa.string()),
        ("status", pa.string()),
        ("operation", pa.string()),
        ("priority", pa.int32()),
        ("description", pa.string()),
        ("created", pa.timestamp("us", tz="UTC")),
        ("terminated", pa.timestamp("us", tz="UTC")),
        ("total_tasks", pa.int64()),
        ("succeeded", pa.int64()),
        ("failed", pa.int64()),
        ("failure_reasons", pa.string()),
        ("report", pa.string()),
        ("account_id", pa.string()),
    ]
)
PIPELINE_REPORT_SCHEMA = pa.schema(
    [("run_id", pa.string())]
    + [(name, pa.int32() if kind == "INTEGER" else pa.string()) for name, kind in REPORT_COLUMNS.items()]
)


def _pipeline_table(rows: list[tuple[str, tuple[str, ...]]]) -> pa.Table:
    from urllib.parse import unquote_plus

    out = []
    for run_id, fields in rows:
        value = dict(zip(_REPORT_LINE_FIELDS, fields, strict=True))
        record: dict[str, Any] = {"run_id": run_id}
        for name in REPORT_COLUMNS:
            text = value[name]
            if name == "key":
                record[name] = unquote_plus(text)
            elif name == "http_status_code":
                record[name] = int(text) if text.strip().isdigit() else None
            else:
                record[name] = text or None
        out.append(record)
    return pa.Table.from_pylist(out, schema=PIPELINE_REPORT_SCHEMA)


# -- manifests from a query ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueryManifest:
    """A CSV manifest written from a query's answer."""

    bucket: str
    key: str
    etag: str
    rows: int
    versioned: bool

    def as_job_manifest(self) -> dict[str, Any]:
        """The CreateJob `Manifest` for it."""
        fields = ["Bucket", "Key", "VersionId"] if self.versioned else ["Bucket", "Key"]
        return {
            "Spec": {"Format": ManifestFormat.CSV.value, "Fields": fields},
            "Location": {"ObjectArn": f"arn:aws:s3:::{self.bucket}/{self.key}", "ETag": self.etag},
        }


#: Folder (under the report prefix) of manifests written from queries when no place is given.
QUERY_MANIFEST_FOLDER = "s3batch-query-manifests"


def manifest_location(output: str | None, report: Mapping[str, Any] | None) -> ObjectLocation:
    """Where a query's manifest goes: `output` (an object ARN), else a new key under the job's
    report location. Raises BadRequest when neither is there."""
    if output:
        return object_from_arn(output, "--manifest-query-output")
    if not report or not report.get("Enabled") or not report.get("Bucket"):
        raise BadRequest(
            "--manifest-query: the job has no report bucket to keep the manifest in; "
            "give --manifest-query-output arn:aws:s3:::bucket/key"
        )
    bucket = bucket_from_arn(str(report["Bucket"]), "Report.Bucket")
    prefix = str(report.get("Prefix") or "").strip("/")
    name = f"{QUERY_MANIFEST_FOLDER}/{uuid.uuid4()}.csv"
    return ObjectLocation(bucket, f"{prefix}/{name}" if prefix else name)


def _write_manifest_rows(result: QueryResult, versioned: bool, sink: TextIO) -> int:
    names = {c.lower(): c for c in result.columns}
    rows = 0
    for batch in result.batches:
        buckets, keys = (batch.column(names[c]).to_pylist() for c in MANIFEST_COLUMNS)
        versions = batch.column(names[MANIFEST_VERSION_COLUMN]).to_pylist() if versioned else None
        for i, (bucket, key) in enumerate(zip(buckets, keys, strict=True)):
            number = rows + i + 1
            if not isinstance(bucket, str) or not bucket.strip():
                raise BadRequest(f"--manifest-query row {number}: bucket is empty")
            if not isinstance(key, str) or not key:
                raise BadRequest(f"--manifest-query row {number}: key is empty")
            version = _version(versions[i]) if versions is not None else None
            sink.write(manifest_line(bucket.strip(), key, version))
        rows += batch.num_rows
    return rows


def _version(value: Any) -> str:
    """As in a versioned inventory: no version id is S3's "null" version (docs/query.md)."""
    text = "" if value is None else str(value).strip()
    return text or NULL_VERSION


async def _upload(objects: ObjectStore, where: ObjectLocation, path: Path) -> str:
    try:
        await objects.put_file(where.bucket, where.key, path, content_type="text/csv")
        return (await objects.head(where.bucket, where.key)).etag
    except StorageError as exc:
        raise BadRequest(f"--manifest-query: cannot write s3://{where.bucket}/{where.key} ({exc})") from exc


__all__ = [
    "LiveTable",
    "LiveTables",
    "QueryError",
    "QueryManifest",
    "QueryResult",
    "QuerySession",
    "manifest_location",
]
