"""LambdaInvoke: call the job's function once per object (docs/aws-contracts.md#lambda-invocation-contract).

The function is a Python handler (resolved from FunctionArn when the job was created, see
`functions.registry`) run in a pool of worker processes. Each task gets the event AWS would
send; the handler's answer, or its error, becomes the task's report row following
`domain.lambda_contract`. TemporaryFailure results are retryable, so the engine redrives them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from s3batch.domain import pricing
from s3batch.domain.lambda_contract import (
    SCHEMA_VERSIONS,
    build_event,
    function_error_result,
    interpret_response,
    opaque_id,
    task_id_for,
)
from s3batch.domain.roles import FUNCTION, Need
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import BadRequest, ConfigError
from s3batch.functions.objects import STORAGE_CONFIG_ENV
from s3batch.functions.pool import FunctionPool
from s3batch.functions.registry import check_function_arn
from s3batch.operations._params import reject_unknown
from s3batch.operations.actions import Permissions
from s3batch.operations.base import UNBATCHED, NoProbe, Operation, OperationContext, OperationKind, PerTask
from s3batch.storage.config import to_dict

NAME = "LambdaInvoke"
#: S3 Control's limits (botocore model, LambdaInvokeOperation).
MAX_FUNCTION_ARN_CHARS = 1024
MAX_USER_ARGUMENTS = 10
MAX_USER_ARGUMENT_KEY_CHARS = 64
MAX_USER_ARGUMENT_VALUE_CHARS = 1024
DEFAULT_SCHEMA_VERSION = "1.0"
#: Random bytes in each invocationId (base64url-encoded, as opaque as AWS's).
INVOCATION_ID_BYTES = 24
_KNOWN = {"FunctionArn", "InvocationSchemaVersion", "UserArguments"}


def validate(params: Mapping[str, Any]) -> None:
    """Check LambdaInvoke's parameters at CreateJob time (raises BadRequest)."""
    reject_unknown(NAME, params, _KNOWN)
    arn = params.get("FunctionArn")
    if not isinstance(arn, str) or not 1 <= len(arn) <= MAX_FUNCTION_ARN_CHARS:
        raise BadRequest(
            f"{NAME}.FunctionArn is required: a Lambda function ARN of 1-{MAX_FUNCTION_ARN_CHARS} characters"
        )
    check_function_arn(arn)
    user_arguments(params, schema_version(params))


def schema_version(params: Mapping[str, Any]) -> str:
    """InvocationSchemaVersion, "1.0" when absent."""
    version = params.get("InvocationSchemaVersion", DEFAULT_SCHEMA_VERSION)
    if version not in SCHEMA_VERSIONS:
        raise BadRequest(
            f"{NAME}.InvocationSchemaVersion must be one of {', '.join(SCHEMA_VERSIONS)}; got {version!r}"
        )
    return str(version)


def user_arguments(params: Mapping[str, Any], version: str) -> dict[str, str]:
    """UserArguments as a dict ({} when absent), checked against S3 Control's limits."""
    raw = params.get("UserArguments")
    if raw is None:
        return {}
    if version != "2.0":
        raise BadRequest(f"{NAME}.UserArguments requires InvocationSchemaVersion 2.0")
    if not isinstance(raw, Mapping) or not 1 <= len(raw) <= MAX_USER_ARGUMENTS:
        raise BadRequest(
            f"{NAME}.UserArguments must be a map of 1-{MAX_USER_ARGUMENTS} string key-value pairs"
        )
    for key, value in raw.items():
        key_ok = isinstance(key, str) and 1 <= len(key) <= MAX_USER_ARGUMENT_KEY_CHARS
        value_ok = isinstance(value, str) and len(value) <= MAX_USER_ARGUMENT_VALUE_CHARS
        if not (key_ok and value_ok):
            raise BadRequest(
                f"{NAME}.UserArguments: entry {key!r}: key must be 1-{MAX_USER_ARGUMENT_KEY_CHARS} "
                f"characters and value a string of at most {MAX_USER_ARGUMENT_VALUE_CHARS}"
            )
    return dict(raw)


def arn_partition(arn: str) -> str:
    """The partition of an ARN ("aws", "aws-cn", ...); "aws" for non-ARN references."""
    parts = arn.split(":")
    return parts[1] if parts[0] == "arn" and len(parts) > 1 and parts[1] else "aws"


class LambdaInvoke(Operation):
    """Invokes the job's function for each task through a worker-process pool."""

    name = NAME

    def __init__(self, params: Mapping[str, Any], ctx: OperationContext) -> None:
        spec = ctx.job.function
        if spec is None:
            raise ConfigError(
                f"job {ctx.job.job_id}: LambdaInvoke has no resolved function (the job service "
                "resolves FunctionArn when the job is created)"
            )
        self.job_id = ctx.job.job_id
        self.version = schema_version(params)
        self.user_arguments = user_arguments(params, self.version)
        self.partition = arn_partition(spec.arn)
        # The storage config lets built-in handlers read through the job's own store.
        env = {**ctx.job.function_env, STORAGE_CONFIG_ENV: json.dumps(to_dict(ctx.job.storage))}
        self.pool = FunctionPool(spec, workers=ctx.job.function_workers, env=env)

    async def apply(self, task: Task) -> TaskResult:
        """One synchronous invocation for one task, as S3 Batch Operations makes it."""
        task_id = task_id_for(self.job_id, task.seq)
        event = build_event(
            job_id=self.job_id,
            task=task,
            schema_version=self.version,
            user_arguments=self.user_arguments,
            partition=self.partition,
            invocation_id=opaque_id(os.urandom(INVOCATION_ID_BYTES)),
            task_id=task_id,
        )
        outcome = await self.pool.invoke(event)
        if outcome.error is not None:
            return function_error_result(outcome.error)
        return interpret_response(outcome.payload, task_id)

    async def close(self) -> None:
        """Stop the function's worker processes."""
        await self.pool.close()


def function_needs(params: Mapping[str, Any], bucket: str, versioned: bool) -> tuple[Need, ...]:
    """lambda:InvokeFunction on the job's function (nothing on the task's object)."""
    return (Need("lambda:InvokeFunction", str(params.get("FunctionArn", "")), FUNCTION),)


KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(object_actions=(), bucket_actions=(), extra=function_needs),
    requests=PerTask(pricing.LAMBDA_INVOKE, 1),
    probe=NoProbe.PLAIN_DATA_PATH,
    batch_size=UNBATCHED,
    create=LambdaInvoke,
)
