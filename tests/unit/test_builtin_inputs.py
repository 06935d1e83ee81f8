"""What the text built-ins share (functions/builtin/inputs.py): batches cut to a memory budget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from s3batch.functions.builtin import inputs
from s3batch.functions.builtin.batch import Answer


def test_a_batch_runs_in_chunks_that_fit_the_memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    chunks: list[list[str]] = []

    def fake_batch_handler(event: dict[str, Any], compute: Any, *, max_bytes: int) -> dict[str, Any]:
        keys = [t["s3Key"] for t in event["tasks"]]
        chunks.append(keys)
        answers = compute([key.encode() for key in keys])
        results = [
            {"taskId": t["taskId"], "resultString": a.message}
            for t, a in zip(event["tasks"], answers, strict=True)
        ]
        return {"invocationId": event["invocationId"], "results": results}

    def echo(bodies: Sequence[bytes]) -> list[Answer]:
        return [Answer.ok(body.decode()) for body in bodies]

    monkeypatch.setattr(inputs, "batch_handler", fake_batch_handler)
    monkeypatch.setattr(inputs, "MAX_BATCH_BYTES", 25)
    keys = [f"k{i}" for i in range(7)]
    event = {"invocationId": "i", "tasks": [{"taskId": f"t{k}", "s3Key": k} for k in keys]}
    response = inputs.batch_in_chunks(event, echo, max_bytes=10)
    assert chunks == [keys[0:2], keys[2:4], keys[4:6], keys[6:7]]
    assert [r["resultString"] for r in response["results"]] == keys
    chunks.clear()
    inputs.batch_in_chunks(event, echo, max_bytes=100)  # a cap past the budget: one at a time
    assert chunks == [[k] for k in keys]
