"""The OpenAPI 3.1 document of the JSON API (api/json_api.py), written by hand.

Kept next to the routes on purpose: tests/integration/test_json_api.py checks that every
route is described and, with schemathesis, that answers match these schemas.
"""

from __future__ import annotations

from typing import Any

from s3batch.domain.job import JobStatus
from s3batch.domain.request import MAX_PRIORITY
from s3batch.service.jobs import MAX_LIST_RESULTS

OPENAPI_VERSION = "3.1.0"
API_VERSION = "1"
_REF = "#/components/schemas/"
_MAX_FAILURES = 1000  # json_api.MAX_FAILURES (not imported: json_api imports this module)
#: pipelines.MAX_ERROR_RECORD_BYTES (not imported: pipelines imports json_api, which imports this).
_MAX_ERROR_RECORD_BYTES = 64 * 1024
MAX_AFTER = 2**53  # largest `after` cursor (JSON-safe integer)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema_name: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema_name)}}}


def _body(schema_name: str, required: bool) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(schema_name)}}}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
    if description:
        param["description"] = description
    return param


_CHANGED = "The job after the change"


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Bad request (BadRequestException, InvalidNextTokenException, JobStatusException)",
        401: "Not authenticated (Unauthorized)",
        403: "Cookie-authenticated write without the CSRF header (AccessDenied)",
        404: "No such job in your account (NotFoundException)",
        413: "Body too large (EntityTooLarge)",
        415: "Login body is not JSON (UnsupportedMediaType)",
        429: "Too many failed logins or bearer secrets (TooManyRequestsException; see Retry-After)",
    }
    if 401 in statuses:  # whatever authenticates can be throttled (api/ratelimit.py)
        statuses = (*statuses, 429)
    return {str(status): _json("Error", text[status]) for status in statuses}


#: ListJobs' paging token: "<creation time>:<job id>" (service.jobs._decode_token).
_NEXT_TOKEN = r"^[0-9]+(\.[0-9]+)?:.+$"
_SSE_CONTENT = {"schema": {"type": "string"}}
_JOB_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
_NULLABLE_NUMBER = {"type": ["number", "null"], "minimum": 0}
_NO_TOTAL = "null until the manifest is read"

_SCHEMAS: dict[str, Any] = {
    "Pipeline": {
        "type": "object",
        "description": "A pipeline hosted by this server (api/pipelines.py); every key sees them all.",
        "required": ["name", "source", "on_success", "run", "pending", "files"],
        "properties": {
            "name": {"type": "string"},
            "source": {"type": "string", "description": "the staging bucket"},
            "on_success": {"type": "string", "enum": ["archive", "delete", "leave"]},
            "archive": {"type": ["string", "null"]},
            "error": {"type": ["string", "null"]},
            "webhook": {"type": ["string", "null"], "description": "path of its webhook; null: disabled"},
            "poll_interval_s": {"type": ["number", "null"]},
            "abort_incomplete_uploads_after_s": {"type": ["number", "null"]},
            "presign_max_expires_s": {"type": ["number", "null"]},
            "run": {"type": ["string", "null"], "description": "the current run's id"},
            "pending": {"type": "integer", "minimum": 0},
            "files": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
        },
    },
    "PipelineList": {
        "type": "object",
        "required": ["pipelines"],
        "properties": {"pipelines": {"type": "array", "items": _ref("Pipeline")}},
    },
    "UploadRequest": {
        "type": "object",
        "required": ["key", "content_type"],
        "properties": {
            "key": {"type": "string", "minLength": 1, "maxLength": 1024},
            "content_type": {"type": "string", "minLength": 1},
            "expires_s": {"type": "integer", "minimum": 1, "description": "at most presign_max_expires_s"},
        },
    },
    "Upload": {
        "type": "object",
        "description": "A SigV4 presigned PUT for one key and content type; send the headers as given.",
        "required": ["url", "method", "headers", "bucket", "key", "expires_s", "expires_at"],
        "properties": {
            "url": {"type": "string"},
            "method": {"type": "string", "enum": ["PUT"]},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "bucket": {"type": "string"},
            "key": {"type": "string"},
            "expires_s": {"type": "integer", "minimum": 1},
            "expires_at": {"type": "string", "format": "date-time"},
        },
    },
    "Error": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
    },
    "Status": {"type": "string", "enum": [s.value for s in JobStatus]},
    "Progress": {
        "type": "object",
        "required": [
            "total",
            "succeeded",
            "failed",
            "done",
            "percent",
            "elapsed_active_s",
            "rate_per_s",
            "eta_s",
        ],
        "properties": {
            "total": {"type": ["integer", "null"], "minimum": 0, "description": _NO_TOTAL},
            "succeeded": {"type": "integer", "minimum": 0},
            "failed": {"type": "integer", "minimum": 0},
            "done": {"type": "integer", "minimum": 0},
            "percent": {"type": ["number", "null"], "minimum": 0},
            "elapsed_active_s": {"type": "number", "minimum": 0},
            "rate_per_s": {**_NULLABLE_NUMBER, "description": "tasks per second while Active"},
            "eta_s": {
                **_NULLABLE_NUMBER,
                "description": "seconds left at that rate; null if unknown or ended",
            },
        },
    },
    "JobSummary": {
        "type": "object",
        "description": "A ListJobs entry (AWS shape, ISO-8601 times) plus progress.",
        "required": ["JobId", "Operation", "Priority", "Status", "CreationTime", "progress", "terminal"],
        "properties": {
            "JobId": {"type": "string"},
            "Operation": {"type": "string"},
            "Priority": {"type": "integer"},
            "Status": _ref("Status"),
            "Description": {"type": "string"},
            "CreationTime": {"type": "string", "format": "date-time"},
            "TerminationDate": {"type": "string", "format": "date-time"},
            "ProgressSummary": {"type": "object"},
            "progress": _ref("Progress"),
            "terminal": {"type": "boolean"},
        },
    },
    "JobList": {
        "type": "object",
        "required": ["jobs", "next_token"],
        "properties": {
            "jobs": {"type": "array", "items": _ref("JobSummary")},
            "next_token": {"type": ["string", "null"], "description": "pass as next_token for the next page"},
        },
    },
    "JobDetail": {
        "type": "object",
        "required": ["job", "progress", "terminal", "report_manifest", "tags"],
        "properties": {
            "job": {
                "type": "object",
                "description": "DescribeJob's JobDescriptor (AWS shape, ISO-8601 times).",
                "required": ["JobId", "Status", "Priority", "Operation", "Report", "CreationTime"],
                "properties": {
                    "JobId": {"type": "string"},
                    "Status": _ref("Status"),
                    "Priority": {"type": "integer"},
                    "Operation": {"type": "object"},
                    "Report": {"type": "object"},
                    "CreationTime": {"type": "string", "format": "date-time"},
                },
            },
            "progress": _ref("Progress"),
            "terminal": {"type": "boolean"},
            "report_manifest": {
                "type": ["string", "null"],
                "description": "s3:// URI of the completion report's manifest.json, once written",
            },
            "tags": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["Key", "Value"],
                    "properties": {"Key": {"type": "string"}, "Value": {"type": "string"}},
                },
            },
        },
    },
    "Failure": {
        "type": "object",
        "required": ["position", "bucket", "key", "version_id", "error_code", "http_status", "message"],
        "properties": {
            "position": {"type": "integer", "minimum": 0, "description": "row index in manifest order"},
            "bucket": {"type": "string"},
            "key": {"type": "string"},
            "version_id": {"type": ["string", "null"]},
            "error_code": {"type": "string"},
            "http_status": {"type": ["integer", "null"]},
            "message": {"type": "string"},
        },
    },
    "FailureList": {
        "type": "object",
        "required": ["failures", "next_after"],
        "properties": {
            "failures": {"type": "array", "items": _ref("Failure")},
            "next_after": {"type": ["integer", "null"], "description": "pass as after for the next page"},
        },
    },
    "Timeline": {
        "type": "object",
        "required": ["interval_s", "points"],
        "properties": {
            "interval_s": {"type": "number", "description": "seconds between samples"},
            "points": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": [
                        "since",
                        "at",
                        "succeeded_per_s",
                        "failed_per_s",
                        "throttled",
                        "in_flight",
                        "limit",
                    ],
                    "properties": {
                        "since": {"type": "number", "description": "interval start, epoch seconds"},
                        "at": {"type": "number", "description": "interval end, epoch seconds"},
                        "succeeded_per_s": {"type": ["number", "null"], "description": "null: a gap"},
                        "failed_per_s": {"type": ["number", "null"]},
                        "throttled": {"type": "integer"},
                        "in_flight": {"type": ["integer", "null"]},
                        "limit": {"type": ["integer", "null"]},
                    },
                },
            },
        },
    },
    "Causes": {
        "type": "object",
        "required": ["causes"],
        "properties": {
            "causes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["error_code", "http_status", "count", "example_key", "example_message"],
                    "properties": {
                        "error_code": {"type": "string"},
                        "http_status": {"type": "string"},
                        "count": {"type": "integer"},
                        "example_key": {"type": "string"},
                        "example_message": {"type": "string"},
                    },
                },
            }
        },
    },
    "PipelineTimeline": {
        "type": "object",
        "required": ["bucket_s", "buckets"],
        "properties": {
            "bucket_s": {"type": "integer"},
            "buckets": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["at", "counts"],
                    "properties": {
                        "at": {"type": "number", "description": "bucket start, epoch seconds"},
                        "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                    },
                },
            },
        },
    },
    "PipelineFailures": {
        "type": "object",
        "required": ["failures", "error_bucket"],
        "properties": {
            "error_bucket": {"type": ["string", "null"]},
            "failures": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": [
                        "bucket",
                        "key",
                        "attempts",
                        "error_code",
                        "message",
                        "updated",
                        "record",
                        "withheld",
                    ],
                    "properties": {
                        "bucket": {"type": "string"},
                        "key": {"type": "string"},
                        "version_id": {"type": ["string", "null"], "description": "null for a non-operator"},
                        "attempts": {"type": "integer"},
                        "error_code": {"type": "string"},
                        "http_status": {"type": "string"},
                        "message": {"type": ["string", "null"], "description": "null for a non-operator"},
                        "updated": {"type": "number", "description": "when it failed, epoch seconds"},
                        "record": {
                            "description": "the error record the pipeline wrote (operators only), or null; "
                            f"one over {_MAX_ERROR_RECORD_BYTES} bytes is not read whole: "
                            f'{{"truncated": true, "larger_than_bytes": {_MAX_ERROR_RECORD_BYTES}}}'
                        },
                        "withheld": {
                            "type": ["string", "null"],
                            "description": "why message and record are null: the key is not an operator's",
                        },
                    },
                },
            },
        },
    },
    "Replay": {"type": "object", "properties": {"prefix": {"type": "string"}}},
    "Replayed": {
        "type": "object",
        "required": ["replayed", "more"],
        "properties": {"replayed": {"type": "integer"}, "more": {"type": "boolean"}},
    },
    "StatusChange": {
        "type": "object",
        "properties": {"reason": {"type": "string", "minLength": 1, "maxLength": 256}},
    },
    "PriorityChange": {
        "type": "object",
        "required": ["priority"],
        "properties": {"priority": {"type": "integer", "minimum": 0, "maximum": MAX_PRIORITY}},
    },
    "Login": {
        "type": "object",
        "required": ["access_key", "secret_key"],
        "properties": {"access_key": {"type": "string"}, "secret_key": {"type": "string"}},
    },
    "Identity": {
        "type": "object",
        "required": ["access_key", "account_id"],
        "properties": {"access_key": {"type": "string"}, "account_id": {"type": "string"}},
    },
}


def _status_change(summary: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": [_JOB_ID],
        "requestBody": _body("StatusChange", required=False),
        "responses": {"200": _json("JobDetail", _CHANGED), **_errors(400, 401, 403, 404, 413)},
    }


def _paths() -> dict[str, Any]:
    return {
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {}}}},
            }
        },
        "/api/v1/session": {
            "post": {
                "summary": "Log in: sets the HttpOnly session cookie s3batch_session",
                "security": [],
                "requestBody": _body("Login", required=True),
                "responses": {"201": _json("Identity", "Logged in"), **_errors(400, 401, 413, 415)},
            },
            "get": {
                "summary": "Who am I",
                "responses": {"200": _json("Identity", "The caller's key and account"), **_errors(401)},
            },
            "delete": {
                "summary": "Log out (forget the session, clear the cookie)",
                "security": [],
                "responses": {"204": {"description": "Logged out"}},
            },
        },
        "/api/v1/jobs": {
            "get": {
                "summary": "List the caller's jobs, newest first",
                "parameters": [
                    {
                        **_query("status", {"type": "array", "items": _ref("Status")}, "repeat for several"),
                        "style": "form",
                        "explode": True,
                    },
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIST_RESULTS, "default": 50}
                    ),
                    _query(
                        "next_token", {"type": "string", "pattern": _NEXT_TOKEN}, "from the previous page"
                    ),
                ],
                "responses": {"200": _json("JobList", "A page of jobs"), **_errors(400, 401)},
            }
        },
        "/api/v1/jobs/{id}": {
            "get": {
                "summary": "Descriptor, counts, rate, ETA and report location of one job",
                "parameters": [_JOB_ID],
                "responses": {"200": _json("JobDetail", "The job"), **_errors(401, 404)},
            }
        },
        "/api/v1/jobs/{id}/failures": {
            "get": {
                "summary": "Failed tasks (completion-report rows), in manifest order",
                "parameters": [
                    _JOB_ID,
                    _query(
                        "limit", {"type": "integer", "minimum": 1, "maximum": _MAX_FAILURES, "default": 100}
                    ),
                    _query(
                        "after",
                        {"type": "integer", "minimum": -1, "maximum": MAX_AFTER},
                        "position of the last failure already seen (next_after)",
                    ),
                    _query("error_code", {"type": "string"}, "only failures with this error code"),
                    _query("http_status", {"type": "string"}, "only failures with this HTTP status"),
                ],
                "responses": {"200": _json("FailureList", "A page of failures"), **_errors(400, 401, 404)},
            }
        },
        "/api/v1/jobs/{id}/timeline": {
            "get": {
                "summary": "Chart points of the job's progress over time (rates, concurrency, throttling)",
                "parameters": [_JOB_ID],
                "responses": {"200": _json("Timeline", "The job's timeline"), **_errors(401, 404)},
            }
        },
        "/api/v1/jobs/{id}/causes": {
            "get": {
                "summary": "Failed tasks grouped by error code and HTTP status, most frequent first",
                "parameters": [_JOB_ID],
                "responses": {"200": _json("Causes", "Failure causes"), **_errors(401, 404)},
            }
        },
        "/api/v1/jobs/{id}/report/{name}": {
            "get": {
                "summary": "Download a completion report file (results CSVs: the tasks finished so far)",
                "parameters": [
                    _JOB_ID,
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {
                            "type": "string",
                            "enum": ["succeeded.csv", "failed.csv", "manifest.json"],
                        },
                    },
                ],
                "responses": {
                    "200": {
                        "description": "The file's bytes",
                        "content": {"text/csv": {"schema": {"type": "string"}}, "application/json": {}},
                    },
                    **_errors(401, 404),
                },
            }
        },
        "/api/v1/jobs/{id}/events": {
            "get": {
                "summary": "Server-sent events: progress (a JobDetail) every interval; end closes",
                "description": (
                    "Events: `progress` with a JobDetail; one final `end` with "
                    '{"reason": "terminal"|"timeout"|"gone"}. The stream ends when the job is '
                    "terminal or after max_s seconds (reconnect to go on)."
                ),
                "parameters": [
                    _JOB_ID,
                    _query("interval", {"type": "number", "minimum": 0.1, "maximum": 10, "default": 1}),
                    _query("max_s", {"type": "number", "minimum": 0.1, "maximum": 3600, "default": 300}),
                ],
                "responses": {
                    "200": {"description": "An event stream", "content": {"text/event-stream": _SSE_CONTENT}},
                    **_errors(400, 401, 404),
                },
            }
        },
        "/api/v1/jobs/{id}/confirm": {"post": _status_change("Confirm a Suspended job (→ Ready)")},
        "/api/v1/jobs/{id}/cancel": {"post": _status_change("Cancel a job that has not ended")},
        "/api/v1/jobs/{id}/priority": {
            "post": {
                "summary": "Change the job's priority",
                "parameters": [_JOB_ID],
                "requestBody": _body("PriorityChange", required=True),
                "responses": {"200": _json("JobDetail", _CHANGED), **_errors(400, 401, 403, 404, 413)},
            }
        },
    }


_PIPELINE_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
}


def _pipeline_paths() -> dict[str, Any]:
    return {
        "/api/v1/pipelines": {
            "get": {
                "summary": "Pipelines hosted by this server, with file counts by state",
                "responses": {"200": _json("PipelineList", "The hosted pipelines"), **_errors(401)},
            }
        },
        "/api/v1/pipelines/{name}": {
            "get": {
                "summary": "One hosted pipeline",
                "parameters": [_PIPELINE_NAME],
                "responses": {"200": _json("Pipeline", "The pipeline"), **_errors(401, 404)},
            }
        },
        "/api/v1/pipelines/{name}/uploads": {
            "post": {
                "summary": "A presigned PUT URL for one key of the pipeline's staging bucket",
                "parameters": [_PIPELINE_NAME],
                "requestBody": _body("UploadRequest", required=True),
                "responses": {"201": _json("Upload", "Upload with this URL"), **_errors(400, 401, 404, 413)},
            }
        },
        "/api/v1/pipelines/{name}/timeline": {
            "get": {
                "summary": "Files by the state they reached, per time bucket",
                "parameters": [
                    _PIPELINE_NAME,
                    _query("bucket_s", {"type": "integer", "minimum": 10, "maximum": 2592000, "default": 60}),
                    _query("hours", {"type": "integer", "minimum": 1, "maximum": 720, "default": 24}),
                ],
                "responses": {"200": _json("PipelineTimeline", "Buckets"), **_errors(400, 401, 404)},
            }
        },
        "/api/v1/pipelines/{name}/failures": {
            "get": {
                "summary": "The files that errored last, with their error records",
                "description": (
                    "Every key sees each failure's key, error code, HTTP status, attempts and time. "
                    "Only operators ([server] operators in server.toml) also get its message, version "
                    "and the error record from the error bucket; for other keys those are null and "
                    "`withheld` says why."
                ),
                "parameters": [
                    _PIPELINE_NAME,
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 200, "default": 20}),
                ],
                "responses": {"200": _json("PipelineFailures", "Recent failures"), **_errors(400, 401, 404)},
            }
        },
        "/api/v1/pipelines/{name}/replay": {
            "post": {
                "summary": "Operator only: move the error bucket's objects back to staging, run them again",
                "parameters": [_PIPELINE_NAME],
                "requestBody": _body("Replay", required=False),
                "responses": {"202": _json("Replayed", "Objects moved back"), **_errors(400, 401, 403, 404)},
            }
        },
    }


def openapi_document() -> dict[str, Any]:
    """A fresh copy each call (callers may mutate it)."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "s3batch JSON API",
            "version": API_VERSION,
            "description": (
                "Jobs of one account, chosen by the credentials. Authenticate with "
                "`Authorization: Bearer ACCESS_KEY:SECRET_KEY` or the session cookie from "
                "POST /api/v1/session (writes with the cookie also need `X-S3Batch-CSRF: 1`). "
                "Errors are {code, message}."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": {**_paths(), **_pipeline_paths()},
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "ACCESS_KEY:SECRET_KEY"},
                "session": {"type": "apiKey", "in": "cookie", "name": "s3batch_session"},
            },
        },
    }
