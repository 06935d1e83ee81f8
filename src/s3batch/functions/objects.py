"""`read_object()`: synchronous object reads for handlers running in a function worker.

Built-in handlers read through the job's own store (a local folder or any S3 endpoint) rather
than boto3, so they also work on folder-backed jobs. The worker gets the job's StorageConfig
in the environment variable `STORAGE_CONFIG_ENV` (JSON of `storage.config.to_dict`).

Handlers are synchronous and run with no event loop, so the async store is driven by one
persistent `asyncio.Runner` per process: the store (and its connection pool) is opened on the
first read and reused by every later invocation in that worker.

A built-in that runs inline (in the engine's own process, functions/inline.py) reads through
the engine's own store instead: `reading_with` runs the handler with a `Reader` that hands
the reads to the engine's event loop, so no second store is opened.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from s3batch.errors import ConfigError, StorageError
from s3batch.storage.base import BlockingReads

if TYPE_CHECKING:
    from s3batch.storage.base import ObjectStore
    from s3batch.storage.config import StorageConfig

#: Environment variable carrying the job's StorageConfig as JSON.
STORAGE_CONFIG_ENV = "S3BATCH_STORAGE_CONFIG"

#: Objects of one batch read at once (a batch is at most a few hundred tasks).
MAX_CONCURRENT_READS = 32


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One object to read (decoded key)."""

    bucket: str
    key: str
    version_id: str | None = None


#: Reads a batch's objects (each its first `max_bytes` when given) for a handler running inline.
Reader = Callable[[Sequence[ObjectRef], int | None], list[bytes | StorageError]]

_P = ParamSpec("_P")
_R = TypeVar("_R")

_runner: asyncio.Runner | None = None
_store: ObjectStore | None = None
_close_registered = False
#: Set only inside `reading_with`: where this thread's handler reads instead of its own store.
_inline_reader: contextvars.ContextVar[Reader | None] = contextvars.ContextVar("s3batch_reader", default=None)


def read_object(bucket: str, key: str, version_id: str | None = None) -> bytes:
    """The whole body of one object (decoded key). Raises `StorageError` (e.g. NoSuchKey)."""
    reader = _inline_reader.get()
    if reader is not None:
        [body] = reader([ObjectRef(bucket, key, version_id)], None)
        if isinstance(body, StorageError):
            raise body
        return body
    runner, store = _open()
    return runner.run(store.get_bytes(bucket, key, version_id))


def read_objects(refs: Sequence[ObjectRef], *, max_bytes: int | None = None) -> list[bytes | StorageError]:
    """Each object's body (its first `max_bytes` when given), read concurrently; a failed read
    is its StorageError in place, so one missing object does not fail the others."""
    reader = _inline_reader.get()
    if reader is not None:
        return reader(refs, max_bytes)
    runner, store = _open()
    if isinstance(store, BlockingReads):
        return read_all_now(store, refs, max_bytes)
    return runner.run(read_all(store, refs, max_bytes))


def reading_with(reader: Reader, call: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
    """`call(*args, **kwargs)` with every `read_object(s)` it makes going to `reader`.

    Runs in a fresh context, so the reader never leaks to later work of the same thread."""

    def run() -> _R:
        _inline_reader.set(reader)
        return call(*args, **kwargs)

    return contextvars.Context().run(run)


def read_all_now(
    store: BlockingReads, refs: Sequence[ObjectRef], max_bytes: int | None
) -> list[bytes | StorageError]:
    """`read_objects` on a store that reads in the calling thread: one object after another,
    as the reads are a few system calls each (a folder's small files)."""
    bodies: list[bytes | StorageError] = []
    for ref in refs:
        try:
            bodies.append(store.read_now(ref.bucket, ref.key, ref.version_id, max_bytes))
        except StorageError as exc:
            bodies.append(exc)
    return bodies


async def read_all(
    store: ObjectStore, refs: Sequence[ObjectRef], max_bytes: int | None
) -> list[bytes | StorageError]:
    """`read_objects` on `store`, in the caller's event loop."""
    if len(refs) > MAX_CONCURRENT_READS:
        gate = asyncio.Semaphore(MAX_CONCURRENT_READS)

        async def gated(ref: ObjectRef) -> bytes:
            async with gate:
                return await _read_one(store, ref, max_bytes)

        reads = [gated(ref) for ref in refs]
    else:  # a batch's usual size: no gate, no wrapper coroutine per object
        reads = [_read_one(store, ref, max_bytes) for ref in refs]
    bodies = await asyncio.gather(*reads, return_exceptions=True)
    for body in bodies:
        if isinstance(body, BaseException) and not isinstance(body, StorageError):
            raise body  # a bug, not an object's problem: as the reads would have raised it
    return bodies  # type: ignore[return-value]  # bytes or StorageError, checked above


async def _read_one(store: ObjectStore, ref: ObjectRef, max_bytes: int | None) -> bytes:
    if max_bytes is None:
        return await store.get_bytes(ref.bucket, ref.key, ref.version_id)
    return await _head_bytes(store, ref, max_bytes)


async def _head_bytes(store: ObjectStore, ref: ObjectRef, max_bytes: int) -> bytes:
    """The first `max_bytes` of an object, without reading (or holding) the rest."""
    parts: list[bytes] = []
    size = 0
    chunks = store.iter_bytes(ref.bucket, ref.key, ref.version_id, chunk_size=min(max_bytes, 1 << 20) or 1)
    try:
        async for chunk in chunks:
            parts.append(chunk)
            size += len(chunk)
            if size >= max_bytes:
                break
    finally:
        aclose = getattr(chunks, "aclose", None)
        if aclose is not None:
            await aclose()
    return b"".join(parts)[:max_bytes]


def _open() -> tuple[asyncio.Runner, ObjectStore]:
    global _runner, _store, _close_registered
    if _runner is None or _store is None:
        from s3batch.storage.config import from_dict

        config = from_dict(_config_from_env())
        runner = asyncio.Runner()
        # Adapters may bind to the running loop when created, so create inside the runner.
        _store = runner.run(_create(config))
        _runner = runner
        if not _close_registered:
            atexit.register(close)
            _close_registered = True
    return _runner, _store


async def _create(config: StorageConfig) -> ObjectStore:
    from s3batch.storage.config import open_store

    return open_store(config)


def _config_from_env() -> dict[str, object]:
    raw = os.environ.get(STORAGE_CONFIG_ENV)
    if not raw:
        raise ConfigError(
            f"{STORAGE_CONFIG_ENV} is not set: read_object() only works inside a function "
            "worker started for a job"
        )
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{STORAGE_CONFIG_ENV} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{STORAGE_CONFIG_ENV} must be a JSON object")
    return data


def close() -> None:
    """Close the store and the runner (at process exit; safe to call twice)."""
    global _runner, _store
    runner, store, _runner, _store = _runner, _store, None, None
    if runner is None:
        return
    try:
        if store is not None:
            runner.run(store.close())
    finally:
        runner.close()
