"""S3 and Lambda ARNs as S3 Batch Operations uses them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from s3batch.errors import BadRequest

_S3_ARN = re.compile(r"^arn:[^:]+:(s3|s3express):[^:]*:[^:]*:(?P<rest>.+)$")
_LAMBDA_ARN = re.compile(
    r"^arn:[^:]+:lambda:(?P<region>[^:]*):(?P<account>[^:]*):function:(?P<name>[^:]+)"
    r"(:(?P<qualifier>[^:]+))?$"
)


@dataclass(frozen=True, slots=True)
class ObjectLocation:
    bucket: str
    key: str


def bucket_from_arn(arn: str, field: str = "Bucket") -> str:
    """`arn:aws:s3:::bucket` → `bucket`. A bare bucket name is accepted too."""
    if not arn.startswith("arn:"):
        if not arn or "/" in arn:
            raise BadRequest(f"{field}: expected a bucket ARN like arn:aws:s3:::bucket, got {arn!r}")
        return arn
    m = _S3_ARN.match(arn)
    if not m or "/" in m.group("rest"):
        raise BadRequest(f"{field}: expected a bucket ARN like arn:aws:s3:::bucket, got {arn!r}")
    return m.group("rest")


def object_from_arn(arn: str, field: str = "ObjectArn") -> ObjectLocation:
    """`arn:aws:s3:::bucket/path/key` → (bucket, path/key)."""
    m = _S3_ARN.match(arn)
    if not m or "/" not in m.group("rest"):
        raise BadRequest(f"{field}: expected an object ARN like arn:aws:s3:::bucket/key, got {arn!r}")
    bucket, _, key = m.group("rest").partition("/")
    if not bucket or not key:
        raise BadRequest(f"{field}: bucket or key missing in {arn!r}")
    return ObjectLocation(bucket, key)


def bucket_arn(bucket: str, partition: str = "aws") -> str:
    return f"arn:{partition}:s3:::{bucket}"


@dataclass(frozen=True, slots=True)
class LambdaArn:
    region: str
    account: str
    name: str
    qualifier: str | None


def parse_lambda_arn(arn: str) -> LambdaArn | None:
    m = _LAMBDA_ARN.match(arn)
    if not m:
        return None
    return LambdaArn(m["region"], m["account"], m["name"], m["qualifier"])
