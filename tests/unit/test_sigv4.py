"""SigV4 verification against signatures botocore itself produces (header and presigned)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from s3batch.api import sigv4

AKID, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
BASE = "http://127.0.0.1:8080"
BODY = b"<CreateJobRequest xmlns='http://awss3control.amazonaws.com/doc/2018-08-20/'/>"
#: When botocore signs in these tests, and therefore the server's "now".
SIGNED_AT = datetime(2026, 11, 22, 11, 12, 4)


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("botocore.auth.get_current_datetime", lambda *a, **k: SIGNED_AT)


def now(delta: timedelta = timedelta()) -> datetime:
    return SIGNED_AT.replace(tzinfo=UTC) + delta


def signed(
    method: str = "POST",
    url: str = BASE + "/v20180820/jobs",
    body: bytes = BODY,
    secret: str = SECRET,
    signer: type[SigV4Auth] = S3SigV4Auth,
    service: str = "s3",
    headers: dict[str, str] | None = None,
    sign_payload: bool = True,
) -> sigv4.Request:
    """A request botocore signed, in the form the server sees it."""
    request = AWSRequest(
        method=method, url=url, data=body, headers={"x-amz-account-id": "111122223333", **(headers or {})}
    )
    request.context["client_config"] = Config(s3={"payload_signing_enabled": sign_payload})
    auth: Any = signer(Credentials(AKID, secret), service, "us-east-1")
    if signer is S3SigV4QueryAuth:
        auth = signer(Credentials(AKID, secret), service, "us-east-1", expires=300)
    auth.add_auth(request)
    prepared = request.prepare()
    parts = urlsplit(prepared.url)
    host = [("host", parts.netloc)]
    return sigv4.Request(
        method=method,
        raw_path=parts.path,
        raw_query=parts.query,
        headers=host + [(k, v) for k, v in prepared.headers.items()],
        body=_bytes(prepared.body),
    )


def _bytes(body: Any) -> bytes:
    if body is None:
        return b""
    return body.encode() if isinstance(body, str) else bytes(body)


def secrets(key: str) -> str | None:
    return SECRET if key == AKID else None


def rejected(request: sigv4.Request, at: datetime | None = None) -> sigv4.SigV4Error:
    with pytest.raises(sigv4.SigV4Error) as caught:
        sigv4.verify(request, secrets, at or now())
    return caught.value


# -- accepted -----------------------------------------------------------------------------------


def test_header_form_with_body_verifies() -> None:
    assert sigv4.verify(signed(), secrets, now()) == AKID


def test_query_parameters_with_spaces_and_repeats_verify() -> None:
    url = BASE + "/v20180820/jobs/abc-123/status?requestedJobStatus=Ready&statusUpdateReason=go%20now%2Bthen"
    assert sigv4.verify(signed(url=url, body=b""), secrets, now()) == AKID
    listing = BASE + "/v20180820/jobs?jobStatuses=Active&jobStatuses=Complete&maxResults=5&nextToken=1.5%3Aab"
    assert sigv4.verify(signed("GET", listing, b""), secrets, now()) == AKID


def test_encoded_path_verifies() -> None:
    url = BASE + "/v20180820/jobs/a%20b~c/tagging"
    assert sigv4.verify(signed("GET", url, b""), secrets, now()) == AKID


def test_presigned_form_verifies_within_its_lifetime() -> None:
    request = signed("GET", BASE + "/v20180820/jobs?maxResults=5", b"", signer=S3SigV4QueryAuth)
    assert "X-Amz-Signature=" in request.raw_query
    assert not any(k.lower() == "authorization" for k, _ in request.headers)
    assert sigv4.verify(request, secrets, now(timedelta(seconds=299))) == AKID


def test_unsigned_payload_is_accepted_when_signed_as_such() -> None:
    request = signed(url="https://127.0.0.1/v20180820/jobs", sign_payload=False)
    assert sigv4.header(request.headers, "x-amz-content-sha256") == "UNSIGNED-PAYLOAD"
    assert sigv4.verify(request, secrets, now()) == AKID


def test_aws_test_suite_get_vanilla_signature() -> None:
    """AWS's published SigV4 test vector (service "service"), for the signing primitives."""
    request = sigv4.Request(
        "GET", "/", "", [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")], b""
    )
    canonical = sigv4.canonical_request(
        request,
        ["host", "x-amz-date"],
        [],
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    )
    credential = sigv4.Credential(AKID, "20150830", "us-east-1", "service")
    to_sign = sigv4.string_to_sign(datetime(2015, 8, 30, 12, 36, tzinfo=UTC), credential, canonical)
    expected = "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    assert sigv4.signature(SECRET, credential, to_sign) == expected


# -- rejected -----------------------------------------------------------------------------------


def test_unsigned_request_is_access_denied() -> None:
    request = signed()
    anonymous = sigv4.Request(
        request.method,
        request.raw_path,
        request.raw_query,
        [(k, v) for k, v in request.headers if k.lower() != "authorization"],
        request.body,
    )
    error = rejected(anonymous)
    assert (error.code, error.http_status) == ("AccessDenied", 403)


def test_unknown_access_key() -> None:
    with pytest.raises(sigv4.SigV4Error) as caught:
        sigv4.verify(signed(), lambda key: None, now())
    assert (caught.value.code, caught.value.http_status) == ("InvalidAccessKeyId", 403)


def test_wrong_secret_is_signature_mismatch() -> None:
    error = rejected(signed(secret="not-the-secret"))
    assert (error.code, error.http_status) == ("SignatureDoesNotMatch", 403)


def test_tampered_body_fails_the_payload_hash() -> None:
    request = signed()
    tampered = sigv4.Request(
        request.method, request.raw_path, request.raw_query, request.headers, BODY + b" "
    )
    error = rejected(tampered)
    assert (error.code, error.http_status) == ("XAmzContentSHA256Mismatch", 400)


def test_tampered_body_with_recomputed_hash_fails_the_signature() -> None:
    import hashlib

    request = signed()
    body = BODY.replace(b"CreateJob", b"CreateJxb")
    headers = [
        (k, hashlib.sha256(body).hexdigest() if k.lower() == "x-amz-content-sha256" else v)
        for k, v in request.headers
    ]
    error = rejected(sigv4.Request(request.method, request.raw_path, request.raw_query, headers, body))
    assert error.code == "SignatureDoesNotMatch"


def test_tampered_query_fails_the_signature() -> None:
    request = signed(url=BASE + "/v20180820/jobs/x/priority?priority=5", body=b"")
    forged = sigv4.Request(request.method, request.raw_path, "priority=500", request.headers, b"")
    assert rejected(forged).code == "SignatureDoesNotMatch"


def test_tampered_signed_header_fails_the_signature() -> None:
    request = signed()
    headers = [(k, "999999999999" if k == "x-amz-account-id" else v) for k, v in request.headers]
    forged = sigv4.Request(request.method, request.raw_path, request.raw_query, headers, request.body)
    assert rejected(forged).code == "SignatureDoesNotMatch"


@pytest.mark.parametrize("skew", [timedelta(minutes=16), -timedelta(minutes=16)])
def test_clock_skew_beyond_15_minutes(skew: timedelta) -> None:
    error = rejected(signed(), now(skew))
    assert (error.code, error.http_status) == ("RequestTimeTooSkewed", 403)


def test_clock_skew_within_15_minutes_is_fine() -> None:
    assert sigv4.verify(signed(), secrets, now(timedelta(minutes=14))) == AKID


def test_expired_presigned_request() -> None:
    request = signed("GET", BASE + "/v20180820/jobs", b"", signer=S3SigV4QueryAuth)
    error = rejected(request, now(timedelta(seconds=301)))
    assert (error.code, error.message) == ("AccessDenied", "Request has expired")


def test_presigned_with_wrong_secret() -> None:
    request = signed("GET", BASE + "/v20180820/jobs", b"", secret="nope", signer=S3SigV4QueryAuth)
    assert rejected(request).code == "SignatureDoesNotMatch"


def test_credential_for_another_service_is_refused() -> None:
    error = rejected(signed(service="s3-control", signer=SigV4Auth))
    assert error.code == "AccessDenied" and "service" in error.message


def test_malformed_authorization_header() -> None:
    request = signed()
    headers = [
        (k, "AWS4-HMAC-SHA256 Credential=x" if k.lower() == "authorization" else v)
        for k, v in request.headers
    ]
    bad = sigv4.Request(request.method, request.raw_path, request.raw_query, headers, request.body)
    assert rejected(bad).code == "AccessDenied"


def test_other_algorithms_are_refused() -> None:
    request = signed()
    headers = [(k, "AWS AKID:sig" if k.lower() == "authorization" else v) for k, v in request.headers]
    bad = sigv4.Request(request.method, request.raw_path, request.raw_query, headers, request.body)
    assert rejected(bad).code == "AccessDenied"


def test_canonical_forms() -> None:
    assert sigv4.canonical_query([("b", "x y"), ("a", "2"), ("a", "1")]) == "a=1&a=2&b=x%20y"
    assert sigv4.canonical_uri("/a%20b/c~d/e%2Ff") == "/a%20b/c~d/e%2Ff"
    assert sigv4.canonical_uri("") == "/"
    headers = [("X-Multi", " a  b "), ("x-multi", "c"), ("Host", "h")]
    assert sigv4.canonical_headers(headers, ["host", "x-multi"]) == "host:h\nx-multi:a b,c\n"
