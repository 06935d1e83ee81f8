"""Live object tables, the pure parts: the `[tables]` section, removal events, and what one
event does to an inventory row (docs/pipeline-tables.md, "Consistency rules")."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from s3batch.errors import ConfigError
from s3batch.pipelines.config import parse_config
from s3batch.pipelines.events import ObjectEvent
from s3batch.pipelines.tables.config import Backend, parse_tables
from s3batch.pipelines.tables.records import (
    Action,
    Change,
    Current,
    Origin,
    RecordType,
    Tombstone,
    change_of,
    decide,
)
from s3batch.pipelines.tables.removals import removals

BASE = Path("/srv/pipelines")
T0 = datetime(2024, 5, 1, tzinfo=UTC)


def tables(**section: Any) -> Any:
    return parse_tables(section, BASE, "in-gest.v2", source="staging")


def test_defaults_and_names() -> None:
    cfg = tables()
    assert cfg.backend is Backend.SQLITE and cfg.journal and cfg.inventory
    assert cfg.path == BASE / "in-gest.v2.tables.sqlite3"
    assert cfg.table("journal") == "in_gest_v2_journal"
    assert cfg.reconcile_interval_s == 86_400 and cfg.reconcile_grace_s == 60
    assert tables(reconcile_interval_s=0).reconcile_interval_s is None
    assert parse_tables(None, BASE, "p", source="s") is None
    whole = parse_config({"source": "staging", "function": "m:f", "on_success": "leave", "tables": {}}, BASE)
    assert whole.tables is not None and whole.tables.table_prefix == "pipeline"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"backend": "mysql"}, "tables.backend must be one of sqlite, postgresql, parquet"),
        ({"jornal": True}, "unknown key 'jornal'"),
        ({"journal": False, "inventory": False}, "both false"),
        ({"journal": "yes"}, "tables.journal must be true or false"),
        ({"table_prefix": "1bad"}, "tables.table_prefix"),
        ({"table_prefix": "a-b"}, "tables.table_prefix"),
        ({"backend": "postgresql"}, "tables.url is required"),
        ({"backend": "postgresql", "url": "postgresql://u:secret@h/db"}, "must not contain a password"),
        ({"backend": "postgresql", "url": "postgresql://u@h/db", "path": "x"}, "postgresql takes url"),
        ({"url": "postgresql://u@h/db"}, "tables.url is for backend = 'postgresql'"),
        ({"backend": "parquet"}, "tables.bucket is required"),
        ({"backend": "parquet", "bucket": "staging"}, "must not be the pipeline's source bucket"),
        ({"bucket": "x"}, "for backend = 'parquet'"),
        ({"reconcile_interval_s": -1}, "tables.reconcile_interval_s must be 0 or more"),
        ({"flush_interval_s": 0}, "tables.flush_interval_s must be more than 0"),
        ({"snapshot_interval_s": "5"}, "must be a number of seconds"),
    ],
)
def test_bad_sections_name_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        tables(**section)
    assert message in str(caught.value)


def test_parquet_and_postgresql_sections() -> None:
    cfg = tables(backend="parquet", bucket="analytics", prefix="/t/x/", flush_interval_s=5)
    assert (cfg.bucket, cfg.prefix, cfg.flush_interval_s) == ("analytics", "t/x", 5.0)
    pg = tables(backend="postgresql", url="postgresql://s3batch@db:5432/meta?sslmode=require")
    assert pg.path is None and pg.url is not None


def record(name: str, key: str = "a+b.txt", **obj: Any) -> dict[str, Any]:
    return {"eventName": name, "eventTime": "2024-05-01T00:00:00.000Z",
            "s3": {"bucket": {"name": "staging"}, "object": {"key": key, **obj}}}  # fmt: skip


def test_removal_records_sns_and_eventbridge() -> None:
    body = {"Records": [record("ObjectCreated:Put", eTag="e"), record("ObjectRemoved:Delete", sequencer="0A"),
                        record("s3:ObjectRemoved:DeleteMarkerCreated", versionId="v2"),
                        record("LifecycleExpiration:Delete"), record("ObjectTagging:Put")]}  # fmt: skip
    found = removals(body)
    assert [(e.key, e.event_name, e.sequencer, e.version_id) for e in found] == [
        ("a b.txt", "ObjectRemoved:Delete", "0A", None),
        ("a b.txt", "ObjectRemoved:DeleteMarkerCreated", None, "v2"),
        ("a b.txt", "LifecycleExpiration:Delete", None, None),
    ]
    sns = {"Type": "Notification", "Message": json.dumps(body)}
    assert removals(sns) == found
    eventbridge = {
        "source": "aws.s3", "detail-type": "Object Deleted", "time": "2024-05-01T00:00:00Z",
        "detail": {"bucket": {"name": "staging"}, "reason": "Lifecycle Expiration",
                   "deletion-type": "Delete Marker Created",
                   "object": {"key": "a+b", "version-id": "v9", "sequencer": "1F"}},
    }  # fmt: skip
    (event,) = removals(eventbridge)
    assert (event.key, event.event_name, event.version_id) == (
        "a+b",
        "LifecycleExpiration:DeleteMarkerCreated",
        "v9",
    )
    assert removals({"Event": "s3:TestEvent"}) == [] and removals([1]) == []


def change(kind: RecordType, sequencer: str | None, **fields: Any) -> Change:
    name = "ObjectCreated:Put" if kind is RecordType.CREATE else "ObjectRemoved:Delete"
    values: dict[str, Any] = {"origin": Origin.NOTIFICATION, "e_tag": "e2", "size": 2, **fields}
    return Change(bucket="b", key="k", record_type=kind, event_name=values.pop("event_name", name),
                  sequencer=sequencer, **values)  # fmt: skip


ROW = Current(version_id=None, e_tag="e1", size=1, sequencer="0B")


def test_sequencers_order_events_per_key() -> None:
    create, delete = RecordType.CREATE, RecordType.DELETE
    assert decide(change(create, "0C"), ROW, None) is Action.UPSERT
    assert decide(change(create, "0B"), ROW, None) is Action.SKIP  # the same event again
    assert decide(change(create, "0A"), ROW, None) is Action.SKIP  # older
    assert decide(change(create, "A"), ROW, None) is Action.SKIP  # hex of another width: padded
    assert decide(change(create, "00C"), ROW, None) is Action.UPSERT
    assert decide(change(delete, "0C"), ROW, None) is Action.DELETE
    tomb = Tombstone("20", T0)
    assert decide(change(create, "1F"), None, tomb) is Action.SKIP  # deleted after this create
    assert decide(change(create, "21"), None, tomb) is Action.UPSERT
    assert decide(change(create, "01"), None, None) is Action.UPSERT


def test_versioned_deletes() -> None:
    row = Current(version_id="v2", e_tag="e2", size=2, sequencer="01")
    noncurrent = change(RecordType.DELETE, "02", version_id="v1")
    assert decide(noncurrent, row, None) is Action.SKIP
    assert decide(change(RecordType.DELETE, "02", version_id="v2"), row, None) is Action.DELETE
    marker = change(RecordType.DELETE, "02", version_id="m1", event_name="ObjectRemoved:DeleteMarkerCreated")
    assert decide(marker, row, None) is Action.DELETE


def test_listed_objects_and_the_pipelines_own_removals() -> None:
    listed = change(RecordType.CREATE, None, origin=Origin.LISTING, event_time=T0)
    assert decide(listed, None, None) is Action.UPSERT
    assert decide(listed, Current(None, "e2", 2, "05"), None) is Action.SKIP  # nothing new
    assert decide(listed, ROW, None) is Action.UPSERT  # another version than the row shows
    deleted_later = Tombstone("05", T0 + timedelta(seconds=1))
    assert decide(listed, None, deleted_later) is Action.SKIP
    assert decide(listed, None, Tombstone("05", T0 - timedelta(seconds=1))) is Action.UPSERT
    own = change(RecordType.DELETE, None, origin=Origin.PIPELINE, e_tag="e1")
    assert decide(own, ROW, None) is Action.DELETE
    assert decide(own, Current(None, "e9", 1, None), None) is Action.SKIP  # overwritten meanwhile
    assert decide(own, None, None) is Action.SKIP


def test_change_of_events() -> None:
    event = ObjectEvent(bucket="b", key="k", etag="", event_name="ObjectTagging:Put")
    assert change_of(event, Origin.NOTIFICATION) is None
    made = change_of(ObjectEvent(bucket="b", key="k", etag="e", event_time="2024-05-01T00:00:00.000Z"),
                     Origin.LISTING)  # fmt: skip
    assert made is not None and made.event_time == T0 and made.record_type is RecordType.CREATE
    bad_time = change_of(ObjectEvent(bucket="b", key="k", event_time="yesterday"), Origin.LISTING)
    assert bad_time is not None and bad_time.event_time is None and bad_time.e_tag is None
