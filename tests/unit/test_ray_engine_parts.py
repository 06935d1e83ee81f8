"""The Ray engine's parts that need no cluster: the shared limit's rule and gate, the chunk
dispatcher (with stand-in actors), actor planning, the forwarded environment, FunctionResources
validation, the settings, and s3batch without Ray installed."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from s3batch.domain.task import Task, TaskResult
from s3batch.engines.ray import (
    CHUNK_REDISPATCHES,
    CHUNK_TARGET_S,
    ActorPlan,
    ChunkSizer,
    _Dispatch,
    forwarded_environment,
    plan_actors,
)
from s3batch.engines.ray_cluster import is_loopback, quiet_environment
from s3batch.engines.ray_limiter import LEASE_TTL_S, Grant, LeasedLimit, LimiterActor, Report, SharedLimit
from s3batch.engines.ray_pool import PoolKey, pool_key
from s3batch.errors import BadRequest, ConfigError
from s3batch.idle import IdlePool
from s3batch.operations import get_kind
from s3batch.settings import Settings

OK = TaskResult.ok()
SLOWDOWN = TaskResult.fail("SlowDown", "Please reduce your request rate.", 503, retryable=True)


# -- the cluster-wide limit (pure) ---------------------------------------------------------


def test_leases_never_add_up_past_the_limit_and_a_newcomer_gets_a_fair_share() -> None:
    limit = LeasedLimit(16)
    assert limit.sync("a", Report(want=16, in_flight=0)).permits == 16
    assert limit.sync("b", Report(want=16, in_flight=0)).permits == 0  # nothing free yet
    assert limit.sync("a", Report(want=16, in_flight=8)).permits == 8  # trimmed: b waits
    assert limit.sync("b", Report(want=16, in_flight=0)).permits == 8
    assert limit.leased == 16 and limit.max_leased == 16


def test_a_trimmed_holders_requests_in_flight_still_count() -> None:
    limit = LeasedLimit(16)
    limit.sync("a", Report(want=16, in_flight=0))
    limit.sync("b", Report(want=16, in_flight=0))
    assert limit.sync("a", Report(want=16, in_flight=16)).permits == 8  # 16 still in flight
    assert limit.sync("b", Report(want=16, in_flight=0)).permits == 0  # so nothing is free yet
    limit.sync("a", Report(want=16, in_flight=8))  # they finished down to its lease
    assert limit.sync("b", Report(want=16, in_flight=0)).permits == 8


def test_the_limiter_actor_keeps_each_runs_limit_apart_and_forgets_it_at_close() -> None:
    limiter = LimiterActor()
    assert limiter.sync("job-1", 16, "a", Report(want=16, in_flight=0)).permits == 16
    assert limiter.sync("job-2", 4, "a", Report(want=16, in_flight=0)).permits == 4  # its own maximum
    assert limiter.sync("job-1", 16, "b", Report(want=16, in_flight=0)).permits == 0  # job-1 is full
    final = limiter.close("job-1")
    assert final is not None and final.actors == 2
    assert limiter.recent("job-1") is None and limiter.close("job-1") is None
    assert limiter.held() == 1
    # A limit it does not hold (the actor restarted) starts again from the next sync.
    assert limiter.sync("job-1", 16, "a", Report(want=8, in_flight=0)).permits == 8


def test_a_throttle_halves_the_limit_once_per_window() -> None:
    limit = LeasedLimit(16)
    grant = limit.sync("a", Report(want=16, in_flight=0))
    cut = limit.sync("a", Report(want=16, in_flight=16, throttles={grant.epoch: 5}))
    assert limit.limit == 8 and cut.epoch == grant.epoch + 1
    assert cut.permits == 8  # the lease follows the cut at once
    # Throttles of requests started before the cut say nothing new: no second cut.
    limit.sync("b", Report(want=4, in_flight=0, throttles={grant.epoch: 3}))
    assert limit.limit == 8
    limit.sync("a", Report(want=8, in_flight=8, throttles={cut.epoch: 1}))
    assert limit.limit == 4
    for _ in range(5):
        limit.sync("a", Report(want=8, in_flight=4, throttles={limit.epoch: 1}))
    assert limit.limit == limit.minimum == 2  # an eighth of the maximum, as the local limit
    assert limit.stats.throttles == 5 + 3 + 1 + 5
    assert limit.stats.decreases == 3


def test_successes_anywhere_grow_the_limit() -> None:
    limit = LeasedLimit(16, increase_after=4)
    grant = limit.sync("a", Report(want=16, in_flight=0))
    limit.sync("a", Report(want=16, in_flight=0, throttles={grant.epoch: 1}))
    assert limit.limit == 8
    limit.sync("a", Report(want=8, in_flight=0, successes=6))
    limit.sync("b", Report(want=0, in_flight=0, successes=2))
    assert limit.limit == 10
    assert limit.stats.increases == 2


def test_a_silent_holders_lease_expires_and_want_zero_hands_it_back() -> None:
    now = [0.0]
    limit = LeasedLimit(8, clock=lambda: now[0])
    assert limit.sync("dead", Report(want=8, in_flight=8)).permits == 8
    assert limit.sync("live", Report(want=8, in_flight=0)).permits == 0
    now[0] += LEASE_TTL_S + 1
    assert limit.sync("live", Report(want=8, in_flight=0)).permits == 8
    assert limit.sync("live", Report(want=0, in_flight=0)).permits == 0
    assert limit.leased == 0


async def test_actors_gates_keep_requests_in_flight_under_the_one_limit() -> None:
    cluster = LeasedLimit(6)

    async def sync(holder: str, report: Report) -> Grant:
        await asyncio.sleep(0)  # a remote call: the answer comes later
        return cluster.sync(holder, report)

    gates = [SharedLimit(f"actor-{i}", 6, sync) for i in range(3)]
    for gate in gates:
        gate.start()
    in_flight, most = [0], [0]

    async def request(gate: SharedLimit, result: TaskResult) -> None:
        async with gate.slot() as report:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            await asyncio.sleep(0.002)
            in_flight[0] -= 1
            report(result)

    requests = [request(gates[i % 3], SLOWDOWN if i == 10 else OK) for i in range(120)]
    await asyncio.wait_for(asyncio.gather(*requests), 10)
    for gate in gates:
        await gate.stop()
    assert most[0] <= 6
    assert most[0] > 1  # the requests did overlap
    assert all(gate.stats.max_in_flight <= 6 for gate in gates)
    assert cluster.stats.throttles == 1 and cluster.stats.decreases == 1
    assert cluster.leased == 0  # every lease handed back


# -- the dispatcher, with stand-in actors ----------------------------------------------------


class RayError(Exception):
    pass


class RayTaskError(RayError):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


#: Stands for the ChunkJob the dispatcher sends with every chunk.
JOB = object()
FAKE_RAY = SimpleNamespace(exceptions=SimpleNamespace(RayError=RayError, RayTaskError=RayTaskError))


class FakeActor:
    """Answers each chunk on the next loop turn via `behaviour(tasks) -> results or exception`."""

    def __init__(
        self,
        name: str,
        behaviour: Callable[[list[Task]], Any],
        log: list[tuple[str, int]],
        starts: bool = True,
    ) -> None:
        self.name, self.behaviour, self.log = name, behaviour, log
        self.in_flight = self.most = 0
        self.run_chunk = SimpleNamespace(remote=self._remote)
        self.ready = SimpleNamespace(remote=functools.partial(self._ready, starts))

    def _ready(self, starts: bool) -> Any:
        """Answers at once; never, for an actor the cluster has no room for."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if starts:
            future.set_result(True)
        return SimpleNamespace(future=lambda: future)

    def _remote(self, job: object, tasks: list[Task]) -> Any:
        assert job is JOB  # every chunk carries its job
        self.log.append((self.name, tasks[0].seq))
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        loop = asyncio.get_running_loop()

        def answer() -> None:
            self.in_flight -= 1
            outcome = self.behaviour(tasks)
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

        loop.call_later(0.001, answer)
        return SimpleNamespace(future=lambda: future)


def chunks(count: int, size: int) -> list[list[Task]]:
    tasks = [Task(seq=i, bucket="b", raw_key=f"k{i}", key=f"k{i}") for i in range(count * size)]
    return [tasks[i : i + size] for i in range(0, len(tasks), size)]


async def collect(dispatch: _Dispatch, batches: list[list[Task]]) -> list[tuple[Task, TaskResult]]:
    async def stream() -> AsyncIterator[list[Task]]:
        for batch in batches:
            yield batch

    return [pair async for group in dispatch.results(stream()) for pair in group]


async def test_chunks_go_to_actors_with_room_and_every_task_comes_back_once() -> None:
    log: list[tuple[str, int]] = []
    actors = [FakeActor(n, lambda tasks: [OK] * len(tasks), log) for n in "ab"]
    dispatch = _Dispatch(FAKE_RAY, actors, per_actor=2, spec=JOB)
    done = await collect(dispatch, chunks(20, 5))
    assert sorted(task.seq for task, _ in done) == list(range(100))
    assert {name for name, _ in log} == {"a", "b"}
    assert all(actor.most <= 2 for actor in actors)


async def test_an_actor_the_cluster_has_no_room_for_gets_no_chunk() -> None:
    log: list[tuple[str, int]] = []
    actors = [
        FakeActor("runs", lambda tasks: [OK] * len(tasks), log),
        FakeActor("waits", lambda tasks: [OK] * len(tasks), log, starts=False),
    ]
    dispatch = _Dispatch(FAKE_RAY, actors, per_actor=2, spec=JOB)
    done = await asyncio.wait_for(collect(dispatch, chunks(10, 5)), 10)
    assert sorted(task.seq for task, _ in done) == list(range(50))
    assert {name for name, _ in log} == {"runs"}
    assert dispatch.sent == [True, False]  # only "runs" has the run to close
    assert dispatch.ready == [True, False]  # only "runs" may serve the next run


async def test_a_chunk_whose_actor_died_goes_to_another_and_is_recorded_once() -> None:
    log: list[tuple[str, int]] = []
    failures = {"a": 1}

    def dies_once(tasks: list[Task]) -> Any:
        if failures["a"]:
            failures["a"] -= 1
            return RayError("actor died")
        return [OK] * len(tasks)

    actors = [FakeActor("a", dies_once, log), FakeActor("b", lambda t: [OK] * len(t), log)]
    dispatch = _Dispatch(FAKE_RAY, actors, per_actor=1, spec=JOB)
    done = await collect(dispatch, chunks(4, 3))
    assert sorted(task.seq for task, _ in done) == list(range(12))
    assert dispatch.redispatched == 1
    first_on_a = next(seq for name, seq in log if name == "a")
    assert ("b", first_on_a) in log  # handed to the other actor


async def test_a_chunk_that_keeps_losing_its_actor_fails_its_tasks_not_the_job() -> None:
    log: list[tuple[str, int]] = []
    actors = [FakeActor(n, lambda tasks: RayError("node lost"), log) for n in "ab"]
    dispatch = _Dispatch(FAKE_RAY, actors, per_actor=1, spec=JOB)
    done = await collect(dispatch, chunks(1, 3))
    assert [task.seq for task, _ in done] == [0, 1, 2]
    assert {result.error_code for _, result in done} == {"InternalError"}
    assert len(log) == CHUNK_REDISPATCHES + 1


async def test_a_result_for_a_task_already_recorded_is_dropped() -> None:
    log: list[tuple[str, int]] = []
    actors = [FakeActor("a", lambda tasks: [OK] * len(tasks), log)]
    dispatch = _Dispatch(FAKE_RAY, actors, per_actor=1, spec=JOB)
    dispatch.open.add(99)
    assert dispatch._record(chunks(1, 2)[0], [OK, OK]) == []  # seqs 0 and 1 were never open
    assert dispatch.duplicates == 2


async def test_an_error_raised_inside_the_actor_fails_the_run() -> None:
    actors = [FakeActor("a", lambda tasks: RayTaskError(ValueError("bad operation")), [])]
    with pytest.raises(RuntimeError, match="ValueError: bad operation"):
        await collect(_Dispatch(FAKE_RAY, actors, per_actor=1, spec=JOB), chunks(1, 2))


def test_chunks_grow_to_the_target_time_within_their_bounds() -> None:
    sizer = ChunkSizer(20, 500, per_actor=2)
    assert sizer.size() == 20  # nothing measured: the first chunks are small
    sizer.record(20, 2.0)  # the first chunk also waited for its actor to start
    assert sizer.size() == 20
    for _ in range(8):  # then 2 ms tasks: 500 tasks/s per actor with 2 chunks in flight
        sizer.record(sizer.size(), sizer.size() * 0.002 * 2)
    assert sizer.size() == round(500 * CHUNK_TARGET_S)
    for _ in range(8):  # fast tasks: capped
        sizer.record(sizer.size(), sizer.size() * 0.00001)
    assert sizer.size() == 500
    for _ in range(24):  # very slow tasks: never below the floor
        sizer.record(sizer.size(), sizer.size() * 10.0)
    assert sizer.size() == 20


async def test_the_dispatcher_sizes_chunks_from_their_answers() -> None:
    log: list[tuple[str, int]] = []
    actors = [FakeActor("a", lambda tasks: [OK] * len(tasks), log)]
    sizer = ChunkSizer(5, 50, per_actor=1)
    got = await collect(_Dispatch(FAKE_RAY, actors, per_actor=1, spec=JOB, sizer=sizer), chunks(2, 5))
    assert len(got) == 10
    assert sizer.rate > 0  # each answer was measured


# -- planning, environment, validation, settings ---------------------------------------------


def test_actor_plan_follows_the_nodes_and_function_resources() -> None:
    nodes = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]
    assert plan_actors(0, {}, nodes) == ActorPlan(8, 1.0, 0.0)
    assert plan_actors(0, {"CPU": 2}, nodes) == ActorPlan(4, 2.0, 0.0)
    assert plan_actors(0, {"CPU": 1, "GPU": 0.5}, nodes) == ActorPlan(4, 1.0, 0.5)
    assert plan_actors(0, {"CPU": 0, "GPU": 0}, nodes) == ActorPlan(8, 0.0, 0.0)
    assert plan_actors(3, {"GPU": 1}, nodes) == ActorPlan(3, 1.0, 1.0)
    with pytest.raises(ConfigError, match=r"LambdaInvoke\.FunctionResources"):
        plan_actors(0, {"GPU": 1}, [{"CPU": 8.0}])
    with pytest.raises(ConfigError, match="no node"):  # 8 CPUs in all, but 4 per node
        plan_actors(2, {"CPU": 6}, nodes)


def test_only_the_store_facing_environment_reaches_the_actors() -> None:
    env = {
        "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": "http://127.0.0.1:1", "HTTPS_PROXY": "p",
        "PYTHONPATH": "/h", "HOME": "/home/me", "S3BATCH_HOME": "/x", "PGPASSWORD": "pg", "PATH": "/bin",
    }  # fmt: skip
    shared = {"AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "HTTPS_PROXY", "PYTHONPATH"}
    assert set(forwarded_environment(env, private=False)) == shared
    assert set(forwarded_environment(env, private=True)) == shared | {"HOME"}


def test_quiet_environment_and_loopback_addresses(tmp_path: Path) -> None:
    env = quiet_environment(tmp_path, "t0ken")
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0" and env["RAY_USAGE_STATS_ENABLED"] == "0"
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"] == "t0ken"
    assert (Path(env["HOME"]) / "ray_bootstrap_config.yaml").read_text().strip() == "{}"
    addresses = ("127.0.0.1:6379", "localhost:1", "[::1]:2", "10.0.0.5:6379", "auto")
    assert [is_loopback(a) for a in addresses] == [True, True, True, False, False]


INVOKE = {"FunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:f"}


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"TPU": 1}, "FunctionResources.TPU"),
        ({"GPU": -1}, "FunctionResources.GPU"),
        ({"CPU": True}, "FunctionResources.CPU"),
        ({"GPU": 1.5}, "FunctionResources.GPU"),
        ({"CPU": "1"}, "FunctionResources.CPU"),
        ({}, "FunctionResources"),
        ([1], "FunctionResources"),
    ],
)
def test_bad_function_resources_are_refused_naming_the_field(resources: Any, field: str) -> None:
    with pytest.raises(BadRequest, match=rf"LambdaInvoke\.{field}"):
        get_kind("LambdaInvoke").validate({**INVOKE, "FunctionResources": resources})


def test_good_function_resources_are_accepted() -> None:
    from s3batch.operations.invoke import function_resources

    params = {**INVOKE, "FunctionResources": {"CPU": 2, "GPU": 0.5}}
    get_kind("LambdaInvoke").validate(params)
    assert function_resources(params) == {"CPU": 2.0, "GPU": 0.5}


def test_ray_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3BATCH_ENGINE", "ray")
    monkeypatch.setenv("S3BATCH_RAY_ADDRESS", "10.0.0.5:6379")
    monkeypatch.setenv("S3BATCH_RAY_ACTORS", "12")
    settings = Settings.from_env()
    assert (settings.engine, settings.ray_address, settings.ray_actors) == ("ray", "10.0.0.5:6379", 12)
    assert settings.to_env()["S3BATCH_RAY_ADDRESS"] == "10.0.0.5:6379"
    monkeypatch.delenv("S3BATCH_RAY_ADDRESS")
    monkeypatch.delenv("S3BATCH_RAY_ACTORS")
    assert (Settings.from_env().ray_address, Settings.from_env().ray_actors) == (None, 0)
    monkeypatch.setenv("S3BATCH_RAY_ACTORS", "0")
    with pytest.raises(ConfigError, match="S3BATCH_RAY_ACTORS"):
        Settings.from_env()


def test_without_ray_s3batch_imports_and_the_engine_says_what_to_install(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['ray'] = None\n"  # as if Ray were not installed
        "import s3batch, s3batch.engines.ray, s3batch.cli\n"
        "from s3batch.engines import make_engine\n"
        "from s3batch.errors import ConfigError\n"
        "from s3batch.settings import Settings\n"
        f"settings = Settings(home=__import__('pathlib').Path({str(tmp_path)!r}), engine='ray')\n"
        "try:\n    make_engine(settings)\nexcept ConfigError as exc:\n    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "S3BATCH_ENGINE=ray needs Ray" in out.stdout
    assert "s3batch[ray]" in out.stdout


# -- the driver's pool of idle actors -----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_run_takes_the_idle_actors_of_its_key_and_releases_the_others() -> None:
    clock, killed = Clock(), []
    pool = IdlePool[PoolKey, str](idle_s=60.0, clock=clock)
    same = pool_key("session", 1.0, 0.0, {"AWS_ACCESS_KEY_ID": "a"})
    gpu = pool_key("session", 1.0, 1.0, {"AWS_ACCESS_KEY_ID": "a"})
    pool.give_back(same, ["a1", "a2", "a3"], killed.append)
    pool.give_back(gpu, ["g1"], killed.append)
    assert pool.take(same, 2, killed.append) == ["a1", "a2"]
    assert killed == ["g1"]  # another shape would compete with the run for the cluster's CPUs
    assert pool.take(same, 5, killed.append) == ["a3"]
    assert pool.idle() == 0


def test_actors_never_serve_another_environment() -> None:
    pool = IdlePool[PoolKey, str](idle_s=60.0, clock=Clock())
    mine = pool_key("session", 1.0, 0.0, {"AWS_SECRET_ACCESS_KEY": "one"})
    theirs = pool_key("session", 1.0, 0.0, {"AWS_SECRET_ACCESS_KEY": "two"})
    other_session = pool_key("later", 1.0, 0.0, {"AWS_SECRET_ACCESS_KEY": "one"})
    pool.give_back(mine, ["a1"], lambda _: None)
    assert pool.take(theirs, 1, lambda _: None) == []
    pool.give_back(mine, ["a1"], lambda _: None)
    assert pool.take(other_session, 1, lambda _: None) == []
    assert "one" not in repr(mine)  # the key holds a digest, not the secret


def test_idle_actors_are_released_after_the_idle_time() -> None:
    clock, killed = Clock(), []
    pool = IdlePool[PoolKey, str](idle_s=60.0, clock=clock)
    key = pool_key("session", 1.0, 0.0, {})
    pool.give_back(key, ["old"], killed.append)
    clock.now += 30
    pool.give_back(key, ["new"], killed.append)
    clock.now += 30
    assert pool.expire(killed.append) == 1
    assert killed == ["old"]
    assert pool.take(key, 2, killed.append) == ["new"]


def test_the_release_timer_fires_on_its_own() -> None:
    released = threading.Event()
    pool = IdlePool[PoolKey, str](idle_s=0.05)
    pool.give_back(pool_key("session", 1.0, 0.0, {}), ["a1"], lambda _: released.set())
    assert released.wait(5.0)
    assert pool.idle() == 0
