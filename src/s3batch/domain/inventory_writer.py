"""Writing S3 Inventory reports as AWS writes them (docs/inventory.md): the pure half.

What an inventory configuration may say, the order and names of the fields, one object's
row (a quoted CSV line or ORC/Parquet values), the ORC/Parquet schema strings, manifest.json,
manifest.checksum, symlink.txt and where each file goes in the destination bucket.
service/inventory_report.py lists the bucket, writes the data files and uploads them.

AWS's documentation fixes the field order (the fileSchema of its manifest.json examples), the
layout, the manifest fields and that CSV keys are URL-encoded. Observed rather than documented,
and followed here: every CSV field is double-quoted, a space in a key is "+" and "/" stays
as it is (S3's own URL encoding), and manifest.json is pretty-printed as Jackson prints it.
Choices where AWS is silent are listed in docs/inventory.md#compatibility.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar
from urllib.parse import quote_plus

from s3batch.domain.arn import bucket_arn
from s3batch.domain.inventory import DataFile, InventoryFormat
from s3batch.domain.objects import ObjectInfo
from s3batch.errors import ConfigError

#: manifest.json `version` of every S3 Inventory report.
MANIFEST_VERSION = "2016-11-30"
#: The Manifest.Spec.Format under which an S3 Batch Operations job reads a report.
JOB_MANIFEST_FORMAT = "S3InventoryReport_CSV_20161130"
#: An inventory configuration Id becomes one folder of every key of the report.
MAX_CONFIG_ID_CHARS = 64
_CONFIG_ID = re.compile(r"^[A-Za-z0-9._-]+$")
#: Default time between two reports of a `[[inventories]]` schedule (AWS's Daily).
DEFAULT_INTERVAL_HOURS = 24.0
_S3_ARN = re.compile(r"^arn:[^:]+:s3:[^:]*:[^:]*:(?P<rest>.+)$")
_E = TypeVar("_E", bound=StrEnum)


class IncludedVersions(StrEnum):
    """IncludedObjectVersions: current objects only, or every version and delete marker."""

    CURRENT = "Current"
    ALL = "All"


class ColumnType(StrEnum):
    """A field's type in ORC terms (`struct<...>` names)."""

    STRING = "string"
    BOOLEAN = "boolean"
    BIGINT = "bigint"
    TIMESTAMP = "timestamp"


@dataclass(frozen=True, slots=True)
class Field:
    #: CSV name (fileSchema of a CSV report, and the configuration's OptionalFields name).
    name: str
    #: ORC/Parquet column name.
    column: str
    kind: ColumnType
    #: Filled from HeadObject: listings do not carry it.
    from_head: bool = False


_S, _B, _I, _T = ColumnType.STRING, ColumnType.BOOLEAN, ColumnType.BIGINT, ColumnType.TIMESTAMP
#: Every field s3batch writes, in the order AWS writes them (the fileSchema of the manifest.json
#: examples in AWS's "Locating your inventory list"; LifecycleExpirationDate, which came later,
#: last).
ALL_FIELDS: tuple[Field, ...] = (
    Field("Bucket", "bucket", _S),
    Field("Key", "key", _S),
    Field("VersionId", "version_id", _S),
    Field("IsLatest", "is_latest", _B),
    Field("IsDeleteMarker", "is_delete_marker", _B),
    Field("Size", "size", _I),
    Field("LastModifiedDate", "last_modified_date", _T),
    Field("ETag", "e_tag", _S),
    Field("StorageClass", "storage_class", _S),
    Field("IsMultipartUploaded", "is_multipart_uploaded", _B),
    Field("ReplicationStatus", "replication_status", _S, from_head=True),
    Field("EncryptionStatus", "encryption_status", _S, from_head=True),
    Field("ObjectLockRetainUntilDate", "object_lock_retain_until_date", _T, from_head=True),
    Field("ObjectLockMode", "object_lock_mode", _S, from_head=True),
    Field("ObjectLockLegalHoldStatus", "object_lock_legal_hold_status", _S, from_head=True),
    Field("IntelligentTieringAccessTier", "intelligent_tiering_access_tier", _S),
    Field("BucketKeyStatus", "bucket_key_status", _S, from_head=True),
    Field("ChecksumAlgorithm", "checksum_algorithm", _S),
    Field("ObjectAccessControlList", "object_access_control_list", _S),
    Field("ObjectOwner", "object_owner", _S),
    Field("LifecycleExpirationDate", "lifecycle_expiration_date", _T),
)
FIELDS_BY_NAME: Mapping[str, Field] = {f.name: f for f in ALL_FIELDS}
#: Always first: the object's bucket and key.
REQUIRED_FIELDS = ("Bucket", "Key")
#: Added after Key when every version is listed.
VERSION_FIELDS = ("VersionId", "IsLatest", "IsDeleteMarker")
#: What a configuration may name in OptionalFields.
OPTIONAL_FIELDS = tuple(f.name for f in ALL_FIELDS if f.name not in (*REQUIRED_FIELDS, *VERSION_FIELDS))
#: OptionalFields of AWS's API whose place in a report AWS does not document: refused rather
#: than guessed.
UNPLACED_FIELDS = (
    "ObjectLockEventHoldStatus",
    "ObjectLockEventHoldDuration",
    "IntelligentTieringReferenceDate",
)
#: Fields s3batch can never fill (no store answers them): always written empty.
ALWAYS_EMPTY = (
    "IntelligentTieringAccessTier",
    "ChecksumAlgorithm",
    "ObjectAccessControlList",
    "ObjectOwner",
    "LifecycleExpirationDate",
)
#: Data file name endings (AWS: CSV is gzipped, ORC and Parquet are not wrapped).
EXTENSIONS: Mapping[InventoryFormat, str] = {
    InventoryFormat.CSV: "csv.gz",
    InventoryFormat.ORC: "orc",
    InventoryFormat.PARQUET: "parquet",
}


# -- the configuration -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InventoryConfig:
    """One inventory configuration: which objects, where the report goes, what it holds."""

    source_bucket: str
    #: Only objects whose key starts with this (the configuration's Filter.Prefix).
    prefix: str
    destination_bucket: str
    #: Key prefix of every report file in the destination bucket ("" for none).
    destination_prefix: str
    config_id: str
    file_format: InventoryFormat
    versions: IncludedVersions
    #: Optional fields, in AWS's order.
    optional_fields: tuple[str, ...]

    @property
    def fields(self) -> tuple[Field, ...]:
        """Every column of the report, in order."""
        names = [*REQUIRED_FIELDS]
        if self.versions is IncludedVersions.ALL:
            names += VERSION_FIELDS
        names += self.optional_fields
        return tuple(FIELDS_BY_NAME[n] for n in names)

    @property
    def needs_head(self) -> bool:
        return any(f.from_head for f in self.fields)


def inventory_config(
    *,
    bucket: str,
    destination: str,
    config_id: str,
    prefix: str = "",
    file_format: str = InventoryFormat.CSV.value,
    versions: str = IncludedVersions.CURRENT.value,
    fields: Sequence[str] = (),
) -> InventoryConfig:
    """A validated configuration. `destination` is `arn:aws:s3:::bucket[/prefix]` (or a bucket
    name). Names of formats, versions and fields match case-insensitively. Raises ConfigError
    naming the setting."""
    if not bucket or "/" in bucket:
        raise ConfigError(f"bucket: expected a bucket name, got {bucket!r}")
    dest_bucket, dest_prefix = destination_from_arn(destination)
    return InventoryConfig(
        source_bucket=bucket,
        prefix=prefix,
        destination_bucket=dest_bucket,
        destination_prefix=dest_prefix,
        config_id=checked_config_id(config_id),
        file_format=_choice(InventoryFormat, file_format, "format"),
        versions=_choice(IncludedVersions, versions, "versions"),
        optional_fields=optional_fields(fields),
    )


def destination_from_arn(value: str) -> tuple[str, str]:
    """`arn:aws:s3:::bucket[/prefix]` (or `bucket[/prefix]`) → (bucket, prefix without the
    slashes around it)."""
    m = _S3_ARN.match(value)
    rest = m.group("rest") if m else value
    if value.startswith("arn:") and not m:
        rest = ""
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ConfigError(f"destination: expected arn:aws:s3:::bucket[/prefix], got {value!r}")
    return bucket, prefix.strip("/")


def checked_config_id(config_id: str) -> str:
    if not config_id or len(config_id) > MAX_CONFIG_ID_CHARS or not _CONFIG_ID.match(config_id):
        raise ConfigError(
            f"id: {config_id!r} must be 1-{MAX_CONFIG_ID_CHARS} letters, digits, '.', '_' or '-' "
            "(it names a folder of the report)"
        )
    return config_id


def optional_fields(names: Sequence[str]) -> tuple[str, ...]:
    """OptionalFields names (any order, any case, repeats allowed) → AWS's order."""
    canonical = {n.lower(): n for n in OPTIONAL_FIELDS}
    unplaced = {n.lower(): n for n in UNPLACED_FIELDS}
    chosen = set()
    for raw in names:
        name = raw.strip()
        if not name:
            continue
        if name.lower() in unplaced:
            raise ConfigError(
                f"fields: {unplaced[name.lower()]} is not supported (AWS does not document where "
                "it goes in a report)"
            )
        if name.lower() not in canonical:
            raise ConfigError(f"fields: unknown field {name!r}; known: {', '.join(OPTIONAL_FIELDS)}")
        chosen.add(canonical[name.lower()])
    return tuple(n for n in OPTIONAL_FIELDS if n in chosen)


def _choice(enum: type[_E], value: str, setting: str) -> _E:
    for member in enum:
        if member.value.lower() == value.strip().lower():
            return member
    raise ConfigError(f"{setting}: {value!r} is not one of {', '.join(m.value for m in enum)}")


# -- a schedule (`[[inventories]]` in server.toml) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class ScheduledInventory:
    config: InventoryConfig
    #: Seconds between the starts of two reports.
    interval_s: float


_SCHEDULE_KEYS = {"bucket", "prefix", "destination", "id", "format", "versions", "fields", "interval_hours"}


def scheduled_inventory(entry: Any, where: str) -> ScheduledInventory:
    """One `[[inventories]]` table. Raises ConfigError starting with `where`."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(entry) - _SCHEDULE_KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    hours = entry.get("interval_hours", DEFAULT_INTERVAL_HOURS)
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not hours > 0:
        raise ConfigError(f"{where}: interval_hours must be a number of hours above 0, got {hours!r}")
    fields = entry.get("fields", [])
    if not isinstance(fields, list) or not all(isinstance(f, str) for f in fields):
        raise ConfigError(f'{where}: fields must be a list of field names, e.g. ["Size", "ETag"]')
    try:
        config = inventory_config(
            bucket=_text(entry, "bucket", where, required=True),
            destination=_text(entry, "destination", where, required=True),
            config_id=_text(entry, "id", where, required=True),
            prefix=_text(entry, "prefix", where),
            file_format=_text(entry, "format", where) or InventoryFormat.CSV.value,
            versions=_text(entry, "versions", where) or IncludedVersions.CURRENT.value,
            fields=fields,
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return ScheduledInventory(config, float(hours) * 3600)


def _text(entry: Mapping[str, Any], name: str, where: str, *, required: bool = False) -> str:
    value = entry.get(name, "")
    if not isinstance(value, str) or (required and not value):
        raise ConfigError(f"{where}: {name} must be a {'non-empty ' if required else ''}string")
    return value


def checked_schedules(schedules: Sequence[ScheduledInventory], where: str) -> tuple[ScheduledInventory, ...]:
    """The schedules if no two write the same report (same source bucket, id and destination)."""
    seen: set[tuple[str, str, str, str]] = set()
    for s in schedules:
        c = s.config
        ident = (c.source_bucket, c.config_id, c.destination_bucket, c.destination_prefix)
        if ident in seen:
            raise ConfigError(
                f"{where}: two inventories of bucket {c.source_bucket} share id {c.config_id!r}"
            )
        seen.add(ident)
    return tuple(schedules)


# -- rows ----------------------------------------------------------------------------------------

_LOCK_MODES = {"GOVERNANCE": "Governance", "COMPLIANCE": "Compliance"}
_LEGAL_HOLDS = {"ON": "On", "OFF": "Off"}


@dataclass(frozen=True, slots=True)
class ObjectFacts:
    """What is known of one listed object (or version, or delete marker)."""

    listed: ObjectInfo
    #: Its HeadObject answer, when a field needs one (None: not asked, or it went away).
    head: ObjectInfo | None = None


def _object_value(name: str) -> Callable[[ObjectFacts], Any]:
    """Listing fields that a delete marker does not have."""
    attr = {"ETag": "etag", "StorageClass": "storage_class"}[name]

    def value(o: ObjectFacts) -> Any:
        return None if o.listed.is_delete_marker else (getattr(o.listed, attr) or None)

    return value


def _multipart(o: ObjectFacts) -> bool | None:
    # S3 gives a multipart object the ETag "<md5 of the part MD5s>-<part count>".
    return None if o.listed.is_delete_marker else "-" in o.listed.etag


def _bucket_key(o: ObjectFacts) -> str | None:
    # Known only when the store answered about encryption at all (a folder store does not).
    if o.head is None or o.head.encryption is None:
        return None
    return "ENABLED" if o.head.bucket_key_enabled else "DISABLED"


def _head(read: Callable[[ObjectInfo], Any]) -> Callable[[ObjectFacts], Any]:
    return lambda o: None if o.head is None else read(o.head)


#: Field name → its value for one object: str, int, bool, datetime, or None (empty).
_VALUES: Mapping[str, Callable[[ObjectFacts], Any]] = {
    "Bucket": lambda o: o.listed.bucket,
    "Key": lambda o: o.listed.key,
    "VersionId": lambda o: o.listed.version_id,
    "IsLatest": lambda o: o.listed.is_latest,
    "IsDeleteMarker": lambda o: o.listed.is_delete_marker,
    "Size": lambda o: None if o.listed.is_delete_marker else o.listed.size,
    "LastModifiedDate": lambda o: o.listed.last_modified,
    "ETag": _object_value("ETag"),
    "StorageClass": _object_value("StorageClass"),
    "IsMultipartUploaded": _multipart,
    "ReplicationStatus": _head(lambda h: h.replication_status),
    "EncryptionStatus": _head(lambda h: h.encryption),
    "ObjectLockRetainUntilDate": _head(lambda h: h.lock_retain_until),
    "ObjectLockMode": _head(lambda h: _LOCK_MODES.get((h.lock_mode or "").upper())),
    "ObjectLockLegalHoldStatus": _head(lambda h: _LEGAL_HOLDS.get((h.legal_hold or "").upper())),
    "BucketKeyStatus": _bucket_key,
    **{name: (lambda o: None) for name in ALWAYS_EMPTY},
}


def _legal_hold_or_off(o: ObjectFacts) -> str | None:
    # On a store with Object Lock, a HEAD that names no legal hold means none: AWS writes "Off".
    if o.head is None:
        return None
    return _LEGAL_HOLDS.get((o.head.legal_hold or "").upper(), "Off")


Getter = Callable[[ObjectFacts], Any]


@dataclass(frozen=True, slots=True)
class RowFormat:
    """One report's columns: turns objects into CSV lines or ORC/Parquet values."""

    fields: tuple[Field, ...]
    #: One per field: the object's value (str, int, bool, datetime, or None for empty).
    getters: tuple[Getter, ...]
    #: One per field: that value as CSV text (before quoting).
    texts: tuple[Callable[[Any], str], ...]

    def values(self, o: ObjectFacts) -> tuple[Any, ...]:
        """ORC/Parquet values (the key as stored, not encoded)."""
        return tuple(get(o) for get in self.getters)

    def csv_line(self, o: ObjectFacts) -> str:
        """The CSV line, newline included: every field quoted, the key URL-encoded."""
        return csv_line([text(get(o)) for get, text in zip(self.getters, self.texts, strict=True)])


def row_format(fields: Sequence[Field], *, lock_known: bool = False) -> RowFormat:
    """`lock_known`: the store has Object Lock, so ObjectLockLegalHoldStatus of an object
    without a hold is "Off" rather than unknown (empty)."""
    getters = [_VALUES[f.name] for f in fields]
    if lock_known:
        getters = [
            _legal_hold_or_off if f.name == "ObjectLockLegalHoldStatus" else g
            for f, g in zip(fields, getters, strict=True)
        ]
    texts = [_key_text if f.name == "Key" else _value_text for f in fields]
    return RowFormat(tuple(fields), tuple(getters), tuple(texts))


def csv_line(texts: Sequence[str]) -> str:
    return '"' + '","'.join(t.replace('"', '""') if '"' in t else t for t in texts) + '"\n'


def encode_key(key: str) -> str:
    """A key as a CSV report writes it: URL-encoded, space as "+", "/" kept."""
    return quote_plus(key, safe="/")


def _key_text(value: Any) -> str:
    return encode_key(value)


def _value_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return iso_millis(value)
    return str(value)


def iso_millis(when: datetime) -> str:
    """`2024-05-01T00:00:00.000Z`: UTC, milliseconds (a naive time is taken as UTC)."""
    t = when.astimezone(UTC) if when.tzinfo else when
    return (
        f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}"
        f".{t.microsecond // 1000:03d}Z"
    )


# -- schemas ---------------------------------------------------------------------------------------

_PARQUET_TYPES: Mapping[ColumnType, str] = {
    ColumnType.STRING: "binary {} (UTF8)",
    ColumnType.BOOLEAN: "boolean {}",
    ColumnType.BIGINT: "int64 {}",
    ColumnType.TIMESTAMP: "int64 {} (TIMESTAMP_MILLIS)",
}


def _repetition(f: Field) -> str:
    return "required" if f.name in REQUIRED_FIELDS else "optional"


def file_schema(fmt: InventoryFormat, fields: Sequence[Field]) -> str:
    """manifest.json's fileSchema: field names for CSV, the type string for ORC and Parquet."""
    if fmt is InventoryFormat.CSV:
        return ", ".join(f.name for f in fields)
    if fmt is InventoryFormat.ORC:
        return "struct<" + ",".join(f"{f.column}:{f.kind.value}" for f in fields) + ">"
    parts = [f"{_repetition(f)} {_PARQUET_TYPES[f.kind].format(f.column)};" for f in fields]
    return "message s3.inventory { " + " ".join(parts) + "}"


# -- the report's files ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportKeys:
    """Where one report's files go in the destination bucket."""

    manifest: str
    checksum: str
    symlink: str
    #: Folder (without the trailing slash) of the data files.
    data: str

    def data_file(self, name: str, fmt: InventoryFormat) -> str:
        return f"{self.data}/{name}.{EXTENSIONS[fmt]}"


def report_keys(config: InventoryConfig, started: datetime) -> ReportKeys:
    """`<prefix>/<source bucket>/<id>/<YYYY-MM-DDTHH-MMZ>/manifest.json` and its neighbours;
    `started` (when the scan began) names the report."""
    parts = [config.destination_prefix, config.source_bucket, config.config_id]
    base = "/".join(p for p in parts if p)
    t = started.astimezone(UTC)
    folder = f"{base}/{t:%Y-%m-%dT%H-%MZ}"
    return ReportKeys(
        manifest=f"{folder}/manifest.json",
        checksum=f"{folder}/manifest.checksum",
        symlink=f"{base}/hive/dt={t:%Y-%m-%d-%H-%M}/symlink.txt",
        data=f"{base}/data",
    )


def manifest_json(config: InventoryConfig, started: datetime, files: Sequence[DataFile]) -> bytes:
    """manifest.json, laid out as AWS's (Jackson's pretty printer: `"name" : value`, two-space
    indents, `[ {` ... `}, {` ... `} ]`)."""
    head = {
        "sourceBucket": config.source_bucket,
        "destinationBucket": bucket_arn(config.destination_bucket),
        "version": MANIFEST_VERSION,
        "creationTimestamp": str(int(started.timestamp() * 1000)),
        "fileFormat": config.file_format.value,
        "fileSchema": file_schema(config.file_format, config.fields),
    }
    entries = [f"  {_json(name)} : {_json(value)}" for name, value in head.items()]
    objects = [
        "{\n"
        + ",\n".join(
            f"    {_json(k)} : {_json(v)}"
            for k, v in (("key", f.key), ("size", f.size), ("MD5checksum", f.md5))
        )
        + "\n  }"
        for f in files
    ]
    entries.append('  "files" : [ ' + ", ".join(objects) + " ]")
    return ("{\n" + ",\n".join(entries) + "\n}").encode()


def _file_members(f: DataFile) -> list[str]:
    return [
        f"    {_json(k)} : {_json(v)}" for k, v in (("key", f.key), ("size", f.size), ("MD5checksum", f.md5))
    ]


def _json(value: str | int) -> str:
    return json.dumps(value, ensure_ascii=False)


def manifest_checksum(manifest: bytes) -> bytes:
    """manifest.checksum: the hex MD5 of manifest.json."""
    return hashlib.md5(manifest, usedforsecurity=False).hexdigest().encode()


def symlink_txt(bucket: str, files: Sequence[DataFile]) -> bytes:
    """Hive's symlink.txt: one s3:// URI per data file, one per line."""
    return "".join(f"s3://{bucket}/{f.key}\n" for f in files).encode()


def job_manifest(bucket: str, key: str, etag: str) -> dict[str, Any]:
    """The Manifest of a job (create-job --manifest) that runs over the report."""
    return {
        "Spec": {"Format": JOB_MANIFEST_FORMAT},
        "Location": {"ObjectArn": f"{bucket_arn(bucket)}/{key}", "ETag": etag},
    }
