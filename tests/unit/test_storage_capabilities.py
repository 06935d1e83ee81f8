"""What each store declares beyond the core contract (storage/capabilities.py), and the typed
accessors that read those declarations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from s3batch.errors import StorageError
from s3batch.retry import RetryPolicy
from s3batch.storage.base import Capability, ObjectStore
from s3batch.storage.capabilities import (
    ALL_CAPABILITIES,
    AclStore,
    EncryptionStore,
    MultipartUploadStore,
    ObjectLockStore,
    PartsStore,
    PartUploadStore,
    ReplicationStore,
    RestoreStore,
    StorageAdapter,
    VersionedStore,
    acl_store,
    declares,
    encryption_store,
    multipart_upload_store,
    object_lock_store,
    part_upload_store,
    parts_store,
    replication_store,
    restore_store,
    versioned_store,
)
from s3batch.storage.config import (
    LocalConfig,
    S3Config,
    can_presign,
    endpoint_for_handlers,
    open_store,
    signs_with_profile,
)
from s3batch.storage.emulated import EMULATED_CAPABILITIES
from s3batch.storage.local import LocalStore
from s3batch.storage.memory import MemoryStore
from s3batch.storage.retrying import RetryingStore
from s3batch.storage.s3 import S3Store

#: Capability → (the Protocol a store declaring it must satisfy, its accessor).
CAPABILITIES: dict[Capability, tuple[type, Callable[[ObjectStore], object]]] = {
    Capability.ACL: (AclStore, acl_store),
    Capability.OBJECT_LOCK: (ObjectLockStore, object_lock_store),
    Capability.RESTORE: (RestoreStore, restore_store),
    Capability.REPLICATION: (ReplicationStore, replication_store),
    Capability.ENCRYPTION: (EncryptionStore, encryption_store),
    Capability.VERSIONS: (VersionedStore, versioned_store),
    Capability.MULTIPART_UPLOADS: (MultipartUploadStore, multipart_upload_store),
    Capability.PARTS: (PartsStore, parts_store),
    Capability.PART_UPLOADS: (PartUploadStore, part_upload_store),
}
#: What the folder and memory stores emulate today: an empty replication configuration, no
#: incomplete uploads but those create_multipart_upload starts (memory: and those a test leaves),
#: every object in one part, checksummed part uploads.
EMULATED = {Capability.REPLICATION, Capability.MULTIPART_UPLOADS, Capability.PARTS, Capability.PART_UPLOADS}
#: Capability → (method, arguments) of a call the folder and memory stores do not emulate.
NOT_EMULATED: dict[Capability, tuple[str, tuple[Any, ...]]] = {
    Capability.ACL: ("put_acl", ("b", "k", None)),
    Capability.OBJECT_LOCK: ("put_legal_hold", ("b", "k", "ON")),
    Capability.RESTORE: ("restore", ("b", "k", 1, "Standard")),
    Capability.ENCRYPTION: ("update_encryption", ("b", "k", None)),
}


def stores(tmp_path: Path) -> dict[str, tuple[ObjectStore, set[Capability]]]:
    """Every store kind, RetryingStore-wrapped ones included, with what it must declare."""
    plain: dict[str, tuple[ObjectStore, set[Capability]]] = {
        "s3": (S3Store(S3Config(endpoint_url="http://127.0.0.1:9")), set(Capability)),
        "local": (LocalStore(tmp_path), EMULATED),
        "memory": (MemoryStore(), EMULATED),
        "memory-versioned": (MemoryStore(versioned=True), EMULATED | {Capability.VERSIONS}),
    }
    wrapped = {f"retrying-{name}": (RetryingStore(store), caps) for name, (store, caps) in plain.items()}
    return {**plain, **wrapped}


STORE_NAMES = ["s3", "local", "memory", "memory-versioned"]


@pytest.mark.parametrize("name", [*STORE_NAMES, *(f"retrying-{name}" for name in STORE_NAMES)])
def test_each_store_declares_exactly_what_it_implements(name: str, tmp_path: Path) -> None:
    store, expected = stores(tmp_path)[name]
    assert store.capabilities == expected
    for capability, (protocol, accessor) in CAPABILITIES.items():
        declared = capability in expected
        assert declares(store, capability) is declared
        # A declaring store comes back as itself (a RetryingStore as the wrapper, so the
        # capability's calls are retried too); any other as None.
        assert accessor(store) is (store if declared else None)
        if declared and not name.startswith("retrying-"):
            assert isinstance(store, protocol), capability


def test_declarations_are_shared_where_the_behaviour_is() -> None:
    assert EMULATED_CAPABILITIES == EMULATED
    assert ALL_CAPABILITIES == frozenset(Capability)
    assert S3Store.capabilities == ALL_CAPABILITIES
    assert LocalStore.capabilities == EMULATED_CAPABILITIES


def test_every_adapter_still_has_the_whole_surface(tmp_path: Path) -> None:
    """Undeclared capabilities keep today's answers (NotImplemented), so existing callers of
    the whole S3 API (StorageAdapter) work unchanged on every store."""
    adapters = [S3Store(S3Config()), LocalStore(tmp_path), MemoryStore(), open_store(LocalConfig(root="x"))]
    for store in adapters:
        assert isinstance(store, StorageAdapter)


@pytest.mark.parametrize("capability", sorted(NOT_EMULATED, key=lambda c: c.value))
@pytest.mark.parametrize("kind", ["local", "memory"])
async def test_what_is_not_declared_is_not_implemented(
    capability: Capability, kind: str, tmp_path: Path
) -> None:
    store: Any = LocalStore(tmp_path) if kind == "local" else MemoryStore()
    await store.create_bucket("b")
    await store.put_bytes("b", "k", b"x")
    assert capability not in store.capabilities
    method, args = NOT_EMULATED[capability]
    with pytest.raises(StorageError) as caught:
        await getattr(store, method)(*args)
    assert (caught.value.code, caught.value.http_status) == ("NotImplemented", 501)


async def test_version_ids_need_the_versions_capability(tmp_path: Path) -> None:
    for store in (LocalStore(tmp_path), MemoryStore()):
        await store.create_bucket("b")
        await store.put_bytes("b", "k", b"x")
        assert versioned_store(store) is None
        with pytest.raises(StorageError) as caught:
            await store.head("b", "k", "v1")
        assert caught.value.code == "NotImplemented"
    versioned = MemoryStore(versioned=True)
    await versioned.create_bucket("b")
    info = await versioned.put_bytes("b", "k", b"x")
    assert versioned_store(versioned) is versioned
    assert (await versioned.head("b", "k", info.version_id)).version_id == info.version_id


async def test_a_capability_through_a_retrying_store_is_retried() -> None:
    inner = MemoryStore()
    await inner.create_bucket("b")
    inner.fail("replication_rules", StorageError("SlowDown", "slow down", 503, retryable=True))
    wrapper = RetryingStore(inner, RetryPolicy(max_attempts=3, base_delay_s=0.0, max_delay_s=0.0))
    replication = replication_store(wrapper)
    assert replication is not None
    assert await replication.replication_rules("b") == []
    assert wrapper.retries == 1


class _CoreOnly:
    """A store with nothing beyond the core (declares nothing)."""

    capabilities: frozenset[Capability] = frozenset()


def test_a_store_that_declares_nothing_gets_none_everywhere() -> None:
    store: Any = _CoreOnly()
    for capability, (_, accessor) in CAPABILITIES.items():
        assert accessor(store) is None
        assert not declares(store, capability)


def test_storage_configs_answer_capability_questions() -> None:
    folder = LocalConfig(root="/data")
    s3 = S3Config(endpoint_url="http://127.0.0.1:9000")
    assert endpoint_for_handlers(folder) is None
    assert endpoint_for_handlers(S3Config()) is None  # the AWS environment's own endpoint
    assert endpoint_for_handlers(s3) == "http://127.0.0.1:9000"
    assert not can_presign(folder) and can_presign(s3)
    assert not signs_with_profile(folder) and signs_with_profile(s3)
