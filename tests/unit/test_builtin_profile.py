"""s3batch-profile-csv's profile of CSV bytes, without I/O (functions/builtin/profile_csv.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from s3batch.functions.builtin import distinct, profile_csv
from s3batch.functions.builtin.distinct import DistinctCounter
from s3batch.functions.builtin.profile_csv import InvalidCsv, Options, summary


def columns(profile: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["Name"]: c for c in profile["Columns"]}


def test_types_counts_and_ranges() -> None:
    body = (
        "\ufeffid,price,day,at,flag,city,blank\n"
        "3,1.5,2024-01-02,2024-01-02T03:04:05Z,true,Paris,\n"
        "1,-2,2024-02-29,2024-01-02 01:00,FALSE,,NULL\n"
        "2,10,2023-12-31,2024-01-02T05:04:05+02:00,true,Lima,\n"
    ).encode()
    profile = profile_csv.profile_csv(body)
    assert (profile["RowsProfiled"], profile["Header"], profile["ColumnCount"]) == (3, True, 7)
    cols = columns(profile)
    assert {name: c["Type"] for name, c in cols.items()} == {
        "id": "integer",
        "price": "float",
        "day": "date",
        "at": "timestamp",
        "flag": "boolean",
        "city": "string",
        "blank": "string",
    }
    assert (cols["id"]["Min"], cols["id"]["Max"], cols["id"]["Mean"]) == (1, 3, 2.0)
    assert (cols["price"]["Min"], cols["price"]["Max"], cols["price"]["Mean"]) == (-2.0, 10.0, 3.166667)
    assert (cols["day"]["Min"], cols["day"]["Max"]) == ("2023-12-31", "2024-02-29")
    # Zoned values compare in UTC: 05:04:05+02:00 is 03:04:05Z.
    assert (cols["at"]["Min"], cols["at"]["Max"]) == ("2024-01-02T01:00:00", "2024-01-02T03:04:05")
    assert (cols["city"]["Count"], cols["city"]["MissingCount"], cols["city"]["Min"]) == (2, 1, "Lima")
    assert (cols["blank"]["Count"], cols["blank"]["MissingCount"], cols["blank"]["DistinctCount"]) == (
        0,
        3,
        0,
    )
    assert cols["flag"]["DistinctCount"] == 2 and "Min" not in cols["flag"]


def test_a_value_that_is_no_calendar_day_makes_the_column_string() -> None:
    cols = columns(profile_csv.profile_csv(b"d\n2023-02-28\n2023-02-29\n"))
    assert cols["d"]["Type"] == "string"
    assert (cols["d"]["Min"], cols["d"]["Max"]) == ("2023-02-28", "2023-02-29")


def test_a_late_block_can_widen_the_type(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tiny blocks: the first ones hold only integers, a later one a word; pyarrow's own
    # per-block inference would have failed there, and a profile of the first block lied.
    monkeypatch.setattr(profile_csv, "BLOCK_BYTES", 64)
    rows = [str(i) for i in range(200)] + ["n/a", "many", "7.5"]
    profile = profile_csv.profile_csv(("v\n" + "\n".join(rows) + "\n").encode())
    [col] = profile["Columns"]
    assert profile["RowsProfiled"] == 203
    assert (col["Type"], col["Count"], col["MissingCount"]) == ("string", 202, 1)
    assert (col["Min"], col["Max"]) == ("0", "many")
    assert col["DistinctCount"] == 202


def test_integers_then_floats_are_float_with_a_mean_over_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile_csv, "BLOCK_BYTES", 32)
    body = ("x\n" + "\n".join(["1"] * 50 + ["2.5"] * 50) + "\n").encode()
    [col] = profile_csv.profile_csv(body)["Columns"]
    assert (col["Type"], col["Min"], col["Max"], col["Mean"]) == ("float", 1.0, 2.5, 1.75)


def test_header_detection_and_names() -> None:
    no_header = profile_csv.profile_csv(b"1,2024-01-01,x\n2,2024-01-02,y\n")
    assert no_header["Header"] is False and no_header["RowsProfiled"] == 2
    assert [c["Name"] for c in no_header["Columns"]] == ["Column1", "Column2", "Column3"]
    named = profile_csv.profile_csv(b"a,,a\n1,2,3\n")
    assert [c["Name"] for c in named["Columns"]] == ["a", "Column2", "Column3"]
    forced = profile_csv.profile_csv(b"1,2\n3,4\n", Options(header="present"))
    assert [c["Name"] for c in forced["Columns"]] == ["1", "2"] and forced["RowsProfiled"] == 1
    absent = profile_csv.profile_csv(b"a,b\n3,4\n", Options(header="absent"))
    assert absent["RowsProfiled"] == 2 and columns(absent)["Column1"]["Type"] == "string"


def test_quoted_values_other_delimiter_and_ragged_rows() -> None:
    body = b'"name\nwith break";n\n"a;b";1\n"say ""hi""";2\nonly-one-cell\nx;3;extra\n'
    profile = profile_csv.profile_csv(body, Options(delimiter=";"))
    assert (profile["RowsProfiled"], profile["RowsSkipped"]) == (2, 2)
    name, n = profile["Columns"]
    assert name["Name"] == "name\nwith break"
    assert (name["Min"], name["Max"]) == ("a;b", 'say "hi"')
    assert (n["Type"], n["Max"]) == ("integer", 2)


def test_cut_object_is_profiled_to_its_last_full_line() -> None:
    body = b"a,b\n1,x\n2,y\n3,zz"  # the object went on; "3,zz" may be incomplete
    profile = profile_csv.profile_csv(body, cut=True)
    assert (profile["RowsProfiled"], profile["Truncated"], profile["BytesProfiled"]) == (2, True, 12)


def test_not_utf8_fails_even_past_the_header_probe() -> None:
    with pytest.raises(InvalidCsv, match=r"^InvalidEncoding: "):
        profile_csv.profile_csv(b"a\n\xff\n")
    late = b"a,b\n" + b"1,x\n" * 40_000 + b"2,\xff\n"  # the bad byte is past HEADER_PROBE_BYTES
    with pytest.raises(InvalidCsv) as caught:
        profile_csv.profile_csv(late)
    assert str(caught.value) == "InvalidEncoding: the object is not UTF-8 text"


def test_empty_object_has_no_columns() -> None:
    assert profile_csv.profile_csv(b"")["ColumnCount"] == 0


def test_summary_stays_small_with_many_long_columns() -> None:
    header = ",".join(f"{'n' * 300}{i}" for i in range(200))
    body = f"{header}\n{','.join(['word'] * 200)}\n".encode()
    profile = profile_csv.profile_csv(body)
    text = json.dumps(summary(profile), separators=(",", ":"))
    assert len(text.encode()) < 4096
    brief = json.loads(text)
    assert (brief["ColumnCount"], brief["ColumnsListed"], len(brief["Columns"])) == (200, 20, 20)
    assert set(brief["Columns"][0]) == {"Name", "Type", "MissingCount", "DistinctCount"}
    assert len(profile["Columns"]) == 200  # the full profile (resultData) keeps every column


def test_answer_puts_the_full_profile_in_sink_ready_data() -> None:
    from s3batch.operations.results_sink_columns import ColumnType, value_type

    [answer] = profile_csv._answer([b"a,b\n1,x\n"], options=Options())
    assert answer.code == "Succeeded" and answer.data is not None
    assert json.loads(answer.message)["Columns"] == [
        {"Name": "a", "Type": "integer", "MissingCount": 0, "DistinctCount": 1},
        {"Name": "b", "Type": "string", "MissingCount": 0, "DistinctCount": 1},
    ]
    data = dict(answer.data)
    assert (data["rows_profiled"], data["column_names"], data["column_types"]) == (
        1,
        ["a", "b"],
        ["integer", "string"],
    )
    assert json.loads(data["profile"])["Columns"][0]["Mean"] == 1.0
    # A results sink takes only scalars and flat lists (docs/results-sink.md).
    types = {name: value_type(value) for name, value in data.items()}
    assert types["profile"] == ColumnType.STRING and types["column_names"] == ColumnType.STRINGS
    assert types["truncated"] == ColumnType.BOOL and types["rows_profiled"] == ColumnType.INT


def test_bad_user_arguments_fail_every_task() -> None:
    event = {
        "invocationSchemaVersion": "2.0",
        "invocationId": "i",
        "job": {"id": "j", "userArguments": {"Delimiter": "::"}},
        "tasks": [{"taskId": "t1", "s3Bucket": "b", "s3Key": "k.csv"}],
    }
    [result] = profile_csv.handler(event, None)["results"]
    assert result["resultCode"] == "PermanentFailure"
    assert result["resultString"].startswith("InvalidUserArguments: Delimiter must be one of")


def test_distinct_counter_is_exact_then_estimates(monkeypatch: pytest.MonkeyPatch) -> None:
    exact = DistinctCounter()
    exact.add([b"a", b"b", b"a"])
    assert (exact.count(), exact.exact) == (2, True)
    monkeypatch.setattr(distinct, "EXACT_CAP", 100)
    sketch = DistinctCounter()
    for start in range(0, 50_000, 5_000):  # in several adds, with repeats
        sketch.add(str(i).encode() for i in range(start, start + 5_000))
        sketch.add(str(i).encode() for i in range(start, start + 100))
    assert not sketch.exact
    assert abs(sketch.count() - 50_000) < 50_000 * 0.03  # ~0.8 % standard error
    small = DistinctCounter()
    small.add(str(i).encode() for i in range(150))  # past the cap: linear counting range
    assert abs(small.count() - 150) <= 2


def test_header_longer_than_the_probe_still_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profile_csv, "HEADER_PROBE_BYTES", 8)
    profile = profile_csv.profile_csv(b"alpha,beta,gamma\n1,2,x\n3,4,y\n")
    assert [c["Name"] for c in profile["Columns"]] == ["alpha", "beta", "gamma"]
    assert [c["Type"] for c in profile["Columns"]] == ["integer", "integer", "string"]
