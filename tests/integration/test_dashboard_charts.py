"""The job page's charts, cause filter and downloads in headless Chromium: the timeline has
points after a job ran, clicking a cause narrows the failures table, the download links return
the report files' exact bytes, and another account's key sees nothing of the job.

Set DOCS_SCREENSHOTS=DIR to keep the screenshots (scripts/screenshots writes docs/screenshots).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.conftest import Env
from tests.integration.test_api_boto3 import KEY_A, KEY_B, Server, create, serving
from tests.integration.test_dashboard import (
    assert_no_page_errors,
    log_in,
    screenshot,
    text_is,
    wait_until,
)
from tests.integration.test_json_api import bearer, wait_status

pytestmark = pytest.mark.integration

#: Objects that exist, that are missing (NoSuchKey), and in a bucket that does not exist.
PRESENT, MISSING, NO_BUCKET = 6, 3, 1
#: JavaScript that fetches a link with the page's session cookie and returns the body.
FETCH_TEXT = """
const done = arguments[arguments.length - 1];
fetch(arguments[0], {credentials: "same-origin"}).then((r) => r.text()).then(done, (e) => done("ERROR " + e));
"""


@pytest.fixture
def server(local_env: Env) -> Iterator[Server]:
    with serving(local_env) as running:
        yield running


def shots_dir(tmp_path: Path) -> Path:
    kept = os.environ.get("DOCS_SCREENSHOTS")
    return Path(kept) if kept else tmp_path


def _mixed_job(server: Server, env: Env) -> str:
    env.make_bucket("data")
    env.make_bucket("reports")
    for n in range(PRESENT):
        env.put("data", f"photos/ok-{n}.jpg", b"x")
    entries = [("data", f"photos/ok-{n}.jpg") for n in range(PRESENT)]
    entries += [("data", f"photos/gone-{n}.jpg") for n in range(MISSING)] + [("nobucket", "k.jpg")]
    job_id = create(server.client(), env.manifest("data", entries), Description="Retag the photo library")
    with httpx.Client(base_url=server.url, headers=bearer(KEY_A)) as http:
        wait_status(http, job_id, "Complete")
    return job_id


def _failure_keys(driver: Any) -> list[str]:
    """The failures table's keys, read in one script (the table may be redrawn meanwhile)."""
    script = "return [...document.querySelectorAll('#failures-body td.key')].map((td) => td.textContent);"
    return list(driver.execute_script(script))


def test_job_page_charts_filter_and_downloads(
    server: Server, local_env: Env, browser: Any, tmp_path: Path
) -> None:
    job_id = _mixed_job(server, local_env)
    browser.get(server.url + "/")
    log_in(browser)
    browser.get(f"{server.url}/#/jobs/{job_id}")
    wait_until(browser, text_is("job-status", "Complete"), "job page shows Complete")
    assert browser.find_element("id", "job-title").text == "Retag the photo library"
    assert browser.find_element("id", "job-id").text == job_id

    chart = browser.find_element("id", "timeline-chart")
    wait_until(browser, lambda d: int(chart.get_attribute("data-points") or 0) >= 1, "timeline points")
    assert chart.find_elements("css selector", "path.series.ok"), "the succeeded/s line is drawn"

    causes = browser.find_element("id", "causes-chart")
    wait_until(browser, lambda d: causes.get_attribute("data-causes") == "2", "two failure causes")
    wait_until(browser, lambda d: len(_failure_keys(d)) == MISSING + NO_BUCKET, "all failures listed")
    bars = causes.find_elements("css selector", "g.cause")
    assert bars[0].get_attribute("data-error-code") == "NoSuchKey"  # the most frequent first
    bars[0].click()
    wait_until(browser, lambda d: len(_failure_keys(d)) == MISSING, "table narrowed to NoSuchKey")
    assert all("gone-" in key for key in _failure_keys(browser))
    assert browser.find_element("id", "cause-filter").is_displayed()
    screenshot(browser, shots_dir(tmp_path) / "job-page.png")
    browser.find_element("id", "clear-cause").click()
    wait_until(browser, lambda d: len(_failure_keys(d)) == MISSING + NO_BUCKET, "filter cleared")

    location = browser.find_element("id", "job-report").text
    bucket, _, key = location.removeprefix("s3://").partition("/")
    manifest = (local_env.root / bucket / key).read_text()
    href = browser.find_element("id", "download-manifest").get_attribute("href")
    assert browser.execute_async_script(FETCH_TEXT, href) == manifest

    results = {e["TaskExecutionStatus"]: e["Key"] for e in json.loads(manifest)["Results"]}
    for status in ("succeeded", "failed"):
        href = browser.find_element("id", f"download-{status}").get_attribute("href")
        body = browser.execute_async_script(FETCH_TEXT, href)
        assert body == (local_env.root / bucket / results[status]).read_text()
    assert_no_page_errors(browser)


def test_another_accounts_key_sees_nothing_of_the_job(server: Server, local_env: Env, browser: Any) -> None:
    job_id = _mixed_job(server, local_env)
    browser.get(server.url + "/")
    log_in(browser, KEY_B)
    browser.get(f"{server.url}/#/jobs/{job_id}")
    wait_until(browser, lambda d: "NotFoundException" in d.find_element("id", "notice").text, "not found")
    assert browser.find_element("id", "job-title").text in ("", "Job")
    assert browser.find_elements("css selector", "#failures-body tr") == []
    href = f"{server.url}/api/v1/jobs/{job_id}/report/failed.csv"
    assert "NotFoundException" in browser.execute_async_script(FETCH_TEXT, href)
