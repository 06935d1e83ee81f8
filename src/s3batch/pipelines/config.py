"""A pipeline declared in a TOML (or, with PyYAML installed, YAML) file.

```toml
name = "thumbnails"
source = "staging"
state = "pipeline.sqlite3"          # relative to this file; default <name>.pipeline.sqlite3
function = "handlers:lambda_handler" # or: operation = {S3PutObjectTagging = {...}}
records_per_call = 1
on_success = "archive"               # archive | delete | leave
archive = "archive"
error = "errors"
[[filter.rules]]                     # S3 notification rules; any one may match
prefix = "in/"
suffix = ".csv"
[filter.pattern]                     # an EventBridge content pattern
detail = {object = {size = [{numeric = [">", 0]}]}}
[report]
bucket = "reports"
prefix = "pipelines"
[[notify]]                           # webhook or email when files / batches finish (see notify.config)
webhook = "http://127.0.0.1:9000/hook"
on = ["failure", "batch"]
```

Keys for hosting and uploads (all optional): `poll_interval_s` (`s3batch serve` polls the
staging bucket this often), `webhook_token` (the shared secret a webhook sender must present),
`abort_incomplete_uploads_after_s` (abort multipart uploads older than this in the staging
bucket), `presign_max_expires_s` (upper bound for presigned PUT URLs). `[tables]`: live object
tables of the source bucket (pipelines/tables/config.py, docs/pipeline-tables.md).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from s3batch.errors import ConfigError
from s3batch.pipelines.filters import EventFilter, KeyRule, PatternError, validate_pattern
from s3batch.pipelines.notify import NotifyTarget, parse_targets
from s3batch.pipelines.tables.config import TablesConfig, parse_tables

DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_WORKERS = 2
MAX_RECORDS_PER_CALL = 1000
#: Presigned PUT URLs live at most this long unless the pipeline says otherwise (seconds)...
DEFAULT_PRESIGN_MAX_EXPIRES_S = 3600
#: ... and never longer than SigV4 allows (7 days, in seconds).
SIGV4_MAX_EXPIRES_S = 7 * 24 * 3600
#: A webhook token shorter than this is too easy to guess (characters).
MIN_WEBHOOK_TOKEN_CHARS = 16
YAML_SUFFIXES = (".yaml", ".yml")


class OnSuccess(StrEnum):
    ARCHIVE = "archive"
    DELETE = "delete"
    LEAVE = "leave"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportTarget:
    bucket: str
    prefix: str = "pipelines"


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineConfig:
    name: str
    source: str
    state_path: Path
    #: Directory added to the function's sys.path (the file's own directory).
    base_dir: Path
    filter: EventFilter
    function: str | None = None
    operation: Mapping[str, Any] | None = None
    records_per_call: int = 1
    timeout_s: float = DEFAULT_TIMEOUT_S
    workers: int = DEFAULT_WORKERS
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    on_success: OnSuccess = OnSuccess.ARCHIVE
    archive: str | None = None
    error: str | None = None
    report: ReportTarget | None = None
    notify: tuple[NotifyTarget, ...] = ()
    #: Seconds between scans when `s3batch serve` hosts the pipeline; None: webhook only.
    poll_interval_s: float | None = None
    #: Shared secret for the webhook (`?token=` or `X-S3Batch-Token`); None: no check.
    webhook_token: str | None = field(default=None, repr=False)
    #: Abort multipart uploads in the staging bucket older than this (seconds); None: never.
    abort_incomplete_uploads_after_s: float | None = None
    presign_max_expires_s: int = DEFAULT_PRESIGN_MAX_EXPIRES_S
    #: Live object tables of the source bucket (docs/pipeline-tables.md); None: none.
    tables: TablesConfig | None = None


def load_config(path: Path) -> PipelineConfig:
    try:
        data = _read(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read pipeline file {path}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a table at the top level")
    return parse_config(data, path.resolve().parent, default_name=path.stem)


def _read(path: Path) -> Any:
    if path.suffix in YAML_SUFFIXES:
        try:
            import yaml  # type: ignore[import-untyped, unused-ignore]
        except ImportError as exc:
            raise ConfigError("YAML pipeline files need PyYAML; use TOML instead") from exc
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    return tomllib.loads(path.read_text(encoding="utf-8"))


def parse_config(data: Mapping[str, Any], base_dir: Path, default_name: str = "pipeline") -> PipelineConfig:
    name = str(data.get("name", default_name))
    _require(data, "source")
    cfg = PipelineConfig(
        name=name,
        source=str(data["source"]),
        state_path=base_dir / str(data.get("state", f"{name}.pipeline.sqlite3")),
        base_dir=base_dir,
        filter=_filter(data.get("filter", {})),
        function=data.get("function"),
        operation=data.get("operation"),
        records_per_call=int(data.get("records_per_call", 1)),
        timeout_s=float(data.get("timeout_s", DEFAULT_TIMEOUT_S)),
        workers=int(data.get("workers", DEFAULT_WORKERS)),
        max_attempts=int(data.get("max_attempts", DEFAULT_MAX_ATTEMPTS)),
        on_success=_on_success(data.get("on_success", "archive")),
        archive=data.get("archive"),
        error=data.get("error"),
        report=_report(data.get("report")),
        notify=parse_targets(data.get("notify"), base_dir),
        poll_interval_s=_optional_float(data, "poll_interval_s"),
        webhook_token=None if data.get("webhook_token") is None else str(data["webhook_token"]),
        abort_incomplete_uploads_after_s=_optional_float(data, "abort_incomplete_uploads_after_s"),
        presign_max_expires_s=int(data.get("presign_max_expires_s", DEFAULT_PRESIGN_MAX_EXPIRES_S)),
        tables=parse_tables(data.get("tables"), base_dir, name, source=str(data["source"])),
    )
    _check(cfg)
    _check_hosting(cfg)
    return cfg


def _require(data: Mapping[str, Any], key: str) -> None:
    if not data.get(key):
        raise ConfigError(f"pipeline file: {key!r} is required")


def _optional_float(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    return None if value is None else float(value)


def _on_success(value: Any) -> OnSuccess:
    try:
        return OnSuccess(str(value))
    except ValueError as exc:
        raise ConfigError(f"on_success must be archive, delete or leave, got {value!r}") from exc


def _filter(data: Any) -> EventFilter:
    if not isinstance(data, Mapping):
        raise ConfigError("filter must be a table")
    rules = tuple(KeyRule(str(r.get("prefix", "")), str(r.get("suffix", ""))) for r in data.get("rules", []))
    pattern = data.get("pattern")
    if pattern is not None:
        try:
            validate_pattern(pattern)
        except (PatternError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"filter.pattern: {exc}") from exc
    return EventFilter(rules=rules, pattern=pattern)


def _report(data: Any) -> ReportTarget | None:
    if data is None:
        return None
    if not isinstance(data, Mapping) or not data.get("bucket"):
        raise ConfigError("report needs a bucket")
    return ReportTarget(bucket=str(data["bucket"]), prefix=str(data.get("prefix", "pipelines")))


def _check(cfg: PipelineConfig) -> None:
    if (cfg.function is None) == (cfg.operation is None):
        raise ConfigError("pipeline file: set exactly one of 'function' or 'operation'")
    if cfg.function is not None and ":" not in cfg.function:
        raise ConfigError("function must be 'module:callable'")
    if cfg.operation is not None and (not isinstance(cfg.operation, Mapping) or len(cfg.operation) != 1):
        raise ConfigError("operation must be one {OperationName = {...}} table")
    if not 1 <= cfg.records_per_call <= MAX_RECORDS_PER_CALL:
        raise ConfigError(f"records_per_call must be 1..{MAX_RECORDS_PER_CALL}")
    if cfg.on_success is OnSuccess.ARCHIVE and not cfg.archive:
        raise ConfigError("on_success = 'archive' needs an 'archive' bucket")
    if cfg.max_attempts < 1:
        raise ConfigError("max_attempts must be at least 1")


def _check_hosting(cfg: PipelineConfig) -> None:
    if cfg.poll_interval_s is not None and not cfg.poll_interval_s > 0:
        raise ConfigError("poll_interval_s must be more than 0")
    if cfg.webhook_token is not None and len(cfg.webhook_token) < MIN_WEBHOOK_TOKEN_CHARS:
        raise ConfigError(f"webhook_token must have at least {MIN_WEBHOOK_TOKEN_CHARS} characters")
    age = cfg.abort_incomplete_uploads_after_s
    if age is not None and not age >= 0:
        raise ConfigError("abort_incomplete_uploads_after_s must be 0 or more")
    if not 1 <= cfg.presign_max_expires_s <= SIGV4_MAX_EXPIRES_S:
        raise ConfigError(f"presign_max_expires_s must be 1..{SIGV4_MAX_EXPIRES_S} (SigV4's limit)")
