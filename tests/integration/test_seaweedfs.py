"""s3batch on SeaweedFS, the test server that verifies SigV4 signatures: every call of the lean
request path (storage/s3/lean.py) with awkward keys is accepted and reads back as written, a
wrong secret is refused and reported as an error, and the operations SeaweedFS supports run as jobs.

What SeaweedFS 4.48 does not do like S3 (probed with boto3; also in docs/compatibility.md):
- keys are paths: a leading "/", "//" and "\\" are normalised ("/a//b" is listed as "a/b"), a
  key ending in "/" is a folder (it reads back empty), "." and ".." segments are refused, each
  segment is at most 255 bytes and a key may not be both an object and a prefix ("d", "d/x"):
  such keys are left out, except the normalised ones, which still prove the signing;
- S3InitiateRestoreObject (MethodNotAllowed), S3UpdateObjectEncryption (SSE-KMS copy:
  InternalError) and S3PutObjectRetention (removing a GOVERNANCE retention with the bypass
  header: InvalidRequest, so the capability probe cannot undo its own retention): tested as
  refused in Preparing;
- bucket replication configuration (none): tested as a per-task failure;
- a legal hold on a missing key answers 500 InternalError instead of 404 NoSuchKey: not tested.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from test_jobs import create, run
from test_lean_path import ODD_TAGS, Harness, open_harness
from test_operations_s3 import ALL_USERS, counts, failed_rows, run_job
from tests.seaweedfs import SeaweedFS

from conftest import Env, read_report
from s3batch.errors import StorageError
from s3batch.storage.base import VersionRef
from s3batch.storage.s3 import client as s3_client
from s3batch.storage.s3 import store as s3_store

pytestmark = pytest.mark.integration

#: Keys SeaweedFS keeps exactly as written: every character class SigV4 and the lean path
#: encode differently (reserved, unreserved, percent, plus, space, non-ASCII, XML-special,
#: control characters), alone and combined, and the longest key it allows.
KEYS = [
    "plain.txt",
    "with space.txt",
    "plus+sign.txt",
    "100% done.txt",
    "%2B already encoded",
    "tilde~and'quote\"",
    "ünïcødé/ключ/日本.txt",
    "what?.txt",
    "hash#tag",
    "amp&ersand",
    "eq=als",
    "q?h#a&e=.txt",
    "a?b#c&d=e f+g%h~i ü",
    "sp ace/ +%~/x",
    "<xml>&amp;</xml>",
    "semi;colon,comma:@$!*'()[]{}^|`",
    "tab\tcr\rlf\n",
    "emoji 🙂/é e\u0301",
    ("k" * 250 + "/") * 3 + "end",  # 756 bytes: segments of at most 255 bytes
]
#: Keys S3 allows but SeaweedFS stores as paths: signed calls on them must be accepted (SigV4
#: for S3 signs the path as sent, unnormalised), while the listing shows the normalised form.
NORMALISED_KEYS = {"/leading slash": "leading slash", "double//slash": "double/slash", "a//b///c": "a/b/c"}
#: Listing page size for the tests: a handful of keys spans several pages.
SMALL_PAGE_KEYS = 4


def body_of(key: str) -> bytes:
    return f"body of {key!r}".encode()


def keys_of(client: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def tags_of(client: Any, bucket: str, key: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]}


def use_identity(monkeypatch: pytest.MonkeyPatch, server: SeaweedFS, secret_key: str | None = None) -> None:
    """s3batch takes its credentials from the standard AWS environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret_key or server.secret_key)


@pytest.fixture
async def sw(
    seaweedfs_server: SeaweedFS, monkeypatch: pytest.MonkeyPatch, bucket_name: str
) -> AsyncIterator[Harness]:
    """An S3Store on SeaweedFS with the lean path on, recording which path carried each call."""
    use_identity(monkeypatch, seaweedfs_server)
    client = seaweedfs_server.client()
    client.create_bucket(Bucket=bucket_name)
    harness = await open_harness(True, monkeypatch, seaweedfs_server.endpoint, client, bucket_name)
    yield harness
    await harness.store.close()


def assert_only_lean(h: Harness, *operations: str) -> None:
    """The calls went out on the lean path, and the aiobotocore client was never even built."""
    h.assert_carried(*operations)
    assert h.store._shared is not None and h.store._shared.client is None


# -- the lean path, call by call -----------------------------------------------------------------


async def test_put_head_get_with_awkward_keys(sw: Harness) -> None:
    h = sw
    for i, key in enumerate(KEYS):
        await h.store.put_bytes(
            h.bucket, key, body_of(key), content_type="text/x-odd", metadata={"n": str(i)}
        )
    assert_only_lean(h, "put_object")
    for i, key in enumerate(KEYS):
        truth = h.client.get_object(Bucket=h.bucket, Key=key)
        assert truth["Body"].read() == body_of(key), key
        assert (truth["ContentType"], truth["Metadata"]) == ("text/x-odd", {"n": str(i)})

        info = await h.store.head(h.bucket, key)
        assert (info.key, info.size, info.etag) == (key, len(body_of(key)), truth["ETag"].strip('"'))
        assert await h.store.get_bytes(h.bucket, key) == body_of(key)
        first = [c async for c in h.store.iter_bytes(h.bucket, key, chunk_size=1 << 20)]
        assert first == [body_of(key)]
    assert_only_lean(h, "head_object", "get_object")
    assert h.client.list_objects_v2(Bucket=h.bucket)["KeyCount"] == len(KEYS)


async def test_tagging_put_get_delete_with_awkward_keys(sw: Harness) -> None:
    h = sw
    for key in KEYS:
        h.client.put_object(Bucket=h.bucket, Key=key, Body=body_of(key))
    for key in KEYS:
        await h.store.put_tags(h.bucket, key, ODD_TAGS)
    assert_only_lean(h, "put_object_tagging")
    for key in KEYS:
        assert tags_of(h.client, h.bucket, key) == ODD_TAGS, key
        assert await h.store.get_tags(h.bucket, key) == ODD_TAGS, key
    assert_only_lean(h, "get_object_tagging")
    for key in KEYS:
        await h.store.delete_tags(h.bucket, key)
    assert_only_lean(h, "delete_object_tagging")
    for key in KEYS:
        assert tags_of(h.client, h.bucket, key) == {}, key
        assert h.client.get_object(Bucket=h.bucket, Key=key)["Body"].read() == body_of(key)


async def test_copy_with_awkward_keys_keeps_body_and_tags(sw: Harness) -> None:
    h = sw
    other = h.bucket + "-dst"
    h.client.create_bucket(Bucket=other)
    for key in KEYS:
        h.client.put_object(Bucket=h.bucket, Key=key, Body=body_of(key), Tagging="t=1&name=with%20space")
    for key in KEYS:
        result = await h.store.copy(h.bucket, key, other, "copy ü+%/" + key)
        assert result.etag == h.client.head_object(Bucket=h.bucket, Key=key)["ETag"].strip('"')
    assert_only_lean(h, "copy_object")
    for key in KEYS:
        copied = h.client.get_object(Bucket=other, Key="copy ü+%/" + key)
        assert copied["Body"].read() == body_of(key), key
        assert tags_of(h.client, other, "copy ü+%/" + key) == {"t": "1", "name": "with space"}
    with pytest.raises(StorageError) as caught:
        await h.store.copy(h.bucket, "missing ü+%", other, "dst")
    assert (caught.value.code, caught.value.http_status) == ("NoSuchKey", 404)


async def test_listing_pages_prefixes_and_start_after(sw: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    h = sw
    monkeypatch.setattr(s3_store, "LIST_PAGE_MAX_KEYS", SMALL_PAGE_KEYS)
    for key in KEYS:
        h.client.put_object(Bucket=h.bucket, Key=key, Body=body_of(key))
    everything = sorted(KEYS)  # code point order is UTF-8 byte order, S3's listing order
    listed = [info async for info in h.store.list_objects(h.bucket)]
    assert [i.key for i in listed] == everything
    assert all(i.size == len(body_of(i.key)) and len(i.etag) == 32 for i in listed)
    pages = len(h.lean_requests)
    assert pages == -(-len(KEYS) // SMALL_PAGE_KEYS)  # continuation tokens followed to the end
    assert_only_lean(h, "list_objects_v2")

    # Prefixes and start-after values with the same awkward characters go in the query string.
    for prefix in ("sp ace/ +%", "a?b#c&d=e f+g%h", "ünïcødé/", "q?h#a&e=", "%2B", "100% "):
        expected = [k for k in everything if k.startswith(prefix)]
        assert expected, prefix
        assert [i.key async for i in h.store.list_objects(h.bucket, prefix=prefix)] == expected
    for after in ("a?b#c&d=e f+g%h~i ü", "semi;colon,comma:@$!*'()[]{}^|`", "tab\t"):
        expected = [k for k in everything if k > after]
        assert [i.key async for i in h.store.list_objects(h.bucket, start_after=after)] == expected, after
    assert [i.key async for i in h.store.list_objects(h.bucket, prefix="nothing/")] == []
    assert_only_lean(h, "list_objects_v2")

    # Delimited listings (list_prefixes) too, their prefixes URL-decoded, over several pages.
    h.lean_requests.clear()
    assert await h.store.list_prefixes(h.bucket) == sorted({k.split("/")[0] + "/" for k in KEYS if "/" in k})
    assert len(h.lean_requests) > 1  # continuation tokens followed to the end
    assert await h.store.list_prefixes(h.bucket, "sp ace/") == ["sp ace/ +%~/"]
    assert_only_lean(h, "list_objects_v2")


async def test_delete_and_delete_many_with_awkward_keys(sw: Harness) -> None:
    h = sw
    for key in [*KEYS, "keep"]:
        h.client.put_object(Bucket=h.bucket, Key=key, Body=body_of(key))
    half = len(KEYS) // 2
    for key in KEYS[:half]:
        await h.store.delete(h.bucket, key)
    await h.store.delete(h.bucket, "never existed ü+%")  # S3: no error
    refs = [VersionRef(k) for k in KEYS[half:]] + [VersionRef("missing ü+%"), VersionRef("missing/two")]
    assert await h.store.delete_many(h.bucket, refs) == [None] * len(refs)
    assert_only_lean(h, "delete_object", "delete_objects")
    assert keys_of(h.client, h.bucket) == ["keep"]


async def test_keys_seaweedfs_normalises_are_still_signed_right(sw: Harness) -> None:
    """A leading "/" and "//" stay in the signed path as S3 requires (SeaweedFS normalises the
    key only after checking the signature over the path as sent): a signer that normalised the
    path it signs but not the one it sends is refused with SignatureDoesNotMatch."""
    h = sw
    for key in NORMALISED_KEYS:
        await h.store.put_bytes(h.bucket, key, body_of(key))
        assert await h.store.get_bytes(h.bucket, key) == body_of(key)
        assert (await h.store.head(h.bucket, key)).size == len(body_of(key))
        await h.store.put_tags(h.bucket, key, {"k": "v"})
        assert await h.store.get_tags(h.bucket, key) == {"k": "v"}
        await h.store.copy(h.bucket, key, h.bucket, "copied/" + key)
    assert_only_lean(h, "put_object", "get_object", "head_object", "put_object_tagging", "copy_object")
    normalised = sorted(NORMALISED_KEYS.values())
    assert [i.key async for i in h.store.list_objects(h.bucket, prefix="copied/")] == [
        "copied/" + k for k in normalised
    ]
    for key in NORMALISED_KEYS:
        await h.store.delete(h.bucket, key)
    assert await h.store.delete_many(h.bucket, [VersionRef("copied/" + k) for k in NORMALISED_KEYS]) == [
        None
    ] * len(NORMALISED_KEYS)
    assert_only_lean(h, "list_objects_v2", "delete_object", "delete_objects")
    assert keys_of(h.client, h.bucket) == []


# -- the server really verifies signatures -------------------------------------------------------


async def test_a_wrong_secret_is_refused_on_every_lean_call(
    seaweedfs_server: SeaweedFS, monkeypatch: pytest.MonkeyPatch, bucket_name: str
) -> None:
    client = seaweedfs_server.client()
    client.create_bucket(Bucket=bucket_name)
    client.put_object(Bucket=bucket_name, Key="k ü+", Body=b"x")
    use_identity(monkeypatch, seaweedfs_server, secret_key="not-the-secret")
    h = await open_harness(True, monkeypatch, seaweedfs_server.endpoint, client, bucket_name)
    try:
        store, b, k = h.store, bucket_name, "k ü+"
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "put_object": lambda: store.put_bytes(b, "new", b"y"),
            "head_object": lambda: store.head(b, k),
            "get_object": lambda: store.get_bytes(b, k),
            "copy_object": lambda: store.copy(b, k, b, "copy"),
            "put_object_tagging": lambda: store.put_tags(b, k, {"a": "b"}),
            "get_object_tagging": lambda: store.get_tags(b, k),
            "delete_object_tagging": lambda: store.delete_tags(b, k),
            "delete_object": lambda: store.delete(b, k),
            "delete_objects": lambda: store.delete_many(b, [VersionRef(k)]),
            "list_objects_v2": lambda: anext(aiter(store.list_objects(b))),
        }
        for operation, call in calls.items():
            with pytest.raises(StorageError) as caught:
                await call()
            # A HEAD answer has no body to name the error: botocore calls a bare 403 AccessDenied.
            expected = "AccessDenied" if operation == "head_object" else "SignatureDoesNotMatch"
            assert caught.value.code == expected, operation
            assert (caught.value.http_status, caught.value.retryable) == (403, False), operation
            assert len(h.lean_requests) == 1, (operation, h.lean_requests)
            h.lean_requests.clear()
    finally:
        await h.store.close()
    assert keys_of(client, bucket_name) == ["k ü+"]
    assert client.get_object(Bucket=bucket_name, Key="k ü+")["Body"].read() == b"x"
    assert tags_of(client, bucket_name, "k ü+") == {}


def test_a_job_with_a_wrong_secret_fails_and_changes_nothing(
    seaweedfs_env: Env, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = seaweedfs_env
    env.make_bucket(bucket_name)
    env.put(bucket_name, "a b.txt", b"x")
    manifest = env.manifest(bucket_name, [(bucket_name, "a b.txt")])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    batch = env.batch()
    job_id = batch.create_job(
        Operation={"S3DeleteObject": {}}, Manifest=manifest, Report={"Enabled": False}, Priority=10
    )["JobId"]
    job = run(batch, job_id)
    assert job["Status"] == "Failed", job
    # The manifest's first call is a HEAD, whose 403 has no body to name SignatureDoesNotMatch.
    [reason] = job["FailureReasons"]
    assert reason["FailureCode"] == "ManifestReadError" and "AccessDenied" in reason["FailureReason"], reason
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == 0
    assert env.get(bucket_name, "a b.txt") == b"x"


# -- operations as jobs --------------------------------------------------------------------------

#: Manifest keys for the job tests: awkward, and each a single path segment or a plain folder.
JOB_KEYS = ["a b.txt", "c+d%e.txt", "ü/ключ?#&=.txt"]


def test_lean_jobs_never_build_a_botocore_client(
    seaweedfs_env: Env, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copy, tagging and delete jobs, manifest read and report written included, are signed by
    the lean path alone and accepted by a server that checks every signature."""
    env = seaweedfs_env
    built: list[str] = []
    real_create = s3_client._create_client

    def counting_create(*args: object) -> object:
        built.append("client")
        return real_create(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(s3_client, "_create_client", counting_create)
    env.make_bucket(bucket_name)
    for key in JOB_KEYS:
        env.put(bucket_name, key, body_of(key))
    rows = [(bucket_name, k) for k in [*JOB_KEYS, "missing"]]
    target = f"arn:aws:s3:::{bucket_name}"
    tag_set = [{"Key": "team", "Value": "data ü"}]
    for op in [
        {"S3PutObjectCopy": {"TargetResource": target, "TargetKeyPrefix": "copied"}},
        {"S3PutObjectTagging": {"TagSet": tag_set}},
        {"S3DeleteObjectTagging": {}},
        {"S3PutObjectTagging": {"TagSet": tag_set}},
    ]:
        batch, job_id = create(env, bucket_name, op, rows)
        job = run(batch, job_id)
        assert job["Status"] == "Complete", job
        assert counts(job) == (len(JOB_KEYS), 1), (op, job)
        assert failed_rows(env, bucket_name, job_id)["missing"][:3] == ["failed", "404", "NoSuchKey"]
        assert built == [], (next(iter(op)), built)
    for key in JOB_KEYS:
        assert env.get(bucket_name, "copied/" + key) == body_of(key)
        assert tags_of(env.client, bucket_name, key) == {"team": "data ü"}
    batch, job_id = create(env, bucket_name, {"S3DeleteObject": {}}, rows)
    assert counts(run(batch, job_id)) == (len(JOB_KEYS) + 1, 0)  # deleting a missing key succeeds
    assert built == []
    assert all(env.get(bucket_name, key) is None for key in JOB_KEYS)
    assert all(env.get(bucket_name, "copied/" + key) == body_of(key) for key in JOB_KEYS)


def test_acl_canned_and_grants(seaweedfs_env: Env, bucket_name: str) -> None:
    env = seaweedfs_env
    env.make_bucket(bucket_name)
    env.put(bucket_name, "a b.txt", b"a")
    canned = {"S3PutObjectAcl": {"AccessControlPolicy": {"CannedAccessControlList": "public-read"}}}
    job, _ = run_job(env, bucket_name, canned, ["a b.txt"])
    assert counts(job) == (1, 0)
    grants = env.client.get_object_acl(Bucket=bucket_name, Key="a b.txt")["Grants"]
    assert (ALL_USERS, "READ") in {(g["Grantee"].get("URI"), g["Permission"]) for g in grants}

    private = {"S3PutObjectAcl": {"AccessControlPolicy": {"CannedAccessControlList": "private"}}}
    job, _ = run_job(env, bucket_name, private, ["a b.txt"])
    grants = env.client.get_object_acl(Bucket=bucket_name, Key="a b.txt")["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"]
    assert env.get(bucket_name, "a b.txt") == b"a"  # the object is untouched


def test_legal_hold_on_and_off_in_a_lock_bucket(seaweedfs_env: Env, bucket_name: str) -> None:
    env = seaweedfs_env
    env.client.create_bucket(Bucket=bucket_name, ObjectLockEnabledForBucket=True)
    env.put(bucket_name, "k ü+", b"x")
    job, _ = run_job(env, bucket_name, {"S3PutObjectLegalHold": {"LegalHold": {"Status": "ON"}}}, ["k ü+"])
    assert counts(job) == (1, 0)
    hold = env.client.get_object_legal_hold(Bucket=bucket_name, Key="k ü+")["LegalHold"]["Status"]
    assert hold == "ON"
    run_job(env, bucket_name, {"S3PutObjectLegalHold": {"LegalHold": {"Status": "OFF"}}}, ["k ü+"])
    hold = env.client.get_object_legal_hold(Bucket=bucket_name, Key="k ü+")["LegalHold"]["Status"]
    assert hold == "OFF"
    assert env.get(bucket_name, "k ü+") == b"x"


def test_versioned_delete_removes_only_the_listed_version(seaweedfs_env: Env, bucket_name: str) -> None:
    env = seaweedfs_env
    env.make_bucket(bucket_name)
    env.client.put_bucket_versioning(Bucket=bucket_name, VersioningConfiguration={"Status": "Enabled"})
    old = env.client.put_object(Bucket=bucket_name, Key="v ü+", Body=b"old")["VersionId"]
    new = env.client.put_object(Bucket=bucket_name, Key="v ü+", Body=b"new")["VersionId"]
    batch = env.batch()
    body = f"{bucket_name},v+%C3%BC%2B,{old}\n".encode()
    manifest = env.raw_manifest(bucket_name, body)
    manifest["Spec"]["Fields"] = ["Bucket", "Key", "VersionId"]
    job_id = batch.create_job(
        Operation={"S3DeleteObject": {}}, Manifest=manifest, Report={"Enabled": False}, Priority=10
    )["JobId"]
    job = run(batch, job_id)
    assert job["Status"] == "Complete" and counts(job) == (1, 0), job
    versions = env.client.list_object_versions(Bucket=bucket_name, Prefix="v ")["Versions"]
    assert [v["VersionId"] for v in versions] == [new]
    assert env.get(bucket_name, "v ü+") == b"new"


def test_checksum_matches_the_server_and_an_independent_value(seaweedfs_env: Env, bucket_name: str) -> None:
    env = seaweedfs_env
    env.make_bucket(bucket_name)
    body = bytes(range(256)) * 300
    env.client.put_object(Bucket=bucket_name, Key="c ü+.bin", Body=body, ChecksumAlgorithm="CRC32")
    stored = env.client.head_object(Bucket=bucket_name, Key="c ü+.bin", ChecksumMode="ENABLED")[
        "ChecksumCRC32"
    ]
    expected = {
        "CRC32": base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode(),
        "SHA256": base64.b64encode(hashlib.sha256(body).digest()).decode(),
    }
    assert stored == expected["CRC32"]
    for algorithm, checksum in expected.items():
        op = {"S3ComputeObjectChecksum": {"ChecksumAlgorithm": algorithm, "ChecksumType": "FULL_OBJECT"}}
        job, job_id = run_job(env, bucket_name, op, ["c ü+.bin"])
        assert counts(job) == (1, 0)
        [row] = read_report(env, bucket_name, job_id)["rows"]["succeeded"]
        assert json.loads(row[6])["checksum"] == checksum, row


#: Operations SeaweedFS 4.48 cannot do (see the module docstring): s3batch must refuse them in
#: Preparing, before any object is touched, rather than fail or damage every object.
UNSUPPORTED = {
    "restore": {"S3InitiateRestoreObject": {"ExpirationInDays": 1}},
    "retention": {"S3PutObjectRetention": {"Retention": {}}},
    "encryption": {
        "S3UpdateObjectEncryption": {
            "ObjectEncryption": {"SSEKMS": {"KMSKeyArn": "arn:aws:kms:us-east-1:123456789012:key/k"}}
        }
    },
}


@pytest.mark.parametrize("op", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_what_seaweedfs_cannot_do_is_refused_in_preparing(
    seaweedfs_env: Env, bucket_name: str, op: dict[str, Any]
) -> None:
    env = seaweedfs_env
    env.client.create_bucket(Bucket=bucket_name, ObjectLockEnabledForBucket=True)
    env.put(bucket_name, "a b.txt", b"a")
    batch, job_id = create(env, bucket_name, op, [(bucket_name, "a b.txt")])
    job = run(batch, job_id)
    assert job["Status"] == "Failed", job
    [reason] = job["FailureReasons"]
    assert reason["FailureCode"] == "EndpointCapability", reason
    assert counts(job) == (0, 0)
    assert env.get(bucket_name, "a b.txt") == b"a"


def test_replicate_to_a_named_destination_but_not_by_bucket_configuration(
    seaweedfs_env: Env, bucket_name: str
) -> None:
    env = seaweedfs_env
    dst = bucket_name + "-dst"
    env.make_bucket(bucket_name)
    env.make_bucket(dst)
    env.client.put_object(Bucket=bucket_name, Key="r ü+.txt", Body=b"data", Tagging="color=blue")
    job, job_id = run_job(env, bucket_name, {"S3ReplicateObject": {}}, ["r ü+.txt"])
    assert counts(job) == (0, 1)  # SeaweedFS has no bucket replication configuration
    assert (
        failed_rows(env, bucket_name, job_id)["r+%C3%BC%2B.txt"][2] == "ReplicationConfigurationNotFoundError"
    )

    op = {"S3ReplicateObject": {"DestinationBucket": f"arn:aws:s3:::{dst}"}}
    job, _ = run_job(env, bucket_name, op, ["r ü+.txt"])
    assert counts(job) == (1, 0)
    assert env.get(dst, "r ü+.txt") == b"data"
    assert tags_of(env.client, dst, "r ü+.txt") == {"color": "blue"}
