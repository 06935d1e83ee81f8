"""S3Batch keeps one SQLite job store open across calls: opened lazily, closed by close() or
`with`, reopened after close() and after a fork, shared safely by threads, and never hiding
other connections' writes."""

from __future__ import annotations

import sqlite3
import threading
import types
from typing import Any

import pytest

import s3batch.client as client_module
from conftest import Env, report_spec
from s3batch.client import S3Batch
from s3batch.store.sqlite import SqliteJobStore

pytestmark = pytest.mark.integration

KEYS = ["a.txt", "b.txt", "c.txt"]


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[SqliteJobStore]:
    """Every SqliteJobStore opened during the test, in order."""
    stores: list[SqliteJobStore] = []
    real_init = SqliteJobStore.__init__

    def counting_init(self: SqliteJobStore, *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        stores.append(self)

    monkeypatch.setattr(SqliteJobStore, "__init__", counting_init)
    return stores


def is_closed(store: SqliteJobStore) -> bool:
    try:
        store._conn.execute("SELECT 1")
    except sqlite3.ProgrammingError:
        return True
    return False


def create_copy_job(env: Env, batch: S3Batch) -> str:
    env.make_bucket("b")
    for key in KEYS:
        env.put("b", key, f"body of {key}".encode())
    job_id: str = batch.create_job(
        Operation={"S3PutObjectCopy": {"TargetResource": "arn:aws:s3:::b", "TargetKeyPrefix": "out"}},
        Manifest=env.manifest("b", [("b", k) for k in [*KEYS, "missing.txt"]]),
        Report=report_spec("b"),
        Priority=10,
    )["JobId"]
    return job_id


def assert_complete(job: dict[str, Any]) -> None:
    assert job["Status"] == "Complete"
    assert job["ProgressSummary"]["TotalNumberOfTasks"] == 4
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 3
    assert job["ProgressSummary"]["NumberOfTasksFailed"] == 1


def test_one_store_for_create_run_and_describe(local_env: Env, opened: list[SqliteJobStore]) -> None:
    batch = local_env.batch()
    assert opened == []  # lazy: constructing the client opens nothing
    job_id = create_copy_job(local_env, batch)
    assert batch.run_until_idle() == 1
    assert_complete(batch.describe_job(JobId=job_id)["Job"])
    assert [j["JobId"] for j in batch.list_jobs()["Jobs"]] == [job_id]
    assert len(batch.report_rows(job_id)) == 4
    assert len(opened) == 1
    assert not is_closed(opened[0])  # run_until_idle left the client's store open
    assert all(local_env.get("b", f"out/{k}") == f"body of {k}".encode() for k in KEYS)
    batch.close()
    assert is_closed(opened[0])


def test_close_is_idempotent_and_a_later_call_reopens(local_env: Env, opened: list[SqliteJobStore]) -> None:
    batch = local_env.batch()
    batch.close()  # never opened: nothing to do
    assert opened == []
    job_id = create_copy_job(local_env, batch)
    batch.close()
    batch.close()
    assert len(opened) == 1 and is_closed(opened[0])

    assert batch.describe_job(JobId=job_id)["Job"]["Status"] == "New"
    assert len(opened) == 2 and not is_closed(opened[1])
    batch.run_until_idle()
    assert_complete(batch.describe_job(JobId=job_id)["Job"])
    assert len(opened) == 2
    batch.close()
    assert is_closed(opened[1])


def test_context_manager_closes_the_store(local_env: Env, opened: list[SqliteJobStore]) -> None:
    with local_env.batch() as batch:
        assert batch.list_jobs() == {"Jobs": []}
        assert len(opened) == 1 and not is_closed(opened[0])
    assert is_closed(opened[0])
    with pytest.raises(sqlite3.ProgrammingError):
        opened[0]._conn.execute("SELECT 1")


def test_context_manager_closes_on_error(local_env: Env, opened: list[SqliteJobStore]) -> None:
    with pytest.raises(RuntimeError, match="boom"), local_env.batch() as batch:
        batch.list_jobs()
        raise RuntimeError("boom")
    assert len(opened) == 1 and is_closed(opened[0])


def test_a_forked_process_opens_its_own_store(
    local_env: Env, opened: list[SqliteJobStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    batch = local_env.batch()
    job_id = create_copy_job(local_env, batch)
    assert len(opened) == 1
    parent = opened[0]

    # The client sees a new pid, as in a child after fork(); nothing else is patched.
    child_pid = os.getpid() + 1
    monkeypatch.setattr(client_module, "os", types.SimpleNamespace(getpid=lambda: child_pid))
    assert batch.describe_job(JobId=job_id)["Job"]["Status"] == "New"
    assert len(opened) == 2
    assert opened[1] is not parent
    assert not is_closed(parent)  # the inherited connection is left alone...
    batch.list_jobs()
    assert len(opened) == 2  # ...and the child's own store is reused
    batch.close()
    assert is_closed(opened[1])
    assert not is_closed(parent)  # close() in the child does not touch the parent's either
    assert batch.describe_job(JobId=job_id)["Job"]["Status"] == "New"
    assert len(opened) == 3
    batch.close()
    parent._conn.close()


def test_threads_share_one_client(local_env: Env, opened: list[SqliteJobStore]) -> None:
    seeder = local_env.batch()
    job_id = create_copy_job(local_env, seeder)
    seeder.run_until_idle()
    seeder.close()
    opened.clear()

    batch = local_env.batch()
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def hammer(call: str) -> None:
        try:
            start.wait(timeout=10)  # all threads make their first call (the lazy open) at once
            for _ in range(25):
                if call == "describe":
                    assert_complete(batch.describe_job(JobId=job_id)["Job"])
                else:
                    assert [j["JobId"] for j in batch.list_jobs()["Jobs"]] == [job_id]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(c,)) for c in ["describe", "list"] * 2]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(opened) == 1
    batch.close()


def test_sees_writes_of_another_client_on_the_same_home(local_env: Env) -> None:
    first = local_env.batch()
    job_id = create_copy_job(local_env, first)
    assert first.describe_job(JobId=job_id)["Job"]["Status"] == "New"  # holds its connection

    with local_env.batch() as second:
        assert second.run_until_idle() == 1

    assert_complete(first.describe_job(JobId=job_id)["Job"])
    assert first.list_jobs(JobStatuses=["Complete"])["Jobs"][0]["JobId"] == job_id
    first.close()


def test_sees_writes_of_the_background_worker_process(local_env: Env) -> None:
    with S3Batch(home=local_env.home, storage=f"file://{local_env.root}", background=True) as batch:
        job_id = create_copy_job(local_env, batch)  # starts `s3batch worker` for HOME
        job = batch.wait(job_id, timeout_s=60)
        assert_complete(job)
        assert_complete(batch.describe_job(JobId=job_id)["Job"])
