"""`s3batch diff`'s pure half (domain/diff.py): the streaming merge against a dict-based model,
what counts as a change, inventory rows, locations, and manifest rows the manifest parser reads
back to the same keys."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3batch.domain.diff import (
    Change,
    ChangeReason,
    Difference,
    DiffSource,
    DiffTally,
    Entry,
    SourceKind,
    change_reason,
    compared_prefix,
    csv_entry,
    diff_columns,
    manifest_fields,
    manifest_row,
    merge_diff,
    parse_location,
    parse_source,
    record_entry,
)
from s3batch.domain.manifest import CsvLayout, CsvManifestParser, RawLine
from s3batch.errors import BadRequest, ManifestError


def e(key: str, etag: str | None = "a", size: int | None = 1, checksum: str | None = None) -> Entry:
    return Entry(key, etag, size, checksum)


def key_of(d: Difference) -> str:
    entry = d.new or d.old
    assert entry is not None
    return entry.key


def changes(old: list[Entry], new: list[Entry]) -> list[tuple[str, str, str | None]]:
    return [(d.change.value, key_of(d), d.reason.value if d.reason else None) for d in merge_diff(old, new)]


# -- merge --------------------------------------------------------------------------------


def test_merge_reports_every_key_once_in_key_order() -> None:
    old = [e("a"), e("b"), e("c", etag="x"), e("d", size=5)]
    new = [e("b"), e("c", etag="y"), e("d", size=6), e("e")]
    assert changes(old, new) == [
        ("Removed", "a", None),
        ("Unchanged", "b", None),
        ("Changed", "c", "ETag"),
        ("Changed", "d", "Size"),
        ("Added", "e", None),
    ]


def test_merge_of_empty_sides() -> None:
    assert changes([], []) == []
    assert changes([e("a")], []) == [("Removed", "a", None)]
    assert changes([], [e("a")]) == [("Added", "a", None)]


@pytest.mark.parametrize("side", ["OLD", "NEW"])
@pytest.mark.parametrize("keys", [["b", "a"], ["a", "a"]])
def test_merge_refuses_unsorted_or_repeated_keys(side: str, keys: list[str]) -> None:
    bad, good = [e(k) for k in keys], [e("a")]
    with pytest.raises(ManifestError, match=f"{side} is not sorted by key"):
        list(merge_diff(bad, good) if side == "OLD" else merge_diff(good, bad))


side_entries = st.dictionaries(
    st.text(alphabet="ab/é😀+ ", min_size=1, max_size=4),
    st.tuples(st.sampled_from(["x", "y", None]), st.sampled_from([1, 2, None])),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(side_entries, side_entries)
def test_merge_matches_a_dict_model(old: dict[str, Any], new: dict[str, Any]) -> None:
    def stream(side: dict[str, Any]) -> list[Entry]:
        return [e(k, etag, size) for k, (etag, size) in sorted(side.items())]

    model = {}
    for key in old.keys() | new.keys():
        if key not in new:
            model[key] = Change.REMOVED
        elif key not in old:
            model[key] = Change.ADDED
        else:
            (oe, os_), (ne, ns) = old[key], new[key]
            differs = (oe and ne and oe != ne) or (os_ is not None and ns is not None and os_ != ns)
            model[key] = Change.CHANGED if differs else Change.UNCHANGED
    got = [(key_of(d), d.change) for d in merge_diff(stream(old), stream(new))]
    assert [key for key, _ in got] == sorted(model)
    assert dict(got) == model


# -- what counts as changed ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (e("k"), e("k"), None),
        (e("k", etag="1"), e("k", etag="2"), ChangeReason.ETAG),
        (e("k", etag=None, size=1), e("k", etag="2", size=2), ChangeReason.SIZE),
        (e("k", etag=None, size=None), e("k", etag="2", size=2), None),  # nothing to compare
        # Equal full-object checksums: same content, whatever the ETags (a re-upload in parts).
        (e("k", "1", 1, "CRC32C:AAA="), e("k", "2-3", 1, "crc32c:AAA="), None),
        (e("k", "1", 1, "CRC32C:AAA="), e("k", "1", 1, "CRC32C:BBB="), ChangeReason.CHECKSUM),
        # Other algorithms, or a composite checksum: the ETag decides.
        (e("k", "1", 1, "CRC32C:AAA="), e("k", "2", 1, "SHA256:AAA="), ChangeReason.ETAG),
        (e("k", "1", 1, "CRC32C:AAA=-2"), e("k", "2", 1, "CRC32C:AAA=-2"), ChangeReason.ETAG),
        (e("k", "1", 1, "SHA1:AAA="), e("k", "1", 2, "SHA1:AAA="), ChangeReason.SIZE),
    ],
)
def test_change_reason(old: Entry, new: Entry, reason: ChangeReason | None) -> None:
    assert change_reason(old, new) is reason


def test_tally_counts_objects_and_bytes() -> None:
    tally = DiffTally()
    old = [e("gone", size=7), e("same", size=3), e("edit", etag="1", size=10)]
    new = [e("edit", etag="2", size=12), e("new", size=5), e("same", size=3)]
    for d in merge_diff(sorted(old, key=lambda x: x.key), new):
        tally.add(d)
    assert tally.as_json() == {
        "Added": {"Objects": 1, "Bytes": 5},
        "Removed": {"Objects": 1, "Bytes": 7},
        "Changed": {"Objects": 1, "Bytes": 12, "BytesBefore": 10, "ByReason": {"ETag": 1}},
        "Unchanged": {"Objects": 1, "Bytes": 3},
    }


# -- inventory rows -----------------------------------------------------------------------

VERSIONED = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag"


def test_versioned_csv_rows_give_only_current_objects() -> None:
    cols = diff_columns(VERSIONED, "f")
    line = '"b","a%20b%2Bc.txt","v2","true","false","12","2024-05-01T00:00:00.000Z","\\"ABC\\""'
    row = csv_entry(line.replace('\\"', '""'), cols, "f line 1")
    assert row == Entry("a b+c.txt", "abc", 12, None, "v2")
    assert csv_entry('"b","k","v1","false","false","3","t","x"', cols, "w") is None  # noncurrent
    assert csv_entry('"b","k","m","true","true","","t",""', cols, "w") is None  # delete marker
    assert csv_entry('"b","k","","true","false","3","t","x"', cols, "w") == Entry("k", "x", 3, None, "null")
    assert csv_entry("   ", cols, "w") is None


def test_unversioned_rows_and_missing_columns() -> None:
    cols = diff_columns("Bucket, Key", "f")
    assert csv_entry('"b","k%C3%A9"', cols, "w") == Entry("ké")
    with pytest.raises(ManifestError, match="needs IsLatest"):
        diff_columns("Bucket, Key, VersionId", "f")
    with pytest.raises(ManifestError, match="no Key column"):
        diff_columns("Bucket, Size", "f")
    with pytest.raises(ManifestError, match="w: expected at least 2 CSV columns"):
        csv_entry('"b"', cols, "w")
    with pytest.raises(ManifestError, match="f line 3: Size 'x' is not a whole number"):
        csv_entry('"b","k","x"', diff_columns("Bucket, Key, Size", "f"), "f line 3")


def test_columnar_records_have_plain_keys() -> None:
    record = {"key": "a b+c", "version_id": None, "is_latest": True, "e_tag": "E", "size": 4}
    assert record_entry(record, True, "r") == Entry("a b+c", "e", 4, None, "null")
    assert record_entry({**record, "is_latest": False}, True, "r") is None
    assert record_entry({"key": "k"}, False, "r") == Entry("k", None, None)


# -- locations and manifest rows ----------------------------------------------------------


def test_sources_and_compared_prefix() -> None:
    inv = parse_source("s3://inv/b/cfg/2024-05-01T00-00Z/manifest.json", "OLD")
    assert (inv.kind, inv.bucket, inv.prefix) == (SourceKind.INVENTORY, "inv", "")
    listing = parse_source("arn:aws:s3:::data/photos/", "NEW")
    assert (listing.kind, listing.bucket, listing.prefix) == (SourceKind.LISTING, "data", "photos/")
    assert parse_source("s3://data", "NEW") == DiffSource(SourceKind.LISTING, "data", "")
    assert compared_prefix(inv, listing) == "photos/"
    assert compared_prefix(inv, listing, "photos/2024/") == "photos/2024/"
    assert parse_location("arn:aws:s3:::out/diffs/1", "--output") == ("out", "diffs/1")
    with pytest.raises(BadRequest, match="share no keys"):
        compared_prefix(listing, parse_source("s3://data/videos/", "NEW"))
    with pytest.raises(BadRequest, match="--prefix covers keys under 'logs/'"):
        compared_prefix(inv, listing, "logs/")
    with pytest.raises(BadRequest, match="OLD: expected s3://bucket/path"):
        parse_source("/tmp/x", "OLD")


@pytest.mark.parametrize("with_version", [False, True])
def test_manifest_rows_read_back_to_the_same_objects(with_version: bool) -> None:
    keys = ["plain", "with space", "plus+sign", "ünï/ключ", 'comma,quote"', "100%"]
    parser = CsvManifestParser(CsvLayout.from_fields(manifest_fields(with_version)))
    for n, key in enumerate(keys, 1):
        row = manifest_row("bkt", Entry(key, version_id="v1" if with_version else None), with_version)
        task = parser.parse(RawLine(n, 0, ",".join(row)), n)
        assert task is not None
        assert (task.bucket, task.key, task.version_id) == ("bkt", key, "v1" if with_version else None)
