"""`read_object()`: synchronous object reads for handlers running in a function worker.

Built-in handlers read through the job's own store (a local folder or any S3 endpoint) rather
than boto3, so they also work on folder-backed jobs. The worker gets the job's StorageConfig
in the environment variable `STORAGE_CONFIG_ENV` (JSON of `storage.config.to_dict`).

Handlers are synchronous and run with no event loop, so the async store is driven by one
persistent `asyncio.Runner` per process: the store (and its connection pool) is opened on the
first read and reused by every later invocation in that worker.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from s3batch.errors import ConfigError, StorageError

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


_runner: asyncio.Runner | None = None
_store: ObjectStore | None = None
_close_registered = False


def read_object(bucket: str, key: str, version_id: str | None = None) -> bytes:
    """The whole body of one object (decoded key). Raises `StorageError` (e.g. NoSuchKey)."""
    runner, store = _open()
    return runner.run(store.get_bytes(bucket, key, version_id))


def read_objects(refs: Sequence[ObjectRef], *, max_bytes: int | None = None) -> list[bytes | StorageError]:
    """Each object's body (its first `max_bytes` when given), read concurrently; a failed read
    is its StorageError in place, so one missing object does not fail the others."""
    runner, store = _open()
    return runner.run(_read_all(store, refs, max_bytes))


async def _read_all(
    store: ObjectStore, refs: Sequence[ObjectRef], max_bytes: int | None
) -> list[bytes | StorageError]:
    gate = asyncio.Semaphore(MAX_CONCURRENT_READS)

    async def one(ref: ObjectRef) -> bytes | StorageError:
        async with gate:
            try:
                if max_bytes is None:
                    return await store.get_bytes(ref.bucket, ref.key, ref.version_id)
                return await _head_bytes(store, ref, max_bytes)
            except StorageError as exc:
                return exc

    return list(await asyncio.gather(*(one(ref) for ref in refs)))


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
