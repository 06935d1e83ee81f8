"""Which asyncio event loop s3batch's own entry points run on.

uvloop (libuv, in C) when it is installed: on a copy job it cut the client's CPU per object by
~10-15 % against the standard selector loop (the loop's own callbacks, transports and timers
are a visible share of a lean S3 request). S3BATCH_EVENT_LOOP=asyncio keeps the standard loop.
Library users who run s3batch coroutines on their own loop are unaffected.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

#: "uvloop" (the default, when importable) or "asyncio".
EVENT_LOOP_ENV = "S3BATCH_EVENT_LOOP"

_T = TypeVar("_T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's default loop."""
    if os.environ.get(EVENT_LOOP_ENV, "uvloop") == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    """asyncio.run on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(coro)
