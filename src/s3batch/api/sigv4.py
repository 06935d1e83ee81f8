"""AWS Signature Version 4 verification, as S3 does it (signing name `s3`).

Written from the AWS SigV4 documentation ("Create a canonical request", "Authenticating
Requests: Using Query Parameters"), in both forms:

- header form: `Authorization: AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/s3/aws4_request,
  SignedHeaders=a;b, Signature=hex`, with `X-Amz-Date` (or `Date`) and, for S3,
  `X-Amz-Content-SHA256`, which must equal the body's SHA-256 unless it is UNSIGNED-PAYLOAD;
- query (presigned) form: `X-Amz-Algorithm`, `X-Amz-Credential`, `X-Amz-Date`, `X-Amz-Expires`,
  `X-Amz-SignedHeaders`, `X-Amz-Signature`; the payload is UNSIGNED-PAYLOAD (S3's rule).

S3 canonical URIs are the path encoded once, not normalized (no `.`/`..` folding, no double
encoding); each segment is decoded then re-encoded so equivalent spellings compare equal.
Signatures are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
#: How far a request's timestamp may be from the server clock (AWS: 15 minutes).
MAX_CLOCK_SKEW = timedelta(minutes=15)
#: Longest lifetime of a presigned request, in seconds (AWS: 7 days).
MAX_PRESIGN_EXPIRES_S = 7 * 24 * 3600
_AUTH_FIELDS = re.compile(r"(\w+)=([^,\s]*)")
_UNRESERVED = "-_.~"
_SPACES = re.compile(r"\s+")


class SigV4Error(Exception):
    """A request that fails authentication, with the S3 error code and HTTP status."""

    def __init__(self, code: str, message: str, http_status: int = 403) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status


def access_denied(message: str) -> SigV4Error:
    return SigV4Error("AccessDenied", message)


@dataclass(frozen=True, slots=True)
class Request:
    """What verification needs of an HTTP request, as received (path and query still encoded)."""

    method: str
    raw_path: str
    raw_query: str
    headers: list[tuple[str, str]]  # names in any case; repeated names allowed
    body: bytes


@dataclass(frozen=True, slots=True)
class Credential:
    access_key: str
    date: str  # YYYYMMDD
    region: str
    service: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{TERMINATOR}"


@dataclass(frozen=True, slots=True)
class _Signed:
    """The parts of a signed request, whichever form it came in."""

    credential: Credential
    amz_date: datetime
    signed_headers: list[str]
    signature: str
    payload_hash: str
    query: list[tuple[str, str]]  # decoded, the signature itself left out


#: Looks up the secret for an access key; None when the key is unknown.
SecretLookup = Callable[[str], str | None]


def verify(request: Request, secret_for: SecretLookup, now: datetime | None = None) -> str:
    """Check the request's SigV4 signature; return its access key. Raises SigV4Error."""
    now = now or datetime.now(UTC)
    signed = _signed_parts(request, now)
    secret = secret_for(signed.credential.access_key)
    if secret is None:
        raise SigV4Error(
            "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."
        )
    canonical = canonical_request(request, signed.signed_headers, signed.query, signed.payload_hash)
    expected = signature(
        secret, signed.credential, string_to_sign(signed.amz_date, signed.credential, canonical)
    )
    if not hmac.compare_digest(expected, signed.signature.lower()):
        raise SigV4Error(
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    return signed.credential.access_key


def _signed_parts(request: Request, now: datetime) -> _Signed:
    query = parse_query(request.raw_query)
    if any(name == "X-Amz-Signature" for name, _ in query):
        signed = _from_query(query, now)
    else:
        signed = _from_header(request, query, now)
    if "host" not in signed.signed_headers:
        raise access_denied("SignedHeaders must include host")
    return signed


def _from_header(request: Request, query: list[tuple[str, str]], now: datetime) -> _Signed:
    authorization = header(request.headers, "authorization")
    if authorization is None:
        raise access_denied("Anonymous requests are not allowed: sign them with AWS Signature V4.")
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise access_denied(f"Unsupported authorization algorithm {algorithm!r}; use {ALGORITHM}")
    fields = dict(_AUTH_FIELDS.findall(rest))
    if not {"Credential", "SignedHeaders", "Signature"} <= set(fields):
        raise access_denied("Authorization header needs Credential, SignedHeaders and Signature")
    amz_date = _header_date(request.headers)
    _check_skew(amz_date, now)
    payload_hash = _payload_hash(request)
    return _Signed(
        credential=parse_credential(fields["Credential"], amz_date),
        amz_date=amz_date,
        signed_headers=fields["SignedHeaders"].split(";"),
        signature=fields["Signature"],
        payload_hash=payload_hash,
        query=query,
    )


def _header_date(headers: list[tuple[str, str]]) -> datetime:
    raw = header(headers, "x-amz-date")
    if raw is not None:
        return parse_amz_date(raw)
    raw = header(headers, "date")
    if raw is None:
        raise access_denied("The request needs an X-Amz-Date or Date header")
    try:
        return parsedate_to_datetime(raw).astimezone(UTC)
    except (TypeError, ValueError) as exc:
        raise access_denied(f"Invalid Date header {raw!r}") from exc


def _payload_hash(request: Request) -> str:
    """The signed payload hash; when it is a real hash, it must be the body's."""
    claimed = header(request.headers, "x-amz-content-sha256")
    actual = hashlib.sha256(request.body).hexdigest()
    if claimed is None:
        return actual
    if claimed == UNSIGNED_PAYLOAD:
        return claimed
    if claimed.startswith("STREAMING-"):
        raise access_denied("Streaming (chunked) payload signing is not supported")
    if not hmac.compare_digest(claimed.lower(), actual):
        # S3 answers this with 400, not 403: the signature may be fine, the body is not.
        raise SigV4Error(
            "XAmzContentSHA256Mismatch",
            "The provided 'x-amz-content-sha256' header does not match what was computed.",
            http_status=400,
        )
    return claimed.lower()


def _from_query(query: list[tuple[str, str]], now: datetime) -> _Signed:
    params = dict(query)
    required = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Expires")
    missing = [name for name in required if name not in params]
    if missing:
        raise access_denied(f"Presigned request lacks {', '.join(missing)}")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise access_denied(f"X-Amz-Algorithm must be {ALGORITHM}")
    amz_date = parse_amz_date(params["X-Amz-Date"])
    _check_presign_window(amz_date, params["X-Amz-Expires"], now)
    return _Signed(
        credential=parse_credential(params["X-Amz-Credential"], amz_date),
        amz_date=amz_date,
        signed_headers=params["X-Amz-SignedHeaders"].split(";"),
        signature=params["X-Amz-Signature"],
        payload_hash=UNSIGNED_PAYLOAD,
        query=[(name, value) for name, value in query if name != "X-Amz-Signature"],
    )


def _check_presign_window(amz_date: datetime, expires: str, now: datetime) -> None:
    try:
        expires_s = int(expires)
    except ValueError as exc:
        raise access_denied("X-Amz-Expires must be a number of seconds") from exc
    if not 1 <= expires_s <= MAX_PRESIGN_EXPIRES_S:
        raise access_denied(f"X-Amz-Expires must be between 1 and {MAX_PRESIGN_EXPIRES_S}")
    if amz_date - now > MAX_CLOCK_SKEW:
        raise SigV4Error("RequestTimeTooSkewed", "The presigned request is dated in the future.")
    if now > amz_date + timedelta(seconds=expires_s):
        raise access_denied("Request has expired")


def _check_skew(amz_date: datetime, now: datetime) -> None:
    if abs(now - amz_date) > MAX_CLOCK_SKEW:
        raise SigV4Error(
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        )


def parse_amz_date(raw: str) -> datetime:
    try:
        return datetime.strptime(raw, AMZ_DATE_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise access_denied(f"Invalid X-Amz-Date {raw!r}; expected YYYYMMDDTHHMMSSZ") from exc


def parse_credential(raw: str, amz_date: datetime) -> Credential:
    parts = raw.split("/")
    if len(parts) != 5 or parts[4] != TERMINATOR:
        raise access_denied(f"Malformed credential {raw!r}; expected AKID/DATE/REGION/s3/aws4_request")
    credential = Credential(access_key=parts[0], date=parts[1], region=parts[2], service=parts[3])
    if credential.service != SERVICE:
        raise access_denied(f"Credential should be scoped to service {SERVICE!r}, not {credential.service!r}")
    if credential.date != amz_date.strftime("%Y%m%d"):
        raise access_denied("Credential date does not match the request date")
    return credential


def header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """All values of a header joined with ',' (RFC 9110), or None when absent."""
    values = [value for key, value in headers if key.lower() == name]
    return ",".join(values) if values else None


def parse_query(raw_query: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs in order; `+` stays a plus (S3 signs %20 for spaces)."""
    pairs = []
    for part in raw_query.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


def uri_encode(text: str, safe: str = _UNRESERVED) -> str:
    """RFC 3986 encoding as SigV4 requires: everything but A-Z a-z 0-9 - _ . ~ (and `safe`)."""
    return quote(text, safe=safe)


def canonical_uri(raw_path: str) -> str:
    segments = raw_path.split("/") if raw_path else [""]
    return "/".join(uri_encode(unquote(segment)) for segment in segments) or "/"


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    encoded = sorted((uri_encode(name), uri_encode(value)) for name, value in pairs)
    return "&".join(f"{name}={value}" for name, value in encoded)


def canonical_headers(headers: list[tuple[str, str]], signed: list[str]) -> str:
    lines = []
    for name in signed:
        values = [_SPACES.sub(" ", value.strip()) for key, value in headers if key.lower() == name]
        if not values:
            raise access_denied(f"Signed header {name!r} is missing from the request")
        lines.append(f"{name}:{','.join(values)}\n")
    return "".join(lines)


def canonical_request(
    request: Request, signed_headers: list[str], query: Iterable[tuple[str, str]], payload_hash: str
) -> str:
    return "\n".join(
        [
            request.method.upper(),
            canonical_uri(request.raw_path),
            canonical_query(query),
            canonical_headers(request.headers, signed_headers),
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def string_to_sign(amz_date: datetime, credential: Credential, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    return "\n".join([ALGORITHM, amz_date.strftime(AMZ_DATE_FORMAT), credential.scope, digest])


def signing_key(secret: str, credential: Credential) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (credential.date, credential.region, credential.service, TERMINATOR):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(secret: str, credential: Credential, to_sign: str) -> str:
    return hmac.new(signing_key(secret, credential), to_sign.encode(), hashlib.sha256).hexdigest()


def headers_from(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """A header list from a dict or pairs (for callers and tests)."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return [(str(k), str(v)) for k, v in items]
