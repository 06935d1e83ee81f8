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

import functools
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
#: Variables that are no part of where requests go or as whom (output formatting of the AWS CLI).
IGNORED_NAMES = frozenset({"AWS_PAGER", "AWS_DEFAULT_OUTPUT", "AWS_CLI_AUTO_PROMPT", "AWS_CLI_FILE_ENCODING"})
#: Identity variables whose values are file or folder paths (a PATH-like list for PYTHONPATH):
#: a relative one is made absolute against the creating command's folder, both in the
#: fingerprint and in the environment a worker is started with, so a worker (which runs in
#: S3BATCH_HOME) reads the same files, and two projects whose relative settings read alike but
#: name different files get different fingerprints.
PATH_NAMES = frozenset(
    {
        "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CA_BUNDLE", "AWS_WEB_IDENTITY_TOKEN_FILE",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
        "PGPASSFILE", "PGSERVICEFILE", "PGSSLCERT", "PGSSLKEY", "PGSSLROOTCERT", "PGSSLCRL",
    }
)  # fmt: skip
PATH_LIST_NAMES = frozenset({"PYTHONPATH"})
#: The salt file in S3BATCH_HOME, and its size in bytes.
SALT_FILE = "identity.salt"
SALT_BYTES = 32
#: Hex digits of the fingerprint kept (128 bits: collisions are out of reach).
KEY_HEX_CHARS = 32


def identity_variables(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of `env` that take part in the fingerprint, paths made absolute."""
    return {
        name: absolute_paths(name, value)
        for name, value in env.items()
        if (name in IDENTITY_NAMES or name.startswith(IDENTITY_PREFIXES)) and name not in IGNORED_NAMES
    }


def absolute_paths(name: str, value: str) -> str:
    """`value` with its relative paths made absolute (against this process's folder) when
    `name` is a path variable; otherwise unchanged."""
    if name in PATH_NAMES and value:
        return os.path.abspath(value)
    if name in PATH_LIST_NAMES and value:
        return os.pathsep.join(os.path.abspath(entry) for entry in value.split(os.pathsep))
    return value


def worker_environment(env: Mapping[str, str]) -> dict[str, str]:
    """`env` for a worker started in another folder: its path variables absolute, so the worker
    reads the files the creating command meant and has the same fingerprint."""
    return {name: absolute_paths(name, value) for name, value in env.items()}


def environment_key(env: Mapping[str, str], home: Path) -> str:
    """The fingerprint of `env`'s identity variables under HOME's salt."""
    canonical = json.dumps(sorted(identity_variables(env).items()), separators=(",", ":"))
    digest = hmac.new(_salt(home), canonical.encode(), hashlib.sha256).hexdigest()
    return digest[:KEY_HEX_CHARS]


def current_key(home: Path) -> str:
    """The fingerprint of this process's environment."""
    return environment_key(os.environ, home)


@functools.lru_cache(maxsize=8)
def _salt(home: Path) -> bytes:
    """HOME's salt: read (or created) once per process; it never changes once written."""
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
