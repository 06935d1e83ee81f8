"""The operation contract: what is done to one object.

An operation kind is a module exposing `KIND = OperationKind(...)`:
- `validate(params)` checks the AWS-shaped parameters at CreateJob time (pure; raises
  `errors.BadRequest`), so a bad request is refused before any job exists;
- `create(params, ctx)` builds a live `Operation` inside the process that runs tasks. It gets
  only picklable inputs (`JobContext`) plus that process's own resources (`OperationContext`),
  so the same operation runs unchanged under the asyncio engine, a process pool or a cluster.

`Operation.apply` must not raise for a per-object problem: it returns a failed `TaskResult`
(with `retryable=True` for throttling, 5xx, timeouts, TemporaryFailure). An exception that
does escape is turned into a failed task by the engine, never a dead job.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from s3batch.domain.roles import Role
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import StorageError
from s3batch.storage.base import ObjectStore
from s3batch.storage.config import StorageConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class FunctionSpec:
    """A resolved function for LambdaInvoke, recorded with the job so resumes use the same."""

    #: The FunctionArn as the caller wrote it (goes into the Lambda context).
    arn: str
    #: Function name (the ARN's name, or the callable's for python: references).
    name: str
    #: "package.module:callable".
    handler: str
    #: Prepended to sys.path in worker processes (the creator's working directory).
    sys_path: tuple[str, ...] = ()
    #: Seconds one invocation may run before it is killed and its task fails.
    timeout_s: float = 60.0
    #: Reported by context.memory_limit_in_mb; not enforced.
    memory_mb: int = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class JobContext:
    """Everything about a job that an operation may need; picklable."""

    job_id: str
    account_id: str
    region: str
    storage: StorageConfig
    #: Set for LambdaInvoke jobs.
    function: FunctionSpec | None = None
    #: Worker processes for function handlers.
    function_workers: int = 2
    #: Extra environment for function worker processes (endpoint, region).
    function_env: Mapping[str, str] = field(default_factory=dict)
    #: The job's role (jobs created through `s3batch serve`): each task is checked against its
    #: allow-list (operations/guard.py). None: no role enforcement (CLI and local jobs).
    role: Role | None = None


@dataclass(slots=True, kw_only=True)
class OperationContext:
    """A job context plus the live resources of the process running the operation."""

    job: JobContext
    store: ObjectStore


class Operation(ABC):
    """A live operation bound to one job."""

    #: The AWS OperationName (as ListJobs reports it).
    name: ClassVar[str]
    #: More than 1: the engine may pass up to this many tasks to `apply_many` at once.
    batch_size: ClassVar[int] = 1

    @abstractmethod
    async def apply(self, task: Task) -> TaskResult: ...

    async def apply_many(self, tasks: Sequence[Task]) -> list[TaskResult]:
        return list(await asyncio.gather(*(self.apply(t) for t in tasks)))

    async def close(self) -> None:  # noqa: B027 - optional hook, most operations hold nothing
        """Release what `create` acquired (process pools, clients)."""


@dataclass(frozen=True, slots=True)
class OperationKind:
    name: str
    validate: Callable[[Mapping[str, Any]], None]
    create: Callable[[Mapping[str, Any], OperationContext], Operation]


def storage_failure(exc: StorageError) -> TaskResult:
    """A failed task from a failed storage call, keeping code, status and retryability."""
    return TaskResult.fail(exc.code, exc.message, exc.http_status, retryable=exc.retryable)
