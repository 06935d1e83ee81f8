"""The lean path's SigV4 signing, checked by the project's own server-side verifier and
against botocore's signer; its key/query encoding against urllib; its error mapping."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast
from urllib.parse import quote

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from s3batch.api import sigv4
from s3batch.errors import StorageError
from s3batch.storage.s3.http1 import ConnectionPool, Response
from s3batch.storage.s3.lean import (
    Credentials,
    Fallback,
    LeanS3,
    Route,
    Signer,
    encode_path,
    encode_query,
    error_from,
)

AKID, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
HOST = "127.0.0.1:9000"
SIGNED_AT = datetime(2026, 11, 22, 11, 12, 4, tzinfo=UTC)

ODD_KEYS = [
    "plain.txt",
    "with space.txt",
    "plus+sign.txt",
    "100% done.txt",
    "%2B already encoded",
    "eq=uals&amp;and?query#frag",
    "~tilde-_.",
    "ünïcødé/ключ/日本.txt",
    "/leading/slash",
    "double//slash",
    "trailing/",
    "dot/./and/../segments",
    "emoji 🪣 key",
    "tab\tand\nnewline",
    "k" * 1024,
]


class RecordingPool:
    """Stands in for ConnectionPool: keeps the serialized request, answers `response`."""

    def __init__(self, response: Response | None = None, *, tamper_proof: bool = True) -> None:
        self.sent: list[bytes] = []
        self.response = response or Response(200, {}, b"")
        self.tamper_proof = tamper_proof

    async def request(
        self,
        data: bytes,
        *,
        head_only: bool = False,
        retry_stale: bool = True,
        stream_over: int | None = None,
        body: bytes | bytearray | memoryview = b"",
    ) -> Response:
        self.sent.append(data + bytes(body))
        return self.response


def route(prefix: str = "/bucket/", response: Response | None = None) -> tuple[Route, RecordingPool]:
    pool = RecordingPool(response)
    return Route(cast(ConnectionPool, pool), HOST, prefix), pool


def lean(token: str | None = None, secret: str = SECRET) -> LeanS3:
    async def credentials() -> Credentials:
        return Credentials(AKID, secret, token)

    return LeanS3(Signer("us-east-1"), credentials)


def as_received(data: bytes) -> sigv4.Request:
    """The serialized request as the server's verifier sees it."""
    head, _, body = data.partition(b"\r\n\r\n")
    request_line, *header_lines = head.decode().split("\r\n")
    method, target, version = request_line.split(" ")
    assert version == "HTTP/1.1"
    raw_path, _, raw_query = target.partition("?")
    headers = [(name, value.lstrip()) for name, _, value in (line.partition(":") for line in header_lines)]
    assert int(sigv4.header(headers, "content-length") or -1) == len(body)
    return sigv4.Request(method=method, raw_path=raw_path, raw_query=raw_query, headers=headers, body=body)


def verify(request: sigv4.Request, secret: str = SECRET) -> str:
    amz_date = sigv4.parse_amz_date(sigv4.header(request.headers, "x-amz-date") or "")
    return sigv4.verify(request, lambda akid: secret if akid == AKID else None, now=amz_date)


async def send(
    client: LeanS3,
    method: str,
    key: str | None,
    query: Sequence[tuple[str, str]] = (),
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    prefix: str = "/bucket/",
) -> sigv4.Request:
    r, pool = route(prefix)
    await client.request(r, method, key, query, headers, body)
    (data,) = pool.sent
    return as_received(data)


# -- signatures the server-side verifier accepts -----------------------------------------------


@pytest.mark.parametrize("key", ODD_KEYS)
async def test_odd_keys_verify(key: str) -> None:
    request = await send(lean(), "DELETE", key)
    assert request.raw_path == "/bucket/" + quote(key, safe="/~")
    assert verify(request) == AKID


@pytest.mark.parametrize("prefix", ["/bucket/", "/"], ids=["path-style", "virtual-hosted"])
async def test_bucket_level_request_verifies(prefix: str) -> None:
    request = await send(lean(), "GET", None, [("list-type", "2"), ("prefix", "")], prefix=prefix)
    assert request.raw_path == ("/bucket" if prefix == "/bucket/" else "/")
    assert verify(request) == AKID


async def test_query_with_empty_values_and_special_characters_verifies() -> None:
    query = [
        ("tagging", ""),
        ("versionId", "a+b/c=d~e é&f"),
        ("prefix", "dir with space/100%/"),
        ("start-after", "ключ#?"),
        ("continuation-token", "1/abc+def=="),
    ]
    request = await send(lean(), "GET", "k", query)
    assert "+" not in request.raw_query and " " not in request.raw_query
    assert sorted(sigv4.parse_query(request.raw_query)) == sorted(query)
    assert verify(request) == AKID


async def test_session_token_is_sent_and_signed() -> None:
    request = await send(lean(token="FQoGZXIvYXdzE//token+with/chars=="), "DELETE", "k")
    assert sigv4.header(request.headers, "x-amz-security-token") == "FQoGZXIvYXdzE//token+with/chars=="
    authorization = sigv4.header(request.headers, "authorization") or ""
    assert "x-amz-security-token" in authorization
    assert verify(request) == AKID


async def test_body_is_hashed_into_the_signature() -> None:
    body = b"<Tagging><TagSet><Tag><Key>a</Key><Value>b</Value></Tag></TagSet></Tagging>"
    request = await send(lean(), "PUT", "k", [("tagging", "")], {"content-md5": "x"}, body)
    assert sigv4.header(request.headers, "x-amz-content-sha256") == hashlib.sha256(body).hexdigest()
    assert verify(request) == AKID
    tampered = sigv4.Request(
        request.method, request.raw_path, request.raw_query, request.headers, body.replace(b"b", b"c")
    )
    with pytest.raises(sigv4.SigV4Error) as caught:
        verify(tampered)
    assert caught.value.code == "XAmzContentSHA256Mismatch"


@pytest.mark.parametrize("size", [1000, 1_000_000])
@pytest.mark.parametrize(
    ("checksummed", "tamper_proof", "unsigned"),
    [(True, True, True), (True, False, False), (False, True, False), (False, False, False)],
)
async def test_a_checksummed_body_goes_unsigned_only_where_nobody_can_change_it(
    checksummed: bool, tamper_proof: bool, unsigned: bool, size: int
) -> None:
    # 1,000,000 bytes go to the pool apart from the head (SEPARATE_BODY_MIN_BYTES), the same
    # bytes on the wire.
    body = bytearray(b"part bytes" * (size // 10))
    headers = {"x-amz-checksum-crc32c": "AAAAAA=="}
    pool = RecordingPool(tamper_proof=tamper_proof)
    r = Route(cast(ConnectionPool, pool), HOST, "/bucket/")
    await lean().request(r, "PUT", "k", (), headers, body, checksummed=checksummed)
    request = as_received(pool.sent[0])
    claimed = sigv4.header(request.headers, "x-amz-content-sha256")
    assert claimed == ("UNSIGNED-PAYLOAD" if unsigned else hashlib.sha256(body).hexdigest())
    assert verify(request) == AKID
    # The checksum header stays signed either way: changing it breaks the signature.
    forged = [(n, "BBBBBB==" if n == "x-amz-checksum-crc32c" else v) for n, v in request.headers]
    with pytest.raises(sigv4.SigV4Error):
        verify(sigv4.Request(request.method, request.raw_path, request.raw_query, forged, request.body))


@pytest.mark.parametrize(
    ("host", "tls", "tamper_proof"),
    [
        ("127.0.0.1", False, True),
        ("127.8.9.10", False, True),
        ("::1", False, True),
        ("[::1]", False, True),
        ("localhost", False, True),
        ("10.0.0.5", False, False),
        ("minio.internal", False, False),
        ("127.0.0.1.example.com", False, False),
        ("s3.amazonaws.com", True, True),
        ("10.0.0.5", True, True),
    ],
)
def test_pool_is_tamper_proof_over_tls_or_loopback(host: str, tls: bool, tamper_proof: bool) -> None:
    pool = ConnectionPool(host, 443, tls=tls, max_connections=1, connect_timeout_s=1, read_timeout_s=1)
    assert pool.tamper_proof is tamper_proof


async def test_extra_headers_are_signed() -> None:
    headers = {"x-amz-copy-source": "src/%C3%BC%20k", "x-amz-metadata-directive": "COPY"}
    request = await send(lean(), "PUT", "dst", headers=headers)
    authorization = sigv4.header(request.headers, "authorization") or ""
    assert "x-amz-copy-source" in authorization and "x-amz-metadata-directive" in authorization
    assert verify(request) == AKID
    altered = [
        (name, "other/key" if name == "x-amz-copy-source" else value) for name, value in request.headers
    ]
    with pytest.raises(sigv4.SigV4Error):
        verify(sigv4.Request(request.method, request.raw_path, request.raw_query, altered, request.body))


async def test_header_values_with_inner_spaces_verify() -> None:
    """SigV4 canonicalises header values with runs of spaces collapsed (botocore, S3)."""
    request = await send(lean(), "PUT", "k", headers={"x-amz-meta-note": "  two  spaces\tand tab "})
    assert verify(request) == AKID


async def test_wrong_secret_fails() -> None:
    request = await send(lean(secret="not-the-secret"), "DELETE", "k")
    with pytest.raises(sigv4.SigV4Error) as caught:
        verify(request)
    assert caught.value.code == "SignatureDoesNotMatch"


async def test_tampered_path_fails() -> None:
    request = await send(lean(), "DELETE", "k1")
    moved = sigv4.Request(request.method, "/bucket/k2", request.raw_query, request.headers, request.body)
    with pytest.raises(sigv4.SigV4Error):
        verify(moved)


@settings(max_examples=150, deadline=None)
@given(
    key=st.text(min_size=1, max_size=60),
    value=st.text(max_size=30),
    body=st.binary(max_size=64),
)
def test_any_key_query_and_body_verify(key: str, value: str, body: bytes) -> None:
    request = asyncio.run(
        send(lean(token="tok"), "PUT", key, [("versionId", value), ("tagging", "")], body=body)
    )
    assert verify(request) == AKID


# -- the same Authorization header as botocore -------------------------------------------------


@pytest.mark.parametrize(
    ("method", "key", "query", "headers", "body", "token"),
    [
        ("DELETE", "with space/ünï+%.txt", [("versionId", "v+1/=")], {}, b"", None),
        ("PUT", "k~1", [("tagging", "")], {"content-md5": "1B2M2Y8AsgTpgAmY7PhCfg=="}, b"<Tagging/>", "tok"),
        (
            "PUT",
            "dst key",
            [],
            {"x-amz-copy-source": "b/src%20key", "x-amz-tagging-directive": "COPY"},
            b"",
            None,
        ),
        ("GET", None, [("list-type", "2"), ("prefix", "a b/"), ("encoding-type", "url")], {}, b"", "t"),
        ("PUT", "k", [], {"x-amz-meta-note": " two  spaces\tand tab "}, b"", None),
    ],
    ids=["delete", "put-tagging", "copy", "list", "inner-spaces"],
)
def test_authorization_equals_botocore(
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    key: str | None,
    query: list[tuple[str, str]],
    headers: dict[str, str],
    body: bytes,
    token: str | None,
) -> None:
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda *a, **k: SIGNED_AT.replace(tzinfo=None))
    path = "/bucket" if key is None else "/bucket/" + encode_path(key)
    qs = encode_query(query)
    url = f"http://{HOST}{path}" + (f"?{qs}" if qs else "")
    boto_request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
    S3SigV4Auth(BotoCredentials(AKID, SECRET, token), "s3", "us-east-1").add_auth(boto_request)

    amz_date = SIGNED_AT.strftime("%Y%m%dT%H%M%SZ")
    payload_hash = hashlib.sha256(body).hexdigest()
    signed = {"host": HOST, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date, **headers}
    if token:
        signed["x-amz-security-token"] = token
    ours = Signer("us-east-1").authorization(
        Credentials(AKID, SECRET, token), method, path, qs, signed, payload_hash, amz_date
    )
    assert boto_request.headers["X-Amz-Date"] == amz_date
    assert boto_request.headers["X-Amz-Content-SHA256"] == payload_hash
    assert ours == boto_request.headers["Authorization"]


def test_signing_key_cache_follows_secret_and_day() -> None:
    signer = Signer("us-east-1")
    args: Any = ("GET", "/b/k", "", {"host": HOST}, "UNSIGNED-PAYLOAD")
    one = signer.authorization(Credentials(AKID, "s1"), *args, "20261122T000000Z")
    two = signer.authorization(Credentials(AKID, "s2"), *args, "20261122T000000Z")
    next_day = signer.authorization(Credentials(AKID, "s2"), *args, "20261123T000000Z")
    again = signer.authorization(Credentials(AKID, "s1"), *args, "20261122T000000Z")
    assert len({one, two, next_day}) == 3
    assert again == one
    assert Signer("us-east-1").authorization(Credentials(AKID, "s2"), *args, "20261123T000000Z") == next_day


# -- encoding ----------------------------------------------------------------------------------


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_encode_path_is_quote(text: str) -> None:
    assert encode_path(text) == quote(text, safe="/~")


@settings(max_examples=300, deadline=None)
@given(st.text(), st.text())
def test_encode_query_part_is_quote(name: str, value: str) -> None:
    assert encode_query([(name, value)]) == f"{quote(name, safe='-_.~')}={quote(value, safe='-_.~')}"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)), max_size=6))
def test_encode_query_is_the_canonical_query(pairs: list[tuple[str, str]]) -> None:
    assert encode_query(pairs) == sigv4.canonical_query(pairs)


# -- error mapping -----------------------------------------------------------------------------


def error_body(code: str, message: str = "msg") -> bytes:
    return f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{message}</Message></Error>".encode()


@pytest.mark.parametrize(
    ("status", "body", "code", "retryable"),
    [
        (404, error_body("NoSuchKey"), "NoSuchKey", False),
        (404, error_body("NoSuchBucket"), "NoSuchBucket", False),
        (404, b"", "NoSuchKey", False),
        (403, b"", "AccessDenied", False),
        (403, error_body("SignatureDoesNotMatch"), "SignatureDoesNotMatch", False),
        (503, error_body("SlowDown"), "SlowDown", True),
        (500, b"<html>oops</html", "500", True),
        (409, error_body("OperationAborted"), "OperationAborted", True),
        (400, error_body("InvalidArgument"), "InvalidArgument", False),
    ],
)
def test_error_from_maps_codes(status: int, body: bytes, code: str, retryable: bool) -> None:
    error = error_from(Response(status, {}, body))
    assert isinstance(error, StorageError)
    assert (error.code, error.http_status, error.retryable) == (code, status, retryable)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (301, error_body("PermanentRedirect")),
        (307, b""),
        (400, error_body("AuthorizationHeaderMalformed")),
    ],
)
def test_error_from_redirects_fall_back(status: int, body: bytes) -> None:
    assert isinstance(error_from(Response(status, {}, body)), Fallback)


async def test_copy_answered_200_with_an_error_is_a_retryable_500() -> None:
    client = lean()
    r, _ = route(response=Response(200, {}, error_body("InternalError", "We encountered an internal error")))
    with pytest.raises(StorageError) as caught:
        await client.copy_object(r, "dst", "bucket/src", {})
    assert (caught.value.code, caught.value.http_status, caught.value.retryable) == (
        "InternalError",
        500,
        True,
    )


async def test_connection_failure_is_a_retryable_storage_error() -> None:
    from s3batch.storage.s3.http1 import HttpError

    class FailingPool(RecordingPool):
        async def request(
            self, data: bytes, *, head_only: bool = False, retry_stale: bool = True
        ) -> Response:
            raise HttpError("no answer within 1 s", sent=True, timeout=True)

    r = Route(cast(ConnectionPool, FailingPool()), HOST, "/bucket/")
    with pytest.raises(StorageError) as caught:
        await lean().delete_object(r, "k", None)
    assert (caught.value.code, caught.value.http_status, caught.value.retryable) == (
        "RequestTimeout",
        None,
        True,
    )


# -- request and answer bodies -----------------------------------------------------------------


async def test_delete_objects_body_round_trips_odd_keys_and_reads_per_key_errors() -> None:
    import base64
    import xml.etree.ElementTree as ET

    keys = ["a\r\nb", "<&>\"'", "tab\there", " spaced ", "ü"]
    answer = (
        b"<DeleteResult><Error><Key>&lt;&amp;&gt;\"'</Key><VersionId>v 1</VersionId>"
        b"<Code>AccessDenied</Code><Message>locked</Message></Error>"
        b"<Error><Key>tab\there</Key><Code>InternalError</Code></Error></DeleteResult>"
    )
    r, pool = route(response=Response(200, {}, answer))
    errors = await lean().delete_objects(r, [(k, "v 1" if k == "<&>\"'" else None) for k in keys])
    assert errors == [("<&>\"'", "v 1", "AccessDenied", "locked"), ("tab\there", None, "InternalError", "")]
    request = as_received(pool.sent[0])
    assert verify(request) == AKID
    assert request.raw_query == "delete="
    md5 = base64.b64encode(hashlib.md5(request.body).digest()).decode()
    assert sigv4.header(request.headers, "content-md5") == md5
    objects = ET.fromstring(request.body).findall("Object")
    assert [o.findtext("Key") for o in objects] == keys
    assert [o.findtext("VersionId") for o in objects] == [None, "v 1", None, None, None]


async def test_put_tagging_body_round_trips_odd_tags() -> None:
    import xml.etree.ElementTree as ET

    tags = {"a\r\nb": "<&>", "ключ": "значение +=/", "": ""}
    r, pool = route()
    await lean().put_tagging(r, "k", tags, "ver/1+")
    request = as_received(pool.sent[0])
    assert verify(request) == AKID
    assert sorted(sigv4.parse_query(request.raw_query)) == [("tagging", ""), ("versionId", "ver/1+")]
    sent = {t.findtext("Key"): t.findtext("Value") for t in ET.fromstring(request.body).iter("Tag")}
    assert sent == tags


async def test_list_page_decodes_url_encoded_keys() -> None:
    answer = (
        b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><EncodingType>url</EncodingType>'
        b"<IsTruncated>true</IsTruncated><NextContinuationToken>tok+/=</NextContinuationToken>"
        b"<Contents><Key>a+b%2Bc%25%C3%BC</Key><Size>3</Size><ETag>&quot;e&quot;</ETag></Contents>"
        b"<Contents><Key>plain</Key><Size>0</Size></Contents></ListBucketResult>"
    )
    r, pool = route(response=Response(200, {}, answer))
    entries, token = await lean().list_page(r, "b", [("prefix", "p q/")])
    assert [e.key for e in entries] == ["a b+c%ü", "plain"]
    assert (entries[0].size, entries[0].etag, entries[1].size) == (3, "e", 0)
    assert entries[1].storage_class == "STANDARD"
    assert token == "tok+/="
    request = as_received(pool.sent[0])
    assert dict(sigv4.parse_query(request.raw_query)) == {
        "list-type": "2",
        "encoding-type": "url",
        "prefix": "p q/",
    }


def test_tls_without_certificate_checks_is_not_tamper_proof() -> None:
    import ssl

    unchecked = ssl.create_default_context()
    unchecked.check_hostname = False
    unchecked.verify_mode = ssl.CERT_NONE
    pool = ConnectionPool(
        "s3.example.com", 443, tls=True, max_connections=1, connect_timeout_s=1, read_timeout_s=1,
        ssl_context=unchecked,
    )  # fmt: skip
    assert pool.tamper_proof is False
