"""Object-store adapters: one contract (base.ObjectStore) plus declared capabilities
(capabilities.py), one module or package per implementation."""

from __future__ import annotations

from s3batch.storage.base import Capability, CopyOptions, ObjectStore, VersionRef
from s3batch.storage.config import LocalConfig, S3Config, StorageConfig, open_store

__all__ = [
    "Capability",
    "CopyOptions",
    "LocalConfig",
    "ObjectStore",
    "S3Config",
    "StorageConfig",
    "VersionRef",
    "open_store",
]
