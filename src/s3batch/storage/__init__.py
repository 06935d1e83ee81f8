"""Object-store adapters: one contract (base.ObjectStore), one module per implementation."""

from __future__ import annotations

from s3batch.storage.base import CopyOptions, ObjectInfo, ObjectStore, VersionRef
from s3batch.storage.config import LocalConfig, S3Config, StorageConfig, open_store

__all__ = [
    "CopyOptions",
    "LocalConfig",
    "ObjectInfo",
    "ObjectStore",
    "S3Config",
    "StorageConfig",
    "VersionRef",
    "open_store",
]
