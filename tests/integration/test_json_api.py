"""The JSON API (/api/v1) end to end: uvicorn on 127.0.0.1 in a thread, called with httpx.

Jobs are created through the S3 Control API (boto3), as a user would; everything else goes
through /api/v1: every endpoint, the auth failures, account isolation, the session cookie
with its CSRF header, the bounded event stream, and the OpenAPI document (checked against
the routes, and fuzzed with schemathesis when it is installed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.integration.conftest import Env, data_manifest
from tests.integration.test_api_boto3 import (
    ACCOUNT_A,
    KEY_A,
    KEY_B,
    Server,
    create,
    serving,
)

from s3batch.api import job_data, json_api, pipelines
from s3batch.api.auth import AccessKey

pytestmark = pytest.mark.integration

API = "/api/v1"
JOB_TIMEOUT_S = 30.0
POLL_S = 0.05
#: Fast event streams for tests (seconds).
SSE_INTERVAL_S = 0.1
HTTP_TIMEOUT_S = 10.0


def bearer(key: AccessKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.access_key}:{key.secret_key}"}


@pytest.fixture
def server(local_env: Env) -> Iterator[Server]:
    with serving(local_env) as running:
        yield running


@pytest.fixture
def manifest(local_env: Env) -> dict[str, Any]:
    """Three objects, one of them missing: the job completes with one failed task."""
    return data_manifest(local_env, ["a.txt", "b.txt"], ["a.txt", "missing.txt", "b.txt"])


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=bearer(KEY_A), timeout=HTTP_TIMEOUT_S) as client:
        yield client


def wait_status(http: httpx.Client, job_id: str, *statuses: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        detail: dict[str, Any] = http.get(f"{API}/jobs/{job_id}").json()
        if detail["job"]["Status"] in statuses:
            return detail
        time.sleep(POLL_S)
    raise TimeoutError(f"job {job_id} never reached {statuses}")


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == code and body["message"], body


# -- reading jobs -------------------------------------------------------------------------------


def test_job_detail_list_and_failures(server: Server, http: httpx.Client, manifest: dict[str, Any]) -> None:
    job_id = create(server.client(), manifest, Description="tag them")
    detail = wait_status(http, job_id, "Complete", "Failed")
    assert detail["job"]["Status"] == "Complete" and detail["terminal"] is True
    progress = detail["progress"]
    assert (progress["total"], progress["succeeded"], progress["failed"], progress["done"]) == (3, 2, 1, 3)
    assert progress["percent"] == 100.0 and progress["eta_s"] is None
    assert progress["rate_per_s"] is None or progress["rate_per_s"] > 0
    assert detail["report_manifest"].startswith("s3://reports/") and detail["report_manifest"].endswith(
        "manifest.json"
    )
    assert detail["job"]["CreationTime"].endswith("+00:00")

    failures = http.get(f"{API}/jobs/{job_id}/failures").json()
    assert failures["next_after"] is None
    [failure] = failures["failures"]
    assert (failure["position"], failure["bucket"], failure["key"]) == (1, "data", "missing.txt")
    assert failure["error_code"] and failure["message"] and failure["http_status"] == 404

    listed = http.get(f"{API}/jobs", params={"status": "Complete"}).json()
    assert [job["JobId"] for job in listed["jobs"]] == [job_id] and listed["next_token"] is None
    assert listed["jobs"][0]["progress"]["failed"] == 1 and listed["jobs"][0]["Description"] == "tag them"
    assert http.get(f"{API}/jobs", params={"status": "Active"}).json()["jobs"] == []


def test_list_paging_and_failure_paging(server: Server, http: httpx.Client, local_env: Env) -> None:
    local_env.make_bucket("data")
    local_env.make_bucket("reports")
    missing = local_env.manifest("data", [("data", f"gone-{n}") for n in range(3)])
    ids = {create(server.client(), missing) for _ in range(2)}
    for job_id in ids:
        wait_status(http, job_id, "Complete", "Failed")
    first = http.get(f"{API}/jobs", params={"limit": 1}).json()
    second = http.get(f"{API}/jobs", params={"limit": 1, "next_token": first["next_token"]}).json()
    assert {first["jobs"][0]["JobId"], second["jobs"][0]["JobId"]} == ids and second["next_token"] is None

    job_id = next(iter(ids))
    page = http.get(f"{API}/jobs/{job_id}/failures", params={"limit": 2}).json()
    assert [f["position"] for f in page["failures"]] == [0, 1] and page["next_after"] == 1
    rest = http.get(f"{API}/jobs/{job_id}/failures", params={"after": page["next_after"]}).json()
    assert [f["key"] for f in rest["failures"]] == ["gone-2"] and rest["next_after"] is None


def test_bad_parameters_answer_json_errors(http: httpx.Client) -> None:
    assert_error(http.get(f"{API}/jobs", params={"limit": 0}), 400, "BadRequestException")
    assert_error(http.get(f"{API}/jobs", params={"limit": "many"}), 400, "BadRequestException")
    assert_error(http.get(f"{API}/jobs", params={"status": "Sleeping"}), 400, "BadRequestException")
    assert_error(http.get(f"{API}/jobs", params={"next_token": "junk"}), 400, "InvalidNextTokenException")
    assert_error(http.get(f"{API}/jobs/no-such-job"), 404, "NotFoundException")
    assert_error(http.get(f"{API}/jobs/no-such-job/failures"), 404, "NotFoundException")
    assert_error(http.get(f"{API}/nothing-here"), 404, "NotFound")
    response = http.delete(f"{API}/jobs")
    assert_error(response, 405, "MethodNotAllowed")
    assert "GET" in response.headers["allow"]


# -- changing jobs ------------------------------------------------------------------------------


def test_priority_confirm_and_cancel(server: Server, http: httpx.Client, manifest: dict[str, Any]) -> None:
    to_confirm = create(server.client(), manifest, ConfirmationRequired=True)
    to_cancel = create(server.client(), manifest, ConfirmationRequired=True)
    wait_status(http, to_confirm, "Suspended")
    wait_status(http, to_cancel, "Suspended")

    changed = http.post(f"{API}/jobs/{to_confirm}/priority", json={"priority": 42}).json()
    assert changed["job"]["Priority"] == 42
    for bad in ({}, {"priority": "high"}, {"priority": True}, {"priority": -1}):
        assert_error(http.post(f"{API}/jobs/{to_confirm}/priority", json=bad), 400, "BadRequestException")
    bad_json = http.post(f"{API}/jobs/{to_confirm}/priority", content=b"{nope")
    assert_error(bad_json, 400, "BadRequestException")

    confirmed = http.post(f"{API}/jobs/{to_confirm}/confirm").json()
    assert confirmed["job"]["Status"] in {"Ready", "Active", "Complete"}
    assert_error(http.post(f"{API}/jobs/{to_confirm}/confirm"), 400, "JobStatusException")
    assert wait_status(http, to_confirm, "Complete")["progress"]["done"] == 3

    cancelled = http.post(f"{API}/jobs/{to_cancel}/cancel", json={"reason": "not today"}).json()
    assert (cancelled["job"]["Status"], cancelled["job"]["StatusUpdateReason"]) == ("Cancelled", "not today")
    assert_error(http.post(f"{API}/jobs/{to_cancel}/cancel"), 400, "JobStatusException")


# -- authentication and isolation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": f"Bearer {KEY_A.access_key}:wrong-secret"},
        {"Authorization": "Bearer AKIDNOBODY:whatever"},
        {"Authorization": f"Bearer {KEY_A.access_key}"},
        {"Authorization": f"Basic {KEY_A.access_key}:{KEY_A.secret_key}"},
        {"Cookie": f"{json_api.SESSION_COOKIE}=forged-token"},
    ],
    ids=["none", "wrong-secret", "unknown-key", "no-secret", "basic-scheme", "forged-cookie"],
)
def test_unauthenticated_requests_get_401(server: Server, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT_S) as anonymous:
        for method, path in [
            ("GET", "/jobs"),
            ("GET", "/jobs/x"),
            ("POST", "/jobs/x/cancel"),
            ("GET", "/session"),
        ]:
            response = anonymous.request(method, API + path, headers=headers)
            assert_error(response, 401, "Unauthorized")
            assert response.headers["www-authenticate"].startswith("Bearer")


def test_accounts_are_isolated(server: Server, http: httpx.Client, manifest: dict[str, Any]) -> None:
    job_id = create(server.client(), manifest, ConfirmationRequired=True)
    wait_status(http, job_id, "Suspended")
    with httpx.Client(base_url=server.url, headers=bearer(KEY_B), timeout=HTTP_TIMEOUT_S) as bob:
        assert bob.get(f"{API}/jobs").json()["jobs"] == []
        for method, path, body in [
            ("GET", "", None),
            ("GET", "/failures", None),
            ("GET", "/events", None),
            ("POST", "/confirm", {}),
            ("POST", "/cancel", {}),
            ("POST", "/priority", {"priority": 1}),
        ]:
            assert_error(
                bob.request(method, f"{API}/jobs/{job_id}{path}", json=body), 404, "NotFoundException"
            )
        assert bob.get(f"{API}/session").json() == {
            "access_key": KEY_B.access_key,
            "account_id": KEY_B.account_id,
        }
    assert wait_status(http, job_id, "Suspended")["job"]["Priority"] == 10


def test_session_cookie_login_csrf_and_logout(
    server: Server, http: httpx.Client, manifest: dict[str, Any]
) -> None:
    job_id = create(server.client(), manifest, ConfirmationRequired=True)
    wait_status(http, job_id, "Suspended")
    with httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT_S) as browser:
        wrong = {"access_key": KEY_A.access_key, "secret_key": "nope"}
        assert_error(browser.post(f"{API}/session", json=wrong), 401, "Unauthorized")
        form = {"access_key": KEY_A.access_key, "secret_key": KEY_A.secret_key}
        assert_error(browser.post(f"{API}/session", data=form), 415, "UnsupportedMediaType")
        login = browser.post(f"{API}/session", json=form)
        assert login.status_code == 201 and login.json()["account_id"] == ACCOUNT_A
        set_cookie = login.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie
        assert browser.get(f"{API}/jobs").json()["jobs"][0]["JobId"] == job_id

        # A write with only the cookie is what a cross-site page could forge: refused.
        assert_error(browser.post(f"{API}/jobs/{job_id}/cancel"), 403, "AccessDenied")
        csrf = {json_api.CSRF_HEADER: "1"}
        assert (
            browser.post(f"{API}/jobs/{job_id}/cancel", headers=csrf).json()["job"]["Status"] == "Cancelled"
        )

        assert browser.delete(f"{API}/session").status_code == 204
        assert_error(browser.get(f"{API}/jobs"), 401, "Unauthorized")


# -- server-sent events -------------------------------------------------------------------------


def read_events(http: httpx.Client, path: str, **params: Any) -> list[tuple[str, dict[str, Any]]]:
    """Every (event, data) of one stream, read to its end (the server bounds it)."""
    events: list[tuple[str, dict[str, Any]]] = []
    with http.stream("GET", path, params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def test_events_stream_progress_then_end(
    server: Server, http: httpx.Client, manifest: dict[str, Any]
) -> None:
    job_id = create(server.client(), manifest)
    events = read_events(http, f"{API}/jobs/{job_id}/events", interval=SSE_INTERVAL_S, max_s=JOB_TIMEOUT_S)
    names = [name for name, _ in events]
    assert names[-1] == "end" and set(names[:-1]) == {"progress"} and len(names) >= 2
    assert events[-1][1] == {"reason": "terminal", "status": "Complete"}
    last_progress = events[-2][1]
    assert last_progress["job"]["Status"] == "Complete" and last_progress["progress"]["done"] == 3
    done_counts = [data["progress"]["done"] for name, data in events if name == "progress"]
    assert done_counts == sorted(done_counts)  # progress never goes backwards


def test_events_stream_ends_after_max_duration(
    server: Server, http: httpx.Client, manifest: dict[str, Any]
) -> None:
    job_id = create(server.client(), manifest, ConfirmationRequired=True)
    wait_status(http, job_id, "Suspended")
    started = time.monotonic()
    events = read_events(http, f"{API}/jobs/{job_id}/events", interval=SSE_INTERVAL_S, max_s=0.5)
    assert time.monotonic() - started < JOB_TIMEOUT_S
    assert events[-1] == ("end", {"reason": "timeout"})
    assert all(data["job"]["Status"] == "Suspended" for name, data in events[:-1])
    assert_error(http.get(f"{API}/jobs/{job_id}/events", params={"max_s": 99999}), 400, "BadRequestException")


# -- the OpenAPI document -----------------------------------------------------------------------


def test_openapi_document_describes_every_route(server: Server) -> None:
    document = httpx.get(f"{server.url}{API}/openapi.json", timeout=HTTP_TIMEOUT_S).json()
    assert document["openapi"].startswith("3.1")
    described = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    api_routes = [
        *json_api.ROUTES,
        *job_data.ROUTES,
        *(r for r in pipelines.ROUTES if r.path.startswith(API)),
    ]
    served = {(route.path, method) for route in api_routes for method in (route.methods or set()) - {"HEAD"}}
    assert described == served
    refs = json.dumps(document)
    for name in document["components"]["schemas"]:
        assert f'"#/components/schemas/{name}"' in refs


def test_failed_logins_are_throttled(server: Server) -> None:
    """After MAX_FAILURES_PER_KEY wrong secrets for one key from one address, that key is
    refused there even with the right secret (429 + Retry-After); other keys still work."""
    from s3batch.api.ratelimit import MAX_FAILURES_PER_KEY

    wrong = {"access_key": KEY_A.access_key, "secret_key": "guess"}
    right = {"access_key": KEY_A.access_key, "secret_key": KEY_A.secret_key}
    with httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT_S) as browser:
        for _ in range(MAX_FAILURES_PER_KEY):
            assert_error(browser.post(f"{API}/session", json=wrong), 401, "Unauthorized")
        throttled = browser.post(f"{API}/session", json=right)
        assert_error(throttled, 429, "TooManyRequestsException")
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        assert "set-cookie" not in throttled.headers
        assert_error(browser.get(f"{API}/jobs", headers=bearer(KEY_A)), 429, "TooManyRequestsException")
        assert browser.get(f"{API}/jobs", headers=bearer(KEY_B)).status_code == 200
        other = {"access_key": KEY_B.access_key, "secret_key": KEY_B.secret_key}
        assert browser.post(f"{API}/session", json=other).status_code == 201


# -- schemathesis: generated requests against the OpenAPI document ------------------------------

#: Generated requests per operation: enough to cover each parameter's edges, quick in CI.
FUZZ_EXAMPLES = 25


def test_answers_match_the_openapi_document(server: Server) -> None:
    """Every operation, FUZZ_EXAMPLES generated requests each, all of schemathesis' checks.
    (Its pytest plugin cannot collect under this pytest; the operations are driven here.)"""
    import schemathesis  # a pinned dev dependency
    from hypothesis import HealthCheck, given, settings

    from s3batch.api.openapi import openapi_document

    schema = schemathesis.openapi.from_dict(openapi_document())
    schema.config.update(base_url=server.url)
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(headers=bearer(KEY_A))

        check()
