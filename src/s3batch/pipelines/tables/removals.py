"""Removal events from a webhook body: `ObjectRemoved:*` and `LifecycleExpiration:*` records
(S3 notifications, also inside an SNS envelope) and EventBridge `Object Deleted` events.

The pipeline's own parser (pipelines/events.py) keeps only created events, which are what it
processes; the tables also need the removals (docs/aws-contracts.md#event-notifications,
#eventbridge-events). Keys are decoded the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from s3batch.pipelines.events import EventError, ObjectEvent
from s3batch.pipelines.tables.records import REMOVED_PREFIXES

EVENTBRIDGE_DELETED = "Object Deleted"
#: EventBridge `deletion-type` → the notification eventName suffix of the same removal.
_DELETION_SUFFIX = {"Permanently Deleted": "Delete", "Delete Marker Created": "DeleteMarkerCreated"}
#: EventBridge `reason` of an expiration (else the removal was a DeleteObject call).
_LIFECYCLE_REASON = "Lifecycle Expiration"


def removals(payload: Any) -> list[ObjectEvent]:
    """The removal events in a webhook body (none for bodies that carry only other events).
    Raises EventError for a removal record without a bucket or key."""
    if not isinstance(payload, Mapping):
        return []
    if "Type" in payload and "Message" in payload:  # SNS over HTTP(S)
        if payload["Type"] != "Notification":
            return []
        try:
            return removals(json.loads(payload["Message"]))
        except (TypeError, json.JSONDecodeError, RecursionError):
            return []  # parse_payload already refused this body
    records = payload.get("Records")
    if isinstance(records, list):
        return [e for r in records if isinstance(r, Mapping) and (e := _from_record(r)) is not None]
    if payload.get("source") == "aws.s3" and payload.get("detail-type") == EVENTBRIDGE_DELETED:
        return [_from_eventbridge(payload)]
    return []


def _from_record(record: Mapping[str, Any]) -> ObjectEvent | None:
    name = str(record.get("eventName", "")).removeprefix("s3:")  # MinIO/Ceph send "s3:" names
    if not name.startswith(REMOVED_PREFIXES):
        return None
    try:
        s3 = record["s3"]
        obj = s3["object"]
        bucket, key = _text(s3["bucket"]["name"]), _text(obj["key"])
    except (KeyError, TypeError) as exc:
        raise EventError(f"removal record without s3.bucket.name / s3.object.key: {exc}") from exc
    return ObjectEvent(
        bucket=bucket,
        key=unquote_plus(key),
        version_id=_optional(obj.get("versionId")),
        sequencer=_optional(obj.get("sequencer")),
        event_name=name,
        event_time=str(record.get("eventTime", "")),
    )


def _from_eventbridge(payload: Mapping[str, Any]) -> ObjectEvent:
    try:
        detail = payload["detail"]
        obj = detail["object"]
        bucket, key = _text(detail["bucket"]["name"]), _text(obj["key"])
    except (KeyError, TypeError) as exc:
        raise EventError(f"Object Deleted event without detail.bucket.name / object.key: {exc}") from exc
    family = "LifecycleExpiration" if detail.get("reason") == _LIFECYCLE_REASON else "ObjectRemoved"
    suffix = _DELETION_SUFFIX.get(str(detail.get("deletion-type", "")), "Delete")
    return ObjectEvent(
        bucket=bucket,
        key=key,  # plain in EventBridge, as in pipelines/events.py
        version_id=_optional(obj.get("version-id")),
        sequencer=_optional(obj.get("sequencer")),
        event_name=f"{family}:{suffix}",
        event_time=str(payload.get("time", "")),
    )


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise EventError(f"bucket name and key must be non-empty strings, got {value!r}"[:200])
    return value


def _optional(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
