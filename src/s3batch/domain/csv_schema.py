"""CSV ingest schema: parameters, header matching and typed row conversion (pure).

Used by the `S3batchCsvIngest` operation (s3batch extension). Everything here is pure: it
checks parameters at CreateJob time (raising `BadRequest`) and turns one CSV record into typed
values (raising `RowRejected`), so it is tested without any store or table.

Choices no external contract fixes (also listed in the operation module's docstring):

- Header modes: `exact` (default; `required` is accepted as its synonym, the spelling of the
  first documented examples) — the first record must list exactly the schema's column names in the schema's
  order; `by-name` — the same set of names in any order (no missing, extra or repeated names);
  `none` — no header row, fields are positional in schema order. Names compare exactly (case
  and spaces count); a UTF-8 byte-order mark is removed before the header is read.
- Empty values (a field that is "" — or only whitespace for non-string types): per column
  `Empty` is `null` (default; stored as NULL), `empty-string` (string columns only; stored as
  "") or `reject` (the row is rejected). A `Required` column rejects empty values, so it may not
  also say `null` or `empty-string`. Key columns are always required.
- Typed values have surrounding whitespace stripped (CSV exports often pad numbers); strings
  are kept verbatim.
- int: optional sign and ASCII digits only (no `1_000`, no `1.0`), within signed 64 bits
  (SQLite INTEGER, PostgreSQL bigint). float: decimal or scientific notation, finite only (no
  NaN/Infinity: DynamoDB and JSON have none). decimal: exact `Decimal`, finite, at most 38
  significant digits (DynamoDB's number precision). bool: true/false/1/0/yes/no, any case.
  date: `YYYY-MM-DD`. timestamp: ISO 8601 date and time WITH an offset or `Z` (a naive
  timestamp is ambiguous, so it is rejected), normalized to UTC.
- Key columns (PartitionKey, optional SortKey) may be string, int, date or timestamp: float and
  decimal keys would make `1.5` and `1.50` different items, bool keys make no sense.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, TypeVar

from s3batch.errors import BadRequest

#: A converted cell. The table backend maps these to its own column types.
Value = str | int | float | bool | Decimal | date | datetime | None

#: DynamoDB numbers keep at most 38 significant digits; decimals beyond that would be rounded.
MAX_DECIMAL_DIGITS = 38
#: Signed 64-bit: SQLite INTEGER and PostgreSQL bigint both hold exactly this range.
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
#: Limits on names so one bad parameter cannot create absurd identifiers.
MAX_NAME_CHARS = 255
MAX_COLUMNS = 1000

_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
# Date, then T or space, then at least HH:MM; fromisoformat checks the rest.
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}.*")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


E = TypeVar("E", bound=StrEnum)


class ColumnType(StrEnum):
    STRING = "string"
    INT = "int"
    FLOAT = "float"
    DECIMAL = "decimal"
    BOOL = "bool"
    DATE = "date"
    TIMESTAMP = "timestamp"


#: Types a partition or sort key may have (see the module docstring for why).
KEY_TYPES = frozenset({ColumnType.STRING, ColumnType.INT, ColumnType.DATE, ColumnType.TIMESTAMP})


class EmptyRule(StrEnum):
    NULL = "null"
    EMPTY_STRING = "empty-string"
    REJECT = "reject"


class HeaderMode(StrEnum):
    EXACT = "exact"
    BY_NAME = "by-name"
    NONE = "none"


#: `required`: an older spelling of the strict default, still accepted.
_HEADER_ALIASES = {"required": HeaderMode.EXACT}


class RowRejected(Exception):
    """One record cannot be written; `reason` goes to the task's summary."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HeaderError(Exception):
    """The file's header does not match the schema; the whole file is refused."""


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: ColumnType
    required: bool = False
    empty: EmptyRule = EmptyRule.NULL


@dataclass(frozen=True, slots=True)
class CsvSchema:
    columns: tuple[Column, ...]
    partition_key: str
    sort_key: str | None = None
    header: HeaderMode = HeaderMode.EXACT

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def key_names(self) -> tuple[str, ...]:
        return (self.partition_key,) if self.sort_key is None else (self.partition_key, self.sort_key)


def _name(op: str, field: str, value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_NAME_CHARS or "\x00" in value:
        raise BadRequest(f"{op}.{field} must be a name of 1-{MAX_NAME_CHARS} characters; got {value!r}")
    return value


def _choice(op: str, field: str, value: Any, enum: type[E]) -> E:
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(e.value for e in enum)
        raise BadRequest(f"{op}.{field} must be one of {allowed}; got {value!r}") from None


def _column(op: str, index: int, spec: Any, keys: set[str]) -> Column:
    where = f"Schema.Columns[{index}]"
    if not isinstance(spec, Mapping):
        raise BadRequest(f"{op}.{where} must be an object with Name and Type")
    unknown = set(spec) - {"Name", "Type", "Required", "Empty"}
    if unknown:
        raise BadRequest(f"{op}.{where}: unknown field(s) {', '.join(sorted(unknown))}")
    name = _name(op, f"{where}.Name", spec.get("Name"))
    kind = _choice(op, f"{where}.Type", spec.get("Type"), ColumnType)
    is_key = name in keys
    required_given = spec.get("Required")
    if required_given is not None and not isinstance(required_given, bool):
        raise BadRequest(f"{op}.{where}.Required must be true or false")
    if is_key and required_given is False:
        raise BadRequest(f"{op}.{where}: key column {name!r} cannot be Required: false")
    required = is_key or bool(required_given)
    default_empty = EmptyRule.REJECT if required else EmptyRule.NULL
    empty = _choice(op, f"{where}.Empty", spec.get("Empty", default_empty.value), EmptyRule)
    if required and empty is not EmptyRule.REJECT:
        raise BadRequest(f"{op}.{where}: required column {name!r} rejects empty values; Empty must be reject")
    if empty is EmptyRule.EMPTY_STRING and kind is not ColumnType.STRING:
        raise BadRequest(f"{op}.{where}: Empty empty-string is only for string columns")
    if is_key and kind not in KEY_TYPES:
        allowed = ", ".join(sorted(KEY_TYPES))
        raise BadRequest(f"{op}.{where}: key column {name!r} must be one of {allowed}; got {kind}")
    return Column(name, kind, required, empty)


def parse_schema(op: str, schema: Any, header: Any) -> CsvSchema:
    """The `Schema` and `Header` parameters as a `CsvSchema`. Raises BadRequest."""
    if not isinstance(schema, Mapping):
        raise BadRequest(f"{op}.Schema is required: {{Columns, PartitionKey, SortKey}}")
    unknown = set(schema) - {"Columns", "PartitionKey", "SortKey"}
    if unknown:
        raise BadRequest(f"{op}.Schema: unknown field(s) {', '.join(sorted(unknown))}")
    partition_key = _name(op, "Schema.PartitionKey", schema.get("PartitionKey"))
    sort_key = schema.get("SortKey")
    if sort_key is not None:
        sort_key = _name(op, "Schema.SortKey", sort_key)
        if sort_key == partition_key:
            raise BadRequest(f"{op}.Schema: SortKey must differ from PartitionKey")
    keys = {partition_key} | ({sort_key} if sort_key else set())
    specs = schema.get("Columns")
    if not isinstance(specs, list) or not 1 <= len(specs) <= MAX_COLUMNS:
        raise BadRequest(f"{op}.Schema.Columns must be a list of 1-{MAX_COLUMNS} columns")
    columns = tuple(_column(op, i, spec, keys) for i, spec in enumerate(specs))
    names = [c.name for c in columns]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise BadRequest(f"{op}.Schema.Columns: repeated name(s) {', '.join(map(repr, repeated))}")
    missing = [k for k in (partition_key, sort_key) if k is not None and k not in names]
    if missing:
        raise BadRequest(f"{op}.Schema: key column(s) {', '.join(map(repr, missing))} not in Columns")
    raw_header = header if header is not None else HeaderMode.EXACT.value
    mode = _HEADER_ALIASES.get(raw_header) if isinstance(raw_header, str) else None
    if mode is None:
        mode = _choice(op, "Header", raw_header, HeaderMode)
    return CsvSchema(columns, partition_key, sort_key, mode)


def match_header(schema: CsvSchema, fields: Sequence[str] | None) -> tuple[int, ...]:
    """For each schema column, the index of its field in a record. `fields` is the file's first
    record (None for an empty file); only read for modes with a header. Raises HeaderError."""
    if schema.header is HeaderMode.NONE:
        return tuple(range(len(schema.columns)))
    if fields is None:
        raise HeaderError("the file is empty: expected a header row")
    expected = schema.names
    if schema.header is HeaderMode.EXACT:
        if tuple(fields) != expected:
            raise HeaderError(
                f"header {list(fields)} does not equal {list(expected)} (same names, same order)"
            )
        return tuple(range(len(expected)))
    repeated = sorted({f for f in fields if fields.count(f) > 1})
    missing = [n for n in expected if n not in fields]
    extra = [f for f in fields if f not in expected]
    if repeated or missing or extra:
        parts = [
            f"{label} {names}"
            for label, names in (("missing", missing), ("unexpected", extra), ("repeated", repeated))
            if names
        ]
        raise HeaderError(f"header {list(fields)}: {'; '.join(parts)}")
    position = {name: i for i, name in enumerate(fields)}
    return tuple(position[name] for name in expected)


def convert(column: Column, text: str) -> Value:
    """One field as the column's typed value. Raises RowRejected."""
    value = text if column.type is ColumnType.STRING else text.strip()
    if value == "":
        if column.empty is EmptyRule.REJECT:
            why = "required" if column.required else "Empty is reject"
            raise RowRejected(f"column {column.name!r}: empty value ({why})")
        return "" if column.empty is EmptyRule.EMPTY_STRING else None
    try:
        return _CONVERTERS[column.type](value)
    except (ValueError, InvalidOperation) as exc:
        raise RowRejected(f"column {column.name!r}: {exc}") from None


def convert_row(schema: CsvSchema, positions: Sequence[int], fields: Sequence[str]) -> dict[str, Value]:
    """A record as {column name: typed value}. Raises RowRejected (first problem found)."""
    if len(fields) != len(positions):
        raise RowRejected(f"expected {len(positions)} fields, got {len(fields)}")
    return {
        column.name: convert(column, fields[i]) for column, i in zip(schema.columns, positions, strict=True)
    }


def _short(text: str) -> str:
    """A value quoted for an error message, cut so one huge field cannot bloat the summary."""
    limit = 40
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _to_int(text: str) -> int:
    if _INT.fullmatch(text) is None:
        raise ValueError(f"{_short(text)} is not an int")
    number = int(text)
    if not INT_MIN <= number <= INT_MAX:
        raise ValueError(f"{_short(text)} is outside the signed 64-bit range")
    return number


def _to_float(text: str) -> float:
    # The pattern refuses nan, inf, "1_0" and hex, which float() would accept.
    if _FLOAT.fullmatch(text) is None:
        raise ValueError(f"{_short(text)} is not a float")
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"{_short(text)} overflows a float")
    return number


def _to_decimal(text: str) -> Decimal:
    if _FLOAT.fullmatch(text) is None:
        raise ValueError(f"{_short(text)} is not a decimal")
    number = Decimal(text)
    # Significant digits without leading/trailing zeros; normalize() would round to the
    # context's 28 digits first and hide an over-long value.
    digits = len("".join(map(str, number.as_tuple().digits)).strip("0")) or 1
    if digits > MAX_DECIMAL_DIGITS:
        raise ValueError(f"{_short(text)} has more than {MAX_DECIMAL_DIGITS} significant digits")
    return number


def _to_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{_short(text)} is not a bool (true/false, 1/0, yes/no)")


def _to_date(text: str) -> date:
    if _DATE.fullmatch(text) is None:
        raise ValueError(f"{_short(text)} is not a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{_short(text)} is not a valid date") from None


def _to_timestamp(text: str) -> datetime:
    if _TIMESTAMP.fullmatch(text) is None:
        raise ValueError(f"{_short(text)} is not an ISO 8601 timestamp")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{_short(text)} is not a valid timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{_short(text)} has no UTC offset (add Z or +HH:MM)")
    return parsed.astimezone(UTC)


_CONVERTERS: Mapping[ColumnType, Callable[[str], Value]] = {
    ColumnType.STRING: str,
    ColumnType.INT: _to_int,
    ColumnType.FLOAT: _to_float,
    ColumnType.DECIMAL: _to_decimal,
    ColumnType.BOOL: _to_bool,
    ColumnType.DATE: _to_date,
    ColumnType.TIMESTAMP: _to_timestamp,
}
