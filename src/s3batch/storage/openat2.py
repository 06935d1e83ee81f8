"""openat2(2) with RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH: open a path below a folder in one
system call, refusing any symbolic link on the way and any step out of the folder.

The folder store reads a key `a/b/c` without following a symlink below the bucket folder. Done
by hand that is one open per folder level (and as many closes); Linux 5.6 and later does the
same check in the kernel, in one call. Python has no binding for it, so it is called through
ctypes. Where the kernel, a seccomp filter or the platform refuses it (ENOSYS, EPERM, not
Linux), `openat2` is None and callers walk the folders themselves.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Callable

#: openat2's number in the generic syscall table, which every Linux architecture shares for it.
SYS_OPENAT2 = 437
#: Refuse any symlink on the path, the last component included (ELOOP).
RESOLVE_NO_SYMLINKS = 0x04
#: Refuse a path that leaves the folder (EXDEV), e.g. through "..".
RESOLVE_BENEATH = 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _load() -> Callable[[int, str, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syscall = libc.syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    syscall.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
    size = ctypes.sizeof(_OpenHow)

    def openat2(dir_fd: int, path: str, flags: int) -> int:
        """A descriptor of `path` below `dir_fd`, opened with `flags`; OSError as os.open."""
        how = _OpenHow(flags, 0, RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH)
        fd = syscall(SYS_OPENAT2, dir_fd, os.fsencode(path), ctypes.byref(how), size)
        if fd < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
        return int(fd)

    return openat2 if _works(openat2) else None


def _works(openat2: Callable[[int, str, int], int]) -> bool:
    """Whether this kernel answers openat2 (ENOSYS before 5.6; EPERM/ENOSYS under a seccomp
    filter that does not know it)."""
    try:
        dir_fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        os.close(openat2(dir_fd, ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    except OSError as exc:
        return exc.errno not in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG)
    finally:
        os.close(dir_fd)
    return True


#: None where the kernel or platform has no openat2.
openat2 = _load()
