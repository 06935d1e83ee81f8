"""S3batchTransfer computes the MD5 of a part only where the destination's answer leaves the
ETag as the evidence (no checksum in it), and still checks that ETag there: per part, per
single PutObject, per listed part on resume, and the completed object's multipart ETag when
every part's MD5 was computed (docs/transfer.md, "Checksums")."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from tests.unit.test_transfer_operation import BIG, DST, PART, SRC, operation, stores, task

import s3batch.operations._transfer_stream as transfer_stream
from s3batch.domain.checksums import ChecksumAlgorithm, ChecksumType
from s3batch.domain.uploads import ObjectAttributes, UploadedPart, WrittenObject
from s3batch.storage.memory import MemoryStore

SMALL = b"small body"
#: An MD5 ETag of no bytes the transfer sends.
OTHER_MD5 = hashlib.md5(b"other").hexdigest()


@pytest.fixture
def md5_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The sizes of the bodies the transfer hashes with MD5 (its own hashing only: the stores'
    ETags are computed elsewhere)."""
    calls: list[int] = []

    def md5(data: Any = b"", **kwargs: Any) -> Any:
        calls.append(len(data))
        return hashlib.md5(data, **kwargs)

    monkeypatch.setattr(transfer_stream, "hashlib", SimpleNamespace(md5=md5))
    yield calls


class NoChecksumStore(MemoryStore):
    """A destination that answers and lists no checksum (as rclone serve s3 and moto do), so
    its ETags are the evidence; `wrong` makes those ETags another's: "part" each part's and the
    single PutObject's, "object" the completed object's."""

    def __init__(self, wrong: str | None = None) -> None:
        super().__init__()
        self.wrong = wrong

    async def put_with_checksum(self, *args: Any, **kwargs: Any) -> WrittenObject:
        written = await super().put_with_checksum(*args, **kwargs)
        etag = OTHER_MD5 if self.wrong == "part" else written.etag
        return dataclasses.replace(written, etag=etag, checksum=None)

    async def upload_part(self, *args: Any, **kwargs: Any) -> UploadedPart:
        part = await super().upload_part(*args, **kwargs)
        etag = OTHER_MD5 if self.wrong == "part" else part.etag
        return dataclasses.replace(part, etag=etag, checksum=None)

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> list[UploadedPart]:
        return [
            dataclasses.replace(p, checksum=None) for p in await super().list_parts(bucket, key, upload_id)
        ]

    async def complete_multipart_upload(self, *args: Any, **kwargs: Any) -> WrittenObject:
        written = await super().complete_multipart_upload(*args, **kwargs)
        etag = f"{OTHER_MD5}-3" if self.wrong == "object" else written.etag
        return dataclasses.replace(written, etag=etag, checksum=None)


async def no_checksum_stores(wrong: str | None = None) -> tuple[MemoryStore, NoChecksumStore]:
    source, _ = await stores()
    target = NoChecksumStore(wrong)
    await target.create_bucket(DST)
    await source.put_bytes(SRC, "big", BIG)
    await source.put_bytes(SRC, "small", SMALL)
    return source, target


async def test_a_destination_that_answers_checksums_costs_no_md5(md5_calls: list[int]) -> None:
    source, target = await stores()
    await source.put_bytes(SRC, "big", BIG)
    await source.put_bytes(SRC, "small", SMALL)
    op = operation(source, target)
    big, small = await op.apply(task("big")), await op.apply(task("small"))
    assert big.succeeded and small.succeeded, (big, small)
    assert "Parts=3 (0 reused)" in big.message
    assert md5_calls == []
    assert await target.get_bytes(DST, "big") == BIG


async def test_a_destination_that_answers_no_checksum_has_its_etags_checked(md5_calls: list[int]) -> None:
    source, target = await no_checksum_stores()
    op = operation(source, target)
    big, small = await op.apply(task("big")), await op.apply(task("small"))
    assert big.succeeded and small.succeeded, (big, small)
    # Each part's MD5 (and the small object's), hashed once each from the bytes held; then the
    # multipart ETag's MD5 over the parts' three binary MD5s.
    assert sorted(md5_calls) == sorted([len(SMALL), PART, PART, len(BIG) - 2 * PART, 3 * 16])


@pytest.mark.parametrize("key", ["big", "small"])
async def test_a_wrong_etag_without_a_checksum_fails_the_task(key: str) -> None:
    source, target = await no_checksum_stores(wrong="part")
    result = await operation(source, target).apply(task(key))
    assert result.error_code == "ChecksumMismatch", result
    assert f"ETag {OTHER_MD5} is not the MD5 of the bytes sent" in result.message
    assert [u async for u in target.list_multipart_uploads(DST)] == []
    assert [i.key async for i in target.list_objects(DST)] == []


async def test_a_wrong_multipart_etag_fails_the_task_when_every_part_was_hashed() -> None:
    source, target = await no_checksum_stores(wrong="object")
    result = await operation(source, target).apply(task("big"))
    assert result.error_code == "ChecksumMismatch", result
    assert f"ETag {OTHER_MD5}-3 is not that of the parts sent" in result.message
    assert [i.key async for i in target.list_objects(DST)] == []  # removed


async def test_parts_verified_by_their_checksums_need_no_md5_etag_for_the_object(
    md5_calls: list[int],
) -> None:
    """A destination whose ETags are no MD5s (S3 with SSE-KMS, the folder store's assembled
    uploads) but whose answers carry checksums: the object is checked by its checksum and size."""

    class NotMd5Etags(MemoryStore):
        async def complete_multipart_upload(self, *args: Any, **kwargs: Any) -> WrittenObject:
            written = await super().complete_multipart_upload(*args, **kwargs)
            return dataclasses.replace(written, etag=f"{OTHER_MD5}-3", checksum=None)

    source, _ = await stores()
    target = NotMd5Etags()
    await target.create_bucket(DST)
    await source.put_bytes(SRC, "big", BIG)
    result = await operation(source, target).apply(task("big"))
    assert result.succeeded, result
    assert md5_calls == []


async def test_listed_parts_without_checksums_are_matched_by_their_md5(md5_calls: list[int]) -> None:
    source, target = await no_checksum_stores()
    upload_id = await target.create_multipart_upload(
        DST, "big", attributes=ObjectAttributes(), algorithm=ChecksumAlgorithm.CRC32C,
        checksum_type=ChecksumType.COMPOSITE,
    )  # fmt: skip
    right, wrong = BIG[:PART], b"x" * PART
    await target.upload_part(DST, "big", upload_id, 1, right, checksum=None)
    await target.upload_part(DST, "big", upload_id, 2, wrong, checksum=None)
    assert all(p.checksum is None for p in await target.list_parts(DST, "big", upload_id))
    target.calls.clear()
    md5_calls.clear()
    result = await operation(source, target).apply(task("big"))
    assert result.succeeded, result
    assert "Parts=3 (1 reused)" in result.message
    assert sorted(c[3] for c in target.calls if c[0] == "upload_part") == ["2", "3"]
    assert await target.get_bytes(DST, "big") == BIG
