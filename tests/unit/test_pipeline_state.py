from __future__ import annotations

import sqlite3
from pathlib import Path

from s3batch.domain.report import ReportRow
from s3batch.pipelines.events import ObjectEvent
from s3batch.pipelines.state import Admission, FileState, PipelineState


def ev(key: str, etag: str, seq: str | None) -> ObjectEvent:
    return ObjectEvent(bucket="b", key=key, etag=etag, sequencer=seq)


def test_duplicates_and_out_of_order(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "s.db")
    assert state.admit_many([ev("k", "e1", "0A")]) == [Admission.NEW]
    assert state.admit_many([ev("k", "e1", "0A")]) == [Admission.DUPLICATE]
    # Newer version: accepted, the older still-unprocessed one is superseded.
    assert state.admit_many([ev("k", "e2", "0100")]) == [Admission.NEW]
    # Stale: sequencer FF < 100 once padded, although "FF" > "0100" as text.
    assert state.admit_many([ev("k", "e3", "FF")]) == [Admission.STALE]
    states = {r.etag: r.state for r in state.files()}
    assert states == {"e1": FileState.SUPERSEDED, "e2": FileState.RECEIVED}
    # Other keys are ordered independently.
    assert state.admit_many([ev("other", "e1", "01")]) == [Admission.NEW]


def test_listing_seen_set_and_replay_requeue(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "s.db")
    assert state.admit_many([ev("k", "e", None)]) == [Admission.NEW]
    (row,) = state.claim(10)
    assert row.state == FileState.RECEIVED  # as it was when claimed
    state.processed(row.id, ReportRow("b", "k", "", "failed", "200", "X", "boom"), "run1")
    state.set_state(row.id, FileState.ERRORED)
    assert state.admit_many([ev("k", "e", None)]) == [Admission.DUPLICATE]
    assert state.admit_many([ev("k", "e", None)], force=True) == [Admission.NEW]
    (again,) = state.files()
    assert (again.state, again.attempts) == (FileState.RECEIVED, 0)
    assert [r.error_code for _, r in state.report_rows("run1")] == ["X"]


def test_interrupted_processing_is_claimed_again_after_reopen(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "s.db")
    state.admit_many([ev("a", "1", None), ev("b", "2", None)])
    assert len(state.claim(1)) == 1
    state.close()
    reopened = PipelineState(tmp_path / "s.db")
    first = reopened.claim(1)
    assert [r.key for r in first] == ["a"] and first[0].attempts == 1  # interrupted one first
    reopened.set_cursor("poll", "x/y")
    assert reopened.get_cursor("poll") == "x/y"


def test_a_file_waiting_for_its_retry_does_not_hold_up_the_others(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "s.db")
    state.admit_many([ev("a", "1", None), ev("b", "2", None)])
    (a,) = state.claim(1)
    assert state.retry_wait_s() is None
    state.retry_later(a.id, 60.0)
    (b,) = state.claim(10)
    assert b.key == "b"  # a is not due yet; b goes on
    state.set_state(b.id, FileState.ARCHIVED)
    wait = state.retry_wait_s()
    assert wait is not None and 59.0 < wait <= 60.0
    state.retry_later(a.id, 0.0)
    (again,) = state.claim(10)
    assert (again.key, again.attempts) == ("a", 1)  # attempts before this claim, as always


def test_runs_stay_unreported_until_marked(tmp_path: Path) -> None:
    state = PipelineState(tmp_path / "s.db")
    state.start_run("r1", 111)
    state.start_run("r2", 222)
    assert state.unreported_runs() == [("r1", 111), ("r2", 222)]
    state.mark_reported("r1")
    state.close()
    assert PipelineState(tmp_path / "s.db").unreported_runs() == [("r2", 222)]


def test_a_state_file_without_retry_times_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE files (id INTEGER PRIMARY KEY AUTOINCREMENT, bucket TEXT NOT NULL, key TEXT NOT NULL,"
        " ident TEXT NOT NULL, seq TEXT NOT NULL, etag TEXT NOT NULL, version_id TEXT, size INTEGER,"
        " sequencer TEXT, event_name TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
        " succeeded INTEGER, http_status TEXT NOT NULL DEFAULT '', error_code TEXT NOT NULL DEFAULT '',"
        " message TEXT NOT NULL DEFAULT '', updated REAL NOT NULL, UNIQUE (bucket, key, ident, seq))"
    )
    db.execute(
        "INSERT INTO files (bucket, key, ident, seq, etag, event_name, state, updated)"
        " VALUES ('b', 'k', 'e', '', 'e', 'ObjectCreated:Put', 'received', 0)"
    )
    db.commit()
    db.close()
    state = PipelineState(path)
    assert [r.key for r in state.claim(10)] == ["k"]  # the old row is due at once
