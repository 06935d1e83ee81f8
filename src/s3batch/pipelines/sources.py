"""Where events come from: an HTTP webhook, a poller over the staging bucket, a one-off backlog,
and replay from the error or archive bucket; plus the background work of a long-running
pipeline (processing, polling, sweeping stale multipart uploads), shared by `s3batch pipeline
serve` and `s3batch serve`."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from s3batch.domain.objects import ObjectInfo
from s3batch.errors import StorageError
from s3batch.pipelines.config import PipelineConfig
from s3batch.pipelines.events import EventError, parse_payload
from s3batch.pipelines.runner import ERROR_SUFFIX, Pipeline
from s3batch.pipelines.tables.records import Origin
from s3batch.pipelines.tables.removals import removals
from s3batch.pipelines.tables.sql import TablesError
from s3batch.pipelines.uploads import abort_stale_uploads

log = logging.getLogger(__name__)

#: Objects admitted per SQLite transaction (and cursor save) while listing.
LIST_PAGE = 500
#: Cursor name of the poller's position inside one pass over the staging bucket.
POLL_CURSOR = "poll"
#: Seconds between sweeps for stale multipart uploads (when the pipeline configures an age).
UPLOAD_SWEEP_INTERVAL_S = 60.0
#: Where a webhook sender may put the pipeline's `webhook_token`, besides `?token=`.
TOKEN_HEADER = "x-s3batch-token"
#: Largest webhook body read (bytes); SNS and EventBridge messages are at most 256 KiB.
MAX_EVENT_BODY_BYTES = 1 << 20


def webhook_app(pipeline: Pipeline) -> Starlette:
    """POST any path: S3 notification records (AWS via SNS/HTTP, MinIO, Ceph) or EventBridge.

    An event is acknowledged only after it is committed to the state DB; processing runs in
    the background, so a slow function never makes the sender time out and resend.
    """
    wake = asyncio.Event()

    async def receive(request: Request) -> JSONResponse:
        return await receive_events(pipeline, request, wake)

    async def status(_: Request) -> JSONResponse:
        return JSONResponse({"pending": pipeline.state.pending(), "run": pipeline.run_id})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        worker = asyncio.create_task(run_background(pipeline, wake))
        try:
            yield
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    routes = [Route("/status", status, methods=["GET"]), Route("/{path:path}", receive, methods=["POST"])]
    return Starlette(routes=routes, lifespan=lifespan)


async def receive_events(pipeline: Pipeline, request: Request, wake: asyncio.Event) -> JSONResponse:
    """One webhook delivery: check the token, admit the events durably, wake the processor."""
    if not token_ok(pipeline.cfg, request):
        return JSONResponse({"error": "missing or wrong webhook token"}, status_code=403)
    body = await _bounded_body(request)
    if body is None:
        return JSONResponse({"error": f"body over {MAX_EVENT_BODY_BYTES} bytes"}, status_code=413)
    try:
        payload = json.loads(body)
        parsed = parse_payload(payload)
        removed = removals(payload) if pipeline.tables is not None else []
    except (json.JSONDecodeError, UnicodeDecodeError, EventError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    except RecursionError:  # JSON nested deeper than the parser's stack, well under the size cap
        return JSONResponse({"error": "JSON nested too deeply"}, status_code=400)
    try:
        counts = pipeline.submit(parsed.events, removed=removed, origin=Origin.NOTIFICATION)
    except TablesError as exc:  # not recorded, so not acknowledged: the sender delivers again
        return JSONResponse({"error": f"cannot record the events: {exc}"}, status_code=503)
    if counts.accepted:
        wake.set()
    return JSONResponse({**counts.as_dict(), "ignored": parsed.ignored})


async def _bounded_body(request: Request) -> bytes | None:
    """The body, or None once it grows past MAX_EVENT_BODY_BYTES (memory stays bounded)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_EVENT_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def token_ok(cfg: PipelineConfig, request: Request) -> bool:
    """True without a configured token; else it must come as `?token=`, X-S3Batch-Token or
    `Authorization: Bearer` (S3, SNS and MinIO senders cannot sign requests with our keys)."""
    if cfg.webhook_token is None:
        return True
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    offered = (
        request.query_params.get("token")
        or request.headers.get(TOKEN_HEADER)
        or (bearer.strip() if scheme.lower() == "bearer" else "")
    )
    return hmac.compare_digest(offered.encode(), cfg.webhook_token.encode())


async def run_background(pipeline: Pipeline, wake: asyncio.Event) -> None:
    """A long-running pipeline's work besides receiving events: process what was admitted,
    poll the staging bucket (if `poll_interval_s`), abort stale uploads (if configured).
    Ends only when cancelled."""
    async with asyncio.TaskGroup() as group:
        group.create_task(_process_forever(pipeline, wake))
        if pipeline.cfg.poll_interval_s is not None:
            group.create_task(_poll_forever(pipeline, pipeline.cfg.poll_interval_s))
        if pipeline.cfg.abort_incomplete_uploads_after_s is not None:
            group.create_task(_sweep_forever(pipeline))
        if pipeline.tables is not None:
            from s3batch.pipelines.tables.live import maintain_forever

            group.create_task(maintain_forever(pipeline.tables))


async def _poll_forever(pipeline: Pipeline, interval_s: float) -> None:
    while True:
        try:
            await scan(pipeline)
        except Exception:  # a store outage must not end the server; the next pass retries
            log.exception("pipeline %s: polling failed", pipeline.cfg.name)
        await asyncio.sleep(interval_s)


async def _sweep_forever(pipeline: Pipeline) -> None:
    while True:
        await sweep_uploads(pipeline)
        await asyncio.sleep(UPLOAD_SWEEP_INTERVAL_S)


async def sweep_uploads(pipeline: Pipeline) -> int:
    """Abort the staging bucket's multipart uploads older than the configured age (0 if none is)."""
    age = pipeline.cfg.abort_incomplete_uploads_after_s
    if age is None:
        return 0
    try:
        return await abort_stale_uploads(pipeline.store, pipeline.cfg.source, age)
    except StorageError as exc:  # e.g. a store without ListMultipartUploads: keep processing
        log.warning("pipeline %s: cannot sweep multipart uploads: %s", pipeline.cfg.name, exc)
        return 0


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
    if pipeline.tables is not None:  # the backfill first: then listed objects are not news
        await pipeline.tables.maintain()
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
    pipeline.notices.end_batch()  # the whole pass is one batch
    return listed


async def _admit_page(pipeline: Pipeline, page: list[ObjectInfo]) -> int:
    if not page:
        return 0
    pipeline.submit(pipeline.listing_events(page))
    pipeline.state.set_cursor(POLL_CURSOR, page[-1].key)
    await pipeline.drain(end_batch=False)
    return len(page)


async def poll(pipeline: Pipeline, interval_s: float, max_seconds: float | None, once: bool) -> None:
    """Scan, drain, sleep; until `once` or `max_seconds` runs out. Sweeps stale multipart
    uploads on the first pass and then every UPLOAD_SWEEP_INTERVAL_S."""
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    next_sweep = time.monotonic()
    while True:
        if time.monotonic() >= next_sweep:
            await sweep_uploads(pipeline)
            next_sweep = time.monotonic() + UPLOAD_SWEEP_INTERVAL_S
        await scan(pipeline)
        await pipeline.drain()
        if once or (deadline is not None and time.monotonic() + interval_s > deadline):
            return
        await asyncio.sleep(interval_s)


async def replay(pipeline: Pipeline, source: str, prefix: str = "") -> int:
    """Move objects from the error (or archive) bucket back to staging and run them again."""
    moved, _ = await restage(pipeline, source, prefix)
    await pipeline.drain()
    return moved


async def restage(
    pipeline: Pipeline, source: str, prefix: str = "", limit: int | None = None
) -> tuple[int, bool]:
    """Move up to `limit` objects (all when None) from `source` back to staging, each with its
    error record removed, and admit them to run again; (moved, whether more are left). The
    caller drains, or wakes the pipeline's own loop (a server's replay action). When a store
    call fails part-way, the objects already moved are still admitted before the error goes on:
    they have left `source`, and nothing else would run them."""
    moved: list[ObjectInfo] = []
    more = False
    try:
        async for info in pipeline.store.list_objects(source, prefix=prefix):
            if info.key.endswith(ERROR_SUFFIX):
                continue
            if limit is not None and len(moved) >= limit:
                more = True
                break
            staging = pipeline.cfg.source
            await pipeline.store.copy(source, info.key, staging, info.key)
            moved.append(await pipeline.store.head(staging, info.key))
            await pipeline.store.delete(source, info.key)
            await pipeline.store.delete(source, info.key + ERROR_SUFFIX)
    finally:
        pipeline.submit(pipeline.listing_events(moved), force=True)
    return len(moved), more


def run_info(pipeline: Pipeline) -> dict[str, Any]:
    files = pipeline.state.files()
    by_state: dict[str, int] = {}
    for row in files:
        by_state[row.state] = by_state.get(row.state, 0) + 1
    return {"run": pipeline.run_id, "files": by_state}
