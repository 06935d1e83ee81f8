"""Durable pipeline state in SQLite: the seen-set, per-key ordering, cursor and per-file outcome.

A file moves received → processing → processed → archived | deleted | left | errored, or ends
as superseded (a newer version arrived) or gone (the object vanished). Each step commits
before the next side effect, so a crash anywhere resumes from the last committed state:
`processing` rows run again (at-least-once), `processed` rows only finish their disposition.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from s3batch.domain.report import ReportRow
from s3batch.pipelines.events import ObjectEvent, padded_sequencer
from s3batch.pipelines.notify.base import Delivery, NotifyEvent

#: Seconds a writer waits for the database lock (another pipeline command on the same file).
BUSY_TIMEOUT_S = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket TEXT NOT NULL, key TEXT NOT NULL, ident TEXT NOT NULL, seq TEXT NOT NULL,
    etag TEXT NOT NULL, version_id TEXT, size INTEGER, sequencer TEXT, event_name TEXT NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, succeeded INTEGER,
    http_status TEXT NOT NULL DEFAULT '', error_code TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '', updated REAL NOT NULL, not_before REAL NOT NULL DEFAULT 0,
    UNIQUE (bucket, key, ident, seq)
);
CREATE INDEX IF NOT EXISTS files_state ON files (state, id);
CREATE TABLE IF NOT EXISTS latest (bucket TEXT, key TEXT, seq TEXT NOT NULL, PRIMARY KEY (bucket, key));
CREATE TABLE IF NOT EXISTS cursor (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS report (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, file_id INTEGER NOT NULL,
    bucket TEXT, key TEXT, version_id TEXT, status TEXT, http_status TEXT, error_code TEXT,
    message TEXT
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, pid INTEGER NOT NULL, started REAL NOT NULL,
    reported INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, target TEXT NOT NULL,
    event TEXT NOT NULL, subject TEXT NOT NULL, delivered INTEGER NOT NULL, attempts INTEGER NOT NULL,
    error TEXT NOT NULL, time REAL NOT NULL
);
"""


class FileState(StrEnum):
    RECEIVED = "received"
    PROCESSING = "processing"
    PROCESSED = "processed"
    ARCHIVED = "archived"
    DELETED = "deleted"
    LEFT = "left"
    ERRORED = "errored"
    SUPERSEDED = "superseded"
    GONE = "gone"


class Admission(StrEnum):
    NEW = "new"
    DUPLICATE = "duplicate"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class FileRow:
    id: int
    bucket: str
    key: str
    etag: str
    version_id: str | None
    size: int | None
    sequencer: str | None
    event_name: str
    state: str
    attempts: int
    succeeded: bool | None
    http_status: str
    error_code: str
    message: str


_ROW_COLUMNS = (
    "id, bucket, key, etag, version_id, size, sequencer, event_name, state, attempts, succeeded, "
    "http_status, error_code, message"
)


def _row(values: tuple[object, ...]) -> FileRow:
    fields = list(values)
    fields[10] = None if fields[10] is None else bool(fields[10])
    return FileRow(*fields)  # type: ignore[arg-type]


class PipelineState:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )  # used by one event loop at a time, which may run in a server thread
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(files)")}
        if "not_before" not in columns:  # a state file from before per-file retry times
            self._db.execute("ALTER TABLE files ADD COLUMN not_before REAL NOT NULL DEFAULT 0")

    def close(self) -> None:
        self._db.close()

    def admit_many(self, events: Iterable[ObjectEvent], *, force: bool = False) -> list[Admission]:
        """Record events in one transaction. `force` (replay) re-queues a file already seen."""
        with self._tx():
            return [self._admit(e, force) for e in events]

    def _admit(self, event: ObjectEvent, force: bool) -> Admission:
        seq = padded_sequencer(event.sequencer) if event.sequencer else ""
        latest = self._db.execute(
            "SELECT seq FROM latest WHERE bucket=? AND key=?", (event.bucket, event.key)
        ).fetchone()
        if not force and seq and latest and seq < latest[0]:
            return Admission.STALE  # an older PUT arriving late must not redo newer work
        cur = self._db.execute(
            "INSERT INTO files (bucket, key, ident, seq, etag, version_id, size, sequencer, event_name,"
            " state, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
            (event.bucket, event.key, event.ident, seq, event.etag, event.version_id, event.size,
             event.sequencer, event.event_name, FileState.RECEIVED, time.time()),
        )  # fmt: skip
        if cur.rowcount == 0:
            if not force:
                return Admission.DUPLICATE
            self._requeue(event, seq)
        if seq:
            self._db.execute(
                "INSERT INTO latest VALUES (?,?,?) ON CONFLICT DO UPDATE SET seq=excluded.seq"
                " WHERE excluded.seq > latest.seq",
                (event.bucket, event.key, seq),
            )
            self._db.execute(
                "UPDATE files SET state=? WHERE bucket=? AND key=? AND seq<? AND seq<>'' AND state=?",
                (FileState.SUPERSEDED, event.bucket, event.key, seq, FileState.RECEIVED),
            )
        return Admission.NEW

    def _requeue(self, event: ObjectEvent, seq: str) -> None:
        self._db.execute(
            "UPDATE files SET state=?, attempts=0, succeeded=NULL, http_status='', error_code='',"
            " message='', updated=?, not_before=0 WHERE bucket=? AND key=? AND ident=? AND seq=?",
            (FileState.RECEIVED, time.time(), event.bucket, event.key, event.ident, seq),
        )

    def claim(self, limit: int) -> list[FileRow]:
        """Up to `limit` files to run (interrupted ones first, then those due), now marked
        processing."""
        with self._tx():
            rows = [
                _row(r)
                for r in self._db.execute(
                    f"SELECT {_ROW_COLUMNS} FROM files WHERE state IN (?, ?) AND not_before <= ?"
                    " ORDER BY state = ? DESC, id LIMIT ?",
                    (FileState.PROCESSING, FileState.RECEIVED, time.time(), FileState.PROCESSING, limit),
                )
            ]
            self._db.executemany(
                "UPDATE files SET state=?, attempts=attempts+1, updated=? WHERE id=?",
                [(FileState.PROCESSING, time.time(), r.id) for r in rows],
            )
        return rows

    def processed(self, file_id: int, row: ReportRow, run_id: str) -> None:
        with self._tx():
            self._db.execute(
                "UPDATE files SET state=?, succeeded=?, http_status=?, error_code=?, message=?, updated=?"
                " WHERE id=?",
                (FileState.PROCESSED, row.status == "succeeded", row.http_status, row.error_code,
                 row.message, time.time(), file_id),
            )  # fmt: skip
            self._db.execute(
                "INSERT INTO report (run_id, file_id, bucket, key, version_id, status, http_status,"
                " error_code, message) VALUES (?,?,?,?,?,?,?,?,?)",
                (run_id, file_id, *row.as_list()),
            )

    def set_state(self, file_id: int, state: FileState) -> None:
        self._db.execute("UPDATE files SET state=?, updated=? WHERE id=?", (state, time.time(), file_id))

    def retry_later(self, file_id: int, delay_s: float) -> None:
        """Back to the queue, not to be claimed for `delay_s` seconds (other files go on)."""
        now = time.time()
        self._db.execute(
            "UPDATE files SET state=?, updated=?, not_before=? WHERE id=?",
            (FileState.RECEIVED, now, now + delay_s, file_id),
        )

    def retry_wait_s(self) -> float | None:
        """Seconds until the next file waiting to be retried is due; None if none waits."""
        (due,) = self._db.execute(
            "SELECT min(not_before) FROM files WHERE state=? AND not_before > 0", (FileState.RECEIVED,)
        ).fetchone()
        return None if due is None else max(0.0, float(due) - time.time())

    def to_dispose(self) -> list[FileRow]:
        return [
            _row(r)
            for r in self._db.execute(
                f"SELECT {_ROW_COLUMNS} FROM files WHERE state=? ORDER BY id", (FileState.PROCESSED,)
            )
        ]

    def pending(self) -> int:
        (count,) = self._db.execute(
            "SELECT count(*) FROM files WHERE state IN (?,?,?)",
            (FileState.RECEIVED, FileState.PROCESSING, FileState.PROCESSED),
        ).fetchone()
        return int(count)

    def counts(self) -> dict[str, int]:
        """Files by state, counted in SQL (a server lists this often; files() reads every row)."""
        rows = self._db.execute("SELECT state, count(*) FROM files GROUP BY state ORDER BY state")
        return {str(state): int(count) for state, count in rows}

    def run_counts(self, run_id: str) -> dict[str, int]:
        """Files that run `run_id` processed, by their state now (counts() is every run's)."""
        rows = self._db.execute(
            "SELECT state, count(*) FROM files WHERE id IN (SELECT file_id FROM report WHERE run_id=?)"
            " GROUP BY state ORDER BY state",
            (run_id,),
        )
        return {str(state): int(count) for state, count in rows}

    def timeline(self, bucket_s: float, since: float) -> list[tuple[float, str, int]]:
        """(bucket start, state, files) for files whose state last changed at or after `since`
        (epoch seconds), by `bucket_s`-second buckets: how many files reached each state when."""
        rows = self._db.execute(
            "SELECT CAST(updated / ? AS INTEGER) AS b, state, count(*) FROM files WHERE updated >= ?"
            " GROUP BY b, state ORDER BY b, state",
            (bucket_s, since),
        )
        return [(int(b) * bucket_s, str(state), int(count)) for b, state, count in rows]

    def recent_errors(self, limit: int) -> list[tuple[FileRow, float]]:
        """The `limit` files that errored last, newest first, with when they did."""
        rows = self._db.execute(
            f"SELECT {_ROW_COLUMNS}, updated FROM files WHERE state=? ORDER BY updated DESC, id DESC LIMIT ?",
            (FileState.ERRORED, limit),
        )
        return [(_row(r[:-1]), float(r[-1])) for r in rows]

    def files(self) -> list[FileRow]:
        return [_row(r) for r in self._db.execute(f"SELECT {_ROW_COLUMNS} FROM files ORDER BY id")]

    def report_rows(self, run_id: str | None = None) -> list[tuple[str, ReportRow]]:
        query = "SELECT run_id, bucket, key, version_id, status, http_status, error_code, message FROM report"
        args: tuple[str, ...] = ()
        if run_id is not None:
            query, args = query + " WHERE run_id=?", (run_id,)
        return [(r[0], ReportRow(*r[1:])) for r in self._db.execute(query + " ORDER BY id", args)]

    def start_run(self, run_id: str, pid: int) -> None:
        self._db.execute("INSERT INTO runs (run_id, pid, started) VALUES (?,?,?)", (run_id, pid, time.time()))

    def unreported_runs(self) -> list[tuple[str, int]]:
        """(run id, pid) of runs whose completion report is not written yet, oldest first."""
        rows = self._db.execute("SELECT run_id, pid FROM runs WHERE reported=0 ORDER BY started")
        return [(str(run_id), int(pid)) for run_id, pid in rows]

    def mark_reported(self, run_id: str) -> None:
        self._db.execute("UPDATE runs SET reported=1 WHERE run_id=?", (run_id,))

    def record_notification(self, run_id: str, delivery: Delivery) -> None:
        d = delivery
        self._db.execute(
            "INSERT INTO notifications (run_id, target, event, subject, delivered, attempts, error, time)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (run_id, d.target, d.event, d.subject, int(d.delivered), d.attempts, d.error, time.time()),
        )

    def notifications(self, run_id: str | None = None) -> list[tuple[str, Delivery]]:
        """(run id, outcome) of every notification delivery, oldest first."""
        query = "SELECT run_id, target, event, subject, delivered, attempts, error FROM notifications"
        args: tuple[str, ...] = ()
        if run_id is not None:
            query, args = query + " WHERE run_id=?", (run_id,)
        rows = self._db.execute(query + " ORDER BY id", args)
        return [(r[0], Delivery(r[1], NotifyEvent(r[2]), r[3], bool(r[4]), r[5], r[6])) for r in rows]

    def notification_counts(self, run_id: str) -> dict[str, int]:
        (delivered, failed) = self._db.execute(
            "SELECT coalesce(sum(delivered), 0), coalesce(sum(1 - delivered), 0) FROM notifications"
            " WHERE run_id=?",
            (run_id,),
        ).fetchone()
        return {"delivered": int(delivered), "failed": int(failed)}

    def get_cursor(self, name: str) -> str:
        row = self._db.execute("SELECT value FROM cursor WHERE name=?", (name,)).fetchone()
        return str(row[0]) if row else ""

    def set_cursor(self, name: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO cursor VALUES (?,?) ON CONFLICT DO UPDATE SET value=excluded.value", (name, value)
        )

    def _tx(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on error (sqlite3's own context manager only commits)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
