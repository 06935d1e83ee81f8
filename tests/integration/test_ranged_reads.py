"""S3Store.read_range_into (capabilities.RangeReadStore) against real servers on 127.0.0.1:
moto's and `rclone serve s3` (which answers a range with 200 and a Content-Range, and ignores
If-Match), on the lean path's ranged reader and through aiobotocore, and LocalStore's (preadv);
and S3batchTransfer reading a large object's parts that way from either."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_transfer import run_job, s3, transfer_job, write_stores

from s3batch.errors import StorageError
from s3batch.storage.capabilities import range_read_store
from s3batch.storage.config import S3Config
from s3batch.storage.s3 import S3Store

pytestmark = pytest.mark.integration

MIB = 1024**2


def client(endpoint: str) -> Any:
    return s3(endpoint)


@pytest.fixture(params=["moto", "rclone"])
def endpoint(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_server"))


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "aiobotocore"])
async def test_a_range_lands_in_the_buffer_pinned_to_the_object(endpoint: str, lean: bool) -> None:
    body = os.urandom(3 * MIB + 5)
    bucket = f"ranged-{'lean' if lean else 'boto'}"
    c = client(endpoint)
    c.create_bucket(Bucket=bucket)
    etag = c.put_object(Bucket=bucket, Key="a b/c+d", Body=body)["ETag"].strip('"')
    store = S3Store(S3Config(endpoint_url=endpoint, addressing_style="path", lean_path=lean))
    try:
        reader = range_read_store(store)
        assert reader is not None
        buffer = bytearray(MIB)
        await reader.read_range_into(bucket, "a b/c+d", None, 2 * MIB, buffer, size=len(body), etag=etag)
        assert buffer == body[2 * MIB : 3 * MIB]
        tail = bytearray(5)
        await reader.read_range_into(bucket, "a b/c+d", None, 3 * MIB, tail, size=len(body), etag=None)
        assert tail == body[3 * MIB :]
        # Another ETag: the object is not the one the transfer started reading.
        with pytest.raises(StorageError) as changed:
            await reader.read_range_into(
                bucket, "a b/c+d", None, 0, bytearray(10), size=len(body), etag="0" * 32
            )
        assert (changed.value.code, changed.value.http_status) == ("PreconditionFailed", 412)
        # Another size: likewise.
        with pytest.raises(StorageError) as resized:
            await reader.read_range_into(
                bucket, "a b/c+d", None, 0, bytearray(10), size=len(body) + 1, etag=etag
            )
        assert resized.value.code == "PreconditionFailed"
        with pytest.raises(StorageError) as missing:
            await reader.read_range_into(bucket, "nope", None, 0, bytearray(10), size=10, etag=None)
        assert missing.value.http_status == 404
    finally:
        await store.close()


def test_a_transfer_reads_a_large_objects_parts_by_ranged_reads(tmp_path: Path, rclone_server: str) -> None:
    # 12 MiB in 5 MiB parts, from rclone into a folder: every part read by one ranged GET on the
    # ranged reader's own socket (the proxy-free lean route), and the object arrives intact.
    body = os.urandom(12 * MIB)
    c = client(rclone_server)
    c.create_bucket(Bucket="ranged-src")
    c.put_object(Bucket="ranged-src", Key="big.bin", Body=body)
    home, back = tmp_path / "home", tmp_path / "back"
    write_stores(home, rcl=rclone_server)
    (back / "out").mkdir(parents=True)
    calls: list[int] = []
    original = S3Store.read_range_into

    async def counted(self: S3Store, *args: object, **kwargs: object) -> None:
        calls.append(int(str(args[3])))
        await original(self, *args, **kwargs)  # type: ignore[arg-type]

    request = transfer_job(
        "ranged-src", TargetStore=f"file://{back}", TargetResource="arn:aws:s3:::out", PartSizeBytes=5 * MIB
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(S3Store, "read_range_into", counted)
        rows = run_job(home, rclone_server, request)
    assert rows["big.bin"][0] == "succeeded" and "Parts=3 (0 reused)" in rows["big.bin"][2]
    assert sorted(calls) == [0, 5 * MIB, 10 * MIB]
    assert (back / "out" / "big.bin").read_bytes() == body


def test_a_ranged_read_of_a_replaced_object_fails_the_task_and_leaves_nothing(
    tmp_path: Path, rclone_server: str
) -> None:
    # The source is replaced (same size) after the transfer's first GET: the parts' ranged
    # reads are pinned to the first ETag, so the task fails instead of splicing two objects.
    c = client(rclone_server)
    c.create_bucket(Bucket="ranged-swap")
    c.put_object(Bucket="ranged-swap", Key="big.bin", Body=b"A" * (12 * MIB))
    home, back = tmp_path / "home", tmp_path / "back"
    write_stores(home, rcl=rclone_server)
    (back / "out").mkdir(parents=True)
    original = S3Store.read_range_into
    swapped: list[bool] = []

    async def swap_first(self: S3Store, *args: object, **kwargs: object) -> None:
        if not swapped:
            swapped.append(True)
            await asyncio.to_thread(c.put_object, Bucket="ranged-swap", Key="big.bin", Body=b"B" * (12 * MIB))
        await original(self, *args, **kwargs)  # type: ignore[arg-type]

    request = transfer_job(
        "ranged-swap", TargetStore=f"file://{back}", TargetResource="arn:aws:s3:::out", PartSizeBytes=5 * MIB
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(S3Store, "read_range_into", swap_first)
        rows = run_job(home, rclone_server, request)
    status, code, _ = rows["big.bin"]
    assert (status, code) == ("failed", "PreconditionFailed")
    assert not (back / "out" / "big.bin").exists()


async def test_a_folder_reads_a_range_into_the_buffer_and_refuses_another_size(tmp_path: Path) -> None:
    from s3batch.storage.local import LocalStore

    body = os.urandom(2 * MIB + 3)
    (tmp_path / "b" / "d").mkdir(parents=True)
    (tmp_path / "b" / "d" / "k").write_bytes(body)
    (tmp_path / "b" / "link").symlink_to(tmp_path / "b" / "d" / "k")
    store = LocalStore(tmp_path)
    reader = range_read_store(store)
    assert reader is not None
    buffer = bytearray(MIB + 3)
    await reader.read_range_into("b", "d/k", None, MIB, buffer, size=len(body), etag=None)
    assert buffer == body[MIB:]
    with pytest.raises(StorageError) as changed:
        await reader.read_range_into("b", "d/k", None, 0, bytearray(10), size=len(body) - 1, etag=None)
    assert (changed.value.code, changed.value.http_status) == ("PreconditionFailed", 412)
    for missing in ("d/nope", "link"):  # a symlink is no object
        with pytest.raises(StorageError) as caught:
            await reader.read_range_into("b", missing, None, 0, bytearray(10), size=10, etag=None)
        assert caught.value.code == "NoSuchKey"


def test_a_transfer_from_a_folder_reads_a_large_files_parts_by_ranged_reads(
    tmp_path: Path, rclone_server: str
) -> None:
    from s3batch.storage.local import LocalStore

    body = os.urandom(12 * MIB)
    root = tmp_path / "folders"
    (root / "src").mkdir(parents=True)
    (root / "src" / "big.bin").write_bytes(body)
    home = tmp_path / "home"
    write_stores(home, rcl=rclone_server)
    client(rclone_server).create_bucket(Bucket="ranged-dst")
    calls: list[int] = []
    original = LocalStore.read_range_into

    async def counted(self: LocalStore, *args: object, **kwargs: object) -> None:
        calls.append(int(str(args[3])))
        await original(self, *args, **kwargs)  # type: ignore[arg-type]

    request = transfer_job(
        "src", TargetStore="rcl", TargetResource="arn:aws:s3:::ranged-dst", PartSizeBytes=5 * MIB
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(LocalStore, "read_range_into", counted)
        rows = run_job(home, f"file://{root}", request)
    assert rows["big.bin"][0] == "succeeded" and "Parts=3 (0 reused)" in rows["big.bin"][2]
    assert sorted(calls) == [0, 5 * MIB, 10 * MIB]
    assert client(rclone_server).get_object(Bucket="ranged-dst", Key="big.bin")["Body"].read() == body
