"""Choosing a job's object store and opening an adapter for it.

The configuration values themselves (LocalConfig, S3Config) are pure and live in
domain/stores.py; they are re-exported here for the code that chooses and opens stores.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeGuard
from urllib.parse import urlparse

from s3batch.domain.stores import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_READ_TIMEOUT_S,
    LocalConfig,
    S3Config,
    StorageConfig,
    from_dict,
    to_dict,
)
from s3batch.errors import ConfigError
from s3batch.storage.capabilities import StorageAdapter

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_READ_TIMEOUT_S",
    "LocalConfig",
    "S3Config",
    "StorageConfig",
    "can_presign",
    "endpoint_for_handlers",
    "from_dict",
    "open_store",
    "parse_storage_url",
    "resolve_storage",
    "signs_with_profile",
    "to_dict",
]


def parse_storage_url(url: str, endpoint_url: str | None = None) -> StorageConfig:
    """`file:///path` or a plain path → a folder; `s3://` → S3 via the AWS environment;
    `http(s)://host:port` → S3 at that endpoint."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalConfig(root=str(Path(parsed.path).resolve()))
    if parsed.scheme == "":
        return LocalConfig(root=str(Path(url).expanduser().resolve()))
    if parsed.scheme == "s3":
        return S3Config(endpoint_url=endpoint_url or _env_endpoint(), region=_env_region())
    if parsed.scheme in ("http", "https"):
        return S3Config(endpoint_url=url, region=_env_region())
    raise ConfigError(f"storage URL {url!r}: expected file:///path, s3:// or http(s)://host:port")


def _env_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _env_region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None


def resolve_storage(storage_url: str | None, endpoint_url: str | None, default_root: Path) -> StorageConfig:
    """Pick the store the way the README documents it.

    1. An explicit storage URL (`--storage` / `S3BATCH_STORAGE`) wins.
    2. Otherwise an endpoint (`--endpoint-url`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`) or
       AWS credentials/profile in the environment mean S3.
    3. Otherwise the embedded default: a local folder under S3BATCH_HOME.
    """
    url = storage_url or os.environ.get("S3BATCH_STORAGE")
    if url:
        return parse_storage_url(url, endpoint_url)
    endpoint = endpoint_url or _env_endpoint()
    if endpoint or os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE"):
        return S3Config(endpoint_url=endpoint, region=_env_region(), profile=os.environ.get("AWS_PROFILE"))
    return LocalConfig(root=str(default_root))


def endpoint_for_handlers(config: StorageConfig) -> str | None:
    """The endpoint URL a function handler's own boto3 client must use to reach this store
    (AWS_ENDPOINT_URL), or None when the AWS environment's default applies: an S3 store at
    its default endpoint, or a folder, which handlers reach through s3batch instead."""
    return config.endpoint_url if isinstance(config, S3Config) else None


def can_presign(config: StorageConfig) -> TypeGuard[S3Config]:
    """Whether the store has URLs to presign (pipeline upload URLs). A folder has none."""
    return isinstance(config, S3Config)


def signs_with_profile(config: StorageConfig) -> TypeGuard[S3Config]:
    """Whether requests to the store are signed with AWS credentials from a profile, so a role's
    profile, endpoint and region decide how its tasks reach it. A folder has no credentials."""
    return isinstance(config, S3Config)


def open_store(config: StorageConfig) -> StorageAdapter:
    """An adapter for `config`. Imports lazily so a folder-only run never loads botocore."""
    if isinstance(config, LocalConfig):
        from s3batch.storage.local import LocalStore

        return LocalStore(Path(config.root))
    from s3batch.storage.s3 import S3Store

    return S3Store(config)
