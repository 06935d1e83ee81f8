"""The folder store's attributes in the extended attribute of the object's own file
(local.ATTRS_XATTR, "user.s3batch"), with real files: an object written with attributes is one
file and a later store reads them back; a sidecar file an earlier version wrote is read, and its
attributes move to the xattr on the next update; a stale sidecar file beside an xattr is never
the one read; where the file system refuses the xattr (not supported, too large) sidecar files
take over, and an update that cannot go into the xattr removes it; nothing is read or written
through a symlink; a large hand-dropped file's ETag is cached in its xattr; a delete leaves
nothing behind.

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


async def test_a_sidecar_file_of_an_earlier_version_is_read_then_moved_into_the_xattr(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_xattrs(monkeypatch, False)  # a folder written by an earlier version (or xattrs off)
    await LocalStore(root).put_with_checksum(BUCKET, "a/k", b"v1", attributes=ATTRIBUTES, checksum=None)
    assert (in_sidecars(root), in_xattrs(root)) == ([f"{BUCKET}/a/k"], [])
    set_xattrs(monkeypatch, True)
    store = LocalStore(root)
    await expect_attributes(store, "a/k")  # read from the sidecar file
    await store.put_tags(BUCKET, "a/k", {"new": "tag"})
    assert (in_xattrs(root), in_sidecars(root)) == ([f"{BUCKET}/a/k"], [])
    await expect_attributes(LocalStore(root), "a/k", tags={"new": "tag"})
    assert (await LocalStore(root).head(BUCKET, "a/k")).etag == md5(b"v1")


async def test_a_stale_sidecar_file_beside_the_xattr_is_not_read(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a write killed between its rename and the sidecar file's removal leaves: the new
    file's own attributes (in its xattr) are the ones answered."""
    sidecar = root / META_DIR_NAME / BUCKET / "k.json"
    set_xattrs(monkeypatch, False)
    v1 = ObjectAttributes(content_type="text/plain", metadata={"v": "1"}, headers=HEADERS, tags={"v": "1"})
    await LocalStore(root).put_with_checksum(BUCKET, "k", b"one", attributes=v1, checksum=None)
    stale = sidecar.read_bytes()
    set_xattrs(monkeypatch, True)
    v2 = ObjectAttributes(content_type="text/csv", metadata={"v": "2"}, headers=HEADERS, tags={"v": "2"})
    await LocalStore(root).put_with_checksum(BUCKET, "k", b"two", attributes=v2, checksum=None)
    assert not sidecar.exists()  # the write removed it
    sidecar.write_bytes(stale)  # as the kill left it
    assert places(root, "k") == ["xattr", "sidecar"]
    store = LocalStore(root)
    await expect_attributes(store, "k", metadata={"v": "2"}, tags={"v": "2"})
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
    assert calls == [ATTRS_XATTR] * 2
    assert (in_sidecars(root), in_xattrs(root)) == ([f"{BUCKET}/k"], [])
    await expect_attributes(LocalStore(root), "k", tags={"t": "2"})


async def test_an_update_the_xattr_cannot_take_goes_to_a_sidecar_file_and_the_xattr_goes(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(root)
    await store.put_with_checksum(BUCKET, "k", b"body", attributes=ATTRIBUTES, checksum=None)
    assert places(root, "k") == ["xattr"]
    calls: list[str] = []
    with monkeypatch.context() as patched:
        patched.setattr(os, "setxattr", refuse(errno.E2BIG, calls))
        await store.put_tags(BUCKET, "k", {"t": "new"})
    assert calls == [ATTRS_XATTR]
    assert places(root, "k") == ["sidecar"]  # not hidden by the xattr the file had
    await expect_attributes(LocalStore(root), "k", tags={"t": "new"})
    assert (await LocalStore(root).head(BUCKET, "k")).etag == md5(b"body")


async def test_an_update_whose_old_xattr_cannot_be_removed_fails(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(root)
    await store.put_with_checksum(BUCKET, "k", b"body", attributes=ATTRIBUTES, checksum=None)
    with monkeypatch.context() as patched:
        patched.setattr(os, "setxattr", refuse(errno.E2BIG))
        patched.setattr(os, "removexattr", refuse(errno.EPERM))
        await expect_error(store.put_tags(BUCKET, "k", {"t": "new"}), "AccessDenied")
    # The xattr still answers, and no sidecar file keeps what the failed call was told to
    # change (it would show once the xattr is lost, e.g. by a copy that drops xattrs).
    assert places(root, "k") == ["xattr"]
    await expect_attributes(LocalStore(root), "k")


async def test_attributes_too_large_for_the_file_system_read_back_from_one_place(root: Path) -> None:
    attributes = ObjectAttributes(
        content_type="text/csv", metadata=BIG_METADATA, headers=HEADERS, tags=BIG_TAGS
    )
    assert len(json.dumps({"metadata": BIG_METADATA, "tags": BIG_TAGS})) > 4096
    store = LocalStore(root)
    await store.put_with_checksum(BUCKET, "big", b"body", attributes=attributes, checksum=None)
    assert len(places(root, "big")) == 1, places(root, "big")
    await expect_attributes(LocalStore(root), "big", metadata=BIG_METADATA, tags=BIG_TAGS)
    # An update that makes them too large, then one that makes them small again.
    await store.put_with_checksum(BUCKET, "grows", b"body", attributes=ATTRIBUTES, checksum=None)
    assert places(root, "grows") == ["xattr"]
    await store.put_tags(BUCKET, "grows", BIG_TAGS)
    assert len(places(root, "grows")) == 1, places(root, "grows")
    await expect_attributes(LocalStore(root), "grows", tags=BIG_TAGS)
    await store.put_tags(BUCKET, "grows", {"small": "again"})
    assert places(root, "grows") == ["xattr"]
    await expect_attributes(LocalStore(root), "grows", tags={"small": "again"})


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
    await store.put_tags(BUCKET, "dir/k", {"t": "2"})
    assert (outside / "k.json").read_bytes() == FAKE
    assert [p.name for p in outside.iterdir()] == ["k.json"]
    assert in_xattrs(root) == [f"{BUCKET}/dir/k"]
    await expect_attributes(LocalStore(root), "dir/k", tags={"t": "2"})


# -- the ETag cache, deletes ------------------------------------------------------------------


async def test_a_large_hand_dropped_files_etag_is_cached_in_its_xattr(root: Path) -> None:
    path = root / BUCKET / "large.bin"
    body = os.urandom(ETAG_CACHE_MIN_BYTES)
    path.write_bytes(body)
    assert xattr_of(path) is None
    assert (await LocalStore(root).head(BUCKET, "large.bin")).etag == md5(body)
    st = path.stat()
    kept = held(path)
    assert (kept["etag"], kept["stamp"]) == (md5(body), [st.st_size, st.st_mtime_ns, st.st_ino])
    assert in_sidecars(root) == [] and not (root / META_DIR_NAME).exists()
    # Cached: a HEAD that hashes nothing gives it.
    assert (await LocalStore(root).head_with_checksum(BUCKET, "large.bin", etag=False)).info.etag == md5(body)
    # Changed by hand in place: the same size and inode (and xattr), another mtime.
    changed = os.urandom(len(body))
    with path.open("r+b") as f:
        f.write(changed)
    later = st.st_mtime_ns + 1_000_000_000  # even on a coarse clock
    os.utime(path, ns=(later, later))
    assert (path.stat().st_size, path.stat().st_ino, xattr_of(path) is not None) == (
        st.st_size,
        st.st_ino,
        True,
    )
    assert (await LocalStore(root).head_with_checksum(BUCKET, "large.bin", etag=False)).info.etag == ""
    assert (await LocalStore(root).head(BUCKET, "large.bin")).etag == md5(changed)
    assert (held(path)["etag"], held(path)["stamp"][1]) == (md5(changed), later)
    assert in_sidecars(root) == []


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
