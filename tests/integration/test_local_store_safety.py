"""The folder store never reaches outside a bucket through a symbolic link, and temp files a
killed write leaves behind are never listed and are swept once stale.

The rules are in docs/compatibility.md ("Local folder store").
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import s3batch.storage.local as local_module
from s3batch.errors import StorageError
from s3batch.storage.base import CopyOptions
from s3batch.storage.local import META_DIR_NAME, TEMP_MARKER, TEMP_SWEEP_AGE_S, LocalStore

pytestmark = pytest.mark.integration

SECRET = b"outside the bucket"
#: How long the killed writer may take to start writing, in seconds.
WRITER_START_S = 30.0
#: Poll interval while waiting for the writer, in seconds.
POLL_S = 0.05
#: Size of the object the killed writer is writing, in bytes (half is written before it stalls).
KILLED_OBJECT_BYTES = 4 * 1024 * 1024
#: An mtime this far in the past makes a temp file stale, in seconds.
STALE_S = TEMP_SWEEP_AGE_S + 60


@pytest.fixture(autouse=True, params=["as-the-kernel-allows", "folder-by-folder"])
def opener(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every check twice: with openat2 where the kernel has it (one call checks the whole path)
    and with the walk one folder at a time that other kernels get (storage/openat2.py)."""
    if request.param == "folder-by-folder":
        monkeypatch.setattr(local_module, "openat2", None)


@pytest.fixture
def sidecar_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Attributes in sidecar files only, as where the file system takes no user xattrs (or with
    S3BATCH_FOLDER_XATTRS=0): for the checks of the sidecar tree itself. The xattr's own are in
    test_local_store_xattrs.py."""
    monkeypatch.setattr(local_module, "XATTRS_ENABLED", False)


@dataclass
class Folders:
    store: LocalStore
    root: Path
    bucket_dir: Path
    outside: Path


@pytest.fixture
async def folders(tmp_path: Path) -> AsyncIterator[Folders]:
    root = tmp_path / "root"
    store = LocalStore(root)
    await store.create_bucket("bkt")
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "secret.txt").write_bytes(SECRET)
    (outside / "fake.json").write_text('{"tags": {"from": "outside"}, "metadata": {"m": "outside"}}')
    yield Folders(store, root, root / "bkt", outside)
    await store.close()


async def expect_error(awaitable: Any, code: str, status: int) -> StorageError:
    with pytest.raises(StorageError) as caught:
        await awaitable
    assert (caught.value.code, caught.value.http_status) == (code, status), caught.value
    return caught.value


async def read_now(store: LocalStore, bucket: str, key: str) -> bytes:
    """`read_now` (blocking) as an awaitable, to check its errors as the async calls' are."""
    return store.read_now(bucket, key)


async def keys(store: LocalStore, prefix: str = "", **kwargs: Any) -> list[str]:
    return [o.key async for o in store.list_objects("bkt", prefix, **kwargs)]


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path below `folder` (files with their bytes), to show nothing changed there."""
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() and not p.is_symlink() else None
        for p in sorted(folder.rglob("*"))
    }


# -- symlinks: reads ----------------------------------------------------------------------


async def test_a_symlinked_file_is_not_an_object(folders: Folders) -> None:
    s = folders.store
    await s.put_bytes("bkt", "real.txt", b"real")
    (folders.bucket_dir / "link.txt").symlink_to(folders.outside / "secret.txt")
    assert await keys(s) == ["real.txt"]
    assert [o.key async for o in s.list_versions("bkt")] == ["real.txt"]
    assert await keys(s, start_after="a", end_before="m") == []  # a parallel lister's range
    for call in (
        lambda: s.head("bkt", "link.txt"),
        lambda: s.get_bytes("bkt", "link.txt"),
        lambda: read_now(s, "bkt", "link.txt"),
        lambda: s.get_tags("bkt", "link.txt"),
        lambda: s.put_tags("bkt", "link.txt", {"t": "1"}),
        lambda: s.copy("bkt", "link.txt", "bkt", "copied.txt"),
    ):
        await expect_error(call(), "NoSuchKey", 404)
    await expect_error(anext(s.iter_bytes("bkt", "link.txt")), "NoSuchKey", 404)
    assert not (folders.bucket_dir / "copied.txt").exists()


async def test_a_symlinked_folder_is_not_followed_for_reads(folders: Folders) -> None:
    s = folders.store
    (folders.bucket_dir / "dir").symlink_to(folders.outside)
    await s.put_bytes("bkt", "z", b"z")
    assert await keys(s) == ["z"]
    assert await keys(s, "dir/") == []
    assert await s.list_prefixes("bkt") == []
    for call in (
        lambda: s.head("bkt", "dir/secret.txt"),
        lambda: s.get_bytes("bkt", "dir/secret.txt"),
        lambda: read_now(s, "bkt", "dir/secret.txt"),
        lambda: s.get_tags("bkt", "dir/secret.txt"),
        lambda: s.copy("bkt", "dir/secret.txt", "bkt", "stolen.txt"),
    ):
        await expect_error(call(), "NoSuchKey", 404)
    await expect_error(anext(s.iter_bytes("bkt", "dir/secret.txt")), "NoSuchKey", 404)
    assert not (folders.bucket_dir / "stolen.txt").exists()


@pytest.mark.usefixtures("sidecar_files")
async def test_a_symlinked_sidecar_is_not_read(folders: Folders) -> None:
    s = folders.store
    await s.put_bytes("bkt", "k", b"k", metadata={"m": "inside"})
    sidecar = folders.root / META_DIR_NAME / "bkt" / "k.json"
    sidecar.unlink()
    sidecar.symlink_to(folders.outside / "fake.json")
    info = await s.head("bkt", "k")
    assert dict(info.metadata) == {}
    assert await s.get_tags("bkt", "k") == {}


# -- symlinks: writes ---------------------------------------------------------------------


async def test_writes_never_go_through_a_symlinked_folder(folders: Folders, tmp_path: Path) -> None:
    s = folders.store
    before = tree(folders.outside)
    (folders.bucket_dir / "dir").symlink_to(folders.outside)
    await s.put_bytes("bkt", "src.txt", b"source")
    local_file = tmp_path / "upload.bin"
    local_file.write_bytes(b"upload")
    for call in (
        lambda: s.put_bytes("bkt", "dir/new.txt", b"x"),
        lambda: s.put_bytes("bkt", "dir/sub/deeper/new.txt", b"x"),
        lambda: s.put_bytes("bkt", "dir/secret.txt", b"overwritten"),
        lambda: s.put_file("bkt", "dir/uploaded.bin", local_file),
        lambda: s.copy("bkt", "src.txt", "bkt", "dir/copied.txt"),
    ):
        error = await expect_error(call(), "AccessDenied", 403)
        assert "symbolic link" in str(error)
    assert tree(folders.outside) == before
    assert (folders.bucket_dir / "dir").is_symlink()


async def test_writes_never_replace_or_follow_a_symlinked_key(folders: Folders) -> None:
    s = folders.store
    link = folders.bucket_dir / "link.txt"
    link.symlink_to(folders.outside / "secret.txt")
    await s.put_bytes("bkt", "src.txt", b"source")
    for call in (
        lambda: s.put_bytes("bkt", "link.txt", b"overwritten"),
        lambda: s.copy("bkt", "src.txt", "bkt", "link.txt"),
    ):
        await expect_error(call(), "AccessDenied", 403)
    assert link.is_symlink() and (folders.outside / "secret.txt").read_bytes() == SECRET
    assert not [p for p in folders.bucket_dir.iterdir() if TEMP_MARKER in p.name]  # no temp left


@pytest.mark.usefixtures("sidecar_files")
async def test_sidecar_writes_never_go_through_a_symlinked_folder(folders: Folders) -> None:
    s = folders.store
    before = tree(folders.outside)
    meta = folders.root / META_DIR_NAME / "bkt"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "dir.d").symlink_to(folders.outside)
    await expect_error(s.put_bytes("bkt", "dir/k", b"x", metadata={"m": "1"}), "AccessDenied", 403)
    assert tree(folders.outside) == before


async def test_deletes_never_reach_outside(folders: Folders) -> None:
    s = folders.store
    before = tree(folders.outside)
    (folders.bucket_dir / "dir").symlink_to(folders.outside)
    link = folders.bucket_dir / "link.txt"
    link.symlink_to(folders.outside / "secret.txt")
    await s.delete("bkt", "dir/secret.txt")  # deleting a missing key succeeds, as in S3
    await s.delete("bkt", "dir/sub/x")  # an empty folder outside is not pruned either
    await s.delete("bkt", "link.txt")  # a symlink is not an object: it stays
    outcomes = await s.delete_many("bkt", [])
    assert outcomes == []
    assert tree(folders.outside) == before
    assert link.is_symlink() and (folders.bucket_dir / "dir").is_symlink()


async def test_a_symlinked_bucket_folder_is_the_operators_choice(tmp_path: Path) -> None:
    root = tmp_path / "root"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root.mkdir()
    (root / "linked").symlink_to(elsewhere)
    store = LocalStore(root)
    await store.put_bytes("linked", "a/b.txt", b"hello", metadata={"m": "1"})
    assert (elsewhere / "a" / "b.txt").read_bytes() == b"hello"
    assert [o.key async for o in store.list_objects("linked")] == ["a/b.txt"]
    assert dict((await store.head("linked", "a/b.txt")).metadata) == {"m": "1"}
    await store.delete("linked", "a/b.txt")
    assert (root / "linked").is_symlink() and list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("key", ["../escape", "a/../../escape", "/escape", "./escape"])
async def test_keys_cannot_name_a_path_outside_the_bucket(folders: Folders, key: str) -> None:
    s = folders.store
    await s.put_bytes("bkt", "src", b"x")
    for call in (
        lambda: s.get_bytes("bkt", key),
        lambda: read_now(s, "bkt", key),
        lambda: s.put_tags("bkt", key, {"t": "1"}),
        lambda: s.copy("bkt", key, "bkt", "dst"),
        lambda: s.copy("bkt", "src", "bkt", key, options=CopyOptions(storage_class="GLACIER")),
    ):
        await expect_error(call(), "InvalidArgument", 400)
    assert not (folders.root / "escape").exists() and not (folders.root.parent / "escape").exists()


# -- temp files ---------------------------------------------------------------------------


def _make_stale(path: Path) -> None:
    old = time.time() - STALE_S
    os.utime(path, (old, old), follow_symlinks=False)


def _temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(TEMP_MARKER))


#: Writes half of a large object through LocalStore, then stalls until killed.
_KILLED_WRITER = """
import asyncio, sys, time
from pathlib import Path
from s3batch.storage import local

def stalled_write(f, body):
    f.write(body[: len(body) // 2])
    f.flush()
    time.sleep(600)
    raise SystemExit("not killed")

local._write_bytes = stalled_write
store = local.LocalStore(Path(sys.argv[1]))
asyncio.run(store.put_bytes("bkt", "sub/big.bin", b"x" * int(sys.argv[2])))
"""


def _killed_write(root: Path) -> Path:
    """Start a writer, kill -9 it mid-write; the temp file it leaves."""
    folder = root / "bkt" / "sub"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(root), str(KILLED_OBJECT_BYTES)])
    try:
        deadline = time.monotonic() + WRITER_START_S
        while time.monotonic() < deadline and proc.poll() is None:
            temps = _temp_files(folder) if folder.is_dir() else []
            if temps and temps[0].stat().st_size >= KILLED_OBJECT_BYTES // 2:
                break
            time.sleep(POLL_S)
        assert proc.poll() is None, "the writer ended before it could be killed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WRITER_START_S)
    temps = _temp_files(folder)
    assert len(temps) == 1 and temps[0].stat().st_size == KILLED_OBJECT_BYTES // 2
    return temps[0]


async def test_a_killed_writes_temp_file_is_hidden_then_swept(folders: Folders) -> None:
    s = folders.store
    await s.put_bytes("bkt", "sub/other.txt", b"other")
    temp = _killed_write(folders.root)
    # Hidden, and not addressable as a key.
    assert await keys(s) == ["sub/other.txt"]
    assert [o.key async for o in s.list_versions("bkt")] == ["sub/other.txt"]
    await expect_error(s.head("bkt", "sub/big.bin"), "NoSuchKey", 404)
    await expect_error(s.head("bkt", f"sub/{temp.name}"), "InvalidArgument", 400)
    await expect_error(s.get_bytes("bkt", f"sub/{temp.name}"), "InvalidArgument", 400)
    # Young: it could be a write still in progress, so it stays.
    assert await keys(s) == ["sub/other.txt"]
    assert temp.exists()
    # Stale: the next listing that passes its folder removes it.
    _make_stale(temp)
    assert await keys(s) == ["sub/other.txt"]
    assert not temp.exists()
    assert await s.get_bytes("bkt", "sub/other.txt") == b"other"


@pytest.mark.usefixtures("sidecar_files")
async def test_the_first_write_into_a_folder_sweeps_it(folders: Folders) -> None:
    await folders.store.put_bytes("bkt", "sub/a", b"a", metadata={"m": "1"})
    content = folders.bucket_dir / "sub"
    sidecars = folders.root / META_DIR_NAME / "bkt" / "sub.d"
    stale = [content / f"{TEMP_MARKER}0a", sidecars / f"{TEMP_MARKER}0b"]
    young = [content / f"{TEMP_MARKER}1a", sidecars / f"{TEMP_MARKER}1b"]
    for path in stale + young:
        path.write_bytes(b"half")
    for path in stale:
        _make_stale(path)
    not_ours = content / f"kept{TEMP_MARKER}2"  # hidden, but not a name the store gives temps
    not_ours.write_bytes(b"hand-made")
    _make_stale(not_ours)

    reopened = LocalStore(folders.root)  # e.g. a restart after the kill
    await reopened.put_bytes("bkt", "sub/b", b"b")
    assert [p.exists() for p in stale] == [False, False]
    assert [p.exists() for p in young] == [True, True]
    assert not_ours.exists()
    assert [o.key async for o in reopened.list_objects("bkt")] == ["sub/a", "sub/b"]


async def test_the_sweep_leaves_symlinks_and_folders_alone(folders: Folders) -> None:
    link = folders.bucket_dir / f"{TEMP_MARKER}link"
    link.symlink_to(folders.outside / "secret.txt")
    folder = folders.bucket_dir / f"{TEMP_MARKER}folder"
    folder.mkdir()
    for path in (link, folder):
        _make_stale(path)
    assert await keys(folders.store) == []
    await folders.store.put_bytes("bkt", "k", b"k")
    assert link.is_symlink() and folder.is_dir()
    assert (folders.outside / "secret.txt").read_bytes() == SECRET


async def test_keys_containing_the_temp_marker_are_refused(folders: Folders) -> None:
    s = folders.store
    for key in (f"{TEMP_MARKER}x", f"a/b{TEMP_MARKER}c"):
        error = await expect_error(s.put_bytes("bkt", key, b"x"), "InvalidArgument", 400)
        assert "reserved for temp files" in str(error)
    assert list(folders.bucket_dir.iterdir()) == []


async def test_only_regular_files_are_objects(folders: Folders) -> None:
    fifo = folders.bucket_dir / "pipe"
    os.mkfifo(fifo)
    s = folders.store
    assert await keys(s) == []
    # O_NONBLOCK: opening a FIFO with no writer must not hang the read.
    await expect_error(s.get_bytes("bkt", "pipe"), "NoSuchKey", 404)
    await expect_error(read_now(s, "bkt", "pipe"), "NoSuchKey", 404)
    await expect_error(s.head("bkt", "pipe"), "NoSuchKey", 404)
    await expect_error(s.put_bytes("bkt", "pipe/below", b"x"), "InvalidArgument", 400)
    await s.delete("bkt", "pipe")
    assert fifo.exists()
