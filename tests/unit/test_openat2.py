"""storage/openat2.py against real folders: one call opens a path below a folder, refusing a
symbolic link anywhere on it and any way out of the folder."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from s3batch.storage.openat2 import openat2

pytestmark = pytest.mark.skipif(openat2 is None, reason="this kernel has no openat2 (the folder store walks)")

FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_below(base: Path, path: str) -> bytes:
    assert openat2 is not None
    dir_fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = openat2(dir_fd, path, FLAGS)
    finally:
        os.close(dir_fd)
    try:
        return os.read(fd, 100)
    finally:
        os.close(fd)


def test_a_path_below_the_folder_opens_and_symlinks_or_escapes_do_not(tmp_path: Path) -> None:
    base, outside = tmp_path / "base", tmp_path / "outside"
    (base / "a" / "b").mkdir(parents=True)
    outside.mkdir()
    (base / "a" / "b" / "k").write_bytes(b"inside")
    (outside / "secret").write_bytes(b"secret")
    (base / "link-dir").symlink_to(outside)
    (base / "a" / "link-file").symlink_to(outside / "secret")
    (base / "a" / "inner-link").symlink_to(base / "a" / "b")  # even one that stays inside
    assert open_below(base, "a/b/k") == b"inside"
    for path, code in (
        ("link-dir/secret", errno.ELOOP),
        ("a/link-file", errno.ELOOP),
        ("a/inner-link/k", errno.ELOOP),
        ("../outside/secret", errno.EXDEV),
        ("a/missing", errno.ENOENT),
        ("a/b/k/x", errno.ENOTDIR),
    ):
        with pytest.raises(OSError) as caught:
            open_below(base, path)
        assert caught.value.errno == code, path
