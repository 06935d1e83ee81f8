"""A pipeline's live tables: what its runner calls.

- `record(events, origin)`: journal and apply a batch of events, in one transaction, before the
  pipeline admits them (so before a webhook sender is acknowledged). A delivery the sender
  repeats finds its journal row there and changes nothing.
- `removed_by_pipeline(event)`: the pipeline moved or deleted an object itself.
- `maintain()`: what is due — the backfill (the first listing), a reconcile every
  `reconcile_interval_s`, and for Parquet the journal flush and inventory snapshot; returns
  the seconds until something is due again. One maintenance runs at a time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from s3batch.pipelines.events import ObjectEvent
from s3batch.pipelines.tables import parquet
from s3batch.pipelines.tables.config import Backend, TablesConfig
from s3batch.pipelines.tables.reconcile import BACKFILL, RECONCILE, ReconcileResult, reconcile
from s3batch.pipelines.tables.records import PIPELINE_REMOVED, Change, Origin, RecordType, change_of
from s3batch.pipelines.tables.sql import TableDb, TablesError, connect
from s3batch.storage.base import ObjectStore

log = logging.getLogger(__name__)

#: Longest sleep between maintenance checks of a long-running pipeline (seconds).
MAINTENANCE_TICK_S = 5.0
#: After a failed maintenance step, the next try waits this long (seconds).
MAINTENANCE_RETRY_S = 30.0


class LiveTables:
    """The tables of one pipeline's source bucket, on one backend."""

    def __init__(self, cfg: TablesConfig, source: str, store: ObjectStore) -> None:
        self.cfg, self.source, self.store = cfg, source, store
        self._db = connect(cfg)
        try:
            self._db.create_schema()
        except TablesError:
            self._db.close()
            raise
        #: The maintenance connection (reconcile, Parquet files), used in threads, one at a time.
        self._worker: TableDb | None = None
        self._lock = asyncio.Lock()
        self._last_flush = 0.0  # monotonic; 0: flush on the first maintenance
        self._last_snapshot = 0.0

    def record(self, events: Iterable[ObjectEvent], origin: Origin) -> int:
        """Journal and apply the source bucket's created/removed events; returns inventory
        rows changed. Raises TablesError (the caller must not acknowledge the events then)."""
        changes = [c for e in events if e.bucket == self.source and (c := change_of(e, origin)) is not None]
        return self._db.apply(changes, datetime.now(UTC)) if changes else 0

    def removed_by_pipeline(self, event: ObjectEvent) -> None:
        """The pipeline deleted the object `event` named (after archiving it, say): its row goes
        if it still shows that version."""
        now = datetime.now(UTC)
        change = Change(
            bucket=event.bucket, key=event.key, record_type=RecordType.DELETE, event_name=PIPELINE_REMOVED,
            origin=Origin.PIPELINE, version_id=event.version_id, size=event.size, e_tag=event.etag or None,
            event_time=now,
        )  # fmt: skip
        self._db.apply([change], now)

    async def maintain(self) -> float:
        """Run what is due; the seconds until the next check."""
        async with self._lock:
            worker = await self._worker_db()
            reconciled = await self._reconcile_if_due(worker)
            if self.cfg.backend is Backend.PARQUET:
                await self._publish(worker, force=reconciled is not None)
            return self._next_check_s()

    async def reconcile_now(self) -> ReconcileResult:
        """A reconcile now (the backfill if none ran yet), whatever the interval."""
        async with self._lock:
            worker = await self._worker_db()
            last = await asyncio.to_thread(worker.last_reconcile)
            result = await self._reconcile(worker, BACKFILL if last is None else RECONCILE)
            if self.cfg.backend is Backend.PARQUET:
                await self._publish(worker, force=True)
            return result

    async def _reconcile_if_due(self, worker: TableDb) -> ReconcileResult | None:
        if not self.cfg.inventory:
            return None
        last = await asyncio.to_thread(worker.last_reconcile)
        if last is None:
            return await self._reconcile(worker, BACKFILL)
        interval = self.cfg.reconcile_interval_s
        if interval is not None and (datetime.now(UTC) - last["finished_at"]).total_seconds() >= interval:
            return await self._reconcile(worker, RECONCILE)
        return None

    async def _reconcile(self, worker: TableDb, kind: str) -> ReconcileResult:
        result = await reconcile(self.cfg, worker, self.store, self.source, kind)
        log.info("tables of %s: %s listed %d objects, fixed %d (added %d, changed %d, removed %d)",
                 self.source, kind, result.listed, result.fixes.fixed, result.fixes.added,
                 result.fixes.changed, result.fixes.removed)  # fmt: skip
        return result

    async def _publish(self, worker: TableDb, *, force: bool) -> None:
        now = time.monotonic()
        if self.cfg.journal and (force or now - self._last_flush >= self.cfg.flush_interval_s):
            await parquet.flush_journal(self.cfg, worker, self.store)
            self._last_flush = now
        if not self.cfg.inventory:
            return
        due = force or now - self._last_snapshot >= self.cfg.snapshot_interval_s
        if due and await asyncio.to_thread(parquet.snapshot_due, worker):
            await parquet.write_snapshot(self.cfg, worker, self.store)
            self._last_snapshot = now

    def _next_check_s(self) -> float:
        waits = [MAINTENANCE_TICK_S]
        if self.cfg.backend is Backend.PARQUET:
            waits.append(self.cfg.flush_interval_s)
        return max(0.1, min(waits))

    async def _worker_db(self) -> TableDb:
        if self._worker is None:
            self._worker = await asyncio.to_thread(connect, self.cfg)
        return self._worker

    def summary(self) -> dict[str, Any]:
        """Where the tables are, their row counts and the last reconcile (for the CLI)."""
        tables = {name: {"name": self.cfg.table(name), "rows": self._db.count(name)}
                  for name in ("journal", "inventory", "reconciles")}  # fmt: skip
        last = self._db.last_reconcile()
        if last is not None:
            last = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in last.items()}
        return {"backend": self.cfg.backend.value, "location": location(self.cfg), "tables": tables,
                "last_reconcile": last}  # fmt: skip

    async def close(self) -> None:
        """Write what a Parquet backend still owes (best effort), then close the connections.

        The final files are written on a connection of their own: a maintenance cancelled with
        the pipeline's background work may still be finishing a step on the worker's."""
        try:
            if self.cfg.backend is Backend.PARQUET:
                async with self._lock:
                    final = await asyncio.to_thread(connect, self.cfg)
                    try:
                        await self._publish(final, force=True)
                    finally:
                        await asyncio.to_thread(final.close)
        except Exception:  # the working copy keeps everything: the next run writes it
            log.exception("tables of %s: writing the Parquet files at close failed", self.source)
        finally:
            if self._worker is not None:
                self._worker.close()
            self._db.close()


def location(cfg: TablesConfig) -> str:
    """Where the tables live, printable (no secret: URLs carry none)."""
    if cfg.backend is Backend.POSTGRESQL:
        return cfg.url or ""
    if cfg.backend is Backend.PARQUET:
        return f"s3://{cfg.bucket}/{cfg.prefix}/ (working copy {cfg.path})"
    return str(cfg.path)


async def maintain_forever(tables: LiveTables) -> None:
    """A long-running pipeline's table upkeep (part of its background work)."""
    while True:  # ends when the pipeline's background work is cancelled
        try:
            wait_s = await tables.maintain()
        except Exception:  # a store or database outage must not end the server; retried later
            log.exception("tables of %s: maintenance failed", tables.source)
            wait_s = MAINTENANCE_RETRY_S
        await asyncio.sleep(wait_s)
