"""Endpoint capability probe, run in Preparing before any object of the job is touched.

Some S3-compatible servers answer 200 OK to calls they do not support while damaging the
object (rclone's `serve s3` replaces the body of an object it is asked to tag with the XML, and
truncates one whose ACL is set; shared/notes/test-servers.md). So a status code proves
nothing: the probe writes a scratch object of its own into the first bucket of the manifest,
makes the operation's kind of call on it, reads the object back (body and the effect), and
deletes it. A job the endpoint cannot do fails in Preparing with FailureCode
`EndpointCapability` instead of failing — or damaging — every object.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping

from s3batch.domain.job import FailureReason
from s3batch.errors import StorageError
from s3batch.storage.base import ObjectStore

#: Key prefix of scratch objects; the probe deletes its object when done.
PROBE_PREFIX = ".s3batch-probe/"
PROBE_BODY = b"s3batch capability probe: this object is deleted right after the check\n"

Probe = Callable[[ObjectStore, str, str], Awaitable[str | None]]


async def _tagging(store: ObjectStore, bucket: str, key: str) -> str | None:
    tags = {"s3batch-probe": "1"}
    await store.put_tags(bucket, key, tags)
    if await store.get_tags(bucket, key) != tags:
        return "object tags did not read back as written"
    await store.delete_tags(bucket, key)
    if await store.get_tags(bucket, key):
        return "DeleteObjectTagging left tags behind"
    return None


#: Operation name → the check its calls need. Operations that only read, copy or delete
#: use the plain data path every S3 server implements and need no probe.
PROBES: Mapping[str, tuple[str, Probe]] = {
    "S3PutObjectTagging": ("object tagging", _tagging),
    "S3DeleteObjectTagging": ("object tagging", _tagging),
}


async def probe(store: ObjectStore, operation: str, bucket: str) -> FailureReason | None:
    """None if the endpoint handles `operation` correctly, else why not."""
    entry = PROBES.get(operation)
    if entry is None:
        return None
    feature, check = entry
    key = f"{PROBE_PREFIX}{uuid.uuid4()}"
    try:
        await store.put_bytes(bucket, key, PROBE_BODY, content_type="text/plain")
        try:
            problem = await check(store, bucket, key)
            if problem is None and await store.get_bytes(bucket, key) != PROBE_BODY:
                problem = "the call answered OK but changed the object's content"
        finally:
            await _delete_quietly(store, bucket, key)
    except StorageError as exc:
        problem = f"{exc.code}: {exc.message}"
    if problem is None:
        return None
    return FailureReason(
        "EndpointCapability",
        f"the endpoint does not support {feature} for {operation} ({problem}); no object was changed"[:256],
    )


async def _delete_quietly(store: ObjectStore, bucket: str, key: str) -> None:
    try:
        await store.delete(bucket, key)
    except StorageError:
        pass  # a leftover scratch object is harmless; the verdict matters more
