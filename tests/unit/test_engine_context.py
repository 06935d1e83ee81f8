"""The eager task start keeps one Context across a coroutine's first step and the rest.

aiobotocore sets a ContextVar before its first await and resets it after; if the two halves
ran in different Contexts, `reset` raised "Token was created in a different Context" and every
such request failed and was retried (seen as ~13 % failed CopyObject attempts in bench_peers).
"""

from __future__ import annotations

import asyncio
import contextvars

from s3batch.engines.local import _start_eagerly

_current: contextvars.ContextVar[str] = contextvars.ContextVar("current", default="")


async def like_aiobotocore(name: str) -> list[str]:
    token = _current.set(name)
    try:
        await asyncio.sleep(0)  # suspends: the rest runs inside the Task
        return [_current.get()]
    finally:
        _current.reset(token)  # raises ValueError if the Context changed


async def test_set_before_the_first_await_and_reset_after_works() -> None:
    started = [_start_eagerly(like_aiobotocore(f"req-{i}")) for i in range(20)]
    results = [await s if isinstance(s, asyncio.Task) else s for s in started]
    assert results == [[f"req-{i}"] for i in range(20)]
    assert _current.get() == ""  # nothing leaked into the caller's Context
