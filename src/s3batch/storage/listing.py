"""Listing a bucket in parallel by key ranges: what manifest generators, inventory reports and
the pipelines' reconciling listings share.

`plan_ranges` cuts the key space under a prefix into ranges at the common prefixes found one or
two "/" levels down (ListObjectsV2 with a delimiter, a few requests). Each range is then listed
on its own (`range_objects`, or `range_versions` for ListObjectVersions), at most a bounded
number at once (`run_ranges`, or `run_workers` for callers that keep state across the ranges one
worker takes). A range [P, next) where P is a common prefix is listed as prefix P exactly (the
server stops at its end), then the few keys between P's last key and `next` with a bounded
listing (`end_before`); any other range is one bounded listing from `start_after`. A range holds
whole keys, so a key's versions come together within one range's listing. A caller that uses
no ETag says so (`etags=False`), so a folder store lists without hashing its files.

Only the store's listing calls are used: nothing here knows of jobs, manifests or tables.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from s3batch.domain.objects import ObjectInfo
from s3batch.storage.base import ObjectStore
from s3batch.storage.capabilities import VersionedStore

T = TypeVar("T")
#: Key ranges listed at once unless the caller says otherwise (each an in-flight listing loop).
LIST_CONCURRENCY = 16
#: How many "/" levels below the listing prefix are explored for range boundaries.
MAX_FANOUT_DEPTH = 2

#: One listing call: (prefix, start_after, end_before) → objects in key order.
Listing = Callable[[str, str | None, str | None], AsyncIterator[ObjectInfo]]
#: The ranges one worker takes, as (index in the plan, range), shared by all workers.
RangeQueue = Iterator[tuple[int, "KeyRange"]]


@dataclass(frozen=True, slots=True)
class KeyRange:
    """Keys k with lower <= k < upper (None: unbounded), all under the listing prefix."""

    lower: str | None
    upper: str | None

    @property
    def start_after(self) -> str | None:
        # lower minus its last character sorts just before lower; keys in between are skipped.
        return self.lower[:-1] if self.lower else None


async def plan_ranges(
    store: ObjectStore,
    bucket: str,
    prefix: str = "",
    *,
    concurrency: int = LIST_CONCURRENCY,
    depth: int = MAX_FANOUT_DEPTH,
) -> list[KeyRange]:
    """Cut the keys under `prefix` into ranges at common prefixes found up to `depth` levels
    down, stopping early once there are `concurrency` boundaries (enough ranges to keep every
    listing slot busy: more boundaries only cost requests). The ranges cover every key."""
    bounds: set[str] = set()
    level = [prefix]
    sem = asyncio.Semaphore(concurrency)

    async def below(p: str) -> list[str]:
        async with sem:
            return await store.list_prefixes(bucket, p, "/")

    for _ in range(depth):
        found = [cp for group in await asyncio.gather(*(below(p) for p in level)) for cp in group]
        bounds.update(cp for cp in found if cp > prefix)
        if not found or len(bounds) >= concurrency:
            break
        level = found
    edges: list[str | None] = [None, *sorted(bounds), None]
    return [KeyRange(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def range_objects(
    store: ObjectStore, bucket: str, prefix: str, r: KeyRange, *, etags: bool = True
) -> AsyncIterator[ObjectInfo]:
    """Every object under `prefix` in range `r`, in key order (ListObjectsV2). `etags=False`:
    the caller uses no ETag (see `ObjectStore.list_objects`)."""

    def listing(p: str, start_after: str | None, end_before: str | None) -> AsyncIterator[ObjectInfo]:
        return store.list_objects(bucket, p, start_after, end_before=end_before, etags=etags)

    return _range(listing, prefix, r)


def range_versions(
    store: VersionedStore, bucket: str, prefix: str, r: KeyRange, *, etags: bool = True
) -> AsyncIterator[ObjectInfo]:
    """Every version and delete marker under `prefix` in range `r`, in key order, newest first
    per key (ListObjectVersions). `etags`: as for `range_objects`."""

    def listing(p: str, start_after: str | None, _end_before: str | None) -> AsyncIterator[ObjectInfo]:
        # ListObjectVersions has no end bound: `_within` stops at the range's end instead.
        return store.list_versions(bucket, p, start_after, etags=etags)

    return _range(listing, prefix, r)


def range_listing(
    store: VersionedStore, bucket: str, prefix: str, r: KeyRange, *, versions: bool, etags: bool = True
) -> AsyncIterator[ObjectInfo]:
    """`range_versions` when `versions`, else `range_objects`."""
    if versions:
        return range_versions(store, bucket, prefix, r, etags=etags)
    return range_objects(store, bucket, prefix, r, etags=etags)


async def _range(listing: Listing, prefix: str, r: KeyRange) -> AsyncIterator[ObjectInfo]:
    """A range that is one common prefix plus the keys between it and the next boundary is
    listed as that exact prefix, then the gap after its last key (usually one short page)."""
    if r.lower is None or (r.upper is not None and r.upper.startswith(r.lower)):
        async for info in _within(listing(prefix, r.start_after, r.upper), r):
            yield info
        return
    last = None
    async for info in _within(listing(r.lower, None, None), r):
        last = info.key
        yield info
    async for info in _within(listing(prefix, last or r.lower, r.upper), r):
        yield info


async def _within(listing: AsyncIterator[ObjectInfo], r: KeyRange) -> AsyncIterator[ObjectInfo]:
    """The listed objects inside `r`; the listing is closed at the range's end."""
    async with contextlib.aclosing(listing):  # type: ignore[type-var]
        async for info in listing:
            if r.lower is not None and info.key < r.lower:
                continue
            if r.upper is not None and info.key >= r.upper:
                return
            yield info


async def run_ranges(
    ranges: Sequence[KeyRange], fn: Callable[[KeyRange], Awaitable[T]], concurrency: int
) -> list[T]:
    """`fn(r)` for every range, at most `concurrency` at once, started in range order; the
    results in range order. When one fails the others are cancelled, then the error is raised."""
    results: dict[int, T] = {}

    async def worker(queue: RangeQueue) -> None:
        for index, r in queue:
            results[index] = await fn(r)

    await run_workers(ranges, worker, concurrency)
    return [results[i] for i in range(len(ranges))]


async def run_workers(
    ranges: Sequence[KeyRange], worker: Callable[[RangeQueue], Awaitable[T]], concurrency: int
) -> list[T]:
    """min(concurrency, ranges) tasks of `worker`, sharing one queue of (index, range): each
    range goes to exactly one worker, which may keep state (an open file) from one range to the
    next. Returns each worker's result. When one fails (or this is cancelled) the others are
    cancelled and awaited before the error is raised, so none outlives what it writes into."""
    queue = iter(enumerate(ranges))
    return await _gather_or_cancel(worker(queue) for _ in range(min(concurrency, len(ranges))))


async def _gather_or_cancel(work: Iterable[Awaitable[T]]) -> list[T]:
    """Run `work` as tasks and return their results in order; a failure cancels the rest."""
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


__all__ = [
    "LIST_CONCURRENCY",
    "MAX_FANOUT_DEPTH",
    "KeyRange",
    "plan_ranges",
    "range_listing",
    "range_objects",
    "range_versions",
    "run_ranges",
    "run_workers",
]
