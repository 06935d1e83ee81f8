"""LambdaInvoke's results sink: where a function's `resultData` goes (docs/results-sink.md).

A result entry may carry the s3batch extension `resultData`, a JSON object of columns too big
for a report line (an embedding, a profile, OCR text). The operation names where they go:

    "ResultsSink": {"Parquet": {"Bucket": "arn:aws:s3:::results", "Prefix": "emb"}}
    "ResultsSink": {"Table": {"Backend": "sqlite", "Path": "/abs/db.sqlite3", "Name": "emb"}}
    "ResultsSink": {"Table": {"Backend": "postgresql", "Url": "postgresql://user@host/db",
                              "Name": "emb"}}

The operation opens one sink (`open_sink`) and hands it `SinkRow`s; `write` returns one
location per row once those rows are durable, which the task's report row carries
(`with_location`). Concurrent writes are group-committed: collected for at most
GROUP_COMMIT_INTERVAL_S or GROUP_COMMIT_MAX_ROWS rows (less when many wait and no more come:
EARLY_COMMIT_MIN_ROWS), then committed at once (one Parquet file: results_sink_parquet.py;
one transaction: results_sink_table.py). Column types follow
results_sink_columns.py; a write whose data does not fit raises SinkDataError (its tasks fail
permanently), a failed commit raises StorageError (retryable where the cause is).

Locations:
- Parquet: `s3://<bucket>/<prefix>/job-<id>/part-<32 hex>.parquet#task=<taskId>`: the file, and
  the row's `task_id` column (URL-quoted). Not a row number: clean-up may rewrite a file
  without some of its rows, and the task id still finds the row.
- Table: `table:<name>`; the row's key is the report row's (bucket, key, version id).

At job end `finalize_sink` removes what a resumed job may have written twice (Parquet only; a
table's upsert never duplicates): a row is kept only if the report recorded its location for
its task. See `finalize_sink`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, unquote

from s3batch.domain.arn import bucket_from_arn
from s3batch.errors import BadRequest
from s3batch.operations._params import reject_unknown
from s3batch.operations.base import OperationContext
from s3batch.operations.csv_ingest import BACKENDS, TableSpec
from s3batch.operations.results_sink_columns import ColumnType, ColumnTypes, SinkDataError
from s3batch.storage.base import ObjectStore

__all__ = [
    "SINK_FIELD",
    "ResultsSink",
    "SinkCleanup",
    "SinkDataError",
    "SinkRow",
    "finalize_sink",
    "open_sink",
    "validate_sink",
    "with_location",
]

log = logging.getLogger(__name__)

#: The LambdaInvoke parameter that names the sink.
SINK_FIELD = "ResultsSink"
#: The operation whose parameters hold it.
OPERATION = "LambdaInvoke"
FIELD = f"{OPERATION}.{SINK_FIELD}"
#: Longest Prefix, as AWS's JobReport Prefix.
MAX_PREFIX_CHARS = 512
#: A Prefix uses S3's "safe characters" for object keys (AWS: Object key naming guidelines), so
#: a location never needs quoting in a report line and is found in one by a plain pattern.
_SAFE_PREFIX = re.compile(r"[A-Za-z0-9!_.*'()/-]+")
#: How long a write waits for others to join its commit, in seconds. Short next to a function
#: call, long enough that a busy job writes files of many rows rather than one file per task.
GROUP_COMMIT_INTERVAL_S = 0.1
#: Rows that commit at once without waiting for the interval (a row of 384 random floats is
#: ~2.3 KB in Parquet, so a full file is some 5 MB).
GROUP_COMMIT_MAX_ROWS = 2_000
#: A batch of at least this many rows commits early once no write has joined it for
#: GROUP_COMMIT_QUIET_S: its writers are then likely every task the job has in flight, and
#: waiting out the interval would only idle them. A smaller batch always waits the interval, so
#: tasks that finish one at a time still share files.
EARLY_COMMIT_MIN_ROWS = 16
#: Seconds without a new write after which such a batch commits.
GROUP_COMMIT_QUIET_S = 0.005
#: Commits one sink runs at once; further batches wait, bounding the rows held in memory.
MAX_COMMITS_IN_FLIGHT = 4
#: The fragment of a Parquet location that names the row's task.
TASK_FRAGMENT = "#task="
#: Parquet part file names: the only objects clean-up touches in a job's folder.
PART_PATTERN = r"part-[0-9a-f]{32}\.parquet"
#: Characters of a URL-quoted task id (quote(..., safe="")).
_QUOTED_TASK = r"[A-Za-z0-9._~%-]+"


@dataclass(frozen=True, slots=True)
class SinkRow:
    """One task's resultData, with the object and task it belongs to."""

    bucket: str
    #: The object key, decoded.
    key: str
    version_id: str | None
    #: The Lambda taskId (stable across a task's retries: domain/lambda_contract.task_id_for).
    task_id: str
    data: Mapping[str, Any]


class ResultsSink(ABC):
    """Where a job's resultData goes."""

    @abstractmethod
    async def write(self, rows: Sequence[SinkRow]) -> list[str]:
        """Store `rows`; return one location per row, in order, once they are durable.

        Raises SinkDataError (none of the rows is written) or StorageError (the commit
        failed; `retryable` says whether trying again may succeed)."""

    @abstractmethod
    async def close(self) -> None:
        """Commit what waits, wait for commits under way, release connections."""


# -- parameters ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParquetTarget:
    bucket: str
    #: Without a trailing "/"; "" for none.
    prefix: str

    def folder(self, job_id: str) -> str:
        """The job's folder, ending in "/"."""
        base = f"job-{job_id}/"
        return f"{self.prefix}/{base}" if self.prefix else base


@dataclass(frozen=True, slots=True)
class TableTarget:
    spec: TableSpec


def parse_sink(raw: object) -> ParquetTarget | TableTarget:
    """The sink `raw` names; BadRequest names the field at fault."""
    if not isinstance(raw, Mapping) or len(raw) != 1 or next(iter(raw)) not in ("Parquet", "Table"):
        raise BadRequest(f"{FIELD} must be an object with exactly one of Parquet, Table")
    [(kind, body)] = raw.items()
    where = f"{FIELD}.{kind}"
    if not isinstance(body, Mapping):
        raise BadRequest(f"{where} must be an object")
    if kind == "Parquet":
        return _parquet(where, body)
    return TableTarget(_table(where, body))


def validate_sink(raw: object) -> None:
    """Check LambdaInvoke.ResultsSink at CreateJob time (raises BadRequest)."""
    parse_sink(raw)


def _parquet(where: str, body: Mapping[str, Any]) -> ParquetTarget:
    reject_unknown(where, body, {"Bucket", "Prefix"})
    arn = body.get("Bucket")
    if not isinstance(arn, str) or not arn.startswith("arn:"):
        raise BadRequest(f"{where}.Bucket must be a bucket ARN like arn:aws:s3:::bucket; got {arn!r}")
    try:
        bucket = bucket_from_arn(arn, f"{where}.Bucket")
    except BadRequest:
        raise BadRequest(
            f"{where}.Bucket must be a bucket ARN like arn:aws:s3:::bucket; got {arn!r}"
        ) from None
    prefix = body.get("Prefix", "")
    if not isinstance(prefix, str) or len(prefix) > MAX_PREFIX_CHARS:
        raise BadRequest(f"{where}.Prefix must be a string of at most {MAX_PREFIX_CHARS} characters")
    prefix = prefix.strip("/")
    if prefix and (not _SAFE_PREFIX.fullmatch(prefix) or "//" in prefix):
        raise BadRequest(
            f"{where}.Prefix may hold only letters, digits and ! - _ . * ' ( ) / (S3's safe key "
            f"characters) and no empty path segment; got {prefix!r}"
        )
    return ParquetTarget(bucket, prefix)


def _table(where: str, body: Mapping[str, Any]) -> TableSpec:
    """The same table parameters as S3batchCsvIngest's Table (operations/csv_ingest.py)."""
    reject_unknown(where, body, {"Backend", "Path", "Url", "Name"})
    backend = body.get("Backend")
    if backend not in BACKENDS:
        raise BadRequest(f"{where}.Backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    name = body.get("Name")
    if not isinstance(name, str) or not name or "\x00" in name:
        raise BadRequest(f"{where}.Name must be a non-empty string")
    if backend == "postgresql":
        return TableSpec("postgresql", "", name, url=_postgres_url(where, body))
    if "Url" in body:
        raise BadRequest(f"{where}.Url is for Backend postgresql; sqlite takes Path")
    path = body.get("Path")
    # Absolute, because tasks may run in a worker process with another working directory.
    if not isinstance(path, str) or not PurePosixPath(path).is_absolute():
        raise BadRequest(f"{where}.Path must be an absolute path; got {path!r}")
    return TableSpec("sqlite", path, name)


def _postgres_url(where: str, body: Mapping[str, Any]) -> str:
    if "Path" in body:
        raise BadRequest(f"{where}.Path is for Backend sqlite; postgresql takes Url")
    url = body.get("Url")
    if not isinstance(url, str):
        raise BadRequest(f"{where}.Url is required for postgresql: postgresql://user@host:port/db")
    if find_spec("psycopg") is None:
        raise BadRequest(f"{where}: the postgresql backend needs psycopg: pip install 's3batch[postgres]'")
    from s3batch.operations.csv_postgres import check_url

    try:
        check_url(url)  # no password: job parameters are stored and shown by DescribeJob
    except ValueError as exc:
        raise BadRequest(f"{where}.Url: {exc}") from None
    return url


# -- locations ----------------------------------------------------------------------------


def parquet_location(bucket: str, key: str, task_id: str) -> str:
    return f"s3://{bucket}/{key}{TASK_FRAGMENT}{quote(task_id, safe='')}"


def table_location(name: str) -> str:
    return f"table:{name}"


def with_location(message: str, location: str) -> str:
    """A report message that carries `location`: first, so a message cut at the report's size
    cap keeps it, and whole, so `finalize_sink` finds it."""
    return f"{location} {message}" if message else location


def location_reader(raw: Mapping[str, Any], job_id: str) -> Callable[[str, str], str | None] | None:
    """For a Parquet sink, a function of (a report row's ResultMessage, that row's own task id)
    giving the location `with_location` put there, or None; None for a sink that keeps no files
    (a table).

    Only a location at the very start of the message counts, and only one that names the row's
    own task: the rest of the message is the function's `resultString`, and a task without
    resultData has nothing but that, so a function could otherwise make one task's row point
    at another task's leftover row and have `finalize_sink` drop that task's real one."""
    target = parse_sink(raw)
    if not isinstance(target, ParquetTarget):
        return None
    start = re.escape(f"s3://{target.bucket}/{target.folder(job_id)}")
    pattern = re.compile(
        start + PART_PATTERN + re.escape(TASK_FRAGMENT) + f"(?P<task>{_QUOTED_TASK})(?= |\\Z)"
    )

    def read(message: str, task_id: str) -> str | None:
        match = pattern.match(message)
        if match is None or unquote(match.group("task")) != task_id:
            return None
        return match.group(0)

    return read


# -- group commit -------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Waiter:
    """One write() call waiting for the commit of its rows."""

    rows: Sequence[SinkRow]
    done: asyncio.Future[list[str]]


def row_label(row: SinkRow) -> str:
    """How messages name a row's object."""
    version = f" (version {row.version_id})" if row.version_id else ""
    return f"{row.bucket}/{row.key}{version}"


class GroupCommitSink(ResultsSink):
    """Collects concurrent writes and commits them together (`_commit`, one file or transaction).

    The first write into an empty batch starts the interval; the batch commits when it ends,
    when the batch reaches `max_rows`, or when it holds `early_rows` and no write joined it for
    `quiet_s` (see EARLY_COMMIT_MIN_ROWS). A write whose caller is cancelled before its batch
    commits leaves the batch; within a batch, the last row of a task id wins (a task retried
    while its earlier attempt still waited), and both callers get that row's location."""

    def __init__(
        self,
        columns: ColumnTypes | None = None,
        *,
        interval_s: float = GROUP_COMMIT_INTERVAL_S,
        max_rows: int = GROUP_COMMIT_MAX_ROWS,
        early_rows: int = EARLY_COMMIT_MIN_ROWS,
        quiet_s: float = GROUP_COMMIT_QUIET_S,
    ) -> None:
        self.columns = columns if columns is not None else ColumnTypes()
        self.interval_s = interval_s
        self.max_rows = max_rows
        self.early_rows = early_rows
        self.quiet_s = quiet_s
        self._pending: list[_Waiter] = []
        self._pending_rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self._quiet: asyncio.TimerHandle | None = None
        self._last_join = 0.0
        self._commits: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_COMMITS_IN_FLIGHT)
        self._closed = False
        #: Files or transactions committed (for tests and logs).
        self.commits = 0

    async def write(self, rows: Sequence[SinkRow]) -> list[str]:
        if not rows:
            return []
        await self._ready()
        if self._closed:
            raise RuntimeError("the results sink is closed")
        self.columns.admit([(row_label(row), row.data) for row in rows])
        waiter = _Waiter(list(rows), asyncio.get_running_loop().create_future())
        self._pending.append(waiter)
        self._pending_rows += len(rows)
        self._schedule()
        return await waiter.done

    def _schedule(self) -> None:
        """After a write joined the batch: commit now, or make sure a timer will."""
        loop = asyncio.get_running_loop()
        self._last_join = loop.time()
        if self._pending_rows >= self.max_rows:
            self._start_commit()
            return
        if self._timer is None:
            self._timer = loop.call_later(self.interval_s, self._start_commit)
        if self._quiet is None and self._pending_rows >= self.early_rows:
            self._quiet = loop.call_later(self.quiet_s, self._check_quiet)

    def _check_quiet(self) -> None:
        """Commit the batch if no write joined it for `quiet_s`; else look again when that is due."""
        self._quiet = None
        if self._pending_rows < self.early_rows:  # committed meanwhile
            return
        loop = asyncio.get_running_loop()
        idle = loop.time() - self._last_join
        if idle >= self.quiet_s:
            self._start_commit()
        else:
            self._quiet = loop.call_later(self.quiet_s - idle, self._check_quiet)

    def _start_commit(self) -> None:
        for timer in (self._timer, self._quiet):
            if timer is not None:
                timer.cancel()
        self._timer = self._quiet = None
        batch, self._pending, self._pending_rows = self._pending, [], 0
        if not batch:
            return
        types = self.columns.fix({name for waiter in batch for row in waiter.rows for name in row.data})
        task = asyncio.get_running_loop().create_task(self._commit_batch(batch, types))
        self._commits.add(task)
        task.add_done_callback(self._commits.discard)

    async def _commit_batch(self, batch: list[_Waiter], types: Mapping[str, ColumnType | None]) -> None:
        async with self._slots:
            live = [waiter for waiter in batch if not waiter.done.done()]  # cancelled callers leave
            rows = list({row.task_id: row for waiter in live for row in waiter.rows}.values())
            if not rows:
                return
            try:
                where = await self._commit(rows, types)
            except Exception as exc:  # every waiter gets the failure; nothing else would see it
                if all(waiter.done.done() for waiter in live):
                    log.warning("results sink commit failed after its writers left: %s", exc)
                for waiter in live:
                    if not waiter.done.done():
                        waiter.done.set_exception(exc)
                return
            self.commits += 1
            for waiter in live:
                if not waiter.done.done():
                    waiter.done.set_result([where[row.task_id] for row in waiter.rows])

    async def close(self) -> None:
        self._closed = True
        self._start_commit()
        while self._commits:
            await asyncio.gather(*self._commits, return_exceptions=True)
        await self._release()

    async def _ready(self) -> None:
        """Run before each write is checked."""

    async def _release(self) -> None:
        """Release connections once the last commit ended."""

    @abstractmethod
    async def _commit(
        self, rows: Sequence[SinkRow], types: Mapping[str, ColumnType | None]
    ) -> Mapping[str, str]:
        """Make `rows` (distinct task ids) durable; return each task id's location. `types`:
        every data column of the rows (and maybe more), in column order."""


def open_sink(raw: Mapping[str, Any], ctx: OperationContext) -> ResultsSink:
    """The sink `raw` (a validated LambdaInvoke.ResultsSink) names, for the job of `ctx`."""
    target = parse_sink(raw)
    if isinstance(target, ParquetTarget):
        from s3batch.operations.results_sink_parquet import ParquetSink

        return ParquetSink(target, ctx.store, ctx.job.job_id)
    from s3batch.operations.results_sink_table import open_table_sink

    return open_table_sink(target.spec, ctx.job.job_id)


# -- clean-up at job end ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SinkCleanup:
    """What `finalize_sink` did to a job's Parquet files."""

    #: Files every row of which the report references.
    files_kept: int = 0
    #: Files written again without their unreferenced rows.
    files_rewritten: int = 0
    #: Files no report row references.
    files_deleted: int = 0
    #: Rows dropped from rewritten files (a deleted file is not read, so its rows are not counted).
    rows_removed: int = 0
    #: Locations the report records that name no row (their file or row is gone): should stay 0.
    missing: tuple[str, ...] = field(default=())


async def finalize_sink(
    raw: Mapping[str, Any], store: ObjectStore, job_id: str, referenced: Mapping[str, str]
) -> SinkCleanup:
    """Leave in the sink exactly the rows the job's report points at.

    `referenced`: task id → the location its report row records (`location_finder` finds them
    in the stored report lines). A task may have written rows more than once: an attempt whose
    result was never recorded (the process died, the job was cancelled while it waited) and the
    one after a resume or retry, in another file. The report names one (file, task id) per
    task; every other row is a leftover, however the files share tasks. So, per part file under
    `<Prefix>/job-<id>/`: no referenced row → deleted; some rows unreferenced → rewritten
    without them (one PUT of the same key: the task ids in the report's locations still find
    their rows); all referenced → kept. Idempotent, so a job that stops while finishing does
    it again. A table sink needs none: its upsert keeps one row per object.
    """
    target = parse_sink(raw)
    if not isinstance(target, ParquetTarget):
        return SinkCleanup()
    from s3batch.operations.results_sink_parquet import clean_parquet

    return await clean_parquet(target, store, job_id, referenced)
