"""The LambdaInvoke operation end to end: events in, report rows out, through real workers.

Objects live in moto's S3 server (127.0.0.1); handlers are the unchanged AWS-style ones in
tests/fixtures/handlers, and reach S3 only through the job's function environment.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

from s3batch.domain.function import FunctionSpec
from s3batch.domain.lambda_contract import task_id_for
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import BadRequest, ConfigError
from s3batch.functions.builtin.demo_texts import DEMO_TEXTS, EXPECTED_SENTIMENT
from s3batch.functions.builtin.sentiment import classify, confidences, detect_sentiment
from s3batch.functions.registry import resolve_function
from s3batch.operations.base import JobContext, Operation, OperationContext
from s3batch.operations.invoke import KIND, validate
from s3batch.storage.config import LocalConfig, S3Config, StorageConfig, open_store

pytestmark = pytest.mark.integration

HANDLERS = str(Path(__file__).parent.parent / "fixtures" / "handlers")
JOB_ID = "f3cc4f60-61f6-4a2b-8a21-d07600c373ce"
#: Keys that need URL-encoding in a manifest: spaces, '+', non-ASCII, '%'.
KEYS = ["plain.txt", "with space.txt", "plus+sign.txt", "ünï/cødé file+x%.txt"]
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:{name}"


def tasks_for(bucket: str, keys: list[str]) -> list[Task]:
    """Tasks as the manifest reader makes them: raw (URL-encoded) key plus decoded key."""
    return [Task(seq=i, bucket=bucket, raw_key=quote_plus(k, safe="/"), key=k) for i, k in enumerate(keys)]


def function(name: str, handler: str, timeout_s: float = 30.0) -> FunctionSpec:
    registry = {name: handler}
    return resolve_function(FUNCTION_ARN.format(name=name), registry, cwd=HANDLERS, timeout_s=timeout_s)


@asynccontextmanager
async def operation(
    params: Mapping[str, Any], storage: StorageConfig, spec: FunctionSpec, env: Mapping[str, str]
) -> AsyncIterator[Operation]:
    validate(params)
    store = open_store(storage)
    job = JobContext(
        job_id=JOB_ID,
        account_id="123456789012",
        region="us-east-1",
        storage=storage,
        function=spec,
        function_workers=2,
        function_env=env,
    )
    op = KIND.create(params, OperationContext(job=job, store=store))
    try:
        yield op
    finally:
        await op.close()
        await store.close()


async def apply_all(op: Operation, tasks: list[Task]) -> dict[str, TaskResult]:
    return {t.key: r for t, r in zip(tasks, await op.apply_many(tasks), strict=True)}


@pytest.fixture
def s3(s3_endpoint: str, boto3_s3: Any, bucket_name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A bucket on moto; the endpoint is then removed from this process's environment so
    handlers can only find it through the function environment, as on a real job."""
    boto3_s3.create_bucket(Bucket=bucket_name)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    return {
        "client": boto3_s3,
        "bucket": bucket_name,
        "storage": S3Config(endpoint_url=s3_endpoint, addressing_style="path"),
        "env": {
            "AWS_ENDPOINT_URL": s3_endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
        "endpoint": s3_endpoint,
    }


def put_all(s3: dict[str, Any], keys: list[str]) -> dict[str, bytes]:
    bodies = {k: f"body of {k}".encode() * (i + 1) for i, k in enumerate(keys)}
    for key, body in bodies.items():
        s3["client"].put_object(Bucket=s3["bucket"], Key=key, Body=body)
    return bodies


# -- unchanged AWS handlers --------------------------------------------------------------


@pytest.mark.parametrize("schema", ["1.0", "2.0"])
async def test_unchanged_boto3_handler(s3: dict[str, Any], schema: str) -> None:
    bodies = put_all(s3, KEYS)
    params: dict[str, Any] = {
        "FunctionArn": FUNCTION_ARN.format(name="classic"),
        "InvocationSchemaVersion": schema,
    }
    if schema == "2.0":
        params["UserArguments"] = {"mode": "md5", "level": "2"}
    tasks = tasks_for(s3["bucket"], [*KEYS, "missing key+.txt"])
    async with operation(params, s3["storage"], function("classic", "aws_handlers:classic"), s3["env"]) as op:
        results = await apply_all(op, tasks)
    for key, body in bodies.items():
        assert results[key].succeeded, results[key]
        report = json.loads(results[key].message)
        assert report["key"] == key
        assert report["md5"] == hashlib.md5(body).hexdigest()
        assert report["args"] == params.get("UserArguments", {})
        assert report["endpoint"] == s3["endpoint"]
    missing = results["missing key+.txt"]
    assert (missing.error_code, missing.http_status, missing.retryable) == ("PermanentFailure", 200, False)
    assert missing.message.startswith("NoSuchKey: ")


async def test_unchanged_powertools_handler(s3: dict[str, Any]) -> None:
    bodies = put_all(s3, KEYS)
    params = {
        "FunctionArn": FUNCTION_ARN.format(name="powertools"),
        "InvocationSchemaVersion": "2.0",
        "UserArguments": {"suffix": "B"},
    }
    tasks = tasks_for(s3["bucket"], [*KEYS, "gone.txt"])
    spec = function("powertools", "aws_handlers:powertools")
    async with operation(params, s3["storage"], spec, s3["env"]) as op:
        results = await apply_all(op, tasks)
    for key, body in bodies.items():
        assert results[key].succeeded, results[key]
        assert results[key].message == f"{key}:{len(body)}B:powertools"
    assert results["gone.txt"].error_code == "PermanentFailure"
    assert results["gone.txt"].message.startswith("NoSuchKey: ")


@pytest.mark.parametrize("schema", ["1.0", "2.0"])
async def test_handler_sees_the_event_aws_would_send(s3: dict[str, Any], schema: str) -> None:
    params: dict[str, Any] = {
        "FunctionArn": "python:aws_handlers:echo_event",
        "InvocationSchemaVersion": schema,
    }
    if schema == "2.0":
        params["UserArguments"] = {"k": "v"}
    spec = resolve_function(params["FunctionArn"], {}, cwd=HANDLERS, timeout_s=30.0)
    [task] = tasks_for(s3["bucket"], ["ü dir/a+b.txt"])
    async with operation(params, s3["storage"], spec, s3["env"]) as op:
        outcome = await op.apply(task)
    event = json.loads(outcome.message)
    [sent] = event["tasks"]
    assert event["invocationSchemaVersion"] == schema
    assert event["job"]["id"] == JOB_ID
    assert sent["taskId"] == task_id_for(JOB_ID, task.seq)
    assert sent["s3Key"] == "%C3%BC+dir/a%2Bb.txt"
    assert sent["s3VersionId"] is None
    if schema == "1.0":
        assert sent["s3BucketArn"] == f"arn:aws:s3:::{s3['bucket']}"
        assert "userArguments" not in event["job"]
    else:
        assert sent["s3Bucket"] == s3["bucket"]
        assert event["job"]["userArguments"] == {"k": "v"}


# -- the built-in sentiment function -----------------------------------------------------


@pytest.mark.parametrize("schema", ["1.0", "2.0"])
async def test_builtin_sentiment_on_s3_classifies_the_demo_texts(s3: dict[str, Any], schema: str) -> None:
    for name, text in DEMO_TEXTS.items():
        s3["client"].put_object(Bucket=s3["bucket"], Key=f"letters/{name}", Body=text.encode())
    keys = [f"letters/{name}" for name in DEMO_TEXTS]
    spec = resolve_function(FUNCTION_ARN.format(name="s3batch-sentiment"), {}, cwd=HANDLERS, timeout_s=30.0)
    params = {"FunctionArn": spec.arn, "InvocationSchemaVersion": schema}
    async with operation(params, s3["storage"], spec, s3["env"]) as op:
        results = await apply_all(op, tasks_for(s3["bucket"], [*keys, "letters/lost letter.txt"]))
    for name in DEMO_TEXTS:
        outcome = results[f"letters/{name}"]
        assert outcome.succeeded, outcome
        body = json.loads(outcome.message)
        assert body["Sentiment"] == EXPECTED_SENTIMENT[name]
        assert set(body["SentimentScore"]) == {"Positive", "Negative", "Neutral", "Mixed"}
    lost = results["letters/lost letter.txt"]
    assert (lost.error_code, lost.retryable) == ("PermanentFailure", False)
    assert lost.message.startswith("NoSuchKey: ")


async def test_builtin_sentiment_on_a_local_folder(tmp_path: Path) -> None:
    for name, text in DEMO_TEXTS.items():
        path = tmp_path / "letters" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    spec = resolve_function("s3batch-sentiment", {}, cwd=HANDLERS, timeout_s=30.0)
    params = {
        "FunctionArn": "s3batch-sentiment",
        "InvocationSchemaVersion": "2.0",
        "UserArguments": {"a": "b"},
    }
    async with operation(params, LocalConfig(root=str(tmp_path)), spec, {}) as op:
        results = await apply_all(op, tasks_for("letters", list(DEMO_TEXTS)))
    assert {k: json.loads(r.message)["Sentiment"] for k, r in results.items()} == EXPECTED_SENTIMENT


def test_demo_texts_classify_as_named() -> None:
    assert {
        name: detect_sentiment(text)["Sentiment"] for name, text in DEMO_TEXTS.items()
    } == EXPECTED_SENTIMENT
    assert set(EXPECTED_SENTIMENT.values()) == {"POSITIVE", "NEGATIVE", "NEUTRAL"}


@pytest.mark.parametrize(
    ("pos", "neg", "compound", "expected"),
    [
        (0.3, 0.0, 0.05, "POSITIVE"),
        (0.3, 0.0, 0.0499, "NEUTRAL"),
        (0.0, 0.3, -0.05, "NEGATIVE"),
        (0.0, 0.0, 0.0, "NEUTRAL"),
        (0.2, 0.2, 0.1, "MIXED"),
        (0.15, 0.15, -0.49, "MIXED"),
        (0.2, 0.2, 0.5, "POSITIVE"),  # plenty of both, but one side clearly wins
        (0.14, 0.3, -0.2, "NEGATIVE"),  # too little positive for MIXED
    ],
)
def test_sentiment_thresholds(pos: float, neg: float, compound: float, expected: str) -> None:
    assert classify(pos, neg, compound) == expected


@pytest.mark.parametrize(("pos", "neg", "compound"), [(0.3, 0.1, 0.8), (0.2, 0.2, 0.0), (0.0, 0.0, 0.0)])
def test_sentiment_scores_sum_to_one(pos: float, neg: float, compound: float) -> None:
    scores = confidences(pos, neg, compound)
    assert abs(sum(scores.values()) - 1.0) < 1e-3
    assert all(0.0 <= v <= 1.0 for v in scores.values())


def test_read_object_outside_a_worker_explains_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    from s3batch.functions.objects import STORAGE_CONFIG_ENV, read_object

    monkeypatch.delenv(STORAGE_CONFIG_ENV, raising=False)
    with pytest.raises(ConfigError, match=STORAGE_CONFIG_ENV):
        read_object("b", "k")


# -- failures become report rows ---------------------------------------------------------


async def run_one(spec: FunctionSpec, tmp_path: Path, schema: str = "1.0") -> TaskResult:
    (tmp_path / "b").mkdir(exist_ok=True)
    params = {"FunctionArn": spec.arn, "InvocationSchemaVersion": schema}
    async with operation(params, LocalConfig(root=str(tmp_path)), spec, {}) as op:
        return await op.apply(Task(seq=0, bucket="b", raw_key="k", key="k"))


async def test_handler_exception_is_a_function_error(tmp_path: Path) -> None:
    outcome = await run_one(function("raising", "pool_handlers:raises"), tmp_path)
    assert (outcome.error_code, outcome.http_status, outcome.retryable) == ("PermanentFailure", 200, False)
    prefix = "Lambda returned function error: "
    assert outcome.message.startswith(prefix)
    error = json.loads(outcome.message.removeprefix(prefix))
    assert (error["errorMessage"], error["errorType"]) == ("cannot handle None", "HandlerFailed")


async def test_timeout_is_a_function_error_like_aws(tmp_path: Path) -> None:
    outcome = await run_one(function("slow", "pool_handlers:hangs", timeout_s=1.0), tmp_path)
    assert outcome.error_code == "PermanentFailure"
    assert outcome.message.startswith('Lambda returned function error: {"errorMessage":"')
    assert outcome.message.endswith(' Task timed out after 1.00 seconds"}')


async def test_crash_is_a_function_error(tmp_path: Path) -> None:
    outcome = await run_one(function("crashing", "pool_handlers:exits"), tmp_path)
    assert outcome.error_code == "PermanentFailure"
    assert '"errorType":"Runtime.ExitError"' in outcome.message
    assert "Runtime exited with error: exit status 3" in outcome.message


async def test_unusable_response_is_invalid_json(tmp_path: Path) -> None:
    outcome = await run_one(function("nothing", "pool_handlers:returns_none"), tmp_path)
    assert outcome.error_code == "PermanentFailure"
    assert outcome.message == "Invalid JSON returned in Lambda payload: expected a JSON object, got null"


async def test_temporary_failure_is_retryable(tmp_path: Path) -> None:
    outcome = await run_one(function("busy", "aws_handlers:temporary"), tmp_path, schema="2.0")
    assert (outcome.error_code, outcome.message, outcome.retryable) == ("TemporaryFailure", "busy", True)


async def test_missing_result_without_treat_missing_keys_as_fails(tmp_path: Path) -> None:
    outcome = await run_one(function("forgetful", "aws_handlers:forgets_the_task"), tmp_path)
    assert (outcome.error_code, outcome.retryable) == ("PermanentFailure", False)
    assert "no result for taskId" in outcome.message


# -- parameters --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"FunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:f"},
        {"FunctionArn": "f", "InvocationSchemaVersion": "1.0"},
        {"FunctionArn": "f", "InvocationSchemaVersion": "2.0", "UserArguments": {"k": "v"}},
        {
            "FunctionArn": "f",
            "InvocationSchemaVersion": "2.0",
            "UserArguments": {f"k{i}": "" for i in range(10)},
        },
        {"FunctionArn": "f", "InvocationSchemaVersion": "2.0", "UserArguments": {"k" * 64: "v" * 1024}},
        {"FunctionArn": "python:pkg.mod:handler"},
    ],
)
def test_valid_parameters(params: dict[str, Any]) -> None:
    validate(params)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({}, "FunctionArn is required"),
        ({"FunctionArn": ""}, "FunctionArn is required"),
        ({"FunctionArn": 3}, "FunctionArn is required"),
        ({"FunctionArn": "f" * 1025}, "1-1024"),
        ({"FunctionArn": "arn:aws:s3:::bucket"}, "not a Lambda function ARN"),
        ({"FunctionArn": "f", "InvocationSchemaVersion": "3.0"}, "InvocationSchemaVersion must be one of"),
        ({"FunctionArn": "f", "UserArguments": {"k": "v"}}, "requires InvocationSchemaVersion 2.0"),
        ({"FunctionArn": "f", "InvocationSchemaVersion": "2.0", "UserArguments": {}}, "1-10"),
        (
            {
                "FunctionArn": "f",
                "InvocationSchemaVersion": "2.0",
                "UserArguments": {f"k{i}": "" for i in range(11)},
            },
            "1-10",
        ),
        (
            {"FunctionArn": "f", "InvocationSchemaVersion": "2.0", "UserArguments": {"": "v"}},
            "key must be 1-64",
        ),
        ({"FunctionArn": "f", "InvocationSchemaVersion": "2.0", "UserArguments": {"k" * 65: "v"}}, "1-64"),
        ({"FunctionArn": "f", "InvocationSchemaVersion": "2.0", "UserArguments": {"k": "v" * 1025}}, "1024"),
        ({"FunctionArn": "f", "InvocationSchemaVersion": "2.0", "UserArguments": {"k": 1}}, "value a string"),
        ({"FunctionArn": "f", "InvocationSchemaVersion": "2.0", "UserArguments": ["k"]}, "map"),
        ({"FunctionArn": "f", "Payload": "x"}, "unknown or unsupported parameter"),
    ],
)
def test_invalid_parameters_are_bad_requests(params: dict[str, Any], match: str) -> None:
    with pytest.raises(BadRequest, match=re.escape(match)):
        validate(params)


async def test_create_without_a_resolved_function_is_a_config_error(tmp_path: Path) -> None:
    storage = LocalConfig(root=str(tmp_path))
    job = JobContext(job_id=JOB_ID, account_id="1", region="us-east-1", storage=storage)
    store = open_store(storage)
    try:
        with pytest.raises(ConfigError, match="no resolved function"):
            KIND.create({"FunctionArn": "f"}, OperationContext(job=job, store=store))
    finally:
        await store.close()


def test_worker_environment_does_not_leak_into_the_parent() -> None:
    assert "AWS_LAMBDA_FUNCTION_NAME" not in os.environ
