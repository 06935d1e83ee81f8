"""S3 error codes and statuses: which are worth retrying, and names for bodiless answers.

Shared by the aiobotocore adapter and the lean request path so both classify a failure alike."""

from __future__ import annotations

from s3batch.errors import StorageError

#: Error codes worth retrying later: throttling and transient server trouble.
RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestThrottled",
        "TooManyRequests",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
        "OperationAborted",
    }
)
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: HEAD answers carry no body, so botocore reports the bare status as the code.
STATUS_CODE_NAMES = {"404": "NoSuchKey", "403": "AccessDenied"}


def storage_error(code: str, message: str, status: int | None) -> StorageError:
    """The StorageError for an S3 error answer; a bodiless one (HEAD) is named by its status."""
    code = STATUS_CODE_NAMES.get(code, code) or STATUS_CODE_NAMES.get(str(status), str(status))
    retryable = code in RETRYABLE_CODES or status in RETRYABLE_STATUSES
    return StorageError(code, message or code, status, retryable)
