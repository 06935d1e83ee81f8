"""Notification config, payloads and the retrying Notifier, with the in-memory channel."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from s3batch.errors import ConfigError
from s3batch.pipelines.notify import Delivery, DeliveryError, Notice, Notifier, NotifyEvent, parse_targets
from s3batch.pipelines.notify.base import MAX_BACKOFF_S, NotifyTarget, SmtpSettings, WebhookSettings
from s3batch.pipelines.notify.dispatch import _wait_s
from s3batch.pipelines.notify.memory import MemoryChannel
from s3batch.pipelines.notify.messages import (
    MAX_LISTED_FAILURES,
    BatchTally,
    FileOutcome,
    batch_notice,
    file_notice,
)
from s3batch.pipelines.notify.smtp import render_email

BASE = Path("/etc/pipelines")


def parse(*entries: dict[str, Any]) -> tuple[NotifyTarget, ...]:
    return parse_targets(list(entries), BASE)


def smtp(**extra: Any) -> dict[str, Any]:
    return {"smtp": {"host": "mail.example.com", "from": "a@example.com", "to": "b@example.com", **extra}}


# --- config ---------------------------------------------------------------------------------------


def test_targets_parse_with_defaults() -> None:
    hook, mail = parse(
        {"webhook": "https://h.example.com/x", "on": ["success", "batch"], "attempts": 2, "backoff_s": 0.5},
        smtp(starttls=True, username="u", password_env="PW", ca_file="ca.pem", to=["x@e.com", "y@e.com"]),
    )
    assert hook.channel == WebhookSettings(url="https://h.example.com/x")
    assert hook.events == {NotifyEvent.SUCCESS, NotifyEvent.BATCH}
    assert (hook.attempts, hook.backoff_s) == (2, 0.5)
    assert mail.events == {NotifyEvent.FAILURE, NotifyEvent.BATCH}  # the default
    assert mail.channel == SmtpSettings(
        host="mail.example.com", port=587, sender="a@example.com", recipients=("x@e.com", "y@e.com"),
        starttls=True, username="u", password_env="PW", ca_file=str(BASE / "ca.pem"),
    )  # fmt: skip
    (plain,) = parse(smtp())
    assert isinstance(plain.channel, SmtpSettings) and plain.channel.port == 25
    assert parse_targets(None, BASE) == ()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"on": ["batch"]}, r"notify\[0\]: set exactly one of 'webhook' or 'smtp'"),
        ({"webhook": "http://a/", **smtp()}, "exactly one of"),
        ({"webhook": "ftp://host/x"}, r"notify\[0\]\.webhook must be an http:// or https:// URL"),
        ({"webhook": "http:///path"}, r"notify\[0\]\.webhook must be"),
        ({"webhook": "http://h/", "on": ["done"]}, r"notify\[0\]\.on: unknown event 'done'"),
        ({"webhook": "http://h/", "on": "batch"}, r"notify\[0\]\.on must be a non-empty list"),
        ({"webhook": "http://h/", "on": []}, r"notify\[0\]\.on must be a non-empty list"),
        ({"webhook": "http://h/", "attempts": 0}, r"notify\[0\]\.attempts must be between 1 and 20"),
        ({"webhook": "http://h/", "attempts": 2.5}, r"notify\[0\]\.attempts must be an integer"),
        ({"webhook": "http://h/", "backoff_s": True}, r"notify\[0\]\.backoff_s must be a number"),
        ({"webhook": "http://h/", "retries": 3}, r"notify\[0\]: unknown key\(s\) retries"),
        (smtp(password="hunter2"), r"notify\[0\]\.smtp\.password: a password does not belong"),
        (smtp(username="u"), r"notify\[0\]\.smtp: username and password_env go together"),
        (smtp(username="u", password_env="PW"), r"notify\[0\]\.smtp\.username needs starttls = true"),
        (smtp(to=[]), r"notify\[0\]\.smtp\.to must be an address or a non-empty list"),
        (smtp(port=70000), r"notify\[0\]\.smtp\.port must be between 1 and 65535"),
        (smtp(starttls="yes"), r"notify\[0\]\.smtp\.starttls must be true or false"),
        ({"smtp": {"host": "h", "to": "b@e.com"}}, r"notify\[0\]\.smtp\.from must be a non-empty string"),
        ({"smtp": "smtp://h"}, r"notify\[0\]\.smtp must be a table"),
    ],
)
def test_bad_entries_name_the_field(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(entry)


def test_notify_must_be_a_list() -> None:
    with pytest.raises(ConfigError, match=r"notify must be a list of tables"):
        parse_targets({"webhook": "http://h/"}, BASE)


# --- messages -------------------------------------------------------------------------------------


def outcome(key: str, succeeded: bool, message: str, code: str = "") -> FileOutcome:
    return FileOutcome(
        bucket="staging", key=key, version_id=None, etag="e", size=10, succeeded=succeeded,
        disposition="archived" if succeeded else "errored", attempts=1,
        http_status="200" if succeeded else "400", error_code=code, message=message,
    )  # fmt: skip


CSV_SUMMARY = json.dumps(
    {"rowsRead": 3, "rowsWritten": 1, "rowsRejected": 2,
     "rejected": [{"line": 3, "reason": "bad id"}, {"line": 4, "reason": "bad amount"}]}
)  # fmt: skip


def test_a_file_notice_carries_the_csv_summary() -> None:
    notice = file_notice("orders", "run-1", outcome("in/a.csv", False, CSV_SUMMARY, "RowsRejected"))
    assert notice.event is NotifyEvent.FAILURE
    assert notice.subject == "orders: in/a.csv failed (RowsRejected): 3 read, 1 written, 2 rejected"
    assert notice.payload["summary"]["rejected"][1] == {"line": 4, "reason": "bad amount"}
    assert notice.payload["message"] == CSV_SUMMARY and notice.payload["run"] == "run-1"
    assert "  line 3: bad id" in notice.text
    json.dumps(notice.payload)  # serialisable as is

    plain = file_notice("p", "r", outcome("b.txt", True, "Successful"))
    assert plain.event is NotifyEvent.SUCCESS and "summary" not in plain.payload
    assert plain.subject == "p: b.txt succeeded" and "Result: Successful" in plain.text


def test_a_batch_sums_rows_and_caps_the_failure_list() -> None:
    tally = BatchTally()
    tally.add(outcome("ok.csv", True, json.dumps({"rowsRead": 5, "rowsWritten": 5, "rowsRejected": 0})))
    tally.add(outcome("x.txt", True, "Successful"))
    for i in range(MAX_LISTED_FAILURES + 3):
        tally.add(outcome(f"bad{i}.csv", False, CSV_SUMMARY, "RowsRejected"))
    notice = batch_notice("orders", "r", tally)
    payload = notice.payload
    assert (payload["files"], payload["succeeded"], payload["failed"]) == (MAX_LISTED_FAILURES + 5, 2, 103)
    assert len(payload["failures"]) == MAX_LISTED_FAILURES and payload["failuresNotListed"] == 3
    assert payload["rows"] == {"read": 5 + 3 * 103, "written": 5 + 103, "rejected": 2 * 103}
    assert notice.subject.startswith("orders: batch of 105 file(s), 2 succeeded, 103 failed; rows 314 read")


def test_the_email_has_the_subject_and_the_json() -> None:
    settings = SmtpSettings(host="h", port=25, sender="a@example.com", recipients=("b@e.com", "c@e.com"))
    notice = file_notice("orders", "r", outcome("a.csv", False, CSV_SUMMARY, "RowsRejected"))
    email = render_email(settings, notice)
    assert email["Subject"] == "[s3batch] " + notice.subject
    assert email["To"] == "b@e.com, c@e.com"
    body = email.get_content()
    assert body.startswith("Pipeline: orders (run r)\n")
    assert json.loads(body[body.index("{") :]) == notice.payload


# --- the Notifier ---------------------------------------------------------------------------------


def target(
    events: set[NotifyEvent] | None = None, attempts: int = 3, backoff_s: float = 0.01
) -> NotifyTarget:
    return NotifyTarget(
        channel=WebhookSettings(url="http://127.0.0.1/"), events=frozenset(events or set(NotifyEvent)),
        attempts=attempts, backoff_s=backoff_s,
    )  # fmt: skip


NOTICE = Notice(NotifyEvent.FAILURE, "subject", {"k": 1})


async def deliver(channel: MemoryChannel, tgt: NotifyTarget, notice: Notice = NOTICE) -> list[Delivery]:
    recorded: list[Delivery] = []
    notifier = Notifier([(tgt, channel)], recorded.append)
    notifier.publish(notice)
    await notifier.close(timeout_s=10)
    return recorded


async def test_retryable_failures_are_retried_until_delivered() -> None:
    channel = MemoryChannel(fail_first=2)
    (delivery,) = await deliver(channel, target(attempts=3))
    assert delivery == Delivery("memory://", NotifyEvent.FAILURE, "subject", True, 3)
    assert channel.sent == [NOTICE]


async def test_attempts_are_bounded_and_permanent_failures_stop_at_once() -> None:
    (delivery,) = await deliver(MemoryChannel(fail_first=10), target(attempts=3))
    assert (delivery.delivered, delivery.attempts, delivery.error) == (False, 3, "fake failure 3")
    channel = MemoryChannel(fail_first=10, permanent=True)
    (delivery,) = await deliver(channel, target(attempts=3))
    assert (delivery.delivered, delivery.attempts, channel.attempts) == (False, 1, 1)


async def test_only_targets_asking_for_the_event_get_it() -> None:
    channel = MemoryChannel()
    assert await deliver(channel, target({NotifyEvent.BATCH})) == []
    assert channel.attempts == 0
    assert Notifier([(target({NotifyEvent.BATCH}), channel)], print).wants(NotifyEvent.BATCH)


async def test_close_cancels_what_is_still_retrying_and_records_it() -> None:
    recorded: list[Delivery] = []
    channel = MemoryChannel(fail_first=100)
    notifier = Notifier([(target(attempts=5, backoff_s=30), channel)], recorded.append)
    notifier.publish(NOTICE)
    await asyncio.sleep(0.05)  # first attempt fails; now it waits 30 s to retry
    started = time.monotonic()
    await notifier.close(timeout_s=0.1)
    assert time.monotonic() - started < 5
    (delivery,) = recorded
    assert (delivery.delivered, delivery.attempts) == (False, 1)
    assert delivery.error.startswith("cancelled")


def test_backoff_doubles_up_to_the_cap_and_retry_after_wins() -> None:
    tgt = target(backoff_s=1.0)
    assert [_wait_s(tgt, n, DeliveryError("x", permanent=False)) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert _wait_s(tgt, 20, DeliveryError("x", permanent=False)) == MAX_BACKOFF_S
    assert _wait_s(tgt, 1, DeliveryError("x", permanent=False, retry_after_s=7)) == 7


def test_a_webhook_is_labelled_without_secrets_and_retry_after_is_bounded() -> None:
    from email.message import Message

    from s3batch.pipelines.notify.webhook import _label, _retry_after

    assert _label("https://user:pw@h.example.com:8443/hook?token=s") == "https://h.example.com:8443/hook"
    headers = Message()
    headers["Retry-After"] = "2"
    assert _retry_after(headers) == 2.0
    headers.replace_header("Retry-After", "99999")
    assert _retry_after(headers) == MAX_BACKOFF_S
    headers.replace_header("Retry-After", "Wed, 21 Oct 2015 07:28:00 GMT")
    assert _retry_after(headers) is None
