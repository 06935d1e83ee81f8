"""Endpoint capability probe, run in Preparing before any object of the job is touched.

Some S3-compatible servers answer 200 OK to calls they do not support while damaging the
object (rclone's `serve s3` replaces the body of an object it is asked to tag with the XML, and
truncates one whose ACL is set; docs/compatibility.md). So a status code proves
nothing: the probe writes a scratch object of its own into the first bucket of the manifest,
makes the operation's kind of call on it, reads the object back (body and the effect), and
deletes it. A job the endpoint cannot do fails in Preparing with FailureCode
`EndpointCapability` instead of failing — or damaging — every object.

Each operation kind states its own check (`KIND.probe`: the feature, the store `Capability` it
needs, and the call to make, or `NoProbe.PLAIN_DATA_PATH` for operations that only read, copy or
delete); this module is the framework around it: the store's declaration, the scratch object,
reading its body back, the verdict. A store that does not declare the capability (the folder
store has no Object Lock) fails the job at once, without writing a scratch object; one that
does still gets the check, as whether the server behind it supports the feature is for the
check to find out.

A call that got no answer at all (connection refused or reset, a TLS certificate refused, no
answer in time) says nothing about what the endpoint supports: the job then fails with
FailureCode `EndpointUnreachable` and the underlying reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from s3batch.domain.job import FailureReason
from s3batch.domain.task import Task
from s3batch.errors import StorageError
from s3batch.operations import kind_of
from s3batch.operations.base import CapabilityProbe
from s3batch.storage.base import Capability, ObjectStore
from s3batch.storage.capabilities import declares

#: Key prefix of scratch objects; the probe deletes its object when done.
PROBE_PREFIX = ".s3batch-probe/"
PROBE_BODY = b"s3batch capability probe: this object is deleted right after the check\n"
#: StorageError codes the S3 adapter (storage/s3/store.py, storage/s3/lean.py) gives a call that got no
#: HTTP answer: the endpoint was not reached, or did not answer in time.
UNREACHABLE_CODES = frozenset({"ConnectionError", "RequestTimeout", "TLSError"})
#: How a failure names a capability the store does not declare.
CAPABILITY_NAMES: dict[Capability, str] = {
    Capability.ACL: "object ACLs",
    Capability.OBJECT_LOCK: "Object Lock",
    Capability.RESTORE: "restores from archive storage classes",
    Capability.REPLICATION: "replication configurations",
    Capability.ENCRYPTION: "SSE-KMS re-encryption",
    Capability.VERSIONS: "object versions",
    Capability.MULTIPART_UPLOADS: "multipart upload listings",
    Capability.PARTS: "part layouts of multipart objects",
    Capability.PART_UPLOADS: "checksummed part uploads",
}


async def probe(store: ObjectStore, operation: Mapping[str, Any], first: Task) -> FailureReason | None:
    """None if the endpoint handles the job's operation correctly, else why not. `first` is the
    manifest's first task: its bucket takes the scratch object, and a version ID on it means the
    store must support versions."""
    name, params = next(iter(operation.items()))
    if first.version_id is not None:
        unversioned = await _versions(store, first)
        if unversioned is not None:
            return unversioned
    bucket = first.bucket
    kind_probe = kind_of(name).probe
    if not isinstance(kind_probe, CapabilityProbe):  # the plain data path: nothing to check
        return None
    feature, needed, check = kind_probe.feature, kind_probe.capability, kind_probe.check
    if needed is not None and not declares(store, needed):  # no scratch object for a sure "no"
        why = f"NotImplemented: this store does not implement {CAPABILITY_NAMES[needed]}"
        return _unsupported(feature, name, why)
    key = f"{PROBE_PREFIX}{uuid.uuid4()}"
    try:
        info = await store.put_bytes(bucket, key, PROBE_BODY, content_type="text/plain")
        try:
            problem = await check(store, bucket, key, info.version_id, params or {})
            if problem is None and await store.get_bytes(bucket, key) != PROBE_BODY:
                problem = "the call answered OK but changed the object's content"
        finally:
            await _delete_quietly(store, bucket, key, info.version_id)
    except StorageError as exc:
        if unreachable(exc):
            return unreachable_reason(exc, f"check {feature} for {name}")
        problem = f"{exc.code}: {exc.message}"
    if problem is None:
        return None
    return _unsupported(feature, name, problem)


def _unsupported(feature: str, operation: str, problem: str) -> FailureReason:
    why = f"the endpoint does not support {feature} for {operation} ({problem}); no object was changed"
    return FailureReason("EndpointCapability", why[:256])


async def _versions(store: ObjectStore, first: Task) -> FailureReason | None:
    """A store without versioning answers NotImplemented to any version-specific call."""
    try:
        await store.head(first.bucket, first.key, first.version_id)
    except StorageError as exc:
        if unreachable(exc):
            return unreachable_reason(exc, "check object versions")
        if exc.code == "NotImplemented":
            why = f"the manifest names object versions but the store has no versioning ({exc.message})"
            return FailureReason("EndpointCapability", why[:256])
    return None  # present or missing: a per-task matter


def unreachable(exc: StorageError) -> bool:
    """Whether `exc` is a call that never got an HTTP answer (not a server's verdict)."""
    return exc.http_status is None and exc.code in UNREACHABLE_CODES


def unreachable_reason(exc: StorageError, doing: str) -> FailureReason:
    why = f"could not reach the endpoint to {doing} ({exc.code}: {exc.message}); no object was changed"
    return FailureReason("EndpointUnreachable", why[:256])


async def _delete_quietly(store: ObjectStore, bucket: str, key: str, version_id: str | None) -> None:
    try:
        await store.delete(bucket, key, version_id)  # the exact version: no delete marker left
    except StorageError:
        pass  # a leftover scratch object is harmless; the verdict matters more
