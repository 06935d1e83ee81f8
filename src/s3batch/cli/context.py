"""What every CLI command needs: settings, the store choice, the job service.

Every CLI command imports this module, `s3batch --help` included: the job service, the object
stores and the event loop are imported only when a command uses them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from s3batch.errors import ApiError, S3BatchError

if TYPE_CHECKING:
    from s3batch.service.jobs import JobService
    from s3batch.settings import Settings
    from s3batch.storage.config import StorageConfig

T = TypeVar("T")
#: Exit status of a command whose request the job service refused (unknown job, bad request...):
#: the AWS CLI's status for a service error.
EXIT_SERVICE_ERROR = 254


class ServiceError(click.ClickException):
    """The job service refused a job command's request; exits as `aws s3control` would."""

    exit_code = EXIT_SERVICE_ERROR


@dataclass(frozen=True, slots=True)
class CliContext:
    settings: Settings
    storage_url: str | None
    endpoint_url: str | None

    @property
    def storage(self) -> StorageConfig:
        from s3batch.storage.config import resolve_storage

        return resolve_storage(self.storage_url, self.endpoint_url, self.settings.buckets_root)

    def with_service(self, fn: Callable[[JobService], Awaitable[T]]) -> T:
        """Run `fn` with a JobService on the SQLite store, mapping errors to exit codes: a
        service error (an S3 Control error code) exits with EXIT_SERVICE_ERROR, as `aws` does."""
        from s3batch.service.jobs import using_service

        return run(using_service(self.settings, fn), service_error=ServiceError)


def run(
    coro: Coroutine[Any, Any, T], *, service_error: type[click.ClickException] = click.ClickException
) -> T:
    """Run `coro` on s3batch's event loop; its errors become messages (and exit statuses)."""
    from s3batch import eventloop

    try:
        return eventloop.run(coro)
    except ApiError as exc:
        raise service_error(f"An error occurred ({exc.code}): {exc.message}") from exc
    except S3BatchError as exc:
        raise click.ClickException(str(exc)) from exc


def load_json_arg(value: str | None, name: str) -> Any:
    """A JSON option value, `file://path` holding JSON, or AWS CLI shorthand
    (`Bucket=arn:aws:s3:::b,Enabled=true`; for lists, structures separated by spaces)."""
    if value is None:
        return None
    text = value
    if _is_shorthand(value):
        return parse_shorthand(value)
    if value.startswith("file://"):
        path = Path(value[len("file://") :]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint=name) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", param_hint=name
        ) from exc


def _is_shorthand(value: str) -> bool:
    stripped = value.strip()
    return (
        bool(stripped) and stripped[0] not in '{["' and not stripped.startswith("file://") and "=" in stripped
    )


def _scalar(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return text


def _struct(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, val = part.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"shorthand {text!r}: expected Key=Value pairs separated by commas")
        out[key.strip()] = _scalar(val.strip())
    return out


def parse_shorthand(value: str) -> Any:
    """The AWS CLI's shorthand for flat structures, and space-separated lists of them."""
    items = value.split()
    if len(items) == 1:
        return _struct(items[0])
    return [_struct(item) for item in items]
