"""One task = one object of the manifest × the job's operation, and its outcome."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """One manifest row, ready to act on."""

    #: Position in the manifest, 0-based, counting only task rows. Stable across re-reads.
    seq: int
    #: Bucket name as written in the manifest.
    bucket: str
    #: Key as written in the manifest (URL-encoded); goes to the report and Lambda events.
    raw_key: str
    #: Decoded key, used for storage calls.
    key: str
    #: Version ID, or None.
    version_id: str | None = None


class TaskStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskResult:
    """What happened to one task; one completion-report row once final."""

    status: TaskStatus
    #: HTTP status of the call that decided the outcome; None when there was no HTTP answer.
    http_status: int | None = 200
    #: Empty on success; an S3 error code or a Lambda result code on failure.
    error_code: str = ""
    #: "Successful", a Lambda resultString, or the error text.
    message: str = "Successful"
    #: A failure that may succeed if tried again (TemporaryFailure, SlowDown, 5xx, timeout).
    retryable: bool = False

    @property
    def succeeded(self) -> bool:
        return self.status is TaskStatus.SUCCEEDED

    @classmethod
    def ok(cls, message: str = "Successful", http_status: int | None = 200) -> TaskResult:
        return cls(status=TaskStatus.SUCCEEDED, http_status=http_status, message=message)

    @classmethod
    def fail(
        cls,
        error_code: str,
        message: str,
        http_status: int | None = None,
        retryable: bool = False,
    ) -> TaskResult:
        return cls(
            status=TaskStatus.FAILED,
            http_status=http_status,
            error_code=error_code,
            message=message,
            retryable=retryable,
        )
