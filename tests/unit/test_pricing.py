"""The price table and request counts of the dry run."""

from __future__ import annotations

import pytest

from s3batch.service.dryrun import estimate, requests_for


def test_one_million_copies_cost_the_aws_list_price() -> None:
    cost = estimate("S3PutObjectCopy", {}, 1_000_000)
    assert cost.requests == {"COPY": 1_000_000, "GET": 1}
    assert cost.batch_job_usd == 0.25
    assert cost.batch_objects_usd == pytest.approx(1.0)
    assert cost.requests_usd == pytest.approx(5.0 + 0.0000004)
    assert cost.total_usd == pytest.approx(6.25, abs=1e-3)


def test_deletes_are_batched_per_thousand_and_free() -> None:
    assert requests_for("S3DeleteObject", {}, 2001) == {"POST": 3, "GET": 1}
    assert estimate("S3DeleteObjectTagging", {}, 10).requests_usd == pytest.approx(0.0000004)
