"""The `s3batch` command: `aws s3control`-shaped job commands plus report, worker and demo.

Start-up is kept short: `s3batch --help` lists the commands from `COMMANDS` (module, attribute
and short help) without importing their modules; a command's module (and the job service,
object stores, rich...) is imported only when that command runs or shows its own help.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import click

from s3batch import __version__, heap
from s3batch.cli.context import CliContext
from s3batch.errors import ConfigError


@dataclass(frozen=True, slots=True)
class LazyCommand:
    """Where a command lives, and the help line `s3batch --help` shows for it."""

    module: str
    attr: str
    #: The first paragraph of the command's docstring (a test keeps the two equal).
    help: str


_JOBS = "s3batch.cli.jobs"
#: Every top-level command, by name. `--help` renders these help texts as click would.
COMMANDS: dict[str, LazyCommand] = {
    "create-job": LazyCommand(
        _JOBS, "create_job", "Create a job (aws s3control create-job). It runs in a background worker."
    ),
    "describe-job": LazyCommand(_JOBS, "describe_job", "Show a job (aws s3control describe-job)."),
    "list-jobs": LazyCommand(_JOBS, "list_jobs", "List jobs, newest first (aws s3control list-jobs)."),
    "update-job-status": LazyCommand(
        _JOBS,
        "update_job_status",
        "Confirm (Ready) or cancel (Cancelled) a job (aws s3control update-job-status).",
    ),
    "update-job-priority": LazyCommand(
        _JOBS, "update_job_priority", "Change a job's priority (aws s3control update-job-priority)."
    ),
    "get-job-tagging": LazyCommand(
        _JOBS, "get_job_tagging", "Show a job's tags (aws s3control get-job-tagging)."
    ),
    "put-job-tagging": LazyCommand(
        _JOBS, "put_job_tagging", "Replace a job's tags (aws s3control put-job-tagging)."
    ),
    "delete-job-tagging": LazyCommand(
        _JOBS, "delete_job_tagging", "Remove every tag of a job (aws s3control delete-job-tagging)."
    ),
    "wait": LazyCommand(
        _JOBS, "wait_job", "Follow an existing job with a progress bar until it ends; exit by its outcome."
    ),
    "report": LazyCommand(_JOBS, "report", "Print a job's completion report as a table, failures first."),
    "top": LazyCommand(
        "s3batch.cli.top", "top", "Show every job of this S3BATCH_HOME live (q or Ctrl-C quits)."
    ),
    "adopt-job": LazyCommand(
        _JOBS,
        "adopt_job",
        "Run an unfinished job with this environment's credentials from now on.",
    ),
    "rerun-failed": LazyCommand(
        _JOBS, "rerun_failed", "Create a job over exactly the failed tasks of a finished job."
    ),
    "worker": LazyCommand(
        _JOBS, "worker", "Run jobs in the foreground (normally started for you in the background)."
    ),
    "demo": LazyCommand(
        "s3batch.cli.demo",
        "demo",
        "Run the sentiment walkthrough on a local folder store and print the report.",
    ),
    "serve": LazyCommand(
        "s3batch.cli.serve",
        "serve",
        "Serve the S3 Control job API (SigV4; keys from $S3BATCH_HOME/server.toml or S3BATCH_ACCESS_KEYS), "
        "run its jobs, and host pipelines.",
    ),
    "pipeline": LazyCommand(
        "s3batch.cli.pipeline", "pipeline", "Event pipelines declared in a TOML/YAML file."
    ),
    "query": LazyCommand(
        "s3batch.cli.query",
        "query",
        "Run SQL (DuckDB) over inventory reports, completion reports and jobs.",
    ),
    "inventory": LazyCommand(
        "s3batch.cli.inventory",
        "inventory",
        "Write S3 Inventory reports (manifest.json + CSV, ORC or Parquet files) as AWS does.",
    ),
    "diff": LazyCommand(
        "s3batch.cli.diff",
        "diff",
        "Compare two inventories or listings; write added, removed and changed objects as job manifests.",
    ),
    "transfer": LazyCommand(
        "s3batch.cli.transfer",
        "transfer",
        "Copy a folder or bucket prefix to another store as one job, with verified checksums.",
    ),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (click's documented lazy-loading pattern)."""

    def __init__(self, *args: Any, lazy: dict[str, LazyCommand], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            self.add_command(self._load(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def _load(self, cmd_name: str) -> click.Command:
        entry = self.lazy[cmd_name]
        command = getattr(importlib.import_module(entry.module), entry.attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{entry.module}.{entry.attr} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Click's own listing; a command not imported yet stands in as a stub with its help."""
        commands = [self.commands.get(name) or click.Command(name, help=self.lazy[name].help)
                    for name in self.list_commands(ctx)]  # fmt: skip
        shown = [(c.name or "", c) for c in commands if not c.hidden]
        if not shown:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in shown)
        with formatter.section("Commands"):
            formatter.write_dl([(name, c.get_short_help_str(limit)) for name, c in shown])


@click.group(
    cls=LazyGroup,
    lazy=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option("--endpoint-url", envvar=None, help="S3 endpoint (else AWS_ENDPOINT_URL[_S3]).")
@click.option(
    "--storage",
    "storage_url",
    help="Object store: file:///path, s3:// or http(s)://host:port (else S3BATCH_STORAGE).",
)
@click.option("--home", type=click.Path(file_okay=False), help="State directory (else S3BATCH_HOME).")
@click.option("-v", "--verbose", count=True, help="More logging on stderr.")
@click.version_option(__version__, prog_name="s3batch")
@click.pass_context
def cli(
    ctx: click.Context,
    endpoint_url: str | None,
    storage_url: str | None,
    home: str | None,
    verbose: int,
) -> None:
    """Run S3 Batch Operations jobs on any S3-compatible store or a local folder."""
    import logging

    from s3batch.settings import Settings

    logging.basicConfig(
        level=logging.WARNING - 10 * min(verbose, 2), format="%(levelname)s %(name)s: %(message)s"
    )
    if home:
        import os

        os.environ["S3BATCH_HOME"] = home
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    ctx.obj = CliContext(settings, storage_url, endpoint_url)


def main() -> None:
    heap.enable()
    cli(prog_name="s3batch")
