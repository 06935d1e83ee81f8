"""`s3batch pipeline`: new object → operation or function → archive or error bucket."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click

from s3batch.cli.context import CliContext, run
from s3batch.domain.report import render_row
from s3batch.errors import S3BatchError
from s3batch.pipelines.config import load_config
from s3batch.pipelines.runner import Pipeline
from s3batch.pipelines.sources import poll, replay, run_info, scan, sweep_uploads, webhook_app
from s3batch.pipelines.state import PipelineState
from s3batch.pipelines.uploads import DEFAULT_PRESIGN_EXPIRES_S, presign_put

T = TypeVar("T")
#: Only the loopback interface unless the operator asks for more.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787

_FILE = click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))


def _with_pipeline(ctx: click.Context, file: Path, fn: Callable[[Pipeline], Awaitable[T]]) -> T:
    cli_ctx: CliContext = ctx.obj
    cfg = load_config(file)

    async def main() -> T:
        pipeline = Pipeline(cfg, cli_ctx.storage)
        try:
            return await fn(pipeline)
        finally:
            await pipeline.close()

    return run(main())


@click.group()
def pipeline() -> None:
    """Event pipelines declared in a TOML/YAML file."""


@pipeline.command("run")
@_FILE
@click.option("--poll-interval", type=float, default=5.0, show_default=True, help="Seconds between scans.")
@click.option("--max-seconds", type=float, help="Stop polling after this long.")
@click.option("--once", is_flag=True, help="One scan, process it, exit.")
@click.option("--backlog", is_flag=True, help="Process what is in the staging bucket now, then exit.")
@click.pass_context
def run_cmd(
    ctx: click.Context, file: Path, poll_interval: float, max_seconds: float | None, once: bool, backlog: bool
) -> None:
    """Poll the staging bucket (for stores without notifications)."""

    async def go(p: Pipeline) -> None:
        if backlog:
            await sweep_uploads(p)
            await scan(p)
            await p.drain()
        else:
            await poll(p, poll_interval, max_seconds, once)
        click.echo(json.dumps(run_info(p)))

    _with_pipeline(ctx, file, go)


@pipeline.command("serve")
@_FILE
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", type=int, default=DEFAULT_PORT, show_default=True)
@click.option("--backlog", is_flag=True, help="Process what is in the staging bucket first.")
@click.pass_context
def serve_cmd(ctx: click.Context, file: Path, host: str, port: int, backlog: bool) -> None:
    """Receive S3 event notifications / EventBridge events over HTTP POST."""
    import uvicorn

    async def go(p: Pipeline) -> None:
        if backlog:
            await scan(p)
        server = uvicorn.Server(uvicorn.Config(webhook_app(p), host=host, port=port, log_level="warning"))
        await server.serve()

    _with_pipeline(ctx, file, go)


@pipeline.command("replay")
@_FILE
@click.option("--from", "source", type=click.Choice(["error", "archive"]), default="error", show_default=True)
@click.option("--prefix", default="", help="Only keys under this prefix.")
@click.pass_context
def replay_cmd(ctx: click.Context, file: Path, source: str, prefix: str) -> None:
    """Move objects from the error (or archive) bucket back through the pipeline.

    Prints how many objects were moved back and the files this replay ran, by final state."""
    cfg = load_config(file)
    bucket = cfg.error if source == "error" else cfg.archive
    if not bucket:
        raise click.ClickException(f"the pipeline has no {source} bucket")

    async def go(p: Pipeline) -> None:
        count = await replay(p, bucket, prefix)
        click.echo(json.dumps({"replayed": count, "run": p.run_id, "files": p.state.run_counts(p.run_id)}))

    _with_pipeline(ctx, file, go)


@pipeline.command("presign")
@_FILE
@click.argument("key")
@click.option("--content-type", required=True, help="The Content-Type the upload must send (signed).")
@click.option(
    "--expires",
    "expires_s",
    type=int,
    default=DEFAULT_PRESIGN_EXPIRES_S,
    show_default=True,
    help="Seconds the URL stays valid (at most the pipeline's presign_max_expires_s).",
)
@click.pass_obj
def presign_cmd(cli_ctx: CliContext, file: Path, key: str, content_type: str, expires_s: int) -> None:
    """Print a presigned PUT URL (SigV4) for KEY in the staging bucket, as JSON."""
    try:
        presigned = presign_put(load_config(file), cli_ctx.storage, key, content_type, expires_s)
    except S3BatchError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(presigned.as_json()))


@pipeline.command("report")
@_FILE
@click.option("--run", "run_id", help="Only this run's rows.")
def report_cmd(file: Path, run_id: str | None) -> None:
    """Print completion-report rows (AWS CSV format) kept in the state DB."""
    state = PipelineState(load_config(file).state_path)
    try:
        for _, row in state.report_rows(run_id):
            click.echo(render_row(row), nl=False)
    finally:
        state.close()


@pipeline.command("notifications")
@_FILE
@click.option("--run", "run_id", help="Only this run's notifications.")
@click.option("--failed", is_flag=True, help="Only deliveries that failed.")
def notifications_cmd(file: Path, run_id: str | None, failed: bool) -> None:
    """Print notification deliveries (webhook, email) recorded in the state DB, one JSON per line."""
    state = PipelineState(load_config(file).state_path)
    try:
        for run, d in state.notifications(run_id):
            if failed and d.delivered:
                continue
            row = {"run": run, "target": d.target, "event": d.event, "subject": d.subject,
                   "delivered": d.delivered, "attempts": d.attempts, "error": d.error}  # fmt: skip
            click.echo(json.dumps(row))
    finally:
        state.close()


@pipeline.command("tables")
@_FILE
@click.option("--reconcile", is_flag=True, help="List the source bucket now and fix the inventory.")
@click.option(
    "--manifest",
    "manifest_sql",
    metavar="SQL",
    help="Print a CSV manifest: SELECT bucket, key[, version_id] ...",
)
@click.pass_obj
def tables_cmd(cli_ctx: CliContext, file: Path, reconcile: bool, manifest_sql: str | None) -> None:
    """Print where the pipeline's live tables are, their row counts and the last reconcile (JSON).

    With --reconcile, first list the source bucket and fix the inventory (the backfill when it
    was never filled), printing what was fixed. With --manifest, print the answer of a query
    over the tables as a CSV manifest (keys URL-encoded) instead."""
    from s3batch.pipelines.tables.live import LiveTables
    from s3batch.pipelines.tables.query import manifest_lines
    from s3batch.storage.config import open_store

    cfg = load_config(file)
    if cfg.tables is None:
        raise click.ClickException(f"{file}: the pipeline has no [tables] section")
    tables_cfg = cfg.tables
    if manifest_sql is not None:
        try:
            for line in manifest_lines(tables_cfg, manifest_sql):
                click.echo(line, nl=False)
        except S3BatchError as exc:
            raise click.ClickException(str(exc)) from exc
        return

    async def main() -> dict[str, object]:
        store = open_store(cli_ctx.storage)
        tables = LiveTables(tables_cfg, cfg.source, store)
        try:
            fixed = (await tables.reconcile_now()).as_dict() if reconcile else None
            return {**tables.summary(), **({"reconcile": fixed} if fixed else {})}
        finally:
            await tables.close()
            await store.close()

    click.echo(json.dumps(run(main())))


__all__ = ["pipeline"]
