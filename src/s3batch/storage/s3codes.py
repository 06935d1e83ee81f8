"""S3 error codes and statuses: which are worth retrying, and names for bodiless answers.

Shared by the aiobotocore adapter and the lean request path so both classify a failure alike."""

from __future__ import annotations

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
