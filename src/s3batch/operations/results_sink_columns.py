"""The columns of a results sink: which type each `resultData` column has (pure).

A function's `resultData` is a JSON object of columns. Each JSON value has a column type:

    string → STRING        integer → INT (int64)      other number → FLOAT (float64)
    boolean → BOOL          null → no type (fits any column)
    list of numbers → VECTOR (list<float32>)          list of strings → STRINGS (list<string>)
    [] → LIST (fits VECTOR and STRINGS; written as VECTOR when nothing else decides)

A column takes the type of its first typed value; later values must fit it. An integer fits a
FLOAT column; a fractional number widens an INT column to FLOAT until the column is *fixed*
(its first file or table column is written), after which it is a clash. Objects, nested or
mixed lists, integers outside int64 and vector elements outside float32 are refused.

`ColumnTypes.admit` checks one write's rows: either every row fits (and the columns they
introduce or widen are recorded), or `SinkDataError` names the first row and column that does
not, and nothing changes. So a clash fails the rows of that write, never the sink.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Collection, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

#: Columns every sink row has besides its data; a data column may not take these names.
RESERVED_COLUMNS = ("bucket", "key", "version_id", "task_id", "job_id", "written_at")
#: Longest column name, in UTF-8 bytes: PostgreSQL's identifier limit (NAMEDATALEN - 1), which
#: would otherwise cut longer names silently. The same for every backend, so a job's data fits all.
MAX_COLUMN_NAME_BYTES = 63
#: Data columns one sink may hold (PostgreSQL allows 1,600 per table, SQLite 2,000 by default):
#: a function that puts ids in its keys fails its rows instead of growing the table without bound.
MAX_DATA_COLUMNS = 1000
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Largest finite float32; a vector element beyond it would become infinity.
FLOAT32_MAX = 3.4028234663852886e38


class ColumnType(StrEnum):
    STRING = "string"
    INT = "int64"
    FLOAT = "float64"
    BOOL = "bool"
    VECTOR = "list<float32>"
    STRINGS = "list<string>"
    #: Only empty lists so far; becomes VECTOR when fixed.
    LIST = "list"


#: The list types: a LIST column (only empty lists so far) may become either of the others.
_LIST_TYPES = frozenset({ColumnType.VECTOR, ColumnType.STRINGS, ColumnType.LIST})


class SinkDataError(Exception):
    """A write's `resultData` cannot go into the sink (a type clash, an unsupported value or
    column name): that write's rows fail permanently and none of them is written."""

    #: The report's error code for the tasks of such a write.
    code = "ResultDataRejected"


def value_type(value: Any) -> ColumnType | None:
    """The column type of one JSON value (None for null); ValueError says why it has none."""
    if value is None:
        return None
    if isinstance(value, bool):  # before int: a bool is an int
        return ColumnType.BOOL
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("integer outside the int64 range")
        return ColumnType.INT
    if isinstance(value, float):
        return ColumnType.FLOAT
    if isinstance(value, str):
        return ColumnType.STRING
    if isinstance(value, list):
        return _list_type(value)
    if isinstance(value, Mapping):
        raise ValueError(
            "objects are not supported (strings, numbers, booleans, null, lists of numbers or strings)"
        )
    raise ValueError(f"unsupported value of type {type(value).__name__}")


def _list_type(items: list[Any]) -> ColumnType:
    if not items:
        return ColumnType.LIST
    # Types and range at C speed: a 384-float vector is checked in microseconds.
    kinds = set(map(type, items))
    if kinds == {str}:
        return ColumnType.STRINGS
    if not kinds <= {int, float}:  # type(True) is bool: booleans are not vector elements
        raise ValueError("a list must hold only numbers or only strings")
    try:
        struct.pack(
            f"<{len(items)}f", *items
        )  # refuses finite values beyond float32, as a float32 column would
    except (OverflowError, struct.error):  # struct.error: an int too large for any float
        bad = next((v for v in items if abs(v) > FLOAT32_MAX and not _infinite(v)), "a value")
        raise ValueError(f"vector element {bad!r:.40} is outside the float32 range") from None
    return ColumnType.VECTOR


def _infinite(value: float) -> bool:
    return isinstance(value, float) and math.isinf(value)


def merge(have: ColumnType | None, new: ColumnType | None, fixed: bool) -> ColumnType | None:
    """The column's type once a value of type `new` joins values of type `have`; ValueError on a clash."""
    if new is None or new == have:
        return have
    if have is None:
        return new
    if have is ColumnType.FLOAT and new is ColumnType.INT:
        return have
    if have is ColumnType.INT and new is ColumnType.FLOAT and not fixed:
        return new
    if have is ColumnType.LIST and new in _LIST_TYPES:
        return new
    if new is ColumnType.LIST and have in _LIST_TYPES:
        return have
    raise ValueError(f"the column holds {have}; this value is {new}")


def check_name(name: object) -> str:
    """`name` if it can be a data column's name; ValueError says why not."""
    if not isinstance(name, str) or not name:
        raise ValueError("a column name must be a non-empty string")
    if "\x00" in name:
        raise ValueError("a column name may not contain NUL")
    if len(name.encode()) > MAX_COLUMN_NAME_BYTES:
        raise ValueError(f"a column name may be at most {MAX_COLUMN_NAME_BYTES} bytes of UTF-8")
    if name.casefold() in RESERVED_COLUMNS:
        raise ValueError(f"the name is reserved ({', '.join(RESERVED_COLUMNS)})")
    return name


class ColumnTypes:
    """A sink's data columns and their types, in the order they first appeared."""

    def __init__(self, fixed: Mapping[str, ColumnType] | None = None, foreign: Collection[str] = ()) -> None:
        #: None: only nulls so far (a Parquet null column; no table column yet).
        self.types: dict[str, ColumnType | None] = dict(fixed or {})
        #: Columns already written with their type: an INT column no longer widens.
        self.fixed: set[str] = set(self.types)
        #: Columns of an existing table whose type the sink does not write.
        self.foreign = frozenset(foreign)
        # SQLite names are case-insensitive: "Score" and "score" would be one column there.
        self._folded = {name.casefold(): name for name in (*self.types, *self.foreign)}

    def admit(self, rows: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        """Check (label, data) rows; record their columns, or raise SinkDataError changing nothing."""
        proposed: dict[str, ColumnType | None] = {}
        folded: dict[str, str] = {}
        for label, data in rows:
            for name, value in data.items():
                try:
                    self._check_new(name, folded)
                    have = proposed[name] if name in proposed else self.types.get(name)
                    proposed[name] = merge(have, value_type(value), name in self.fixed)
                except ValueError as exc:
                    raise SinkDataError(f"resultData of {label}: column {name!r}: {exc}") from None
        added = [name for name in proposed if name not in self.types]
        if len(self.types) + len(added) > MAX_DATA_COLUMNS:
            raise SinkDataError(
                f"resultData of {rows[0][0]}: more than {MAX_DATA_COLUMNS} columns in this results sink"
            )
        self.types.update(proposed)
        self._folded.update(folded)

    def _check_new(self, name: str, folded: dict[str, str]) -> None:
        if name in self.types:
            return
        if name in self.foreign:
            raise ValueError("the existing table has this column with a type the sink does not write")
        check_name(name)
        other = self._folded.get(name.casefold(), folded.get(name.casefold(), name))
        if other != name:
            raise ValueError(f"differs from column {other!r} only in letter case")
        folded[name.casefold()] = name

    def fix(self, names: Iterable[str]) -> dict[str, ColumnType | None]:
        """The types of `names`, in column order, as they are about to be written; from now on
        they no longer widen (a LIST column becomes VECTOR, as written)."""
        wanted = set(names)
        out: dict[str, ColumnType | None] = {}
        for name, kind in self.types.items():
            if name not in wanted:
                continue
            if kind is ColumnType.LIST:
                kind = self.types[name] = ColumnType.VECTOR
            if kind is not None:
                self.fixed.add(name)
            out[name] = kind
        return out
