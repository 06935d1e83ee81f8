"""botocore's S3 model, and the shapes of the adapter's requests and responses: parameters and
headers it sends, and the ObjectInfo, listing and error entries it makes of the answers.

Pure functions of their arguments, shared by S3Store (store.py) and the client setup
(client.py); nothing here sends a request.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode

from botocore.awsrequest import HeadersDict
from botocore.handlers import handle_expires_header
from botocore.loaders import Loader, create_loader
from botocore.model import OperationModel, ServiceModel
from botocore.parsers import ResponseParserFactory
from botocore.utils import parse_timestamp as botocore_parse_timestamp

from s3batch.domain.objects import AclSpec, ObjectInfo, ReplicationRule, RestoreState
from s3batch.storage.base import CopyOptions, VersionRef, grant_params
from s3batch.storage.s3.errors import storage_error
from s3batch.storage.s3.lean import encode_path

#: S3's limit on parts in one multipart upload.
MAX_PARTS = 10_000
#: System headers kept by a metadata COPY, by their botocore names.
HEADER_NAMES = ("CacheControl", "ContentDisposition", "ContentEncoding", "ContentLanguage", "Expires")
#: Status to report for a DeleteObjects per-key error (those carry a code but no status).
_ENTRY_STATUSES = {
    "AccessDenied": 403,
    "NoSuchKey": 404,
    "NoSuchVersion": 404,
    "InvalidArgument": 400,
    "InternalError": 500,
    "SlowDown": 503,
}
#: HEAD's ServerSideEncryption / SSECustomerAlgorithm → ObjectInfo.encryption.
_ENCRYPTION_NAMES = {"AES256": "SSE-S3", "aws:kms": "SSE-KMS", "aws:kms:dsse": "DSSE-KMS"}
#: The two fields of HEAD's `x-amz-restore` header.
_RESTORE_ONGOING = re.compile(r'ongoing-request="(true|false)"')
_RESTORE_EXPIRY = re.compile(r'expiry-date="([^"]+)"')
#: PutObject bodies up to this size go on the lean path, in bytes (it hashes the body to sign
#: it; botocore's path streams larger ones).
LEAN_PUT_MAX_BYTES = 16 * 1024**2
#: A header name or value the lean path sends as is: printable ASCII.
_PLAIN_HEADER = re.compile(r"[\x20-\x7e]*")


@functools.cache
def shared_loader(data_path: str | None) -> Loader:
    """One botocore data loader per process. Each new session otherwise builds its own and
    re-reads and re-decodes the S3 service model and endpoint rules (~0.1 s of JSON per job,
    more with a busy disk); the loader caches what it has read."""
    return create_loader(data_path)


def parse_timestamp(value: Any) -> datetime:
    """botocore's parser goes through dateutil, which took about half the client CPU of a
    listing (one LastModified per key); S3's ISO 8601 form ("...T12:00:00.000Z") parses
    natively in a fraction of that. Anything else goes to botocore's parser."""
    if isinstance(value, str) and value.endswith("Z"):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value[:-1] + "+00:00")
    if isinstance(value, str) and value.endswith("GMT"):  # HTTP's date (a HEAD's Last-Modified)
        with contextlib.suppress(TypeError, ValueError):
            return parsedate_to_datetime(value)
    parsed: datetime = botocore_parse_timestamp(value)
    return parsed


@functools.cache
def _head_parsing() -> tuple[Any, OperationModel]:
    """botocore's own HeadObject parser and model: a lean HEAD's headers become exactly the
    dict aiobotocore would have returned."""
    model = ServiceModel(shared_loader(None).load_service_model("s3", "service-2"), "s3")
    factory = ResponseParserFactory()
    factory.set_parser_defaults(timestamp_parser=parse_timestamp)
    return factory.create_parser(model.protocol), model.operation_model("HeadObject")


@functools.cache
def _head_members() -> tuple[dict[str, tuple[str, Callable[[str], Any]]], str, str]:
    """HeadObject's header members by lower-case header name (member name, the conversion of
    its value), and the user-metadata member's name and header prefix."""
    parser, operation = _head_parsing()
    members: dict[str, tuple[str, Callable[[str], Any]]] = {}
    metadata = prefix = ""
    for name, shape in operation.output_shape.members.items():
        location = shape.serialization.get("location")
        if location == "header":
            members[shape.serialization.get("name", name).lower()] = (name, _header_value(parser, shape))
        elif location == "headers":
            metadata, prefix = name, shape.serialization.get("name", "").lower()
    return members, metadata, prefix


def _header_value(parser: Any, shape: Any) -> Callable[[str], Any]:
    """What botocore's REST-XML parser makes of a header member's value, as a plain function
    for the scalar types a HEAD answers with (botocore's own dispatch by type name took about a
    third of `parsed_head`); any other shape goes through botocore's parser.
    tests/unit/test_s3_head_parsing.py compares the result with botocore's."""
    kind = shape.type_name
    if kind == "string" and not shape.serialization.get("jsonvalue"):
        return str
    if kind in ("integer", "long"):
        return int
    if kind == "boolean":
        return "true".__eq__
    if kind == "timestamp":
        return parse_timestamp
    return functools.partial(parser._parse_shape, shape)


def parsed_head(headers: Mapping[str, str]) -> dict[str, Any]:
    """The dict botocore's HeadObject parser makes of these headers, made by walking the headers
    present (about ten) instead of the output shape's 50-odd members, each a case-insensitive
    lookup: that walk cost ~0.25 ms of CPU per HEAD. Each value gets botocore's conversion for
    its member's shape (`_header_value`; tests/unit/test_s3_head_parsing.py compares both).
    botocore's `ResponseMetadata` is left out: no caller reads it from a HEAD."""
    members, metadata, prefix = _head_members()
    # http1 reads header values as latin-1, aiohttp (botocore's transport) as UTF-8: match it.
    utf8 = {
        k: v if v.isascii() else v.encode("latin-1").decode("utf-8", "surrogateescape")
        for k, v in headers.items()
    }
    custom: dict[str, Any] = {}
    if any(name.lower() == "expires" for name in utf8):  # botocore drops an unparseable one
        _, operation = _head_parsing()
        response: dict[str, Any] = {"status_code": 200, "headers": HeadersDict(utf8), "body": b""}
        handle_expires_header(
            operation_model=operation, response_dict=response, customized_response_dict=custom
        )
        utf8 = dict(response["headers"].items())
    user: dict[str, str] = {}
    parsed: dict[str, Any] = {metadata: user}
    for name, value in utf8.items():
        lower = name.lower()
        if lower.startswith(prefix):
            user[name[len(prefix) :]] = value
        else:
            member = members.get(lower)
            if member is not None:
                parsed[member[0]] = member[1](value)
    parsed.update(custom)
    return parsed


def acl_params(acl: AclSpec) -> dict[str, str]:
    """PutObjectAcl parameters for an ACL: the canned ACL, or one header per permission."""
    if acl.canned is not None:
        return {"ACL": acl.canned}
    return grant_params(acl.grants)


def range_total(content_range: str) -> int | None:
    """The object size from `bytes first-last/total`; None when the server did not say."""
    total = content_range.rpartition("/")[2]
    return int(total) if total.isdigit() else None


def lean_put_headers(
    size: int,
    content_type: str | None,
    metadata: Mapping[str, str] | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, str] | None:
    """PutObject headers for the lean path, or None for what stays on botocore: extra
    parameters (encryption, ACLs, ...), bodies over LEAN_PUT_MAX_BYTES (the lean path hashes
    the body to sign it) and header values that are not plain ASCII."""
    if extra or size > LEAN_PUT_MAX_BYTES:
        return None
    headers = {f"x-amz-meta-{k.lower()}": v for k, v in (metadata or {}).items()}
    if content_type is not None:
        headers["content-type"] = content_type
    if not all(_PLAIN_HEADER.fullmatch(text) for item in headers.items() for text in item):
        return None
    return headers


def lean_copy_headers(options: CopyOptions) -> dict[str, str] | None:
    """CopyObject headers for the plain copies the lean path sends; None for anything else
    (metadata replacement, SSE, ACLs, object lock ... stay on botocore's serializer)."""
    if options.replace_metadata or options.extra or options.headers:
        return None
    headers = {"x-amz-metadata-directive": "COPY"}
    if options.tags is None:
        headers["x-amz-tagging-directive"] = "COPY"
    else:
        headers["x-amz-tagging-directive"] = "REPLACE"
        if options.tags:
            headers["x-amz-tagging"] = tagging_header(options.tags)
    if options.storage_class:
        headers["x-amz-storage-class"] = options.storage_class
    return headers


def copy_source_header(source: Mapping[str, Any]) -> str:
    """x-amz-copy-source as botocore encodes a CopySource dict."""
    header = encode_path(f"{source['Bucket']}/{source['Key']}")
    if source.get("VersionId") is not None:
        header += f"?versionId={quote(source['VersionId'], safe='')}"
    return header


def tagging_header(tags: Mapping[str, str]) -> str:
    # %20 rather than "+" for spaces: some S3 servers do not decode "+" in x-amz-tagging.
    return urlencode(dict(tags), quote_via=quote)


def object_params(bucket: str, key: str, version_id: str | None) -> dict[str, Any]:
    """Bucket, Key and (when given) VersionId: the parameters naming one object (version)."""
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id is not None:
        params["VersionId"] = version_id
    return params


def unquoted_etag(etag: str) -> str:
    return etag.strip('"')


def head_object_info(bucket: str, key: str, response: Mapping[str, Any]) -> ObjectInfo:
    """The ObjectInfo of a HeadObject answer (botocore's parsed dict)."""
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=response.get("ContentLength", 0),
        etag=unquoted_etag(response.get("ETag", "")),
        last_modified=response["LastModified"],
        version_id=response.get("VersionId"),
        storage_class=response.get("StorageClass") or "STANDARD",
        content_type=response.get("ContentType"),
        metadata={k.lower(): v for k, v in response.get("Metadata", {}).items()},
        headers={name: response[name] for name in HEADER_NAMES if name in response},
        replication_status=response.get("ReplicationStatus"),
        encryption=_encryption(response),
        kms_key_id=response.get("SSEKMSKeyId"),
        bucket_key_enabled=bool(response.get("BucketKeyEnabled", False)),
        restore=_restore_state(response.get("Restore")),
        lock_mode=response.get("ObjectLockMode"),
        lock_retain_until=response.get("ObjectLockRetainUntilDate"),
        legal_hold=response.get("ObjectLockLegalHoldStatus"),
    )


def _restore_state(header: str | None) -> RestoreState | None:
    if not header:
        return None
    ongoing = _RESTORE_ONGOING.search(header)
    expiry = _RESTORE_EXPIRY.search(header)
    when = None
    if expiry:
        with contextlib.suppress(TypeError, ValueError):
            when = parsedate_to_datetime(expiry.group(1))
    return RestoreState(ongoing=bool(ongoing and ongoing.group(1) == "true"), expiry=when)


def _encryption(response: Mapping[str, Any]) -> str:
    if response.get("SSECustomerAlgorithm"):
        return "SSE-C"
    return _ENCRYPTION_NAMES.get(str(response.get("ServerSideEncryption")), "NOT-SSE")


def listed_info(bucket: str, entry: Mapping[str, Any]) -> ObjectInfo:
    """The ObjectInfo of one ListObjectsV2 / ListObjectVersions entry."""
    return ObjectInfo(
        bucket=bucket,
        key=entry["Key"],
        size=entry.get("Size", 0),
        etag=unquoted_etag(entry.get("ETag", "")),
        last_modified=entry["LastModified"],
        storage_class=entry.get("StorageClass") or "STANDARD",
        version_id=entry.get("VersionId"),
        is_latest=bool(entry.get("IsLatest", True)),
    )


def page_versions(bucket: str, page: Mapping[str, Any]) -> list[ObjectInfo]:
    """One ListObjectVersions page's versions and delete markers, merged: key order, newest first."""
    versions = [listed_info(bucket, entry) for entry in page.get("Versions", [])]
    markers = [
        replace(listed_info(bucket, entry), is_delete_marker=True) for entry in page.get("DeleteMarkers", [])
    ]
    # Both lists are already key order, newest first; a stable sort merges them. LastModified
    # has 1-second resolution, so IsLatest decides first and ties keep the server's order.
    return sorted([*versions, *markers], key=lambda i: (i.key, not i.is_latest, -i.last_modified.timestamp()))


def parse_replication_rules(config: Mapping[str, Any]) -> list[ReplicationRule]:
    """A ReplicationConfiguration's enabled rules, highest priority first."""
    enabled = [r for r in config.get("Rules", []) if r.get("Status") == "Enabled"]
    # Higher Priority wins in S3; rules without one (V1 configurations) keep their order.
    enabled.sort(key=lambda r: -int(r.get("Priority", 0)))
    rules = []
    for rule in enabled:
        filt = rule.get("Filter", {})
        prefix = filt.get("Prefix", filt.get("And", {}).get("Prefix", rule.get("Prefix", "")))
        destination = rule.get("Destination", {})
        rules.append(
            ReplicationRule(prefix or "", destination.get("Bucket", ""), destination.get("StorageClass"))
        )
    return rules


def part_size_for(total: int, preferred: int) -> int:
    """`preferred`, grown as needed to stay within MAX_PARTS."""
    return max(preferred, math.ceil(total / MAX_PARTS))


def byte_ranges(total: int, part_size: int) -> Iterator[tuple[int, int]]:
    """Inclusive (first, last) byte ranges covering `total` bytes."""
    for first in range(0, total, part_size):
        yield first, min(first + part_size, total) - 1


def completed_part(number: int, result: Mapping[str, Any]) -> dict[str, Any]:
    part: dict[str, Any] = {"PartNumber": number, "ETag": result["ETag"]}
    # With a ChecksumAlgorithm, CompleteMultipartUpload must list each part's checksum.
    part.update({k: v for k, v in result.items() if k.startswith("Checksum")})
    return part


def delete_entry(ref: VersionRef) -> dict[str, str]:
    entry = {"Key": ref.key}
    if ref.version_id is not None:
        entry["VersionId"] = ref.version_id
    return entry


def delete_outcomes(
    batch: Sequence[VersionRef], errors: Sequence[Mapping[str, Any]]
) -> list[Exception | None]:
    """One outcome per object of a DeleteObjects batch (None: deleted) from its error entries."""
    outcomes: list[Exception | None] = [None] * len(batch)
    if not errors:
        return outcomes
    at: dict[str, list[int]] = {}  # a batch of 1,000 failing keys: no 1,000 x 1,000 scan
    for i, ref in enumerate(batch):
        at.setdefault(ref.key, []).append(i)
    for error in errors:
        key, version_id = error.get("Key"), error.get("VersionId")
        same_key = at.get(str(key), [])
        # moto (and possibly others) leave VersionId out of error entries: match by key.
        positions = [i for i in same_key if batch[i].version_id == version_id] or same_key
        code = str(error.get("Code") or "InternalError")
        failure = storage_error(code, str(error.get("Message") or ""), _ENTRY_STATUSES.get(code))
        for i in positions:
            outcomes[i] = failure
    return outcomes
