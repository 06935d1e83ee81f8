"""How the shared aiobotocore client is configured (storage/s3/client.py::_open_client)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiobotocore.session import AioSession
from botocore.credentials import RefreshableCredentials
from botocore.session import Session

from s3batch.storage.config import S3Config
from s3batch.storage.s3 import client as s3_client
from s3batch.storage.s3.credentials import REFRESH_MARGIN_S, SharedKeys, aio_credentials

#: How long the slow refresh takes, and how many requests wait for it.
REFRESH_DELAY_S = 1.0
WAITING_REQUESTS = 32


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


def test_sessions_get_the_same_handlers_as_a_fresh_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sessions start from a copy of one process-wide emitter instead of registering
    botocore's built-in handlers again (~3.5 ms each): the copy must hold the same handlers,
    and what one session registers must not leak into the next."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    cfg = S3Config(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    for make, fresh_session in ((s3_client._aio_session, AioSession), (s3_client._session, Session)):
        fresh = _handler_names(fresh_session()._original_handler)
        first = make(cfg.profile)
        assert _handler_names(first._original_handler) == fresh
        assert len(fresh) > 50  # botocore's built-ins really are there
        first.register("before-call.s3.HeadObject", _probe_handler)
        second = make(cfg.profile)
        assert _handler_names(second._original_handler) == fresh


def _probe_handler(**kwargs: Any) -> None:
    return None


def test_loading_the_s3_adapter_and_the_commands_leaves_aiohttp_unloaded() -> None:
    """aiobotocore and aiohttp (~0.2 s to import, most of it building TLS contexts) load with the
    aiobotocore client, on first use: not with the modules every job imports."""
    code = (
        "import sys, s3batch.storage.s3, s3batch.cli, s3batch.cli.transfer, s3batch.cli.jobs, "
        "s3batch.operations.transfer, s3batch.engines.local; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'aiobotocore')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_the_aiobotocore_client_signs_with_the_credentials_resolved_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The chain is resolved once, when the shared client opens; the aiobotocore client built
    later signs with those keys rather than resolving them again (a second STS call or MFA
    prompt for an assumed role)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "first")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s1")
    cfg = S3Config(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    shared = await s3_client._open_client(cfg, (cfg, asyncio.get_running_loop()))
    try:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "second")  # a second resolution would see this
        client = await shared.botocore()
        frozen = await client._request_signer._credentials.get_frozen_credentials()
        assert (frozen.access_key, frozen.secret_key) == ("first", "s1")
        assert shared.lean is not None
        assert (await shared.lean._credentials()).access_key == "first"
    finally:
        await shared.aclose()


def _expiring(
    refreshes: list[str], seconds_left: float = 60.0, delay_s: float = 0.0
) -> RefreshableCredentials:
    """Temporary credentials `seconds_left` from expiry; each refresh (taking `delay_s`) hands
    out new keys for an hour and records the thread it ran on."""

    def refresh() -> dict[str, str]:
        time.sleep(delay_s)
        refreshes.append(threading.current_thread().name)
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        return {"access_key": f"k{len(refreshes)}", "secret_key": "s", "token": "t", "expiry_time": later}

    soon = (datetime.now(UTC) + timedelta(seconds=seconds_left)).isoformat()
    metadata = {"access_key": "k0", "secret_key": "s", "token": "t", "expiry_time": soon}
    return RefreshableCredentials.create_from_metadata(metadata, refresh, "assume-role")


async def test_temporary_credentials_refresh_once_off_the_loop_for_both_paths() -> None:
    refreshes: list[str] = []
    keys = SharedKeys(_expiring(refreshes))
    lean = await s3_client._lean_client(keys, "us-east-1")
    aio = aio_credentials(keys)
    assert (await lean._credentials()).access_key == "k1"
    assert (await aio.get_frozen_credentials()).access_key == "k1"  # the same refresh
    assert len(refreshes) == 1
    assert refreshes[0] != threading.main_thread().name  # the loop's thread never blocks on it
    with pytest.raises(NotImplementedError):
        _ = aio.access_key  # a key read past get_frozen_credentials could be stale


async def test_requests_waiting_for_a_refresh_hold_no_thread() -> None:
    """Many requests meet credentials due for refresh at once: one refresh runs, in one thread;
    the others wait on the loop, so the default executor stays free for everything else."""
    refreshes: list[str] = []
    keys = SharedKeys(_expiring(refreshes, delay_s=REFRESH_DELAY_S))
    waiting = [asyncio.create_task(keys.frozen()) for _ in range(WAITING_REQUESTS)]
    await asyncio.sleep(0.05)  # all of them are waiting now
    started = time.monotonic()
    await asyncio.to_thread(lambda: None)  # unrelated work for a worker thread
    assert time.monotonic() - started < REFRESH_DELAY_S / 2
    assert {f.access_key for f in await asyncio.gather(*waiting)} == {"k1"}
    assert len(refreshes) == 1


async def test_keys_near_the_refresh_point_are_read_off_the_loop() -> None:
    """Within REFRESH_MARGIN_S of botocore's refresh point a read could start the refresh (botocore
    checks the clock again): such reads go to a thread, even though no refresh is due yet."""
    advisory = RefreshableCredentials._advisory_refresh_timeout
    credentials = _expiring([], seconds_left=advisory + REFRESH_MARGIN_S / 2)
    readers: list[str] = []
    real = credentials.get_frozen_credentials

    def recording() -> Any:
        readers.append(threading.current_thread().name)
        return real()

    credentials.get_frozen_credentials = recording  # type: ignore[method-assign]
    assert not credentials.refresh_needed()  # botocore would not refresh yet
    assert (await SharedKeys(credentials).frozen()).access_key == "k0"
    assert readers and threading.main_thread().name not in readers


async def test_the_chain_resolves_in_the_configured_region(monkeypatch: pytest.MonkeyPatch) -> None:
    """Assumed roles and web identities call STS in the config's region, as they did when
    aiobotocore's client resolved the chain."""
    regions: list[str | None] = []
    real = s3_client.create_credential_resolver

    def recording(session: Any, cache: Any = None, region_name: str | None = None) -> Any:
        regions.append(region_name)
        return real(session, cache, region_name)

    monkeypatch.setattr(s3_client, "create_credential_resolver", recording)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    cfg = S3Config(endpoint_url="http://127.0.0.1:9", region="eu-west-3", lean_path=False)
    shared = await s3_client._open_client(cfg, (cfg, asyncio.get_running_loop()))
    await shared.aclose()
    assert regions == ["eu-west-3"]


async def test_no_credentials_are_looked_for_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without credentials (anonymous access) the aiobotocore client does not walk the chain
    again (off EC2, its metadata-service probe alone can take seconds)."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    from aiobotocore.credentials import AioCredentialResolver

    async def refused(self: Any) -> Any:
        raise AssertionError("aiobotocore resolved the chain again")

    monkeypatch.setattr(AioCredentialResolver, "load_credentials", refused)
    cfg = S3Config(endpoint_url="http://127.0.0.1:9", region="us-east-1")
    shared = await s3_client._open_client(cfg, (cfg, asyncio.get_running_loop()))
    try:
        assert shared.keys is None and shared.lean is None
        client = await shared.botocore()
        assert client._request_signer._credentials is None
    finally:
        await shared.aclose()
