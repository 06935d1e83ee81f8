"""What every built-in function shares: read a batch's objects, answer one result per task.

A built-in is an ordinary S3 Batch Operations handler (schema 1.0 or 2.0). An event carries one
task (AWS's shape) or, with the s3batch extension `InvocationBatchSize`, up to N tasks; either
way `batch_handler` reads every task's object concurrently through the job's own store, hands
the bodies that could be read to the built-in's `compute` in one call (so a model scores the
whole batch at once), and answers one result per taskId in the event's order.

Each result is an `Answer`: the task's resultCode and resultString, plus optional `data` — the
s3batch extension `resultData`, a JSON object of columns (a vector, counts, ...) too big for a
report line, which a job's ResultsSink stores and the report row points at.

A task whose object cannot be read answers PermanentFailure with "CODE: message", or
TemporaryFailure when the store error is retryable (throttling, 5xx), so the job redrives it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from s3batch.errors import StorageError
from s3batch.functions.objects import ObjectRef, read_objects

SUCCEEDED = "Succeeded"
TEMPORARY_FAILURE = "TemporaryFailure"
PERMANENT_FAILURE = "PermanentFailure"
#: The response field (s3batch extension) that carries a result's columns for a ResultsSink.
RESULT_DATA_FIELD = "resultData"


@dataclass(frozen=True, slots=True)
class Answer:
    """One task's outcome, as a built-in reports it."""

    code: str
    message: str
    #: Columns for a results sink (JSON values); None when the result fits in `message`.
    data: Mapping[str, Any] | None = None

    @classmethod
    def ok(cls, message: str, data: Mapping[str, Any] | None = None) -> Answer:
        return cls(SUCCEEDED, message, data)

    @classmethod
    def failed(cls, message: str) -> Answer:
        """A permanent failure: the object itself is unusable (not text, not an image...)."""
        return cls(PERMANENT_FAILURE, message)


#: The built-in's work: object bodies (at most the caller's byte cap each) → one Answer each.
Compute = Callable[[Sequence[bytes]], Sequence[Answer]]


def task_ref(task: Mapping[str, Any]) -> ObjectRef:
    """The object a task names: 1.0 gives the bucket by ARN, 2.0 by name; keys arrive URL-encoded."""
    bucket = task.get("s3Bucket") or str(task["s3BucketArn"]).split(":::", 1)[-1]
    key = str(task["s3Key"])
    if "%" in key or "+" in key:  # else nothing to decode, and unquote_plus costs per task
        key = unquote_plus(key)
    return ObjectRef(str(bucket), key, task.get("s3VersionId") or None)


def batch_handler(
    event: Mapping[str, Any], compute: Compute, *, max_bytes: int | None = None
) -> dict[str, Any]:
    """The response to `event`: each task's object read (first `max_bytes`), computed, answered."""
    tasks: list[Mapping[str, Any]] = list(event["tasks"])
    bodies = read_objects([task_ref(t) for t in tasks], max_bytes=max_bytes)
    answers: list[Answer | None] = [None] * len(tasks)
    readable: list[int] = []
    for i, body in enumerate(bodies):
        if isinstance(body, StorageError):
            code = TEMPORARY_FAILURE if body.retryable else PERMANENT_FAILURE
            answers[i] = Answer(code, f"{body.code}: {body.message}")
        else:
            readable.append(i)
    if readable:
        computed = compute([bodies[i] for i in readable])  # type: ignore[misc]
        if len(computed) != len(readable):
            raise RuntimeError(f"compute answered {len(computed)} results for {len(readable)} objects")
        for i, answer in zip(readable, computed, strict=True):
            answers[i] = answer
    return respond(event, [a for a in answers if a is not None])


def respond(event: Mapping[str, Any], answers: Sequence[Answer]) -> dict[str, Any]:
    """The handler response: one result per task of `event`, in order."""
    results = []
    for task, answer in zip(event["tasks"], answers, strict=True):
        result: dict[str, Any] = {
            "taskId": task["taskId"],
            "resultCode": answer.code,
            "resultString": answer.message,
        }
        if answer.data is not None:
            result[RESULT_DATA_FIELD] = dict(answer.data)
        results.append(result)
    return {
        "invocationSchemaVersion": event["invocationSchemaVersion"],
        "treatMissingKeysAs": PERMANENT_FAILURE,
        "invocationId": event["invocationId"],
        "results": results,
    }
