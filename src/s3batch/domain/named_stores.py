"""Named object stores (S3batchTransfer's TargetStore), parsed from TOML tables (pure: no I/O).

A named store is a StorageConfig an operator or user wrote down once, so a job names it instead
of carrying an endpoint or credentials:

    [stores.backup]                      # $S3BATCH_HOME/stores.toml (the CLI, the Python API)
    endpoint_url = "http://127.0.0.1:9000"
    profile = "nas"                      # credentials: an AWS profile, never a key here
    region = "us-east-1"
    addressing_style = "path"

    [stores.archive]
    root = "/mnt/nas/buckets"            # a folder store

    [[stores]]                           # server.toml: one entry per account (or "*")
    account_id = "111122223333"
    name = "backup"
    endpoint_url = "http://10.0.0.5:9000"
    profile = "nas"

The resolved StorageConfig is what a job records (docs/transfer.md, "Named stores"); like the
job's own store it holds no secret: the worker signs with its own environment's credentials
(for `profile`, that profile's).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from s3batch.domain.stores import LocalConfig, S3Config, StorageConfig
from s3batch.errors import ConfigError

#: A store name: what TargetStore and `NAME:bucket/key` in `s3batch transfer` take.
STORE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
#: Fields of an S3 store, with their types.
S3_FIELDS: Mapping[str, type | tuple[type, ...]] = {
    "endpoint_url": str,
    "region": str,
    "profile": str,
    "addressing_style": str,
    "verify_ssl": bool,
    "lean_path": bool,
    "max_connections": int,
    "connect_timeout_s": (int, float),
    "read_timeout_s": (int, float),
}
LOCAL_FIELDS = frozenset({"root"})
#: Fields that would put a secret into a file s3batch reads and a job could echo.
SECRET_FIELDS = frozenset(
    {
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "access_key",
        "secret_key",
        "password",
    }
)
#: server.toml's [[stores]] fields that say who may name the store, not what it is.
SERVER_FIELDS = frozenset({"account_id", "name"})


def check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or STORE_NAME.fullmatch(name) is None:
        raise ConfigError(f"{where}: store name {name!r} must be 1-63 letters, digits, '_', '.' or '-'")
    return name


def parse_store(table: Any, where: str) -> StorageConfig:
    """One store's table → its StorageConfig. Raises ConfigError naming `where` and the field."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table")
    secrets = sorted(SECRET_FIELDS & set(table))
    if secrets:
        raise ConfigError(
            f"{where}: {', '.join(secrets)}: credentials never go in this file; name an AWS profile "
            '(profile = "...") whose credentials are in the AWS config/credentials files'
        )
    if "root" in table:
        return _local(table, where)
    unknown = sorted(set(table) - set(S3_FIELDS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(unknown)} (expected root or {', '.join(S3_FIELDS)})"
        )
    for name, value in table.items():
        expected = S3_FIELDS[name]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{where}.{name}: wrong type {type(value).__name__}")
    if "endpoint_url" in table:
        _check_endpoint(table["endpoint_url"], f"{where}.endpoint_url")
    return S3Config(**dict(table))


def _local(table: Mapping[str, Any], where: str) -> LocalConfig:
    unknown = sorted(set(table) - LOCAL_FIELDS)
    if unknown:
        raise ConfigError(f"{where}: a folder store (root) takes no other field; got {', '.join(unknown)}")
    root = table["root"]
    if not isinstance(root, str) or not root.startswith("/"):
        raise ConfigError(f"{where}.root must be an absolute folder path")
    return LocalConfig(root=root)


def _check_endpoint(url: str, where: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: expected http(s)://host[:port], got {url!r}")
    if parts.username or parts.password:
        raise ConfigError(f"{where}: credentials never go in the URL; name an AWS profile instead")


def parse_stores_file(data: Mapping[str, Any], where: str) -> dict[str, StorageConfig]:
    """stores.toml's `[stores.NAME]` tables → name → config."""
    unknown = sorted(set(data) - {"stores"})
    if unknown:
        raise ConfigError(f"{where}: unknown table(s) {', '.join(unknown)}; stores go in [stores.NAME]")
    stores = data.get("stores", {})
    if not isinstance(stores, Mapping):
        raise ConfigError(f"{where}: [stores.NAME] tables expected")
    return {
        check_name(name, f"{where} [stores]"): parse_store(table, f"{where} [stores.{name}]")
        for name, table in stores.items()
    }


def parse_server_stores(entries: Any, where: str) -> dict[str, dict[str, StorageConfig]]:
    """server.toml's `[[stores]]` entries → account id (or "*") → name → config."""
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: expected [[stores]] entries")
    by_account: dict[str, dict[str, StorageConfig]] = {}
    for index, entry in enumerate(entries):
        at = f"{where}[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{at}: expected a table")
        account = entry.get("account_id")
        if not isinstance(account, str) or not account:
            raise ConfigError(f'{at}.account_id is required (an account id, or "*" for every account)')
        name = check_name(entry.get("name"), f"{at}.name")
        config = parse_store({k: v for k, v in entry.items() if k not in SERVER_FIELDS}, at)
        stores = by_account.setdefault(account, {})
        if name in stores:
            raise ConfigError(f"{at}: store {name!r} is defined twice for account {account}")
        stores[name] = config
    return by_account
