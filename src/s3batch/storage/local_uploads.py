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
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from s3batch.domain.checksums import Hasher
from s3batch.domain.uploads import Body, ChecksumValue, UploadedPart, is_md5_etag
from s3batch.errors import StorageError
from s3batch.storage.emulated_uploads import (
    UPLOAD_ID,
    StagedUpload,
    bad_digest,
    check_part_number,
    checksum_of,
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


def upload_folder(root: Path, bucket: str, upload_id: str) -> Path:
    """Where an upload lives; NoSuchUpload for an id this store never hands out."""
    if UPLOAD_ID.fullmatch(upload_id) is None:
        raise no_such_upload(upload_id)
    return root / UPLOADS_DIR_NAME / bucket / upload_id


def create(folder: Path, upload: StagedUpload) -> None:
    folder.mkdir(parents=True)
    _write_atomic(folder / UPLOAD_RECORD, json.dumps(upload.to_json(), ensure_ascii=False).encode())


def read_upload(folder: Path, key: str, upload_id: str) -> StagedUpload:
    """The upload's record; NoSuchUpload when it is gone or belongs to another key."""
    try:
        upload = StagedUpload.from_json(json.loads((folder / UPLOAD_RECORD).read_bytes()))
    except (FileNotFoundError, NotADirectoryError):
        raise no_such_upload(upload_id) from None
    if upload.key != key:
        raise no_such_upload(upload_id)
    return upload


def stage_part(
    folder: Path, key: str, upload_id: str, number: int, body: Body, sent: ChecksumValue | None
) -> UploadedPart:
    """UploadPart in one call (the store runs it in one worker thread): the upload's record,
    the checks of what was sent, then the part's bytes and record. The answer is what
    emulated_uploads.part_answer gives, with each checksum computed once."""
    upload = read_upload(folder, key, upload_id)
    check_part_number(number)
    sent_value = None
    if sent is not None:
        sent_value = checksum_of(sent.algorithm, body)
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
            record = json.loads((base / upload_id / UPLOAD_RECORD).read_bytes())
            found.append((upload_id, StagedUpload.from_json(record)))
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
