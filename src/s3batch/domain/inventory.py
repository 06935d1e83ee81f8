"""S3 Inventory reports as job manifests (docs/aws-contracts.md: #manifests, #inventory-reports):
manifest.json and data rows.

Pure: no I/O. The service reads the files; this module says what they mean.

Choices where AWS is silent (documented in docs/compatibility.md):
- a versioned inventory (its schema has VersionId) acts on every listed version, not only the
  current one; rows with IsDeleteMarker=true are skipped (a delete marker is not an object an
  operation can act on);
- in a versioned inventory an empty VersionId (an object written before versioning was on)
  becomes the version id "null", so every row of the normalized manifest has a version;
- CSV keys are URL-encoded by AWS and kept as written; ORC and Parquet keys are plain (AWS
  encodes only CSV) and are encoded with `quote_plus(key, safe="/")` for the normalized CSV.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import quote_plus

from s3batch.domain.arn import bucket_from_arn
from s3batch.errors import BadRequest, ManifestError

#: The version id S3 gives objects written while versioning was off.
NULL_VERSION = "null"
#: CSV column names (fileSchema) → ORC/Parquet column names for the fields s3batch reads.
COLUMNAR_NAMES: Mapping[str, str] = {
    "Bucket": "bucket",
    "Key": "key",
    "VersionId": "version_id",
    "IsLatest": "is_latest",
    "IsDeleteMarker": "is_delete_marker",
    "Size": "size",
    "LastModifiedDate": "last_modified_date",
    "ETag": "e_tag",
    "StorageClass": "storage_class",
    "ReplicationStatus": "replication_status",
    "EncryptionStatus": "encryption_status",
}


class InventoryFormat(StrEnum):
    CSV = "CSV"
    ORC = "ORC"
    PARQUET = "Parquet"


@dataclass(frozen=True, slots=True)
class DataFile:
    key: str
    size: int
    md5: str


@dataclass(frozen=True, slots=True)
class InventoryManifest:
    source_bucket: str
    #: Bucket holding the data files (from the destinationBucket ARN).
    destination_bucket: str
    file_format: InventoryFormat
    file_schema: str
    files: tuple[DataFile, ...]


@dataclass(frozen=True, slots=True)
class CsvColumns:
    """Positions of the columns s3batch reads in a CSV inventory row."""

    bucket: int
    key: int
    version_id: int | None
    is_delete_marker: int | None

    @property
    def width(self) -> int:
        return 1 + max(
            i for i in (self.bucket, self.key, self.version_id, self.is_delete_marker) if i is not None
        )


def parse_manifest_json(body: bytes) -> InventoryManifest:
    """An inventory manifest.json. Raises ManifestError saying what is wrong."""
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"inventory manifest.json is not valid JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise ManifestError("inventory manifest.json must be a JSON object")
    fmt = _required_str(doc, "fileFormat")
    try:
        file_format = InventoryFormat(fmt)
    except ValueError as exc:
        raise ManifestError(
            f"inventory manifest.json: fileFormat {fmt!r} is not CSV, ORC or Parquet"
        ) from exc
    try:
        destination = bucket_from_arn(_required_str(doc, "destinationBucket"), "destinationBucket")
    except BadRequest as exc:
        raise ManifestError(f"inventory manifest.json: {exc.message}") from exc
    return InventoryManifest(
        source_bucket=_required_str(doc, "sourceBucket"),
        destination_bucket=destination,
        file_format=file_format,
        file_schema=_required_str(doc, "fileSchema"),
        files=_files(doc.get("files")),
    )


def _required_str(doc: Mapping[str, Any], name: str) -> str:
    value = doc.get(name)
    if not isinstance(value, str) or not value:
        raise ManifestError(f"inventory manifest.json: {name} is missing or not a string")
    return value


def _files(value: Any) -> tuple[DataFile, ...]:
    if not isinstance(value, list) or not value:
        raise ManifestError("inventory manifest.json: files must be a non-empty list")
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise ManifestError(f"inventory manifest.json: files[{i}] must be an object")
        key, md5, size = entry.get("key"), entry.get("MD5checksum"), entry.get("size", 0)
        if not isinstance(key, str) or not key:
            raise ManifestError(f"inventory manifest.json: files[{i}].key is missing")
        if not isinstance(md5, str) or not md5:
            raise ManifestError(f"inventory manifest.json: files[{i}] ({key}) has no MD5checksum")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ManifestError(f"inventory manifest.json: files[{i}] ({key}) has an invalid size")
        out.append(DataFile(key, size, md5.lower()))
    return tuple(out)


def schema_names(file_schema: str) -> list[str]:
    """CSV fileSchema "Bucket, Key, VersionId, ..." → ["Bucket", "Key", "VersionId", ...]."""
    return [name.strip() for name in file_schema.split(",")]


def csv_columns(file_schema: str) -> CsvColumns:
    names = schema_names(file_schema)
    for required in ("Bucket", "Key"):
        if required not in names:
            raise ManifestError(f"inventory fileSchema has no {required} column: {file_schema!r}")

    def find(name: str) -> int | None:
        return names.index(name) if name in names else None

    return CsvColumns(names.index("Bucket"), names.index("Key"), find("VersionId"), find("IsDeleteMarker"))


@dataclass(frozen=True, slots=True)
class InventoryRow:
    bucket: str
    #: URL-encoded, as a CSV manifest writes keys.
    raw_key: str
    version_id: str | None


def parse_csv_line(line: str, columns: CsvColumns, where: str) -> InventoryRow | None:
    """One CSV inventory line (fields double-quoted) → a row, or None for a delete marker or a
    blank line. `where` names the file and line in errors."""
    if not line.strip():
        return None
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error as exc:
        raise ManifestError(f"{where}: malformed CSV ({exc})") from exc
    if len(rows) != 1:
        raise ManifestError(f"{where}: malformed CSV (unterminated quote)")
    row = rows[0]
    if len(row) < columns.width:
        raise ManifestError(f"{where}: expected at least {columns.width} columns, found {len(row)}")
    marker = row[columns.is_delete_marker] if columns.is_delete_marker is not None else None
    version = row[columns.version_id] if columns.version_id is not None else None
    return _row(row[columns.bucket], row[columns.key], version, marker, where)


def columnar_row(record: Mapping[str, Any], has_versions: bool, where: str) -> InventoryRow | None:
    """One ORC/Parquet record (snake_case names, plain key) → a row, or None for a delete marker."""
    key = record.get("key")
    if not isinstance(key, str):
        raise ManifestError(f"{where}: record has no key")
    marker = record.get("is_delete_marker")
    version = record.get("version_id") if has_versions else None
    encoded = quote_plus(key, safe="/")
    return _row(
        str(record.get("bucket") or ""), encoded, version or ("" if has_versions else None), marker, where
    )


def _row(bucket: str, raw_key: str, version: str | None, marker: Any, where: str) -> InventoryRow | None:
    if _true(marker):
        return None
    if not bucket.strip():
        raise ManifestError(f"{where}: empty bucket name")
    if not raw_key:
        raise ManifestError(f"{where}: empty key")
    if version is not None:
        version = version.strip() or NULL_VERSION
    return InventoryRow(bucket.strip(), raw_key, version)


def _true(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() == "true"


def columnar_has_versions(column_names: Sequence[str]) -> bool:
    return COLUMNAR_NAMES["VersionId"] in column_names


def required_columnar(column_names: Sequence[str], where: str) -> None:
    for name in ("bucket", "key"):
        if name not in column_names:
            raise ManifestError(f"{where}: no {name} column (columns: {', '.join(column_names)})")


def csv_manifest_line(row: InventoryRow) -> str:
    """The normalized manifest line (Bucket,Key,VersionId) for a row, with its newline."""
    out = [row.bucket, row.raw_key, row.version_id or ""]
    return ",".join(_quote_field(v) for v in out) + "\n"


def _quote_field(value: str) -> str:
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value
