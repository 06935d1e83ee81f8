"""The operation contract: what is done to one object.

An operation kind is a module exposing `KIND = OperationKind(...)` and one line in the registry
(`operations/__init__.py`). The kind states every fact the rest of s3batch needs about it; each
is a required field, so a kind that forgets one cannot be built:
- `name`: the AWS OperationName;
- `validate(params)` checks the AWS-shaped parameters at CreateJob time (pure; raises
  `errors.BadRequest`), so a bad request is refused before any job exists;
- `permissions`: the IAM actions one task needs (checked against the job's role);
- `requests(params, tasks, buckets)`: the requests a job makes, by type, for pricing and the
  dry run;
- `probe`: the capability check run in Preparing (with the store `Capability` it needs, if any),
  or `NoProbe.PLAIN_DATA_PATH`;
- `batch_size`: how many tasks `apply_many` takes at once (1: the kind does not batch);
- `create(params, ctx)` builds a live `Operation` inside the process that runs tasks. It gets
  only picklable inputs (`JobContext`) plus that process's own resources (`OperationContext`),
  so the same operation runs unchanged under the asyncio engine, a process pool or a cluster.

`Operation.apply` must not raise for a per-object problem: it returns a failed `TaskResult`
(with `retryable=True` for throttling, 5xx, timeouts, TemporaryFailure). An exception that
does escape is turned into a failed task by the engine, never a dead job.

`OperationContext.store` is the core `ObjectStore`. A kind that needs more asks for it once, in
`create`, with the capability's accessor (storage/capabilities.py: `acl_store(ctx.store)`, ...);
where the store does not declare it, each task fails with `undeclared(ctx, feature)`.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from s3batch.domain.commands import JobCommand
from s3batch.domain.function import FunctionSpec
from s3batch.domain.roles import Role
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import StorageError
from s3batch.operations.actions import Permissions
from s3batch.storage.base import Capability, ObjectStore
from s3batch.storage.config import LocalConfig, StorageConfig
from s3batch.storage.emulated import not_implemented

#: The batch size of a kind that takes its tasks one at a time.
UNBATCHED = 1
#: How `undeclared` names the store a job's StorageConfig opens: the words of that store's own
#: NotImplemented answers (storage/local.py), so the report row is the one the call would give.
FOLDER_STORE = "local folder store"
S3_ENDPOINT = "S3 endpoint"
#: What a probe check answers when handed a store without its capability (the probe framework
#: asks the declaration first, so a check never sees one).
NOT_DECLARED = "the store does not declare the capability this check needs"


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
    #: The registered command of an S3batchRunCommand job created by a server's caller, as
    #: recorded at CreateJob (domain/spec.JobRuntime.command). None: the job's own Command.
    command: JobCommand | None = None
    #: Named stores the job writes to besides its own (S3batchTransfer's TargetStore), as
    #: resolved at CreateJob (domain/spec.JobRuntime.stores).
    stores: Mapping[str, StorageConfig] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class OperationContext:
    """A job context plus the live resources of the process running the operation."""

    job: JobContext
    store: ObjectStore


class Operation(ABC):
    """A live operation bound to one job."""

    #: The AWS OperationName (as ListJobs reports it).
    name: ClassVar[str]
    #: More than 1: the engine may pass up to this many tasks to `apply_many` at once. Per
    #: instance: an operation may set it in `__init__` from its job's parameters
    #: (LambdaInvoke's InvocationBatchSize); the class value is its kind's default.
    batch_size: int = UNBATCHED
    #: How many batches the operation runs side by side (LambdaInvoke: its function workers).
    #: The engine cuts a job's last tasks into that many equal batches, so none sits idle.
    batch_spread: int = 1

    @abstractmethod
    async def apply(self, task: Task) -> TaskResult: ...

    async def apply_many(self, tasks: Sequence[Task]) -> list[TaskResult]:
        return list(await asyncio.gather(*(self.apply(t) for t in tasks)))

    async def close(self) -> None:  # noqa: B027 - optional hook, most operations hold nothing
        """Release what `create` acquired (process pools, clients)."""


#: (job parameters, tasks, distinct buckets) → the requests the tasks make, by request type
#: (`domain.pricing`'s names). The manifest's own GET is the job's, not the operation's.
RequestCount = Callable[[Mapping[str, Any], int, int], dict[str, int]]


@dataclass(frozen=True, slots=True)
class PerTask:
    """A `RequestCount` of `count` requests of type `request` for every task (no batching)."""

    request: str
    count: int

    def __call__(self, params: Mapping[str, Any], tasks: int, buckets: int) -> dict[str, int]:
        return {self.request: self.count * tasks}


#: (store, bucket, scratch key, its version id, job parameters) → None when the endpoint did the
#: operation's kind of call correctly on the scratch object, else what went wrong. A StorageError
#: may escape: the probe framework (service/probe.py) turns it into the verdict.
ProbeCheck = Callable[[ObjectStore, str, str, str | None, Mapping[str, Any]], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class CapabilityProbe:
    """The check run on a scratch object before a job of the kind touches any of its objects."""

    #: What the endpoint must support, as the failure names it ("object tagging").
    feature: str
    #: The store capability the feature needs, None where it is core (object tagging). A store
    #: that does not declare it fails the probe without a scratch object being written; one
    #: that does still gets the check, which finds out whether the server supports it.
    capability: Capability | None
    #: Calls the capability's methods through its accessor (storage/capabilities.py).
    check: ProbeCheck


class NoProbe(Enum):
    """Why a kind needs no capability probe (stated, never assumed from a missing entry)."""

    #: It only reads, copies or deletes: the plain data path every S3 server implements.
    PLAIN_DATA_PATH = "plain data path"


@dataclass(frozen=True, slots=True, kw_only=True)
class OperationKind:
    """Everything s3batch knows about one operation kind; every fact is required."""

    #: The AWS OperationName.
    name: str
    validate: Callable[[Mapping[str, Any]], None]
    permissions: Permissions
    requests: RequestCount
    probe: CapabilityProbe | NoProbe
    #: Tasks `apply_many` takes at once; equal to the Operation class's `batch_size` (an
    #: instance may choose another from its job's parameters).
    batch_size: int
    create: Callable[[Mapping[str, Any], OperationContext], Operation]


def storage_failure(exc: StorageError) -> TaskResult:
    """A failed task from a failed storage call, keeping code, status and retryability."""
    return TaskResult.fail(exc.code, exc.message, exc.http_status, retryable=exc.retryable)


def undeclared(ctx: OperationContext, feature: str) -> TaskResult:
    """What each task reports when the job's store does not declare the capability its kind
    needs: NotImplemented (501) in the store's own words (storage/emulated.py names `feature`
    the same way), so a job whose capability probe did not run (its role may not touch the
    probe's bucket) reports per task exactly as the store's call would. Built once, in `create`."""
    where = FOLDER_STORE if isinstance(ctx.job.storage, LocalConfig) else S3_ENDPOINT
    return storage_failure(not_implemented(where, feature))
