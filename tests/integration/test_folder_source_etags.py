"""A folder is hashed only where an ETag is used. A listing with `etags=False` (the manifest
generator's) and a HEAD with `etag=False` (the transfer's source, unless SkipExisting compares
ETags) open no object's file and give only the ETags sidecars cache for the files as they are;
a listing or HEAD that asks gets every ETag, as before. A transfer folder → S3 (moto) hashes no
source file and still verifies every checksum; with SkipExisting a second run still skips. And
SkipExisting against a destination that stores a full-object checksum of the job's algorithm
reads only the source's body."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from tests.integration.test_transfer import run_job, s3, s3_objects, transfer_job, write_stores

import s3batch.storage.local as local
from s3batch.domain.checksums import ChecksumAlgorithm, ChecksumType
from s3batch.domain.generator import IncludeVersions, ManifestFilter, ManifestGenerator
from s3batch.domain.task import Task
from s3batch.domain.uploads import ChecksumValue, ObjectAttributes
from s3batch.operations._transfer_copy import Copier
from s3batch.operations.transfer import TransferPlan
from s3batch.service.manifests import write_listing
from s3batch.storage.capabilities import StorageAdapter
from s3batch.storage.emulated_uploads import checksum_of
from s3batch.storage.local import ETAG_CACHE_MIN_BYTES, INLINE_IO_MAX_BYTES, LocalStore
from s3batch.storage.memory import MemoryStore
from s3batch.storage.retrying import RetryingStore

pytestmark = pytest.mark.integration

BUCKET = "bkt"
MIB = 1024**2
#: A file the folder store hashes inline (no cache), and one it caches the ETag of once hashed.
SMALL = b"small body" * 100
LARGE_BYTES = ETAG_CACHE_MIN_BYTES
#: The transfer's part size in the Copier tests (S3's smallest) and an object of four parts.
PART = 5 * MIB
OBJECT_BYTES = 3 * PART + 12_345


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / BUCKET).mkdir()
    return tmp_path


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The keys whose files the folder store opens to read (hash or body) from now on."""
    keys: list[str] = []
    real = local._open_object

    def counting(loc: Any, key: str) -> Any:
        keys.append(key)
        return real(loc, key)

    monkeypatch.setattr(local, "_open_object", counting)
    yield keys


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The keys whose files the folder store hashes for an ETag from now on."""
    keys: list[str] = []
    real = local._md5_object

    def counting(loc: Any, key: str) -> Any:
        keys.append(key)
        return real(loc, key)

    monkeypatch.setattr(local, "_md5_object", counting)
    yield keys


def drop(root: Path, key: str, body: bytes, bucket: str = BUCKET) -> None:
    """A file put in the bucket by hand, as users do."""
    path = root / bucket / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)


def md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


# -- the folder store -------------------------------------------------------------------------------


async def test_a_listing_without_etags_opens_no_file_and_gives_only_cached_etags(
    root: Path, opened: list[str]
) -> None:
    large, cached, stale = (os.urandom(LARGE_BYTES) for _ in range(3))
    assert len(SMALL) <= INLINE_IO_MAX_BYTES < LARGE_BYTES  # hashed inline / in a thread
    drop(root, "a/small", SMALL)
    drop(root, "b/large", large)
    drop(root, "c/cached", cached)
    drop(root, "d/stale", stale)
    store = LocalStore(root)
    await store.head(BUCKET, "c/cached")  # caches its ETag in its sidecar
    await store.head(BUCKET, "d/stale")
    drop(root, "d/stale", os.urandom(LARGE_BYTES))  # the cache is of another file now
    opened.clear()

    quick = [o async for o in store.list_objects(BUCKET, etags=False)]
    assert {o.key: o.etag for o in quick} == {
        "a/small": "",
        "b/large": "",
        "c/cached": md5(cached),
        "d/stale": "",
    }
    assert [o.etag async for o in store.list_versions(BUCKET, "b/", etags=False)] == [""]
    assert opened == []

    full = [o async for o in store.list_objects(BUCKET)]  # etags=True: every ETag, as before
    changed = (root / BUCKET / "d/stale").read_bytes()
    assert {o.key: o.etag for o in full} == {
        "a/small": md5(SMALL), "b/large": md5(large), "c/cached": md5(cached), "d/stale": md5(changed)
    }  # fmt: skip
    assert sorted(opened) == ["a/small", "b/large", "d/stale"]
    assert [replace(o, etag="") for o in quick] == [replace(o, etag="") for o in full]  # all else equal


async def test_a_head_without_etag_opens_no_file_but_gives_an_assembled_objects_etag(
    root: Path, opened: list[str]
) -> None:
    large = os.urandom(LARGE_BYTES)
    drop(root, "small", SMALL)
    drop(root, "large", large)
    store = LocalStore(root)
    for key, body in (("small", SMALL), ("large", large)):
        head = await store.head_with_checksum(BUCKET, key, etag=False)
        assert (head.etag, head.size, head.checksum, head.tag_count) == ("", len(body), None, 0)
    assert opened == []
    assert (await store.head_with_checksum(BUCKET, "small")).etag == md5(SMALL)
    assert (await store.head_with_checksum(BUCKET, "large")).etag == md5(large)

    # An object with a stored checksum (assembled by a transfer) has its ETag in the same
    # sidecar: a HEAD without ETag still gives it, as the transfer's checks read it then.
    algorithm = ChecksumAlgorithm.CRC64NVME
    upload_id = await store.create_assembled_upload(
        BUCKET, "assembled", size=len(large), part_size=len(large) // 2, attributes=ObjectAttributes(),
        algorithm=algorithm, checksum_type=ChecksumType.FULL_OBJECT,
    )  # fmt: skip
    halves = [large[: len(large) // 2], large[len(large) // 2 :]]
    parts = [
        await store.upload_part(
            BUCKET,
            "assembled",
            upload_id,
            n,
            body,
            checksum=ChecksumValue(algorithm, checksum_of(algorithm, body)),
        )
        for n, body in enumerate(halves, 1)
    ]
    written = await store.complete_multipart_upload(BUCKET, "assembled", upload_id, parts, checksum=None)
    opened.clear()
    head = await store.head_with_checksum(BUCKET, "assembled", etag=False)
    assert head.checksum == ChecksumValue(algorithm, checksum_of(algorithm, large), ChecksumType.FULL_OBJECT)
    assert head.etag == written.etag and head.etag.endswith("-2")
    assert opened == []


@pytest.mark.parametrize("versions", [IncludeVersions.CURRENT, IncludeVersions.ALL])
async def test_a_generated_manifest_over_a_folder_hashes_no_file(
    root: Path, tmp_path: Path, hashed: list[str], versions: IncludeVersions
) -> None:
    keys = [f"p{i}/k{j}" for i in range(3) for j in range(3)] + ["top"]
    for key in keys:
        drop(root, key, SMALL)
    drop(root, "p1/large", os.urandom(LARGE_BYTES))
    generator = ManifestGenerator(
        source_bucket=BUCKET, enable_output=False, output_bucket=None, output_prefix="",
        include_versions=versions, filter=ManifestFilter(size_greater_than=0),
    )  # fmt: skip
    # As the job runner lists: through RetryingStore.
    objects = cast(StorageAdapter, RetryingStore(LocalStore(root)))
    work = tmp_path / "work"
    work.mkdir()
    count = await write_listing(objects, generator, work / "out.csv", work)
    rows = (work / "out.csv").read_text().splitlines()
    assert count == len(keys) + 1 and rows == sorted(f"{BUCKET},{key}," for key in [*keys, "p1/large"])
    assert hashed == []


# -- transfers ----------------------------------------------------------------------------------


def test_a_transfer_from_a_folder_hashes_no_source_file_unless_skip_existing_compares_etags(
    tmp_path: Path, moto_server: str, hashed: list[str]
) -> None:
    home, root = tmp_path / "home", tmp_path / "folders"
    write_stores(home, moto=moto_server)
    files = {"d/small.txt": SMALL, "large.bin": os.urandom(LARGE_BYTES), "big.bin": os.urandom(17 * MIB)}
    for key, body in files.items():
        drop(root, key, body, "src")
    moto = s3(moto_server)
    moto.create_bucket(Bucket="tx-hash")
    request = transfer_job("src", TargetStore="moto", TargetResource="arn:aws:s3:::tx-hash")

    rows = run_job(home, f"file://{root}", request)
    assert {key: row[0] for key, row in rows.items()} == dict.fromkeys(files, "succeeded")
    assert all("; ChecksumAlgorithm=CRC32C; Checksum=" in row[2] for row in rows.values()), rows
    assert "Parts=3 (0 reused)" in rows["big.bin"][2]
    assert s3_objects(moto, "tx-hash") == files
    assert hashed == []  # neither the listing nor the transfer's HEADs hashed a file

    # SizeAndChecksum compares the source's ETag: computed then, and the run writes nothing.
    skip = transfer_job(
        "src", TargetStore="moto", TargetResource="arn:aws:s3:::tx-hash", SkipExisting="SizeAndChecksum"
    )
    rows = run_job(home, f"file://{root}", skip)
    assert {row[2].split(" (")[0] for row in rows.values()} == {"skipped: identical"}, rows
    assert rows["d/small.txt"][2].startswith("skipped: identical (same size and ETag)")
    assert sorted(set(hashed)) == sorted(files)


class ReadCountingFolder(LocalStore):
    """The folder store, noting the keys whose bodies are read."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    async def iter_bytes(
        self, bucket: str, key: str, version_id: str | None = None, start: int = 0, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        self.reads.append(key)
        async for chunk in super().iter_bytes(bucket, key, version_id, start, chunk_size):
            yield chunk


def copier(source: MemoryStore, target: LocalStore, algorithm: str) -> Copier:
    plan = TransferPlan.from_params(
        {
            "TargetResource": f"arn:aws:s3:::{BUCKET}",
            "PartSizeBytes": PART,
            "ChecksumAlgorithm": algorithm,
            "SkipExisting": "SizeAndChecksum",
        }
    )
    return Copier(plan, source, target)


def task(key: str) -> Task:
    return Task(seq=0, bucket="src", raw_key=key, key=key)


@pytest.mark.parametrize(
    ("algorithm", "how", "reads"),
    [
        # A folder stores a CRC64NVME upload's full-object checksum: the source's body settles it.
        ("CRC64NVME", "CRC64NVME of the source body as the destination stores it", []),
        # A CRC32C upload's checksum is composite (over the parts' checksums): both are read.
        ("CRC32C", "CRC32C of both bodies", ["big"]),
    ],
)
async def test_skip_existing_reads_only_the_source_when_the_destination_stores_its_checksum(
    root: Path, algorithm: str, how: str, reads: list[str]
) -> None:
    source = MemoryStore()  # ETag: the MD5 of the bytes, never the folder's assembled one
    await source.create_bucket("src")
    data = os.urandom(OBJECT_BYTES)
    await source.put_bytes("src", "big", data)
    target = ReadCountingFolder(root)
    first = await copier(source, target, algorithm).apply(task("big"))
    assert first.succeeded and first.message.startswith("copied"), first
    stored = (await target.head_with_checksum(BUCKET, "big")).checksum
    assert stored is not None and stored.algorithm is ChecksumAlgorithm(algorithm)

    target.reads.clear()
    again = await copier(source, target, algorithm).apply(task("big"))
    assert again.message.startswith(f"skipped: identical (same size and {how})"), again
    assert target.reads == reads

    # The same size, other bytes: written again, and the destination's body still not read.
    changed = os.urandom(OBJECT_BYTES)
    await source.put_bytes("src", "big", changed)
    target.reads.clear()
    rewritten = await copier(source, target, algorithm).apply(task("big"))
    assert rewritten.succeeded and rewritten.message.startswith("copied"), rewritten
    assert target.reads == reads
    assert (root / BUCKET / "big").read_bytes() == changed
