"""What every CLI command needs: settings, the store choice, the job service."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from s3batch.errors import ApiError, S3BatchError
from s3batch.service.jobs import JobService
from s3batch.settings import Settings
from s3batch.storage.config import StorageConfig, resolve_storage
from s3batch.store.sqlite import SqliteJobStore

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CliContext:
    settings: Settings
    storage_url: str | None
    endpoint_url: str | None

    @property
    def storage(self) -> StorageConfig:
        return resolve_storage(self.storage_url, self.endpoint_url, self.settings.buckets_root)

    def with_service(self, fn: Callable[[JobService], Awaitable[T]]) -> T:
        """Run `fn` with a JobService on the SQLite store, mapping errors to exit codes."""

        async def go() -> T:
            store = SqliteJobStore(self.settings.db_path)
            try:
                return await fn(JobService(self.settings, store))
            finally:
                await store.close()

        return run(go())


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except ApiError as exc:
        raise click.ClickException(f"An error occurred ({exc.code}): {exc.message}") from exc
    except S3BatchError as exc:
        raise click.ClickException(str(exc)) from exc


def load_json_arg(value: str | None, name: str) -> Any:
    """A JSON option value, or `file://path` holding JSON, as the AWS CLI accepts."""
    if value is None:
        return None
    text = value
    if value.startswith("file://"):
        path = Path(value[len("file://") :]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {path}: {exc.strerror}", param_hint=name
            ) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", param_hint=name
        ) from exc
