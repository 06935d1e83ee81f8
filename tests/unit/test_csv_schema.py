"""CSV ingest schema: parameter checks, header modes, empty-value rules, typed conversion."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from s3batch.domain.csv_schema import (
    Column,
    ColumnType,
    EmptyRule,
    HeaderError,
    HeaderMode,
    RowRejected,
    Value,
    convert,
    convert_row,
    match_header,
    parse_schema,
)
from s3batch.errors import BadRequest

OP = "S3batchCsvIngest"
COLUMNS: list[dict[str, Any]] = [
    {"Name": "id", "Type": "int", "Required": True},
    {"Name": "amount", "Type": "decimal"},
    {"Name": "when", "Type": "timestamp"},
    {"Name": "note", "Type": "string", "Empty": "null"},
]


def schema(header: Any = None, columns: list[dict[str, Any]] = COLUMNS, **extra: Any) -> Any:
    return parse_schema(OP, {"Columns": columns, "PartitionKey": "id", **extra}, header)


@pytest.mark.parametrize(
    ("kind", "text", "expected"),
    [
        ("string", "  keep spaces ", "  keep spaces "),
        ("int", "42", 42),
        ("int", " -7 ", -7),
        ("int", "+0", 0),
        ("int", str(2**63 - 1), 2**63 - 1),
        ("float", "1.5", 1.5),
        ("float", "-2e3", -2000.0),
        ("float", ".5", 0.5),
        ("decimal", "1.50", Decimal("1.50")),
        ("decimal", "-0.000001", Decimal("-0.000001")),
        ("decimal", "1" * 38, Decimal("1" * 38)),
        ("bool", "TRUE", True),
        ("bool", "yes", True),
        ("bool", "1", True),
        ("bool", "False", False),
        ("bool", "no", False),
        ("bool", "0", False),
        ("date", "2024-02-29", date(2024, 2, 29)),
        ("timestamp", "2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("timestamp", "2024-01-02 05:04:05+02:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("timestamp", "2024-01-02T03:04:05.123456+00:00", datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
    ],
)
def test_conversions(kind: str, text: str, expected: Value) -> None:
    value = convert(Column("c", ColumnType(kind)), text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        ("int", "1.0"),
        ("int", "1_000"),
        ("int", "x"),
        ("int", str(2**63)),
        ("float", "nan"),
        ("float", "inf"),
        ("float", "1e999"),
        ("float", "0x10"),
        ("float", "1,5"),
        ("decimal", "NaN"),
        ("decimal", "Infinity"),
        ("decimal", "1" * 39),
        ("decimal", "abc"),
        ("bool", "maybe"),
        ("bool", "t"),
        ("date", "2023-02-29"),
        ("date", "20240101"),
        ("date", "2024-01-02T00:00:00Z"),
        ("timestamp", "2024-01-02T03:04:05"),
        ("timestamp", "2024-01-02"),
        ("timestamp", "2024-13-02T03:04:05Z"),
    ],
)
def test_bad_values_reject_the_row_naming_the_column(kind: str, text: str) -> None:
    with pytest.raises(RowRejected, match="column 'c'"):
        convert(Column("c", ColumnType(kind)), text)


@pytest.mark.parametrize("kind", [k.value for k in ColumnType])
def test_empty_values_follow_the_column_rule(kind: str) -> None:
    column_type = ColumnType(kind)
    assert convert(Column("c", column_type, empty=EmptyRule.NULL), "") is None
    with pytest.raises(RowRejected, match="empty value"):
        convert(Column("c", column_type, empty=EmptyRule.REJECT), "")
    with pytest.raises(RowRejected, match="required"):
        convert(Column("c", column_type, required=True, empty=EmptyRule.REJECT), "")
    if column_type is ColumnType.STRING:
        assert convert(Column("c", column_type, empty=EmptyRule.EMPTY_STRING), "") == ""
        # A string of spaces is a value, not empty.
        assert convert(Column("c", column_type, empty=EmptyRule.REJECT), "  ") == "  "
    else:
        # Typed values are stripped, so whitespace alone is empty.
        assert convert(Column("c", column_type, empty=EmptyRule.NULL), "  ") is None


def test_schema_defaults() -> None:
    parsed = schema()
    assert parsed.header is HeaderMode.EXACT
    assert parsed.key_names == ("id",)
    by_name = {c.name: c for c in parsed.columns}
    assert by_name["id"].required and by_name["id"].empty is EmptyRule.REJECT
    assert not by_name["amount"].required and by_name["amount"].empty is EmptyRule.NULL
    assert schema("required").header is HeaderMode.EXACT
    assert schema("by-name").header is HeaderMode.BY_NAME
    assert schema("none").header is HeaderMode.NONE


def test_key_columns_are_always_required() -> None:
    parsed = schema(columns=[{"Name": "id", "Type": "string"}, {"Name": "n", "Type": "int"}])
    assert parsed.columns[0].required
    with pytest.raises(RowRejected, match="required"):
        convert_row(parsed, (0, 1), ["", "1"])


@pytest.mark.parametrize(
    ("columns", "extra", "header", "match"),
    [
        ([{"Name": "id", "Type": "uuid"}], {}, None, "Type must be one of"),
        ([{"Name": "id", "Type": "int", "Required": False}], {}, None, "cannot be Required: false"),
        ([{"Name": "id", "Type": "int"}, {"Name": "n", "Type": "int", "Required": True, "Empty": "null"}],
         {}, None, "Empty must be reject"),
        ([{"Name": "id", "Type": "int"}, {"Name": "n", "Type": "int", "Empty": "empty-string"}],
         {}, None, "only for string columns"),
        ([{"Name": "id", "Type": "int"}, {"Name": "n", "Type": "int", "Empty": "zero"}],
         {}, None, "Empty must be one of"),
        ([{"Name": "id", "Type": "float"}], {}, None, "key column 'id' must be one of"),
        ([{"Name": "id", "Type": "int"}, {"Name": "s", "Type": "bool"}], {"SortKey": "s"},
         None, "key column 's'"),
        ([{"Name": "id", "Type": "int"}], {"SortKey": "missing"}, None, "not in Columns"),
        ([{"Name": "id", "Type": "int"}], {"SortKey": "id"}, None, "must differ"),
        ([{"Name": "id", "Type": "int"}, {"Name": "id", "Type": "int"}], {}, None, "repeated"),
        ([{"Name": "id", "Type": "int", "Size": 4}], {}, None, "unknown field"),
        ([], {}, None, "Columns must be a list"),
        ([{"Name": "", "Type": "int"}], {}, None, "Name must be a name"),
        ([{"Name": "id", "Type": "int"}], {"Order": 1}, None, "unknown field"),
        ([{"Name": "id", "Type": "int"}], {}, "loose", "Header must be one of"),
    ],
)  # fmt: skip
def test_bad_schemas_are_refused(
    columns: list[dict[str, Any]], extra: dict[str, Any], header: Any, match: str
) -> None:
    with pytest.raises(BadRequest, match=match):
        schema(header, columns, **extra)


def test_missing_schema_and_partition_key_are_refused() -> None:
    with pytest.raises(BadRequest, match="Schema is required"):
        parse_schema(OP, None, None)
    with pytest.raises(BadRequest, match="PartitionKey"):
        parse_schema(OP, {"Columns": COLUMNS}, None)


def test_exact_header_needs_same_names_in_same_order() -> None:
    parsed = schema("exact")
    assert match_header(parsed, ["id", "amount", "when", "note"]) == (0, 1, 2, 3)
    for bad in (["amount", "id", "when", "note"], ["id", "amount", "when"], ["ID", "amount", "when", "note"]):
        with pytest.raises(HeaderError, match="same names, same order"):
            match_header(parsed, bad)
    with pytest.raises(HeaderError, match="empty"):
        match_header(parsed, None)


def test_by_name_header_maps_columns_in_any_order() -> None:
    parsed = schema("by-name")
    positions = match_header(parsed, ["note", "when", "id", "amount"])
    assert positions == (2, 3, 1, 0)
    row = convert_row(parsed, positions, ["hi", "2024-01-01T00:00:00Z", "5", "1.25"])
    assert row == {
        "id": 5,
        "amount": Decimal("1.25"),
        "when": datetime(2024, 1, 1, tzinfo=UTC),
        "note": "hi",
    }
    with pytest.raises(HeaderError, match="missing \\['note'\\]"):
        match_header(parsed, ["when", "id", "amount"])
    with pytest.raises(HeaderError, match="unexpected \\['extra'\\]"):
        match_header(parsed, ["note", "when", "id", "amount", "extra"])
    with pytest.raises(HeaderError, match="repeated \\['id'\\]"):
        match_header(parsed, ["note", "when", "id", "amount", "id"])


def test_no_header_is_positional() -> None:
    parsed = schema("none")
    assert match_header(parsed, None) == (0, 1, 2, 3)


def test_row_with_wrong_field_count_is_rejected() -> None:
    parsed = schema()
    with pytest.raises(RowRejected, match="expected 4 fields, got 3"):
        convert_row(parsed, (0, 1, 2, 3), ["1", "2", "3"])
