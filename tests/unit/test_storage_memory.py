"""MemoryStore's own features: the call record, injected failures and versioning details.

The contract it shares with the real adapters is tested in
tests/integration/test_storage_contract.py.
"""

from __future__ import annotations

import hashlib

import pytest

from s3batch.errors import StorageError
from s3batch.storage.base import CopyOptions, ObjectStore, VersionRef
from s3batch.storage.memory import MemoryStore


async def make(versioned: bool = False) -> MemoryStore:
    store = MemoryStore(versioned=versioned)
    await store.create_bucket("b")
    return store


def test_is_an_object_store() -> None:
    assert isinstance(MemoryStore(), ObjectStore)


async def test_calls_are_recorded() -> None:
    store = await make()
    await store.put_bytes("b", "k", b"x")
    await store.copy("b", "k", "b", "k2")
    await store.delete_many("b", [VersionRef("k"), VersionRef("k2")])
    _ = [o async for o in store.list_objects("b", "p/")]
    await store.close()
    assert store.calls == [
        ("create_bucket", "b"),
        ("put_bytes", "b", "k"),
        ("copy", "b", "k", "b", "k2"),
        ("delete_many", "b", "k", "k2"),
        ("list_objects", "b", "p/"),
        ("close",),
    ]


async def test_injected_failures_hit_the_chosen_calls_only() -> None:
    store = await make()
    await store.put_bytes("b", "k", b"x")
    await store.put_bytes("b", "other", b"y")
    slow = StorageError("SlowDown", "Please reduce your request rate.", 503, True)
    store.fail("head", slow, key="k", times=2)
    assert (await store.head("b", "other")).size == 1
    assert await store.get_bytes("b", "k") == b"x"
    for _ in range(2):
        with pytest.raises(StorageError) as caught:
            await store.head("b", "k")
        assert caught.value is slow
    assert (await store.head("b", "k")).size == 1  # the third call goes through


async def test_injected_failure_for_any_key() -> None:
    store = await make()
    store.fail("put_bytes", StorageError("InternalError", "boom", 500, True))
    with pytest.raises(StorageError, match="boom"):
        await store.put_bytes("b", "anything", b"x")
    await store.put_bytes("b", "anything", b"x")


async def test_put_returns_what_head_returns() -> None:
    store = await make()
    put = await store.put_bytes("b", "k", b"abc", content_type="text/plain", metadata={"A": "1"})
    head = await store.head("b", "k")
    assert put.etag == head.etag == hashlib.md5(b"abc").hexdigest()
    assert put.metadata == head.metadata == {"a": "1"}
    assert put.last_modified == head.last_modified


async def test_unversioned_overwrite_keeps_one_version() -> None:
    store = await make()
    await store.put_bytes("b", "k", b"one")
    await store.put_tags("b", "k", {"t": "1"})
    await store.put_bytes("b", "k", b"two")
    assert await store.get_bytes("b", "k") == b"two"
    assert await store.get_tags("b", "k") == {}  # a new object has no tags
    assert (await store.head("b", "k")).version_id is None


async def test_versioned_delete_marker() -> None:
    store = await make(versioned=True)
    v1 = (await store.put_bytes("b", "k", b"one")).version_id
    await store.delete("b", "k")
    with pytest.raises(StorageError) as caught:
        await store.head("b", "k")
    assert caught.value.code == "NoSuchKey"
    assert await store.get_bytes("b", "k", v1) == b"one"
    assert [o.key async for o in store.list_objects("b")] == []
    # A new put makes the key visible again.
    await store.put_bytes("b", "k", b"two")
    assert [o.key async for o in store.list_objects("b")] == ["k"]


async def test_versioned_reading_a_delete_marker_is_not_allowed() -> None:
    store = await make(versioned=True)
    await store.put_bytes("b", "k", b"one")
    await store.delete("b", "k")
    marker = store._buckets["b"]["k"][-1].version_id
    with pytest.raises(StorageError) as caught:
        await store.get_bytes("b", "k", marker)
    assert (caught.value.code, caught.value.http_status) == ("MethodNotAllowed", 405)
    # Deleting the marker itself brings the object back, as in S3.
    await store.delete("b", "k", marker)
    assert await store.get_bytes("b", "k") == b"one"


async def test_copy_result_carries_the_new_version() -> None:
    store = await make(versioned=True)
    await store.put_bytes("b", "src", b"x")
    result = await store.copy("b", "src", "b", "dst", options=CopyOptions(tags={"a": "b"}))
    assert result.version_id == (await store.head("b", "dst")).version_id
    assert await store.get_tags("b", "dst") == {"a": "b"}


async def test_list_objects_reports_what_list_objects_v2_does() -> None:
    store = await make(versioned=True)
    await store.put_bytes("b", "k", b"x", content_type="text/plain", metadata={"a": "1"})
    [info] = [o async for o in store.list_objects("b")]
    assert (info.version_id, info.content_type, dict(info.metadata)) == (None, None, {})


async def test_s3_key_rules() -> None:
    store = await make()
    for key, code in (("", "InvalidArgument"), ("k" * 1025, "KeyTooLongError")):
        with pytest.raises(StorageError) as caught:
            await store.put_bytes("b", key, b"x")
        assert caught.value.code == code
    # Keys a folder could not hold are fine in memory, as in S3.
    await store.put_bytes("b", "../odd//key/", b"x")
    assert await store.get_bytes("b", "../odd//key/") == b"x"


async def test_iter_bytes_chunks() -> None:
    store = await make()
    await store.put_bytes("b", "k", b"0123456789")
    chunks = [c async for c in store.iter_bytes("b", "k", start=2, chunk_size=3)]
    assert chunks == [b"234", b"567", b"89"]


async def test_listing_helpers_are_recorded_and_skip_deleted_keys() -> None:
    store = await make(versioned=True)
    await store.put_bytes("b", "d/one", b"1")
    await store.put_bytes("b", "e/two", b"2")
    await store.delete("b", "e/two")  # only a delete marker left: no live prefix
    assert await store.list_prefixes("b") == ["d/"]
    assert [o.key async for o in store.list_objects("b", start_after="d/one")] == []
    versions = [(o.key, o.is_delete_marker) async for o in store.list_versions("b")]
    assert versions == [("d/one", False), ("e/two", True), ("e/two", False)]
    assert ("list_prefixes", "b", "") in store.calls and ("list_versions", "b", "") in store.calls


async def test_storage_backed_calls_fail_as_injected_or_not_implemented() -> None:
    from s3batch.domain.objects import AclSpec

    store = await make()
    await store.put_bytes("b", "k", b"x")
    denied = StorageError("AccessDenied", "Access Denied", 403)
    store.fail("put_acl", denied, key="k")
    with pytest.raises(StorageError) as first:
        await store.put_acl("b", "k", AclSpec(canned="private"))
    assert first.value is denied  # the injected failure wins once
    with pytest.raises(StorageError) as second:
        await store.put_acl("b", "k", AclSpec(canned="private"))
    assert (second.value.code, second.value.http_status) == ("NotImplemented", 501)
