"""The error tree.

    S3BatchError
    ├── ApiError                 an S3 Control error code the caller sees (maps 1:1 to AWS's)
    │   ├── BadRequest               BadRequestException, 400
    │   ├── InvalidRequest           InvalidRequestException, 400
    │   ├── IdempotencyError         IdempotencyException, 400
    │   ├── JobStatusError           JobStatusException, 400
    │   ├── NotFound                 NotFoundException, 404
    │   ├── TooManyTags              TooManyTagsException, 400
    │   └── InvalidNextToken         InvalidNextTokenException, 400
    ├── ManifestError            a manifest that cannot be read; names the line
    ├── StorageError             an object-store call failed (code, HTTP status, retryable)
    └── ConfigError              bad settings, function registry or storage URL

Code at the edges (CLI, HTTP API) turns ApiError into the AWS error shape; the runner turns
ManifestError into a Failed job with a FailureReason and StorageError into a failed task.
"""

from __future__ import annotations


class S3BatchError(Exception):
    """Base of every error s3batch raises on purpose."""


class ApiError(S3BatchError):
    """An error with an S3 Control error code."""

    code = "InternalServiceException"
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    code = "BadRequestException"
    http_status = 400


class InvalidRequest(ApiError):
    code = "InvalidRequestException"
    http_status = 400


class IdempotencyError(ApiError):
    code = "IdempotencyException"
    http_status = 400


class JobStatusError(ApiError):
    code = "JobStatusException"
    http_status = 400


class NotFound(ApiError):
    code = "NotFoundException"
    http_status = 404


class AccessDenied(ApiError):
    """Not modeled by S3 Control; what IAM answers when the caller may not pass a role."""

    code = "AccessDenied"
    http_status = 403


class TooManyTags(ApiError):
    code = "TooManyTagsException"
    http_status = 400


class InvalidNextToken(ApiError):
    code = "InvalidNextTokenException"
    http_status = 400


class ManifestError(S3BatchError):
    """The manifest cannot be used. `line` is 1-based, or None for whole-file problems."""

    def __init__(self, message: str, line: int | None = None) -> None:
        where = f"manifest line {line}: " if line is not None else "manifest: "
        super().__init__(where + message)
        self.line = line
        self.reason = message


class StorageError(S3BatchError):
    """An object-store call failed.

    `code` is the S3 error code (NoSuchKey, AccessDenied, SlowDown, ...), `http_status` the
    HTTP status (None when no HTTP answer came back, e.g. a reset), `retryable` whether trying
    again later can succeed (throttling, 5xx, timeouts, connection errors).
    """

    def __init__(
        self, code: str, message: str, http_status: int | None = None, retryable: bool = False
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status
        self.retryable = retryable


class ConfigError(S3BatchError):
    """Settings, a storage URL or a function reference are wrong."""
