"""LambdaInvoke: call the job's function once per object (docs/aws-contracts.md#lambda-invocation-contract).

The function is a Python handler (resolved from FunctionArn when the job was created, see
`functions.registry`) run in a pool of worker processes, or, for the cheap built-ins of
`registry.runs_inline`, in this process (functions/inline.py). Each task gets the event AWS would
send; the handler's answer, or its error, becomes the task's report row following
`domain.lambda_contract`. TemporaryFailure results are retryable, so the engine redrives them.

Extension `"InvocationBatchSize": N` (1-`MAX_INVOCATION_BATCH_SIZE`, schema 2.0 only; absent:
1, AWS's one task per call): the operation's `batch_size` is N, so the engine hands
`apply_many` up to N tasks, which go out as one event with N taskIds and come back under
`lambda_contract.interpret_batch`'s rules. The engine redrives a retryable failure one task per
call (`apply`), in a one-task event under the same rules. docs/handlers.md describes it.

Extension `"FunctionResources": {"CPU": 1, "GPU": 0.5}`: what one function worker needs, for
engines that place workers on machines (the Ray engine reserves it per actor, docs/ray.md);
other engines ignore it. Checked here at CreateJob time.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from s3batch.domain import pricing
from s3batch.domain.function import FunctionSpec
from s3batch.domain.lambda_contract import (
    SCHEMA_VERSIONS,
    TaskAnswer,
    build_batch_event,
    cap_message,
    function_error_result,
    interpret_answer,
    interpret_batch,
    opaque_id,
    task_id_for,
)
from s3batch.domain.roles import FUNCTION, Need
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import BadRequest, ConfigError, StorageError
from s3batch.functions.inline import FunctionInvoker, InlineFunction
from s3batch.functions.objects import STORAGE_CONFIG_ENV
from s3batch.functions.pool import FunctionPool
from s3batch.functions.registry import (
    BUILTINS_NEEDING_A_SINK,
    PYTHON_PREFIX,
    answers_json_values,
    check_function_arn,
    function_name,
    runs_inline,
    ships_with_s3batch,
)
from s3batch.operations._params import reject_unknown
from s3batch.operations.actions import Permissions
from s3batch.operations.base import (
    UNBATCHED,
    NoProbe,
    Operation,
    OperationContext,
    OperationKind,
    storage_failure,
)
from s3batch.operations.results_sink import (
    SINK_FIELD,
    ParquetTarget,
    ResultsSink,
    SinkRow,
    open_sink,
    parse_sink,
    validate_sink,
    with_location,
)
from s3batch.operations.results_sink_columns import SinkDataError
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
#: invocationIds: unique, not secret; from a generator the OS seeds once (os.urandom per event is
#: a system call whose GIL release the event loop then waits behind).
_ids = random.Random(os.urandom(32))
#: The s3batch extension's parameter: tasks per invocation.
INVOCATION_BATCH_SIZE = "InvocationBatchSize"
#: Most tasks one invocation carries. Lambda's 6 MB response limit allows ~1,000 results
#: of a few KB; larger batches would mostly lengthen the wait for the slowest object.
MAX_INVOCATION_BATCH_SIZE = 1000
#: The schema a batched event needs (1.0 has no place for more than one task by AWS's own use).
BATCH_SCHEMA_VERSION = "2.0"
#: The report's HTTP status for a task whose resultData the sink refused (the data was bad, as a
#: 400 says; the function itself answered).
SINK_REJECTED_HTTP_STATUS = 400
#: The s3batch extension's parameter: resources one function worker needs (CPU, GPU).
FUNCTION_RESOURCES = "FunctionResources"
RESOURCE_NAMES = ("CPU", "GPU")
#: Largest amount of one resource a worker may ask for.
MAX_FUNCTION_RESOURCE = 1024
_KNOWN = {
    "FunctionArn", "InvocationSchemaVersion", "UserArguments", INVOCATION_BATCH_SIZE, SINK_FIELD,
    FUNCTION_RESOURCES,
}  # fmt: skip


def validate(params: Mapping[str, Any]) -> None:
    """Check LambdaInvoke's parameters at CreateJob time (raises BadRequest)."""
    reject_unknown(NAME, params, _KNOWN)
    arn = params.get("FunctionArn")
    if not isinstance(arn, str) or not 1 <= len(arn) <= MAX_FUNCTION_ARN_CHARS:
        raise BadRequest(
            f"{NAME}.FunctionArn is required: a Lambda function ARN of 1-{MAX_FUNCTION_ARN_CHARS} characters"
        )
    check_function_arn(arn)
    version = schema_version(params)
    user_arguments(params, version)
    invocation_batch_size(params, version)
    function_resources(params)
    if SINK_FIELD in params:
        validate_sink(params[SINK_FIELD])
    elif not arn.startswith(PYTHON_PREFIX) and function_name(arn) in BUILTINS_NEEDING_A_SINK:
        raise BadRequest(
            f"{NAME}: {function_name(arn)} answers with vectors (resultData) only; name where they go "
            f'with {SINK_FIELD}, e.g. {{"Parquet": {{"Bucket": "arn:aws:s3:::results", "Prefix": "emb"}}}} '
            "(docs/results-sink.md)"
        )


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


def invocation_batch_size(params: Mapping[str, Any], version: str) -> int:
    """InvocationBatchSize (s3batch extension): tasks per invocation, 1 when absent."""
    raw = params.get(INVOCATION_BATCH_SIZE)
    if raw is None:
        return UNBATCHED
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_INVOCATION_BATCH_SIZE:
        raise BadRequest(
            f"{NAME}.{INVOCATION_BATCH_SIZE} must be a whole number from 1 to "
            f"{MAX_INVOCATION_BATCH_SIZE} (tasks per invocation); got {raw!r}"
        )
    if version != BATCH_SCHEMA_VERSION:
        raise BadRequest(
            f"{NAME}.{INVOCATION_BATCH_SIZE} requires InvocationSchemaVersion {BATCH_SCHEMA_VERSION} "
            f"(the event's 'tasks' list); got {version}"
        )
    return raw


def function_resources(params: Mapping[str, Any]) -> dict[str, float]:
    """FunctionResources (s3batch extension) as {"CPU": n, "GPU": n}; {} when absent."""
    raw = params.get(FUNCTION_RESOURCES)
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not raw:
        raise BadRequest(
            f"{NAME}.{FUNCTION_RESOURCES} must be a map of {' and/or '.join(RESOURCE_NAMES)} to amounts"
        )
    return {str(name): _resource_amount(name, amount) for name, amount in raw.items()}


def _resource_amount(name: object, amount: object) -> float:
    where = f"{NAME}.{FUNCTION_RESOURCES}.{name}"
    if name not in RESOURCE_NAMES:
        raise BadRequest(f"{where}: unknown resource; expected {' or '.join(RESOURCE_NAMES)}")
    number = amount if isinstance(amount, int | float) and not isinstance(amount, bool) else None
    if number is None or not math.isfinite(number) or not 0 <= number <= MAX_FUNCTION_RESOURCE:
        raise BadRequest(f"{where} must be a number from 0 to {MAX_FUNCTION_RESOURCE}; got {amount!r}")
    if number > 1 and number != int(number):
        raise BadRequest(f"{where}: above 1, an amount must be a whole number; got {number}")
    return float(number)


def arn_partition(arn: str) -> str:
    """The partition of an ARN ("aws", "aws-cn", ...); "aws" for non-ARN references."""
    parts = arn.split(":")
    return parts[1] if parts[0] == "arn" and len(parts) > 1 and parts[1] else "aws"


@dataclass(frozen=True, slots=True)
class _WarmKey:
    """What a kept function worker was started with (functions/pool.KEPT): it serves no other."""

    account_id: str
    spec: FunctionSpec
    #: Of the worker's environment, credentials among it (the secret stays out of the key).
    env_digest: str


def _digest(env: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(sorted(env.items())).encode()).hexdigest()


class LambdaInvoke(Operation):
    """Invokes the job's function for each task (or each batch of tasks) through a worker-process pool."""

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
        self.batch_size = invocation_batch_size(params, self.version)
        self.partition = arn_partition(spec.arn)
        # The storage config lets built-in handlers read through the job's own store.
        env = {**ctx.job.function_env, STORAGE_CONFIG_ENV: json.dumps(to_dict(ctx.job.storage))}
        # A built-in's workers stay warm for the account's next job with the same environment
        # (a user's handler is not kept: its code may change between two jobs).
        keep = _WarmKey(ctx.job.account_id, spec, _digest(env)) if ships_with_s3batch(spec) else None
        json_safe = answers_json_values(spec)
        workers = functools.partial(
            FunctionPool, spec, workers=ctx.job.function_workers, env=env, keep=keep, json_safe=json_safe
        )
        self.pool: FunctionInvoker
        concurrency = ctx.job.function_workers
        self.batch_spread = concurrency  # the last tasks of a job are shared by every worker
        if runs_inline(spec, concurrency):  # a cheap built-in: in this process, reading through ctx.store
            self.pool = InlineFunction(spec, ctx.store, concurrency=concurrency, fallback=workers)
        else:
            self.pool = workers()
        #: Where each task's resultData goes (operations/results_sink.py); None: it is dropped.
        self.sink = open_sink(params[SINK_FIELD], ctx) if SINK_FIELD in params else None

    async def apply(self, task: Task) -> TaskResult:
        """One synchronous invocation for one task, as S3 Batch Operations makes it."""
        [result] = await self._invoke([task])
        return result

    async def apply_many(self, tasks: Sequence[Task]) -> list[TaskResult]:
        """Invocations of up to `batch_size` tasks each (one task each unbatched), run concurrently."""
        size = self.batch_size
        groups = [tasks[i : i + size] for i in range(0, len(tasks), size)]
        if len(groups) == 1:
            return await self._invoke(groups[0])  # the engine's case: no gather, no extra asyncio task
        answered = await asyncio.gather(*(self._invoke(group) for group in groups))
        return [result for group in answered for result in group]

    async def _invoke(self, tasks: Sequence[Task]) -> list[TaskResult]:
        """One invocation for `tasks`; AWS's single-task rules unless the job batches."""
        task_ids = [task_id_for(self.job_id, task.seq) for task in tasks]
        event = build_batch_event(
            job_id=self.job_id,
            tasks=list(zip(tasks, task_ids, strict=True)),
            schema_version=self.version,
            user_arguments=self.user_arguments,
            partition=self.partition,
            invocation_id=opaque_id(_ids.randbytes(INVOCATION_ID_BYTES)),
        )
        outcome = await self.pool.invoke(event)
        if outcome.error is not None:
            return [function_error_result(outcome.error)] * len(tasks)
        return await self._keep_data(tasks, task_ids, self._interpret(outcome.payload, task_ids))

    def _interpret(self, payload: Any, task_ids: Sequence[str]) -> list[TaskAnswer]:
        if self.batch_size == UNBATCHED:
            return [interpret_answer(payload, task_ids[0])]
        return interpret_batch(payload, task_ids)

    async def _keep_data(
        self, tasks: Sequence[Task], task_ids: Sequence[str], answers: Sequence[TaskAnswer]
    ) -> list[TaskResult]:
        """The invocation's report results, once each succeeded answer's resultData is stored.

        Each task's row is written on its own (concurrent writes share one commit: see
        results_sink.GroupCommitSink), so data one task got wrong fails that task only; its
        report message then starts with the row's location. Without a sink the data is dropped.
        """
        sink = self.sink
        if sink is None:
            return [answer.result for answer in answers]
        return list(
            await asyncio.gather(
                *(
                    self._store(sink, task, task_id, answer)
                    for task, task_id, answer in zip(tasks, task_ids, answers, strict=True)
                )
            )
        )

    async def _store(self, sink: ResultsSink, task: Task, task_id: str, answer: TaskAnswer) -> TaskResult:
        result = answer.result
        if answer.data is None or not result.succeeded:
            return result
        row = SinkRow(task.bucket, task.key, task.version_id, task_id, answer.data)
        try:
            [location] = await sink.write([row])
        except SinkDataError as exc:
            return TaskResult.fail(SinkDataError.code, cap_message(str(exc)), SINK_REJECTED_HTTP_STATUS)
        except StorageError as exc:
            return storage_failure(exc)
        return TaskResult.ok(cap_message(with_location(result.message, location)), result.http_status)

    async def close(self) -> None:
        """Commit what the results sink holds, then stop the function's worker processes."""
        try:
            if self.sink is not None:
                await self.sink.close()
        finally:
            await self.pool.close()


def invoke_requests(params: Mapping[str, Any], tasks: int, buckets: int) -> dict[str, int]:
    """One invocation per InvocationBatchSize tasks, at least (a partial batch, formed when the
    manifest is read slower than tasks run, and each redrive add one)."""
    raw = params.get(INVOCATION_BATCH_SIZE)
    size = raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 1 else UNBATCHED
    return {pricing.LAMBDA_INVOKE: math.ceil(tasks / size)}


def function_needs(params: Mapping[str, Any], bucket: str, versioned: bool) -> tuple[Need, ...]:
    """lambda:InvokeFunction on the job's function (nothing on the task's object), and
    s3:PutObject on a Parquet results sink's bucket."""
    needs = [Need("lambda:InvokeFunction", str(params.get("FunctionArn", "")), FUNCTION)]
    if SINK_FIELD in params:
        target = parse_sink(params[SINK_FIELD])
        if isinstance(target, ParquetTarget):
            needs.append(Need("s3:PutObject", target.bucket))
    return tuple(needs)


KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(object_actions=(), bucket_actions=(), extra=function_needs),
    requests=invoke_requests,
    probe=NoProbe.PLAIN_DATA_PATH,
    batch_size=UNBATCHED,
    create=LambdaInvoke,
)
