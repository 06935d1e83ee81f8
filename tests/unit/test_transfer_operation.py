"""S3batchTransfer on memory stores: parameters, attributes carried, verification, resume, skip
modes, the memory bound; and how TargetStore is resolved (stores.toml, server.toml)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from s3batch.domain.checksums import ChecksumAlgorithm, ChecksumType, composite_checksum, new_hasher
from s3batch.domain.named_stores import parse_server_stores, parse_store, parse_stores_file
from s3batch.domain.stores import LocalConfig, S3Config
from s3batch.domain.task import Task
from s3batch.domain.transfer import MAX_PARTS, MIB, KeyMapping, part_size_for, part_sizes
from s3batch.domain.uploads import CheckedHead, ChecksumValue, ObjectAttributes, UploadedPart, WrittenObject
from s3batch.errors import BadRequest, ConfigError, InvalidRequest, StorageError
from s3batch.functions.registry import FunctionScope
from s3batch.operations import kind_of
from s3batch.operations._transfer_stream import ByteBudget, PartBuffers
from s3batch.operations.base import JobContext, OperationContext
from s3batch.operations.transfer import Transfer
from s3batch.service.stores import STORES_FILE, target_stores
from s3batch.storage.capabilities import CheckedGet
from s3batch.storage.memory import MemoryStore

SRC, DST = "src", "dst"
PART = 5 * MIB
#: A 3-part object at the smallest part size S3 allows.
BIG = bytes(range(256)) * (PART * 2 // 256) + b"tail" * 1000


def params(**extra: Any) -> dict[str, Any]:
    return {"TargetResource": f"arn:aws:s3:::{DST}", "PartSizeBytes": PART, **extra}


async def stores() -> tuple[MemoryStore, MemoryStore]:
    source, target = MemoryStore(), MemoryStore()
    await source.create_bucket(SRC)
    await target.create_bucket(DST)
    return source, target


def operation(source: MemoryStore, target: MemoryStore, **extra: Any) -> Transfer:
    """A Transfer writing into `target` as the job's own store would (no TargetStore)..."""
    job = JobContext(job_id="j", account_id="1", region="us-east-1", storage=LocalConfig(root="/unused"))
    op = Transfer(params(**extra), OperationContext(job=job, store=source))
    # ...then pointed at a second memory store, which a StorageConfig cannot name.
    from s3batch.operations._transfer_copy import Copier

    op.target = target
    op.copier = Copier(op.plan, source, target)
    return op


def task(key: str) -> Task:
    return Task(seq=0, bucket=SRC, raw_key=key, key=key)


def crc32c(body: bytes) -> bytes:
    hasher = new_hasher(ChecksumAlgorithm.CRC32C)
    hasher.update(body)
    return hasher.digest()


# -- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"TargetResource": 42}, "TargetResource"),
        ({"SkipExisting": "Always"}, "SkipExisting"),
        ({"ChecksumAlgorithm": "CRC16"}, "ChecksumAlgorithm"),
        ({"PartSizeBytes": 1024}, "PartSizeBytes"),
        ({"TargetStore": "http://169.254.169.254/"}, "TargetStore"),
        ({"Endpoint": "http://x"}, "Endpoint"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(bad: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest, match=field):
        kind_of("S3batchTransfer").validate({**params(), **bad})


def test_part_size_grows_to_fit_ten_thousand_parts_in_whole_mib() -> None:
    assert part_size_for(100 * MIB, 8 * MIB) == 8 * MIB
    big = 200 * 1024**3
    size = part_size_for(big, 8 * MIB)
    assert size % MIB == 0 and len(part_sizes(big, size)) <= MAX_PARTS and size > 8 * MIB
    with pytest.raises(ValueError):
        part_size_for(MAX_PARTS * 5 * 1024**3 + 1, 8 * MIB)


def test_key_mapping_strips_then_prefixes() -> None:
    assert KeyMapping("photos/", "copy").target_key("photos/a b.jpg") == "copy/a b.jpg"
    assert KeyMapping("", "copy/").target_key("x") == "copy/x"
    assert KeyMapping("photos/", "").target_key("other/x") is None


# -- copying ---------------------------------------------------------------------------------------


async def test_a_small_object_goes_in_one_put_with_its_attributes_and_a_verified_checksum() -> None:
    source, target = await stores()
    await source.put_with_checksum(
        SRC, "a b+%ü", b"hello", checksum=None,
        attributes=ObjectAttributes(content_type="text/x", metadata={"m": "1"}, tags={"t": "v"}),
    )  # fmt: skip
    result = await operation(source, target).apply(task("a b+%ü"))
    assert result.succeeded, result
    info = await target.head(DST, "a b+%ü")
    assert (await target.get_bytes(DST, "a b+%ü"), info.content_type, dict(info.metadata)) == (
        b"hello", "text/x", {"m": "1"},
    )  # fmt: skip
    assert await target.get_tags(DST, "a b+%ü") == {"t": "v"}
    assert result.message == "copied; ChecksumAlgorithm=CRC32C; Checksum=mnG7TA==; Bytes=5"
    assert [c[0] for c in target.calls if c[0].startswith(("put", "upload"))] == ["put_with_checksum"]


async def test_an_empty_object_is_copied() -> None:
    source, target = await stores()
    await source.put_bytes(SRC, "empty", b"")
    result = await operation(source, target).apply(task("empty"))
    assert result.succeeded and await target.get_bytes(DST, "empty") == b""
    assert "Bytes=0" in result.message


async def test_a_large_object_goes_in_parts_with_a_composite_checksum() -> None:
    source, target = await stores()
    await source.put_bytes(SRC, "big", BIG)
    result = await operation(source, target, TargetKeyPrefix="copy").apply(task("big"))
    assert result.succeeded, result
    assert await target.get_bytes(DST, "copy/big") == BIG
    chunks = [BIG[i : i + PART] for i in range(0, len(BIG), PART)]
    expected = composite_checksum(ChecksumAlgorithm.CRC32C, [crc32c(c) for c in chunks])
    assert f"Checksum={expected}; Bytes={len(BIG)}; Parts=3 (0 reused)" in result.message
    assert [u async for u in target.list_multipart_uploads(DST)] == []


async def test_crc64nvme_uploads_are_full_object() -> None:
    source, target = await stores()
    await source.put_bytes(SRC, "big", BIG)
    result = await operation(source, target, ChecksumAlgorithm="CRC64NVME").apply(task("big"))
    assert result.succeeded, result
    hasher = new_hasher(ChecksumAlgorithm.CRC64NVME)
    hasher.update(BIG)
    import base64

    assert f"Checksum={base64.b64encode(hasher.digest()).decode()};" in result.message


class CorruptingStore(MemoryStore):
    """A destination that flips a byte of each part and does not check the checksum sent (as
    moto and rclone do not): what it answers describes the corrupted bytes."""

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        body: bytes,
        *,
        checksum: ChecksumValue | None,
    ) -> UploadedPart:
        corrupted = bytes([body[0] ^ 1]) + body[1:]
        return await super().upload_part(bucket, key, upload_id, number, corrupted, checksum=None)

    async def put_with_checksum(
        self,
        bucket: str,
        key: str,
        body: bytes,
        *,
        attributes: ObjectAttributes,
        checksum: ChecksumValue | None,
    ) -> Any:
        corrupted = bytes([body[0] ^ 1]) + body[1:]
        return await super().put_with_checksum(bucket, key, corrupted, attributes=attributes, checksum=None)


async def test_a_corrupted_part_fails_the_task_and_aborts_the_upload() -> None:
    source, _ = await stores()
    target = CorruptingStore()
    await target.create_bucket(DST)
    await source.put_bytes(SRC, "big", BIG)
    await source.put_bytes(SRC, "small", b"small body")
    op = operation(source, target)
    big, small = await op.apply(task("big")), await op.apply(task("small"))
    assert (big.error_code, small.error_code) == ("ChecksumMismatch", "ChecksumMismatch")
    assert "part " in big.message and "CRC32C" in big.message
    assert [u async for u in target.list_multipart_uploads(DST)] == []
    assert [i.key async for i in target.list_objects(DST)] == []  # the corrupted small one removed


class HeadCountingStore(MemoryStore):
    """A destination that counts HEADs; `answer_checksum=False` drops the checksum from the
    completion's answer (as rclone and moto give none), `head_extra` misreports HEAD's size."""

    def __init__(self, *, answer_checksum: bool = True, head_extra: int = 0) -> None:
        super().__init__()
        self.heads = 0
        self.answer_checksum, self.head_extra = answer_checksum, head_extra

    async def complete_multipart_upload(self, *args: Any, **kwargs: Any) -> WrittenObject:
        written = await super().complete_multipart_upload(*args, **kwargs)
        return written if self.answer_checksum else dataclasses.replace(written, checksum=None)

    async def head_with_checksum(
        self, bucket: str, key: str, version_id: str | None = None, *, etag: bool = True
    ) -> CheckedHead:
        self.heads += 1
        head = await super().head_with_checksum(bucket, key, version_id, etag=etag)
        info = dataclasses.replace(head.info, size=head.info.size + self.head_extra)
        return dataclasses.replace(head, info=info)


async def test_a_head_checks_the_size_even_when_the_answer_carries_the_expected_checksum() -> None:
    # A full-object checksum travels in the completion request: a server may echo it unchecked.
    source, _ = await stores()
    target = HeadCountingStore(head_extra=1)
    await target.create_bucket(DST)
    await source.put_bytes(SRC, "big", BIG)
    result = await operation(source, target).apply(task("big"))
    assert result.error_code == "ChecksumMismatch", result
    assert target.heads == 1
    assert [i.key async for i in target.list_objects(DST)] == []  # removed


async def test_without_a_checksum_in_the_answer_a_head_checks_the_size() -> None:
    source, _ = await stores()
    target = HeadCountingStore(answer_checksum=False, head_extra=1)
    await target.create_bucket(DST)
    await source.put_bytes(SRC, "big", BIG)
    result = await operation(source, target).apply(task("big"))
    assert result.error_code == "ChecksumMismatch", result
    assert target.heads == 1
    assert f"{len(BIG) + 1} bytes; {len(BIG)} were sent" in result.message
    assert [i.key async for i in target.list_objects(DST)] == []  # removed


async def test_tags_are_checked_after_a_completion() -> None:
    source, _ = await stores()
    target = HeadCountingStore()
    await target.create_bucket(DST)
    await source.put_bytes(SRC, "big", BIG)
    await source.put_tags(SRC, "big", {"k": "v"})
    result = await operation(source, target).apply(task("big"))
    assert result.succeeded, result
    assert target.heads == 1
    assert await target.get_tags(DST, "big") == {"k": "v"}


async def test_a_store_that_checks_checksums_refuses_with_bad_digest_reported_as_a_mismatch() -> None:
    class Lying(MemoryStore):
        async def put_with_checksum(self, bucket: str, key: str, body: bytes, **kw: Any) -> Any:
            return await super().put_with_checksum(bucket, key, body[::-1], **kw)  # checked: BadDigest

    source, _ = await stores()
    target = Lying()
    await target.create_bucket(DST)
    await source.put_bytes(SRC, "k", b"abc")
    result = await operation(source, target).apply(task("k"))
    assert result.error_code == "ChecksumMismatch" and "BadDigest" in result.message


async def test_an_interrupted_upload_is_resumed_keeping_only_parts_with_the_source_bytes() -> None:
    source, target = await stores()
    await source.put_bytes(SRC, "big", BIG)
    upload_id = await target.create_multipart_upload(
        DST, "big", attributes=ObjectAttributes(), algorithm=ChecksumAlgorithm.CRC32C,
        checksum_type=ChecksumType.COMPOSITE,
    )  # fmt: skip
    await target.upload_part(DST, "big", upload_id, 1, BIG[:PART], checksum=None)  # right bytes
    await target.upload_part(DST, "big", upload_id, 2, b"x" * PART, checksum=None)  # wrong bytes
    target.calls.clear()
    result = await operation(source, target).apply(task("big"))
    assert result.succeeded, result
    assert "Parts=3 (1 reused)" in result.message
    assert sorted(c[3] for c in target.calls if c[0] == "upload_part") == ["2", "3"]
    assert ("list_parts", DST, "big") in target.calls
    assert await target.get_bytes(DST, "big") == BIG


async def test_a_retryable_failure_keeps_the_upload_for_the_retry_and_close_aborts_an_abandoned_one() -> None:
    source, target = await stores()
    await source.put_bytes(SRC, "big", BIG)
    target.fail("upload_part", StorageError("SlowDown", "slow down", 503, retryable=True), times=1)
    op = operation(source, target)
    first = await op.apply(task("big"))
    assert first.retryable and first.error_code == "SlowDown"
    assert len([u async for u in target.list_multipart_uploads(DST)]) == 1
    retried = await op.apply(task("big"))
    assert retried.succeeded and await target.get_bytes(DST, "big") == BIG
    target.fail("upload_part", StorageError("SlowDown", "slow down", 503, retryable=True), times=1)
    await source.put_bytes(SRC, "big2", BIG)
    assert (await op.apply(task("big2"))).retryable
    await op.close()  # the job ended with that task failed: its upload is abandoned
    assert [u async for u in target.list_multipart_uploads(DST)] == []


async def test_skip_existing_second_run_changes_nothing() -> None:
    source, target = await stores()
    await source.put_bytes(SRC, "small", b"small body")
    await source.put_bytes(SRC, "big", BIG)
    op = operation(source, target, SkipExisting="SizeAndChecksum")
    assert all([(await op.apply(task("small"))).succeeded, (await op.apply(task("big"))).succeeded])
    target.calls.clear()
    small, big = await op.apply(task("small")), await op.apply(task("big"))
    assert small.message.startswith("skipped: identical (same size and ETag)")
    assert big.message.startswith("skipped: identical")
    assert not [c for c in target.calls if c[0].startswith(("put", "upload", "create", "complete"))]
    await source.put_bytes(SRC, "small", b"other body")  # same size, other bytes
    changed = await op.apply(task("small"))
    assert changed.message.startswith("copied") and await target.get_bytes(DST, "small") == b"other body"


async def test_size_only_skips_on_size_alone() -> None:
    source, target = await stores()
    await source.put_bytes(SRC, "k", b"aaaa")
    await target.put_bytes(DST, "k", b"bbbb")
    result = await operation(source, target, SkipExisting="SizeOnly").apply(task("k"))
    assert result.message.startswith("skipped: identical (same size)")


async def test_a_key_outside_source_key_prefix_fails_its_task() -> None:
    source, target = await stores()
    await source.put_bytes(SRC, "other/k", b"x")
    result = await operation(source, target, SourceKeyPrefix="photos/").apply(task("other/k"))
    assert result.error_code == "InvalidRequest" and "SourceKeyPrefix" in result.message


async def test_a_source_that_shrinks_while_read_is_retryable() -> None:
    class Shrinking(MemoryStore):
        async def iter_bytes(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            yield b"short"

    source = Shrinking()
    await source.create_bucket(SRC)
    _, target = await stores()
    await source.put_bytes(SRC, "k", b"longer body")
    result = await operation(source, target).apply(task("k"))
    assert result.error_code == "SourceChanged" and result.retryable


async def test_memory_stays_within_the_byte_budget() -> None:
    import asyncio

    budget = ByteBudget(10)

    async def hold(size: int) -> None:
        await budget.claim(size)
        await asyncio.sleep(0.001)
        budget.release(size)

    await asyncio.gather(*(hold(n) for n in (4, 4, 4, 20, 3, 3)))
    assert budget.peak <= 20 and budget.claimed == 0  # 20 > capacity: it went alone


async def test_a_job_without_its_target_store_resolved_fails_each_task() -> None:
    source, _ = await stores()
    job = JobContext(job_id="j", account_id="1", region="us-east-1", storage=LocalConfig(root="/unused"))
    op = Transfer(params(TargetStore="backup"), OperationContext(job=job, store=source))
    result = await op.apply(task("k"))
    assert result.error_code == "InvalidRequest" and "backup" in result.message


# -- named stores --------------------------------------------------------------------------------


def test_named_stores_parse_and_refuse_secrets() -> None:
    backup = {"endpoint_url": "http://127.0.0.1:9000", "profile": "nas", "addressing_style": "path"}
    parsed = parse_stores_file({"stores": {"backup": backup, "nas": {"root": "/mnt/nas"}}}, "stores.toml")
    assert parsed == {
        "backup": S3Config(endpoint_url="http://127.0.0.1:9000", profile="nas", addressing_style="path"),
        "nas": LocalConfig(root="/mnt/nas"),
    }
    with pytest.raises(ConfigError, match="aws_secret_access_key: credentials never go in this file"):
        parse_store({"endpoint_url": "http://h:1", "aws_secret_access_key": "x"}, "s")
    with pytest.raises(ConfigError, match="credentials never go in the URL"):
        parse_store({"endpoint_url": "http://user:pw@h:1"}, "s")
    with pytest.raises(ConfigError, match="unknown field"):
        parse_store({"endpoint": "http://h:1"}, "s")
    with pytest.raises(ConfigError, match="absolute"):
        parse_store({"root": "relative/x"}, "s")


def test_server_stores_are_per_account() -> None:
    entries = [
        {"account_id": "111", "name": "backup", "endpoint_url": "http://10.0.0.5:9000"},
        {"account_id": "*", "name": "shared", "root": "/srv/shared"},
    ]
    by_account = parse_server_stores(entries, "server.toml [[stores]]")
    assert set(by_account) == {"111", "*"}
    with pytest.raises(ConfigError, match="defined twice"):
        parse_server_stores(entries + entries[:1], "server.toml")


def _request(store: str) -> dict[str, Any]:
    return {"Operation": {"S3batchTransfer": params(TargetStore=store)}}


def test_a_server_caller_names_only_its_registered_stores(tmp_path: Path) -> None:
    (tmp_path / STORES_FILE).write_text('[stores.local-only]\nroot = "/x"\n')
    scope = FunctionScope(stores={"backup": S3Config(endpoint_url="http://10.0.0.5:9000")})
    assert target_stores(_request("backup"), scope, tmp_path) == {
        "backup": S3Config(endpoint_url="http://10.0.0.5:9000")
    }
    for refused in ("local-only", "other", "file:///etc", "s3://"):
        with pytest.raises(InvalidRequest, match="not a store this server lets the account name"):
            target_stores(_request(refused), scope, tmp_path)


def test_the_cli_names_stores_of_stores_toml_and_folder_urls(tmp_path: Path) -> None:
    (tmp_path / STORES_FILE).write_text('[stores.nas]\nroot = "/mnt/nas"\n')
    assert target_stores(_request("nas"), {}, tmp_path) == {"nas": LocalConfig(root="/mnt/nas")}
    assert target_stores(_request(f"file://{tmp_path}"), {}, tmp_path) == {
        f"file://{tmp_path}": LocalConfig(root=str(tmp_path))
    }
    with pytest.raises(BadRequest, match="no such store"):
        target_stores(_request("missing"), {}, tmp_path)
    assert target_stores({"Operation": {"S3PutObjectCopy": {}}}, {}, tmp_path) is None


# -- a source read GET first ---------------------------------------------------------------------


class GetFirstStore(MemoryStore):
    """A source whose GET answers what its HEAD would, as S3's GetObject with checksum mode does
    (capabilities.CheckedGetStore). `buffered`: what it says of the body (False: as if still
    arriving on a held connection); `extra`: bytes its body has beyond (negative: short of) the
    size its head says; `stored`: the checksum its head reports."""

    def __init__(self, *, buffered: bool = True, extra: int = 0, stored: ChecksumValue | None = None) -> None:
        super().__init__()
        self.buffered, self.extra, self.stored = buffered, extra, stored
        #: ("get", key), ("read", key, n bytes), ("closed", key) in order, and the source's HEADs.
        self.events: list[tuple[str, ...]] = []

    async def head_with_checksum(
        self, bucket: str, key: str, version_id: str | None = None, *, etag: bool = True
    ) -> CheckedHead:
        self.events.append(("head", key))
        return await super().head_with_checksum(bucket, key, version_id, etag=etag)

    async def get_with_checksum(self, bucket: str, key: str, version_id: str | None = None) -> CheckedGet:
        self.events.append(("get", key))
        head = await super().head_with_checksum(bucket, key, version_id)
        head = dataclasses.replace(head, checksum=self.stored)
        body = await super().get_bytes(bucket, key, version_id)
        body = body + b"x" * self.extra if self.extra >= 0 else body[: self.extra]

        async def chunks() -> AsyncIterator[bytes]:
            for offset in range(0, len(body), MIB):
                piece = body[offset : offset + MIB]
                self.events.append(("read", key, str(len(piece))))
                yield piece

        return CheckedGet(
            head, chunks(), buffered=self.buffered, release=lambda: self.events.append(("closed", key))
        )


async def get_first_stores(**kwargs: Any) -> tuple[GetFirstStore, MemoryStore]:
    source = GetFirstStore(**kwargs)
    await source.create_bucket(SRC)
    _, target = await stores()
    return source, target


async def test_a_small_object_read_get_first_makes_no_head_and_puts_the_body_it_got() -> None:
    source, target = await get_first_stores()
    await source.put_with_checksum(
        SRC, "k", b"hello", checksum=None,
        attributes=ObjectAttributes(content_type="text/x", metadata={"m": "1"}, tags={"t": "v"}),
    )  # fmt: skip
    result = await operation(source, target).apply(task("k"))
    assert result.message == "copied; ChecksumAlgorithm=CRC32C; Checksum=mnG7TA==; Bytes=5"
    assert source.events == [("get", "k"), ("read", "k", "5"), ("closed", "k")]
    assert not [c for c in source.calls if c[0] in ("iter_bytes", "head")]
    assert await target.get_bytes(DST, "k") == b"hello"
    assert await target.get_tags(DST, "k") == {"t": "v"}  # the GET's tag count asked for them
    assert (await target.head(DST, "k")).content_type == "text/x"


@pytest.mark.parametrize("extra", [-1, 1])
async def test_a_get_first_body_of_another_size_than_its_answer_says_is_retryable(extra: int) -> None:
    source, target = await get_first_stores(extra=extra)
    await source.put_bytes(SRC, "k", b"some body")
    result = await operation(source, target).apply(task("k"))
    assert result.error_code == "SourceChanged" and result.retryable
    assert [i.key async for i in target.list_objects(DST)] == []


async def test_the_stored_checksum_a_get_reports_is_checked_against_the_bytes_read() -> None:
    stored = ChecksumValue(ChecksumAlgorithm.CRC32C, "AAAAAA==", ChecksumType.FULL_OBJECT)
    source, target = await get_first_stores(stored=stored)
    await source.put_bytes(SRC, "k", b"hello")
    result = await operation(source, target).apply(task("k"))
    assert result.error_code == "ChecksumMismatch"
    assert "the source stores AAAAAA==" in result.message
    assert [i.key async for i in target.list_objects(DST)] == []


async def test_an_object_in_parts_closes_the_get_unread_and_reads_its_parts() -> None:
    source, target = await get_first_stores()
    await source.put_bytes(SRC, "big", BIG)
    result = await operation(source, target).apply(task("big"))
    assert result.succeeded and "Parts=3 (0 reused)" in result.message, result
    assert source.events == [("get", "big"), ("closed", "big")]  # no byte of it read
    assert [c[0] for c in source.calls if c[0] == "iter_bytes"] == ["iter_bytes"]
    assert await target.get_bytes(DST, "big") == BIG


async def test_skip_existing_reads_the_source_head_and_no_body() -> None:
    source, target = await get_first_stores()
    await source.put_bytes(SRC, "small", b"small body")
    await source.put_bytes(SRC, "big", BIG)
    op = operation(source, target, SkipExisting="SizeAndChecksum")
    assert all([(await op.apply(task("small"))).succeeded, (await op.apply(task("big"))).succeeded])
    source.events.clear()
    target.calls.clear()
    small, big = await op.apply(task("small")), await op.apply(task("big"))
    assert small.message.startswith("skipped: identical (same size and ETag)")
    assert big.message.startswith("skipped: identical")
    # A HEAD, no GET opened: a rerun over what is there reads no bodies.
    assert source.events == [("head", "small"), ("head", "big")]
    assert not [c for c in target.calls if c[0].startswith(("put", "upload", "create", "complete"))]


async def test_a_body_still_arriving_never_waits_for_memory_holding_its_connection() -> None:
    import asyncio

    source, target = await get_first_stores(buffered=False)
    await source.put_bytes(SRC, "k", b"a body to copy")
    op = operation(source, target)
    assert op.copier is not None
    budget = op.copier.budget
    await budget.claim(budget.capacity)  # every byte of memory is taken
    copying = asyncio.create_task(op.apply(task("k")))
    for _ in range(100):
        await asyncio.sleep(0)
    assert not copying.done()
    assert source.events == [("get", "k"), ("closed", "k")]  # closed before waiting
    budget.release(budget.capacity)
    result = await copying
    assert result.succeeded, result
    assert [c[0] for c in source.calls if c[0] == "iter_bytes"] == ["iter_bytes"]  # read again
    assert await target.get_bytes(DST, "k") == b"a body to copy"
    assert budget.claimed == 0


async def test_a_body_still_arriving_is_read_at_once_when_memory_is_free() -> None:
    source, target = await get_first_stores(buffered=False)
    await source.put_bytes(SRC, "k", b"x" * (3 * MIB))
    result = await operation(source, target).apply(task("k"))
    assert result.succeeded, result
    assert [e[0] for e in source.events] == ["get", "read", "read", "read", "closed"]
    assert not [c for c in source.calls if c[0] == "iter_bytes"]


async def test_a_missing_source_fails_its_task_with_the_stores_code() -> None:
    source, target = await get_first_stores()
    result = await operation(source, target).apply(task("missing"))
    assert (result.error_code, result.http_status, result.retryable) == ("NoSuchKey", 404, False)


def test_part_buffers_keep_idle_buffers_by_size_up_to_their_capacity() -> None:
    buffers = PartBuffers(capacity=10)
    a = buffers.take(4)
    assert len(a) == 4
    buffers.give(a)
    assert buffers.take(4) is a  # the same buffer again
    assert buffers.take(4) is not a  # none left: a new one
    b, c, d = buffers.take(4), buffers.take(4), buffers.take(3)
    for buffer in (b, c, d):
        buffers.give(buffer)
    # 4 + 4 fit in 10; the 3-byte one would not: it is dropped, not kept
    assert buffers.take(3) is not d
    assert {id(buffers.take(4)), id(buffers.take(4))} == {id(b), id(c)}
