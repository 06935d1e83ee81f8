"""The `s3batch` command: `aws s3control`-shaped job commands plus report, worker and demo."""

from __future__ import annotations

import logging

import click

from s3batch import __version__
from s3batch.cli.context import CliContext
from s3batch.cli.demo import demo
from s3batch.cli.jobs import (
    create_job,
    delete_job_tagging,
    describe_job,
    get_job_tagging,
    list_jobs,
    put_job_tagging,
    report,
    rerun_failed,
    update_job_priority,
    update_job_status,
    worker,
)
from s3batch.cli.pipeline import pipeline
from s3batch.cli.serve import serve
from s3batch.errors import ConfigError
from s3batch.settings import Settings


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


for command in (
    create_job,
    describe_job,
    list_jobs,
    update_job_status,
    update_job_priority,
    get_job_tagging,
    put_job_tagging,
    delete_job_tagging,
    report,
    rerun_failed,
    worker,
    demo,
    serve,
    pipeline,
):
    cli.add_command(command)


def main() -> None:
    cli(prog_name="s3batch")
