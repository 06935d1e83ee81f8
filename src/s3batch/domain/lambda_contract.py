"""The S3 Batch Operations ↔ Lambda contract (docs/aws-contracts.md#lambda-invocation-contract), as pure
functions.

`build_event` makes the event AWS sends for one task; `interpret_response` and
`function_error_result` turn what the function gave back into a `TaskResult` (one completion
report row). Nothing here does I/O, so the rules can be tested exhaustively.

Batched invocations (the s3batch extension `InvocationBatchSize`, docs/handlers.md): AWS sends
one task per event; `build_batch_event` puts up to N tasks into one 2.0 event, each with its own
taskId, and `interpret_batch` gives each task its own `TaskAnswer`. Its rules are stricter than
AWS's single-task ones, because with several tasks per call an answer can be labelled with the
wrong task:

- Each task takes the result with its taskId; one with none follows `treatMissingKeysAs`.
- A taskId with more than one result fails that task (`DUPLICATE_TASK_ID_MESSAGE`): s3batch
  cannot tell which answer is its own.
- A result whose taskId the event did not carry (or no string taskId at all) means the function
  mixed up its inputs, so no answer of that response is trusted: every task of the invocation
  fails with `ON_UNKNOWN_TASK_ID` (PermanentFailure; `UNKNOWN_TASK_ID_MESSAGE`), even those that
  carry a result of their own. A task is never reported succeeded on an answer that may be
  another object's. Tasks are not retried for it: a mislabelling function is a bug to fix, and a
  retry of one task per call could hide it.
- A function error (exception, timeout, crash) fails every task of the invocation with the one
  `function_error_result`, as it fails the single task of an AWS invocation.

Every result may carry `resultData` (`RESULT_DATA_FIELD`, an s3batch extension in both modes): a
JSON object of columns for a results sink, returned as `TaskAnswer.data`. A `resultData` that is
not an object (null counts as absent) fails that task with `INVALID_PAYLOAD_MESSAGE`: data the
function meant to keep would otherwise be lost without a word.

Choices where AWS documents nothing (each one is a named constant below):

- A response without `treatMissingKeysAs` treats a missing result as **PermanentFailure**.
  AWS's examples always send the field, and Powertools defaults it to Succeeded; defaulting to
  success here would silently report work that never happened as done.
- A response we cannot use (not an object, no `results` list, an entry that is not an object,
  an unknown `resultCode` or `treatMissingKeysAs`) fails the task as `PermanentFailure` with
  `INVALID_PAYLOAD_MESSAGE` (AWS's own wording) followed by ": " and what was wrong.
- In a single-task invocation (AWS's), result entries for other taskIds are ignored and our
  task then counts as missing; the first of several results for our taskId counts.
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
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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

#: Report message of a task whose taskId has several results in a batch's response.
DUPLICATE_TASK_ID_MESSAGE = (
    "Lambda response had {count} results for taskId {task_id}; s3batch cannot tell which one is this task's"
)
#: Report message of every task of a batch whose response names a taskId it did not send.
UNKNOWN_TASK_ID_MESSAGE = (
    "Lambda response had a result for taskId {task_id}, which this invocation did not send: "
    "no result of its {tasks} tasks is trusted"
)
#: The result code of every task of a batch whose response names an unknown taskId (see the
#: module docstring): final, since only a fix of the function helps.
ON_UNKNOWN_TASK_ID = PERMANENT_FAILURE
#: The result field (s3batch extension) holding a task's columns for a results sink.
RESULT_DATA_FIELD = "resultData"

#: "No such value" for searches where None is a value (a result's taskId may be null).
_NOTHING: Any = object()

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


@dataclass(frozen=True, slots=True)
class TaskAnswer:
    """One task's outcome from a function's response, and the data it carried."""

    result: TaskResult
    #: The result's `resultData` (JSON columns for a results sink); None when it had none.
    data: Mapping[str, Any] | None = None


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
    return build_batch_event(
        job_id=job_id,
        tasks=[(task, task_id)],
        schema_version=schema_version,
        user_arguments=user_arguments,
        invocation_id=invocation_id,
        partition=partition,
    )


def build_batch_event(
    *,
    job_id: str,
    tasks: Sequence[tuple[Task, str]],
    schema_version: str,
    user_arguments: Mapping[str, str] | None,
    invocation_id: str,
    partition: str = "aws",
) -> dict[str, Any]:
    """One event for `tasks` ((task, taskId) pairs, in order), each entry as `build_event` makes it.

    More than one task is the s3batch extension, in schema 2.0 only (AWS's 2.0 `tasks` is
    already a list).
    """
    if schema_version not in SCHEMA_VERSIONS:
        raise ValueError(f"invocationSchemaVersion must be 1.0 or 2.0, got {schema_version!r}")
    if not tasks:
        raise ValueError("an invocation event needs at least one task")
    if len(tasks) > 1 and schema_version != "2.0":
        raise ValueError(f"an event with {len(tasks)} tasks needs invocationSchemaVersion 2.0")
    job: dict[str, Any] = {"id": job_id}
    if schema_version == "2.0":
        job["userArguments"] = dict(user_arguments or {})
    return {
        "invocationSchemaVersion": schema_version,
        "invocationId": invocation_id,
        "job": job,
        "tasks": [_task_entry(task, task_id, schema_version, partition) for task, task_id in tasks],
    }


def _task_entry(task: Task, task_id: str, schema_version: str, partition: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "taskId": task_id,
        "s3Key": task.raw_key,
        "s3VersionId": task.version_id or None,
    }
    if schema_version == "1.0":
        entry["s3BucketArn"] = bucket_arn(task.bucket, partition)
    else:
        entry["s3Bucket"] = task.bucket
    return entry


def interpret_response(payload: Any, task_id: str) -> TaskResult:
    """The task's outcome from the function's (already JSON-decoded) return value."""
    return interpret_answer(payload, task_id).result


def interpret_answer(payload: Any, task_id: str) -> TaskAnswer:
    """`interpret_response` for one task, with the result's `resultData`."""
    problem = _shape_problem(payload)
    if problem is not None:
        return TaskAnswer(_invalid(problem))
    mine = next((r for r in payload["results"] if r.get("taskId") == task_id), None)
    if mine is None:
        return TaskAnswer(_missing(payload.get("treatMissingKeysAs"), task_id))
    return _answer(mine, task_id)


def interpret_batch(payload: Any, task_ids: Sequence[str]) -> list[TaskAnswer]:
    """Each task's outcome from the response to one batched event, in `task_ids`' order
    (rules in the module docstring)."""
    sent = set(task_ids)
    if len(sent) != len(task_ids):
        raise ValueError("a batch's taskIds must be distinct")
    problem = _shape_problem(payload)
    if problem is not None:
        return [TaskAnswer(_invalid(problem))] * len(task_ids)
    results: list[Mapping[str, Any]] = payload["results"]
    stray = next((r.get("taskId") for r in results if not _names_one_of(r, sent)), _NOTHING)
    if stray is not _NOTHING:
        message = UNKNOWN_TASK_ID_MESSAGE.format(task_id=compact_json(stray), tasks=len(task_ids))
        failed = TaskResult.fail(ON_UNKNOWN_TASK_ID, cap_message(message), LAMBDA_HTTP_STATUS)
        return [TaskAnswer(failed)] * len(task_ids)
    counts = Counter(r["taskId"] for r in results)  # every one a string of the batch by now
    by_id = {r["taskId"]: r for r in results}
    return [_batch_answer(payload, by_id.get(tid), counts[tid], tid) for tid in task_ids]


def _names_one_of(result: Mapping[str, Any], sent: set[str]) -> bool:
    task_id = result.get("taskId")
    return isinstance(task_id, str) and task_id in sent


def _batch_answer(
    payload: Mapping[str, Any], mine: Mapping[str, Any] | None, count: int, task_id: str
) -> TaskAnswer:
    if mine is None:
        return TaskAnswer(_missing(payload.get("treatMissingKeysAs"), task_id))
    if count > 1:
        message = cap_message(DUPLICATE_TASK_ID_MESSAGE.format(count=count, task_id=task_id))
        return TaskAnswer(TaskResult.fail(PERMANENT_FAILURE, message, LAMBDA_HTTP_STATUS))
    return _answer(mine, task_id)


def _shape_problem(payload: Any) -> str | None:
    """What makes `payload` unusable as a whole, or None."""
    if not isinstance(payload, Mapping):
        return f"expected a JSON object, got {_json_type(payload)}"
    results = payload.get("results")
    if not isinstance(results, list):
        return f"'results' must be a list, got {_json_type(results)}"
    if not all(isinstance(r, Mapping) for r in results):
        return "every entry of 'results' must be an object"
    return None


def _answer(mine: Mapping[str, Any], task_id: str) -> TaskAnswer:
    """The outcome one result entry states, with its resultData when the entry is usable."""
    code = mine.get("resultCode")
    result = _from_code(code, _result_string(mine.get("resultString")))
    data = mine.get(RESULT_DATA_FIELD)
    if data is None or code not in RESULT_CODES:
        return TaskAnswer(result)
    if not isinstance(data, Mapping):
        return TaskAnswer(
            _invalid(f"'{RESULT_DATA_FIELD}' of taskId {task_id} must be an object, got {_json_type(data)}")
        )
    return TaskAnswer(result, data)


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
