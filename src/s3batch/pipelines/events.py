"""Object events from S3 notification records, SNS envelopes, EventBridge events and listings.

Everything is turned into one `ObjectEvent` with the *decoded* key, so filters, state and
storage calls never see the form-URL encoding of notification records
(docs/aws-contracts.md#event-notifications).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from s3batch.domain.objects import ObjectInfo

#: The notification test message S3 sends when a destination is configured.
TEST_EVENT = "s3:TestEvent"
#: eventName prefix of the events a pipeline acts on (no "s3:" prefix in records).
CREATED_PREFIX = "ObjectCreated:"
EVENTBRIDGE_CREATED = "Object Created"
#: Width sequencers are left-padded to; AWS sequencers are 16-18 hex digits today.
SEQUENCER_WIDTH = 64


class EventError(ValueError):
    """A payload that is neither S3 notification records, an SNS envelope nor EventBridge."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectEvent:
    """One object that appeared in a bucket."""

    bucket: str
    #: Decoded key (a `+` in a notification record is a space).
    key: str
    etag: str = ""
    size: int | None = None
    version_id: str | None = None
    #: Hex, as sent; None for listings (poller, backlog, replay).
    sequencer: str | None = None
    event_name: str = "ObjectCreated:Put"
    event_time: str = ""
    #: The EventBridge-shaped document content patterns are matched against.
    pattern_doc: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ident(self) -> str:
        """What tells two versions of one key apart: the version ID, else the ETag."""
        return self.version_id or self.etag


@dataclass(frozen=True, slots=True)
class Parsed:
    events: list[ObjectEvent]
    #: A test event or SNS subscription message: acknowledged, nothing to do.
    ignored: int = 0


def padded_sequencer(sequencer: str | None) -> str:
    """Sequencers compare as hex numbers of differing length: left-pad before comparing."""
    return (sequencer or "").strip().upper().rjust(SEQUENCER_WIDTH, "0")


def parse_payload(payload: Any) -> Parsed:
    """Any webhook body: `{"Records": [...]}`, an SNS envelope, a test event or EventBridge."""
    if not isinstance(payload, Mapping):
        raise EventError("expected a JSON object")
    if payload.get("Event") == TEST_EVENT:
        return Parsed([], ignored=1)
    if "Type" in payload and "Message" in payload:  # SNS over HTTP(S)
        return _parse_sns(payload)
    if "Records" in payload:
        return Parsed([e for r in _records(payload) if (e := from_record(r)) is not None])
    if "detail-type" in payload:
        event = from_eventbridge(payload)
        return Parsed([event] if event else [], ignored=0 if event else 1)
    raise EventError("not an S3 event notification or EventBridge event")


def _records(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    records = payload["Records"]
    if not isinstance(records, list) or not all(isinstance(r, Mapping) for r in records):
        raise EventError("Records must be a list of objects")
    return records


def _parse_sns(payload: Mapping[str, Any]) -> Parsed:
    if payload["Type"] != "Notification":  # SubscriptionConfirmation etc.: nothing to process
        return Parsed([], ignored=1)
    try:
        inner = json.loads(payload["Message"])
    except (TypeError, json.JSONDecodeError, RecursionError) as exc:
        raise EventError("SNS Message is not JSON (or nested too deeply)") from exc
    return parse_payload(inner)


#: S3 notification eventName suffixes and the EventBridge `detail.reason` for the same event,
#: so one content pattern on `reason` matches every source, and a handler sees the eventName
#: an S3 notification would carry whichever way the event came in.
_REASON_OF = {
    "Put": "PutObject",
    "Post": "POST Object",
    "Copy": "CopyObject",
    "CompleteMultipartUpload": "CompleteMultipartUpload",
}
_SUFFIX_OF = {reason: suffix for suffix, reason in _REASON_OF.items()}


def _suffix_of(reason: Any) -> str:
    if not isinstance(reason, str) or not reason:
        return "Put"
    return _SUFFIX_OF.get(reason, reason)


def from_record(record: Mapping[str, Any]) -> ObjectEvent | None:
    """An S3 notification record (AWS, MinIO, Ceph); None unless it is ObjectCreated:*."""
    name = str(record.get("eventName", "")).removeprefix("s3:")  # MinIO/Ceph send "s3:" names
    if not name.startswith(CREATED_PREFIX):
        return None
    try:
        s3 = record["s3"]
        obj = s3["object"]
        bucket = _name(s3["bucket"]["name"], "s3.bucket.name")
        raw_key = _name(obj["key"], "s3.object.key")
    except (KeyError, TypeError) as exc:
        raise EventError(f"record without s3.bucket.name / s3.object.key: {exc}") from exc
    event = ObjectEvent(
        bucket=bucket,
        key=unquote_plus(raw_key),
        etag=str(obj.get("eTag") or obj.get("etag") or "").strip('"'),
        size=_int(obj.get("size")),
        version_id=_optional(obj.get("versionId"), "s3.object.versionId"),
        sequencer=_optional(obj.get("sequencer"), "s3.object.sequencer"),
        event_name=name,
        event_time=str(record.get("eventTime", "")),
    )
    suffix = name.removeprefix(CREATED_PREFIX)
    return _with_doc(event, reason=_REASON_OF.get(suffix, suffix))


def from_eventbridge(payload: Mapping[str, Any]) -> ObjectEvent | None:
    """An EventBridge "Object Created" event; None for other detail-types."""
    if payload.get("source") != "aws.s3" or payload.get("detail-type") != EVENTBRIDGE_CREATED:
        return None
    try:
        detail = payload["detail"]
        obj = detail["object"]
        bucket = _name(detail["bucket"]["name"], "detail.bucket.name")
        key = _name(obj["key"], "detail.object.key")
    except (KeyError, TypeError) as exc:
        raise EventError(f"EventBridge event without detail.bucket.name / object.key: {exc}") from exc
    # AWS examples carry plain keys here (docs/aws-contracts.md#eventbridge-events); decoding
    # would corrupt a literal "+".
    return ObjectEvent(
        bucket=bucket,
        key=key,
        etag=str(obj.get("etag", "")).strip('"'),
        size=_int(obj.get("size")),
        version_id=_optional(obj.get("version-id"), "detail.object.version-id"),
        sequencer=_optional(obj.get("sequencer"), "detail.object.sequencer"),
        event_name=CREATED_PREFIX + _suffix_of(detail.get("reason")),
        event_time=str(payload.get("time", "")),
        pattern_doc=dict(payload),
    )


def from_listing(info: ObjectInfo) -> ObjectEvent:
    """An object found by the poller, backlog or replay (no sequencer: ordered by ETag only)."""
    return _with_doc(
        ObjectEvent(
            bucket=info.bucket,
            key=info.key,
            etag=info.etag,
            size=info.size,
            version_id=info.version_id,
            event_time=info.last_modified.astimezone(UTC).isoformat(),
        ),
        reason="PutObject",
    )


def _with_doc(event: ObjectEvent, reason: str) -> ObjectEvent:
    """Attach the EventBridge view of the event, so one content pattern filters every source."""
    obj: dict[str, Any] = {"key": event.key, "etag": event.etag}
    if event.size is not None:
        obj["size"] = event.size
    if event.version_id:
        obj["version-id"] = event.version_id
    if event.sequencer:
        obj["sequencer"] = event.sequencer
    doc = {
        "version": "0",
        "detail-type": EVENTBRIDGE_CREATED,
        "source": "aws.s3",
        "time": event.event_time,
        "resources": [f"arn:aws:s3:::{event.bucket}"],
        "detail": {"version": "0", "bucket": {"name": event.bucket}, "object": obj, "reason": reason},
    }
    return ObjectEvent(**{**_fields(event), "pattern_doc": doc})


def _fields(event: ObjectEvent) -> dict[str, Any]:
    return {name: getattr(event, name) for name in ObjectEvent.__dataclass_fields__}


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: 1e999 parses as inf
        return None


def _name(value: Any, where: str) -> str:
    """A bucket name or key: a non-empty string (str(None) would name an object "None")."""
    if not isinstance(value, str) or not value:
        raise EventError(f"{where} must be a non-empty string, got {value!r}"[:200])
    return value


def _optional(value: Any, where: str) -> str | None:
    """A version ID or sequencer: a string, or absent (None, "")."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise EventError(f"{where} must be a string, got {value!r}"[:200])
    return value


def to_record(event: ObjectEvent, region: str) -> dict[str, Any]:
    """An AWS-shaped notification record for a handler written for S3 notifications."""
    obj: dict[str, Any] = {
        "key": quote_plus(event.key, safe="/"),
        "size": event.size or 0,
        "eTag": event.etag,
        "sequencer": event.sequencer or "",
    }
    if event.version_id:
        obj["versionId"] = event.version_id
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": event.event_time or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "eventName": event.event_name,
        "userIdentity": {"principalId": "s3batch"},
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"x-amz-request-id": "s3batch", "x-amz-id-2": "s3batch"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "s3batch-pipeline",
            "bucket": {
                "name": event.bucket,
                "ownerIdentity": {"principalId": "s3batch"},
                "arn": f"arn:aws:s3:::{event.bucket}",
            },
            "object": obj,
        },
    }
