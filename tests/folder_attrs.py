"""Where the folder store (storage/local.py) records an object's attributes, for the tests that
check which writes record them, in either place: "xattr" (the extended attribute
local.ATTRS_XATTR of the object's own file, where the file system takes user xattrs) or
"sidecar" (a JSON file under root/.s3batch-meta, the only place with local.XATTRS_ENABLED off).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import s3batch.storage.local as local_module
from s3batch.storage.local import ATTRS_XATTR, META_DIR_NAME, SIDECAR_DIR_SUFFIX, SIDECAR_SUFFIX

#: The two places, as the ids of the tests parametrized over them.
MODES = ("xattr", "sidecar")
#: What getxattr answers for a file without the attribute (or one that cannot have it).
_NO_XATTR = frozenset({errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM})


def xattrs_refused(folder: Path) -> str | None:
    """Why files in `folder` cannot carry the store's xattr, or None when they can."""
    if not local_module._XATTR_CALLS:
        return "the folder store uses xattrs on Linux (with /proc) only"
    probe = folder / "xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, ATTRS_XATTR, b"{}")
    except OSError as exc:
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        return f"the file system of {folder} refuses user xattrs ({name})"
    finally:
        probe.unlink()
    return None


def use_mode(monkeypatch: pytest.MonkeyPatch, mode: str, folder: Path) -> None:
    """Make the store record attributes in `mode`'s place (skip "xattr" where `folder`'s file
    system refuses user xattrs)."""
    if mode == "xattr":
        reason = xattrs_refused(folder)
        if reason is not None:
            pytest.skip(reason)
    monkeypatch.setattr(local_module, "XATTRS_ENABLED", mode == "xattr")


def xattr_of(path: Path) -> bytes | None:
    """The store's xattr of the file at `path` (never followed if a symlink), or None."""
    try:
        return os.getxattr(path, ATTRS_XATTR, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTR:
            return None
        raise


def in_xattrs(root: Path) -> list[str]:
    """ "bucket/key" of each file in the bucket folders under `root` that carries the xattr
    (symlinks and the store's own dot-folders left out)."""
    found = []
    for bucket in sorted(root.iterdir()):
        if bucket.name.startswith(".") or bucket.is_symlink() or not bucket.is_dir():
            continue
        for folder, _, files in os.walk(bucket):  # (never into a symlinked folder)
            for name in files:
                path = Path(folder, name)
                if not path.is_symlink() and xattr_of(path) is not None:
                    found.append(str(path.relative_to(root)))
    return sorted(found)


def in_sidecars(root: Path) -> list[str]:
    """ "bucket/key" of each sidecar file under root/.s3batch-meta."""
    meta = root / META_DIR_NAME
    if not meta.exists():
        return []
    found = []
    for path in meta.rglob(f"*{SIDECAR_SUFFIX}"):
        bucket, *folders, name = path.relative_to(meta).parts
        key = [f.removesuffix(SIDECAR_DIR_SUFFIX) for f in folders] + [name.removesuffix(SIDECAR_SUFFIX)]
        found.append("/".join([bucket, *key]))
    return sorted(found)


def recorded(root: Path, mode: str) -> list[str]:
    """ "bucket/key" of each object whose attributes are recorded in `mode`'s place."""
    return in_xattrs(root) if mode == "xattr" else in_sidecars(root)


def recorded_elsewhere(root: Path, mode: str) -> list[str]:
    """ "bucket/key" of each object whose attributes are recorded in the other place."""
    return in_sidecars(root) if mode == "xattr" else in_xattrs(root)
