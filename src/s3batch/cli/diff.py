"""`s3batch diff OLD NEW --output LOCATION` (docs/versions.md#diff)."""

from __future__ import annotations

import click

from s3batch.cli.context import CliContext, run
from s3batch.cli.render import print_json

pass_ctx = click.make_pass_decorator(CliContext)


@click.command("diff")
@click.argument("old")
@click.argument("new")
@click.option(
    "--output",
    required=True,
    metavar="LOCATION",
    help="Where added.csv, removed.csv, changed.csv and summary.json go: "
    "arn:aws:s3:::bucket/prefix or s3://bucket/prefix.",
)
@click.option("--prefix", default="", help="Compare only keys under this prefix.")
@pass_ctx
def diff(ctx: CliContext, /, old: str, new: str, output: str, prefix: str) -> None:
    """Compare two inventories or listings; write added, removed and changed objects as job manifests.

    OLD and NEW are each an S3 Inventory report, given by its manifest.json
    (s3://bucket/inventory/src/config/2024-05-01T00-00Z/manifest.json), or a live listing of
    a bucket's current objects under a prefix (s3://bucket/photos/). A location whose key ends
    in manifest.json is an inventory; any other is a listing. Objects count as changed when
    their ETag differs (a checksum when both sides have one), or their size.

    The summary (objects and bytes added, removed, changed and unchanged, and each manifest's
    JobManifest for create-job --manifest) is printed as JSON and saved as summary.json.
    """
    from s3batch.domain.diff import compared_prefix, parse_location, parse_source
    from s3batch.errors import BadRequest
    from s3batch.service.diff import DiffRequest
    from s3batch.service.diff import diff as run_diff
    from s3batch.storage.config import open_store

    try:
        sources = parse_source(old, "OLD"), parse_source(new, "NEW")
        bucket, out_prefix = parse_location(output, "--output")
        compared_prefix(*sources, prefix)  # fails early when the sides share no keys
    except BadRequest as exc:
        raise click.UsageError(exc.message) from exc
    request = DiffRequest(*sources, output_bucket=bucket, output_prefix=out_prefix, prefix=prefix)

    async def go() -> dict[str, object]:
        objects = open_store(ctx.storage)
        try:
            return await run_diff(objects, request)
        finally:
            await objects.close()

    summary = run(go())
    print_json(summary)
    _explain(summary)


def _explain(summary: dict[str, object]) -> None:
    """A few lines on stderr for people (stdout stays the JSON)."""
    for name in ("Added", "Removed", "Changed", "Unchanged"):
        counts = summary[name]
        assert isinstance(counts, dict)
        click.echo(f"{name:>9}: {counts['Objects']:>10,} objects {counts['Bytes']:>16,} bytes", err=True)
    if not summary.get("ComparedBy"):
        click.echo("warning: the two sides share no ETag or Size data: changes cannot be seen", err=True)
