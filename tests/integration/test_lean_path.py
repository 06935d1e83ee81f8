"""S3Store's lean request path against moto's server (and rclone's): every test runs twice,
on the lean path and with S3BATCH_LEAN_PATH=0 (aiobotocore), and each run proves which path
carried the calls under test, so both are shown to give the same answers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config

from s3batch.errors import StorageError
from s3batch.storage.base import CopyOptions, VersionRef
from s3batch.storage.config import S3Config
from s3batch.storage.s3 import S3Store
from s3batch.storage.s3 import store as s3_store
from s3batch.storage.s3.http1 import ConnectionPool, Response

try:
    from test_storage_contract import ODD_KEYS as CONTRACT_KEYS
except ImportError:  # pragma: no cover - the contract suite moved
    CONTRACT_KEYS = ["plain.txt", "with space.txt", "plus+sign.txt", "100% done.txt", "ünïcødé/ключ/日本.txt"]

pytestmark = pytest.mark.integration

ODD_KEYS = [
    *CONTRACT_KEYS,
    "%2B encoded plus",
    "what?.txt",
    "hash#tag",
    "amp&ersand",
    "eq=als",
    "tilde~and'quote\"",
    "/leading slash",
    "double//slash",
    "<xml>&amp;</xml>",
    "k" * 900,
]
#: Tag keys and values S3 allows: letters, digits, spaces and + - = . _ : / @ (any script).
ODD_TAGS = {"key with space": "value+plus", "ключ": "значение/=", "a:b@c": "x_y.z-", "empty": ""}


@dataclass
class Harness:
    lean: bool
    store: S3Store
    client: Any  # boto3 S3 client on the same server
    bucket: str
    #: aiobotocore operations S3Store ran (S3Store._call).
    boto_calls: list[str] = field(default_factory=list)
    #: Requests the lean path's connection pools sent (first line of each).
    lean_requests: list[str] = field(default_factory=list)

    def assert_carried(self, *operations: str) -> None:
        """The calls under test went the expected way, and only that way."""
        if self.lean:
            assert self.lean_requests, "no request took the lean path"
            assert not set(operations) & set(self.boto_calls), self.boto_calls
        else:
            assert not self.lean_requests
            assert set(operations) <= set(self.boto_calls), self.boto_calls
        self.boto_calls.clear()
        self.lean_requests.clear()


async def open_harness(
    lean: bool, monkeypatch: pytest.MonkeyPatch, endpoint: str, client: Any, bucket: str, **config: Any
) -> Harness:
    if not lean:
        monkeypatch.setenv("S3BATCH_LEAN_PATH", "0")
    store = S3Store(S3Config(endpoint_url=endpoint, **config))
    harness = Harness(lean, store, client, bucket)

    original_call = store._call

    async def recording_call(operation: str, **params: Any) -> dict[str, Any]:
        harness.boto_calls.append(operation)
        return await original_call(operation, **params)

    original_request = ConnectionPool.request

    async def recording_request(pool: ConnectionPool, data: bytes, **kwargs: Any) -> Response:
        harness.lean_requests.append(data.split(b"\r\n", 1)[0].decode())
        return await original_request(pool, data, **kwargs)

    monkeypatch.setattr(store, "_call", recording_call)
    monkeypatch.setattr(ConnectionPool, "request", recording_request)
    return harness


@pytest.fixture(params=["lean", "botocore"])
async def h(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    s3_endpoint: str,
    boto3_s3: Any,
    bucket_name: str,
) -> AsyncIterator[Harness]:
    boto3_s3.create_bucket(Bucket=bucket_name)
    harness = await open_harness(request.param == "lean", monkeypatch, s3_endpoint, boto3_s3, bucket_name)
    yield harness
    await harness.store.close()


def tags_of(client: Any, bucket: str, key: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def keys_of(client: Any, bucket: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


# -- copy --------------------------------------------------------------------------------------


async def test_copy_odd_keys_keeps_body_metadata_and_tags(h: Harness) -> None:
    for i, key in enumerate(ODD_KEYS):
        h.client.put_object(
            Bucket=h.bucket,
            Key=key,
            Body=f"body {i} of {key}".encode(),
            ContentType="text/x-odd",
            Metadata={"colour": "blue", "n": str(i)},
            Tagging="t=1&name=with%20space",
        )
    for key in ODD_KEYS:
        result = await h.store.copy(h.bucket, key, h.bucket, "copy/" + key)
        source = h.client.head_object(Bucket=h.bucket, Key=key)
        assert result.etag == source["ETag"].strip('"')
    h.assert_carried("copy_object")

    for i, key in enumerate(ODD_KEYS):
        copied = h.client.get_object(Bucket=h.bucket, Key="copy/" + key)
        assert copied["Body"].read() == f"body {i} of {key}".encode()
        assert copied["Metadata"] == {"colour": "blue", "n": str(i)}
        assert copied["ContentType"] == "text/x-odd"
        assert tags_of(h.client, h.bucket, "copy/" + key) == {"t": "1", "name": "with space"}


async def test_copy_replacing_tags_and_across_buckets(h: Harness) -> None:
    other = h.bucket + "-dst"
    h.client.create_bucket(Bucket=other)
    key = "src ü+%.txt"
    h.client.put_object(Bucket=h.bucket, Key=key, Body=b"x", Tagging="old=1")
    await h.store.copy(h.bucket, key, other, "dst ü+%.txt", options=CopyOptions(tags=ODD_TAGS))
    await h.store.copy(h.bucket, key, other, "no tags", options=CopyOptions(tags={}))
    h.assert_carried("copy_object")
    assert h.client.get_object(Bucket=other, Key="dst ü+%.txt")["Body"].read() == b"x"
    assert tags_of(h.client, other, "dst ü+%.txt") == ODD_TAGS
    assert tags_of(h.client, other, "no tags") == {}


async def test_copy_of_a_version_in_a_versioned_bucket(h: Harness) -> None:
    h.client.put_bucket_versioning(Bucket=h.bucket, VersioningConfiguration={"Status": "Enabled"})
    key = "versioned key+1"
    old = h.client.put_object(Bucket=h.bucket, Key=key, Body=b"old")["VersionId"]
    h.client.put_object(Bucket=h.bucket, Key=key, Body=b"new")
    result = await h.store.copy(h.bucket, key, h.bucket, "restored", src_version_id=old)
    h.assert_carried("copy_object")
    assert result.version_id is not None
    copied = h.client.get_object(Bucket=h.bucket, Key="restored")
    assert copied["Body"].read() == b"old"
    assert copied["VersionId"] == result.version_id


async def test_copy_from_a_missing_key_is_no_such_key(h: Harness) -> None:
    with pytest.raises(StorageError) as caught:
        await h.store.copy(h.bucket, "missing key", h.bucket, "dst")
    h.assert_carried("copy_object")
    assert (caught.value.code, caught.value.http_status, caught.value.retryable) == ("NoSuchKey", 404, False)


async def test_missing_bucket_is_no_such_bucket(h: Harness) -> None:
    missing = h.bucket + "-missing"
    h.client.put_object(Bucket=h.bucket, Key="k", Body=b"x")
    calls = {
        "copy_object": h.store.copy(h.bucket, "k", missing, "k"),
        "delete_object": h.store.delete(missing, "k"),
        "get_object_tagging": h.store.get_tags(missing, "k"),
        "put_object_tagging": h.store.put_tags(missing, "k", {"a": "b"}),
        "list_objects_v2": anext(aiter(h.store.list_objects(missing))),
        "delete_objects": h.store.delete_many(missing, [VersionRef("k")]),
    }
    for operation, call in calls.items():
        with pytest.raises(StorageError) as caught:
            await call
        assert (caught.value.code, caught.value.http_status, caught.value.retryable) == (
            "NoSuchBucket",
            404,
            False,
        ), operation
        h.assert_carried(operation)


# -- tags ----------------------------------------------------------------------------------------


async def test_put_get_delete_tags_on_odd_keys(h: Harness) -> None:
    for key in ODD_KEYS:
        h.client.put_object(Bucket=h.bucket, Key=key, Body=b"x")
    for key in ODD_KEYS:
        await h.store.put_tags(h.bucket, key, ODD_TAGS)
    h.assert_carried("put_object_tagging")
    for key in ODD_KEYS:
        assert tags_of(h.client, h.bucket, key) == ODD_TAGS
        assert await h.store.get_tags(h.bucket, key) == ODD_TAGS
    h.assert_carried("get_object_tagging")
    for key in ODD_KEYS:
        await h.store.delete_tags(h.bucket, key)
    h.assert_carried("delete_object_tagging")
    for key in ODD_KEYS:
        assert tags_of(h.client, h.bucket, key) == {}
        assert h.client.get_object(Bucket=h.bucket, Key=key)["Body"].read() == b"x"


async def test_tags_of_one_version(h: Harness) -> None:
    h.client.put_bucket_versioning(Bucket=h.bucket, VersioningConfiguration={"Status": "Enabled"})
    old = h.client.put_object(Bucket=h.bucket, Key="k", Body=b"1")["VersionId"]
    h.client.put_object(Bucket=h.bucket, Key="k", Body=b"2", Tagging="latest=yes")
    await h.store.put_tags(h.bucket, "k", {"old": "yes"}, version_id=old)
    assert await h.store.get_tags(h.bucket, "k", version_id=old) == {"old": "yes"}
    assert await h.store.get_tags(h.bucket, "k") == {"latest": "yes"}
    h.assert_carried("put_object_tagging", "get_object_tagging")


async def test_tags_of_a_missing_key_is_no_such_key(h: Harness) -> None:
    for call in (h.store.get_tags(h.bucket, "nope"), h.store.put_tags(h.bucket, "nope", {"a": "b"})):
        with pytest.raises(StorageError) as caught:
            await call
        assert (caught.value.code, caught.value.http_status, caught.value.retryable) == (
            "NoSuchKey",
            404,
            False,
        )
    h.assert_carried("get_object_tagging", "put_object_tagging")


# -- deletes -------------------------------------------------------------------------------------


async def test_delete_odd_keys(h: Harness) -> None:
    for key in ODD_KEYS:
        h.client.put_object(Bucket=h.bucket, Key=key, Body=b"x")
    h.client.put_object(Bucket=h.bucket, Key="keep", Body=b"x")
    for key in ODD_KEYS:
        await h.store.delete(h.bucket, key)
    await h.store.delete(h.bucket, "never existed")  # S3: no error
    h.assert_carried("delete_object")
    assert keys_of(h.client, h.bucket) == ["keep"]


async def test_delete_many_with_missing_keys(h: Harness) -> None:
    for key in ODD_KEYS:
        h.client.put_object(Bucket=h.bucket, Key=key, Body=b"x")
    refs = [VersionRef(k) for k in ODD_KEYS] + [VersionRef("missing one"), VersionRef("missing/two")]
    outcomes = await h.store.delete_many(h.bucket, refs)
    h.assert_carried("delete_objects")
    assert outcomes == [None] * len(refs)
    assert keys_of(h.client, h.bucket) == []


async def test_delete_many_versions_reports_per_key_errors(h: Harness) -> None:
    """A locked version fails alone (AccessDenied); a bad version id deletes nothing (moto
    reports no error for it, as S3 does for a version that does not exist)."""
    bucket = h.bucket + "-lock"
    h.client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    until = datetime.now(UTC) + timedelta(days=1)
    locked = h.client.put_object(
        Bucket=bucket,
        Key="locked ü+",
        Body=b"1",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )["VersionId"]
    v1 = h.client.put_object(Bucket=bucket, Key="a b+", Body=b"1")["VersionId"]
    v2 = h.client.put_object(Bucket=bucket, Key="a b+", Body=b"2")["VersionId"]
    refs = [VersionRef("a b+", v1), VersionRef("locked ü+", locked), VersionRef("a b+", "not-a-version-id")]
    outcomes = await h.store.delete_many(bucket, refs)
    h.assert_carried("delete_objects")
    assert outcomes[0] is None and outcomes[2] is None
    failed = outcomes[1]
    assert isinstance(failed, StorageError)
    assert (failed.code, failed.http_status, failed.retryable) == ("AccessDenied", 403, False)
    versions = h.client.list_object_versions(Bucket=bucket).get("Versions", [])
    assert sorted((v["Key"], v["VersionId"]) for v in versions) == [("a b+", v2), ("locked ü+", locked)]


# -- listing -------------------------------------------------------------------------------------

LISTED = sorted([f"dir/{i:03d} ü+%.txt" for i in range(25)] + ["dir/zz", "other/x", "dir"])


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_store, "LIST_PAGE_MAX_KEYS", 7)


async def test_list_objects_pages_with_prefix_and_start_after(h: Harness, small_pages: None) -> None:
    for key in LISTED:
        h.client.put_object(Bucket=h.bucket, Key=key, Body=key.encode())
    listed = [info async for info in h.store.list_objects(h.bucket, prefix="dir/")]
    assert [i.key for i in listed] == [k for k in LISTED if k.startswith("dir/")]
    assert all(i.size == len(i.key.encode()) and i.bucket == h.bucket for i in listed)
    assert all(i.last_modified.tzinfo is not None and len(i.etag) == 32 for i in listed)
    pages = len(h.lean_requests) if h.lean else h.boto_calls.count("list_objects_v2")
    assert pages == 4  # 26 keys, 7 a page
    h.assert_carried("list_objects_v2")

    after = LISTED[10]
    listed = [info.key async for info in h.store.list_objects(h.bucket, prefix="dir/", start_after=after)]
    assert listed == [k for k in LISTED if k.startswith("dir/") and k > after]
    assert [i.key async for i in h.store.list_objects(h.bucket)] == LISTED
    assert [i.key async for i in h.store.list_objects(h.bucket, prefix="nothing/")] == []
    h.assert_carried("list_objects_v2")


async def test_bounded_listing_stops_at_end_before(h: Harness) -> None:
    for key in LISTED:
        h.client.put_object(Bucket=h.bucket, Key=key, Body=b"x")
    start, end = LISTED[2], LISTED[20]
    listed = [i.key async for i in h.store.list_objects(h.bucket, start_after=start, end_before=end)]
    assert listed == [k for k in LISTED if start < k < end]
    pages = len(h.lean_requests) if h.lean else h.boto_calls.count("list_objects_v2")
    assert pages == 2  # 10 keys, then 20 (which pass end_before)
    h.assert_carried("list_objects_v2")
    everything = [i.key async for i in h.store.list_objects(h.bucket, end_before="\U0010ffff")]
    assert everything == LISTED


# -- rclone: a second server that checks signatures for real -------------------------------------


@pytest.fixture(params=["lean", "botocore"])
async def rclone(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, rclone_server: str, bucket_name: str
) -> AsyncIterator[Harness]:
    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    client = boto3.client("s3", endpoint_url=rclone_server, config=config, region_name="us-east-1")
    client.create_bucket(Bucket=bucket_name)
    harness = await open_harness(
        request.param == "lean", monkeypatch, rclone_server, client, bucket_name, addressing_style="path"
    )
    yield harness
    await harness.store.close()


#: Keys a folder-backed store can hold (no empty path segments).
RCLONE_KEYS = ["plain.txt", "with space.txt", "plus+sign.txt", "100% done.txt", "ü/ключ/日本.txt", "a&b=c"]


async def test_copy_list_delete_on_rclone(rclone: Harness) -> None:
    """Copy, list and delete only: rclone answers tagging calls by destroying the object."""
    h = rclone
    for key in RCLONE_KEYS:
        h.client.put_object(Bucket=h.bucket, Key=key, Body=key.encode())
    for key in RCLONE_KEYS:
        await h.store.copy(h.bucket, key, h.bucket, "copy/" + key)
    h.assert_carried("copy_object")
    for key in RCLONE_KEYS:
        assert h.client.get_object(Bucket=h.bucket, Key="copy/" + key)["Body"].read() == key.encode()

    listed = [i.key async for i in h.store.list_objects(h.bucket, prefix="copy/")]
    assert listed == sorted("copy/" + k for k in RCLONE_KEYS)
    h.assert_carried("list_objects_v2")

    await h.store.delete(h.bucket, "copy/" + RCLONE_KEYS[0])
    outcomes = await h.store.delete_many(h.bucket, [VersionRef("copy/" + k) for k in RCLONE_KEYS[1:]])
    h.assert_carried("delete_object", "delete_objects")
    assert outcomes == [None] * (len(RCLONE_KEYS) - 1)
    assert keys_of(h.client, h.bucket) == sorted(RCLONE_KEYS)


# -- plain reads and writes: HEAD, GET, PUT ------------------------------------------------------


async def test_head_gives_what_botocore_gives(h: Harness) -> None:
    """A lean HEAD's headers go through botocore's own parser: every ObjectInfo field matches."""
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    for i, key in enumerate(ODD_KEYS):
        h.client.put_object(
            Bucket=h.bucket, Key=key, Body=b"x" * i, ContentType="text/x-odd", CacheControl="no-cache",
            ContentDisposition='attachment; filename="a b.txt"', Expires=expires,
            Metadata={"Colour": "blue", "n": str(i)}, StorageClass="STANDARD_IA",
        )  # fmt: skip
    infos = [await h.store.head(h.bucket, key) for key in ODD_KEYS]
    h.assert_carried("head_object")
    for i, (key, info) in enumerate(zip(ODD_KEYS, infos, strict=True)):
        truth = h.client.head_object(Bucket=h.bucket, Key=key)
        assert (info.bucket, info.key, info.size) == (h.bucket, key, i)
        assert info.etag == truth["ETag"].strip('"')
        assert info.last_modified == truth["LastModified"] and info.last_modified.tzinfo is not None
        assert (info.content_type, info.storage_class) == ("text/x-odd", "STANDARD_IA")
        assert dict(info.metadata) == {"colour": "blue", "n": str(i)}
        assert info.headers["CacheControl"] == "no-cache"
        assert info.headers["ContentDisposition"] == 'attachment; filename="a b.txt"'
        assert info.headers["Expires"] == expires


async def test_head_of_a_version_and_of_missing_things(h: Harness) -> None:
    h.client.put_bucket_versioning(Bucket=h.bucket, VersioningConfiguration={"Status": "Enabled"})
    old = h.client.put_object(Bucket=h.bucket, Key="v ü+", Body=b"old")["VersionId"]
    h.client.put_object(Bucket=h.bucket, Key="v ü+", Body=b"newer")
    info = await h.store.head(h.bucket, "v ü+", old)
    h.assert_carried("head_object")
    assert (info.size, info.version_id) == (3, old)
    # A HEAD error has no body: the lean path hands it to botocore's, which tells them apart.
    for bucket, key, code in [
        (h.bucket, "missing", "NoSuchKey"),
        (h.bucket + "-missing", "k", "NoSuchBucket"),
    ]:
        with pytest.raises(StorageError) as caught:
            await h.store.head(bucket, key)
        assert (caught.value.code, caught.value.http_status) == (code, 404)


async def test_get_bytes_and_iter_bytes(h: Harness) -> None:
    bodies = {"empty": b"", "ten ü+%": b"0123456789", "big": bytes(range(256)) * 40}
    for key, body in bodies.items():
        h.client.put_object(Bucket=h.bucket, Key=key, Body=body)
    for key, body in bodies.items():
        assert await h.store.get_bytes(h.bucket, key) == body
        # The first chunk on the lean path, the rest streamed by botocore from where it ended.
        for start in sorted({0, min(3, len(body)), len(body)}):
            read = [c async for c in h.store.iter_bytes(h.bucket, key, start=start, chunk_size=4)]
            assert b"".join(read) == body[start:], (key, start)
            assert all(read)
    assert [c async for c in h.store.iter_bytes(h.bucket, "ten ü+%", chunk_size=1 << 20)] == [b"0123456789"]
    if h.lean:
        assert any(line.startswith("GET ") for line in h.lean_requests)
        # An object read in one chunk never reaches botocore.
        h.boto_calls.clear()
        assert (
            b"".join([c async for c in h.store.iter_bytes(h.bucket, "big", chunk_size=1 << 20)])
            == bodies["big"]
        )
        assert await h.store.get_bytes(h.bucket, "ten ü+%") == bodies["ten ü+%"]
        assert h.boto_calls == []
    for call in (
        h.store.get_bytes(h.bucket, "missing"),
        anext(aiter(h.store.iter_bytes(h.bucket, "missing"))),
    ):
        with pytest.raises(StorageError) as caught:
            await call
        assert (caught.value.code, caught.value.http_status) == ("NoSuchKey", 404)


async def test_a_read_continued_by_botocore_is_pinned_to_the_same_object(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An object replaced between the lean first chunk and the streamed rest fails the read
    (412) instead of splicing two objects together."""
    h.client.put_object(Bucket=h.bucket, Key="k", Body=b"first version")
    real_call = h.store._call

    async def replacing_call(operation: str, **params: Any) -> dict[str, Any]:
        if operation == "get_object":
            h.client.put_object(Bucket=h.bucket, Key="k", Body=b"SECOND VERSION!")
        return await real_call(operation, **params)

    monkeypatch.setattr(h.store, "_call", replacing_call)
    read = h.store.iter_bytes(h.bucket, "k", chunk_size=5)
    if not h.lean:  # one streamed GET: whatever it reads is one object
        assert b"".join([c async for c in read]) == b"SECOND VERSION!"
        return
    assert await anext(read) == b"first"
    with pytest.raises(StorageError) as caught:
        await anext(read)
    assert caught.value.http_status == 412


async def test_put_bytes(h: Harness) -> None:
    info = await h.store.put_bytes(
        h.bucket, "report ü+%.csv", b"a,b\n", content_type="text/csv", metadata={"Job": "j-1"}
    )
    h.assert_carried("put_object")
    got = h.client.get_object(Bucket=h.bucket, Key="report ü+%.csv")
    assert got["Body"].read() == b"a,b\n"
    assert (got["ContentType"], got["Metadata"]) == ("text/csv", {"job": "j-1"})
    assert info.etag == got["ETag"].strip('"') and info.size == 4
    # What the lean path doesn't send itself goes through botocore: extra parameters.
    await h.store.put_bytes(h.bucket, "extra", b"x", extra={"CacheControl": "no-store"})
    assert "put_object" in h.boto_calls
    assert h.client.head_object(Bucket=h.bucket, Key="extra")["CacheControl"] == "no-store"


async def test_a_lean_only_session_never_builds_the_botocore_client(h: Harness) -> None:
    h.client.put_object(Bucket=h.bucket, Key="m.csv", Body=b"b,k\n")
    await h.store.head(h.bucket, "m.csv")
    await h.store.get_bytes(h.bucket, "m.csv")
    await h.store.put_bytes(h.bucket, "r.csv", b"x")
    await h.store.delete_many(h.bucket, [VersionRef("r.csv")])
    shared = h.store._shared
    assert shared is not None
    assert (shared.client is None) is h.lean
