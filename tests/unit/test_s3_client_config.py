"""How the shared aiobotocore client is configured (storage/s3/client.py::_open_client)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiobotocore.session import AioSession

from s3batch.storage.config import S3Config
from s3batch.storage.s3 import client as s3_client


@pytest.mark.parametrize(
    ("endpoint", "verified"), [("http://127.0.0.1:9", False), ("https://s3.example", True)]
)
async def test_certificates_are_loaded_only_for_tls_endpoints(
    endpoint: str, verified: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    cfg = S3Config(endpoint_url=endpoint, region="us-east-1", lean_path=False)
    shared = await s3_client._open_client(cfg, (cfg, asyncio.get_running_loop()))
    try:
        # Loading the CA bundle costs ~17 ms per client; plain HTTP has no use for it.
        # (verify is True or a CA bundle path when certificates are checked)
        assert ((await shared.botocore())._endpoint.http_session._verify is not False) is verified
    finally:
        await shared.aclose()


def _handler_names(emitter: Any) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Every (event-name path, handler names) of a botocore emitter's prefix trie."""
    found = []
    stack: list[tuple[tuple[str, ...], dict[str, Any]]] = [((), emitter._handlers._root)]
    while stack:
        path, node = stack.pop()
        values = node.get("values")
        if values is not None:
            handlers = [*values.first, *values.middle, *values.last]
            found.append((path, tuple(getattr(h, "__qualname__", type(h).__qualname__) for h in handlers)))
        stack.extend(((*path, name), child) for name, child in node.get("children", {}).items())
    return sorted(found)


async def test_sessions_get_the_same_handlers_as_a_fresh_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions start from a copy of one process-wide emitter instead of registering
    botocore's built-in handlers again (~3.5 ms each): the copy must hold the same handlers,
    and what one session registers must not leak into the next."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    cfg = S3Config(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    fresh = _handler_names(AioSession()._original_handler)
    first = await s3_client._open_client(cfg, (cfg, asyncio.get_running_loop()))
    try:
        assert _handler_names(first.session._original_handler) == fresh
        assert len(fresh) > 50  # botocore's built-ins really are there
        first.session.register("before-call.s3.HeadObject", _probe_handler)
        second = await s3_client._open_client(cfg, (cfg, asyncio.get_running_loop()))
        assert _handler_names(second.session._original_handler) == fresh
        await second.aclose()
    finally:
        await first.aclose()


def _probe_handler(**kwargs: Any) -> None:
    return None
