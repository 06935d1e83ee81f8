"""REST-XML: botocore-serialized requests parse back to the caller's params (any element
order); rendered results parse with botocore's own parser to the same dicts."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from s3batch.api import xml
from s3batch.errors import BadRequest

NS = xml.NAMESPACE

#: The CreateJob body captured from botocore 1.43.11 (docs/aws-contracts.md#local-endpoints-and-clients).
CAPTURED = (
    f'<CreateJobRequest xmlns="{NS}"><ConfirmationRequired>false</ConfirmationRequired><Operation>'
    "<S3PutObjectTagging><TagSet><member><Key>k</Key><Value>v</Value></member></TagSet>"
    "</S3PutObjectTagging></Operation><Report><Bucket>arn:aws:s3:::report-bucket</Bucket>"
    "<Format>Report_CSV_20180820</Format><Enabled>true</Enabled><Prefix>reports</Prefix>"
    "<ReportScope>AllTasks</ReportScope></Report><ClientRequestToken>tok-1</ClientRequestToken>"
    "<Manifest><Spec><Format>S3BatchOperations_CSV_20180820</Format><Fields><member>Bucket</member>"
    "<member>Key</member></Fields></Spec><Location><ObjectArn>arn:aws:s3:::manifest-bucket/manifest.csv"
    "</ObjectArn><ETag>60e460c9d1046e73f7dde5043ac3ae85</ETag></Location></Manifest>"
    "<Description>demo</Description><Priority>10</Priority>"
    "<RoleArn>arn:aws:iam::123456789012:role/batch-role</RoleArn><Tags><member><Key>team</Key>"
    "<Value>x</Value></member></Tags></CreateJobRequest>"
).encode()

CAPTURED_PARAMS: dict[str, Any] = {
    "ConfirmationRequired": False,
    "Operation": {"S3PutObjectTagging": {"TagSet": [{"Key": "k", "Value": "v"}]}},
    "Report": {
        "Bucket": "arn:aws:s3:::report-bucket",
        "Format": "Report_CSV_20180820",
        "Enabled": True,
        "Prefix": "reports",
        "ReportScope": "AllTasks",
    },
    "ClientRequestToken": "tok-1",
    "Manifest": {
        "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
        "Location": {
            "ObjectArn": "arn:aws:s3:::manifest-bucket/manifest.csv",
            "ETag": "60e460c9d1046e73f7dde5043ac3ae85",
        },
    },
    "Description": "demo",
    "Priority": 10,
    "RoleArn": "arn:aws:iam::123456789012:role/batch-role",
    "Tags": [{"Key": "team", "Value": "x"}],
}

#: The ManifestGenerator body of docs/aws-contracts.md#local-endpoints-and-clients
GENERATOR = (
    "<ManifestGenerator><S3JobManifestGenerator><SourceBucket>arn:aws:s3:::src</SourceBucket>"
    "<EnableManifestOutput>true</EnableManifestOutput><ManifestOutputLocation><Bucket>arn:aws:s3:::out"
    "</Bucket><ManifestPrefix>p</ManifestPrefix><ManifestFormat>S3InventoryReport_CSV_20211130"
    "</ManifestFormat><ManifestEncryption><SSE-S3 /></ManifestEncryption></ManifestOutputLocation>"
    "<Filter><CreatedAfter>2024-01-01T00:00:00Z</CreatedAfter><KeyNameConstraint><MatchAnyPrefix>"
    "<member>logs/</member></MatchAnyPrefix></KeyNameConstraint><ObjectSizeGreaterThanBytes>10"
    "</ObjectSizeGreaterThanBytes><MatchAnyStorageClass><member>STANDARD</member></MatchAnyStorageClass>"
    "<ObjectReplicationStatuses><member>NONE</member></ObjectReplicationStatuses>"
    "<MatchAnyObjectEncryption><ObjectEncryption><SSE-KMS><KmsKeyArn>arn:aws:kms:us-east-1:1:key/abcd"
    "</KmsKeyArn></SSE-KMS></ObjectEncryption></MatchAnyObjectEncryption></Filter>"
    "</S3JobManifestGenerator></ManifestGenerator>"
)

GENERATOR_PARAMS: dict[str, Any] = {
    "S3JobManifestGenerator": {
        "SourceBucket": "arn:aws:s3:::src",
        "EnableManifestOutput": True,
        "ManifestOutputLocation": {
            "Bucket": "arn:aws:s3:::out",
            "ManifestPrefix": "p",
            "ManifestFormat": "S3InventoryReport_CSV_20211130",
            "ManifestEncryption": {"SSES3": {}},  # wire name SSE-S3
        },
        "Filter": {
            "CreatedAfter": datetime(2024, 1, 1, tzinfo=UTC),
            "KeyNameConstraint": {"MatchAnyPrefix": ["logs/"]},
            "ObjectSizeGreaterThanBytes": 10,
            "MatchAnyStorageClass": ["STANDARD"],
            "ObjectReplicationStatuses": ["NONE"],
            "MatchAnyObjectEncryption": [{"SSEKMS": {"KmsKeyArn": "arn:aws:kms:us-east-1:1:key/abcd"}}],
        },
    }
}


def shuffled(body: bytes, seed: int) -> bytes:
    """The same document with every element's children in another order (lists kept in order,
    since their order is data)."""
    root = ET.fromstring(body)
    rng = random.Random(seed)

    def shuffle(element: ET.Element) -> None:
        children = list(element)
        for child in children:
            shuffle(child)
        if len({c.tag for c in children}) == len(children):  # a structure, not a list
            rng.shuffle(children)
            element[:] = children

    shuffle(root)
    return ET.tostring(root)


def botocore_body(operation: str, params: dict[str, Any]) -> bytes:
    """The body botocore itself would send for `operation(**params)`."""
    model = xml.service_model().operation_model(operation)
    request = create_serializer("rest-xml").serialize_to_request(params, model)
    return bytes(request["body"])


def botocore_parse(operation: str, body: bytes, status: int = 200) -> dict[str, Any]:
    model = xml.service_model().operation_model(operation)
    response = {"body": body, "headers": {}, "status_code": status}
    parsed: dict[str, Any] = create_parser("rest-xml").parse(response, model.output_shape)
    parsed.pop("ResponseMetadata", None)
    return parsed


def test_captured_create_job_body() -> None:
    assert xml.parse_request("CreateJob", CAPTURED) == CAPTURED_PARAMS


@pytest.mark.parametrize("seed", range(5))
def test_element_order_does_not_matter(seed: int) -> None:
    body = shuffled(CAPTURED, seed)
    assert body != CAPTURED
    assert xml.parse_request("CreateJob", body) == CAPTURED_PARAMS


def test_manifest_generator_body() -> None:
    body = CAPTURED.replace(b"</CreateJobRequest>", GENERATOR.encode() + b"</CreateJobRequest>")
    parsed = xml.parse_request("CreateJob", body)
    assert parsed["ManifestGenerator"] == GENERATOR_PARAMS
    reordered = xml.parse_request("CreateJob", shuffled(body, 7))
    assert reordered["ManifestGenerator"] == GENERATOR_PARAMS


def test_botocore_serialized_requests_round_trip() -> None:
    params = {
        **CAPTURED_PARAMS,
        "AccountId": "123456789012",
        "Operation": {
            "LambdaInvoke": {
                "FunctionArn": "arn:aws:lambda:us-east-1:1:function:f",
                "InvocationSchemaVersion": "2.0",
                "UserArguments": {"a": "1", "b": "two"},
            }
        },
        "ManifestGenerator": GENERATOR_PARAMS,
    }
    del params["Manifest"]
    parsed = xml.parse_request("CreateJob", botocore_body("CreateJob", params))
    assert parsed == {k: v for k, v in params.items() if k != "AccountId"}


def test_copy_operation_with_metadata_map_round_trips() -> None:
    copy = {
        "TargetResource": "arn:aws:s3:::dst",
        "MetadataDirective": "REPLACE",
        "NewObjectMetadata": {"UserMetadata": {"k1": "v1"}, "ContentType": "text/plain"},
        "BucketKeyEnabled": True,
        "NewObjectTagging": [],
    }
    params = {**CAPTURED_PARAMS, "AccountId": "123456789012", "Operation": {"S3PutObjectCopy": copy}}
    parsed = xml.parse_request("CreateJob", botocore_body("CreateJob", params))
    assert parsed["Operation"] == {"S3PutObjectCopy": copy}


def test_put_job_tagging() -> None:
    params = {"AccountId": "123456789012", "JobId": "abc-123", "Tags": [{"Key": "a", "Value": ""}]}
    assert xml.parse_request("PutJobTagging", botocore_body("PutJobTagging", params)) == {
        "Tags": [{"Key": "a", "Value": ""}]
    }
    empty = f'<PutJobTaggingRequest xmlns="{NS}"><Tags/></PutJobTaggingRequest>'.encode()
    assert xml.parse_request("PutJobTagging", empty) == {"Tags": []}


# -- rendering ----------------------------------------------------------------------------------

CREATED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def descriptor() -> dict[str, Any]:
    return {
        "JobId": "abc-123",
        "ConfirmationRequired": True,
        "JobArn": "arn:aws:s3:us-east-1:111122223333:job/abc-123",
        "Status": "Suspended",
        "Operation": CAPTURED_PARAMS["Operation"],
        "Priority": 10,
        "ProgressSummary": {
            "TotalNumberOfTasks": 3,
            "NumberOfTasksSucceeded": 2,
            "NumberOfTasksFailed": 1,
            "Timers": {"ElapsedTimeInActiveSeconds": 4},
        },
        "Report": CAPTURED_PARAMS["Report"],
        "CreationTime": CREATED,
        "ManifestGenerator": {
            "S3JobManifestGenerator": {
                **GENERATOR_PARAMS["S3JobManifestGenerator"],
                "Filter": {
                    **GENERATOR_PARAMS["S3JobManifestGenerator"]["Filter"],
                    # what JobService stores: an ISO string, rendered as a timestamp again
                    "CreatedAfter": "2024-01-01T00:00:00+00:00",
                },
            }
        },
        "FailureReasons": [{"FailureCode": "X", "FailureReason": "why"}],
        "Description": "demo",
    }


def test_describe_job_renders_what_botocore_parses() -> None:
    body = xml.render_result("DescribeJob", {"Job": descriptor()})
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeJobResult xmlns="')
    job = botocore_parse("DescribeJob", body)["Job"]
    expected = descriptor()
    expected["ManifestGenerator"] = GENERATOR_PARAMS
    assert job == expected


def test_list_jobs_with_next_token() -> None:
    entry = {
        "JobId": "abc-123",
        "Operation": "S3PutObjectTagging",
        "Priority": 1,
        "Status": "Complete",
        "CreationTime": CREATED,
        "TerminationDate": datetime(2026, 1, 2, 3, 5, tzinfo=UTC),
        "ProgressSummary": descriptor()["ProgressSummary"],
    }
    body = xml.render_result("ListJobs", {"Jobs": [entry, entry], "NextToken": "1.5:abc"})
    assert botocore_parse("ListJobs", body) == {"Jobs": [entry, entry], "NextToken": "1.5:abc"}
    assert botocore_parse("ListJobs", xml.render_result("ListJobs", {"Jobs": [], "NextToken": None})) == {
        "Jobs": []
    }


@pytest.mark.parametrize(
    ("operation", "data"),
    [
        ("CreateJob", {"JobId": "abc-123"}),
        ("UpdateJobPriority", {"JobId": "abc-123", "Priority": 7}),
        ("UpdateJobStatus", {"JobId": "abc-123", "Status": "Cancelled", "StatusUpdateReason": "go now"}),
        ("GetJobTagging", {"Tags": [{"Key": "a", "Value": "b"}, {"Key": "c", "Value": ""}]}),
    ],
)
def test_small_results(operation: str, data: dict[str, Any]) -> None:
    assert botocore_parse(operation, xml.render_result(operation, data)) == data


def test_extension_fields_are_left_out() -> None:
    body = xml.render_result("DescribeJob", {"Job": {**descriptor(), "Operation": {"S3DeleteObject": {}}}})
    assert b"S3DeleteObject" not in body
    assert botocore_parse("DescribeJob", body)["Job"]["JobId"] == "abc-123"


def test_error_document_maps_to_the_modeled_code() -> None:
    body = xml.render_error("NotFoundException", "No such job", "REQ1", "host")
    parsed = create_parser("rest-xml").parse(
        {"body": body, "headers": {}, "status_code": 404},
        xml.service_model().operation_model("DescribeJob").output_shape,
    )
    assert parsed["Error"] == {"Code": "NotFoundException", "Message": "No such job"}
    assert parsed["ResponseMetadata"]["RequestId"] == "REQ1"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2024, 1, 1, tzinfo=UTC), "2024-01-01T00:00:00Z"),
        (CREATED, "2026-01-02T03:04:05.678Z"),
        ("2024-01-01T01:00:00+01:00", "2024-01-01T00:00:00Z"),
        (0.0, "1970-01-01T00:00:00Z"),
    ],
)
def test_timestamps_are_iso_utc(value: Any, text: str) -> None:
    assert xml.format_timestamp(value) == text


# -- refused ------------------------------------------------------------------------------------

BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
    b'<CreateJobRequest xmlns="' + NS.encode() + b'"><Description>&lol2;</Description></CreateJobRequest>'
)
EXTERNAL_ENTITY = (
    b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b'<CreateJobRequest xmlns="' + NS.encode() + b'"><Description>&x;</Description></CreateJobRequest>'
)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (BILLION_LAUGHS, "DOCTYPE"),
        (EXTERNAL_ENTITY, "DOCTYPE"),
        (b"<CreateJobRequest>" + b" " * xml.MAX_XML_BYTES + b"</CreateJobRequest>", "larger than"),
        ("<CreateJobRequest><Description>é</Description></CreateJobRequest>".encode("latin-1"), "UTF-8"),
        (b'<?xml version="1.0" encoding="UTF-16"?><CreateJobRequest/>', "UTF-8"),
        (b"<CreateJobRequest><Priority>1</Priority>", "malformed"),
        (b"", "malformed"),
        (b"<PutJobTaggingRequest/>", "expected a <CreateJobRequest>"),
        (b"<CreateJobRequest><Bogus>1</Bogus></CreateJobRequest>", "unknown element <Bogus>"),
        (b"<CreateJobRequest><Priority>1</Priority><Priority>2</Priority></CreateJobRequest>", "twice"),
        (b"<CreateJobRequest><Priority>ten</Priority></CreateJobRequest>", "whole number"),
        (b"<CreateJobRequest><ConfirmationRequired>yes</ConfirmationRequired></CreateJobRequest>", "true or"),
        (b"<CreateJobRequest><Tags><item/></Tags></CreateJobRequest>", "expected <member>"),
        (b"<CreateJobRequest><Priority><x/></Priority></CreateJobRequest>", "nested"),
    ],
)
def test_bad_bodies_are_bad_requests(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        xml.parse_request("CreateJob", body)


def test_bad_map_entries() -> None:
    body = (
        b"<CreateJobRequest><Operation><LambdaInvoke><UserArguments><entry><key>a</key></entry>"
        b"</UserArguments></LambdaInvoke></Operation></CreateJobRequest>"
    )
    with pytest.raises(BadRequest, match="exactly <key> and <value>"):
        xml.parse_request("CreateJob", body)
