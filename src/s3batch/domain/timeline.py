"""A job's timeline: durable samples of its progress, turned into chart points.

While a job runs, the runner records a `Sample` every `SAMPLE_INTERVAL_S` (a few dozen bytes in
the job store), so a finished or resumed job still shows its whole history. Counts are
cumulative (succeeded, failed); `throttled` counts the throttling answers since the previous
sample; `in_flight` and `limit` are the adaptive limiter's requests in flight and its current
limit (None where the engine does not report them, e.g. the process engine).

`points` turns samples into per-second rates between consecutive samples, merges neighbours so
a long job gives at most `max_points` points, and marks a gap (the job paused, or its worker
down) with a point whose rates are None, so a chart breaks its line there instead of drawing a
slope across time when nothing ran.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

#: Seconds between two recorded samples of a running job.
SAMPLE_INTERVAL_S = 2.0
#: Consecutive samples further apart than this many intervals mark a gap in the chart.
GAP_INTERVALS = 5
#: Points a chart gets at most (neighbouring samples are merged beyond it).
MAX_CHART_POINTS = 600


@dataclass(frozen=True, slots=True)
class Sample:
    """The state of a job at `at` (epoch seconds)."""

    at: float
    succeeded: int
    failed: int
    throttled: int = 0
    in_flight: int | None = None
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class Point:
    """Rates over the interval from `since` to `at` (epoch seconds); None rates mark a gap."""

    since: float
    at: float
    succeeded_per_s: float | None
    failed_per_s: float | None
    throttled: int
    in_flight: int | None
    limit: int | None


def points(samples: Sequence[Sample], max_points: int = MAX_CHART_POINTS) -> list[Point]:
    """Chart points from samples in time order (rules in the module doc)."""
    if len(samples) < 2:
        return []
    group = max(1, -(-(len(samples) - 1) // max_points))  # ceil: intervals merged per point
    gap_s = SAMPLE_INTERVAL_S * GAP_INTERVALS
    out: list[Point] = []
    for start in range(0, len(samples) - 1, group):
        window = samples[start : min(start + group, len(samples) - 1) + 1]
        gapped = any(b.at - a.at > gap_s for a, b in itertools.pairwise(window))
        out.append(_gap(window) if gapped else _rates(window))
    return out


def _rates(window: Sequence[Sample]) -> Point:
    first, last = window[0], window[-1]
    dt = max(last.at - first.at, 1e-9)
    flights = [s.in_flight for s in window[1:] if s.in_flight is not None]
    limits = [s.limit for s in window[1:] if s.limit is not None]
    return Point(
        since=first.at,
        at=last.at,
        succeeded_per_s=max(last.succeeded - first.succeeded, 0) / dt,
        failed_per_s=max(last.failed - first.failed, 0) / dt,
        throttled=sum(s.throttled for s in window[1:]),
        in_flight=max(flights) if flights else None,
        limit=min(limits) if limits else None,
    )


def _gap(window: Sequence[Sample]) -> Point:
    last = window[-1]
    throttled = sum(s.throttled for s in window[1:])
    return Point(window[0].at, last.at, None, None, throttled, last.in_flight, last.limit)
