"""Which environment a job runs in: a keyed fingerprint of its creator's credentials and connection.

A job must run with the store and credentials of the command that created it. Secrets are never
written to the job store, so a job records only a fingerprint of the environment variables that
decide where its requests go and as whom (`IDENTITY_PREFIXES`, `IDENTITY_NAMES`): an HMAC-SHA256
keyed with a random salt kept in `S3BATCH_HOME/identity.salt` (mode 0600), so the job store alone
does not let anyone test guesses of a secret. Background workers are keyed by the same
fingerprint (service/worker.py): a command starts a worker with its own environment, and that
worker drives only the jobs created with the same fingerprint (docs/compatibility.md, "Workers
and credentials").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

#: Environment variables, by prefix, that choose the endpoint and the credentials: the AWS SDK's
#: (keys, session token, profile, config and credential files, endpoint, region, CA bundle) and
#: libpq's (PGPASSWORD, PGHOST, ... for the PostgreSQL table backend).
IDENTITY_PREFIXES = ("AWS_", "PG")
#: Single variables with the same role: where ~/.aws lives, proxies, TLS trust (and whether it
#: is checked), where handler modules are imported from, and whether the lean request path is used.
IDENTITY_NAMES = frozenset(
    {
        "HOME",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
        "http_proxy", "https_proxy", "no_proxy", "all_proxy",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
        "PYTHONPATH",
        "S3BATCH_LEAN_PATH", "S3BATCH_VERIFY_SSL",
    }
)  # fmt: skip
#: The salt file in S3BATCH_HOME, and its size in bytes.
SALT_FILE = "identity.salt"
SALT_BYTES = 32
#: Hex digits of the fingerprint kept (128 bits: collisions are out of reach).
KEY_HEX_CHARS = 32


def identity_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of `env` that take part in the fingerprint."""
    return {
        name: value
        for name, value in env.items()
        if name in IDENTITY_NAMES or name.startswith(IDENTITY_PREFIXES)
    }


def environment_key(env: Mapping[str, str], home: Path) -> str:
    """The fingerprint of `env`'s identity variables under HOME's salt."""
    canonical = json.dumps(sorted(identity_variables(env).items()), separators=(",", ":"))
    digest = hmac.new(_salt(home), canonical.encode(), hashlib.sha256).hexdigest()
    return digest[:KEY_HEX_CHARS]


def current_key(home: Path) -> str:
    """The fingerprint of this process's environment."""
    return environment_key(os.environ, home)


def _salt(home: Path) -> bytes:
    path = home / SALT_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    home.mkdir(parents=True, exist_ok=True)
    # Written whole under a temporary name, then linked into place: a concurrent creator's
    # link fails and it reads the winner's salt; nobody ever reads a half-written file.
    temp = home / f".{SALT_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(SALT_BYTES))
        try:
            os.link(temp, path)
        except FileExistsError:
            pass
    finally:
        temp.unlink(missing_ok=True)
    return path.read_bytes()
