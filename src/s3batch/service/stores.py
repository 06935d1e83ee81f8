"""Named stores: resolving S3batchTransfer's TargetStore at CreateJob (docs/transfer.md).

Who may name what:
- A server's caller (`functions` is a FunctionScope): only a store the operator registered for
  its account in server.toml's `[[stores]]`; anything else, a URL included, is InvalidRequest.
  A request can therefore never make the server connect to an endpoint of the caller's choosing.
- The CLI and the Python API (one's own machine): a store of `$S3BATCH_HOME/stores.toml`, or
  `file:///folder` (a folder store) or `s3://` (S3 through this environment's AWS settings).

The resolved config goes into the job's runtime (domain/spec.JobRuntime.stores): no secret, the
worker signs with its own environment's credentials, as for the job's own store.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from s3batch.domain.named_stores import parse_stores_file
from s3batch.errors import BadRequest, ConfigError, InvalidRequest
from s3batch.functions.registry import FunctionScope
from s3batch.storage.config import LocalConfig, S3Config, StorageConfig, parse_storage_url

#: The CLI's store registry, in S3BATCH_HOME.
STORES_FILE = "stores.toml"
OPERATION = "S3batchTransfer"
FOLDER_URL_PREFIX = "file:///"
S3_ENVIRONMENT_URL = "s3://"


def load_named_stores(home: Path) -> dict[str, StorageConfig]:
    """name → config from HOME/stores.toml; {} when there is no file. Raises ConfigError."""
    path = home / STORES_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return parse_stores_file(data, str(path))


def environment_s3() -> S3Config:
    """S3 as this environment reaches it (AWS_ENDPOINT_URL*, AWS_REGION, AWS_PROFILE)."""
    config = parse_storage_url(S3_ENVIRONMENT_URL)
    assert isinstance(config, S3Config)
    return dataclasses.replace(config, profile=os.environ.get("AWS_PROFILE") or None)


def local_store(name: str) -> StorageConfig | None:
    """The config a CLI-only TargetStore URL stands for, or None when `name` is no URL."""
    if name.startswith(FOLDER_URL_PREFIX):
        return LocalConfig(root=str(Path(name[len(FOLDER_URL_PREFIX) - 1 :]).resolve()))
    if name == S3_ENVIRONMENT_URL:
        return environment_s3()
    return None


def target_stores(
    request: Mapping[str, Any], functions: Mapping[str, str] | FunctionScope, home: Path
) -> dict[str, StorageConfig] | None:
    """The named stores a job's operation writes to, resolved; None when it names none."""
    params = request["Operation"].get(OPERATION)
    if not isinstance(params, Mapping) or params.get("TargetStore") is None:
        return None
    name = str(params["TargetStore"])
    if isinstance(functions, FunctionScope):
        config = functions.stores.get(name)
        if config is None:
            raise InvalidRequest(
                f"{OPERATION}.TargetStore {name!r} is not a store this server lets the account name; "
                "its operator registers stores with [[stores]] in server.toml"
            )
        return {name: config}
    config = local_store(name) or load_named_stores(home).get(name)
    if config is None:
        raise BadRequest(
            f"{OPERATION}.TargetStore {name!r}: no such store in {home / STORES_FILE} "
            "(add [stores.NAME] there; docs/transfer.md)"
        )
    return {name: config}
