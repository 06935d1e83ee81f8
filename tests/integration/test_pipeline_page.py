"""The pipelines page and its API: files by state over time, recent failures with their error
record, and the replay action (operator only, CSRF-protected), over HTTP and in headless Chromium.

A pipeline hosted by `s3batch serve` on the folder store runs a handler that fails for keys
containing "bad": those files land in the error bucket with an error record beside them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
import uvicorn
from tests.conftest import free_port
from tests.integration.conftest import FIXTURE_HANDLERS, Env
from tests.integration.test_api_boto3 import KEY_A, KEY_B
from tests.integration.test_dashboard import log_in, screenshot, wait_until
from tests.integration.test_dashboard_charts import shots_dir

from s3batch.api import json_api, openapi, pipelines
from s3batch.api.app import create_app
from s3batch.api.auth import AccessKey, KeyRing
from s3batch.api.pipelines import load_hosted
from s3batch.pipelines.runner import ERROR_SUFFIX
from s3batch.settings import Settings
from s3batch.storage.base import ObjectStore
from s3batch.storage.config import open_store

pytestmark = pytest.mark.integration

#: Seconds a test waits for the server or the pipeline before failing.
WAIT_S = 30.0
POLL_S = 0.05
HTTP_TIMEOUT_S = 10.0
GOOD, BAD = ("in/good.txt",), ("in/bad one.txt", "in/bad-two.txt")


@pytest.fixture(autouse=True)
def handlers_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FIXTURE_HANDLERS))
    monkeypatch.setenv("PYTHONPATH", str(FIXTURE_HANDLERS))


def _wait(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)


@contextlib.contextmanager
def serving(env: Env, tmp_path: Path) -> Iterator[str]:
    """A server hosting pipeline "p" (KEY_A is its operator, KEY_B is not); yields its URL."""
    for bucket in ("staging", "archive", "errors"):
        env.make_bucket(bucket)
    path = tmp_path / "p.toml"
    path.write_text(
        'name = "p"\nsource = "staging"\nfunction = "pipeline_handlers:check"\non_success = "archive"\n'
        'archive = "archive"\nerror = "errors"\nmax_attempts = 1\npoll_interval_s = 0.2\n',
        encoding="utf-8",
    )
    app = create_app(
        Settings(home=env.home),
        keys=KeyRing([KEY_A, KEY_B]),
        storage=env.storage,
        hosted=load_hosted([path]),
        operators=[KEY_A.access_key],
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http="h11", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        _wait(lambda: server.started or not thread.is_alive(), "server start")
        assert server.started
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(WAIT_S)
    assert not thread.is_alive(), "uvicorn did not stop"


def client(url: str, key: AccessKey) -> httpx.Client:
    auth = {"Authorization": f"Bearer {key.access_key}:{key.secret_key}"}
    return httpx.Client(base_url=url, headers=auth, timeout=HTTP_TIMEOUT_S)


def _files(http: httpx.Client) -> dict[str, int]:
    files: dict[str, int] = http.get("/api/v1/pipelines/p").json()["files"]
    return files


def _processed(env: Env, http: httpx.Client) -> None:
    for key in GOOD + BAD:
        env.put("staging", key, b"x")
    _wait(lambda: _files(http) == {"archived": 1, "errored": 2}, "the pipeline to process the files")


def test_timeline_failures_and_operator_replay(local_env: Env, tmp_path: Path) -> None:
    with serving(local_env, tmp_path) as url, client(url, KEY_A) as operator, client(url, KEY_B) as other:
        _processed(local_env, operator)
        timeline = operator.get("/api/v1/pipelines/p/timeline", params={"bucket_s": 60}).json()
        totals: dict[str, int] = {}
        for bucket in timeline["buckets"]:
            assert bucket["at"] % 60 == 0
            for state, n in bucket["counts"].items():
                totals[state] = totals.get(state, 0) + n
        assert totals == {"archived": 1, "errored": 2}

        failures = operator.get("/api/v1/pipelines/p/failures").json()
        assert failures["error_bucket"] == "errors"
        assert sorted(f["key"] for f in failures["failures"]) == sorted(BAD)
        for failure in failures["failures"]:
            assert failure["error_code"] == "ValueError" and failure["attempts"] == 1
            assert failure["record"]["code"] == "ValueError"  # the record beside it in the error bucket
            assert failure["message"] and failure["withheld"] is None

        # Another key sees that files failed and how, but not their messages or error records.
        seen = other.get("/api/v1/pipelines/p/failures").json()["failures"]
        assert sorted(f["key"] for f in seen) == sorted(BAD)
        for failure in seen:
            assert (failure["error_code"], failure["attempts"], failure["http_status"]) == (
                "ValueError",
                1,
                next(f["http_status"] for f in failures["failures"] if f["key"] == failure["key"]),
            )
            assert failure["updated"] > 0
            assert failure["record"] is None and failure["message"] is None
            assert "operators" in failure["withheld"]

        # A huge object where the error record goes is neither read whole nor sent.
        local_env.put("errors", "in/bad-two.txt.error.json", b"[" * (pipelines.MAX_ERROR_RECORD_BYTES * 4))
        records = {
            f["key"]: f["record"] for f in operator.get("/api/v1/pipelines/p/failures").json()["failures"]
        }
        assert records["in/bad-two.txt"] == {
            "truncated": True,
            "larger_than_bytes": pipelines.MAX_ERROR_RECORD_BYTES,
        }
        assert records["in/bad one.txt"]["code"] == "ValueError"

        refused = other.post("/api/v1/pipelines/p/replay", json={})
        assert refused.status_code == 403 and refused.json()["code"] == "AccessDenied"
        assert all(local_env.get("errors", key) == b"x" for key in BAD)  # nothing moved

        with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT_S) as browser:
            form = {"access_key": KEY_A.access_key, "secret_key": KEY_A.secret_key}
            assert browser.post("/api/v1/session", json=form).status_code == 201
            forged = browser.post("/api/v1/pipelines/p/replay", json={})  # cookie only: a forgery
            assert forged.status_code == 403 and forged.json()["code"] == "AccessDenied"
            assert all(local_env.get("errors", key) == b"x" for key in BAD)
            done = browser.post(
                "/api/v1/pipelines/p/replay", json={"prefix": "in/bad "}, headers={json_api.CSRF_HEADER: "1"}
            )
        assert done.status_code == 202 and done.json() == {"replayed": 1, "more": False}
        # The replayed file ran again (and failed again: the handler still refuses it).
        _wait(lambda: local_env.get("errors", "in/bad one.txt") == b"x", "the replayed file to fail again")
        recent = operator.get("/api/v1/pipelines/p/failures").json()["failures"]
        again = {f["key"]: f["attempts"] for f in recent}
        assert again["in/bad one.txt"] == 1 and local_env.get("errors", "in/bad-two.txt") == b"x"
        assert operator.get("/api/v1/pipelines/nope/failures").status_code == 404


class CountingStore:
    """A store that counts the bytes an error-record read takes and refuses whole-body reads."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.read = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def get_bytes(self, bucket: str, key: str, version_id: str | None = None) -> bytes:
        raise AssertionError(f"read all of {bucket}/{key}")

    async def iter_bytes(self, bucket: str, key: str, **kwargs: Any) -> AsyncIterator[bytes]:
        async for chunk in self.store.iter_bytes(bucket, key, **kwargs):
            self.read += len(chunk)
            yield chunk


async def test_an_error_record_is_read_no_further_than_its_limit(env: Env) -> None:
    env.make_bucket("errors")
    limit = pipelines.MAX_ERROR_RECORD_BYTES
    assert openapi._MAX_ERROR_RECORD_BYTES == limit  # the OpenAPI description says this limit
    env.put("errors", "huge" + ERROR_SUFFIX, b" " * (limit * 8))
    env.put("errors", "at-limit" + ERROR_SUFFIX, b'"' + b"y" * (limit - 2) + b'"')
    env.put("errors", "text" + ERROR_SUFFIX, b"not json")
    store = CountingStore(open_store(env.storage))
    pipeline = cast(pipelines.Pipeline, SimpleNamespace(cfg=SimpleNamespace(error="errors"), store=store))
    try:
        assert await pipelines._error_record(pipeline, "huge") == {
            "truncated": True,
            "larger_than_bytes": limit,
        }
        assert store.read <= limit + 1
        assert await pipelines._error_record(pipeline, "at-limit") == "y" * (limit - 2)
        assert await pipelines._error_record(pipeline, "text") == {"text": "not json"}
        assert await pipelines._error_record(pipeline, "missing") is None
    finally:
        await store.store.close()


def test_pipelines_page_in_chromium(local_env: Env, tmp_path: Path, browser: Any) -> None:
    with serving(local_env, tmp_path) as url, client(url, KEY_A) as operator:
        _processed(local_env, operator)
        browser.get(url + "/")
        log_in(browser)
        browser.get(url + "/#/pipelines")
        wait_until(browser, lambda d: d.find_elements("css selector", 'tr[data-pipeline="p"]'), "listed")
        browser.find_element("link text", "p").click()
        chart = browser.find_element("id", "pipeline-chart")
        wait_until(browser, lambda d: int(chart.get_attribute("data-buckets") or 0) >= 1, "chart drawn")
        assert chart.find_elements("css selector", 'rect[data-state="errored"]')
        assert chart.find_elements("css selector", 'rect[data-state="archived"]')
        body = browser.find_element("id", "pipeline-failures-body")
        wait_until(browser, lambda d: len(body.find_elements("css selector", "tr")) == 2, "two failures")
        assert "ValueError" in body.text and "bad-two.txt" in body.text
        screenshot(browser, shots_dir(tmp_path) / "pipelines-page.png")
        browser.find_element("id", "replay").click()
        result = browser.find_element("id", "replay-result")
        wait_until(browser, lambda d: result.text.startswith("Replayed 2 object"), "replayed")
        _wait(lambda: all(local_env.get("errors", key) == b"x" for key in BAD), "replayed files failed again")

        browser.get(url + "/#/")
        browser.find_element("id", "logout").click()
        log_in(browser, KEY_B)
        browser.get(url + "/#/pipelines/p")
        wait_until(browser, lambda d: d.find_element("id", "pipeline-name").text == "p", "page for KEY_B")
        body = browser.find_element("id", "pipeline-failures-body")
        wait_until(browser, lambda d: "operators only" in body.text, "records withheld from KEY_B")
        assert "ValueError" in body.text
        browser.find_element("id", "replay").click()
        wait_until(browser, lambda d: "AccessDenied" in d.find_element("id", "notice").text, "refused")


#: Milliseconds the page's /pipelines request is held back in the browser, and the page's poll
#: interval (app.js PIPELINE_POLL_MS) in seconds.
SLOW_PIPELINES_MS = 1000
PIPELINE_POLL_S = 3.0
#: Wraps the page's fetch: counts /pipelines requests and answers them SLOW_PIPELINES_MS late.
SLOW_PIPELINES_JS = """
const delay = arguments[0];
const original = window.fetch;
window.pipelinesAsked = 0;
window.pipelinesAnswered = 0;
window.fetch = (input, init) => {
  const answer = original(input, init);
  if (!String(input).endsWith("/api/v1/pipelines")) return answer;
  window.pipelinesAsked += 1;
  return answer.then((r) => new Promise((resolve) => setTimeout(() => {
    window.pipelinesAnswered += 1;
    resolve(r);
  }, delay)));
};
"""


def test_leaving_the_pipelines_page_mid_request_stops_its_poll(
    local_env: Env, tmp_path: Path, browser: Any
) -> None:
    with serving(local_env, tmp_path) as url:
        browser.get(url + "/")
        log_in(browser)
        browser.execute_script(SLOW_PIPELINES_JS, SLOW_PIPELINES_MS)
        # The list's request is still in flight when the reader opens a job.
        browser.execute_script(
            'location.hash = "#/pipelines"; setTimeout(() => location.hash = "#/jobs/j-1", 0);'
        )
        wait_until(browser, lambda d: d.execute_script("return window.pipelinesAnswered") == 1, "answered")
        time.sleep(PIPELINE_POLL_S + 1)  # a poll re-armed by that late answer would have fired by now
        assert browser.find_element("id", "job-view").is_displayed()
        assert not browser.find_element("id", "pipelines-view").is_displayed()
        assert browser.find_element("id", "job-id").text == "j-1"
        assert browser.execute_script("return window.pipelinesAsked") == 1
