"""The upload side of pipelines with in-memory doubles: the stale multipart sweep (injected clock),
presign request checks, the new config keys and the webhook token."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from starlette.requests import Request

from s3batch.errors import BadRequest, ConfigError, StorageError
from s3batch.pipelines.config import SIGV4_MAX_EXPIRES_S, PipelineConfig, parse_config
from s3batch.pipelines.sources import token_ok
from s3batch.pipelines.uploads import abort_stale_uploads, check_upload, presign_put
from s3batch.storage.config import LocalConfig, S3Config
from s3batch.storage.memory import MemoryStore

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
TOKEN = "a-webhook-token-of-some-length"


def config(tmp_path: Path, **extra: Any) -> PipelineConfig:
    data = {"name": "p", "source": "staging", "function": "h:f", "on_success": "leave", **extra}
    return parse_config(data, tmp_path)


async def test_sweep_aborts_only_uploads_older_than_the_age() -> None:
    store = MemoryStore()
    await store.create_bucket("staging")
    old = store.start_multipart_upload("staging", "big.bin", NOW - timedelta(hours=2))
    store.start_multipart_upload("staging", "fresh.bin", NOW - timedelta(minutes=5))
    assert await abort_stale_uploads(store, "staging", 3600, now=NOW) == 1
    left = [u.key async for u in store.list_multipart_uploads("staging")]
    assert left == ["fresh.bin"]
    assert ("abort_multipart_upload", "staging", "big.bin") in store.calls
    with pytest.raises(StorageError) as info:  # gone: the contract's NoSuchUpload
        await store.abort_multipart_upload("staging", "big.bin", old)
    assert info.value.code == "NoSuchUpload"
    assert await abort_stale_uploads(store, "staging", 0, now=NOW) == 1  # age 0: everything


async def test_sweep_tolerates_an_upload_that_vanished_meanwhile() -> None:
    store = MemoryStore()
    await store.create_bucket("staging")
    store.start_multipart_upload("staging", "a.bin", NOW - timedelta(days=1))
    store.start_multipart_upload("staging", "b.bin", NOW - timedelta(days=1))
    gone = StorageError("NoSuchUpload", "completed by its client", 404)
    store.fail("abort_multipart_upload", gone, key="a.bin")
    assert await abort_stale_uploads(store, "staging", 60, now=NOW) == 1


@pytest.mark.parametrize(
    ("key", "content_type", "expires", "fragment"),
    [
        ("", "text/csv", 60, "key must be"),
        ("x" * 1025, "text/csv", 60, "key must be"),
        ("out/a.csv", "text/csv", 60, "filter rules"),
        ("in/a.csv", "csv", 60, "media type"),
        ("in/a.csv", "text/csv\r\nX-Evil: 1", 60, "media type"),
        ("in/a.csv", "text/csv", 0, "expires must be 1..600"),
        ("in/a.csv", "text/csv", 601, "expires must be 1..600"),
    ],
)
def test_upload_requests_out_of_bounds_are_refused(
    tmp_path: Path, key: str, content_type: str, expires: int, fragment: str
) -> None:
    cfg = config(tmp_path, filter={"rules": [{"prefix": "in/"}]}, presign_max_expires_s=600)
    with pytest.raises(BadRequest, match=fragment):
        check_upload(cfg, key, content_type, expires)
    check_upload(cfg, "in/a.csv", "text/csv; charset=utf-8", 600)  # the edge is allowed


def test_presigned_put_is_sigv4_and_signs_the_content_type(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    storage = S3Config(endpoint_url="http://127.0.0.1:9", region="eu-west-1", addressing_style="path")
    signed = presign_put(cfg, storage, "in/a b+c.csv", "text/csv", 120, now=NOW)
    parts = urlsplit(signed.url)
    query = parse_qs(parts.query)
    assert parts.path == "/staging/in/a%20b%2Bc.csv"  # the key is in the signed path
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-SignedHeaders"] == ["content-type;host"]
    assert query["X-Amz-Expires"] == ["120"]
    assert "/eu-west-1/s3/aws4_request" in query["X-Amz-Credential"][0]
    assert signed.expires_at == NOW + timedelta(seconds=120)
    assert signed.as_json()["headers"] == {"Content-Type": "text/csv"}


def test_presigning_needs_an_s3_store(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="need an S3 store"):
        presign_put(config(tmp_path), LocalConfig(root=str(tmp_path)), "a.csv", "text/csv", 60)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"poll_interval_s": 0}, "poll_interval_s"),
        ({"webhook_token": "short"}, "webhook_token"),
        ({"abort_incomplete_uploads_after_s": -1}, "abort_incomplete_uploads_after_s"),
        ({"presign_max_expires_s": SIGV4_MAX_EXPIRES_S + 1}, "presign_max_expires_s"),
    ],
)
def test_hosting_keys_are_checked(tmp_path: Path, extra: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        config(tmp_path, **extra)


def test_token_is_not_in_the_config_repr(tmp_path: Path) -> None:
    assert TOKEN not in repr(config(tmp_path, webhook_token=TOKEN))


def request(query: str = "", headers: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request(
        {"type": "http", "method": "POST", "path": "/", "query_string": query.encode(), "headers": raw}
    )


def test_webhook_token_from_query_header_or_bearer(tmp_path: Path) -> None:
    cfg = config(tmp_path, webhook_token=TOKEN)
    assert token_ok(cfg, request(f"token={TOKEN}"))
    assert token_ok(cfg, request(headers={"X-S3Batch-Token": TOKEN}))
    assert token_ok(cfg, request(headers={"Authorization": f"Bearer {TOKEN}"}))
    assert not token_ok(cfg, request())
    assert not token_ok(cfg, request("token=wrong"))
    assert not token_ok(cfg, request(headers={"Authorization": f"Basic {TOKEN}"}))
    assert token_ok(config(tmp_path), request())  # no token configured: no check
