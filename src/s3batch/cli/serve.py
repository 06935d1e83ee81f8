"""`s3batch serve`: the S3 Control-compatible HTTP API (and the job worker) in one process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from s3batch.cli.context import CliContext
from s3batch.domain.hosts import is_loopback_host
from s3batch.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


#: Seconds `serve` waits for open connections (event streams) when stopping.
GRACEFUL_SHUTDOWN_S = 5

_PEM_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


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
@click.option(
    "--forwarded-allow-ips",
    "forwarded_allow_ips",
    metavar="IPS",
    help="Comma-separated addresses or networks of reverse proxies whose X-Forwarded-For and "
    "X-Forwarded-Proto are believed (replaces [server] trusted_proxies of server.toml; "
    "default: none, the client is the socket's peer).",
)
@click.option("--tls-certfile", type=_PEM_FILE, help="Serve HTTPS with this PEM certificate (chain).")
@click.option("--tls-keyfile", type=_PEM_FILE, help="The PEM private key of --tls-certfile.")
@click.pass_obj
def serve(
    ctx: CliContext,
    host: str,
    port: int,
    pipeline_files: tuple[Path, ...],
    forwarded_allow_ips: str | None,
    tls_certfile: Path | None,
    tls_keyfile: Path | None,
) -> None:
    """Serve the S3 Control job API (SigV4; keys from $S3BATCH_HOME/server.toml or
    S3BATCH_ACCESS_KEYS), run its jobs, and host pipelines."""
    import uvicorn

    from s3batch.api.app import create_app
    from s3batch.api.auth import load_keys
    from s3batch.api.pipelines import load_hosted
    from s3batch.api.pipelines import pipeline_files as configured_pipelines
    from s3batch.api.server_config import checked_proxies, load_server_config
    from s3batch.service.inventory_report import load_schedules
    from s3batch.service.roles import load_roles

    if tls_keyfile is not None and tls_certfile is None:
        raise click.UsageError("--tls-keyfile needs --tls-certfile")
    try:
        keys = load_keys(ctx.settings.home)
        roles = load_roles(ctx.settings.home)
        config = load_server_config(ctx.settings.home)
        inventories = load_schedules(ctx.settings.home)
        proxies = config.trusted_proxies
        if forwarded_allow_ips is not None:
            listed = tuple(ip.strip() for ip in forwarded_allow_ips.split(",") if ip.strip())
            proxies = checked_proxies(listed, "--forwarded-allow-ips")
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
    if tls_certfile is None and not is_loopback_host(host):
        click.echo(
            f"warning: serving plain HTTP on {host}: bearer secrets and session cookies cross the "
            "network in clear; use --tls-certfile/--tls-keyfile or a TLS-terminating proxy",
            err=True,
        )
    app = create_app(
        ctx.settings,
        keys=keys,
        storage=ctx.storage,
        hosted=hosted,
        roles=roles,
        functions=config.functions,
        inventories=inventories,
    )
    # h11: the pure-Python protocol, whose handling of absolute-form targets the app relies on.
    uvicorn.run(
        app,
        host=host,
        port=port,
        http="h11",
        log_level="info",
        # Dashboard tabs hold event streams open for minutes; don't let them delay shutdown.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        **proxy_options(proxies),
        **tls_options(tls_certfile, tls_keyfile),
    )


def proxy_options(proxies: tuple[str, ...]) -> dict[str, Any]:
    """uvicorn's settings for X-Forwarded-*: believed only from `proxies`.

    uvicorn's own default trusts 127.0.0.1 (or $FORWARDED_ALLOW_IPS), which lets every local
    client name any address it likes and so dodge the per-address login throttle."""
    if not proxies:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": list(proxies)}


def tls_options(certfile: Path | None, keyfile: Path | None) -> dict[str, Any]:
    if certfile is None:
        return {}
    return {"ssl_certfile": str(certfile), "ssl_keyfile": None if keyfile is None else str(keyfile)}
