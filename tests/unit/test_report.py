"""Completion report rows and manifest.json in AWS's exact layout."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from s3batch.domain.report import (
    REPORT_SCHEMA,
    ReportRow,
    ResultFile,
    manifest_key,
    parse_rows,
    render_manifest,
    render_rows,
    results_key,
)
from s3batch.domain.task import Task, TaskResult


def task(key: str = "a%20b", version: str | None = None) -> Task:
    return Task(seq=0, bucket="bkt", raw_key=key, key=key, version_id=version)


def test_columns_are_in_aws_actual_order_http_status_before_error_code() -> None:
    row = ReportRow.of(task(), TaskResult.fail("NoSuchKey", "The key does not exist", 404))
    assert render_rows([row]) == "bkt,a%20b,,failed,404,NoSuchKey,The key does not exist\n"
    # ...while the schema string keeps AWS's (contradicting) wording verbatim.
    assert REPORT_SCHEMA.index("ErrorCode") < REPORT_SCHEMA.index("HTTPStatusCode")


def test_success_row_and_quoting_of_lambda_result_strings() -> None:
    ok = ReportRow.of(task(version="v1"), TaskResult.ok('["Alice", "Bob"]'))
    assert render_rows([ok]) == 'bkt,a%20b,v1,succeeded,200,,"[""Alice"", ""Bob""]"\n'


def test_no_http_answer_leaves_the_status_column_empty() -> None:
    row = ReportRow.of(task(), TaskResult.fail("RequestTimeout", "reset", None))
    assert render_rows([row]).split(",")[4] == ""


def test_manifest_json_layout() -> None:
    files = [ResultFile("failed", "reports", "p/job-1/results/abc.csv", "0" * 32)]
    doc = json.loads(render_manifest(files, datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)))
    assert doc == {
        "Format": "Report_CSV_20180820",
        "ReportCreationDate": "2024-01-02T03:04:05.678Z",
        "Results": [
            {
                "TaskExecutionStatus": "failed",
                "Bucket": "reports",
                "MD5Checksum": "0" * 32,
                "Key": "p/job-1/results/abc.csv",
            }
        ],
        "ReportSchema": REPORT_SCHEMA,
    }


def test_report_keys_with_and_without_prefix() -> None:
    assert manifest_key("p/", "j") == "p/job-j/manifest.json"
    assert manifest_key(None, "j") == "job-j/manifest.json"
    assert results_key("p", "j", "f" * 40) == f"p/job-j/results/{'f' * 40}.csv"


text = st.text(st.characters(blacklist_categories=["Cs"]), max_size=40)


@given(st.lists(st.tuples(text, text, text), max_size=10))
def test_rows_round_trip_through_csv(values: list[tuple[str, str, str]]) -> None:
    rows = [ReportRow("b", k, "", "failed", "500", c, m) for k, c, m in values]
    assert parse_rows(render_rows(rows)) == rows
