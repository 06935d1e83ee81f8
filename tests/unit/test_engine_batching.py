"""Batches form from what is ready (engines/batching.py): full when the stream is fast, partial
when it stalls or ends, never holding tasks back; per-instance batch sizes reach the engine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest

import s3batch.engines.batching as batching
import s3batch.engines.local as local_engine
from s3batch.domain.roles import Role
from s3batch.domain.task import Task, TaskResult
from s3batch.engines.batching import cut, ready_batches
from s3batch.engines.local import LocalEngine
from s3batch.operations.actions import Permissions, no_extra_needs
from s3batch.operations.base import JobContext, Operation
from s3batch.operations.guard import RoleCheck, guarded
from s3batch.retry import RetryPolicy
from s3batch.storage.config import LocalConfig
from s3batch.storage.memory import MemoryStore

#: Bound on every wait in these tests, in seconds (a stalled stream sleeps far longer).
BOUND_S = 5.0
STALL_S = 60.0


def task(i: int) -> Task:
    return Task(seq=i, bucket="b", raw_key=f"k{i}", key=f"k{i}")


async def stream(n: int, *, stall_after: int | None = None, every_s: float = 0.0) -> AsyncIterator[Task]:
    for i in range(n):
        if i == stall_after:
            await asyncio.sleep(STALL_S)
        if every_s:
            await asyncio.sleep(every_s)
        yield task(i)


async def test_a_fast_stream_gives_full_batches_then_the_rest() -> None:
    got = [[t.seq for t in b] async for b in ready_batches(stream(25), 10)]
    assert got == [list(range(10)), list(range(10, 20)), list(range(20, 25))]


async def test_a_size_that_changes_is_read_at_each_batch() -> None:
    sizes = iter([5, 2, 4, 4])
    wanted = [3]

    def size() -> int:
        return wanted[0]

    got = []
    async for batch in ready_batches(stream(12), size):
        got.append([t.seq for t in batch])
        wanted[0] = next(sizes)
    # Each batch is the size wanted when it was taken (the tasks read ahead for a larger size
    # wait for the next), the last is what was left; nothing lost or reordered.
    assert [len(b) for b in got] == [3, 5, 2, 2]
    assert [seq for b in got for seq in b] == list(range(12))


async def test_a_stalled_stream_hands_on_its_partial_batch() -> None:
    batches = ready_batches(stream(10, stall_after=3), 100)
    started = time.monotonic()
    first = await asyncio.wait_for(anext(batches), BOUND_S)
    waited = time.monotonic() - started
    assert [t.seq for t in first] == [0, 1, 2]
    assert batching.BATCH_GAP_S <= waited < BOUND_S
    await batches.aclose()


async def test_a_trickle_is_handed_on_after_the_longest_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tasks keep coming faster than the gap, so only the first task's age sends the batch.
    monkeypatch.setattr(batching, "BATCH_GAP_S", 0.5)
    monkeypatch.setattr(batching, "BATCH_MAX_WAIT_S", 0.1)
    batches = ready_batches(stream(500, every_s=0.01), 1000)
    first = await asyncio.wait_for(anext(batches), BOUND_S)
    assert 1 <= len(first) < 500
    await batches.aclose()


async def test_unbatched_streams_pass_through_without_a_reader_task() -> None:
    before = len(asyncio.all_tasks())
    batches = ready_batches(stream(3), 1)
    assert [t.seq for t in await anext(batches)] == [0]
    assert len(asyncio.all_tasks()) == before
    assert [[t.seq for t in b] async for b in batches] == [[1], [2]]


async def test_a_stream_error_comes_after_the_tasks_read_before_it() -> None:
    async def failing() -> AsyncIterator[Task]:
        yield task(0)
        yield task(1)
        raise OSError("manifest read failed")

    batches = ready_batches(failing(), 10)
    assert [t.seq for t in await anext(batches)] == [0, 1]
    with pytest.raises(OSError, match="manifest read failed"):
        await anext(batches)


async def test_closing_early_stops_the_reader_and_closes_the_stream() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[Task]:
        try:
            for i in range(10**9):
                yield task(i)
        finally:
            closed.set()

    before = len(asyncio.all_tasks())
    batches = ready_batches(endless(), 10)
    assert len(await anext(batches)) == 10
    await batches.aclose()
    await asyncio.wait_for(closed.wait(), BOUND_S)
    assert len(asyncio.all_tasks()) == before


async def test_the_reader_stays_one_batch_ahead() -> None:
    read: list[int] = []

    async def counted() -> AsyncIterator[Task]:
        for i in range(1000):
            read.append(i)
            yield task(i)

    batches = ready_batches(counted(), 10)
    await anext(batches)
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(read) <= 10 + 10 + 1  # the batch taken, the one ready, the one in hand
    await batches.aclose()


async def test_a_stream_ending_within_spread_batches_is_cut_evenly() -> None:
    # 32 objects for two workers: two batches of 16, not one of 32 and an idle worker.
    got = [[t.seq for t in b] async for b in ready_batches(stream(32), 32, spread=2)]
    assert [len(b) for b in got] == [16, 16]
    assert [seq for b in got for seq in b] == list(range(32))


async def test_a_long_stream_gives_full_batches_then_an_even_tail() -> None:
    got = [[t.seq for t in b] async for b in ready_batches(stream(100), 32, spread=2)]
    assert [len(b) for b in got] == [32, 32, 18, 18]
    assert [seq for b in got for seq in b] == list(range(100))
    # A tail that does not divide evenly: the last batch takes the remainder.
    got = [[t.seq for t in b] async for b in ready_batches(stream(7), 32, spread=3)]
    assert [len(b) for b in got] == [3, 3, 1]


async def test_fewer_tasks_than_workers_go_one_per_batch() -> None:
    got = [[t.seq for t in b] async for b in ready_batches(stream(3), 32, spread=8)]
    assert got == [[0], [1], [2]]


async def test_the_reader_stays_spread_batches_ahead() -> None:
    read: list[int] = []

    async def counted() -> AsyncIterator[Task]:
        for i in range(1000):
            read.append(i)
            yield task(i)

    batches = ready_batches(counted(), 10, spread=3)
    first = await anext(batches)
    assert len(first) == 10  # the stream has not ended: a full batch
    for _ in range(20):
        await asyncio.sleep(0)
    assert 30 <= len(read) <= 10 + 30 + 1  # the batch taken, three ready, the one in hand
    await batches.aclose()


def test_cut_matches_the_stream() -> None:
    tasks = [task(i) for i in range(100)]
    assert [len(b) for b in cut(tasks, 32, 2)] == [32, 32, 18, 18]
    assert [len(b) for b in cut(tasks, 32)] == [32, 32, 32, 4]
    assert [len(b) for b in cut(tasks[:32], 32, 2)] == [16, 16]
    assert [len(b) for b in cut(tasks[:3], 32, 8)] == [1, 1, 1]
    assert cut([], 32, 2) == []
    assert [t.seq for b in cut(tasks, 7, 3) for t in b] == list(range(100))


# -- the engine, with a batch size chosen per instance ------------------------------------------


class PerJobBatches(Operation):
    """Records the batches apply_many gets; its batch size is chosen per instance."""

    name = "PerJobBatches"

    def __init__(self, size: int) -> None:
        self.batch_size = size
        self.calls: list[list[int]] = []

    async def apply(self, task: Task) -> TaskResult:
        self.calls.append([task.seq])
        return TaskResult.ok()

    async def apply_many(self, tasks: Sequence[Task]) -> list[TaskResult]:
        self.calls.append([t.seq for t in tasks])
        return [TaskResult.ok(message=f"batch of {len(tasks)}") for _ in tasks]


def use(monkeypatch: pytest.MonkeyPatch, op: Operation) -> None:
    def build(job: JobContext, operation: Mapping[str, Any]) -> tuple[Operation, MemoryStore]:
        return op, MemoryStore()

    monkeypatch.setattr(local_engine, "build_operation", build)


CONTEXT = JobContext(job_id="j", account_id="1", region="us-east-1", storage=LocalConfig(root="/nonexistent"))
RETRY = RetryPolicy(max_attempts=1, base_delay_s=0.0, max_delay_s=0.0)


async def test_the_engine_uses_the_instance_batch_size(monkeypatch: pytest.MonkeyPatch) -> None:
    assert PerJobBatches.batch_size == 1
    op = PerJobBatches(7)
    use(monkeypatch, op)
    engine = LocalEngine(concurrency=4, retry=RETRY)
    done = [t.seq async for group in engine.run(CONTEXT, {"PerJobBatches": {}}, stream(30)) for t, _ in group]
    assert sorted(done) == list(range(30))
    assert [len(c) for c in op.calls] == [7, 7, 7, 7, 2]


async def test_the_engine_runs_a_partial_batch_while_the_stream_stalls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    op = PerJobBatches(50)
    use(monkeypatch, op)
    engine = LocalEngine(concurrency=4, retry=RETRY)
    results = engine.run(CONTEXT, {"PerJobBatches": {}}, stream(100, stall_after=5))
    first = await asyncio.wait_for(anext(results), BOUND_S)
    assert sorted(t.seq for t, _ in first) == [0, 1, 2, 3, 4]
    assert all(r.message == "batch of 5" for _, r in first)
    await results.aclose()  # type: ignore[attr-defined]


async def test_the_engine_spreads_the_last_tasks_over_the_operation_s_workers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    op = PerJobBatches(32)
    op.batch_spread = 2
    use(monkeypatch, op)
    engine = LocalEngine(concurrency=4, retry=RETRY)
    done = [t.seq async for group in engine.run(CONTEXT, {"PerJobBatches": {}}, stream(32)) for t, _ in group]
    assert sorted(done) == list(range(32))
    assert [len(c) for c in op.calls] == [16, 16]


def test_a_guarded_operation_keeps_the_instance_batch_size() -> None:
    check = RoleCheck(
        Role(account_id="1", name="r"),
        Permissions(object_actions=(), bucket_actions=(), extra=no_extra_needs),
        {},
    )
    op = PerJobBatches(33)
    op.batch_spread = 4
    assert guarded(op, check).batch_size == 33
    assert guarded(op, check).batch_spread == 4
