"""Failed tasks grouped by cause: what `s3batch report` opens with."""

from __future__ import annotations

from s3batch.domain.report import FailureCause, ReportRow, failure_causes


def row(key: str, status: str, http: str = "", code: str = "", message: str = "") -> ReportRow:
    return ReportRow("b", key, "", status, http, code, message)


def test_failures_are_grouped_by_code_and_status_most_frequent_first() -> None:
    rows = [
        row("ok", "succeeded", "200"),
        row("a", "failed", "403", "AccessDenied", "denied a"),
        row("m1", "failed", "404", "NoSuchKey", "missing 1"),
        row("m2", "failed", "404", "NoSuchKey", "missing 2"),
        row("s", "failed", "503", "SlowDown", "slow"),
        row("a2", "failed", "403", "AccessDenied", "denied a2"),
        row("m3", "failed", "404", "NoSuchKey", "missing 3"),
    ]
    assert failure_causes(rows) == [
        FailureCause("NoSuchKey", "404", 3, "m1", "missing 1"),
        FailureCause("AccessDenied", "403", 2, "a", "denied a"),
        FailureCause("SlowDown", "503", 1, "s", "slow"),
    ]


def test_the_same_code_with_another_status_is_another_cause() -> None:
    rows = [row("x", "failed", "500", "InternalError"), row("y", "failed", "503", "InternalError")]
    assert [(c.error_code, c.http_status, c.count) for c in failure_causes(rows)] == [
        ("InternalError", "500", 1),
        ("InternalError", "503", 1),
    ]


def test_no_failures_no_causes() -> None:
    assert failure_causes([row("ok", "succeeded", "200")]) == []
