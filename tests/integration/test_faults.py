"""Jobs through a fault-injecting proxy in front of moto's S3 server.

The proxy (tests/faultproxy.py) faults only the tasks' own calls (PUT ?tagging under a key
prefix), so Preparing, the capability probe and the report write run clean: these tests are
about task retries and adaptive concurrency, not about the runner's own I/O.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from conftest import Env, read_report, report_spec
from faultproxy import FaultPlan, FaultProxy
from s3batch.client import S3Batch
from s3batch.engines.local import LocalEngine
from s3batch.retry import RetryPolicy
from s3batch.service.runner import JobRunner
from s3batch.store.sqlite import SqliteJobStore

pytestmark = pytest.mark.integration

#: Tasks in the mixed-fault job.
TASKS = 2000
#: Engine concurrency (the AIMD maximum) in these tests.
CONCURRENCY = 32
#: Mixed faults: 10 % SlowDown + 2 % resets on each task request.
SLOWDOWN_RATE, RESET_RATE = 0.10, 0.02
#: Attempts per task under mixed faults: 0.12**10 makes a task failing every attempt (and the
#: test flaking) a one-in-a-billion event per task.
MIXED_ATTEMPTS = 10
#: Attempts per task against a prefix that always answers 503.
HOT_ATTEMPTS = 3
#: Short backoff so the test spends its time on requests, not sleeps (seconds).
FAST_RETRY = {"base_delay_s": 0.01, "max_delay_s": 0.2}
TAGS = [{"Key": "fault", "Value": "tested"}]
#: boto3 threads used to seed objects (moto's server is threaded).
SEED_THREADS = 16


@pytest.fixture
def proxy(moto_server: str) -> Iterator[FaultProxy]:
    with FaultProxy(moto_server) as p:
        yield p


def seed(env: Env, bucket: str, keys: list[str]) -> None:
    env.make_bucket(bucket)
    with ThreadPoolExecutor(SEED_THREADS) as pool:
        list(pool.map(lambda k: env.put(bucket, k, b"x"), keys))


def tagging_plan(bucket: str, prefix: str, **rates: Any) -> FaultPlan:
    return FaultPlan(
        methods=frozenset({"PUT"}), path_prefix=f"/{bucket}/{prefix}", query_contains="tagging", **rates
    )


def run_through(
    env: Env, proxy: FaultProxy, bucket: str, keys: list[str], engine: LocalEngine
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Create a tagging job whose store is the proxy; drive it in-process with `engine`."""
    batch = S3Batch(home=env.home, storage=proxy.url, background=False)
    job_id = batch.create_job(
        Operation={"S3PutObjectTagging": {"TagSet": TAGS}},
        Manifest=env.manifest(bucket, [(bucket, k) for k in keys]),
        Report=report_spec(bucket),
        Priority=10,
        ConfirmationRequired=False,
    )["JobId"]

    async def drive() -> None:
        store = SqliteJobStore(batch.settings.db_path)
        try:
            await JobRunner(store, engine, 1, env.home / "spool").drive(job_id)
        finally:
            await store.close()

    asyncio.run(drive())
    return batch.describe_job(JobId=job_id)["Job"], read_report(env, bucket, job_id)


def test_every_task_succeeds_under_slowdowns_and_resets(
    moto_env: Env, proxy: FaultProxy, bucket_name: str
) -> None:
    keys = [f"data/{i:05d}.txt" for i in range(TASKS)]
    seed(moto_env, bucket_name, keys)
    proxy.set_plan(tagging_plan(bucket_name, "data/", slowdown=SLOWDOWN_RATE, reset=RESET_RATE, seed=6))
    engine = LocalEngine(CONCURRENCY, RetryPolicy(max_attempts=MIXED_ATTEMPTS, **FAST_RETRY))

    job, report = run_through(moto_env, proxy, bucket_name, keys, engine)

    assert job["Status"] == "Complete"
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == TASKS
    assert "failed" not in report["rows"]
    assert sorted(r[1] for r in report["rows"]["succeeded"]) == keys
    injected = proxy.stats.injected
    # ~12 % of ~2,270 requests: far from zero, and from the whole.
    assert injected["slowdown"] > TASKS * SLOWDOWN_RATE / 2
    assert injected["reset"] > TASKS * RESET_RATE / 4
    stats = engine.stats
    # Every SlowDown is an attempt the engine saw fail and retried. A reset on a reused
    # keep-alive connection is retried once inside aiohttp (idempotent PUT), so the engine
    # sees only some of the resets.
    assert injected["slowdown"] <= stats.throttles <= proxy.stats.faults
    assert stats.retries == stats.throttles
    assert stats.decreases > 0
    assert stats.min_limit < CONCURRENCY
    assert stats.max_in_flight <= CONCURRENCY
    for key in keys[:: TASKS // 10]:  # the effect, read back past the proxy
        assert moto_env.client.get_object_tagging(Bucket=bucket_name, Key=key)["TagSet"] == TAGS


def test_a_prefix_that_always_answers_503_fails_after_bounded_attempts(
    moto_env: Env, proxy: FaultProxy, bucket_name: str
) -> None:
    hot = [f"hot/{i:03d}.txt" for i in range(40)]
    cold = [f"cold/{i:03d}.txt" for i in range(160)]
    seed(moto_env, bucket_name, hot + cold)
    proxy.set_plan(tagging_plan(bucket_name, "hot/", slowdown=1.0))
    engine = LocalEngine(CONCURRENCY, RetryPolicy(max_attempts=HOT_ATTEMPTS, **FAST_RETRY))

    job, report = run_through(moto_env, proxy, bucket_name, hot + cold, engine)

    assert job["Status"] == "Complete"  # 20 % failed, under the 50 % threshold
    failed, succeeded = report["rows"]["failed"], report["rows"]["succeeded"]
    assert sorted(r[1] for r in failed) == hot
    assert sorted(r[1] for r in succeeded) == cold
    assert {(r[3], r[4], r[5]) for r in failed} == {("failed", "503", "SlowDown")}
    # Bounded: exactly HOT_ATTEMPTS requests per hot key reached the proxy, none more.
    assert proxy.stats.injected["slowdown"] == len(hot) * HOT_ATTEMPTS
    assert engine.stats.retries == len(hot) * (HOT_ATTEMPTS - 1)
    assert engine.stats.min_limit < CONCURRENCY
    assert all(moto_env.client.get_object_tagging(Bucket=bucket_name, Key=k)["TagSet"] == [] for k in hot)


def test_proxy_forwards_unfaulted_requests_byte_for_byte(moto_server: str, proxy: FaultProxy) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=proxy.url, region_name="us-east-1")
    body = bytes(range(256)) * 1000
    client.create_bucket(Bucket="faultproxy-bytes")
    key = "odd key/ü+%20.bin"
    etag = client.put_object(Bucket="faultproxy-bytes", Key=key, Body=body)["ETag"]
    head = client.head_object(Bucket="faultproxy-bytes", Key=key)
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == etag
    assert client.get_object(Bucket="faultproxy-bytes", Key=key)["Body"].read() == body
    assert proxy.stats.forwarded == proxy.stats.requests == 4
    assert proxy.stats.faults == 0


def test_proxy_answers_s3_shaped_errors(moto_server: str, proxy: FaultProxy) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError

    client = boto3.client(
        "s3",
        endpoint_url=proxy.url,
        region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}),
    )
    seen = {}
    for name, rate in [("slowdown", 1.0), ("internal_error", 1.0), ("too_many_requests", 1.0)]:
        proxy.set_plan(FaultPlan(**{name: rate}))
        with pytest.raises(ClientError) as caught:
            client.head_bucket(Bucket="any-bucket")
        seen[name] = caught.value.response["ResponseMetadata"]["HTTPStatusCode"]
        with pytest.raises(ClientError) as caught:
            client.get_object(Bucket="any-bucket", Key="k")
        assert caught.value.response["Error"]["Code"] in {"SlowDown", "InternalError"}
    assert seen == {"slowdown": 503, "internal_error": 500, "too_many_requests": 429}
    assert proxy.stats.forwarded == 0


@pytest.mark.parametrize(
    ("methods", "prefix"),
    [
        pytest.param({"HEAD", "GET"}, "", id="manifest-and-probe-reads"),
        pytest.param({"PUT", "POST"}, "reports/", id="report-writes"),
    ],
)
def test_the_jobs_own_io_retries_throttling(
    moto_env: Env, proxy: FaultProxy, bucket_name: str, methods: set[str], prefix: str
) -> None:
    """SlowDown on the manifest read / probe (Preparing) or on the report write no longer fails
    the job: the runner's store retries them (storage/retrying.py)."""
    keys = [f"data/{i:03d}.txt" for i in range(20)]
    seed(moto_env, bucket_name, keys)
    plan = FaultPlan(methods=frozenset(methods), path_prefix=f"/{bucket_name}/{prefix}", slowdown=0.5, seed=3)
    proxy.set_plan(plan)
    engine = LocalEngine(CONCURRENCY, RetryPolicy(max_attempts=MIXED_ATTEMPTS, **FAST_RETRY))

    job, report = run_through(moto_env, proxy, bucket_name, keys, engine)

    assert proxy.stats.injected["slowdown"] >= 2  # the job's own calls really were throttled
    assert job["Status"] == "Complete", job.get("FailureReasons")
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == len(keys)
    assert sorted(r[1] for r in report["rows"]["succeeded"]) == keys
