"""RetryingStore: the job's own I/O survives throttling; streams resume without repeats."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from s3batch.domain.objects import ObjectInfo
from s3batch.errors import StorageError
from s3batch.retry import RetryPolicy
from s3batch.storage.memory import MemoryStore
from s3batch.storage.retrying import RetryingStore

FAST = RetryPolicy(max_attempts=4, base_delay_s=0.0, max_delay_s=0.0)
SLOW_DOWN = StorageError("SlowDown", "Please reduce your request rate.", 503, True)


async def test_retryable_failures_are_retried_until_success() -> None:
    inner = MemoryStore()
    await inner.create_bucket("b")
    inner.fail("put_bytes", SLOW_DOWN, times=2)
    store = RetryingStore(inner, FAST)
    await store.put_bytes("b", "report.csv", b"rows")
    assert await inner.get_bytes("b", "report.csv") == b"rows"
    assert store.retries == 2
    assert [c[0] for c in inner.calls].count("put_bytes") == 3


async def test_attempts_are_bounded() -> None:
    inner = MemoryStore()
    await inner.create_bucket("b")
    inner.fail("head", SLOW_DOWN, times=10)
    store = RetryingStore(inner, FAST)
    with pytest.raises(StorageError) as caught:
        await store.head("b", "k")
    assert caught.value.code == "SlowDown"
    assert [c[0] for c in inner.calls].count("head") == FAST.max_attempts


async def test_permanent_failures_are_not_retried() -> None:
    inner = MemoryStore()
    await inner.create_bucket("b")
    store = RetryingStore(inner, FAST)
    with pytest.raises(StorageError) as caught:
        await store.head("b", "missing")
    assert caught.value.code == "NoSuchKey"
    assert store.retries == 0


class _FlakyStreams(MemoryStore):
    """Fails once mid-stream, after some data went out."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = {"iter_bytes": False, "list_objects": False}
        self.starts: list[tuple[str, object]] = []
        #: The `etags` of each list_objects call.
        self.etags: list[bool] = []

    async def iter_bytes(
        self, bucket: str, key: str, version_id: str | None = None, start: int = 0, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        self.starts.append(("iter_bytes", start))
        sent = 0
        async for chunk in super().iter_bytes(bucket, key, version_id, start, chunk_size):
            if sent == 2 and not self.failed["iter_bytes"]:
                self.failed["iter_bytes"] = True
                raise StorageError("ConnectionError", "reset", None, True)
            sent += 1
            yield chunk

    async def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        start_after: str | None = None,
        *,
        end_before: str | None = None,
        etags: bool = True,
    ) -> AsyncIterator[ObjectInfo]:
        self.starts.append(("list_objects", start_after))
        self.etags.append(etags)
        sent = 0
        async for info in super().list_objects(
            bucket, prefix, start_after, end_before=end_before, etags=etags
        ):
            if sent == 3 and not self.failed["list_objects"]:
                self.failed["list_objects"] = True
                raise StorageError("InternalError", "try again", 500, True)
            sent += 1
            yield info


async def test_iter_bytes_resumes_from_the_next_byte() -> None:
    inner = _FlakyStreams()
    await inner.create_bucket("b")
    body = bytes(range(256)) * 40
    await inner.put_bytes("b", "manifest.csv", body)
    store = RetryingStore(inner, FAST)
    got = b"".join([chunk async for chunk in store.iter_bytes("b", "manifest.csv", chunk_size=1000)])
    assert got == body
    assert inner.starts == [("iter_bytes", 0), ("iter_bytes", 2000)]


async def test_list_objects_resumes_after_the_last_key_yielded() -> None:
    inner = _FlakyStreams()
    await inner.create_bucket("b")
    keys = [f"k{i:02d}" for i in range(8)]
    for key in keys:
        await inner.put_bytes("b", key, b"")
    store = RetryingStore(inner, FAST)
    listed = [info.key async for info in store.list_objects("b")]
    assert listed == keys  # nothing twice, nothing missing
    assert inner.starts == [("list_objects", None), ("list_objects", "k02")]


async def test_list_objects_passes_etags_on_to_every_attempt() -> None:
    inner = _FlakyStreams()
    await inner.create_bucket("b")
    for i in range(8):
        await inner.put_bytes("b", f"k{i:02d}", b"")
    store = RetryingStore(inner, FAST)
    assert len([info async for info in store.list_objects("b", etags=False)]) == 8
    assert inner.etags == [False, False]  # the first listing and the one resumed after the failure
