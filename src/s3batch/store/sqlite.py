"""The default job store: one SQLite file in WAL mode.

Several processes share the file (the CLI creating and describing jobs, the worker running
them); WAL lets readers proceed while the worker writes, and `busy_timeout` makes a writer wait
for another's lock instead of failing. Blocking calls run in a thread so the event loop keeps
serving tasks.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from s3batch.domain.job import FailureReason, Job, JobStatus, Progress
from s3batch.domain.report import ReportRow, parse_rows, render_row
from s3batch.domain.task import TaskStatus
from s3batch.domain.timeline import Sample
from s3batch.errors import IdempotencyError, NotFound
from s3batch.store.base import Chunk, FinishedTask

#: How long a writer waits for another process's lock, in milliseconds.
BUSY_TIMEOUT_MS = 30_000
#: zlib level for compacted chunk results: fast, still ~5x smaller than CSV.
RESULTS_COMPRESSION_LEVEL = 3
#: The task statuses, each with its own lines in a finished chunk and its own report file.
SUCCEEDED, FAILED = TaskStatus.SUCCEEDED.value, TaskStatus.FAILED.value

T = TypeVar("T")

_JSON_COLUMNS = {"request", "runtime", "failure_reasons", "tags", "extra"}
_JOB_COLUMNS = (
    "job_id, account_id, client_request_token, request_hash, request, runtime, status, "
    "priority, total_tasks, succeeded, failed, elapsed_active_s, active_since, creation_time, "
    "termination_date, suspended_date, suspended_cause, status_update_reason, failure_reasons, "
    "tags, report_manifest, extra"
)


class SqliteJobStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA synchronous = NORMAL")
        self._migrate()

    # -- plumbing -----------------------------------------------------------------------

    def _migrate(self) -> None:
        """Apply migrations/NNNN_*.sql in order, each in one transaction; PRAGMA user_version
        records the last applied. Re-checked under the write lock, so two processes opening a
        new file at once apply each migration once."""
        files = sorted(
            (f for f in resources.files("s3batch.store.migrations").iterdir() if f.name.endswith(".sql")),
            key=lambda f: f.name,
        )
        for number, migration in enumerate(files, start=1):
            with self._tx() as c:
                if c.execute("PRAGMA user_version").fetchone()[0] >= number:
                    continue
                for statement in _statements(migration.read_text()):
                    c.execute(statement)
                c.execute(f"PRAGMA user_version = {number}")

    def _tx(self) -> _Transaction:
        return _Transaction(self._conn, self._lock)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    async def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- jobs ---------------------------------------------------------------------------

    async def insert_job(self, job: Job) -> Job:
        return await self._run(lambda: self._insert_job(job))

    def _insert_job(self, job: Job) -> Job:
        with self._tx() as c:
            if job.client_request_token is not None:
                row = c.execute(
                    f"SELECT {_JOB_COLUMNS} FROM jobs WHERE account_id=? AND client_request_token=?",
                    (job.account_id, job.client_request_token),
                ).fetchone()
                if row is not None:
                    existing = _job_from_row(row)
                    if existing.request_hash != job.request_hash:
                        raise IdempotencyError(
                            "ClientRequestToken was already used for a different CreateJob request"
                        )
                    return existing
            values = _job_to_row(job)
            c.execute(f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({', '.join('?' * len(values))})", values)
            return job

    async def get_job(self, job_id: str, account_id: str | None = None) -> Job:
        return await self._run(lambda: self._get_job(job_id, account_id))

    def _get_job(self, job_id: str, account_id: str | None = None) -> Job:
        with self._lock:
            row = self._conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id=?", (job_id,)).fetchone()
        if row is None or (account_id is not None and row[1] != account_id):
            raise NotFound(f"No such job: {job_id}")
        return _job_from_row(row)

    async def list_jobs(
        self,
        account_id: str | None,
        statuses: Collection[JobStatus] | None = None,
        limit: int = 1000,
        after: tuple[float, str] | None = None,
    ) -> list[Job]:
        where: list[str] = ["1=1"]
        args: list[Any] = []
        if account_id is not None:
            where.append("account_id=?")
            args.append(account_id)
        if statuses:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(s.value for s in statuses)
        if after is not None:
            where.append("(creation_time < ? OR (creation_time = ? AND job_id < ?))")
            args.extend([after[0], after[0], after[1]])
        sql = (
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE {' AND '.join(where)} "
            "ORDER BY creation_time DESC, job_id DESC LIMIT ?"
        )

        def query() -> list[Job]:
            with self._lock:
                rows = self._conn.execute(sql, (*args, limit)).fetchall()
            return [_job_from_row(r) for r in rows]

        return await self._run(query)

    async def transition(
        self, job_id: str, allowed_from: Collection[JobStatus], to: JobStatus, **fields: Any
    ) -> Job | None:
        def cas() -> Job | None:
            sets, args = _assignments({"status": to, **fields})
            with self._tx() as c:
                cur = c.execute(
                    f"UPDATE jobs SET {sets} WHERE job_id=? "
                    f"AND status IN ({', '.join('?' * len(allowed_from))})",
                    (*args, job_id, *(s.value for s in allowed_from)),
                )
                if cur.rowcount == 0:
                    return None
            return self._get_job(job_id)

        return await self._run(cas)

    async def update_fields(self, job_id: str, **fields: Any) -> Job:
        def update() -> Job:
            sets, args = _assignments(fields)
            with self._tx() as c:
                c.execute(f"UPDATE jobs SET {sets} WHERE job_id=?", (*args, job_id))
            return self._get_job(job_id)

        return await self._run(update)

    async def delete_terminated_before(self, cutoff: float) -> int:
        """Remove jobs that ended before `cutoff` (epoch seconds), with their results."""

        def delete() -> int:
            with self._tx() as c:
                ids = [r[0] for r in c.execute(
                    "SELECT job_id FROM jobs WHERE termination_date IS NOT NULL AND termination_date < ?",
                    (cutoff,),
                )]  # fmt: skip
                for table in ("task_lines", "chunks", "job_samples", "jobs"):
                    c.executemany(f"DELETE FROM {table} WHERE job_id=?", [(i,) for i in ids])
            return len(ids)

        return await self._run(delete)

    async def add_sample(self, job_id: str, sample: Sample) -> None:
        """Record one timeline sample (a repeated timestamp replaces the earlier one)."""

        def add() -> None:
            with self._tx() as c:
                c.execute(
                    "INSERT OR REPLACE INTO job_samples VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (job_id, sample.at, sample.succeeded, sample.failed, sample.throttled,
                     sample.in_flight, sample.limit),
                )  # fmt: skip

        await self._run(add)

    async def samples(self, job_id: str, at_most: int | None = None) -> list[Sample]:
        """The job's timeline samples, oldest first; with `at_most`, consecutive samples are
        merged in SQL so no more than about that many come back (a month-long job has 1.3M)."""

        def read() -> list[Sample]:
            with self._lock:
                (count,) = self._conn.execute(
                    "SELECT count(*) FROM job_samples WHERE job_id=?", (job_id,)
                ).fetchone()
                group = 1 if not at_most or count <= at_most else -(-count // at_most)
                rows = self._conn.execute(_MERGED_SAMPLES, (job_id, group)).fetchall()
            return [Sample(*row) for row in rows]

        return await self._run(read)

    async def runnable_jobs(self) -> list[Job]:
        # Jobs that are ending go first (their tasks are done; only the report is left), then
        # everything else by priority, oldest first: a Paused job resumes once nothing more
        # urgent waits.
        order = {
            "Cancelling": 0,
            "Failing": 0,
            "Completing": 0,
            "Pausing": 0,
            "Active": 1,
            "Paused": 1,
            "New": 1,
            "Preparing": 1,
            "Ready": 1,
        }

        def query() -> list[Job]:
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT {_JOB_COLUMNS} FROM jobs WHERE status IN ({', '.join('?' * len(order))})",
                    tuple(order),
                ).fetchall()
            jobs = [_job_from_row(r) for r in rows]
            return sorted(jobs, key=lambda j: (order[j.status], -j.priority, j.creation_time))

        return await self._run(query)

    # -- chunks and results -------------------------------------------------------------

    async def add_chunks(self, job_id: str, chunks: Sequence[Chunk]) -> None:
        def insert() -> None:
            with self._tx() as c:
                c.executemany(
                    "INSERT OR IGNORE INTO chunks (job_id, chunk_no, first_seq, first_line, "
                    "byte_offset, n_tasks) VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (job_id, k.chunk_no, k.first_seq, k.first_line, k.byte_offset, k.n_tasks)
                        for k in chunks
                    ],
                )

        await self._run(insert)

    async def pending_chunks(self, job_id: str) -> list[Chunk]:
        def query() -> list[Chunk]:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT chunk_no, first_seq, first_line, byte_offset, n_tasks FROM chunks "
                    "WHERE job_id=? AND done=0 ORDER BY chunk_no",
                    (job_id,),
                ).fetchall()
            return [Chunk(*r) for r in rows]

        return await self._run(query)

    async def chunk_progress(self, job_id: str, chunk_no: int) -> dict[int, str]:
        def query() -> dict[int, str]:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT idx, line FROM task_lines WHERE job_id=? AND chunk_no=?",
                    (job_id, chunk_no),
                ).fetchall()
            return dict(rows)

        return await self._run(query)

    async def record(
        self, job_id: str, finished: Sequence[FinishedTask], full: Mapping[int, int] | None = None
    ) -> Progress:
        full = full or {}

        def write() -> Progress:
            completing: dict[int, list[FinishedTask]] = {no: [] for no in full}
            lines, ok = [], 0
            for f in finished:
                ok += f.succeeded
                if f.chunk_no in completing:
                    completing[f.chunk_no].append(f)
                else:
                    lines.append((job_id, f.chunk_no, f.idx, f.line, f.succeeded))
            with self._tx() as c:
                c.executemany(
                    "INSERT OR IGNORE INTO task_lines (job_id, chunk_no, idx, line, succeeded) "
                    "VALUES (?, ?, ?, ?, ?)",
                    lines,
                )
                for chunk_no, n_tasks in full.items():
                    _compact(c, job_id, chunk_no, n_tasks, completing[chunk_no])
                c.execute(
                    "UPDATE jobs SET succeeded = succeeded + ?, failed = failed + ? WHERE job_id=?",
                    (ok, len(finished) - ok, job_id),
                )
            return self._get_job(job_id).progress

        return await self._run(write)

    async def complete_chunk(self, job_id: str, chunk_no: int, n_tasks: int) -> None:
        def compact() -> None:
            with self._tx() as c:
                _compact(c, job_id, chunk_no, n_tasks, [])

        await self._run(compact)

    async def report_lines(
        self, job_id: str, statuses: Collection[str]
    ) -> AsyncIterator[Mapping[str, bytes]]:
        last = -1
        while True:
            found = await asyncio.to_thread(self._next_chunk_lines, job_id, last, statuses)
            if found is None:
                return
            last, lines = found
            by_status = ((SUCCEEDED, lines.succeeded), (FAILED, lines.failed))
            yield {status: text for status, text in by_status if text and status in statuses}

    async def report_rows(self, job_id: str) -> AsyncIterator[list[ReportRow]]:
        last = -1
        while True:
            found = await asyncio.to_thread(self._next_chunk_lines, job_id, last, (SUCCEEDED, FAILED))
            if found is None:
                return
            last, lines = found
            yield lines.rows()

    def _next_chunk_lines(
        self, job_id: str, after: int, wanted: Collection[str]
    ) -> tuple[int, _Lines] | None:
        """The first chunk after `after`: finished (its stored lines, of the `wanted` statuses
        only) or not (its recorded lines)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT chunk_no, done, results, succeeded_lines, failed_lines, statuses FROM chunks "
                "WHERE job_id=? AND chunk_no>? ORDER BY chunk_no LIMIT 1",
                (job_id, after),
            ).fetchone()
            if row is None:
                return None
            chunk_no, done, legacy, succeeded, failed, mask = row
            partial = None
            if not done:
                partial = self._conn.execute(
                    "SELECT line, succeeded FROM task_lines WHERE job_id=? AND chunk_no=? ORDER BY idx",
                    (job_id, chunk_no),
                ).fetchall()
        if partial is not None:
            return chunk_no, _Lines.grouped(partial)
        if legacy is not None:  # finished before lines were kept by status
            rows = parse_rows(zlib.decompress(legacy).decode())
            return chunk_no, _Lines.grouped((render_row(r), r.status == SUCCEEDED) for r in rows)
        return chunk_no, _Lines(
            _unpack(succeeded) if SUCCEEDED in wanted else b"",
            _unpack(failed) if FAILED in wanted else b"",
            None if mask is None else zlib.decompress(mask),
        )


class _Lines(NamedTuple):
    """One chunk's report lines by task status (UTF-8, each in manifest order)."""

    succeeded: bytes
    failed: bytes
    #: One byte per task in manifest order, 1 for succeeded: how the two interleave. None when
    #: at most one status has lines.
    statuses: bytes | None

    @classmethod
    def grouped(cls, lines: Iterable[tuple[str, int | None]]) -> _Lines:
        """From (line, succeeded) in manifest order; succeeded None: read from the line (a
        line recorded before statuses were stored beside lines)."""
        ok: list[str] = []
        failed: list[str] = []
        statuses = bytearray()
        for line, succeeded in lines:
            if succeeded is None:
                succeeded = _succeeded(line)
            (ok if succeeded else failed).append(line)
            statuses.append(1 if succeeded else 0)
        mask = bytes(statuses) if ok and failed else None
        return cls("".join(ok).encode(), "".join(failed).encode(), mask)

    def rows(self) -> list[ReportRow]:
        """Parsed, in manifest order."""
        ok, failed = parse_rows(self.succeeded.decode()), parse_rows(self.failed.decode())
        if self.statuses is None:
            return ok + failed  # one of them is empty
        ok_rows, failed_rows = iter(ok), iter(failed)
        return [next(ok_rows) if s else next(failed_rows) for s in self.statuses]


# Groups of `group` consecutive samples as one: the last time and cumulative counts, the
# throttling answers summed, the most requests in flight and the lowest limit (as
# domain/timeline.points merges them).
_MERGED_SAMPLES = """
SELECT max(at), max(succeeded), max(failed), sum(throttled), max(in_flight), min(concurrency_limit)
FROM (SELECT *, (ROW_NUMBER() OVER (ORDER BY at) - 1) AS n FROM job_samples WHERE job_id = ?)
GROUP BY n / ? ORDER BY 1
"""


def _compact(
    c: sqlite3.Connection, job_id: str, chunk_no: int, n_tasks: int, new: Sequence[FinishedTask]
) -> None:
    """Store a finished chunk as its compacted lines: those recorded before and `new` (not
    stored yet), in task order, grouped by status. Inside the caller's transaction; raises (so
    rolls back) unless exactly `n_tasks` results and the chunk open."""
    tasks: dict[int, FinishedTask] = {
        idx: FinishedTask(chunk_no, idx, line, _succeeded(line) if ok is None else bool(ok))
        for idx, line, ok in c.execute(
            "SELECT idx, line, succeeded FROM task_lines WHERE job_id=? AND chunk_no=?", (job_id, chunk_no)
        )
    }
    recorded = len(tasks)
    for f in new:  # the first result of a task stays, as INSERT OR IGNORE keeps it
        tasks.setdefault(f.idx, f)
    if len(tasks) != n_tasks:
        raise RuntimeError(f"chunk {chunk_no} of job {job_id}: {len(tasks)} results for {n_tasks} tasks")
    ordered = [tasks[i] for i in range(n_tasks)]
    # Stored lines are the report's lines: compaction concatenates them, per status.
    ok = [f.line for f in ordered if f.succeeded]
    failed = [f.line for f in ordered if not f.succeeded] if len(ok) < n_tasks else []
    statuses = bytes([f.succeeded for f in ordered]) if ok and failed else None
    mask = None if statuses is None else zlib.compress(statuses, RESULTS_COMPRESSION_LEVEL)
    done = c.execute(
        "UPDATE chunks SET done=1, succeeded=?, failed=?, succeeded_lines=?, failed_lines=?, statuses=? "
        "WHERE job_id=? AND chunk_no=? AND done=0",
        (len(ok), len(failed), _pack(ok), _pack(failed), mask, job_id, chunk_no),
    ).rowcount
    if done != 1:  # counting a chunk's tasks twice would lie
        raise RuntimeError(f"chunk {chunk_no} of job {job_id} is not open")
    if recorded:
        c.execute("DELETE FROM task_lines WHERE job_id=? AND chunk_no=?", (job_id, chunk_no))


def _pack(lines: list[str]) -> bytes | None:
    return zlib.compress("".join(lines).encode(), RESULTS_COMPRESSION_LEVEL) if lines else None


def _unpack(blob: bytes | None) -> bytes:
    return b"" if blob is None else zlib.decompress(blob)


def _succeeded(line: str) -> bool:
    """The status of a line recorded before statuses were stored beside lines."""
    return parse_rows(line)[0].status == SUCCEEDED


class _Transaction:
    """`with` block holding the connection lock inside BEGIN IMMEDIATE … COMMIT."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        self.conn, self.lock = conn, lock

    def __enter__(self) -> sqlite3.Connection:
        self.lock.acquire()
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.lock.release()
            raise
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.lock.release()


def _statements(script: str) -> list[str]:
    """Split a SQL script into statements (executescript would commit our transaction)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


def _assignments(fields: dict[str, Any]) -> tuple[str, list[Any]]:
    cols, args = [], []
    for name, value in fields.items():
        cols.append(f"{name}=?")
        args.append(_to_column(name, value))
    return ", ".join(cols), args


def _to_column(name: str, value: Any) -> Any:
    if name == "failure_reasons":
        return json.dumps([[f.code, f.reason] for f in value])
    if name == "tags":
        return json.dumps([list(t) for t in value])
    if name in _JSON_COLUMNS:
        return json.dumps(value)
    if isinstance(value, JobStatus):
        return value.value
    return value


def _job_to_row(job: Job) -> tuple[Any, ...]:
    p = job.progress
    return (
        job.job_id,
        job.account_id,
        job.client_request_token,
        job.request_hash,
        json.dumps(job.request),
        json.dumps(job.runtime),
        job.status.value,
        job.priority,
        p.total,
        p.succeeded,
        p.failed,
        p.elapsed_active_s,
        job.active_since,
        job.creation_time,
        job.termination_date,
        job.suspended_date,
        job.suspended_cause,
        job.status_update_reason,
        _to_column("failure_reasons", job.failure_reasons),
        _to_column("tags", job.tags),
        job.report_manifest,
        json.dumps(job.extra),
    )


def _job_from_row(row: sqlite3.Row | tuple[Any, ...]) -> Job:
    (
        job_id,
        account_id,
        token,
        req_hash,
        request,
        runtime,
        status,
        priority,
        total,
        ok,
        failed,
        elapsed,
        active_since,
        created,
        terminated,
        suspended,
        cause,
        reason,
        failures,
        tags,
        report,
        extra,
    ) = row
    live = time.time() - active_since if active_since is not None else 0.0
    return Job(
        job_id=job_id,
        account_id=account_id,
        client_request_token=token,
        request_hash=req_hash,
        request=json.loads(request),
        runtime=json.loads(runtime),
        status=JobStatus(status),
        priority=priority,
        progress=Progress(total=total, succeeded=ok, failed=failed, elapsed_active_s=elapsed + live),
        active_since=active_since,
        creation_time=created,
        termination_date=terminated,
        suspended_date=suspended,
        suspended_cause=cause,
        status_update_reason=reason,
        failure_reasons=tuple(FailureReason(c, r) for c, r in json.loads(failures)),
        tags=tuple((k, v) for k, v in json.loads(tags)),
        report_manifest=report,
        extra=json.loads(extra),
    )
