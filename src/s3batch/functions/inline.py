"""Built-ins that run in the engine's own process, not in function worker processes.

Some built-ins (`runs_inline` in functions/registry.py) spend a fraction of a millisecond
per object, in native code that leaves the GIL (or on a job allowed one worker). Run in a worker
process (functions/pool.py), each invocation also pays for the event and the answer crossing a
pipe (pickled, JSON-encoded and decoded) and for the objects read through a second store opened
in the worker, and the first job for the workers' start (a new interpreter importing s3batch and
the library): together several times the work itself.

`InlineFunction` runs such a handler in a thread of the engine's process instead. The handler
is the same code with the same event; its `read_objects` calls go, through `reading_with`, to
the engine's own store on the engine's event loop (no second store, nothing pickled), and its
return value is used as it is (the built-ins answer JSON values only, so Lambda's JSON round
trip would change nothing). The response is interpreted by the same rules as a worker's.

What stays as in a worker: one invocation per event; an exception is AWS's error payload; an
invocation past the function's timeout answers Lambda's timeout payload; at most `concurrency`
invocations at once, the number of workers a pool would run, so memory per job (a batch's
objects held at once) is the same.

What differs: a thread cannot be killed. A call past its timeout keeps running (its answer is
dropped) and keeps its slot until it ends, where a worker pool kills the worker and starts
another. So after the first timeout, every later invocation of the job goes to a worker pool
(`fallback`, built then): a call that never ends costs one thread, never the job's progress.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from s3batch.domain.function import FunctionSpec
from s3batch.errors import StorageError
from s3batch.functions.context import new_log_stream_name
from s3batch.functions.objects import ObjectRef, read_all, read_all_now, reading_with
from s3batch.functions.pool import (
    Handler,
    InvokeOutcome,
    call_handler,
    load_handler,
    new_request_id,
    timeout_error,
)
from s3batch.storage.base import BlockingReads, ObjectStore

log = logging.getLogger(__name__)


class FunctionInvoker(Protocol):
    """What LambdaInvoke calls: a worker pool (functions/pool.py) or an `InlineFunction`."""

    async def invoke(self, event: dict[str, Any]) -> InvokeOutcome: ...

    async def close(self) -> None: ...


class InlineFunction:
    """Runs `spec.handler` in up to `concurrency` threads of this process, reading through `store`."""

    def __init__(
        self,
        spec: FunctionSpec,
        store: ObjectStore,
        *,
        concurrency: int,
        fallback: Callable[[], FunctionInvoker],
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.spec = spec
        self._store = store
        self._slots = asyncio.Semaphore(concurrency)
        self._threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=concurrency, thread_name_prefix=f"s3batch-inline-{spec.name}"
        )
        self._handler: Handler | None = None
        self._load_lock = threading.Lock()
        self._log_stream = new_log_stream_name()
        self._closed = False
        self._make_fallback = fallback
        #: Where invocations go after one timed out (worker processes, which can be killed).
        self.fallback: FunctionInvoker | None = None

    async def invoke(self, event: dict[str, Any]) -> InvokeOutcome:
        """Run the handler on `event` in a free thread (waiting for one if all are busy)."""
        if self.fallback is not None:
            return await self.fallback.invoke(event)
        request_id = new_request_id()
        loop = asyncio.get_running_loop()
        await self._slots.acquire()
        try:
            self._check_open()
            running = self._threads.submit(self._run, loop, request_id, event)
        except BaseException:
            self._slots.release()
            raise
        # The slot is free when the thread is, not when the caller stops waiting (timeout,
        # cancel): a thread cannot be stopped, and new calls must not queue behind it.
        running.add_done_callback(functools.partial(_release_in, loop, self._slots))
        try:
            ok, body = await asyncio.wait_for(asyncio.wrap_future(running), self.spec.timeout_s)
        except TimeoutError:
            self._fall_back()
            return InvokeOutcome(request_id, error=timeout_error(request_id, self.spec))
        if ok:
            return InvokeOutcome(request_id, payload=body)
        return InvokeOutcome(request_id, error=body)

    async def close(self) -> None:
        """Take no more calls; threads still running finish on their own, unawaited."""
        self._closed = True
        self._threads.shutdown(wait=False, cancel_futures=True)
        if self.fallback is not None:
            await self.fallback.close()

    def _fall_back(self) -> None:
        if self.fallback is None and not self._closed:
            log.warning(
                "%s ran past its %s s timeout in a thread; its next invocations run in worker processes",
                self.spec.name,
                self.spec.timeout_s,
            )
            self.fallback = self._make_fallback()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the inline function {self.spec.name!r} is closed")

    def _run(
        self, loop: asyncio.AbstractEventLoop, request_id: str, event: dict[str, Any]
    ) -> tuple[bool, Any]:
        """One invocation, in a pool thread."""
        handler = self._load()
        store = self._store
        if isinstance(store, BlockingReads):  # a folder: read here, no hop to the loop and back
            return reading_with(
                functools.partial(read_all_now, store),
                call_handler,
                handler,
                self.spec,
                self._log_stream,
                request_id,
                event,
            )

        def read(refs: Sequence[ObjectRef], max_bytes: int | None) -> list[bytes | StorageError]:
            reads = asyncio.run_coroutine_threadsafe(read_all(self._store, refs, max_bytes), loop)
            try:
                return reads.result(timeout=self.spec.timeout_s)
            finally:
                reads.cancel()  # a no-op once done; else the loop stops reading for a dropped call

        return reading_with(read, call_handler, handler, self.spec, self._log_stream, request_id, event)

    def _load(self) -> Handler:
        # Imported in a pool thread, on first use: the loop never waits for a library's import.
        with self._load_lock:
            if self._handler is None:
                self._handler = load_handler(self.spec.handler)
            return self._handler


def _release_in(loop: asyncio.AbstractEventLoop, slots: asyncio.Semaphore, _: object) -> None:
    """Free a slot from the thread that finished (a no-op once the job's loop is closed)."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(slots.release)
