"""S3 Inventory manifest.json and rows (docs/aws-contracts.md#inventory-reports) → normalized manifest
rows."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

import pytest

from s3batch.domain.inventory import (
    COLUMNAR_NAMES,
    InventoryFormat,
    InventoryRow,
    columnar_row,
    csv_columns,
    csv_manifest_line,
    parse_csv_line,
    parse_manifest_json,
)
from s3batch.domain.manifest import CsvLayout, CsvManifestParser, RawLine
from s3batch.errors import ManifestError

SCHEMA = (
    "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, StorageClass, "
    "IsMultipartUploaded, ReplicationStatus, EncryptionStatus"
)


def manifest_doc(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "sourceBucket": "src",
        "destinationBucket": "arn:aws:s3:::inv-dest",
        "version": "2016-11-30",
        "creationTimestamp": "1514944800000",
        "fileFormat": "CSV",
        "fileSchema": SCHEMA,
        "files": [{"key": "inv/src/cfg/data/a.csv.gz", "size": 12, "MD5checksum": "ABCDEF"}],
    }
    doc.update(over)
    return doc


def test_manifest_json_is_parsed() -> None:
    m = parse_manifest_json(json.dumps(manifest_doc()).encode())
    assert m.source_bucket == "src"
    assert m.destination_bucket == "inv-dest"
    assert m.file_format is InventoryFormat.CSV
    assert m.files[0].key == "inv/src/cfg/data/a.csv.gz"
    assert m.files[0].md5 == "abcdef"  # compared case-insensitively


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (json.dumps(manifest_doc(fileFormat="XML")).encode(), "fileFormat 'XML'"),
        (json.dumps(manifest_doc(fileSchema=None)).encode(), "fileSchema is missing"),
        (json.dumps(manifest_doc(files=[])).encode(), "files must be a non-empty list"),
        (json.dumps(manifest_doc(files=[{"key": "k", "size": 1}])).encode(), "(k) has no MD5checksum"),
        (json.dumps(manifest_doc(files=[{"key": "k", "size": -1, "MD5checksum": "x"}])).encode(), "size"),
        (json.dumps(manifest_doc(destinationBucket="arn:aws:s3:::a/b")).encode(), "destinationBucket"),
    ],
)
def test_bad_manifest_json(body: bytes, message: str) -> None:
    with pytest.raises(ManifestError, match=r"inventory manifest\.json") as info:
        parse_manifest_json(body)
    assert message in str(info.value)


def test_columns_follow_file_schema() -> None:
    cols = csv_columns(SCHEMA)
    assert (cols.bucket, cols.key, cols.version_id, cols.is_delete_marker) == (0, 1, 2, 4)
    plain = csv_columns("Bucket, Key, Size")
    assert (plain.version_id, plain.is_delete_marker, plain.width) == (None, None, 2)
    swapped = csv_columns("Key,Bucket")
    assert (swapped.bucket, swapped.key) == (1, 0)


def test_schema_without_key_is_refused() -> None:
    with pytest.raises(ManifestError, match="no Key column"):
        csv_columns("Bucket, Size")


def test_quoted_row_with_encoded_key_and_version() -> None:
    cols = csv_columns(SCHEMA)
    line = '"src","a%20b/%C3%BC+c.txt","v1","true","false","5","2024-01-01T00:00:00.000Z","e","STANDARD"'
    line += ',"false","","SSE-S3"'
    row = parse_csv_line(line, cols, "f line 1")
    assert row == InventoryRow("src", "a%20b/%C3%BC+c.txt", "v1")


def test_delete_marker_rows_are_skipped_and_blank_lines_ignored() -> None:
    cols = csv_columns(SCHEMA)
    assert parse_csv_line('"src","k","v2","true","true","","","","","","",""', cols, "w") is None
    assert parse_csv_line("  ", cols, "w") is None


def test_empty_version_in_a_versioned_inventory_is_the_null_version() -> None:
    row = parse_csv_line('"src","k","","true","false"', csv_columns(SCHEMA), "w")
    assert row is not None and row.version_id == "null"


def test_unversioned_inventory_rows_have_no_version() -> None:
    row = parse_csv_line('"src","k","7"', csv_columns("Bucket, Key, Size"), "w")
    assert row == InventoryRow("src", "k", None)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('"src"', "expected at least 2 columns, found 1"),
        ('"src","k', "malformed CSV"),
        ('"","k"', "empty bucket name"),
        ('"src",""', "empty key"),
    ],
)
def test_bad_rows_name_the_file_and_line(line: str, message: str) -> None:
    with pytest.raises(ManifestError, match=r"data/x\.csv\.gz line 7") as info:
        parse_csv_line(line, csv_columns("Bucket, Key"), "data/x.csv.gz line 7")
    assert message in str(info.value)


def test_columnar_names_are_snake_case() -> None:
    assert COLUMNAR_NAMES["VersionId"] == "version_id"
    assert COLUMNAR_NAMES["IsDeleteMarker"] == "is_delete_marker"


def test_columnar_keys_are_plain_and_get_encoded() -> None:
    row = columnar_row({"bucket": "src", "key": "a b/ü+c,d.txt", "version_id": "v1"}, True, "w")
    assert row == InventoryRow("src", "a+b/%C3%BC%2Bc%2Cd.txt", "v1")
    assert unquote_plus(row.raw_key) == "a b/ü+c,d.txt"


def test_columnar_delete_markers_and_null_versions() -> None:
    assert columnar_row({"bucket": "s", "key": "k", "is_delete_marker": True}, True, "w") is None
    row = columnar_row({"bucket": "s", "key": "k", "version_id": None, "is_delete_marker": False}, True, "w")
    assert row is not None and row.version_id == "null"
    assert columnar_row({"bucket": "s", "key": "k"}, False, "w") == InventoryRow("s", "k", None)


def test_columnar_record_without_key_is_an_error() -> None:
    with pytest.raises(ManifestError, match="record 3: record has no key"):
        columnar_row({"bucket": "s"}, False, "record 3")


def test_normalized_lines_parse_back_as_a_csv_manifest() -> None:
    rows = [InventoryRow("b", "a%2Cb+c", "v1"), InventoryRow("b", "x/y", "null")]
    parser = CsvManifestParser(CsvLayout.from_fields(["Bucket", "Key", "VersionId"]))
    tasks = [
        parser.parse(RawLine(i + 1, 0, csv_manifest_line(r).rstrip("\n")), i) for i, r in enumerate(rows)
    ]
    assert [(t.bucket, t.key, t.version_id) for t in tasks if t] == [
        ("b", "a,b c", "v1"),
        ("b", "x/y", "null"),
    ]


def test_unversioned_normalized_line_has_an_empty_version_column() -> None:
    assert csv_manifest_line(InventoryRow("b", "k", None)) == "b,k,\n"
