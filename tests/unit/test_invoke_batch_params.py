"""LambdaInvoke's InvocationBatchSize (s3batch extension): validation and request counts."""

from __future__ import annotations

from typing import Any

import pytest

from s3batch.errors import BadRequest
from s3batch.operations.invoke import (
    KIND,
    MAX_INVOCATION_BATCH_SIZE,
    invocation_batch_size,
    validate,
)

ARN = "python:mod:handler"


@pytest.mark.parametrize(("raw", "size"), [(None, 1), (1, 1), (7, 7), (MAX_INVOCATION_BATCH_SIZE, 1000)])
def test_valid_sizes(raw: Any, size: int) -> None:
    params: dict[str, Any] = {"FunctionArn": ARN, "InvocationSchemaVersion": "2.0"}
    if raw is not None:
        params["InvocationBatchSize"] = raw
    validate(params)
    assert invocation_batch_size(params, "2.0") == size


@pytest.mark.parametrize("raw", [0, -1, MAX_INVOCATION_BATCH_SIZE + 1, "5", 2.0, True, [5], {}])
def test_invalid_sizes_name_the_field_and_the_range(raw: Any) -> None:
    with pytest.raises(BadRequest) as caught:
        validate({"FunctionArn": ARN, "InvocationSchemaVersion": "2.0", "InvocationBatchSize": raw})
    assert caught.value.message == (
        f"LambdaInvoke.InvocationBatchSize must be a whole number from 1 to {MAX_INVOCATION_BATCH_SIZE} "
        f"(tasks per invocation); got {raw!r}"
    )


@pytest.mark.parametrize("version", [None, "1.0"])
def test_batches_need_schema_2_0(version: str | None) -> None:
    params: dict[str, Any] = {"FunctionArn": ARN, "InvocationBatchSize": 1}
    if version:
        params["InvocationSchemaVersion"] = version
    with pytest.raises(
        BadRequest, match=r"LambdaInvoke\.InvocationBatchSize requires InvocationSchemaVersion 2\.0"
    ):
        validate(params)


@pytest.mark.parametrize(
    ("size", "tasks", "invocations"), [(None, 10, 10), (1, 10, 10), (4, 10, 3), (100, 0, 0)]
)
def test_requests_count_one_invocation_per_batch(size: int | None, tasks: int, invocations: int) -> None:
    params = {} if size is None else {"InvocationBatchSize": size}
    assert KIND.requests(params, tasks, 1) == {"LAMBDA_INVOKE": invocations}
