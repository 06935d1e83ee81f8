"""At job end: leave in a LambdaInvoke job's results sink only the rows its report points at.

A task's row may have been written twice (an attempt whose result was never recorded, then its
re-run after a resume). The recorded report lines name the one location per task that counts;
`operations.results_sink.finalize_sink` removes the rest (docs/results-sink.md#duplicates).
A line's location counts only for the line's own task (`location_reader`), so each line is
read with its task's seq, from which its task id follows (`task_id_for`).
Runs before the completion report is written, so a reader who finds the report's manifest.json
finds a clean sink.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

from s3batch.domain.job import FailureReason, Job
from s3batch.domain.lambda_contract import task_id_for
from s3batch.domain.report import ReportRow, parse_rows
from s3batch.errors import BadRequest, StorageError
from s3batch.operations.results_sink import OPERATION, SINK_FIELD, finalize_sink, location_reader
from s3batch.storage.base import ObjectStore
from s3batch.store.base import JobStore

log = logging.getLogger(__name__)

#: FailureReason text is capped like the other reasons the runner records.
MAX_REASON_CHARS = 256


async def finalize_results_sink(objects: ObjectStore, store: JobStore, job: Job) -> FailureReason | None:
    """Clean the job's results sink, if it has one; why the job fails when that cannot be done."""
    operation = job.spec.operation
    raw = operation.params.get(SINK_FIELD) if operation.name == OPERATION else None
    if raw is None:
        return None
    try:
        cleanup = await finalize_sink(raw, objects, job.job_id, await _referenced(store, job, raw))
    except (StorageError, BadRequest) as exc:  # BadRequest: parameters no longer valid (a downgrade)
        why = f"could not remove leftover rows from the results sink: {exc}"
        return FailureReason("ResultsSinkCleanupFailed", why[:MAX_REASON_CHARS])
    if cleanup.missing:
        log.warning(
            "job %s: %d report location(s) name no row in the results sink, e.g. %s",
            job.job_id, len(cleanup.missing), cleanup.missing[0],
        )  # fmt: skip
    log.info("job %s: results sink clean-up: %s", job.job_id, cleanup)
    return None


async def _referenced(store: JobStore, job: Job, raw: Mapping[str, Any]) -> dict[str, str]:
    """Task id → the sink location its recorded report line carries. Held in memory: about
    200 bytes per task that wrote a row (a million tasks: some 200 MB, once, at job end)."""
    referenced: dict[str, str] = {}
    read = location_reader(raw, job.job_id)
    if read is None:  # a table: nothing to clean
        return referenced
    async for seq, row in rows_by_seq(store, job.job_id):
        task_id = task_id_for(job.job_id, seq)
        if (location := read(row.message, task_id)) is not None:
            referenced[task_id] = location
    return referenced


async def rows_by_seq(store: JobStore, job_id: str) -> AsyncIterator[tuple[int, ReportRow]]:
    """Each recorded report row of the job with its task's seq, in manifest order.

    Chunks are consecutive runs of tasks numbered from seq 0 (service/progress.ChunkPlan), and
    `report_rows` gives one list per chunk, in order. A finished chunk's list is every one of
    its tasks in manifest order; an unfinished one's (a job cancelled or failed mid-way) has
    only the tasks that finished, so those are read with their places from `chunk_progress`."""
    unfinished = {chunk.first_seq: chunk for chunk in await store.pending_chunks(job_id)}
    seq = 0
    async for rows in store.report_rows(job_id):
        chunk = unfinished.get(seq)
        if chunk is None:
            for offset, row in enumerate(rows):
                yield seq + offset, row
            seq += len(rows)
            continue
        recorded = await store.chunk_progress(job_id, chunk.chunk_no)
        for idx, line in sorted(recorded.items()):
            for row in parse_rows(line):
                yield chunk.first_seq + idx, row
        seq = chunk.first_seq + chunk.n_tasks
