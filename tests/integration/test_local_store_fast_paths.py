"""The folder store's cheap paths keep its answers: ETags of files dropped in by hand (cached
only for large files), common prefixes listed from names alone, the write done in one thread,
and UploadPart's single pass of checksums."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tests.folder_attrs import MODES, in_sidecars, in_xattrs, use_mode

import s3batch.storage.local as local
from s3batch.domain.checksums import ChecksumAlgorithm, ChecksumType
from s3batch.domain.uploads import ChecksumValue, ObjectAttributes
from s3batch.errors import StorageError
from s3batch.storage.emulated_uploads import checksum_of
from s3batch.storage.local import ETAG_CACHE_MIN_BYTES, LocalStore

pytestmark = pytest.mark.integration

BUCKET = "bkt"
#: Seconds a write thread is held in its folder sweep, and the bound on waiting for it.
SLOW_SWEEP_S = 0.5
WAIT_S = 10.0


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / BUCKET).mkdir()
    return tmp_path


def drop(root: Path, key: str, body: bytes) -> None:
    """A file put in the bucket by hand, as users do."""
    path = root / BUCKET / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)


def sidecars(root: Path) -> list[str]:
    """Keys with attributes recorded anywhere: in their file's xattr or in a sidecar file."""
    return in_xattrs(root) + in_sidecars(root)


async def test_a_small_hand_dropped_file_is_hashed_on_each_head_and_no_cache_is_written(root: Path) -> None:
    drop(root, "d/small", b"small body")
    store = LocalStore(root)
    assert (await store.head(BUCKET, "d/small")).etag == hashlib.md5(b"small body").hexdigest()
    assert sidecars(root) == []
    drop(root, "d/small", b"changed body")  # the next HEAD sees the new bytes
    assert (await store.head(BUCKET, "d/small")).etag == hashlib.md5(b"changed body").hexdigest()


@pytest.mark.parametrize("mode", MODES)
async def test_a_large_hand_dropped_file_gets_its_etag_cached_and_recomputed_when_changed(
    root: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    use_mode(monkeypatch, mode, root)
    body = os.urandom(ETAG_CACHE_MIN_BYTES)
    drop(root, "large", body)
    store = LocalStore(root)
    etag = hashlib.md5(body).hexdigest()
    assert (await store.head(BUCKET, "large")).etag == etag
    # A cache written later goes into a sidecar file, in either mode: the file is not written.
    assert (in_sidecars(root), in_xattrs(root)) == ([f"{BUCKET}/large"], [])
    # Cached: a HEAD that hashes nothing (etag=False) gives it.
    assert (await store.head_with_checksum(BUCKET, "large", etag=False)).info.etag == etag
    changed = body[:-1] + bytes([body[-1] ^ 1]) + b"!"
    drop(root, "large", changed)  # written in place: the same file, with its xattr, if any
    changed_etag = hashlib.md5(changed).hexdigest()
    assert (await store.head(BUCKET, "large")).etag == changed_etag
    assert (await store.head_with_checksum(BUCKET, "large", etag=False)).info.etag == changed_etag
    # A cache written later goes into a sidecar file, in either mode: the file is not written.
    assert (in_sidecars(root), in_xattrs(root)) == ([f"{BUCKET}/large"], [])


async def test_common_prefixes_come_from_names_and_skip_what_is_no_object(root: Path) -> None:
    for key in ("a/1", "a/2", "b/c/3", "top"):
        drop(root, key, b"x")
    (root / BUCKET / "link").mkdir()
    os.symlink(root / BUCKET / "a", root / BUCKET / "link" / "to-a")  # not followed: no object
    (root / BUCKET / "fifo").mkdir()
    os.mkfifo(root / BUCKET / "fifo" / "pipe")  # not a regular file: no object
    (root / BUCKET / "empty").mkdir()
    store = LocalStore(root)
    assert await store.list_prefixes(BUCKET) == ["a/", "b/"]
    assert await store.list_prefixes(BUCKET, "b/") == ["b/c/"]
    assert sidecars(root) == []  # listing prefixes reads no file and writes no cache
    keys = [info.key async for info in store.list_objects(BUCKET)]
    assert keys == ["a/1", "a/2", "b/c/3", "top"]


async def test_a_listing_longer_than_one_batch_keeps_key_order_and_etags(root: Path) -> None:
    bodies = {f"k{i:04d}": f"body {i}".encode() for i in range(600)}
    for key, body in bodies.items():
        drop(root, key, body)
    store = LocalStore(root)
    listed = [(i.key, i.etag) async for i in store.list_objects(BUCKET, start_after="k0100")]
    assert listed == [(k, hashlib.md5(b).hexdigest()) for k, b in sorted(bodies.items()) if k > "k0100"]


async def test_concurrent_writes_and_tag_updates_of_one_key_keep_a_whole_sidecar(root: Path) -> None:
    store = LocalStore(root)
    await store.put_bytes(BUCKET, "k", b"v0", content_type="text/plain")

    async def write(i: int) -> None:
        await store.put_bytes(BUCKET, "k", f"v{i}".encode(), content_type=f"text/v{i}")

    async def tag(i: int) -> None:
        await store.put_tags(BUCKET, "k", {"n": str(i)})

    await asyncio.gather(*(write(i) for i in range(1, 20)), *(tag(i) for i in range(1, 20)))
    info = await store.head(BUCKET, "k")
    body = await store.get_bytes(BUCKET, "k")
    assert info.etag == hashlib.md5(body).hexdigest()
    # The sidecar is one write's (its content type names the body last moved into place).
    assert info.content_type == f"text/{body.decode()}"


async def test_upload_part_answers_and_refuses_as_before(root: Path) -> None:
    store = LocalStore(root)
    algorithm = ChecksumAlgorithm.CRC32C
    upload = await store.create_multipart_upload(
        BUCKET, "mp", attributes=ObjectAttributes(), algorithm=algorithm, checksum_type=ChecksumType.COMPOSITE
    )
    body = os.urandom(1000)
    good = ChecksumValue(algorithm, checksum_of(algorithm, body))
    part = await store.upload_part(BUCKET, "mp", upload, 1, body, checksum=good)
    assert (part.etag, part.checksum, part.size) == (hashlib.md5(body).hexdigest(), good.value, 1000)
    sha = ChecksumValue(ChecksumAlgorithm.SHA256, checksum_of(ChecksumAlgorithm.SHA256, body))
    other = await store.upload_part(BUCKET, "mp", upload, 2, body, checksum=sha)
    assert other.checksum == good.value  # the upload's algorithm, not the one sent
    bad = ChecksumValue(algorithm, checksum_of(algorithm, body + b"x"))
    with pytest.raises(StorageError) as refused:
        await store.upload_part(BUCKET, "mp", upload, 3, body, checksum=bad)
    assert refused.value.code == "BadDigest"
    with pytest.raises(StorageError) as bad_number:
        await store.upload_part(BUCKET, "mp", upload, 10_001, body, checksum=good)
    assert bad_number.value.code == "InvalidArgument"
    assert [p.number for p in await store.list_parts(BUCKET, "mp", upload)] == [1, 2]


NESTED_KEYS = ["a b/x", "a-", "a/b/c", "a/b0", "a/bc", "a0", "ab/c/d", "ab/e", "b", "é/x", "z/z/z"]


async def test_listings_that_start_or_end_inside_folders_match_the_key_order(root: Path) -> None:
    for key in NESTED_KEYS:
        drop(root, key, key.encode())
    store = LocalStore(root)
    everything = [info.key async for info in store.list_objects(BUCKET)]
    assert everything == sorted(NESTED_KEYS)  # UTF-8 byte order is code point order
    bounds = [*NESTED_KEYS, "", "a/", "a/b/", "a.", "ab/", "ab/c/", "é", "zz", "a/b/c0"]
    for start_after in bounds:
        listed = [info.key async for info in store.list_objects(BUCKET, start_after=start_after)]
        assert listed == [k for k in everything if k > start_after], start_after
        for end_before in bounds:
            window = store.list_objects(BUCKET, start_after=start_after, end_before=end_before)
            listed = [info.key async for info in window]
            assert listed == [k for k in everything if start_after < k < end_before], (
                start_after,
                end_before,
            )


async def test_a_cancelled_put_never_lands_after_a_later_answered_one(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweeping, finished = threading.Event(), threading.Event()
    original = local._sweep_folders

    def slow_sweep(places: Any) -> None:
        if places:  # the first write into a folder sweeps it; hold that thread here a while
            sweeping.set()
            time.sleep(SLOW_SWEEP_S)
        original(places)

    ended: list[object] = []

    def noting_write(*args: Any) -> Any:
        try:
            return original_write(*args)
        finally:
            ended.append(args)
            if len(ended) == 2:  # the answered write's and the cancelled one's
                finished.set()

    original_write = local._write_object
    monkeypatch.setattr(local, "_sweep_folders", slow_sweep)
    monkeypatch.setattr(local, "_write_object", noting_write)
    store = LocalStore(root)
    first = asyncio.create_task(store.put_bytes(BUCKET, "k", b"A" * (local.INLINE_WRITE_MAX_BYTES + 1)))
    assert await asyncio.to_thread(sweeping.wait, WAIT_S)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await store.put_bytes(BUCKET, "k", b"B")  # answered: this is the object now
    assert await asyncio.to_thread(finished.wait, WAIT_S)  # the cancelled write's thread ended
    assert await store.get_bytes(BUCKET, "k") == b"B"
    assert (await store.head(BUCKET, "k")).etag == hashlib.md5(b"B").hexdigest()


def test_every_store_over_a_folder_takes_the_same_key_lock(root: Path) -> None:
    one, other = LocalStore(root), LocalStore(root / BUCKET / "..")
    assert one._lock(BUCKET, "k") is other._lock(BUCKET, "k")


async def test_a_small_put_that_must_sweep_its_folder_does_it_off_the_loop(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    swept_on: list[int] = []
    original = local._sweep_folders

    def noting_sweep(places: Any) -> None:
        if places:
            swept_on.append(threading.get_ident())
        original(places)

    monkeypatch.setattr(local, "_sweep_folders", noting_sweep)
    store = LocalStore(root)
    await store.put_bytes(BUCKET, "new-folder/k", b"small")
    await store.put_bytes(BUCKET, "new-folder/k2", b"small")  # swept already: inline
    assert swept_on and threading.get_ident() not in swept_on


async def test_read_now_answers_as_get_bytes_does(root: Path) -> None:
    store = LocalStore(root)
    big = os.urandom(local.IO_CHUNK_BYTES + 5)
    drop(root, "a/b/big.bin", big)
    drop(root, "empty", b"")
    await store.put_bytes(BUCKET, "small.txt", b"hello world")
    assert store.read_now(BUCKET, "small.txt") == await store.get_bytes(BUCKET, "small.txt")
    assert store.read_now(BUCKET, "small.txt", max_bytes=5) == b"hello"
    assert store.read_now(BUCKET, "small.txt", max_bytes=0) == b""
    assert store.read_now(BUCKET, "a/b/big.bin") == big  # more than one read() call
    assert store.read_now(BUCKET, "a/b/big.bin", max_bytes=local.IO_CHUNK_BYTES + 1) == big[:-4]
    assert store.read_now(BUCKET, "empty") == b""
    for bucket, key, code in (
        (BUCKET, "missing", "NoSuchKey"),
        (BUCKET, "a/missing/key", "NoSuchKey"),
        (BUCKET, "a/b", "NoSuchKey"),  # a folder is no object
        ("nobucket", "small.txt", "NoSuchBucket"),
        (".hidden", "k", "InvalidBucketName"),
    ):
        with pytest.raises(StorageError) as caught:
            store.read_now(bucket, key)
        assert caught.value.code == code, (bucket, key, caught.value)
    with pytest.raises(StorageError) as caught:
        store.read_now(BUCKET, "small.txt", version_id="v1")
    assert caught.value.code == "NotImplemented"
