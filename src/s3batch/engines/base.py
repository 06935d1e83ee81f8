"""The engine contract.

An engine receives a job's picklable context, its operation (AWS JSON shape) and a stream of
tasks, and yields finished tasks with their final results as they finish, in any order, in
groups (a non-empty list: what finished together, e.g. one DeleteObjects batch). Groups let
the runner do its book-keeping once per batch instead of once per task. It builds the
operation itself, wherever it runs tasks (this process, worker processes, a cluster), so
operations and the job store never change with the engine. It retries retryable failures per
its RetryPolicy; the result it yields is final.

Closing the returned iterator early (cancel, failure threshold) must stop new work promptly and
release every resource.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from s3batch.domain.task import Task, TaskResult
from s3batch.operations.base import JobContext

#: Tasks that finished together, each with its final result.
Finished = list[tuple[Task, TaskResult]]


class Engine(Protocol):
    def run(
        self, job: JobContext, operation: Mapping[str, Any], tasks: AsyncIterator[Task]
    ) -> AsyncIterator[Finished]: ...
