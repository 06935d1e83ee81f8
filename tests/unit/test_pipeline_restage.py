"""Replaying an error bucket (`restage`) against an in-memory store that fails part-way: the
objects already moved back to staging are admitted to run, not lost between the two buckets."""

from __future__ import annotations

from pathlib import Path

import pytest

from s3batch.errors import StorageError
from s3batch.pipelines.config import parse_config
from s3batch.pipelines.runner import ERROR_SUFFIX, Pipeline
from s3batch.pipelines.sources import restage
from s3batch.storage.config import LocalConfig
from s3batch.storage.memory import MemoryStore

KEYS = ("a.txt", "b.txt", "c.txt", "d.txt")


async def _pipeline(tmp_path: Path) -> tuple[Pipeline, MemoryStore]:
    cfg = parse_config(
        {"name": "p", "source": "staging", "function": "h:f", "on_success": "leave", "error": "errors"},
        tmp_path,
    )
    pipeline = Pipeline(cfg, LocalConfig(root=str(tmp_path / "unused")))
    store = MemoryStore()
    pipeline.store = store
    for bucket in ("staging", "errors"):
        await store.create_bucket(bucket)
    for key in KEYS:
        await store.put_bytes("errors", key, b"x")
        await store.put_bytes("errors", key + ERROR_SUFFIX, b"{}")
    return pipeline, store


async def test_objects_moved_before_a_failed_copy_are_still_admitted(tmp_path: Path) -> None:
    pipeline, store = await _pipeline(tmp_path)
    store.fail("copy", StorageError("InternalError", "the third copy fails", 500, True), key="c.txt")
    try:
        with pytest.raises(StorageError, match="third copy"):
            await restage(pipeline, "errors", limit=10)
        admitted = sorted(row.key for row in pipeline.state.files())
        assert admitted == ["a.txt", "b.txt"]  # moved out of the error bucket, so they must run
        assert pipeline.state.pending() == 2
        left = sorted([info.key async for info in store.list_objects("errors")])
        assert left == ["c.txt", "c.txt" + ERROR_SUFFIX, "d.txt", "d.txt" + ERROR_SUFFIX]
        # A second replay picks up where the first stopped.
        assert await restage(pipeline, "errors", limit=10) == (2, False)
        assert sorted(row.key for row in pipeline.state.files()) == list(KEYS)
    finally:
        pipeline.state.close()


async def test_a_replay_that_fails_at_once_admits_nothing(tmp_path: Path) -> None:
    pipeline, store = await _pipeline(tmp_path)
    store.fail("copy", StorageError("AccessDenied", "no", 403))
    try:
        with pytest.raises(StorageError, match="no"):
            await restage(pipeline, "errors")
        assert pipeline.state.files() == []
    finally:
        pipeline.state.close()
