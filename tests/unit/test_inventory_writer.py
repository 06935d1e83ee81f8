"""Writing S3 Inventory reports (docs/inventory.md): field order, CSV rows, schema strings,
manifest.json, symlink.txt, the key layout and the configuration checks.

The samples in tests/fixtures/inventory are written by hand in AWS's format: fileSchema order
and schema strings as in AWS's "Locating your inventory list" examples, every CSV field
quoted, keys URL-encoded with "+" for a space and "/" kept, timestamps in UTC with
milliseconds, manifest.json pretty-printed as AWS's (Jackson's) printer does."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest

from s3batch.domain.inventory import (
    DataFile,
    InventoryFormat,
    csv_columns,
    parse_csv_line,
    parse_manifest_json,
)
from s3batch.domain.inventory_writer import (
    OPTIONAL_FIELDS,
    IncludedVersions,
    InventoryConfig,
    ObjectFacts,
    checked_schedules,
    encode_key,
    file_schema,
    inventory_config,
    iso_millis,
    job_manifest,
    manifest_checksum,
    manifest_json,
    report_keys,
    row_format,
    scheduled_inventory,
    symlink_txt,
)
from s3batch.domain.objects import ObjectInfo
from s3batch.errors import ConfigError

SAMPLES = Path(__file__).parent.parent / "fixtures" / "inventory"
#: AWS's fileSchema example (every field it lists, all versions).
AWS_CSV_SCHEMA = (
    "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass, "
    "IsMultipartUploaded, ReplicationStatus, EncryptionStatus, ObjectLockRetainUntilDate, ObjectLockMode, "
    "ObjectLockLegalHoldStatus, IntelligentTieringAccessTier, BucketKeyStatus, ChecksumAlgorithm, "
    "ObjectAccessControlList, ObjectOwner"
)
AWS_ORC_SCHEMA = (
    "struct<bucket:string,key:string,version_id:string,is_latest:boolean,is_delete_marker:boolean,"
    "size:bigint,last_modified_date:timestamp,e_tag:string,storage_class:string,is_multipart_uploaded:boolean,"
    "replication_status:string,encryption_status:string,object_lock_retain_until_date:timestamp,"
    "object_lock_mode:string,object_lock_legal_hold_status:string,intelligent_tiering_access_tier:string,"
    "bucket_key_status:string,checksum_algorithm:string,object_access_control_list:string,object_owner:string>"
)
AWS_PARQUET_SCHEMA = (
    "message s3.inventory { required binary bucket (UTF8); required binary key (UTF8); "
    "optional binary version_id (UTF8); optional boolean is_latest; optional boolean is_delete_marker; "
    "optional int64 size; optional int64 last_modified_date (TIMESTAMP_MILLIS); "
    "optional binary e_tag (UTF8); optional binary storage_class (UTF8); "
    "optional boolean is_multipart_uploaded; optional binary replication_status (UTF8); "
    "optional binary encryption_status (UTF8); "
    "optional int64 object_lock_retain_until_date (TIMESTAMP_MILLIS); "
    "optional binary object_lock_mode (UTF8); optional binary object_lock_legal_hold_status (UTF8); "
    "optional binary intelligent_tiering_access_tier (UTF8); optional binary bucket_key_status (UTF8); "
    "optional binary checksum_algorithm (UTF8); optional binary object_access_control_list (UTF8); "
    "optional binary object_owner (UTF8);}"
)
NOON = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def config(**over: Any) -> InventoryConfig:
    args: dict[str, Any] = {"bucket": "inv-src", "destination": "arn:aws:s3:::inv-dest", "config_id": "daily"}
    args.update(over)
    return inventory_config(**args)


def info(key: str, **over: Any) -> ObjectInfo:
    body = f"body of {key}".encode()
    values: dict[str, Any] = {
        "bucket": "inv-src",
        "key": key,
        "size": len(body),
        "etag": hashlib.md5(body).hexdigest(),
        "last_modified": NOON,
    }
    values.update(over)
    return ObjectInfo(**values)


# -- field order and schema strings --------------------------------------------------------------


def test_every_field_in_any_order_comes_out_in_aws_order() -> None:
    documented = AWS_CSV_SCHEMA.split(", ")
    shuffled = list(reversed(documented[5:]))
    c = config(versions="All", fields=shuffled)
    assert [f.name for f in c.fields] == documented
    assert file_schema(InventoryFormat.CSV, c.fields) == AWS_CSV_SCHEMA
    assert file_schema(InventoryFormat.ORC, c.fields) == AWS_ORC_SCHEMA
    assert file_schema(InventoryFormat.PARQUET, c.fields) == AWS_PARQUET_SCHEMA


def test_version_fields_only_when_every_version_is_listed() -> None:
    current = config(fields=["ETag", "Size"])
    assert file_schema(InventoryFormat.CSV, current.fields) == "Bucket, Key, Size, ETag"
    every = config(versions="all", fields=["size"])  # names match case-insensitively
    assert every.versions is IncludedVersions.ALL
    assert (
        file_schema(InventoryFormat.CSV, every.fields)
        == "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size"
    )


def test_lifecycle_expiration_date_is_last() -> None:
    assert OPTIONAL_FIELDS[-1] == "LifecycleExpirationDate"
    assert config(fields=["LifecycleExpirationDate", "Size"]).optional_fields == (
        "Size",
        "LifecycleExpirationDate",
    )


# -- CSV rows --------------------------------------------------------------------------------------


def test_current_rows_match_the_aws_sample_byte_for_byte() -> None:
    keys = [
        "100%.csv",
        'comma,and"quote.txt',
        "deep/er/x.bin",
        "plain.txt",
        "plus+sign.txt",
        "with space.txt",
    ]
    keys.append("ünïcödé/ключ.txt")
    fmt = row_format(
        config(fields=["Size", "LastModifiedDate", "ETag", "StorageClass", "IsMultipartUploaded"]).fields
    )
    written = "".join(fmt.csv_line(ObjectFacts(info(k))) for k in keys)
    assert written == (SAMPLES / "aws_current.csv").read_text(encoding="utf-8")


def test_version_rows_with_head_fields_match_the_aws_sample() -> None:
    names = "Size LastModifiedDate ETag StorageClass IsMultipartUploaded ReplicationStatus EncryptionStatus"
    names += (
        " ObjectLockRetainUntilDate ObjectLockMode ObjectLockLegalHoldStatus IntelligentTieringAccessTier"
    )
    names += " BucketKeyStatus"
    c = config(versions="All", fields=names.split())
    latest = info(
        "doc a.txt",
        version_id="3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY",
        size=3,
        etag="c81e728d9d4c2f636f067f89cc14862c",
        last_modified=datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC),
    )
    older = info(
        "doc a.txt",
        version_id="null",
        size=3,
        etag="e4da3b7fbbce2345d7772b0674a318d5-2",
        storage_class="STANDARD_IA",
        is_latest=False,
    )
    marker = info(
        "gone.txt",
        version_id="QUpfdndhfd8438MNFDN93jdnJFkdmqnh893",
        size=0,
        etag="",
        last_modified=datetime(2024, 5, 2, 8, 30, 15, 250_999, tzinfo=UTC),
        is_delete_marker=True,
    )
    locked = info(
        "doc a.txt",
        encryption="SSE-KMS",
        bucket_key_enabled=True,
        replication_status="COMPLETED",
        lock_mode="GOVERNANCE",
        lock_retain_until=datetime(2030, 1, 1, tzinfo=UTC),
        legal_hold="ON",
    )
    facts = [
        ObjectFacts(latest, info("doc a.txt", encryption="SSE-S3")),
        ObjectFacts(older, locked),
        ObjectFacts(marker),
    ]
    written = "".join(map(row_format(c.fields).csv_line, facts))
    assert written == (SAMPLES / "aws_versions.csv").read_text(encoding="utf-8")
    # With Object Lock on the store, "no hold" is written as AWS writes it: Off.
    line = row_format(c.fields, lock_known=True).csv_line(facts[0])
    assert line.split(",")[14] == '"Off"'


def test_written_rows_read_back_with_s3batchs_own_reader() -> None:
    c = config(versions="All", fields=["Size"])
    columns = csv_columns(file_schema(InventoryFormat.CSV, c.fields))
    fmt = row_format(c.fields)
    row = parse_csv_line(fmt.csv_line(ObjectFacts(info("a b/ü+c,d.txt", version_id="v1"))), columns, "w")
    assert row is not None and (row.bucket, row.version_id) == ("inv-src", "v1")
    assert unquote_plus(row.raw_key) == "a b/ü+c,d.txt"
    marker = ObjectFacts(info("k", version_id="v2", is_delete_marker=True))
    assert parse_csv_line(fmt.csv_line(marker), columns, "w") is None


@pytest.mark.parametrize(
    ("key", "encoded"),
    [
        ("a b", "a+b"),
        ("a+b", "a%2Bb"),
        ("dir/ü", "dir/%C3%BC"),
        ("x,y", "x%2Cy"),
        ('q"', "q%22"),
        ("%", "%25"),
    ],
)
def test_keys_are_url_encoded_as_s3_encodes_them(key: str, encoded: str) -> None:
    assert encode_key(key) == encoded


def test_timestamps_are_utc_with_milliseconds() -> None:
    assert iso_millis(datetime(2024, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)) == "2024-01-02T03:04:05.678Z"
    from datetime import timedelta, timezone

    east = timezone(timedelta(hours=2))
    assert iso_millis(datetime(2024, 1, 2, 3, 0, tzinfo=east)) == "2024-01-02T01:00:00.000Z"


def test_values_for_columnar_files_keep_the_plain_key_and_types() -> None:
    fmt = row_format(
        config(fields=["Size", "LastModifiedDate", "IsMultipartUploaded", "EncryptionStatus"]).fields
    )
    assert fmt.values(ObjectFacts(info("a b", size=0))) == ("inv-src", "a b", 0, NOON, False, None)


# -- manifest.json, checksum, symlink.txt, layout ------------------------------------------------


def test_manifest_json_matches_the_aws_sample_and_parses() -> None:
    names = "Size LastModifiedDate ETag StorageClass IsMultipartUploaded ReplicationStatus EncryptionStatus"
    names += (
        " ObjectLockRetainUntilDate ObjectLockMode ObjectLockLegalHoldStatus IntelligentTieringAccessTier"
    )
    names += " BucketKeyStatus"
    c = config(destination="arn:aws:s3:::inv-dest/inv", versions="All", fields=names.split())
    files = [
        DataFile("inv/inv-src/daily/data/939c6d46-85a9-4ba8-87bd-9db705a579ce.csv.gz", 2147483647,
                 "f11166069f1990abeb9c97ace9cdfabc"),
        DataFile("inv/inv-src/daily/data/d794c570-95bb-4271-9128-26023c8b4900.csv.gz", 56291,
                 "5925f4e78e1695c2d020b9f6e2b1c4d7"),
    ]  # fmt: skip
    body = manifest_json(c, datetime.fromtimestamp(1514944800, UTC), files)
    assert body == (SAMPLES / "aws_manifest.json").read_bytes()
    parsed = parse_manifest_json(body)
    assert (parsed.source_bucket, parsed.destination_bucket, parsed.files) == (
        "inv-src",
        "inv-dest",
        tuple(files),
    )
    assert manifest_checksum(body) == hashlib.md5(body).hexdigest().encode()


def test_symlink_lists_every_data_file_uri() -> None:
    files = [DataFile("p/d/a.csv.gz", 1, "x"), DataFile("p/d/b.csv.gz", 2, "y")]
    assert symlink_txt("dest", files) == b"s3://dest/p/d/a.csv.gz\ns3://dest/p/d/b.csv.gz\n"


def test_report_layout() -> None:
    started = datetime(2016, 11, 6, 21, 32, 59, tzinfo=UTC)
    keys = report_keys(config(destination="arn:aws:s3:::dest/inv/"), started)
    assert keys.manifest == "inv/inv-src/daily/2016-11-06T21-32Z/manifest.json"
    assert keys.checksum == "inv/inv-src/daily/2016-11-06T21-32Z/manifest.checksum"
    assert keys.symlink == "inv/inv-src/daily/hive/dt=2016-11-06-21-32/symlink.txt"
    assert keys.data_file("u-1", InventoryFormat.PARQUET) == "inv/inv-src/daily/data/u-1.parquet"
    assert keys.data_file("u-1", InventoryFormat.CSV) == "inv/inv-src/daily/data/u-1.csv.gz"
    bare = report_keys(config(destination="dest"), started)
    assert bare.manifest == "inv-src/daily/2016-11-06T21-32Z/manifest.json"


def test_job_manifest_names_the_inventory_format() -> None:
    assert job_manifest("d", "p/manifest.json", "e") == {
        "Spec": {"Format": "S3InventoryReport_CSV_20161130"},
        "Location": {"ObjectArn": "arn:aws:s3:::d/p/manifest.json", "ETag": "e"},
    }


# -- configuration checks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"fields": ["Size", "Colour"]}, "fields: unknown field 'Colour'"),
        ({"fields": ["ObjectLockEventHoldStatus"]}, "ObjectLockEventHoldStatus is not supported"),
        ({"file_format": "XML"}, "format: 'XML' is not one of CSV, ORC, Parquet"),
        ({"versions": "Some"}, "versions: 'Some' is not one of Current, All"),
        ({"config_id": "a/b"}, "id: 'a/b' must be"),
        ({"config_id": "x" * 65}, "id: "),
        ({"destination": "arn:aws:s3:::"}, "destination: expected arn:aws:s3:::bucket"),
        ({"destination": "arn:aws:sqs:us-east-1:1:q"}, "destination: expected"),
        ({"bucket": "a/b"}, "bucket: expected a bucket name"),
    ],
)
def test_bad_settings_are_named(over: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        config(**over)
    assert message in str(exc.value)


def test_destination_prefix_and_defaults() -> None:
    c = config(destination="arn:aws:s3:::dest/a/b/", prefix="logs/")
    assert (c.destination_bucket, c.destination_prefix, c.prefix) == ("dest", "a/b", "logs/")
    assert (c.file_format, c.versions, c.optional_fields) == (
        InventoryFormat.CSV,
        IncludedVersions.CURRENT,
        (),
    )
    assert not c.needs_head and config(fields=["EncryptionStatus"]).needs_head


def test_schedule_entry() -> None:
    entry = {"bucket": "b", "destination": "arn:aws:s3:::d", "id": "x", "format": "ORC", "fields": ["ETag"],
             "interval_hours": 0.5}  # fmt: skip
    s = scheduled_inventory(entry, "server.toml [[inventories]] #1")
    assert (s.interval_s, s.config.file_format, s.config.optional_fields) == (
        1800.0,
        InventoryFormat.ORC,
        ("ETag",),
    )
    assert scheduled_inventory({"bucket": "b", "destination": "d", "id": "x"}, "w").interval_s == 24 * 3600


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"destination": "d", "id": "x"}, "#2: bucket must be a non-empty string"),
        ({"bucket": "b", "destination": "d", "id": "x", "interval_hours": 0}, "#2: interval_hours must be"),
        ({"bucket": "b", "destination": "d", "id": "x", "interval_hours": True}, "interval_hours must be"),
        ({"bucket": "b", "destination": "d", "id": "x", "fields": "Size"}, "#2: fields must be a list"),
        ({"bucket": "b", "destination": "d", "id": "x", "schedule": "Daily"}, "unknown field(s) schedule"),
        ({"bucket": "b", "destination": "d", "id": "x", "format": "XML"}, "#2: format: 'XML'"),
        ("bucket", "#2: expected a table"),
    ],
)
def test_bad_schedule_entries_are_named(entry: Any, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        scheduled_inventory(entry, "server.toml [[inventories]] #2")
    assert message in str(exc.value)


def test_two_schedules_writing_the_same_report_are_refused() -> None:
    one = scheduled_inventory({"bucket": "b", "destination": "d", "id": "x"}, "w")
    other = scheduled_inventory({"bucket": "b", "destination": "d/other", "id": "x"}, "w")
    assert checked_schedules([one, other], "w") == (one, other)
    with pytest.raises(ConfigError, match="two inventories of bucket b share id 'x'"):
        checked_schedules([one, one], "w")
