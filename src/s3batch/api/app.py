"""create_app(settings): the S3 Control-compatible server as one ASGI application.

On startup it opens the SQLite job store of S3BATCH_HOME and keeps a job worker running: a
child `s3batch worker` process holding the worker lock of its environment (so API requests and the job's task
callbacks never share an event loop or an interpreter lock), restarted if it exits. Jobs
created over the API start at once, and jobs left unfinished by a crash or restart resume (the
job store is the only state). If another process (a CLI-started worker) holds the lock, the
supervisor waits for it and takes over when it exits, so new jobs never sit unrun.

Every key holder is treated as a stranger: LambdaInvoke jobs may run only the functions the
operator registered for the caller's account in server.toml (api/server_config.py), and the
access log never shows a secret sent in a query string (api/accesslog.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from s3batch.api import dashboard, job_data, json_api, pipelines
from s3batch.api.accesslog import redact_access_log
from s3batch.api.auth import KeyRing, load_keys
from s3batch.api.control import ROUTES, ApiState, error_response
from s3batch.api.server_config import load_server_config
from s3batch.domain.inventory_writer import ScheduledInventory
from s3batch.domain.roles import RoleBook
from s3batch.functions.registry import ServerFunctions
from s3batch.pipelines.config import PipelineConfig
from s3batch.service.inventory_report import InventoryScheduler, load_schedules
from s3batch.service.jobs import JobService
from s3batch.service.roles import load_roles
from s3batch.service.worker import run_worker, supervise_worker_process, worker_lock
from s3batch.settings import Settings
from s3batch.storage.config import StorageConfig, resolve_storage
from s3batch.store import open_job_store

log = logging.getLogger(__name__)

#: Seconds between attempts to take the worker lock while another process holds it.
LOCK_RETRY_S = 1.0
#: Seconds shutdown waits for the worker task to unwind after cancelling it.
WORKER_STOP_TIMEOUT_S = 10.0
_ABSOLUTE_FORMS = (b"http://", b"https://")


def create_app(
    settings: Settings,
    *,
    keys: KeyRing | None = None,
    storage: StorageConfig | None = None,
    run_jobs: bool = True,
    hosted: Sequence[PipelineConfig] = (),
    roles: RoleBook | None = None,
    worker_process: bool = True,
    functions: ServerFunctions | None = None,
    inventories: Sequence[ScheduledInventory] | None = None,
    operators: Collection[str] | None = None,
) -> Starlette:
    """The ASGI app. `keys` default to load_keys(HOME); `storage` to the environment's choice.
    `hosted` pipelines run inside the server (see api/pipelines.py). `functions` (what
    LambdaInvoke jobs may run, per account) default to HOME's server.toml, and so do the
    `inventories` written on a schedule (service/inventory_report.py), and the `operators`
    (access key ids allowed operator actions such as replaying a pipeline).

    Jobs run in a child `s3batch worker` process (`worker_process`, the default), which reads
    roles from HOME's server.toml itself; `worker_process=False` runs them in this event loop
    with the `roles` given here (for embedding and for tests that build roles in memory)."""
    ring = keys if keys is not None else load_keys(settings.home)
    # `roles` default to load_roles(HOME). With none at all, RoleArn is recorded, not enforced.
    book = roles if roles is not None else load_roles(settings.home)
    if not book:
        log.warning("no [[roles]] in server.toml: jobs run with the server's credentials, unchecked")
    store_config = storage or resolve_storage(None, None, settings.buckets_root)
    allowed = functions if functions is not None else load_server_config(settings.home).functions
    admins = operators if operators is not None else load_server_config(settings.home).operators
    schedules = inventories if inventories is not None else load_schedules(settings.home)
    if settings.functions_file.is_file():
        log.warning(
            "%s is for the CLI: this server runs only the functions that [[functions]] in "
            "server.toml registers per account",
            settings.functions_file,
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redact_access_log()  # here, after the server has configured its loggers
        store = open_job_store(settings)
        app.state.api = ApiState(
            service=JobService(settings, store),
            keys=ring,
            storage=store_config,
            functions=allowed,
            roles=book,
        )
        app.state.sessions = json_api.SessionStore()
        worker = None
        if run_jobs:
            jobs = supervise_worker_process(settings) if worker_process else _worker_loop(settings, book)
            worker = asyncio.create_task(jobs)
        app.state.pipelines = pipelines.PipelineHost(hosted, store_config, admins)
        app.state.inventories = InventoryScheduler(schedules, store_config)
        try:
            await app.state.pipelines.start()  # inside: a pipeline failing to open stops the rest
            app.state.inventories.start()
            yield
        finally:
            await app.state.inventories.stop()
            await app.state.pipelines.stop()
            await _stop(worker)
            await store.close()

    return Starlette(
        # The S3 Control routes first: the dashboard and JSON API paths never overlap them.
        routes=[*ROUTES, *json_api.ROUTES, *job_data.ROUTES, *pipelines.ROUTES, *dashboard.ROUTES],
        middleware=[Middleware(AbsoluteFormTargets)],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )


class AbsoluteFormTargets:
    """Accept `GET http://host:port/path` request targets (RFC 9112 §3.2.2).

    That is what an HTTP client sends through a proxy, and the HTTP_PROXY workaround for the
    `{AccountId}.` host prefix (docs/aws-contracts.md#local-endpoints-and-clients) points the proxy at this
    server. uvicorn's h11
    protocol puts the whole target in `path`; here it becomes the plain path again (the Host
    header, which the client signed, already carries the authority).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw: bytes = scope.get("raw_path") or b""
        if scope["type"] == "http" and raw.startswith(_ABSOLUTE_FORMS):
            after_scheme = raw.split(b"://", 1)[1]
            slash = after_scheme.find(b"/")
            raw_path = after_scheme[slash:] if slash >= 0 else b"/"
            path = scope["path"].split("://", 1)[1]
            path_slash = path.find("/")
            scope = {**scope, "raw_path": raw_path, "path": path[path_slash:] if path_slash >= 0 else "/"}
        await self.app(scope, receive, send)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods: JSON under /api/v1, else the S3 Control XML error shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    code = {404: "NotFound", 405: "MethodNotAllowed"}.get(status, "InvalidRequest")
    message = f"{request.method} {request.url.path}: {code}"
    if request.url.path.startswith(json_api.API_PREFIX + "/"):
        response: Response = json_api.error_json(code, message, status)
    else:
        response = error_response(code, message, status)
    if isinstance(exc, HTTPException) and exc.headers:  # e.g. Allow on 405
        response.headers.update(exc.headers)
    return response


async def _worker_loop(settings: Settings, roles: RoleBook) -> None:
    """Run the job worker while holding this environment's worker lock; wait for it if someone else has it."""
    while True:  # ends only by cancellation at shutdown
        with worker_lock(settings.home) as held:
            if held is not None:
                log.info("job worker started in the API server (%s)", settings.home)
                await run_worker(settings, exit_when_idle=False, roles=roles)
                return
        await asyncio.sleep(LOCK_RETRY_S)


async def _stop(task: asyncio.Task[Any] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
        await asyncio.wait_for(task, WORKER_STOP_TIMEOUT_S)
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.error("job worker ended with an error", exc_info=task.exception())
