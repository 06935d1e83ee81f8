"""AWS-equivalent price of a batch job: the one place prices live.

US East (N. Virginia) list prices in USD, as published on the Amazon S3 and AWS Lambda pricing
pages (checked 2026-11; they have been stable for years). An estimate, not a bill: storage,
data transfer, Glacier retrieval fees, KMS calls and Lambda duration are not included.

How many requests of each type a job's tasks make is each operation kind's own fact
(`OperationKind.requests`); the service layer passes those counts in here.
"""

from __future__ import annotations

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

#: Request types, as the dry run's "Requests" names them.
PUT = "PUT"
COPY = "COPY"
POST = "POST"
LIST = "LIST"
GET = "GET"
HEAD = "HEAD"
DELETE = "DELETE"
LAMBDA_INVOKE = "LAMBDA_INVOKE"

#: Request type → price per single request.
REQUEST_PRICES_USD: Mapping[str, float] = {
    PUT: PUT_COPY_POST_LIST_PER_1000_USD / 1000,
    COPY: PUT_COPY_POST_LIST_PER_1000_USD / 1000,
    POST: PUT_COPY_POST_LIST_PER_1000_USD / 1000,
    LIST: PUT_COPY_POST_LIST_PER_1000_USD / 1000,
    GET: GET_HEAD_PER_1000_USD / 1000,
    HEAD: GET_HEAD_PER_1000_USD / 1000,
    DELETE: DELETE_PER_1000_USD / 1000,
    LAMBDA_INVOKE: LAMBDA_PER_MILLION_REQUESTS_USD / 1_000_000,
}


@dataclass(frozen=True, slots=True)
class CostEstimate:
    requests: dict[str, int]
    batch_job_usd: float
    batch_objects_usd: float
    requests_usd: float

    @property
    def total_usd(self) -> float:
        return self.batch_job_usd + self.batch_objects_usd + self.requests_usd


def job_requests(task_requests: Mapping[str, int]) -> dict[str, int]:
    """A job's requests: its tasks' plus the one GET of the manifest."""
    counts = dict(task_requests)
    counts[GET] = counts.get(GET, 0) + 1
    return counts


def price(task_requests: Mapping[str, int], tasks: int) -> CostEstimate:
    """The cost of a job of `tasks` objects whose tasks make `task_requests`."""
    requests = job_requests(task_requests)
    return CostEstimate(
        requests=requests,
        batch_job_usd=BATCH_JOB_USD,
        batch_objects_usd=BATCH_PER_MILLION_OBJECTS_USD * tasks / 1_000_000,
        requests_usd=sum(REQUEST_PRICES_USD[kind] * n for kind, n in requests.items()),
    )
