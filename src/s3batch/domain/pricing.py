"""AWS-equivalent price of a batch job: the one place prices live.

US East (N. Virginia) list prices in USD, as published on the Amazon S3 and AWS Lambda pricing
pages (checked 2026-11; they have been stable for years). An estimate, not a bill: storage,
data transfer, Glacier retrieval fees, KMS calls and Lambda duration are not included.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

#: S3 Batch Operations fees.
BATCH_JOB_USD = 0.25
BATCH_PER_MILLION_OBJECTS_USD = 1.00
#: S3 Standard request fees per 1,000 requests.
PUT_COPY_POST_LIST_PER_1000_USD = 0.005
GET_HEAD_PER_1000_USD = 0.0004
#: DELETE requests are free.
DELETE_PER_1000_USD = 0.0
#: Lambda requests per million (duration is not estimated: it depends on the handler).
LAMBDA_PER_MILLION_REQUESTS_USD = 0.20

#: Request type → price per single request.
REQUEST_PRICES_USD: Mapping[str, float] = {
    "PUT": PUT_COPY_POST_LIST_PER_1000_USD / 1000,
    "COPY": PUT_COPY_POST_LIST_PER_1000_USD / 1000,
    "POST": PUT_COPY_POST_LIST_PER_1000_USD / 1000,
    "LIST": PUT_COPY_POST_LIST_PER_1000_USD / 1000,
    "GET": GET_HEAD_PER_1000_USD / 1000,
    "HEAD": GET_HEAD_PER_1000_USD / 1000,
    "DELETE": DELETE_PER_1000_USD / 1000,
    "LAMBDA_INVOKE": LAMBDA_PER_MILLION_REQUESTS_USD / 1_000_000,
}

#: Requests one task makes, by operation (S3DeleteObject is batched: see requests_for).
_PER_TASK: Mapping[str, Mapping[str, int]] = {
    "S3PutObjectCopy": {"COPY": 1},
    "S3PutObjectTagging": {"PUT": 1},
    "S3DeleteObjectTagging": {"DELETE": 1},
    "S3PutObjectAcl": {"PUT": 1},
    "S3PutObjectLegalHold": {"PUT": 1},
    "S3PutObjectRetention": {"PUT": 1},
    "S3InitiateRestoreObject": {"POST": 1},
    "S3ReplicateObject": {"COPY": 1},
    "S3UpdateObjectEncryption": {"COPY": 1},
    "S3ComputeObjectChecksum": {"GET": 1},
    "LambdaInvoke": {"LAMBDA_INVOKE": 1},
    "S3batchCsvIngest": {"GET": 1},
}
#: Keys per DeleteObjects request.
DELETE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class CostEstimate:
    requests: dict[str, int]
    batch_job_usd: float
    batch_objects_usd: float
    requests_usd: float

    @property
    def total_usd(self) -> float:
        return self.batch_job_usd + self.batch_objects_usd + self.requests_usd


def requests_for(operation: str, tasks: int, buckets: int = 1) -> dict[str, int]:
    """Requests the operation makes for `tasks` objects (plus the manifest GET)."""
    if operation == "S3DeleteObject":
        counts = {"POST": math.ceil(tasks / DELETE_BATCH) + max(buckets - 1, 0)}
    else:
        counts = {kind: n * tasks for kind, n in _PER_TASK.get(operation, {}).items()}
    counts["GET"] = counts.get("GET", 0) + 1
    return counts


def estimate(operation: str, tasks: int, buckets: int = 1) -> CostEstimate:
    requests = requests_for(operation, tasks, buckets)
    return CostEstimate(
        requests=requests,
        batch_job_usd=BATCH_JOB_USD,
        batch_objects_usd=BATCH_PER_MILLION_OBJECTS_USD * tasks / 1_000_000,
        requests_usd=sum(REQUEST_PRICES_USD[kind] * n for kind, n in requests.items()),
    )
