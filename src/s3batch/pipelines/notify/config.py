"""`[[notify]]` entries of a pipeline file → NotifyTargets.

```toml
[[notify]]
webhook = "https://hooks.example.com/s3batch"
on = ["success", "failure", "batch"]   # default: ["failure", "batch"]
attempts = 5                           # tries in all, 1..20
backoff_s = 1.0                        # first wait; doubles each time, at most 60 s
timeout_s = 10.0                       # per attempt

[[notify]]
on = ["batch"]
smtp = { host = "smtp.example.com", port = 587, from = "s3batch@example.com",
         to = ["ops@example.com"], starttls = true, username = "s3batch",
         password_env = "S3BATCH_SMTP_PASSWORD" }
```
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from s3batch.errors import ConfigError
from s3batch.pipelines.notify.base import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF_S,
    DEFAULT_EVENTS,
    DEFAULT_TIMEOUT_S,
    MAX_ATTEMPTS,
    MAX_BACKOFF_S,
    NotifyEvent,
    NotifyTarget,
    SmtpSettings,
    WebhookSettings,
)

#: SMTP's submission port when STARTTLS is on, the relay port when not.
SMTP_STARTTLS_PORT = 587
SMTP_PLAIN_PORT = 25
#: Longest `timeout_s` accepted for one attempt (seconds).
MAX_TIMEOUT_S = 600.0

_ENTRY_KEYS = {"webhook", "smtp", "on", "attempts", "backoff_s", "timeout_s"}
_SMTP_KEYS = {"host", "port", "from", "to", "starttls", "username", "password_env", "ca_file"}


def parse_targets(data: Any, base_dir: Path) -> tuple[NotifyTarget, ...]:
    """`base_dir`: the pipeline file's folder, which a relative `ca_file` is taken from."""
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ConfigError("notify must be a list of tables ([[notify]] entries)")
    return tuple(_target(f"notify[{i}]", entry, base_dir) for i, entry in enumerate(data))


def _target(where: str, entry: Any, base_dir: Path) -> NotifyTarget:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be a table")
    _no_unknown(where, entry, _ENTRY_KEYS)
    if ("webhook" in entry) == ("smtp" in entry):
        raise ConfigError(f"{where}: set exactly one of 'webhook' or 'smtp'")
    if "webhook" in entry:
        channel: WebhookSettings | SmtpSettings = _webhook(where, entry["webhook"])
    else:
        channel = _smtp(f"{where}.smtp", entry["smtp"], base_dir)
    return NotifyTarget(
        channel=channel,
        events=_events(f"{where}.on", entry.get("on", [str(e) for e in DEFAULT_EVENTS])),
        attempts=_number(f"{where}.attempts", entry.get("attempts", DEFAULT_ATTEMPTS), int, 1, MAX_ATTEMPTS),
        backoff_s=_number(
            f"{where}.backoff_s", entry.get("backoff_s", DEFAULT_BACKOFF_S), float, 0, MAX_BACKOFF_S
        ),
        timeout_s=_number(
            f"{where}.timeout_s", entry.get("timeout_s", DEFAULT_TIMEOUT_S), float, 0.001, MAX_TIMEOUT_S
        ),
    )


def _no_unknown(where: str, entry: Mapping[str, Any], known: set[str]) -> None:
    if "password" in entry:
        raise ConfigError(
            f"{where}.password: a password does not belong in the pipeline file;"
            " put it in an environment variable and name that in password_env"
        )
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _events(where: str, value: Any) -> frozenset[NotifyEvent]:
    if isinstance(value, str) or not isinstance(value, list) or not value:
        raise ConfigError(f'{where} must be a non-empty list, e.g. ["failure", "batch"]')
    events = set()
    for item in value:
        try:
            events.add(NotifyEvent(item))
        except ValueError:
            allowed = ", ".join(e.value for e in NotifyEvent)
            raise ConfigError(f"{where}: unknown event {item!r}; use {allowed}") from None
    return frozenset(events)


def _number(where: str, value: Any, kind: type[int] | type[float], low: float, high: float) -> Any:
    # bool is an int to Python, never a count or a duration here.
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
        raise ConfigError(f"{where} must be {'an integer' if kind is int else 'a number'}; got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{where} must be between {low:g} and {high:g}; got {value!r}")
    return kind(value)


def _webhook(where: str, value: Any) -> WebhookSettings:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}.webhook must be an http:// or https:// URL; got {value!r}")
    return WebhookSettings(url=value)


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} must be a non-empty string")
    return value


def _smtp(where: str, data: Any, base_dir: Path) -> SmtpSettings:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table: {{host, port, from, to, ...}}")
    _no_unknown(where, data, _SMTP_KEYS)
    starttls = data.get("starttls", False)
    if not isinstance(starttls, bool):
        raise ConfigError(f"{where}.starttls must be true or false")
    to = data.get("to")
    recipients = [to] if isinstance(to, str) else to
    if not isinstance(recipients, list) or not recipients:
        raise ConfigError(f"{where}.to must be an address or a non-empty list of addresses")
    username, password_env = data.get("username"), data.get("password_env")
    if (username is None) != (password_env is None):
        raise ConfigError(f"{where}: username and password_env go together (login needs both)")
    if username is not None and not starttls:
        raise ConfigError(
            f"{where}.username needs starttls = true (else the password crosses the network in clear)"
        )
    default_port = SMTP_STARTTLS_PORT if starttls else SMTP_PLAIN_PORT
    return SmtpSettings(
        host=_text(f"{where}.host", data.get("host")),
        port=_number(f"{where}.port", data.get("port", default_port), int, 1, 65535),
        sender=_text(f"{where}.from", data.get("from")),
        recipients=tuple(_text(f"{where}.to[{i}]", r) for i, r in enumerate(recipients)),
        starttls=starttls,
        username=None if username is None else _text(f"{where}.username", username),
        password_env=None if password_env is None else _text(f"{where}.password_env", password_env),
        ca_file=None
        if data.get("ca_file") is None
        else str(base_dir / _text(f"{where}.ca_file", data["ca_file"])),
    )
