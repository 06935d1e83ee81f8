"""The JSON API under /api/v1, for scripts and the web dashboard (same process, same keys).

Authentication, one of:

- `Authorization: Bearer ACCESS_KEY:SECRET_KEY`: the same key pairs as the S3 Control API
  (server.toml / S3BATCH_ACCESS_KEYS). Simple for curl and scripts on a local tool; like any
  bearer secret it must only travel over loopback or TLS.
- a session cookie from `POST /api/v1/session` (the dashboard's login form): a random token
  kept in this process's memory (a restart logs everyone out), HttpOnly, SameSite=Strict, and
  Secure whenever the request came over HTTPS (TLS in `serve`, or a trusted proxy's
  X-Forwarded-Proto), so the browser never sends it over plain HTTP afterwards. A
  cookie-authenticated POST must also carry `X-S3Batch-CSRF: 1`, a header no cross-site form
  can set, so another site cannot drive the API through a logged-in browser.

Either way the key decides the account and every JobService call is scoped to it: another
account's job answers 404 NotFoundException, exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from s3batch.api.auth import AccessKey
from s3batch.api.control import ApiFailure, ApiState, read_body
from s3batch.api.openapi import MAX_AFTER, openapi_document
from s3batch.api.ratelimit import LoginThrottle
from s3batch.domain.job import Job
from s3batch.domain.report import ReportRow
from s3batch.domain.task import TaskStatus
from s3batch.errors import ApiError, BadRequest, NotFound
from s3batch.service.jobs import MAX_LIST_RESULTS
from s3batch.service.shapes import job_descriptor, job_list_entry

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
SESSION_COOKIE = "s3batch_session"
CSRF_HEADER = "x-s3batch-csrf"
#: A session lasts this long after login, in seconds.
SESSION_TTL_S = 12 * 3600
#: Sessions kept at most; past it the oldest is dropped (memory stays bounded).
MAX_SESSIONS = 1000
DEFAULT_PAGE_SIZE = 50
DEFAULT_FAILURES = 100
MAX_FAILURES = 1000
#: Server-sent events: seconds between updates, and how long one stream may last.
SSE_DEFAULT_INTERVAL_S = 1.0
SSE_MIN_INTERVAL_S = 0.1
SSE_MAX_INTERVAL_S = 10.0
SSE_DEFAULT_MAX_S = 300.0
SSE_MAX_MAX_S = 3600.0
#: Tells EventSource to wait this long (ms) before reconnecting after a dropped stream.
SSE_RETRY_MS = 3000
JSON_TYPE = "application/json"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


# -- sessions -----------------------------------------------------------------------------------


class SessionStore:
    """Session token → (access key id, expiry). In memory: tokens die with the process."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, limit: int = MAX_SESSIONS) -> None:
        self._ttl_s, self._limit = ttl_s, limit
        self._sessions: dict[str, tuple[str, float]] = {}
        #: Failed logins and bearer secrets per client address (api/ratelimit.py).
        self.failures = LoginThrottle()

    def open(self, access_key: str) -> str:
        self._drop_expired()
        while len(self._sessions) >= self._limit:  # dicts keep insertion order: oldest first
            del self._sessions[next(iter(self._sessions))]
        token = secrets.token_urlsafe(32)
        self._sessions[token] = (access_key, time.monotonic() + self._ttl_s)
        return token

    def get(self, token: str) -> str | None:
        entry = self._sessions.get(token)
        if entry is None or entry[1] < time.monotonic():
            self._sessions.pop(token, None)
            return None
        return entry[0]

    def close(self, token: str) -> None:
        self._sessions.pop(token, None)

    def _drop_expired(self) -> None:
        now = time.monotonic()
        for token in [t for t, (_, expiry) in self._sessions.items() if expiry < now]:
            del self._sessions[token]


# -- request plumbing ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caller:
    request: Request
    key: AccessKey
    state: ApiState

    @property
    def account_id(self) -> str:
        return self.key.account_id

    @property
    def job_id(self) -> str:
        return str(self.request.path_params["id"])


class Unauthorized(ApiFailure):
    def __init__(self, message: str) -> None:
        super().__init__("Unauthorized", message, 401)


class Throttled(ApiFailure):
    def __init__(self, retry_after_s: int) -> None:
        message = f"too many failed logins; retry in {retry_after_s} s"
        super().__init__("TooManyRequestsException", message, 429)
        self.retry_after_s = retry_after_s


def error_json(code: str, message: str, status: int) -> JSONResponse:
    response = JSONResponse({"code": code, "message": message}, status_code=status)
    if status == 401:
        response.headers["www-authenticate"] = 'Bearer realm="s3batch"'
    return response


def json_endpoint(
    handler: Callable[[Caller], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate, run `handler`, answer errors as {"code", "message"}."""

    async def route(request: Request) -> Response:
        return await guarded(request, lambda: _authenticated(request, handler))

    return route


async def _authenticated(request: Request, handler: Callable[[Caller], Awaitable[Response]]) -> Response:
    return await handler(authenticate(request))


async def guarded(request: Request, run: Callable[[], Awaitable[Response]]) -> Response:
    try:
        return await run()
    except ApiFailure as exc:
        response = error_json(exc.code, exc.message, exc.http_status)
        if isinstance(exc, Throttled):
            response.headers["retry-after"] = str(exc.retry_after_s)
        return response
    except ApiError as exc:
        return error_json(exc.code, exc.message, exc.http_status)
    except Exception:  # a bug: keep the server up, keep details in the log
        log.exception("%s %s failed", request.method, request.url.path)
        return error_json("InternalServiceException", "internal error; see the server log", 500)


def authenticate(request: Request) -> Caller:
    state: ApiState = request.app.state.api
    header = request.headers.get("authorization")
    if header is not None:
        return Caller(request, bearer_key(request, header, state), state)
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        return Caller(request, session_key(request, token, state), state)
    raise Unauthorized("send Authorization: Bearer ACCESS_KEY:SECRET_KEY or log in")


def bearer_key(request: Request, header: str, state: ApiState) -> AccessKey:
    scheme, _, credentials = header.partition(" ")
    access, sep, secret = credentials.strip().partition(":")
    if scheme.lower() != "bearer" or not sep:
        raise Unauthorized("expected Authorization: Bearer ACCESS_KEY:SECRET_KEY")
    return throttled_key(request, access, secret, state)


def throttled_key(request: Request, access: str, secret: str, state: ApiState) -> AccessKey:
    """checked_key, refused outright for an address past its failed-attempt limit."""
    throttle = sessions(request).failures
    address = request.client.host if request.client else ""
    wait_s = throttle.retry_after_s(address, access)
    if wait_s:
        raise Throttled(wait_s)
    try:
        return checked_key(access, secret, state)
    except Unauthorized:
        throttle.failed(address, access)
        raise


def checked_key(access: str, secret: str, state: ApiState) -> AccessKey:
    """The key if the secret matches; one message for unknown key and bad secret alike."""
    key = state.keys.get(access)
    expected = key.secret_key if key else secrets.token_hex(16)  # compare anyway: same timing
    if not hmac.compare_digest(expected.encode(), secret.encode()) or key is None:
        raise Unauthorized("unknown access key or wrong secret")
    return key


def session_key(request: Request, token: str, state: ApiState) -> AccessKey:
    access = sessions(request).get(token)
    key = state.keys.get(access) if access else None
    if key is None:
        raise Unauthorized("session expired or unknown; log in again")
    if request.method in UNSAFE_METHODS and request.headers.get(CSRF_HEADER) != "1":
        raise ApiFailure("AccessDenied", f"cookie-authenticated {request.method} needs {CSRF_HEADER}: 1", 403)
    return key


def sessions(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.sessions
    return store


async def json_body(request: Request) -> dict[str, Any]:
    """The body as a JSON object ({} when empty)."""
    raw = await read_body(request)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a whole number, got {raw!r}") from exc
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def float_param(request: Request, name: str, default: float, low: float, high: float) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a number, got {raw!r}") from exc
    if not low <= value <= high:  # also refuses nan
        raise BadRequest(f"{name} must be between {low:g} and {high:g}")
    return value


# -- job shapes ---------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Descriptor dicts with their datetimes as ISO-8601 strings."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def progress(job: Job) -> dict[str, Any]:
    """Counts, rate (tasks per active second) and ETA (seconds, while running at that rate)."""
    p = job.progress
    rate = p.done / p.elapsed_active_s if p.elapsed_active_s > 0 else None
    remaining = None if p.total is None else max(p.total - p.done, 0)
    eta = None
    if rate and remaining is not None and not job.status.terminal:
        eta = remaining / rate
    return {
        "total": p.total,
        "succeeded": p.succeeded,
        "failed": p.failed,
        "done": p.done,
        "percent": round(100.0 * p.done / p.total, 1) if p.total else None,
        "elapsed_active_s": round(p.elapsed_active_s, 3),
        "rate_per_s": None if rate is None else round(rate, 3),
        "eta_s": None if eta is None else round(eta, 1),
    }


def job_summary(job: Job) -> dict[str, Any]:
    return {**jsonable(job_list_entry(job)), "progress": progress(job), "terminal": job.status.terminal}


def job_detail(job: Job) -> dict[str, Any]:
    return {
        "job": jsonable(job_descriptor(job)),
        "progress": progress(job),
        "terminal": job.status.terminal,
        "report_manifest": report_uri(job.report_manifest),
        "tags": [{"Key": k, "Value": v} for k, v in job.tags],
    }


def report_uri(location: str | None) -> str | None:
    """The completion report's manifest.json as an s3:// URI (stored as bucket/key)."""
    if not location:
        return None
    return location if location.startswith("s3://") else f"s3://{location}"


def failure_json(position: int, row: ReportRow) -> dict[str, Any]:
    return {
        "position": position,
        "bucket": row.bucket,
        "key": row.key,
        "version_id": row.version_id or None,
        "error_code": row.error_code,
        "http_status": int(row.http_status) if row.http_status.isdigit() else None,
        "message": row.message,
    }


# -- the endpoints ------------------------------------------------------------------------------


async def list_jobs(caller: Caller) -> Response:
    request = caller.request
    statuses = request.query_params.getlist("status")
    limit = int_param(request, "limit", DEFAULT_PAGE_SIZE, 1, MAX_LIST_RESULTS)
    jobs, token = await caller.state.service.list_jobs(
        caller.account_id, statuses or None, limit, request.query_params.get("next_token")
    )
    return JSONResponse({"jobs": [job_summary(job) for job in jobs], "next_token": token})


async def get_job(caller: Caller) -> Response:
    job = await caller.state.service.describe_job(caller.job_id, caller.account_id)
    return JSONResponse(job_detail(job))


async def list_failures(caller: Caller) -> Response:
    request = caller.request
    limit = int_param(request, "limit", DEFAULT_FAILURES, 1, MAX_FAILURES)
    after = int_param(request, "after", -1, -1, MAX_AFTER)
    cause = (request.query_params.get("error_code"), request.query_params.get("http_status"))
    await caller.state.service.describe_job(caller.job_id, caller.account_id)  # 404s first
    failures, more = await collect_failures(caller, after, limit, cause)
    next_after = failures[-1]["position"] if more else None
    return JSONResponse({"failures": failures, "next_after": next_after})


async def collect_failures(
    caller: Caller, after: int, limit: int, cause: tuple[str | None, str | None] = (None, None)
) -> tuple[list[dict[str, Any]], bool]:
    """Failed rows past position `after` (a row's index in manifest order), up to `limit`;
    only those of one cause (error code and/or HTTP status as the report writes it) if given."""
    found: list[dict[str, Any]] = []
    position = -1
    code, status = cause
    async for chunk in caller.state.service.store.report_rows(caller.job_id):
        for row in chunk:
            position += 1
            if position <= after or row.status != TaskStatus.FAILED.value:
                continue
            if (code is not None and row.error_code != code) or (
                status is not None and row.http_status != status
            ):
                continue
            if len(found) == limit:
                return found, True
            found.append(failure_json(position, row))
    return found, False


async def confirm_job(caller: Caller) -> Response:
    return await _status_change(caller, "Ready")


async def cancel_job(caller: Caller) -> Response:
    return await _status_change(caller, "Cancelled")


async def _status_change(caller: Caller, requested: str) -> Response:
    body = await json_body(caller.request)
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise BadRequest("reason must be a string")
    job = await caller.state.service.update_status(caller.job_id, requested, reason, caller.account_id)
    return JSONResponse(job_detail(job))


async def set_priority(caller: Caller) -> Response:
    body = await json_body(caller.request)
    priority = whole_number(body.get("priority"))
    if priority is None:
        raise BadRequest('body must be {"priority": <whole number>}')
    job = await caller.state.service.update_priority(caller.job_id, priority, caller.account_id)
    return JSONResponse(job_detail(job))


def whole_number(value: Any) -> int | None:
    """An int, or a float with no fraction (JSON Schema counts 42.0 as an integer too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else None


async def job_events(caller: Caller) -> Response:
    request = caller.request
    interval = float_param(
        request, "interval", SSE_DEFAULT_INTERVAL_S, SSE_MIN_INTERVAL_S, SSE_MAX_INTERVAL_S
    )
    max_s = float_param(request, "max_s", SSE_DEFAULT_MAX_S, SSE_MIN_INTERVAL_S, SSE_MAX_MAX_S)
    await caller.state.service.describe_job(caller.job_id, caller.account_id)  # 404 before streaming
    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(
        progress_events(caller, interval, max_s), media_type="text/event-stream", headers=headers
    )


async def progress_events(caller: Caller, interval: float, max_s: float) -> AsyncIterator[str]:
    """`progress` events (a job detail) every `interval`; one `end` event closes the stream:
    reason "terminal" when the job has ended, "timeout" after `max_s` (reconnect to go on),
    "gone" if the job disappeared (expired)."""
    yield f"retry: {SSE_RETRY_MS}\n\n"
    ticks = max(1, int(max_s / interval))
    for _ in range(ticks):
        try:
            job = await caller.state.service.describe_job(caller.job_id, caller.account_id)
        except NotFound:
            yield sse("end", {"reason": "gone"})
            return
        yield sse("progress", job_detail(job))
        if job.status.terminal:
            yield sse("end", {"reason": "terminal", "status": job.status.value})
            return
        await asyncio.sleep(interval)
    yield sse("end", {"reason": "timeout"})


def sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


# -- session endpoints (no prior authentication) ------------------------------------------------


async def login(request: Request) -> Response:
    return await guarded(request, lambda: _login(request))


async def _login(request: Request) -> Response:
    # JSON only: a cross-site HTML form cannot send it, so no site can log a browser in as
    # someone else (login CSRF).
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != JSON_TYPE:
        raise ApiFailure("UnsupportedMediaType", f"log in with a {JSON_TYPE} body", 415)
    body = await json_body(request)
    access, secret = body.get("access_key"), body.get("secret_key")
    if not isinstance(access, str) or not isinstance(secret, str):
        raise BadRequest('body must be {"access_key": "...", "secret_key": "..."}')
    key = throttled_key(request, access, secret, request.app.state.api)
    token = sessions(request).open(key.access_key)
    response = JSONResponse(whoami(key), status_code=201)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_TTL_S,
        path="/",
        httponly=True,
        samesite="strict",
        secure=over_https(request),
    )
    return response


def over_https(request: Request) -> bool:
    """Whether the client reached this server over TLS (here, or at a trusted proxy)."""
    return request.url.scheme == "https"


async def logout(request: Request) -> Response:
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        sessions(request).close(token)
    response = Response(status_code=204)
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=over_https(request)
    )
    return response


async def current_session(caller: Caller) -> Response:
    return JSONResponse(whoami(caller.key))


def whoami(key: AccessKey) -> dict[str, str]:
    return {"access_key": key.access_key, "account_id": key.account_id}


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


ROUTES = [
    Route(API_PREFIX + "/openapi.json", openapi, methods=["GET"]),
    Route(API_PREFIX + "/session", login, methods=["POST"]),
    Route(API_PREFIX + "/session", json_endpoint(current_session), methods=["GET"]),
    Route(API_PREFIX + "/session", logout, methods=["DELETE"]),
    Route(API_PREFIX + "/jobs", json_endpoint(list_jobs), methods=["GET"]),
    Route(API_PREFIX + "/jobs/{id}", json_endpoint(get_job), methods=["GET"]),
    Route(API_PREFIX + "/jobs/{id}/failures", json_endpoint(list_failures), methods=["GET"]),
    Route(API_PREFIX + "/jobs/{id}/events", json_endpoint(job_events), methods=["GET"]),
    Route(API_PREFIX + "/jobs/{id}/confirm", json_endpoint(confirm_job), methods=["POST"]),
    Route(API_PREFIX + "/jobs/{id}/cancel", json_endpoint(cancel_job), methods=["POST"]),
    Route(API_PREFIX + "/jobs/{id}/priority", json_endpoint(set_priority), methods=["POST"]),
]
