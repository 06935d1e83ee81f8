from __future__ import annotations

from typing import Any

import pytest

from s3batch.pipelines.events import from_eventbridge
from s3batch.pipelines.filters import EventFilter, KeyRule, PatternError, match_pattern, validate_pattern

DOC = {
    "source": "aws.s3",
    "detail-type": "Object Created",
    "resources": ["arn:aws:s3:::staging", "arn:aws:s3:::other"],
    "detail": {
        "bucket": {"name": "staging"},
        "object": {"key": "in/lib/Photo.PNG", "size": 5, "etag": "abc"},
        "source-ip-address": "10.0.0.7",
        "reason": "PutObject",
    },
}


def obj(rule: Any) -> dict[str, Any]:
    return {"detail": {"object": {"key": rule}}}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (obj(["in/lib/Photo.PNG"]), True),
        (obj(["other"]), False),
        (obj([{"prefix": "in/"}]), True),
        (obj([{"prefix": "IN/"}]), False),
        (obj([{"prefix": {"equals-ignore-case": "IN/"}}]), True),
        (obj([{"suffix": ".png"}]), False),
        (obj([{"suffix": {"equals-ignore-case": ".png"}}]), True),
        (obj([{"equals-ignore-case": "IN/LIB/photo.png"}]), True),
        (obj([{"wildcard": "*/lib/*"}]), True),
        (obj([{"wildcard": "*/bin/*"}]), False),
        (obj([{"anything-but": "x"}]), True),
        (obj([{"anything-but": ["in/lib/Photo.PNG"]}]), False),
        (obj([{"anything-but": {"prefix": "in/"}}]), False),
        (obj([{"anything-but": {"suffix": ".jpg"}}]), True),
        (obj([{"anything-but": {"wildcard": "in/*"}}]), False),
        ({"detail": {"object": {"size": [{"numeric": [">", 0, "<=", 5]}]}}}, True),
        ({"detail": {"object": {"size": [{"numeric": [">", 5]}]}}}, False),
        ({"detail": {"object": {"size": [{"numeric": ["=", 5]}]}}}, True),
        ({"detail": {"object": {"version-id": [{"exists": False}]}}}, True),
        ({"detail": {"object": {"version-id": [{"exists": True}]}}}, False),
        ({"detail": {"object": {"etag": [{"exists": True}]}}}, True),
        ({"detail": {"source-ip-address": [{"cidr": "10.0.0.0/24"}]}}, True),
        ({"detail": {"source-ip-address": [{"cidr": "10.1.0.0/24"}]}}, False),
        ({"resources": ["arn:aws:s3:::other"]}, True),  # any element of an event array
        ({"source": ["aws.s3"], "detail-type": ["Object Deleted"]}, False),  # keys AND
        ({"detail-type": ["Object Deleted", "Object Created"]}, True),  # values OR
        ({"$or": [obj([{"suffix": ".jpg"}]), {"detail": {"reason": ["PutObject"]}}]}, True),
        ({"$or": [obj([{"suffix": ".jpg"}]), {"detail": {"reason": ["CopyObject"]}}]}, False),
        ({"detail": {"missing": [None]}}, False),
    ],
)
def test_operators(pattern: dict[str, Any], expected: bool) -> None:
    assert match_pattern(pattern, DOC) is expected


@pytest.mark.parametrize(
    "pattern",
    [obj("not-a-list"), obj([{"regex": "x"}]), {"detail": {"object": {"size": [{"numeric": ["!", 1]}]}}}],
)
def test_invalid_patterns_refused(pattern: dict[str, Any]) -> None:
    with pytest.raises(PatternError):
        validate_pattern(pattern)


def test_key_rules_and_pattern_combine() -> None:
    event = from_eventbridge({**DOC, "time": "t"})
    assert event is not None
    keep = EventFilter(rules=(KeyRule("out/"), KeyRule("in/", ".PNG")), pattern=obj([{"prefix": "in/"}]))
    assert keep.matches(event)
    assert not EventFilter(rules=(KeyRule("in/", ".png"),)).matches(event)  # S3 rules are case-sensitive
    assert not EventFilter(pattern={"detail": {"object": {"size": [{"numeric": ["<", 1]}]}}}).matches(event)
    assert EventFilter().matches(event)
