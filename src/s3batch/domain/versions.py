"""Which noncurrent versions of a key a manifest generator selects (docs/versions.md).

Pure: no I/O. The service feeds a version listing through `NoncurrentPicker` and writes what it
hands back.

The rule (`NoncurrentRule`) takes its two fields from S3 Lifecycle's NoncurrentVersionExpiration
and means what they mean there, per key:
- `newer_noncurrent_versions` (N): the N newest noncurrent versions are kept; only older ones
  can be selected;
- `noncurrent_days` (D): a version is selected only once it has been noncurrent for at least D
  days, i.e. its successor (the next newer version or delete marker) was written D days or more
  before `now`.
Both given: both must hold. The latest version (IsLatest) and delete markers are never selected;
delete markers are not counted in N, but one can be the successor that made a version
noncurrent.

Order within a key: the latest first, then by LastModified, newest first, ties kept in listing
order (S3 lists a key's versions newest first, so a tie is settled as S3 settles it).

A listing must give each key's versions together (S3's ListObjectVersions does, also when a
key's versions are cut across pages). The picker holds one key's versions at a time, so memory
is bounded by the largest version count of one key, not by the listing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from s3batch.domain.objects import ObjectInfo
from s3batch.errors import ManifestError


@dataclass(frozen=True, slots=True)
class NoncurrentRule:
    """At least one field is set; see the module docstring."""

    newer_noncurrent_versions: int | None = None
    noncurrent_days: int | None = None


def ordered_versions(group: Sequence[ObjectInfo]) -> list[ObjectInfo]:
    """A key's versions, latest first, then newest LastModified first; ties in listing order."""
    # sorted() is stable: equal (latest, LastModified) keep their listing positions.
    return sorted(group, key=lambda v: (not v.is_latest, -v.last_modified.timestamp()))


def select_noncurrent(group: Sequence[ObjectInfo], rule: NoncurrentRule, now: datetime) -> list[ObjectInfo]:
    """The versions of one key's `group` that `rule` selects, newest first."""
    keep = rule.newer_noncurrent_versions or 0
    min_age = timedelta(days=rule.noncurrent_days) if rule.noncurrent_days is not None else None
    selected: list[ObjectInfo] = []
    kept = 0
    successor: ObjectInfo | None = None
    for version in ordered_versions(group):
        newer, successor = successor, version
        if version.is_latest or version.is_delete_marker:
            continue
        if kept < keep:
            kept += 1
            continue
        if min_age is not None and not _noncurrent_for(newer, min_age, now):
            continue
        selected.append(version)
    return selected


def _noncurrent_for(successor: ObjectInfo | None, min_age: timedelta, now: datetime) -> bool:
    # Without a newer entry the moment it became noncurrent is unknown: never selected, since
    # a delete must not rest on a guess.
    return successor is not None and now - successor.last_modified >= min_age


class NoncurrentPicker:
    """Feeds a version listing (key order, a key's versions together) and hands back the
    selected versions one key at a time.

    Raises ManifestError when a key comes back after a later one: the listing is then not
    grouped by key and a per-key count would be wrong.
    """

    def __init__(self, rule: NoncurrentRule, now: datetime) -> None:
        self._rule = rule
        self._now = now
        self._group: list[ObjectInfo] = []

    def feed(self, version: ObjectInfo) -> list[ObjectInfo]:
        """Versions selected from the key before `version`'s, once `version` starts a new key."""
        if not self._group or self._group[-1].key == version.key:
            self._group.append(version)
            return []
        if version.key < self._group[-1].key:
            raise ManifestError(
                f"version listing is out of key order: {version.key!r} after {self._group[-1].key!r}"
            )
        done, self._group = self._group, [version]
        return select_noncurrent(done, self._rule, self._now)

    def close(self) -> list[ObjectInfo]:
        """The last key's selected versions."""
        done, self._group = self._group, []
        return select_noncurrent(done, self._rule, self._now) if done else []
