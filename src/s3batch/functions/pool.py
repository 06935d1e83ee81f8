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

Pipe I/O runs in the pool's own threads so the event loop never blocks. A worker whose call
was cancelled, timed out or crashed is killed and replaced by a fresh one on next demand:
its half-done call would otherwise answer the next request.

Limits: handlers cannot start `multiprocessing` children that need the spawning script to be
importable without side effects; and, as with any spawn start, a script that creates a pool
must guard its entry point with `if __name__ == "__main__"`.
"""

from __future__ import annotations

import asyncio
import atexit
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
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass
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
#: Seconds close() lets an idle worker exit on its own before it is killed.
CLOSE_GRACE_S = 2.0
#: Seconds to wait for a killed worker to be reaped (SIGKILL cannot be ignored).
REAP_TIMEOUT_S = 10.0
#: Seconds since its last answer during which an idle worker is taken as alive without a check.
TRUST_ALIVE_S = 1.0
#: Pipe threads beyond one per worker, for starts and reaps that overlap calls.
SPARE_IO_THREADS = 4

#: Environment values Lambda sets that have a meaning here (see `lambda_environment`).
PYTHON_RUNTIME = f"AWS_Lambda_python{sys.version_info.major}.{sys.version_info.minor}"

# Pipe message kinds, worker → parent.
_READY = "ready"
_OK = "ok"
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
    #: False while its pipe thread waits for the handler to load (that thread owns it).
    ready: bool = False
    #: The pipe round trip in flight, if any (a thread blocked on the pipe).
    io: concurrent.futures.Future[Any] | None = None
    discarded: bool = False
    #: Kept when the process object is released (its attributes are gone then).
    exitcode: int | None = None
    released: bool = False
    #: When it last answered (time.monotonic()).
    idle_since: float = 0.0


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
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.spec = spec
        self.workers = workers
        self._env = dict(env or {})
        self._keep = keep
        self._mp = multiprocessing.get_context(START_METHOD)
        self._slots = asyncio.Semaphore(workers)
        self._idle: list[_Worker] = []
        # Written by pipe threads too (a worker joins as soon as its process exists).
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._starting: set[asyncio.Future[_Worker]] = set()
        self._reapers: set[asyncio.Task[None]] = set()
        self._io = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers + SPARE_IO_THREADS, thread_name_prefix="s3batch-function-io"
        )
        self._closed = False
        _OPEN_POOLS.add(self)

    @property
    def pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring and tests)."""
        with self._lock:
            return [w.process.pid for w in self._all if w.process.pid is not None]

    async def invoke(self, event: dict[str, Any]) -> InvokeOutcome:
        """Run the handler on `event` in a free worker (waiting for one if all are busy)."""
        request_id = new_request_id()
        async with self._slots:
            self._check_open()
            try:
                worker = await self._checkout()
            except WorkerStartError as exc:
                return InvokeOutcome(request_id, error=exc.payload(request_id))
            try:
                outcome, reusable = await self._call(worker, request_id, event)
            except BaseException:  # cancelled or broken: its answer would reach the next call
                self._discard(worker)
                raise
            if reusable and not self._closed:
                worker.idle_since = time.monotonic()
                self._idle.append(worker)
            else:
                self._discard(worker)
            return outcome

    async def close(self) -> None:
        """Stop every worker: idle ones get CLOSE_GRACE_S to exit, the rest are killed.

        A call still in flight ends with a Runtime.ExitError outcome.
        """
        self._closed = True
        idle, self._idle = self._idle, []
        with self._lock:
            others = [w for w in self._all if w not in idle]
            self._all.difference_update(idle)
        for worker in others:
            self._discard(worker)
        if self._keep is not None:
            warm = [w for w in idle if w.process.is_alive()]
            KEPT.give_back(self._keep, warm, _stop_in_background)
            idle = [w for w in idle if w not in warm]
        loop = asyncio.get_running_loop()
        stops = [loop.run_in_executor(self._io, _stop_gracefully, w) for w in idle]
        # Shielded: if close() itself is cancelled, starts must still finish (and be killed).
        starting = [asyncio.shield(f) for f in self._starting]
        waits: list[Awaitable[Any]] = [*stops, *starting, *self._reapers]
        await asyncio.gather(*waits, return_exceptions=True)
        self._io.shutdown(wait=False, cancel_futures=True)
        _OPEN_POOLS.discard(self)

    def kill_now(self) -> None:
        """Synchronous last resort (interpreter exit): SIGKILL every worker."""
        self._closed = True
        with self._lock:
            workers = list(self._all)
        for worker in workers:
            with contextlib.suppress(Exception):
                worker.process.kill()

    # -- internals -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"the function pool for {self.spec.name!r} is closed")

    async def _checkout(self) -> _Worker:
        while self._idle:  # bounded: each pass removes one idle worker
            worker = self._idle.pop()
            # Asking the kernel (waitpid) lets other threads take the GIL while the event loop
            # waits for it back: per call, that cost more than the call's own work. A worker that
            # answered moments ago is taken as alive; dying since, it fails that call as a worker
            # dying mid-call does.
            if time.monotonic() - worker.idle_since < TRUST_ALIVE_S or worker.process.is_alive():
                return worker
            self._discard(worker)  # died while idle (e.g. the OOM killer); start another
        if self._keep is not None:
            for worker in KEPT.take(self._keep, 1, _stop_in_background):
                if worker.process.is_alive():
                    with self._lock:
                        self._all.add(worker)
                    return worker
                _stop_in_background(worker)
        return await self._start()

    async def _start(self) -> _Worker:
        starting = asyncio.get_running_loop().run_in_executor(self._io, self._spawn)
        self._starting.add(starting)
        starting.add_done_callback(self._starting.discard)
        try:
            worker = await asyncio.shield(starting)
        except asyncio.CancelledError:
            starting.add_done_callback(self._discard_started)
            raise
        except Exception:
            self._check_open()  # a start cut short by close() says "closed"
            raise
        if self._closed:
            self._discard(worker)
            self._check_open()
        return worker

    def _spawn(self) -> _Worker:
        """Start one worker and wait until its handler is loaded (runs in a pipe thread)."""
        parent_end, child_end = self._mp.Pipe(duplex=True)
        process = self._mp.Process(
            target=worker_main,
            args=(child_end, self.spec, self._env),
            name=f"s3batch-function-{self.spec.name}",
        )
        process.start()
        child_end.close()  # else the parent never sees EOF when the child dies
        worker = _Worker(process, parent_end)
        with self._lock:
            self._all.add(worker)  # from here on close() can kill it
        try:
            self._wait_ready(worker)
        except BaseException:
            with self._lock:
                self._all.discard(worker)
            _kill_and_reap(worker)
            raise
        worker.ready = True
        return worker

    def _wait_ready(self, worker: _Worker) -> None:
        if self._closed:
            raise RuntimeError("closed while starting")
        if not worker.conn.poll(INIT_TIMEOUT_S):  # also returns on EOF (killed by close())
            raise WorkerStartError(timed_out=True)
        try:
            kind, _ = worker.conn.recv()
        except EOFError:
            worker.process.join(REAP_TIMEOUT_S)
            if self._closed:
                raise RuntimeError("closed while starting") from None
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

    def _discard_started(self, starting: asyncio.Future[_Worker]) -> None:
        if not starting.cancelled() and starting.exception() is None:
            self._discard(starting.result())

    async def _call(
        self, worker: _Worker, request_id: str, event: dict[str, Any]
    ) -> tuple[InvokeOutcome, bool]:
        """One round trip. Returns the outcome and whether the worker may serve again."""
        worker.io = self._io.submit(_round_trip, worker.conn, (request_id, event))
        try:
            kind, body = await asyncio.wait_for(asyncio.wrap_future(worker.io), timeout=self.spec.timeout_s)
        except TimeoutError:
            self._discard(worker)
            return InvokeOutcome(request_id, error=timeout_error(request_id, self.spec)), False
        except (EOFError, OSError):  # the worker died mid-call
            return await self._crashed(worker, request_id), False
        if kind == _OK:
            return InvokeOutcome(request_id, payload=body), True
        return InvokeOutcome(request_id, error=body), True

    async def _crashed(self, worker: _Worker, request_id: str) -> InvokeOutcome:
        if not worker.discarded:  # else close() killed it and its reaper is joining
            await _join(self._io, worker, REAP_TIMEOUT_S)
        exitcode = worker.exitcode if worker.released else worker.process.exitcode
        self._discard(worker)
        return InvokeOutcome(request_id, error=exit_error(request_id, exitcode))

    def _discard(self, worker: _Worker) -> None:
        """Kill `worker` now and reap it in the background (idempotent)."""
        with self._lock:
            self._all.discard(worker)
        if worker.discarded:
            return
        worker.discarded = True
        with contextlib.suppress(Exception):
            worker.process.kill()
        if not worker.ready:
            return  # its starting thread sees EOF, reaps it and reports the failure
        task = asyncio.get_running_loop().create_task(self._reap(worker))
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    async def _reap(self, worker: _Worker) -> None:
        await _join(self._io, worker, REAP_TIMEOUT_S)
        if worker.io is not None:
            # The pipe thread ends with EOF once the process is gone; only then is closing
            # the pipe safe (closing an fd that another thread reads is a race).
            waiter = asyncio.wrap_future(worker.io)
            await asyncio.wait([waiter], timeout=REAP_TIMEOUT_S)
            if waiter.done() and not waiter.cancelled():
                waiter.exception()  # the EOF it ended with is expected: mark it as seen
            waiter.cancel()
        _release(worker)


async def _join(executor: concurrent.futures.Executor, worker: _Worker, timeout_s: float) -> None:
    """Wait for the worker process to end, off the event loop."""
    if worker.released:
        return
    try:
        await asyncio.get_running_loop().run_in_executor(executor, worker.process.join, timeout_s)
    except RuntimeError:  # our executor is shut down (close() finished first)
        await asyncio.to_thread(worker.process.join, timeout_s)


# -- error payloads (AWS's formats) ----------------------------------------------------


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


def _round_trip(conn: Connection, message: tuple[str, dict[str, Any]]) -> tuple[str, Any]:
    conn.send(message)
    kind, body = conn.recv()
    if kind == _OK:
        return kind, json.loads(body)  # decoded here, off the event loop
    return kind, body


def _stop_gracefully(worker: _Worker) -> None:
    worker.conn.close()  # the worker reads EOF and exits
    worker.process.join(CLOSE_GRACE_S)
    _kill_and_reap(worker)


def _kill_and_reap(worker: _Worker) -> None:
    with contextlib.suppress(Exception):
        if worker.process.is_alive():
            worker.process.kill()
        worker.process.join(REAP_TIMEOUT_S)
    _release(worker)


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


def worker_main(conn: Connection, spec: FunctionSpec, env: Mapping[str, str]) -> None:
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
        reply = _invoke(handler, spec, log_stream, request_id, event)
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
    handler: Handler, spec: FunctionSpec, log_stream: str, request_id: str, event: Any
) -> tuple[str, Any]:
    try:
        ok, result = call_handler(handler, spec, log_stream, request_id, event)
    finally:
        _flush_output()
    if not ok:
        return _ERROR, result
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
