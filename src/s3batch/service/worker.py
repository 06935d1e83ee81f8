"""Background workers: processes that drive runnable jobs, most urgent first.

A worker is keyed by its environment's identity fingerprint (service/identity.py) and drives
only the jobs created with the same fingerprint, so each job runs with the endpoint and
credentials of the command that created it. One worker per key and HOME: an OS file lock
(flock) on HOME/workers/<key>.lock. The lock dies with the process, so after `kill -9` the
next s3batch command from the same environment finds it free, starts a new worker, and that
worker resumes the interrupted job from the job store. A job is also claimed by a lock of its
own while it is driven, so two workers never drive one job (jobs recorded before fingerprints
existed may be taken by any worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from s3batch.domain.job import FailureReason, Job, JobStatus
from s3batch.domain.roles import RoleBook
from s3batch.engines import make_engine
from s3batch.service.gctune import worker_gc
from s3batch.service.identity import current_key, environment_key, worker_environment
from s3batch.service.jobs import JobService
from s3batch.service.roles import load_roles
from s3batch.service.runner import JobRunner
from s3batch.settings import Settings
from s3batch.store import open_job_store
from s3batch.store.base import JobStore

log = logging.getLogger(__name__)

#: How long an idle worker keeps looking for new jobs before it exits, in seconds.
IDLE_EXIT_S = 3.0
#: How often an idle worker looks for jobs, in seconds.
POLL_S = 0.2
#: How often the worker removes expired jobs and fails unconfirmed ones, in seconds.
EXPIRE_INTERVAL_S = 60.0
#: Seconds between checks for the key's worker lock held elsewhere, and before restarting a child
#: worker process that exited.
WORKER_RESTART_S = 1.0
#: Seconds a child worker process gets to exit after SIGTERM before it is killed.
WORKER_STOP_S = 10.0


#: Folder of HOME holding the workers' and the jobs' lock files.
LOCKS_DIR = "workers"


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[IO[str] | None]:
    """Yield the open lock file if this process got the lock, else None."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        yield None
        return
    try:
        yield handle
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def worker_lock(home: Path, key: str | None = None) -> contextlib.AbstractContextManager[IO[str] | None]:
    """The lock of HOME's worker for `key` (default: this process's environment)."""
    return _flock(home / LOCKS_DIR / f"{key or current_key(home)}.lock")


def _claim(home: Path, job: Job) -> contextlib.AbstractContextManager[object | None]:
    """A job with a key is this worker's alone (it holds the key's lock); one recorded without a
    key may be taken by any worker, so it is claimed by a lock of its own while it is driven."""
    if job_key(job) is not None:
        return contextlib.nullcontext(True)
    return _flock(home / LOCKS_DIR / f"job-{job.job_id}.lock")


def worker_running(home: Path, key: str | None = None) -> bool:
    with worker_lock(home, key) as held:
        return held is None


def drives(job: Job, key: str) -> bool:
    """Whether a worker of `key` takes `job` once it is runnable: its own jobs and those recorded
    before there were keys, never one that waits for confirmation."""
    return job.status is not JobStatus.SUSPENDED and job_key(job) in (key, None)


def job_key(job: Job) -> str | None:
    """The identity fingerprint a job was created with (None: recorded before there were any)."""
    # The stored record, not `job.setup`: cheap on every poll, and a record that does not parse
    # fails only its own job (in the runner), never the worker's choice of jobs.
    key = job.runtime.get("identity")
    return key if isinstance(key, str) else None


async def run_worker(
    settings: Settings,
    exit_when_idle: bool = True,
    idle_exit_s: float = IDLE_EXIT_S,
    roles: RoleBook | None = None,
    *,
    store: JobStore | None = None,
    key: str | None = None,
) -> int:
    """Drive jobs until idle (or forever). Returns how many jobs it drove.

    `roles`: the server's roles (default: read from HOME's server.toml as each job starts).
    `store`: an open job store of HOME to use and leave open (default: open one, close it
    on return). `key`: the identity fingerprint whose jobs to drive (default: this process's
    environment's); the caller holds that key's worker lock."""
    owned = store is None
    if store is None:
        store = open_job_store(settings)
    key = key or current_key(settings.home)

    def mine(job: Job) -> bool:
        return drives(job, key)

    def outranks(job: Job) -> bool:  # a job without a key may be another worker's right now
        return job_key(job) == key

    engine = make_engine(settings)
    source = (lambda: roles) if roles is not None else (lambda: load_roles(settings.home))
    runner = JobRunner(
        store, engine, settings.function_workers, settings.home / "spool", roles=source, accepts=outranks
    )
    service = JobService(settings, store)
    driven, idle_since, expired_at = 0, time.monotonic(), float("-inf")
    try:
        while True:
            if time.monotonic() - expired_at > EXPIRE_INTERVAL_S:
                await service.expire()
                expired_at = time.monotonic()
            if await _drive_next(runner, store, settings.home, mine):
                driven, idle_since = driven + 1, time.monotonic()
                continue
            if exit_when_idle and time.monotonic() - idle_since >= idle_exit_s:
                return driven
            await asyncio.sleep(POLL_S)
    finally:
        if owned:
            await store.close()


async def _drive_next(runner: JobRunner, store: JobStore, home: Path, mine: Callable[[Job], bool]) -> bool:
    """Drive the most urgent runnable job of this worker's key. False if there was none."""
    for job in await store.runnable_jobs():
        if not mine(job):
            continue
        with _claim(home, job) as claimed:
            if claimed is None:
                continue  # another worker drives it (a job recorded without a key)
            with worker_gc():
                await _drive_safely(runner, store, job.job_id)
            return True
    return False


async def _drive_safely(runner: JobRunner, store: JobStore, job_id: str) -> None:
    """Drive a job; a bug fails that job with a reason instead of crash-looping the worker."""
    try:
        await runner.drive(job_id)
    except Exception as exc:
        log.exception("job %s failed with an internal error", job_id)
        job = await store.get_job(job_id)
        if not job.status.terminal:
            reason = FailureReason("InternalError", f"{type(exc).__name__}: {exc}"[:256])
            await store.transition(
                job_id,
                [job.status],
                JobStatus.FAILED,
                failure_reasons=(*job.failure_reasons, reason),
                termination_date=time.time(),
                active_since=None,
            )


def ensure_worker(settings: Settings) -> bool:
    """Start a background worker for HOME and this process's environment unless one runs.
    True if one was started."""
    if worker_running(settings.home):
        return False
    log_path = settings.home / "worker.log"
    with log_path.open("ab") as log_file:
        subprocess.Popen(
            # -P: the caller's working directory is not importable (a job's handlers get only
            # the paths it recorded).
            [sys.executable, "-P", "-m", "s3batch", "worker", "--exit-when-idle"],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,  # survives the CLI's terminal and Ctrl-C
            cwd=settings.home,  # not the caller's folder: handlers run in the one each job recorded
            env={**worker_environment(os.environ), "S3BATCH_HOME": str(settings.home)},
        )
    return True


async def supervise_worker_process(settings: Settings) -> None:
    """Keep one `s3batch worker` child process running for HOME until cancelled.

    `s3batch serve` drives jobs in this child rather than in its own event loop: API requests
    and the job's task callbacks then never wait on each other nor share one interpreter
    lock (measured in-process: 200 polling clients slowed a 100,000-task job 1.7-2x). If
    another process (a CLI-started worker of the same environment) holds the key's lock, this
    waits for it to go.
    Cancelling stops the child (SIGTERM, then SIGKILL after WORKER_STOP_S); a child that
    exits on its own is restarted after WORKER_RESTART_S.
    """
    env = {**worker_environment(os.environ), **settings.to_env()}
    key = environment_key(env, settings.home)
    while True:  # ends only by cancellation
        if worker_running(settings.home, key):
            await asyncio.sleep(WORKER_RESTART_S)
            continue
        with (settings.home / "worker.log").open("ab") as log_file:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-P", "-m", "s3batch", "worker",
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env, cwd=settings.home,
            )  # fmt: skip
        try:
            code = await child.wait()
        except asyncio.CancelledError:
            await _stop_child(child)
            raise
        log.warning("job worker process exited with status %s; restarting", code)
        await asyncio.sleep(WORKER_RESTART_S)


async def _stop_child(child: asyncio.subprocess.Process) -> None:
    if child.returncode is not None:
        return
    child.terminate()
    try:
        await asyncio.wait_for(child.wait(), WORKER_STOP_S)
    except TimeoutError:
        child.kill()
        await child.wait()
