"""The Lambda invocation contract (docs/aws-contracts.md#lambda-invocation-contract): events,
responses, function errors."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from s3batch.domain.lambda_contract import (
    DEFAULT_TREAT_MISSING_KEYS_AS,
    FUNCTION_ERROR_PREFIX,
    INVALID_PAYLOAD_MESSAGE,
    MAX_RESULT_MESSAGE_BYTES,
    TRUNCATION_MARKER,
    build_event,
    cap_message,
    function_error_result,
    interpret_response,
    opaque_id,
    task_id_for,
)
from s3batch.domain.task import Task, TaskStatus

TASK = Task(seq=7, bucket="amzn-s3-demo-bucket", raw_key="photos/a+b%C3%BC.jpg", key="photos/a bü.jpg")
TASK_ID = "dGFza2lk"


def response(*results: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"invocationSchemaVersion": "1.0", "invocationId": "inv", "results": list(results), **extra}


def result(code: Any, text: Any = "done", task_id: str = TASK_ID) -> dict[str, Any]:
    return {"taskId": task_id, "resultCode": code, "resultString": text}


# -- events ------------------------------------------------------------------------------


def test_schema_1_0_event_names_the_bucket_by_arn_and_keeps_the_raw_key() -> None:
    event = build_event(
        job_id="f3cc4f60-61f6-4a2b-8a21-d07600c373ce",
        task=TASK,
        schema_version="1.0",
        user_arguments=None,
        invocation_id="YXNkbGZq",
        task_id=TASK_ID,
    )
    assert event == {
        "invocationSchemaVersion": "1.0",
        "invocationId": "YXNkbGZq",
        "job": {"id": "f3cc4f60-61f6-4a2b-8a21-d07600c373ce"},
        "tasks": [
            {
                "taskId": TASK_ID,
                "s3Key": "photos/a+b%C3%BC.jpg",
                "s3VersionId": None,
                "s3BucketArn": "arn:aws:s3:::amzn-s3-demo-bucket",
            }
        ],
    }
    assert list(event["tasks"][0]) == ["taskId", "s3Key", "s3VersionId", "s3BucketArn"]


def test_schema_2_0_event_names_the_bucket_and_carries_user_arguments() -> None:
    versioned = Task(seq=0, bucket="powertools-dataset", raw_key="k", key="k", version_id="v1")
    event = build_event(
        job_id="j",
        task=versioned,
        schema_version="2.0",
        user_arguments={"k1": "v1", "k2": "v2"},
        invocation_id="inv",
        task_id="t",
    )
    assert event == {
        "invocationSchemaVersion": "2.0",
        "invocationId": "inv",
        "job": {"id": "j", "userArguments": {"k1": "v1", "k2": "v2"}},
        "tasks": [{"taskId": "t", "s3Key": "k", "s3VersionId": "v1", "s3Bucket": "powertools-dataset"}],
    }


def test_schema_2_0_without_user_arguments_sends_an_empty_object() -> None:
    event = build_event(
        job_id="j", task=TASK, schema_version="2.0", user_arguments=None, invocation_id="i", task_id="t"
    )
    assert event["job"] == {"id": "j", "userArguments": {}}


def test_partition_goes_into_the_bucket_arn() -> None:
    event = build_event(
        job_id="j",
        task=TASK,
        schema_version="1.0",
        user_arguments=None,
        invocation_id="i",
        task_id="t",
        partition="aws-cn",
    )
    assert event["tasks"][0]["s3BucketArn"] == "arn:aws-cn:s3:::amzn-s3-demo-bucket"


def test_empty_version_id_is_sent_as_null() -> None:
    task = Task(seq=0, bucket="b", raw_key="k", key="k", version_id="")
    event = build_event(
        job_id="j", task=task, schema_version="1.0", user_arguments=None, invocation_id="i", task_id="t"
    )
    assert event["tasks"][0]["s3VersionId"] is None


def test_unknown_schema_version_is_refused() -> None:
    with pytest.raises(ValueError, match=re.escape("1.0 or 2.0")):
        build_event(
            job_id="j", task=TASK, schema_version="3.0", user_arguments=None, invocation_id="i", task_id="t"
        )


def test_events_parse_with_powertools_data_classes_and_models() -> None:
    from aws_lambda_powertools.utilities.data_classes import S3BatchOperationEvent
    from aws_lambda_powertools.utilities.parser.models import S3BatchOperationModel

    for version, args in (("1.0", None), ("2.0", {"a": "b"})):
        raw = build_event(
            job_id="j", task=TASK, schema_version=version, user_arguments=args, invocation_id="i", task_id="t"
        )
        event = S3BatchOperationEvent(raw)
        assert event.task.s3_bucket == "amzn-s3-demo-bucket"
        assert event.task.s3_key == "photos/a bü.jpg"
        assert event.job.user_arguments == (args or {})
        assert S3BatchOperationModel.model_validate(raw).tasks[0].s3Bucket == "amzn-s3-demo-bucket"


def test_ids_are_url_safe_base64_without_padding() -> None:
    assert opaque_id(b"taskid goes here\n") == "dGFza2lkIGdvZXMgaGVyZQo"
    raw = opaque_id(bytes(range(256)))
    assert set(raw) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert task_id_for("job", 1) == task_id_for("job", 1)
    assert task_id_for("job", 1) != task_id_for("job", 2) != task_id_for("other", 2)


# -- responses ---------------------------------------------------------------------------


def test_succeeded_keeps_the_result_string_as_the_message() -> None:
    outcome = interpret_response(response(result("Succeeded", '["Alice", "Bob"]')), TASK_ID)
    assert outcome.status is TaskStatus.SUCCEEDED
    assert (outcome.message, outcome.http_status, outcome.error_code) == ('["Alice", "Bob"]', 200, "")


def test_temporary_failure_is_retryable() -> None:
    outcome = interpret_response(response(result("TemporaryFailure", "slow down")), TASK_ID)
    assert outcome.status is TaskStatus.FAILED
    assert (outcome.error_code, outcome.message, outcome.http_status) == (
        "TemporaryFailure",
        "slow down",
        200,
    )
    assert outcome.retryable


def test_permanent_failure_is_final() -> None:
    outcome = interpret_response(response(result("PermanentFailure", "bad file")), TASK_ID)
    assert (outcome.error_code, outcome.message, outcome.http_status) == ("PermanentFailure", "bad file", 200)
    assert not outcome.retryable and not outcome.succeeded


@pytest.mark.parametrize(("value", "message"), [(None, ""), (42, "42"), ({"a": [1, "é"]}, '{"a":[1,"é"]}')])
def test_result_string_null_or_non_string_is_kept_readably(value: Any, message: str) -> None:
    outcome = interpret_response(response(result("Succeeded", value)), TASK_ID)
    assert outcome.succeeded and outcome.message == message


def test_missing_result_string_is_empty() -> None:
    outcome = interpret_response(response({"taskId": TASK_ID, "resultCode": "Succeeded"}), TASK_ID)
    assert outcome.succeeded and outcome.message == ""


def test_our_result_is_found_among_others() -> None:
    payload = response(result("Succeeded", "other", task_id="x"), result("PermanentFailure", "mine"))
    outcome = interpret_response(payload, TASK_ID)
    assert (outcome.error_code, outcome.message) == ("PermanentFailure", "mine")


def test_missing_result_defaults_to_permanent_failure() -> None:
    assert DEFAULT_TREAT_MISSING_KEYS_AS == "PermanentFailure"
    outcome = interpret_response(response(), TASK_ID)
    assert outcome.error_code == "PermanentFailure" and not outcome.retryable
    assert TASK_ID in outcome.message and "treatMissingKeysAs=PermanentFailure" in outcome.message


@pytest.mark.parametrize(
    ("treat_as", "succeeded", "retryable"),
    [("Succeeded", True, False), ("TemporaryFailure", False, True), ("PermanentFailure", False, False)],
)
def test_treat_missing_keys_as_decides_a_missing_result(
    treat_as: str, succeeded: bool, retryable: bool
) -> None:
    payload = response(result("PermanentFailure", task_id="someone-else"), treatMissingKeysAs=treat_as)
    outcome = interpret_response(payload, TASK_ID)
    assert outcome.succeeded is succeeded
    assert outcome.retryable is retryable
    assert outcome.error_code == ("" if succeeded else treat_as)
    assert f"treatMissingKeysAs={treat_as}" in outcome.message
    assert outcome.http_status == 200


@pytest.mark.parametrize(
    ("payload", "detail"),
    [
        (None, "expected a JSON object, got null"),
        ("Succeeded", "expected a JSON object, got string"),
        ([1, 2], "expected a JSON object, got array"),
        (3.5, "expected a JSON object, got number"),
        (True, "expected a JSON object, got boolean"),
        ({}, "'results' must be a list, got null"),
        ({"results": {"taskId": TASK_ID}}, "'results' must be a list, got object"),
        ({"results": "Succeeded"}, "'results' must be a list, got string"),
        ({"results": [None]}, "every entry of 'results' must be an object"),
        ({"results": [result("succeeded")]}, "unknown resultCode 'succeeded'"),
        ({"results": [result(None)]}, "unknown resultCode None"),
        ({"results": [], "treatMissingKeysAs": "Maybe"}, "unknown treatMissingKeysAs 'Maybe'"),
    ],
)
def test_unusable_responses_fail_permanently_with_aws_wording(payload: Any, detail: str) -> None:
    outcome = interpret_response(payload, TASK_ID)
    assert outcome.status is TaskStatus.FAILED
    assert outcome.error_code == "PermanentFailure" and not outcome.retryable
    assert outcome.http_status == 200
    assert outcome.message.startswith(INVALID_PAYLOAD_MESSAGE + ": ")
    assert detail in outcome.message


def test_huge_result_string_is_truncated_with_a_marker() -> None:
    outcome = interpret_response(response(result("Succeeded", "é" * MAX_RESULT_MESSAGE_BYTES)), TASK_ID)
    encoded = outcome.message.encode("utf-8")
    assert len(encoded) <= MAX_RESULT_MESSAGE_BYTES
    assert len(encoded) > MAX_RESULT_MESSAGE_BYTES - len(TRUNCATION_MARKER) - 2
    assert outcome.message.endswith(TRUNCATION_MARKER)
    assert set(outcome.message.removesuffix(TRUNCATION_MARKER)) == {"é"}  # no half character


def test_message_at_the_cap_is_kept_whole() -> None:
    exact = "x" * MAX_RESULT_MESSAGE_BYTES
    assert cap_message(exact) == exact
    assert cap_message(exact + "y").endswith(TRUNCATION_MARKER)


# -- function errors ---------------------------------------------------------------------


def test_function_error_is_a_permanent_failure_with_the_compact_payload() -> None:
    payload = {"errorMessage": "2019-04-05T17:48:39.725Z abc Task timed out after 3.00 seconds"}
    outcome = function_error_result(payload)
    assert outcome.status is TaskStatus.FAILED
    assert (outcome.error_code, outcome.http_status, outcome.retryable) == ("PermanentFailure", 200, False)
    assert outcome.message == (
        'Lambda returned function error: {"errorMessage":"2019-04-05T17:48:39.725Z abc '
        'Task timed out after 3.00 seconds"}'
    )


def test_function_error_keeps_every_field_in_order() -> None:
    payload = {
        "errorMessage": "boom",
        "errorType": "ValueError",
        "requestId": "r",
        "stackTrace": ["  File x\n"],
    }
    outcome = function_error_result(payload)
    assert outcome.message.startswith(FUNCTION_ERROR_PREFIX)
    body = outcome.message.removeprefix(FUNCTION_ERROR_PREFIX)
    assert json.loads(body) == payload
    assert list(json.loads(body)) == ["errorMessage", "errorType", "requestId", "stackTrace"]


def test_huge_function_error_is_truncated() -> None:
    outcome = function_error_result({"errorMessage": "x" * (2 * MAX_RESULT_MESSAGE_BYTES)})
    assert len(outcome.message.encode()) <= MAX_RESULT_MESSAGE_BYTES
    assert outcome.message.startswith(FUNCTION_ERROR_PREFIX) and outcome.message.endswith(TRUNCATION_MARKER)
