"""How tasks execute: one contract (base.Engine), one module per engine."""

from __future__ import annotations

from s3batch.engines.base import Engine
from s3batch.errors import ConfigError
from s3batch.settings import Settings

ENGINES = ("local", "process", "ray")


def make_engine(settings: Settings) -> Engine:
    """The engine named by S3BATCH_ENGINE: "local" (asyncio, default), "process" or "ray"."""
    if settings.engine == "local":
        from s3batch.engines.local import LocalEngine

        return LocalEngine(settings.concurrency, settings.retry)
    if settings.engine == "process":
        from s3batch.engines.process import ProcessEngine

        return ProcessEngine(settings.processes, settings.concurrency, settings.retry)
    if settings.engine == "ray":  # needs the ray extra: a clear ConfigError without it
        from s3batch.engines.ray import RayEngine

        return RayEngine(settings.ray_address, settings.ray_actors, settings.concurrency, settings.retry)
    raise ConfigError(f"S3BATCH_ENGINE={settings.engine!r}: expected one of {', '.join(ENGINES)}")
