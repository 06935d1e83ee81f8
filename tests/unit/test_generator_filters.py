"""ManifestGenerator: request validation, every filter at its boundaries, and the parallel lister
(checked against a plain sorted scan on a listing-only fake store)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3batch.domain.generator import (
    IncludeVersions,
    filter_from_json,
    generator_from_json,
    normalize_filter,
    normalize_generator,
)
from s3batch.domain.objects import ObjectInfo
from s3batch.errors import BadRequest
from s3batch.service import manifests
from s3batch.service.manifests import KeyRange, plan_ranges, write_listing

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def info(key: str = "k", size: int = 10, **over: Any) -> ObjectInfo:
    return ObjectInfo(bucket="b", key=key, size=size, etag="e", last_modified=T0, **over)


def flt(**fields: Any) -> Any:
    return filter_from_json(normalize_filter(fields))


def gen_request(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"SourceBucket": "arn:aws:s3:::src", "EnableManifestOutput": False, **over}
    return {"S3JobManifestGenerator": body}


# -- validation ---------------------------------------------------------------------------


def test_minimal_generator_is_normalized() -> None:
    out = normalize_generator(gen_request())
    assert out == {
        "S3JobManifestGenerator": {"SourceBucket": "arn:aws:s3:::src", "EnableManifestOutput": False}
    }
    gen = generator_from_json(out)
    assert (gen.source_bucket, gen.include_versions, gen.output_bucket) == (
        "src",
        IncludeVersions.CURRENT,
        None,
    )


def test_output_location_and_versions_extension() -> None:
    loc = {
        "Bucket": "arn:aws:s3:::out",
        "ManifestFormat": "S3InventoryReport_CSV_20211130",
        "ManifestPrefix": "gen",
        "ManifestEncryption": {"SSES3": {}},
    }
    req = gen_request(EnableManifestOutput=True, ManifestOutputLocation=loc, IncludeVersions="All")
    gen = generator_from_json(normalize_generator(req))
    assert (gen.output_bucket, gen.output_prefix, gen.include_versions) == ("out", "gen", IncludeVersions.ALL)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"Other": {}}, "S3JobManifestGenerator"),
        ({"S3JobManifestGenerator": {"EnableManifestOutput": False}}, "SourceBucket is required"),
        (gen_request(SourceBucket="arn:aws:s3:::b/k"), "bucket ARN"),
        (gen_request(EnableManifestOutput="yes"), "EnableManifestOutput"),
        (gen_request(EnableManifestOutput=True), "ManifestOutputLocation is required"),
        (
            gen_request(ManifestOutputLocation={"Bucket": "arn:aws:s3:::o", "ManifestFormat": "CSV"}),
            "ManifestFormat must be S3InventoryReport_CSV_20211130",
        ),
        (
            gen_request(
                ManifestOutputLocation={
                    "Bucket": "arn:aws:s3:::o",
                    "ManifestFormat": "S3InventoryReport_CSV_20211130",
                    "ManifestPrefix": "x" * 513,
                }
            ),
            "ManifestPrefix must be 1-512",
        ),
        (gen_request(IncludeVersions="Some"), "IncludeVersions must be Current or All"),
        (gen_request(Bogus=1), "unknown field(s) Bogus"),
        (gen_request(Filter={"Nope": 1}), "unknown field(s) Nope"),
        (gen_request(Filter={"CreatedAfter": "yesterday"}), "ISO-8601"),
        (gen_request(Filter={"ObjectReplicationStatuses": ["DONE"]}), "'DONE' is not one of"),
        (gen_request(Filter={"KeyNameConstraint": {"MatchAnyPrefix": []}}), "non-empty list"),
        (gen_request(Filter={"KeyNameConstraint": {"MatchAnyPrefix": ["x" * 1025]}}), "1-1024"),
        (gen_request(Filter={"KeyNameConstraint": {"MatchAll": ["x"]}}), "unknown field(s) MatchAll"),
        (gen_request(Filter={"ObjectSizeGreaterThanBytes": -1}), "non-negative integer"),
        (gen_request(Filter={"ObjectSizeLessThanBytes": True}), "non-negative integer"),
        (gen_request(Filter={"MatchAnyStorageClass": ["COLD"]}), "'COLD' is not one of"),
        (gen_request(Filter={"MatchAnyObjectEncryption": [{"AES": {}}]}), "'AES' is not one of"),
        (gen_request(Filter={"MatchAnyObjectEncryption": [{"SSE-S3": {"KmsKeyArn": "k"}}]}), "unknown field"),
        (
            gen_request(Filter={"MatchAnyObjectEncryption": [{"SSE-KMS": {"BucketKeyEnabled": "y"}}]}),
            "BucketKeyEnabled must be true or false",
        ),
    ],
)
def test_bad_generators_are_refused(request_: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as exc:
        normalize_generator(request_)
    assert message in exc.value.message


def test_timestamps_are_normalized_to_utc_iso() -> None:
    out = normalize_filter({"CreatedAfter": "2024-05-01T12:00:00Z", "CreatedBefore": 1714564800})
    assert out == {"CreatedAfter": "2024-05-01T12:00:00+00:00", "CreatedBefore": "2024-05-01T12:00:00+00:00"}


# -- each filter at its boundaries --------------------------------------------------------


@given(limit=st.integers(0, 10**12), delta=st.integers(-2, 2))
def test_size_bounds_are_strict(limit: int, delta: int) -> None:
    size = max(0, limit + delta)
    assert flt(ObjectSizeGreaterThanBytes=limit).matches(info(size=size)) == (size > limit)
    assert flt(ObjectSizeLessThanBytes=limit).matches(info(size=size)) == (size < limit)


def test_created_after_and_before_are_exclusive() -> None:
    iso = T0.isoformat()
    second = timedelta(seconds=1)
    after, before = flt(CreatedAfter=iso), flt(CreatedBefore=iso)
    assert not after.matches(info()) and not before.matches(info())
    assert after.matches(replace(info(), last_modified=T0 + second))
    assert before.matches(replace(info(), last_modified=T0 - second))


def test_key_name_constraints() -> None:
    f = flt(KeyNameConstraint={"MatchAnyPrefix": ["logs/"], "MatchAnySuffix": [".gz"]})
    assert f.matches(info("logs/a.gz"))
    assert not f.matches(info("logs/a.txt"))
    assert not f.matches(info("other/a.gz"))
    sub = flt(KeyNameConstraint={"MatchAnySubstring": ["2024", "2025"]})
    assert sub.matches(info("x/2025/y")) and not sub.matches(info("x/2023/y"))
    # Prefix matching is on the exact decoded key: the prefix itself matches, a shorter key not.
    assert flt(KeyNameConstraint={"MatchAnyPrefix": ["ab"]}).matches(info("ab"))
    assert not flt(KeyNameConstraint={"MatchAnyPrefix": ["ab"]}).matches(info("a"))


def test_listing_prefix_is_the_common_prefix_of_all_prefixes() -> None:
    assert flt(KeyNameConstraint={"MatchAnyPrefix": ["logs/2024/", "logs/2025/"]}).list_prefix == "logs/202"
    assert flt(KeyNameConstraint={"MatchAnySuffix": [".gz"]}).list_prefix == ""


def test_storage_class() -> None:
    f = flt(MatchAnyStorageClass=["STANDARD_IA", "GLACIER"])
    assert f.matches(info(storage_class="GLACIER"))
    assert not f.matches(info(storage_class="STANDARD"))


def test_replication_status_needs_head_and_none_means_unreplicated() -> None:
    f = flt(ObjectReplicationStatuses=["NONE", "FAILED"])
    assert f.needs_head
    assert f.matches(info()) and f.matches(info(replication_status="FAILED"))
    assert not f.matches(info(replication_status="COMPLETED"))
    assert not flt(MatchAnyStorageClass=["STANDARD"]).needs_head


def test_encryption_kinds_and_kms_details() -> None:
    arn = "arn:aws:kms:us-east-1:111122223333:key/abcd"
    kms = flt(MatchAnyObjectEncryption=[{"SSE-KMS": {"KmsKeyArn": arn, "BucketKeyEnabled": True}}])
    assert kms.needs_head
    assert kms.matches(info(encryption="SSE-KMS", kms_key_id="abcd", bucket_key_enabled=True))
    assert kms.matches(info(encryption="SSE-KMS", kms_key_id=arn, bucket_key_enabled=True))
    assert not kms.matches(info(encryption="SSE-KMS", kms_key_id="other", bucket_key_enabled=True))
    assert not kms.matches(info(encryption="SSE-KMS", kms_key_id="abcd", bucket_key_enabled=False))
    assert not kms.matches(info(encryption="DSSE-KMS", kms_key_id="abcd", bucket_key_enabled=True))
    not_sse = flt(MatchAnyObjectEncryption=[{"NOT-SSE": {}}])
    assert not_sse.matches(info()) and not not_sse.matches(info(encryption="SSE-S3"))
    any_of = flt(MatchAnyObjectEncryption=[{"SSE-S3": {}}, {"SSE-C": {}}])
    assert any_of.matches(info(encryption="SSE-C")) and not any_of.matches(info(encryption="SSE-KMS"))


def test_no_filter_matches_everything() -> None:
    assert filter_from_json(None).matches(info(size=0))


# -- the parallel lister ------------------------------------------------------------------


class ListingStore:
    """The listing part of the ObjectStore contract over a dict, with a call record."""

    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes
        self.calls: list[tuple[str, str, str | None]] = []
        #: The `etags` of each listing call.
        self.etags: list[bool] = []

    async def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        start_after: str | None = None,
        *,
        end_before: str | None = None,
        etags: bool = True,
    ) -> AsyncIterator[ObjectInfo]:
        self.calls.append(("list_objects", prefix, start_after))
        self.etags.append(etags)
        for key in sorted(self.sizes):
            if end_before is not None and key >= end_before:
                return
            if key.startswith(prefix) and (start_after is None or key > start_after):
                await asyncio.sleep(0)
                yield info(key, self.sizes[key])

    async def list_prefixes(self, bucket: str, prefix: str = "", delimiter: str = "/") -> list[str]:
        self.calls.append(("list_prefixes", prefix, None))
        found = {
            prefix + k[len(prefix) :].split(delimiter)[0] + delimiter
            for k in self.sizes
            if k.startswith(prefix) and delimiter in k[len(prefix) :]
        }
        return sorted(found)

    async def list_versions(
        self, bucket: str, prefix: str = "", start_after: str | None = None, *, etags: bool = True
    ) -> AsyncIterator[ObjectInfo]:
        self.etags.append(etags)
        for key in sorted(self.sizes):
            if key.startswith(prefix) and (start_after is None or key > start_after):
                yield info(key, self.sizes[key], version_id="v2", is_latest=True)
                yield info(key, 0, version_id="v1", is_latest=False, is_delete_marker=True)
                yield info(key, self.sizes[key], version_id="v0", is_latest=False)

    async def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
        status = "COMPLETED" if key.endswith("0") else None
        return info(key, self.sizes[key], replication_status=status)


def run_listing(store: ListingStore, tmp: Path, **gen: Any) -> list[str]:
    generator = generator_from_json(normalize_generator(gen_request(**gen)))
    out = tmp / "out.csv"
    count = asyncio.run(write_listing(store, generator, out, tmp))  # type: ignore[arg-type]
    lines = out.read_text().splitlines()
    assert count == len(lines)
    return lines


KEY_CHARS = st.sampled_from(list("ab/.-0"))


@settings(max_examples=60, deadline=None)
@given(keys=st.sets(st.text(KEY_CHARS, min_size=1, max_size=8), max_size=40))
def test_parallel_listing_equals_a_sorted_scan(tmp_path_factory: Any, keys: set[str]) -> None:
    tmp = tmp_path_factory.mktemp("l")
    store = ListingStore({k: len(k) for k in keys})
    lines = run_listing(store, tmp, Filter={"ObjectSizeGreaterThanBytes": 2})
    assert lines == [f"src,{k}," for k in sorted(k for k in keys if len(k) > 2)]


def test_ranges_split_at_common_prefixes_two_levels_down() -> None:
    store = ListingStore({"a/x/1": 1, "a/y/2": 1, "b/3": 1, "c": 1})
    ranges = asyncio.run(plan_ranges(store, "src", ""))  # type: ignore[arg-type]
    assert ranges == [
        KeyRange(None, "a/"),
        KeyRange("a/", "a/x/"),
        KeyRange("a/x/", "a/y/"),
        KeyRange("a/y/", "b/"),
        KeyRange("b/", None),
    ]
    assert KeyRange("a/x/", None).start_after == "a/x"


def test_listing_is_parallel_and_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ListingStore({f"p{i:02d}/k{j}": 1 for i in range(40) for j in range(3)})
    in_flight, peak = 0, 0
    original = store.list_objects

    async def counting(
        bucket: str, prefix: str = "", start_after: str | None = None, **kw: Any
    ) -> AsyncIterator[ObjectInfo]:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            async for item in original(bucket, prefix, start_after, **kw):
                yield item
        finally:
            in_flight -= 1

    monkeypatch.setattr(store, "list_objects", counting)
    monkeypatch.setattr(manifests, "LIST_CONCURRENCY", 5)
    lines = run_listing(store, tmp_path)
    assert len(lines) == 120 and lines == sorted(lines)
    assert 1 < peak <= 5


def test_prefix_filter_narrows_the_listing(tmp_path: Path) -> None:
    store = ListingStore({"logs/a.gz": 1, "logs/b.txt": 1, "img/c.gz": 1})
    lines = run_listing(store, tmp_path, Filter={"KeyNameConstraint": {"MatchAnyPrefix": ["logs/"]}})
    assert lines == ["src,logs/a.gz,", "src,logs/b.txt,"]
    assert all(c[1] == "logs/" for c in store.calls)


def test_head_filters_head_only_objects_that_passed_the_others(tmp_path: Path) -> None:
    store = ListingStore({"k0": 5, "k1": 5, "k10": 50, "k2": 50})
    lines = run_listing(
        store, tmp_path, Filter={"ObjectSizeLessThanBytes": 10, "ObjectReplicationStatuses": ["COMPLETED"]}
    )
    assert lines == ["src,k0,"]


def test_all_versions_lists_every_version_but_not_delete_markers(tmp_path: Path) -> None:
    store = ListingStore({"a b": 1, "c": 1})
    lines = run_listing(store, tmp_path, IncludeVersions="All")
    assert lines == ["src,a+b,v2", "src,a+b,v0", "src,c,v2", "src,c,v0"]


@pytest.mark.parametrize("versions", ["Current", "All"])
def test_the_generator_lists_without_etags(tmp_path: Path, versions: str) -> None:
    # No filter and no manifest row uses an ETag: a folder store need not hash its files.
    store = ListingStore({"a/1": 1, "b/2": 2, "c": 3})
    lines = run_listing(store, tmp_path, IncludeVersions=versions, Filter={"ObjectSizeGreaterThanBytes": 0})
    assert len(lines) == (3 if versions == "Current" else 6)
    assert store.etags and not any(store.etags)
