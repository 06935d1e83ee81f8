"""`s3batch inventory`: S3 Inventory reports written the way AWS writes them (docs/inventory.md)."""

from __future__ import annotations

import json

import click

from s3batch.cli.context import CliContext, run
from s3batch.domain.inventory_writer import OPTIONAL_FIELDS, inventory_config
from s3batch.errors import ConfigError
from s3batch.service.gctune import worker_gc
from s3batch.service.inventory_report import DATA_FILE_MAX_ROWS, generate_inventory
from s3batch.storage.config import open_store


@click.group()
def inventory() -> None:
    """Write S3 Inventory reports (manifest.json + CSV, ORC or Parquet files) as AWS does."""


@inventory.command("generate")
@click.option("--bucket", required=True, help="Source bucket to list.")
@click.option("--prefix", default="", help="Only objects whose key starts with this.")
@click.option(
    "--destination",
    required=True,
    metavar="ARN",
    help="arn:aws:s3:::bucket[/prefix] the report is written to.",
)
@click.option("--id", "config_id", required=True, help="Configuration id: a folder of the report's keys.")
@click.option(
    "--format",
    "file_format",
    metavar="CSV|Parquet|ORC",
    default="CSV",
    show_default=True,
)
@click.option(
    "--versions",
    metavar="Current|All",
    default="Current",
    show_default=True,
    help="All: every version and delete marker (adds VersionId, IsLatest, IsDeleteMarker).",
)
@click.option(
    "--fields",
    default="",
    metavar="NAMES",
    help=f"Comma-separated optional fields, written in AWS's order: {', '.join(OPTIONAL_FIELDS)}.",
)
@click.option(
    "--max-rows-per-file",
    type=click.IntRange(min=1),
    default=DATA_FILE_MAX_ROWS,
    show_default=True,
    help="Rows per data file before the next one starts.",
)
@click.pass_obj
def generate(
    ctx: CliContext,
    bucket: str,
    prefix: str,
    destination: str,
    config_id: str,
    file_format: str,
    versions: str,
    fields: str,
    max_rows_per_file: int,
) -> None:
    """List a bucket and write its inventory report; print the job Manifest that reads it.

    The printed JSON is what `create-job --manifest` takes (S3InventoryReport_CSV_20161130, the
    manifest.json's ARN and ETag); a summary goes to stderr."""
    try:
        config = inventory_config(
            bucket=bucket,
            destination=destination,
            config_id=config_id,
            prefix=prefix,
            file_format=file_format,
            versions=versions,
            fields=fields.split(","),
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from exc

    async def go() -> None:
        store = open_store(ctx.storage)
        try:
            report = await generate_inventory(store, config, max_rows_per_file=max_rows_per_file)
        finally:
            await store.close()
        click.echo(json.dumps(report.job_manifest()))
        click.echo(
            f"{report.rows} rows in {len(report.files)} file(s): s3://{report.bucket}/{report.manifest_key}",
            err=True,
        )
        if report.head_failures:
            click.echo(
                f"warning: HEAD failed for {report.head_failures} object(s), whose HEAD fields are "
                f"empty; first: {report.head_error}",
                err=True,
            )

    with worker_gc():  # millions of short-lived listing objects: see service/gctune.py
        run(go())
