"""LocalStore: the ObjectStore contract over a local folder.

Layout under `root`:

    <bucket>/<key>                          the object's bytes; users may drop files in
    .s3batch-meta/<bucket>/<key>.json       its sidecar file: content type, user metadata, system
                                            headers, tags, storage class, cached ETag (and the
                                            part sizes behind a multipart ETag)

A whole-object write puts the sidecar's JSON in the `user.s3batch` xattr of its new file
(ATTRS_XATTR) before moving it into place, and removes the key's sidecar file; where the xattr is
refused, it writes the sidecar file. One file per object instead of two: creating a file is most
of what a small write costs. A later change (tags, an ETag cache) goes into the sidecar file, and
a read takes the sidecar file, else the xattr: an existing file is never written to, so a
read-only, hard-linked or read-only-mounted file is never changed, and a folder written by an
earlier version (sidecar files only) reads the same (docs/compatibility.md, "Local folder store").

In the sidecar tree every folder level of the key gets a `.d` suffix (`a/b/c` → `a.d/b.d/c.json`),
so the sidecar of key `a` (`a.json`) can never collide with the folder of key `a.json/b`.
Every write goes to a temp file first and is moved into place with os.replace, so a crash
leaves the old or the new version, never a torn one. A version_id other than None/"null"
raises NotImplemented: a folder keeps one version per key.

ETags are S3's: the MD5 of the content, except for an object completed from a multipart upload,
whose ETag is the MD5 of its parts' MD5s with `-<parts>` (emulated_uploads.multipart_etag), as
S3 gives it. That one cannot be recomputed from the file, so it lives only in the sidecar, with
the part sizes, for the file state it was made for. An assembled upload's object (the
transfer's: storage/local_uploads.py) has an ETag of that form derived from its parts'
checksums instead (emulated_uploads.assembled_part_etag), and its sidecar also keeps the
checksum it was completed with, which `head_with_checksum` reports for that file state.

A file changed in place outside the store keeps its attributes; one replaced by a rename (mv,
most editors) keeps those of a sidecar file but loses those of its xattr, as a new object would.
Either way its cached ETag is recomputed, as the MD5 of the new content (the cache is keyed by
size, mtime_ns and inode), and it is one part again. Only files of ETAG_CACHE_MIN_BYTES or more
get their ETag cached on a HEAD or a listing: hashing a small file again costs less than the
atomic write of a cache file. For the same reason a write of fewer bytes whose attributes are
all defaults (what a HEAD answers for a file with no sidecar: no metadata, headers or tags, the
default content type, STANDARD) writes no sidecar, and removes the one an earlier version of the
key had; every other write records its ETag in its sidecar. A listing or a HEAD whose caller
uses no ETag (`list_objects`'s `etags=False`, `head_with_checksum`'s `etag=False`: the manifest
generator, the transfer's source) hashes nothing: it gives the ETags cached for the files as
they are, "" for the others.

A write runs in one worker thread (a small one on the event loop's thread): content to a temp
file, moved into place, then the sidecar written (or removed). Sidecar read-modify-write
sequences and the move-then-sidecar step hold a per-key lock (striped: SIDECAR_LOCK_STRIPES,
shared by every instance over the same folder in the process), so neither coroutines nor write
threads of one process interleave inside one, and a write whose caller gave up (cancelled) is
never moved into place afterwards; separate processes writing the same key at the same instant
may still lose a metadata update (last writer wins), as with any plain folder.

Symbolic links: the root, each bucket folder and each bucket's sidecar folder belong to the
operator and may be symlinks. Below them nothing is ever followed (docs/compatibility.md, "Local
folder store"): every path is opened one folder at a time relative to its parent's descriptor
with O_NOFOLLOW, so a symlink swapped in mid-request cannot redirect a read or a write. A
symlink is not an object: it is not listed, reading it is NoSuchKey, and a write through it (or
onto it) is AccessDenied.

Temp files (TEMP_MARKER) are never listed; one a killed process left behind is removed once it
is TEMP_SWEEP_AGE_S old, when a listing passes its folder or a store first writes into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from s3batch.domain.checksums import ChecksumAlgorithm, ChecksumType
from s3batch.domain.objects import AclSpec, KmsEncryption, ObjectInfo, ReplicationRule, Retention
from s3batch.domain.uploads import (
    Body,
    CheckedHead,
    ChecksumValue,
    ObjectAttributes,
    UploadedPart,
    WrittenObject,
)
from s3batch.errors import StorageError
from s3batch.storage import local_uploads as staging
from s3batch.storage.base import (
    Capability,
    CopyOptions,
    CopyResult,
    MultipartUpload,
    UploadLayout,
    VersionRef,
)
from s3batch.storage.emulated import (
    ACL_FEATURE,
    DEFAULT_CONTENT_TYPE,
    DEFAULT_COPY_OPTIONS,
    EMULATED_CAPABILITIES,
    ENCRYPTION_FEATURE,
    LEGAL_HOLD_FEATURE,
    RESTORE_FEATURE,
    RETENTION_FEATURE,
    ObjectAttrs,
    check_copy,
    check_key_length,
    check_put_extra,
    check_range,
    check_tags,
    check_unversioned,
    common_prefixes,
    copied_attrs,
    etag_hasher,
    etag_of,
    new_attrs,
    no_such_bucket,
    no_such_key,
    not_implemented,
    object_info,
)
from s3batch.storage.emulated_uploads import (
    StagedUpload,
    bad_digest,
    check_layout,
    check_sent_whole,
    checksum_of,
    chosen_parts,
    completed_checksum,
    full_hasher,
    multipart_etag,
    object_attrs,
)
from s3batch.storage.openat2 import openat2

log = logging.getLogger(__name__)

META_DIR_NAME = ".s3batch-meta"
#: Marks temp files (content and sidecars) being written; they are never listed, and keys
#: containing it are refused. The store names its temp files TEMP_MARKER + a random hex id.
TEMP_MARKER = ".s3batch-tmp-"
#: Age (from the file's mtime) after which a temp file counts as left by a killed write and is
#: removed, in seconds. A write in progress keeps its temp file's mtime fresh.
TEMP_SWEEP_AGE_S = 3600
#: Folders a store remembers having swept on its first write into them; past this it forgets
#: them all and sweeps each again on its next write there.
MAX_SWEPT_FOLDERS = 10_000
#: Bucket folder paths a store keeps made; past this it forgets them all and makes each again.
MAX_CACHED_BUCKETS = 1_000
SIDECAR_SUFFIX = ".json"
#: The extended attribute of an object's own file that holds what its sidecar file would (see
#: the module docstring): where the file system takes user xattrs an object is one file, not two
#: (creating a file is most of a small write's cost), and its attributes move with it.
ATTRS_XATTR = "user.s3batch"
#: Whether this platform has the xattr calls that reach a file through its folder's descriptor:
#: Python has them on Linux only, and they take no dir_fd, so a file is named by its folder's
#: entry in /proc/self/fd (and never followed if it is a symlink).
_XATTR_CALLS = hasattr(os, "setxattr") and os.path.isdir("/proc/self/fd")
#: Whether writes put attributes in ATTRS_XATTR (else in sidecar files only).
#: S3BATCH_FOLDER_XATTRS=0 turns it off, for a folder copied by tools that drop xattrs.
XATTRS_ENABLED = _XATTR_CALLS and os.environ.get("S3BATCH_FOLDER_XATTRS", "1") != "0"
#: Suffix of each folder level in the sidecar tree (see the module docstring).
SIDECAR_DIR_SUFFIX = ".d"
#: Block size for reading, writing and hashing files, in bytes.
IO_CHUNK_BYTES = 1024 * 1024
#: Files at least this large (bytes) get their ETag cached in the sidecar when a HEAD or a
#: listing computes it; smaller ones are hashed again each time (cheaper than a cache write).
ETAG_CACHE_MIN_BYTES = 256 * 1024
#: Files up to this size (bytes) are hashed and read where the request runs; larger ones in a
#: worker thread, so a big file does not stall the event loop. For a small file the hop to a
#: thread (and back, contending for the GIL) costs more than the reads.
INLINE_IO_MAX_BYTES = 64 * 1024
#: Locks guarding the sidecar of a key (keys share a lock by hash; more stripes, fewer waits).
SIDECAR_LOCK_STRIPES = 64
#: The stripes themselves, one set per process (every LocalStore instance takes its lock here).
_SIDECAR_LOCKS = tuple(threading.Lock() for _ in range(SIDECAR_LOCK_STRIPES))
#: Objects whose stat, sidecar and (small-file) ETag one worker-thread call gathers in a listing.
LIST_BATCH_OBJECTS = 256
#: Longest key segment, in UTF-8 bytes: the filesystem's 255 less the sidecar suffix.
MAX_SEGMENT_BYTES = 255 - len(SIDECAR_SUFFIX)
#: Bytes up to which a PUT writes its file, renames it and writes its sidecar on the event
#: loop's thread. A thread per small write made every GIL release of the loop (each hash of a
#: few KiB, each socket call) wait behind the writing threads: S3 → folder transfers of 4 KiB
#: objects spent more time waiting for the GIL than writing. Larger writes go to a thread.
INLINE_WRITE_MAX_BYTES = 64 * 1024
#: fsync each file before moving it into place. Off: os.replace already protects against a
#: killed process; only a power loss can lose the newest writes.
FSYNC_WRITES = False
#: Attempts at creating a folder that a concurrent delete may be removing as empty.
DIR_RACE_ATTEMPTS = 3
_DATETIME_TAG = "$datetime"
#: Opening a folder below a base folder: never through a symbolic link.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Opening a base folder (the operator's bucket or sidecar folder): a symlink is allowed there.
_BASE_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: Reading a file: never a symlink; O_NONBLOCK so a FIFO dropped into a bucket cannot hang the open.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: Creating a temp file: always a new file, never through a symlink.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: Permissions of new files before the umask, as open(..., "xb") gives them.
_FILE_MODE = 0o666
#: Errors that mean "nothing readable there": missing, a file where a folder should be, a
#: symlink (ELOOP), or a socket (ENXIO).
_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.ENXIO})
#: A getxattr that finds nothing to read: none set, none possible (the file system; a symlink),
#: or none readable; the sidecar file, if any, is read instead.
_XATTR_ABSENT = _MISSING_ERRNOS | {errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES}
#: A setxattr refused for this file or file system (none there, too large, no room, no right):
#: the attributes go to a sidecar file instead.
_XATTR_REFUSED = frozenset(
    {
        errno.ENOTSUP,
        errno.EOPNOTSUPP,
        errno.E2BIG,
        errno.ENOSPC,
        errno.ERANGE,
        errno.EPERM,
        errno.EACCES,
        errno.EDQUOT,
    }
)
_FOLDER = "local folder store"
#: What a file without a sidecar has (besides S3's default content type).
_NO_SIDECAR_ATTRS = ObjectAttrs()


# -- the folder store ---------------------------------------------------------------------


@dataclass(slots=True)
class _Sidecar:
    """The sidecar file's content: attributes plus the ETag cached for one file state."""

    attrs: ObjectAttrs = field(default_factory=ObjectAttrs)
    etag: str | None = None
    #: (size, mtime_ns, inode) of the file the cached etag belongs to (`_stamp`).
    stamp: tuple[int, ...] | None = None
    #: The part sizes of a multipart ETag (None: the etag is the MD5 of the file).
    parts: tuple[int, ...] | None = None
    #: The checksum an assembled upload's object was completed with, for the same file state.
    checksum: ChecksumValue | None = None

    def parts_of(self, st: os.stat_result) -> list[int] | None:
        """The part sizes recorded for the file state `st`, or None (one part)."""
        if self.parts is None or self.stamp != _stamp(st):
            return None
        return list(self.parts)

    def checksum_of(self, st: os.stat_result) -> ChecksumValue | None:
        """The checksum recorded for the file state `st`, or None."""
        return self.checksum if self.stamp == _stamp(st) else None

    def to_json(self) -> dict[str, Any]:
        a = self.attrs
        return {
            "content_type": a.content_type,
            "metadata": dict(a.metadata),
            "headers": {k: _encode_header(v) for k, v in a.headers.items()},
            "tags": dict(a.tags),
            "storage_class": a.storage_class,
            "etag": self.etag,
            "stamp": list(self.stamp) if self.stamp else None,
            "parts": list(self.parts) if self.parts else None,
            "checksum": None if self.checksum is None else _encode_checksum(self.checksum),
        }

    def encoded(self) -> bytes:
        return json.dumps(self.to_json(), ensure_ascii=False).encode("utf-8")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _Sidecar:
        attrs = ObjectAttrs(
            content_type=data.get("content_type"),
            metadata=dict(data.get("metadata") or {}),
            headers={k: _decode_header(v) for k, v in (data.get("headers") or {}).items()},
            tags=dict(data.get("tags") or {}),
            storage_class=data.get("storage_class") or "STANDARD",
        )
        stamp = data.get("stamp")
        parts = data.get("parts")
        checksum = data.get("checksum")
        return cls(
            attrs,
            data.get("etag"),
            tuple(int(part) for part in stamp) if stamp else None,
            tuple(int(size) for size in parts) if parts else None,
            None if checksum is None else _decode_checksum(checksum),
        )


@dataclass(frozen=True, slots=True)
class _Loc:
    """File `name` in folder `base/folders...`. `base` is the operator's (a bucket folder or a
    bucket's sidecar folder) and may be a symlink; nothing below it is ever followed."""

    base: Path
    folders: tuple[str, ...]
    name: str

    @property
    def folder(self) -> tuple[Path, tuple[str, ...]]:
        return self.base, self.folders


@dataclass(frozen=True, slots=True)
class _Described:
    """What a HEAD or a listing learns of one file in one worker-thread call."""

    st: os.stat_result
    sidecar: _Sidecar
    #: None: an ETag not cached and not computed yet (a large file, hashed in its own thread
    #: call; or any file, when the caller wants no ETag it does not have already).
    etag: str | None


@dataclass(frozen=True, slots=True)
class _WritePlan:
    """Where one write goes: the object, its sidecar, the temp name, the folders to sweep."""

    loc: _Loc
    sidecar: _Loc
    temp: str
    key: str
    sweep: Sequence[tuple[Path, tuple[str, ...]]]
    lock: threading.Lock
    #: Set (under `lock`) when the caller gave up: a write thread that has not moved its file
    #: into place yet must not, or a cancelled PUT could land after a later, answered one.
    abandoned: threading.Event = field(default_factory=threading.Event)


class LocalStore:
    """ObjectStore over a folder: sub-folders are buckets, files below them objects."""

    #: The S3 features both emulated stores share (storage/emulated.py); a folder keeps one
    #: version per key, so no Capability.VERSIONS.
    capabilities: ClassVar[frozenset[Capability]] = EMULATED_CAPABILITIES

    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        #: What the key locks are hashed with: the same folder however it was spelled.
        self._root_id = os.path.realpath(self._root)
        self._meta = self._root / META_DIR_NAME
        #: Folders this store has swept of stale temp files on a write (see _unswept).
        self._swept: set[tuple[Path, tuple[str, ...]]] = set()
        #: Bucket name → its folder's path, made once (a Path costs microseconds to build).
        self._bases: dict[str, Path] = {}
        #: Bucket name → its sidecar folder's path, likewise (every write names it).
        self._meta_bases: dict[str, Path] = {}
        #: Per-key sidecar locks (see the module docstring); threading locks, as write threads
        #: take them too. Held only across a few local file operations, never across an await.

    # -- paths and checks -------------------------------------------------------------------

    def _bucket_dir(self, bucket: str) -> Path:
        path = self._bucket_base(bucket)
        if not path.is_dir():
            raise no_such_bucket(bucket)
        return path

    def _bucket_base(self, bucket: str) -> Path:
        """Where bucket `bucket` lives, whether or not it exists (the name is checked)."""
        path = self._bases.get(bucket)
        if path is None:
            if not bucket or bucket.startswith(".") or "/" in bucket or "\x00" in bucket:
                raise StorageError("InvalidBucketName", f"bucket name {bucket!r} is not valid", 400)
            if len(self._bases) >= MAX_CACHED_BUCKETS:
                self._bases.clear()
            path = self._bases[bucket] = self._root / bucket
        return path

    def _object_loc(self, bucket: str, key: str) -> _Loc:
        """Where `key` lives, after checking the bucket exists and the key stays inside it."""
        _check_key(key)
        *folders, name = key.split("/")
        return _Loc(self._bucket_dir(bucket), tuple(folders), name)

    def _sidecar_loc(self, bucket: str, key: str) -> _Loc:
        *folders, name = key.split("/")
        parts = tuple(f + SIDECAR_DIR_SUFFIX for f in folders)
        base = self._meta_bases.get(bucket)
        if base is None:
            if len(self._meta_bases) >= MAX_CACHED_BUCKETS:
                self._meta_bases.clear()
            base = self._meta_bases[bucket] = self._meta / bucket
        return _Loc(base, parts, name + SIDECAR_SUFFIX)

    def _unswept(self, *locs: _Loc) -> list[tuple[Path, tuple[str, ...]]]:
        """The folders of `locs` not yet swept by this store, now marked as swept."""
        todo = [loc.folder for loc in locs if loc.folder not in self._swept]
        if len(self._swept) + len(todo) > MAX_SWEPT_FOLDERS:
            self._swept.clear()
        self._swept.update(todo)
        return todo

    # -- sidecars ---------------------------------------------------------------------------

    def _lock(self, bucket: str, key: str) -> threading.Lock:
        # Shared by every instance over the same root: open_store() makes one per job and call.
        return _SIDECAR_LOCKS[hash((self._root_id, bucket, key)) % SIDECAR_LOCK_STRIPES]

    def _inspected(self, bucket: str, key: str, loc: _Loc) -> tuple[os.stat_result, _Sidecar]:
        """The object's own stat and its sidecar content: its sidecar file's, else its file's
        xattr's (module docstring); NoSuchKey unless a regular file."""
        st, raw = _stat_and_xattr(loc, key)
        sidecar = _read_sidecar_at(self._sidecar_loc(bucket, key))
        if sidecar is None and raw is not None:
            sidecar = _parsed_sidecar(raw, loc)
        return st, sidecar or _Sidecar()

    def _write_sidecar(self, bucket: str, key: str, sidecar: _Sidecar) -> None:
        """Record `sidecar` for an existing object: always in a sidecar file (which a read takes
        before the xattr). An existing file is never written to, so a read-only or hard-linked
        file, or one on a read-only mount, is never changed by a tag update or an ETag cache."""
        _atomic_write(self._sidecar_loc(bucket, key), sidecar.encoded())

    def _update_attrs(
        self, bucket: str, key: str, loc: _Loc, change: Callable[[ObjectAttrs], ObjectAttrs]
    ) -> None:
        with self._lock(bucket, key):
            _, sidecar = self._inspected(bucket, key, loc)
            sidecar.attrs = change(sidecar.attrs)
            self._write_sidecar(bucket, key, sidecar)

    def _described(self, bucket: str, key: str, loc: _Loc) -> _Described:
        """The object's stat and sidecar, and its ETag when cached or cheap to compute
        (blocking: run in a worker thread). NoSuchKey unless a regular file."""
        st, sidecar = self._inspected(bucket, key, loc)
        return _Described(st, sidecar, _cheap_etag(loc, key, st, sidecar))

    def _described_unhashed(self, bucket: str, key: str, loc: _Loc) -> _Described:
        """`_described` with the ETag only when cached: the object's file is not opened."""
        st, sidecar = self._inspected(bucket, key, loc)
        return _Described(st, sidecar, _cached_etag(st, sidecar))

    async def _etag(self, bucket: str, key: str, loc: _Loc, described: _Described) -> str:
        """MD5 of the file: `described`'s when it has one, else hashed in a worker thread and
        cached in the sidecar (a file this large is worth a cache write)."""
        if described.etag is not None:
            return described.etag
        stamp = _stamp(described.st)
        etag, hashed = await asyncio.to_thread(_md5_object, loc, key)
        if hashed == stamp and hashed[0] >= ETAG_CACHE_MIN_BYTES:
            # The cache is best effort (read-only folder, races). Re-read under the key lock
            # (writers hold it from the rename to their sidecar) so an attribute change made
            # while hashing is kept, and an ETag a writer recorded for this very file (a
            # multipart upload's, which the bytes cannot give back) is never overwritten.
            with contextlib.suppress(OSError, StorageError), self._lock(bucket, key):
                st, fresh = self._inspected(bucket, key, loc)
                if fresh.etag and fresh.stamp == stamp:
                    return fresh.etag
                if _stamp(st) != stamp:
                    return etag  # replaced while hashed: nothing to cache for a file gone
                fresh.etag, fresh.stamp, fresh.parts, fresh.checksum = etag, stamp, None, None
                self._write_sidecar(bucket, key, fresh)
        return etag

    # -- writes -----------------------------------------------------------------------------

    async def _write(
        self,
        bucket: str,
        key: str,
        fill: Callable[[BinaryIO], str],
        attrs: ObjectAttrs,
        *,
        size: int | None = None,
        parts: tuple[int, ...] | None = None,
    ) -> tuple[os.stat_result, str]:
        """Write content via a temp file, move it into place, then write its sidecar (or remove
        the one it no longer needs): one worker-thread call, or none for `size` bytes known to
        be few (see INLINE_WRITE_MAX_BYTES). `parts`: the part sizes behind a multipart ETag."""
        loc = self._object_loc(bucket, key)
        sidecar = self._sidecar_loc(bucket, key)
        plan = _WritePlan(
            loc, sidecar, _temp_name(), key, self._unswept(loc, sidecar), self._lock(bucket, key)
        )
        try:
            # A first write into a folder sweeps it: a thread.
            if size is not None and size <= INLINE_WRITE_MAX_BYTES and not plan.sweep:
                return _write_object(plan, fill, attrs, parts)
            return await asyncio.to_thread(_write_object, plan, fill, attrs, parts)
        except BaseException:
            with plan.lock:
                plan.abandoned.set()
            # A cancelled write thread may still finish after this (as a PUT whose client went
            # away may still land); a temp file it leaves stays hidden and is swept once stale.
            _discard(loc, plan.temp)
            raise

    async def _head(
        self, bucket: str, key: str, version_id: str | None, *, etag: bool = True
    ) -> tuple[ObjectInfo, _Described]:
        """The object's HEAD; with `etag=False` its ETag only when cached, else ""."""
        _check_version(version_id)
        with _io_errors(key):
            loc = self._object_loc(bucket, key)
            # Inline: a stat and a small sidecar (a large file's hash goes to a thread).
            if etag:
                described = self._described(bucket, key, loc)
                value = await self._etag(bucket, key, loc, described)
            else:
                described = self._described_unhashed(bucket, key, loc)
                value = described.etag or ""
        st, sidecar = described.st, described.sidecar
        info = object_info(
            bucket, key, size=st.st_size, etag=value, last_modified=_mtime(st), attrs=sidecar.attrs
        )
        return info, described

    # -- the contract -----------------------------------------------------------------------

    async def create_bucket(self, bucket: str) -> None:
        with _io_errors(bucket):
            try:
                self._bucket_dir(bucket)
            except StorageError as exc:
                if exc.code != "NoSuchBucket":
                    raise
                (self._root / bucket).mkdir(parents=True, exist_ok=True)

    async def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
        info, _ = await self._head(bucket, key, version_id)
        return info

    async def get_bytes(self, bucket: str, key: str, version_id: str | None = None) -> bytes:
        _check_version(version_id)
        with _io_errors(key):
            return await asyncio.to_thread(_read_object, self._object_loc(bucket, key), key)

    def read_now(
        self, bucket: str, key: str, version_id: str | None = None, max_bytes: int | None = None
    ) -> bytes:
        """The body (its first `max_bytes` when given), read in the calling thread: for code
        already on a thread of its own (a function handler), with no event loop and no hop.
        The checks and errors of get_bytes; the bucket is looked at only when the key is
        missing (an open inside a missing bucket fails anyway), so a read is one open per
        folder level, an fstat and a read."""
        _check_version(version_id)
        _check_key(key)
        try:  # (not _io_errors: a context manager per read costs as much as its fstat)
            *folders, name = key.split("/")
            try:
                fd = _open_in(self._bucket_base(bucket), folders, name)
            except OSError as exc:
                if exc.errno in _MISSING_ERRNOS:
                    self._bucket_dir(bucket)  # NoSuchBucket when that is why
                    raise no_such_key(key) from exc
                raise
            try:
                st = os.fstat(fd)
                if not _is_file(st):
                    raise no_such_key(key)
                return _read_fd(fd, st.st_size if max_bytes is None else min(max_bytes, st.st_size))
            finally:
                os.close(fd)
        except OSError as exc:
            raise _storage_error(exc, key) from exc

    async def iter_bytes(
        self,
        bucket: str,
        key: str,
        version_id: str | None = None,
        start: int = 0,
        chunk_size: int = 1 << 20,
    ) -> AsyncIterator[bytes]:
        _check_version(version_id)
        with _io_errors(key):
            loc = self._object_loc(bucket, key)
            # Reads stop at the size seen when opened (a key is replaced by rename, never written
            # in place); a small object is opened and read here, with no thread hop.
            f, left, chunk = _open_at(loc, key, start, chunk_size)
            try:
                if left > 0 and not chunk:
                    chunk = await asyncio.to_thread(f.read, min(chunk_size, left))
                while chunk:
                    left -= len(chunk)
                    yield chunk
                    chunk = await asyncio.to_thread(f.read, min(chunk_size, left)) if left > 0 else b""
            finally:
                f.close()

    async def read_range_into(
        self,
        bucket: str,
        key: str,
        version_id: str | None,
        start: int,
        buffer: bytearray,
        *,
        size: int,
        etag: str | None,
    ) -> None:
        """capabilities.RangeReadStore: the bytes read with `preadv` straight into `buffer`, in a
        worker thread. `etag` is not compared (it would take reading the whole file): the file
        must be `size` bytes long when opened, and a key is replaced by a rename, never written
        in place, so the bytes of one open file are one version's."""
        _check_version(version_id)
        with _io_errors(key):
            loc = self._object_loc(bucket, key)
            await asyncio.to_thread(_read_range_into, loc, key, start, memoryview(buffer), size)

    async def put_bytes(
        self,
        bucket: str,
        key: str,
        body: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ObjectInfo:
        check_put_extra(_FOLDER, extra)
        attrs = new_attrs(content_type, metadata)
        with _io_errors(key):
            st, etag = await self._write(bucket, key, lambda f: _write_bytes(f, body), attrs, size=len(body))
        info = object_info(bucket, key, size=st.st_size, etag=etag, last_modified=_mtime(st), attrs=attrs)
        return replace(info, content_type=content_type)  # as requested, like S3Store

    async def put_file(
        self,
        bucket: str,
        key: str,
        path: Path,
        *,
        content_type: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        check_put_extra(_FOLDER, extra)
        if not path.is_file():  # the caller's file, not an object: not a NoSuchKey
            raise StorageError("LocalFileError", f"{path} is not a readable file")
        with _io_errors(key):
            await self._write(bucket, key, lambda f: _copy_file(path, f), new_attrs(content_type, None))

    async def copy(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        *,
        src_version_id: str | None = None,
        options: CopyOptions = DEFAULT_COPY_OPTIONS,
    ) -> CopyResult:
        _check_version(src_version_id)
        check_copy((src_bucket, src_key), (dst_bucket, dst_key), src_version_id, options)
        with _io_errors(src_key):
            src = self._object_loc(src_bucket, src_key)
            _, sidecar = self._inspected(src_bucket, src_key, src)
            attrs = copied_attrs(sidecar.attrs, options)
            _, etag = await self._write(dst_bucket, dst_key, lambda f: _copy_object(src, src_key, f), attrs)
        return CopyResult(etag)

    async def get_tags(self, bucket: str, key: str, version_id: str | None = None) -> dict[str, str]:
        _check_version(version_id)
        with _io_errors(key):
            _, sidecar = self._inspected(bucket, key, self._object_loc(bucket, key))
            return dict(sidecar.attrs.tags)

    async def put_tags(
        self, bucket: str, key: str, tags: Mapping[str, str], version_id: str | None = None
    ) -> None:
        _check_version(version_id)
        check_tags(tags)
        with _io_errors(key):
            loc = self._object_loc(bucket, key)
            self._update_attrs(bucket, key, loc, lambda a: replace(a, tags=dict(tags)))

    async def delete_tags(self, bucket: str, key: str, version_id: str | None = None) -> None:
        await self.put_tags(bucket, key, {}, version_id)

    async def delete(self, bucket: str, key: str, version_id: str | None = None) -> None:
        _check_version(version_id)
        with _io_errors(key):
            loc = self._object_loc(bucket, key)
            sidecar = self._sidecar_loc(bucket, key)
            # A missing key, a folder of other keys or a symlink deletes nothing.
            with self._lock(bucket, key):
                _remove_file(loc)
                _remove_file(sidecar)
            _prune_empty(loc)
            _prune_empty(sidecar)

    async def delete_many(self, bucket: str, objects: Sequence[VersionRef]) -> list[Exception | None]:
        with _io_errors(bucket):
            self._bucket_dir(bucket)  # a missing bucket fails the whole request, as in S3
        outcomes: list[Exception | None] = []
        for ref in objects:
            try:
                await self.delete(bucket, ref.key, ref.version_id)
                outcomes.append(None)
            except StorageError as exc:
                outcomes.append(exc)
        return outcomes

    async def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        start_after: str | None = None,
        *,
        end_before: str | None = None,
        etags: bool = True,
    ) -> AsyncIterator[ObjectInfo]:
        # etags=False: no object's file is opened; only the ETags sidecars cache are given.
        with _io_errors(bucket):
            bucket_dir = self._bucket_dir(bucket)
            batch: list[tuple[str, _Loc]] = []
            async for files in self._walk(bucket_dir, (), prefix, start_after):
                ended = False
                for key, loc in files:
                    if start_after is not None and key <= start_after:
                        continue
                    if end_before is not None and key >= end_before:
                        ended = True  # the walk is in key order: nothing after this is wanted
                        break
                    batch.append((key, loc))
                while len(batch) >= LIST_BATCH_OBJECTS:
                    async for info in self._listed(bucket, batch[:LIST_BATCH_OBJECTS], etags):
                        yield info
                    batch = batch[LIST_BATCH_OBJECTS:]
                if ended:
                    break
            async for info in self._listed(bucket, batch, etags):
                yield info

    async def _listed(
        self, bucket: str, batch: list[tuple[str, _Loc]], etags: bool
    ) -> AsyncIterator[ObjectInfo]:
        """The listing entries of `batch`: stats, sidecars and small files' ETags (`etags`;
        else only cached ones, "" for the rest) gathered in one worker-thread call; a file
        deleted meanwhile is left out."""
        if not batch:
            return
        described = await asyncio.to_thread(self._described_many, bucket, batch, etags)
        for (key, loc), found in zip(batch, described, strict=True):
            if found is None:
                continue
            if etags:
                try:
                    etag = await self._etag(bucket, key, loc, found)
                except StorageError:
                    continue  # deleted while listing
            else:
                etag = found.etag or ""
            yield ObjectInfo(
                bucket=bucket,
                key=key,
                size=found.st.st_size,
                etag=etag,
                last_modified=_mtime(found.st),
                storage_class=found.sidecar.attrs.storage_class,
            )

    def _described_many(
        self, bucket: str, batch: list[tuple[str, _Loc]], etags: bool
    ) -> list[_Described | None]:
        describe = self._described if etags else self._described_unhashed
        found: list[_Described | None] = []
        for key, loc in batch:
            try:
                found.append(describe(bucket, key, loc))
            except StorageError:
                found.append(None)  # deleted while listing
            except OSError as exc:
                if exc.errno not in _MISSING_ERRNOS:
                    raise
                found.append(None)
        return found

    async def list_prefixes(self, bucket: str, prefix: str = "", delimiter: str = "/") -> list[str]:
        # Names only: a common prefix needs no file's size, sidecar or ETag.
        with _io_errors(bucket):
            bucket_dir = self._bucket_dir(bucket)
            keys = [key async for files in self._walk(bucket_dir, (), prefix) for key, _ in files]
        return common_prefixes(keys, prefix, delimiter)

    async def list_versions(
        self, bucket: str, prefix: str = "", start_after: str | None = None, *, etags: bool = True
    ) -> AsyncIterator[ObjectInfo]:
        # One version per file: each object is its own latest version.
        async for info in self.list_objects(bucket, prefix, start_after, etags=etags):
            yield info

    async def object_parts(self, bucket: str, key: str, version_id: str | None = None) -> list[int] | None:
        _, described = await self._head(bucket, key, version_id)  # a missing key is still NoSuchKey
        # The parts of a completed multipart upload while the file is as it was written; any
        # other file is one part.
        return described.sidecar.parts_of(described.st)

    # -- S3 features a folder does not have ----------------------------------------------

    async def put_acl(self, bucket: str, key: str, acl: AclSpec, version_id: str | None = None) -> None:
        raise not_implemented(_FOLDER, ACL_FEATURE)

    async def restore(
        self,
        bucket: str,
        key: str,
        days: int | None,
        tier: str | None,
        version_id: str | None = None,
    ) -> None:
        raise not_implemented(_FOLDER, RESTORE_FEATURE)

    async def put_legal_hold(self, bucket: str, key: str, status: str, version_id: str | None = None) -> None:
        raise not_implemented(_FOLDER, LEGAL_HOLD_FEATURE)

    async def put_retention(
        self,
        bucket: str,
        key: str,
        retention: Retention,
        version_id: str | None = None,
        *,
        bypass_governance: bool = False,
    ) -> None:
        raise not_implemented(_FOLDER, RETENTION_FEATURE)

    async def replication_rules(self, bucket: str) -> list[ReplicationRule]:
        # A folder has no replication configuration, which is an answer, not an error: a job
        # can still name its destination (the S3ReplicateObject DestinationBucket extension).
        self._bucket_dir(bucket)
        return []

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        # put_file writes a temp file and renames it (a crash leaves only a temp file, never
        # listed: see TEMP_MARKER); only create_multipart_upload leaves uploads to list.
        self._bucket_dir(bucket)
        with _io_errors(bucket):
            uploads = await asyncio.to_thread(staging.list_uploads, self._root, bucket)
        for upload_id, upload in uploads:
            if upload.key.startswith(prefix):
                yield MultipartUpload(upload.key, upload_id, upload.initiated)

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        folder = self._upload_folder(bucket, upload_id)
        with _io_errors(key):
            await asyncio.to_thread(staging.abort, folder, key, upload_id)

    # -- checksummed writes and multipart uploads (Capability.PART_UPLOADS) -------------------

    def _upload_folder(self, bucket: str, upload_id: str) -> Path:
        self._bucket_dir(bucket)
        return staging.upload_folder(self._root, bucket, upload_id)

    async def put_with_checksum(
        self,
        bucket: str,
        key: str,
        body: Body,
        *,
        attributes: ObjectAttributes,
        checksum: ChecksumValue | None,
    ) -> WrittenObject:
        answer = None
        if checksum is not None:
            # Computed once: it is both the check of what was sent and the answer.
            answer = ChecksumValue(checksum.algorithm, checksum_of(checksum.algorithm, body))
            if answer.value != checksum.value:
                raise bad_digest(checksum.algorithm)
        with _io_errors(key):
            _, etag = await self._write(
                bucket, key, lambda f: staging.write_body(f, body), object_attrs(attributes), size=len(body)
            )
        return WrittenObject(etag, None, answer)

    async def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        *,
        attributes: ObjectAttributes,
        algorithm: ChecksumAlgorithm | None,
        checksum_type: ChecksumType,
    ) -> str:
        return await self._create_upload(bucket, key, attributes, algorithm, checksum_type, None)

    async def create_assembled_upload(
        self,
        bucket: str,
        key: str,
        *,
        size: int,
        part_size: int,
        attributes: ObjectAttributes,
        algorithm: ChecksumAlgorithm,
        checksum_type: ChecksumType,
    ) -> str:
        """An upload whose parts are written straight into one file (capabilities.
        AssembledUploadStore; storage/local_uploads.py)."""
        layout = UploadLayout(size, part_size)
        check_layout(layout)
        return await self._create_upload(bucket, key, attributes, algorithm, checksum_type, layout)

    async def upload_layout(self, bucket: str, key: str, upload_id: str) -> UploadLayout | None:
        folder = self._upload_folder(bucket, upload_id)
        with _io_errors(key):
            upload = await asyncio.to_thread(staging.read_upload, folder, key, upload_id)
        return upload.layout

    async def _create_upload(
        self,
        bucket: str,
        key: str,
        attributes: ObjectAttributes,
        algorithm: ChecksumAlgorithm | None,
        checksum_type: ChecksumType,
        layout: UploadLayout | None,
    ) -> str:
        self._object_loc(bucket, key)  # the key's own checks, before any part is sent
        object_attrs(attributes)
        upload = StagedUpload(
            key=key, initiated=datetime.now(UTC), attributes=attributes, algorithm=algorithm,
            checksum_type=checksum_type, layout=layout,
        )  # fmt: skip
        upload_id = uuid.uuid4().hex
        with _io_errors(key):
            await asyncio.to_thread(staging.create, self._upload_folder(bucket, upload_id), upload)
        return upload_id

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        body: Body,
        *,
        checksum: ChecksumValue | None,
    ) -> UploadedPart:
        folder = self._upload_folder(bucket, upload_id)
        with _io_errors(key):
            return await asyncio.to_thread(staging.stage_part, folder, key, upload_id, number, body, checksum)

    async def upload_hashed_part(
        self, bucket: str, key: str, upload_id: str, number: int, body: Body, *, checksum: ChecksumValue
    ) -> UploadedPart:
        folder = self._upload_folder(bucket, upload_id)
        with _io_errors(key):
            return await asyncio.to_thread(
                staging.stage_part, folder, key, upload_id, number, body, checksum, hashed=True
            )

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> list[UploadedPart]:
        folder = self._upload_folder(bucket, upload_id)
        with _io_errors(key):
            upload = await asyncio.to_thread(staging.read_upload, folder, key, upload_id)
            parts = await asyncio.to_thread(staging.upload_parts, folder, upload)
        return [parts[number] for number in sorted(parts)]

    async def complete_multipart_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[UploadedPart],
        *,
        checksum: ChecksumValue | None,
    ) -> WrittenObject:
        folder = self._upload_folder(bucket, upload_id)
        with _io_errors(key):
            upload = await asyncio.to_thread(staging.read_upload, folder, key, upload_id)
            if upload.layout is not None:
                return await self._complete_assembled(bucket, key, folder, upload_id, parts, checksum)
            chosen = chosen_parts(await asyncio.to_thread(staging.read_parts, folder), parts)
            # S3's ETag and checksum for the object follow from the part records: the join
            # need not hash the bytes (unless full_hasher says it must).
            etag = multipart_etag(chosen)
            full = full_hasher(upload)
            answer = None if full is not None else completed_checksum(upload, chosen, None)
            check_sent_whole(answer, checksum)  # before a byte is written

            def fill(f: BinaryIO) -> str:
                nonlocal answer
                staging.join_parts(folder, chosen, f, full)
                if full is not None:
                    answer = completed_checksum(upload, chosen, full)
                    check_sent_whole(answer, checksum)  # before the object is moved into place
                return etag

            attrs = object_attrs(upload.attributes)
            sizes = tuple(part.size for part in chosen)
            _, etag = await self._write(bucket, key, fill, attrs, parts=sizes)
            await asyncio.to_thread(staging.remove, folder)
        return WrittenObject(etag, None, answer)

    async def _complete_assembled(
        self,
        bucket: str,
        key: str,
        folder: Path,
        upload_id: str,
        parts: Sequence[UploadedPart],
        checksum: ChecksumValue | None,
    ) -> WrittenObject:
        """An assembled upload's completion: the parts checked, then its file (the whole object
        already) moved into place with its sidecar, in one worker-thread call. A cancelled
        call is never moved into place afterwards, as with `_write`."""
        loc = self._object_loc(bucket, key)
        sidecar = self._sidecar_loc(bucket, key)
        plan = _WritePlan(
            loc, sidecar, _temp_name(), key, self._unswept(loc, sidecar), self._lock(bucket, key)
        )
        try:
            etag, answer = await asyncio.to_thread(
                _complete_assembled, plan, folder, upload_id, parts, checksum
            )
        except BaseException:
            with plan.lock:
                plan.abandoned.set()
            _discard(loc, plan.temp)  # (a temp file exists only where the file had to be copied)
            raise
        return WrittenObject(etag, None, answer)

    async def head_with_checksum(
        self, bucket: str, key: str, version_id: str | None = None, *, etag: bool = True
    ) -> CheckedHead:
        info, described = await self._head(bucket, key, version_id, etag=etag)
        # A folder keeps no checksum at rest, but for an assembled upload's object (in its
        # sidecar, while the file is the one completed): the ETag is cached in the same
        # sidecar for the same file state, so even `etag=False` gives it with the checksum.
        st, sidecar = described.st, described.sidecar
        return CheckedHead(info, sidecar.checksum_of(st), len(sidecar.attrs.tags))

    async def update_encryption(
        self, bucket: str, key: str, sse: KmsEncryption, version_id: str | None = None
    ) -> None:
        raise not_implemented(_FOLDER, ENCRYPTION_FEATURE)

    async def _walk(
        self, base: Path, folders: tuple[str, ...], prefix: str, start_after: str | None = None
    ) -> AsyncIterator[list[tuple[str, _Loc]]]:
        """(key, location) of each file under `base/folders...` whose key starts with `prefix`,
        in key order, a folder's files at a time (one yield per file, through a generator per
        folder level, cost more than listing the file). Folders whose every key sorts at or
        before `start_after` are not entered.

        Sorting each folder's entries with "/" appended to folder names gives global key
        order: every key below folder `a` starts with "a/", and that is where it sorts.
        """
        key_prefix = "".join(f + "/" for f in folders)
        files: list[tuple[str, _Loc]] = []
        for name, is_dir in await asyncio.to_thread(_sorted_entries, base, folders):
            key = key_prefix + name
            if not is_dir:
                if key.startswith(prefix):
                    files.append((key, _Loc(base, folders, name)))
                continue
            below = key + "/"
            if not (below.startswith(prefix) or prefix.startswith(below)):
                continue
            if start_after is not None and below < start_after and not start_after.startswith(below):
                continue  # every key below it sorts before start_after
            if files:
                yield files
                files = []
            async for found in self._walk(base, (*folders, name), prefix, start_after):
                yield found
        if files:
            yield files

    async def close(self) -> None:
        return None


# -- helpers ------------------------------------------------------------------------------


def _check_version(version_id: str | None) -> None:
    check_unversioned(version_id, f"versioning is not supported by a {_FOLDER}")


def _check_key(key: str) -> None:
    """Refuse keys that would leave the bucket folder or cannot be one file in it."""
    check_key_length(key)
    if "\x00" in key:
        raise StorageError("InvalidArgument", f"key {key!r} contains a NUL character", 400)
    if key.startswith("/") or key.endswith("/"):
        raise _key_clash(key, "starts or ends with '/': a folder store cannot hold it")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise _key_clash(key, "has an empty, '.' or '..' path segment")
        if TEMP_MARKER in segment:
            raise _key_clash(key, f"contains {TEMP_MARKER!r}, reserved for temp files")
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise StorageError(
                "KeyTooLongError",
                f"key {key!r}: each '/'-separated part is at most {MAX_SEGMENT_BYTES} bytes here",
                400,
            )


def _key_clash(key: str, why: str) -> StorageError:
    return StorageError("InvalidArgument", f"key {key!r} {why}", 400)


def _is_file(st: os.stat_result) -> bool:
    return stat.S_ISREG(st.st_mode)


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    """What tells one file state from another: size, mtime and inode. A file replaced by a
    rename gets another inode even with the same size and mtime (copies that keep mtimes, or
    writes within one clock tick); a sidecar of an older form (no inode) matches nothing."""
    return st.st_size, st.st_mtime_ns, st.st_ino


def _mtime(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, UTC)


def _temp_name() -> str:
    # In the target's own folder, so os.replace is a rename within one filesystem.
    return f"{TEMP_MARKER}{uuid.uuid4().hex}"


# -- opening paths without following symlinks ----------------------------------------------


def _symlink_error(name: str) -> OSError:
    return OSError(
        errno.ELOOP, f"{name!r} is a symbolic link, which the folder store never follows or replaces"
    )


def _open_child(parent: int, name: str, *, create: bool) -> int:
    """Descriptor of folder `name` in folder `parent`, made first if missing and `create`; ELOOP
    for a symlink. Opened first, made only when missing: most writes go to existing folders."""
    try:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, dir_fd=parent)
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except NotADirectoryError:
        # O_NOFOLLOW with O_DIRECTORY reports a symlink as "not a folder": tell them apart.
        if stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
            raise _symlink_error(name) from None
        raise


def _open_folder(base: Path, folders: Sequence[str], *, create: bool = False) -> int:
    """Descriptor of `base/folders...`, opened one level at a time so no symlink below `base`
    is followed, even one swapped in meanwhile."""
    fd = os.open(base, _BASE_FLAGS)
    try:
        for name in folders:
            child = _open_child(fd, name, create=create)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def _folder(base: Path, folders: Sequence[str]) -> Iterator[int]:
    fd = _open_folder(base, folders)
    try:
        yield fd
    finally:
        os.close(fd)


def _stat_and_xattr(loc: _Loc, key: str) -> tuple[os.stat_result, bytes | None]:
    """The object's own stat and its file's ATTRS_XATTR (None: it has none), its folder opened
    once; NoSuchKey unless a regular file (not a symlink, not a folder of other keys)."""
    try:
        with _folder(loc.base, loc.folders) as dfd:
            st = os.stat(loc.name, dir_fd=dfd, follow_symlinks=False)
            if not _is_file(st):
                raise no_such_key(key)
            return st, _get_xattr(dfd, loc.name)
    except OSError as exc:
        if exc.errno in _MISSING_ERRNOS:
            raise no_such_key(key) from exc
        raise


def _entry(dfd: int, name: str) -> str:
    """A path to entry `name` of the folder open as `dfd`, for the xattr calls (they take no
    dir_fd). Callers pass follow_symlinks=False: a symlink swapped in there is not followed."""
    return f"/proc/self/fd/{dfd}/{name}"


def _get_xattr(dfd: int, name: str) -> bytes | None:
    """ATTRS_XATTR of entry `name` of folder `dfd`, or None when it has none to read."""
    if not _XATTR_CALLS:
        return None
    try:
        return os.getxattr(_entry(dfd, name), ATTRS_XATTR, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _XATTR_ABSENT:
            return None
        raise


def _attach(fd: int, data: bytes) -> bool:
    """Put `data` in ATTRS_XATTR of the open file `fd`; False where it is not taken."""
    if not XATTRS_ENABLED:
        return False
    try:
        os.setxattr(fd, ATTRS_XATTR, data)
    except OSError as exc:
        if exc.errno in _XATTR_REFUSED:
            return False
        raise
    return True


def _open_file(loc: _Loc) -> int:
    """A read descriptor of the file at `loc`; ELOOP if it or a folder on the way is a symlink."""
    return _open_in(loc.base, loc.folders, loc.name)


def _open_in(base: Path, folders: Sequence[str], name: str) -> int:
    """`_open_file` of `base/folders.../name`. With openat2 the kernel checks the whole path
    in one call (storage/openat2.py); else one open per folder level."""
    if openat2 is not None:
        base_fd = os.open(base, _BASE_FLAGS)
        try:
            return openat2(base_fd, "/".join((*folders, name)) if folders else name, _READ_FLAGS)
        finally:
            os.close(base_fd)
    with _folder(base, folders) as dfd:
        return os.open(name, _READ_FLAGS, dir_fd=dfd)


def _open_object(loc: _Loc, key: str) -> tuple[BinaryIO, os.stat_result]:
    """The object's file, open for reading, and its stat; NoSuchKey unless a regular file."""
    try:
        f = os.fdopen(_open_file(loc), "rb")
    except OSError as exc:
        if exc.errno in _MISSING_ERRNOS:
            raise no_such_key(key) from exc
        raise
    st = os.fstat(f.fileno())
    if not _is_file(st):
        f.close()
        raise no_such_key(key)
    return f, st


def _read_range_into(loc: _Loc, key: str, start: int, buffer: memoryview, size: int) -> None:
    f, st = _open_object(loc, key)
    with f:
        if st.st_size != size or start + len(buffer) > size:
            raise _changed(key, f"it is {st.st_size} bytes, not {size}")
        filled = 0
        while filled < len(buffer):
            got = os.preadv(f.fileno(), [buffer[filled:]], start + filled)
            if not got:  # cut short in place, by something other than a store
                raise _changed(key, f"it ended at byte {start + filled} of {size}")
            filled += got


def _changed(key: str, how: str) -> StorageError:
    return StorageError("PreconditionFailed", f"{key}: the object changed while it was read ({how})", 412)


def _open_at(loc: _Loc, key: str, start: int, chunk_size: int) -> tuple[BinaryIO, int, bytes]:
    """The object's file open at `start`, the bytes left from there (by the size seen when
    opened) and, when they are few (up to INLINE_IO_MAX_BYTES), the first chunk of them."""
    f, st = _open_object(loc, key)
    try:
        check_range(start, st.st_size)
        if start:
            f.seek(start)  # moves the offset only: no I/O
        left = st.st_size - start
        if left > INLINE_IO_MAX_BYTES:
            return f, left, b""
        return f, left, f.read(min(chunk_size, left)) if left > 0 else b""
    except BaseException:
        f.close()
        raise


def _read_fd(fd: int, size: int) -> bytes:
    """`size` bytes from `fd`'s offset (fewer if the file ends first: it was cut meanwhile)."""
    first = os.read(fd, size) if size > 0 else b""
    if len(first) >= size or not first:
        return first
    parts, left = [first], size - len(first)
    while left > 0 and (block := os.read(fd, min(left, IO_CHUNK_BYTES))):
        parts.append(block)
        left -= len(block)
    return b"".join(parts)


def _read_object(loc: _Loc, key: str) -> bytes:
    f, _ = _open_object(loc, key)
    with f:
        return f.read()


def _md5_object(loc: _Loc, key: str) -> tuple[str, tuple[int, int, int]]:
    """MD5 of the object's file, and the `_stamp` of the file hashed."""
    f, _ = _open_object(loc, key)
    with f:
        digest = etag_hasher()
        while block := f.read(IO_CHUNK_BYTES):
            digest.update(block)
        return digest.hexdigest(), _stamp(os.fstat(f.fileno()))


def _cached_etag(st: os.stat_result, sidecar: _Sidecar) -> str | None:
    """The sidecar's cached ETag when it is for this file state, else None."""
    if sidecar.etag and sidecar.stamp == _stamp(st):
        return sidecar.etag
    return None


def _cheap_etag(loc: _Loc, key: str, st: os.stat_result, sidecar: _Sidecar) -> str | None:
    """The sidecar's cached ETag when it is for this file state; else the MD5 of a small file
    (up to INLINE_IO_MAX_BYTES), hashed here; None for a large file not cached."""
    cached = _cached_etag(st, sidecar)
    if cached is not None or st.st_size > INLINE_IO_MAX_BYTES:
        return cached
    etag, _ = _md5_object(loc, key)
    return etag


def _read_sidecar_at(loc: _Loc) -> _Sidecar | None:
    """The sidecar file at `loc`; None when it is missing or unreadable."""
    try:
        fd = _open_file(loc)
    except OSError as exc:
        if exc.errno in _MISSING_ERRNOS:
            return None  # attributes in the xattr, or a file dropped in by hand
        raise
    try:
        with os.fdopen(fd, "rb") as f:
            raw = f.read()
    except IsADirectoryError:
        return None
    return _parsed_sidecar(raw, loc)


def _parsed_sidecar(raw: bytes, loc: _Loc) -> _Sidecar | None:
    """The sidecar content `raw` (a sidecar file's or the xattr of the file at `loc`), or None
    when it cannot be read."""
    try:
        return _Sidecar.from_json(json.loads(raw.decode("utf-8")))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        log.warning("ignoring unreadable metadata of %s", loc.base.joinpath(*loc.folders, loc.name))
        return None


def _write_bytes(f: BinaryIO, body: bytes) -> str:
    f.write(body)
    return etag_of(body)


def _copy_stream(src: BinaryIO, f: BinaryIO) -> str:
    """Copy `src` into `f`; the MD5 of what was copied."""
    digest = etag_hasher()
    while block := src.read(IO_CHUNK_BYTES):
        digest.update(block)
        f.write(block)
    return digest.hexdigest()


def _copy_file(source: Path, f: BinaryIO) -> str:
    """Copy the caller's own file `source` (put_file) into `f`."""
    with source.open("rb") as src:
        return _copy_stream(src, f)


def _copy_object(loc: _Loc, key: str, f: BinaryIO) -> str:
    src, _ = _open_object(loc, key)
    with src:
        return _copy_stream(src, f)


# -- writing ------------------------------------------------------------------------------


def _try_new_temp(loc: _Loc, temp: str) -> tuple[int, int]:
    dfd = _open_folder(loc.base, loc.folders, create=True)
    try:
        return dfd, os.open(temp, _CREATE_FLAGS, _FILE_MODE, dir_fd=dfd)
    except BaseException:
        os.close(dfd)
        raise


def _open_object_folder(plan: _WritePlan) -> int:
    """The object's folder, made as needed (see `_open_new_temp`)."""
    for attempt in range(DIR_RACE_ATTEMPTS):
        try:
            return _open_folder(plan.loc.base, plan.loc.folders, create=True)
        except FileNotFoundError:
            if attempt == DIR_RACE_ATTEMPTS - 1:
                raise
        except NotADirectoryError as exc:
            raise _key_clash(plan.key, "runs through an existing object (a key prefix is a file)") from exc
    raise AssertionError("unreachable")


def _open_new_temp(loc: _Loc, temp: str) -> tuple[int, int]:
    """(folder, file) descriptors of new file `temp` in `loc`'s folder, made as needed."""
    for attempt in range(DIR_RACE_ATTEMPTS):
        try:
            return _try_new_temp(loc, temp)
        except FileNotFoundError:
            # A concurrent delete pruned a folder this write had just made (it was empty).
            if attempt == DIR_RACE_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


class _Abandoned(Exception):
    """The write's caller gave up before its file was moved into place: it is not."""


def _write_object(
    plan: _WritePlan,
    fill: Callable[[BinaryIO], str],
    attrs: ObjectAttrs,
    parts: tuple[int, ...] | None = None,
    checksum: ChecksumValue | None = None,
) -> tuple[os.stat_result, str]:
    """Create the temp file beside the object, fill it, move it into place and write the
    sidecar (or remove an earlier one a sidecar-less write leaves stale: see _needs_sidecar);
    runs in a worker thread. The folder is opened once for the temp file and the move."""
    _sweep_folders(plan.sweep)
    try:
        dfd, fd = _open_new_temp(plan.loc, plan.temp)
    except NotADirectoryError as exc:
        raise _key_clash(plan.key, "runs through an existing object (a key prefix is a file)") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            etag = fill(f)
            f.flush()
            # os.replace keeps the inode, so this is the object's stamp.
            st = os.fstat(f.fileno())
            sidecar = (
                _Sidecar(attrs, etag, _stamp(st), parts, checksum).encoded()
                if _needs_sidecar(attrs, st, parts)
                else None
            )
            attached = sidecar is not None and _attach(f.fileno(), sidecar)
            if FSYNC_WRITES:
                os.fsync(f.fileno())
        with plan.lock:
            if plan.abandoned.is_set():
                raise _Abandoned(plan.key)
            _replace_in(dfd, plan.loc.name, plan.temp, plan.key)
            # A sidecar file of an earlier version goes (a read takes it before the xattr). A
            # kill -9 between the move and this leaves it: the new bytes show the earlier
            # version's attributes (its ETag cache, stamped for the earlier file, not).
            if sidecar is None or attached:
                _remove_file(plan.sidecar)
            else:
                _atomic_write(plan.sidecar, sidecar)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(plan.temp, dir_fd=dfd)
        raise
    finally:
        os.close(dfd)
    return st, etag


def _complete_assembled(
    plan: _WritePlan,
    folder: Path,
    upload_id: str,
    requested: Sequence[UploadedPart],
    sent: ChecksumValue | None,
) -> tuple[str, ChecksumValue | None]:
    """CompleteMultipartUpload of an assembled upload, under its file's lock (no part is
    written meanwhile): the parts checked against the layout, the ETag and checksum derived
    from their records, the file moved into place (copied where it cannot be: another
    filesystem), the upload's folder removed. Returns the ETag and the checksum."""
    with staging.locked_assembly(folder) as fd:
        upload = staging.read_upload(folder, plan.key, upload_id)
        chosen = staging.assembled_parts(folder, upload, requested, fd)
        size = sum(part.size for part in chosen)
        etag = multipart_etag(chosen)
        full = full_hasher(upload)
        if full is not None:
            staging.hash_assembly(fd, size, full)
        answer = completed_checksum(upload, chosen, full)
        check_sent_whole(answer, sent)  # before the object is moved into place
        attrs = object_attrs(upload.attributes)
        sizes = tuple(part.size for part in chosen)

        def copy(out: BinaryIO) -> str:
            staging.copy_assembly(fd, out, size)
            return etag

        if not _adopt_object(plan, folder, os.fstat(fd), etag, attrs, sizes, answer):
            _write_object(plan, copy, attrs, sizes, answer)
        staging.remove(folder)
    return etag, answer


def _adopt_object(
    plan: _WritePlan,
    folder: Path,
    st: os.stat_result,
    etag: str,
    attrs: ObjectAttrs,
    parts: tuple[int, ...],
    checksum: ChecksumValue | None,
) -> bool:
    """Move the assembly file of the upload in `folder` (stat `st`) to the object's place and
    write the sidecar, as `_write_object` moves its temp file: under the key's lock, never
    once the caller gave up. False, with nothing moved, when the object's folder is on another
    filesystem than the staging area (a bucket folder that is a symlink there)."""
    _sweep_folders(plan.sweep)
    sidecar = _Sidecar(attrs, etag, _stamp(st), parts, checksum).encoded()  # a rename keeps the stamp
    src = os.open(folder, _BASE_FLAGS)  # the store's own staging folder
    try:
        for attempt in range(DIR_RACE_ATTEMPTS):
            dfd = _open_object_folder(plan)
            try:
                with plan.lock:
                    if plan.abandoned.is_set():
                        raise _Abandoned(plan.key)
                    try:
                        _replace_in(dfd, plan.loc.name, staging.ASSEMBLY_FILE, plan.key, src)
                    except FileNotFoundError:
                        # A concurrent delete pruned the object's folder (empty) once opened.
                        if attempt == DIR_RACE_ATTEMPTS - 1:
                            raise
                        continue
                    _atomic_write(plan.sidecar, sidecar)
                return True
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    return False
                raise
            finally:
                os.close(dfd)
    finally:
        os.close(src)
    raise AssertionError("unreachable")


def _needs_sidecar(attrs: ObjectAttrs, st: os.stat_result, parts: tuple[int, ...] | None) -> bool:
    """Whether a written object needs a sidecar: unless a HEAD of the file alone would answer
    the same (default attributes, an MD5 ETag, and few enough bytes that hashing them again on a
    HEAD costs less than writing a cache file: ETAG_CACHE_MIN_BYTES)."""
    return (
        parts is not None
        or st.st_size >= ETAG_CACHE_MIN_BYTES
        or attrs.content_type not in (None, DEFAULT_CONTENT_TYPE)
        or replace(attrs, content_type=None) != _NO_SIDECAR_ATTRS
    )


def _replace_in(dfd: int, name: str, temp: str, key: str, src_dfd: int | None = None) -> None:
    """Rename `temp` (in folder `src_dfd`, else `dfd`) to `name` in folder `dfd`; never onto a
    symlink (a rename would not follow it, but it would replace a link someone made with an
    object)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISLNK(os.stat(name, dir_fd=dfd, follow_symlinks=False).st_mode):
            raise _symlink_error(name)
    try:
        os.replace(temp, name, src_dir_fd=dfd if src_dfd is None else src_dfd, dst_dir_fd=dfd)
    except IsADirectoryError as exc:
        raise _key_clash(key, "names an existing folder of other keys") from exc


def _atomic_write(loc: _Loc, data: bytes) -> None:
    """Write a sidecar: a temp file moved into place."""
    temp = _temp_name()
    try:
        dfd, fd = _open_new_temp(loc, temp)
    except FileNotFoundError:
        loc.base.mkdir(parents=True, exist_ok=True)  # the bucket's first sidecar
        dfd, fd = _open_new_temp(loc, temp)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if FSYNC_WRITES:
                f.flush()
                os.fsync(f.fileno())
        os.replace(temp, loc.name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dfd)
        raise
    finally:
        os.close(dfd)


def _discard(loc: _Loc, temp: str) -> None:
    """Remove a temp file if it exists, keeping the error that made it useless."""
    with contextlib.suppress(OSError), _folder(loc.base, loc.folders) as dfd:
        os.unlink(temp, dir_fd=dfd)


def _remove_file(loc: _Loc) -> None:
    """Remove the regular file at `loc`; anything else (missing, a folder, a symlink) stays."""
    try:
        with _folder(loc.base, loc.folders) as dfd:
            if _is_file(os.stat(loc.name, dir_fd=dfd, follow_symlinks=False)):
                os.unlink(loc.name, dir_fd=dfd)
    except OSError as exc:
        if exc.errno not in _MISSING_ERRNOS and exc.errno != errno.EISDIR:
            raise


def _prune_empty(loc: _Loc) -> None:
    """Remove `loc`'s folders while empty, deepest first; never `loc.base`, never via a symlink."""
    if not loc.folders:
        return  # a key at the top of the bucket: no folder of its own
    fds: list[int] = []
    try:
        fds.append(os.open(loc.base, _BASE_FLAGS))
        for name in loc.folders[:-1]:
            fds.append(os.open(name, _DIR_FLAGS, dir_fd=fds[-1]))
        # fds[i] is the parent of loc.folders[i].
        for name, parent in zip(reversed(loc.folders), reversed(fds), strict=True):
            os.rmdir(name, dir_fd=parent)
    except OSError:
        return  # not empty, gone, or not a plain folder: nothing above can be empty either
    finally:
        for fd in fds:
            os.close(fd)


# -- listing and sweeping -----------------------------------------------------------------


def _sweep_entry(dfd: int, entry: os.DirEntry[str], stale_before_s: float) -> None:
    """Remove `entry` if it is a temp file of this store older than TEMP_SWEEP_AGE_S."""
    if not entry.name.startswith(TEMP_MARKER):
        return  # hidden from listings, but not a name this store gives its temp files
    with contextlib.suppress(OSError):  # best effort: gone already, or not ours to remove
        st = entry.stat(follow_symlinks=False)
        if _is_file(st) and st.st_mtime < stale_before_s:
            os.unlink(entry.name, dir_fd=dfd)
            log.info("removed %s, a temp file an interrupted write left behind", entry.name)


def _sweep_folders(places: Sequence[tuple[Path, tuple[str, ...]]]) -> None:
    """Remove stale temp files from each folder of `places`."""
    stale_before_s = time.time() - TEMP_SWEEP_AGE_S
    for base, folders in places:
        with contextlib.suppress(OSError), _folder(base, folders) as dfd, os.scandir(dfd) as entries:
            for entry in entries:
                _sweep_entry(dfd, entry, stale_before_s)


def _sorted_entries(base: Path, folders: tuple[str, ...]) -> list[tuple[str, bool]]:
    """(name, is_folder) of the entries of `base/folders...`, sorted as their keys sort.

    Symlinks, other non-regular files and temp files are left out; stale temp files are
    removed on the way.
    """
    stale_before_s = time.time() - TEMP_SWEEP_AGE_S
    entries: list[tuple[str, bool]] = []
    try:
        with _folder(base, folders) as dfd, os.scandir(dfd) as found:
            for entry in found:
                if TEMP_MARKER in entry.name:
                    _sweep_entry(dfd, entry, stale_before_s)
                elif entry.is_dir(follow_symlinks=False):
                    entries.append((entry.name, True))
                elif entry.is_file(follow_symlinks=False):
                    entries.append((entry.name, False))
                # else a symlink, FIFO, socket or device: not an object
    except OSError as exc:
        if exc.errno in _MISSING_ERRNOS:
            return []  # removed (or swapped for a symlink) while listing
        raise
    return sorted(entries, key=lambda entry: entry[0] + "/" if entry[1] else entry[0])


def _encode_header(value: Any) -> Any:
    if isinstance(value, datetime):
        return {_DATETIME_TAG: value.isoformat()}
    return value


def _encode_checksum(checksum: ChecksumValue) -> dict[str, str]:
    return {"algorithm": checksum.algorithm.value, "type": checksum.type.value, "value": checksum.value}


def _decode_checksum(data: Mapping[str, Any]) -> ChecksumValue:
    return ChecksumValue(ChecksumAlgorithm(data["algorithm"]), str(data["value"]), ChecksumType(data["type"]))


def _decode_header(value: Any) -> Any:
    if isinstance(value, dict) and _DATETIME_TAG in value:
        return datetime.fromisoformat(value[_DATETIME_TAG])
    return value


@contextlib.contextmanager
def _io_errors(name: str) -> Iterator[None]:
    """Turn filesystem errors into StorageErrors, as the contract requires."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        raise _storage_error(exc, name) from exc


def _storage_error(exc: OSError, name: str) -> StorageError:
    """The StorageError a filesystem error stands for."""
    if isinstance(exc, FileNotFoundError):
        return StorageError("NoSuchKey", f"{name}: {exc.strerror}", 404)
    if isinstance(exc, PermissionError):
        return StorageError("AccessDenied", f"{name}: {exc}", 403)
    if exc.errno == errno.ELOOP:  # a write through or onto a symlink inside the bucket
        return StorageError("AccessDenied", f"{name}: {exc.strerror}", 403)
    if exc.errno == errno.ENAMETOOLONG:
        return StorageError("KeyTooLongError", f"{name}: {exc.strerror}", 400)
    return StorageError("InternalError", f"{name}: {exc}")
