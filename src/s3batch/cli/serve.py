"""`s3batch serve`: the S3 Control-compatible HTTP API (and the job worker) in one process."""

from __future__ import annotations

from pathlib import Path

import click

from s3batch.cli.context import CliContext
from s3batch.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


#: Seconds `serve` waits for open connections (event streams) when stopping.
GRACEFUL_SHUTDOWN_S = 5


@click.command()
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--pipeline",
    "pipeline_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Host this pipeline file too (repeatable; adds to [[pipelines]] in server.toml).",
)
@click.pass_obj
def serve(ctx: CliContext, host: str, port: int, pipeline_files: tuple[Path, ...]) -> None:
    """Serve the S3 Control job API (SigV4; keys from $S3BATCH_HOME/server.toml or
    S3BATCH_ACCESS_KEYS), run its jobs, and host pipelines."""
    import uvicorn

    from s3batch.api.app import create_app
    from s3batch.api.auth import load_keys
    from s3batch.api.pipelines import load_hosted
    from s3batch.api.pipelines import pipeline_files as configured_pipelines
    from s3batch.service.roles import load_roles

    try:
        keys = load_keys(ctx.settings.home)
        roles = load_roles(ctx.settings.home)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    if not len(keys):
        # Refuse to start rather than run a server nobody can call (or, worse, an open one).
        raise click.ClickException(
            f"no access keys: add [[keys]] to {ctx.settings.home / 'server.toml'} or set S3BATCH_ACCESS_KEYS"
        )
    try:
        hosted = load_hosted([*configured_pipelines(ctx.settings.home), *pipeline_files])
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    app = create_app(ctx.settings, keys=keys, storage=ctx.storage, hosted=hosted, roles=roles)
    # h11: the pure-Python protocol, whose handling of absolute-form targets the app relies on.
    uvicorn.run(
        app,
        host=host,
        port=port,
        http="h11",
        log_level="info",
        # Dashboard tabs hold event streams open for minutes; don't let them delay shutdown.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
