"""LambdaInvoke with the s3batch extension InvocationBatchSize, end to end: real jobs on the
folder store and moto's S3 server, handlers in a temporary module that log every event."""

from __future__ import annotations

import contextlib
import json
import math
import os
import textwrap
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Env, read_report, report_spec
from s3batch.domain.lambda_contract import DUPLICATE_TASK_ID_MESSAGE, UNKNOWN_TASK_ID_MESSAGE, task_id_for
from s3batch.domain.task import Task
from s3batch.errors import ApiError
from s3batch.operations.invoke import MAX_INVOCATION_BATCH_SIZE

pytestmark = pytest.mark.integration
SENTIMENT_ARN = "arn:aws:lambda:us-east-1:123456789012:function:s3batch-sentiment"
NEEDS_2_0 = "requires InvocationSchemaVersion 2.0"

#: Handlers that log each event's keys and invocationId (one JSON line per call) and answer
#: per taskId; some mislabel on purpose, keyed by the object's name.
HANDLERS = '''
import contextlib
import json
import os
from pathlib import Path


def _log(event):
    line = {"inv": event["invocationId"], "keys": [t["s3Key"] for t in event["tasks"]], "pid": os.getppid()}
    with open(os.environ["BATCH_LOG"], "a") as log:
        log.write(json.dumps(line) + "\\n")


def _result(task, code="Succeeded", text=None):
    return {"taskId": task["taskId"], "resultCode": code, "resultString": text or "done " + task["s3Key"]}


def _response(event, results):
    return {
        "invocationSchemaVersion": event["invocationSchemaVersion"],
        "treatMissingKeysAs": "PermanentFailure",
        "invocationId": event["invocationId"],
        "results": results,
    }


def answers(event, context):
    _log(event)
    return _response(event, [_result(t) for t in event["tasks"]])


def mislabels(event, context):
    """drop*: no result; dup*: two results; bad*: one more result under an invented taskId."""
    _log(event)
    results = []
    for task in event["tasks"]:
        key = task["s3Key"]
        if not key.startswith("drop"):
            results.append(_result(task))
        if key.startswith("dup"):
            results.append(_result(task, text="again"))
        if key.startswith("bad"):
            results.append({"taskId": "invented-" + key, "resultCode": "Succeeded"})
    return _response(event, results)


def raises(event, context):
    _log(event)
    keys = [t["s3Key"] for t in event["tasks"]]
    if "boom" in keys:
        raise ValueError("cannot handle " + ",".join(keys))
    return _response(event, [_result(t) for t in event["tasks"]])


def with_data(event, context):
    """resultData {"name": ...} per task; a list instead for list* keys."""
    _log(event)
    results = []
    for task in event["tasks"]:
        key = task["s3Key"]
        results.append({**_result(task), "resultData": [key] if key.startswith("list") else {"name": key}})
    return _response(event, results)


def temporary_once(event, context):
    """TemporaryFailure the first time a temp* key is seen."""
    _log(event)
    results = []
    for task in event["tasks"]:
        marker = Path(os.environ["BATCH_LOG"] + "." + task["s3Key"])
        if task["s3Key"].startswith("temp") and not marker.exists():
            marker.write_text("seen")
            results.append(_result(task, "TemporaryFailure", "try again"))
        else:
            results.append(_result(task))
    return _response(event, results)
'''


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The handlers' module on the handler processes' path, and the log they write."""
    module_dir = tmp_path / "batch_handlers_mod"
    module_dir.mkdir()
    (module_dir / "batch_probe.py").write_text(textwrap.dedent(HANDLERS))
    monkeypatch.syspath_prepend(str(module_dir))
    monkeypatch.setenv("PYTHONPATH", str(module_dir))
    monkeypatch.setenv("S3BATCH_FUNCTION_WORKERS", "2")
    monkeypatch.setenv("S3BATCH_MAX_ATTEMPTS", "3")
    path = tmp_path / "events.log"
    monkeypatch.setenv("BATCH_LOG", str(path))
    return path


def events(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def run_job(env: Env, bucket: str, keys: list[str], operation: dict[str, Any]) -> dict[str, Any]:
    env.make_bucket(bucket)
    for key in keys:
        env.put(bucket, key, key.encode())
    batch = env.batch()
    job_id = batch.create_job(
        Operation={"LambdaInvoke": operation},
        Manifest=env.manifest(bucket, [(bucket, k) for k in keys]),
        Report=report_spec(bucket),
        Priority=1,
    )["JobId"]
    batch.run_until_idle()
    job = batch.describe_job(JobId=job_id)["Job"]
    assert job["Status"] == "Complete", job
    report = read_report(env, bucket, job_id)
    rows = [row for status in report["rows"].values() for row in status]
    keys_reported = [row[1] for row in rows]
    assert sorted(keys_reported) == sorted(keys)  # every task exactly once
    return {"job_id": job_id, "rows": {row[1]: row[3:] for row in rows}}


def batched(handler: str, size: int | None) -> dict[str, Any]:
    op: dict[str, Any] = {"FunctionArn": f"python:batch_probe:{handler}", "InvocationSchemaVersion": "2.0"}
    if size is not None:
        op["InvocationBatchSize"] = size
    return op


@pytest.mark.parametrize("size", [None, 1, 5])
def test_each_event_carries_at_most_n_tasks_and_each_task_its_own_result(
    env: Env, log: Path, bucket_name: str, size: int | None
) -> None:
    keys = [f"k{i:02d}" for i in range(23)]
    out = run_job(env, bucket_name, keys, batched("answers", size))
    assert out["rows"] == {k: ["succeeded", "200", "", f"done {k}"] for k in keys}
    calls = events(log)
    sizes = [len(c["keys"]) for c in calls]
    assert Counter(k for c in calls for k in c["keys"]) == dict.fromkeys(keys, 1)
    assert len({c["inv"] for c in calls}) == len(calls)  # one invocationId per call
    assert max(sizes) == (size or 1)
    # Batches form from what is ready; the manifest is read at once here, so they are mostly full.
    assert len(calls) <= math.ceil(len(keys) / (size or 1)) + 2


def test_a_job_smaller_than_a_batch_per_worker_is_shared_by_the_workers(
    env: Env, log: Path, bucket_name: str
) -> None:
    # Two function workers (the fixture) and 32 objects in batches of 32: two invocations of 16,
    # so neither worker idles while the other runs the whole job.
    keys = [f"k{i:02d}" for i in range(32)]
    run_job(env, bucket_name, keys, batched("answers", 32))
    assert sorted(len(c["keys"]) for c in events(log)) == [16, 16]


def test_dropped_duplicated_and_invented_task_ids_fail_exactly_their_tasks(
    env: Env, log: Path, bucket_name: str
) -> None:
    keys = ["a1", "drop1", "a2", "dup1", "a3", "a4", "bad1", "a5", "a6", "a7", "a8", "a9"]
    out = run_job(env, bucket_name, keys, batched("mislabels", 4))
    rows = out["rows"]
    job_id = out["job_id"]
    seq = {k: i for i, k in enumerate(keys)}
    with_bad = next(c["keys"] for c in events(log) if "bad1" in c["keys"])
    unknown = UNKNOWN_TASK_ID_MESSAGE.format(task_id='"invented-bad1"', tasks=len(with_bad))
    for key in keys:
        if key in with_bad:  # the whole invocation that named an unknown taskId
            assert rows[key] == ["failed", "200", "PermanentFailure", unknown], key
        elif key == "drop1":
            task_id = task_id_for(job_id, seq[key])
            assert rows[key][:3] == ["failed", "200", "PermanentFailure"]
            assert rows[key][3] == (
                f"Lambda response had no result for taskId {task_id} (treatMissingKeysAs=PermanentFailure)"
            )
        elif key == "dup1":
            message = DUPLICATE_TASK_ID_MESSAGE.format(count=2, task_id=task_id_for(job_id, seq[key]))
            assert rows[key] == ["failed", "200", "PermanentFailure", message]
        else:
            assert rows[key] == ["succeeded", "200", "", f"done {key}"], key


def test_a_function_error_fails_every_task_of_its_invocation(local_env: Env, log: Path) -> None:
    keys = [f"k{i}" for i in range(9)] + ["boom"] + [f"m{i}" for i in range(5)]
    out = run_job(local_env, "b", keys, batched("raises", 4))
    with_boom = next(c["keys"] for c in events(log) if "boom" in c["keys"])
    for key in keys:
        status, http, code, message = out["rows"][key]
        if key in with_boom:
            assert (status, http, code) == ("failed", "200", "PermanentFailure")
            assert message.startswith("Lambda returned function error: ")
            assert "cannot handle " + ",".join(with_boom) in message
        else:
            assert out["rows"][key] == ["succeeded", "200", "", f"done {key}"]


def test_a_temporary_failure_is_redriven_alone(local_env: Env, log: Path) -> None:
    keys = ["a", "temp1", "b", "c", "temp2", "d"]
    out = run_job(local_env, "b", keys, batched("temporary_once", 3))
    assert out["rows"] == {k: ["succeeded", "200", "", f"done {k}"] for k in keys}
    calls = [c["keys"] for c in events(log)]
    for key in ("temp1", "temp2"):
        tries = [c for c in calls if key in c]
        assert len(tries) == 2 and tries[1] == [key]  # the redrive is one task per call


@pytest.mark.parametrize("size", [None, 4])
def test_result_data_reaches_the_sink_per_task(
    local_env: Env, log: Path, tmp_path: Path, size: int | None
) -> None:
    import sqlite3

    db = tmp_path / "results.db"
    operation = batched("with_data", size)
    operation["ResultsSink"] = {"Table": {"Backend": "sqlite", "Path": str(db), "Name": "data"}}
    keys = [f"k{i}" for i in range(7)] + ["list1"]
    out = run_job(local_env, "b", keys, operation)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        stored = sorted(conn.execute('SELECT "key", "name" FROM data'))
    assert stored == [(k, k) for k in keys if k != "list1"]  # one row per task with data
    assert out["rows"]["list1"][:3] == ["failed", "200", "PermanentFailure"]
    assert (
        "'resultData' of taskId" in out["rows"]["list1"][3]
        and "must be an object, got array" in (out["rows"]["list1"][3])
    )


def test_builtin_sentiment_batched_reports_the_same_rows_as_unbatched(
    env: Env, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from s3batch.functions.builtin.demo_texts import DEMO_TEXTS
    from s3batch.functions.inline import InlineFunction
    from s3batch.functions.pool import InvokeOutcome

    sent: list[int] = []  # tasks per event, as the operation hands events to the function
    real_invoke = InlineFunction.invoke  # the sentiment built-in runs inline with one worker
    monkeypatch.setenv("S3BATCH_FUNCTION_WORKERS", "1")

    async def invoke(self: InlineFunction, event: dict[str, Any]) -> InvokeOutcome:
        sent.append(len(event["tasks"]))
        return await real_invoke(self, event)

    monkeypatch.setattr(InlineFunction, "invoke", invoke)
    texts = list(DEMO_TEXTS.values())
    env.make_bucket(bucket_name)
    keys = [f"letter-{i:03d}.txt" for i in range(60)]
    for i, key in enumerate(keys):
        env.put(bucket_name, key, texts[i % len(texts)].encode())
    keys.append("missing.txt")
    batch = env.batch()
    reports, sizes = [], []
    for n, extra in enumerate(({}, {"InvocationBatchSize": 50})):
        sent.clear()
        job_id = batch.create_job(
            Operation={
                "LambdaInvoke": {"FunctionArn": SENTIMENT_ARN, "InvocationSchemaVersion": "2.0", **extra}
            },
            Manifest=env.manifest(bucket_name, [(bucket_name, k) for k in keys], key=f"m{n}.csv"),
            Report=report_spec(bucket_name),
            Priority=1,
        )["JobId"]
        batch.run_until_idle()
        rows = read_report(env, bucket_name, job_id)["rows"]
        reports.append(sorted(row for status in rows.values() for row in status))
        sizes.append(list(sent))
    unbatched, with_batches = reports
    assert len(unbatched) == len(keys)
    assert with_batches == unbatched
    assert sum(row[3] == "succeeded" for row in unbatched) == 60
    assert set(sizes[0]) == {1} and sum(sizes[1]) == len(keys) and max(sizes[1]) == 50


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"InvocationBatchSize": 0}, "InvocationBatchSize must be a whole number from 1 to"),
        ({"InvocationBatchSize": MAX_INVOCATION_BATCH_SIZE + 1}, "got 1001"),
        ({"InvocationBatchSize": "10"}, "got '10'"),
        ({"InvocationBatchSize": 2.5}, "got 2.5"),
        ({"InvocationBatchSize": True}, "got True"),
        (
            {"InvocationBatchSize": 10, "InvocationSchemaVersion": "1.0"},
            "requires InvocationSchemaVersion 2.0",
        ),
        (
            {"InvocationBatchSize": 10, "InvocationSchemaVersion": None},
            "requires InvocationSchemaVersion 2.0",
        ),
    ],
)
def test_bad_invocation_batch_sizes_are_refused_at_create_job(
    local_env: Env, extra: dict[str, Any], needle: str
) -> None:
    local_env.make_bucket("b")
    batch = local_env.batch()
    operation = {"FunctionArn": "python:batch_probe:answers", "InvocationSchemaVersion": "2.0", **extra}
    if operation["InvocationSchemaVersion"] is None:
        del operation["InvocationSchemaVersion"]
    with pytest.raises(ApiError) as caught:
        batch.create_job(
            Operation={"LambdaInvoke": operation},
            Manifest=local_env.manifest("b", [("b", "x")]),
            Report=report_spec("b"),
            Priority=1,
        )
    assert caught.value.code in {"BadRequestException", "InvalidRequestException"}
    assert "LambdaInvoke.InvocationBatchSize" in caught.value.message and needle in caught.value.message
    assert batch.list_jobs()["Jobs"] == []


def test_the_process_engine_feeds_batched_deletes(local_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    # The process engine's feed forms its messages from what is ready; each worker regroups them
    # for its operation's batch size.
    import s3batch.engines.process as process_engine

    messages: list[int] = []
    real_feed = process_engine._feed

    async def feed(tasks: AsyncIterator[Task], inbox: Any, processes: int) -> None:
        async def counted() -> AsyncIterator[Task]:
            async for task in tasks:
                messages.append(task.seq)
                yield task

        await real_feed(counted(), inbox, processes)

    monkeypatch.setattr(process_engine, "_feed", feed)
    monkeypatch.setenv("S3BATCH_ENGINE", "process")
    monkeypatch.setenv("S3BATCH_PROCESSES", "2")
    keys = [f"k{i:04d}" for i in range(1500)]
    local_env.make_bucket("b")
    for key in keys:
        local_env.put("b", key, b"x")
    batch = local_env.batch()
    job_id = batch.create_job(
        Operation={"S3DeleteObject": {}},
        Manifest=local_env.manifest("b", [("b", k) for k in keys]),
        Report=report_spec("b"),
        Priority=1,
    )["JobId"]
    batch.run_until_idle()
    assert batch.describe_job(JobId=job_id)["Job"]["Status"] == "Complete"
    rows = read_report(local_env, "b", job_id)["rows"]
    assert sorted(r[1] for r in rows["succeeded"]) == keys and "failed" not in rows
    assert all(local_env.get("b", k) is None for k in keys)
    assert sorted(messages) == list(range(len(keys)))  # the process engine ran it


def test_batched_invocations_run_under_the_process_engine(
    local_env: Env, log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An engine worker starts its own function processes (so it must not be daemonic)."""
    monkeypatch.setenv("S3BATCH_ENGINE", "process")
    monkeypatch.setenv("S3BATCH_PROCESSES", "2")
    keys = [f"p{i:03d}" for i in range(40)]
    out = run_job(local_env, "procs", keys, batched("answers", 8))
    assert out["rows"] == {k: ["succeeded", "200", "", f"done {k}"] for k in keys}
    calls = events(log)
    assert Counter(k for c in calls for k in c["keys"]) == dict.fromkeys(keys, 1)
    assert max(len(c["keys"]) for c in calls) <= 8
    parents = {c["pid"] for c in calls}  # the function processes' parent: an engine worker
    assert parents and os.getpid() not in parents
