"""Which object store a job talks to, as a small picklable, JSON-able value.

A job records its StorageConfig so a resumed or remote worker reaches the same store.
Secrets are never recorded: S3 credentials come from the standard AWS chain (environment,
profile, config files) of the process that runs the tasks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeGuard
from urllib.parse import urlparse

from s3batch.errors import ConfigError
from s3batch.storage.capabilities import StorageAdapter

#: Connections the S3 adapter keeps open to one endpoint.
DEFAULT_MAX_CONNECTIONS = 128
#: Seconds to wait for a TCP connection / for a response byte.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalConfig:
    """A folder: each sub-folder is a bucket, each file below it an object."""

    root: str
    kind: str = "local"


@dataclass(frozen=True, slots=True, kw_only=True)
class S3Config:
    """An S3-compatible endpoint. None fields fall back to the AWS environment/profile."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    #: "auto" (botocore's choice), "path" or "virtual".
    addressing_style: str = "auto"
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    #: Send the hot, simple calls (plain copy, delete, tagging, listing) through the lean
    #: request path (storage/s3/lean.py) instead of aiobotocore. S3BATCH_LEAN_PATH=0 also turns
    #: it off.
    lean_path: bool = True
    #: Verify the endpoint's TLS certificate, against AWS_CA_BUNDLE / the profile's ca_bundle
    #: when set (as botocore does). False is the AWS CLI's --no-verify-ssl; S3BATCH_VERIFY_SSL=0
    #: also turns verification off.
    verify_ssl: bool = True
    kind: str = "s3"


StorageConfig = LocalConfig | S3Config


def to_dict(config: StorageConfig) -> dict[str, Any]:
    return asdict(config)


def from_dict(data: Mapping[str, Any]) -> StorageConfig:
    kind = data.get("kind")
    fields = {k: v for k, v in data.items() if k != "kind"}
    if kind == "local":
        return LocalConfig(**fields)
    if kind == "s3":
        return S3Config(**fields)
    raise ConfigError(f"unknown storage kind {kind!r}")


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
