"""The Notifier: hands each notice to the targets that want its event, in the background.

Each (notice, target) pair is one asyncio task that tries up to `attempts` times, waiting
`backoff_s`, then twice that, ... (at most MAX_BACKOFF_S; a receiver's Retry-After wins) between
tries; a permanent failure stops at once. Its outcome goes to the recorder either way. At most
MAX_PENDING deliveries wait at once: past that a notice is recorded as failed, unsent, rather
than holding memory or the pipeline. `close()` lets pending deliveries finish for up to
CLOSE_TIMEOUT_S, then cancels and records the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from s3batch.pipelines.notify.base import (
    MAX_BACKOFF_S,
    Channel,
    Delivery,
    DeliveryError,
    Notice,
    NotifyEvent,
    NotifyTarget,
    SmtpSettings,
)

log = logging.getLogger(__name__)

#: Deliveries in flight or waiting to retry before new notices are refused (recorded as failed).
MAX_PENDING = 1000
#: Seconds `close()` waits for pending deliveries before cancelling them.
CLOSE_TIMEOUT_S = 60.0

Recorder = Callable[[Delivery], None]


def open_channel(target: NotifyTarget) -> Channel:
    if isinstance(target.channel, SmtpSettings):
        from s3batch.pipelines.notify.smtp import SmtpChannel

        return SmtpChannel(target.channel, target.timeout_s)
    from s3batch.pipelines.notify.webhook import WebhookChannel

    return WebhookChannel(target.channel, target.timeout_s)


class Notifier:
    def __init__(self, routes: Sequence[tuple[NotifyTarget, Channel]], record: Recorder) -> None:
        self._routes = tuple(routes)
        self._record = record
        self._pending: set[asyncio.Task[None]] = set()

    @classmethod
    def for_targets(cls, targets: Sequence[NotifyTarget], record: Recorder) -> Notifier:
        return cls([(t, open_channel(t)) for t in targets], record)

    def wants(self, event: NotifyEvent) -> bool:
        return any(event in target.events for target, _ in self._routes)

    def publish(self, notice: Notice) -> None:
        """Start delivering (returns at once; needs a running event loop)."""
        for target, channel in self._routes:
            if notice.event not in target.events:
                continue
            if len(self._pending) >= MAX_PENDING:
                self._done(channel, notice, False, 0, f"not sent: {MAX_PENDING} deliveries already pending")
                continue
            task = asyncio.create_task(self._deliver(target, channel, notice))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _deliver(self, target: NotifyTarget, channel: Channel, notice: Notice) -> None:
        attempt = 0
        try:
            for attempt in range(1, target.attempts + 1):
                try:
                    await channel.send(notice)
                except DeliveryError as exc:
                    if exc.permanent or attempt == target.attempts:
                        self._done(channel, notice, False, attempt, str(exc))
                        return
                    await asyncio.sleep(_wait_s(target, attempt, exc))
                else:
                    self._done(channel, notice, True, attempt)
                    return
        except asyncio.CancelledError:
            self._done(channel, notice, False, attempt, "cancelled: the pipeline stopped first")
            raise

    def _done(
        self, channel: Channel, notice: Notice, delivered: bool, attempts: int, error: str = ""
    ) -> None:
        if not delivered:
            log.warning("notification %r to %s failed after %d attempt(s): %s", notice.subject, channel.label,
                        attempts, error)  # fmt: skip
        try:
            self._record(Delivery(channel.label, notice.event, notice.subject, delivered, attempts, error))
        except Exception:  # a broken record must not break the pipeline either
            log.exception("cannot record the notification outcome")

    async def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        if not self._pending:
            return
        pending = set(self._pending)
        _, late = await asyncio.wait(pending, timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)


def _wait_s(target: NotifyTarget, attempt: int, exc: DeliveryError) -> float:
    if exc.retry_after_s is not None:
        return max(0.0, exc.retry_after_s)
    return float(min(target.backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S))
