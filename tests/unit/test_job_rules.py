"""Job statuses, user-requested changes and the failure threshold (docs/aws-contracts.md: #job-statuses,
#behaviour-rules)."""

from __future__ import annotations

import pytest

from s3batch.domain.job import (
    TERMINAL,
    TRANSITIONS,
    JobStatus,
    Progress,
    can_transition,
    user_status_change,
)


def test_terminal_states_have_no_way_out() -> None:
    for status in TERMINAL:
        assert TRANSITIONS[status] == frozenset()
    assert set(TRANSITIONS) == set(JobStatus)


def test_suspended_never_comes_back() -> None:
    assert not any(JobStatus.SUSPENDED in TRANSITIONS[s] for s in JobStatus if s is not JobStatus.PREPARING)
    assert can_transition(JobStatus.SUSPENDED, JobStatus.READY)


@pytest.mark.parametrize(
    ("current", "requested", "expected"),
    [
        (JobStatus.SUSPENDED, "Ready", JobStatus.READY),
        (JobStatus.READY, "Ready", None),
        (JobStatus.ACTIVE, "Ready", None),
        (JobStatus.NEW, "Cancelled", JobStatus.CANCELLED),
        (JobStatus.SUSPENDED, "Cancelled", JobStatus.CANCELLED),
        (JobStatus.ACTIVE, "Cancelled", JobStatus.CANCELLING),
        (JobStatus.PAUSED, "Cancelled", JobStatus.CANCELLING),
        (JobStatus.COMPLETE, "Cancelled", None),
        (JobStatus.FAILED, "Cancelled", None),
        (JobStatus.CANCELLING, "Cancelled", None),
        (JobStatus.ACTIVE, "Active", None),
    ],
)
def test_update_job_status_rules(current: JobStatus, requested: str, expected: JobStatus | None) -> None:
    assert user_status_change(current, requested) is expected


def test_failure_threshold_needs_1000_tasks_and_more_than_half_failed() -> None:
    assert not Progress(succeeded=0, failed=999).over_failure_threshold()
    assert Progress(succeeded=499, failed=501).over_failure_threshold()
    assert not Progress(succeeded=500, failed=500).over_failure_threshold()
