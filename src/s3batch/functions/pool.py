"""Persistent worker processes that play one Lambda function.

Each worker is a "spawn"ed process (never fork: the parent runs asyncio and threads, which a
forked child would inherit in an arbitrary state). It imports the handler once, like a warm
Lambda execution environment, then serves one invocation at a time over a pipe. The pool
starts workers lazily, up to `workers`; that number is the function's concurrency, and
further callers wait.

What a caller gets back mirrors what the Lambda Invoke API returns:

- the handler's return value (JSON round-tripped, as Lambda does), or
- a function error payload: an exception (`errorMessage`, `errorType`, `requestId`,
  `stackTrace`, as AWS's Python runtime reports it), a timeout (the worker is killed;
  `"<time> <request id> Task timed out after 3.00 seconds"`), a crash (`Runtime.ExitError`),
  a return value that is not JSON (`Runtime.MarshalError`) or a handler that cannot be loaded
  (`Runtime.ImportModuleError`, `Runtime.HandlerNotFound`, `Runtime.UserCodeSyntaxError`).

Startup (spawn plus the handler's imports) does not count against the function timeout, as
Lambda's init phase does not; it has its own limit, `INIT_TIMEOUT_S`.

Pipe I/O runs in the pool's own threads, one per worker, so the event loop never blocks and
never stands between a worker and its next call (see FunctionPool). A worker whose call was
cancelled, timed out or crashed is killed and replaced by a fresh one on next demand.

Limits: handlers cannot start `multiprocessing` children that need the spawning script to be
importable without side effects; and, as with any spawn start, a script that creates a pool
must guard its entry point with `if __name__ == "__main__"`.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import decimal
import importlib
import json
import logging
import multiprocessing
import os
import random
import signal
import sys
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

from s3batch.domain.function import FunctionSpec
from s3batch.functions.context import LambdaContext, log_group_name, new_log_stream_name
from s3batch.idle import IdlePool

log = logging.getLogger(__name__)

#: multiprocessing start method. Not "fork": see the module docstring.
START_METHOD: Final = "spawn"
#: Seconds a new worker may take to start and import its handler.
INIT_TIMEOUT_S = 60.0
#: Seconds between two looks at a busy worker's life while waiting for its answer.
POLL_SLICE_S = 0.5
#: Seconds close() lets an idle worker exit on its own before it is killed.
CLOSE_GRACE_S = 2.0
#: Seconds between two looks at a worker expected to exit.
REAP_POLL_S = 0.01
#: Seconds to wait for a killed worker to be reaped (SIGKILL cannot be ignored).
REAP_TIMEOUT_S = 10.0

#: Environment values Lambda sets that have a meaning here (see `lambda_environment`).
PYTHON_RUNTIME = f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}"

# Pipe message kinds, worker → parent.
_READY = "ready"
_OK = "ok"
#: An answer sent as the value itself (pickled), by a handler known to answer JSON values only.
_OK_VALUE = "ok-value"
_ERROR = "error"


@dataclass(frozen=True, slots=True)
class InvokeOutcome:
    """One invocation's answer: `payload` (decoded JSON) unless `error` is set."""

    request_id: str
    payload: Any = None
    #: A function error payload; None when the handler returned normally.
    error: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        """True for a function error (exception, timeout, crash, bad return value)."""
        return self.error is not None


@dataclass(eq=False, slots=True)
class _Worker:
    process: BaseProcess
    conn: Connection
    #: Kept when the process object is released (its attributes are gone then).
    exitcode: int | None = None
    released: bool = False
    #: SIGKILL was sent (close(), an abandoned call): it serves no other call and is never kept.
    killed: bool = False


@dataclass(eq=False, slots=True)
class _Call:
    """One invocation on its way through the pool's queue to a worker."""

    request_id: str
    event: dict[str, Any]
    #: Settled by the serving thread that ran it (or by close()).
    answer: concurrent.futures.Future[InvokeOutcome] = field(default_factory=concurrent.futures.Future)
    #: The worker running it, once a serving thread took it.
    worker: _Worker | None = None
    #: The caller stopped waiting: a call not yet taken is skipped; a running one's worker is killed.
    abandoned: bool = False


class WorkerStartError(Exception):
    """A worker died or hung before its handler was loaded (bad import-time code, say)."""

    def __init__(self, exitcode: int | None = None, timed_out: bool = False) -> None:
        super().__init__(f"function worker failed to start (exit code {exitcode}, timed out: {timed_out})")
        self.exitcode = exitcode
        self.timed_out = timed_out

    def payload(self, request_id: str) -> dict[str, Any]:
        """The function error a caller sees, in Lambda's shape."""
        if self.timed_out:
            return {
                "errorType": "Runtime.InitError",
                "errorMessage": f"RequestId: {request_id} Error: Runtime failed to start within "
                f"{INIT_TIMEOUT_S:.2f} seconds",
            }
        return exit_error(request_id, self.exitcode)


#: Every open pool, so that workers are killed at interpreter exit if one was never closed.
_OPEN_POOLS: weakref.WeakSet[FunctionPool] = weakref.WeakSet()
#: Seconds a worker stays warm after its pool closed, for the next pool of the same key.
KEEP_IDLE_S = 60.0
#: Idle workers of closed pools, by the key their pool was given (s3batch/idle.py).
KEPT: IdlePool[Hashable, _Worker] = IdlePool(KEEP_IDLE_S)


def _kill_open_pools() -> None:
    for pool in list(_OPEN_POOLS):
        pool.kill_now()
    KEPT.clear(_kill_quietly)


def _kill_quietly(worker: _Worker) -> None:
    with contextlib.suppress(Exception):
        worker.process.kill()


def _stop_in_background(worker: _Worker) -> None:
    """Stop a kept worker without waiting for it (called on event loops and timer threads)."""
    threading.Thread(
        target=_stop_gracefully, args=(worker,), daemon=True, name="s3batch-function-stop"
    ).start()


# Registered after multiprocessing's own exit hook, so it runs first (atexit is LIFO) and
# multiprocessing never waits forever on a worker still blocked reading its pipe.
atexit.register(_kill_open_pools)


class FunctionPool:
    """Up to `workers` processes running `spec.handler`; `invoke` one event at a time each.

    Calls wait in one queue. Each worker has a serving thread of its own that sends it the next
    call as soon as it answered the last, and decodes that answer while the worker runs the next
    one: a worker never waits for the event loop to hand it work (a busy loop answers a wake-up
    in a millisecond or more, as long as a short batch takes to compute). The thread also keeps
    the call's time limit: past `spec.timeout_s` it kills the worker.

    With a `keep` key, close() hands its idle workers to `KEPT` instead of stopping them, and
    a pool with the same key takes them before it starts any: the key must stand for everything
    a worker was started with (the spec, the environment, whose job it serves).
    """

    def __init__(
        self,
        spec: FunctionSpec,
        *,
        workers: int,
        env: Mapping[str, str] | None = None,
        keep: Hashable | None = None,
        json_safe: bool = False,
    ) -> None:
        """`json_safe`: the handler answers JSON values only (s3batch's built-ins), so answers
        cross the pipe as values, without the JSON round trip Lambda makes (which would change
        nothing for them, and costs both processes per answer)."""
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.spec = spec
        self.workers = workers
        self._env = dict(env or {})
        self._keep = keep
        self._json_safe = json_safe
        self._mp = multiprocessing.get_context(START_METHOD)
        # Guards everything below; serving threads wait on it for calls.
        self._lock = threading.Condition()
        self._queue: collections.deque[_Call] = collections.deque()
        #: One per serving thread started: done when the thread ended.
        self._threads: list[concurrent.futures.Future[None]] = []
        #: Serving threads waiting for a call.
        self._waiting = 0
        #: Workers starting, and workers between a call sent and its answer: close() kills these.
        self._starting: set[_Worker] = set()
        self._busy: set[_Worker] = set()
        #: Every worker process that exists (starting, serving or idle).
        self._all: set[_Worker] = set()
        self._closed = False
        _OPEN_POOLS.add(self)

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring and tests)."""
        with self._lock:
            return [w.process.pid for w in self._all if w.process.pid is not None]

    async def invoke(self, event: dict[str, Any]) -> InvokeOutcome:
        """Run the handler on `event` in a free worker (waiting for one if all are busy)."""
        call = _Call(new_request_id(), event)
        with self._lock:
            self._check_open()
            self._queue.append(call)
            if len(self._queue) > self._waiting and len(self._threads) < self.workers:
                self._threads.append(self._start_thread())
            self._lock.notify()
        try:
            return await asyncio.wrap_future(call.answer)
        except asyncio.CancelledError:
            self._abandon(call)
            raise

    async def close(self) -> None:
        """Stop every worker: idle ones get CLOSE_GRACE_S to exit (or are kept, with a `keep`
        key), the rest are killed. A call in flight ends with a Runtime.ExitError outcome; a
        call still queued raises RuntimeError("... closed")."""
        with self._lock:
            self._closed = True
            queued, self._queue = list(self._queue), collections.deque()
            for worker in self._starting | self._busy:
                _kill(worker)
            threads = list(self._threads)
            self._lock.notify_all()
        _OPEN_POOLS.discard(self)
        for call in queued:
            _settle_error(call, self._closed_error())
        # Shielded: a close() that is itself cancelled leaves the threads to finish on their own.
        ended = asyncio.gather(*(asyncio.wrap_future(t) for t in threads), return_exceptions=True)
        await asyncio.shield(ended)

    def kill_now(self) -> None:
        """Synchronous last resort (interpreter exit): SIGKILL every worker."""
        with self._lock:
            self._closed = True
            for worker in self._all:
                _kill(worker)
            self._lock.notify_all()

    # -- the caller's side -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    def _closed_error(self) -> RuntimeError:
        return RuntimeError(f"the function pool for {self.spec.name!r} is closed")

    def _start_thread(self) -> concurrent.futures.Future[None]:
        ended: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            try:
                self._serve()
            except BaseException:  # a pool bug: logged; another thread takes its place
                log.exception("function %s: a serving thread failed", self.spec.name)
                with self._lock:
                    self._threads.remove(ended)
                    self._lock.notify()
            with contextlib.suppress(concurrent.futures.InvalidStateError):
                ended.set_result(None)

        threading.Thread(target=run, daemon=True, name=f"s3batch-function-{self.spec.name}").start()
        return ended

    def _abandon(self, call: _Call) -> None:
        """The caller stopped waiting: never run `call`, or kill the worker running it (its
        half-done work would go on for nobody). Under the lock: the worker cannot have moved
        on to another call meanwhile."""
        with self._lock:
            call.abandoned = True
            if call.worker is not None:
                _kill(call.worker)

    # -- a serving thread ---------------------------------------------------------------

    def _serve(self) -> None:
        """Take calls one by one to this thread's worker (started, or taken warm from KEPT, on
        the first call, and again after one died); stop or keep it when the pool closes."""
        worker: _Worker | None = None
        answered: tuple[_Call, Any] | None = None  # received, decoded once the next call is sent
        try:
            while True:
                call = self._next_call(worker, block=answered is None)
                if call is not None and worker is None:
                    worker = self._worker_for(call)
                sent = False
                if call is not None and worker is not None:
                    worker, sent = self._send(worker, call)
                if answered is not None:
                    self._deliver(*answered)
                    answered = None
                if call is not None and worker is not None and sent:
                    worker, answered = self._receive(worker, call)
                elif call is None and answered is None and self._closed:
                    return
        finally:
            if answered is not None:
                self._deliver(*answered)
            if worker is not None:
                self._retire(worker)

    def _next_call(self, worker: _Worker | None, *, block: bool) -> _Call | None:
        """The next call not abandoned, marked as this worker's; None when the pool is
        closing, or at once when none is queued and not `block`."""
        with self._lock:
            while True:
                while self._queue:
                    call = self._queue.popleft()
                    if not call.abandoned:
                        call.worker = worker
                        return call
                    _settle_error(call, asyncio.CancelledError())
                if self._closed or not block:
                    return None
                self._waiting += 1
                try:
                    self._lock.wait()
                finally:
                    self._waiting -= 1

    def _worker_for(self, call: _Call) -> _Worker | None:
        """A worker for `call`: a kept one of this pool's key, else a new one; None (with
        `call` answered) when none could start."""
        worker: _Worker | None = None
        if self._keep is not None:
            for kept in KEPT.take(self._keep, 1, _stop_in_background):
                if kept.process.is_alive():
                    worker = kept
                else:
                    _stop_in_background(kept)
        if worker is None:
            try:
                worker = self._spawn()
            except WorkerStartError as exc:
                _settle(call, InvokeOutcome(call.request_id, error=exc.payload(call.request_id)))
                return None
            except Exception as exc:  # closed meanwhile, or the system refused a process
                _settle_error(call, self._closed_error() if self._closed else exc)
                return None
        with self._lock:
            self._all.add(worker)
            call.worker = worker
            if call.abandoned:  # while it started: kill it as _abandon would have
                _kill(worker)
        return worker

    def _spawn(self) -> _Worker:
        """Start one worker and wait until its handler is loaded (in a serving thread)."""
        parent_end, child_end = self._mp.Pipe(duplex=True)
        process = self._mp.Process(
            target=worker_main,
            args=(child_end, self.spec, self._env, self._json_safe),
            name=f"s3batch-function-{self.spec.name}",
        )
        self._check_open()
        process.start()  # not under the lock: the event loop takes it for every call
        worker = _Worker(process, parent_end)
        with self._lock:
            self._all.add(worker)  # from here on close() and kill_now() can kill it
            self._starting.add(worker)
            if self._closed:
                _kill(worker)
        child_end.close()  # else the parent never sees EOF when the child dies
        try:
            self._wait_ready(worker)
        except BaseException:
            with self._lock:
                self._all.discard(worker)
                self._starting.discard(worker)
            _kill_and_reap(worker)
            raise
        with self._lock:
            self._starting.discard(worker)
        return worker

    def _wait_ready(self, worker: _Worker) -> None:
        if not _answered_within(worker, INIT_TIMEOUT_S):
            raise WorkerStartError(timed_out=True)
        try:
            if not worker.conn.poll(0):  # gone, nothing to read (and no EOF may come)
                raise EOFError("the worker is gone")
            kind, _ = worker.conn.recv()
        except EOFError:
            _join(worker, REAP_TIMEOUT_S)
            if self._closed:
                raise self._closed_error() from None
            log.warning(
                "function %s: worker exited while starting (exit code %s). If a script runs the "
                "jobs, guard its entry point with `if __name__ == '__main__':` (workers are "
                "spawned, and a spawned process imports the main script).",
                self.spec.name,
                worker.process.exitcode,
            )
            raise WorkerStartError(worker.process.exitcode) from None
        if kind != _READY:
            raise RuntimeError(f"function worker sent {kind!r} before it was ready")

    def _send(self, worker: _Worker, call: _Call) -> tuple[_Worker | None, bool]:
        """Hand `call` to `worker`; a worker found dead (it died while idle: the OOM killer,
        say) is replaced once, as the call has not run. The worker (None when gone) and whether
        the call reached it (if not, the call has been answered)."""
        for attempt in range(2):
            with self._lock:
                self._busy.add(worker)
                if self._closed:  # close() may have looked at the busy workers before this one was
                    _kill(worker)
            try:
                worker.conn.send((call.request_id, call.event))
                return worker, True
            except OSError:
                self._lose(worker, exiting=True)
                if attempt or call.abandoned:
                    break
                replacement = self._worker_for(call)
                if replacement is None:
                    return None, False
                worker = replacement
            except Exception as exc:  # the event does not pickle: nothing reached the pipe
                with self._lock:
                    self._busy.discard(worker)
                    call.worker = None
                _settle_error(call, exc)
                return worker, False
        _settle(call, InvokeOutcome(call.request_id, error=exit_error(call.request_id, worker.exitcode)))
        return None, False

    def _receive(self, worker: _Worker, call: _Call) -> tuple[_Worker | None, tuple[_Call, Any] | None]:
        """Wait for `call`'s answer: the worker (None if it failed: its outcome is settled)
        and the answer still to decode."""
        try:
            if not _answered_within(worker, self.spec.timeout_s):
                self._lose(worker)
                _settle(call, InvokeOutcome(call.request_id, error=timeout_error(call.request_id, self.spec)))
                return None, None
            with self._lock:
                # The answer is there: from now on abandoning the call must not kill the
                # worker (it may serve the next call before this thread hears of it).
                call.worker = None
                killed = worker.killed
            if killed or not worker.conn.poll(0):  # gone, nothing to read (and no EOF may come)
                raise EOFError("the worker is gone")
            reply = worker.conn.recv()
        except (EOFError, OSError):  # it died mid-call (or was killed: close(), an abandoned call)
            exitcode = self._lose(worker, exiting=True)
            if call.abandoned:
                _settle_error(call, asyncio.CancelledError())
            else:
                _settle(call, InvokeOutcome(call.request_id, error=exit_error(call.request_id, exitcode)))
            return None, None
        with self._lock:
            self._busy.discard(worker)
        return worker, (call, reply)

    def _deliver(self, call: _Call, reply: Any) -> None:
        kind, body = reply
        if kind == _OK:
            _settle(call, InvokeOutcome(call.request_id, payload=json.loads(body)))
        elif kind == _OK_VALUE:
            _settle(call, InvokeOutcome(call.request_id, payload=body))
        else:
            _settle(call, InvokeOutcome(call.request_id, error=body))

    def _lose(self, worker: _Worker, *, exiting: bool = False) -> int | None:
        """Reap a worker that died (`exiting`: its pipe closed, so let it finish exiting and
        report its own exit code) or kill one that timed out; its exit code."""
        with self._lock:
            self._all.discard(worker)
            self._busy.discard(worker)
        if exiting and not worker.killed:
            _join(worker, REAP_TIMEOUT_S)
        _kill_and_reap(worker)
        return worker.exitcode

    def _retire(self, worker: _Worker) -> None:
        """The pool is closing (or this thread failed): keep `worker` warm, or stop it."""
        with self._lock:
            self._all.discard(worker)
            self._busy.discard(worker)
            self._starting.discard(worker)
            keep = self._keep is not None and not worker.killed
        if keep and worker.process.is_alive():
            KEPT.give_back(self._keep, [worker], _stop_in_background)
        else:
            _stop_gracefully(worker)


def _kill(worker: _Worker) -> None:
    """SIGKILL `worker` and mark it so no thread serves or keeps it again (caller holds the
    pool's lock, so the mark and the kill are seen together)."""
    worker.killed = True
    _kill_quietly(worker)


def _answered_within(worker: _Worker, timeout_s: float) -> bool:
    """Whether the worker wrote to its pipe (or closed it) within `timeout_s`. Looked at in
    slices: a killed worker whose pipe a forked child of its handler still holds never closes
    it, so between slices the worker's own life is checked."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if worker.conn.poll(min(left, POLL_SLICE_S)):
            return True
        if worker.killed or not worker.process.is_alive():
            return True  # dead: the read that follows fails (EOF) or gets its last answer


def _settle(call: _Call, outcome: InvokeOutcome) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # the caller gave up first
        call.answer.set_result(outcome)


def _settle_error(call: _Call, error: BaseException) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        call.answer.set_exception(error)


#: Request ids: unique, not secret. From a generator seeded once by the OS, not uuid4's
#: os.urandom per call (a system call, and a GIL release the event loop then waits behind).
_ids = random.Random(os.urandom(32))


def new_request_id() -> str:
    """A Lambda-style request id (a random UUID)."""
    return str(uuid.UUID(int=_ids.getrandbits(128), version=4))


def timeout_error(request_id: str, spec: FunctionSpec) -> dict[str, Any]:
    """Lambda's payload for a timed-out invocation."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"errorMessage": f"{now} {request_id} Task timed out after {spec.timeout_s:.2f} seconds"}


def exit_error(request_id: str, exitcode: int | None) -> dict[str, Any]:
    """Lambda's payload for a runtime process that died mid-invocation."""
    if exitcode is None:
        detail = "exit status unknown"
    elif exitcode < 0:
        detail = f"signal: {_signal_text(-exitcode)}"
    else:
        detail = f"exit status {exitcode}"
    return {
        "errorType": "Runtime.ExitError",
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: {detail}",
    }


def _signal_text(signum: int) -> str:
    # Lambda's runtime manager is written in Go, whose texts are strsignal's, lower-cased.
    try:
        return (signal.strsignal(signum) or f"signal {signum}").lower()
    except ValueError:
        return f"signal {signum}"


# -- parent-side pipe helpers (run in pipe threads) ------------------------------------


def _stop_gracefully(worker: _Worker) -> None:
    worker.conn.close()  # the worker reads EOF and exits
    _join(worker, CLOSE_GRACE_S)
    _kill_and_reap(worker)


def _kill_and_reap(worker: _Worker) -> None:
    with contextlib.suppress(Exception):
        if worker.process.is_alive():
            worker.process.kill()
        _join(worker, REAP_TIMEOUT_S)
    _release(worker)


def _join(worker: _Worker, timeout_s: float) -> None:
    """Wait up to `timeout_s` for the worker to exit, asking the kernel (waitpid), not through
    multiprocessing's sentinel pipe: a child its handler forked may hold that pipe open."""
    deadline = time.monotonic() + timeout_s
    with contextlib.suppress(Exception):
        while worker.process.is_alive() and time.monotonic() < deadline:
            time.sleep(REAP_POLL_S)


def _release(worker: _Worker) -> None:
    if worker.released:
        return
    worker.conn.close()
    with contextlib.suppress(ValueError):  # still running after REAP_TIMEOUT_S: leave it
        worker.exitcode = worker.process.exitcode
        worker.process.close()
        worker.released = True


# -- the worker process ----------------------------------------------------------------


def lambda_environment(spec: FunctionSpec, log_stream: str) -> dict[str, str]:
    """Variables Lambda sets for a function, with the same names and meanings."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": spec.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
        "AWS_LAMBDA_LOG_GROUP_NAME": log_group_name(spec.name),
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
        "AWS_EXECUTION_ENV": PYTHON_RUNTIME,
        "LAMBDA_TASK_ROOT": spec.sys_path[0] if spec.sys_path else os.getcwd(),
        "_HANDLER": spec.handler,
        # There is no X-Ray daemon here; Powertools' Tracer would otherwise try to use one
        # because LAMBDA_TASK_ROOT says "in Lambda". The caller's env may turn it back on.
        "POWERTOOLS_TRACE_DISABLED": "true",
    }


def worker_main(
    conn: Connection, spec: FunctionSpec, env: Mapping[str, str], json_safe: bool = False
) -> None:
    """Entry point of a worker process: load the handler, then serve until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent to handle
    log_stream = new_log_stream_name()
    os.environ.update(lambda_environment(spec, log_stream))
    os.environ.update(env)
    sys.path[:0] = list(spec.sys_path)
    if spec.sys_path:  # as in Lambda, the handler runs in its task root (LAMBDA_TASK_ROOT)
        with contextlib.suppress(OSError):
            os.chdir(spec.sys_path[0])
    handler = load_handler(spec.handler)
    conn.send((_READY, os.getpid()))
    # Serves until the parent closes the pipe (or dies): a warm execution environment.
    while True:
        try:
            request_id, event = conn.recv()
        except (EOFError, OSError):
            return
        reply = _invoke(handler, spec, log_stream, request_id, event, json_safe=json_safe)
        try:
            conn.send(reply)
        except OSError:
            return


#: A loaded handler, or the error payload AWS's runtime gives when it cannot load one.
Handler = Callable[[Any, Any], Any] | dict[str, Any]


def load_handler(target: str) -> Handler:
    """The handler, or the error payload AWS's runtime gives when it cannot load one."""
    module_name, _, attr_path = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except SyntaxError as exc:
        return _init_error("Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}")
    except ImportError as exc:
        return _init_error("Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}")
    except Exception as exc:  # the module's own code failed: AWS reports the exception itself
        payload = _exception_payload(exc, "")
        print(f"[ERROR] {payload['errorType']}: {payload['errorMessage']}", file=sys.stderr, flush=True)
        return payload
    try:
        for part in attr_path.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        obj = None
    if not callable(obj):
        message = f"Handler '{attr_path}' missing on module '{module_name}'"
        return _init_error("Runtime.HandlerNotFound", message)
    return obj  # type: ignore[no-any-return]


def _init_error(error_type: str, message: str) -> dict[str, Any]:
    print(f"[ERROR] {error_type}: {message}", file=sys.stderr, flush=True)
    return {"errorMessage": message, "errorType": error_type, "requestId": "", "stackTrace": []}


def call_handler(
    handler: Handler, spec: FunctionSpec, log_stream: str, request_id: str, event: Any
) -> tuple[bool, Any]:
    """(True, the handler's return value) or (False, the function error payload AWS reports)."""
    if isinstance(handler, dict):
        return False, {**handler, "requestId": request_id}
    context = LambdaContext(
        function_name=spec.name,
        invoked_function_arn=spec.arn,
        memory_limit_in_mb=spec.memory_mb,
        aws_request_id=request_id,
        deadline_monotonic=time.monotonic() + spec.timeout_s,
        log_stream_name=log_stream,
    )
    try:
        return True, handler(event, context)
    except Exception as exc:
        return False, _exception_payload(exc, request_id)


def _invoke(
    handler: Handler,
    spec: FunctionSpec,
    log_stream: str,
    request_id: str,
    event: Any,
    *,
    json_safe: bool = False,
) -> tuple[str, Any]:
    try:
        ok, result = call_handler(handler, spec, log_stream, request_id, event)
    finally:
        _flush_output()
    if not ok:
        return _ERROR, result
    if json_safe:  # Lambda's JSON round trip would give back the same value
        return _OK_VALUE, result
    try:
        return _OK, json.dumps(result, default=_json_default)
    except (TypeError, ValueError) as exc:
        return _ERROR, {
            "errorMessage": f"Unable to marshal response: {exc}",
            "errorType": "Runtime.MarshalError",
            "requestId": request_id,
            "stackTrace": [],
        }


def _flush_output() -> None:
    """Push the handler's prints out now, in order with the parent's logs."""
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):  # closed or detached by the handler
                stream.flush()


def _json_default(value: Any) -> Any:
    # AWS's Python runtime serialises Decimal (boto3's DynamoDB numbers) as a number.
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _exception_payload(exc: BaseException, request_id: str) -> dict[str, Any]:
    """AWS's Python runtime's payload for an unhandled exception (runtime frames dropped)."""
    tb = exc.__traceback__.tb_next if exc.__traceback__ is not None else None
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_list(traceback.extract_tb(tb)),
    }
