"""Manifests that are not a plain CSV: S3 Inventory reports and manifest generators.

At Preparing they are materialized once into a normalized CSV manifest (Bucket,Key,VersionId;
keys URL-encoded as in a CSV manifest) in the worker's spool folder. From then on the job runs
exactly like a CSV job: the same chunking, the same resume from a byte offset.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from s3batch.domain.job import Job
from s3batch.domain.manifest import ManifestFormat
from s3batch.errors import ManifestError
from s3batch.storage.base import ObjectStore

#: Fields of a materialized manifest.
MATERIALIZED_FIELDS = ("Bucket", "Key", "VersionId")
#: Bucket (a sub-folder of HOME/spool) holding materialized manifests.
SPOOL_BUCKET = "manifests"


def needs_materializing(request: Mapping[str, Any]) -> bool:
    if request.get("ManifestGenerator") is not None:
        return True
    return bool(request.get("Manifest", {}).get("Spec", {}).get("Format") == ManifestFormat.INVENTORY_CSV)


def spool_key(job_id: str) -> str:
    return f"{job_id}.csv"


async def materialize(job: Job, objects: ObjectStore, spool: ObjectStore) -> dict[str, Any]:
    """Write the job's tasks to `spool` at (SPOOL_BUCKET, spool_key(job_id)).

    Returns facts to keep in `job.extra` (e.g. a GeneratedManifestDescriptor). Raises
    ManifestError (naming the file and line where it can) or StorageError.
    """
    raise ManifestError("inventory manifests and manifest generators are not supported yet")
