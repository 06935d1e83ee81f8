"""Where events come from: an HTTP webhook, a poller over the staging bucket, a one-off backlog,
and replay from the error or archive bucket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from s3batch.pipelines.events import EventError, parse_payload
from s3batch.pipelines.runner import ERROR_SUFFIX, Pipeline
from s3batch.storage.base import ObjectInfo

log = logging.getLogger(__name__)

#: Objects admitted per SQLite transaction (and cursor save) while listing.
LIST_PAGE = 500
#: Cursor name of the poller's position inside one pass over the staging bucket.
POLL_CURSOR = "poll"


def webhook_app(pipeline: Pipeline) -> Starlette:
    """POST any path: S3 notification records (AWS via SNS/HTTP, MinIO, Ceph) or EventBridge.

    An event is acknowledged only after it is committed to the state DB; processing runs in
    the background, so a slow function never makes the sender time out and resend.
    """
    wake = asyncio.Event()

    async def receive(request: Request) -> JSONResponse:
        try:
            parsed = parse_payload(json.loads(await request.body()))
        except (json.JSONDecodeError, UnicodeDecodeError, EventError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        counts = pipeline.submit(parsed.events)
        if counts.accepted:
            wake.set()
        return JSONResponse({**counts.as_dict(), "ignored": parsed.ignored})

    async def status(_: Request) -> JSONResponse:
        return JSONResponse({"pending": pipeline.state.pending(), "run": pipeline.run_id})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        worker = asyncio.create_task(_process_forever(pipeline, wake))
        try:
            yield
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    routes = [Route("/status", status, methods=["GET"]), Route("/{path:path}", receive, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan)


async def _process_forever(pipeline: Pipeline, wake: asyncio.Event) -> None:
    wake.set()  # resume whatever a previous run left pending
    while True:
        await wake.wait()
        wake.clear()
        try:
            await pipeline.drain()
        except Exception:  # keep serving; the files stay pending and run on the next event
            log.exception("pipeline %s: processing failed", pipeline.cfg.name)


async def scan(pipeline: Pipeline) -> int:
    """One pass over the staging bucket from the saved cursor; returns objects listed.

    The cursor survives a crash mid-pass; the seen-set (key, ETag) in SQLite keeps objects
    that stay in the bucket (on_success = leave, errors without an error bucket) from running
    twice. The cursor resets after a full pass so keys sorting before it are found next time.
    """
    cursor = pipeline.state.get_cursor(POLL_CURSOR) or None
    page: list[ObjectInfo] = []
    listed = 0
    async for info in pipeline.store.list_objects(pipeline.cfg.source, start_after=cursor):
        page.append(info)
        if len(page) >= LIST_PAGE:
            listed += await _admit_page(pipeline, page)
            page = []
    listed += await _admit_page(pipeline, page)
    pipeline.state.set_cursor(POLL_CURSOR, "")
    return listed


async def _admit_page(pipeline: Pipeline, page: list[ObjectInfo]) -> int:
    if not page:
        return 0
    pipeline.submit(pipeline.listing_events(page))
    pipeline.state.set_cursor(POLL_CURSOR, page[-1].key)
    await pipeline.drain()
    return len(page)


async def poll(pipeline: Pipeline, interval_s: float, max_seconds: float | None, once: bool) -> None:
    """Scan, drain, sleep; until `once` or `max_seconds` runs out."""
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    while True:
        await scan(pipeline)
        await pipeline.drain()
        if once or (deadline is not None and time.monotonic() + interval_s > deadline):
            return
        await asyncio.sleep(interval_s)


async def replay(pipeline: Pipeline, source: str, prefix: str = "") -> int:
    """Move objects from the error (or archive) bucket back to staging and run them again."""
    moved = []
    async for info in pipeline.store.list_objects(source, prefix=prefix):
        if info.key.endswith(ERROR_SUFFIX):
            continue
        staging = pipeline.cfg.source
        await pipeline.store.copy(source, info.key, staging, info.key)
        moved.append(await pipeline.store.head(staging, info.key))
        await pipeline.store.delete(source, info.key)
        await pipeline.store.delete(source, info.key + ERROR_SUFFIX)
    pipeline.submit(pipeline.listing_events(moved), force=True)
    await pipeline.drain()
    return len(moved)


def run_info(pipeline: Pipeline) -> dict[str, Any]:
    files = pipeline.state.files()
    by_state: dict[str, int] = {}
    for row in files:
        by_state[row.state] = by_state.get(row.state, 0) + 1
    return {"run": pipeline.run_id, "files": by_state}
