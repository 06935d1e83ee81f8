"""The Lambda invocation contract (docs/aws-contracts.md#lambda-invocation-contract): events,
responses, function errors."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from s3batch.domain.lambda_contract import (
    DEFAULT_TREAT_MISSING_KEYS_AS,
    DUPLICATE_TASK_ID_MESSAGE,
    FUNCTION_ERROR_PREFIX,
    INVALID_PAYLOAD_MESSAGE,
    MAX_RESULT_MESSAGE_BYTES,
    ON_UNKNOWN_TASK_ID,
    RESULT_DATA_FIELD,
    TRUNCATION_MARKER,
    UNKNOWN_TASK_ID_MESSAGE,
    TaskAnswer,
    build_batch_event,
    build_event,
    cap_message,
    function_error_result,
    interpret_answer,
    interpret_batch,
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


# -- batched invocations (s3batch extension InvocationBatchSize) -------------------------------

BATCH = [Task(seq=i, bucket="b", raw_key=f"k{i}+x", key=f"k{i} x", version_id=None) for i in range(3)]
IDS = [task_id_for("job", t.seq) for t in BATCH]


def batch_event(version: str = "2.0", tasks: list[Task] = BATCH) -> dict[str, Any]:
    return build_batch_event(
        job_id="job",
        tasks=[(t, task_id_for("job", t.seq)) for t in tasks],
        schema_version=version,
        user_arguments={"a": "b"},
        invocation_id="inv",
    )


def codes(answers: list[TaskAnswer]) -> list[str]:
    return [a.result.error_code or "Succeeded" for a in answers]


def test_a_batch_event_is_the_2_0_shape_with_one_entry_per_task() -> None:
    event = batch_event()
    assert event["invocationSchemaVersion"] == "2.0" and event["invocationId"] == "inv"
    assert event["job"] == {"id": "job", "userArguments": {"a": "b"}}
    assert event["tasks"] == [
        {"taskId": IDS[i], "s3Key": f"k{i}+x", "s3VersionId": None, "s3Bucket": "b"} for i in range(3)
    ]
    assert len(set(IDS)) == 3


def test_a_one_task_batch_event_is_exactly_the_aws_event() -> None:
    for version in ("1.0", "2.0"):
        single = build_event(
            job_id="job",
            task=TASK,
            schema_version=version,
            user_arguments=None,
            invocation_id="i",
            task_id="t",
        )
        batched = build_batch_event(
            job_id="job", tasks=[(TASK, "t")], schema_version=version, user_arguments=None, invocation_id="i"
        )
        assert single == batched


def test_a_batch_event_needs_schema_2_0_and_a_task() -> None:
    with pytest.raises(ValueError, match=re.escape("needs invocationSchemaVersion 2.0")):
        batch_event("1.0")
    with pytest.raises(ValueError, match="at least one task"):
        batch_event(tasks=[])


def test_a_batch_event_parses_with_powertools_models() -> None:
    from aws_lambda_powertools.utilities.parser.models import S3BatchOperationModel

    model = S3BatchOperationModel.model_validate(batch_event())
    assert [t.taskId for t in model.tasks] == IDS


def test_each_task_of_a_batch_gets_its_own_result_whatever_the_order() -> None:
    payload = response(
        result("PermanentFailure", "bad", task_id=IDS[2]),
        result("Succeeded", "one", task_id=IDS[0]),
        result("TemporaryFailure", "later", task_id=IDS[1]),
    )
    answers = interpret_batch(payload, IDS)
    assert [(a.result.error_code, a.result.message) for a in answers] == [
        ("", "one"),
        ("TemporaryFailure", "later"),
        ("PermanentFailure", "bad"),
    ]
    assert [a.result.retryable for a in answers] == [False, True, False]
    assert all(a.result.http_status == 200 and a.data is None for a in answers)


@pytest.mark.parametrize("treat_as", [None, "Succeeded", "TemporaryFailure", "PermanentFailure"])
def test_a_task_without_a_result_in_a_batch_follows_treat_missing_keys_as(treat_as: str | None) -> None:
    extra = {} if treat_as is None else {"treatMissingKeysAs": treat_as}
    payload = response(result("Succeeded", "one", task_id=IDS[0]), **extra)
    first, second, third = interpret_batch(payload, IDS)
    assert first.result.succeeded
    code = treat_as or DEFAULT_TREAT_MISSING_KEYS_AS
    for missing, task_id in ((second, IDS[1]), (third, IDS[2])):
        assert missing.result.succeeded is (code == "Succeeded")
        assert task_id in missing.result.message and f"treatMissingKeysAs={code}" in missing.result.message


def test_a_duplicated_task_id_fails_that_task_only_and_names_it() -> None:
    payload = response(
        result("Succeeded", "a", task_id=IDS[0]),
        result("Succeeded", "b", task_id=IDS[1]),
        result("Succeeded", "c", task_id=IDS[1]),
        result("Succeeded", "d", task_id=IDS[2]),
    )
    first, second, third = interpret_batch(payload, IDS)
    assert first.result.succeeded and third.result.succeeded
    assert (second.result.error_code, second.result.retryable) == ("PermanentFailure", False)
    assert second.result.message == DUPLICATE_TASK_ID_MESSAGE.format(count=2, task_id=IDS[1])
    assert IDS[1] in second.result.message


@pytest.mark.parametrize(
    ("stray", "shown"),
    [("not-sent", '"not-sent"'), (None, "null"), (7, "7"), (["x"], '["x"]')],
)
def test_an_unknown_task_id_fails_every_task_of_the_batch(stray: Any, shown: str) -> None:
    assert ON_UNKNOWN_TASK_ID == "PermanentFailure"
    payload = response(
        *(result("Succeeded", "fine", task_id=tid) for tid in IDS),
        {"taskId": stray, "resultCode": "Succeeded", "resultString": "whose?"},
    )
    answers = interpret_batch(payload, IDS)
    assert codes(answers) == ["PermanentFailure"] * 3  # even the tasks that had a result of their own
    expected = UNKNOWN_TASK_ID_MESSAGE.format(task_id=shown, tasks=3)
    assert all(a.result.message == expected and not a.result.retryable for a in answers)
    assert all(a.data is None for a in answers)


def test_a_result_without_a_task_id_fails_the_batch() -> None:
    payload = response({"resultCode": "Succeeded"}, *(result("Succeeded", task_id=t) for t in IDS))
    assert codes(interpret_batch(payload, IDS)) == ["PermanentFailure"] * 3


def test_an_unusable_batch_response_fails_every_task_with_aws_wording() -> None:
    for payload in (None, {"results": "x"}, {"results": [1]}):
        answers = interpret_batch(payload, IDS)
        assert len(answers) == 3
        assert all(a.result.message.startswith(INVALID_PAYLOAD_MESSAGE + ": ") for a in answers)


def test_an_unknown_result_code_fails_only_its_task() -> None:
    payload = response(*(result("Succeeded", task_id=t) for t in IDS[:2]), result("Done", task_id=IDS[2]))
    answers = interpret_batch(payload, IDS)
    assert codes(answers) == ["Succeeded", "Succeeded", "PermanentFailure"]
    assert "unknown resultCode 'Done'" in answers[2].result.message


def test_a_batch_s_task_ids_must_be_distinct() -> None:
    with pytest.raises(ValueError, match="distinct"):
        interpret_batch(response(), [IDS[0], IDS[0]])


def test_one_task_batch_still_has_batch_rules() -> None:
    payload = response(result("Succeeded", task_id=IDS[0]), result("Succeeded", task_id="other"))
    [answer] = interpret_batch(payload, IDS[:1])
    assert answer.result.error_code == ON_UNKNOWN_TASK_ID
    # ...whereas AWS's single-task rules ignore the other taskId.
    assert interpret_response(payload, IDS[0]).succeeded


# -- resultData (s3batch extension) ------------------------------------------------------------


def with_data(code: str, data: Any, task_id: str = TASK_ID) -> dict[str, Any]:
    return {**result(code, "r", task_id=task_id), RESULT_DATA_FIELD: data}


def test_result_data_is_carried_out_per_task() -> None:
    payload = response(
        with_data("Succeeded", {"vector": [1, 2]}, IDS[0]),
        with_data("Succeeded", None, IDS[1]),
        result("Succeeded", task_id=IDS[2]),
    )
    answers = interpret_batch(payload, IDS)
    assert [a.data for a in answers] == [{"vector": [1, 2]}, None, None]
    assert all(a.result.succeeded for a in answers)
    single = interpret_answer(response(with_data("Succeeded", {"n": 3})), TASK_ID)
    assert single.result.succeeded and single.data == {"n": 3}
    assert interpret_response(response(with_data("Succeeded", {"n": 3})), TASK_ID) == single.result


@pytest.mark.parametrize(
    ("data", "kind"), [([1], "array"), ("x", "string"), (3, "number"), (True, "boolean")]
)
def test_result_data_that_is_not_an_object_fails_its_task(data: Any, kind: str) -> None:
    for answer in (
        interpret_answer(response(with_data("Succeeded", data)), TASK_ID),
        interpret_batch(response(with_data("Succeeded", data)), [TASK_ID])[0],
    ):
        assert answer.result.error_code == "PermanentFailure" and answer.data is None
        assert answer.result.message == (
            f"{INVALID_PAYLOAD_MESSAGE}: 'resultData' of taskId {TASK_ID} must be an object, got {kind}"
        )


def test_result_data_of_an_unusable_result_is_dropped() -> None:
    answer = interpret_answer(response(with_data("Done", {"n": 1})), TASK_ID)
    assert answer.data is None and "unknown resultCode" in answer.result.message


def test_the_result_data_field_is_the_one_built_ins_write() -> None:
    from s3batch.functions.builtin import batch

    assert batch.RESULT_DATA_FIELD == RESULT_DATA_FIELD
