"""The objects a query may read, served to DuckDB through s3batch's own object store.

DuckDB reads inventory data files (and a pipeline's live-table Parquet files) with its own
Parquet and CSV readers from `s3batch://bucket/key` paths; this fsspec file system (registered
on the connection) answers those reads through the job's `ObjectStore`, so every endpoint,
credential source, addressing style and TLS setting s3batch speaks, and the folder store, behave
exactly as they do for jobs. It serves only the objects it was given (the data files of the
inventories and pipeline tables the query names): any other path is not found, and it never
writes.

The store is async and DuckDB calls from its own threads: the store runs on an event loop in a
thread of its own (`LoopThread`), and each read is one coroutine handed to it.
- A read that starts where the same reader's last one ended (a gzip CSV, read front to back)
  fetches READAHEAD_BYTES; later reads are served from that block.
- Any other read (Parquet's footer, a column chunk) is one ranged read of exactly those bytes,
  so a query over two columns fetches those columns, not the file.
DuckDB reads one file from several threads (see ObjectFile for how positions stay right).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any, TypeVar

from fsspec.spec import AbstractFileSystem  # type: ignore[import-untyped]

from s3batch.storage.base import ObjectStore

T = TypeVar("T")
#: The scheme of the paths DuckDB reads through this file system.
PROTOCOL = "s3batch"
#: Bytes fetched at once while an object is read front to back (a CSV data file).
READAHEAD_BYTES = 8 << 20
#: Seconds to wait for the loop thread to stop once asked.
LOOP_STOP_TIMEOUT_S = 10.0
#: What DuckDB is told of an object's modification time (it only compares it for caching).
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WHENCE_SET, _WHENCE_CUR, _WHENCE_END = 0, 1, 2


class LoopThread:
    """An asyncio loop running in a daemon thread; `call` runs a coroutine on it and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="s3batch-query-io", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(LOOP_STOP_TIMEOUT_S)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass(frozen=True, slots=True)
class ServedObject:
    bucket: str
    key: str
    size: int

    @property
    def path(self) -> str:
        return f"{self.bucket}/{self.key}"

    @property
    def url(self) -> str:
        return f"{PROTOCOL}://{self.path}"


class _Seek(threading.local):
    #: Where this thread's last seek went, until its next read.
    to: int | None = None


class ObjectFile:
    """One object, read-only, random access.

    DuckDB reads at an offset as seek then read, each taking Python's lock on its own, so
    two threads reading one file may interleave them; and it reads a gzip file front to back
    with reads alone, from whichever thread wants the next block. So a seek is remembered per
    thread and applies to that thread's next read; a read with no seek of its own goes on from
    where the file's last read ended."""

    def __init__(self, io: LoopThread, store: ObjectStore, obj: ServedObject) -> None:
        self._io, self._store, self._obj = io, store, obj
        self._seek = _Seek()
        self._lock = threading.Lock()
        self._cursor = 0
        self._block, self._block_at = b"", 0
        self.closed = False
        self.size = obj.size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._cursor if self._seek.to is None else self._seek.to

    def seek(self, offset: int, whence: int = _WHENCE_SET) -> int:
        base = {_WHENCE_SET: 0, _WHENCE_CUR: self.tell(), _WHENCE_END: self.size}[whence]
        self._seek.to = max(0, base + offset)
        return self._seek.to

    def read(self, length: int = -1) -> bytes:
        with self._lock:
            start = self._cursor if self._seek.to is None else self._seek.to
            sequential = start == self._cursor
            block, block_at = self._block, self._block_at
        self._seek.to = None
        end = self.size if length is None or length < 0 else min(self.size, start + length)
        if end <= start:
            return b""
        if not (block_at <= start and end <= block_at + len(block)):
            want = end - start
            if sequential:  # front to back: read ahead
                want = min(max(want, READAHEAD_BYTES), self.size - start)
            block, block_at = self._fetch(start, want), start
            end = min(end, start + len(block))
        data = block[start - block_at : end - block_at]
        with self._lock:
            self._block, self._block_at = block, block_at
            self._cursor = start + len(data)
        return data

    def _fetch(self, start: int, length: int) -> bytes:
        return self._io.call(read_range(self._store, self._obj.bucket, self._obj.key, start, length))

    def close(self) -> None:
        self.closed = True
        self._block = b""

    def __enter__(self) -> ObjectFile:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


async def read_range(store: ObjectStore, bucket: str, key: str, start: int, length: int) -> bytes:
    """Exactly `length` bytes from `start` (fewer only at the object's end). The store's first
    chunk is `length` bytes (on S3 one ranged GET); the stream is closed once it has them."""
    parts: list[bytes] = []
    got = 0
    stream = store.iter_bytes(bucket, key, None, start, length)
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        async for chunk in stream:
            parts.append(chunk)
            got += len(chunk)
            if got >= length:
                break
    return b"".join(parts)[:length]


class ServedFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """fsspec's file-system interface over the objects a query may read (see the module doc)."""

    protocol = PROTOCOL
    #: One instance per query: fsspec would otherwise hand back a cached one with other objects.
    cachable = False

    def __init__(self, io: LoopThread, store: ObjectStore) -> None:
        super().__init__()
        self._io, self._store = io, store
        self._objects: dict[str, ServedObject] = {}

    def serve(self, objects: Iterable[ServedObject]) -> None:
        for obj in objects:
            self._objects[obj.path] = obj

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        text = str(path)
        return text[len(PROTOCOL) + 3 :] if text.startswith(f"{PROTOCOL}://") else text

    def _object(self, path: str) -> ServedObject:
        obj = self._objects.get(self._strip_protocol(path))
        if obj is None:
            raise FileNotFoundError(
                f"{path}: s3batch query reads only the data files of the inventories and pipeline "
                "tables it names"
            )
        return obj

    def info(self, path: str, **_: Any) -> dict[str, Any]:
        obj = self._object(path)
        return {"name": obj.path, "size": obj.size, "type": "file"}

    def ls(self, path: str, detail: bool = True, **_: Any) -> list[Any]:
        found = self.info(path)
        return [found] if detail else [found["name"]]

    def glob(self, path: str, **_: Any) -> list[str]:
        pattern = self._strip_protocol(path)
        return sorted(p for p in self._objects if p == pattern or fnmatchcase(p, pattern))

    def exists(self, path: str, **_: Any) -> bool:
        return self._strip_protocol(path) in self._objects

    def modified(self, path: str) -> datetime:
        self._object(path)
        return _EPOCH

    def _open(self, path: str, mode: str = "rb", **_: Any) -> ObjectFile:
        if mode != "rb":
            raise PermissionError(f"{path}: s3batch query never writes to an object store")
        return ObjectFile(self._io, self._store, self._object(path))
