"""The S3 Batch Operations ↔ Lambda contract (docs/aws-contracts.md#lambda-invocation-contract), as pure
functions.

`build_event` makes the event AWS sends for one task; `interpret_response` and
`function_error_result` turn what the function gave back into a `TaskResult` (one completion
report row). Nothing here does I/O, so the rules can be tested exhaustively.

Choices where AWS documents nothing (each one is a named constant below):

- A response without `treatMissingKeysAs` treats a missing result as **PermanentFailure**.
  AWS's examples always send the field, and Powertools defaults it to Succeeded; defaulting to
  success here would silently report work that never happened as done.
- A response we cannot use (not an object, no `results` list, an entry that is not an object,
  an unknown `resultCode` or `treatMissingKeysAs`) fails the task as `PermanentFailure` with
  `INVALID_PAYLOAD_MESSAGE` (AWS's own wording) followed by ": " and what was wrong.
- Result entries for other taskIds are ignored; our task then counts as missing.
- `resultString` may be absent or null (→ ""); a non-string JSON value is kept as compact JSON
  rather than failing the task, since the work itself was reported done.
- `invocationSchemaVersion` / `invocationId` in the response are not checked: AWS says to copy
  them, but a typo there does not change what the function did.
- Every message is capped at `MAX_RESULT_MESSAGE_BYTES` of UTF-8; a longer one is cut and
  ends with `TRUNCATION_MARKER`.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from s3batch.domain.arn import bucket_arn
from s3batch.domain.task import Task, TaskResult

SCHEMA_VERSIONS = ("1.0", "2.0")
SUCCEEDED = "Succeeded"
TEMPORARY_FAILURE = "TemporaryFailure"
PERMANENT_FAILURE = "PermanentFailure"
RESULT_CODES = (SUCCEEDED, TEMPORARY_FAILURE, PERMANENT_FAILURE)
#: What a missing result counts as when the response does not say (see module docstring).
DEFAULT_TREAT_MISSING_KEYS_AS = PERMANENT_FAILURE
#: The Lambda invoke itself answered; AWS reports 200 for every Lambda-decided outcome.
LAMBDA_HTTP_STATUS = 200

#: AWS's report text for a payload it cannot use; details follow after ": ".
INVALID_PAYLOAD_MESSAGE = "Invalid JSON returned in Lambda payload"
#: Prefix of the report message for an unhandled error, timeout or crash in the function.
FUNCTION_ERROR_PREFIX = "Lambda returned function error: "
#: Report message when the response has no result for the task (then the code decides).
MISSING_RESULT_MESSAGE = "Lambda response had no result for taskId {task_id} (treatMissingKeysAs={code})"

#: Largest report message kept, in bytes of UTF-8 (64 KiB); AWS documents no limit.
MAX_RESULT_MESSAGE_BYTES = 64 * 1024
#: Appended to a message cut at MAX_RESULT_MESSAGE_BYTES (counted inside the cap).
TRUNCATION_MARKER = "...[truncated by s3batch]"


def opaque_id(raw: bytes) -> str:
    """An opaque id like AWS's taskId/invocationId: URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def task_id_for(job_id: str, seq: int) -> str:
    """A taskId stable across retries of the same task, so handlers can de-duplicate."""
    return opaque_id(f"{job_id}/{seq}".encode())


def build_event(
    *,
    job_id: str,
    task: Task,
    schema_version: str,
    user_arguments: Mapping[str, str] | None,
    invocation_id: str,
    task_id: str,
    partition: str = "aws",
) -> dict[str, Any]:
    """The invocation event for one task, exactly as S3 Batch Operations sends it.

    1.0 names the bucket by ARN (`s3BucketArn`); 2.0 by name (`s3Bucket`) and adds
    `job.userArguments` (`{}` when the job has none: AWS does not document that case, and an
    empty object is the one value every handler style tolerates). `s3Key` stays URL-encoded as
    in the manifest; handlers decode it with `unquote_plus`.
    """
    if schema_version not in SCHEMA_VERSIONS:
        raise ValueError(f"invocationSchemaVersion must be 1.0 or 2.0, got {schema_version!r}")
    job: dict[str, Any] = {"id": job_id}
    entry: dict[str, Any] = {
        "taskId": task_id,
        "s3Key": task.raw_key,
        "s3VersionId": task.version_id or None,
    }
    if schema_version == "1.0":
        entry["s3BucketArn"] = bucket_arn(task.bucket, partition)
    else:
        job["userArguments"] = dict(user_arguments or {})
        entry["s3Bucket"] = task.bucket
    return {
        "invocationSchemaVersion": schema_version,
        "invocationId": invocation_id,
        "job": job,
        "tasks": [entry],
    }


def interpret_response(payload: Any, task_id: str) -> TaskResult:
    """The task's outcome from the function's (already JSON-decoded) return value."""
    if not isinstance(payload, Mapping):
        return _invalid(f"expected a JSON object, got {_json_type(payload)}")
    results = payload.get("results")
    if not isinstance(results, list):
        return _invalid(f"'results' must be a list, got {_json_type(results)}")
    if not all(isinstance(r, Mapping) for r in results):
        return _invalid("every entry of 'results' must be an object")
    mine = next((r for r in results if r.get("taskId") == task_id), None)
    if mine is None:
        return _missing(payload.get("treatMissingKeysAs"), task_id)
    return _from_code(mine.get("resultCode"), _result_string(mine.get("resultString")))


def function_error_result(error_payload: Mapping[str, Any]) -> TaskResult:
    """A failed task for a function error (exception, timeout, crash), as AWS reports it."""
    message = cap_message(FUNCTION_ERROR_PREFIX + compact_json(dict(error_payload)))
    return TaskResult.fail(PERMANENT_FAILURE, message, LAMBDA_HTTP_STATUS)


def compact_json(value: Any) -> str:
    """JSON without spaces, non-ASCII kept readable (as in AWS's report examples)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def cap_message(text: str) -> str:
    """`text` if it fits MAX_RESULT_MESSAGE_BYTES, else its head plus TRUNCATION_MARKER."""
    data = text.encode("utf-8")
    if len(data) <= MAX_RESULT_MESSAGE_BYTES:
        return text
    room = MAX_RESULT_MESSAGE_BYTES - len(TRUNCATION_MARKER.encode("utf-8"))
    # "ignore" drops a multi-byte character cut in half at the boundary.
    return data[:room].decode("utf-8", errors="ignore") + TRUNCATION_MARKER


def _from_code(code: Any, message: str) -> TaskResult:
    if code == SUCCEEDED:
        return TaskResult.ok(message=message, http_status=LAMBDA_HTTP_STATUS)
    if code == TEMPORARY_FAILURE:
        return TaskResult.fail(code, message, LAMBDA_HTTP_STATUS, retryable=True)
    if code == PERMANENT_FAILURE:
        return TaskResult.fail(code, message, LAMBDA_HTTP_STATUS)
    return _invalid(f"unknown resultCode {code!r}; expected one of {', '.join(RESULT_CODES)}")


def _missing(treat_as: Any, task_id: str) -> TaskResult:
    code = DEFAULT_TREAT_MISSING_KEYS_AS if treat_as is None else treat_as
    if code not in RESULT_CODES:
        return _invalid(f"unknown treatMissingKeysAs {code!r}; expected one of {', '.join(RESULT_CODES)}")
    return _from_code(code, MISSING_RESULT_MESSAGE.format(task_id=task_id, code=code))


def _result_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return cap_message(value)
    return cap_message(compact_json(value))


def _invalid(detail: str) -> TaskResult:
    message = cap_message(f"{INVALID_PAYLOAD_MESSAGE}: {detail}")
    return TaskResult.fail(PERMANENT_FAILURE, message, LAMBDA_HTTP_STATUS)


def _json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, Mapping) else type(value).__name__
