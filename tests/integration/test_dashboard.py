"""The web dashboard end to end in headless Chromium (Debian's `chromium` + `chromium-driver`,
installed by scripts/install-browser; never a downloaded browser), driven by selenium.

Jobs are created over the S3 Control API; the test logs in through the page, sees the jobs
listed with their status, opens one, reads its counts, failures and report location, cancels
and re-prioritises a Suspended job from its page, and screenshots each page into tmp_path,
checking the PNGs are not blank with a small PNG decoder (no imaging library needed).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.integration.conftest import Env
from tests.integration.test_api_boto3 import KEY_A, Server, create, serving
from tests.integration.test_json_api import bearer, wait_status

from s3batch.api.auth import AccessKey

pytestmark = pytest.mark.integration

#: Seconds to wait for the page to show something (the job runner and the live updates).
UI_TIMEOUT_S = 30.0
#: A screenshot with fewer distinct colours than this is taken to be blank.
MIN_DISTINCT_COLOURS = 8


@pytest.fixture
def server(local_env: Env) -> Iterator[Server]:
    with serving(local_env) as running:
        yield running


def wait_until(driver: Any, condition: Callable[[Any], Any], what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, UI_TIMEOUT_S).until(condition, message=what)


def text_is(element_id: str, expected: str) -> Callable[[Any], bool]:
    def check(driver: Any) -> bool:
        return bool(driver.find_element("id", element_id).text == expected)

    return check


def job_row_status(job_id: str) -> Callable[[Any], str | None]:
    def check(driver: Any) -> str | None:
        rows = driver.find_elements("css selector", f'tr[data-job-id="{job_id}"] td.status')
        return str(rows[0].text) if rows else None

    return check


def test_dashboard_lists_shows_and_cancels_jobs(
    server: Server, local_env: Env, browser: Any, tmp_path: Path
) -> None:
    local_env.make_bucket("data")
    local_env.make_bucket("reports")
    local_env.put("data", "a.txt", b"a")
    manifest = local_env.manifest("data", [("data", "a.txt"), ("data", "missing.txt")])
    finished = create(server.client(), manifest, Description="finished job")
    suspended = create(server.client(), manifest, ConfirmationRequired=True)
    with httpx.Client(base_url=server.url, headers=bearer(KEY_A)) as http:
        wait_status(http, finished, "Complete")
        wait_status(http, suspended, "Suspended")

    browser.get(server.url + "/")
    log_in(browser)
    wait_until(browser, lambda d: job_row_status(finished)(d) == "Complete", "finished job listed")
    wait_until(browser, lambda d: job_row_status(suspended)(d) == "Suspended", "suspended job listed")
    assert "finished job" in browser.find_element("id", "jobs-body").text
    screenshot(browser, tmp_path / "jobs.png")

    browser.find_element("link text", "finished job").click()
    wait_until(browser, text_is("job-status", "Complete"), "job page shows Complete")
    wait_until(browser, lambda d: "missing.txt" in d.find_element("id", "failures-body").text, "failures")
    assert browser.find_element("id", "job-failed").text == "1"
    assert browser.find_element("id", "job-succeeded").text == "1"
    assert browser.find_element("id", "job-report").text.startswith("s3://reports/")
    assert not browser.find_element("id", "cancel").is_enabled()
    screenshot(browser, tmp_path / "job-complete.png")

    browser.get(f"{server.url}/#/jobs/{suspended}")
    wait_until(browser, text_is("job-status", "Suspended"), "job page shows Suspended")
    priority = browser.find_element("id", "priority-input")
    priority.clear()
    priority.send_keys("77")
    browser.find_element("id", "priority-submit").click()
    wait_until(browser, text_is("job-priority", "77"), "priority changed")
    browser.find_element("id", "cancel").click()
    wait_until(browser, text_is("job-status", "Cancelled"), "job cancelled")
    screenshot(browser, tmp_path / "job-cancelled.png")
    assert_no_page_errors(browser)


def log_in(driver: Any, key: AccessKey = KEY_A) -> None:
    wait_until(driver, lambda d: d.find_element("id", "login-view").is_displayed(), "login form")
    driver.find_element("id", "access-key").clear()  # the page keeps the last key typed
    driver.find_element("id", "access-key").send_keys(key.access_key)
    driver.find_element("id", "secret-key").send_keys(key.secret_key)
    driver.find_element("id", "login-submit").click()
    wait_until(driver, lambda d: d.find_element("id", "list-view").is_displayed(), "job list after login")
    assert key.account_id in driver.find_element("id", "whoami").text


def assert_no_page_errors(driver: Any) -> None:
    """No script errors; the one expected failure is the 401 of the first /session probe."""
    severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert [m for m in severe if "401" not in m] == []


# -- screenshots --------------------------------------------------------------------------------


def screenshot(driver: Any, path: Path) -> None:
    assert driver.save_screenshot(str(path)), f"could not save {path}"
    colours = distinct_colours(path.read_bytes())
    assert colours >= MIN_DISTINCT_COLOURS, f"{path} looks blank ({colours} colours)"


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Bytes per pixel of 8-bit PNG colour types: grey, RGB, grey+alpha, RGBA.
BYTES_PER_PIXEL = {0: 1, 2: 3, 4: 2, 6: 4}


def distinct_colours(png: bytes) -> int:
    """How many different pixel values an 8-bit, non-interlaced PNG holds (what Chromium writes)."""
    assert png.startswith(PNG_SIGNATURE), "not a PNG"
    chunks = png_chunks(png)
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", chunks[b"IHDR"][0])
    assert depth == 8 and interlace == 0 and colour_type in BYTES_PER_PIXEL, "unexpected PNG format"
    bpp = BYTES_PER_PIXEL[colour_type]
    raw = zlib.decompress(b"".join(chunks[b"IDAT"]))
    stride = width * bpp
    seen: set[bytes] = set()
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        row = unfilter(raw[start], bytearray(raw[start + 1 : start + 1 + stride]), previous, bpp)
        seen.update(bytes(row[x : x + bpp]) for x in range(0, stride, bpp))
        previous = row
    return len(seen)


def png_chunks(png: bytes) -> dict[bytes, list[bytes]]:
    chunks: dict[bytes, list[bytes]] = {}
    offset = len(PNG_SIGNATURE)
    while offset < len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        chunks.setdefault(kind, []).append(png[offset + 8 : offset + 8 + length])
        offset += 12 + length  # length, type, data, CRC
    return chunks


def unfilter(kind: int, row: bytearray, previous: bytearray, bpp: int) -> bytearray:
    """Undo one scanline's PNG filter (RFC 2083 §6)."""
    for i in range(len(row)):
        left = row[i - bpp] if i >= bpp else 0
        up = previous[i]
        up_left = previous[i - bpp] if i >= bpp else 0
        if kind == 1:
            row[i] = (row[i] + left) & 0xFF
        elif kind == 2:
            row[i] = (row[i] + up) & 0xFF
        elif kind == 3:
            row[i] = (row[i] + (left + up) // 2) & 0xFF
        elif kind == 4:
            row[i] = (row[i] + paeth(left, up, up_left)) & 0xFF
    return row


def paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c
