"""What the text built-ins (language, PII, CSV profile) share: an object's head decoded as text,
the job's UserArguments read with a clear error, and a batch cut to a memory budget.

An object is read with one byte more than a built-in's cap (`read_limit`), so `decode_head` can
tell a cut object from one that is exactly the cap long. Text is UTF-8 (a leading byte-order mark
is dropped); a character split by the cut is dropped too, while an invalid byte anywhere else
makes the object undecodable. The error names the byte offset, never the bytes themselves, as
they may be private data.

The batch path holds every body of an event at once; with `InvocationBatchSize` up to 1,000
that could be 1,000 times a built-in's cap. `batch_in_chunks` therefore runs the batch path on
as many tasks at a time as fit `MAX_BATCH_BYTES` (each counted at its cap; at least one).
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from s3batch.functions.builtin.batch import Answer, Compute, batch_handler, respond

#: Dropped from the start of decoded text (a UTF-8 byte-order mark, as Windows tools write it).
BYTE_ORDER_MARK = "\ufeff"
#: resultString prefix of an object that is not UTF-8 text.
INVALID_ENCODING = "InvalidEncoding"
#: resultString prefix of every task of an event whose UserArguments are wrong.
INVALID_USER_ARGUMENTS = "InvalidUserArguments"
#: Characters of a bad UserArguments value quoted back in the error.
MAX_QUOTED_ARGUMENT_CHARS = 40
#: Bytes of objects one handler process holds at once for a batch, each counted at its cap.
MAX_BATCH_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Head:
    """The decoded start of an object."""

    text: str
    #: True when the object was longer than the cap, so only its first bytes were decoded.
    cut: bool
    #: Bytes of the object that `text` was decoded from.
    nbytes: int


class UndecodableText(ValueError):
    """The object is not UTF-8 text; str(exc) is a resultString ("InvalidEncoding: ...")."""


class BadUserArgument(ValueError):
    """A UserArguments value is not one the built-in knows; str(exc) is a resultString."""


def read_limit(max_bytes: int) -> int:
    """Bytes to read for a `max_bytes` cap: one more, so a cut object can be told apart."""
    return max_bytes + 1


def decode_head(body: bytes, max_bytes: int) -> Head:
    """The first `max_bytes` of `body` (read with `read_limit(max_bytes)`) as text."""
    cut = len(body) > max_bytes
    data = body[:max_bytes]
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        # final=False keeps back a multi-byte character the cut split, instead of failing on it.
        text = decoder.decode(data, final=not cut)
    except UnicodeDecodeError as exc:
        raise UndecodableText(
            f"{INVALID_ENCODING}: the object is not UTF-8 text (invalid byte at offset {exc.start})"
        ) from None
    nbytes = len(data) - len(decoder.getstate()[0])
    return Head(text.removeprefix(BYTE_ORDER_MARK), cut, nbytes)


def user_argument(event: Mapping[str, Any], name: str, choices: Sequence[str], default: str) -> str:
    """The job's UserArguments[`name`] (schema 2.0; 1.0 events have none), one of `choices`."""
    job = event.get("job") or {}
    arguments = job.get("userArguments") or {}
    value = arguments.get(name, default)
    if value not in choices:
        shown = str(value)[:MAX_QUOTED_ARGUMENT_CHARS]
        raise BadUserArgument(
            f"{INVALID_USER_ARGUMENTS}: {name} must be one of {', '.join(map(repr, choices))}, got {shown!r}"
        )
    return str(value)


def fail_all(event: Mapping[str, Any], message: str) -> dict[str, Any]:
    """The response failing every task of `event` with `message` (nothing read)."""
    return respond(event, [Answer.failed(message)] * len(event["tasks"]))


def batch_in_chunks(event: Mapping[str, Any], compute: Compute, *, max_bytes: int) -> dict[str, Any]:
    """`batch_handler` over `event`'s tasks, as many at a time as fit MAX_BATCH_BYTES."""
    tasks = list(event["tasks"])
    size = max(1, MAX_BATCH_BYTES // max_bytes)
    if len(tasks) <= size:
        return batch_handler(event, compute, max_bytes=max_bytes)
    parts = [
        batch_handler({**event, "tasks": tasks[start : start + size]}, compute, max_bytes=max_bytes)
        for start in range(0, len(tasks), size)
    ]
    return merge_responses(event, parts)


def merge_responses(event: Mapping[str, Any], parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One response from responses to parts of `event`: every result, in the event's task order."""
    by_id = {result["taskId"]: result for part in parts for result in part["results"]}
    return {**parts[0], "results": [by_id[task["taskId"]] for task in event["tasks"]]}
