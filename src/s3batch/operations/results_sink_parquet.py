"""The Parquet results sink: each group commit is one Parquet file in the job's folder.

    <Prefix>/job-<job id>/part-<32 hex>.parquet

Columns: bucket, key, version_id (null when unversioned), task_id, job_id, written_at
(timestamp[us, UTC], the commit's time), then the data columns of the file's rows in the order
the sink first saw them; a row without a column has null there. Types: results_sink_columns.py
(VECTOR is list<float32>, STRINGS list<string>, a column of nulls only is Arrow's null type).
Files of one job may differ in their data columns (each holds those of its rows); readers that
unify schemas by name (pyarrow.dataset, DuckDB's union_by_name, Spark's mergeSchema) read them
as one table.

A file is written with one PUT (`put_bytes`: S3 makes the object visible whole or not at all;
the folder store writes a temporary file and renames it), after the rows are encoded in a
thread. pyarrow is imported here only, so a job without a Parquet sink never loads it.
"""

from __future__ import annotations

import asyncio
import io
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from s3batch.errors import StorageError
from s3batch.operations.results_sink import (
    PART_PATTERN,
    TASK_FRAGMENT,
    GroupCommitSink,
    ParquetTarget,
    SinkCleanup,
    SinkRow,
    parquet_location,
)
from s3batch.operations.results_sink_columns import ColumnType, SinkDataError
from s3batch.storage.base import ObjectStore

#: pyarrow's default codec, which every Parquet reader decodes.
PARQUET_COMPRESSION = "snappy"
#: Content type of part files (IANA's registration for Parquet).
PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"

#: A part file's key (any folder): clean-up touches no other object.
_PART = re.compile(r"(?:.*/)?" + PART_PATTERN)

_ARROW_TYPES = {
    ColumnType.STRING: pa.string(),
    ColumnType.INT: pa.int64(),
    ColumnType.FLOAT: pa.float64(),
    ColumnType.BOOL: pa.bool_(),
    ColumnType.VECTOR: pa.list_(pa.float32()),
    ColumnType.STRINGS: pa.list_(pa.string()),
    ColumnType.LIST: pa.list_(pa.float32()),
}


def arrow_type(kind: ColumnType | None) -> Any:
    return pa.null() if kind is None else _ARROW_TYPES[kind]


def encode(
    rows: Sequence[SinkRow], types: Mapping[str, ColumnType | None], job_id: str, written_at: datetime
) -> bytes:
    """One Parquet file of `rows`: the fixed columns, then each data column `types` lists that
    some row has."""
    present = {name for row in rows for name in row.data}
    columns: dict[str, Any] = {
        "bucket": pa.array([row.bucket for row in rows], pa.string()),
        "key": pa.array([row.key for row in rows], pa.string()),
        "version_id": pa.array([row.version_id or None for row in rows], pa.string()),
        "task_id": pa.array([row.task_id for row in rows], pa.string()),
        "job_id": pa.array([job_id] * len(rows), pa.string()),
        "written_at": pa.array([written_at] * len(rows), pa.timestamp("us", tz="UTC")),
    }
    for name, kind in types.items():
        if name in present:
            columns[name] = pa.array([row.data.get(name) for row in rows], arrow_type(kind))
    out = io.BytesIO()
    pq.write_table(pa.table(columns), out, compression=PARQUET_COMPRESSION)
    return out.getvalue()


class ParquetSink(GroupCommitSink):
    """Writes each group of rows as one part file in the job's folder of the target bucket."""

    def __init__(self, target: ParquetTarget, store: ObjectStore, job_id: str, **group: Any) -> None:
        super().__init__(**group)
        self.target = target
        self.store = store
        self.job_id = job_id
        self.folder = target.folder(job_id)

    async def _commit(
        self, rows: Sequence[SinkRow], types: Mapping[str, ColumnType | None]
    ) -> Mapping[str, str]:
        written_at = datetime.now(UTC)
        try:  # CPU work: off the event loop, which keeps serving the job's other tasks
            body = await asyncio.to_thread(encode, rows, types, self.job_id, written_at)
        except pa.ArrowException as exc:
            raise SinkDataError(f"resultData could not be encoded as Parquet: {exc}") from None
        key = f"{self.folder}part-{uuid.uuid4().hex}.parquet"
        await self.store.put_bytes(self.target.bucket, key, body, content_type=PARQUET_CONTENT_TYPE)
        return {row.task_id: parquet_location(self.target.bucket, key, row.task_id) for row in rows}


# -- clean-up -----------------------------------------------------------------------------


def filter_rows(body: bytes, keep: frozenset[str]) -> tuple[bytes | None, int, frozenset[str]]:
    """`body` without the rows whose task_id is not in `keep` (nor a second row of one task):
    (the new file, or None when every row stays; rows removed; the task ids of `keep` found)."""
    try:
        table = pq.read_table(io.BytesIO(body))
        ids = table.column("task_id").to_pylist()
    except (pa.ArrowException, KeyError) as exc:
        raise StorageError("InvalidParquet", f"not a results sink part file: {exc}") from None
    first = {task: i for i, task in reversed(list(enumerate(ids)))}
    wanted = [i for i, task in enumerate(ids) if task in keep and first[task] == i]
    found = frozenset(ids[i] for i in wanted)
    if len(wanted) == len(ids):
        return None, 0, found
    out = io.BytesIO()
    pq.write_table(table.take(pa.array(wanted, pa.int64())), out, compression=PARQUET_COMPRESSION)
    return out.getvalue(), len(ids) - len(wanted), found


def _referenced_files(
    target: ParquetTarget, folder: str, referenced: Mapping[str, str]
) -> dict[str, dict[str, str]]:
    """Part key → {task id: location} of the report's locations in the job's folder."""
    head = f"s3://{target.bucket}/"
    files: dict[str, dict[str, str]] = {}
    for task_id, location in referenced.items():
        base, sep, _ = location.partition(TASK_FRAGMENT)
        key = base[len(head) :]
        if sep and base.startswith(head) and _PART.fullmatch(key) and key.startswith(folder):
            files.setdefault(key, {})[task_id] = location
    return files


async def clean_parquet(
    target: ParquetTarget, store: ObjectStore, job_id: str, referenced: Mapping[str, str]
) -> SinkCleanup:
    """`finalize_sink` for a Parquet sink (see there for the rule)."""
    folder = target.folder(job_id)
    files = _referenced_files(target, folder, referenced)
    listed = [info.key async for info in store.list_objects(target.bucket, folder + "part-")]
    keys = [key for key in listed if _PART.fullmatch(key) and key.rpartition("/")[0] + "/" == folder]
    present = set(keys)
    missing = [loc for key, tasks in files.items() if key not in present for loc in tasks.values()]
    kept = rewritten = deleted = removed = 0
    for key in keys:
        tasks = files.get(key, {})
        if not tasks:
            await store.delete(target.bucket, key)
            deleted += 1
            continue
        body = await store.get_bytes(target.bucket, key)
        new, dropped, found = await asyncio.to_thread(filter_rows, body, frozenset(tasks))
        missing.extend(location for task, location in tasks.items() if task not in found)
        if new is None:
            kept += 1
        elif not found:
            await store.delete(target.bucket, key)
            deleted += 1
        else:
            await store.put_bytes(target.bucket, key, new, content_type=PARQUET_CONTENT_TYPE)
            rewritten += 1
            removed += dropped
    return SinkCleanup(kept, rewritten, deleted, removed, tuple(missing))
