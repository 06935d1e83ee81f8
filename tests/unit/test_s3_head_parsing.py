"""The lean path's HEAD parsing (storage/s3/shapes.parsed_head) gives exactly what botocore's
own HeadObject parser gives, over the headers S3 and S3-compatible servers send."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.awsrequest import HeadersDict
from botocore.handlers import handle_expires_header

from s3batch.storage.s3.shapes import _head_parsing, head_object_info, parsed_head

BASE = {
    "Content-Length": "4096",
    "ETag": '"9b2cf535f27731c974343645a3985328"',
    "Last-Modified": "Wed, 02 Dec 2026 11:00:00 GMT",
    "Content-Type": "text/plain",
    "Accept-Ranges": "bytes",
    "x-amz-request-id": "REQ",
    "Date": "Wed, 02 Dec 2026 11:00:01 GMT",
}
AWS = {
    **BASE,
    "x-amz-version-id": "3HL4kqtJlcpXroDTDmjVBH40Nrjfkd",
    "x-amz-meta-Owner": "ana",
    "x-amz-meta-ünïcode": "välue".encode().decode("latin-1"),  # http1 reads headers as latin-1
    "x-amz-tagging-count": "3",
    "x-amz-mp-parts-count": "12",
    "x-amz-storage-class": "GLACIER",
    "x-amz-restore": 'ongoing-request="false", expiry-date="Fri, 23 Dec 2026 00:00:00 GMT"',
    "x-amz-server-side-encryption": "aws:kms",
    "x-amz-server-side-encryption-aws-kms-key-id": "arn:aws:kms:us-east-1:1:key/k",
    "x-amz-server-side-encryption-bucket-key-enabled": "true",
    "x-amz-checksum-crc64nvme": "AAAAAAAAAAA=",
    "x-amz-checksum-type": "FULL_OBJECT",
    "x-amz-object-lock-mode": "GOVERNANCE",
    "x-amz-object-lock-retain-until-date": "2027-01-01T00:00:00.000Z",
    "x-amz-object-lock-legal-hold": "ON",
    "x-amz-replication-status": "COMPLETED",
    "x-amz-delete-marker": "false",
    "x-amz-missing-meta": "1",
    "Cache-Control": "no-cache",
    "Content-Disposition": "attachment",
    "Content-Encoding": "gzip",
    "Content-Language": "fr",
    "Expires": "Thu, 01 Jan 2037 00:00:00 GMT",
}


def by_botocore(headers: dict[str, str]) -> dict[str, Any]:
    """botocore's parser over HeadObject's whole output shape, as aiobotocore runs it."""
    parser, operation = _head_parsing()
    utf8 = {
        k: v if v.isascii() else v.encode("latin-1").decode("utf-8", "surrogateescape")
        for k, v in headers.items()
    }
    response: dict[str, Any] = {"status_code": 200, "headers": HeadersDict(utf8), "body": b""}
    custom: dict[str, Any] = {}
    handle_expires_header(operation_model=operation, response_dict=response, customized_response_dict=custom)
    parsed: dict[str, Any] = parser.parse(response, operation.output_shape)
    parsed.pop("ResponseMetadata")
    parsed.update(custom)
    return parsed


@pytest.mark.parametrize(
    "headers",
    [
        BASE,
        AWS,
        {**BASE, "Expires": "not a date"},  # botocore keeps it as ExpiresString only
        {k.lower(): v for k, v in AWS.items()},  # servers that send lower-case names
        {**BASE, "x-amz-meta-": "empty name", "X-Amz-Meta-Mixed-Case": "kept"},
        {**BASE, "x-amz-delete-marker": "true", "x-amz-server-side-encryption-customer-algorithm": "AES256"},
    ],
    ids=["minimal", "aws-everything", "bad-expires", "lower-case", "metadata-names", "sse-c"],
)
def test_the_same_dict_as_botocores_parser(headers: dict[str, str]) -> None:
    ours = parsed_head(headers)
    assert ours == by_botocore(headers)
    info = head_object_info("b", "k", ours)
    assert info.size == 4096 and info.etag == "9b2cf535f27731c974343645a3985328"
