"""The eight S3 Control job operations as Starlette routes (docs/aws-contracts.md: #job-statuses,
#wire-protocol).

Every request is authenticated first (SigV4, api/sigv4.py); the caller's access key decides
the account. `x-amz-account-id` and a `<12 digits>.` host prefix are accepted only when they
name that same account, and every JobService call is scoped to it, so one account never sees
another's jobs (they answer NotFoundException, as for a job that does not exist).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from s3batch.api import sigv4
from s3batch.api.auth import KeyRing
from s3batch.api.xml import MAX_XML_BYTES, render_error, render_result
from s3batch.api.xml import parse_request as parse_xml
from s3batch.domain.roles import RoleBook
from s3batch.errors import ApiError, BadRequest, InvalidRequest
from s3batch.functions.registry import ServerFunctions
from s3batch.service.jobs import JobService
from s3batch.service.shapes import job_descriptor, job_list_entry
from s3batch.storage.config import StorageConfig

log = logging.getLogger(__name__)

PREFIX = "/v20180820/jobs"
#: Largest request body accepted, in bytes (the XML parser's own cap; bodies are small).
MAX_BODY_BYTES = MAX_XML_BYTES
XML_TYPE = "application/xml"
_ACCOUNT_HOST_PREFIX = re.compile(r"^(\d{12})\.")
HOST_ID = "s3batch"


@dataclass(frozen=True, slots=True)
class ApiState:
    """What the routes need, built once by create_app."""

    service: JobService
    keys: KeyRing
    storage: StorageConfig
    #: What LambdaInvoke jobs may run, per account (server.toml's [[functions]]).
    functions: ServerFunctions
    #: The server's roles; none: RoleArn is not enforced.
    roles: RoleBook = field(default_factory=RoleBook)


@dataclass(frozen=True, slots=True)
class Call:
    """An authenticated request: who sent it and what it carried."""

    request: Request
    account_id: str
    body: bytes
    state: ApiState

    @property
    def job_id(self) -> str:
        return str(self.request.path_params["id"])

    def query(self, name: str) -> str | None:
        return self.request.query_params.get(name)


class ApiFailure(Exception):
    """An error answered before any operation ran (auth, size), with code and status."""

    def __init__(self, code: str, message: str, http_status: int) -> None:
        super().__init__(message)
        self.code, self.message, self.http_status = code, message, http_status


Handler = Callable[[Call], Awaitable[Response]]


def xml_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=XML_TYPE)


def error_response(code: str, message: str, status: int) -> Response:
    request_id = uuid.uuid4().hex.upper()
    response = xml_response(render_error(code, message, request_id, HOST_ID), status)
    response.headers["x-amz-request-id"] = request_id
    return response


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Authenticate, scope to the caller's account, run `handler`, render errors as S3 does."""

    async def route(request: Request) -> Response:
        try:
            return await handler(await authenticate(request))
        except ApiFailure as exc:
            return error_response(exc.code, exc.message, exc.http_status)
        except ApiError as exc:
            return error_response(exc.code, exc.message, exc.http_status)
        except Exception:  # a bug: answer in the shape botocore maps, keep the server up
            log.exception("%s %s failed", request.method, request.url.path)
            return error_response("InternalServiceException", "internal error; see the server log", 500)

    return route


async def authenticate(request: Request) -> Call:
    state: ApiState = request.app.state.api
    body = await read_body(request)
    signed = sigv4.Request(
        method=request.method,
        raw_path=request.scope.get("raw_path", request.url.path.encode()).decode("latin-1"),
        raw_query=request.scope.get("query_string", b"").decode("latin-1"),
        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]],
        body=body,
    )
    try:
        access_key = sigv4.verify(signed, state.keys.secret_for)
    except sigv4.SigV4Error as exc:
        raise ApiFailure(exc.code, exc.message, exc.http_status) from exc
    key = state.keys.get(access_key)
    assert key is not None  # verify() only returns keys it found
    check_account(request, key.account_id)
    return Call(request, key.account_id, body, state)


async def read_body(request: Request) -> bytes:
    """The body, refused as soon as it passes MAX_BODY_BYTES (never buffered past that)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large()
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large() -> ApiFailure:
    return ApiFailure("EntityTooLarge", f"request body is larger than {MAX_BODY_BYTES} bytes", 413)


def check_account(request: Request, account_id: str) -> None:
    """The key's account is authoritative; a header or host naming another one is refused."""
    claimed = request.headers.get("x-amz-account-id")
    if claimed is not None and claimed != account_id:
        raise ApiFailure("AccessDenied", "x-amz-account-id does not match your access key's account", 403)
    prefixed = _ACCOUNT_HOST_PREFIX.match(request.headers.get("host", ""))
    if prefixed and prefixed.group(1) != account_id:
        raise ApiFailure("AccessDenied", "the host's account prefix does not match your access key", 403)


# -- the operations -----------------------------------------------------------------------------


async def create_job(call: Call) -> Response:
    request = parse_xml("CreateJob", call.body)
    state = call.state
    job = await state.service.create_job(
        request,
        storage=state.storage,
        account_id=call.account_id,
        functions=state.functions.for_account(call.account_id),
        roles=state.roles,
    )
    return xml_response(render_result("CreateJob", {"JobId": job.job_id}))


async def list_jobs(call: Call) -> Response:
    statuses = call.request.query_params.getlist("jobStatuses")
    max_results = _int_param(call, "maxResults", InvalidRequest)
    jobs, token = await call.state.service.list_jobs(
        call.account_id, statuses or None, max_results, call.query("nextToken")
    )
    data: dict[str, Any] = {"Jobs": [job_list_entry(job) for job in jobs], "NextToken": token}
    return xml_response(render_result("ListJobs", data))


async def describe_job(call: Call) -> Response:
    job = await call.state.service.describe_job(call.job_id, call.account_id)
    return xml_response(render_result("DescribeJob", {"Job": job_descriptor(job)}))


async def update_priority(call: Call) -> Response:
    priority = _int_param(call, "priority", BadRequest)
    if priority is None:
        raise BadRequest("the priority query parameter is required")
    job = await call.state.service.update_priority(call.job_id, priority, call.account_id)
    return xml_response(render_result("UpdateJobPriority", {"JobId": job.job_id, "Priority": job.priority}))


async def update_status(call: Call) -> Response:
    requested = call.query("requestedJobStatus")
    if not requested:
        raise BadRequest("the requestedJobStatus query parameter is required")
    job = await call.state.service.update_status(
        call.job_id, requested, call.query("statusUpdateReason"), call.account_id
    )
    data = {"JobId": job.job_id, "Status": job.status.value, "StatusUpdateReason": job.status_update_reason}
    return xml_response(render_result("UpdateJobStatus", data))


async def get_tagging(call: Call) -> Response:
    tags = await call.state.service.get_tags(call.job_id, call.account_id)
    return xml_response(render_result("GetJobTagging", {"Tags": tags}))


async def put_tagging(call: Call) -> Response:
    request = parse_xml("PutJobTagging", call.body)
    if "Tags" not in request:
        raise BadRequest("PutJobTaggingRequest needs <Tags> (empty to remove every tag)")
    await call.state.service.put_tags(call.job_id, request["Tags"], call.account_id)
    return Response(status_code=200)


async def delete_tagging(call: Call) -> Response:
    await call.state.service.delete_tags(call.job_id, call.account_id)
    return Response(status_code=204)


def _int_param(call: Call, name: str, error: type[ApiError]) -> int | None:
    raw = call.query(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise error(f"{name} must be a whole number, got {raw!r}") from exc


ROUTES = [
    Route(PREFIX, endpoint(create_job), methods=["POST"]),
    Route(PREFIX, endpoint(list_jobs), methods=["GET"]),
    Route(PREFIX + "/{id}", endpoint(describe_job), methods=["GET"]),
    Route(PREFIX + "/{id}/priority", endpoint(update_priority), methods=["POST"]),
    Route(PREFIX + "/{id}/status", endpoint(update_status), methods=["POST"]),
    Route(PREFIX + "/{id}/tagging", endpoint(get_tagging), methods=["GET"]),
    Route(PREFIX + "/{id}/tagging", endpoint(put_tagging), methods=["PUT"]),
    Route(PREFIX + "/{id}/tagging", endpoint(delete_tagging), methods=["DELETE"]),
]
