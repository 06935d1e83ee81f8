"""LocalEngine's fast paths: operations that finish without waiting run eagerly
(no asyncio.Task each), and results, retries, errors and early close behave as before."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest

import s3batch.engines.local as local_engine
from s3batch.domain.task import Task, TaskResult
from s3batch.engines.local import LocalEngine
from s3batch.operations.base import JobContext, Operation
from s3batch.retry import RetryPolicy
from s3batch.storage.config import LocalConfig
from s3batch.storage.memory import MemoryStore

SLOWDOWN = TaskResult.fail("SlowDown", "slow down", 503, retryable=True)
FAST_RETRY = RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0)


class Scripted(Operation):
    """Succeeds; sync (no suspension) for even seqs when `mixed`, always sync otherwise.
    Seqs in `flaky` fail retryably on their first attempt; seqs in `boom` raise."""

    name = "Scripted"

    def __init__(self, mixed: bool, flaky: frozenset[int] = frozenset(), boom: frozenset[int] = frozenset()):
        self.mixed, self.flaky, self.boom = mixed, flaky, boom
        self.attempts: dict[int, int] = {}
        self.in_progress = 0

    async def apply(self, task: Task) -> TaskResult:
        self.attempts[task.seq] = self.attempts.get(task.seq, 0) + 1
        if task.seq in self.boom:
            raise ValueError(f"bug on {task.seq}")
        if self.mixed and task.seq % 2:
            self.in_progress += 1
            try:
                await asyncio.sleep(0)
            finally:
                self.in_progress -= 1
        if task.seq in self.flaky and self.attempts[task.seq] == 1:
            return SLOWDOWN
        return TaskResult.ok(message=f"done {task.seq}")


def _context() -> JobContext:
    return JobContext(
        job_id="j", account_id="1", region="us-east-1", storage=LocalConfig(root="/nonexistent")
    )


async def _tasks(n: int) -> AsyncIterator[Task]:
    for i in range(n):
        yield Task(seq=i, bucket="b", raw_key=f"k{i}", key=f"k{i}")


@pytest.fixture
def use_op(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(op: Operation) -> None:
        def build(job: JobContext, operation: Mapping[str, Any]) -> tuple[Operation, MemoryStore]:
            return op, MemoryStore()

        monkeypatch.setattr(local_engine, "build_operation", build)

    return install


@pytest.mark.parametrize("mixed", [False, True])
async def test_every_task_gets_its_own_result_once(use_op: Any, mixed: bool) -> None:
    op = Scripted(mixed)
    use_op(op)
    engine = LocalEngine(concurrency=8, retry=FAST_RETRY)
    groups = engine.run(_context(), {"Scripted": {}}, _tasks(500))
    out = [(t.seq, r) async for group in groups for t, r in group]
    assert sorted(seq for seq, _ in out) == list(range(500))
    assert all(r.succeeded and r.message == f"done {seq}" for seq, r in out)
    assert engine.stats.max_in_flight <= 8


async def test_eager_tasks_are_still_retried_and_bugs_fail_one_task(use_op: Any) -> None:
    op = Scripted(mixed=False, flaky=frozenset({3, 7}), boom=frozenset({5}))
    use_op(op)
    engine = LocalEngine(concurrency=4, retry=FAST_RETRY)
    out = {t.seq: r async for group in engine.run(_context(), {"Scripted": {}}, _tasks(10)) for t, r in group}
    # A raising apply is a retryable InternalError on attempt 1 (as the batch path always
    # treated it), then a final one: 5 runs twice.
    assert op.attempts[3] == op.attempts[7] == op.attempts[5] == 2
    assert engine.stats.retries == 3
    assert out[3].succeeded and out[7].succeeded
    assert not out[5].succeeded and out[5].error_code == "InternalError"
    assert sum(r.succeeded for r in out.values()) == 9


async def test_closing_early_cancels_suspended_tasks(use_op: Any) -> None:
    op = Scripted(mixed=True)
    use_op(op)
    engine = LocalEngine(concurrency=16, retry=FAST_RETRY)
    results = engine.run(_context(), {"Scripted": {}}, _tasks(10_000))
    seen = 0
    async for _ in results:
        seen += 1
        if seen == 100:
            break
    await results.aclose()  # type: ignore[attr-defined]
    assert op.in_progress == 0  # every suspended apply was cancelled and unwound
    assert seen == 100 and len(op.attempts) < 10_000


async def test_a_resumed_coroutine_can_also_be_awaited_directly() -> None:
    async def two_steps() -> list[tuple[Task, TaskResult]]:
        await asyncio.sleep(0)
        return []

    started = local_engine._start_eagerly(two_steps())
    assert isinstance(started, asyncio.Task)
    assert await started == []

    coro = two_steps()
    resumed = local_engine._Resumed(coro, coro.send(None))
    assert await resumed == []


async def test_a_task_cancelled_before_its_first_step_unwinds_the_operation() -> None:
    unwound = asyncio.Event()

    async def waits() -> list[tuple[Task, TaskResult]]:
        try:
            await asyncio.sleep(3600)
        finally:
            unwound.set()
        return []

    started = local_engine._start_eagerly(waits())
    assert isinstance(started, asyncio.Task)
    started.cancel()  # before the task ever ran a step
    with pytest.raises(asyncio.CancelledError):
        await started
    assert unwound.is_set()
