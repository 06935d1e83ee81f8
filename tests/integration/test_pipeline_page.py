"""The pipelines page and its API: files by state over time, recent failures with their error
record, and the replay action (operator only, CSRF-protected), over HTTP and in headless Chromium.

A pipeline hosted by `s3batch serve` on the folder store runs a handler that fails for keys
containing "bad": those files land in the error bucket with an error record beside them.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from tests.conftest import free_port
from tests.integration.conftest import FIXTURE_HANDLERS, Env
from tests.integration.test_api_boto3 import KEY_A, KEY_B
from tests.integration.test_dashboard import log_in, screenshot, wait_until
from tests.integration.test_dashboard_charts import shots_dir

from s3batch.api import json_api
from s3batch.api.app import create_app
from s3batch.api.auth import AccessKey, KeyRing
from s3batch.api.pipelines import load_hosted
from s3batch.settings import Settings

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
        browser.find_element("id", "replay").click()
        wait_until(browser, lambda d: "AccessDenied" in d.find_element("id", "notice").text, "refused")
