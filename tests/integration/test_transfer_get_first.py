"""S3batchTransfer reading an S3 source GET first (capabilities.CheckedGetStore), against real
servers on 127.0.0.1 (moto's, `rclone serve s3`) with a logging proxy in front of the source: a
small object costs one GET of the source and no HEAD, S3 to S3 and S3 to a folder; the stored
checksum that GET reports still catches bytes corrupted on the way; an object in parts still
goes in parts; SkipExisting still skips; a missing object fails its task; a body cut short fails
it, retryably; and no connection of the lean path's pools is left held by any of it."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from tests.integration.test_transfer import CountingProxy, run_job, s3, transfer_job, uploads, write_stores

from s3batch.domain.checksums import ChecksumAlgorithm, ChecksumType, encode, new_hasher
from s3batch.domain.task import Task, TaskResult
from s3batch.domain.uploads import ChecksumValue, ObjectAttributes
from s3batch.errors import StorageError
from s3batch.operations._transfer_copy import Copier
from s3batch.operations.transfer import TransferPlan
from s3batch.storage.capabilities import CheckedGetStore, part_upload_store
from s3batch.storage.config import S3Config
from s3batch.storage.s3 import S3Store
from s3batch.storage.s3.uploads import CHECKED_GET_BUFFERED_MAX_BYTES

if TYPE_CHECKING:
    from tests.seaweedfs import SeaweedFS

pytestmark = pytest.mark.integration

MIB = 1024**2
PART_BYTES = 5 * MIB
#: Streamed (over CHECKED_GET_BUFFERED_MAX_BYTES), yet one PutObject.
STREAMED_BYTES = MIB
#: Three parts of PART_BYTES.
BIG_BYTES = 12 * MIB


class SourceProxy(CountingProxy):
    """CountingProxy that also records each GET's Range header (`gets`: (path, range or None)).
    With `corrupt_gets` it flips the first byte of every object body it relays (a GET without a
    query); with `cut_gets` it sends only the first half of it, its headers saying the whole
    length, and drops the connection."""

    def __init__(self, upstream: str, *, corrupt_gets: bool = False, cut_gets: bool = False) -> None:
        super().__init__(upstream)
        self.corrupt_gets, self.cut_gets = corrupt_gets, cut_gets
        self.gets: list[tuple[str, str | None]] = []

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        response = await super()._forward(request)
        if request.method != "GET" or request.query_string:
            return response
        self.gets.append((request.path, request.headers.get("Range")))
        assert isinstance(response, web.Response)
        body = bytes(response.body or b"")  # type: ignore[arg-type]
        if not body or response.status >= 300:
            return response
        if self.corrupt_gets:
            response.body = bytes([body[0] ^ 1]) + body[1:]
        if self.cut_gets:
            cut = web.StreamResponse(status=response.status, headers=response.headers)
            cut.content_length = len(body)
            await cut.prepare(request)
            await cut.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # aiohttp's handler ends quietly on a cancelled request
        return response

    def requests_for(self, bucket: str, key: str) -> list[str]:
        """`METHOD[ query]` of each request of this object, in order."""
        path = f"/{bucket}/{key}"
        return [f"{r.method} {r.query}".strip() for r in self.log if r.path == path]


def store(endpoint: str) -> S3Store:
    return S3Store(S3Config(endpoint_url=endpoint, addressing_style="path"))


def copier(source: S3Store, target: S3Store, bucket: str, **params: Any) -> Copier:
    plan = TransferPlan.from_params(
        {"TargetResource": f"arn:aws:s3:::{bucket}", "PartSizeBytes": PART_BYTES, **params}
    )
    writer = part_upload_store(target)
    assert writer is not None
    return Copier(plan, source, writer)


def task(bucket: str, key: str) -> Task:
    return Task(seq=0, bucket=bucket, raw_key=key, key=key)


def held_connections(s3_store: S3Store) -> int:
    """Connections of the store's lean pools that are out of the pool (in use, or leaked)."""
    shared = s3_store._shared
    assert shared is not None
    return sum(pool._open - len(pool._idle) for pool in shared.pools.values())


async def apply_all(op: Copier, bucket: str, keys: list[str]) -> dict[str, TaskResult]:
    return {key: await op.apply(task(bucket, key)) for key in keys}


def test_the_s3_store_reads_get_first_and_the_folder_store_does_not(tmp_path: Path) -> None:
    from s3batch.storage.local import LocalStore

    assert isinstance(store("http://127.0.0.1:1"), CheckedGetStore)
    assert not isinstance(LocalStore(tmp_path), CheckedGetStore)  # a stat is no request


# -- requests per object ---------------------------------------------------------------------------


def test_a_small_object_costs_one_get_of_the_source_and_no_head(
    tmp_path: Path, moto_server: str, rclone_server: str
) -> None:
    home, back = tmp_path / "home", tmp_path / "back"
    moto, rcl = s3(moto_server), s3(rclone_server)
    moto.create_bucket(Bucket="gf-src")
    streamed = os.urandom(STREAMED_BYTES)
    expected = {"a b.txt": b"small", "empty": b"", "streamed.bin": streamed, "typed.json": b'{"a": 1}'}
    for key, body in expected.items():
        extra = {"ContentType": "application/json", "Metadata": {"o": "m"}} if key == "typed.json" else {}
        moto.put_object(Bucket="gf-src", Key=key, Body=body, **extra)
    rcl.create_bucket(Bucket="gf-dst")
    (back / "out").mkdir(parents=True)
    write_stores(home, rcl=rclone_server)
    with SourceProxy(moto_server) as source:
        # S3 → S3
        rows = run_job(
            home, source.url, transfer_job("gf-src", TargetStore="rcl", TargetResource="arn:aws:s3:::gf-dst")
        )
        assert {k: r[0] for k, r in rows.items()} == {"a+b.txt": "succeeded", **{
            k: "succeeded" for k in expected if k != "a b.txt"
        }}, rows  # fmt: skip
        for key in expected:
            assert source.requests_for("gf-src", key) == ["GET"], key
        assert {(path, rng) for path, rng in source.gets if path.startswith("/gf-src/")} == {
            (f"/gf-src/{key}", None) for key in expected
        }  # whole objects, not ranges: a ranged GET carries no stored checksum
        got = {k: rcl.get_object(Bucket="gf-dst", Key=k)["Body"].read() for k in expected}
        assert got == expected
        head = rcl.head_object(Bucket="gf-dst", Key="typed.json")
        metadata = {k.lower(): v for k, v in head["Metadata"].items()}  # rclone capitalises names
        assert (head["ContentType"], metadata) == ("application/json", {"o": "m"})

        # S3 → a folder
        source.log.clear()
        request = transfer_job("gf-src", TargetStore=f"file://{back}", TargetResource="arn:aws:s3:::out")
        rows = run_job(home, source.url, request)
        assert all(r[0] == "succeeded" for r in rows.values()), rows
        for key in expected:
            assert source.requests_for("gf-src", key) == ["GET"], key
    assert {p.name: p.read_bytes() for p in (back / "out").iterdir() if p.is_file()} == expected


# -- checksums -----------------------------------------------------------------------------------


def test_the_checksum_the_get_reports_catches_bytes_corrupted_on_the_way(
    tmp_path: Path, moto_server: str, rclone_server: str
) -> None:
    home = tmp_path / "home"
    moto, rcl = s3(moto_server), s3(rclone_server)
    moto.create_bucket(Bucket="gf-sum")
    moto.put_object(
        Bucket="gf-sum", Key="summed", Body=b"bytes with a stored checksum", ChecksumAlgorithm="CRC32C"
    )
    stored = moto.get_object(Bucket="gf-sum", Key="summed", ChecksumMode="ENABLED").get("ChecksumCRC32C")
    assert stored, "moto stores the checksum sent with the object"
    rcl.create_bucket(Bucket="gf-sum-dst")
    write_stores(home, rcl=rclone_server)
    with SourceProxy(moto_server, corrupt_gets=True) as source:
        request = transfer_job("gf-sum", TargetStore="rcl", TargetResource="arn:aws:s3:::gf-sum-dst")
        rows = run_job(home, source.url, request)
        assert source.requests_for("gf-sum", "summed") == ["GET"]
    status, code, message = rows["summed"]
    assert (status, code) == ("failed", "ChecksumMismatch")
    assert f"the source stores {stored}" in message
    assert rcl.list_objects_v2(Bucket="gf-sum-dst").get("Contents", []) == []


def test_bytes_corrupted_at_the_destination_fail_the_task_with_an_s3_source(
    tmp_path: Path, moto_server: str
) -> None:
    home = tmp_path / "home"
    moto = s3(moto_server)
    moto.create_bucket(Bucket="gf-corrupt-src")
    moto.put_object(Bucket="gf-corrupt-src", Key="small", Body=b"a small body")
    moto.put_object(Bucket="gf-corrupt-src", Key="parts.bin", Body=os.urandom(BIG_BYTES))
    moto.create_bucket(Bucket="gf-corrupt-dst")
    with SourceProxy(moto_server) as source, CountingProxy(moto_server, corrupt=True) as target:
        write_stores(home, corrupt=target.url)
        request = transfer_job(
            "gf-corrupt-src", TargetStore="corrupt", TargetResource="arn:aws:s3:::gf-corrupt-dst",
            PartSizeBytes=PART_BYTES,
        )  # fmt: skip
        rows = run_job(home, source.url, request)
        assert source.requests_for("gf-corrupt-src", "small") == ["GET"]
        assert "HEAD" not in source.requests_for("gf-corrupt-src", "parts.bin")
    assert {k: (r[0], r[1]) for k, r in rows.items()} == {
        "small": ("failed", "ChecksumMismatch"),
        "parts.bin": ("failed", "ChecksumMismatch"),
    }
    assert "is not the MD5 of the bytes sent" in rows["small"][2]
    assert rows["parts.bin"][2].startswith("part ")
    assert moto.list_objects_v2(Bucket="gf-corrupt-dst").get("Contents", []) == []
    assert uploads(moto, "gf-corrupt-dst") == []


# -- parts, skips, failures, and the pools -----------------------------------------------------------


async def test_objects_in_parts_streamed_bodies_and_skips_leave_no_connection_held(
    rclone_server: str,
) -> None:
    # rclone keeps connections alive (moto closes each): a connection not handed back would show.
    bodies = {
        "small": os.urandom(4096),
        "streamed.bin": os.urandom(STREAMED_BYTES),
        "big.bin": os.urandom(BIG_BYTES),
    }
    rcl = s3(rclone_server)
    rcl.create_bucket(Bucket="gf-pools")
    rcl.create_bucket(Bucket="gf-pools-dst")
    for key, body in bodies.items():
        rcl.put_object(Bucket="gf-pools", Key=key, Body=body)
    with SourceProxy(rclone_server) as proxy:
        source, target = store(proxy.url), store(rclone_server)
        try:
            op = copier(source, target, "gf-pools-dst")
            results = await apply_all(op, "gf-pools", list(bodies))
            assert all(r.succeeded for r in results.values()), results
            assert "Parts=3 (0 reused)" in results["big.bin"].message
            assert "Parts=" not in results["streamed.bin"].message
            assert (held_connections(source), held_connections(target)) == (0, 0)
            assert not [r for r in proxy.log if r.method == "HEAD"]
            assert [g for g in proxy.gets if g[0] == "/gf-pools/streamed.bin"] == [
                ("/gf-pools/streamed.bin", None)
            ]  # one GET: the body it opened went into the PutObject
            big = [rng for path, rng in proxy.gets if path == "/gf-pools/big.bin"]
            assert big[0] is None and all(big[1:]), big  # opened, closed, then read in ranges
            await op.close()

            proxy.log.clear()
            skip = copier(source, target, "gf-pools-dst", SkipExisting="SizeAndChecksum")
            skipped = await apply_all(skip, "gf-pools", list(bodies))
            assert all(r.message.startswith("skipped: identical") for r in skipped.values()), skipped
            # SkipExisting reads the source's HEAD, no body: a rerun over objects already there
            # (and an archived source object, which answers a HEAD but not a GET) is skipped.
            assert [f"{r.method} {r.path}" for r in proxy.log] == [f"HEAD /gf-pools/{key}" for key in bodies]
            assert (held_connections(source), held_connections(target)) == (0, 0)
            await skip.close()
        finally:
            await source.close()
            await target.close()
    for key, body in bodies.items():
        assert rcl.get_object(Bucket="gf-pools-dst", Key=key)["Body"].read() == body


async def test_a_missing_source_object_fails_its_task_with_no_such_key(moto_server: str) -> None:
    moto = s3(moto_server)
    moto.create_bucket(Bucket="gf-missing")
    moto.create_bucket(Bucket="gf-missing-dst")
    source, target = store(moto_server), store(moto_server)
    try:
        result = await copier(source, target, "gf-missing-dst").apply(task("gf-missing", "nothing here"))
    finally:
        await source.close()
        await target.close()
    assert (result.succeeded, result.error_code, result.http_status, result.retryable) == (
        False, "NoSuchKey", 404, False,
    )  # fmt: skip


async def test_a_body_cut_short_fails_its_task_retryably_and_writes_nothing(moto_server: str) -> None:
    moto = s3(moto_server)
    moto.create_bucket(Bucket="gf-cut")
    moto.create_bucket(Bucket="gf-cut-dst")
    sizes = {"small": 4096, "streamed.bin": STREAMED_BYTES}
    assert sizes["small"] <= CHECKED_GET_BUFFERED_MAX_BYTES < sizes["streamed.bin"]
    for key, size in sizes.items():
        moto.put_object(Bucket="gf-cut", Key=key, Body=os.urandom(size))
    with SourceProxy(moto_server, cut_gets=True) as proxy:
        source, target = store(proxy.url), store(moto_server)
        try:
            results = await apply_all(copier(source, target, "gf-cut-dst"), "gf-cut", list(sizes))
            assert held_connections(source) == 0
        finally:
            await source.close()
            await target.close()
    for key, result in results.items():
        assert (result.error_code, result.retryable) == ("ConnectionError", True), (key, result)
    assert moto.list_objects_v2(Bucket="gf-cut-dst").get("Contents", []) == []


async def test_a_server_that_checks_signatures_and_stores_checksums_answers_the_checked_get(
    seaweedfs_server: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The signed x-amz-checksum-mode header must pass SeaweedFS's SigV4 check, and the stored
    # checksum it returns must agree with the bytes (a mismatch would fail the task).
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs_server.secret_key)
    client = seaweedfs_server.client()
    client.create_bucket(Bucket="gf-weed")
    client.create_bucket(Bucket="gf-weed-dst")
    bodies = {"small": b"a small body", "streamed.bin": os.urandom(STREAMED_BYTES)}
    for key, body in bodies.items():
        client.put_object(Bucket="gf-weed", Key=key, Body=body, ChecksumAlgorithm="CRC32C")
    with SourceProxy(seaweedfs_server.endpoint) as proxy:
        source, target = store(proxy.url), store(seaweedfs_server.endpoint)
        try:
            opened = await source.get_with_checksum("gf-weed", "small")
            await opened.aclose()
            results = await apply_all(copier(source, target, "gf-weed-dst"), "gf-weed", list(bodies))
            assert held_connections(source) == 0
        finally:
            await source.close()
            await target.close()
        assert not [r for r in proxy.log if r.method == "HEAD"]
    assert opened.head.size == len(bodies["small"]) and opened.head.etag and opened.buffered
    hasher = new_hasher(ChecksumAlgorithm.CRC32C)
    hasher.update(bodies["small"])
    assert opened.head.checksum == ChecksumValue(ChecksumAlgorithm.CRC32C, encode(hasher.digest()))
    assert all(r.succeeded for r in results.values()), results
    for key, body in bodies.items():
        assert client.get_object(Bucket="gf-weed-dst", Key=key)["Body"].read() == body


async def test_without_the_lean_path_the_checked_get_goes_through_botocore(rclone_server: str) -> None:
    bodies = {
        "small": os.urandom(4096),
        "streamed.bin": os.urandom(STREAMED_BYTES),
        "big.bin": os.urandom(BIG_BYTES),
    }
    rcl = s3(rclone_server)
    rcl.create_bucket(Bucket="gf-boto")
    rcl.create_bucket(Bucket="gf-boto-dst")
    for key, body in bodies.items():
        rcl.put_object(Bucket="gf-boto", Key=key, Body=body)
    with SourceProxy(rclone_server) as proxy:
        config = S3Config(endpoint_url=proxy.url, addressing_style="path", lean_path=False)
        source, target = S3Store(config), store(rclone_server)
        try:
            op = copier(source, target, "gf-boto-dst")
            results = await apply_all(op, "gf-boto", [*bodies, "missing"])
            await op.close()
            assert source._shared is not None and not source._shared.pools  # nothing went lean
        finally:
            await source.close()
            await target.close()
        assert not [r for r in proxy.log if r.method == "HEAD"]
        assert [g for g in proxy.gets if g[0] == "/gf-boto/streamed.bin"] == [("/gf-boto/streamed.bin", None)]
    missing = results.pop("missing")
    assert (missing.error_code, missing.http_status) == ("NoSuchKey", 404)
    assert all(r.succeeded for r in results.values()), results
    assert "Parts=3 (0 reused)" in results["big.bin"].message
    for key, body in bodies.items():
        assert rcl.get_object(Bucket="gf-boto-dst", Key=key)["Body"].read() == body


async def test_headers_it_cannot_read_leave_no_connection_held() -> None:
    """A GET answered with a long body and a header that does not parse raises as a HEAD
    would, and hands its connection back (a held one would stall every later request)."""
    size = 4 * 1024 * 1024

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(
                    f'HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nETag: "e"\r\n'
                    "Last-Modified: Wed, 02 Dec 2026 14:10:55 GMT\r\n"
                    "x-amz-tagging-count: abc\r\n\r\n".encode()
                )
                writer.write(b"x" * size)
                await writer.drain()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    source = S3Store(
        S3Config(endpoint_url=f"http://127.0.0.1:{port}", addressing_style="path", max_connections=1)
    )
    try:
        with pytest.raises(ValueError):
            await source.get_with_checksum("bkt", "k")
        assert held_connections(source) == 0
    finally:
        await source.close()
        server.close()


async def test_a_server_that_checks_signatures_takes_checksummed_bodies_unsigned_on_loopback(
    seaweedfs_server: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On 127.0.0.1 a checksummed PutObject or UploadPart signs UNSIGNED-PAYLOAD instead of the
    # body's SHA-256 (lean.LeanS3.request): SeaweedFS checks the signature, and still refuses a
    # body that does not match the signed checksum.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs_server.secret_key)
    seaweedfs_server.client().create_bucket(Bucket="gf-unsigned")
    target = store(seaweedfs_server.endpoint)
    first, last = bytearray(os.urandom(PART_BYTES)), bytearray(b"the last part")

    def crc32c(body: bytes | bytearray) -> ChecksumValue:
        hasher = new_hasher(ChecksumAlgorithm.CRC32C)
        hasher.update(body)
        return ChecksumValue(ChecksumAlgorithm.CRC32C, encode(hasher.digest()))

    try:
        upload_id = await target.create_multipart_upload(
            "gf-unsigned", "k", attributes=ObjectAttributes(), algorithm=ChecksumAlgorithm.CRC32C,
            checksum_type=ChecksumType.COMPOSITE,
        )  # fmt: skip
        part = await target.upload_part("gf-unsigned", "k", upload_id, 1, first, checksum=crc32c(first))
        assert part.checksum == crc32c(first).value
        with pytest.raises(StorageError) as refused:
            await target.upload_part("gf-unsigned", "k", upload_id, 2, last, checksum=crc32c(b"other bytes"))
        assert refused.value.code == "BadDigest"
        written = await target.put_with_checksum(
            "gf-unsigned",
            "small",
            b"small body",
            attributes=ObjectAttributes(),
            checksum=crc32c(b"small body"),
        )
        assert written.checksum == crc32c(b"small body")
        with pytest.raises(StorageError) as refused:
            await target.put_with_checksum(
                "gf-unsigned", "bad", b"small body", attributes=ObjectAttributes(), checksum=crc32c(b"other")
            )
        assert refused.value.code == "BadDigest"
    finally:
        await target.close()
    assert (
        seaweedfs_server.client().get_object(Bucket="gf-unsigned", Key="small")["Body"].read()
        == b"small body"
    )
