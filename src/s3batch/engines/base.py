"""The engine contract.

An engine receives a job's picklable context, its operation (AWS JSON shape) and a stream of
tasks, and yields each task with its final result as tasks finish, in any order. It builds the
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


class Engine(Protocol):
    def run(
        self, job: JobContext, operation: Mapping[str, Any], tasks: AsyncIterator[Task]
    ) -> AsyncIterator[tuple[Task, TaskResult]]: ...
