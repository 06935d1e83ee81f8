"""How the shared aiobotocore client is configured (storage/s3.py::_open_client)."""

from __future__ import annotations

import asyncio

import pytest

from s3batch.storage import s3
from s3batch.storage.config import S3Config


@pytest.mark.parametrize(
    ("endpoint", "verified"), [("http://127.0.0.1:9", False), ("https://s3.example", True)]
)
async def test_certificates_are_loaded_only_for_tls_endpoints(
    endpoint: str, verified: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    cfg = S3Config(endpoint_url=endpoint, region="us-east-1", lean_path=False)
    shared = await s3._open_client(cfg, (cfg, asyncio.get_running_loop()))
    try:
        # Loading the CA bundle costs ~17 ms per client; plain HTTP has no use for it.
        # (verify is True or a CA bundle path when certificates are checked)
        assert ((await shared.botocore())._endpoint.http_session._verify is not False) is verified
    finally:
        await shared.aclose()
