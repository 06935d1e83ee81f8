"""Output for the CLI: AWS-CLI-style JSON on stdout, progress and tables on stderr/stdout.

rich is imported only by what draws with it: commands that print JSON alone start without it.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.progress import TaskID
    from rich.table import Table

    from s3batch.domain.job import FailureReason, Job
    from s3batch.domain.report import FailureCause, ReportRow


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()  # the AWS CLI prints timestamps this way
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def print_json(data: Any) -> None:
    """Indented JSON, as `aws` prints with its default `--output json`."""
    sys.stdout.write(json.dumps(data, indent=4, default=_default, ensure_ascii=False) + "\n")
    sys.stdout.flush()


class JobProgress:
    """A live bar on stderr: done/total, rate, ETA, failures."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.bar = Progress(
            TextColumn("[bold]{task.fields[status]:<10}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>9} obj/s"),
            TextColumn("[red]{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task: TaskID | None = None
        self.started = time.monotonic()

    def __enter__(self) -> JobProgress:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(None, None, None)

    def update(self, job: Job) -> None:
        p = job.progress
        elapsed = max(time.monotonic() - self.started, 1e-6)
        status, rate, failed = job.status.value, f"{p.done / elapsed:,.0f}", f"{p.failed:,}"
        if self.task is None:
            self.task = self.bar.add_task("job", total=p.total, status=status, rate=rate, failed=failed)
        self.bar.update(self.task, completed=p.done, total=p.total, status=status, rate=rate, failed=failed)


def report_table(rows: Iterable[ReportRow], title: str) -> Table:
    """Failures first, then successes, each in manifest order."""
    from rich.table import Table

    ordered = sorted(rows, key=lambda r: r.status != "failed")
    table = Table(title=title, show_lines=False)
    for column in ("Bucket", "Key", "VersionId", "Status", "HTTP", "ErrorCode", "ResultMessage"):
        table.add_column(column, overflow="fold")
    for r in ordered:
        style = "red" if r.status == "failed" else None
        table.add_row(
            r.bucket,
            r.key,
            r.version_id,
            r.status,
            r.http_status,
            r.error_code,
            r.message,
            style=style,
        )
    return table


def causes_table(causes: Iterable[FailureCause], title: str) -> Table:
    """Failed tasks by cause (error code and HTTP status), most frequent first."""
    from rich.table import Table

    table = Table(title=f"{title}: failures by cause", show_lines=False)
    for column, style in (("Tasks", None), ("ErrorCode", "red"), ("HTTP", None)):
        table.add_column(column, style=style, no_wrap=True, justify="right" if column == "Tasks" else "left")
    table.add_column("Example key", overflow="fold")
    table.add_column("Example message", overflow="fold")
    for c in causes:
        table.add_row(f"{c.count:,}", c.error_code, c.http_status, c.example_key, c.example_message)
    return table


def failure_table(reasons: Iterable[FailureReason], title: str) -> Table:
    """A job's FailureReasons (code and reason), as describe-job lists them."""
    from rich.table import Table

    table = Table(title=f"{title}: failure reasons", show_lines=False)
    table.add_column("FailureCode", style="red", no_wrap=True)
    table.add_column("FailureReason", overflow="fold")
    for reason in reasons:
        table.add_row(reason.code, reason.reason)
    return table
