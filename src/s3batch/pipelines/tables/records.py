"""What one event does to the tables: a journal row (`Change`) and the inventory decision.

Pure: no I/O. Out-of-order events are resolved per key by the S3 sequencer, as the pipeline
resolves them for processing (docs/aws-contracts.md#event-notifications): the inventory keeps,
per key, the highest sequencer it applied (on the object's row, or on a tombstone once the key
is deleted); an event at or below it changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from s3batch.pipelines.events import CREATED_PREFIX, ObjectEvent, padded_sequencer

#: eventName prefixes of events that remove an object's current version.
REMOVED_PREFIXES = ("ObjectRemoved:", "LifecycleExpiration:")
#: The removal that deletes one version for good (the other kind creates a delete marker).
PERMANENT_DELETE_SUFFIX = ":Delete"
#: event_name of journal rows a reconciling listing writes (not S3 event names: s3batch's).
RECONCILE_ADDED = "s3batch:ReconcileAdded"
RECONCILE_CHANGED = "s3batch:ReconcileChanged"
RECONCILE_REMOVED = "s3batch:ReconcileRemoved"
#: event_name of the pipeline's own removal (archive, delete, move to the error bucket).
PIPELINE_REMOVED = "ObjectRemoved:Delete"


class RecordType(StrEnum):
    CREATE = "CREATE"
    DELETE = "DELETE"


class Origin(StrEnum):
    """Where a journal row came from."""

    #: An S3 event notification or EventBridge event (webhook).
    NOTIFICATION = "notification"
    #: An object a listing of the pipeline found (poller, backlog, replay).
    LISTING = "listing"
    #: A difference a reconciling listing fixed.
    RECONCILE = "reconcile"
    #: The pipeline moved or deleted the object itself (its on_success / error disposition).
    PIPELINE = "pipeline"


class Action(StrEnum):
    UPSERT = "upsert"
    DELETE = "delete"
    SKIP = "skip"


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """One journal row (before it is stored): an object created or removed."""

    bucket: str
    key: str
    record_type: RecordType
    event_name: str
    origin: Origin
    version_id: str | None = None
    size: int | None = None
    e_tag: str | None = None
    storage_class: str | None = None
    #: When S3 says it happened (eventTime; a listing's LastModified); None when unknown.
    event_time: datetime | None = None
    #: As sent; None when the source has none (listings, the pipeline's own removals).
    sequencer: str | None = None


@dataclass(frozen=True, slots=True)
class Current:
    """The inventory's row for a key, as far as deciding needs it."""

    version_id: str | None
    e_tag: str | None
    size: int | None
    sequencer: str | None


@dataclass(frozen=True, slots=True)
class Tombstone:
    """A deleted key's last sequencer and when it was deleted."""

    sequencer: str | None
    deleted_at: datetime | None


def record_type(event_name: str) -> RecordType | None:
    if event_name.startswith(CREATED_PREFIX):
        return RecordType.CREATE
    if event_name.startswith(REMOVED_PREFIXES):
        return RecordType.DELETE
    return None


def parse_time(text: str) -> datetime | None:
    """An ISO 8601 time (`2024-01-01T00:00:00.000Z`) in UTC; None when absent or unreadable."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def change_of(event: ObjectEvent, origin: Origin) -> Change | None:
    """The journal row of an event; None for an event that neither creates nor removes."""
    kind = record_type(event.event_name)
    if kind is None:
        return None
    return Change(
        bucket=event.bucket, key=event.key, record_type=kind, event_name=event.event_name, origin=origin,
        version_id=event.version_id, size=event.size, e_tag=event.etag or None,
        event_time=parse_time(event.event_time), sequencer=event.sequencer,
    )  # fmt: skip


def watermark(row: Current | None, tomb: Tombstone | None) -> str:
    """The highest sequencer applied to the key (padded; "" when none)."""
    seqs = [padded_sequencer(s) for s in (row and row.sequencer, tomb and tomb.sequencer) if s]
    return max(seqs, default="")


def same_object(row: Current, change: Change) -> bool:
    """Whether `row` shows the version `change` is about (by version ID where both have one)."""
    if row.version_id and change.version_id:
        return row.version_id == change.version_id
    return bool(change.e_tag) and row.e_tag == change.e_tag


def decide(change: Change, row: Current | None, tomb: Tombstone | None) -> Action:
    """What `change` does to the key's inventory row."""
    if change.sequencer:
        high = watermark(row, tomb)
        if high and padded_sequencer(change.sequencer) <= high:
            return Action.SKIP  # older than what the row shows, or the same event again
        if change.record_type is RecordType.CREATE:
            return Action.UPSERT
        return Action.SKIP if _noncurrent_removed(change, row) else Action.DELETE
    if change.record_type is RecordType.CREATE:
        return _observed(change, row, tomb)
    if row is None:
        return Action.SKIP
    if change.origin is Origin.PIPELINE:  # only if the row still shows what the pipeline removed
        return Action.DELETE if same_object(row, change) else Action.SKIP
    return Action.SKIP if _noncurrent_removed(change, row) else Action.DELETE


def _noncurrent_removed(change: Change, row: Current | None) -> bool:
    """A versioned delete of a version the row does not show: the current version stays."""
    return (
        change.event_name.endswith(PERMANENT_DELETE_SUFFIX)
        and bool(change.version_id)
        and row is not None
        and bool(row.version_id)
        and row.version_id != change.version_id
    )


def _observed(change: Change, row: Current | None, tomb: Tombstone | None) -> Action:
    """An object a listing found (no sequencer): new, or a version the row does not show yet."""
    if tomb is not None and tomb.deleted_at is not None and change.event_time is not None:
        if change.event_time <= tomb.deleted_at:
            return Action.SKIP  # deleted after this listing saw it
    if row is not None and row.e_tag == change.e_tag and row.size == change.size:
        return Action.SKIP
    return Action.UPSERT
