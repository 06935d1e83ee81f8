"""Job statuses, their allowed transitions, and the job record (docs/aws-contracts.md#job-statuses)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from s3batch.domain.spec import JobRequest, JobRuntime

#: Once this many tasks have run, the job fails if more than FAILURE_RATE_LIMIT of them failed.
FAILURE_THRESHOLD_MIN_TASKS = 1000
FAILURE_RATE_LIMIT = 0.5


class JobStatus(StrEnum):
    NEW = "New"
    PREPARING = "Preparing"
    SUSPENDED = "Suspended"
    READY = "Ready"
    ACTIVE = "Active"
    PAUSING = "Pausing"
    PAUSED = "Paused"
    COMPLETING = "Completing"
    COMPLETE = "Complete"
    CANCELLING = "Cancelling"
    CANCELLED = "Cancelled"
    FAILING = "Failing"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobStatus.COMPLETE, JobStatus.CANCELLED, JobStatus.FAILED})

_S = JobStatus
#: Every transition the runner or a user may make. Anything else is a bug or a
#: JobStatusException.
TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    _S.NEW: frozenset({_S.PREPARING, _S.CANCELLED, _S.FAILED}),
    _S.PREPARING: frozenset({_S.READY, _S.SUSPENDED, _S.FAILING, _S.FAILED, _S.CANCELLED}),
    _S.SUSPENDED: frozenset({_S.READY, _S.CANCELLED, _S.FAILED}),
    _S.READY: frozenset({_S.ACTIVE, _S.CANCELLED, _S.FAILED}),
    _S.ACTIVE: frozenset({_S.COMPLETING, _S.FAILING, _S.CANCELLING, _S.PAUSING, _S.READY}),
    _S.PAUSING: frozenset({_S.PAUSED, _S.CANCELLING, _S.FAILING}),
    _S.PAUSED: frozenset({_S.ACTIVE, _S.CANCELLING}),
    _S.COMPLETING: frozenset({_S.COMPLETE, _S.FAILED}),
    _S.CANCELLING: frozenset({_S.CANCELLED}),
    _S.FAILING: frozenset({_S.FAILED}),
    _S.COMPLETE: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.FAILED: frozenset(),
}


def can_transition(src: JobStatus, dst: JobStatus) -> bool:
    return dst in TRANSITIONS[src]


def user_status_change(current: JobStatus, requested: str) -> JobStatus | None:
    """The status UpdateJobStatus moves to, or None when AWS would answer JobStatusException.

    Ready confirms a Suspended job. Cancelled is accepted in any non-terminal state; a running
    job goes through Cancelling so the runner can stop and write the report.
    """
    if requested == "Ready":
        return JobStatus.READY if current is JobStatus.SUSPENDED else None
    if requested == "Cancelled":
        if current.terminal or current is JobStatus.CANCELLING:
            return None
        running = {JobStatus.ACTIVE, JobStatus.PAUSING, JobStatus.PAUSED}
        return JobStatus.CANCELLING if current in running else JobStatus.CANCELLED
    return None


@dataclass(frozen=True, slots=True)
class FailureReason:
    code: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Progress:
    total: int | None = None
    succeeded: int = 0
    failed: int = 0
    elapsed_active_s: float = 0.0

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    def over_failure_threshold(self) -> bool:
        return self.done >= FAILURE_THRESHOLD_MIN_TASKS and self.failed > FAILURE_RATE_LIMIT * self.done


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """A job as stored. `request` is the normalized CreateJob request (AWS JSON shape) and
    `runtime` the record of what was resolved at creation; code that runs the job reads them
    typed, as `spec` and `setup` (domain/spec.py)."""

    job_id: str
    account_id: str
    status: JobStatus
    priority: int
    request: Mapping[str, Any]
    #: Resolved things recorded at creation (storage, function, region): see service.jobs.
    runtime: Mapping[str, Any]
    creation_time: float
    progress: Progress = Progress()
    client_request_token: str | None = None
    request_hash: str = ""
    termination_date: float | None = None
    suspended_date: float | None = None
    suspended_cause: str | None = None
    status_update_reason: str | None = None
    failure_reasons: tuple[FailureReason, ...] = ()
    tags: tuple[tuple[str, str], ...] = ()
    #: When the current Active period started (epoch seconds), for ElapsedTimeInActiveSeconds.
    active_since: float | None = None
    #: Where the report was written (bucket, manifest key), once written.
    report_manifest: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    # The typed views of `request` and `runtime`, parsed on first use (see `spec`, `setup`).
    _spec: JobRequest | None = field(default=None, init=False, repr=False, compare=False)
    _setup: JobRuntime | None = field(default=None, init=False, repr=False, compare=False)

    def evolve(self, **changes: Any) -> Job:
        return replace(self, **changes)

    @property
    def spec(self) -> JobRequest:
        """The request as typed values (the AWS JSON stays in `request`, its stored form)."""
        if self._spec is None:
            object.__setattr__(self, "_spec", JobRequest.parse(self.request))
        assert self._spec is not None
        return self._spec

    @property
    def setup(self) -> JobRuntime:
        """The runtime record as typed values (stored form: `runtime`)."""
        if self._setup is None:
            object.__setattr__(self, "_setup", JobRuntime.parse(self.runtime))
        assert self._setup is not None
        return self._setup

    @property
    def operation_name(self) -> str:
        return str(next(iter(self.request["Operation"])))
