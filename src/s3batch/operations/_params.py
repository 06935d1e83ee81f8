"""Small validators shared by operation modules (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s3batch.errors import BadRequest

#: S3's own limits on object tags.
MAX_OBJECT_TAGS = 10
MAX_TAG_KEY_CHARS = 128
MAX_TAG_VALUE_CHARS = 256


def reject_unknown(op: str, params: Mapping[str, Any], known: set[str]) -> None:
    unknown = set(params) - known
    if unknown:
        raise BadRequest(f"{op}: unknown or unsupported parameter(s): {', '.join(sorted(unknown))}")


def tag_set(op: str, field: str, value: Any) -> dict[str, str]:
    """An S3TagSet ([{Key, Value}]) as a dict, checked against S3's object-tag limits."""
    if not isinstance(value, list):
        raise BadRequest(f"{op}.{field} must be a list of {{Key, Value}}")
    if len(value) > MAX_OBJECT_TAGS:
        raise BadRequest(f"{op}.{field}: S3 allows at most {MAX_OBJECT_TAGS} tags per object")
    tags: dict[str, str] = {}
    for tag in value:
        if not isinstance(tag, Mapping) or not isinstance(tag.get("Key"), str):
            raise BadRequest(f"{op}.{field}: each tag needs a string Key")
        key, val = tag["Key"], tag.get("Value", "")
        if not isinstance(val, str):
            raise BadRequest(f"{op}.{field}: tag {key!r} Value must be a string")
        if not 1 <= len(key) <= MAX_TAG_KEY_CHARS or len(val) > MAX_TAG_VALUE_CHARS:
            raise BadRequest(f"{op}.{field}: tag {key!r}: Key 1-128, Value 0-256 characters")
        if key in tags:
            raise BadRequest(f"{op}.{field}: tag key {key!r} appears twice")
        tags[key] = val
    return tags


def one_of(op: str, field: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise BadRequest(f"{op}.{field} must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)
