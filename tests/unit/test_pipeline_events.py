from __future__ import annotations

import json
from typing import Any

import pytest

from s3batch.pipelines.events import EventError, padded_sequencer, parse_payload

AWS_RECORDS: dict[str, Any] = {
    "Records": [
        {
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-west-2",
            "eventTime": "2024-01-01T00:00:00.000Z", "eventName": "ObjectCreated:Put",
            "userIdentity": {"principalId": "AIDAJDPLRKLG7UEXAMPLE"},
            "requestParameters": {"sourceIPAddress": "1.2.3.4"},
            "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8"},
            "s3": {
                "s3SchemaVersion": "1.0", "configurationId": "testConfigRule",
                "bucket": {"name": "staging", "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                           "arn": "arn:aws:s3:::staging"},
                "object": {"key": "in/Happy+Face%2B1%28a%29.jpg", "size": 1024,
                           "eTag": "d41d8cd98f00b204e9800998ecf8427e", "versionId": "096fKKXTRTtl3on89fVO",
                           "sequencer": "0055AED6DCD90281E5"},
            },
        },
        {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectRemoved:Delete",
         "s3": {"bucket": {"name": "staging"}, "object": {"key": "gone", "sequencer": "0055AED6DCD90281E6"}}},
    ]
}  # fmt: skip

MINIO_RECORDS = {
    "EventName": "s3:ObjectCreated:Put",
    "Key": "staging/a b/c.txt",
    "Records": [
        {
            "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "",
            "eventTime": "2024-01-01T00:00:00Z",
            "eventName": "s3:ObjectCreated:Put", "userIdentity": {"principalId": "minioadmin"},
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config",
                   "bucket": {"name": "staging", "ownerIdentity": {"principalId": "minioadmin"},
                              "arn": "arn:aws:s3:::staging"},
                   "object": {"key": "a+b%2Fc.txt", "size": 3, "eTag": "900150983cd24fb0d6963f7d28e17f72",
                              "contentType": "text/plain", "sequencer": "17A9AB5B0D1C6A3E"}},
            "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO (linux; amd64)"},
        }
    ],
}  # fmt: skip

EVENTBRIDGE = {
    "version": "0", "id": "17793124-05d4-b198-2fde-7ededc63b103", "detail-type": "Object Created",
    "source": "aws.s3", "account": "111122223333", "time": "2021-11-12T00:00:00Z", "region": "ca-central-1",
    "resources": ["arn:aws:s3:::staging"],
    "detail": {"version": "0", "bucket": {"name": "staging"},
               "object": {"key": "a+b.txt", "size": 5, "etag": "b1946ac92492d2347c6235b4d2611184",
                          "version-id": "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e", "sequencer": "617f08299329d189"},
               "request-id": "N4N7GDK58NMKJ12R", "requester": "123456789012",
               "source-ip-address": "1.2.3.4", "reason": "PutObject"},
}  # fmt: skip

TEST_EVENT = {
    "Service": "Amazon S3",
    "Event": "s3:TestEvent",
    "Time": "2024-01-01T00:00:00.000Z",
    "Bucket": "staging",
    "RequestId": "5582815E1AEA5ADF",
    "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3e",
}


def test_aws_record_decodes_plus_and_percent_and_skips_removed() -> None:
    parsed = parse_payload(AWS_RECORDS)
    assert len(parsed.events) == 1  # ObjectRemoved is not a new object
    event = parsed.events[0]
    assert event.key == "in/Happy Face+1(a).jpg"
    assert (event.bucket, event.size, event.version_id) == ("staging", 1024, "096fKKXTRTtl3on89fVO")
    assert event.ident == "096fKKXTRTtl3on89fVO"
    assert event.pattern_doc["detail"]["object"]["key"] == "in/Happy Face+1(a).jpg"


def test_minio_record_with_s3_prefixed_event_name() -> None:
    (event,) = parse_payload(MINIO_RECORDS).events
    assert event.key == "a b/c.txt"
    assert event.event_name == "ObjectCreated:Put"
    assert event.ident == "900150983cd24fb0d6963f7d28e17f72"


def test_eventbridge_keeps_plain_key() -> None:
    (event,) = parse_payload(EVENTBRIDGE).events
    assert event.key == "a+b.txt"  # not decoded: EventBridge sends plain keys
    assert event.version_id == "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e"
    assert event.sequencer == "617f08299329d189"


@pytest.mark.parametrize(
    ("suffix", "reason"),
    [("Put", "PutObject"), ("Post", "POST Object"), ("Copy", "CopyObject"),
     ("CompleteMultipartUpload", "CompleteMultipartUpload")],
)  # fmt: skip
def test_notification_names_and_eventbridge_reasons_agree(suffix: str, reason: str) -> None:
    """A content pattern on detail.reason matches the event whichever way it arrived, and a
    handler sees the eventName an S3 notification would carry."""
    record = {"Records": [{**AWS_RECORDS["Records"][0], "eventName": f"ObjectCreated:{suffix}"}]}
    (from_notification,) = parse_payload(record).events
    assert from_notification.pattern_doc["detail"]["reason"] == reason
    bridge = {**EVENTBRIDGE, "detail": {**EVENTBRIDGE["detail"], "reason": reason}}
    (from_bridge,) = parse_payload(bridge).events
    assert from_bridge.event_name == from_notification.event_name == f"ObjectCreated:{suffix}"


def test_eventbridge_other_detail_type_is_ignored() -> None:
    parsed = parse_payload({**EVENTBRIDGE, "detail-type": "Object Deleted"})
    assert (parsed.events, parsed.ignored) == ([], 1)


def test_test_event_and_sns_envelope() -> None:
    assert parse_payload(TEST_EVENT).ignored == 1
    sns = {"Type": "Notification", "MessageId": "x", "TopicArn": "arn:aws:sns:us-east-1:1:t",
           "Message": json.dumps(AWS_RECORDS)}  # fmt: skip
    assert [e.key for e in parse_payload(sns).events] == ["in/Happy Face+1(a).jpg"]
    confirm = {"Type": "SubscriptionConfirmation", "Message": "confirm", "SubscribeURL": "https://x"}
    assert parse_payload(confirm).ignored == 1


@pytest.mark.parametrize(
    "bad", [[], {"foo": 1}, {"Records": "x"}, {"Records": [{"eventName": "ObjectCreated:Put"}]}]
)
def test_bad_payloads(bad: Any) -> None:
    with pytest.raises(EventError):
        parse_payload(bad)


def test_sequencer_padding_orders_different_lengths() -> None:
    assert padded_sequencer("FF") > padded_sequencer("0A")
    assert padded_sequencer("0055AED6DCD90281E5") < padded_sequencer("55AED6DCD90281E6")
    assert padded_sequencer("100") > padded_sequencer("FF")
