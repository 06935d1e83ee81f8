"""Keep the newest N noncurrent versions: the per-key selection (domain/versions.py), its Filter
fields and their validation, and the generator's listing through a versioned memory store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from s3batch.domain.generator import filter_from_json, generator_from_json, normalize_generator
from s3batch.domain.objects import ObjectInfo
from s3batch.domain.versions import NoncurrentPicker, NoncurrentRule, select_noncurrent
from s3batch.errors import BadRequest, ManifestError
from s3batch.service.manifests import write_listing
from s3batch.storage.memory import MemoryStore
from s3batch.storage.s3.shapes import page_versions

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def version(
    vid: str, age_days: float, *, key: str = "k", latest: bool = False, marker: bool = False, size: int = 1
) -> ObjectInfo:
    return ObjectInfo(
        bucket="b",
        key=key,
        size=size,
        etag="e",
        last_modified=NOW - age_days * DAY,
        version_id=vid,
        is_latest=latest,
        is_delete_marker=marker,
    )


def ids(infos: list[ObjectInfo]) -> list[str | None]:
    return [i.version_id for i in infos]


def keep(n: int | None = None, days: int | None = None) -> NoncurrentRule:
    return NoncurrentRule(newer_noncurrent_versions=n, noncurrent_days=days)


# -- selection of one key -----------------------------------------------------------------


def test_keeps_the_newest_n_noncurrent_and_never_the_latest() -> None:
    group = [version("v5", 0, latest=True), *(version(f"v{i}", 5 - i) for i in (4, 3, 2, 1))]
    assert ids(select_noncurrent(group, keep(2), NOW)) == ["v2", "v1"]
    assert ids(select_noncurrent(group, keep(1), NOW)) == ["v3", "v2", "v1"]


def test_n_larger_than_the_versions_selects_nothing() -> None:
    group = [version("v3", 0, latest=True), version("v2", 1), version("v1", 2)]
    assert select_noncurrent(group, keep(2), NOW) == []
    assert select_noncurrent(group, keep(50), NOW) == []


def test_delete_marker_as_latest_makes_every_version_noncurrent_and_is_never_selected() -> None:
    group = [
        version("dm2", 0, latest=True, marker=True),
        version("v3", 1),
        version("dm1", 2, marker=True),  # markers are not counted in N
        version("v2", 3),
        version("v1", 4),
    ]
    assert ids(select_noncurrent(group, keep(1), NOW)) == ["v2", "v1"]
    assert ids(select_noncurrent(group, keep(days=0), NOW)) == ["v3", "v2", "v1"]


def test_a_key_with_only_a_delete_marker_selects_nothing() -> None:
    assert select_noncurrent([version("dm", 0, latest=True, marker=True)], keep(1), NOW) == []
    assert select_noncurrent([version("dm", 9, latest=True, marker=True)], keep(days=0), NOW) == []


def test_equal_timestamps_keep_the_listing_order() -> None:
    # Same LastModified everywhere (1-second resolution): the listing's newest-first order decides.
    group = [version("c", 1, latest=True), version("b2", 1), version("b1", 1), version("a", 1)]
    assert ids(select_noncurrent(group, keep(1), NOW)) == ["b1", "a"]
    # A listing slightly out of LastModified order is sorted; ties still keep their positions.
    shuffled = [version("c", 0, latest=True), version("old", 5), version("new", 1), version("new2", 1)]
    assert ids(select_noncurrent(shuffled, keep(1), NOW)) == ["new2", "old"]


def test_noncurrent_days_count_from_the_successor() -> None:
    # v1 was written 40 days ago but became noncurrent when v2 came, 10 days ago.
    group = [version("v3", 2, latest=True), version("v2", 10), version("v1", 40)]
    assert ids(select_noncurrent(group, keep(days=5), NOW)) == ["v1"]  # v2: noncurrent 2 days
    assert ids(select_noncurrent(group, keep(days=2), NOW)) == ["v2", "v1"]  # boundary: >= D
    assert select_noncurrent(group, keep(days=11), NOW) == []
    # Both fields: the N newest noncurrent stay, older ones only once D days noncurrent.
    assert ids(select_noncurrent(group, keep(1, 5), NOW)) == ["v1"]
    assert select_noncurrent(group, keep(1, 11), NOW) == []


def test_without_a_successor_a_days_rule_selects_nothing() -> None:
    # No latest entry in the group: when it went noncurrent is unknown, so it is not deleted.
    assert select_noncurrent([version("v1", 400)], keep(days=1), NOW) == []
    assert ids(select_noncurrent([version("v2", 1), version("v1", 400)], keep(days=1), NOW)) == ["v1"]


# -- a listing: groups, pages, order ------------------------------------------------------


def pick_all(rule: NoncurrentRule, listing: list[ObjectInfo]) -> list[tuple[str, str | None]]:
    picker = NoncurrentPicker(rule, NOW)
    out = [v for info in listing for v in picker.feed(info)]
    out += picker.close()
    return [(v.key, v.version_id) for v in out]


def test_picker_groups_by_key() -> None:
    listing = [
        version("a3", 0, key="a", latest=True),
        version("a2", 1, key="a"),
        version("a1", 2, key="a"),
        version("b1", 0, key="b", latest=True),
        version("c2", 0, key="c", latest=True, marker=True),
        version("c1", 3, key="c"),
    ]
    assert pick_all(keep(1), listing) == [("a", "a1")]
    assert pick_all(keep(days=0), listing) == [("a", "a2"), ("a", "a1"), ("c", "c1")]


def test_picker_refuses_a_listing_not_grouped_by_key() -> None:
    listing = [version("b1", 0, key="b", latest=True), version("a1", 0, key="a", latest=True)]
    with pytest.raises(ManifestError, match="out of key order"):
        pick_all(keep(1), listing)


def api_entry(key: str, vid: str, age_days: int, latest: bool) -> dict[str, Any]:
    return {
        "Key": key,
        "VersionId": vid,
        "IsLatest": latest,
        "LastModified": NOW - age_days * DAY,
        "ETag": '"e"',
    }


def test_a_key_cut_across_listing_pages_is_one_group() -> None:
    # ListObjectVersions pages of 3 entries: key "k" starts on page 1 and ends on page 2.
    page1 = {
        "Versions": [
            api_entry("a", "a1", 0, True),
            api_entry("k", "k4", 0, True),
            api_entry("k", "k3", 1, False),
        ]
    }
    page2 = {
        "Versions": [api_entry("k", "k2", 2, False), api_entry("k", "k1", 3, False)],
        "DeleteMarkers": [{"Key": "z", "VersionId": "zm", "IsLatest": True, "LastModified": NOW}],
    }
    listing = page_versions("b", page1) + page_versions("b", page2)
    whole = page_versions("b", {"Versions": page1["Versions"] + page2["Versions"]})
    assert pick_all(keep(2), listing) == [("k", "k1")] == pick_all(keep(2), whole)


# -- Filter fields ------------------------------------------------------------------------


def gen_request(flt: dict[str, Any], versions: str | None = "All") -> dict[str, Any]:
    body: dict[str, Any] = {"SourceBucket": "arn:aws:s3:::src", "EnableManifestOutput": False, "Filter": flt}
    if versions is not None:
        body["IncludeVersions"] = versions
    return {"S3JobManifestGenerator": body}


def test_filter_fields_are_normalized_and_bound() -> None:
    out = normalize_generator(gen_request({"NewerNoncurrentVersions": 3, "NoncurrentDays": 30}))
    assert out["S3JobManifestGenerator"]["Filter"] == {"NewerNoncurrentVersions": 3, "NoncurrentDays": 30}
    assert generator_from_json(out).filter.noncurrent == keep(3, 30)
    assert filter_from_json({"NoncurrentDays": 0}).noncurrent == keep(None, 0)
    assert filter_from_json({"ObjectSizeLessThanBytes": 5}).noncurrent is None


@pytest.mark.parametrize(
    ("flt", "versions", "message"),
    [
        (
            {"NewerNoncurrentVersions": 0},
            "All",
            "Filter.NewerNoncurrentVersions must be a whole number of at least 1",
        ),
        ({"NewerNoncurrentVersions": True}, "All", "Filter.NewerNoncurrentVersions"),
        ({"NewerNoncurrentVersions": "3"}, "All", "Filter.NewerNoncurrentVersions"),
        ({"NoncurrentDays": -1}, "All", "Filter.NoncurrentDays must be a whole number from 0"),
        ({"NoncurrentDays": 10**9}, "All", "Filter.NoncurrentDays"),
        (
            {"NewerNoncurrentVersions": 2},
            None,
            'Filter.NewerNoncurrentVersions selects noncurrent versions: it needs "IncludeVersions": "All"',
        ),
        (
            {"NoncurrentDays": 2},
            "Current",
            'Filter.NoncurrentDays selects noncurrent versions: it needs "IncludeVersions": "All"',
        ),
    ],
)
def test_filter_fields_are_validated_naming_the_field(
    flt: dict[str, Any], versions: str | None, message: str
) -> None:
    with pytest.raises(BadRequest) as exc:
        normalize_generator(gen_request(flt, versions))
    assert message in exc.value.message


# -- the generator's listing on a versioned memory store ----------------------------------


def test_generator_listing_keeps_n_per_key_with_other_filters(tmp_path: Path) -> None:
    store = MemoryStore(versioned=True)

    async def go() -> list[str]:
        await store.create_bucket("src")
        # Keys spread over common prefixes, so the listing runs in several parallel ranges.
        for key in ["a/x/1", "a/y/2", "b/3", "c"]:
            for i in range(4):
                await store.put_bytes("src", key, b"x" * (10 if i == 0 else 1))
        await store.delete("src", "b/3")  # a delete marker: b/3's four versions are noncurrent
        flt = {"NewerNoncurrentVersions": 2, "ObjectSizeGreaterThanBytes": 5}
        gen = generator_from_json(normalize_generator(gen_request(flt)))
        await write_listing(store, gen, tmp_path / "out.csv", tmp_path)
        return (tmp_path / "out.csv").read_text().splitlines()

    rows = asyncio.run(go())
    # Beyond the 2 newest noncurrent: the oldest of a/x/1, a/y/2, c (first one written, 10 bytes)
    # and b/3's two oldest, of which only the 10-byte one passes the size filter.
    assert [r.split(",")[1] for r in rows] == ["a/x/1", "a/y/2", "b/3", "c"]
    versions = {key: [v.version_id for v in store._buckets["src"][key]] for key in ["a/x/1", "b/3"]}
    assert rows[0].split(",")[2] == versions["a/x/1"][0]
    assert rows[2].split(",")[2] == versions["b/3"][0]
