"""Which object store a job talks to, as small picklable, JSON-able values (no I/O).

A job records its StorageConfig so a resumed or remote worker reaches the same store. Secrets
are never recorded: S3 credentials come from the standard AWS chain (environment, profile,
config files) of the process that runs the tasks. Choosing and opening a store from these is
storage/config.py's work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from s3batch.errors import ConfigError

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
