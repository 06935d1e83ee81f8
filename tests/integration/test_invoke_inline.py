"""Built-ins that run inline, in the engine's process (functions/inline.py): the same answers as
in function worker processes, through the engine's own store, with Lambda's error contract."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import pytest

import s3batch.functions.pool as pool_module
from conftest import Env, read_report, report_spec
from s3batch.domain.function import FunctionSpec
from s3batch.functions.inline import FunctionInvoker, InlineFunction
from s3batch.functions.objects import STORAGE_CONFIG_ENV
from s3batch.functions.pool import FunctionPool, InvokeOutcome
from s3batch.functions.registry import BUILTIN_FUNCTIONS, INLINE_BUILTINS
from s3batch.storage.memory import MemoryStore

pytestmark = pytest.mark.integration
ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"
#: Seconds a test waits for an abandoned (timed-out) handler thread to finish.
THREAD_FINISH_S = 5.0
#: Seconds a stuck call sleeps: far past its timeout, short enough not to hold the test run's exit.
STUCK_S = 3.0
#: Longest the call after a stuck one may take (it must not wait for the stuck thread).
NOT_BEHIND_S = 1.0

TEXTS = {
    "happy.txt": b"I love this, it is wonderful and great!",
    "sad.txt": b"The train is late again and the room was awful.",
    "pii.txt": b"Contact jane.doe@example.com or +44 20 7946 0958.",
    "people.csv": b"id,email,amount\n1,ann@example.com,3.5\n2,bo@example.org,4\n",
    "latin1.txt": "Le comité se réunira".encode("latin-1"),
    "with space+plus.txt": b"A key that needs URL-encoding in the manifest.",
}
INLINE = ["s3batch-sentiment", "s3batch-pii", "s3batch-profile-csv", "s3batch-language"]


def python_arn(function: str) -> str:
    """The same built-in named by its handler: it then runs in worker processes."""
    return "python:" + BUILTIN_FUNCTIONS[function]


def run_job(env: Env, arn: str, keys: list[str], batch_size: int) -> dict[str, list[list[str]]]:
    """Report rows by status (sorted) of a job over `keys` of bucket `data`."""
    batch = env.batch()
    job_id = batch.create_job(
        Operation={
            "LambdaInvoke": {
                "FunctionArn": arn,
                "InvocationSchemaVersion": "2.0",
                "InvocationBatchSize": batch_size,
            }
        },
        Manifest=env.manifest("data", [("data", key) for key in keys], key=f"m-{abs(hash(arn))}.csv"),
        Report=report_spec("data"),
        Priority=1,
    )["JobId"]
    batch.run_until_idle()
    assert batch.describe_job(JobId=job_id)["Job"]["Status"] == "Complete"
    return {status: sorted(rows) for status, rows in read_report(env, "data", job_id)["rows"].items()}


@pytest.mark.parametrize("function", INLINE)
def test_inline_jobs_report_what_worker_processes_report(
    env: Env, function: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if function == "s3batch-language":
        pytest.importorskip("lingua")
    # Pure-Python built-ins run inline only when the job may use one worker (registry.runs_inline).
    monkeypatch.setenv("S3BATCH_FUNCTION_WORKERS", "2" if function in INLINE_BUILTINS else "1")
    env.make_bucket("data")
    for key, body in TEXTS.items():
        env.put("data", key, body)
    keys = [*TEXTS, "missing.txt"]
    events: list[int] = []
    real_invoke = InlineFunction.invoke

    async def counted(self: InlineFunction, event: dict[str, Any]) -> InvokeOutcome:
        events.append(len(event["tasks"]))
        return await real_invoke(self, event)

    monkeypatch.setattr(InlineFunction, "invoke", counted)
    inline = run_job(env, ARN.format(function), keys, batch_size=3)
    assert sum(events) == len(keys) and max(events) == 3  # every task went inline, 3 per event
    events.clear()
    in_workers = run_job(env, python_arn(function), keys, batch_size=3)
    assert events == []
    assert inline == in_workers
    assert sum(len(rows) for rows in inline.values()) == len(keys)
    [missing] = [row for row in inline["failed"] if row[1] == "missing.txt"]
    assert missing[5] == "PermanentFailure" and missing[6].startswith("NoSuchKey")


def test_an_inline_builtin_starts_no_worker_process(local_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_workers(self: FunctionPool) -> Any:
        raise AssertionError("an inline built-in started a function worker")

    monkeypatch.setattr(FunctionPool, "_spawn", no_workers)
    monkeypatch.setenv("S3BATCH_FUNCTION_WORKERS", "1")
    local_env.make_bucket("data")
    local_env.put("data", "happy.txt", TEXTS["happy.txt"])
    rows = run_job(local_env, ARN.format("s3batch-sentiment"), ["happy.txt"], batch_size=1)
    assert json.loads(rows["succeeded"][0][6])["Sentiment"] == "POSITIVE"


def test_inline_builtins_run_under_the_process_engine(
    local_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3BATCH_ENGINE", "process")
    monkeypatch.setenv("S3BATCH_PROCESSES", "2")
    monkeypatch.setenv("S3BATCH_FUNCTION_WORKERS", "1")
    local_env.make_bucket("data")
    keys = [f"t/{i:03d}.txt" for i in range(40)]
    for i, key in enumerate(keys):
        local_env.put("data", key, TEXTS["happy.txt" if i % 2 else "sad.txt"])
    rows = run_job(local_env, ARN.format("s3batch-sentiment"), [*keys, "missing.txt"], batch_size=8)
    labels = {row[1]: json.loads(row[6])["Sentiment"] for row in rows["succeeded"]}
    assert labels == {key: "POSITIVE" if i % 2 else "NEGATIVE" for i, key in enumerate(keys)}
    assert [row[1] for row in rows["failed"]] == ["missing.txt"]


def test_pure_python_builtins_use_worker_processes_kept_warm_for_the_next_job(
    local_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3BATCH_FUNCTION_WORKERS", "2")
    spawned: list[int] = []
    real_spawn = FunctionPool._spawn

    def counted_spawn(self: FunctionPool) -> Any:
        spawned.append(1)
        return real_spawn(self)

    async def not_inline(self: InlineFunction, event: dict[str, Any]) -> InvokeOutcome:
        raise AssertionError("a pure-Python built-in ran inline with two workers allowed")

    monkeypatch.setattr(FunctionPool, "_spawn", counted_spawn)
    monkeypatch.setattr(InlineFunction, "invoke", not_inline)
    local_env.make_bucket("data")
    keys = [f"t/{i:03d}.txt" for i in range(20)]
    for i, key in enumerate(keys):
        local_env.put("data", key, TEXTS["happy.txt" if i % 2 else "sad.txt"])
    first = run_job(local_env, ARN.format("s3batch-sentiment"), keys, batch_size=4)
    assert 1 <= len(spawned) <= 2
    spawned.clear()
    second = run_job(local_env, ARN.format("s3batch-sentiment"), keys, batch_size=4)
    assert spawned == []  # the first job's workers served it: no process started
    assert first == second and len(first["succeeded"]) == len(keys)


def test_a_users_handler_is_not_kept_warm(local_env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3BATCH_FUNCTION_WORKERS", "1")
    local_env.make_bucket("data")
    local_env.put("data", "happy.txt", TEXTS["happy.txt"])
    pool_module.KEPT.clear(lambda worker: worker.process.kill())
    run_job(local_env, python_arn("s3batch-sentiment"), ["happy.txt"], batch_size=1)
    assert pool_module.KEPT.idle() == 1  # the built-in's own code, named by its handler: kept
    pool_module.KEPT.clear(lambda worker: worker.process.kill())
    handlers = Path(__file__).parent.parent / "fixtures" / "handlers"
    monkeypatch.chdir(handlers)
    run_job(local_env, "python:job_handlers:succeeds", ["happy.txt"], batch_size=1)
    assert pool_module.KEPT.idle() == 0  # its code may change before the next job


# -- InlineFunction itself ---------------------------------------------------------------------


def event_for(bucket: str, keys: list[str], arguments: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "invocationSchemaVersion": "2.0",
        "invocationId": "inv",
        "job": {"id": "job", "userArguments": arguments or {}},
        "tasks": [
            {"taskId": f"t{i}", "s3Key": quote_plus(key, safe="/"), "s3VersionId": None, "s3Bucket": bucket}
            for i, key in enumerate(keys)
        ],
    }


def builtin_spec(function: str, timeout_s: float = 30.0) -> FunctionSpec:
    return FunctionSpec(
        arn=ARN.format(function), name=function, handler=BUILTIN_FUNCTIONS[function], timeout_s=timeout_s
    )


async def memory_store() -> MemoryStore:
    store = MemoryStore()
    await store.create_bucket("data")
    for key, body in TEXTS.items():
        await store.put_bytes("data", key, body)
    return store


@pytest.mark.parametrize(
    ("function", "arguments"),
    [("s3batch-sentiment", None), ("s3batch-pii", {"Format": "auto"}), ("s3batch-profile-csv", None)],
)
async def test_inline_reads_the_given_store_and_answers_plain_json(
    function: str, arguments: dict[str, str] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No storage config in the environment: a handler reading through a store of its own fails.
    monkeypatch.delenv(STORAGE_CONFIG_ENV, raising=False)
    store = await memory_store()
    event = event_for("data", [*TEXTS, "missing.txt"], arguments)
    inline = InlineFunction(builtin_spec(function), store, concurrency=2, fallback=no_fallback)
    try:
        outcome = await inline.invoke(event)
    finally:
        await inline.close()
    assert outcome.error is None, outcome.error
    results = outcome.payload["results"]
    assert [r["taskId"] for r in results] == [t["taskId"] for t in event["tasks"]]
    # A worker's answer is JSON-decoded; an inline one is used as is: they must be equal.
    assert json.loads(json.dumps(outcome.payload)) == outcome.payload
    assert results[-1]["resultCode"] == "PermanentFailure"
    assert results[-1]["resultString"].startswith("NoSuchKey")
    by_key = dict(zip(TEXTS, results, strict=False))
    assert by_key["people.csv"]["resultCode"] == "Succeeded"
    if function == "s3batch-profile-csv":
        assert by_key["people.csv"]["resultData"]["column_names"] == ["id", "email", "amount"]
    else:
        assert by_key["with space+plus.txt"]["resultCode"] == "Succeeded"  # the key was decoded


HANDLERS = """
import time

def slow(event, context):
    time.sleep(float(event["sleep"]))
    return {"slept": event["sleep"]}

def broken(event, context):
    raise ValueError("no good")
"""


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "inline_test_handlers.py").write_text(HANDLERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "inline_test_handlers"


def spec_for(handler: str, timeout_s: float = 30.0) -> FunctionSpec:
    return FunctionSpec(
        arn="arn:aws:lambda:us-east-1:1:function:f", name="f", handler=handler, timeout_s=timeout_s
    )


def no_fallback() -> FunctionInvoker:
    raise AssertionError("no invocation should have left the inline path")


class Workers:
    """Stands for the worker pool an inline function hands over to after a timeout."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.closed = False

    async def invoke(self, event: dict[str, Any]) -> InvokeOutcome:
        self.events.append(event)
        return InvokeOutcome("in-a-worker", payload={"slept": event["sleep"], "by": "worker"})

    async def close(self) -> None:
        self.closed = True


async def test_after_a_timeout_the_next_calls_go_to_worker_processes_not_behind_the_stuck_thread(
    handlers: str,
) -> None:
    workers = Workers()
    inline = InlineFunction(
        spec_for(f"{handlers}:slow", timeout_s=0.2), MemoryStore(), concurrency=1, fallback=lambda: workers
    )
    try:
        first = await inline.invoke({"sleep": "0"})
        assert first.payload == {"slept": "0"} and workers.events == []  # inline while healthy
        outcome = await inline.invoke({"sleep": str(STUCK_S)})  # holds the only thread
        assert outcome.error is not None
        assert outcome.error["errorMessage"].endswith("Task timed out after 0.20 seconds")
        started = time.monotonic()
        after = await asyncio.wait_for(inline.invoke({"sleep": "0"}), THREAD_FINISH_S)
        assert after.payload == {"slept": "0", "by": "worker"}
        assert time.monotonic() - started < NOT_BEHIND_S
    finally:
        await inline.close()
    assert workers.closed


async def test_an_inline_exception_or_unloadable_handler_is_a_function_error(handlers: str) -> None:
    broken = InlineFunction(
        spec_for(f"{handlers}:broken"), MemoryStore(), concurrency=1, fallback=no_fallback
    )
    missing = InlineFunction(
        spec_for("no_such_module_here:handler"), MemoryStore(), concurrency=1, fallback=no_fallback
    )
    try:
        raised = await broken.invoke({})
        unloadable = await missing.invoke({})
    finally:
        await broken.close()
        await missing.close()
    assert raised.error is not None
    assert (raised.error["errorType"], raised.error["errorMessage"]) == ("ValueError", "no good")
    assert unloadable.error is not None
    assert unloadable.error["errorType"] == "Runtime.ImportModuleError"


async def test_a_closed_inline_function_takes_no_calls(handlers: str) -> None:
    inline = InlineFunction(spec_for(f"{handlers}:slow"), MemoryStore(), concurrency=1, fallback=no_fallback)
    await inline.close()
    with pytest.raises(RuntimeError, match="closed"):
        await inline.invoke({"sleep": "0"})
