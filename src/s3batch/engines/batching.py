"""Group a task stream into batches for `Operation.apply_many`, from what is ready.

A batched operation (DeleteObjects' 1,000 keys, LambdaInvoke's InvocationBatchSize) wants full
batches, but must never hold tasks back while the stream is slow: a manifest generator that
lists slowly, a manifest read over a slow link, or the last tasks of a job. So a batch goes as
soon as it is full (with `spread`, below: once that many are), when the stream ends, when no
task has arrived for `BATCH_GAP_S`, or when its first task has waited `BATCH_MAX_WAIT_S` (a
steady trickle would otherwise fill it slowly while the operation's capacity sits idle).

An operation that runs several batches side by side (`spread`: LambdaInvoke's function
workers) must not leave its workers idle at the end of a job: 32 objects in batches of 32 would
all go to one of two workers. So the stream is read `spread` batches ahead, and once it has
ended, what is left is cut into `spread` equal batches (never larger than `size`): 32 objects
for two workers go as two batches of 16, 100 as 32, 32, 18 and 18.

The stream is read by a task of its own, up to `spread` batches ahead of the consumer (the
engine takes a batch only when it has room for one, so the manifest is still read only as fast
as tasks are done). That task alone drives the stream, so the stream's code always runs in one
context.
An unbatched operation (size 1) gets none of this: each task is its own batch, no timer, no
extra task.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from s3batch.domain.task import Task
from s3batch.operations.base import UNBATCHED

#: Longest a partial batch waits for the next task, in seconds (then it goes as it is).
BATCH_GAP_S = 0.02
#: Longest the first task of a partial batch waits while more keep trickling in, in seconds.
BATCH_MAX_WAIT_S = 0.5


#: A batch size, or a function giving the size wanted now (the Ray engine's chunks adapt theirs).
Size = int | Callable[[], int]


async def ready_batches(
    tasks: AsyncIterator[Task], size: Size, spread: int = 1
) -> AsyncGenerator[list[Task], None]:
    """Lists of at most `size` tasks, in stream order, each handed on as described above;
    `spread`: how many batches the consumer runs at once."""
    if isinstance(size, int) and size <= UNBATCHED:
        async for task in tasks:
            yield [task]
        return
    ahead = _ReadAhead(tasks, size, spread)
    try:
        while batch := await ahead.next_batch():
            yield batch
    finally:
        await ahead.close()


class _ReadAhead:
    """Reads the stream in its own asyncio task, up to `spread` batches ahead."""

    def __init__(self, tasks: AsyncIterator[Task], size: Size, spread: int) -> None:
        self._size_now: Callable[[], int] = size if callable(size) else _fixed(size)
        self._spread = max(1, spread)
        #: The size of the batches the stream's last tasks are cut into, once it has ended.
        self._tail_size: int | None = None
        self._loop = asyncio.get_running_loop()
        self._ready: list[Task] = []
        #: Loop times at which the oldest and the newest ready task arrived.
        self._first_at = self._last_at = 0.0
        self._ended = False
        self._error: BaseException | None = None
        self._wakeup: asyncio.Future[None] | None = None  # the consumer waits for tasks
        self._room: asyncio.Future[None] | None = None  # the reader waits for a full batch to go
        self._reader = asyncio.create_task(self._read(tasks))

    async def next_batch(self) -> list[Task]:
        """The next batch (empty: the stream ended); re-raises the stream's error after the
        tasks read before it."""
        while True:
            if self._ended and self._ready:
                return self._take(self._tail())
            if len(self._ready) >= self._ahead:
                return self._take(self._size)
            if self._ended:
                if self._error is not None:
                    raise self._error
                return []
            if not self._ready:
                await self._wait(None)
                continue
            due = min(self._last_at + BATCH_GAP_S, self._first_at + BATCH_MAX_WAIT_S)
            left = due - self._loop.time()
            if left <= 0:
                return self._take(self._size)
            await self._wait(left)

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    async def _read(self, tasks: AsyncIterator[Task]) -> None:
        try:
            async for task in tasks:
                now = self._loop.time()
                if not self._ready:
                    self._first_at = now
                    self._wake()  # the consumer may be waiting for a first task, with no timer
                self._last_at = now
                self._ready.append(task)
                while len(self._ready) >= self._ahead:
                    self._wake()
                    self._room = self._loop.create_future()
                    await self._room
        except BaseException as exc:  # surfaced by next_batch: a stream cut short is not its end
            self._error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            self._ended = True
            self._wake()
            # `async for` leaves a generator open when the loop body is interrupted (close()
            # cancels us while we wait for room): close it now, so its `finally` runs.
            closer = getattr(tasks, "aclose", None)
            if closer is not None:
                await closer()

    @property
    def _size(self) -> int:
        return max(1, self._size_now())

    @property
    def _ahead(self) -> int:
        """Tasks read ahead before a full batch goes (and the reader waits for room)."""
        return self._size * self._spread

    def _tail(self) -> int:
        """The ended stream's batch size: what was left when it ended, over `spread` (fixed
        then, so the last batches come out equal rather than halving each time)."""
        if self._tail_size is None:
            self._tail_size = -(-len(self._ready) // self._spread)
        return min(self._size, self._tail_size)

    def _take(self, size: int) -> list[Task]:
        batch, self._ready = self._ready[:size], self._ready[size:]
        if len(self._ready) < self._ahead and self._room is not None and not self._room.done():
            self._room.set_result(None)
        return batch

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _wait(self, timeout_s: float | None) -> None:
        """Until the reader wakes us, or `timeout_s` passes."""
        self._wakeup = self._loop.create_future()
        timer = None if timeout_s is None else self._loop.call_later(timeout_s, self._wake)
        try:
            await self._wakeup
        finally:
            if timer is not None:
                timer.cancel()
            self._wakeup = None


def cut(tasks: list[Task], size: int, spread: int = 1) -> list[list[Task]]:
    """A known list of tasks as `ready_batches` would hand it on once its stream has ended:
    full batches while more than `spread` batches are left, then `spread` equal ones."""
    size, spread = max(1, size), max(1, spread)
    batches: list[list[Task]] = []
    start = 0
    while len(tasks) - start > size * spread:
        batches.append(tasks[start : start + size])
        start += size
    tail = -(-(len(tasks) - start) // spread)
    while start < len(tasks):
        batches.append(tasks[start : start + tail])
        start += tail
    return batches


def _fixed(size: int) -> Callable[[], int]:
    return lambda: size
