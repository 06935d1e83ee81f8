"""The backfill and the reconciling listing: list the source bucket, then make the inventory
match it, key range by key range.

The listing is parallel the way manifest generators list (storage/listing.py): the key space
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
from s3batch.storage.listing import KeyRange, plan_ranges, range_objects, run_ranges

#: Ranges listed at once.
LIST_CONCURRENCY = 8
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
    ranges = await plan_ranges(store, bucket, concurrency=LIST_CONCURRENCY)
    counts = await run_ranges(ranges, lambda r: _list_range(store, bucket, r, stage), LIST_CONCURRENCY)
    return sum(counts)


async def _list_range(store: ObjectStore, bucket: str, r: KeyRange, stage: Stage) -> int:
    """The objects of `r` into `stage`, STAGE_BATCH_ROWS at a time; returns objects listed."""
    listing = range_objects(store, bucket, "", r)
    batch: list[Listed] = []
    count = 0
    async with contextlib.aclosing(listing):  # type: ignore[type-var]
        async for info in listing:
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
