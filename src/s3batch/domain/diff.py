"""`s3batch diff`: what changed between two object lists (docs/versions.md#diff).

Pure: no I/O. The service (service/diff.py) reads inventories and listings into key-sorted
streams of `Entry`; `merge_diff` walks two such streams side by side, holding one entry of
each at a time, and says for every key whether it was added, removed, changed or left as is.

Choices:
- an object is compared by its current state: in a versioned inventory only rows with
  IsLatest=true that are not delete markers count;
- changed means different content. A checksum decides when both sides carry a full-object one
  of the same algorithm (it does not depend on how the object was uploaded); otherwise
  differing ETags; a differing size is a change in any case. S3 inventories and listings carry
  the checksum algorithm but not its value, so today's sources compare by ETag and size;
- manifest rows are `Bucket,Key[,VersionId]` with the key URL-encoded as a CSV manifest
  expects (`quote_plus(key, safe="/")`). Added and changed rows name NEW's bucket (and version,
  when NEW is a versioned inventory), removed rows name OLD's.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from s3batch.domain.inventory import NULL_VERSION, schema_names
from s3batch.domain.objects import ObjectInfo
from s3batch.errors import BadRequest, ManifestError

#: The key of an S3 Inventory report's manifest file; a location ending in it is an inventory.
INVENTORY_MANIFEST_NAME = "manifest.json"
_S3_URI = "s3://"
_ARN_PREFIX = "arn:"
_ARN_S3_MARK = ":s3:::"


class SourceKind(StrEnum):
    INVENTORY = "inventory"
    LISTING = "listing"


@dataclass(frozen=True, slots=True)
class DiffSource:
    """One side of a diff: an inventory report (its manifest.json) or a live listing."""

    kind: SourceKind
    bucket: str
    #: The manifest.json key (inventory) or the listing prefix (listing).
    path: str

    @property
    def prefix(self) -> str:
        """The keys this side covers: a listing's prefix; an inventory covers its whole bucket."""
        return self.path if self.kind is SourceKind.LISTING else ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.path}"


def parse_location(text: str, name: str) -> tuple[str, str]:
    """`s3://bucket/path` or `arn:aws:s3:::bucket/path` (path optional) → (bucket, path)."""
    if text.startswith(_S3_URI):
        rest = text[len(_S3_URI) :]
    elif text.startswith(_ARN_PREFIX) and _ARN_S3_MARK in text:
        rest = text.split(_ARN_S3_MARK, 1)[1]
    else:
        raise BadRequest(f"{name}: expected s3://bucket/path or arn:aws:s3:::bucket/path, got {text!r}")
    bucket, _, path = rest.partition("/")
    if not bucket:
        raise BadRequest(f"{name}: no bucket in {text!r}")
    return bucket, path


def parse_source(text: str, name: str) -> DiffSource:
    """A location whose key ends in manifest.json is an inventory report; any other location is
    a listing of the bucket's current objects under that prefix."""
    bucket, path = parse_location(text, name)
    if path == INVENTORY_MANIFEST_NAME or path.endswith("/" + INVENTORY_MANIFEST_NAME):
        return DiffSource(SourceKind.INVENTORY, bucket, path)
    return DiffSource(SourceKind.LISTING, bucket, path)


def compared_prefix(old: DiffSource, new: DiffSource, prefix: str = "") -> str:
    """The keys both sides are compared under: the longest of OLD's, NEW's and `prefix`, which
    must all lie on one path (a key outside a side's reach would otherwise count as removed or
    added)."""
    given = [("OLD", old.prefix), ("NEW", new.prefix), ("--prefix", prefix)]
    longest = max((p for _, p in given), key=len)
    for name, p in given:
        if not longest.startswith(p):
            raise BadRequest(
                f"{name} covers keys under {p!r}, which does not contain {longest!r}: the two "
                "sides share no keys to compare"
            )
    return longest


@dataclass(frozen=True, slots=True)
class Entry:
    """One current object as a side lists it. `key` is decoded; ETag without quotes."""

    key: str
    etag: str | None = None
    size: int | None = None
    #: "ALGORITHM:value" (e.g. "CRC32C:yZRlqg=="); a composite one ends in "-<parts>".
    checksum: str | None = None
    version_id: str | None = None


class Change(StrEnum):
    ADDED = "Added"
    REMOVED = "Removed"
    CHANGED = "Changed"
    UNCHANGED = "Unchanged"


class ChangeReason(StrEnum):
    CHECKSUM = "Checksum"
    ETAG = "ETag"
    SIZE = "Size"


@dataclass(frozen=True, slots=True)
class Difference:
    change: Change
    old: Entry | None
    new: Entry | None
    reason: ChangeReason | None = None


def change_reason(old: Entry, new: Entry) -> ChangeReason | None:
    """Why `new` differs from `old` (the strongest signal), or None when it does not."""
    same_content = _same_checksum(old.checksum, new.checksum)
    if same_content is False:
        return ChangeReason.CHECKSUM
    # Equal checksums outrank ETags: a re-upload in other parts changes the ETag, not the data.
    if same_content is None and old.etag and new.etag and old.etag != new.etag:
        return ChangeReason.ETAG
    if old.size is not None and new.size is not None and old.size != new.size:
        return ChangeReason.SIZE
    return None


def _same_checksum(old: str | None, new: str | None) -> bool | None:
    """Whether two checksums agree; None when they cannot be compared (missing, different
    algorithms, or composite: a composite checksum depends on the part sizes, as an ETag does)."""
    if not old or not new:
        return None
    old_alg, _, old_value = old.partition(":")
    new_alg, _, new_value = new.partition(":")
    if old_alg.upper() != new_alg.upper() or _composite(old_value) or _composite(new_value):
        return None
    return old_value == new_value


def _composite(value: str) -> bool:
    head, sep, parts = value.rpartition("-")
    return bool(sep and head and parts.isdigit())


def merge_diff(old: Iterable[Entry], new: Iterable[Entry]) -> Iterator[Difference]:
    """Every key of two streams sorted by key (strictly ascending), as one Difference each.

    Holds one entry per side: memory is constant in the streams' length. Raises ManifestError
    when a stream is out of order or repeats a key."""
    olds, news = _ascending(old, "OLD"), _ascending(new, "NEW")
    o, n = next(olds, None), next(news, None)
    # Bounded: every pass consumes at least one entry of a finite stream.
    while o is not None or n is not None:
        if n is None or (o is not None and o.key < n.key):
            assert o is not None
            yield Difference(Change.REMOVED, o, None)
            o = next(olds, None)
        elif o is None or n.key < o.key:
            yield Difference(Change.ADDED, None, n)
            n = next(news, None)
        else:
            reason = change_reason(o, n)
            yield Difference(Change.CHANGED if reason else Change.UNCHANGED, o, n, reason)
            o, n = next(olds, None), next(news, None)


def _ascending(entries: Iterable[Entry], side: str) -> Iterator[Entry]:
    last: str | None = None
    for entry in entries:
        if last is not None and entry.key <= last:
            raise ManifestError(f"{side} is not sorted by key: {entry.key!r} comes after {last!r}")
        last = entry.key
        yield entry


# -- reading inventory rows ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiffColumns:
    """Positions of the columns a diff reads in a CSV inventory row."""

    key: int
    version_id: int | None
    is_latest: int | None
    is_delete_marker: int | None
    etag: int | None
    size: int | None
    #: Columns a row needs at least (one past the last one read).
    width: int


def diff_columns(file_schema: str, where: str) -> DiffColumns:
    names = schema_names(file_schema)
    if "Key" not in names:
        raise ManifestError(f"{where}: fileSchema has no Key column: {file_schema!r}")

    def find(name: str) -> int | None:
        return names.index(name) if name in names else None

    at = {name: find(name) for name in ("VersionId", "IsLatest", "IsDeleteMarker", "ETag", "Size")}
    key = names.index("Key")
    columns = DiffColumns(
        key=key,
        version_id=at["VersionId"],
        is_latest=at["IsLatest"],
        is_delete_marker=at["IsDeleteMarker"],
        etag=at["ETag"],
        size=at["Size"],
        width=1 + max([key, *(i for i in at.values() if i is not None)]),
    )
    if columns.version_id is not None and columns.is_latest is None:
        raise ManifestError(f"{where}: a versioned inventory needs IsLatest to tell current objects")
    return columns


def csv_entry(line: str, columns: DiffColumns, where: str) -> Entry | None:
    """One CSV inventory line → the current object it lists, or None (a blank line, a
    noncurrent version, a delete marker). Keys are URL-encoded in CSV inventories."""
    if not line.strip():
        return None
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error as exc:
        raise ManifestError(f"{where}: malformed CSV ({exc})") from exc
    if len(rows) != 1 or len(rows[0]) < columns.width:
        raise ManifestError(f"{where}: expected at least {columns.width} CSV columns")
    row = rows[0]

    def cell(at: int | None) -> str | None:
        return row[at] if at is not None else None

    record = {
        "key": unquote_plus(row[columns.key]),
        "version_id": cell(columns.version_id),
        "is_latest": cell(columns.is_latest),
        "is_delete_marker": cell(columns.is_delete_marker),
        "e_tag": cell(columns.etag),
        "size": cell(columns.size),
    }
    return record_entry(record, columns.version_id is not None, where)


#: ORC/Parquet column names a diff reads (docs/aws-contracts.md#inventory-reports).
COLUMNAR_DIFF_COLUMNS = ["key", "version_id", "is_latest", "is_delete_marker", "e_tag", "size"]


def record_entry(record: Mapping[str, Any], versioned: bool, where: str) -> Entry | None:
    """One inventory record (snake_case names, decoded key) → the current object it lists, or
    None for a noncurrent version or a delete marker."""
    key = record.get("key")
    if not isinstance(key, str) or not key:
        raise ManifestError(f"{where}: record has no key")
    if _true(record.get("is_delete_marker")) or (versioned and not _true(record.get("is_latest"))):
        return None
    version: str | None = None
    if versioned:
        version = str(record.get("version_id") or "").strip() or NULL_VERSION
    return Entry(
        key=key, etag=_etag(record.get("e_tag")), size=_size(record.get("size"), where), version_id=version
    )


def listed_entry(info: ObjectInfo) -> Entry:
    """A listed current object as a diff entry (a listing has no version ids)."""
    return Entry(key=info.key, etag=_etag(info.etag), size=info.size)


def _etag(value: Any) -> str | None:
    """Without quotes, lower-case (inventories and listings differ only in that)."""
    text = str(value).strip().strip('"').lower() if value is not None else ""
    return text or None


def _size(value: Any, where: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        size = int(value)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"{where}: Size {value!r} is not a whole number") from exc
    if size < 0:
        raise ManifestError(f"{where}: Size {value!r} is negative")
    return size


def _true(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() == "true"


# -- writing manifests and the summary ----------------------------------------------------


def manifest_row(bucket: str, entry: Entry, with_version: bool) -> list[str]:
    """A CSV manifest row (Bucket, Key[, VersionId]) acting on `entry`."""
    row = [bucket, quote_plus(entry.key, safe="/")]
    return [*row, entry.version_id or NULL_VERSION] if with_version else row


def manifest_fields(with_version: bool) -> list[str]:
    """The `Spec.Fields` of a manifest written by `manifest_row`."""
    return ["Bucket", "Key", "VersionId"] if with_version else ["Bucket", "Key"]


@dataclass(slots=True)
class Tally:
    """Objects and bytes of one kind of difference (a running count)."""

    objects: int = 0
    bytes: int = 0

    def add(self, entry: Entry) -> None:
        self.objects += 1
        self.bytes += entry.size or 0

    def as_json(self) -> dict[str, int]:
        return {"Objects": self.objects, "Bytes": self.bytes}


@dataclass(slots=True)
class DiffTally:
    """Counts and bytes per kind of difference. Bytes are NEW's sizes, OLD's for removed
    objects (`changed_before` keeps OLD's sizes of the changed ones); an unknown size adds 0."""

    added: Tally = field(default_factory=Tally)
    removed: Tally = field(default_factory=Tally)
    changed: Tally = field(default_factory=Tally)
    changed_before: Tally = field(default_factory=Tally)
    unchanged: Tally = field(default_factory=Tally)
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, diff: Difference) -> None:
        if diff.change is Change.REMOVED and diff.old is not None:
            self.removed.add(diff.old)
        elif diff.change is Change.ADDED and diff.new is not None:
            self.added.add(diff.new)
        elif diff.new is not None and diff.old is not None:
            if diff.change is Change.UNCHANGED:
                self.unchanged.add(diff.new)
                return
            self.changed.add(diff.new)
            self.changed_before.add(diff.old)
            if diff.reason is not None:
                self.reasons[diff.reason.value] = self.reasons.get(diff.reason.value, 0) + 1

    def as_json(self) -> dict[str, Any]:
        changed = {**self.changed.as_json(), "BytesBefore": self.changed_before.bytes}
        return {
            Change.ADDED.value: self.added.as_json(),
            Change.REMOVED.value: self.removed.as_json(),
            Change.CHANGED.value: {**changed, "ByReason": dict(sorted(self.reasons.items()))},
            Change.UNCHANGED.value: self.unchanged.as_json(),
        }
