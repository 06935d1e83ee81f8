"""Access keys of the HTTP API: which secret signs for which account.

Two sources, merged (the environment wins for a key given in both):

- `$S3BATCH_HOME/server.toml`:

      [[keys]]
      access_key = "AKIAEXAMPLE"
      secret_key = "..."
      account_id = "111122223333"

- `S3BATCH_ACCESS_KEYS="AKID:SECRET:ACCOUNT,AKID2:SECRET2:ACCOUNT2"`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s3batch.errors import ConfigError
from s3batch.settings import SERVER_FILE

ENV_VAR = "S3BATCH_ACCESS_KEYS"
_ACCOUNT_ID = re.compile(r"^\d{12}$")
#: SigV4 credential scopes are split on "/", so a key id containing one could never match.
_ACCESS_KEY = re.compile(r"^[A-Za-z0-9_.\-]{3,128}$")


@dataclass(frozen=True, slots=True)
class AccessKey:
    access_key: str
    secret_key: str = ""
    account_id: str = ""

    def __repr__(self) -> str:  # never print a secret in logs or test output
        return f"AccessKey({self.access_key!r}, account_id={self.account_id!r})"


class KeyRing:
    """Access key id → AccessKey."""

    def __init__(self, keys: Iterable[AccessKey]) -> None:
        self._keys = {key.access_key: key for key in keys}

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, access_key: str) -> AccessKey | None:
        return self._keys.get(access_key)

    def secret_for(self, access_key: str) -> str | None:
        key = self._keys.get(access_key)
        return key.secret_key if key else None


def load_keys(home: Path, environ: Mapping[str, str] | None = None) -> KeyRing:
    """The keys from HOME/server.toml, then S3BATCH_ACCESS_KEYS. Raises ConfigError."""
    env = os.environ if environ is None else environ
    keys = [*_file_keys(home / SERVER_FILE), *_env_keys(env.get(ENV_VAR, ""))]
    return KeyRing(keys)


def _file_keys(path: Path) -> list[AccessKey]:
    if not path.is_file():
        return []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    entries = data.get("keys", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: [[keys]] must be an array of tables")
    return [_key_from_table(entry, f"{path} [[keys]] #{n}") for n, entry in enumerate(entries, 1)]


def _key_from_table(entry: Any, where: str) -> AccessKey:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table")
    access, secret, account = (entry.get(name) for name in ("access_key", "secret_key", "account_id"))
    if not (isinstance(access, str) and isinstance(secret, str) and isinstance(account, str)):
        raise ConfigError(f"{where}: needs access_key, secret_key and account_id strings")
    return _checked(AccessKey(access, secret, account), where)


def _env_keys(raw: str) -> list[AccessKey]:
    keys = []
    for n, item in enumerate((part.strip() for part in raw.split(",")), 1):
        if not item:
            continue
        fields = item.split(":")
        if len(fields) != 3:
            raise ConfigError(f"{ENV_VAR} entry #{n}: expected ACCESS_KEY:SECRET:ACCOUNT_ID")
        keys.append(_checked(AccessKey(*fields), f"{ENV_VAR} entry #{n}"))
    return keys


def _checked(key: AccessKey, where: str) -> AccessKey:
    if not _ACCESS_KEY.match(key.access_key):
        raise ConfigError(f"{where}: access key must be 3-128 characters of A-Z a-z 0-9 _ . -")
    if not key.secret_key:
        raise ConfigError(f"{where}: empty secret key")
    if not _ACCOUNT_ID.match(key.account_id):
        raise ConfigError(f"{where}: account_id must be 12 digits")
    return key
