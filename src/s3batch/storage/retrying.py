"""RetryingStore: an ObjectStore that retries retryable failures of whole calls.

Tasks have their own retries (engines/execute.py) that also feed the concurrency limit. The
job's own I/O — reading the manifest in Preparing, the capability probe, writing the report
and the generated manifest — had none: one 503 SlowDown there failed the whole job. The runner
wraps the job's store in this for that I/O.

Streams resume where they stopped instead of starting over: `iter_bytes` from the next byte,
`list_objects` after the last key yielded, so a retried stream never yields anything twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from s3batch.domain.objects import ObjectInfo
from s3batch.errors import StorageError
from s3batch.retry import RetryPolicy
from s3batch.storage.base import Capability, ObjectStore

#: Attempts per call (the first included) for the job's own I/O: more than a task gets,
#: because a failure here fails every task of the job at once.
JOB_IO_MAX_ATTEMPTS = 6
JOB_IO_POLICY = RetryPolicy(max_attempts=JOB_IO_MAX_ATTEMPTS, base_delay_s=0.2, max_delay_s=5.0)

_T = TypeVar("_T")


class RetryingStore:
    """Wraps `inner`; every coroutine method is retried while its failure is retryable."""

    def __init__(self, inner: ObjectStore, policy: RetryPolicy = JOB_IO_POLICY) -> None:
        self._inner = inner
        self._policy = policy
        #: Retries made so far (for tests and logs).
        self.retries = 0

    @property
    def inner(self) -> ObjectStore:
        return self._inner

    @property
    def capabilities(self) -> frozenset[Capability]:
        """The wrapped store's declaration: a capability accessor then hands out this wrapper,
        so the capability's calls are retried too."""
        return self._inner.capabilities

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        async def retried(*args: Any, **kwargs: Any) -> Any:
            return await self._retry(lambda: attr(*args, **kwargs))

        return retried

    async def _retry(self, call: Callable[[], Awaitable[_T]]) -> _T:
        attempt = 1
        while True:
            try:
                return await call()
            except StorageError as exc:
                attempt = await self._backoff(exc, attempt)

    async def _backoff(self, exc: StorageError, attempt: int) -> int:
        """Re-raise `exc` unless another attempt is due; sleep, and return its number."""
        if not exc.retryable or not self._policy.should_retry(attempt):
            raise exc
        await asyncio.sleep(self._policy.delay_s(attempt))
        self.retries += 1
        return attempt + 1

    async def iter_bytes(
        self,
        bucket: str,
        key: str,
        version_id: str | None = None,
        start: int = 0,
        chunk_size: int = 1 << 20,
    ) -> AsyncIterator[bytes]:
        offset, attempt = start, 1
        while True:
            try:
                async for chunk in self._inner.iter_bytes(bucket, key, version_id, offset, chunk_size):
                    offset += len(chunk)
                    yield chunk
                return
            except StorageError as exc:
                attempt = await self._backoff(exc, attempt)

    async def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        start_after: str | None = None,
        *,
        end_before: str | None = None,
        etags: bool = True,
    ) -> AsyncIterator[ObjectInfo]:
        after, attempt = start_after, 1
        while True:
            try:
                listing = self._inner.list_objects(bucket, prefix, after, end_before=end_before, etags=etags)
                async for info in listing:
                    after = info.key
                    yield info
                return
            except StorageError as exc:
                attempt = await self._backoff(exc, attempt)
