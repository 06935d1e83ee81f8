"""Operations and the capability probe read what the store declares (storage/capabilities.py):
a store without a capability fails the probe without a scratch object, and an operation created
on it fails each task with the answer the store's own call gives."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from s3batch.domain.objects import AclSpec, KmsEncryption, Retention
from s3batch.domain.task import Task
from s3batch.errors import StorageError
from s3batch.operations import get_kind, kind_of
from s3batch.operations.base import CapabilityProbe, JobContext, OperationContext, storage_failure
from s3batch.service.probe import CAPABILITY_NAMES, PROBE_PREFIX, probe
from s3batch.storage.base import Capability
from s3batch.storage.capabilities import StorageAdapter
from s3batch.storage.config import LocalConfig
from s3batch.storage.local import LocalStore
from s3batch.storage.memory import MemoryStore

KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
#: A store call an operation makes per task.
StoreCall = Callable[[StorageAdapter], Awaitable[None]]
#: Operation → (its parameters, the store call it makes, the capability that call needs).
CAPABILITY_KINDS: dict[str, tuple[dict[str, Any], StoreCall, Capability]] = {
    "S3PutObjectAcl": (
        {"AccessControlPolicy": {"CannedAccessControlList": "private"}},
        lambda s: s.put_acl("b", "k", AclSpec(canned="private")),
        Capability.ACL,
    ),
    "S3InitiateRestoreObject": (
        {"ExpirationInDays": 1},
        lambda s: s.restore("b", "k", 1, None),
        Capability.RESTORE,
    ),
    "S3PutObjectLegalHold": (
        {"LegalHold": {"Status": "ON"}},
        lambda s: s.put_legal_hold("b", "k", "ON"),
        Capability.OBJECT_LOCK,
    ),
    "S3PutObjectRetention": (
        {"Retention": {}},
        lambda s: s.put_retention("b", "k", Retention()),
        Capability.OBJECT_LOCK,
    ),
    "S3UpdateObjectEncryption": (
        {"ObjectEncryption": {"SSEKMS": {"KMSKeyArn": KMS_KEY}}},
        lambda s: s.update_encryption("b", "k", KmsEncryption(KMS_KEY)),
        Capability.ENCRYPTION,
    ),
}
FIRST = Task(seq=0, bucket="b", raw_key="k", key="k")
LEGAL_HOLD_ON = {"S3PutObjectLegalHold": {"LegalHold": {"Status": "ON"}}}


def context(store: StorageAdapter, root: Path) -> OperationContext:
    job = JobContext(job_id="j", account_id="0", region="us-east-1", storage=LocalConfig(root=str(root)))
    return OperationContext(job=job, store=store)


async def seeded_memory() -> MemoryStore:
    store = MemoryStore()
    await store.create_bucket("b")
    await store.put_bytes("b", "k", b"x")
    return store


@pytest.mark.parametrize("name", sorted(CAPABILITY_KINDS))
def test_each_kind_states_the_capability_its_probe_needs(name: str) -> None:
    kind_probe = kind_of(name).probe
    assert isinstance(kind_probe, CapabilityProbe)
    assert kind_probe.capability is CAPABILITY_KINDS[name][2]


def test_tagging_needs_no_capability_and_every_capability_has_a_name() -> None:
    for name in ("S3PutObjectTagging", "S3DeleteObjectTagging"):
        kind_probe = kind_of(name).probe
        assert isinstance(kind_probe, CapabilityProbe) and kind_probe.capability is None
    assert set(CAPABILITY_NAMES) == set(Capability)


@pytest.mark.parametrize("name", sorted(CAPABILITY_KINDS))
async def test_an_undeclared_capability_fails_the_probe_without_a_scratch_object(name: str) -> None:
    store = await seeded_memory()
    params = CAPABILITY_KINDS[name][0]
    before = [info.key async for info in store.list_objects("b")]
    writes_before = [call for call in store.calls if call[0].startswith("put")]

    reason = await probe(store, {name: params}, FIRST)

    assert reason is not None and reason.code == "EndpointCapability"
    assert "NotImplemented" in reason.reason and reason.reason.endswith("; no object was changed")
    assert [info.key async for info in store.list_objects("b")] == before == ["k"]
    assert [call for call in store.calls if call[0].startswith("put")] == writes_before  # none at all
    assert not any(PROBE_PREFIX in str(call) for call in store.calls)


async def test_the_undeclared_reason_names_feature_operation_and_capability() -> None:
    reason = await probe(await seeded_memory(), LEGAL_HOLD_ON, FIRST)
    assert reason is not None
    assert reason.reason == (
        "the endpoint does not support Object Lock legal holds for S3PutObjectLegalHold "
        "(NotImplemented: this store does not implement Object Lock); no object was changed"
    )


class _LockDeclaringStore(MemoryStore):
    """Declares Object Lock but its server refuses it: the declaration is not the last word."""

    @property
    def capabilities(self) -> frozenset[Capability]:
        return super().capabilities | {Capability.OBJECT_LOCK}


async def test_a_declared_capability_still_gets_the_scratch_object_check() -> None:
    store = _LockDeclaringStore()
    await store.create_bucket("b")
    await store.put_bytes("b", "k", b"x")

    reason = await probe(store, LEGAL_HOLD_ON, FIRST)

    assert reason is not None and reason.code == "EndpointCapability"
    refusal = "(NotImplemented: PutObjectLegalHold (Object Lock) is not supported by a memory store)"
    assert refusal in reason.reason  # the store's own answer to the call, on the scratch object
    scratch = [call for call in store.calls if call[0] == "put_bytes" and call[2].startswith(PROBE_PREFIX)]
    assert len(scratch) == 1  # written, checked ...
    assert [call[0] for call in store.calls if len(call) > 2 and call[2] == scratch[0][2]][-1] == "delete"
    assert [info.key async for info in store.list_objects("b")] == ["k"]  # ... and deleted


@pytest.mark.parametrize("name", sorted(CAPABILITY_KINDS))
async def test_an_operation_on_a_store_without_the_capability_fails_each_task_as_the_call_would(
    name: str, tmp_path: Path
) -> None:
    """The folder store's report row is the one its own NotImplemented call gave: same code,
    HTTP status and message (a job whose probe was skipped still reports per task)."""
    store = LocalStore(tmp_path)
    await store.create_bucket("b")
    await store.put_bytes("b", "k", b"x")
    params, call, capability = CAPABILITY_KINDS[name]
    assert capability not in store.capabilities
    with pytest.raises(StorageError) as caught:
        await call(store)
    expected = storage_failure(caught.value)
    assert (expected.error_code, expected.http_status) == ("NotImplemented", 501)

    op = get_kind(name).create(params, context(store, tmp_path))
    results = [await op.apply(Task(seq=i, bucket="b", raw_key="k", key="k")) for i in range(2)]

    assert results == [expected, expected]
    assert (tmp_path / "b" / "k").read_bytes() == b"x"


async def test_retention_still_reads_the_object_first(tmp_path: Path) -> None:
    """A missing object is NoSuchKey (the HEAD before the call), not NotImplemented."""
    store = LocalStore(tmp_path)
    await store.create_bucket("b")
    op = get_kind("S3PutObjectRetention").create({"Retention": {}}, context(store, tmp_path))
    result = await op.apply(Task(seq=0, bucket="b", raw_key="gone", key="gone"))
    assert (result.error_code, result.http_status) == ("NoSuchKey", 404)


class _PartlessStore(MemoryStore):
    """A store that cannot tell the part layout of an object (declares no Capability.PARTS)."""

    @property
    def capabilities(self) -> frozenset[Capability]:
        return super().capabilities - {Capability.PARTS}


async def test_a_composite_checksum_needs_the_parts_capability(tmp_path: Path) -> None:
    store = _PartlessStore()
    await store.create_bucket("b")
    await store.put_bytes("b", "k", b"x")
    ctx = context(store, tmp_path)
    composite = get_kind("S3ComputeObjectChecksum").create(
        {"ChecksumAlgorithm": "CRC32", "ChecksumType": "COMPOSITE"}, ctx
    )
    refused = await composite.apply(FIRST)
    assert (refused.error_code, refused.http_status) == ("NotImplemented", 501)
    full = get_kind("S3ComputeObjectChecksum").create({"ChecksumAlgorithm": "CRC32"}, ctx)
    assert (await full.apply(FIRST)).succeeded
    assert not any(call[0] == "object_parts" for call in store.calls)


class _UnreplicatedStore(MemoryStore):
    """A store that keeps no replication configuration (declares no Capability.REPLICATION)."""

    @property
    def capabilities(self) -> frozenset[Capability]:
        return super().capabilities - {Capability.REPLICATION}


async def test_replication_without_the_capability_uses_the_jobs_destination(tmp_path: Path) -> None:
    store = _UnreplicatedStore()
    for bucket in ("b", "dst"):
        await store.create_bucket(bucket)
    await store.put_bytes("b", "k", b"x")
    ctx = context(store, tmp_path)
    named = get_kind("S3ReplicateObject").create({"DestinationBucket": "arn:aws:s3:::dst"}, ctx)
    assert (await named.apply(FIRST)).succeeded
    assert await store.get_bytes("dst", "k") == b"x"
    unnamed = await get_kind("S3ReplicateObject").create({}, ctx).apply(FIRST)
    assert (unnamed.error_code, unnamed.http_status) == ("ReplicationConfigurationNotFoundError", 404)
    assert not any(call[0] == "replication_rules" for call in store.calls)
