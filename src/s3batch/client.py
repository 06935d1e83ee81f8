"""The Python API: a client with boto3 `s3control`'s method names, arguments and return shapes.

    from s3batch.client import S3Batch
    batch = S3Batch(storage="file:///data/buckets")          # or endpoint_url="http://..."
    job_id = batch.create_job(Operation=..., Manifest=..., Report=..., Priority=10)["JobId"]
    batch.wait(job_id)                                       # or run_until_idle() in-process
    batch.describe_job(JobId=job_id)["Job"]["ProgressSummary"]

Jobs run in the background worker of the client's S3BATCH_HOME (started on demand, like the
CLI does), or in this process with `run_until_idle()`.

A client opens HOME's SQLite job store on its first call and keeps it for later ones (an open
and close cost ~1-5 ms, a good part of a small job's fixed cost); `close()` or a `with` block
releases it. Like boto3's clients, one client may be shared by threads.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from s3batch import eventloop
from s3batch.domain.job import JobStatus
from s3batch.domain.report import ReportRow
from s3batch.service.jobs import JobService
from s3batch.service.shapes import job_descriptor, job_list_entry
from s3batch.service.worker import ensure_worker, run_worker, worker_lock
from s3batch.settings import Settings
from s3batch.storage.config import StorageConfig, resolve_storage
from s3batch.store import open_job_store
from s3batch.store.base import JobStore

T = TypeVar("T")
#: Seconds between status polls in `wait`.
WAIT_POLL_S = 0.1


class S3Batch:
    """boto3 `s3control`-shaped client on one S3BATCH_HOME.

    The job store (HOME's SQLite file) is opened lazily on the first call and reused by every
    later one, `run_until_idle` included. `close()` (or leaving `with S3Batch(...) as batch:`)
    closes it; it is idempotent, and a call after it simply opens the store again. Other
    processes (the background worker, the CLI, another client) may use HOME meanwhile: each
    read is its own transaction, so it sees their committed writes.

    Thread-safe, like boto3's clients (do not `close()` while other threads' calls are in
    flight). After a fork the child opens its own store on its first call and never touches
    the connection it inherited (SQLite connections must not cross a fork).
    """

    def __init__(
        self,
        *,
        home: str | Path | None = None,
        storage: str | None = None,
        endpoint_url: str | None = None,
        functions: Mapping[str, str] | None = None,
        settings: Settings | None = None,
        background: bool = True,
    ) -> None:
        base = settings or Settings.from_env()
        if home is not None:
            from dataclasses import replace

            base = replace(base, home=Path(home).resolve())
        self.settings = base
        self.storage: StorageConfig = resolve_storage(storage, endpoint_url, base.buckets_root)
        self.functions = dict(functions or {})
        self.background = background
        # (store, pid that opened it): one reference, so readers never see half an update.
        self._opened: tuple[JobStore, int] | None = None
        self._open_lock = threading.Lock()
        self._lock_pid = os.getpid()
        # Stores inherited over a fork: kept referenced so that garbage collection never
        # closes (and so touches) the parent's connection from the child.
        self._inherited: list[JobStore] = []

    def _store(self) -> JobStore:
        """HOME's job store, opened on first use (again after close() or a fork)."""
        pid = os.getpid()
        opened = self._opened
        if opened is not None and opened[1] == pid:
            return opened[0]
        with self._lock():
            opened = self._opened
            if opened is not None and opened[1] == pid:
                return opened[0]
            if opened is not None:
                self._inherited.append(opened[0])
            store = open_job_store(self.settings)
            self._opened = (store, pid)
            return store

    def _lock(self) -> threading.Lock:
        """The lock guarding `_opened`; a new one after a fork (another thread of the parent
        may have held it at the fork, and nothing in the child would release it)."""
        pid = os.getpid()
        if self._lock_pid != pid:
            self._open_lock, self._lock_pid = threading.Lock(), pid
        return self._open_lock

    def close(self) -> None:
        """Close the job store (if open). Idempotent; a later call opens it again."""
        with self._lock():
            opened, self._opened = self._opened, None
        if opened is None:
            return
        store, pid = opened
        if pid == os.getpid():
            eventloop.run(store.close())
        else:
            self._inherited.append(store)

    def __enter__(self) -> S3Batch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, fn: Callable[[JobService], Awaitable[T]]) -> T:
        service = JobService(self.settings, self._store())

        async def call() -> T:
            return await fn(service)

        return eventloop.run(call())

    def create_job(self, **request: Any) -> dict[str, Any]:
        account = request.pop("AccountId", None)
        job = self._call(
            lambda s: s.create_job(
                request, storage=self.storage, account_id=account, functions=self.functions
            )
        )
        if self.background:
            ensure_worker(self.settings)
        return {"JobId": job.job_id}

    def describe_job(self, *, JobId: str, AccountId: str | None = None) -> dict[str, Any]:
        return {"Job": job_descriptor(self._call(lambda s: s.describe_job(JobId, AccountId)))}

    def list_jobs(
        self,
        *,
        AccountId: str | None = None,
        JobStatuses: list[str] | None = None,
        NextToken: str | None = None,
        MaxResults: int | None = None,
    ) -> dict[str, Any]:
        jobs, token = self._call(lambda s: s.list_jobs(AccountId, JobStatuses, MaxResults, NextToken))
        out: dict[str, Any] = {"Jobs": [job_list_entry(j) for j in jobs]}
        if token:
            out["NextToken"] = token
        return out

    def update_job_status(
        self,
        *,
        JobId: str,
        RequestedJobStatus: str,
        StatusUpdateReason: str | None = None,
        AccountId: str | None = None,
    ) -> dict[str, Any]:
        job = self._call(lambda s: s.update_status(JobId, RequestedJobStatus, StatusUpdateReason, AccountId))
        if self.background:
            ensure_worker(self.settings)
        out = {"JobId": job.job_id, "Status": job.status.value}
        if job.status_update_reason:
            out["StatusUpdateReason"] = job.status_update_reason
        return out

    def update_job_priority(
        self, *, JobId: str, Priority: int, AccountId: str | None = None
    ) -> dict[str, Any]:
        job = self._call(lambda s: s.update_priority(JobId, Priority, AccountId))
        return {"JobId": job.job_id, "Priority": job.priority}

    def get_job_tagging(self, *, JobId: str, AccountId: str | None = None) -> dict[str, Any]:
        return {"Tags": self._call(lambda s: s.get_tags(JobId, AccountId))}

    def put_job_tagging(
        self, *, JobId: str, Tags: list[dict[str, str]], AccountId: str | None = None
    ) -> dict[str, Any]:
        self._call(lambda s: s.put_tags(JobId, Tags, AccountId))
        return {}

    def delete_job_tagging(self, *, JobId: str, AccountId: str | None = None) -> dict[str, Any]:
        self._call(lambda s: s.delete_tags(JobId, AccountId))
        return {}

    # -- beyond boto3 -------------------------------------------------------------------

    def dry_run(self, **request: Any) -> dict[str, Any]:
        """What create_job(**request) would do: task count, bytes, requests, time, AWS price."""
        from s3batch.service.dryrun import dry_run

        account = request.pop("AccountId", None)
        return self._call(
            lambda s: dry_run(s, request, storage=self.storage, account_id=account, functions=self.functions)
        )

    def rerun_failed(self, job_id: str) -> dict[str, Any]:
        """A new job over exactly the failed tasks of a finished job: {"JobId": ...}."""
        from s3batch.service.rerun import rerun_failed

        job = self._call(lambda s: rerun_failed(s, job_id))
        if self.background:
            ensure_worker(self.settings)
        return {"JobId": job.job_id}

    def run_until_idle(self) -> int:
        """Run queued jobs in this process until none is runnable. Returns jobs driven."""
        with worker_lock(self.settings.home) as held:
            if held is None:
                raise RuntimeError(
                    "a background worker of this environment runs in this S3BATCH_HOME; use wait()"
                )
            return eventloop.run(
                run_worker(self.settings, exit_when_idle=True, idle_exit_s=0.0, store=self._store())
            )

    def wait(self, job_id: str, timeout_s: float = 300.0) -> dict[str, Any]:
        """Poll until the job is terminal or Suspended; return its DescribeJob `Job`."""
        deadline = time.monotonic() + timeout_s
        while True:
            job: dict[str, Any] = self.describe_job(JobId=job_id)["Job"]
            if JobStatus(job["Status"]).terminal or job["Status"] == "Suspended":
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['Status']} after {timeout_s}s")
            ensure_worker(self.settings)
            time.sleep(WAIT_POLL_S)

    def report_rows(self, job_id: str) -> list[ReportRow]:
        """Every task's report row, in manifest order (also for jobs without a report)."""

        async def rows(service: JobService) -> list[ReportRow]:
            job = await service.describe_job(job_id)
            return [r async for batch in service.store.report_rows(job.job_id) for r in batch]

        return self._call(rows)


# -- the HTTP API through boto3 -------------------------------------------------------------------

#: The `{AccountId}.` label botocore's s3control endpoint rules put in front of any endpoint.
_ACCOUNT_HOST_PREFIX = r"^(https?://)\d{12}\."


def strip_account_host_prefix(request: Any, **kwargs: Any) -> None:
    """botocore `before-sign.s3-control` hook: `http://123456789012.host:port/...` →
    `http://host:port/...`, since `<account>.127.0.0.1` resolves nowhere
    (docs/aws-contracts.md#local-endpoints-and-clients)."""
    import re

    request.url = re.sub(_ACCOUNT_HOST_PREFIX, r"\1", request.url)


def s3control(
    endpoint_url: str,
    *,
    aws_access_key_id: str | None = None,
    aws_secret_access_key: str | None = None,
    region_name: str = "us-east-1",
    **config: Any,
) -> Any:
    """A plain boto3 `s3control` client for an `s3batch serve` endpoint. `config` goes to
    botocore's Config (e.g. retries={"max_attempts": 1})."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3control",
        endpoint_url=endpoint_url,
        aws_access_key_id=aws_access_key_id,
        aws_secret_access_key=aws_secret_access_key,
        region_name=region_name,
        config=Config(**config) if config else None,
    )
    client.meta.events.register("before-sign.s3-control", strip_account_host_prefix)
    return client
