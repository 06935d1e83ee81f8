"""The folder store's multipart uploads (Capability.PART_UPLOADS): a staging area beside the buckets.

    .s3batch-uploads/<bucket>/<upload id>/upload.json        key, start time, attributes, algorithm
    .s3batch-uploads/<bucket>/<upload id>/part-00001         a part's bytes
    .s3batch-uploads/<bucket>/<upload id>/part-00001.json    its ETag, size and checksum

Bucket names never start with "." (storage/local.py), so the staging area is no bucket and is
never listed as one. Every file is written to a temp name and moved into place, so a killed
process leaves whole parts (a part whose record is missing is not listed, and is uploaded again).
CompleteMultipartUpload joins the parts into the object through the store's own temp-file write,
then removes the upload's folder; AbortMultipartUpload removes it. The functions here are
blocking: the store runs them in a worker thread.

The join copies in the kernel (copy_file_range: a reflink where the filesystem shares blocks,
else a copy that never enters Python; sendfile where that is refused; read/write where both
are), and hashes nothing: the object's ETag and checksum follow from the part records
(emulated_uploads.multipart_etag, completed_checksum). Only a FULL_OBJECT upload whose algorithm
does not combine (not a CRC) reads the joined bytes back through Python, to hash them.

An assembled upload (capabilities.AssembledUploadStore: the transfer's way in) knows its layout
from the start, and holds no part files:

    .s3batch-uploads/<bucket>/<upload id>/upload.json        ... and the layout (size, part size)
    .s3batch-uploads/<bucket>/<upload id>/assembly           the object, sized when created
    .s3batch-uploads/<bucket>/<upload id>/part-00001.json    a part's ETag, size, checksum, boot

UploadPart checks the part's size against the layout and its checksum (the upload's algorithm,
required) against its bytes, writes the bytes at the part's offset in the assembly file
(os.pwrite), then the part's record: a part is listed only once its bytes are there, so a
killed process leaves only parts whose bytes are whole. Completion checks the parts cover the
layout and moves the assembly file into place: no copy, no hash. Each writer of a part, the
completion and an abort hold the assembly file's lock (flock: across threads and processes),
so two writers of one part cannot interleave their bytes and records, and a writer that waited
for the lock while the upload was completed or aborted finds it gone instead of writing into
what is now the object. Parts of distinct numbers go to distinct offsets; only the short
write-and-record step is serialized.

A record holds the machine's boot id (Linux's /proc/sys/kernel/random/boot_id) when it was
written. The bytes it stands for were written through the page cache: a killed process cannot
lose them, a machine that went down (power loss, crash) can, while the record survives. A
record of another boot is therefore not trusted: before such a part is listed or completed,
its bytes are read back from the assembly file and checked against the recorded checksum; a
part that passes is recorded again for this boot, one that does not has its record removed
(the part is uploaded again). Where no boot id can be read, the file is fsync'ed before each
record instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from s3batch.domain.checksums import ChecksumAlgorithm, Hasher, encode, new_hasher
from s3batch.domain.uploads import Body, ChecksumValue, UploadedPart, is_md5_etag
from s3batch.errors import StorageError
from s3batch.storage.base import UploadLayout
from s3batch.storage.emulated_uploads import (
    UPLOAD_ID,
    StagedUpload,
    assembled_part_etag,
    bad_digest,
    check_part_number,
    checksum_of,
    chosen_parts,
    no_such_upload,
)

#: The staging area's folder under the store's root.
UPLOADS_DIR_NAME = ".s3batch-uploads"
UPLOAD_RECORD = "upload.json"
PART_PREFIX = "part-"
PART_RECORD_SUFFIX = ".json"
#: Digits of a part's file name (part numbers go up to 10,000).
PART_DIGITS = 5
#: Block size for joining parts through Python (when the kernel cannot copy, or the bytes must be
#: hashed), in bytes.
JOIN_CHUNK_BYTES = 1024 * 1024
#: Errors with which a kernel copy call says "not between these files" (an old kernel, another
#: filesystem, a sandbox that forbids the call): the join falls back to the next way of copying.
KERNEL_COPY_REFUSED = frozenset(
    {errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM, errno.ENOTSOCK}
)
#: Marks files being written; they are never read as parts.
TEMP_PREFIX = ".tmp-"
#: An assembled upload's file: the object, each part written at its offset.
ASSEMBLY_FILE = "assembly"
#: Where Linux says which boot of the machine this is (a random id per boot).
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
#: Block size for reading an assembly file back (re-checking parts, hashing it), in bytes.
READ_BACK_BYTES = 1024 * 1024
#: Opening an assembly file: never through a symbolic link.
_ASSEMBLY_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC


def upload_folder(root: Path, bucket: str, upload_id: str) -> Path:
    """Where an upload lives; NoSuchUpload for an id this store never hands out."""
    if UPLOAD_ID.fullmatch(upload_id) is None:
        raise no_such_upload(upload_id)
    return root / UPLOADS_DIR_NAME / bucket / upload_id


def create(folder: Path, upload: StagedUpload) -> None:
    folder.mkdir(parents=True)
    try:
        if upload.layout is not None:
            # The file before the record that makes the upload exist: a listed upload has its file.
            fd = os.open(folder / ASSEMBLY_FILE, _ASSEMBLY_FLAGS | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                os.ftruncate(fd, upload.layout.size)  # sparse: the parts' bytes fill it
            finally:
                os.close(fd)
        _write_atomic(folder / UPLOAD_RECORD, json.dumps(upload.to_json(), ensure_ascii=False).encode())
    except BaseException:
        remove(folder)  # no record: nothing would ever list, abort or sweep what is left
        raise


def read_upload(folder: Path, key: str, upload_id: str) -> StagedUpload:
    """The upload's record; NoSuchUpload when it is gone or belongs to another key."""
    try:
        upload = StagedUpload.from_json(json.loads((folder / UPLOAD_RECORD).read_bytes()))
    except (FileNotFoundError, NotADirectoryError):
        raise no_such_upload(upload_id) from None
    if upload.key != key or _left_over(folder, upload):
        raise no_such_upload(upload_id)
    return upload


def _left_over(folder: Path, upload: StagedUpload) -> bool:
    """Whether `upload` is an assembled upload whose file is gone: a completion killed between
    moving the file into place and removing the upload's folder (or a file removed by hand).
    It can never complete, and its records would list parts that are not there: it is
    removed as soon as it is seen."""
    if upload.layout is None or os.path.lexists(folder / ASSEMBLY_FILE):
        return False
    remove(folder)
    return True


def stage_part(
    folder: Path,
    key: str,
    upload_id: str,
    number: int,
    body: Body,
    sent: ChecksumValue | None,
    *,
    hashed: bool = False,
) -> UploadedPart:
    """UploadPart in one call (the store runs it in one worker thread): the upload's record,
    the checks of what was sent, then the part's bytes and record. The answer is what
    emulated_uploads.part_answer gives, with each checksum computed once. `hashed`: the caller
    computed `sent` from `body` in this process (AssembledUploadStore.upload_hashed_part), so it
    is taken as it is."""
    upload = read_upload(folder, key, upload_id)
    check_part_number(number)
    if upload.layout is not None:
        return _stage_assembled(folder, upload, number, body, sent, hashed)
    sent_value = None
    if sent is not None:
        sent_value = sent.value if hashed else checksum_of(sent.algorithm, body)
        if sent_value != sent.value:
            raise bad_digest(sent.algorithm)
    use = upload.algorithm or (sent.algorithm if sent is not None else None)
    if use is None:
        checksum = None
    elif sent is not None and use is sent.algorithm:
        checksum = sent_value
    else:
        checksum = checksum_of(use, body)
    md5 = hashlib.md5(usedforsecurity=False)  # the ETag, as emulated.etag_of computes it
    md5.update(body)
    part = UploadedPart(number, len(body), md5.hexdigest(), checksum)
    write_part(folder, part, body)
    return part


def write_part(folder: Path, part: UploadedPart, body: Body) -> None:
    """The part's bytes, then its record: a part is listed only once both are in place."""
    if not (folder / UPLOAD_RECORD).is_file():
        raise no_such_upload(folder.name)
    name = _part_name(part.number)
    # The old record goes first: until the new one is written, the part is not listed at all.
    with contextlib.suppress(FileNotFoundError):
        (folder / (name + PART_RECORD_SUFFIX)).unlink()
    _write_atomic(folder / name, body)
    record = {"number": part.number, "size": part.size, "etag": part.etag, "checksum": part.checksum}
    _write_atomic(folder / (name + PART_RECORD_SUFFIX), json.dumps(record).encode())


def read_parts(folder: Path) -> dict[int, UploadedPart]:
    """Part number → its record, for each part whose bytes and record are both there."""
    parts: dict[int, UploadedPart] = {}
    try:
        names = set(os.listdir(folder))
    except FileNotFoundError:
        raise no_such_upload(folder.name) from None
    for name in names:
        if not (name.startswith(PART_PREFIX) and name.endswith(PART_RECORD_SUFFIX)):
            continue
        if name[: -len(PART_RECORD_SUFFIX)] not in names:
            continue
        with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
            data = json.loads((folder / name).read_bytes())
            part = UploadedPart(
                int(data["number"]), int(data["size"]), str(data["etag"]), data.get("checksum")
            )
            if not is_md5_etag(part.etag):
                continue  # not a record this store wrote: the part is uploaded again
            parts[part.number] = part
    return parts


def join_parts(folder: Path, parts: Sequence[UploadedPart], out: BinaryIO, full: Hasher | None) -> None:
    """Copy the parts, in order, to the end of `out`: in the kernel, or through Python feeding
    `full` when given (the bytes must be hashed). InvalidPart when a part's file does not hold
    the size its record gives (changed by hand since)."""
    out.flush()
    dst = out.fileno()
    for part in parts:
        with (folder / _part_name(part.number)).open("rb") as src:
            if os.fstat(src.fileno()).st_size != part.size:
                raise _part_changed(part)
            if full is None:
                copied = _kernel_copy(src.fileno(), dst, part.size)
            else:
                copied = _python_copy(src, out, part.size, full)
            if copied != part.size:
                raise _part_changed(part)


# -- assembled uploads ---------------------------------------------------------------------------


def _assembled(upload: StagedUpload) -> tuple[UploadLayout, ChecksumAlgorithm]:
    if upload.layout is None or upload.algorithm is None:
        raise StorageError("InternalError", "an assembled upload's record lacks its layout or algorithm")
    return upload.layout, upload.algorithm


def _stage_assembled(
    folder: Path, upload: StagedUpload, number: int, body: Body, sent: ChecksumValue | None, hashed: bool
) -> UploadedPart:
    """UploadPart of an assembled upload: the checks, then under the file's lock the bytes at
    the part's offset and then its record (see the module docstring)."""
    layout, algorithm = _assembled(upload)
    if number > layout.part_count:
        raise StorageError(
            "InvalidArgument", f"part {number} is past this upload's last part ({layout.part_count})", 400
        )
    if len(body) != layout.part_bytes(number):
        raise StorageError(
            "InvalidArgument",
            f"part {number} of this upload is {layout.part_bytes(number)} bytes; {len(body)} were sent",
            400,
        )
    if sent is None or sent.algorithm is not algorithm:
        actual = "null" if sent is None else sent.algorithm.lower()
        raise StorageError(
            "InvalidRequest",
            "Checksum Type mismatch occurred, expected checksum Type: "
            f"{algorithm.lower()}, actual checksum Type: {actual}",
            400,
        )
    checksum = sent.value if hashed else checksum_of(algorithm, body)
    if checksum != sent.value:
        raise bad_digest(algorithm)
    part = UploadedPart(number, len(body), assembled_part_etag(algorithm, checksum), checksum)
    with locked_assembly(folder) as fd:
        # The old record goes before the new bytes: a write killed halfway must not leave it
        # vouching for bytes that are now partly another part's.
        with contextlib.suppress(FileNotFoundError):
            _record_path(folder, number).unlink()
        _pwrite_all(fd, body, layout.offset(number))
        boot = boot_id()
        if boot is None:
            os.fsync(fd)  # no way to tell a restart later: the bytes are on disk before the record
        _write_record(folder, part, boot)
    return part


@contextlib.contextmanager
def locked_assembly(folder: Path) -> Iterator[int]:
    """The assembly file, open for reading and writing, under its lock (flock, exclusive);
    NoSuchUpload when it is gone, or was moved away (completed) while this waited for the lock:
    what the descriptor holds may then be the object, which must not be written."""
    path = folder / ASSEMBLY_FILE
    try:
        fd = os.open(path, _ASSEMBLY_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        raise no_such_upload(folder.name) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        held = os.fstat(fd)
        try:
            there = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            raise no_such_upload(folder.name) from None
        if (there.st_dev, there.st_ino) != (held.st_dev, held.st_ino):
            raise no_such_upload(folder.name)
        yield fd
    finally:
        os.close(fd)  # releases the lock


def _pwrite_all(fd: int, body: Body, offset: int) -> None:
    with memoryview(body) as whole:
        view = whole
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written


@functools.cache
def boot_id() -> str | None:
    """This boot's id, or None where the system does not tell it."""
    try:
        return BOOT_ID_PATH.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def _write_record(folder: Path, part: UploadedPart, boot: str | None) -> None:
    record = {
        "number": part.number, "size": part.size, "etag": part.etag, "checksum": part.checksum,
        "boot": boot,
    }  # fmt: skip
    try:
        _write_atomic(_record_path(folder, part.number), json.dumps(record).encode())
    except FileNotFoundError:
        raise no_such_upload(folder.name) from None  # aborted meanwhile


def _record_path(folder: Path, number: int) -> Path:
    return folder / (_part_name(number) + PART_RECORD_SUFFIX)


def _read_record(path: Path) -> tuple[UploadedPart, str | None] | None:
    """A part record and the boot it was written in; None when missing or unreadable."""
    with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
        data = json.loads(path.read_bytes())
        checksum, boot = data.get("checksum"), data.get("boot")
        part = UploadedPart(
            int(data["number"]), int(data["size"]), str(data["etag"]),
            checksum if isinstance(checksum, str) else None,
        )  # fmt: skip
        return part, boot if isinstance(boot, str) else None
    return None


def _fits(part: UploadedPart, layout: UploadLayout, algorithm: ChecksumAlgorithm) -> bool:
    """Whether a record is one this store wrote for this layout (else the part is uploaded again)."""
    return (
        1 <= part.number <= layout.part_count
        and part.size == layout.part_bytes(part.number)
        and part.checksum is not None
        and part.etag == assembled_part_etag(algorithm, part.checksum)
    )


def upload_parts(folder: Path, upload: StagedUpload, locked: int | None = None) -> dict[int, UploadedPart]:
    """Part number → record of each part the upload holds, either kind of upload. `locked`:
    the assembly file's descriptor when the caller holds its lock."""
    if upload.layout is None:
        return read_parts(folder)
    layout, algorithm = _assembled(upload)
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        raise no_such_upload(folder.name) from None
    parts: dict[int, UploadedPart] = {}
    unsure: list[int] = []
    for name in names:
        if not (name.startswith(PART_PREFIX) and name.endswith(PART_RECORD_SUFFIX)):
            continue
        record = _read_record(folder / name)
        if record is None or not _fits(record[0], layout, algorithm):
            continue
        if record[1] == boot_id():
            parts[record[0].number] = record[0]
        else:
            unsure.append(record[0].number)
    if unsure:
        with contextlib.ExitStack() as stack:
            fd = locked if locked is not None else stack.enter_context(locked_assembly(folder))
            parts.update(_rechecked(folder, fd, layout, algorithm, unsure))
    return parts


def _rechecked(
    folder: Path, fd: int, layout: UploadLayout, algorithm: ChecksumAlgorithm, numbers: list[int]
) -> dict[int, UploadedPart]:
    """The parts `numbers` (recorded in another boot) whose bytes in the assembly file have
    their recorded checksum, recorded again for this boot; the others' records are removed.
    The caller holds the file's lock: the records are read again under it."""
    kept: dict[int, UploadedPart] = {}
    for number in numbers:
        path = _record_path(folder, number)
        record = _read_record(path)
        if record is None or not _fits(record[0], layout, algorithm):
            continue
        part, boot = record
        if boot != boot_id():
            if not _has_checksum(fd, layout.offset(number), part, algorithm):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            _write_record(folder, part, boot_id())
        kept[number] = part
    return kept


def _has_checksum(fd: int, offset: int, part: UploadedPart, algorithm: ChecksumAlgorithm) -> bool:
    """Whether the part's bytes in the file (all there: a file cut short fails) have its
    recorded checksum."""
    hasher = new_hasher(algorithm)
    try:
        _read_back(fd, offset, part.size, hasher)
    except StorageError:
        return False
    return encode(hasher.digest()) == part.checksum


def _read_back(fd: int, offset: int, size: int, hasher: Hasher) -> None:
    """Feed `size` bytes of `fd` from `offset` to `hasher` (a hole reads as zeros)."""
    end = offset + size
    while offset < end:
        block = os.pread(fd, min(READ_BACK_BYTES, end - offset), offset)
        if not block:
            raise StorageError("InvalidPart", "the upload's file is shorter than its layout", 400)
        hasher.update(block)
        offset += len(block)


def assembled_parts(
    folder: Path, upload: StagedUpload, requested: Sequence[UploadedPart], fd: int
) -> list[UploadedPart]:
    """The parts CompleteMultipartUpload names, checked as S3 checks them, which must be every
    part of the layout (the file has no bytes to leave out); InvalidPart otherwise, or when the
    file no longer has the layout's size (changed by hand). The caller holds the file's lock."""
    layout, _ = _assembled(upload)
    chosen = chosen_parts(upload_parts(folder, upload, fd), requested)
    missing = sorted(set(range(1, layout.part_count + 1)) - {p.number for p in chosen})
    if missing:
        raise StorageError(
            "InvalidPart",
            f"One or more of the specified parts could not be found ({missing[0]}): an upload "
            "started with its layout completes with every part of it",
            400,
        )
    if os.fstat(fd).st_size != layout.size:
        raise StorageError("InvalidPart", f"the upload's file no longer holds {layout.size} bytes", 400)
    return chosen


def hash_assembly(fd: int, size: int, full: Hasher) -> None:
    """Feed the whole assembly file to `full` (a FULL_OBJECT checksum that does not combine)."""
    _read_back(fd, 0, size, full)


def copy_assembly(fd: int, out: BinaryIO, size: int) -> None:
    """Copy the assembly file into `out` in the kernel (when it cannot be moved: the object's
    folder is on another filesystem)."""
    out.flush()
    os.lseek(fd, 0, os.SEEK_SET)
    if _kernel_copy(fd, out.fileno(), size) != size:
        raise StorageError("InvalidPart", f"the upload's file no longer holds {size} bytes", 400)


def abort(folder: Path, key: str, upload_id: str) -> None:
    """AbortMultipartUpload: the upload's folder removed; an assembled upload's under its
    file's lock, so no part is being written (nor the upload completed) meanwhile."""
    upload = read_upload(folder, key, upload_id)
    if upload.layout is not None:
        try:
            with locked_assembly(folder):
                remove(folder)
                return
        except StorageError:
            read_upload(folder, key, upload_id)  # NoSuchUpload when it was completed meanwhile
    remove(folder)  # (an assembled upload whose file is gone: nothing to wait for)


def _kernel_copy(src: int, dst: int, size: int) -> int:
    """Copy `size` bytes from `src`'s offset to `dst`'s, both offsets moved on: copy_file_range,
    else sendfile, else read/write, each taking over where the one before stopped. Returns the
    bytes copied (fewer only when `src` ends first)."""
    done = 0
    for copy in _KERNEL_COPIES:
        try:
            while done < size:
                step = copy(src, dst, size - done)
                if step == 0:
                    break  # the end of `src`, or a call that copies nothing here: try the next
                done += step
        except OSError as exc:
            if exc.errno not in KERNEL_COPY_REFUSED:
                raise
        if done == size:
            return done
    # Plain reads and writes last: their errors are real ones (a full disk), never a refusal.
    while done < size and (step := _read_write(src, dst, size - done)):
        done += step
    return done


def _copy_file_range(src: int, dst: int, count: int) -> int:
    copy = getattr(os, "copy_file_range", None)
    if copy is None:  # not Linux
        raise OSError(errno.ENOSYS, "copy_file_range is not available")
    return int(copy(src, dst, count))


def _sendfile(src: int, dst: int, count: int) -> int:
    # Linux copies between two files (since 2.6.33); elsewhere `dst` must be a socket (ENOTSOCK).
    return os.sendfile(dst, src, None, count)


#: The kernel's copies, tried in turn; sendfile copies between two files on Linux only
#: (elsewhere `dst` must be a socket, and its offset cannot be None).
_KERNEL_COPIES = (_copy_file_range, _sendfile) if sys.platform.startswith("linux") else (_copy_file_range,)


def _read_write(src: int, dst: int, count: int) -> int:
    block = os.read(src, min(count, JOIN_CHUNK_BYTES))
    view = memoryview(block)
    while view:
        view = view[os.write(dst, view) :]
    return len(block)


def _python_copy(src: BinaryIO, out: BinaryIO, size: int, full: Hasher) -> int:
    done = 0
    while done < size and (block := src.read(min(size - done, JOIN_CHUNK_BYTES))):
        full.update(block)
        out.write(block)
        done += len(block)
    return done


def _part_changed(part: UploadedPart) -> StorageError:
    return StorageError(
        "InvalidPart", f"part {part.number} no longer holds the {part.size} bytes it was uploaded with", 400
    )


def list_uploads(root: Path, bucket: str) -> list[tuple[str, StagedUpload]]:
    """(upload id, record) of each upload of `bucket`, by key then start time."""
    base = root / UPLOADS_DIR_NAME / bucket
    found: list[tuple[str, StagedUpload]] = []
    try:
        entries = sorted(os.listdir(base))
    except FileNotFoundError:
        return []
    for upload_id in entries:
        if UPLOAD_ID.fullmatch(upload_id) is None:
            continue
        with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
            upload = StagedUpload.from_json(json.loads((base / upload_id / UPLOAD_RECORD).read_bytes()))
            if not _left_over(base / upload_id, upload):
                found.append((upload_id, upload))
    return sorted(found, key=lambda item: (item[1].key, item[1].initiated))


def write_body(out: BinaryIO, body: Body) -> str:
    """Write a whole object's bytes; their MD5 (the folder store's ETag)."""
    digest = hashlib.md5(usedforsecurity=False)
    digest.update(body)
    out.write(body)
    return digest.hexdigest()


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def _part_name(number: int) -> str:
    return f"{PART_PREFIX}{number:0{PART_DIGITS}d}"


def _write_atomic(path: Path, data: Body) -> None:
    temp = path.with_name(f"{TEMP_PREFIX}{uuid.uuid4().hex}")
    try:
        with temp.open("xb") as f:
            f.write(data)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
