"""The parallel range lister (storage/listing.py) shared by manifest generators, inventory
reports and the pipelines' reconciling listings: ranges cover every key exactly once, in key
order, for objects and for versions; ranges run bounded, in order, and a failure stops the rest."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3batch.errors import StorageError
from s3batch.storage.listing import KeyRange, plan_ranges, range_listing, run_ranges
from s3batch.storage.memory import MemoryStore

KEY_CHARS = st.sampled_from(list("ab/.-0"))
#: Seconds a test waits for a task that should be cancelled before failing.
WAIT_S = 5.0


async def store_with(keys: set[str], *, versioned: bool = False, copies: int = 1) -> MemoryStore:
    store = MemoryStore(versioned=versioned)
    await store.create_bucket("b")
    for key in sorted(keys):
        for i in range(copies):
            await store.put_bytes("b", key, bytes(i + 1))
    return store


async def listed(
    store: MemoryStore, prefix: str, concurrency: int, *, versions: bool
) -> list[tuple[str, str]]:
    ranges = await plan_ranges(store, "b", prefix, concurrency=concurrency)
    out: list[tuple[str, str]] = []
    for r in ranges:
        listing = range_listing(store, "b", prefix, r, versions=versions)
        out += [(info.key, info.version_id or "") async for info in listing]
    return out


@settings(max_examples=60, deadline=None)
@given(
    keys=st.sets(st.text(KEY_CHARS, min_size=1, max_size=8), max_size=40),
    prefix=st.sampled_from(["", "a", "a/", "b/a"]),
    concurrency=st.sampled_from([1, 2, 16]),
)
def test_ranges_list_every_key_once_in_key_order(keys: set[str], prefix: str, concurrency: int) -> None:
    async def go() -> list[tuple[str, str]]:
        return await listed(await store_with(keys), prefix, concurrency, versions=False)

    assert [key for key, _ in asyncio.run(go())] == sorted(k for k in keys if k.startswith(prefix))


@settings(max_examples=30, deadline=None)
@given(keys=st.sets(st.text(KEY_CHARS, min_size=1, max_size=6), max_size=20))
def test_version_ranges_keep_each_keys_versions_together(keys: set[str]) -> None:
    async def go() -> tuple[list[tuple[str, str]], MemoryStore]:
        store = await store_with(keys, versioned=True, copies=3)
        return await listed(store, "", 2, versions=True), store

    rows, store = asyncio.run(go())
    assert [key for key, _ in rows] == [k for k in sorted(keys) for _ in range(3)]
    for key in keys:  # newest first, as ListObjectVersions lists them
        stored = [v.version_id for v in store._buckets["b"][key]]
        assert [v for k, v in rows if k == key] == stored[::-1]


def test_plan_cuts_at_common_prefixes_up_to_the_concurrency() -> None:
    async def go(concurrency: int) -> list[KeyRange]:
        store = await store_with({"a/x/1", "a/y/2", "b/3", "c"})
        return await plan_ranges(store, "b", concurrency=concurrency)

    assert asyncio.run(go(16)) == [
        KeyRange(None, "a/"), KeyRange("a/", "a/x/"), KeyRange("a/x/", "a/y/"),
        KeyRange("a/y/", "b/"), KeyRange("b/", None),
    ]  # fmt: skip
    # Two boundaries one level down are enough for two listings: no second level is asked.
    assert asyncio.run(go(2)) == [KeyRange(None, "a/"), KeyRange("a/", "b/"), KeyRange("b/", None)]


def test_run_ranges_is_bounded_and_answers_in_range_order() -> None:
    ranges = [KeyRange(None, "b"), KeyRange("b", "c"), KeyRange("c", "d"), KeyRange("d", None)]
    in_flight, peak = 0, 0

    async def one(r: KeyRange) -> str:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01 if r.lower is None else 0)  # the first range finishes last
        in_flight -= 1
        return r.lower or "-"

    assert asyncio.run(run_ranges(ranges, one, 2)) == ["-", "b", "c", "d"]
    assert peak == 2


def test_a_failed_range_cancels_the_others() -> None:
    ranges = [KeyRange(None, "m"), KeyRange("m", None)]
    cancelled = asyncio.Event()

    async def one(r: KeyRange) -> None:
        if r.lower is None:
            try:
                await asyncio.sleep(WAIT_S)
            except asyncio.CancelledError:
                cancelled.set()
                raise
        else:
            await asyncio.sleep(0)
            raise StorageError("InternalError", "listing failed")

    async def go() -> None:
        with pytest.raises(StorageError, match="listing failed"):
            await run_ranges(ranges, one, 2)
        assert cancelled.is_set()  # before the error came out, not after

    asyncio.run(go())
