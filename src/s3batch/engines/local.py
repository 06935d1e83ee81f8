"""The default engine: asyncio in this process, a bounded number of tasks in flight.

S3 calls are I/O-bound, so one event loop with many requests in flight keeps an endpoint busy
with little CPU. CPU-heavy user functions run in the function pool's processes, not here.

Two bounds: at most `concurrency` task groups exist at once (memory; a task sleeping between
retries counts), and at most `AdaptiveLimit.limit` requests are in flight (load on the endpoint;
it shrinks under throttling, see engines/limiter.py). `stats` describes the latest run.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Generator, Mapping
from typing import Any

from s3batch.domain.task import Task
from s3batch.engines.base import Finished
from s3batch.engines.batching import ready_batches
from s3batch.engines.execute import build_operation, execute_batch
from s3batch.engines.limiter import DEFAULT_INCREASE_AFTER, AdaptiveLimit, LimitStats
from s3batch.operations.base import JobContext, Operation
from s3batch.retry import RetryPolicy


class LocalEngine:
    def __init__(
        self, concurrency: int, retry: RetryPolicy, increase_after: int = DEFAULT_INCREASE_AFTER
    ) -> None:
        self.concurrency = concurrency
        self.retry = retry
        self.increase_after = increase_after
        #: Limit samples, retries and throttles of the latest (or current) run.
        self.stats = LimitStats()

    async def run(
        self, job: JobContext, operation: Mapping[str, Any], tasks: AsyncIterator[Task]
    ) -> AsyncIterator[Finished]:
        op, store = build_operation(job, operation)
        limit = AdaptiveLimit(self.concurrency, self.increase_after)
        self.stats = limit.stats
        in_flight = _InFlight()
        batches = ready_batches(tasks, op.batch_size, op.batch_spread)
        try:
            async for batch in batches:
                started = _start_eagerly(self._run_batch(op, batch, limit))
                if isinstance(started, list):
                    yield started
                    continue
                in_flight.add(started)
                while len(in_flight) >= self.concurrency:
                    yield await in_flight.next_done()
            while in_flight:
                yield await in_flight.next_done()
        finally:
            await batches.aclose()  # stops a batched stream's reader task now, not at GC
            await in_flight.cancel()
            await op.close()
            await store.close()

    async def _run_batch(self, op: Operation, batch: list[Task], limit: AdaptiveLimit) -> Finished:
        results = await execute_batch(op, batch, self.retry, limit)
        return list(zip(batch, results, strict=True))


class _InFlight:
    """Running batch tasks, handing back finished ones as they end.

    Rather than asyncio.wait(FIRST_COMPLETED), which adds and removes a callback on every
    pending task per call — O(in flight) per finished task, ~12 % of the CPU of a copy job
    at 64 in flight — each task reports itself once, when it ends.
    """

    def __init__(self) -> None:
        self._pending: set[asyncio.Task[Finished]] = set()
        self._finished: deque[asyncio.Task[Finished]] = deque()
        self._wakeup: asyncio.Future[None] | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, task: asyncio.Task[Finished]) -> None:
        self._pending.add(task)
        task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[Finished]) -> None:
        self._finished.append(task)
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def next_done(self) -> Finished:
        """The results of every task finished so far (waiting for at least one)."""
        while not self._finished:
            self._wakeup = asyncio.get_running_loop().create_future()
            await self._wakeup
        items: Finished = []
        while self._finished:
            task = self._finished.popleft()
            self._pending.discard(task)
            items.extend(task.result())  # an engine bug surfaces here, as from asyncio.wait
        return items

    async def cancel(self) -> None:
        pending, self._pending = self._pending, set()
        for task in pending:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*pending, return_exceptions=True)


def _start_eagerly(coro: Coroutine[Any, Any, Finished]) -> Finished | asyncio.Task[Finished]:
    """Run `coro` up to its first suspension; its result if it never suspends, else a Task
    that carries on from there.

    An operation that finishes without waiting (a no-op, a cached or in-memory answer) then
    costs no asyncio.Task and no event-loop round trip, which dominated the engine's
    per-task overhead (Python 3.12's eager task factory does the same; this runs on 3.11).
    """
    # The first step and the Task that carries on must share one Context: libraries that set a
    # ContextVar before their first await and reset it after (aiobotocore does, per request)
    # fail with "Token was created in a different Context" otherwise. As in 3.12's eager tasks.
    ctx = contextvars.copy_context()
    try:
        yielded = ctx.run(coro.send, None)
    except StopIteration as stop:
        done: Finished = stop.value
        return done
    return asyncio.create_task(_Resumed(coro, yielded), context=ctx)


class _Resumed(Coroutine[Any, Any, Finished]):
    """A coroutine already stepped once, handed to a Task to carry on.

    Its first send() hands the Task what the coroutine yielded (the future it waits on), then
    everything goes straight to the inner coroutine. A hand-written coroutine rather than an
    `async def` wrapper: a Task cancelled before its first step throws into its coroutine,
    and an unstarted wrapper would end there without the inner one ever seeing the
    cancellation (its `finally` blocks, e.g. releasing a limiter slot, would not run).
    """

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Finished], yielded: Any) -> None:
        self._coro = coro
        self._first: tuple[Any] | None = (yielded,)

    def send(self, value: Any) -> Any:
        if self._first is not None:
            (yielded,), self._first = self._first, None
            return yielded
        return self._coro.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._first = None
        if val is None and tb is None:
            return self._coro.throw(typ)
        return self._coro.throw(typ, val, tb)

    def close(self) -> None:
        self._first = None
        self._coro.close()

    def __await__(self) -> Generator[Any, Any, Finished]:
        # Only for the Coroutine ABC (Tasks call send/throw directly): `yield from` by hand.
        value: Any = None
        error: BaseException | None = None
        while True:
            try:
                yielded = self.send(value) if error is None else self.throw(error)
            except StopIteration as stop:
                result: Finished = stop.value
                return result
            value, error = None, None
            try:
                value = yield yielded
            except BaseException as exc:
                error = exc
