"""A LambdaInvoke job whose function returns resultData, with a ResultsSink: one Parquet row per
task (read back with pyarrow from the bucket itself), each report row pointing at its row, data
the sink refuses failing only its own task, and a function's data dropped without a sink."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from conftest import Env, read_report, report_spec
from s3batch.operations.results_sink import TASK_FRAGMENT

pytestmark = pytest.mark.integration

HANDLER = """
def vectors(event, context):
    results = []
    for task in event["tasks"]:
        key = task["s3Key"]
        data = {"vector": [float(len(key)), 0.5], "label": key}
        if key.startswith("weird"):
            data = {"vector": {"not": "a list"}}  # an object: the sink refuses it
        results.append({"taskId": task["taskId"], "resultCode": "Succeeded",
                        "resultString": "ok " + key, "resultData": data})
    return {"invocationSchemaVersion": event["invocationSchemaVersion"],
            "treatMissingKeysAs": "PermanentFailure",
            "invocationId": event["invocationId"], "results": results}
"""


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "sink_handlers"
    folder.mkdir()
    (folder / "sink_probe.py").write_text(textwrap.dedent(HANDLER))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", str(folder))


def run(
    env: Env, bucket: str, keys: list[str], sink: dict[str, Any] | None
) -> tuple[str, dict[str, list[str]]]:
    env.make_bucket(bucket)
    for key in keys:
        env.put(bucket, key, b"x")
    operation: dict[str, Any] = {
        "FunctionArn": "python:sink_probe:vectors",
        "InvocationSchemaVersion": "2.0",
        "InvocationBatchSize": 4,
    }
    if sink is not None:
        operation["ResultsSink"] = sink
    batch = env.batch()
    job_id = batch.create_job(
        Operation={"LambdaInvoke": operation},
        Manifest=env.manifest(bucket, [(bucket, k) for k in keys]),
        Report=report_spec(bucket),
        Priority=1,
    )["JobId"]
    batch.run_until_idle()
    assert batch.describe_job(JobId=job_id)["Job"]["Status"] == "Complete"
    report = read_report(env, bucket, job_id)
    rows = {row[1]: row[3:] for status in report["rows"].values() for row in status}
    assert sorted(rows) == sorted(keys)
    return job_id, rows


def test_each_tasks_data_lands_in_parquet_and_its_report_row_points_there(
    env: Env, handlers: None, bucket_name: str
) -> None:
    keys = [f"k{i:02d}" for i in range(10)] + ["weird1"]
    sink = {"Parquet": {"Bucket": f"arn:aws:s3:::{bucket_name}", "Prefix": "vectors"}}
    job_id, rows = run(env, bucket_name, keys, sink)
    status, _, code, message = rows["weird1"]
    assert (status, code) == ("failed", "ResultDataRejected") and "vector" in message
    locations = {}
    for key in keys[:-1]:
        status, http, _, message = rows[key]
        assert (status, http) == ("succeeded", "200")
        location = message.split(" ", 1)[0]
        assert location.startswith(f"s3://{bucket_name}/vectors/job-{job_id}/") and TASK_FRAGMENT in location
        assert message.endswith(f"ok {key}")
        locations[key] = location
    files = {loc.split(TASK_FRAGMENT)[0] for loc in locations.values()}
    table_rows: list[dict[str, Any]] = []
    for uri in files:
        bucket, _, path = uri.removeprefix("s3://").partition("/")
        body = env.get(bucket, path)
        assert body is not None
        table_rows += pq.read_table(io.BytesIO(body)).to_pylist()
    assert sorted(r["key"] for r in table_rows) == sorted(keys[:-1])  # exactly one row per task
    by_key = {r["key"]: r for r in table_rows}
    assert by_key["k03"]["vector"] == pytest.approx([3.0, 0.5]) and by_key["k03"]["label"] == "k03"
    assert all(r["bucket"] == bucket_name and r["job_id"] == job_id for r in table_rows)


def test_without_a_sink_the_report_is_unchanged(local_env: Env, handlers: None) -> None:
    _, rows = run(local_env, "plain", ["a", "b"], None)
    assert rows == {"a": ["succeeded", "200", "", "ok a"], "b": ["succeeded", "200", "", "ok b"]}


def test_a_bad_sink_is_refused_at_create_job(local_env: Env) -> None:
    from s3batch.errors import ApiError

    local_env.make_bucket("b")
    with pytest.raises(ApiError) as caught:
        local_env.batch().create_job(
            Operation={"LambdaInvoke": {"FunctionArn": "s3batch-sentiment", "ResultsSink": {"Parquet": {}}}},
            Manifest=local_env.manifest("b", [("b", "k")]),
            Report=report_spec("b"),
            Priority=1,
        )
    assert "ResultsSink" in caught.value.message
