"""S3batchTransfer's per-task work (operations/transfer.py): decide whether to skip, then write the
object in one PutObject or a resumable multipart upload, and verify what the destination answers.

A source that answers a GET with its checksum headers (capabilities.CheckedGetStore: S3) is
read GET first: that one answer says what a HEAD would (size, ETag, attributes, tag count,
stored checksum), and an object that goes in one PutObject is written from its body, so a small
object costs two requests (GET, PUT), not three. An object that goes in parts, or is skipped,
closes that body unread and goes on as from a HEAD. While a body that has not all arrived is
open, a task waits on nothing but its bytes (no other request, no wait for memory): with
many tasks each holding a connection so, the requests they wait for could find none free.

Checks, in order (docs/transfer.md, "Checksums"):
1. Reading: when the source stores a full-object checksum of the job's algorithm, the bytes read
   must match it (not for a multipart object's CRC32/CRC32C/SHA/MD5/XXHASH value, which some
   servers store wrongly; CRC64NVME is always full-object). The stored checksum comes from the
   GET's headers or the HEAD's, both asked with checksum mode on.
2. Each request carries the checksum of its bytes (S3 refuses a mismatch: BadDigest).
3. Each answer: the store's checksum if it returned one, else its ETag when that is an MD5,
   must equal what was sent. The MD5 of the bytes is computed only for an answer without a
   checksum (and for a listed part without one, on resume), from the bytes still held: where
   the destination answers checksums it would be CPU spent on nothing.
4. A multipart object: the completed object's composite checksum (or, when every part's MD5
   was computed, its multipart ETag), and its size and stored checksum on a HEAD after
   completion.
A mismatch in 2-4 fails the task with ChecksumMismatch and removes the object (or aborts the
upload) that was written.

A destination that writes an upload's parts straight into the object's file
(capabilities.AssembledUploadStore: the folder store) gets its uploads started with their part
layout; everything else about them is as for any multipart upload.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from s3batch.domain.checksums import ChecksumAlgorithm, ChecksumType, Hasher, encode, new_hasher
from s3batch.domain.task import Task, TaskResult
from s3batch.domain.transfer import (
    COPIED,
    MIB,
    Outcome,
    SkipExisting,
    is_multipart,
    part_ranges,
    part_size_for,
    part_sizes,
    skipped,
    upload_checksum_type,
)
from s3batch.domain.uploads import (
    Body,
    CheckedHead,
    ChecksumValue,
    ObjectAttributes,
    UploadedPart,
    WrittenObject,
    is_md5_etag,
    is_multipart_etag,
)
from s3batch.errors import StorageError
from s3batch.operations._transfer_stream import (
    READ_CHUNK_BYTES,
    ByteBudget,
    PartBuffers,
    PartDigest,
    PartReader,
    SourceChanged,
    checksum_of_stream,
    composite_of,
    digest_part,
    multipart_etag,
    with_md5,
)
from s3batch.operations.base import storage_failure
from s3batch.storage.base import ObjectStore, UploadLayout
from s3batch.storage.capabilities import (
    AssembledUploadStore,
    CheckedGet,
    CheckedGetStore,
    PartUploadStore,
    RangeReadStore,
    assembled_upload_store,
    checked_get_store,
    part_upload_store,
    range_read_store,
)

if TYPE_CHECKING:
    from s3batch.operations.transfer import TransferPlan

#: Object bytes one process holds at once, over all its tasks (parts being read, parts in flight).
MAX_BUFFERED_BYTES = 32 * MIB
#: Parts of one object uploading at once: a few huge objects keep several requests busy.
PARTS_IN_FLIGHT = 4
#: Objects in parts one process reads at once. An open source stream holds buffers of its own
#: (the HTTP client's, a read chunk) outside MAX_BUFFERED_BYTES; more objects than this wait
#: their turn before opening theirs, while small objects go on around them.
MAX_STREAMING_OBJECTS = 4
#: Incomplete uploads of one key inspected when resuming, and uploads listed to find them.
MAX_RESUME_CANDIDATES = 8
MAX_LISTED_UPLOADS = 1000
#: Aborts of one upload until ListParts says it is gone, and the pause before the next (seconds,
#: growing linearly).
ABORT_ATTEMPTS = 4
ABORT_RETRY_S = 0.2
#: The report code of a verification failure.
MISMATCH = "ChecksumMismatch"
#: Codes with which servers refuse a body that does not match the checksum sent with it.
DIGEST_ERRORS = frozenset(
    {"BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch", "XAmzContentSHA256Mismatch"}
)
#: The report code of a source overwritten while it was read (retried: the next read is whole).
SOURCE_CHANGED = "SourceChanged"
TAGS_LOST_AT_SOURCE = "tags not carried: the source did not return them ({code})"
TAGS_LOST_AT_TARGET = "tags not carried: the destination did not keep them"


class _Mismatch(Exception):
    """A verification failed; the message says which bytes and which values."""


class _UploadGone(Exception):
    """The upload was aborted or completed by someone else meanwhile."""


def unresolved(store: str) -> TaskResult:
    """Each task's answer when the job's runtime has no config for its TargetStore."""
    return TaskResult.fail(
        "InvalidRequest", f"TargetStore {store!r} was not resolved when the job was created", 400
    )


def unsupported(store: str | None) -> TaskResult:
    where = f"store {store!r}" if store else "the job's store"
    return TaskResult.fail(
        "NotImplemented",
        f"{where} does not implement checksummed part uploads (Capability.PART_UPLOADS)",
        501,
    )


@dataclass(slots=True)
class _Source:
    """What a task knows of its source object."""

    head: CheckedHead
    attributes: ObjectAttributes = field(default_factory=ObjectAttributes)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _RangedPart:
    number: int
    #: Its first byte's offset in the object.
    start: int
    size: int


class Copier:
    """Transfers one task's object; shared by every task of the operation in one process."""

    def __init__(self, plan: TransferPlan, source: ObjectStore, writer: PartUploadStore) -> None:
        self.plan = plan
        self.algorithm: ChecksumAlgorithm = plan.algorithm
        self.bucket: str = plan.bucket
        self.source = source
        self.checked_source = part_upload_store(source)
        #: The source, when one GET answers what its HEAD would (the HEAD is then not made).
        self.get_first: CheckedGetStore | None = checked_get_store(source)
        #: The source, when it reads a part straight into a buffer (several parts at once).
        self.ranged: RangeReadStore | None = range_read_store(source)
        self.writer = writer
        #: The destination, when it writes an upload's parts straight into the object's file.
        self.assembler: AssembledUploadStore | None = assembled_upload_store(writer)
        self.budget = ByteBudget(MAX_BUFFERED_BYTES)
        #: Ranged parts' buffers, for the next parts (idle ones count apart from the budget).
        self.buffers = PartBuffers(MAX_BUFFERED_BYTES)
        self.streams = asyncio.Semaphore(MAX_STREAMING_OBJECTS)
        #: (bucket, key) → the upload a task started or adopted and has not completed.
        self._open: dict[tuple[str, str], str] = {}
        #: Of those, the ones whose task was cancelled (a pause, a stopping worker): left for the
        #: resumed job to adopt rather than aborted at close.
        self._interrupted: set[tuple[str, str]] = set()

    async def apply(self, task: Task) -> TaskResult:
        key = self.plan.keys.target_key(task.key)
        if key is None:
            return TaskResult.fail(
                "InvalidRequest",
                f"key {task.key!r} does not start with SourceKeyPrefix {self.plan.keys.source_prefix!r}",
                400,
            )
        try:
            outcome = await self._transfer(task, key)
        except _Mismatch as exc:
            return TaskResult.fail(MISMATCH, str(exc), None)
        except SourceChanged as exc:
            return TaskResult.fail(SOURCE_CHANGED, f"the source changed while it was read: {exc}", None, True)
        except _UploadGone as exc:
            return TaskResult.fail("NoSuchUpload", str(exc), 404, True)
        except StorageError as exc:
            if exc.code in DIGEST_ERRORS:
                return TaskResult.fail(
                    MISMATCH, f"the destination refused the bytes: {exc.code}: {exc.message}", exc.http_status
                )
            return storage_failure(exc)
        return TaskResult.ok(outcome.message())

    async def close(self) -> None:
        """Abort the uploads of tasks that ended failed (their parts would be billed forever)."""
        for (bucket, key), upload_id in list(self._open.items()):
            if (bucket, key) not in self._interrupted:
                await abort_upload(self.writer, bucket, key, upload_id)
                del self._open[(bucket, key)]

    # -- one task ---------------------------------------------------------------------------

    async def _transfer(self, task: Task, key: str) -> Outcome:
        # With SkipExisting, HEAD first: a run over objects already there (its usual case) then
        # reads no body, and an archived object (a GET answers 403 InvalidObjectState, a HEAD
        # 200) can still be found identical and skipped.
        if self.get_first is None or self.plan.skip is not SkipExisting.NONE:
            return await self._transfer_from(task, key, await self._head_source(task), None)
        opened = await self.get_first.get_with_checksum(task.bucket, task.key, task.version_id)
        try:
            return await self._transfer_from(task, key, opened.head, opened)
        finally:
            await opened.aclose()

    async def _transfer_from(
        self, task: Task, key: str, head: CheckedHead, opened: CheckedGet | None
    ) -> Outcome:
        """The task once its source is known: from `head`, with `opened` its body (None when a
        HEAD told it), which the caller closes."""
        if self.plan.skip is not SkipExisting.NONE:  # (read by a HEAD: `opened` is None)
            same = await self._identical(task, head, key)
            if same is not None:
                how, checksum = same
                return Outcome(skipped(how), self.algorithm, checksum, head.size)
        try:
            part_size = part_size_for(head.size, self.plan.part_size)
        except ValueError as exc:
            raise StorageError("EntityTooLarge", str(exc), 400) from exc
        if is_multipart(head.size, part_size):
            if opened is not None:
                await opened.aclose()  # parts are read again, each part as its turn comes
            source = await self._describe(task, head)
            return await self._multipart(task, source, key, part_size)
        return await self._single(task, head, key, opened)

    async def _head_source(self, task: Task) -> CheckedHead:
        if self.checked_source is not None:
            # The source's ETag is compared only by SizeAndChecksum (`_identical`); elsewhere it
            # is read only with a stored checksum, which comes with it (`head_with_checksum`).
            # A folder would read the whole file to compute it.
            etag = self.plan.skip is SkipExisting.SIZE_AND_CHECKSUM
            return await self.checked_source.head_with_checksum(
                task.bucket, task.key, task.version_id, etag=etag
            )
        return CheckedHead(await self.source.head(task.bucket, task.key, task.version_id))

    async def _describe(self, task: Task, head: CheckedHead) -> _Source:
        """The attributes to carry. S3 sends a tag count only for an object with tags, so a
        missing count means none and saves a GetObjectTagging per untagged object."""
        source = _Source(head)
        tags: dict[str, str] = {}
        if head.tag_count or self.checked_source is None:
            try:
                tags = await self.source.get_tags(task.bucket, task.key, task.version_id)
            except StorageError as exc:
                source.notes.append(TAGS_LOST_AT_SOURCE.format(code=exc.code))
        info = head.info
        source.attributes = ObjectAttributes(
            content_type=info.content_type,
            metadata=dict(info.metadata),
            headers=dict(info.headers),
            tags=tags,
        )
        return source

    def _body(self, task: Task) -> AsyncIterator[bytes]:
        return self.source.iter_bytes(task.bucket, task.key, task.version_id, chunk_size=READ_CHUNK_BYTES)

    # -- SkipExisting -------------------------------------------------------------------------

    async def _identical(self, task: Task, src: CheckedHead, key: str) -> tuple[str, str | None] | None:
        """How the destination was found identical (and the checksum, when one was computed),
        or None when it is missing or differs."""
        try:
            dst = await self.writer.head_with_checksum(self.bucket, key)
        except StorageError as exc:
            if exc.http_status == 404:
                return None
            raise
        if dst.size != src.size:
            return None
        if self.plan.skip is SkipExisting.SIZE_ONLY:
            return "same size", None
        if dst.etag == src.etag and (is_md5_etag(src.etag) or is_multipart_etag(src.etag)):
            return "same size and ETag", None
        if src.checksum is not None and src.checksum == dst.checksum:
            return f"same size and stored {src.checksum.algorithm} checksum", src.checksum.value
        stored = self._full_stored(dst)
        if stored is not None:
            # The destination's own checksum of the whole body: only the source's is read.
            ours, read = await checksum_of_stream(self._body(task), self.algorithm)
            if ours == stored and read == src.size:
                return f"same size and {self.algorithm} of the source body as the destination stores it", ours
            return None
        # Nothing stored settles it: read both (DistCp -update compares checksums the same way).
        ours, read = await checksum_of_stream(self._body(task), self.algorithm)
        theirs, theirs_read = await checksum_of_stream(
            self.writer.iter_bytes(self.bucket, key), self.algorithm
        )
        if ours == theirs and read == theirs_read == src.size:
            return f"same size and {self.algorithm} of both bodies", ours
        return None

    # -- one request ----------------------------------------------------------------------------

    async def _single(self, task: Task, head: CheckedHead, key: str, opened: CheckedGet | None) -> Outcome:
        """One PutObject, from `opened`'s body when there is one. The body is read before the
        source's tags are: a body still arriving holds its connection meanwhile."""
        size = head.size
        if opened is None or opened.buffered:
            await self.budget.claim(size)
        elif not self.budget.try_claim(size):
            await opened.aclose()  # waiting for memory must not hold a connection: read it again
            opened = None
            await self.budget.claim(size)
        body = bytearray()
        try:
            reader = PartReader(aiter(opened) if opened is not None else self._body(task))
            try:
                body = await reader.read(size)
                await reader.finish()
            finally:
                await reader.aclose()
            source = await self._describe(task, head)
            digest = await digest_part(1, body, self.algorithm)
            self._check_source(source.head, digest.checksum)
            sent = ChecksumValue(self.algorithm, digest.checksum)
            written = await self.writer.put_with_checksum(
                self.bucket, key, body, attributes=source.attributes, checksum=sent
            )
            if written.checksum is None:  # the ETag is the evidence: hashed while the bytes are held
                digest = await with_md5(digest, body)
        finally:
            body = bytearray()
            self.budget.release(size)
        problem = self._answer_problem(
            written.checksum.value if written.checksum else None, written.etag, digest
        )
        if problem is not None:
            await self._remove(key, written.version_id)
            raise _Mismatch(problem)
        await self._check_tags(key, source, None)
        return Outcome(COPIED, self.algorithm, digest.checksum, size, notes=tuple(source.notes))

    def _answer_problem(self, checksum: str | None, etag: str, digest: PartDigest) -> str | None:
        """Why the store's answer to writing `digest`'s bytes shows other bytes, or None."""
        if checksum is not None:
            if checksum != digest.checksum:
                sent = digest.checksum
                return f"the destination computed {self.algorithm} {checksum}; the bytes sent have {sent}"
            return None
        # (The MD5 is computed for every answer without a checksum; were it missing, no ETag
        # would equal it: the check fails closed.)
        if is_md5_etag(etag) and etag != digest.md5:
            return f"the destination's ETag {etag} is not the MD5 of the bytes sent ({digest.md5})"
        return None

    def _check_source(self, head: CheckedHead, full: str | None) -> None:
        """Step 1: the bytes read against the source's own stored checksum, where it is one."""
        stored = self._full_stored(head)
        if full is not None and stored is not None and stored != full:
            raise _Mismatch(f"the bytes read have {self.algorithm} {full}; the source stores {stored}")

    def _full_stored(self, head: CheckedHead) -> str | None:
        """The stored checksum of `head`'s object that a whole-body checksum of the job's
        algorithm (`checksum_of_stream`, a FULL_OBJECT value) can be compared with: of that
        algorithm and type, and not a multipart object's unless CRC64NVME (see the module
        docstring: not trusted for multipart objects). None when there is none."""
        stored = head.checksum
        if stored is None or stored.algorithm is not self.algorithm:
            return None
        if stored.type is not ChecksumType.FULL_OBJECT:
            return None  # a composite value is over the parts' checksums, not the bytes
        if is_multipart_etag(head.etag) and self.algorithm is not ChecksumAlgorithm.CRC64NVME:
            return None
        return stored.value

    def _needs_full(self, head: CheckedHead) -> bool:
        """Whether a multipart transfer must hash the whole body too (besides each part): for
        a full-object upload, or to check the source's stored checksum (`_check_source`)."""
        if upload_checksum_type(self.algorithm) is ChecksumType.FULL_OBJECT:
            return True
        return self._full_stored(head) is not None

    async def _remove(self, key: str, version_id: str | None) -> None:
        with contextlib.suppress(StorageError):
            await self.writer.delete(self.bucket, key, version_id)

    async def _check_tags(self, key: str, source: _Source, head: CheckedHead | None) -> None:
        if not source.attributes.tags:
            return
        if head is None:
            head = await self.writer.head_with_checksum(self.bucket, key)
        if head.tag_count != len(source.attributes.tags):
            source.notes.append(TAGS_LOST_AT_TARGET)

    # -- multipart ------------------------------------------------------------------------------

    async def _multipart(self, task: Task, source: _Source, key: str, part_size: int) -> Outcome:
        sizes = part_sizes(source.head.size, part_size)
        slot = (self.bucket, key)
        layout = UploadLayout(source.head.size, part_size)
        upload_id, kept = await self._resume_or_create(key, sizes, layout, source.attributes)
        self._open[slot] = upload_id
        self._interrupted.discard(slot)
        try:
            async with self.streams:
                digests, parts, reused, full = await self._send_parts(
                    task, source.head, key, upload_id, sizes, kept
                )
            self._check_source(source.head, full)
            expected = self._expected(digests, full)
            written = await self.writer.complete_multipart_upload(
                self.bucket, key, upload_id, parts, checksum=expected
            )
        except asyncio.CancelledError:
            self._interrupted.add(slot)
            raise
        except StorageError as exc:
            if exc.code == "NoSuchUpload":
                self._open.pop(slot, None)
                raise _UploadGone(
                    f"upload {upload_id} of {key!r} was aborted meanwhile; a retry starts anew"
                ) from exc
            if not exc.retryable:
                await self._abort(slot, upload_id)
            raise  # a retryable failure keeps the upload: the retry resumes it
        except (_Mismatch, SourceChanged):
            await self._abort(slot, upload_id)
            raise
        self._open.pop(slot, None)
        head = await self._completed_head(key, source, written, expected, digests)
        await self._check_tags(key, source, head)
        return Outcome(
            COPIED, self.algorithm, expected.value, source.head.size, len(sizes), reused, tuple(source.notes)
        )

    async def _completed_head(
        self,
        key: str,
        source: _Source,
        written: WrittenObject,
        expected: ChecksumValue,
        digests: list[PartDigest],
    ) -> CheckedHead | None:
        """Step 4: the completed object's checksum (or multipart ETag), then a HEAD for its size
        and stored checksum. The HEAD is made even when the completion's answer carries the
        expected checksum: a full-object checksum is sent with the completion request, and a
        server that echoes it back without computing it would otherwise pass unchecked (one
        request per large object)."""
        problem = self._object_problem(written.checksum, written.etag, expected, digests)
        head = None
        if problem is None:
            head = await self.writer.head_with_checksum(self.bucket, key)
            if head.size != source.head.size:
                problem = f"the destination holds {head.size} bytes; {source.head.size} were sent"
            else:
                problem = self._object_problem(head.checksum, None, expected, digests)
        if problem is not None:
            await self._remove(key, written.version_id)
            raise _Mismatch(problem)
        return head

    def _expected(self, digests: list[PartDigest], full: str | None) -> ChecksumValue:
        """The whole object's checksum as the destination should report it."""
        if upload_checksum_type(self.algorithm) is ChecksumType.FULL_OBJECT:
            assert full is not None
            return ChecksumValue(self.algorithm, full, ChecksumType.FULL_OBJECT)
        return ChecksumValue(self.algorithm, composite_of(self.algorithm, digests), ChecksumType.COMPOSITE)

    def _object_problem(
        self, got: ChecksumValue | None, etag: str | None, expected: ChecksumValue, digests: list[PartDigest]
    ) -> str | None:
        """Why a completed object's checksum or ETag shows other bytes, or None. A checksum of
        another algorithm or type (moto 5.2 reports a composite upload's as a full-object value
        that is neither) is no evidence either way."""
        if got is not None and got.algorithm is expected.algorithm and got.type is expected.type:
            if got.value != expected.value:
                sent = expected.value
                return f"the destination reports {got.algorithm} {got.value}; the parts sent make {sent}"
            return None
        # The multipart ETag (the MD5 of the parts' MD5s) is compared only when every part's MD5
        # was computed, i.e. when the destination answered (or listed) no checksum for any
        # part: otherwise each part was verified by its checksum, and the object is by the
        # checksum it reports (here or on the HEAD after) and by its size. Such a destination
        # may also give ETags that are no MD5 (S3 with SSE-KMS; the folder store's assembled
        # uploads).
        if etag is None or not is_multipart_etag(etag):
            return None
        sent_etag = multipart_etag(digests)
        if sent_etag is not None and etag != sent_etag:
            return f"the destination's ETag {etag} is not that of the parts sent ({sent_etag})"
        return None

    async def _abort(self, slot: tuple[str, str], upload_id: str) -> None:
        self._open.pop(slot, None)
        await abort_upload(self.writer, slot[0], slot[1], upload_id)

    async def _resume_or_create(
        self, key: str, sizes: list[int], layout: UploadLayout, attributes: ObjectAttributes
    ) -> tuple[str, dict[int, UploadedPart]]:
        """An interrupted upload of this key whose parts fit this object's part layout (the one
        holding the most parts), else a new one. Which listed parts are kept is decided later,
        part by part, against the source's bytes."""
        slot = (self.bucket, key)
        candidates = [self._open[slot]] if slot in self._open else await self._listed_uploads(key)
        best: tuple[str, dict[int, UploadedPart]] | None = None
        for upload_id in candidates[:MAX_RESUME_CANDIDATES]:
            try:
                if not await self._fits_layout(key, upload_id, layout):
                    continue
                parts = await self.writer.list_parts(self.bucket, key, upload_id)
            except StorageError as exc:
                if exc.code == "NoSuchUpload":
                    continue
                raise
            if any(p.number > len(sizes) or p.size != sizes[p.number - 1] for p in parts):
                continue  # another part size: another object or another job's layout
            if best is None or len(parts) > len(best[1]):
                best = (upload_id, {p.number: p for p in parts})
        if best is not None:
            return best
        if self.assembler is not None:
            upload_id = await self.assembler.create_assembled_upload(
                self.bucket,
                key,
                size=layout.size,
                part_size=layout.part_size,
                attributes=attributes,
                algorithm=self.algorithm,
                checksum_type=upload_checksum_type(self.algorithm),
            )
        else:
            upload_id = await self.writer.create_multipart_upload(
                self.bucket,
                key,
                attributes=attributes,
                algorithm=self.algorithm,
                checksum_type=upload_checksum_type(self.algorithm),
            )
        return upload_id, {}

    async def _fits_layout(self, key: str, upload_id: str, layout: UploadLayout) -> bool:
        """Whether an upload may take this object's parts: an assembled upload only with the
        same layout (its file has room for no other; one with no part yet listed would else be
        adopted, and its first part refused), any other upload always."""
        if self.assembler is None:
            return True
        held = await self.assembler.upload_layout(self.bucket, key, upload_id)
        return held is None or held == layout

    async def _listed_uploads(self, key: str) -> list[str]:
        """Incomplete uploads of exactly `key`, newest first."""
        found = []
        listed = 0
        try:
            async for upload in self.writer.list_multipart_uploads(self.bucket, key):
                listed += 1
                if upload.key == key:
                    found.append(upload)
                if listed >= MAX_LISTED_UPLOADS:
                    break
        except StorageError as exc:
            if exc.code != "NoSuchUpload":  # rclone's answer when no upload matches the prefix
                raise
        return [u.upload_id for u in sorted(found, key=lambda u: u.initiated, reverse=True)]

    async def _send_parts(
        self,
        task: Task,
        head: CheckedHead,
        key: str,
        upload_id: str,
        sizes: list[int],
        kept: dict[int, UploadedPart],
    ) -> tuple[list[PartDigest], list[UploadedPart], int, str | None]:
        """Read the source part by part; upload each part (PARTS_IN_FLIGHT at once) unless the
        upload already holds it with the same bytes. Returns the digests, the parts to complete
        with, how many were reused, and the whole body's checksum when it was needed."""
        full: Hasher | None = new_hasher(self.algorithm) if self._needs_full(head) else None
        if full is None and self.ranged is not None:
            return await self._send_ranged_parts(self.ranged, task, head, key, upload_id, sizes, kept)
        digests: dict[int, PartDigest] = {}
        done: dict[int, UploadedPart] = {}
        in_flight = asyncio.Semaphore(PARTS_IN_FLIGHT)
        reused = 0
        reader = PartReader(self._body(task))
        try:
            async with asyncio.TaskGroup() as group:
                for number, _, size in part_ranges(sizes):
                    await in_flight.acquire()
                    await self.budget.claim(size)
                    handed, body = False, bytearray()
                    try:
                        body = await reader.read(size)
                        have = kept.get(number)
                        # A listed part without a checksum is compared by its MD5 ETag.
                        md5 = have is not None and have.checksum is None
                        digest = await digest_part(number, body, self.algorithm, full, md5=md5)
                        digests[number] = digest
                        if have is not None and _same_bytes(have, digest):
                            done[number] = UploadedPart(number, size, have.etag, digest.checksum)
                            reused += 1
                        else:
                            group.create_task(
                                self._upload_part(key, upload_id, body, digest, done, digests, in_flight)
                            )
                            handed = True
                    finally:
                        body = bytearray()  # the upload task holds the part now: no second reference
                        if not handed:
                            in_flight.release()
                            self.budget.release(size)
                await reader.finish()
        except BaseExceptionGroup as failures:
            raise failures.exceptions[0] from None
        finally:
            await reader.aclose()
        numbers = range(1, len(sizes) + 1)
        parts = [done[number] for number in numbers]
        return [digests[number] for number in numbers], parts, reused, None if full is None else _encode(full)

    async def _send_ranged_parts(
        self,
        ranged: RangeReadStore,
        task: Task,
        head: CheckedHead,
        key: str,
        upload_id: str,
        sizes: list[int],
        kept: dict[int, UploadedPart],
    ) -> tuple[list[PartDigest], list[UploadedPart], int, str | None]:
        """`_send_parts` where each part is read by a ranged read into a buffer of its own
        (capabilities.RangeReadStore): PARTS_IN_FLIGHT parts read and uploaded at once, in any
        order, each pinned to the source's ETag and size. Only where no checksum of the whole
        body is needed, which would take the bytes in order."""
        digests: dict[int, PartDigest] = {}
        done: dict[int, UploadedPart] = {}
        reused: set[int] = set()
        in_flight = asyncio.Semaphore(PARTS_IN_FLIGHT)
        try:
            async with asyncio.TaskGroup() as group:
                for number, start, size in part_ranges(sizes):
                    await in_flight.acquire()
                    await self.budget.claim(size)
                    part = _RangedPart(number, start, size)
                    group.create_task(
                        self._send_ranged_part(
                            ranged, task, head, key, upload_id, part, kept, digests, done, reused, in_flight
                        )
                    )
        except BaseExceptionGroup as failures:
            raise failures.exceptions[0] from None
        numbers = range(1, len(sizes) + 1)
        return (
            [digests[number] for number in numbers],
            [done[number] for number in numbers],
            len(reused),
            None,
        )

    async def _send_ranged_part(
        self,
        ranged: RangeReadStore,
        task: Task,
        head: CheckedHead,
        key: str,
        upload_id: str,
        part: _RangedPart,
        kept: dict[int, UploadedPart],
        digests: dict[int, PartDigest],
        done: dict[int, UploadedPart],
        reused: set[int],
        in_flight: asyncio.Semaphore,
    ) -> None:
        """One part: read, hashed, then kept (the upload already holds these bytes) or
        uploaded. Releases the part's place in flight and its bytes of the budget."""
        handed = False
        try:
            body = self.buffers.take(part.size)
            await ranged.read_range_into(
                task.bucket,
                task.key,
                task.version_id,
                part.start,
                body,
                size=head.size,
                etag=head.etag or None,
            )
            have = kept.get(part.number)
            # A listed part without a checksum is compared by its MD5 ETag.
            md5 = have is not None and have.checksum is None
            digest = await digest_part(part.number, body, self.algorithm, md5=md5)
            digests[part.number] = digest
            if have is not None and _same_bytes(have, digest):
                done[part.number] = UploadedPart(part.number, part.size, have.etag, digest.checksum)
                reused.add(part.number)
            else:
                handed = True  # _upload_part releases both
                await self._upload_part(key, upload_id, body, digest, done, digests, in_flight)
            self.buffers.give(body)  # nothing raised: no thread uses it any more
        finally:
            if not handed:
                in_flight.release()
                self.budget.release(part.size)

    async def _upload_part(
        self,
        key: str,
        upload_id: str,
        body: Body,
        digest: PartDigest,
        done: dict[int, UploadedPart],
        digests: dict[int, PartDigest],
        in_flight: asyncio.Semaphore,
    ) -> None:
        try:
            try:
                checksum = ChecksumValue(self.algorithm, digest.checksum)
                if self.assembler is not None:  # in this process: the bytes we just hashed
                    answer = await self.assembler.upload_hashed_part(
                        self.bucket, key, upload_id, digest.number, body, checksum=checksum
                    )
                else:
                    answer = await self.writer.upload_part(
                        self.bucket, key, upload_id, digest.number, body, checksum=checksum
                    )
            finally:
                in_flight.release()
            if answer.checksum is None:
                # The ETag is the evidence: the MD5 now, while the part's bytes are still held.
                digest = digests[digest.number] = await with_md5(digest, body)
        finally:
            self.budget.release(digest.size)
        problem = self._answer_problem(answer.checksum, answer.etag, digest)
        if problem is not None:
            raise _Mismatch(f"part {digest.number}: {problem}")
        done[digest.number] = UploadedPart(digest.number, digest.size, answer.etag, digest.checksum)


async def abort_upload(writer: PartUploadStore, bucket: str, key: str, upload_id: str) -> None:
    """Abort, until the upload is gone. A part still arriving when the abort does may survive it,
    so S3 asks to abort again (AbortMultipartUpload's documentation); moto 5.2 even fails an abort
    that races a part. Bounded: ABORT_ATTEMPTS tries; what is left then stays for a lifecycle rule."""
    for attempt in range(ABORT_ATTEMPTS):
        with contextlib.suppress(StorageError):
            await writer.abort_multipart_upload(bucket, key, upload_id)
        try:
            await writer.list_parts(bucket, key, upload_id)
        except StorageError as exc:
            if exc.code == "NoSuchUpload":
                return
        if attempt + 1 < ABORT_ATTEMPTS:
            await asyncio.sleep(ABORT_RETRY_S * (attempt + 1))


def _same_bytes(listed: UploadedPart, digest: PartDigest) -> bool:
    """Whether a part an upload already holds has the source's bytes: its checksum when the
    store lists one, else its MD5 ETag (never equal to a digest whose MD5 was not computed)."""
    if listed.size != digest.size:
        return False
    if listed.checksum is not None:
        return listed.checksum == digest.checksum
    return listed.etag == digest.md5


def _encode(hasher: Hasher) -> str:
    return encode(hasher.digest())
