"""The notification contract: what is sent (`Notice`), where (`NotifyTarget`), and how (`Channel`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

#: Attempts per notice and target unless the entry says otherwise (the first try included).
DEFAULT_ATTEMPTS = 5
#: Upper bound for `attempts`: a dead receiver is given up on within minutes, not hours.
MAX_ATTEMPTS = 20
#: Seconds before the second attempt; each later wait doubles, up to MAX_BACKOFF_S.
DEFAULT_BACKOFF_S = 1.0
#: Longest wait between two attempts (seconds), also for a receiver's Retry-After.
MAX_BACKOFF_S = 60.0
#: Seconds one attempt (connect, send, answer) may take.
DEFAULT_TIMEOUT_S = 10.0


class NotifyEvent(StrEnum):
    #: A file was processed and disposed of successfully (archived, deleted or left).
    SUCCESS = "success"
    #: A file failed for good (after max_attempts) and went to the error bucket or stayed.
    FAILURE = "failure"
    #: A batch ended: a poll or backlog pass, a replay, or the files one webhook burst brought.
    BATCH = "batch"


#: Events a `[[notify]]` entry gets when it has no `on`: per-file successes can be many.
DEFAULT_EVENTS = (NotifyEvent.FAILURE, NotifyEvent.BATCH)


@dataclass(frozen=True, slots=True)
class Notice:
    event: NotifyEvent
    #: One line for an email subject or a log ("orders: in/a.csv failed (RowsRejected) ...").
    subject: str
    #: The JSON document a webhook receives and an email carries.
    payload: Mapping[str, Any]
    #: Plain-text lines for an email body, before the JSON.
    text: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookSettings:
    url: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SmtpSettings:
    host: str
    port: int
    sender: str
    recipients: tuple[str, ...]
    starttls: bool = False
    username: str | None = None
    #: Name of the environment variable holding the password (never the password itself).
    password_env: str | None = None
    #: CA bundle that verifies the server's certificate after STARTTLS (else the system's).
    ca_file: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyTarget:
    channel: WebhookSettings | SmtpSettings
    events: frozenset[NotifyEvent] = field(default_factory=lambda: frozenset(DEFAULT_EVENTS))
    attempts: int = DEFAULT_ATTEMPTS
    backoff_s: float = DEFAULT_BACKOFF_S
    timeout_s: float = DEFAULT_TIMEOUT_S


class DeliveryError(Exception):
    """One attempt failed. `permanent`: trying again cannot help (HTTP 4xx, SMTP 5xx, bad
    settings). `retry_after_s`: the receiver asked for this wait (HTTP Retry-After)."""

    def __init__(self, message: str, *, permanent: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class Delivery:
    """What became of one notice at one target: recorded in the pipeline state."""

    target: str
    event: NotifyEvent
    subject: str
    delivered: bool
    attempts: int
    error: str = ""


class Channel(Protocol):
    #: Where notices go, safe to log and store (no credentials, no query string).
    label: str

    async def send(self, notice: Notice) -> None:
        """Deliver once; raise DeliveryError on failure."""
        ...
