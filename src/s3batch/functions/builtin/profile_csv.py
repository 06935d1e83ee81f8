"""`s3batch-profile-csv`: a column profile of a CSV object, in the manner of AWS Glue DataBrew's.

An ordinary S3 Batch Operations handler (schema 1.0 or 2.0) on the shared batch path. The first
`MAX_PROFILE_BYTES` of each object are read through the job's own store and streamed through
pyarrow's CSV reader in blocks of `BLOCK_BYTES`, every column read as text; each block updates a
fixed-size summary per column, so memory does not grow with the rows. Per column:

- Type: the narrowest of boolean (true/false, any case), integer (at most 18 digits, so it fits
  64 bits), float, date (YYYY-MM-DD, a real calendar day), timestamp (ISO 8601 date and time,
  optional fraction to microseconds and zone; zoned values are compared in UTC) that every
  present value fits, else string. A column with no value at all is string.
- Count (values present), MissingCount (empty, or one of `NULL_TOKENS`).
- DistinctCount: exact up to `distinct.EXACT_CAP` values, then a HyperLogLog estimate (about
  0.8 % error); DistinctExact says which.
- Min and Max (integer/float: numbers; date/timestamp: ISO text; string: first and last in
  code-point order, cut to `MAX_VALUE_CHARS`), and Mean for integer and float columns.

The full profile is

    {"RowsProfiled":1000,"RowsSkipped":0,"Truncated":false,"BytesProfiled":48213,"Header":true,
     "ColumnCount":3,"Columns":[{"Name":"id","Type":"integer","Count":1000,"MissingCount":0,
     "DistinctCount":1000,"DistinctExact":true,"Min":1,"Max":1000,"Mean":500.5}, ...]}

and goes into the result's `data` (the s3batch `resultData`, for a results sink, whose columns
hold scalars and flat lists: docs/results-sink.md) as `sink_columns` lays it out: rows_profiled,
rows_skipped, truncated, bytes_profiled, header, column_count, column_names and column_types
(lists of strings), and `profile`, the full profile as JSON text.

The resultString is a summary that stays under a few KB: the profile's top-level fields, and
per column only Name, Type, MissingCount and DistinctCount, for the first `MAX_SUMMARY_COLUMNS`
columns (names cut to `MAX_SUMMARY_NAME_CHARS`; "ColumnsListed" says how many when cut).

- Header (UserArguments `Header`: `auto`, `present`, `absent`; default auto): with auto, the
  first row is a header unless one of its cells is a number, date, timestamp or boolean, which
  column names are not. Without a header, columns are named Column1, Column2, ...; empty or
  repeated header names are made unique the same way.
- Delimiter (UserArguments `Delimiter`: one of `DELIMITERS`; default comma). Quoted values may
  hold delimiters, quotes ("") and line breaks (RFC 4180).
- A row with more or fewer cells than the first row is skipped and counted (RowsSkipped).
- An object longer than `MAX_PROFILE_BYTES` is profiled up to the last full line in that many
  bytes: `"Truncated":true`, and RowsProfiled/BytesProfiled say how far.
- Text must be UTF-8; otherwise the task fails with "InvalidEncoding: ...", and a file pyarrow
  cannot parse fails with "InvalidCSV: ..." (neither message quotes the object's content).
"""

from __future__ import annotations

import csv
import datetime
import functools
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.csv as pcsv  # type: ignore[import-untyped]

from s3batch.functions.builtin.batch import Answer
from s3batch.functions.builtin.distinct import DistinctCounter
from s3batch.functions.builtin.inputs import (
    INVALID_ENCODING,
    BadUserArgument,
    UndecodableText,
    batch_in_chunks,
    decode_head,
    fail_all,
    read_limit,
    user_argument,
)

#: Bytes of an object profiled at most (it is held in memory while profiled: about 1 s per
#: 32 MiB of a five-column file on one core).
MAX_PROFILE_BYTES = 32 * 1024 * 1024
#: Bytes pyarrow parses per block: the unit of streaming (memory per block ≈ a few times this).
BLOCK_BYTES = 1024 * 1024
#: Bytes at the start of an object in which the header row must end.
HEADER_PROBE_BYTES = 64 * 1024
#: Cell texts counted as missing (besides the empty cell).
NULL_TOKENS = ("", "NULL", "null", "Null", "NA", "N/A", "n/a", "None", "none", "nil")
#: Characters kept of a string Min/Max and of a column name in the full profile.
MAX_VALUE_CHARS = 256
#: Columns listed in the resultString summary at most, and characters kept of their names.
MAX_SUMMARY_COLUMNS = 20
MAX_SUMMARY_NAME_CHARS = 64
#: Decimal places kept of a float Min/Max/Mean.
FLOAT_DIGITS = 6

HEADER_ARGUMENT = "Header"
AUTO, PRESENT, ABSENT = "auto", "present", "absent"
DELIMITER_ARGUMENT = "Delimiter"
DELIMITERS = (",", ";", "\t", "|")
#: resultString prefix of an object that pyarrow cannot parse as CSV.
INVALID_CSV = "InvalidCSV"

BOOLEAN, INTEGER, FLOAT, DATE, TIMESTAMP, STRING = (
    "boolean",
    "integer",
    "float",
    "date",
    "timestamp",
    "string",
)
#: Inferred types, narrowest first; a value of an earlier type may also fit a later one.
TYPE_ORDER = (BOOLEAN, INTEGER, FLOAT, DATE, TIMESTAMP)
#: What a cell must look like to be of each type (RE2 syntax, as pyarrow's kernels use).
TYPE_PATTERNS: Mapping[str, str] = {
    BOOLEAN: r"^(?i:true|false)$",
    INTEGER: r"^-?\d{1,18}$",
    FLOAT: r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$",
    DATE: r"^\d{4}-\d{2}-\d{2}$",
    TIMESTAMP: r"^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$",
}
_ZONED = r"(?:Z|[+-]\d{2}:?\d{2})$"
_LOOKS_TYPED = [re.compile(pattern) for pattern in TYPE_PATTERNS.values()]
_EPOCH = datetime.datetime(1970, 1, 1)


class InvalidCsv(ValueError):
    """The object cannot be profiled; str(exc) is the resultString."""


@dataclass(frozen=True, slots=True)
class Options:
    """How to read the CSV (from UserArguments)."""

    header: str = AUTO
    delimiter: str = ","


@dataclass(frozen=True, slots=True)
class _Range:
    """Smallest and largest value seen."""

    low: Any
    high: Any

    def widen(self, low: Any, high: Any) -> _Range:
        return _Range(min(self.low, low), max(self.high, high))


def _widen(current: _Range | None, low: Any, high: Any) -> _Range:
    return _Range(low, high) if current is None else current.widen(low, high)


class ColumnProfile:
    """One column's running summary; `add` takes a block's cells (a string array, nulls missing)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.missing = 0
        self.viable = set(TYPE_ORDER)
        self.distinct = DistinctCounter()
        self.text: _Range | None = None
        self.integers: _Range | None = None
        self.floats: _Range | None = None
        self.float_sum = 0.0
        self.micros: _Range | None = None

    def add(self, cells: Any) -> None:
        self.missing += cells.null_count
        values = cells.drop_null() if cells.null_count else cells
        if not len(values):
            return
        self.count += len(values)
        self._narrow(values)
        if FLOAT in self.viable:
            numbers = pc.cast(values, pa.float64())
            self.floats = _widen(self.floats, *_min_max(numbers))
            self.float_sum += pc.sum(numbers).as_py()
        if INTEGER in self.viable:
            self.integers = _widen(self.integers, *_min_max(pc.cast(values, pa.int64())))
        if DATE in self.viable or TIMESTAMP in self.viable:
            micros = _microseconds(values)
            if micros is None:  # matched the pattern but is no calendar day (2023-02-29)
                self.viable -= {DATE, TIMESTAMP}
            else:
                self.micros = _widen(self.micros, *_min_max(micros))
        self.text = _widen(self.text, *_min_max(values))
        self.distinct.add(pc.unique(values).cast(pa.binary()).to_pylist())

    def _narrow(self, values: Any) -> None:
        for kind in [k for k in TYPE_ORDER if k in self.viable]:
            if not pc.all(pc.match_substring_regex(values, TYPE_PATTERNS[kind])).as_py():
                self.viable.discard(kind)

    @property
    def type(self) -> str:
        if not self.count:
            return STRING
        return next((kind for kind in TYPE_ORDER if kind in self.viable), STRING)

    def result(self) -> dict[str, Any]:
        kind = self.type
        out: dict[str, Any] = {
            "Name": self.name[:MAX_VALUE_CHARS],
            "Type": kind,
            "Count": self.count,
            "MissingCount": self.missing,
            "DistinctCount": self.distinct.count(),
            "DistinctExact": self.distinct.exact,
        }
        span = self._range(kind)
        if span is not None:
            out["Min"], out["Max"] = span
        if kind in (INTEGER, FLOAT) and self.count:
            out["Mean"] = round(self.float_sum / self.count, FLOAT_DIGITS)
        return out

    def _range(self, kind: str) -> tuple[Any, Any] | None:
        if kind == INTEGER and self.integers:
            return self.integers.low, self.integers.high
        if kind == FLOAT and self.floats:
            return round(self.floats.low, FLOAT_DIGITS), round(self.floats.high, FLOAT_DIGITS)
        if kind in (DATE, TIMESTAMP) and self.micros:
            return _iso(self.micros.low, kind), _iso(self.micros.high, kind)
        if kind == STRING and self.text:
            return self.text.low[:MAX_VALUE_CHARS], self.text.high[:MAX_VALUE_CHARS]
        return None


def _min_max(values: Any) -> tuple[Any, Any]:
    both = pc.min_max(values)
    return both["min"].as_py(), both["max"].as_py()


def _microseconds(values: Any) -> Any | None:
    """Each date/timestamp text as microseconds since 1970 (UTC for zoned ones); None if one is
    no real date or time. Naive and zoned values are cast apart: pyarrow takes one kind per cast."""
    zoned = pc.match_substring_regex(values, _ZONED)
    parts = []
    try:
        for mask, target in ((zoned, pa.timestamp("us", tz="UTC")), (pc.invert(zoned), pa.timestamp("us"))):
            chosen = values.filter(mask)
            if len(chosen):
                parts.append(pc.cast(pc.cast(chosen, target), pa.int64()))
    except pa.ArrowInvalid:
        return None
    return pa.chunked_array(parts, pa.int64())


def _iso(micros: int, kind: str) -> str:
    moment = _EPOCH + datetime.timedelta(microseconds=micros)
    return moment.date().isoformat() if kind == DATE else moment.isoformat()


# --- reading -----------------------------------------------------------------------------------


def profile_csv(body: bytes, options: Options = Options(), *, cut: bool = False) -> dict[str, Any]:
    """The full profile (module doc) of CSV `body`; `cut` says the object went on past it.

    Raises InvalidCsv (the resultString) for text that is not UTF-8 or cannot be parsed."""
    if cut:
        body = body[: body.rfind(b"\n") + 1]  # the last line may be incomplete
    first = _first_row(body, options.delimiter)
    if not first:
        return _profile([], rows=0, skipped=0, cut=cut, nbytes=len(body), header=False)
    header = options.header == PRESENT or (options.header == AUTO and not _looks_like_data(first))
    skipped = [0]

    def skip(_row: Any) -> str:
        skipped[0] += 1
        return "skip"

    rows = 0
    try:
        reader = _reader(body, options.delimiter, first, header=header, on_bad_row=skip)
        # pyarrow's header is the truth should Python's csv module have read it otherwise (a
        # header longer than the probe); such columns may then come typed, hence the cast.
        width = len(reader.schema.names)
        if not header:
            names = [""] * width
        else:
            names = list(first) if len(first) == width else reader.schema.names
        columns = [ColumnProfile(name) for name in _column_names(names)]
        for block in reader:
            rows += block.num_rows
            for column, cells in zip(columns, block.columns, strict=True):
                column.add(cells if pa.types.is_string(cells.type) else pc.cast(cells, pa.string()))
    except pa.ArrowInvalid as exc:
        if "UTF8" in str(exc):
            raise InvalidCsv(f"{INVALID_ENCODING}: the object is not UTF-8 text") from None
        # pyarrow's message may quote the row; name only where it stopped.
        raise InvalidCsv(f"{INVALID_CSV}: pyarrow cannot parse the object as CSV after row {rows}") from None
    return _profile(columns, rows=rows, skipped=skipped[0], cut=cut, nbytes=len(body), header=header)


def _reader(body: bytes, delimiter: str, first: Sequence[str], *, header: bool, on_bad_row: Any) -> Any:
    """pyarrow's streaming reader of `body`, every column as text (empty and NULL_TOKENS null)."""
    # With a header pyarrow reads the names itself (skipping a BOM; its skip_rows would cut a
    # header holding a quoted line break), and the same names, parsed by Python's csv module,
    # ask for text; without one, generated names do.
    names = list(first) if header else [f"c{i}" for i in range(len(first))]
    return pcsv.open_csv(
        pa.BufferReader(body),
        read_options=pcsv.ReadOptions(block_size=BLOCK_BYTES, column_names=None if header else names),
        parse_options=pcsv.ParseOptions(
            delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_bad_row
        ),
        convert_options=pcsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
            null_values=list(NULL_TOKENS),
        ),
    )


def _first_row(body: bytes, delimiter: str) -> list[str]:
    try:
        head = decode_head(body[: read_limit(HEADER_PROBE_BYTES)], HEADER_PROBE_BYTES)
    except UndecodableText as exc:
        raise InvalidCsv(str(exc)) from None
    try:
        return next(csv.reader(io.StringIO(head.text, newline=""), delimiter=delimiter), [])
    except csv.Error:
        raise InvalidCsv(f"{INVALID_CSV}: the first row cannot be read as CSV") from None


def _looks_like_data(cells: Sequence[str]) -> bool:
    """Whether a first row is data: column names are never numbers, dates or booleans."""
    return any(cell and any(p.search(cell) for p in _LOOKS_TYPED) for cell in cells)


def _column_names(header: Sequence[str]) -> list[str]:
    """Header cells as unique names; an empty or repeated one becomes ColumnN (N: 1-based)."""
    names: list[str] = []
    seen: set[str] = set()
    for number, cell in enumerate(header, start=1):
        name = cell.strip()
        if not name or name in seen:
            name = f"Column{number}"
        seen.add(name)
        names.append(name)
    return names


def _profile(
    columns: Sequence[ColumnProfile], *, rows: int, skipped: int, cut: bool, nbytes: int, header: bool
) -> dict[str, Any]:
    return {
        "RowsProfiled": rows,
        "RowsSkipped": skipped,
        "Truncated": cut,
        "BytesProfiled": nbytes,
        "Header": header,
        "ColumnCount": len(columns),
        "Columns": [column.result() for column in columns],
    }


def summary(profile: Mapping[str, Any]) -> dict[str, Any]:
    """The resultString object: the profile's totals and a few fields of its first columns."""
    columns = profile["Columns"]
    out = {key: value for key, value in profile.items() if key != "Columns"}
    out["Columns"] = [
        {
            "Name": column["Name"][:MAX_SUMMARY_NAME_CHARS],
            "Type": column["Type"],
            "MissingCount": column["MissingCount"],
            "DistinctCount": column["DistinctCount"],
        }
        for column in columns[:MAX_SUMMARY_COLUMNS]
    ]
    if len(columns) > MAX_SUMMARY_COLUMNS:
        out["ColumnsListed"] = MAX_SUMMARY_COLUMNS
    return out


def sink_columns(profile: Mapping[str, Any]) -> dict[str, Any]:
    """The profile as results-sink columns: scalars, lists of strings, and the whole as JSON."""
    columns = profile["Columns"]
    return {
        "rows_profiled": profile["RowsProfiled"],
        "rows_skipped": profile["RowsSkipped"],
        "truncated": profile["Truncated"],
        "bytes_profiled": profile["BytesProfiled"],
        "header": profile["Header"],
        "column_count": profile["ColumnCount"],
        "column_names": [column["Name"] for column in columns],
        "column_types": [column["Type"] for column in columns],
        "profile": json.dumps(profile, ensure_ascii=False, separators=(",", ":")),
    }


# --- handler -----------------------------------------------------------------------------------


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """S3 Batch Operations entry point: one result per task in the event (one task, or a batch)."""
    try:
        options = Options(
            header=user_argument(event, HEADER_ARGUMENT, (AUTO, PRESENT, ABSENT), AUTO),
            delimiter=user_argument(event, DELIMITER_ARGUMENT, DELIMITERS, ","),
        )
    except BadUserArgument as exc:
        return fail_all(event, str(exc))
    compute = functools.partial(_answer, options=options)
    return batch_in_chunks(event, compute, max_bytes=read_limit(MAX_PROFILE_BYTES))


def _answer(bodies: Sequence[bytes], *, options: Options) -> list[Answer]:
    answers = []
    for body in bodies:
        cut = len(body) > MAX_PROFILE_BYTES
        try:
            profile = profile_csv(body[:MAX_PROFILE_BYTES], options, cut=cut)
        except InvalidCsv as exc:
            answers.append(Answer.failed(str(exc)))
            continue
        brief = json.dumps(summary(profile), separators=(",", ":"))
        answers.append(Answer.ok(brief, sink_columns(profile)))
    return answers
