"""Durable job state: one contract (base.JobStore), SQLite by default."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from s3batch.settings import Settings
    from s3batch.store.base import JobStore


def open_job_store(settings: Settings) -> JobStore:
    """The job store of `settings`' HOME, created and migrated on first open. Every process
    that creates, runs or reads jobs opens it here; the caller closes it."""
    # Imported here: commands that never open the store (--help) do not load sqlite3.
    from s3batch.store.sqlite import SqliteJobStore

    return SqliteJobStore(settings.db_path)
