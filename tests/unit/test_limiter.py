"""AdaptiveLimit: the AIMD rule on deterministic sequences, and the async gate's bound."""

from __future__ import annotations

import asyncio

import pytest

from s3batch.domain.task import TaskResult
from s3batch.engines.limiter import MAX_SAMPLES, MIN_LIMIT, AdaptiveLimit, is_throttle

OK = TaskResult.ok()
SLOWDOWN = TaskResult.fail("SlowDown", "Please reduce your request rate.", 503, True)
RESET = TaskResult.fail("ConnectionError", "Connection reset by peer", None, True)
TOO_MANY = TaskResult.fail("TooManyRequests", "slow", 429, True)
INTERNAL = TaskResult.fail("InternalError", "oops", 500, True)
NO_KEY = TaskResult.fail("NoSuchKey", "gone", 404)
TEMPORARY = TaskResult.fail("TemporaryFailure", "handler asked for a retry", 200, True)
TIMEOUT_400 = TaskResult.fail("RequestTimeout", "idle", 400, True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0  # each reading is one second later: every sample is kept
        return self.now


@pytest.mark.parametrize("result", [SLOWDOWN, RESET, TOO_MANY, INTERNAL, TIMEOUT_400])
def test_throttling_and_server_trouble_count_as_throttles(result: TaskResult) -> None:
    assert is_throttle(result)


@pytest.mark.parametrize("result", [OK, NO_KEY, TEMPORARY, TaskResult.fail("SlowDown", "x", 503)])
def test_other_results_do_not(result: TaskResult) -> None:
    # The last one: a SlowDown that is not retryable was already given up on by the store.
    assert not is_throttle(result)


def test_halves_on_each_throttle_down_to_the_floor() -> None:
    limit = AdaptiveLimit(64)
    seen = []
    for _ in range(8):
        limit.record(SLOWDOWN)
        seen.append(limit.limit)
    assert seen == [32, 16, 8, 8, 8, 8, 8, 8]  # floor: an eighth of the maximum
    assert limit.limit == limit.minimum == 8
    assert limit.stats.throttles == 8
    assert limit.stats.decreases == 3
    small = AdaptiveLimit(4)
    for _ in range(4):
        small.record(SLOWDOWN)
    assert small.limit == MIN_LIMIT


def test_grows_by_one_per_n_consecutive_successes_up_to_the_maximum() -> None:
    limit = AdaptiveLimit(4, increase_after=3)
    limit.record(SLOWDOWN)
    assert limit.limit == 2
    for _ in range(5):
        limit.record(OK)
    assert limit.limit == 3  # 5 successes: one increase, 2 toward the next
    limit.record(NO_KEY)  # a plain failure neither grows nor resets the streak
    limit.record(OK)
    assert limit.limit == 4
    for _ in range(30):
        limit.record(OK)
    assert limit.limit == 4
    assert limit.stats.increases == 2


def test_a_throttle_resets_the_success_streak() -> None:
    limit = AdaptiveLimit(8, increase_after=3)
    limit.record(SLOWDOWN)  # 4
    limit.record(OK)
    limit.record(OK)
    limit.record(SLOWDOWN)  # 2, streak gone
    limit.record(OK)
    limit.record(OK)
    assert limit.limit == 2
    limit.record(OK)
    assert limit.limit == 3


def test_one_decrease_per_window_for_requests_in_flight_together() -> None:
    limit = AdaptiveLimit(16)
    slots = [limit.open() for _ in range(10)]
    for slot in slots:  # all ten were sent at the old rate and all come back throttled
        limit.close(slot, SLOWDOWN)
    assert limit.limit == 8
    assert limit.stats.throttles == 10
    again = limit.open()  # sent after the cut: its throttle counts
    limit.close(again, SLOWDOWN)
    assert limit.limit == 4
    assert limit.in_flight == 0


def test_samples_record_limit_and_in_flight_over_time() -> None:
    limit = AdaptiveLimit(4, clock=FakeClock())
    a, b = limit.open(), limit.open()
    limit.close(a, SLOWDOWN)
    limit.close(b, OK)
    pairs = [(s.limit, s.in_flight) for s in limit.stats.samples]
    assert pairs[0] == (4, 0)
    assert (2, 1) in pairs  # the cut, with b still in flight
    assert pairs[-1] == (2, 0)
    times = [s.t for s in limit.stats.samples]
    assert times == sorted(times)
    assert limit.stats.max_in_flight == 2
    assert limit.stats.min_limit == 2


def test_samples_stay_bounded() -> None:
    limit = AdaptiveLimit(2, clock=FakeClock())
    for _ in range(MAX_SAMPLES * 3):
        limit.close(limit.open(), OK)
    assert len(limit.stats.samples) <= MAX_SAMPLES


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        AdaptiveLimit(0)
    with pytest.raises(ValueError, match="increase_after"):
        AdaptiveLimit(4, increase_after=0)


async def test_gate_never_exceeds_the_current_limit() -> None:
    limit = AdaptiveLimit(8, increase_after=1000)
    peak = 0

    async def request(i: int) -> None:
        nonlocal peak
        async with limit.slot() as report:
            peak = max(peak, limit.in_flight)
            await asyncio.sleep(0.001)
            report(SLOWDOWN if i < 3 else OK)

    await asyncio.wait_for(asyncio.gather(*(request(i) for i in range(100))), timeout=10)
    assert peak == 8  # the first wave fills the initial limit
    assert limit.limit < 8  # the throttles cut it
    assert limit.in_flight == 0


async def test_gate_admits_at_most_the_cut_limit_after_a_decrease() -> None:
    limit = AdaptiveLimit(4, increase_after=1000)
    limit.record(SLOWDOWN)
    limit.record(SLOWDOWN)  # 1
    active = 0
    peak = 0

    async def request() -> None:
        nonlocal active, peak
        async with limit.slot() as report:
            active += 1
            peak = max(peak, active)
            await asyncio.sleep(0.001)
            active -= 1
            report(OK)

    await asyncio.wait_for(asyncio.gather(*(request() for _ in range(20))), timeout=10)
    assert peak == 1


async def test_a_cancelled_request_frees_its_slot_without_changing_the_limit() -> None:
    limit = AdaptiveLimit(1)
    started = asyncio.Event()

    async def hang() -> None:
        async with limit.slot():
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(hang())
    await asyncio.wait_for(started.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (limit.in_flight, limit.limit, limit.stats.throttles) == (0, 1, 0)
    async with asyncio.timeout(5), limit.slot() as report:  # the slot is usable again
        report(OK)
