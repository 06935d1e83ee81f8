"""What an object (and its bucket) is, as S3 describes it: plain values, no I/O.

Object stores (s3batch.storage) produce and take these; operations and manifest filters read
them. ETags are kept without surrounding quotes and keys are always the decoded key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class RestoreState:
    """`x-amz-restore`: a restore still running (no expiry yet) or a finished one."""

    ongoing: bool
    expiry: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    #: Without quotes. MD5 of the content for single-part objects.
    etag: str
    last_modified: datetime
    version_id: str | None = None
    storage_class: str = "STANDARD"
    content_type: str | None = None
    #: User metadata (x-amz-meta-*), keys lower-cased.
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: Other system headers kept on copy: CacheControl, ContentDisposition, ContentEncoding,
    #: ContentLanguage, Expires (as botocore names them).
    headers: Mapping[str, Any] = field(default_factory=dict)
    #: For version listings: whether this is the current version / a delete marker.
    is_latest: bool = True
    is_delete_marker: bool = False
    #: COMPLETED | FAILED | REPLICA | PENDING, or None (never replicated). Filled by head(),
    #: not by listings (S3 lists don't carry it).
    replication_status: str | None = None
    #: "SSE-S3" | "SSE-KMS" | "DSSE-KMS" | "SSE-C" | "NOT-SSE", or None when unknown (listings).
    encryption: str | None = None
    kms_key_id: str | None = None
    bucket_key_enabled: bool = False
    #: The archive restore state from HEAD's `x-amz-restore`, None when never restored.
    restore: RestoreState | None = None
    #: Object Lock state from HEAD (COMPLIANCE | GOVERNANCE, the date, ON | OFF), if any.
    lock_mode: str | None = None
    lock_retain_until: datetime | None = None
    legal_hold: str | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """One ACL grant. `grantee_type` is S3 Batch's TypeIdentifier: id | emailAddress | uri."""

    grantee_type: str
    identifier: str
    #: FULL_CONTROL | READ | WRITE | READ_ACP | WRITE_ACP
    permission: str
    display_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AclSpec:
    """A whole object ACL: a canned ACL, or an owner plus explicit grants."""

    canned: str | None = None
    owner_id: str | None = None
    owner_display: str | None = None
    grants: tuple[Grant, ...] = ()


@dataclass(frozen=True, slots=True)
class Retention:
    """Object Lock retention; both None removes the retention."""

    mode: str | None = None
    retain_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class KmsEncryption:
    """SSE-KMS settings for re-encrypting an object in place."""

    key_arn: str
    bucket_key_enabled: bool = False


@dataclass(frozen=True, slots=True)
class ReplicationRule:
    """An enabled rule of a bucket's replication configuration, in priority order."""

    prefix: str
    #: Destination bucket ARN (arn:aws:s3:::name).
    destination: str
    storage_class: str | None = None
