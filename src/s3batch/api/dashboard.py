"""The web dashboard: static HTML, CSS and vanilla JS (no build step, nothing from a CDN).

`/` serves index.html, `/static/...` the rest. The page talks only to the JSON API
(api/json_api.py) with the session cookie; a strict Content-Security-Policy forbids inline
scripts and any other origin, so the page runs exactly the files shipped here.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


async def index(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=SECURITY_HEADERS)


ROUTES: list[BaseRoute] = [
    Route("/", index, methods=["GET"]),
    Mount(STATIC_PREFIX, app=StaticFiles(directory=STATIC_DIR), name="static"),
]
