"""`s3batch query` and `create-job --manifest-query`, on the folder store and moto's S3 server:
inventories written by the tests themselves (gzip CSV with URL-encoded keys, Parquet, ORC),
completion reports of real jobs, the jobs table, output formats, errors and the SQL sandbox."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from test_inventory_jobs import KEYS, columnar, gzip_csv, put_inventory, run_job, seed

from conftest import Env, report_spec
from s3batch.cli import cli

pytestmark = pytest.mark.integration

#: Keys a manifest written from a query must carry through unchanged (comma, space, plus,
#: quote, percent, unicode).
ODD_KEYS = ["a,b.txt", "with space.txt", "plus+sign.txt", 'quote".txt', "100%.txt", "ünïcödé/ключ.txt"]
DATES = ["2020-01-01T00:00:00.000Z", "2024-05-01T12:30:00.000Z"]
CSV_SCHEMA = "Bucket, Key, Size, LastModifiedDate, StorageClass, IsDeleteMarker"
PARQUET_SCHEMA = "message s3.inventory { required binary bucket; required binary key; }"
COPY_PREFIX = "copied"


def s3batch(env: Env, *args: str, stdin: str | None = None) -> Result:
    """The `s3batch` command in this process, on `env`'s store and job store."""
    storage = f"file://{env.root}" if env.root else env.storage.endpoint_url  # type: ignore[union-attr]
    runner = CliRunner()
    return runner.invoke(
        cli, list(args), input=stdin, env={"S3BATCH_HOME": str(env.home), "S3BATCH_STORAGE": storage}
    )


def ok(result: Result) -> str:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    return result.stdout


def rows_of(env: Env, sql: str) -> list[dict[str, Any]]:
    return list(json.loads(ok(s3batch(env, "query", "--output", "json", sql))))


def inventory(env: Env, bucket: str, fmt: str, keys: list[str]) -> str:
    """An inventory of `keys` (sizes 1, 2, 3...; alternate dates and storage classes) in `fmt`;
    returns its manifest.json ARN."""
    sizes = list(range(1, len(keys) + 1))
    classes = ["STANDARD" if i % 2 == 0 else "GLACIER" for i in range(len(keys))]
    if fmt == "CSV":
        from urllib.parse import quote

        rows = [[bucket, quote(k), str(s), DATES[i % 2], classes[i], "false"]
                for i, (k, s) in enumerate(zip(keys, sizes, strict=True))]  # fmt: skip
        manifest = put_inventory(env, bucket, "CSV", CSV_SCHEMA, gzip_csv(rows))
    else:
        from datetime import datetime

        records = [
            {"bucket": bucket, "key": k, "size": s, "storage_class": classes[i],
             "last_modified_date": datetime.fromisoformat(DATES[i % 2].replace("Z", "+00:00"))}
            for i, (k, s) in enumerate(zip(keys, sizes, strict=True))
        ]  # fmt: skip
        manifest = put_inventory(env, bucket, fmt, PARQUET_SCHEMA, columnar(fmt, records))
    return str(manifest["Location"]["ObjectArn"])


# -- inventories --------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["CSV", "Parquet"])
def test_inventory_query_reads_keys_types_and_aggregates(env: Env, bucket_name: str, fmt: str) -> None:
    env.make_bucket(bucket_name)
    arn = inventory(env, bucket_name, fmt, KEYS)

    rows = rows_of(env, f"SELECT key, size FROM inventory('{arn}') ORDER BY size")
    # CSV keys are URL-encoded by AWS, Parquet keys plain: both read as the object's key.
    assert [r["key"] for r in rows] == KEYS
    by_class = rows_of(
        env,
        f"SELECT storage_class, count(*) AS n, sum(size) AS bytes, typeof(max(last_modified_date)) AS t "
        f"FROM inventory('s3://{bucket_name}/{arn.split('/', 1)[1]}') GROUP BY ALL ORDER BY 1",
    )
    assert by_class == [
        {"storage_class": "GLACIER", "n": 2, "bytes": 2 + 4, "t": "TIMESTAMP WITH TIME ZONE"},
        {"storage_class": "STANDARD", "n": 3, "bytes": 1 + 3 + 5, "t": "TIMESTAMP WITH TIME ZONE"},
    ]
    old = rows_of(
        env, f"SELECT count(*) AS n FROM inventory('{arn}') WHERE last_modified_date < DATE '2021-01-01'"
    )
    assert old == [{"n": 3}]


def test_orc_inventory_is_queried_too(local_env: Env) -> None:
    local_env.make_bucket("inv")
    arn = inventory(local_env, "inv", "ORC", KEYS)
    rows = rows_of(local_env, f"SELECT key FROM inventory('{arn}') WHERE size >= 4 ORDER BY key")
    assert [r["key"] for r in rows] == sorted(KEYS[3:])


def test_one_inventory_named_twice_is_read_as_one_table(local_env: Env) -> None:
    local_env.make_bucket("inv")
    arn = inventory(local_env, "inv", "Parquet", KEYS)
    rows = rows_of(
        local_env,
        f"SELECT count(*) AS n FROM inventory('{arn}') a JOIN inventory('{arn}') b USING (key) "
        f"WHERE a.size = b.size",
    )
    assert rows == [{"n": len(KEYS)}]


# -- completion reports and jobs ----------------------------------------------------------


def test_report_of_a_job_with_failures_counts_by_cause(env: Env, bucket_name: str) -> None:
    present, missing = ["a.txt", "b c.txt", "ü.txt"], ["gone-1.txt", "gone,2.txt"]
    seed(env, bucket_name, present)
    manifest = env.manifest(bucket_name, [(bucket_name, k) for k in present + missing])
    tagging = {"S3PutObjectTagging": {"TagSet": [{"Key": "k", "Value": "v"}]}}
    job_id, job = run_job(env, bucket_name, tagging, Manifest=manifest)
    assert job["ProgressSummary"]["NumberOfTasksFailed"] == len(missing)
    other_id, _ = run_job(env, bucket_name, {"S3DeleteObject": {}}, Manifest=manifest)

    causes = rows_of(
        env,
        f"SELECT task_status, error_code, http_status_code, count(*) AS n FROM report('{job_id}') "
        "GROUP BY ALL ORDER BY task_status",
    )
    assert causes == [
        {"task_status": "failed", "error_code": "NoSuchKey", "http_status_code": 404, "n": len(missing)},
        {"task_status": "succeeded", "error_code": None, "http_status_code": 200, "n": len(present)},
    ]
    failed = rows_of(env, f"SELECT key FROM report('{job_id}') WHERE task_status = 'failed' ORDER BY key")
    assert [r["key"] for r in failed] == sorted(missing)  # decoded, as in the manifest

    per_job = rows_of(env, "SELECT job_id, count(*) AS n FROM reports GROUP BY ALL ORDER BY job_id")
    assert per_job == sorted(
        [{"job_id": job_id, "n": len(present + missing)}, {"job_id": other_id, "n": len(present + missing)}],
        key=lambda r: r["job_id"],
    )
    jobs = rows_of(env, "SELECT job_id, status, operation, total_tasks, failed FROM jobs ORDER BY created")
    assert jobs == [
        {"job_id": job_id, "status": "Complete", "operation": "S3PutObjectTagging",
         "total_tasks": 5, "failed": len(missing)},
        {"job_id": other_id, "status": "Complete", "operation": "S3DeleteObject",
         "total_tasks": 5, "failed": 0},
    ]  # fmt: skip


def test_pipeline_report_reads_the_pipelines_state(local_env: Env, tmp_path: Path) -> None:
    from s3batch.domain.report import ReportRow
    from s3batch.pipelines.state import PipelineState

    pipeline = tmp_path / "thumbs.toml"
    pipeline.write_text(
        'name = "thumbs"\nsource = "staging"\noperation = {S3DeleteObject = {}}\non_success = "leave"\n'
    )
    state = PipelineState(tmp_path / "thumbs.pipeline.sqlite3")
    state.processed(1, ReportRow("staging", "in/a+b.csv", "", "succeeded", "200", "", "ok"), "run-1")
    state.processed(2, ReportRow("staging", "in/c.csv", "", "failed", "500", "HandlerError", "boom"), "run-2")
    state.close()

    rows = rows_of(local_env, f"SELECT * FROM pipeline_report('{pipeline}') ORDER BY run_id")
    assert rows == [
        {"run_id": "run-1", "bucket": "staging", "key": "in/a b.csv", "version_id": None,
         "task_status": "succeeded", "error_code": None, "http_status_code": 200, "result_message": "ok"},
        {"run_id": "run-2", "bucket": "staging", "key": "in/c.csv", "version_id": None,
         "task_status": "failed", "error_code": "HandlerError", "http_status_code": 500,
         "result_message": "boom"},
    ]  # fmt: skip
    missing = s3batch(local_env, "query", f"SELECT * FROM pipeline_report('{tmp_path}/nope.toml')")
    assert missing.exit_code == 1 and "cannot read pipeline file" in missing.output


def test_unknown_job_is_a_clear_error(local_env: Env) -> None:
    result = s3batch(local_env, "query", "SELECT * FROM report('4f1c0e9e-0000-4000-8000-000000000000')")
    assert result.exit_code == 1
    assert "report('4f1c0e9e-0000-4000-8000-000000000000'): no such job" in result.output


def test_empty_job_store_has_empty_tables(local_env: Env) -> None:
    assert rows_of(local_env, "SELECT count(*) AS n FROM jobs") == [{"n": 0}]
    assert rows_of(local_env, "SELECT count(*) AS n, count(job_id) AS j FROM reports") == [{"n": 0, "j": 0}]


# -- output -------------------------------------------------------------------------------


def test_output_formats(local_env: Env) -> None:
    local_env.make_bucket("inv")
    arn = inventory(local_env, "inv", "CSV", ODD_KEYS)
    sql = f"SELECT key, size, last_modified_date FROM inventory('{arn}') ORDER BY size"

    parsed = list(csv.reader(io.StringIO(ok(s3batch(local_env, "query", "-o", "csv", sql)))))
    assert parsed[0] == ["key", "size", "last_modified_date"]
    assert [r[0] for r in parsed[1:]] == ODD_KEYS
    assert parsed[1][1:] == ["1", "2020-01-01T00:00:00.000000+00:00"]

    as_json = json.loads(ok(s3batch(local_env, "query", "-o", "json", sql)))
    assert as_json[0] == {
        "key": ODD_KEYS[0],
        "size": 1,
        "last_modified_date": "2020-01-01T00:00:00.000000+00:00",
    }

    table = ok(s3batch(local_env, "query", "--max-rows", "2", sql))
    assert "BIGINT" in table and ODD_KEYS[0] in table and ODD_KEYS[2] not in table
    assert f"First 2 of {len(ODD_KEYS)} rows" in table
    assert f"{len(ODD_KEYS)} rows" in ok(s3batch(local_env, "query", sql))

    from_stdin = ok(s3batch(local_env, "query", "-o", "csv", "-", stdin="SELECT 42 AS answer"))
    assert from_stdin == "answer\n42\n"
    nested = ok(s3batch(local_env, "query", "-o", "csv", "SELECT [1, 2] AS l, NULL AS n, 'x' AS s"))
    assert list(csv.reader(io.StringIO(nested))) == [["l", "n", "s"], ["[1, 2]", "", "x"]]


# -- errors and the sandbox ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELEC 1", 'syntax error at or near "SELEC"'),
        ("SELECT 1; SELECT 2", "one statement at a time"),
        ("SELECT * FROM inventory(42)", "inventory() takes one string literal"),
        ("SELECT * FROM inventory('inv/manifest.json')", "expected arn:aws:s3:::bucket/path/manifest.json"),
        ("SELECT * FROM inventory('s3://nobucket/manifest.json')", "cannot read s3://nobucket/manifest.json"),
        ("SELECT * FROM report('not a job')", "not a job id"),
        ("SELECT * FROM no_such_table", "no_such_table"),
        # The sandbox: no local files, no extensions, no settings changed back.
        ("SELECT * FROM read_csv('/etc/hostname')", "disabled by configuration"),
        ("INSTALL httpfs", "disabled by configuration"),
        ("SET enable_external_access = true", "configuration has been locked"),
        ("COPY (SELECT 1) TO 's3batch://inv/out.csv'", "never writes"),
    ],
)
def test_bad_queries_exit_1_naming_the_problem(local_env: Env, sql: str, message: str) -> None:
    result = s3batch(local_env, "query", sql)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_only_the_named_inventories_data_files_are_readable(local_env: Env) -> None:
    local_env.make_bucket("inv")
    arn = inventory(local_env, "inv", "Parquet", KEYS)
    local_env.put("inv", "secret.txt", b"not for queries")
    data_file = "s3batch://inv/inv/src/cfg/data/4c2f-a1.parquet"
    sql = f"SELECT (SELECT count(*) FROM inventory('{arn}')) AS n, filename FROM read_blob('s3batch://inv/*')"
    # The data file is served once its inventory is named; another object never is.
    assert rows_of(local_env, sql) == [{"n": len(KEYS), "filename": data_file}]
    assert rows_of(local_env, "SELECT count(*) AS n FROM read_blob('s3batch://inv/secret.txt')") == [{"n": 0}]


def test_a_bad_value_in_an_inventory_names_it(local_env: Env) -> None:
    local_env.make_bucket("inv")
    rows = [["inv", "a.txt", "not-a-number", DATES[0], "STANDARD", "false"]]
    manifest = put_inventory(local_env, "inv", "CSV", CSV_SCHEMA, gzip_csv(rows))
    result = s3batch(
        local_env, "query", f"SELECT sum(size) FROM inventory('{manifest['Location']['ObjectArn']}')"
    )
    assert result.exit_code == 1
    assert "not-a-number" in result.output


# -- create-job --manifest-query ----------------------------------------------------------


def create_args(bucket: str, sql: str, *extra: str) -> list[str]:
    copy = {
        "S3PutObjectCopy": {"TargetResource": f"arn:aws:s3:::{bucket}-dst", "TargetKeyPrefix": COPY_PREFIX}
    }
    return [
        "create-job", "--manifest-query", sql, "--operation", json.dumps(copy),
        "--report", json.dumps(report_spec(bucket)), "--priority", "10", "--no-confirmation-required", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", ["CSV", "Parquet"])
def test_manifest_query_job_acts_on_exactly_the_selected_objects(
    env: Env, bucket_name: str, fmt: str
) -> None:
    seed(env, bucket_name, ODD_KEYS)
    env.make_bucket(bucket_name + "-dst")
    arn = inventory(env, bucket_name, fmt, ODD_KEYS)
    sql = f"SELECT bucket, key FROM inventory('{arn}') WHERE size % 2 = 1"  # sizes 1, 3, 5
    result = s3batch(env, *create_args(bucket_name, sql, "--wait"))

    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)["Job"]
    assert job["Status"] == "Complete"
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 3
    chosen = ODD_KEYS[0::2]
    for key in ODD_KEYS:
        copied = env.get(bucket_name + "-dst", f"{COPY_PREFIX}/{key}")
        assert copied == (f"body of {key}".encode() if key in chosen else None), key
    # The manifest is kept under the report prefix, keys URL-encoded as a CSV manifest's are.
    location = job["Manifest"]["Location"]["ObjectArn"]
    assert location.startswith(f"arn:aws:s3:::{bucket_name}/reports/s3batch-query-manifests/")
    body = env.get(bucket_name, location.split("/", 1)[1])
    assert body is not None and body.decode().splitlines()[0] == f"{bucket_name},a%2Cb.txt"


def test_manifest_query_with_versions_and_an_output_location(local_env: Env) -> None:
    seed(local_env, "data", ["x.txt"])
    local_env.make_bucket("data-dst")
    sql = "SELECT 'data' AS bucket, 'x.txt' AS key, NULL AS version_id"
    out = "arn:aws:s3:::data/manifests/mine.csv"
    result = s3batch(local_env, *create_args("data", sql, "--manifest-query-output", out, "--wait"))
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)["Job"]
    assert job["Manifest"]["Spec"]["Fields"] == ["Bucket", "Key", "VersionId"]
    assert job["Manifest"]["Location"]["ObjectArn"] == out
    # No version id is S3's "null" version, which a folder store (one version per key) serves.
    assert local_env.get("data", "manifests/mine.csv") == b"data,x.txt,null\n"
    assert local_env.get("data-dst", f"{COPY_PREFIX}/x.txt") == b"body of x.txt"


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("SELECT 'data' AS bucket", "(found: bucket)"),
        ("SELECT 'data' AS bucket, 'k' AS key, 1 AS size", "(found: bucket, key, size)"),
        ("SELECT 'data' AS bucket, 'k' AS key WHERE false", "selected no objects"),
        ("SELECT '' AS bucket, 'k' AS key", "row 1: bucket is empty"),
    ],
)
def test_manifest_query_refuses_an_unusable_answer(local_env: Env, sql: str, message: str) -> None:
    local_env.make_bucket("data")
    result = s3batch(local_env, *create_args("data", sql))
    assert result.exit_code != 0
    assert message in result.output
    assert rows_of(local_env, "SELECT count(*) AS n FROM jobs") == [{"n": 0}]


def test_manifest_query_excludes_other_manifests(local_env: Env) -> None:
    local_env.make_bucket("data")
    args = create_args("data", "SELECT 'data' AS bucket, 'k' AS key")
    manifest = local_env.manifest("data", [("data", "k")])
    result = s3batch(local_env, *args, "--manifest", json.dumps(manifest))
    assert result.exit_code == 2
    assert "--manifest-query replaces --manifest" in result.output


def test_python_variables_are_not_tables(local_env: Env) -> None:
    import pyarrow as pa  # type: ignore[import-untyped]

    from s3batch.service.query import QueryError, QuerySession
    from s3batch.settings import Settings

    secret_rows = pa.table({"x": [1]})
    with QuerySession(Settings(home=local_env.home), local_env.storage) as session:
        with pytest.raises(QueryError, match="secret_rows does not exist"):
            session.run("SELECT * FROM secret_rows")
        settings = session.run(
            "SELECT current_setting('enable_external_access') AS external, "
            "current_setting('lock_configuration') AS locked"
        )
        assert [row for batch in settings.batches for row in batch.to_pylist()] == [
            {"external": False, "locked": True}
        ]
    assert secret_rows.num_rows == 1
