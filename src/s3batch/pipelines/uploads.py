"""The upload side of a pipeline: presigned PUT URLs for its staging bucket, and the sweep that
aborts multipart uploads left incomplete there.

A presigned URL is SigV4 (query-string auth) and signs `content-type` and `host` besides the
method and path: the object store refuses a PUT to another key, with another content type, or
after the expiry, without ever seeing our keys. botocore only chooses SigV4 for presigning when
told to (`signature_version="s3v4"`); otherwise it may produce SigV2 URLs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from s3batch.errors import BadRequest, ConfigError, StorageError
from s3batch.pipelines.config import PipelineConfig
from s3batch.storage.base import ObjectStore
from s3batch.storage.capabilities import multipart_upload_store
from s3batch.storage.config import S3Config, StorageConfig, can_presign

log = logging.getLogger(__name__)

#: Lifetime of a presigned URL when the caller names none (seconds).
DEFAULT_PRESIGN_EXPIRES_S = 900
#: S3's limit on key length (UTF-8 bytes).
MAX_KEY_BYTES = 1024
#: A media type, optionally with parameters: `text/csv`, `text/csv; charset=utf-8`.
_CONTENT_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+(\s*;\s*[\w.+-]+=(?:[\w.+-]+|\"[^\"\r\n]*\"))*$")
MAX_CONTENT_TYPE_CHARS = 255


@dataclass(frozen=True, slots=True, kw_only=True)
class PresignedPut:
    """A URL that uploads one key with one content type until `expires_at`."""

    url: str
    bucket: str
    key: str
    content_type: str
    expires_s: int
    expires_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "method": "PUT",
            # The signature covers this header: a PUT without it (or with another) is refused.
            "headers": {"Content-Type": self.content_type},
            "bucket": self.bucket,
            "key": self.key,
            "expires_s": self.expires_s,
            "expires_at": self.expires_at.isoformat(),
        }


def check_upload(cfg: PipelineConfig, key: str, content_type: str, expires_s: int) -> None:
    """Raise BadRequest unless the request is one the pipeline should sign."""
    if not key or len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise BadRequest(f"key must be 1-{MAX_KEY_BYTES} bytes of UTF-8")
    if cfg.filter.rules and not any(rule.matches(key) for rule in cfg.filter.rules):
        # Such an upload would sit in the staging bucket, never processed.
        raise BadRequest(f"key {key!r} does not match pipeline {cfg.name!r}'s filter rules")
    if len(content_type) > MAX_CONTENT_TYPE_CHARS or not _CONTENT_TYPE.match(content_type):
        raise BadRequest(f"content type {content_type!r} is not a media type such as text/csv")
    if not 1 <= expires_s <= cfg.presign_max_expires_s:
        raise BadRequest(f"expires must be 1..{cfg.presign_max_expires_s} seconds for pipeline {cfg.name!r}")


def presign_put(
    cfg: PipelineConfig,
    storage: StorageConfig,
    key: str,
    content_type: str,
    expires_s: int = DEFAULT_PRESIGN_EXPIRES_S,
    now: datetime | None = None,
) -> PresignedPut:
    """A presigned PUT for `key` in the pipeline's staging bucket. Blocking (botocore reads the
    credential chain): call it through asyncio.to_thread from async code."""
    check_upload(cfg, key, content_type, expires_s)
    if not can_presign(storage):
        raise ConfigError("presigned URLs need an S3 store; a folder store has no URL to sign")
    signed_at = now or datetime.now(UTC)
    url = _s3_client(storage).generate_presigned_url(
        "put_object",
        Params={"Bucket": cfg.source, "Key": key, "ContentType": content_type},
        ExpiresIn=expires_s,
        HttpMethod="PUT",
    )
    expires_at = signed_at + timedelta(seconds=expires_s)
    return PresignedPut(url=str(url), bucket=cfg.source, key=key, content_type=content_type,
                        expires_s=expires_s, expires_at=expires_at)  # fmt: skip


def _s3_client(storage: S3Config) -> Any:
    import botocore.session
    from botocore.config import Config

    session = botocore.session.Session(profile=storage.profile)
    region = storage.region or session.get_config_variable("region") or "us-east-1"
    config = Config(
        signature_version="s3v4", region_name=region, s3={"addressing_style": storage.addressing_style}
    )
    return session.create_client("s3", endpoint_url=storage.endpoint_url, config=config)


async def abort_stale_uploads(
    store: ObjectStore, bucket: str, max_age_s: float, now: datetime | None = None
) -> int:
    """Abort the bucket's multipart uploads started more than `max_age_s` before `now`.

    Returns how many were aborted. An upload that vanished meanwhile (completed by its client,
    or aborted by another sweep) is not an error; a store without multipart uploads has none.
    """
    uploads = multipart_upload_store(store)
    if uploads is None:
        return 0
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=max_age_s)
    stale = [u async for u in uploads.list_multipart_uploads(bucket) if u.initiated <= cutoff]
    aborted = 0
    for upload in stale:
        try:
            await uploads.abort_multipart_upload(bucket, upload.key, upload.upload_id)
        except StorageError as exc:
            if exc.code != "NoSuchUpload":
                raise
            continue
        log.info("aborted multipart upload %s of %s/%s (started %s)", upload.upload_id, bucket,
                 upload.key, upload.initiated.isoformat())  # fmt: skip
        aborted += 1
    return aborted
