"""The backfill and the reconciling listing: list the source bucket, then make the inventory
match it, key range by key range.

The listing is parallel the way manifest generators list (service/manifests.py): the key space
is cut at common prefixes one or two "/" levels down and each range is listed by its own task,
at most LIST_CONCURRENCY at once. Listed objects go into a TEMP table on the reconcile's own
connection; then, for each range of RECONCILE_CHUNK_KEYS listed keys, one transaction adds the
rows of objects the inventory lacks (missed creates), rewrites rows whose ETag or size differs
(missed overwrites), deletes rows of keys the listing did not find (missed deletes) and
refreshes storage class and last-modified time. Fixes are journaled (origin `reconcile`) and
counted in the `reconciles` table; the first listing (the backfill) is counted but not
journaled. Event writes go on meanwhile: anything an event wrote after the reconcile started,
minus `reconcile_grace_s`, is left alone, and so are listed objects modified after that time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from s3batch.domain.objects import ObjectInfo
from s3batch.pipelines.tables.config import TablesConfig
from s3batch.pipelines.tables.sql import Fixes, Listed, RangeFix, TableDb
from s3batch.storage.base import ObjectStore

#: Ranges listed at once.
LIST_CONCURRENCY = 8
#: Levels of common prefixes looked at to cut the key space into ranges.
MAX_FANOUT_DEPTH = 2
#: Listed objects written to the listing table per transaction.
STAGE_BATCH_ROWS = 1000
#: Listed keys per fixing transaction (event writes wait at most that long for the lock).
RECONCILE_CHUNK_KEYS = 1000
#: Tombstones (deleted keys' last sequencers) are kept this long, so a very late event of a
#: deleted key is still recognized as old (seconds).
TOMBSTONE_RETENTION_S = 7 * 24 * 3600
BACKFILL = "backfill"
RECONCILE = "reconcile"

Stage = Callable[[list[Listed]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class KeyRange:
    """Keys k with lower <= k < upper (None: unbounded)."""

    lower: str | None
    upper: str | None

    @property
    def start_after(self) -> str | None:
        # lower minus its last character sorts just before lower; keys in between are skipped.
        return self.lower[:-1] if self.lower else None


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    kind: str
    listed: int
    fixes: Fixes
    started_at: datetime
    finished_at: datetime

    def as_dict(self) -> dict[str, object]:
        f = self.fixes
        return {"kind": self.kind, "listed": self.listed, "fixed": f.fixed, "added": f.added,
                "changed": f.changed, "removed": f.removed, "refreshed": f.refreshed,
                "started_at": self.started_at.isoformat(),
                "finished_at": self.finished_at.isoformat()}  # fmt: skip


async def reconcile(
    cfg: TablesConfig, db: TableDb, store: ObjectStore, bucket: str, kind: str
) -> ReconcileResult:
    """List `bucket` and fix the inventory (`db`: a connection used only by this call)."""
    started = datetime.now(UTC)
    guard = started - timedelta(seconds=cfg.reconcile_grace_s)
    lock = asyncio.Lock()

    async def stage(rows: list[Listed]) -> None:
        async with lock:  # one connection: one batch at a time
            await asyncio.to_thread(db.stage, rows)

    await asyncio.to_thread(db.stage_start)
    try:
        listed = await list_bucket(store, bucket, stage)
        fixes = await _fix_all(
            db, bucket, guard, None if kind == BACKFILL else guard, journal=kind != BACKFILL
        )
        now = datetime.now(UTC)
        await asyncio.to_thread(db.prune_tombstones, now - timedelta(seconds=TOMBSTONE_RETENTION_S))
        await asyncio.to_thread(db.record_reconcile, kind, started, now, listed, fixes)
    finally:
        await asyncio.to_thread(db.stage_drop)
    return ReconcileResult(kind, listed, fixes, started, now)


async def _fix_all(
    db: TableDb, bucket: str, guard: datetime, listed_before: datetime | None, *, journal: bool
) -> Fixes:
    total = Fixes()
    lo: str | None = None
    while True:  # bounded: each pass moves `lo` past RECONCILE_CHUNK_KEYS listed keys
        hi = await asyncio.to_thread(db.nth_key_after, lo, RECONCILE_CHUNK_KEYS)
        fix = RangeFix(bucket, lo, hi, guard, listed_before, datetime.now(UTC), journal)
        total.add(await asyncio.to_thread(db.fix_range, fix))
        if hi is None:
            return total
        lo = hi


async def list_bucket(store: ObjectStore, bucket: str, stage: Stage) -> int:
    """List every object of `bucket` into `stage`, ranges in parallel; returns objects listed."""
    ranges = await plan_ranges(store, bucket)
    sem = asyncio.Semaphore(LIST_CONCURRENCY)

    async def one(r: KeyRange) -> int:
        async with sem:
            return await _list_range(store, bucket, r, stage)

    return sum(await asyncio.gather(*(one(r) for r in ranges)))


async def plan_ranges(store: ObjectStore, bucket: str) -> list[KeyRange]:
    """Cut the bucket's keys into ranges at common prefixes found a level or two down."""
    bounds: set[str] = set()
    level = [""]
    sem = asyncio.Semaphore(LIST_CONCURRENCY)

    async def below(prefix: str) -> list[str]:
        async with sem:
            return await store.list_prefixes(bucket, prefix, "/")

    for _ in range(MAX_FANOUT_DEPTH):
        found = [cp for group in await asyncio.gather(*(below(p) for p in level)) for cp in group]
        bounds.update(found)
        if not found or len(bounds) >= LIST_CONCURRENCY:  # enough to keep every listing slot busy
            break
        level = found
    edges: list[str | None] = [None, *sorted(bounds), None]
    return [KeyRange(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


async def _list_range(store: ObjectStore, bucket: str, r: KeyRange, stage: Stage) -> int:
    listing = store.list_objects(bucket, "", r.start_after, end_before=r.upper)
    batch: list[Listed] = []
    count = 0
    async with contextlib.aclosing(listing):  # type: ignore[type-var]
        async for info in listing:
            if r.lower is not None and info.key < r.lower:
                continue
            if r.upper is not None and info.key >= r.upper:
                break
            batch.append(_listed(info))
            if len(batch) >= STAGE_BATCH_ROWS:
                await stage(batch)
                count, batch = count + len(batch), []
    if batch:
        await stage(batch)
    return count + len(batch)


def _listed(info: ObjectInfo) -> Listed:
    return Listed(
        key=info.key, version_id=info.version_id, size=info.size, e_tag=info.etag,
        storage_class=info.storage_class or None, last_modified=info.last_modified.astimezone(UTC),
    )  # fmt: skip
