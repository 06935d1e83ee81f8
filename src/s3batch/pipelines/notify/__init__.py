"""Notifications when a pipeline file or a batch of files finishes: webhook (JSON POST) and email.

- `base`: the contract: a `Notice` (event, subject line, JSON payload), the `Channel` protocol
  (`send` one notice, raise `DeliveryError` saying whether trying again could help), and the
  target settings declared under `[[notify]]`.
- `config`: `[[notify]]` entries → `NotifyTarget`s, with ConfigErrors naming the field.
- `messages`: the payloads (pure): a file's outcome with its CSV-ingest summary, a batch's totals.
- `webhook`, `smtp`: the two channels; `memory`: a recording fake for unit tests.
- `dispatch`: the `Notifier`: delivers in the background with bounded retries and backoff, and
  reports every delivery's outcome to a recorder (the pipeline's state DB).

A delivery that fails never fails or delays the file: processing and disposition are already
committed when a notice is published.
"""

from __future__ import annotations

from s3batch.pipelines.notify.base import Channel, Delivery, DeliveryError, Notice, NotifyEvent, NotifyTarget
from s3batch.pipelines.notify.config import parse_targets
from s3batch.pipelines.notify.dispatch import Notifier

__all__ = [
    "Channel",
    "Delivery",
    "DeliveryError",
    "Notice",
    "Notifier",
    "NotifyEvent",
    "NotifyTarget",
    "parse_targets",
]
