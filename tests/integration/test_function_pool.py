"""FunctionPool with real worker processes: results, errors, crashes, timeouts, concurrency."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

import pytest

import s3batch.functions.pool as pool_module
from s3batch.domain.function import FunctionSpec
from s3batch.functions.pool import CLOSE_GRACE_S, FunctionPool, InvokeOutcome
from s3batch.idle import IdlePool

pytestmark = pytest.mark.integration

HANDLERS = str(Path(__file__).parent.parent / "fixtures" / "handlers")
ARN = "arn:aws:lambda:us-east-1:123456789012:function:pool-test"
#: Upper bound for anything that should be quick (process start included), in seconds.
QUICK_S = 15.0
#: How often bounded waits look again, in seconds.
POLL_S = 0.02
#: Idle time of the kept workers in the tests that keep them, in seconds.
KEEP_TEST_IDLE_S = 1.0

PoolFactory = Callable[..., FunctionPool]
#: Handler module whose dispatch signals when a call reaches the handler (see entered()).
ENTERED_MODULE = "pool_entered_handlers"


def spec(handler: str = "dispatch", timeout_s: float = 10.0, module: str = "pool_handlers") -> FunctionSpec:
    return FunctionSpec(
        arn=ARN, name="pool-test", handler=f"{module}:{handler}", sys_path=(HANDLERS,), timeout_s=timeout_s
    )


@pytest.fixture
async def make_pool() -> AsyncIterator[PoolFactory]:
    """Pools made by a test, all closed after it."""
    pools: list[FunctionPool] = []

    def make(
        handler: str = "dispatch",
        *,
        workers: int = 1,
        timeout_s: float = 10.0,
        keep: str | None = None,
        **kwargs: Any,
    ) -> FunctionPool:
        pool = FunctionPool(
            spec(handler, timeout_s, **kwargs), workers=workers, env={"POOL_TEST_VALUE": "v"}, keep=keep
        )
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await asyncio.wait_for(pool.close(), QUICK_S)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def wait_gone(pid: int, within_s: float = QUICK_S) -> bool:
    """True once `pid` no longer exists (reaped), False if it is still there after within_s."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await asyncio.sleep(POLL_S)
    return False


async def entered(marker: Path, within_s: float = QUICK_S) -> int:
    """Wait until a call's handler has started (pool_entered_handlers writes its pid to
    `marker`); returns that pid. Bounded: a worker that never gets there fails the test."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if marker.exists():
            return int(marker.read_text())
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"no handler started the call within {within_s} s")


async def call(pool: FunctionPool, do: str, **event: Any) -> InvokeOutcome:
    return await asyncio.wait_for(pool.invoke({"do": do, **event}), QUICK_S + pool.spec.timeout_s)


# -- success -----------------------------------------------------------------------------


async def test_handler_result_event_and_lambda_context(make_pool: PoolFactory) -> None:
    pool = make_pool()
    outcome = await call(pool, "echo", payload=[1, "ü", None])
    assert not outcome.failed
    body = outcome.payload
    assert body["event"] == {"do": "echo", "payload": [1, "ü", None]}
    context = body["context"]
    assert context["function_name"] == "pool-test"
    assert context["function_version"] == "$LATEST"
    assert context["invoked_function_arn"] == ARN
    assert context["memory_limit_in_mb"] == "1024"
    assert context["aws_request_id"] == outcome.request_id
    assert context["log_group_name"] == "/aws/lambda/pool-test"
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", context["log_stream_name"])
    assert context["identity"] is None and context["client_context"] is None
    assert 0 < context["remaining_ms"] <= 10_000
    assert body["env"] == {
        "AWS_LAMBDA_FUNCTION_NAME": "pool-test",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/pool-test",
        "LAMBDA_TASK_ROOT": HANDLERS,
        "POOL_TEST_VALUE": "v",
    }
    assert body["sys_path_head"] == HANDLERS
    assert body["pid"] != os.getpid()


async def test_worker_stays_warm_between_calls(make_pool: PoolFactory) -> None:
    pool = make_pool()
    first = (await call(pool, "echo")).payload
    second = (await call(pool, "echo")).payload
    assert second["pid"] == first["pid"]
    assert second["loaded_at"] == first["loaded_at"]  # imported once
    assert (first["calls"], second["calls"]) == (1, 2)
    assert first["context"]["aws_request_id"] != second["context"]["aws_request_id"]
    assert first["context"]["log_stream_name"] == second["context"]["log_stream_name"]


async def test_remaining_time_counts_down_from_the_timeout(make_pool: PoolFactory) -> None:
    pool = make_pool(timeout_s=5.0)
    body = (await call(pool, "remaining_after_sleep", sleep_s=0.3)).payload
    assert 4_500 < body["before"] <= 5_000
    assert body["before"] - body["after"] >= 250


async def test_return_values_round_trip_as_json(make_pool: PoolFactory) -> None:
    pool = make_pool()
    none = await call(pool, "returns_none")
    assert not none.failed and none.payload is None
    assert (await call(pool, "returns_decimal")).payload == {"n": 1.5}
    big = await call(pool, "big_result", size=3 * 1024 * 1024)  # far past a pipe buffer
    assert big.payload == {"data": "x" * (3 * 1024 * 1024)}


# -- function errors ---------------------------------------------------------------------


async def test_exception_gives_aws_error_payload_and_the_worker_survives(make_pool: PoolFactory) -> None:
    pool = make_pool()
    pid = (await call(pool, "echo")).payload["pid"]
    outcome = await call(pool, "raises", key="k1")
    assert outcome.failed
    error = outcome.error
    assert error is not None
    assert error["errorMessage"] == "cannot handle k1"
    assert error["errorType"] == "HandlerFailed"
    assert error["requestId"] == outcome.request_id
    trace = "".join(error["stackTrace"])
    assert "pool_handlers.py" in trace and "in raises" in trace
    assert "s3batch/functions/pool.py" not in trace  # runtime frames are not the user's
    assert (await call(pool, "echo")).payload["pid"] == pid


async def test_non_json_return_is_a_marshal_error(make_pool: PoolFactory) -> None:
    pool = make_pool()
    outcome = await call(pool, "returns_a_set")
    assert outcome.error is not None
    assert outcome.error["errorType"] == "Runtime.MarshalError"
    assert (
        outcome.error["errorMessage"]
        == "Unable to marshal response: Object of type set is not JSON serializable"
    )
    assert not (await call(pool, "echo")).failed


async def test_timeout_kills_the_worker_and_a_fresh_one_takes_over(make_pool: PoolFactory) -> None:
    pool = make_pool(timeout_s=1.0)
    pid = (await call(pool, "echo")).payload["pid"]
    started = time.monotonic()
    outcome = await call(pool, "hangs", sleep_s=60)
    elapsed = time.monotonic() - started
    assert outcome.error is not None
    pattern = (
        rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z {outcome.request_id} Task timed out after 1\.00 seconds"
    )
    assert re.fullmatch(pattern, outcome.error["errorMessage"])
    assert list(outcome.error) == ["errorMessage"]
    assert 1.0 <= elapsed < 1.0 + QUICK_S
    assert await wait_gone(pid)
    fresh = (await call(pool, "echo")).payload
    assert fresh["pid"] != pid and fresh["calls"] == 1


@pytest.mark.parametrize(
    ("do", "code", "detail"),
    [
        ("exits", 3, "exit status 3"),
        ("sys_exit", 4, "exit status 4"),
        ("kills_itself", None, "signal: killed"),
        ("segfaults", None, "signal: segmentation fault"),
    ],
)
async def test_worker_dying_mid_call_is_an_exit_error_and_is_replaced(
    make_pool: PoolFactory, do: str, code: int | None, detail: str
) -> None:
    pool = make_pool()
    pid = (await call(pool, "echo")).payload["pid"]
    outcome = await call(pool, do, code=code)
    assert outcome.error == {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {outcome.request_id} Error: Runtime exited with error: {detail}",
    }
    assert await wait_gone(pid)
    assert (await call(pool, "echo")).payload["pid"] != pid


async def test_worker_killed_from_outside_mid_call(make_pool: PoolFactory, tmp_path: Path) -> None:
    pool = make_pool(module=ENTERED_MODULE)
    pid = (await call(pool, "echo")).payload["pid"]
    marker = tmp_path / "entered"
    running = asyncio.create_task(call(pool, "hangs", sleep_s=30, entered_file=str(marker)))
    assert await entered(marker) == pid  # the call is in the handler
    os.kill(pid, signal.SIGKILL)
    outcome = await running
    assert outcome.error is not None
    assert outcome.error["errorMessage"].endswith("Runtime exited with error: signal: killed")
    assert not (await call(pool, "echo")).failed


async def test_workers_ignore_sigint(make_pool: PoolFactory, tmp_path: Path) -> None:
    pool = make_pool(module=ENTERED_MODULE)
    pid = (await call(pool, "echo")).payload["pid"]
    marker = tmp_path / "entered"
    running = asyncio.create_task(call(pool, "hangs", sleep_s=0.8, entered_file=str(marker)))
    assert await entered(marker) == pid
    os.kill(pid, signal.SIGINT)  # what a Ctrl-C in the terminal sends the whole group
    outcome = await running
    assert not outcome.failed and outcome.payload == {"pid": pid}


@pytest.mark.parametrize(
    ("handler", "module", "error_type", "message"),
    [
        (
            "handler",
            "broken_import",
            "Runtime.ImportModuleError",
            "Unable to import module 'broken_import': No module named 'module_that_does_not_exist'",
        ),
        ("handler", "raises_on_import", "KeyError", "'SETTING_THAT_IS_NOT_SET'"),
        ("no_such_handler", "pool_handlers", "Runtime.HandlerNotFound", "Handler 'no_such_handler' missing"),
        ("NOT_CALLABLE", "pool_handlers", "Runtime.HandlerNotFound", "Handler 'NOT_CALLABLE' missing"),
    ],
)
async def test_handler_that_cannot_be_loaded_fails_every_call(
    make_pool: PoolFactory, handler: str, module: str, error_type: str, message: str
) -> None:
    pool = make_pool(handler, module=module)
    for _ in range(2):  # the worker stays up and answers each call the same way
        outcome = await call(pool, "echo")
        assert outcome.error is not None
        assert outcome.error["errorType"] == error_type
        assert outcome.error["errorMessage"].startswith(message)
        assert outcome.error["requestId"] == outcome.request_id
    assert len(pool.pids) == 1


async def test_worker_dying_while_loading_the_handler_is_an_exit_error(make_pool: PoolFactory) -> None:
    pool = make_pool("handler", module="exits_on_import")
    for _ in range(2):  # each call tries a fresh worker, as Lambda retries a failed init
        outcome = await call(pool, "echo")
        detail = "Runtime exited with error: exit status 5"
        assert outcome.error == {
            "errorType": "Runtime.ExitError",
            "errorMessage": f"RequestId: {outcome.request_id} Error: {detail}",
        }
    assert pool.pids == []


async def test_handler_with_a_syntax_error(tmp_path: Path) -> None:
    # Written here, not in fixtures/, so that linters never see the broken file.
    (tmp_path / "bad_syntax.py").write_text("def handler(event, context:\n    return 1\n")
    broken = FunctionSpec(arn=ARN, name="broken", handler="bad_syntax:handler", sys_path=(str(tmp_path),))
    pool = FunctionPool(broken, workers=1)
    try:
        outcome = await asyncio.wait_for(pool.invoke({}), QUICK_S)
    finally:
        await pool.close()
    assert outcome.error is not None
    assert outcome.error["errorType"] == "Runtime.UserCodeSyntaxError"
    assert outcome.error["errorMessage"].startswith("Syntax error in module 'bad_syntax': ")


# -- concurrency, cancellation, shutdown -------------------------------------------------


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("workers", [1, 3])
async def test_concurrency_is_the_worker_count(make_pool: PoolFactory, workers: int) -> None:
    pool = make_pool(workers=workers)
    # Warm up first (each of these concurrent calls holds a slot, so each starts a worker):
    # the measured calls then start together however slow spawning is on this machine.
    await asyncio.gather(*(call(pool, "echo") for _ in range(workers)))
    assert len(pool.pids) == workers
    calls = [call(pool, "sleep_then_echo", sleep_s=0.5) for _ in range(workers * 2)]
    bodies = [o.payload for o in await asyncio.gather(*calls)]
    assert max_overlap([(b["started"], b["ended"]) for b in bodies]) == workers
    assert len({b["pid"] for b in bodies}) == workers
    assert len(pool.pids) == workers


async def test_many_queued_calls_each_get_their_own_answer(make_pool: PoolFactory) -> None:
    pool = make_pool(workers=2)
    calls = [asyncio.create_task(call(pool, "echo", n=n)) for n in range(60)]
    await asyncio.sleep(0)
    calls[7].cancel()  # a queued call given up: skipped, the others unaffected
    done = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(done[7], asyncio.CancelledError)
    answers = [o for i, o in enumerate(done) if i != 7]
    assert all(isinstance(o, InvokeOutcome) and not o.failed for o in answers)
    assert [o.payload["event"]["n"] for o in answers] == [n for n in range(60) if n != 7]
    assert [o.payload["context"]["aws_request_id"] for o in answers] == [o.request_id for o in answers]
    assert len({o.payload["pid"] for o in answers}) <= 2


async def test_event_loop_keeps_running_during_calls(make_pool: PoolFactory) -> None:
    pool = make_pool()
    await call(pool, "echo")  # started: the rest measures the call, not the spawn
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        for _ in range(1000):  # bounded; cancelled once the call returns
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(ticker())
    await call(pool, "sleep_then_echo", sleep_s=1.0)
    ticking.cancel()
    assert ticks >= 50  # ~100 if never blocked


async def test_cancelled_call_does_not_wedge_or_leak_a_worker(make_pool: PoolFactory, tmp_path: Path) -> None:
    pool = make_pool(workers=1, module=ENTERED_MODULE)
    marker = tmp_path / "entered"
    running = asyncio.create_task(call(pool, "hangs", sleep_s=60, entered_file=str(marker)))
    pid = await entered(marker)  # cancelled mid-call, not while the worker starts
    assert pool.pids == [pid]
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert await wait_gone(pid)
    outcome = await call(pool, "echo")  # the only slot is free again
    assert not outcome.failed and outcome.payload["pid"] != pid


async def test_call_cancelled_while_waiting_for_a_slot(make_pool: PoolFactory, tmp_path: Path) -> None:
    pool = make_pool(workers=1, module=ENTERED_MODULE)
    marker = tmp_path / "entered"
    busy = asyncio.create_task(call(pool, "sleep_then_echo", sleep_s=1.0, entered_file=str(marker)))
    pid = await entered(marker)  # the only slot is taken by a call in its handler
    waiting = asyncio.create_task(call(pool, "echo"))
    await asyncio.sleep(0.1)  # the new call queues for the slot (no worker involved)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (await busy).payload["pid"] == pid  # the busy worker was not touched
    assert (await call(pool, "echo")).payload["pid"] == pid


async def test_close_stops_every_worker_and_leaves_no_children(make_pool: PoolFactory) -> None:
    pool = make_pool(workers=3)
    await asyncio.gather(*(call(pool, "sleep_then_echo", sleep_s=0.3) for _ in range(3)))
    pids = pool.pids
    assert len(pids) == 3
    started = time.monotonic()
    await pool.close()
    assert time.monotonic() - started < CLOSE_GRACE_S + QUICK_S
    assert [pid for pid in pids if alive(pid)] == []
    assert {p.pid for p in multiprocessing.active_children()} & set(pids) == set()
    assert pool.pids == []
    with pytest.raises(RuntimeError, match="closed"):
        await pool.invoke({"do": "echo"})


async def test_close_kills_a_busy_worker_and_its_call_ends(make_pool: PoolFactory, tmp_path: Path) -> None:
    pool = make_pool(workers=1, timeout_s=60.0, module=ENTERED_MODULE)
    marker = tmp_path / "entered"
    running = asyncio.create_task(call(pool, "hangs", sleep_s=60, entered_file=str(marker)))
    pid = await entered(marker)  # busy in the handler, not still starting
    started = time.monotonic()
    await pool.close()
    assert time.monotonic() - started < QUICK_S
    outcome = await asyncio.wait_for(running, QUICK_S)
    assert outcome.error is not None and outcome.error["errorType"] == "Runtime.ExitError"
    assert not alive(pid)


async def test_close_while_a_worker_is_starting(make_pool: PoolFactory) -> None:
    pool = make_pool(workers=1)
    starting = asyncio.create_task(pool.invoke({"do": "echo"}))
    await asyncio.sleep(0.05)  # spawn under way, handler most likely not loaded yet
    await asyncio.wait_for(pool.close(), QUICK_S)
    [result] = await asyncio.wait_for(asyncio.gather(starting, return_exceptions=True), QUICK_S)
    # Cut short while starting ("closed") or, on a fast machine, killed in its first call.
    assert isinstance(result, RuntimeError) or (isinstance(result, InvokeOutcome) and result.failed)
    assert pool.pids == []
    assert [p for p in multiprocessing.active_children() if p.name == "s3batch-function-pool-test"] == []


async def test_an_event_that_does_not_pickle_fails_its_call_only(make_pool: PoolFactory) -> None:
    pool = make_pool(workers=1)
    pid = (await call(pool, "echo")).payload["pid"]
    with pytest.raises(TypeError):
        await call(pool, "echo", lock=threading.Lock())
    again = await call(pool, "echo")
    assert not again.failed and again.payload["pid"] == pid  # nothing reached the worker


async def test_close_of_a_worker_whose_forked_child_holds_its_pipe_is_quick(
    make_pool: PoolFactory,
) -> None:
    pool = make_pool(workers=1, timeout_s=30.0)
    running = asyncio.create_task(call(pool, "forks_then_hangs", sleep_s=60, child_s=20))
    await asyncio.sleep(1.0)  # in the handler, its child forked
    started = time.monotonic()
    await pool.close()
    assert time.monotonic() - started < QUICK_S / 2
    outcome = await asyncio.wait_for(running, QUICK_S)
    assert outcome.error is not None and outcome.error["errorType"] == "Runtime.ExitError"


async def test_a_cancelled_close_leaves_no_error_in_the_serving_threads(
    make_pool: PoolFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    pool = make_pool(workers=2)
    await asyncio.gather(*(call(pool, "echo") for _ in range(2)))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pool.close(), 0.001)  # idle workers take longer to stop
    deadline = time.monotonic() + QUICK_S
    while pool.pids and time.monotonic() < deadline:
        await asyncio.sleep(POLL_S)
    assert pool.pids == [] and failures == []


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        FunctionPool(spec(), workers=0)


# -- workers kept warm between pools ---------------------------------------------------------


@pytest.fixture
def kept(monkeypatch: pytest.MonkeyPatch) -> Iterator[IdlePool[Hashable, Any]]:
    """A fresh KEPT for the test (idle time short enough to watch it expire), emptied after."""
    fresh: IdlePool[Hashable, Any] = IdlePool(KEEP_TEST_IDLE_S)
    monkeypatch.setattr(pool_module, "KEPT", fresh)
    yield fresh
    fresh.clear(lambda worker: worker.process.kill())


async def test_a_kept_worker_serves_the_next_pool_of_its_key_only(
    make_pool: PoolFactory, kept: IdlePool[Hashable, Any]
) -> None:
    first = make_pool(keep="key-a")
    pid = (await call(first, "echo")).payload["pid"]
    await first.close()
    assert alive(pid) and kept.idle() == 1  # warm, owned by no pool
    second = make_pool(keep="key-a")
    assert (await call(second, "echo")).payload["pid"] == pid  # no new process
    assert second.pids == [pid]
    await second.close()
    other = make_pool(keep="key-b")  # another function or environment: never that worker
    assert (await call(other, "echo")).payload["pid"] != pid
    assert await wait_gone(pid)  # released: it would compete with the new key's workers
    await other.close()


async def test_a_pool_without_a_key_stops_its_workers_and_takes_no_kept_one(
    make_pool: PoolFactory, kept: IdlePool[Hashable, Any]
) -> None:
    keeping = make_pool(keep="key-a")
    kept_pid = (await call(keeping, "echo")).payload["pid"]
    await keeping.close()
    plain = make_pool()
    pid = (await call(plain, "echo")).payload["pid"]
    assert pid != kept_pid
    await plain.close()
    assert await wait_gone(pid)
    assert kept.idle() == 1 and alive(kept_pid)


async def test_kept_workers_are_stopped_after_the_idle_time(
    make_pool: PoolFactory, kept: IdlePool[Hashable, Any]
) -> None:
    pool = make_pool(keep="key-a")
    pid = (await call(pool, "echo")).payload["pid"]
    await pool.close()
    assert await wait_gone(pid, KEEP_TEST_IDLE_S + QUICK_S)
    assert kept.idle() == 0


async def test_a_kept_worker_that_died_is_replaced(
    make_pool: PoolFactory, kept: IdlePool[Hashable, Any]
) -> None:
    pool = make_pool(keep="key-a")
    pid = (await call(pool, "echo")).payload["pid"]
    await pool.close()
    os.kill(pid, signal.SIGKILL)
    assert await wait_gone(pid)
    again = make_pool(keep="key-a")
    assert (await call(again, "echo")).payload["pid"] not in (pid, None)
