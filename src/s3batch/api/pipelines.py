"""Pipelines hosted by `s3batch serve`: their runners live in the server process.

Each pipeline named by `--pipeline FILE` or by `[[pipelines]] file = "..."` in server.toml gets
its background work (processing, its poller when `poll_interval_s` is set, the stale-upload
sweep) started and stopped with the server's lifespan, and a webhook at
`POST /pipelines/<name>/events`.

The webhook does not take SigV4 or the JSON API's keys: S3 (via SNS), MinIO and Ceph cannot
sign a notification with them. It takes the pipeline's own shared secret, `webhook_token`, as
`?token=`, `X-S3Batch-Token` or `Authorization: Bearer`; a pipeline without one has its
webhook switched off here (403), since the server listens for every account. The JSON API
(`GET /api/v1/pipelines`, `GET /api/v1/pipelines/<name>`, `POST /api/v1/pipelines/<name>/uploads`
for presigned PUT URLs) is authenticated like the rest of /api/v1. Pipelines belong to the
server's operator, not to an account: every key sees them all, but only operators ([server]
operators) see a failure's message and the error record beside it, which may quote the objects'
contents or the function's secrets; other keys get each failure's key, code, status, attempts and
time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import tomllib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from s3batch.api.control import ApiFailure
from s3batch.api.json_api import API_PREFIX, Caller, int_param, json_body, json_endpoint, whole_number
from s3batch.errors import BadRequest, ConfigError, NotFound, StorageError
from s3batch.pipelines.config import PipelineConfig, load_config
from s3batch.pipelines.runner import ERROR_SUFFIX, Pipeline
from s3batch.pipelines.sources import receive_events, restage, run_background
from s3batch.pipelines.uploads import DEFAULT_PRESIGN_EXPIRES_S, presign_put
from s3batch.settings import SERVER_FILE
from s3batch.storage.base import ObjectStore
from s3batch.storage.config import StorageConfig

log = logging.getLogger(__name__)

EVENTS_PATH = "/pipelines/{name}/events"
#: Pipeline names appear in URLs: keep them to characters that need no escaping.
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: Seconds shutdown waits for one pipeline's background work to unwind after cancelling it.
STOP_TIMEOUT_S = 10.0
#: The pipelines page's chart: bucket width and span (seconds, hours), and their bounds.
DEFAULT_TIMELINE_BUCKET_S = 60
MIN_TIMELINE_BUCKET_S = 10
DEFAULT_TIMELINE_HOURS = 24
MAX_TIMELINE_S = 30 * 24 * 3600
#: Recent failures listed, by default and at most; an error record larger than this (bytes) is
#: neither read whole nor sent.
DEFAULT_RECENT_FAILURES = 20
MAX_RECENT_FAILURES = 200
MAX_ERROR_RECORD_BYTES = 64 * 1024
#: Why a failure's message and record are missing for a key that is not an operator's.
OPERATORS_ONLY = f"message and error record are shown to operators only ([server] operators in {SERVER_FILE})"
#: Objects one replay call moves back at most (the request stays short; call again for more).
MAX_REPLAY_OBJECTS = 1000


def pipeline_files(home: Path) -> list[Path]:
    """`[[pipelines]] file = "..."` entries of HOME/server.toml (relative paths: to HOME)."""
    path = home / SERVER_FILE
    if not path.is_file():
        return []
    try:
        entries = tomllib.loads(path.read_text(encoding="utf-8")).get("pipelines", [])
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(entries, list) or not all(isinstance(e, dict) and e.get("file") for e in entries):
        raise ConfigError(f'{path}: [[pipelines]] entries need file = "pipeline.toml"')
    return [home / str(entry["file"]) for entry in entries]


def load_hosted(files: Sequence[Path]) -> list[PipelineConfig]:
    """The pipelines to host; names must be URL-safe and unique. Raises ConfigError."""
    configs: dict[str, PipelineConfig] = {}
    for file in files:
        cfg = load_config(file)
        if not _NAME.match(cfg.name):
            raise ConfigError(f"{file}: pipeline name {cfg.name!r} must be 1-64 of A-Z a-z 0-9 _ . -")
        if cfg.name in configs:
            raise ConfigError(f"{file}: a pipeline named {cfg.name!r} is already hosted")
        configs[cfg.name] = cfg
    return list(configs.values())


@dataclass(slots=True)
class Hosted:
    pipeline: Pipeline
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class PipelineHost:
    """The hosted pipelines of one server process."""

    def __init__(
        self, configs: Sequence[PipelineConfig], storage: StorageConfig, operators: Collection[str] = ()
    ) -> None:
        self.storage = storage
        #: Access key ids allowed operator actions (server.toml [server] operators).
        self.operators = frozenset(operators)
        self._configs = list(configs)
        self.hosted: dict[str, Hosted] = {}

    async def start(self) -> None:
        for cfg in self._configs:
            hosted = Hosted(Pipeline(cfg, self.storage))
            hosted.task = asyncio.create_task(run_background(hosted.pipeline, hosted.wake))
            self.hosted[cfg.name] = hosted
            log.info("pipeline %s hosted (source bucket %s)", cfg.name, cfg.source)

    async def stop(self) -> None:
        for name, hosted in self.hosted.items():
            if hosted.task is not None:
                hosted.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(hosted.task, STOP_TIMEOUT_S)
            try:
                await hosted.pipeline.close()
            except Exception:  # close the others anyway
                log.exception("pipeline %s: closing failed", name)
        self.hosted.clear()

    def get(self, name: str) -> Hosted:
        hosted = self.hosted.get(name)
        if hosted is None:
            raise NotFound(f"no pipeline named {name!r} is hosted by this server")
        return hosted


def host_of(request: Request) -> PipelineHost:
    host: PipelineHost = request.app.state.pipelines
    return host


def describe(hosted: Hosted) -> dict[str, Any]:
    pipeline = hosted.pipeline
    cfg = pipeline.cfg
    return {
        "name": cfg.name,
        "source": cfg.source,
        "on_success": cfg.on_success.value,
        "archive": cfg.archive,
        "error": cfg.error,
        "webhook": EVENTS_PATH.format(name=cfg.name) if cfg.webhook_token else None,
        "poll_interval_s": cfg.poll_interval_s,
        "abort_incomplete_uploads_after_s": cfg.abort_incomplete_uploads_after_s,
        "presign_max_expires_s": cfg.presign_max_expires_s,
        "run": pipeline.run_id,
        "pending": pipeline.state.pending(),
        "files": pipeline.state.counts(),
    }


# -- the endpoints ------------------------------------------------------------------------------


async def receive(request: Request) -> Response:
    """The webhook: switched off for a pipeline without a webhook_token (see the module doc)."""
    hosted = host_of(request).hosted.get(str(request.path_params["name"]))
    if hosted is None:
        return JSONResponse({"error": "no such pipeline"}, status_code=404)
    if hosted.pipeline.cfg.webhook_token is None:
        message = "webhook disabled: the pipeline has no webhook_token"
        return JSONResponse({"error": message}, status_code=403)
    return await receive_events(hosted.pipeline, request, hosted.wake)


async def list_pipelines(caller: Caller) -> Response:
    hosted = host_of(caller.request).hosted.values()
    return JSONResponse({"pipelines": [describe(h) for h in hosted]})


async def get_pipeline(caller: Caller) -> Response:
    return JSONResponse(describe(host_of(caller.request).get(str(caller.request.path_params["name"]))))


async def presign_upload(caller: Caller) -> Response:
    """{"key", "content_type", "expires_s"?} → a presigned PUT URL for the staging bucket."""
    host = host_of(caller.request)
    hosted = host.get(str(caller.request.path_params["name"]))
    body = await json_body(caller.request)
    key, content_type = body.get("key"), body.get("content_type")
    expires_s = whole_number(body.get("expires_s", DEFAULT_PRESIGN_EXPIRES_S))
    if not isinstance(key, str) or not isinstance(content_type, str) or expires_s is None:
        raise BadRequest('body must be {"key": "...", "content_type": "...", "expires_s": <seconds>}')
    cfg = hosted.pipeline.cfg
    try:
        presigned = await asyncio.to_thread(presign_put, cfg, host.storage, key, content_type, expires_s)
    except ConfigError as exc:
        raise ApiFailure("InvalidRequest", str(exc), 400) from exc
    return JSONResponse(presigned.as_json(), status_code=201)


async def timeline(caller: Caller) -> Response:
    """Files by the state they reached, per time bucket, over the last `hours`."""
    request = caller.request
    hosted = host_of(request).get(str(request.path_params["name"]))
    bucket_s = int_param(
        request, "bucket_s", DEFAULT_TIMELINE_BUCKET_S, MIN_TIMELINE_BUCKET_S, MAX_TIMELINE_S
    )
    hours = int_param(request, "hours", DEFAULT_TIMELINE_HOURS, 1, MAX_TIMELINE_S // 3600)
    rows = hosted.pipeline.state.timeline(bucket_s, time.time() - hours * 3600)
    buckets: dict[float, dict[str, int]] = {}
    for start, state, count in rows:
        buckets.setdefault(start, {})[state] = count
    return JSONResponse(
        {"bucket_s": bucket_s, "buckets": [{"at": at, "counts": counts} for at, counts in buckets.items()]}
    )


async def failures(caller: Caller) -> Response:
    """The files that errored last, newest first. An operator gets each one's message and the
    error record the pipeline wrote beside it in its error bucket (null when there is none, e.g.
    after a replay removed it); another key gets message and record null and `withheld` saying
    why (see the module doc)."""
    request = caller.request
    host = host_of(request)
    hosted = host.get(str(request.path_params["name"]))
    limit = int_param(request, "limit", DEFAULT_RECENT_FAILURES, 1, MAX_RECENT_FAILURES)
    operator = caller.key.access_key in host.operators
    pipeline = hosted.pipeline
    found = []
    for row, updated in pipeline.state.recent_errors(limit):
        found.append(
            {
                "bucket": row.bucket,
                "key": row.key,
                "version_id": row.version_id if operator else None,
                "attempts": row.attempts,
                "error_code": row.error_code,
                "http_status": row.http_status,
                "message": row.message if operator else None,
                "updated": updated,
                "record": await _error_record(pipeline, row.key) if operator else None,
                "withheld": None if operator else OPERATORS_ONLY,
            }
        )
    return JSONResponse({"failures": found, "error_bucket": pipeline.cfg.error})


async def _error_record(pipeline: Pipeline, key: str) -> Any:
    """The JSON error record of `key` in the pipeline's error bucket, or None. Anyone who can
    write to the error bucket can put a huge object there: at most MAX_ERROR_RECORD_BYTES + 1
    bytes of it are read, enough to tell one over the limit."""
    if not pipeline.cfg.error:
        return None
    try:
        body = await read_head(
            pipeline.store, pipeline.cfg.error, key + ERROR_SUFFIX, MAX_ERROR_RECORD_BYTES + 1
        )
    except StorageError:
        return None
    if len(body) > MAX_ERROR_RECORD_BYTES:
        return {"truncated": True, "larger_than_bytes": MAX_ERROR_RECORD_BYTES}
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"text": body[:MAX_ERROR_RECORD_BYTES].decode("utf-8", errors="replace")}


async def read_head(store: ObjectStore, bucket: str, key: str, max_bytes: int) -> bytes:
    """The first `max_bytes` of an object (all of a shorter one), without reading the rest: one
    ranged GET of `max_bytes` on S3, and the stream closed once that much has come."""
    parts: list[bytes] = []
    size = 0
    chunks = store.iter_bytes(bucket, key, chunk_size=max_bytes)
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]
        async for chunk in chunks:
            parts.append(chunk)
            size += len(chunk)
            if size >= max_bytes:
                break
    return b"".join(parts)[:max_bytes]


async def replay_failures(caller: Caller) -> Response:
    """Operator only: move the error bucket's objects (under `prefix`) back to staging and run
    them again; at most MAX_REPLAY_OBJECTS per call (`more` says whether to call again)."""
    host = host_of(caller.request)
    if caller.key.access_key not in host.operators:
        raise ApiFailure(
            "AccessDenied",
            f"replaying a pipeline is an operator action: list this access key under [server] "
            f"operators in {SERVER_FILE}",
            403,
        )
    hosted = host.get(str(caller.request.path_params["name"]))
    body = await json_body(caller.request)
    prefix = body.get("prefix", "")
    if not isinstance(prefix, str):
        raise BadRequest('body must be {"prefix": "..."} (optional)')
    cfg = hosted.pipeline.cfg
    if not cfg.error:
        raise BadRequest(f"pipeline {cfg.name!r} has no error bucket to replay from")
    moved, more = await restage(hosted.pipeline, cfg.error, prefix, MAX_REPLAY_OBJECTS)
    if moved:
        hosted.wake.set()
    log.info(
        "pipeline %s: %s replayed %d object(s) from %s", cfg.name, caller.key.access_key, moved, cfg.error
    )
    return JSONResponse({"replayed": moved, "more": more}, status_code=202)


ROUTES = [
    Route(EVENTS_PATH, receive, methods=["POST"]),
    Route(API_PREFIX + "/pipelines", json_endpoint(list_pipelines), methods=["GET"]),
    Route(API_PREFIX + "/pipelines/{name}", json_endpoint(get_pipeline), methods=["GET"]),
    Route(API_PREFIX + "/pipelines/{name}/uploads", json_endpoint(presign_upload), methods=["POST"]),
    Route(API_PREFIX + "/pipelines/{name}/timeline", json_endpoint(timeline), methods=["GET"]),
    Route(API_PREFIX + "/pipelines/{name}/failures", json_endpoint(failures), methods=["GET"]),
    Route(API_PREFIX + "/pipelines/{name}/replay", json_endpoint(replay_failures), methods=["POST"]),
]
