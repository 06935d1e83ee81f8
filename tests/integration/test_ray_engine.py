"""The Ray engine on a two-node cluster on 127.0.0.1 (tests/raycluster.py), one for the module.

Jobs are driven in this process (the driver) against that cluster, except where the driver
itself is killed (tests/ray_driver.py in a child process) and where the engine starts its own
private cluster (a child process again: a process joins one cluster in its life). Every
process is found and stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURE_HANDLERS, Env, read_report, report_spec
from faultproxy import FaultPlan, FaultProxy
from raycluster import TwoNodeCluster, chunk_workers, is_loopback, listening_addresses
from s3batch.client import S3Batch
from s3batch.domain.task import Task
from s3batch.engines.base import Engine, Finished
from s3batch.engines.local import LocalEngine
from s3batch.engines.ray import ActorPlan, RayEngine
from s3batch.engines.ray_cluster import leave
from s3batch.operations.base import JobContext
from s3batch.retry import RetryPolicy
from s3batch.service.runner import JobRunner
from s3batch.store.sqlite import SqliteJobStore

pytestmark = pytest.mark.integration

TESTS = Path(__file__).resolve().parent.parent
#: A secret no other test uses: the job's credentials, looked for in Ray's files afterwards.
SECRET = "s3batch-ray-secret-" + secrets.token_hex(12)
#: The AIMD maximum, per actor and shared.
CONCURRENCY = 16
#: Short backoff and enough attempts that a 10 % SlowDown never fails a task.
RETRY = RetryPolicy(max_attempts=10, base_delay_s=0.01, max_delay_s=0.2)
#: Small chunks: many of them in flight, so a kill always catches some mid-way.
CHUNK_TASKS = 50
SLOW_HANDLER = "python:ray_handlers:handler"
SEED_THREADS = 16
#: Seconds a child driver may take, and the wait for the first recorded results.
DRIVER_TIMEOUT_S = 120.0
PROGRESS_TIMEOUT_S = 60.0
#: Retryable errors beyond the injected ones that a loaded machine may add to a faulted run.
TRANSIENT_ERRORS = 3


@pytest.fixture(scope="module")
def cluster() -> Iterator[TwoNodeCluster]:
    with TwoNodeCluster.start() as running:
        try:
            yield running
        finally:
            leave()  # this process's driver goes before its cluster does


@pytest.fixture(autouse=True)
def joins_the_cluster(cluster: TwoNodeCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in cluster.driver_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    # Function handlers are found through PYTHONPATH, as on Lambda (forwarded to the actors).
    monkeypatch.syspath_prepend(str(FIXTURE_HANDLERS))
    monkeypatch.setenv("PYTHONPATH", str(FIXTURE_HANDLERS))


def ray_engine(cluster: TwoNodeCluster, actors: int = 2, **options: Any) -> RayEngine:
    options.setdefault("chunk_tasks", CHUNK_TASKS)
    return RayEngine(cluster.address, actors, CONCURRENCY, RETRY, **options)


class Hooked:
    """An engine that calls `hook(recorded so far)` after each group it yields."""

    def __init__(self, engine: Engine, hook: Callable[[int], None]) -> None:
        self.engine, self.hook, self.recorded = engine, hook, 0

    async def run(
        self, job: JobContext, operation: Mapping[str, Any], tasks: AsyncIterator[Task]
    ) -> AsyncIterator[Finished]:
        async for group in self.engine.run(job, operation, tasks):
            yield group
            self.recorded += len(group)
            self.hook(self.recorded)


def create(batch: S3Batch, env: Env, bucket: str, keys: list[str], operation: dict[str, Any]) -> str:
    job_id: str = batch.create_job(
        Operation=operation,
        Manifest=env.manifest(bucket, [(bucket, k) for k in keys]),
        Report=report_spec(bucket),
        Priority=10,
        ConfirmationRequired=False,
    )["JobId"]
    return job_id


def drive(batch: S3Batch, job_id: str, engine: Engine) -> dict[str, Any]:
    async def go() -> None:
        store = SqliteJobStore(batch.settings.db_path)
        try:
            await JobRunner(store, engine, 1, batch.settings.home / "spool").drive(job_id)
        finally:
            await store.close()

    asyncio.run(go())
    job: dict[str, Any] = batch.describe_job(JobId=job_id)["Job"]
    return job


def seed(env: Env, bucket: str, keys: list[str]) -> None:
    env.make_bucket(bucket)
    with ThreadPoolExecutor(SEED_THREADS) as pool:
        list(pool.map(lambda k: env.put(bucket, k, k.encode()), keys))


def rows_without_bucket(report: dict[str, Any]) -> dict[str, list[list[str]]]:
    return {status: sorted(row[1:] for row in rows) for status, rows in report["rows"].items()}


def files_containing(folder: Path, needle: bytes) -> list[Path]:
    found = []
    for path in folder.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                found.append(path)
        except OSError:
            continue  # a socket, or a file Ray removed meanwhile
    return found


def assert_loopback_only(pids: list[int]) -> None:
    listening = listening_addresses(pids)
    assert listening, "no listener found: the check would prove nothing"
    assert [(pid, ip) for pid, ip in listening if not is_loopback(ip)] == []


OPERATIONS = {
    "copy": {"S3PutObjectCopy": {"TargetResource": "arn:aws:s3:::{bucket}", "TargetKeyPrefix": "copied"}},
    "tagging": {"S3PutObjectTagging": {"TagSet": [{"Key": "engine", "Value": "any"}]}},
    "delete": {"S3DeleteObject": {}},
    "invoke": {"LambdaInvoke": {"FunctionArn": SLOW_HANDLER, "InvocationSchemaVersion": "2.0"}},
}


def invoke(**extra: Any) -> dict[str, Any]:
    """A LambdaInvoke operation on the slow test handler."""
    return {"LambdaInvoke": {"FunctionArn": SLOW_HANDLER, "InvocationSchemaVersion": "2.0", **extra}}


@pytest.mark.parametrize("kind", list(OPERATIONS))
def test_same_report_rows_as_the_local_engine(
    cluster: TwoNodeCluster, moto_env: Env, bucket_name: str, kind: str
) -> None:
    keys = [f"data/{i:03d}.txt" for i in range(120)]
    listed = [*keys, "data/missing-1.txt", "data/missing-2.txt"]
    reports = {}
    for name, engine in [("local", LocalEngine(CONCURRENCY, RETRY)), ("ray", ray_engine(cluster))]:
        bucket = f"{bucket_name}-{name}"
        seed(moto_env, bucket, keys)
        operation = json.loads(json.dumps(OPERATIONS[kind]).replace("{bucket}", bucket))
        batch = moto_env.batch()
        job = drive(batch, create(batch, moto_env, bucket, listed, operation), engine)
        assert job["Status"] == "Complete"
        reports[name] = read_report(moto_env, bucket, job["JobId"])
    assert rows_without_bucket(reports["ray"]) == rows_without_bucket(reports["local"])
    # Missing keys fail a copy or tagging; a delete of one succeeds, as in S3, and the handler
    # does not read its object.
    assert len(reports["ray"]["rows"].get("failed", [])) == (2 if kind in {"copy", "tagging"} else 0)
    # The actors' processes start without any AWS variable: the job succeeded on credentials
    # that reached them in memory, and none of Ray's files holds them.
    assert files_containing(cluster.temp_dir, SECRET.encode()) == []


def test_the_next_job_runs_on_the_actors_the_last_one_kept(
    cluster: TwoNodeCluster, moto_env: Env, bucket_name: str
) -> None:
    keys = [f"data/{i:03d}.txt" for i in range(60)]
    seed(moto_env, bucket_name, keys)
    batch, operations = moto_env.batch(), [OPERATIONS["tagging"], invoke()]
    engines, workers = [], []
    for operation in operations:
        engine = ray_engine(cluster)
        job = drive(batch, create(batch, moto_env, bucket_name, keys, operation), engine)
        assert job["Status"] == "Complete"
        assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == len(keys)
        engines.append(engine)
        workers.append(sorted(chunk_workers(cluster.pids())))
    assert engines[1].reused == 2  # no actor started for the second job
    assert workers[1] == workers[0] and len(workers[0]) == 2


def test_one_limit_for_the_endpoint_across_actors(
    cluster: TwoNodeCluster, moto_env: Env, moto_server: str, bucket_name: str
) -> None:
    keys = [f"data/{i:04d}.txt" for i in range(800)]
    seed(moto_env, bucket_name, keys)
    engine = ray_engine(cluster, chunk_tasks=100)
    plan = FaultPlan(
        methods=frozenset({"PUT"}), path_prefix=f"/{bucket_name}/data/", query_contains="tagging",
        slowdown=0.10, seed=11,
    )  # fmt: skip
    with FaultProxy(moto_server, plan) as proxy:
        batch = S3Batch(home=moto_env.home, storage=proxy.url, background=False)
        operation = OPERATIONS["tagging"]
        job = drive(batch, create(batch, moto_env, bucket_name, keys, operation), engine)

    assert job["Status"] == "Complete"
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == len(keys)
    shared = engine.shared
    assert shared is not None and shared.maximum == CONCURRENCY
    assert shared.actors == 2  # both actors leased from the one limit
    # Each actor alone may run CONCURRENCY requests: together they stayed under the one limit.
    assert proxy.stats.max_in_flight <= CONCURRENCY
    assert shared.max_leased <= CONCURRENCY
    # (shared.stats.max_in_flight sums each actor's last report: approximate, so the proxy's exact
    # count above is the check.)
    # Every SlowDown an actor saw reached the shared limit, which shrank after them.
    injected = proxy.stats.injected["slowdown"]
    assert injected > len(keys) * 0.05
    # None lost; any more are retryable errors of a loaded machine (a dropped connection), which
    # count as throttles too and were retried like them.
    assert injected <= shared.stats.throttles <= injected + TRANSIENT_ERRORS
    assert shared.stats.retries == shared.stats.throttles
    assert shared.stats.decreases >= 1
    assert shared.stats.min_limit < CONCURRENCY
    first_cut = next(s.t for s in shared.stats.samples if s.limit < CONCURRENCY)
    assert all(s.limit < CONCURRENCY for s in shared.stats.samples if s.t == first_cut)


def test_killed_actor_and_node_every_task_recorded_once(
    cluster: TwoNodeCluster, local_env: Env, tmp_path: Path
) -> None:
    keys = [f"k{i:05d}" for i in range(1500)]
    runs = tmp_path / "runs"
    runs.mkdir()
    local_env.make_bucket("b")
    operation = invoke(UserArguments={"log": str(runs)})
    killed: dict[str, list[int]] = {}

    def chaos(recorded: int) -> None:
        if "actor" not in killed:  # while the first chunks run: the cluster listens on loopback only
            assert_loopback_only([*cluster.pids(), os.getpid()])
            on_worker_node = set(cluster.worker_node_pids())
            head_actors = [p for p in chunk_workers(cluster.pids()) if p not in on_worker_node]
            assert head_actors, "no actor on the head node"
            os.kill(head_actors[0], signal.SIGKILL)
            killed["actor"] = head_actors[:1]
        elif "node" not in killed and recorded >= len(keys) * 0.3:
            assert list(chunk_workers(cluster.worker_node_pids())), "no actor on the second node"
            killed["node"] = cluster.kill_worker_node()

    engine = ray_engine(cluster)
    batch = local_env.batch()
    try:
        job = drive(batch, create(batch, local_env, "b", keys, operation), Hooked(engine, chaos))
    finally:
        cluster.add_worker_node()

    assert set(killed) == {"actor", "node"}
    assert job["Status"] == "Complete"
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == len(keys)
    report = read_report(local_env, "b", job["JobId"])
    assert sorted(row[1] for row in report["rows"]["succeeded"]) == keys  # each exactly once
    ran = [line for log in runs.iterdir() for line in log.read_text().splitlines()]
    assert set(ran) == set(keys)
    assert len(ran) >= len(keys)  # at least once: a chunk cut short runs again


def test_resume_after_the_driver_is_killed(cluster: TwoNodeCluster, local_env: Env, tmp_path: Path) -> None:
    keys = [f"k{i:05d}" for i in range(1200)]
    local_env.make_bucket("b")
    operation = invoke()
    batch = local_env.batch()
    job_id = create(batch, local_env, "b", keys, operation)
    env = {
        **os.environ,
        "S3BATCH_ENGINE": "ray",
        "S3BATCH_RAY_ACTORS": "2",
        "S3BATCH_HOME": str(local_env.home),
    }

    first = driver(job_id, env)
    try:
        wait_for_progress(batch, job_id)
    finally:
        first.kill()  # SIGKILL: no cleanup of any kind
        first.wait()
    done_before = batch.describe_job(JobId=job_id)["Job"]["ProgressSummary"]
    assert 0 < done_before["NumberOfTasksSucceeded"] < len(keys)

    second = driver(job_id, env)
    out, _ = second.communicate(timeout=DRIVER_TIMEOUT_S)
    assert json.loads(out.splitlines()[-1])["status"] == "Complete"
    report = read_report(local_env, "b", job_id)
    assert sorted(row[1] for row in report["rows"]["succeeded"]) == keys  # each exactly once


def driver(job_id: str, env: Mapping[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(TESTS / "ray_driver.py"), job_id, *args],
        env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def wait_for_progress(batch: S3Batch, job_id: str) -> None:
    deadline = time.monotonic() + PROGRESS_TIMEOUT_S
    while batch.describe_job(JobId=job_id)["Job"]["ProgressSummary"]["NumberOfTasksSucceeded"] == 0:
        assert time.monotonic() < deadline, "the first driver recorded nothing"
        time.sleep(0.05)


def test_private_cluster_when_no_address_is_given(local_env: Env) -> None:
    keys = [f"k{i:04d}" for i in range(300)]
    for key in keys:
        local_env.put("b", key, b"x")
    batch = local_env.batch()
    job_id = create(batch, local_env, "b", keys, OPERATIONS["tagging"])
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in {"S3BATCH_RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}
    }
    env.update({"S3BATCH_ENGINE": "ray", "S3BATCH_HOME": str(local_env.home)})

    out, _ = driver(job_id, env, "--observe").communicate(timeout=DRIVER_TIMEOUT_S)
    seen = json.loads(out.splitlines()[-1])

    assert seen["status"] == "Complete"
    assert seen["listening"], "no listener found: the check would prove nothing"
    assert [(pid, ip) for pid, ip in seen["listening"] if not is_loopback(ip)] == []
    assert len(seen["pids"]) > 3  # the head's processes and the actors were seen
    assert not Path(seen["temp_dir"]).exists()  # removed when the driver exited...
    assert [pid for pid in seen["pids"] if Path(f"/proc/{pid}").exists()] == []  # ...with every process


def test_function_resources_place_the_actors(cluster: TwoNodeCluster, local_env: Env) -> None:
    import ray

    keys = [f"k{i:03d}" for i in range(100)]
    local_env.make_bucket("b")
    operation = invoke(FunctionResources={"CPU": 2})
    free: list[float] = []
    engine = ray_engine(cluster, actors=0)
    batch = local_env.batch()
    job = drive(
        batch,
        create(batch, local_env, "b", keys, operation),
        Hooked(engine, lambda _: free.append(ray.available_resources().get("CPU", 0.0))),
    )
    assert job["Status"] == "Complete"
    assert engine.plan == ActorPlan(count=2, cpus=2.0, gpus=0.0)  # 4 CPUs, 2 per worker
    assert free and free[0] == 0.0  # Ray reserved them: nothing left for anyone else


def test_an_actor_the_cluster_has_no_room_for_does_not_hold_up_the_end(
    cluster: TwoNodeCluster, local_env: Env
) -> None:
    """Three workers of 2 CPUs on two nodes of 2: the third waits for room the other two hold
    until the job ends. The job ends without it (no close waits for it to start), and it is
    killed rather than kept: started later, it would take the CPUs of the next job."""
    keys = [f"k{i:03d}" for i in range(40)]
    local_env.make_bucket("b")
    engine = ray_engine(cluster, actors=3)
    batch = local_env.batch()
    job = drive(batch, create(batch, local_env, "b", keys, invoke(FunctionResources={"CPU": 2})), engine)
    assert job["Status"] == "Complete"
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == len(keys)
    assert engine.plan == ActorPlan(count=3, cpus=2.0, gpus=0.0)
    assert engine.unstarted == 1


def test_function_resources_the_cluster_lacks_fail_the_job(
    local_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through a worker, as `s3batch` runs jobs: S3BATCH_ENGINE=ray picks this engine, and a job
    whose workers cannot be placed fails with a reason naming the field."""
    monkeypatch.setenv("S3BATCH_ENGINE", "ray")
    local_env.make_bucket("b")
    batch = local_env.batch()
    job_id = create(batch, local_env, "b", ["k"], invoke(FunctionResources={"GPU": 1}))
    batch.run_until_idle()
    job = batch.describe_job(JobId=job_id)["Job"]
    assert job["Status"] == "Failed"
    assert "LambdaInvoke.FunctionResources" in job["FailureReasons"][0]["FailureReason"]
