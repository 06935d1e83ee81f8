"""The folder store's assembled uploads (capabilities.AssembledUploadStore): parts written
straight into one file at their offsets and the file moved into place at completion; no part
files, no MD5 of the bytes. Parts in any order and at once, resume listing, replaced parts,
S3's refusals, abort, a missing part, the completed object's ETag form, checksum and sidecar,
a writer that waited while the upload was completed, parts recorded before a restart checked
again, another filesystem; and S3batchTransfer into a folder: verified, resumed, and resumed
after kill -9 from an S3 source (`rclone serve s3`).

The rules are in storage/local_uploads.py and docs/compatibility.md ("ETags, checksums and
sidecars").
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.integration.test_local_store_destination import CASES, expected_checksum
from tests.integration.test_transfer import s3, uploads

import s3batch.storage.local as local_module
import s3batch.storage.local_uploads as staging
from s3batch.domain.checksums import ChecksumAlgorithm, ChecksumType
from s3batch.domain.task import Task
from s3batch.domain.uploads import ChecksumValue, ObjectAttributes, UploadedPart
from s3batch.errors import StorageError
from s3batch.operations._transfer_copy import Copier
from s3batch.operations.transfer import TransferPlan
from s3batch.storage.base import UploadLayout
from s3batch.storage.capabilities import assembled_upload_store
from s3batch.storage.config import S3Config
from s3batch.storage.emulated_uploads import checksum_of
from s3batch.storage.local import LocalStore
from s3batch.storage.memory import MemoryStore
from s3batch.storage.retrying import RetryingStore
from s3batch.storage.s3 import S3Store

pytestmark = pytest.mark.integration

BUCKET = "bkt"
KEY = "d/obj"
MIB = 1024**2
#: The layout of the uploads below: three whole parts and a short last one.
PART = 100_000
SIZE = 3 * PART + 1234
CRC32C = ChecksumAlgorithm.CRC32C
#: Bound on waiting for a thread or a process to reach a point, and the poll interval, in seconds.
WAIT_S = 30.0
POLL_S = 0.02
#: The transfer's part size (S3's smallest) and the object of the transfer tests: four parts.
TRANSFER_PART = 5 * MIB
TRANSFER_SIZE = 3 * TRANSFER_PART + 12_345
#: Parts the killed transfer completes before it is killed (the next one's bytes are written).
KEPT_PARTS = 2


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / BUCKET).mkdir()
    return tmp_path


def split(data: bytes, part: int = PART) -> list[bytes]:
    return [data[i : i + part] for i in range(0, len(data), part)]


def sent(body: bytes, algorithm: ChecksumAlgorithm = CRC32C) -> ChecksumValue:
    return ChecksumValue(algorithm, checksum_of(algorithm, body))


def part_etag(algorithm: ChecksumAlgorithm, body: bytes) -> str:
    """The documented part ETag: the MD5 of `<algorithm>:<base64 checksum>`."""
    return hashlib.md5(f"{algorithm}:{checksum_of(algorithm, body)}".encode()).hexdigest()


def object_etag(etags: list[str]) -> str:
    """S3's multipart ETag form over the parts' ETags: MD5 of their binary forms, `-<parts>`."""
    return hashlib.md5(b"".join(bytes.fromhex(e) for e in etags)).hexdigest() + f"-{len(etags)}"


async def start(
    store: LocalStore,
    key: str = KEY,
    size: int = SIZE,
    algorithm: ChecksumAlgorithm = CRC32C,
    checksum_type: ChecksumType = ChecksumType.COMPOSITE,
    attributes: ObjectAttributes | None = None,
) -> str:
    return await store.create_assembled_upload(
        BUCKET, key, size=size, part_size=PART, attributes=attributes or ObjectAttributes(),
        algorithm=algorithm, checksum_type=checksum_type,
    )  # fmt: skip


async def upload_all(
    store: LocalStore, upload_id: str, bodies: list[bytes], key: str = KEY
) -> list[UploadedPart]:
    return [
        await store.upload_part(BUCKET, key, upload_id, n, body, checksum=sent(body))
        for n, body in enumerate(bodies, 1)
    ]


async def code_of(call: Any) -> tuple[str, int | None]:
    with pytest.raises(StorageError) as caught:
        await call
    return caught.value.code, caught.value.http_status


@pytest.fixture
def md5_inputs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The size of everything hashed with MD5 from now on, anywhere in this process."""
    sizes: list[int] = []
    real = hashlib.md5

    def md5(data: Any = b"", **kwargs: Any) -> Any:
        sizes.append(len(data))
        return real(data, **kwargs)

    monkeypatch.setattr(hashlib, "md5", md5)
    yield sizes


# -- the store ----------------------------------------------------------------------------------


def test_the_folder_store_assembles_and_no_other_does(root: Path) -> None:
    folder = LocalStore(root)
    assert assembled_upload_store(folder) is folder
    wrapped = RetryingStore(folder)  # a wrapper's calls are retried too
    assert assembled_upload_store(wrapped) is wrapped
    for other in (MemoryStore(), S3Store(S3Config(endpoint_url="http://127.0.0.1:9"))):
        assert assembled_upload_store(other) is None


@pytest.mark.parametrize(("algorithm", "checksum_type"), CASES, ids=lambda v: str(v))
async def test_parts_in_any_order_and_at_once_complete_into_the_object(
    root: Path, algorithm: ChecksumAlgorithm, checksum_type: ChecksumType, md5_inputs: list[int]
) -> None:
    store = LocalStore(root)
    data = os.urandom(SIZE)
    bodies = split(data)
    attributes = ObjectAttributes(content_type="text/csv", metadata={"m": "1"}, tags={"t": "v"})
    upload_id = await start(store, algorithm=algorithm, checksum_type=checksum_type, attributes=attributes)
    assert await store.upload_layout(BUCKET, KEY, upload_id) == UploadLayout(SIZE, PART)
    folder = staging.upload_folder(root, BUCKET, upload_id)

    def part(n: int) -> Any:
        body = bodies[n - 1]
        return store.upload_part(BUCKET, KEY, upload_id, n, body, checksum=sent(body, algorithm))

    last = await part(4)  # the last first, then the others at once
    answers = {4: last, **dict(zip((3, 1, 2), await asyncio.gather(part(3), part(1), part(2)), strict=True))}
    for n, answer in answers.items():
        body = bodies[n - 1]
        assert answer == UploadedPart(n, len(body), part_etag(algorithm, body), checksum_of(algorithm, body))
    # A later process lists what the upload holds; no part was written to a file of its own.
    assert await LocalStore(root).list_parts(BUCKET, KEY, upload_id) == [answers[n] for n in (1, 2, 3, 4)]
    assert sorted(os.listdir(folder)) == [
        "assembly", "part-00001.json", "part-00002.json", "part-00003.json", "part-00004.json", "upload.json",
    ]  # fmt: skip
    written = await store.complete_multipart_upload(
        BUCKET, KEY, upload_id, [answers[n] for n in (1, 2, 3, 4)], checksum=None
    )
    etag = object_etag([answers[n].etag for n in (1, 2, 3, 4)])
    assert re.fullmatch(r"[0-9a-f]{32}-4", written.etag) and written.etag == etag
    checksum = ChecksumValue(algorithm, expected_checksum(algorithm, checksum_type, bodies), checksum_type)
    assert written.checksum == checksum
    assert (root / BUCKET / KEY).read_bytes() == data
    # HEAD (with checksum mode), a listing and the part layout answer from the sidecar.
    head = await store.head_with_checksum(BUCKET, KEY)
    assert (head.etag, head.size, head.checksum, head.tag_count) == (etag, SIZE, checksum, 1)
    assert (head.info.content_type, dict(head.info.metadata)) == ("text/csv", {"m": "1"})
    assert [(o.key, o.etag) async for o in store.list_objects(BUCKET)] == [(KEY, etag)]
    assert await store.object_parts(BUCKET, KEY) == [PART, PART, PART, 1234]
    assert (await LocalStore(root).head_with_checksum(BUCKET, KEY)).checksum == checksum
    # Nothing left of the upload, and no MD5 of the bytes anywhere: only of the ETags' few bytes.
    assert not folder.exists()
    assert [u async for u in store.list_multipart_uploads(BUCKET)] == []
    assert md5_inputs and max(md5_inputs) <= 64


async def test_a_part_sent_again_replaces_the_one_held(root: Path) -> None:
    store = LocalStore(root)
    bodies = split(os.urandom(SIZE))
    upload_id = await start(store)
    first = await store.upload_part(BUCKET, KEY, upload_id, 2, bodies[1], checksum=sent(bodies[1]))
    assert await LocalStore(root).list_parts(BUCKET, KEY, upload_id) == [first]  # resumable
    newer = os.urandom(PART)
    replaced = await store.upload_part(BUCKET, KEY, upload_id, 2, newer, checksum=sent(newer))
    assert replaced.etag != first.etag
    assert await store.list_parts(BUCKET, KEY, upload_id) == [replaced]
    parts = await upload_all(store, upload_id, bodies)
    parts[1] = await store.upload_part(BUCKET, KEY, upload_id, 2, newer, checksum=sent(newer))
    stale = [parts[0], first, *parts[2:]]
    assert await code_of(store.complete_multipart_upload(BUCKET, KEY, upload_id, stale, checksum=None)) == (
        "InvalidPart",
        400,
    )
    await store.complete_multipart_upload(BUCKET, KEY, upload_id, parts, checksum=None)
    assert await store.get_bytes(BUCKET, KEY) == bodies[0] + newer + b"".join(bodies[2:])


async def test_what_s3_refuses_is_refused_and_writes_nothing(root: Path) -> None:
    store = LocalStore(root)
    upload_id = await start(store)
    body, short = os.urandom(PART), os.urandom(1234)

    def put(number: int, data: bytes, checksum: ChecksumValue | None) -> Any:
        return store.upload_part(BUCKET, KEY, upload_id, number, data, checksum=checksum)

    refused = {
        "another size": put(1, body[:-1], sent(body[:-1])),
        "a whole part as the last": put(4, body, sent(body)),
        "past the last part": put(5, short, sent(short)),
        "part 0": put(0, body, sent(body)),
        "no checksum": put(1, body, None),
        "another algorithm": put(1, body, sent(body, ChecksumAlgorithm.CRC32)),
        "a wrong checksum": put(1, body, sent(short)),
    }
    codes = {why: await code_of(call) for why, call in refused.items()}
    assert codes == {
        "another size": ("InvalidArgument", 400),
        "a whole part as the last": ("InvalidArgument", 400),
        "past the last part": ("InvalidArgument", 400),
        "part 0": ("InvalidArgument", 400),
        "no checksum": ("InvalidRequest", 400),
        "another algorithm": ("InvalidRequest", 400),
        "a wrong checksum": ("BadDigest", 400),
    }
    assert await store.list_parts(BUCKET, KEY, upload_id) == []
    assert (staging.upload_folder(root, BUCKET, upload_id) / "assembly").read_bytes() == bytes(SIZE)
    for size, part_size in ((0, PART), (SIZE, 0), (10_001, 1)):
        bad = store.create_assembled_upload(
            BUCKET, KEY, size=size, part_size=part_size, attributes=ObjectAttributes(), algorithm=CRC32C,
            checksum_type=ChecksumType.COMPOSITE,
        )  # fmt: skip
        assert await code_of(bad) == ("InvalidArgument", 400)


async def test_a_completion_without_every_part_fails_and_keeps_the_upload(root: Path) -> None:
    store = LocalStore(root)
    await store.put_bytes(BUCKET, KEY, b"earlier")
    bodies = split(os.urandom(SIZE))
    upload_id = await start(store)
    parts = await upload_all(store, upload_id, bodies[:3])
    for named in (parts, [parts[0], parts[2]]):
        call = store.complete_multipart_upload(BUCKET, KEY, upload_id, named, checksum=None)
        assert await code_of(call) == ("InvalidPart", 400)
    assert await store.get_bytes(BUCKET, KEY) == b"earlier"
    assert await store.list_parts(BUCKET, KEY, upload_id) == parts
    parts.append(await store.upload_part(BUCKET, KEY, upload_id, 4, bodies[3], checksum=sent(bodies[3])))
    await store.complete_multipart_upload(BUCKET, KEY, upload_id, parts, checksum=None)
    assert await store.get_bytes(BUCKET, KEY) == b"".join(bodies)


async def test_abort_removes_the_upload_and_its_file(root: Path) -> None:
    store = LocalStore(root)
    bodies = split(os.urandom(SIZE))
    upload_id = await start(store)
    parts = await upload_all(store, upload_id, bodies)
    await store.abort_multipart_upload(BUCKET, KEY, upload_id)
    assert not staging.upload_folder(root, BUCKET, upload_id).exists()
    for call in (
        store.upload_part(BUCKET, KEY, upload_id, 1, bodies[0], checksum=sent(bodies[0])),
        store.list_parts(BUCKET, KEY, upload_id),
        store.upload_layout(BUCKET, KEY, upload_id),
        store.complete_multipart_upload(BUCKET, KEY, upload_id, parts, checksum=None),
        store.abort_multipart_upload(BUCKET, KEY, upload_id),
    ):
        assert await code_of(call) == ("NoSuchUpload", 404)
    assert [o async for o in store.list_objects(BUCKET)] == []


async def test_what_a_completion_killed_after_its_rename_leaves_is_no_upload(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between moving the file into place and removing the upload's folder: the records
    left would list parts whose bytes are now the object's, so the upload is gone."""
    store = LocalStore(root)
    data = os.urandom(SIZE)
    upload_id = await start(store)
    parts = await upload_all(store, upload_id, split(data))
    folder = staging.upload_folder(root, BUCKET, upload_id)
    monkeypatch.setattr(staging, "remove", lambda folder: None)  # as if killed right before it
    await store.complete_multipart_upload(BUCKET, KEY, upload_id, parts, checksum=None)
    monkeypatch.undo()
    assert (folder / "upload.json").exists() and (folder / "part-00001.json").exists()
    assert await code_of(store.list_parts(BUCKET, KEY, upload_id)) == ("NoSuchUpload", 404)
    assert not folder.exists()
    assert [u async for u in store.list_multipart_uploads(BUCKET)] == []
    assert (root / BUCKET / KEY).read_bytes() == data


async def test_a_completed_object_changed_by_hand_keeps_no_checksum(root: Path) -> None:
    store = LocalStore(root)
    upload_id = await start(store)
    parts = await upload_all(store, upload_id, split(os.urandom(SIZE)))
    await store.complete_multipart_upload(BUCKET, KEY, upload_id, parts, checksum=None)
    path = root / BUCKET / KEY
    changed = os.urandom(SIZE)
    before = path.stat().st_mtime_ns
    path.write_bytes(changed)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))
    head = await store.head_with_checksum(BUCKET, KEY)
    assert (head.etag, head.checksum) == (hashlib.md5(changed).hexdigest(), None)
    assert await store.object_parts(BUCKET, KEY) is None


async def test_a_writer_that_waited_while_the_upload_was_completed_writes_nothing(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part write holds the assembly file's lock; one that waits for it while the upload is
    completed (its file moved away: here by hand, under the lock, as the completion does) must
    not write into what is now the object."""
    store = LocalStore(root)
    upload_id = await start(store)
    folder = staging.upload_folder(root, BUCKET, upload_id)
    waiting = threading.Event()

    def noting_flock(fd: int, operation: int) -> None:
        waiting.set()
        fcntl.flock(fd, operation)

    body = os.urandom(PART)
    moved = root / BUCKET / "moved"
    with staging.locked_assembly(folder):
        monkeypatch.setattr(staging, "fcntl", SimpleNamespace(flock=noting_flock, LOCK_EX=fcntl.LOCK_EX))
        writing = asyncio.create_task(store.upload_part(BUCKET, KEY, upload_id, 1, body, checksum=sent(body)))
        assert await asyncio.to_thread(waiting.wait, WAIT_S)
        os.rename(folder / staging.ASSEMBLY_FILE, moved)
    assert await code_of(writing) == ("NoSuchUpload", 404)
    assert moved.read_bytes() == bytes(SIZE)


async def test_parts_recorded_before_a_restart_are_checked_against_their_bytes(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bytes written through the page cache may be lost with the machine while their record
    survives: a record of another boot is trusted only once its bytes are read back."""
    store = LocalStore(root)
    bodies = split(os.urandom(SIZE))
    upload_id = await start(store)
    parts = await upload_all(store, upload_id, bodies)
    folder = staging.upload_folder(root, BUCKET, upload_id)
    with (folder / staging.ASSEMBLY_FILE).open("r+b") as f:  # part 2's bytes lost
        f.seek(PART)
        f.write(bytes(PART))
    monkeypatch.setattr(staging, "boot_id", lambda: "the next boot")
    assert await store.list_parts(BUCKET, KEY, upload_id) == [parts[0], parts[2], parts[3]]
    assert not (folder / "part-00002.json").exists()
    assert json.loads((folder / "part-00001.json").read_text())["boot"] == "the next boot"
    call = store.complete_multipart_upload(BUCKET, KEY, upload_id, parts, checksum=None)
    assert await code_of(call) == ("InvalidPart", 400)
    parts[1] = await store.upload_part(BUCKET, KEY, upload_id, 2, bodies[1], checksum=sent(bodies[1]))
    await store.complete_multipart_upload(BUCKET, KEY, upload_id, parts, checksum=None)
    assert await store.get_bytes(BUCKET, KEY) == b"".join(bodies)


async def test_a_file_cut_short_before_a_restart_drops_the_parts_it_lost(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part whose bytes the file no longer reaches fails its check like any other (it does
    not fail the listing, which would fail every resume of the key)."""
    store = LocalStore(root)
    bodies = split(os.urandom(SIZE))
    upload_id = await start(store)
    parts = await upload_all(store, upload_id, bodies)
    folder = staging.upload_folder(root, BUCKET, upload_id)
    os.truncate(folder / staging.ASSEMBLY_FILE, PART + 10)
    monkeypatch.setattr(staging, "boot_id", lambda: "the next boot")
    assert await store.list_parts(BUCKET, KEY, upload_id) == [parts[0]]
    for number, body in list(enumerate(bodies, 1))[1:]:
        parts[number - 1] = await store.upload_part(BUCKET, KEY, upload_id, number, body, checksum=sent(body))
    await store.complete_multipart_upload(BUCKET, KEY, upload_id, parts, checksum=None)
    assert await store.get_bytes(BUCKET, KEY) == b"".join(bodies)


async def test_a_part_sent_again_is_unlisted_while_its_bytes_change(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed halfway through writing a part's new bytes, an upload must not list the old
    record over them."""
    store = LocalStore(root)
    bodies = split(os.urandom(SIZE))
    upload_id = await start(store)
    parts = await upload_all(store, upload_id, bodies)

    class Killed(Exception):
        pass

    def half_then_killed(fd: int, body: Any, offset: int) -> None:
        os.pwrite(fd, bytes(body)[: len(body) // 2], offset)
        raise Killed

    monkeypatch.setattr(staging, "_pwrite_all", half_then_killed)
    other = os.urandom(PART)
    with pytest.raises(Killed):
        await store.upload_part(BUCKET, KEY, upload_id, 2, other, checksum=sent(other))
    assert await store.list_parts(BUCKET, KEY, upload_id) == [parts[0], parts[2], parts[3]]


async def test_a_failed_create_leaves_no_upload_folder(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def too_large(fd: int, size: int) -> None:
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(staging.os, "ftruncate", too_large)
    store = LocalStore(root)
    with pytest.raises(StorageError):
        await start(store)
    assert not any((root / staging.UPLOADS_DIR_NAME / BUCKET).iterdir())


async def test_without_a_boot_id_each_part_is_synced_before_its_record(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(staging, "boot_id", lambda: None)
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    store = LocalStore(root)
    bodies = split(os.urandom(SIZE))
    upload_id = await start(store)
    parts = await upload_all(store, upload_id, bodies)
    assert len(synced) == len(bodies)
    assert await store.list_parts(BUCKET, KEY, upload_id) == parts


async def test_an_object_folder_on_another_filesystem_gets_a_copy(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_replace = os.replace

    def no_cross_folder_rename(src: Any, dst: Any, *, src_dir_fd: Any = None, dst_dir_fd: Any = None) -> None:
        if src_dir_fd != dst_dir_fd:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    store = LocalStore(root)
    data = os.urandom(SIZE)
    upload_id = await start(store)
    parts = await upload_all(store, upload_id, split(data))
    monkeypatch.setattr(local_module.os, "replace", no_cross_folder_rename)
    written = await store.complete_multipart_upload(BUCKET, KEY, upload_id, parts, checksum=None)
    assert (root / BUCKET / KEY).read_bytes() == data
    head = await store.head_with_checksum(BUCKET, KEY)
    assert (head.etag, head.checksum) == (written.etag, written.checksum)
    assert not staging.upload_folder(root, BUCKET, upload_id).exists()
    assert [p.name for p in (root / BUCKET / "d").iterdir()] == ["obj"]  # no temp file left


# -- a transfer into a folder -------------------------------------------------------------------


def plan(**params: Any) -> TransferPlan:
    return TransferPlan.from_params(
        {"TargetResource": f"arn:aws:s3:::{BUCKET}", "PartSizeBytes": TRANSFER_PART, **params}
    )


def transfer_task(key: str) -> Task:
    return Task(seq=0, bucket="src", raw_key=key, key=key)


class CountingFolder(LocalStore):
    """The folder store, noting the part numbers it is sent."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.sent: list[int] = []

    async def upload_part(
        self, bucket: str, key: str, upload_id: str, number: int, body: Any, **kw: Any
    ) -> Any:
        self.sent.append(number)
        return await super().upload_part(bucket, key, upload_id, number, body, **kw)

    async def upload_hashed_part(
        self, bucket: str, key: str, upload_id: str, number: int, body: Any, **kw: Any
    ) -> Any:
        self.sent.append(number)
        return await super().upload_hashed_part(bucket, key, upload_id, number, body, **kw)


async def test_a_transfer_into_a_folder_writes_in_place_hashes_no_md5_and_resumes(
    root: Path, md5_inputs: list[int]
) -> None:
    source = MemoryStore()
    await source.create_bucket("src")
    data = os.urandom(TRANSFER_SIZE)
    await source.put_bytes("src", "big", data)
    target = CountingFolder(root)
    assert assembled_upload_store(target) is target
    md5_inputs.clear()  # (the memory source's own ETag)
    result = await Copier(plan(), source, target).apply(transfer_task("big"))
    assert result.succeeded, result
    assert "Parts=4 (0 reused)" in result.message
    assert (root / BUCKET / "big").read_bytes() == data
    assert max(md5_inputs) <= 64  # neither the transfer nor the store hashed the bytes with MD5
    checksum = result.message.split("Checksum=")[1].split(";")[0]
    head = await target.head_with_checksum(BUCKET, "big")
    assert head.checksum == ChecksumValue(CRC32C, checksum, ChecksumType.COMPOSITE)
    # An upload of the same layout holding a right part and a wrong one is resumed: the right
    # one kept, the wrong one sent again. One of another layout (an object a byte longer) is
    # not adopted, though it holds more parts of the sizes this object's layout gives them:
    # its file has room for no other last part.
    layout = dict(size=TRANSFER_SIZE, part_size=TRANSFER_PART, attributes=ObjectAttributes())
    other = await target.create_assembled_upload(
        BUCKET, "again", **{**layout, "size": TRANSFER_SIZE + 1}, algorithm=CRC32C,
        checksum_type=ChecksumType.COMPOSITE,
    )  # fmt: skip
    for number, body in enumerate(split(data, TRANSFER_PART)[:3], 1):
        await target.upload_part(BUCKET, "again", other, number, body, checksum=sent(body))
    resumed = await target.create_assembled_upload(
        BUCKET, "again", **layout, algorithm=CRC32C, checksum_type=ChecksumType.COMPOSITE
    )
    right, wrong = data[:TRANSFER_PART], os.urandom(TRANSFER_PART)
    await target.upload_part(BUCKET, "again", resumed, 1, right, checksum=sent(right))
    await target.upload_part(BUCKET, "again", resumed, 2, wrong, checksum=sent(wrong))
    await source.put_bytes("src", "again", data)
    target.sent.clear()
    result = await Copier(plan(), source, target).apply(transfer_task("again"))
    assert result.succeeded, result
    assert "Parts=4 (1 reused)" in result.message
    assert sorted(target.sent) == [2, 3, 4]
    assert (root / BUCKET / "again").read_bytes() == data
    assert [u.upload_id async for u in target.list_multipart_uploads(BUCKET)] == [other]


async def test_a_transfer_into_a_folder_hashes_each_part_once(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The transfer's CRC of a part, computed from the very buffer it hands the folder, is the
    part's checksum there: the store does not hash the bytes a second time. A part anyone else
    sends is still checked against the checksum it comes with."""
    source = MemoryStore()
    await source.create_bucket("src")
    data = os.urandom(TRANSFER_SIZE)
    await source.put_bytes("src", "big", data)
    target = LocalStore(root)
    hashed: list[int] = []
    real = staging.checksum_of
    monkeypatch.setattr(staging, "checksum_of", lambda a, body: hashed.append(len(body)) or real(a, body))
    result = await Copier(plan(), source, target).apply(transfer_task("big"))
    assert result.succeeded, result
    assert hashed == []
    assert (root / BUCKET / "big").read_bytes() == data
    head = await target.head_with_checksum(BUCKET, "big")
    assert head.checksum is not None
    assert head.checksum.value == result.message.split("Checksum=")[1].split(";")[0]
    layout = dict(size=TRANSFER_SIZE, part_size=TRANSFER_PART, attributes=ObjectAttributes())
    upload = await target.create_assembled_upload(
        BUCKET, "other", **layout, algorithm=CRC32C, checksum_type=ChecksumType.COMPOSITE
    )
    body = data[:TRANSFER_PART]
    with pytest.raises(StorageError) as caught:
        await target.upload_part(BUCKET, "other", upload, 1, body, checksum=sent(body[::-1]))
    assert caught.value.code == "BadDigest"
    assert hashed == [TRANSFER_PART]


#: Transfers one object from S3 into a folder: parts up to KEPT_PARTS go in whole; the next
#: one's bytes are written but its record never is (the process is killed there).
_KILLED_TRANSFER = """
import asyncio, sys, time
from pathlib import Path
from s3batch.domain.task import Task
from s3batch.operations._transfer_copy import Copier
from s3batch.operations.transfer import TransferPlan
from s3batch.storage import local_uploads as staging
from s3batch.storage.config import S3Config
from s3batch.storage.local import LocalStore
from s3batch.storage.s3 import S3Store

endpoint, root, marker = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
kept, part = int(sys.argv[4]), int(sys.argv[5])
real_stage, real_record = staging.stage_part, staging._write_record

def in_order(folder, key, upload_id, number, body, sent, **kw):
    deadline = time.monotonic() + 30  # the kept parts first: the stalled one holds the file's lock
    while number > kept and time.monotonic() < deadline and not all(
        (folder / f"part-{n:05d}.json").exists() for n in range(1, kept + 1)
    ):
        time.sleep(0.01)
    return real_stage(folder, key, upload_id, number, body, sent, **kw)

def stalled(folder, part, boot):
    if part.number > kept:
        marker.touch()  # its bytes are in the file; its record never comes
        time.sleep(600)
        raise SystemExit("not killed")
    real_record(folder, part, boot)

staging.stage_part, staging._write_record = in_order, stalled
plan = TransferPlan.from_params({"TargetResource": "arn:aws:s3:::bkt", "PartSizeBytes": part})
source = S3Store(S3Config(endpoint_url=endpoint, addressing_style="path"))
task = Task(seq=0, bucket="tx-fold", raw_key="big.bin", key="big.bin")
print(asyncio.run(Copier(plan, source, LocalStore(root)).apply(task)))
"""


def test_kill_9_mid_part_from_s3_into_a_folder_resumes_keeping_whole_parts(
    root: Path, rclone_server: str
) -> None:
    client = s3(rclone_server)
    client.create_bucket(Bucket="tx-fold")
    data = os.urandom(TRANSFER_SIZE)
    client.put_object(Bucket="tx-fold", Key="big.bin", Body=data)
    marker = root / "stalled"
    argv = [sys.executable, "-c", _KILLED_TRANSFER, rclone_server, str(root), str(marker)]
    proc = subprocess.Popen([*argv, str(KEPT_PARTS), str(TRANSFER_PART)])
    try:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and proc.poll() is None and not marker.exists():
            time.sleep(POLL_S)
        assert proc.poll() is None and marker.exists(), "the transfer ended before it could be killed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WAIT_S)
    target = CountingFolder(root)
    (upload,) = asyncio.run(_uploads(target))
    listed = asyncio.run(target.list_parts(BUCKET, "big.bin", upload))
    assert [p.number for p in listed] == list(range(1, KEPT_PARTS + 1))
    source = S3Store(S3Config(endpoint_url=rclone_server, addressing_style="path"))

    async def resume() -> Any:
        try:
            return await Copier(plan(), source, target).apply(
                Task(seq=0, bucket="tx-fold", raw_key="big.bin", key="big.bin")
            )
        finally:
            await source.close()

    result = asyncio.run(resume())
    assert result.succeeded, result
    assert f"Parts=4 ({KEPT_PARTS} reused)" in result.message
    assert sorted(target.sent) == list(range(KEPT_PARTS + 1, 5))  # the part cut short sent again
    assert (root / BUCKET / "big.bin").read_bytes() == data
    assert asyncio.run(_uploads(target)) == [] and uploads(client, "tx-fold") == []


async def _uploads(store: LocalStore) -> list[str]:
    return [u.upload_id async for u in store.list_multipart_uploads(BUCKET)]


class FailingPart(LocalStore):
    """The folder store, failing one part number's upload."""

    def __init__(self, root: Path, fail: int) -> None:
        super().__init__(root)
        self.fail = fail

    async def upload_hashed_part(
        self, bucket: str, key: str, upload_id: str, number: int, body: Any, **kw: Any
    ) -> Any:
        if number == self.fail:
            raise StorageError("InternalError", "refused for the test", 500)
        return await super().upload_hashed_part(bucket, key, upload_id, number, body, **kw)


def watch_buffers(copier: Copier) -> tuple[list[bytearray], list[bytearray]]:
    """The part buffers the copier takes and gives back, in order."""
    taken: list[bytearray] = []
    given: list[bytearray] = []
    take, give = copier.buffers.take, copier.buffers.give
    copier.buffers.take = lambda size: taken.append(take(size)) or taken[-1]  # type: ignore[method-assign]
    copier.buffers.give = lambda buffer: given.append(buffer) or give(buffer)  # type: ignore[method-assign]
    return taken, given


async def test_ranged_parts_reuse_their_buffers_only_after_a_clean_part(tmp_path: Path) -> None:
    """From a folder (ranged reads), each part's buffer serves a later part once that part is
    written; a part that failed keeps its buffer out of the pool (a thread may still use it)."""
    source = LocalStore(tmp_path / "source")
    await source.create_bucket("src")
    data = os.urandom(TRANSFER_SIZE)
    for key in ("one", "two"):
        await source.put_bytes("src", key, data)
    (tmp_path / "target" / BUCKET).mkdir(parents=True)
    copier = Copier(plan(), source, LocalStore(tmp_path / "target"))
    assert copier.ranged is not None
    taken, given = watch_buffers(copier)
    assert (await copier.apply(transfer_task("one"))).succeeded
    assert len(taken) == len(given) == 4
    first = {id(buffer) for buffer in given}
    assert (await copier.apply(transfer_task("two"))).succeeded
    assert {id(buffer) for buffer in taken[4:]} <= first  # no new buffer: the pool's
    assert (tmp_path / "target" / BUCKET / "two").read_bytes() == data

    failing = Copier(plan(), source, FailingPart(tmp_path / "target", fail=2))
    taken, given = watch_buffers(failing)
    assert not (await failing.apply(transfer_task("one"))).succeeded
    second = data[TRANSFER_PART : 2 * TRANSFER_PART]
    part_two = [buffer for buffer in taken if buffer == second]
    assert len(part_two) == 1  # read whole, then refused
    assert all(buffer is not part_two[0] for buffer in given)
