"""At job end: leave in a LambdaInvoke job's results sink only the rows its report points at.

A task's row may have been written twice (an attempt whose result was never recorded, then its
re-run after a resume). The recorded report lines name the one location per task that counts;
`operations.results_sink.finalize_sink` removes the rest (docs/results-sink.md#duplicates).
Runs before the completion report is written, so a reader who finds the report's manifest.json
finds a clean sink.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from s3batch.domain.job import FailureReason, Job
from s3batch.errors import BadRequest, StorageError
from s3batch.operations.results_sink import OPERATION, SINK_FIELD, finalize_sink, location_finder
from s3batch.storage.base import ObjectStore
from s3batch.store.base import JobStore

log = logging.getLogger(__name__)

#: Both statuses: a location the report records is kept, whatever its task's status.
STATUSES = ("succeeded", "failed")
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
    find = location_finder(raw, job.job_id)
    if find is None:  # a table: nothing to clean
        return referenced
    async for chunk in store.report_lines(job.job_id, STATUSES):
        for lines in chunk.values():
            referenced.update(find(lines.decode("utf-8", errors="replace")))
    return referenced
