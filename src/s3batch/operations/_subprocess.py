"""Run one executable in a process group of its own, with a deadline and bounded memory.

Used by S3batchRunCommand (operations/run_command.py). No shell is involved: the argv list goes
to execve as it is. The child gets a new session (`start_new_session=True`), so its process
group holds it and everything it starts (unless one of them makes a session of its own); that
group is what a timeout kills:

- on the deadline, or when `watch` reports too much output: SIGTERM to the group, then SIGKILL
  once the group is empty or after KILL_GRACE_S, whichever comes first;
- after a normal exit: SIGKILL to whatever is left of the group (a helper that would outlive
  its parent must not keep running once its task is over);
- when the awaiting task is cancelled (a cancelled job): SIGKILL to the group at once.

stderr (and stdout when it is not sent to a file) is read as it comes and only its last
`tail_bytes` are kept, so a chatty command costs no memory beyond that.

`max_file_bytes` becomes the command's RLIMIT_FSIZE (Linux; inherited by what it starts): the
kernel refuses to grow any file past it (SIGXFSZ, or EFBIG where that is ignored), between two
looks of a `watch` too. It is set with prlimit as soon as the command has started, not before
its exec (that would take a `preexec_fn`, unsafe in a process with threads), so what the
command writes in its first instant is the `watch`'s to catch.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import resource
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Seconds a timed-out group gets between SIGTERM and SIGKILL to exit on its own.
KILL_GRACE_S = 5.0
#: Seconds between checks that the group has emptied after SIGTERM.
GROUP_POLL_S = 0.05
#: Seconds between two `watch` calls while the command runs.
WATCH_INTERVAL_S = 1.0
#: Seconds to wait for the pipes to reach end-of-file once the group is gone: a process that
#: left the group (setsid) may still hold them, and must not hold the task forever.
DRAIN_TIMEOUT_S = 5.0
#: Seconds to wait for the killed leader to be reaped.
REAP_TIMEOUT_S = 10.0


class Ending(enum.Enum):
    """Why the command stopped."""

    EXITED = "exited"
    TIMED_OUT = "timed out"
    #: `watch` said the command had written too much; it was killed.
    STOPPED_BY_WATCH = "stopped by watch"


@dataclass(frozen=True, slots=True)
class Finished:
    """What became of one run."""

    ending: Ending
    #: The exit status (negative: the signal that ended it), None if it was never reaped.
    returncode: int | None
    #: The last bytes the command wrote to stderr, at most the run's `tail_bytes`.
    stderr_tail: bytes
    #: The last bytes of stdout, when stdout went to a pipe (not to a file).
    stdout_tail: bytes


@dataclass(frozen=True, slots=True)
class Launch:
    """How to start one command."""

    argv: Sequence[str]
    cwd: Path
    #: The whole environment of the command (nothing is inherited).
    env: dict[str, str]
    timeout_s: float
    tail_bytes: int
    #: Where stdout goes: a file created beforehand (None: a pipe whose tail is kept).
    stdout_path: Path | None = None
    #: The largest file the command and its children may write, in bytes (None: no limit).
    max_file_bytes: int | None = None


class Tail:
    """The last `limit` bytes of a stream, in memory bounded by twice that."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buffer = bytearray()

    def add(self, chunk: bytes) -> None:
        self.buffer += chunk
        if len(self.buffer) > 2 * self.limit:  # trim in bulk, not per chunk
            del self.buffer[: len(self.buffer) - self.limit]

    def value(self) -> bytes:
        return bytes(self.buffer[-self.limit :]) if self.limit else b""


async def run(launch: Launch, watch: Callable[[], bool] | None = None) -> Finished:
    """Run `launch.argv` to its end, its deadline, or `watch()` returning True (called in a
    thread every WATCH_INTERVAL_S). Raises OSError when the executable cannot be started."""
    err, out = Tail(launch.tail_bytes), Tail(launch.tail_bytes)
    readers: list[_TailReader] = []
    try:
        proc = await _spawn(launch, readers, err, out)
    except BaseException:
        await _close_readers(readers, drain_s=0)
        raise
    waiting = asyncio.ensure_future(proc.wait())
    _limit_file_size(proc.pid, launch.max_file_bytes)
    try:
        ending = await _supervise(proc.pid, waiting, launch.timeout_s, watch)
    finally:
        _signal_group(proc.pid, signal.SIGKILL)  # stragglers; everything when cancelled
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiting), REAP_TIMEOUT_S)
        await _close_readers(readers, drain_s=DRAIN_TIMEOUT_S)
    return Finished(ending, proc.returncode, err.value(), out.value())


async def _spawn(
    launch: Launch, readers: list[_TailReader], err: Tail, out: Tail
) -> asyncio.subprocess.Process:
    """Start the command in a new session; its pipes are appended to `readers` as they open.

    Pipes of our own rather than asyncio's: the leader's exit is then seen when it happens,
    not only once every process holding a pipe end has closed it too."""
    readers.append(await _TailReader.open(err))
    stdout_file = -1
    if launch.stdout_path is None:
        readers.append(await _TailReader.open(out))
    else:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        stdout_file = os.open(launch.stdout_path, flags, 0o600)
    try:
        return await asyncio.create_subprocess_exec(
            *launch.argv,
            cwd=launch.cwd,
            env=launch.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout_file if stdout_file >= 0 else readers[1].write_fd,
            stderr=readers[0].write_fd,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        if stdout_file >= 0:
            os.close(stdout_file)
        for reader in readers:
            reader.close_write_end()  # the child has its own copies


def _limit_file_size(pid: int, max_bytes: int | None) -> None:
    """RLIMIT_FSIZE of the started command (where the system has prlimit)."""
    if max_bytes is None or not hasattr(resource, "prlimit"):
        return
    # Already gone (ProcessLookupError), or a set-user-ID program this user may not limit
    # (PermissionError): the watch alone then keeps the caps.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        if hard != resource.RLIM_INFINITY:  # only a privileged process may raise a hard limit
            max_bytes = min(max_bytes, hard)
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


class _TailReader(asyncio.Protocol):
    """The read end of a pipe on the event loop, feeding a Tail until end-of-file."""

    def __init__(self, tail: Tail, ended: asyncio.Future[None]) -> None:
        self.tail, self.ended = tail, ended
        self.transport: asyncio.BaseTransport | None = None
        self.write_fd = -1

    @classmethod
    async def open(cls, tail: Tail) -> _TailReader:
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        reader = cls(tail, loop.create_future())
        try:
            await loop.connect_read_pipe(lambda: reader, os.fdopen(read_fd, "rb", buffering=0))
        except BaseException:
            os.close(write_fd)
            raise
        reader.write_fd = write_fd
        return reader

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.tail.add(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ended.done():
            self.ended.set_result(None)

    def close_write_end(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def close(self) -> None:
        self.close_write_end()
        if self.transport is not None:
            self.transport.close()


async def _close_readers(readers: Sequence[_TailReader], drain_s: float) -> None:
    """Let the pipes reach end-of-file (within `drain_s`), then close them whatever holds them."""
    if drain_s > 0:
        await asyncio.wait([r.ended for r in readers], timeout=drain_s)
    for reader in readers:
        reader.close()


async def _supervise(
    pgid: int, waiting: asyncio.Future[int], timeout_s: float, watch: Callable[[], bool] | None
) -> Ending:
    """Wait for the leader to exit; on the deadline or a watch alarm, stop the group."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            await _stop_group(pgid, waiting)
            return Ending.TIMED_OUT
        done, _ = await asyncio.wait({waiting}, timeout=min(remaining, WATCH_INTERVAL_S))
        if done:
            return Ending.EXITED
        if watch is not None and await asyncio.to_thread(watch):
            await _stop_group(pgid, waiting)
            return Ending.STOPPED_BY_WATCH


async def _stop_group(pgid: int, waiting: asyncio.Future[int]) -> None:
    """SIGTERM to the group; SIGKILL once it is empty or the grace period is over."""
    _signal_group(pgid, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + KILL_GRACE_S
    while loop.time() < deadline and (not waiting.done() or _group_alive(pgid)):
        await asyncio.sleep(GROUP_POLL_S)
    _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    # Gone already (ProcessLookupError) or not ours to signal (PermissionError): nothing to do.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
