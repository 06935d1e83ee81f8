"""What a notice says (pure): one file's outcome, or a batch's totals.

A file's result message is kept as written in the report; when it is a JSON object (the
S3batchCsvIngest per-file summary: rowsRead, rowsWritten, rowsRejected, rejected lines and
reasons; or a function's JSON answer) it is also given parsed, as `summary`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from s3batch.pipelines.notify.base import Notice, NotifyEvent

FILE_TYPE = "s3batch.pipeline.file"
BATCH_TYPE = "s3batch.pipeline.batch"
#: Failed files listed by name in a batch notice; the rest are counted.
MAX_LISTED_FAILURES = 100
#: Rejected CSV rows listed in an email body (the JSON part carries the summary's own list).
MAX_TEXT_REJECTIONS = 20
_ROW_COUNTS = ("rowsRead", "rowsWritten", "rowsRejected")


@dataclass(frozen=True, slots=True, kw_only=True)
class FileOutcome:
    """A finished file, as the pipeline state has it."""

    bucket: str
    key: str
    version_id: str | None
    etag: str
    size: int | None
    succeeded: bool
    disposition: str
    attempts: int
    http_status: str
    error_code: str
    message: str


def summary_of(message: str) -> dict[str, Any] | None:
    """The result message as a JSON object, or None when it is plain text."""
    if not message.startswith("{"):
        return None
    try:
        parsed = json.loads(message)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _rows_text(summary: dict[str, Any] | None) -> str:
    if summary is None or not all(isinstance(summary.get(k), int) for k in _ROW_COUNTS):
        return ""
    return f"{summary['rowsRead']} read, {summary['rowsWritten']} written, {summary['rowsRejected']} rejected"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def file_notice(pipeline: str, run_id: str, outcome: FileOutcome) -> Notice:
    summary = summary_of(outcome.message)
    payload: dict[str, Any] = {
        "type": FILE_TYPE, "event": "", "pipeline": pipeline, "run": run_id, "bucket": outcome.bucket,
        "key": outcome.key, "versionId": outcome.version_id, "etag": outcome.etag, "size": outcome.size,
        "status": "succeeded" if outcome.succeeded else "failed", "disposition": outcome.disposition,
        "attempts": outcome.attempts, "httpStatus": outcome.http_status, "errorCode": outcome.error_code,
        "message": outcome.message, "time": _now(),
    }  # fmt: skip
    event = NotifyEvent.SUCCESS if outcome.succeeded else NotifyEvent.FAILURE
    payload["event"] = event.value
    if summary is not None:
        payload["summary"] = summary
    rows = _rows_text(summary)
    subject = f"{pipeline}: {outcome.key} {payload['status']}"
    if outcome.error_code:
        subject += f" ({outcome.error_code})"
    if rows:
        subject += f": {rows}"
    lines = [
        f"Pipeline: {pipeline} (run {run_id})",
        f"File: s3://{outcome.bucket}/{outcome.key}",
        f"Status: {payload['status']}, {outcome.disposition}, after {outcome.attempts} attempt(s)",
    ]
    if outcome.error_code:
        lines.append(f"Error: {outcome.error_code}")
    if rows:
        lines.append(f"Rows: {rows}")
        lines += _rejected_lines(summary)
    elif outcome.message:
        lines.append(f"Result: {outcome.message}")
    return Notice(event, subject, payload, "\n".join(lines))


def _rejected_lines(summary: dict[str, Any] | None) -> list[str]:
    rejected = (summary or {}).get("rejected")
    if not isinstance(rejected, list) or not rejected:
        return []
    lines = ["Rejected rows:"]
    for item in rejected[:MAX_TEXT_REJECTIONS]:
        if isinstance(item, dict):
            lines.append(f"  line {item.get('line')}: {item.get('reason')}")
    return lines


def _failure(outcome: FileOutcome) -> dict[str, str]:
    return {"bucket": outcome.bucket, "key": outcome.key, "errorCode": outcome.error_code,
            "message": outcome.message}  # fmt: skip


@dataclass(slots=True)
class BatchTally:
    """Totals of the files finished since the batch began (bounded: failures beyond
    MAX_LISTED_FAILURES are only counted)."""

    started: str = field(default_factory=_now)
    files: int = 0
    succeeded: int = 0
    failed: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)

    def add(self, outcome: FileOutcome) -> None:
        self.files += 1
        if outcome.succeeded:
            self.succeeded += 1
        else:
            self.failed += 1
            if len(self.failures) < MAX_LISTED_FAILURES:
                self.failures.append(_failure(outcome))
        summary = summary_of(outcome.message)
        if _rows_text(summary):
            assert summary is not None
            for name in _ROW_COUNTS:
                self.rows[name] = self.rows.get(name, 0) + int(summary[name])


def batch_notice(pipeline: str, run_id: str, tally: BatchTally) -> Notice:
    payload: dict[str, Any] = {
        "type": BATCH_TYPE, "event": NotifyEvent.BATCH.value, "pipeline": pipeline, "run": run_id,
        "files": tally.files, "succeeded": tally.succeeded, "failed": tally.failed,
        "failures": tally.failures, "started": tally.started, "finished": _now(),
    }  # fmt: skip
    if tally.failed > len(tally.failures):
        payload["failuresNotListed"] = tally.failed - len(tally.failures)
    rows = _rows_text(tally.rows or None)
    if rows:
        payload["rows"] = {"read": tally.rows["rowsRead"], "written": tally.rows["rowsWritten"],
                           "rejected": tally.rows["rowsRejected"]}  # fmt: skip
    counts = f"{tally.files} file(s), {tally.succeeded} succeeded, {tally.failed} failed"
    subject = f"{pipeline}: batch of {counts}"
    if rows:
        subject += f"; rows {rows}"
    lines = [f"Pipeline: {pipeline} (run {run_id})", f"Files: {counts}"]
    if rows:
        lines.append(f"Rows: {rows}")
    if tally.failures:
        lines.append("Failed files:")
        lines += [f"  s3://{f['bucket']}/{f['key']}: {f['errorCode']}" for f in tally.failures]
    return Notice(NotifyEvent.BATCH, subject, payload, "\n".join(lines))
