"""The folder store's attributes in the extended attribute of the object's own file
(local.ATTRS_XATTR, "user.s3batch"), with real files: an object written with attributes is one
file and a later store reads them back; a later change (tags, an ETag cache) goes into a sidecar
file, which a read takes before the xattr, and never writes to the object's file (read-only,
hard-linked); a sidecar file an earlier version wrote is read; where the file system refuses the
xattr (not supported, too large) sidecar files take over; nothing is read or written through a
symlink; a delete leaves nothing behind.

Skipped where the file system of the test's temp folder refuses user xattrs. The rules are in
docs/compatibility.md ("Local folder store").
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from tests.folder_attrs import in_sidecars, in_xattrs, xattr_of, xattrs_refused

import s3batch.storage.local as local_module
from s3batch.domain.uploads import ObjectAttributes
from s3batch.errors import StorageError
from s3batch.storage.local import ATTRS_XATTR, ETAG_CACHE_MIN_BYTES, META_DIR_NAME, LocalStore

pytestmark = pytest.mark.integration

BUCKET = "bkt"
TAGS = {"team": "data", "tier": "1"}
HEADERS = {"CacheControl": "no-cache", "Expires": datetime(2031, 5, 6, tzinfo=UTC)}
ATTRIBUTES = ObjectAttributes(content_type="text/csv", metadata={"Owner": "me"}, headers=HEADERS, tags=TAGS)
#: What a file outside the store carries in the store's xattr, to show it is never read.
FAKE = json.dumps(
    {"content_type": "text/fake", "metadata": {"m": "outside"}, "tags": {"from": "outside"}}
).encode()
#: Past what ext4 takes in one xattr (about 4 KiB; it answers ENOSPC): user metadata of nearly
#: 2 KiB (S3's limit) and S3's most tags, each of the longest key and value.
BIG_METADATA = {f"m{i}": "x" * 190 for i in range(10)}
BIG_TAGS = {f"{i}{'k' * 127}": "v" * 256 for i in range(10)}


@pytest.fixture(scope="module", autouse=True)
def xattrs_taken(tmp_path_factory: pytest.TempPathFactory) -> None:
    reason = xattrs_refused(tmp_path_factory.mktemp("xattr-probe"))
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def xattrs_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on Linux by default, whatever S3BATCH_FOLDER_XATTRS said when the store was imported."""
    monkeypatch.setattr(local_module, "XATTRS_ENABLED", True)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root" / BUCKET).mkdir(parents=True)
    return tmp_path / "root"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def files(root: Path) -> list[str]:
    """Every file below `root`, the store's own folders included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink())


def held(path: Path) -> dict[str, Any]:
    """The attributes the xattr of the file at `path` holds (it must have one)."""
    raw = xattr_of(path)
    assert raw is not None, f"{path} has no {ATTRS_XATTR}"
    found: dict[str, Any] = json.loads(raw)
    return found


def places(root: Path, key: str) -> list[str]:
    """Where the attributes of `key` are recorded: "xattr", "sidecar", both or neither."""
    found = [("xattr", in_xattrs(root)), ("sidecar", in_sidecars(root))]
    return [place for place, keys in found if f"{BUCKET}/{key}" in keys]


def set_xattrs(monkeypatch: pytest.MonkeyPatch, enabled: bool) -> None:
    monkeypatch.setattr(local_module, "XATTRS_ENABLED", enabled)


async def expect_error(awaitable: Any, *codes: str) -> StorageError:
    with pytest.raises(StorageError) as caught:
        await awaitable
    assert caught.value.code in codes, caught.value
    return caught.value


async def expect_attributes(
    store: LocalStore,
    key: str,
    *,
    content_type: str = "text/csv",
    metadata: Mapping[str, str] | None = None,
    tags: Mapping[str, str] = TAGS,
) -> None:
    """What `store` answers for `key`: ATTRIBUTES' unless told otherwise."""
    head = await store.head(BUCKET, key)
    assert (head.content_type, dict(head.metadata), dict(head.headers)) == (
        content_type,
        dict(metadata if metadata is not None else {"owner": "me"}),
        HEADERS,
    )
    assert await store.get_tags(BUCKET, key) == dict(tags)
    assert (await store.head_with_checksum(BUCKET, key)).tag_count == len(tags)


def refuse(code: int, calls: list[str] | None = None) -> Any:
    """An os.setxattr (or os.removexattr) the file system refuses with `code`."""

    def refused(path: Any, attribute: str, *args: Any, **kwargs: Any) -> None:
        if calls is not None:
            calls.append(attribute)
        raise OSError(code, os.strerror(code))

    return refused


# -- one file, read back --------------------------------------------------------------------


async def test_a_write_with_attributes_is_one_file_whose_xattr_a_later_store_reads(root: Path) -> None:
    store = LocalStore(root)
    await store.put_with_checksum(BUCKET, "d/k.csv", b"a,b\n", attributes=ATTRIBUTES, checksum=None)
    assert files(root) == [f"{BUCKET}/d/k.csv"]
    assert not (root / META_DIR_NAME).exists()
    kept = held(root / BUCKET / "d" / "k.csv")
    assert (kept["content_type"], kept["metadata"], kept["tags"], kept["etag"]) == (
        "text/csv",
        {"owner": "me"},
        TAGS,
        md5(b"a,b\n"),
    )
    assert kept["headers"]["CacheControl"] == "no-cache"
    await expect_attributes(LocalStore(root), "d/k.csv")  # a restart
    assert (await LocalStore(root).head(BUCKET, "d/k.csv")).etag == md5(b"a,b\n")


async def test_a_sidecar_file_of_an_earlier_version_is_read_and_updated(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_xattrs(monkeypatch, False)  # a folder written by an earlier version (or xattrs off)
    await LocalStore(root).put_with_checksum(BUCKET, "a/k", b"v1", attributes=ATTRIBUTES, checksum=None)
    assert (in_sidecars(root), in_xattrs(root)) == ([f"{BUCKET}/a/k"], [])
    set_xattrs(monkeypatch, True)
    store = LocalStore(root)
    await expect_attributes(store, "a/k")  # read from the sidecar file
    await store.put_tags(BUCKET, "a/k", {"new": "tag"})
    assert (in_sidecars(root), in_xattrs(root)) == ([f"{BUCKET}/a/k"], [])
    await expect_attributes(LocalStore(root), "a/k", tags={"new": "tag"})
    assert (await LocalStore(root).head(BUCKET, "a/k")).etag == md5(b"v1")
    # The next whole write puts its attributes in its file's xattr and removes the sidecar file.
    await store.put_with_checksum(BUCKET, "a/k", b"v2", attributes=ATTRIBUTES, checksum=None)
    assert (in_xattrs(root), in_sidecars(root)) == ([f"{BUCKET}/a/k"], [])
    await expect_attributes(LocalStore(root), "a/k")


async def test_a_tag_update_goes_to_a_sidecar_file_that_wins_and_never_writes_the_file(
    root: Path,
) -> None:
    """A later change never writes to the object's file: a hard link elsewhere keeps its
    attributes, and a read-only file can still be tagged."""
    store = LocalStore(root)
    await store.put_with_checksum(BUCKET, "k", b"body", attributes=ATTRIBUTES, checksum=None)
    path = root / BUCKET / "k"
    written = xattr_of(path)
    snapshot = root.parent / "snapshot-k"
    os.link(path, snapshot)  # e.g. cp -al, rsync --link-dest
    path.chmod(0o444)
    await store.put_tags(BUCKET, "k", {"t": "new"})
    assert written is not None and xattr_of(path) == written and xattr_of(snapshot) == written
    assert places(root, "k") == ["xattr", "sidecar"]
    await expect_attributes(LocalStore(root), "k", tags={"t": "new"})
    assert (await LocalStore(root).head(BUCKET, "k")).etag == md5(b"body")
    await store.delete_tags(BUCKET, "k")
    await expect_attributes(LocalStore(root), "k", tags={})


async def test_a_stale_sidecar_file_beside_the_xattr_shows_the_earlier_version(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a write killed between its rename and the sidecar file's removal leaves: the
    earlier version's sidecar file, read first (as before xattrs), with its ETag cache not
    taken for the new file."""
    sidecar = root / META_DIR_NAME / BUCKET / "k.json"
    set_xattrs(monkeypatch, False)
    v1 = ObjectAttributes(content_type="text/csv", metadata={"v": "1"}, headers=HEADERS, tags={"v": "1"})
    await LocalStore(root).put_with_checksum(BUCKET, "k", b"one", attributes=v1, checksum=None)
    stale = sidecar.read_bytes()
    set_xattrs(monkeypatch, True)
    v2 = ObjectAttributes(content_type="text/csv", metadata={"v": "2"}, headers=HEADERS, tags={"v": "2"})
    await LocalStore(root).put_with_checksum(BUCKET, "k", b"two", attributes=v2, checksum=None)
    assert not sidecar.exists()  # the write removed it
    sidecar.write_bytes(stale)  # as the kill left it
    assert places(root, "k") == ["xattr", "sidecar"]
    store = LocalStore(root)
    await expect_attributes(store, "k", metadata={"v": "1"}, tags={"v": "1"})
    assert (await store.head(BUCKET, "k")).etag == md5(b"two")


async def test_an_unreadable_xattr_gives_way_to_the_sidecar_file(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_xattrs(monkeypatch, False)
    await LocalStore(root).put_with_checksum(BUCKET, "k", b"body", attributes=ATTRIBUTES, checksum=None)
    os.setxattr(root / BUCKET / "k", ATTRS_XATTR, b"{not json")
    await expect_attributes(LocalStore(root), "k")


# -- where the file system refuses the xattr --------------------------------------------------


async def test_a_write_the_file_system_refuses_the_xattr_goes_to_a_sidecar_file(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(os, "setxattr", refuse(errno.ENOTSUP, calls))
    store = LocalStore(root)
    await store.put_with_checksum(BUCKET, "k", b"body", attributes=ATTRIBUTES, checksum=None)
    assert calls == [ATTRS_XATTR]  # it was tried
    assert (in_sidecars(root), in_xattrs(root)) == ([f"{BUCKET}/k"], [])
    await expect_attributes(LocalStore(root), "k")
    await store.put_tags(BUCKET, "k", {"t": "2"})
    assert calls == [ATTRS_XATTR]  # an update writes no xattr
    assert (in_sidecars(root), in_xattrs(root)) == ([f"{BUCKET}/k"], [])
    await expect_attributes(LocalStore(root), "k", tags={"t": "2"})


async def test_attributes_too_large_for_the_file_system_read_back_from_one_place(root: Path) -> None:
    attributes = ObjectAttributes(
        content_type="text/csv", metadata=BIG_METADATA, headers=HEADERS, tags=BIG_TAGS
    )
    assert len(json.dumps({"metadata": BIG_METADATA, "tags": BIG_TAGS})) > 4096
    store = LocalStore(root)
    await store.put_with_checksum(BUCKET, "big", b"body", attributes=attributes, checksum=None)
    assert len(places(root, "big")) == 1, places(root, "big")
    await expect_attributes(LocalStore(root), "big", metadata=BIG_METADATA, tags=BIG_TAGS)
    # An update that makes them too large goes into a sidecar file, as every update does.
    await store.put_with_checksum(BUCKET, "grows", b"body", attributes=ATTRIBUTES, checksum=None)
    assert places(root, "grows") == ["xattr"]
    await store.put_tags(BUCKET, "grows", BIG_TAGS)
    assert places(root, "grows") == ["xattr", "sidecar"]
    await expect_attributes(LocalStore(root), "grows", tags=BIG_TAGS)


# -- symlinks ---------------------------------------------------------------------------------


async def test_an_xattr_is_never_read_or_written_through_a_symlink(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    secret = outside / "secret.txt"
    secret.write_bytes(b"secret")
    (outside / "dir" / "f").write_bytes(b"f")
    for path in (secret, outside / "dir" / "f"):
        os.setxattr(path, ATTRS_XATTR, FAKE)
    (root / BUCKET / "link").symlink_to(secret)
    (root / BUCKET / "dir").symlink_to(outside / "dir")
    store = LocalStore(root)
    for key in ("link", "dir/f"):
        await expect_error(store.head(BUCKET, key), "NoSuchKey")
        await expect_error(store.head_with_checksum(BUCKET, key), "NoSuchKey")
        await expect_error(store.get_tags(BUCKET, key), "NoSuchKey")
        await expect_error(store.put_tags(BUCKET, key, {"t": "1"}), "NoSuchKey", "AccessDenied")
        await expect_error(store.delete_tags(BUCKET, key), "NoSuchKey", "AccessDenied")
    for path in (secret, outside / "dir" / "f"):
        assert xattr_of(path) == FAKE
    assert secret.read_bytes() == b"secret"
    assert (in_sidecars(root), in_xattrs(root)) == ([], [])


async def test_removing_a_stale_sidecar_file_never_goes_through_a_symlinked_folder(
    root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "k.json").write_bytes(FAKE)
    meta = root / META_DIR_NAME / BUCKET
    meta.mkdir(parents=True)
    (meta / "dir.d").symlink_to(outside)
    store = LocalStore(root)
    await store.put_with_checksum(BUCKET, "dir/k", b"body", attributes=ATTRIBUTES, checksum=None)
    await expect_error(store.put_tags(BUCKET, "dir/k", {"t": "2"}), "AccessDenied")
    assert (outside / "k.json").read_bytes() == FAKE
    assert [p.name for p in outside.iterdir()] == ["k.json"]
    assert in_xattrs(root) == [f"{BUCKET}/dir/k"]
    await expect_attributes(LocalStore(root), "dir/k")


# -- the ETag cache, deletes ------------------------------------------------------------------


async def test_a_large_hand_dropped_files_etag_is_cached_in_a_sidecar_file(root: Path) -> None:
    path = root / BUCKET / "large.bin"
    body = os.urandom(ETAG_CACHE_MIN_BYTES)
    path.write_bytes(body)
    st = path.stat()
    assert (await LocalStore(root).head(BUCKET, "large.bin")).etag == md5(body)
    assert (xattr_of(path), in_sidecars(root)) == (None, [f"{BUCKET}/large.bin"])
    assert path.stat().st_ctime_ns == st.st_ctime_ns  # the file itself is not written
    # Cached: a HEAD that hashes nothing gives it.
    assert (await LocalStore(root).head_with_checksum(BUCKET, "large.bin", etag=False)).info.etag == md5(body)


async def test_a_delete_leaves_neither_xattr_nor_sidecar_file(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sidecar = root / META_DIR_NAME / BUCKET / "a.d" / "k.json"
    set_xattrs(monkeypatch, False)
    await LocalStore(root).put_with_checksum(BUCKET, "a/k", b"one", attributes=ATTRIBUTES, checksum=None)
    stale = sidecar.read_bytes()
    set_xattrs(monkeypatch, True)
    store = LocalStore(root)
    await store.put_with_checksum(BUCKET, "a/k", b"two", attributes=ATTRIBUTES, checksum=None)
    sidecar.write_bytes(stale)  # a stale sidecar file beside the xattr, as a kill leaves it
    assert places(root, "a/k") == ["xattr", "sidecar"]
    await store.delete(BUCKET, "a/k")
    await expect_error(store.head(BUCKET, "a/k"), "NoSuchKey")
    assert files(root) == []
    assert not (root / BUCKET / "a").exists() and not sidecar.parent.exists()
    # A new object under the key has none of the deleted one's attributes.
    await store.put_bytes(BUCKET, "a/k", b"new")
    head = await store.head(BUCKET, "a/k")
    assert (head.content_type, dict(head.metadata), await store.get_tags(BUCKET, "a/k")) == (
        "binary/octet-stream",
        {},
        {},
    )
    assert files(root) == [f"{BUCKET}/a/k"]


async def test_a_symlink_swapped_in_after_the_stat_is_not_followed_by_the_xattr_read(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The xattr read names the file through its folder's descriptor and never follows a
    symlink there, even one that replaced the file between its stat and the read."""
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"outside")
    os.setxattr(outside, ATTRS_XATTR, FAKE)
    store = LocalStore(root)
    await store.put_bytes(BUCKET, "k", b"k")  # default attributes: no xattr, no sidecar file
    real = local_module._get_xattr
    swapped: list[bool] = []

    def swap_then_read(dfd: int, name: str) -> bytes | None:
        path = root / BUCKET / name
        path.unlink()
        path.symlink_to(outside)
        swapped.append(True)
        return real(dfd, name)

    monkeypatch.setattr(local_module, "_get_xattr", swap_then_read)
    head = (await store.head_with_checksum(BUCKET, "k", etag=False)).info  # opens no file
    assert swapped == [True]
    assert (head.content_type, dict(head.metadata)) == ("binary/octet-stream", {})
    assert xattr_of(outside) == FAKE
