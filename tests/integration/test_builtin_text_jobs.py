"""The text built-ins (s3batch-language, -pii, -profile-csv) as whole LambdaInvoke jobs, on a
folder store and on moto's S3 server, checked in the completion report."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import Env, read_report, report_spec

pytestmark = pytest.mark.integration
ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"


@pytest.fixture(autouse=True)
def small_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("S3BATCH_FUNCTION_WORKERS", "2")


@dataclass(frozen=True)
class Ran:
    #: Completion report rows by status, then key.
    rows: dict[str, dict[str, list[str]]]
    #: Every report file's text, joined.
    report_text: str


def run_job(
    env: Env,
    function: str,
    objects: dict[str, bytes],
    listed: list[str],
    arguments: dict[str, str] | None = None,
    batch_size: int | None = None,
    sink: dict[str, Any] | None = None,
) -> Ran:
    """Put `objects` in bucket `data` and run `function` over `listed` (schema 2.0 with
    `arguments`, `batch_size` tasks per invocation and a ResultsSink when given)."""
    env.make_bucket("data")
    for key, body in objects.items():
        env.put("data", key, body)
    operation: dict[str, Any] = {"FunctionArn": ARN.format(function)}
    if arguments is not None:
        operation |= {"InvocationSchemaVersion": "2.0", "UserArguments": arguments}
    if batch_size is not None:
        operation["InvocationBatchSize"] = batch_size
    if sink is not None:
        operation["ResultsSink"] = sink
    batch = env.batch()
    job_id = batch.create_job(
        Operation={"LambdaInvoke": operation},
        Manifest=env.manifest("data", [("data", key) for key in listed]),
        Report=report_spec("data"),
        Priority=1,
    )["JobId"]
    batch.run_until_idle()
    assert batch.describe_job(JobId=job_id)["Job"]["Status"] == "Complete"
    rows = read_report(env, "data", job_id)["rows"]
    files = env.report_files("data", "reports", job_id)
    return Ran(
        {status: {row[1]: row for row in status_rows} for status, status_rows in rows.items()},
        b"".join(files.values()).decode(),
    )


def test_language_job(env: Env) -> None:
    pytest.importorskip("lingua")
    objects = {
        "en.txt": b"The committee will meet again next week to review the budget and the hiring plan.",
        "es.txt": "El comité se reunirá de nuevo la próxima semana para revisar el presupuesto.".encode(),
        "digits.txt": b"12345 67890",
        "latin1.txt": "Le comité se réunira".encode("latin-1"),
    }
    rows = run_job(env, "s3batch-language", objects, [*objects, "missing.txt"]).rows
    ok = {key: json.loads(row[6])["Languages"] for key, row in rows["succeeded"].items()}
    assert ok["en.txt"][0]["LanguageCode"] == "en" and ok["es.txt"][0]["LanguageCode"] == "es"
    assert ok["digits.txt"] == []
    failed = {key: row[5:7] for key, row in rows["failed"].items()}
    assert failed["latin1.txt"] == [
        "PermanentFailure",
        "InvalidEncoding: the object is not UTF-8 text (invalid byte at offset 8)",
    ]
    assert failed["missing.txt"][0] == "PermanentFailure" and failed["missing.txt"][1].startswith("NoSuchKey")


PEOPLE_CSV = (
    "name,email,card,phone\n"
    "Ann,ann@example.com,4111 1111 1111 1111,+1 212 555 0187\n"
    '"Bo, Jr",bo@example.org,4111 1111 1111 1112,n/a\n'
)
NOTE = "Wire to DE89 3704 0044 0532 0130 00, SSN 123-45-6789, key AKIAIOSFODNN7EXAMPLE, host 10.0.0.7."
VALUES = [
    "ann@example.com",
    "bo@example.org",
    "4111 1111 1111 1111",
    "+1 212 555 0187",
    "DE89 3704 0044 0532 0130 00",
    "123-45-6789",
    "AKIAIOSFODNN7EXAMPLE",
    "10.0.0.7",
]


def test_pii_job_reports_positions_never_values(env: Env) -> None:
    objects = {"people.csv": PEOPLE_CSV.encode(), "note.txt": NOTE.encode(), "bad.txt": b"\xff\xfe"}
    ran = run_job(env, "s3batch-pii", objects, list(objects), arguments={"Format": "auto"})
    rows = ran.rows
    people = json.loads(rows["succeeded"]["people.csv"][6])
    assert people["Counts"] == {"EMAIL": 2, "CREDIT_DEBIT_NUMBER": 1, "PHONE": 1}  # 1112 fails Luhn
    cells = [(e["Type"], e["Row"], e["Column"]) for e in people["Entities"]]
    assert cells == [("EMAIL", 2, 2), ("CREDIT_DEBIT_NUMBER", 2, 3), ("PHONE", 2, 4), ("EMAIL", 3, 2)]
    note = json.loads(rows["succeeded"]["note.txt"][6])
    assert [(e["Type"], NOTE[e["BeginOffset"] : e["EndOffset"]]) for e in note["Entities"]] == [
        ("INTERNATIONAL_BANK_ACCOUNT_NUMBER", VALUES[4]),
        ("SSN", VALUES[5]),
        ("AWS_ACCESS_KEY", VALUES[6]),
        ("IP_ADDRESS", VALUES[7]),
    ]
    assert "Row" not in note["Entities"][0]  # a .txt object is text, not CSV
    assert rows["failed"]["bad.txt"][5] == "PermanentFailure"
    # Nothing of what was found reaches the report files.
    assert "EMAIL" in ran.report_text
    for value in VALUES:
        assert value not in ran.report_text


def test_pii_batched_invocations_mix_csv_and_text_objects(local_env: Env) -> None:
    objects = {"a.csv": PEOPLE_CSV.encode(), "b.txt": NOTE.encode(), "c.csv": PEOPLE_CSV.encode()}
    ran = run_job(local_env, "s3batch-pii", objects, [*objects, "gone.txt"], {"Format": "auto"}, batch_size=4)
    found = {key: json.loads(row[6]) for key, row in ran.rows["succeeded"].items()}
    assert found["a.csv"] == found["c.csv"] and found["a.csv"]["Entities"][0]["Row"] == 2
    assert found["b.txt"]["Counts"] == {
        "INTERNATIONAL_BANK_ACCOUNT_NUMBER": 1,
        "SSN": 1,
        "AWS_ACCESS_KEY": 1,
        "IP_ADDRESS": 1,
    }
    assert "Row" not in found["b.txt"]["Entities"][0]
    assert ran.rows["failed"]["gone.txt"][6].startswith("NoSuchKey")


def test_profile_csv_job(env: Env) -> None:
    sales = "id,amount,day,region\n" + "".join(
        f"{i},{i * 1.5},2024-03-{1 + i % 28:02d},{'north' if i % 3 else ''}\n" for i in range(1, 301)
    )
    objects = {"sales.csv": sales.encode(), "bad.csv": b"a,b\n1,\xff\n"}
    rows = run_job(env, "s3batch-profile-csv", objects, list(objects)).rows
    brief = json.loads(rows["succeeded"]["sales.csv"][6])
    assert (brief["RowsProfiled"], brief["Header"], brief["Truncated"]) == (300, True, False)
    assert brief["Columns"] == [
        {"Name": "id", "Type": "integer", "MissingCount": 0, "DistinctCount": 300},
        {"Name": "amount", "Type": "float", "MissingCount": 0, "DistinctCount": 300},
        {"Name": "day", "Type": "date", "MissingCount": 0, "DistinctCount": 28},
        {"Name": "region", "Type": "string", "MissingCount": 100, "DistinctCount": 1},
    ]
    assert rows["failed"]["bad.csv"][5:7] == [
        "PermanentFailure",
        "InvalidEncoding: the object is not UTF-8 text (invalid byte at offset 6)",
    ]


def test_profile_csv_full_profile_lands_in_a_parquet_results_sink(local_env: Env) -> None:
    import pyarrow.parquet as pq

    objects = {"a.csv": b"id,city\n1,Oslo\n2,\n3,Lima\n"}
    sink = {"Parquet": {"Bucket": "arn:aws:s3:::data", "Prefix": "profiles"}}
    ran = run_job(local_env, "s3batch-profile-csv", objects, list(objects), sink=sink)
    location, _, brief = ran.rows["succeeded"]["a.csv"][6].partition(" ")
    assert json.loads(brief)["RowsProfiled"] == 3
    uri = location.split("#", 1)[0]
    assert local_env.root is not None and uri.startswith("s3://data/profiles/")
    [row] = pq.read_table(local_env.root / "data" / uri.removeprefix("s3://data/")).to_pylist()
    assert (row["key"], row["rows_profiled"], row["column_names"], row["column_types"]) == (
        "a.csv",
        3,
        ["id", "city"],
        ["integer", "string"],
    )
    city = json.loads(row["profile"])["Columns"][1]
    assert (city["Count"], city["MissingCount"], city["Min"], city["Max"]) == (2, 1, "Lima", "Oslo")
