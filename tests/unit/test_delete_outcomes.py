"""DeleteObjects error entries → per-object outcomes (storage/s3/shapes.py::delete_outcomes)."""

from __future__ import annotations

from s3batch.errors import StorageError
from s3batch.storage.base import VersionRef
from s3batch.storage.s3.shapes import delete_outcomes


def test_errors_match_by_key_and_version_or_by_key_alone() -> None:
    batch = [VersionRef("a", "v1"), VersionRef("a", "v2"), VersionRef("b"), VersionRef("c")]
    errors = [
        {"Key": "a", "VersionId": "v2", "Code": "AccessDenied", "Message": "no"},
        {"Key": "c", "Code": "SlowDown", "Message": "later"},  # no VersionId (moto leaves it out)
        {"Key": "zzz", "Code": "InternalError"},  # names no object of the batch: changes nothing
    ]
    outcomes = delete_outcomes(batch, errors)
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], StorageError) and outcomes[1].code == "AccessDenied"
    assert isinstance(outcomes[3], StorageError) and outcomes[3].retryable


def test_an_entry_without_version_fails_every_version_of_its_key() -> None:
    batch = [VersionRef("a", "v1"), VersionRef("a", "v2")]
    outcomes = delete_outcomes(batch, [{"Key": "a", "Code": "AccessDenied"}])
    assert all(isinstance(o, StorageError) and o.code == "AccessDenied" for o in outcomes)


def test_a_whole_batch_of_failures_fails_every_object() -> None:
    batch = [VersionRef(f"k{i}") for i in range(1000)]
    errors = [{"Key": f"k{i}", "Code": "AccessDenied"} for i in range(1000)]
    outcomes = delete_outcomes(batch, errors)
    assert [isinstance(o, StorageError) for o in outcomes] == [True] * 1000
    assert delete_outcomes(batch, []) == [None] * 1000
