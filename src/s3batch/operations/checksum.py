"""S3ComputeObjectChecksum: compute each object's checksum at rest and report it.

Parameters: `ChecksumAlgorithm` (required here; one of CRC32, CRC32C, CRC64NVME, MD5, SHA1,
SHA256, SHA512, XXHASH64, XXHASH3, XXHASH128) and `ChecksumType` (`FULL_OBJECT`, the default,
or `COMPOSITE`; CRC64NVME is full-object only and is refused at CreateJob otherwise).

ResultMessage (AWS's exact format is unverified, so this is s3batch's own): compact one-line
JSON with a fixed key order, readable in the CSV report and parseable by machines:

    {"checksumAlgorithm":"CRC32C","checksumType":"FULL_OBJECT","checksum":"4waSgw==","objectSize":9}

`checksum` is base64 of the big-endian digest, as in S3's `x-amz-checksum-*` headers; a
COMPOSITE value ends in `-<parts>` like S3's. `checksumType` is the type actually computed: a
COMPOSITE request on an object that was not uploaded in parts reports its FULL_OBJECT checksum
(S3 stores exactly that for a single-request upload). A multipart upload of one part is still
composite (`-1`), as in S3.

The body is streamed (memory per task is bounded by READ_CHUNK_BYTES plus THREAD_MIN_BYTES,
whatever the object size) and hashed off the event loop so one big object does not stall the
other tasks in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from s3batch.domain import pricing
from s3batch.domain.checksums import (
    ChecksumAlgorithm,
    ChecksumType,
    composite_checksum,
    encode,
    new_hasher,
    result_message,
    supports,
)
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import BadRequest, StorageError
from s3batch.operations._params import one_of, reject_unknown
from s3batch.operations.actions import GET, Permissions, no_extra_needs
from s3batch.operations.base import (
    UNBATCHED,
    NoProbe,
    Operation,
    OperationContext,
    OperationKind,
    PerTask,
    storage_failure,
    undeclared,
)
from s3batch.storage.base import ObjectStore
from s3batch.storage.capabilities import parts_store

NAME = "S3ComputeObjectChecksum"

#: Bytes asked of the store per read (1 MiB). Memory is per task in flight, so it stays small.
READ_CHUNK_BYTES = 1 << 20
#: Data is hashed in a worker thread once this much (1 MiB) is at hand: hashlib, xxhash and
#: awscrt release the GIL on large buffers, so the event loop keeps serving other tasks. Smaller
#: reads (S3 streams often yield ~64 KiB) are buffered up to it rather than paying a thread hop
#: per read; a tail below it is hashed inline, where it costs well under a millisecond.
THREAD_MIN_BYTES = 1 << 20

#: What a COMPOSITE checksum needs of the store (Capability.PARTS), as a refusal names it.
PARTS_FEATURE = "the part layout of multipart objects (COMPOSITE checksums)"

_ALGORITHMS = tuple(a.value for a in ChecksumAlgorithm)
_TYPES = tuple(t.value for t in ChecksumType)


def _algorithm(params: Mapping[str, Any]) -> ChecksumAlgorithm:
    return ChecksumAlgorithm(one_of(NAME, "ChecksumAlgorithm", params.get("ChecksumAlgorithm"), _ALGORITHMS))


def _checksum_type(params: Mapping[str, Any]) -> ChecksumType:
    value = params.get("ChecksumType", ChecksumType.FULL_OBJECT.value)
    return ChecksumType(one_of(NAME, "ChecksumType", value, _TYPES))


def validate(params: Mapping[str, Any]) -> None:
    reject_unknown(NAME, params, {"ChecksumAlgorithm", "ChecksumType"})
    algorithm, checksum_type = _algorithm(params), _checksum_type(params)
    if not supports(algorithm, checksum_type):
        raise BadRequest(f"{NAME}: {algorithm} supports only the FULL_OBJECT ChecksumType")


class _ObjectChanged(Exception):
    """The body did not match the part sizes read just before (overwritten meanwhile)."""


class _OffLoopHasher:
    """A hasher fed from the event loop that does its heavy work in a worker thread."""

    def __init__(self, algorithm: ChecksumAlgorithm) -> None:
        self._hasher = new_hasher(algorithm)
        self._pending = bytearray()

    async def update(self, data: memoryview) -> None:
        if not self._pending and len(data) >= THREAD_MIN_BYTES:
            await asyncio.to_thread(self._hasher.update, data)  # no copy for big reads
            return
        self._pending += data
        if len(self._pending) >= THREAD_MIN_BYTES:
            pending, self._pending = self._pending, bytearray()
            await asyncio.to_thread(self._hasher.update, memoryview(pending))

    def digest(self) -> bytes:
        self._hasher.update(memoryview(self._pending))  # < THREAD_MIN_BYTES: cheap inline
        self._pending = bytearray()
        return self._hasher.digest()


class _PartSplitter:
    """Hashes a stream part by part, given the part sizes; collects each part's digest."""

    def __init__(self, algorithm: ChecksumAlgorithm, sizes: Sequence[int]) -> None:
        self._algorithm = algorithm
        self._sizes = sizes
        self._hasher = _OffLoopHasher(algorithm)
        self._left = sizes[0]
        self.digests: list[bytes] = []

    async def feed(self, view: memoryview) -> None:
        while True:
            self._close_finished_parts()
            if not view:
                return
            if len(self.digests) == len(self._sizes):
                raise _ObjectChanged("the body is longer than its parts")
            take = min(self._left, len(view))
            await self._hasher.update(view[:take])
            view, self._left = view[take:], self._left - take

    def finish(self) -> list[bytes]:
        self._close_finished_parts()
        if len(self.digests) != len(self._sizes):
            raise _ObjectChanged("the body is shorter than its parts")
        return self.digests

    def _close_finished_parts(self) -> None:
        # A loop, not an if: a part may be empty (a zero-byte single-part upload).
        while self._left == 0 and len(self.digests) < len(self._sizes):
            self.digests.append(self._hasher.digest())
            self._hasher = _OffLoopHasher(self._algorithm)
            if len(self.digests) < len(self._sizes):
                self._left = self._sizes[len(self.digests)]


class ComputeChecksum(Operation):
    name = NAME

    def __init__(self, params: Mapping[str, Any], ctx: OperationContext) -> None:
        self.algorithm = _algorithm(params)
        self.checksum_type = _checksum_type(params)
        self.store: ObjectStore = ctx.store
        #: The part sizes a COMPOSITE checksum follows; a store that cannot tell them (declares
        #: no Capability.PARTS) fails each COMPOSITE task rather than guess FULL_OBJECT.
        self.parts = parts_store(ctx.store)
        self.undeclared = undeclared(ctx, PARTS_FEATURE)

    async def apply(self, task: Task) -> TaskResult:
        if self.parts is None and self.checksum_type is ChecksumType.COMPOSITE:
            return self.undeclared
        try:
            checksum_type, checksum, size = await self._compute(task)
        except StorageError as exc:
            return storage_failure(exc)
        except _ObjectChanged as exc:
            # The object was replaced between reading its part sizes and its body: try again.
            return TaskResult.fail("InternalError", f"object changed during checksum: {exc}", None, True)
        return TaskResult.ok(message=result_message(self.algorithm, checksum_type, checksum, size))

    async def _compute(self, task: Task) -> tuple[ChecksumType, str, int]:
        if self.parts is not None and self.checksum_type is ChecksumType.COMPOSITE:
            parts = await self.parts.object_parts(task.bucket, task.key, task.version_id)
            if parts is not None:
                checksum, size = await self._composite(task, parts)
                return ChecksumType.COMPOSITE, checksum, size
        checksum, size = await self._full_object(task)
        return ChecksumType.FULL_OBJECT, checksum, size

    async def _full_object(self, task: Task) -> tuple[str, int]:
        hasher, size = _OffLoopHasher(self.algorithm), 0
        async for chunk in self._body(task):
            await hasher.update(memoryview(chunk))
            size += len(chunk)
        return encode(hasher.digest()), size

    async def _composite(self, task: Task, parts: Sequence[int]) -> tuple[str, int]:
        splitter, size = _PartSplitter(self.algorithm, parts), 0
        async for chunk in self._body(task):
            await splitter.feed(memoryview(chunk))
            size += len(chunk)
        return composite_checksum(self.algorithm, splitter.finish()), size

    def _body(self, task: Task) -> AsyncIterator[bytes]:
        return self.store.iter_bytes(task.bucket, task.key, task.version_id, chunk_size=READ_CHUNK_BYTES)


KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(object_actions=(GET,), bucket_actions=(), extra=no_extra_needs),
    requests=PerTask(pricing.GET, 1),
    probe=NoProbe.PLAIN_DATA_PATH,
    batch_size=UNBATCHED,
    create=ComputeChecksum,
)
