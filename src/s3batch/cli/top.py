"""`s3batch top`: every job of this S3BATCH_HOME, live, refreshed in place like `htop`.

One row per job, newest first: its Description (or ID), status, a progress bar, the current
rate (over the last `RATE_WINDOW_S` of samples; a finished job shows its average), the ETA,
failures, and how long ago it was created. `q` or Ctrl-C quits and leaves the terminal as it
was; `--once` prints the table once (for scripts, or when stdout is not a terminal).

The job store is opened once and read every `REFRESH_S`; nothing is written, so `top` is safe
beside running workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import click

from s3batch.cli.context import CliContext

if TYPE_CHECKING:
    from rich.table import Table

    from s3batch.domain.job import Job
    from s3batch.service.jobs import JobService

#: Seconds between two reads of the job store.
REFRESH_S = 1.0
#: The current rate is measured over samples no older than this many seconds.
RATE_WINDOW_S = 10.0
#: Jobs shown (the newest); the store may hold many more.
MAX_JOBS_SHOWN = 50
#: Characters of the progress bar.
BAR_CHARS = 20
#: Characters of a Description kept in the Job column.
MAX_TITLE_CHARS = 40
#: Columns of the table printed by --once when stdout is not a terminal (a pipe has no width).
PIPE_WIDTH_CHARS = 160
#: Keys that quit.
QUIT_KEYS = frozenset("qQ")
pass_ctx = click.make_pass_decorator(CliContext)
#: C0 and C1 control characters (escape sequences start with one).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ACTIVE = frozenset({"New", "Preparing", "Suspended", "Ready", "Active", "Pausing", "Paused", "Cancelling"})


@dataclass(slots=True)
class RateTracker:
    """Tasks/s per job from successive samples of its done count."""

    window_s: float = RATE_WINDOW_S
    _samples: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)

    def observe(self, job_id: str, done: int, now: float) -> float | None:
        """Record a sample; the rate over the window, None until two samples span time."""
        samples = self._samples.setdefault(job_id, deque())
        samples.append((now, done))
        while len(samples) > 2 and now - samples[0][0] > self.window_s:
            samples.popleft()
        (t0, d0), (t1, d1) = samples[0], samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else None


def human_rate(per_s: float | None) -> str:
    """A rate rounded for people: 3 significant digits, k/M suffixes."""
    if per_s is None:
        return "-"
    if per_s >= 1e6:
        return f"{per_s / 1e6:.1f}M/s"
    if per_s >= 1e4:
        return f"{per_s / 1e3:.0f}k/s"
    if per_s >= 1e3:
        return f"{per_s / 1e3:.1f}k/s"
    return f"{per_s:.0f}/s" if per_s >= 10 else f"{per_s:.1f}/s"


def human_duration(seconds: float | None) -> str:
    """ "45s", "12m 03s", "3h 20m", "2d 4h"; "-" when unknown."""
    if seconds is None or seconds < 0:
        return "-"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def progress_bar(done: int, total: int | None) -> str:
    """A fixed-width text bar with the percentage ("████░░░ 57%")."""
    if not total:
        return "░" * BAR_CHARS + "   -"
    frac = min(done / total, 1.0)
    filled = int(frac * BAR_CHARS)
    return "█" * filled + "░" * (BAR_CHARS - filled) + f" {frac * 100:3.0f}%"


def job_title(job: Job) -> str:
    """The job's Description, cut to fit, else its ID. Control characters are dropped: a
    Description is anyone's text (over `s3batch serve`, any key holder's), and must not move the
    cursor, retitle the window or plant links in the terminal of whoever runs `top`."""
    description = _CONTROL.sub("", str(job.request.get("Description") or "")).strip()
    if not description:
        return job.job_id
    return description if len(description) <= MAX_TITLE_CHARS else description[: MAX_TITLE_CHARS - 1] + "…"


def job_rate(job: Job, tracker: RateTracker, now: float) -> float | None:
    """The recent rate of a running job; the average over its active time once it is over."""
    p = job.progress
    recent = tracker.observe(job.job_id, p.done, now)
    if job.status.value in _ACTIVE and recent is not None:
        return recent
    return p.done / p.elapsed_active_s if p.elapsed_active_s > 0 else recent


def eta_s(job: Job, rate: float | None) -> float | None:
    """Seconds left at `rate`, for a running job whose total is known."""
    total = job.progress.total
    if job.status.value not in _ACTIVE or not total or not rate:
        return None
    return max(total - job.progress.done, 0) / rate


def jobs_table(jobs: Sequence[Job], tracker: RateTracker, now: float, *, live: bool = True) -> Table:
    """The screen: one row per job."""
    from rich.table import Table
    from rich.text import Text

    title = f"s3batch top — {len(jobs)} job(s)" + (" — q to quit" if live else "")
    table = Table(title=title, expand=True)
    for name, justify in (("Job", "left"), ("ID", "left"), ("Status", "left"), ("Progress", "left")):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for name in ("Done", "Rate", "ETA", "Failed", "Created"):
        table.add_column(name, justify="right", no_wrap=True)
    for job in jobs:
        p = job.progress
        rate = job_rate(job, tracker, now)
        failed = f"[red]{p.failed:,}[/]" if p.failed else "0"
        table.add_row(
            Text(job_title(job)),  # plain text: "[/]" in a Description is not rich markup
            job.job_id[:8],
            job.status.value,
            progress_bar(p.done, p.total),
            f"{p.done:,}/{p.total:,}" if p.total is not None else f"{p.done:,}",
            human_rate(rate),
            human_duration(eta_s(job, rate)),
            failed,
            human_duration(time.time() - job.creation_time) + " ago",
        )
    return table


async def _jobs(service: JobService) -> list[Job]:
    jobs, _ = await service.list_jobs(max_results=MAX_JOBS_SHOWN)
    return jobs


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[None]:
    """Keys arrive one at a time without echo; Ctrl-C still interrupts; restored on exit."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def _wait_for_quit(fd: int | None, timeout_s: float) -> bool:
    """True if a quit key arrived within `timeout_s` (just sleeps when there is no terminal)."""
    if fd is None:
        await asyncio.sleep(timeout_s)
        return False
    loop = asyncio.get_running_loop()
    pressed: asyncio.Future[bool] = loop.create_future()

    def readable() -> None:
        key = os.read(fd, 1).decode(errors="ignore")
        if key in QUIT_KEYS and not pressed.done():
            pressed.set_result(True)

    loop.add_reader(fd, readable)
    try:
        return await asyncio.wait_for(pressed, timeout_s)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


async def _live(service: JobService, fd: int | None) -> None:
    from rich.live import Live

    tracker = RateTracker()
    with Live(jobs_table([], tracker, time.time()), auto_refresh=False, screen=False) as live:
        while True:
            jobs = await _jobs(service)
            live.update(jobs_table(jobs, tracker, time.time()), refresh=True)
            if await _wait_for_quit(fd, REFRESH_S):
                return


@click.command("top")
@click.option("--once", is_flag=True, help="Print the table once and exit (no live view).")
@pass_ctx
def top(ctx: CliContext, once: bool) -> None:
    """Show every job of this S3BATCH_HOME live (q or Ctrl-C quits)."""
    from rich.console import Console

    from s3batch.cli.context import run
    from s3batch.service.jobs import using_service

    if once or not sys.stdout.isatty():
        jobs = ctx.with_service(_jobs)
        console = Console()
        if not console.is_terminal:
            console = Console(width=PIPE_WIDTH_CHARS)
        console.print(jobs_table(jobs, RateTracker(), time.time(), live=False))
        return
    fd = sys.stdin.fileno() if sys.stdin.isatty() else None
    try:
        with _cbreak(fd) if fd is not None else contextlib.nullcontext():
            run(using_service(ctx.settings, lambda service: _live(service, fd)))
    except KeyboardInterrupt:
        pass  # Ctrl-C is the other way to quit: no traceback
