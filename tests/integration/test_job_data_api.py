"""The job page's data over /api/v1: the durable timeline, failures by cause with the
filtered failures table, and downloads of the report files (exact bytes), all scoped to the
caller's account."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.conftest import Env
from tests.integration.test_api_boto3 import KEY_A, KEY_B, Server, create, serving
from tests.integration.test_json_api import API, HTTP_TIMEOUT_S, assert_error, bearer, wait_status

pytestmark = pytest.mark.integration


@pytest.fixture
def server(local_env: Env) -> Iterator[Server]:
    with serving(local_env) as running:
        yield running


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=bearer(KEY_A), timeout=HTTP_TIMEOUT_S) as client:
        yield client


def _mixed_job(server: Server, env: Env, http: httpx.Client) -> str:
    """Four present objects, three missing (NoSuchKey 404) and one in a missing bucket."""
    env.make_bucket("data")
    env.make_bucket("reports")
    for n in range(4):
        env.put("data", f"ok-{n}.txt", b"x")
    entries = [("data", f"ok-{n}.txt") for n in range(4)]
    entries += [("data", f"gone-{n}.txt") for n in range(3)] + [("nobucket", "k.txt")]
    manifest: dict[str, Any] = env.manifest("data", entries)
    job_id = create(server.client(), manifest, Description="mixed")
    assert wait_status(http, job_id, "Complete", "Failed")["job"]["Status"] == "Complete"
    return job_id


def _report_path(env: Env, http: httpx.Client, job_id: str) -> Path:
    location = http.get(f"{API}/jobs/{job_id}").json()["report_manifest"]
    bucket, _, key = location.removeprefix("s3://").partition("/")
    return env.root / bucket / key


def test_timeline_causes_filter_and_downloads(server: Server, http: httpx.Client, local_env: Env) -> None:
    job_id = _mixed_job(server, local_env, http)

    timeline = http.get(f"{API}/jobs/{job_id}/timeline").json()
    assert timeline["interval_s"] > 0
    assert timeline["points"], "a job that ran has at least its first and last sample"
    last = timeline["points"][-1]
    assert last["at"] > 0 and last["succeeded_per_s"] is not None and last["throttled"] == 0

    causes = http.get(f"{API}/jobs/{job_id}/causes").json()["causes"]
    assert [c["count"] for c in causes] == sorted((c["count"] for c in causes), reverse=True)
    assert sum(c["count"] for c in causes) == 4
    top = causes[0]
    assert (top["error_code"], top["http_status"], top["count"]) == ("NoSuchKey", "404", 3)

    only = http.get(f"{API}/jobs/{job_id}/failures", params={"error_code": "NoSuchKey"}).json()
    assert sorted(f["key"] for f in only["failures"]) == ["gone-0.txt", "gone-1.txt", "gone-2.txt"]
    other = causes[1]["error_code"]
    rest = http.get(f"{API}/jobs/{job_id}/failures", params={"error_code": other}).json()["failures"]
    assert [f["bucket"] for f in rest] == ["nobucket"]

    manifest_path = _report_path(local_env, http, job_id)
    assert manifest_path.name == "manifest.json"
    report = http.get(f"{API}/jobs/{job_id}/report/manifest.json")
    assert report.status_code == 200 and report.content == manifest_path.read_bytes()
    results = {entry["TaskExecutionStatus"]: entry["Key"] for entry in report.json()["Results"]}
    for status in ("succeeded", "failed"):
        got = http.get(f"{API}/jobs/{job_id}/report/{status}.csv")
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
        assert "attachment" in got.headers["content-disposition"]
        assert got.content == (local_env.root / "reports" / results[status]).read_bytes()
    assert_error(http.get(f"{API}/jobs/{job_id}/report/secrets.txt"), 404, "NotFoundException")


def test_another_account_gets_nothing(server: Server, http: httpx.Client, local_env: Env) -> None:
    job_id = _mixed_job(server, local_env, http)
    with httpx.Client(base_url=server.url, headers=bearer(KEY_B), timeout=HTTP_TIMEOUT_S) as other:
        for path in ("timeline", "causes", "report/failed.csv", "report/manifest.json", "failures"):
            assert_error(other.get(f"{API}/jobs/{job_id}/{path}"), 404, "NotFoundException")
    with httpx.Client(base_url=server.url, timeout=HTTP_TIMEOUT_S) as anonymous:
        assert_error(anonymous.get(f"{API}/jobs/{job_id}/report/failed.csv"), 401, "Unauthorized")
    assert KEY_A.account_id != KEY_B.account_id
