"""The streaming half of S3batchTransfer: bytes held in memory, cut into parts, and hashed.

Memory is bounded by a per-process `ByteBudget`: a part's bytes are claimed before they are read
and released once the part is written, so however many tasks run at once and however large their
objects, at most the budget (plus one read chunk per stream) is buffered. Nothing goes to disk.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from s3batch.domain.checksums import ChecksumAlgorithm, Hasher, composite_checksum, encode, new_hasher
from s3batch.domain.uploads import Body

#: Bytes asked of the source per read (1 MiB).
READ_CHUNK_BYTES = 1 << 20
#: Parts this large or larger are hashed in a worker thread (hashlib and awscrt release the GIL
#: on large buffers), so one big object does not stall the event loop; smaller bodies (most
#: objects) are hashed inline, where it costs well under a millisecond.
THREAD_MIN_BYTES = 1 << 20


class SourceChanged(Exception):
    """The source yielded more or fewer bytes than its HEAD (or GET) said: it was overwritten
    meanwhile."""


class ByteBudget:
    """At most `capacity` bytes claimed at once, granted first come, first served. A claim
    larger than the whole budget waits until nothing else is claimed, then goes alone, so it
    cannot wait forever. `release` is synchronous, so a `finally` may call it while cancelled."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.claimed = 0
        #: The most claimed at once (for tests and the benchmark).
        self.peak = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def claim(self, size: int) -> None:
        if not self._waiters and self._fits(size):
            self._take(size)
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((size, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(size)  # granted just as it was cancelled: give it back
            else:
                self._waiters.remove((size, granted))
                self._grant()
            raise

    def try_claim(self, size: int) -> bool:
        """Claim `size` if that needs no wait (nobody waiting before it, and it fits); else
        claim nothing and say so."""
        if self._waiters or not self._fits(size):
            return False
        self._take(size)
        return True

    def release(self, size: int) -> None:
        self.claimed -= size
        self._grant()

    def _fits(self, size: int) -> bool:
        return self.claimed == 0 or self.claimed + size <= self.capacity

    def _take(self, size: int) -> None:
        self.claimed += size
        self.peak = max(self.peak, self.claimed)

    def _grant(self) -> None:
        while self._waiters and self._fits(self._waiters[0][0]):
            size, granted = self._waiters.popleft()
            if not granted.done():
                self._take(size)
                granted.set_result(None)


class PartBuffers:
    """Part-sized buffers kept for the next part of the same size, up to `capacity` bytes idle.

    A fresh bytearray is zero-filled and, being large, mapped anew: `perf` put ~5 % of a large
    S3 → folder transfer's CPU in that memset, besides the page faults. Only a buffer whose part
    went through without error comes back (`give`): after a cancellation or a failure, a worker
    thread may still be writing from it or reading into it."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._idle: dict[int, list[bytearray]] = {}
        self._idle_bytes = 0

    def take(self, size: int) -> bytearray:
        """A buffer of exactly `size` bytes, whatever it holds: its reader fills all of it."""
        kept = self._idle.get(size)
        if kept:
            self._idle_bytes -= size
            return kept.pop()
        return bytearray(size)

    def give(self, buffer: bytearray) -> None:
        size = len(buffer)
        if self._idle_bytes + size <= self.capacity:
            self._idle.setdefault(size, []).append(buffer)
            self._idle_bytes += size


class PartReader:
    """Cuts a stream of chunks into parts of the sizes asked for, in order."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._left = memoryview(b"")

    async def read(self, size: int) -> bytearray:
        """Exactly `size` bytes, as a bytearray (which botocore sends without a copy: see
        storage/s3/uploads.py); SourceChanged when the stream ends first."""
        pieces: list[bytes | memoryview] = []
        wanted = size
        while wanted:
            if not self._left:
                chunk = await anext(self._chunks, None)
                if chunk is None:
                    raise SourceChanged(f"the body ended {wanted} bytes early")
                self._left = memoryview(chunk)
            take = self._left[:wanted]
            pieces.append(take)
            self._left = self._left[len(take) :]
            wanted -= len(take)
        return bytearray().join(pieces)

    async def finish(self) -> None:
        """SourceChanged when bytes are left after the last part."""
        extra: bytes | None = None if self._left else await anext(self._chunks, None)
        if self._left or extra:
            raise SourceChanged("the body is longer than its HEAD said")

    async def aclose(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass(frozen=True, slots=True)
class PartDigest:
    """One part's fingerprints: the job's checksum and, when it was needed, the MD5 (what an S3
    ETag is): only where the destination answers or lists no checksum is the ETag the evidence
    (`with_md5`), and an MD5 costs more CPU than the transfer's every other step on a part."""

    number: int
    size: int
    #: The raw digest of the job's algorithm, and its base64 form.
    digest: bytes
    #: Hex; None until computed.
    md5: str | None = None

    @property
    def checksum(self) -> str:
        return encode(self.digest)


def _digest(
    number: int, body: Body, algorithm: ChecksumAlgorithm, full: Hasher | None, md5: bool
) -> PartDigest:
    view = memoryview(body)
    hasher = new_hasher(algorithm)
    hasher.update(view)
    if full is not None:
        full.update(view)
    return PartDigest(number, len(body), hasher.digest(), _md5_hex(body) if md5 else None)


def _md5_hex(body: Body) -> str:
    return hashlib.md5(body, usedforsecurity=False).hexdigest()


async def digest_part(
    number: int, body: Body, algorithm: ChecksumAlgorithm, full: Hasher | None = None, *, md5: bool = False
) -> PartDigest:
    """The part's fingerprints (feeding `full`, the whole object's hasher, in order); its MD5
    too when `md5`."""
    if len(body) >= THREAD_MIN_BYTES:
        return await asyncio.to_thread(_digest, number, body, algorithm, full, md5)
    return _digest(number, body, algorithm, full, md5)


async def with_md5(digest: PartDigest, body: Body) -> PartDigest:
    """`digest` with the MD5 of `body`, its bytes (hashed in a thread when large, as digest_part)."""
    if digest.md5 is not None:
        return digest
    md5 = await asyncio.to_thread(_md5_hex, body) if len(body) >= THREAD_MIN_BYTES else _md5_hex(body)
    return replace(digest, md5=md5)


def composite_of(algorithm: ChecksumAlgorithm, parts: Sequence[PartDigest]) -> str:
    """S3's composite checksum of the parts: `<base64>-<parts>`."""
    return composite_checksum(algorithm, [p.digest for p in parts])


def multipart_etag(parts: Sequence[PartDigest]) -> str | None:
    """The ETag S3 gives a multipart object: MD5 of the parts' binary MD5s, `-<parts>`; None
    unless every part's MD5 was computed."""
    md5s = [p.md5 for p in parts]
    if any(md5 is None for md5 in md5s):
        return None
    joined = b"".join(bytes.fromhex(md5) for md5 in md5s if md5 is not None)
    return f"{hashlib.md5(joined, usedforsecurity=False).hexdigest()}-{len(parts)}"


async def checksum_of_stream(chunks: AsyncIterator[bytes], algorithm: ChecksumAlgorithm) -> tuple[str, int]:
    """(full-object checksum, size) of a whole body, read chunk by chunk."""
    hasher, size = new_hasher(algorithm), 0
    async for chunk in chunks:
        size += len(chunk)
        if len(chunk) >= THREAD_MIN_BYTES:
            await asyncio.to_thread(hasher.update, chunk)
        else:
            hasher.update(chunk)
    return encode(hasher.digest()), size
