"""The folder store as a write destination: a completed multipart upload has S3's multipart ETag
and checksums (derived from the parts, the parts joined in the kernel), a file changed by hand
stops trusting them, completion keeps its resume, abort and kill -9 rules, and a small write
with default attributes records no attributes (and leaves no stale record), wherever the store
records them: the object's own xattr or a sidecar file (tests/folder_attrs.py).

The rules are in docs/compatibility.md ("Local folder store").
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tests.folder_attrs import MODES, in_sidecars, in_xattrs, recorded, recorded_elsewhere, use_mode
from tests.integration.test_transfer import run_job, s3, transfer_job, write_stores

import s3batch.storage.local as local_module
import s3batch.storage.local_uploads as staging
from s3batch.domain.checksums import (
    ChecksumAlgorithm,
    ChecksumType,
    composite_checksum,
    full_object_checksum,
    new_hasher,
)
from s3batch.domain.uploads import ChecksumValue, ObjectAttributes, UploadedPart
from s3batch.errors import StorageError
from s3batch.storage.emulated_uploads import checksum_of
from s3batch.storage.local import ETAG_CACHE_MIN_BYTES, TEMP_MARKER, LocalStore

pytestmark = pytest.mark.integration

BUCKET = "bkt"
MIB = 1024**2
#: Part sizes of the uploads below (the folder store has no minimum part size): uneven on purpose.
PART_SIZES = (70_000, 1, 123_457)
#: How long the killed completion may take to start joining, and the poll interval, in seconds.
WRITER_START_S = 30.0
POLL_S = 0.05
#: Bound on waiting for a forced interleaving, in seconds.
WAIT_S = 10.0
#: A part of the killed completion: large enough to see its first part land before the kill.
KILLED_PART_BYTES = 2 * MIB


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / BUCKET).mkdir()
    return tmp_path


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, root: Path) -> str:
    """Where the store records attributes: the object's xattr, or a sidecar file only."""
    mode: str = request.param
    use_mode(monkeypatch, mode, root)
    return mode


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def s3_multipart_etag(bodies: list[bytes]) -> str:
    """S3's ETag of an object completed from parts `bodies`, computed here independently."""
    return hashlib.md5(b"".join(hashlib.md5(b).digest() for b in bodies)).hexdigest() + f"-{len(bodies)}"


async def upload(
    store: LocalStore,
    key: str,
    bodies: list[bytes],
    algorithm: ChecksumAlgorithm | None = ChecksumAlgorithm.CRC32C,
    checksum_type: ChecksumType = ChecksumType.COMPOSITE,
    attributes: ObjectAttributes | None = None,
) -> tuple[str, list[UploadedPart]]:
    """An upload of `key` holding `bodies` as parts 1..n; its id and the parts' answers."""
    upload_id = await store.create_multipart_upload(
        BUCKET, key, attributes=attributes or ObjectAttributes(), algorithm=algorithm,
        checksum_type=checksum_type,
    )  # fmt: skip
    parts = []
    for number, body in enumerate(bodies, 1):
        sent = None if algorithm is None else ChecksumValue(algorithm, checksum_of(algorithm, body))
        parts.append(await store.upload_part(BUCKET, key, upload_id, number, body, checksum=sent))
    return upload_id, parts


def bodies_of(sizes: tuple[int, ...] = PART_SIZES) -> list[bytes]:
    return [os.urandom(size) for size in sizes]


# -- multipart completion ---------------------------------------------------------------------

#: (algorithm, upload checksum type) pairs, with the checksum S3 gives the completed object.
CASES = [
    (ChecksumAlgorithm.CRC32C, ChecksumType.COMPOSITE),
    (ChecksumAlgorithm.SHA256, ChecksumType.COMPOSITE),
    (ChecksumAlgorithm.CRC32, ChecksumType.FULL_OBJECT),
    (ChecksumAlgorithm.CRC32C, ChecksumType.FULL_OBJECT),
    (ChecksumAlgorithm.CRC64NVME, ChecksumType.FULL_OBJECT),
    # S3 refuses a FULL_OBJECT upload of a hash; the folder store accepts it and hashes the bytes.
    (ChecksumAlgorithm.SHA256, ChecksumType.FULL_OBJECT),
]


def expected_checksum(algorithm: ChecksumAlgorithm, checksum_type: ChecksumType, bodies: list[bytes]) -> str:
    """What S3's rules give, from the bytes themselves."""
    if checksum_type is ChecksumType.FULL_OBJECT:
        return full_object_checksum(algorithm, b"".join(bodies))
    digests = []
    for body in bodies:
        hasher = new_hasher(algorithm)
        hasher.update(body)
        digests.append(hasher.digest())
    return composite_checksum(algorithm, digests)


@pytest.mark.parametrize(("algorithm", "checksum_type"), CASES, ids=lambda v: str(v))
async def test_a_completed_upload_has_s3s_multipart_etag_checksum_and_parts(
    root: Path, algorithm: ChecksumAlgorithm, checksum_type: ChecksumType
) -> None:
    store = LocalStore(root)
    bodies = bodies_of()
    upload_id, parts = await upload(store, "d/mp.bin", bodies, algorithm, checksum_type)
    written = await store.complete_multipart_upload(BUCKET, "d/mp.bin", upload_id, parts, checksum=None)
    etag = s3_multipart_etag(bodies)
    assert written.etag == etag and written.version_id is None
    assert written.checksum == ChecksumValue(
        algorithm, expected_checksum(algorithm, checksum_type, bodies), checksum_type
    )
    assert await store.get_bytes(BUCKET, "d/mp.bin") == b"".join(bodies)
    # HEAD, the checked HEAD, a listing and the part layout all answer the same afterwards.
    head = await store.head(BUCKET, "d/mp.bin")
    assert (head.etag, head.size, head.content_type) == (etag, sum(PART_SIZES), "binary/octet-stream")
    checked = await store.head_with_checksum(BUCKET, "d/mp.bin")
    assert (checked.etag, checked.checksum) == (etag, None)  # no checksum kept at rest
    assert [(o.key, o.etag) async for o in store.list_objects(BUCKET)] == [("d/mp.bin", etag)]
    assert await store.object_parts(BUCKET, "d/mp.bin") == list(PART_SIZES)
    # Another store over the folder (a later process) reads the same from the sidecar.
    assert (await LocalStore(root).head(BUCKET, "d/mp.bin")).etag == etag
    assert [u async for u in store.list_multipart_uploads(BUCKET)] == []


async def test_a_one_part_upload_is_a_multipart_object_and_no_checksum_without_an_algorithm(
    root: Path, mode: str
) -> None:
    store = LocalStore(root)
    (body,) = bodies = bodies_of((5,))
    upload_id, parts = await upload(store, "one", bodies, algorithm=None)
    written = await store.complete_multipart_upload(BUCKET, "one", upload_id, parts, checksum=None)
    assert (written.etag, written.checksum) == (
        f"{hashlib.md5(hashlib.md5(body).digest()).hexdigest()}-1",
        None,
    )
    assert written.etag == s3_multipart_etag(bodies)
    assert await store.object_parts(BUCKET, "one") == [5]
    assert recorded(root, mode) == [f"{BUCKET}/one"]  # the ETag cannot be recomputed: it is kept
    assert recorded_elsewhere(root, mode) == []
    assert (await LocalStore(root).head(BUCKET, "one")).etag == written.etag


async def test_a_multipart_objects_attributes_tags_and_copies(root: Path) -> None:
    store = LocalStore(root)
    bodies = bodies_of()
    attributes = ObjectAttributes(content_type="text/csv", metadata={"M": "1"}, tags={"t": "v"})
    upload_id, parts = await upload(store, "typed", bodies, attributes=attributes)
    await store.complete_multipart_upload(BUCKET, "typed", upload_id, parts, checksum=None)
    head = await store.head_with_checksum(BUCKET, "typed")
    assert (head.info.content_type, dict(head.info.metadata), head.tag_count) == ("text/csv", {"m": "1"}, 1)
    await store.put_tags(BUCKET, "typed", {"t": "w", "u": "x"})  # keeps the cached ETag and parts
    assert (await store.head(BUCKET, "typed")).etag == s3_multipart_etag(bodies)
    assert await store.object_parts(BUCKET, "typed") == list(PART_SIZES)
    # CopyObject writes a new single-part object: its ETag is the MD5, as S3's copy gives it.
    copied = await store.copy(BUCKET, "typed", BUCKET, "copy")
    assert copied.etag == md5(b"".join(bodies)) == (await store.head(BUCKET, "copy")).etag
    assert await store.object_parts(BUCKET, "copy") is None


@pytest.mark.parametrize("same_size", [True, False], ids=["same size", "other size"])
async def test_a_multipart_object_changed_by_hand_is_one_part_again(root: Path, same_size: bool) -> None:
    store = LocalStore(root)
    bodies = bodies_of()
    upload_id, parts = await upload(store, "mp", bodies)
    await store.complete_multipart_upload(BUCKET, "mp", upload_id, parts, checksum=None)
    path = root / BUCKET / "mp"
    changed = os.urandom(sum(PART_SIZES) if same_size else 1000)
    before = path.stat().st_mtime_ns
    path.write_bytes(changed)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))  # even on a coarse clock
    assert (await store.head(BUCKET, "mp")).etag == md5(changed)
    assert [o.etag async for o in store.list_objects(BUCKET)] == [md5(changed)]
    assert await store.object_parts(BUCKET, "mp") is None
    # The attributes survive the edit, as for any file changed outside the store.
    assert (await store.head(BUCKET, "mp")).content_type == "binary/octet-stream"


async def test_completion_joins_in_the_kernel_and_falls_back_where_refused(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real_copy_file_range = os.copy_file_range

    def counted(src: int, dst: int, count: int, *args: Any) -> int:
        calls.append("copy_file_range")
        return real_copy_file_range(src, dst, count, *args)

    store = LocalStore(root)
    bodies = bodies_of()
    monkeypatch.setattr(os, "copy_file_range", counted)
    upload_id, parts = await upload(store, "kernel", bodies)
    await store.complete_multipart_upload(BUCKET, "kernel", upload_id, parts, checksum=None)
    assert await store.get_bytes(BUCKET, "kernel") == b"".join(bodies)
    assert calls and set(calls) == {"copy_file_range"}

    def refused(*args: Any) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refused)  # another filesystem: sendfile copies
    upload_id, parts = await upload(store, "sendfile", bodies)
    written = await store.complete_multipart_upload(BUCKET, "sendfile", upload_id, parts, checksum=None)
    assert await store.get_bytes(BUCKET, "sendfile") == b"".join(bodies)
    assert written.etag == s3_multipart_etag(bodies)

    def no_sendfile(*args: Any) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "sendfile", no_sendfile)  # neither: read and write
    upload_id, parts = await upload(store, "python", bodies)
    await store.complete_multipart_upload(BUCKET, "python", upload_id, parts, checksum=None)
    assert await store.get_bytes(BUCKET, "python") == b"".join(bodies)


async def test_a_write_error_while_joining_is_reported_as_itself(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the kernel's refusals move on to the next way of copying: a real error of the last
    one (a full disk, a file that may not be written) is no 'changed part' and fails as what
    it is, keeping the upload."""
    store = LocalStore(root)
    bodies = bodies_of((3000, 5))
    upload_id, parts = await upload(store, "k", bodies)

    def refused(*args: Any) -> int:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def cannot_write(fd: int, data: Any) -> int:  # EPERM is also how the kernel refuses a copy
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "copy_file_range", refused)
    monkeypatch.setattr(os, "sendfile", refused)
    monkeypatch.setattr(os, "write", cannot_write)
    with pytest.raises(StorageError) as caught:
        await store.complete_multipart_upload(BUCKET, "k", upload_id, parts, checksum=None)
    monkeypatch.undo()
    assert (caught.value.code, caught.value.http_status) == ("AccessDenied", 403), caught.value
    written = await store.complete_multipart_upload(BUCKET, "k", upload_id, parts, checksum=None)
    assert written.etag == s3_multipart_etag(bodies)


async def test_a_head_racing_a_completion_keeps_the_multipart_etag(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A HEAD that stats the completed file before its sidecar file is written hashes it; what
    it caches must not replace the multipart ETag the completion records (the bytes cannot give
    it back). Sidecar files only: where the xattr is taken the completed file carries its ETag
    as it is moved into place (next test)."""
    use_mode(monkeypatch, "sidecar", root)
    renamed, described = threading.Event(), threading.Event()
    real_atomic, real_described = local_module._atomic_write, LocalStore._described
    waited: list[bool] = []

    def atomic(loc: Any, data: bytes) -> None:
        if b'"parts": [' in data and not renamed.is_set():  # the completion's sidecar
            renamed.set()
            waited.append(described.wait(WAIT_S))  # the HEAD's stat and sidecar read happen now
        real_atomic(loc, data)

    def describe(self: LocalStore, bucket: str, key: str, loc: Any) -> Any:
        found = real_described(self, bucket, key, loc)
        if renamed.is_set():
            described.set()
        return found

    monkeypatch.setattr(local_module, "_atomic_write", atomic)
    monkeypatch.setattr(LocalStore, "_described", describe)
    store = LocalStore(root)
    bodies = bodies_of((300_000, 100_000))  # large enough for a HEAD to cache its ETag
    upload_id, parts = await upload(store, "k", bodies, algorithm=None)
    completing = asyncio.create_task(
        store.complete_multipart_upload(BUCKET, "k", upload_id, parts, checksum=None)
    )
    assert await asyncio.to_thread(renamed.wait, WAIT_S)
    during = await store.head(BUCKET, "k")
    written = await completing
    assert waited == [True]  # the HEAD did run between the rename and the sidecar write
    assert written.etag == s3_multipart_etag(bodies)
    assert during.etag in (written.etag, md5(b"".join(bodies)))  # either answer of that moment
    assert (await store.head(BUCKET, "k")).etag == written.etag
    assert await store.object_parts(BUCKET, "k") == [300_000, 100_000]
    assert in_sidecars(root) == [f"{BUCKET}/k"]


async def test_a_head_racing_a_completion_sees_the_multipart_etag_in_the_xattr(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the file takes the xattr, the completed file carries its multipart ETag when it is
    moved into place: a HEAD right after the rename (before the completion removes an earlier
    sidecar file, under the key's lock) answers that ETag, not the MD5 of the bytes."""
    use_mode(monkeypatch, "xattr", root)
    renamed, described = threading.Event(), threading.Event()
    real_replace, real_described = local_module._replace_in, LocalStore._described
    waited: list[bool] = []
    seen: list[str | None] = []  # the ETag the HEAD found recorded, before any hashing

    def replace_in(dfd: int, name: str, temp: str, key: str, src_dfd: int | None = None) -> None:
        real_replace(dfd, name, temp, key, src_dfd)
        if key == "k" and not renamed.is_set():  # the completion's rename, its lock held
            renamed.set()
            waited.append(described.wait(WAIT_S))  # the HEAD's stat and xattr read happen now

    def describe(self: LocalStore, bucket: str, key: str, loc: Any) -> Any:
        found = real_described(self, bucket, key, loc)
        if renamed.is_set() and not described.is_set():
            seen.append(found.etag)
            described.set()
        return found

    monkeypatch.setattr(local_module, "_replace_in", replace_in)
    monkeypatch.setattr(LocalStore, "_described", describe)
    store = LocalStore(root)
    bodies = bodies_of((300_000, 100_000))  # too large to be hashed inline by the HEAD
    upload_id, parts = await upload(store, "k", bodies, algorithm=None)
    completing = asyncio.create_task(
        store.complete_multipart_upload(BUCKET, "k", upload_id, parts, checksum=None)
    )
    assert await asyncio.to_thread(renamed.wait, WAIT_S)
    during = await store.head(BUCKET, "k")
    written = await completing
    assert waited == [True]  # the HEAD did run while the completion held the key's lock
    assert seen == [written.etag] == [s3_multipart_etag(bodies)]  # read with the file, not hashed
    assert during.etag == written.etag
    assert await store.object_parts(BUCKET, "k") == [300_000, 100_000]
    assert (recorded(root, "xattr"), in_sidecars(root)) == ([f"{BUCKET}/k"], [])


async def test_a_file_replaced_with_the_same_size_and_mtime_is_another_file(root: Path) -> None:
    """The ETag cache is keyed to the file's inode too: a copy that keeps the mtime (cp -p,
    rsync -t) or a write within one clock tick is not taken for the file it replaced."""
    store = LocalStore(root)
    upload_id, parts = await upload(store, "k", bodies_of((1000, 1000)), algorithm=None)
    written = await store.complete_multipart_upload(BUCKET, "k", upload_id, parts, checksum=None)
    path = root / BUCKET / "k"
    before = os.stat(path)
    other = os.urandom(2000)
    (root / BUCKET / "other").write_bytes(other)
    os.utime(root / BUCKET / "other", ns=(before.st_atime_ns, before.st_mtime_ns))
    os.replace(root / BUCKET / "other", path)
    assert os.stat(path).st_mtime_ns == before.st_mtime_ns
    head = await store.head(BUCKET, "k")
    assert head.etag == md5(other) != written.etag
    assert await store.object_parts(BUCKET, "k") is None


async def test_a_part_changed_in_the_staging_area_fails_the_completion(root: Path) -> None:
    store = LocalStore(root)
    await store.put_bytes(BUCKET, "k", b"earlier")
    bodies = bodies_of()
    upload_id, parts = await upload(store, "k", bodies)
    part_file = staging.upload_folder(root, BUCKET, upload_id) / "part-00003"
    part_file.write_bytes(bodies[2][:-1])  # its record still says the uploaded size
    with pytest.raises(StorageError) as caught:
        await store.complete_multipart_upload(BUCKET, "k", upload_id, parts, checksum=None)
    assert (caught.value.code, caught.value.http_status) == ("InvalidPart", 400)
    assert await store.get_bytes(BUCKET, "k") == b"earlier"
    assert not [p for p in (root / BUCKET).iterdir() if TEMP_MARKER in p.name]


async def test_a_part_record_this_store_did_not_write_is_not_listed(root: Path) -> None:
    store = LocalStore(root)
    upload_id, parts = await upload(store, "k", bodies_of())
    record = staging.upload_folder(root, BUCKET, upload_id) / "part-00002.json"
    record.write_text(record.read_text().replace(parts[1].etag, "not-an-md5"))
    assert [p.number for p in await store.list_parts(BUCKET, "k", upload_id)] == [1, 3]
    with pytest.raises(StorageError) as caught:  # the ETag sent no longer names a part held
        await store.complete_multipart_upload(BUCKET, "k", upload_id, parts, checksum=None)
    assert caught.value.code == "InvalidPart"


async def test_a_wrong_whole_object_checksum_writes_nothing_and_keeps_the_upload(root: Path) -> None:
    store = LocalStore(root)
    algorithm = ChecksumAlgorithm.CRC64NVME
    bodies = bodies_of()
    upload_id, parts = await upload(store, "k", bodies, algorithm, ChecksumType.FULL_OBJECT)
    wrong = ChecksumValue(algorithm, full_object_checksum(algorithm, b"other"), ChecksumType.FULL_OBJECT)
    with pytest.raises(StorageError) as caught:
        await store.complete_multipart_upload(BUCKET, "k", upload_id, parts, checksum=wrong)
    assert caught.value.code == "BadDigest"
    with pytest.raises(StorageError):
        await store.head(BUCKET, "k")
    assert not [p for p in (root / BUCKET).iterdir() if p.name != "k"]  # no temp file either
    right = ChecksumValue(
        algorithm, full_object_checksum(algorithm, b"".join(bodies)), ChecksumType.FULL_OBJECT
    )
    written = await store.complete_multipart_upload(BUCKET, "k", upload_id, parts, checksum=right)
    assert written.checksum == right


async def test_resumed_replaced_and_skipped_parts_then_abort(root: Path) -> None:
    store = LocalStore(root)
    bodies = bodies_of((10, 20, 30))
    upload_id, parts = await upload(store, "k", bodies)
    # A resumed upload lists what it holds, each part with its MD5 and checksum.
    listed = await LocalStore(root).list_parts(BUCKET, "k", upload_id)
    assert [(p.number, p.size, p.etag) for p in listed] == [
        (i + 1, len(b), md5(b)) for i, b in enumerate(bodies)
    ]
    # A part sent again replaces the one held; completion may leave a part number out.
    newer = os.urandom(20)
    algorithm = ChecksumAlgorithm.CRC32C
    sent = ChecksumValue(algorithm, checksum_of(algorithm, newer))
    replaced = await store.upload_part(BUCKET, "k", upload_id, 2, newer, checksum=sent)
    written = await store.complete_multipart_upload(
        BUCKET, "k", upload_id, [parts[0], replaced], checksum=None
    )
    assert written.etag == s3_multipart_etag([bodies[0], newer])
    assert await store.get_bytes(BUCKET, "k") == bodies[0] + newer
    assert await store.object_parts(BUCKET, "k") == [10, 20]
    with pytest.raises(StorageError) as again:  # completed: the upload is gone
        await store.complete_multipart_upload(BUCKET, "k", upload_id, parts[:1], checksum=None)
    assert again.value.code == "NoSuchUpload"
    # Abort: the upload and its parts go, and the key keeps what it held.
    other_id, other_parts = await upload(store, "k", bodies)
    await store.abort_multipart_upload(BUCKET, "k", other_id)
    for call in (
        store.list_parts(BUCKET, "k", other_id),
        store.complete_multipart_upload(BUCKET, "k", other_id, other_parts, checksum=None),
    ):
        with pytest.raises(StorageError) as gone:
            await call
        assert gone.value.code == "NoSuchUpload"
    assert await store.get_bytes(BUCKET, "k") == bodies[0] + newer
    assert not staging.upload_folder(root, BUCKET, other_id).exists()


#: Completes an upload whose parts the test made, stalling after the first part is joined.
_KILLED_COMPLETION = """
import asyncio, sys, time
from pathlib import Path
from s3batch.domain.uploads import UploadedPart
from s3batch.storage import local, local_uploads

real = local_uploads._kernel_copy
joined = []

def stalled(src, dst, size):
    if joined:
        time.sleep(600)
        raise SystemExit("not killed")
    joined.append(size)
    return real(src, dst, size)

local_uploads._kernel_copy = stalled
store = local.LocalStore(Path(sys.argv[1]))
parts = [UploadedPart(int(n), int(s), e) for n, s, e in (p.split(":") for p in sys.argv[3:])]
asyncio.run(store.complete_multipart_upload("bkt", "sub/big.bin", sys.argv[2], parts, checksum=None))
"""


async def test_a_completion_killed_mid_join_leaves_the_key_and_the_upload_as_they_were(root: Path) -> None:
    store = LocalStore(root)
    await store.put_bytes(BUCKET, "sub/big.bin", b"earlier", metadata={"v": "1"})
    bodies = bodies_of((KILLED_PART_BYTES, KILLED_PART_BYTES))
    upload_id, parts = await upload(store, "sub/big.bin", bodies)
    argv = [sys.executable, "-c", _KILLED_COMPLETION, str(root), upload_id]
    proc = subprocess.Popen([*argv, *(f"{p.number}:{p.size}:{p.etag}" for p in parts)])
    folder = root / BUCKET / "sub"
    try:
        deadline = time.monotonic() + WRITER_START_S
        while time.monotonic() < deadline and proc.poll() is None:
            temps = [p for p in folder.iterdir() if p.name.startswith(TEMP_MARKER)]
            if temps and temps[0].stat().st_size >= KILLED_PART_BYTES:
                break
            time.sleep(POLL_S)
        assert proc.poll() is None, "the completion ended before it could be killed"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=WRITER_START_S)
    # The key still holds its earlier version, and the half-joined temp file is hidden.
    head = await store.head(BUCKET, "sub/big.bin")
    assert (head.etag, dict(head.metadata)) == (md5(b"earlier"), {"v": "1"})
    assert [o.key async for o in store.list_objects(BUCKET)] == ["sub/big.bin"]
    # The upload is whole: a retried completion gives the object.
    assert [u.upload_id async for u in store.list_multipart_uploads(BUCKET)] == [upload_id]
    assert [p.etag for p in await store.list_parts(BUCKET, "sub/big.bin", upload_id)] == [
        p.etag for p in parts
    ]
    written = await store.complete_multipart_upload(BUCKET, "sub/big.bin", upload_id, parts, checksum=None)
    assert written.etag == s3_multipart_etag(bodies)
    assert await store.get_bytes(BUCKET, "sub/big.bin") == b"".join(bodies)
    assert dict((await store.head(BUCKET, "sub/big.bin")).metadata) == {}  # the upload's attributes


# -- small writes without a sidecar (neither xattr nor file) -------------------------------------


def created_files(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files os.open creates from now on (the store's temp files)."""
    created: list[str] = []
    real_open = os.open

    def noting_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_CREAT:
            created.append(str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", noting_open)
    return created


async def test_a_small_write_with_default_attributes_creates_one_file(
    root: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    store = LocalStore(root)
    await store.put_bytes(BUCKET, "warm", b"x")  # the folders' first write sweeps them: not counted
    created = created_files(monkeypatch)
    await store.put_bytes(BUCKET, "plain", b"plain")
    await store.put_bytes(BUCKET, "typed", b"binary", content_type="binary/octet-stream")
    await store.put_with_checksum(BUCKET, "checked", b"checked", attributes=ObjectAttributes(), checksum=None)
    assert len(created) == 3
    assert (recorded(root, mode), recorded_elsewhere(root, mode)) == ([], [])
    await store.put_bytes(BUCKET, "meta", b"meta", metadata={"m": "1"})
    # The object (its attributes in its xattr), or the object and its sidecar file.
    assert len(created) == (4 if mode == "xattr" else 5), created
    assert recorded(root, mode) == [f"{BUCKET}/meta"]
    assert recorded_elsewhere(root, mode) == []
    assert dict((await LocalStore(root).head(BUCKET, "meta")).metadata) == {"m": "1"}
    head = await store.head(BUCKET, "plain")
    assert (head.etag, head.content_type, dict(head.metadata)) == (md5(b"plain"), "binary/octet-stream", {})
    assert (await store.head_with_checksum(BUCKET, "plain")).tag_count == 0
    assert await store.get_tags(BUCKET, "plain") == {}


@pytest.mark.parametrize("key", ["k", "a/b/k"])
async def test_a_default_write_removes_the_stale_sidecar_of_an_earlier_version(
    root: Path, key: str, mode: str
) -> None:
    store = LocalStore(root)
    await store.put_bytes(BUCKET, key, b"one", content_type="text/plain", metadata={"m": "1"})
    await store.put_tags(BUCKET, key, {"t": "1"})
    assert in_sidecars(root) == [f"{BUCKET}/{key}"]  # tags set later: in a sidecar file
    assert recorded(root, mode) == [f"{BUCKET}/{key}"]
    await store.put_bytes(BUCKET, key, b"two")
    assert (recorded(root, mode), recorded_elsewhere(root, mode)) == ([], [])
    head = await store.head(BUCKET, key)
    assert (head.etag, head.content_type, dict(head.metadata)) == (md5(b"two"), "binary/octet-stream", {})
    assert await store.get_tags(BUCKET, key) == {}
    # Tags on a sidecar-less object: a sidecar again, with the attributes the object has.
    await store.put_tags(BUCKET, key, {"t": "2"})
    assert (await store.get_tags(BUCKET, key), (await store.head(BUCKET, key)).etag) == (
        {"t": "2"},
        md5(b"two"),
    )
    assert in_sidecars(root) == [f"{BUCKET}/{key}"]
    assert in_xattrs(root) == []


async def test_which_writes_keep_a_sidecar(root: Path, tmp_path: Path, mode: str) -> None:
    store = LocalStore(root)
    big = os.urandom(ETAG_CACHE_MIN_BYTES)
    await store.put_bytes(BUCKET, "big", big)  # its ETag is cached: a HEAD need not hash it
    await store.put_bytes(BUCKET, "small", big[:-1])
    await store.put_with_checksum(
        BUCKET, "tagged", b"t", attributes=ObjectAttributes(tags={"a": "b"}), checksum=None
    )
    await store.put_with_checksum(
        BUCKET,
        "headers",
        b"h",
        attributes=ObjectAttributes(headers={"CacheControl": "no-cache"}),
        checksum=None,
    )
    await store.copy(BUCKET, "small", BUCKET, "copied")  # defaults copied: none
    await store.copy(BUCKET, "tagged", BUCKET, "copied-tags")  # tags copied: one
    local_file = tmp_path / "f.txt"  # (tmp_path is root: a file beside the bucket, no object)
    local_file.write_bytes(b"file")
    await store.put_file(BUCKET, "file", local_file, content_type="text/plain")
    upload_id, parts = await upload(store, "multipart", [b"m"], algorithm=None)
    await store.complete_multipart_upload(BUCKET, "multipart", upload_id, parts, checksum=None)
    assert recorded(root, mode) == [
        f"{BUCKET}/{k}" for k in ("big", "copied-tags", "file", "headers", "multipart", "tagged")
    ]
    assert recorded_elsewhere(root, mode) == []
    assert (await store.head(BUCKET, "copied")).etag == md5(big[:-1])
    assert (await store.head(BUCKET, "headers")).headers == {"CacheControl": "no-cache"}


# -- a transfer into a folder -------------------------------------------------------------------


def test_a_transfer_into_a_folder_assembles_in_place_and_a_second_run_skips(
    tmp_path: Path, moto_server: str
) -> None:
    home, back = tmp_path / "home", tmp_path / "back"
    write_stores(home, moto=moto_server)
    (back / "out").mkdir(parents=True)
    client = s3(moto_server)
    client.create_bucket(Bucket="tx-etag")
    body = os.urandom(20 * MIB)
    # Uploaded in the transfer's own part size (8 MiB): the same part layout on both sides.
    started = client.create_multipart_upload(Bucket="tx-etag", Key="big.bin")
    sent = []
    for number, start in enumerate(range(0, len(body), 8 * MIB), 1):
        answer = client.upload_part(
            Bucket="tx-etag", Key="big.bin", UploadId=started["UploadId"], PartNumber=number,
            Body=body[start : start + 8 * MIB],
        )  # fmt: skip
        sent.append({"PartNumber": number, "ETag": answer["ETag"]})
    client.complete_multipart_upload(
        Bucket="tx-etag", Key="big.bin", UploadId=started["UploadId"], MultipartUpload={"Parts": sent}
    )
    client.put_object(Bucket="tx-etag", Key="small.txt", Body=b"small")
    request = transfer_job("tx-etag", TargetStore=f"file://{back}", TargetResource="arn:aws:s3:::out")
    rows = run_job(home, moto_server, request)
    assert {k: r[0] for k, r in rows.items()} == {"big.bin": "succeeded", "small.txt": "succeeded"}, rows
    assert (back / "out" / "big.bin").read_bytes() == body
    # Written in place (an assembled upload): S3's multipart ETag form, derived from the parts'
    # checksums rather than their MD5s, and the composite checksum the row reports kept.
    source_etag = client.head_object(Bucket="tx-etag", Key="big.bin")["ETag"].strip('"')
    head = asyncio.run(LocalStore(back).head_with_checksum("out", "big.bin"))
    assert head.etag.endswith("-3") and head.etag != source_etag
    reported = rows["big.bin"][2].split("Checksum=")[1].split(";")[0]
    assert head.checksum == ChecksumValue(ChecksumAlgorithm.CRC32C, reported, ChecksumType.COMPOSITE)
    assert list((back / staging.UPLOADS_DIR_NAME / "out").iterdir()) == []
    skip = transfer_job(
        "tx-etag",
        TargetStore=f"file://{back}",
        TargetResource="arn:aws:s3:::out",
        SkipExisting="SizeAndChecksum",
    )
    rows = run_job(home, moto_server, skip)
    # The ETags differ (S3's is the MD5 of MD5s) and this source stores no CRC32C: both bodies
    # are read and compared (docs/compatibility.md, "ETags, checksums and sidecars").
    assert rows["big.bin"][2].startswith("skipped: identical (same size and CRC32C of both bodies)"), rows
    assert rows["small.txt"][2].startswith("skipped: identical (same size and ETag)"), rows
