"""Webhook channel: the notice's payload as a JSON POST (stdlib urllib, in a worker thread).

2xx is delivered. 408, 429 and 5xx, a refused connection or a timeout may pass on a later
attempt; any other status (other 4xx, and 3xx: redirects are not followed, since a POST would
turn into a GET) is a permanent failure. A numeric Retry-After on 429/503 sets the next wait.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from s3batch.pipelines.notify.base import MAX_BACKOFF_S, DeliveryError, Notice, WebhookSettings

USER_AGENT = "s3batch-notify/1"
#: Statuses worth another attempt besides 5xx: Request Timeout, Too Many Requests.
RETRYABLE_4XX = frozenset({408, 429})
#: Bytes of an error answer quoted in the recorded failure.
ERROR_BODY_CHARS = 200


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status


def _label(url: str) -> str:
    """The URL without user info or query string, which may hold secrets."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return min(float(value), MAX_BACKOFF_S) if value is not None else None
    except ValueError:
        return None  # an HTTP date: keep our own backoff


class WebhookChannel:
    def __init__(self, settings: WebhookSettings, timeout_s: float) -> None:
        self.url = settings.url
        self.label = _label(settings.url)
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(_NoRedirects())

    async def send(self, notice: Notice) -> None:
        body = json.dumps(notice.payload, ensure_ascii=False).encode()
        await asyncio.to_thread(self._post, body)

    def _post(self, body: bytes) -> None:
        request = urllib.request.Request(
            self.url, data=body, method="POST",
            headers={"Content-Type": "application/json", "User-Agent": USER_AGENT},
        )  # fmt: skip
        try:
            with self._opener.open(request, timeout=self.timeout_s) as answer:
                answer.read()
        except urllib.error.HTTPError as exc:
            raise _status_error(exc) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"{type(exc).__name__}: {reason}", permanent=False) from None


def _status_error(exc: urllib.error.HTTPError) -> DeliveryError:
    try:
        text = exc.read(ERROR_BODY_CHARS).decode("utf-8", "replace")
    except OSError:
        text = ""
    message = f"HTTP {exc.code}" + (f": {text}" if text else "")
    retryable = exc.code >= 500 or exc.code in RETRYABLE_4XX
    return DeliveryError(message, permanent=not retryable, retry_after_s=_retry_after(exc.headers))
