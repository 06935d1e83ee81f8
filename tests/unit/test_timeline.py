"""Chart points from durable samples: rates between samples, merging for long jobs, gaps."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from s3batch.domain.timeline import GAP_INTERVALS, SAMPLE_INTERVAL_S, Sample, points


def _samples(n: int, per_sample: int = 10, start: float = 1000.0) -> list[Sample]:
    return [
        Sample(start + i * SAMPLE_INTERVAL_S, i * per_sample, i, throttled=1, in_flight=i, limit=64 - i)
        for i in range(n)
    ]


def test_rates_between_consecutive_samples() -> None:
    got = points(_samples(3))
    assert len(got) == 2
    assert got[0].succeeded_per_s == pytest.approx(10 / SAMPLE_INTERVAL_S)
    assert got[0].failed_per_s == pytest.approx(1 / SAMPLE_INTERVAL_S)
    last = got[1]
    assert (last.at, last.throttled, last.in_flight, last.limit) == (1000 + 2 * SAMPLE_INTERVAL_S, 1, 2, 62)


def test_fewer_than_two_samples_make_no_point() -> None:
    assert points([]) == [] and points(_samples(1)) == []


def test_long_jobs_are_merged_to_the_cap_keeping_totals() -> None:
    samples = _samples(1001)
    got = points(samples, max_points=100)
    assert len(got) == 100
    covered = sum(p.succeeded_per_s * SAMPLE_INTERVAL_S * 10 for p in got if p.succeeded_per_s is not None)
    assert covered == pytest.approx(samples[-1].succeeded)
    assert sum(p.throttled for p in got) == 1000  # every sample's throttling answers are kept
    assert got[0].in_flight == 10 and got[0].limit == 54  # the peak in flight, the lowest limit


def test_a_pause_is_a_gap_not_a_slope() -> None:
    before = _samples(3)
    after = [Sample(s.at + 3600, s.succeeded + 20, s.failed + 2) for s in _samples(3)]
    got = points([*before, *after])
    gaps = [p for p in got if p.succeeded_per_s is None]
    assert len(gaps) == 1 and gaps[0].at == after[0].at
    assert all(p.succeeded_per_s == pytest.approx(5.0) for p in got if p.succeeded_per_s is not None)
    assert GAP_INTERVALS * SAMPLE_INTERVAL_S < 3600


def test_the_store_merges_samples_in_sql_keeping_totals(tmp_path: Path) -> None:
    from s3batch.store.sqlite import SqliteJobStore

    async def scenario() -> tuple[list[Sample], list[Sample]]:
        store = SqliteJobStore(tmp_path / "jobs.sqlite3")
        try:
            for sample in _samples(1000):
                await store.add_sample("job", sample)
            await store.add_sample("other", Sample(1.0, 5, 5, throttled=99))
            return await store.samples("job"), await store.samples("job", at_most=100)
        finally:
            await store.close()

    every, merged = asyncio.run(scenario())
    assert len(every) == 1000 and len(merged) == 100
    assert merged[-1] == Sample(every[-1].at, every[-1].succeeded, every[-1].failed, 10, 999, 64 - 999)
    assert sum(s.throttled for s in merged) == 1000  # no other job's samples, none lost
    assert [s.at for s in merged] == sorted(s.at for s in merged)
