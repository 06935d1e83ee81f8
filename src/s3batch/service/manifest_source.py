"""The job's manifest as the runner reads it: the object (or its materialized copy in the
spool), ETag-checked, read from any byte offset as blocks of whole lines or as tasks.

Preparing reads a small manifest whole and keeps it in memory for the Active phase that
follows in the same drive: no second HEAD + GET, and Active runs exactly the bytes Preparing
validated. A larger one is read again from the object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from s3batch.domain.job import Job
from s3batch.domain.manifest import Block, CsvLayout, CsvManifestParser, LineSplitter
from s3batch.domain.task import Task
from s3batch.errors import ManifestError, StorageError
from s3batch.service.manifests import MATERIALIZED_FIELDS, SPOOL_BUCKET, spool_key
from s3batch.storage.base import ObjectStore

#: Bytes read from the manifest per request.
MANIFEST_READ_BYTES = 1 << 20
#: A manifest up to this size, in bytes, read by Preparing is kept in memory for the Active
#: phase that follows in the same drive. Larger ones are read again.
MANIFEST_KEEP_BYTES = 8 << 20


@dataclass(slots=True)
class ManifestSource:
    """The job's manifest object, ETag-checked, readable from any byte offset."""

    objects: ObjectStore
    bucket: str
    key: str
    version_id: str | None
    layout: CsvLayout
    #: The whole manifest, once read with keep=True (see MANIFEST_KEEP_BYTES).
    kept: bytes | None = None

    @classmethod
    async def open(cls, job: Job, objects: ObjectStore, spool: ObjectStore) -> ManifestSource:
        materialized = job.extra.get("materialized")
        if materialized is not None:
            return await cls._checked(
                spool,
                SPOOL_BUCKET,
                spool_key(job.job_id),
                None,
                materialized["etag"],
                list(MATERIALIZED_FIELDS),
            )
        manifest = job.spec.manifest
        assert manifest is not None  # a generator job's manifest is materialized (above)
        fields = list(manifest.fields) if manifest.fields else None
        return await cls._checked(
            objects, manifest.bucket, manifest.key, manifest.version_id, manifest.etag, fields
        )

    @classmethod
    async def _checked(
        cls,
        objects: ObjectStore,
        bucket: str,
        key: str,
        version: str | None,
        etag: str,
        fields: list[str] | None,
    ) -> ManifestSource:
        try:
            info = await objects.head(bucket, key, version)
        except StorageError as exc:
            raise ManifestError(f"cannot read s3://{bucket}/{key}: {exc}") from exc
        expected = etag.strip('"')
        if info.etag != expected:
            raise ManifestError(f"ETag mismatch: the job expects {expected}, the object has {info.etag}")
        return cls(objects, bucket, key, version, CsvLayout.from_fields(fields))

    async def blocks(self, offset: int, first_line: int, keep: bool = False) -> AsyncIterator[Block]:
        """The manifest from `offset` on, as blocks of whole lines (the last may lack its LF).
        `keep`: when read whole and no larger than MANIFEST_KEEP_BYTES, keep it in `kept`."""
        splitter = LineSplitter(offset, first_line)
        kept: list[bytes] | None = [] if keep and offset == 0 and self.kept is None else None
        size = 0
        async for chunk in self._chunks(offset):
            if kept is not None:
                size += len(chunk)
                if size <= MANIFEST_KEEP_BYTES:
                    kept.append(chunk)
                else:
                    kept = None
            for block in splitter.feed_blocks(chunk):
                yield block
        if (tail := splitter.close_block()) is not None:
            yield tail
        if kept is not None:
            self.kept = b"".join(kept)

    async def _chunks(self, offset: int) -> AsyncIterator[bytes]:
        if self.kept is not None:
            for start in range(offset, len(self.kept), MANIFEST_READ_BYTES):
                yield self.kept[start : start + MANIFEST_READ_BYTES]
            return
        stream = self.objects.iter_bytes(self.bucket, self.key, self.version_id, offset, MANIFEST_READ_BYTES)
        async for chunk in stream:
            yield chunk

    async def tasks(
        self, parser: CsvManifestParser, offset: int, first_line: int, seq: int
    ) -> AsyncIterator[list[Task]]:
        """The tasks from `offset` on, numbered from `seq`, a block at a time."""
        async for block in self.blocks(offset, first_line):
            tasks = parser.parse_block(block, seq)
            if tasks is None:
                tasks = []
                for line in block.lines():
                    task = parser.parse(line, seq + len(tasks))
                    if task is not None:
                        tasks.append(task)
            seq += len(tasks)
            yield tasks
