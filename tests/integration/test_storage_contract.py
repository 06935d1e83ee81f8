"""One contract, three adapters: S3Store (against moto's server), LocalStore and MemoryStore.

Every test in the first part runs against all three and expects the same answers. The later
parts cover what only one adapter has: S3 multipart copy and error mapping, versioning (moto
and the versioned MemoryStore), LocalStore's folder rules and persistence.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.folder_attrs import MODES, in_sidecars, in_xattrs, use_mode

from s3batch.errors import StorageError
from s3batch.storage.base import CopyOptions, ObjectStore, VersionRef
from s3batch.storage.config import S3Config
from s3batch.storage.local import META_DIR_NAME, LocalStore
from s3batch.storage.memory import MemoryStore
from s3batch.storage.s3 import S3Store
from s3batch.storage.s3 import errors as s3_errors
from s3batch.storage.s3 import store as s3_store
from s3batch.storage.s3.lean import LeanS3

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
ODD_KEYS = [
    "plain.txt",
    "with space.txt",
    "plus+sign.txt",
    "100% done.txt",
    "ünïcødé/ключ/日本.txt",
    "deep/nested/prefix/object.bin",
    "query?and&amp=x.txt",
]


@dataclass
class Backend:
    kind: str
    store: Any  # an ObjectStore; Any keeps the adapter-specific helpers reachable
    bucket: str
    endpoint: str | None = None
    root: Path | None = None


def _open(kind: str, request: pytest.FixtureRequest, tmp_path: Path, **memory: Any) -> Backend:
    bucket = request.getfixturevalue("bucket_name")
    if kind == "s3":
        endpoint = request.getfixturevalue("s3_endpoint")
        config = S3Config(endpoint_url=endpoint, addressing_style="path")
        return Backend(kind, S3Store(config), bucket, endpoint=endpoint)
    if kind == "local":
        root = tmp_path / "root"
        return Backend(kind, LocalStore(root), bucket, root=root)
    return Backend(kind, MemoryStore(**memory), bucket)


@pytest.fixture(params=["s3", "local", "memory"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    b = _open(request.param, request, tmp_path)
    await b.store.create_bucket(b.bucket)
    yield b
    await b.store.close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


async def collect(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in chunks]


async def expect_error(awaitable: Any, code: str, status: int | None) -> StorageError:
    with pytest.raises(StorageError) as caught:
        await awaitable
    assert (caught.value.code, caught.value.http_status) == (code, status), caught.value
    return caught.value


# -- the shared contract ------------------------------------------------------------------


def test_adapters_satisfy_the_protocol(tmp_path: Path) -> None:
    assert isinstance(S3Store(S3Config()), ObjectStore)
    assert isinstance(LocalStore(tmp_path), ObjectStore)
    assert isinstance(MemoryStore(), ObjectStore)


@pytest.mark.parametrize("key", ODD_KEYS)
async def test_put_head_get_round_trip(backend: Backend, key: str) -> None:
    body = b"hello, " + key.encode()
    put = await backend.store.put_bytes(
        backend.bucket, key, body, content_type="text/plain", metadata={"Owner": "Ann"}
    )
    assert put.etag == md5(body) and put.size == len(body)
    info = await backend.store.head(backend.bucket, key)
    assert (info.key, info.size, info.etag) == (key, len(body), md5(body))
    assert info.content_type == "text/plain"
    assert dict(info.metadata) == {"owner": "Ann"}
    assert info.storage_class == "STANDARD"
    assert info.version_id is None
    assert info.last_modified.tzinfo is not None
    assert abs((datetime.now(UTC) - info.last_modified).total_seconds()) < 120
    assert await backend.store.get_bytes(backend.bucket, key) == body
    listed = [o.key async for o in backend.store.list_objects(backend.bucket)]
    assert listed == [key]


async def test_default_content_type_and_empty_object(backend: Backend) -> None:
    await backend.store.put_bytes(backend.bucket, "empty", b"")
    info = await backend.store.head(backend.bucket, "empty")
    assert (info.size, info.etag, info.content_type) == (0, md5(b""), "binary/octet-stream")
    assert await collect(backend.store.iter_bytes(backend.bucket, "empty")) == []


async def test_create_bucket_twice_is_quiet(backend: Backend) -> None:
    await backend.store.create_bucket(backend.bucket)
    await backend.store.put_bytes(backend.bucket, "k", b"x")
    await backend.store.create_bucket(backend.bucket)
    assert await backend.store.get_bytes(backend.bucket, "k") == b"x"


async def test_iter_bytes_from_offset(backend: Backend) -> None:
    body = bytes(range(256)) * 40
    await backend.store.put_bytes(backend.bucket, "data.bin", body)
    chunks = await collect(backend.store.iter_bytes(backend.bucket, "data.bin", chunk_size=1000))
    assert b"".join(chunks) == body and max(map(len, chunks)) <= 1000
    tail = await collect(backend.store.iter_bytes(backend.bucket, "data.bin", start=1234))
    assert b"".join(tail) == body[1234:]
    # The very end is a valid resume point; past it is not.
    assert await collect(backend.store.iter_bytes(backend.bucket, "data.bin", start=len(body))) == []
    await expect_error(
        collect(backend.store.iter_bytes(backend.bucket, "data.bin", start=len(body) + 1)),
        "InvalidRange",
        416,
    )


async def test_missing_key(backend: Backend) -> None:
    s, b = backend.store, backend.bucket
    error = await expect_error(s.head(b, "nope"), "NoSuchKey", 404)
    assert not error.retryable
    await expect_error(s.get_bytes(b, "nope"), "NoSuchKey", 404)
    await expect_error(collect(s.iter_bytes(b, "nope")), "NoSuchKey", 404)
    await expect_error(s.get_tags(b, "nope"), "NoSuchKey", 404)
    await expect_error(s.put_tags(b, "nope", {"a": "b"}), "NoSuchKey", 404)
    await expect_error(s.copy(b, "nope", b, "dst"), "NoSuchKey", 404)


async def test_missing_bucket(backend: Backend) -> None:
    s, b = backend.store, backend.bucket + "-missing"
    await expect_error(s.head(b, "k"), "NoSuchBucket", 404)
    await expect_error(s.get_bytes(b, "k"), "NoSuchBucket", 404)
    await expect_error(s.put_bytes(b, "k", b"x"), "NoSuchBucket", 404)
    await expect_error(s.delete(b, "k"), "NoSuchBucket", 404)
    await expect_error(s.delete_many(b, [VersionRef("k")]), "NoSuchBucket", 404)
    await expect_error(collect_keys(s, b), "NoSuchBucket", 404)
    await s.put_bytes(backend.bucket, "src", b"x")
    await expect_error(s.copy(backend.bucket, "src", b, "dst"), "NoSuchBucket", 404)


async def collect_keys(store: ObjectStore, bucket: str, prefix: str = "") -> list[str]:
    return [o.key async for o in store.list_objects(bucket, prefix)]


async def test_copy_keeps_or_replaces_metadata(backend: Backend) -> None:
    s, b = backend.store, backend.bucket
    body = b"payload"
    await s.put_bytes(b, "src key+1", body, content_type="text/csv", metadata={"a": "1"})
    result = await s.copy(b, "src key+1", b, "copied/ü key")
    assert result.etag == md5(body)
    kept = await s.head(b, "copied/ü key")
    assert (kept.content_type, dict(kept.metadata)) == ("text/csv", {"a": "1"})
    assert await s.get_bytes(b, "copied/ü key") == body

    replaced = CopyOptions(
        replace_metadata=True,
        metadata={"b": "2"},
        headers={
            "ContentType": "application/json",
            "CacheControl": "max-age=60",
            "ContentDisposition": 'attachment; filename="x.json"',
            "ContentLanguage": "en",
        },
    )
    await s.copy(b, "src key+1", b, "replaced", options=replaced)
    info = await s.head(b, "replaced")
    assert info.content_type == "application/json"
    assert dict(info.metadata) == {"b": "2"}
    assert info.headers["CacheControl"] == "max-age=60"
    assert info.headers["ContentDisposition"] == 'attachment; filename="x.json"'
    assert info.headers["ContentLanguage"] == "en"
    # A metadata COPY carries the system headers along.
    await s.copy(b, "replaced", b, "replaced-again")
    again = await s.head(b, "replaced-again")
    assert again.headers["CacheControl"] == "max-age=60"
    assert again.content_type == "application/json"


async def test_copy_storage_class_and_expires(backend: Backend) -> None:
    s, b = backend.store, backend.bucket
    await s.put_bytes(b, "src", b"x")
    expires = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    options = CopyOptions(replace_metadata=True, headers={"Expires": expires}, storage_class="STANDARD_IA")
    await s.copy(b, "src", b, "dst", options=options)
    info = await s.head(b, "dst")
    assert info.storage_class == "STANDARD_IA"
    assert info.headers["Expires"] == expires
    listed = [o async for o in s.list_objects(b, "dst")]
    assert [o.storage_class for o in listed] == ["STANDARD_IA"]
    # CopyObject never keeps the source's class unless asked.
    await s.copy(b, "dst", b, "dst2")
    assert (await s.head(b, "dst2")).storage_class == "STANDARD"


async def test_copy_tags(backend: Backend) -> None:
    s, b = backend.store, backend.bucket
    await s.put_bytes(b, "src", b"x")
    await s.put_tags(b, "src", {"team": "blue", "a b": "c+d=e@f"})
    await s.copy(b, "src", b, "same-tags")
    assert await s.get_tags(b, "same-tags") == {"team": "blue", "a b": "c+d=e@f"}
    await s.copy(b, "src", b, "no-tags", options=CopyOptions(tags={}))
    assert await s.get_tags(b, "no-tags") == {}
    new = {"x": "é/ü", "y": "1 2"}
    await s.copy(b, "src", b, "new-tags", options=CopyOptions(tags=new))
    assert await s.get_tags(b, "new-tags") == new


async def test_copy_onto_itself_needs_a_change(backend: Backend) -> None:
    s, b = backend.store, backend.bucket
    await s.put_bytes(b, "k", b"x", metadata={"v": "1"})
    await expect_error(s.copy(b, "k", b, "k"), "InvalidRequest", 400)
    await s.copy(b, "k", b, "k", options=CopyOptions(replace_metadata=True, metadata={"v": "2"}))
    assert dict((await s.head(b, "k")).metadata) == {"v": "2"}
    assert await s.get_bytes(b, "k") == b"x"


async def test_copy_between_buckets(backend: Backend) -> None:
    s, b = backend.store, backend.bucket
    other = b + "-2"
    await s.create_bucket(other)
    await s.put_bytes(b, "a/b", b"cross")
    await s.copy(b, "a/b", other, "c/d")
    assert await s.get_bytes(other, "c/d") == b"cross"


async def test_tags_put_get_delete(backend: Backend) -> None:
    s, b = backend.store, backend.bucket
    await s.put_bytes(b, "k", b"x")
    assert await s.get_tags(b, "k") == {}
    await s.put_tags(b, "k", {"a": "1", "b": "2"})
    await s.put_tags(b, "k", {"c": "3"})  # replaces the whole set
    assert await s.get_tags(b, "k") == {"c": "3"}
    await s.delete_tags(b, "k")
    assert await s.get_tags(b, "k") == {}
    assert await s.get_bytes(b, "k") == b"x"


async def test_tag_limits(backend: Backend) -> None:
    s, b = backend.store, backend.bucket
    await s.put_bytes(b, "k", b"x")
    await expect_error(s.put_tags(b, "k", {f"k{i}": "v" for i in range(11)}), "BadRequest", 400)
    await expect_error(s.put_tags(b, "k", {"k" * 129: "v"}), "InvalidTag", 400)
    await expect_error(s.put_tags(b, "k", {"k": "a&b"}), "InvalidTag", 400)
    await s.put_tags(b, "k", {"Ünï cødé": "x+y=z._:/@-1"})
    assert await s.get_tags(b, "k") == {"Ünï cødé": "x+y=z._:/@-1"}


async def test_delete_and_delete_missing(backend: Backend) -> None:
    s, b = backend.store, backend.bucket
    await s.put_bytes(b, "dir/k", b"x", metadata={"m": "1"})
    await s.put_tags(b, "dir/k", {"t": "1"})
    await s.delete(b, "dir/k")
    await expect_error(s.head(b, "dir/k"), "NoSuchKey", 404)
    await s.delete(b, "dir/k")  # again: S3 answers 204 for a missing key
    await s.delete(b, "never-was")
    # A new object under the old key starts with no metadata or tags.
    await s.put_bytes(b, "dir/k", b"y")
    assert dict((await s.head(b, "dir/k")).metadata) == {}
    assert await s.get_tags(b, "dir/k") == {}


async def test_delete_many_mixed(backend: Backend, request: pytest.FixtureRequest) -> None:
    s, b = backend.store, backend.bucket
    await s.put_bytes(b, "one", b"1")
    await s.put_bytes(b, "two", b"2")
    bucket, failing, code = await undeletable(backend, request)
    if bucket != b:
        await s.put_bytes(bucket, "one", b"1")
    refs = [VersionRef("one"), failing, VersionRef("missing")]
    outcomes = await s.delete_many(bucket, refs)
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], StorageError) and outcomes[1].code == code
    await expect_error(s.head(bucket, "one"), "NoSuchKey", 404)
    assert await s.delete_many(b, []) == []


async def undeletable(backend: Backend, request: pytest.FixtureRequest) -> tuple[str, VersionRef, str]:
    """A bucket and an object reference that the backend refuses to delete."""
    if backend.kind != "s3":
        return backend.bucket, VersionRef("two", "v1"), "NotImplemented"
    client = request.getfixturevalue("boto3_s3")
    bucket = backend.bucket + "-lock"
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    held = client.put_object(
        Bucket=bucket, Key="held", Body=b"x", ObjectLockLegalHoldStatus="ON", ChecksumAlgorithm="CRC32"
    )
    request.addfinalizer(
        lambda: client.put_object_legal_hold(
            Bucket=bucket, Key="held", VersionId=held["VersionId"], LegalHold={"Status": "OFF"}
        )
    )
    return bucket, VersionRef("held", held["VersionId"]), "AccessDenied"


async def test_list_objects_prefix_and_order(backend: Backend) -> None:
    s, b = backend.store, backend.bucket
    keys = ["b", "a/c/d", "ab", "a.b", "a-c", "a/b", "é", "z/y", "a/b c", "A"]
    for key in keys:
        await s.put_bytes(b, key, key.encode())
    assert await collect_keys(s, b) == sorted(keys)  # code point order = UTF-8 byte order
    assert await collect_keys(s, b, "a/") == ["a/b", "a/b c", "a/c/d"]
    assert await collect_keys(s, b, "a") == ["a-c", "a.b", "a/b", "a/b c", "a/c/d", "ab"]
    assert await collect_keys(s, b, "a/b") == ["a/b", "a/b c"]
    assert await collect_keys(s, b, "nothing") == []
    listed = {o.key: o async for o in s.list_objects(b, "z/")}
    assert listed["z/y"].etag == md5(b"z/y") and listed["z/y"].size == 3


async def test_put_file(backend: Backend, tmp_path: Path) -> None:
    path = tmp_path / "upload.bin"
    path.write_bytes(b"file body " * 100)
    await backend.store.put_file(backend.bucket, "up/loaded", path, content_type="text/plain")
    info = await backend.store.head(backend.bucket, "up/loaded")
    assert (info.etag, info.content_type) == (md5(path.read_bytes()), "text/plain")
    assert await backend.store.get_bytes(backend.bucket, "up/loaded") == path.read_bytes()
    await expect_error(
        backend.store.put_file(backend.bucket, "x", tmp_path / "absent"), "LocalFileError", None
    )


# -- S3Store only -------------------------------------------------------------------------


@pytest.fixture
async def s3(s3_endpoint: str, bucket_name: str) -> AsyncIterator[S3Store]:
    store = S3Store(S3Config(endpoint_url=s3_endpoint, addressing_style="path"))
    await store.create_bucket(bucket_name)
    yield store
    await store.close()


async def test_s3_region_from_config(s3_endpoint: str, bucket_name: str, boto3_s3: Any) -> None:
    config = S3Config(endpoint_url=s3_endpoint, addressing_style="path", region="eu-west-1")
    store = S3Store(config)
    try:
        await store.create_bucket(bucket_name)
        await store.create_bucket(bucket_name)
    finally:
        await store.close()
    location = boto3_s3.get_bucket_location(Bucket=bucket_name)["LocationConstraint"]
    assert location == "eu-west-1"


async def test_s3_unknown_profile_is_a_storage_error(s3_endpoint: str) -> None:
    store = S3Store(S3Config(endpoint_url=s3_endpoint, profile="no-such-profile"))
    await expect_error(store.head("b", "k"), "ProfileNotFound", None)
    await store.close()


def test_s3_rejects_unknown_addressing_style() -> None:
    from s3batch.errors import ConfigError

    with pytest.raises(ConfigError):
        S3Store(S3Config(addressing_style="sideways"))


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Multipart paths at test sizes: 5 MiB parts, S3's (and moto's) minimum."""
    monkeypatch.setattr(s3_store, "MULTIPART_COPY_THRESHOLD_BYTES", 5 * MiB)
    monkeypatch.setattr(s3_store, "MULTIPART_COPY_PART_BYTES", 5 * MiB)
    monkeypatch.setattr(s3_store, "MULTIPART_UPLOAD_THRESHOLD_BYTES", 5 * MiB)
    monkeypatch.setattr(s3_store, "MULTIPART_UPLOAD_PART_BYTES", 5 * MiB)


def big_body(size: int = 12 * MiB) -> bytes:
    return hashlib.sha256(b"seed").digest() * (size // 32)


async def test_s3_put_file_multipart(
    s3: S3Store, bucket_name: str, tmp_path: Path, small_parts: None
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(big_body())
    await s3.put_file(bucket_name, "big", path, content_type="application/x-test")
    info = await s3.head(bucket_name, "big")
    assert info.etag.endswith("-3") and info.size == 12 * MiB
    assert info.content_type == "application/x-test"
    assert await s3.get_bytes(bucket_name, "big") == path.read_bytes()


async def test_s3_multipart_copy_keeps_metadata_and_tags(
    s3: S3Store, bucket_name: str, small_parts: None, boto3_s3: Any
) -> None:
    body = big_body()
    boto3_s3.put_object(
        Bucket=bucket_name,
        Key="src big",
        Body=body,
        ContentType="video/mp4",
        CacheControl="no-cache",
        Metadata={"origin": "camera"},
        Tagging="kind=raw&a%20b=c%2Bd",
    )
    result = await s3.copy(bucket_name, "src big", bucket_name, "dst/ü big")
    assert result.etag.endswith("-3")
    info = await s3.head(bucket_name, "dst/ü big")
    assert info.size == len(body) and info.content_type == "video/mp4"
    assert dict(info.metadata) == {"origin": "camera"}
    assert info.headers["CacheControl"] == "no-cache"
    assert await s3.get_tags(bucket_name, "dst/ü big") == {"kind": "raw", "a b": "c+d"}
    assert await s3.get_bytes(bucket_name, "dst/ü big") == body


async def test_s3_multipart_copy_replaces_metadata_and_tags(
    s3: S3Store, bucket_name: str, small_parts: None
) -> None:
    body = big_body(11 * MiB)
    await s3.put_bytes(bucket_name, "src", body, metadata={"old": "1"})
    await s3.put_tags(bucket_name, "src", {"old": "tag"})
    options = CopyOptions(
        replace_metadata=True,
        metadata={"new": "2"},
        headers={"ContentType": "text/plain"},
        tags={"new": "tag"},
        storage_class="STANDARD_IA",
    )
    await s3.copy(bucket_name, "src", bucket_name, "dst", options=options)
    info = await s3.head(bucket_name, "dst")
    assert (dict(info.metadata), info.content_type) == ({"new": "2"}, "text/plain")
    assert info.storage_class == "STANDARD_IA"
    assert await s3.get_tags(bucket_name, "dst") == {"new": "tag"}
    assert await s3.get_bytes(bucket_name, "dst") == body


async def test_s3_small_object_still_single_copy(s3: S3Store, bucket_name: str, small_parts: None) -> None:
    await s3.put_bytes(bucket_name, "small", b"tiny")
    assert (await s3.copy(bucket_name, "small", bucket_name, "copy")).etag == md5(b"tiny")


async def test_s3_too_large_copy_falls_back_to_parts(
    s3: S3Store, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the real threshold the size is learnt from S3's refusal, not a HEAD per copy."""
    monkeypatch.setattr(s3_store, "SINGLE_COPY_MAX_BYTES", 5 * MiB)
    monkeypatch.setattr(s3_store, "MULTIPART_COPY_THRESHOLD_BYTES", 5 * MiB)
    monkeypatch.setattr(s3_store, "MULTIPART_COPY_PART_BYTES", 5 * MiB)
    body = big_body(6 * MiB)
    await s3.put_bytes(bucket_name, "src", body)
    calls: list[str] = []
    real_call = S3Store._call

    async def call(self: S3Store, operation: str, **params: Any) -> dict[str, Any]:
        calls.append(operation)
        if operation == "copy_object":  # what S3 answers above 5 GiB
            raise StorageError("InvalidRequest", "copy source is larger than allowed", 400)
        return await real_call(self, operation, **params)

    async def lean_copy(*args: Any) -> Any:  # the same refusal on the lean request path
        calls.append("copy_object")
        raise StorageError("InvalidRequest", "copy source is larger than allowed", 400)

    monkeypatch.setattr(S3Store, "_call", call)
    monkeypatch.setattr(LeanS3, "copy_object", lean_copy)
    result = await s3.copy(bucket_name, "src", bucket_name, "dst")
    assert result.etag.endswith("-2")
    # The size (HEAD) and tags are then read on the lean path; the parts go through botocore.
    assert calls[0] == "copy_object" and "head_object" not in calls
    assert calls.count("upload_part_copy") == 2
    assert await s3.get_bytes(bucket_name, "dst") == body
    # A refusal for another reason is not retried as multipart.
    await s3.put_bytes(bucket_name, "small", b"x")
    await expect_error(s3.copy(bucket_name, "small", bucket_name, "d2"), "InvalidRequest", 400)


async def test_s3_failed_multipart_copy_is_aborted(
    s3: S3Store,
    bucket_name: str,
    small_parts: None,
    monkeypatch: pytest.MonkeyPatch,
    boto3_s3: Any,
) -> None:
    await s3.put_bytes(bucket_name, "src", big_body())
    real_call = S3Store._call

    async def call(self: S3Store, operation: str, **params: Any) -> dict[str, Any]:
        if operation == "upload_part_copy" and params["PartNumber"] == 2:
            raise StorageError("SlowDown", "Please reduce your request rate.", 503, True)
        return await real_call(self, operation, **params)

    monkeypatch.setattr(S3Store, "_call", call)
    error = await expect_error(s3.copy(bucket_name, "src", bucket_name, "dst"), "SlowDown", 503)
    assert error.retryable
    assert boto3_s3.list_multipart_uploads(Bucket=bucket_name).get("Uploads", []) == []
    await expect_error(s3.head(bucket_name, "dst"), "NoSuchKey", 404)


async def test_s3_connection_refused_is_a_retryable_storage_error() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = S3Store(S3Config(endpoint_url=f"http://127.0.0.1:{port}", addressing_style="path"))
    try:
        error = await expect_error(store.head("b", "k"), "ConnectionError", None)
        assert error.retryable
        await expect_error(collect_keys(store, "b"), "ConnectionError", None)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("response", "code", "status", "retryable"),
    [
        ({"Error": {"Code": "404"}, "ResponseMetadata": {"HTTPStatusCode": 404}}, "NoSuchKey", 404, False),
        ({"Error": {"Code": "403"}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "AccessDenied", 403, False),
        ({"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "SlowDown", 503, True),
        (
            {"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}},
            "InternalError",
            500,
            True,
        ),
        ({"Error": {"Code": "502"}, "ResponseMetadata": {"HTTPStatusCode": 502}}, "502", 502, True),
        (
            {"Error": {"Code": "RequestTimeTooSkewed"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
            "RequestTimeTooSkewed",
            403,
            False,
        ),
        (
            {"Error": {"Code": "PermanentRedirect"}, "ResponseMetadata": {"HTTPStatusCode": 301}},
            "PermanentRedirect",
            301,
            False,
        ),
    ],
)
def test_s3_client_error_mapping(response: dict[str, Any], code: str, status: int, retryable: bool) -> None:
    from botocore.exceptions import ClientError

    error = s3_errors._from_client_error(ClientError(response, "HeadObject"))
    assert (error.code, error.http_status, error.retryable) == (code, status, retryable)


def test_s3_timeouts_and_odd_errors_are_storage_errors() -> None:
    from botocore.exceptions import NoCredentialsError, ReadTimeoutError

    with pytest.raises(StorageError) as caught:
        with s3_errors.translating():
            raise ReadTimeoutError(endpoint_url="http://x")
    assert (caught.value.code, caught.value.http_status, caught.value.retryable) == (
        "RequestTimeout",
        None,
        True,
    )
    with pytest.raises(StorageError) as caught, s3_errors.translating():
        raise TimeoutError()
    assert caught.value.code == "RequestTimeout" and caught.value.retryable
    with pytest.raises(StorageError) as caught, s3_errors.translating():
        raise NoCredentialsError()
    assert caught.value.code == "CredentialsError" and not caught.value.retryable


def test_s3_aiohttp_failures_are_retryable_connection_errors() -> None:
    """aiohttp (under the aiobotocore client) is loaded on first use only; its errors, none of
    them an OSError, are still connection errors, and anything else passes through."""
    import aiohttp

    with pytest.raises(StorageError) as caught, s3_errors.translating():
        raise aiohttp.ServerDisconnectedError()
    assert (caught.value.code, caught.value.retryable) == ("ConnectionError", True)
    with pytest.raises(KeyError), s3_errors.translating():
        raise KeyError("not a storage failure")


async def test_s3_extra_copy_parameters_pass_through(s3: S3Store, bucket_name: str) -> None:
    await s3.put_bytes(bucket_name, "src", b"x")
    await s3.copy(bucket_name, "src", bucket_name, "dst", options=CopyOptions(extra={"ACL": "private"}))
    await expect_error(
        s3.copy(bucket_name, "src", bucket_name, "dst", options=CopyOptions(extra={"Bogus": 1})),
        "InvalidArgument",
        None,
    )


# -- versions: moto's versioned bucket and MemoryStore(versioned=True) --------------------


@pytest.fixture(params=["s3", "memory"])
async def versioned(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    b = _open(request.param, request, tmp_path, versioned=True)
    await b.store.create_bucket(b.bucket)
    if b.kind == "s3":
        request.getfixturevalue("boto3_s3").put_bucket_versioning(
            Bucket=b.bucket, VersioningConfiguration={"Status": "Enabled"}
        )
    yield b
    await b.store.close()


async def test_versions_head_get_copy_delete(versioned: Backend) -> None:
    s, b = versioned.store, versioned.bucket
    v1 = (await s.put_bytes(b, "k", b"one", metadata={"n": "1"})).version_id
    v2 = (await s.put_bytes(b, "k", b"two")).version_id
    assert v1 and v2 and v1 != v2
    assert (await s.head(b, "k")).version_id == v2
    old = await s.head(b, "k", v1)
    assert (old.version_id, old.etag, dict(old.metadata)) == (v1, md5(b"one"), {"n": "1"})
    assert await s.get_bytes(b, "k", v1) == b"one"
    assert b"".join(await collect(s.iter_bytes(b, "k", v1, start=1))) == b"ne"

    await s.put_tags(b, "k", {"old": "yes"}, v1)
    assert await s.get_tags(b, "k", v1) == {"old": "yes"}
    assert await s.get_tags(b, "k") == {}

    copied = await s.copy(b, "k", b, "restored", src_version_id=v1)
    assert copied.etag == md5(b"one") and copied.version_id
    assert await s.get_tags(b, "restored") == {"old": "yes"}
    # Copying an old version onto its own key restores it.
    await s.copy(b, "k", b, "k", src_version_id=v1)
    assert await s.get_bytes(b, "k") == b"one"

    await s.delete(b, "k", v1)
    await expect_error(s.head(b, "k", v1), "NoSuchVersion", 404)
    await expect_error(s.get_bytes(b, "k", v1), "NoSuchVersion", 404)
    assert await s.get_bytes(b, "k", v2) == b"two"

    await s.delete(b, "k")  # a delete marker hides the key; versions stay
    await expect_error(s.head(b, "k"), "NoSuchKey", 404)
    assert await s.get_bytes(b, "k", v2) == b"two"
    assert "k" not in await collect_keys(s, b)


async def test_versions_delete_many(versioned: Backend) -> None:
    s, b = versioned.store, versioned.bucket
    v1 = (await s.put_bytes(b, "k", b"one")).version_id
    v2 = (await s.put_bytes(b, "k", b"two")).version_id
    assert await s.delete_many(b, [VersionRef("k", v1)]) == [None]
    assert await s.get_bytes(b, "k") == b"two"
    assert await s.delete_many(b, [VersionRef("k", v2)]) == [None]
    await expect_error(s.head(b, "k"), "NoSuchKey", 404)


# -- LocalStore (and the unversioned MemoryStore) -----------------------------------------


@pytest.fixture(params=["local", "memory"])
async def unversioned(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    b = _open(request.param, request, tmp_path)
    await b.store.create_bucket(b.bucket)
    yield b
    await b.store.close()


async def test_version_ids_are_not_implemented(unversioned: Backend) -> None:
    s, b = unversioned.store, unversioned.bucket
    await s.put_bytes(b, "k", b"x")
    assert (await s.head(b, "k", "null")).etag == md5(b"x")  # S3's id for unversioned objects
    for call in (
        s.head(b, "k", "v1"),
        s.get_bytes(b, "k", "v1"),
        collect(s.iter_bytes(b, "k", "v1")),
        s.get_tags(b, "k", "v1"),
        s.put_tags(b, "k", {}, "v1"),
        s.delete_tags(b, "k", "v1"),
        s.delete(b, "k", "v1"),
        s.copy(b, "k", b, "k2", src_version_id="v1"),
    ):
        await expect_error(call, "NotImplemented", 501)
    assert await s.get_bytes(b, "k") == b"x"


async def test_unsupported_copy_parameters(unversioned: Backend) -> None:
    s, b = unversioned.store, unversioned.bucket
    await s.put_bytes(b, "k", b"x")
    options = CopyOptions(extra={"ServerSideEncryption": "AES256"})
    await expect_error(s.copy(b, "k", b, "k2", options=options), "NotImplemented", 501)
    bad_header = CopyOptions(replace_metadata=True, headers={"Bogus": "1"})
    await expect_error(s.copy(b, "k", b, "k2", options=bad_header), "InvalidArgument", 400)


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalStore]:
    store = LocalStore(tmp_path / "root")
    await store.create_bucket("bkt")
    yield store
    await store.close()


@pytest.mark.parametrize(
    "key",
    ["../escape", "a/../../escape", "/abs/path", "a//b", "dir/", ".", "a/./b", "x/.s3batch-tmp-1"],
)
async def test_local_rejects_keys_outside_the_bucket(local: LocalStore, tmp_path: Path, key: str) -> None:
    for call in (local.put_bytes("bkt", key, b"x"), local.head("bkt", key), local.delete("bkt", key)):
        await expect_error(call, "InvalidArgument", 400)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "root" / "escape").exists()


async def test_local_rejects_bad_bucket_names_and_long_keys(local: LocalStore) -> None:
    for bucket in ("..", ".s3batch-meta", "a/b", ""):
        await expect_error(local.head(bucket, "k"), "InvalidBucketName", 400)
    await expect_error(local.put_bytes("bkt", "k" * 1025, b""), "KeyTooLongError", 400)
    await expect_error(local.put_bytes("bkt", "k" * 251, b""), "KeyTooLongError", 400)
    await expect_error(local.put_bytes("bkt", "", b""), "InvalidArgument", 400)


async def test_local_keys_that_clash_with_folders(local: LocalStore) -> None:
    await local.put_bytes("bkt", "d/x", b"x")
    await expect_error(local.put_bytes("bkt", "d", b"y"), "InvalidArgument", 400)
    await local.put_bytes("bkt", "f", b"f")
    await expect_error(local.put_bytes("bkt", "f/x", b"y"), "InvalidArgument", 400)
    await expect_error(local.copy("bkt", "f", "bkt", "d"), "InvalidArgument", 400)
    # Reading them is simply a missing object.
    await expect_error(local.head("bkt", "d"), "NoSuchKey", 404)
    await expect_error(local.head("bkt", "f/x"), "NoSuchKey", 404)
    await local.delete("bkt", "d")
    assert await local.get_bytes("bkt", "d/x") == b"x"
    # The sidecar of key "a" is a.json; key "a.json/b" still gets its own.
    await local.put_bytes("bkt", "a", b"1", metadata={"k": "a"})
    await local.put_bytes("bkt", "a.json/b", b"2", metadata={"k": "b"})
    assert dict((await local.head("bkt", "a")).metadata) == {"k": "a"}
    assert dict((await local.head("bkt", "a.json/b")).metadata) == {"k": "b"}


@pytest.mark.parametrize("mode", MODES)
async def test_local_layout_and_persistence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """An object's bytes in its file; its attributes in the file's xattr, or (xattrs off, or a
    file system without them) in its sidecar file, and tags set later in its sidecar file; all
    read back by a later store."""
    use_mode(monkeypatch, mode, tmp_path)
    root = tmp_path / "root"
    first = LocalStore(root)
    await first.create_bucket("bkt")
    await first.put_bytes("bkt", "a/b.txt", b"hello", content_type="text/plain", metadata={"M": "1"})
    await first.put_tags("bkt", "a/b.txt", {"t": "1"})
    options = CopyOptions(
        replace_metadata=True,
        headers={"CacheControl": "no-store", "Expires": datetime(2031, 5, 6, tzinfo=UTC)},
        storage_class="GLACIER",
    )
    await first.copy("bkt", "a/b.txt", "bkt", "c.txt", options=options)
    assert (root / "bkt" / "a" / "b.txt").read_bytes() == b"hello"
    if mode == "sidecar":
        assert (root / META_DIR_NAME / "bkt" / "a.d" / "b.txt.json").is_file()
        assert (root / META_DIR_NAME / "bkt" / "c.txt.json").is_file()
        assert in_xattrs(root) == []
    else:
        assert in_xattrs(root) == ["bkt/a/b.txt", "bkt/c.txt"]
        assert in_sidecars(root) == ["bkt/a/b.txt"]  # the tags set later, read first

    second = LocalStore(root)  # a restart
    info = await second.head("bkt", "a/b.txt")
    assert (info.content_type, dict(info.metadata)) == ("text/plain", {"m": "1"})
    assert await second.get_tags("bkt", "a/b.txt") == {"t": "1"}
    copied = await second.head("bkt", "c.txt")
    assert copied.storage_class == "GLACIER"
    assert dict(copied.headers) == {
        "CacheControl": "no-store",
        "Expires": datetime(2031, 5, 6, tzinfo=UTC),
    }
    assert await second.get_tags("bkt", "c.txt") == {"t": "1"}

    await second.delete("bkt", "a/b.txt")
    assert not (root / "bkt" / "a").exists()  # emptied folders go, the bucket stays
    assert not (root / META_DIR_NAME / "bkt" / "a.d").exists()
    assert (root / "bkt").is_dir()


async def test_local_files_dropped_in_by_hand(local: LocalStore, tmp_path: Path) -> None:
    bucket_dir = tmp_path / "root" / "bkt"
    (bucket_dir / "sub").mkdir()
    (bucket_dir / "sub" / "dropped.csv").write_bytes(b"a,b\n")
    (bucket_dir / "sub" / ".s3batch-tmp-123").write_bytes(b"half written")
    await local.put_bytes("bkt", "z", b"z")
    assert await collect_keys(local, "bkt") == ["sub/dropped.csv", "z"]
    info = await local.head("bkt", "sub/dropped.csv")
    assert (info.etag, info.content_type, dict(info.metadata)) == (
        md5(b"a,b\n"),
        "binary/octet-stream",
        {},
    )
    # The ETag is cached, and recomputed when the file changes.
    (bucket_dir / "sub" / "dropped.csv").write_bytes(b"changed!")
    assert (await local.head("bkt", "sub/dropped.csv")).etag == md5(b"changed!")
    # The metadata folder is neither a bucket nor an object.
    await expect_error(collect_keys(local, META_DIR_NAME), "InvalidBucketName", 400)
    assert not any(META_DIR_NAME in k for k in await collect_keys(local, "bkt"))


async def test_local_missing_root_has_no_buckets(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "does-not-exist")
    await expect_error(store.head("bkt", "k"), "NoSuchBucket", 404)
    await store.create_bucket("bkt")
    await store.put_bytes("bkt", "k", b"x")
    assert await store.get_bytes("bkt", "k") == b"x"


# -- listings, parts and the storage-backed operations' calls -------------------


async def test_list_objects_start_after_and_prefixes(backend: Backend) -> None:
    s, b = backend.store, backend.bucket
    for key in ["a/1", "a/2", "b/x/1", "b/y", "c", "d/e/f"]:
        await s.put_bytes(b, key, b"x")
    assert [o.key async for o in s.list_objects(b, "", start_after="a/2")] == ["b/x/1", "b/y", "c", "d/e/f"]
    assert [o.key async for o in s.list_objects(b, "b/", start_after="b/x/1")] == ["b/y"]
    assert await s.list_prefixes(b) == ["a/", "b/", "d/"]
    assert await s.list_prefixes(b, "b/") == ["b/x/"]
    assert await s.list_prefixes(b, "nothing/") == []


async def test_unversioned_list_versions_yields_each_object_once(backend: Backend) -> None:
    s, b = backend.store, backend.bucket
    for key in ["k2", "k1"]:
        await s.put_bytes(b, key, key.encode())
    listed = [o async for o in s.list_versions(b)]
    assert [(o.key, o.is_latest, o.is_delete_marker) for o in listed] == [
        ("k1", True, False),
        ("k2", True, False),
    ]
    assert listed[0].etag == md5(b"k1")


async def test_single_part_objects_have_no_parts(backend: Backend) -> None:
    s, b = backend.store, backend.bucket
    await s.put_bytes(b, "one", b"x")
    assert await s.object_parts(b, "one") is None
    await expect_error(s.object_parts(b, "missing"), "NoSuchKey", 404)


async def test_versions_listing_with_delete_markers(versioned: Backend) -> None:
    s, b = versioned.store, versioned.bucket
    v1 = (await s.put_bytes(b, "k", b"one")).version_id
    v2 = (await s.put_bytes(b, "k", b"two")).version_id
    await s.delete(b, "k")
    await s.put_bytes(b, "l", b"l")
    listed = [o async for o in s.list_versions(b)]
    shape = [(o.key, o.is_latest, o.is_delete_marker) for o in listed]
    assert shape == [("k", True, True), ("k", False, False), ("k", False, False), ("l", True, False)]
    assert [o.version_id for o in listed[1:3]] == [v2, v1]  # newest first


async def test_s3_object_parts_of_a_multipart_upload(
    s3: S3Store, bucket_name: str, tmp_path: Path, small_parts: None
) -> None:
    path = tmp_path / "big.bin"
    path.write_bytes(big_body(11 * MiB))
    await s3.put_file(bucket_name, "big", path)
    assert await s3.object_parts(bucket_name, "big") == [5 * MiB, 5 * MiB, 1 * MiB]


async def test_s3_head_reports_encryption_and_lock(s3: S3Store, bucket_name: str, boto3_s3: Any) -> None:
    boto3_s3.put_object(Bucket=bucket_name, Key="plain", Body=b"x")
    boto3_s3.put_object(Bucket=bucket_name, Key="s3", Body=b"x", ServerSideEncryption="AES256")
    key = "arn:aws:kms:us-east-1:123456789012:key/0000"
    boto3_s3.put_object(
        Bucket=bucket_name,
        Key="kms",
        Body=b"x",
        ServerSideEncryption="aws:kms",
        SSEKMSKeyId=key,
        BucketKeyEnabled=True,
    )
    assert (await s3.head(bucket_name, "plain")).encryption == "NOT-SSE"
    assert (await s3.head(bucket_name, "s3")).encryption == "SSE-S3"
    kms = await s3.head(bucket_name, "kms")
    assert (kms.encryption, kms.kms_key_id, kms.bucket_key_enabled) == ("SSE-KMS", key, True)
    assert (kms.restore, kms.lock_mode, kms.replication_status) == (None, None, None)


async def test_s3_restore_state_and_replication_rules(s3: S3Store, bucket_name: str, boto3_s3: Any) -> None:
    boto3_s3.put_object(Bucket=bucket_name, Key="cold", Body=b"x", StorageClass="GLACIER")
    await s3.restore(bucket_name, "cold", 2, "Bulk")
    restore = (await s3.head(bucket_name, "cold")).restore
    assert restore is not None and not restore.ongoing and restore.expiry is not None
    assert await s3.replication_rules(bucket_name) == []


@pytest.mark.parametrize("kind", ["local", "memory"])
async def test_storage_backed_calls_are_not_implemented(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from s3batch.domain.objects import AclSpec, KmsEncryption, Retention

    b = _open(kind, request, tmp_path)
    s, bucket = b.store, b.bucket
    await s.create_bucket(bucket)
    await s.put_bytes(bucket, "k", b"x")
    for call in (
        s.put_acl(bucket, "k", AclSpec(canned="private")),
        s.restore(bucket, "k", 1, "Bulk"),
        s.put_legal_hold(bucket, "k", "ON"),
        s.put_retention(bucket, "k", Retention()),
        s.update_encryption(bucket, "k", KmsEncryption("arn:aws:kms:us-east-1:1:key/x")),
    ):
        error = await expect_error(call, "NotImplemented", 501)
        assert "not supported by a" in error.message
    assert await s.get_bytes(bucket, "k") == b"x"
    # No replication configuration is an answer, not an error (DestinationBucket still works).
    assert await s.replication_rules(bucket) == []
