"""Secrets out of the access log: query values of sensitive parameters become REDACTED.

uvicorn's access log line carries the request target with its query string, and some callers
must put a secret there: a webhook sender that can only call a URL (`?token=` of a hosted
pipeline), a presigned request (`X-Amz-Signature`, `X-Amz-Credential`,
`X-Amz-Security-Token`). A parameter counts as sensitive when its name contains one of
SENSITIVE_WORDS, whatever its case; its value is replaced, the name stays (so the log still
shows which way a caller authenticated).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

#: The logger uvicorn writes one line per request to.
ACCESS_LOGGER = "uvicorn.access"
#: Parameter names containing any of these (case-insensitive) have their values redacted.
SENSITIVE_WORDS = ("token", "secret", "signature", "credential", "password", "auth")
REDACTED = "REDACTED"
#: Position of the request target in uvicorn's access-log arguments
#: (client, method, target, HTTP version, status).
_TARGET_ARG = 2
_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;#]*)=(?P<value>[^&;#]*)")


def redact_target(target: str) -> str:
    """`target` (path?query) with the values of sensitive query parameters replaced."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    return path + _PARAM.sub(_redact_param, "?" + query)


def _redact_param(match: re.Match[str]) -> str:
    name = unquote_plus(match["name"]).lower()
    if any(word in name for word in SENSITIVE_WORDS):
        return f"{match['lead']}{match['name']}={REDACTED}"
    return match.group(0)


class RedactQuerySecrets(logging.Filter):
    """Rewrites the request target of uvicorn access-log records (never drops a record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) > _TARGET_ARG:
            target = args[_TARGET_ARG]
            if isinstance(target, str):
                record.args = (*args[:_TARGET_ARG], redact_target(target), *args[_TARGET_ARG + 1 :])
        return True


def redact_access_log() -> None:
    """Install the filter on uvicorn's access logger (once; later calls do nothing).

    On the logger, not on a handler: whatever handlers a logging configuration gives it later,
    no record reaches them unredacted."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactQuerySecrets) for f in logger.filters):
        logger.addFilter(RedactQuerySecrets())
