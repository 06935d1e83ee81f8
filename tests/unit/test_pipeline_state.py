from __future__ import annotations

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
