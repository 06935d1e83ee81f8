"""Which events a pipeline takes: S3 notification prefix/suffix rules and EventBridge patterns.

Pattern semantics (docs/aws-contracts.md#eventbridge-events): keys are AND, the values in one array are OR,
matching is on
leaf values; an array in the event matches if any of its elements does.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from s3batch.pipelines.events import ObjectEvent

_MISSING = object()
_NUMERIC_OPS: dict[str, Callable[[float, float], bool]] = {
    "=": lambda a, b: a == b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


class PatternError(ValueError):
    """A content pattern this module does not understand (refused when the file is loaded)."""


@dataclass(frozen=True, slots=True)
class KeyRule:
    """An S3 notification filter: both parts must match (case-sensitive, as in S3)."""

    prefix: str = ""
    suffix: str = ""

    def matches(self, key: str) -> bool:
        return key.startswith(self.prefix) and key.endswith(self.suffix)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Key rules (any one may match; none means all keys) AND an optional content pattern."""

    rules: tuple[KeyRule, ...] = ()
    pattern: Mapping[str, Any] | None = None

    def matches(self, event: ObjectEvent) -> bool:
        if self.rules and not any(r.matches(event.key) for r in self.rules):
            return False
        return self.pattern is None or match_pattern(self.pattern, event.pattern_doc)


def match_pattern(pattern: Mapping[str, Any], doc: Any) -> bool:
    """True when `doc` (an EventBridge event) matches `pattern`."""
    for name, rule in pattern.items():
        if name == "$or":
            if not any(match_pattern(p, doc) for p in rule):
                return False
            continue
        value = doc.get(name, _MISSING) if isinstance(doc, Mapping) else _MISSING
        if isinstance(rule, Mapping):
            if not match_pattern(rule, value if value is not _MISSING else {}):
                return False
        elif not _match_leaf(rule, value):
            return False
    return True


def _match_leaf(rule: Any, value: Any) -> bool:
    if not isinstance(rule, list):
        raise PatternError(f"pattern leaves must be arrays, got {rule!r}")
    values = value if isinstance(value, list) else [value]
    return any(_match_one(cond, v) for cond in rule for v in values) or _exists_false(rule, value)


def _exists_false(rule: Sequence[Any], value: Any) -> bool:
    return value is _MISSING and any(isinstance(c, Mapping) and c.get("exists") is False for c in rule)


def _match_one(cond: Any, value: Any) -> bool:
    if not isinstance(cond, Mapping):  # exact match, incl. null and ""
        return value is not _MISSING and cond == value
    if len(cond) != 1:
        raise PatternError(f"one operator per condition, got {dict(cond)!r}")
    op, arg = next(iter(cond.items()))
    handler = _OPERATORS.get(op)
    if handler is None:
        raise PatternError(f"unsupported pattern operator {op!r}")
    return handler(arg, value)


def _string_op(arg: Any, value: Any, test: Callable[[str, str], bool]) -> bool:
    if not isinstance(value, str):
        return False
    if isinstance(arg, Mapping) and "equals-ignore-case" in arg:
        return test(value.lower(), str(arg["equals-ignore-case"]).lower())
    return test(value, str(arg))


def _prefix(arg: Any, value: Any) -> bool:
    return _string_op(arg, value, str.startswith)


def _suffix(arg: Any, value: Any) -> bool:
    return _string_op(arg, value, str.endswith)


def _ignore_case(arg: Any, value: Any) -> bool:
    return isinstance(value, str) and value.lower() == str(arg).lower()


def _wildcard(arg: Any, value: Any) -> bool:
    # fnmatchcase also treats [ and ? specially; EventBridge only knows "*": escape the rest.
    escaped = str(arg).replace("[", "[[]").replace("?", "[?]")
    return isinstance(value, str) and fnmatch.fnmatchcase(value, escaped)


def _anything_but(arg: Any, value: Any) -> bool:
    if value is _MISSING:
        return False
    if isinstance(arg, Mapping):
        return not _match_one(arg, value)
    excluded = arg if isinstance(arg, list) else [arg]
    return value not in excluded


def _numeric(arg: Any, value: Any) -> bool:
    pairs = list(zip(arg[0::2], arg[1::2], strict=True))
    for op, _ in pairs:
        if op not in _NUMERIC_OPS:
            raise PatternError(f"unsupported numeric operator {op!r}")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return all(_NUMERIC_OPS[op](float(value), float(bound)) for op, bound in pairs)


def _exists(arg: Any, value: Any) -> bool:
    return bool(arg) == (value is not _MISSING)


def _cidr(arg: Any, value: Any) -> bool:
    try:
        return ipaddress.ip_address(str(value)) in ipaddress.ip_network(str(arg), strict=False)
    except ValueError:
        return False


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "prefix": _prefix,
    "suffix": _suffix,
    "equals-ignore-case": _ignore_case,
    "wildcard": _wildcard,
    "anything-but": _anything_but,
    "numeric": _numeric,
    "exists": _exists,
    "cidr": _cidr,
}


def validate_pattern(pattern: Mapping[str, Any]) -> None:
    """Refuse a malformed pattern at load time instead of on the first event."""
    match_pattern(pattern, {})
    _walk(pattern)


def _walk(pattern: Mapping[str, Any]) -> None:
    for name, rule in pattern.items():
        if name == "$or":
            for sub in rule:
                validate_pattern(sub)
        elif isinstance(rule, Mapping):
            _walk(rule)
        else:
            for cond in rule if isinstance(rule, list) else [rule]:
                _match_one(cond, "probe")
