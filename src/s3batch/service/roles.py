"""Roles from `$S3BATCH_HOME/server.toml`, and what a job's role means when it runs.

    [[roles]]
    account_id = "111122223333"
    name = "tagger"                  # RoleArn arn:aws:iam::111122223333:role/tagger
    profile = "tagger"               # optional: AWS profile its tasks sign with
    endpoint_url = "http://..."      # optional: S3 endpoint for its tasks
    region = "eu-west-1"             # optional

    [[roles.allow]]
    actions = ["s3:GetObject", "s3:PutObjectTagging"]
    buckets = ["data-*"]
    functions = []                   # for lambda:InvokeFunction

The secret behind a profile stays in the AWS shared credentials file: neither server.toml nor
the job store ever holds one. Jobs record only the role's account and name, and the process
running them looks the role up again (so editing a role applies to jobs that resume).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from s3batch.domain.roles import Role, RoleBook, Statement
from s3batch.errors import ConfigError
from s3batch.settings import SERVER_FILE
from s3batch.storage.config import StorageConfig, signs_with_profile

_ROLE_FIELDS = {"account_id", "name", "profile", "endpoint_url", "region", "allow"}
_STATEMENT_FIELDS = {"actions", "buckets", "functions"}
#: Inline keys would end up in server.toml; the S3 adapter takes credentials only from a profile.
_SECRET_FIELDS = {"access_key_id", "secret_access_key", "session_token"}


def load_roles(home: Path) -> RoleBook:
    """The roles of HOME/server.toml (none when the file or its [[roles]] is absent)."""
    path = home / SERVER_FILE
    if not path.is_file():
        return RoleBook()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    entries = data.get("roles", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: [[roles]] must be an array of tables")
    roles = [role_from_table(entry, f"{path} [[roles]] #{n}") for n, entry in enumerate(entries, 1)]
    seen = {(r.account_id, r.name) for r in roles}
    if len(seen) != len(roles):
        raise ConfigError(f"{path}: two [[roles]] share an account_id and name")
    return RoleBook(roles=tuple(roles))


def role_from_table(entry: Any, where: str) -> Role:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table")
    if _SECRET_FIELDS & set(entry):
        raise ConfigError(
            f"{where}: inline keys are not supported; put them in an AWS profile "
            "(~/.aws/credentials) and name it with profile = ..."
        )
    unknown = set(entry) - _ROLE_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    account, name = entry.get("account_id"), entry.get("name")
    if not (isinstance(account, str) and len(account) == 12 and account.isdigit()):
        raise ConfigError(f"{where}: account_id must be 12 digits")
    if not (isinstance(name, str) and name and "/" not in name):
        raise ConfigError(f"{where}: name must be a role name (no '/')")
    optional = {k: _optional_str(entry, k, where) for k in ("profile", "endpoint_url", "region")}
    allow = entry.get("allow", [])
    if not isinstance(allow, list):
        raise ConfigError(f"{where}: [[roles.allow]] must be an array of tables")
    statements = tuple(_statement(s, f"{where} allow #{n}") for n, s in enumerate(allow, 1))
    return Role(account_id=account, name=name, statements=statements, **optional)


def _optional_str(entry: dict[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is not None and not (isinstance(value, str) and value):
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value


def _statement(entry: Any, where: str) -> Statement:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(entry) - _STATEMENT_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    lists = {k: entry.get(k, []) for k in _STATEMENT_FIELDS}
    for key, value in lists.items():
        if not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
            raise ConfigError(f"{where}: {key} must be a list of non-empty strings")
    if not lists["actions"]:
        raise ConfigError(f"{where}: actions is empty")
    return Statement(**{k: tuple(v) for k, v in lists.items()})


def role_storage(role: Role, storage: StorageConfig) -> StorageConfig:
    """The store as the role's tasks reach it: its profile, endpoint and region over the
    server's. A local folder has no credentials: only the allow-list applies there."""
    if not signs_with_profile(storage):
        return storage
    return dataclasses.replace(
        storage,
        profile=role.profile or storage.profile,
        endpoint_url=role.endpoint_url or storage.endpoint_url,
        region=role.region or storage.region,
    )


def role_env(role: Role | None, env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a job's function handlers: their boto3 signs with the role's profile
    and reaches its endpoint too."""
    if role is None:
        return dict(env)
    extra = {"AWS_PROFILE": role.profile} if role.profile else {}
    if role.endpoint_url:
        extra |= {"AWS_ENDPOINT_URL": role.endpoint_url, "AWS_ENDPOINT_URL_S3": role.endpoint_url}
    return {**env, **extra}
