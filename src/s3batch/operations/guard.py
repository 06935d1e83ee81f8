"""Least privilege per task: an operation wrapped so that a task its role does not allow
fails with AccessDenied (403) before any request is sent, and the job goes on.

`get_kind` wraps every operation this way when the job has a role (JobContext.role), so the
check runs in whichever engine and process runs the task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from s3batch.domain.roles import Denial, Role, first_denied
from s3batch.domain.task import Task, TaskResult
from s3batch.operations.actions import Permissions
from s3batch.operations.base import Operation

#: Decisions remembered per (bucket, versioned); a job touching more buckets recomputes.
MAX_CACHED_DECISIONS = 10_000
ACCESS_DENIED = "AccessDenied"
ACCESS_DENIED_STATUS = 403


class RoleCheck:
    """Decides, per task, whether the role grants everything the operation needs there."""

    def __init__(self, role: Role, permissions: Permissions, params: Mapping[str, Any]) -> None:
        self.role, self.permissions, self.params = role, permissions, params
        self._decisions: dict[tuple[str, bool], Denial | None] = {}

    def denial(self, task: Task) -> Denial | None:
        key = (task.bucket, bool(task.version_id))
        if key in self._decisions:
            return self._decisions[key]
        denial = first_denied(self.role, self.permissions.needs(self.params, *key))
        if len(self._decisions) < MAX_CACHED_DECISIONS:
            self._decisions[key] = denial
        return denial


def denied_result(denial: Denial) -> TaskResult:
    return TaskResult.fail(ACCESS_DENIED, denial.message, ACCESS_DENIED_STATUS)


def guarded(inner: Operation, check: RoleCheck) -> Operation:
    """`inner`, refusing the tasks `check` denies. Keeps inner's name, batch size and spread."""

    class Guarded(Operation):
        name = inner.name
        # The instance's own value (LambdaInvoke sets it per job), read when the job starts.
        batch_size = inner.batch_size
        batch_spread = inner.batch_spread

        async def apply(self, task: Task) -> TaskResult:
            denial = check.denial(task)
            return denied_result(denial) if denial else await inner.apply(task)

        async def apply_many(self, tasks: Sequence[Task]) -> list[TaskResult]:
            denials = [check.denial(task) for task in tasks]
            allowed = [task for task, denial in zip(tasks, denials, strict=True) if denial is None]
            done = iter(await inner.apply_many(allowed) if allowed else [])
            return [denied_result(d) if d else next(done) for d in denials]

        async def close(self) -> None:
            await inner.close()

    return Guarded()
