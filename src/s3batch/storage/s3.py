"""S3Store: the ObjectStore contract over an S3-compatible endpoint, with aiobotocore.

botocore's own retries are off: s3batch retries whole tasks itself (s3batch.retry) and feeds
throttling into its concurrency limit, so a hidden second retry loop would only hide both.
Every botocore/aiohttp failure leaves this module as a StorageError (see `_translating`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import functools
import math
import os
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import botocore.session
from aiobotocore.config import AioConfig
from aiobotocore.hooks import AioHierarchicalEmitter
from aiobotocore.session import AioSession
from botocore.awsrequest import HeadersDict
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import SSLError as BotoSSLError
from botocore.handlers import handle_expires_header
from botocore.httpsession import create_urllib3_context, get_cert_path
from botocore.loaders import Loader, create_loader
from botocore.model import OperationModel, ServiceModel
from botocore.parsers import ResponseParserFactory
from botocore.utils import get_environ_proxies
from botocore.utils import parse_timestamp as botocore_parse_timestamp

from s3batch.errors import ConfigError, StorageError
from s3batch.storage.base import (
    AclSpec,
    CopyOptions,
    CopyResult,
    KmsEncryption,
    ObjectInfo,
    ReplicationRule,
    RestoreState,
    Retention,
    VersionRef,
    grant_params,
)
from s3batch.storage.config import S3Config
from s3batch.storage.http1 import ConnectionPool
from s3batch.storage.lean import (
    TLS_ERROR,
    TLS_HINT,
    Credentials,
    Fallback,
    LeanS3,
    Route,
    Signer,
    encode_path,
)
from s3batch.storage.s3codes import storage_error

#: S3's limit for one CopyObject request, in bytes.
SINGLE_COPY_MAX_BYTES = 5 * 1024**3
#: Sources larger than this are copied with UploadPartCopy, in bytes. Tests lower it.
MULTIPART_COPY_THRESHOLD_BYTES = SINGLE_COPY_MAX_BYTES
#: Preferred UploadPartCopy range, in bytes (S3 allows 5 MiB to 5 GiB per part).
MULTIPART_COPY_PART_BYTES = 512 * 1024**2
#: UploadPartCopy requests in flight for one multipart copy.
MULTIPART_COPY_CONCURRENCY = 4
#: put_file uploads files of at least this size in parts, in bytes.
MULTIPART_UPLOAD_THRESHOLD_BYTES = 64 * 1024**2
#: Preferred UploadPart size for put_file, in bytes; one part is held in memory at a time.
MULTIPART_UPLOAD_PART_BYTES = 32 * 1024**2
#: S3's limit on parts in one multipart upload.
MAX_PARTS = 10_000
#: S3's limit on keys in one DeleteObjects request.
DELETE_OBJECTS_MAX_KEYS = 1000
#: S3's largest ListObjectsV2 page, in keys.
LIST_PAGE_MAX_KEYS = 1000
#: First page of a listing bounded by `end_before`, in keys; each next page doubles up to
#: LIST_PAGE_MAX_KEYS. Small, because a parallel lister's range usually ends a few keys in.
BOUNDED_FIRST_PAGE_KEYS = 10
#: Pages one bounded listing may fetch (a billion keys at full pages): a server that never
#: stops saying "truncated" fails the listing instead of looping forever.
MAX_BOUNDED_PAGES = 1_000_000
#: Region used when neither the config, the environment nor the profile names one.
DEFAULT_REGION = "us-east-1"
ADDRESSING_STYLES = ("auto", "path", "virtual")

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
#: Codes with which S3 may refuse a CopyObject because the source is too large.
_TOO_LARGE_CODES = frozenset({"InvalidRequest", "EntityTooLarge"})

#: CopyObject as S3 does it by default: metadata and tags copied from the source.
DEFAULT_COPY_OPTIONS = CopyOptions()
#: HEAD's ServerSideEncryption / SSECustomerAlgorithm → ObjectInfo.encryption.
_ENCRYPTION_NAMES = {"AES256": "SSE-S3", "aws:kms": "SSE-KMS", "aws:kms:dsse": "DSSE-KMS"}
#: HEAD ?partNumber= requests in flight for one object_parts call.
PART_HEAD_CONCURRENCY = 8
_RESTORE_ONGOING = re.compile(r'ongoing-request="(true|false)"')
_RESTORE_EXPIRY = re.compile(r'expiry-date="([^"]+)"')

#: Set to "0" to send every request through aiobotocore (to compare, or to rule the lean
#: request path out when debugging a store).
LEAN_PATH_ENV = "S3BATCH_LEAN_PATH"
#: Set to "0" to skip TLS certificate verification, as the AWS CLI's --no-verify-ssl does
#: (botocore has no variable of its own for it); S3Config.verify_ssl=False does it for one store.
VERIFY_SSL_ENV = "S3BATCH_VERIFY_SSL"
#: How deep `_tls_refused` looks into an exception's causes for the certificate error.
_CAUSE_DEPTH = 8
#: The key in the presigned URL from which a bucket's lean route is learnt (never requested).
_ROUTE_PROBE_KEY = "s3batch-route-probe"
#: Credentials of the route-learning presigner: its URLs are parsed, never sent.
_PLACEHOLDER_CREDENTIAL = "s3batch-route-probe"
#: PutObject bodies up to this size go on the lean path, in bytes (it hashes the body to sign
#: it; botocore's path streams larger ones).
LEAN_PUT_MAX_BYTES = 16 * 1024**2
#: A header name or value the lean path sends as is: printable ASCII.
_PLAIN_HEADER = re.compile(r"[\x20-\x7e]*")
#: Presigners kept per process (one per config, region and AWS_* environment).
PRESIGNERS_CACHED = 16

_T = TypeVar("_T")


class _Skip(enum.Enum):
    """A lean call that did not happen: the caller goes through aiobotocore."""

    SKIP = 0


SKIP = _Skip.SKIP


@dataclass(eq=False)
class _SharedClient:
    """One botocore session, lean request path and (when a call needs it) aiobotocore client,
    shared by the S3Stores of one config on one event loop: a job's manifest reader and its
    engine then pay for one of each and one connection pool.

    The aiobotocore client is built on first use only (~5 ms of CPU, most of a small job's
    fixed cost): a job whose calls all take the lean path (a delete, a plain copy, tagging,
    with its manifest read and report written on the lean path too) never builds one."""

    key: tuple[S3Config, asyncio.AbstractEventLoop]
    session: AioSession
    region: str
    lean: LeanS3 | None
    #: botocore's `verify` for this config (see `_verify_setting`).
    verify: bool | str = True
    #: The lean path's TLS settings, built when a first HTTPS route needs them.
    ssl_context: ssl.SSLContext | None = None
    stack: AsyncExitStack = field(default_factory=AsyncExitStack)
    client: Any = None
    client_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: bucket → its lean route, or None when that bucket stays on aiobotocore.
    routes: dict[str, Route | None] = field(default_factory=dict)
    route_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pools: dict[tuple[str, int, bool], ConnectionPool] = field(default_factory=dict)
    #: Open S3Stores using it; the last close() closes it.
    users: int = 0

    async def botocore(self) -> Any:
        """The aiobotocore client, built on first use."""
        if self.client is None:
            async with self.client_lock:
                if self.client is None:
                    with _translating():
                        creator = _create_client(self.session, self.key[0], self.region)
                        self.client = await self.stack.enter_async_context(creator)
        return self.client

    async def route(self, bucket: str) -> Route | None:
        if bucket in self.routes:
            return self.routes[bucket]
        if self.lean is None:
            return None
        async with self.route_lock:
            if bucket not in self.routes:
                self.routes[bucket] = await self._learn_route(bucket)
        return self.routes[bucket]

    async def _learn_route(self, bucket: str) -> Route | None:
        """botocore's own addressing choice for `bucket`, read off a presigned URL; None when
        the bucket stays on aiobotocore."""
        try:
            presigner = _presigner(self.key[0], self.region, _aws_environment())
            url = str(
                presigner.generate_presigned_url(
                    "head_object", Params={"Bucket": bucket, "Key": _ROUTE_PROBE_KEY}, ExpiresIn=60
                )
            )
        except (BotoCoreError, ValueError):
            return None  # a bucket name botocore rejects
        if _proxied(url, str(presigner.meta.endpoint_url)):
            return None  # the lean client speaks no proxy protocol: aiobotocore does
        if urlsplit(url).scheme == "https" and self.ssl_context is None:
            # Reading a CA bundle takes ~17 ms: off the event loop, as aiobotocore does.
            self.ssl_context = await asyncio.to_thread(_ssl_context, self.verify)
        try:
            return Route.parse(url, _ROUTE_PROBE_KEY, self._pool)
        except Fallback:
            return None  # a URL shape we don't know

    def _pool(self, host: str, port: int, tls: bool) -> ConnectionPool:
        pool_key = (host, port, tls)
        if pool_key not in self.pools:
            cfg = self.key[0]
            self.pools[pool_key] = ConnectionPool(
                host,
                port,
                tls=tls,
                max_connections=cfg.max_connections,
                connect_timeout_s=cfg.connect_timeout_s,
                read_timeout_s=cfg.read_timeout_s,
                ssl_context=self.ssl_context,
            )
        return self.pools[pool_key]

    async def aclose(self) -> None:
        pools, self.pools = self.pools, {}
        for pool in pools.values():
            await pool.close()
        with _translating():
            await self.stack.aclose()


#: The open shared clients, by (config, event loop).
_OPEN: dict[tuple[S3Config, asyncio.AbstractEventLoop], _SharedClient] = {}


@functools.cache
def _shared_loader(data_path: str | None) -> Loader:
    """One botocore data loader per process. Each new session otherwise builds its own and
    re-reads and re-decodes the S3 service model and endpoint rules (~0.1 s of JSON per job,
    more with a busy disk); the loader caches what it has read."""
    return create_loader(data_path)


def _builtin_handlers() -> AioHierarchicalEmitter:
    """botocore's built-in event handlers, registered once per process. A new session
    registers its ~130 one by one (~3.5 ms of CPU: each name is aliased and each handler's
    signature inspected); a copy of this emitter is the same trie for ~0.3 ms. botocore
    itself gives every client a copy of its session's emitter the same way.

    It holds BUILTIN_HANDLERS only, rebuilt whenever that list grew: a session's initializers
    (botocore.register_initializer; AWS Lambda Powertools registers one that adds a user-agent
    hook) run on every new session anyway, so a copy that held their handlers would get them
    twice."""
    from botocore.handlers import BUILTIN_HANDLERS

    return _emitter_for(len(BUILTIN_HANDLERS))


@functools.lru_cache(maxsize=1)
def _emitter_for(_builtins: int) -> AioHierarchicalEmitter:
    emitter = AioHierarchicalEmitter()
    # The initializers run into the throwaway session's own emitter; then the built-ins are
    # registered into `emitter` through botocore's own registration code.
    session = AioSession(include_builtin_handlers=False)
    session._events = type(session._events)(emitter)
    session._register_builtin_handlers(session._events)
    return emitter


async def _open_client(cfg: S3Config, key: tuple[S3Config, asyncio.AbstractEventLoop]) -> _SharedClient:
    with _translating():
        hooks = copy.copy(_builtin_handlers())
        session = AioSession(profile=cfg.profile, event_hooks=hooks, include_builtin_handlers=False)
        session.register_component("data_loader", _shared_loader(session.get_config_variable("data_path")))
        session.get_component("response_parser_factory").set_parser_defaults(
            timestamp_parser=_parse_timestamp
        )
        region = cfg.region or session.get_config_variable("region") or DEFAULT_REGION
        lean = None
        if cfg.lean_path and os.environ.get(LEAN_PATH_ENV, "1") != "0":
            lean = await _lean_client(session, region)
        verify = _verify_setting(session, cfg)
    return _SharedClient(key, session, region, lean, verify)


def _create_client(session: AioSession, cfg: S3Config, region: str) -> Any:
    """aiobotocore's client context manager for `cfg`."""
    client_config = AioConfig(
        region_name=region,
        s3={"addressing_style": cfg.addressing_style},
        max_pool_connections=cfg.max_connections,
        connect_timeout=cfg.connect_timeout_s,
        read_timeout=cfg.read_timeout_s,
        retries={"total_max_attempts": 1, "mode": "standard"},
        # rclone and other stores fail botocore's default CRC checks on ranged reads.
        response_checksum_validation="when_required",
        request_checksum_calculation="when_required",
    )
    # None lets botocore resolve the CA bundle itself (ca_bundle, AWS_CA_BUNDLE,
    # REQUESTS_CA_BUNDLE), as `_verify_setting` does for the lean path.
    return session.create_client(
        "s3",
        endpoint_url=cfg.endpoint_url,
        config=client_config,
        verify=None if _verifying(cfg) else False,
    )


def _verifying(cfg: S3Config) -> bool:
    """Whether TLS certificates are verified for `cfg`. A plain-HTTP endpoint needs no
    certificates: not verifying skips loading the CA bundle (~17 ms, in a thread, on every new
    client; botocore keeps a custom endpoint's scheme and host across redirects, so nothing
    goes out over TLS unverified)."""
    plain_http = (cfg.endpoint_url or "").lower().startswith("http://")
    return cfg.verify_ssl and os.environ.get(VERIFY_SSL_ENV, "1") != "0" and not plain_http


def _verify_setting(session: AioSession, cfg: S3Config) -> bool | str:
    """What botocore's `verify` resolves to for `cfg`: False (not verifying), the CA bundle
    path (`ca_bundle`: AWS_CA_BUNDLE or the profile's; else REQUESTS_CA_BUNDLE), or True
    (botocore's own bundle). The order is botocore's (Session.create_client, then
    EndpointCreator._get_verify_value)."""
    if not _verifying(cfg):
        return False
    ca_bundle = session.get_config_variable("ca_bundle")
    if ca_bundle is not None:
        return str(ca_bundle)
    return os.environ.get("REQUESTS_CA_BUNDLE", True)


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS settings aiobotocore gives its own connections for `verify` (its
    AIOHTTPSession._build_verify_context): botocore's context, the same CA bundle, the host
    name checked. A CA bundle that cannot be read fails as TLSError, not retryable."""
    context: ssl.SSLContext = create_urllib3_context()
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    context.check_hostname = True
    ca_path = str(get_cert_path(verify))
    try:
        if os.path.isdir(ca_path):  # a directory of hashed certificates, as urllib3 allows
            context.load_verify_locations(capath=ca_path)
        else:
            context.load_verify_locations(cafile=ca_path)
    except (OSError, ValueError) as exc:
        raise StorageError(TLS_ERROR, f"cannot load the CA bundle {ca_path!r}: {exc}") from exc
    return context


def _proxied(url: str, endpoint_url: str) -> bool:
    """Whether aiobotocore would send `url` through a proxy: botocore reads the proxies for its
    endpoint from HTTP_PROXY / HTTPS_PROXY / NO_PROXY (either case; urllib's getproxies and
    proxy_bypass) and picks one by the request's scheme (ProxyConfiguration.proxy_url_for)."""
    return bool(get_environ_proxies(endpoint_url).get(urlsplit(url).scheme))


def _aws_environment() -> tuple[tuple[str, str], ...]:
    """The AWS_* variables, which steer botocore's addressing (FIPS, dual-stack, regional
    us-east-1 endpoints, the config file's path): part of the presigner's cache key."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


@functools.lru_cache(maxsize=PRESIGNERS_CACHED)
def _presigner(cfg: S3Config, region: str, environment: tuple[tuple[str, str], ...]) -> Any:
    """A plain (sync) botocore client per process, only to learn a bucket's addressing from a
    presigned URL. It signs nothing that is sent, so it carries placeholder credentials: the
    credential chain (and its network calls) stays with the job's own session. Building it
    costs ~8 ms, once per process instead of once per job. Not tied to an event loop."""
    session = botocore.session.Session(profile=cfg.profile)
    session.register_component("data_loader", _shared_loader(session.get_config_variable("data_path")))
    config = Config(region_name=region, s3={"addressing_style": cfg.addressing_style})
    return session.create_client(
        "s3",
        endpoint_url=cfg.endpoint_url,
        config=config,
        aws_access_key_id=_PLACEHOLDER_CREDENTIAL,
        aws_secret_access_key=_PLACEHOLDER_CREDENTIAL,
        verify=False,
    )


class S3Store:
    """ObjectStore over S3. The client is created on first use and closed by `close()`."""

    def __init__(self, config: S3Config) -> None:
        if config.addressing_style not in ADDRESSING_STYLES:
            raise ConfigError(
                f"addressing_style {config.addressing_style!r}: expected one of {ADDRESSING_STYLES}"
            )
        self._config = config
        self._shared: _SharedClient | None = None
        self._open_lock = asyncio.Lock()

    # -- client lifecycle -------------------------------------------------------------------

    async def _opened(self) -> _SharedClient:
        if self._shared is None:
            async with self._open_lock:  # many tasks start at once; open one client
                if self._shared is None:
                    self._shared = await self._open()
        return self._shared

    async def _s3(self) -> Any:
        return await (await self._opened()).botocore()

    async def _open(self) -> _SharedClient:
        key = (self._config, asyncio.get_running_loop())
        shared = _OPEN.get(key)
        if shared is None:
            shared = await _open_client(self._config, key)
            if key in _OPEN:  # another store of this config opened one meanwhile: use that
                await shared.aclose()
                shared = _OPEN[key]
            else:
                _OPEN[key] = shared
        shared.users += 1
        return shared

    async def close(self) -> None:
        shared, self._shared = self._shared, None
        if shared is None:
            return
        shared.users -= 1
        if shared.users == 0:
            if _OPEN.get(shared.key) is shared:
                del _OPEN[shared.key]
            await shared.aclose()

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        client = await self._s3()
        with _translating():
            response: dict[str, Any] = await getattr(client, operation)(**params)
        return response

    # -- the lean request path ---------------------------------------------------------------

    async def _lean_call(self, bucket: str, call: Callable[[LeanS3, Route], Awaitable[_T]]) -> _T | _Skip:
        """Run `call` on the lean path, or SKIP when `bucket` has no lean route (the caller
        then uses aiobotocore). A redirect-type answer moves the bucket to aiobotocore for good."""
        shared = self._shared or await self._opened()
        route = await shared.route(bucket)
        if route is None or shared.lean is None:
            return SKIP
        try:
            return await call(shared.lean, route)
        except Fallback:
            shared.routes[bucket] = None
            return SKIP

    # -- buckets and reads ------------------------------------------------------------------

    async def create_bucket(self, bucket: str) -> None:
        region = (await self._opened()).region
        params: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            await self._call("create_bucket", **params)
        except StorageError as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    async def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
        lean = await self._lean_call(
            bucket, lambda lean, route: _or_none(lean.head_object(route, key, version_id))
        )
        if lean is not SKIP and lean is not None:
            return _object_info(bucket, key, _parsed_head(lean))
        try:
            response = await self._call("head_object", **_target(bucket, key, version_id))
        except StorageError as exc:
            if exc.http_status == 404:
                raise await self._head_not_found(bucket, version_id) from exc
            raise
        return _object_info(bucket, key, response)

    async def _head_not_found(self, bucket: str, version_id: str | None) -> StorageError:
        """A HEAD 404 has no body: ask the bucket to tell NoSuchBucket from NoSuchKey."""
        try:
            await self._call("head_bucket", Bucket=bucket)
        except StorageError as bucket_exc:
            if bucket_exc.http_status == 404:
                return StorageError("NoSuchBucket", "The specified bucket does not exist", 404)
        if version_id is not None:
            return StorageError("NoSuchVersion", "The specified version does not exist.", 404)
        return StorageError("NoSuchKey", "The specified key does not exist.", 404)

    async def get_bytes(self, bucket: str, key: str, version_id: str | None = None) -> bytes:
        lean = await self._lean_call(
            bucket, lambda lean, route: _or_none(lean.get_object(route, key, version_id))
        )
        if lean is not SKIP and lean is not None:
            return lean.body
        response = await self._call("get_object", **_target(bucket, key, version_id))
        with _translating():
            async with response["Body"] as body:
                data: bytes = await body.read()
        return data

    async def iter_bytes(
        self,
        bucket: str,
        key: str,
        version_id: str | None = None,
        start: int = 0,
        chunk_size: int = 1 << 20,
    ) -> AsyncIterator[bytes]:
        # The first `chunk_size` bytes on the lean path: all of a small object (a manifest, a
        # CSV) in one cheap request; a larger one goes on streaming through aiobotocore, pinned
        # to the same object by its ETag.
        byte_range = f"bytes={start}-{start + chunk_size - 1}"
        lean = await self._lean_call(
            bucket, lambda lean, route: _or_none(lean.get_object(route, key, version_id, byte_range))
        )
        if_match = None
        if lean is not SKIP and lean is not None:
            if lean.status != 206:  # the server sent the whole object
                if rest := lean.body[start:]:
                    yield rest
                return
            yield lean.body
            total = _range_total(lean.headers.get("content-range", ""))
            start += len(lean.body)
            if total is not None and start >= total:
                return
            if_match = lean.headers.get("etag")
        params = _target(bucket, key, version_id)
        if start > 0:
            params["Range"] = f"bytes={start}-"
        if if_match:
            params["IfMatch"] = if_match
        try:
            response = await self._call("get_object", **params)
        except StorageError as exc:
            # Reading on from the very end is a valid resume point: nothing is left.
            if exc.code == "InvalidRange" and (await self.head(bucket, key, version_id)).size == start:
                return
            raise
        with _translating():
            async with response["Body"] as body:
                while chunk := await body.read(chunk_size):
                    yield chunk

    async def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        start_after: str | None = None,
        *,
        end_before: str | None = None,
    ) -> AsyncIterator[ObjectInfo]:
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if start_after is not None:
            params["StartAfter"] = start_after
        if end_before is not None:
            async for info in self._list_bounded(params, end_before):
                yield info
            return
        for _ in range(MAX_BOUNDED_PAGES):
            infos, token = await self._list_page(params, LIST_PAGE_MAX_KEYS)
            for info in infos:
                yield info
            if token is None:
                return
            params = {**params, "ContinuationToken": token}
        raise StorageError(
            "InternalError", f"listing of {bucket} did not end after {MAX_BOUNDED_PAGES} pages"
        )

    async def _list_page(
        self, params: Mapping[str, Any], max_keys: int
    ) -> tuple[list[ObjectInfo], str | None]:
        """One ListObjectsV2 page: its objects and the next token, if any."""
        bucket = params["Bucket"]
        query = [("max-keys", str(max_keys)), ("prefix", params.get("Prefix", ""))]
        for name, param in (("start-after", "StartAfter"), ("continuation-token", "ContinuationToken")):
            if params.get(param) is not None:
                query.append((name, params[param]))
        lean = await self._lean_call(bucket, lambda lean, route: lean.list_page(route, bucket, query))
        if lean is not SKIP:
            return lean
        # botocore asks for URL-encoded keys and decodes them, so odd keys survive XML.
        page = await self._call("list_objects_v2", **params, MaxKeys=max_keys)
        token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
        return [_listed_info(bucket, entry) for entry in page.get("Contents", [])], token or None

    async def _list_bounded(self, params: dict[str, Any], end_before: str) -> AsyncIterator[ObjectInfo]:
        """ListObjectsV2 pages growing from BOUNDED_FIRST_PAGE_KEYS, up to the first key at or
        after `end_before`: S3 has no end bound, so this is how a short range stays cheap."""
        page_keys = BOUNDED_FIRST_PAGE_KEYS
        for _ in range(MAX_BOUNDED_PAGES):
            infos, token = await self._list_page(params, page_keys)
            for info in infos:
                if info.key >= end_before:
                    return
                yield info
            if token is None:
                return
            params = {**params, "ContinuationToken": token}
            page_keys = min(page_keys * 2, LIST_PAGE_MAX_KEYS)
        raise StorageError(
            "InternalError", f"listing of {params['Bucket']} did not end after {MAX_BOUNDED_PAGES} pages"
        )

    async def list_prefixes(self, bucket: str, prefix: str = "", delimiter: str = "/") -> list[str]:
        client = await self._s3()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, Delimiter=delimiter
        )
        found: list[str] = []
        with _translating():
            async for page in pages:
                found.extend(entry["Prefix"] for entry in page.get("CommonPrefixes", []))
        return found

    async def list_versions(
        self, bucket: str, prefix: str = "", start_after: str | None = None
    ) -> AsyncIterator[ObjectInfo]:
        client = await self._s3()
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if start_after is not None:
            params["KeyMarker"] = start_after  # KeyMarker alone: keys after it, as StartAfter
        pages = client.get_paginator("list_object_versions").paginate(**params)
        with _translating():
            async for page in pages:
                for info in _page_versions(bucket, page):
                    # moto (5.x) reads a lone KeyMarker as (key, its first version) and still
                    # returns that key's older versions; S3 returns none of them.
                    if start_after is None or info.key > start_after:
                        yield info

    async def object_parts(self, bucket: str, key: str, version_id: str | None = None) -> list[int] | None:
        # moto (5.2) leaves ObjectParts out of GetObjectAttributes: HEAD ?partNumber= works everywhere.
        first = await self._call("head_object", **_target(bucket, key, version_id), PartNumber=1)
        count = first.get("PartsCount")
        if count is None:
            return None  # not a multipart upload
        limit = asyncio.Semaphore(PART_HEAD_CONCURRENCY)

        async def size_of(number: int) -> int:
            async with limit:
                part = await self._call("head_object", **_target(bucket, key, version_id), PartNumber=number)
            return int(part["ContentLength"])

        rest = await asyncio.gather(*(size_of(n) for n in range(2, int(count) + 1)))
        return [int(first["ContentLength"]), *rest]

    # -- writes -----------------------------------------------------------------------------

    async def put_bytes(
        self,
        bucket: str,
        key: str,
        body: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ObjectInfo:
        etag, version_id = await self._put_lean(bucket, key, body, content_type, metadata, extra)
        if etag is None:
            params: dict[str, Any] = {**(extra or {}), "Bucket": bucket, "Key": key, "Body": body}
            if content_type is not None:
                params["ContentType"] = content_type
            if metadata:
                params["Metadata"] = dict(metadata)
            response = await self._call("put_object", **params)
            etag, version_id = _unquote(response.get("ETag", "")), response.get("VersionId")
        # PutObject returns no date; the local clock saves a HEAD per write.
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=len(body),
            etag=etag,
            last_modified=datetime.now(UTC),
            version_id=version_id,
            content_type=content_type,
            metadata={k.lower(): v for k, v in (metadata or {}).items()},
        )

    async def _put_lean(
        self,
        bucket: str,
        key: str,
        body: bytes,
        content_type: str | None,
        metadata: Mapping[str, str] | None,
        extra: Mapping[str, Any] | None,
    ) -> tuple[str | None, str | None]:
        """PutObject on the lean path → (ETag, VersionId); (None, None) when it can't go there."""
        headers = _lean_put_headers(len(body), content_type, metadata, extra)
        if headers is None:
            return None, None
        lean = await self._lean_call(bucket, lambda lean, route: lean.put_object(route, key, body, headers))
        return (None, None) if lean is SKIP else lean

    async def put_file(
        self,
        bucket: str,
        key: str,
        path: Path,
        *,
        content_type: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        size = (await _local_io(path, asyncio.to_thread(path.stat))).st_size
        create: dict[str, Any] = dict(extra or {})
        if content_type is not None:
            create["ContentType"] = content_type
        if size < MULTIPART_UPLOAD_THRESHOLD_BYTES:
            body = await _local_io(path, asyncio.to_thread(path.read_bytes))
            etag, _ = await self._put_lean(bucket, key, body, content_type, None, extra)
            if etag is None:
                await self._call("put_object", **create, Bucket=bucket, Key=key, Body=body)
            return
        part_size = _part_size(size, MULTIPART_UPLOAD_PART_BYTES)

        async def upload_parts(upload_id: str) -> list[dict[str, Any]]:
            parts = []
            for number, (first, last) in enumerate(_ranges(size, part_size), start=1):
                data = await _local_io(path, asyncio.to_thread(_read_range, path, first, last))
                response = await self._call(
                    "upload_part",
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                )
                parts.append({"PartNumber": number, "ETag": response["ETag"]})
            return parts

        await self._multipart(bucket, key, create, {}, upload_parts)

    # -- incomplete multipart uploads (the pipelines' staging-bucket sweep) -------------------

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> AsyncIterator[Any]:
        """Yields storage.base.MultipartUpload (imported here to keep this block self-contained)."""
        from s3batch.storage.base import MultipartUpload

        client = await self._s3()
        pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
        with _translating():
            async for page in pages:
                for entry in page.get("Uploads", []):
                    value = entry["Initiated"]  # a datetime already: the client's parser is ours
                    initiated = value if isinstance(value, datetime) else _parse_timestamp(value)
                    if initiated.tzinfo is None:
                        initiated = initiated.replace(tzinfo=UTC)
                    yield MultipartUpload(entry["Key"], entry["UploadId"], initiated)

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        await self._call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)

    async def copy(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        *,
        src_version_id: str | None = None,
        options: CopyOptions = DEFAULT_COPY_OPTIONS,
    ) -> CopyResult:
        source = _target(src_bucket, src_key, src_version_id)
        if MULTIPART_COPY_THRESHOLD_BYTES < SINGLE_COPY_MAX_BYTES:
            # A lowered threshold (tests, stores with a smaller limit) needs the size first.
            info = await self.head(src_bucket, src_key, src_version_id)
            if info.size > MULTIPART_COPY_THRESHOLD_BYTES:
                return await self._copy_multipart(source, info, dst_bucket, dst_key, options)
            return await self._copy_single(source, dst_bucket, dst_key, options)
        try:
            # Nearly every object fits one CopyObject: try it rather than HEAD every source.
            return await self._copy_single(source, dst_bucket, dst_key, options)
        except StorageError as exc:
            if exc.code not in _TOO_LARGE_CODES:
                raise
            info = await self.head(src_bucket, src_key, src_version_id)
            if info.size <= MULTIPART_COPY_THRESHOLD_BYTES:
                raise
            return await self._copy_multipart(source, info, dst_bucket, dst_key, options)

    async def _copy_single(
        self, source: dict[str, Any], dst_bucket: str, dst_key: str, options: CopyOptions
    ) -> CopyResult:
        headers = _lean_copy_headers(options)
        if headers is not None:
            copy_source = _copy_source_header(source)
            lean = await self._lean_call(
                dst_bucket, lambda lean, route: lean.copy_object(route, dst_key, copy_source, headers)
            )
            if lean is not SKIP:
                return CopyResult(*lean)
        params: dict[str, Any] = {"Bucket": dst_bucket, "Key": dst_key, "CopySource": source}
        if options.replace_metadata:
            params.update(MetadataDirective="REPLACE", Metadata=dict(options.metadata))
            params.update(options.headers)
        else:
            params["MetadataDirective"] = "COPY"
        if options.tags is None:
            params["TaggingDirective"] = "COPY"
        else:
            params["TaggingDirective"] = "REPLACE"
            if options.tags:  # no Tagging header at all means an empty tag set
                params["Tagging"] = _tagging_header(options.tags)
        if options.storage_class:
            params["StorageClass"] = options.storage_class
        params.update(options.extra)
        response = await self._call("copy_object", **params)
        etag = response.get("CopyObjectResult", {}).get("ETag", "")
        return CopyResult(_unquote(etag), response.get("VersionId"))

    async def _copy_multipart(
        self,
        source: dict[str, Any],
        info: ObjectInfo,
        dst_bucket: str,
        dst_key: str,
        options: CopyOptions,
    ) -> CopyResult:
        create, part_params = await self._multipart_copy_params(source, info, options)
        part_size = _part_size(info.size, MULTIPART_COPY_PART_BYTES)
        ranges = list(_ranges(info.size, part_size))
        # Every part must come from the same source bytes even if the key is overwritten.
        part_params.setdefault("CopySourceIfMatch", f'"{info.etag}"')

        async def copy_parts(upload_id: str) -> list[dict[str, Any]]:
            limit = asyncio.Semaphore(MULTIPART_COPY_CONCURRENCY)

            async def one(number: int, first: int, last: int) -> dict[str, Any]:
                async with limit:
                    response = await self._call(
                        "upload_part_copy",
                        Bucket=dst_bucket,
                        Key=dst_key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource=source,
                        CopySourceRange=f"bytes={first}-{last}",
                        **part_params,
                    )
                return _completed_part(number, response["CopyPartResult"])

            return await _all_or_first_error(
                [one(n, first, last) for n, (first, last) in enumerate(ranges, start=1)]
            )

        common = {"RequestPayer": options.extra["RequestPayer"]} if "RequestPayer" in options.extra else {}
        response = await self._multipart(dst_bucket, dst_key, create, common, copy_parts)
        return CopyResult(_unquote(response.get("ETag", "")), response.get("VersionId"))

    async def _multipart_copy_params(
        self, source: dict[str, Any], info: ObjectInfo, options: CopyOptions
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """CreateMultipartUpload parameters giving the result what CopyObject would give it,
        and the extra parameters for each UploadPartCopy."""
        create: dict[str, Any] = {}
        if options.replace_metadata:
            create.update(options.headers, Metadata=dict(options.metadata))
        else:
            create.update(info.headers, Metadata=dict(info.metadata))
            if info.content_type is not None:
                create["ContentType"] = info.content_type
        tags = options.tags
        if tags is None:
            tags = await self.get_tags(source["Bucket"], source["Key"], source.get("VersionId"))
        if tags:
            create["Tagging"] = _tagging_header(tags)
        if options.storage_class:
            create["StorageClass"] = options.storage_class
        part_params: dict[str, Any] = {}
        for name, value in options.extra.items():
            # Source conditions apply to each part read; everything else shapes the result.
            target = part_params if name.startswith("CopySource") else create
            target[name] = value
        if "RequestPayer" in options.extra:
            part_params["RequestPayer"] = options.extra["RequestPayer"]
        return create, part_params

    async def _multipart(
        self,
        bucket: str,
        key: str,
        create: Mapping[str, Any],
        common: Mapping[str, Any],
        upload_parts: Callable[[str], Awaitable[list[dict[str, Any]]]],
    ) -> dict[str, Any]:
        """Create, fill and complete a multipart upload; abort it if anything fails."""
        upload = await self._call("create_multipart_upload", Bucket=bucket, Key=key, **create, **common)
        upload_id = upload["UploadId"]
        try:
            parts = await upload_parts(upload_id)
            return await self._call(
                "complete_multipart_upload",
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **common,
            )
        except BaseException:
            # Uploaded parts are billed until aborted; cancellation must clean up too.
            with contextlib.suppress(StorageError):
                await self._call(
                    "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id, **common
                )
            raise

    # -- tags and deletes -------------------------------------------------------------------

    async def get_tags(self, bucket: str, key: str, version_id: str | None = None) -> dict[str, str]:
        lean = await self._lean_call(bucket, lambda lean, route: lean.get_tagging(route, key, version_id))
        if lean is not SKIP:
            return lean
        response = await self._call("get_object_tagging", **_target(bucket, key, version_id))
        return {tag["Key"]: tag["Value"] for tag in response.get("TagSet", [])}

    async def put_tags(
        self, bucket: str, key: str, tags: Mapping[str, str], version_id: str | None = None
    ) -> None:
        lean = await self._lean_call(
            bucket, lambda lean, route: lean.put_tagging(route, key, tags, version_id)
        )
        if lean is not SKIP:
            return
        tag_set = [{"Key": k, "Value": v} for k, v in tags.items()]
        await self._call(
            "put_object_tagging", **_target(bucket, key, version_id), Tagging={"TagSet": tag_set}
        )

    async def delete_tags(self, bucket: str, key: str, version_id: str | None = None) -> None:
        lean = await self._lean_call(bucket, lambda lean, route: lean.delete_tagging(route, key, version_id))
        if lean is not SKIP:
            return
        await self._call("delete_object_tagging", **_target(bucket, key, version_id))

    async def delete(self, bucket: str, key: str, version_id: str | None = None) -> None:
        lean = await self._lean_call(bucket, lambda lean, route: lean.delete_object(route, key, version_id))
        if lean is not SKIP:
            return
        await self._call("delete_object", **_target(bucket, key, version_id))

    async def delete_many(self, bucket: str, objects: Sequence[VersionRef]) -> list[Exception | None]:
        outcomes: list[Exception | None] = []
        for start in range(0, len(objects), DELETE_OBJECTS_MAX_KEYS):
            batch = objects[start : start + DELETE_OBJECTS_MAX_KEYS]
            lean = await self._lean_call(bucket, functools.partial(_lean_delete_objects, pairs=batch))
            if lean is not SKIP:
                errors = [{"Key": k, "VersionId": v, "Code": c, "Message": m} for k, v, c, m in lean]
                outcomes.extend(_delete_outcomes(batch, errors))
                continue
            entries = [_delete_entry(ref) for ref in batch]
            response = await self._call(
                "delete_objects", Bucket=bucket, Delete={"Objects": entries, "Quiet": True}
            )
            outcomes.extend(_delete_outcomes(batch, response.get("Errors", [])))
        return outcomes

    # -- ACLs, archive, object lock, replication, encryption -----------------------------

    async def put_acl(self, bucket: str, key: str, acl: AclSpec, version_id: str | None = None) -> None:
        # Explicit grants go as x-amz-grant-* headers, which replace the whole ACL exactly as an
        # AccessControlPolicy body does; moto (5.2) silently ignores the body's grants.
        await self._call("put_object_acl", **_target(bucket, key, version_id), **acl_params(acl))

    async def restore(
        self,
        bucket: str,
        key: str,
        days: int | None,
        tier: str | None,
        version_id: str | None = None,
    ) -> None:
        request: dict[str, Any] = {}
        if days is not None:
            request["Days"] = days
        if tier is not None:
            request["GlacierJobParameters"] = {"Tier": tier}
        await self._call("restore_object", **_target(bucket, key, version_id), RestoreRequest=request)

    async def put_legal_hold(self, bucket: str, key: str, status: str, version_id: str | None = None) -> None:
        target = _target(bucket, key, version_id)
        try:
            await self._call("put_object_legal_hold", **target, LegalHold={"Status": status})
        except StorageError as exc:
            raise await self._missing_or(exc, bucket, key, version_id) from exc

    async def put_retention(
        self,
        bucket: str,
        key: str,
        retention: Retention,
        version_id: str | None = None,
        *,
        bypass_governance: bool = False,
    ) -> None:
        body: dict[str, Any] = {}
        if retention.mode is not None:
            body["Mode"] = retention.mode
        if retention.retain_until is not None:
            body["RetainUntilDate"] = retention.retain_until
        extra = {"BypassGovernanceRetention": True} if bypass_governance else {}
        try:
            await self._call(
                "put_object_retention", **_target(bucket, key, version_id), Retention=body, **extra
            )
        except StorageError as exc:
            raise await self._missing_or(exc, bucket, key, version_id) from exc

    async def _missing_or(
        self, exc: StorageError, bucket: str, key: str, version_id: str | None
    ) -> StorageError:
        """moto answers 500 to lock calls on a missing key; a HEAD tells the real reason."""
        if exc.http_status != 500:
            return exc
        try:
            await self.head(bucket, key, version_id)
        except StorageError as head_exc:
            if head_exc.http_status == 404:
                return head_exc
        return exc

    async def replication_rules(self, bucket: str) -> list[ReplicationRule]:
        try:
            response = await self._call("get_bucket_replication", Bucket=bucket)
        except StorageError as exc:
            if exc.code == "ReplicationConfigurationNotFoundError":
                return []
            raise
        return _replication_rules(response.get("ReplicationConfiguration", {}))

    async def update_encryption(
        self, bucket: str, key: str, sse: KmsEncryption, version_id: str | None = None
    ) -> None:
        extra = {
            "ServerSideEncryption": "aws:kms",
            "SSEKMSKeyId": sse.key_arn,
            "BucketKeyEnabled": sse.bucket_key_enabled,
        }
        # A copy onto itself keeping metadata and tags (the CopyOptions defaults) re-encrypts.
        await self.copy(bucket, key, bucket, key, src_version_id=version_id, options=CopyOptions(extra=extra))


# -- request and response shapes ----------------------------------------------------------


def acl_params(acl: AclSpec) -> dict[str, str]:
    """PutObjectAcl parameters for an ACL: the canned ACL, or one header per permission."""
    if acl.canned is not None:
        return {"ACL": acl.canned}
    return grant_params(acl.grants)


async def _lean_client(session: AioSession, region: str) -> LeanS3 | None:
    """The lean path with the same credential chain as botocore; None without credentials
    (anonymous access stays on botocore)."""
    credentials = await session.get_credentials()
    if credentials is None:
        return None

    frozen = await credentials.get_frozen_credentials()
    fixed = Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    async def static() -> Credentials:
        return fixed

    async def current() -> Credentials:
        # Refreshable credentials (SSO, assumed roles) renew here, as they would in botocore.
        frozen = await credentials.get_frozen_credentials()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    refreshable = hasattr(credentials, "refresh_needed")
    return LeanS3(Signer(region), current if refreshable else static)


async def _or_none(call: Awaitable[_T]) -> _T | None:
    """A lean read, or None when it failed. A read's errors (a HEAD 404 without a body to
    tell NoSuchKey from NoSuchBucket, a range past the end, a body over http1's limit) are
    left to botocore's path, whose handling of each the callers rely on."""
    try:
        return await call
    except StorageError as exc:
        if exc.code == TLS_ERROR:  # botocore would be refused too: say why, don't retry there
            raise
        return None


@functools.cache
def _head_parsing() -> tuple[Any, OperationModel]:
    """botocore's own HeadObject parser and model: a lean HEAD's headers become exactly the
    dict aiobotocore would have returned."""
    model = ServiceModel(_shared_loader(None).load_service_model("s3", "service-2"), "s3")
    factory = ResponseParserFactory()
    factory.set_parser_defaults(timestamp_parser=_parse_timestamp)
    return factory.create_parser(model.protocol), model.operation_model("HeadObject")


def _parsed_head(headers: Mapping[str, str]) -> dict[str, Any]:
    parser, operation = _head_parsing()
    # http1 reads header values as latin-1, aiohttp (botocore's transport) as UTF-8: match it.
    utf8 = {
        k: v if v.isascii() else v.encode("latin-1").decode("utf-8", "surrogateescape")
        for k, v in headers.items()
    }
    response: dict[str, Any] = {"status_code": 200, "headers": HeadersDict(utf8), "body": b""}
    custom: dict[str, Any] = {}
    handle_expires_header(operation_model=operation, response_dict=response, customized_response_dict=custom)
    parsed: dict[str, Any] = parser.parse(response, operation.output_shape)
    parsed.update(custom)
    return parsed


def _range_total(content_range: str) -> int | None:
    """The object size from `bytes first-last/total`; None when the server did not say."""
    total = content_range.rpartition("/")[2]
    return int(total) if total.isdigit() else None


def _lean_put_headers(
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


async def _lean_delete_objects(
    lean: LeanS3, route: Route, *, pairs: Sequence[tuple[str, str | None]]
) -> list[tuple[str, str | None, str, str]]:
    return await lean.delete_objects(route, pairs)


def _lean_copy_headers(options: CopyOptions) -> dict[str, str] | None:
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
            headers["x-amz-tagging"] = _tagging_header(options.tags)
    if options.storage_class:
        headers["x-amz-storage-class"] = options.storage_class
    return headers


def _copy_source_header(source: Mapping[str, Any]) -> str:
    """x-amz-copy-source as botocore encodes a CopySource dict."""
    header = encode_path(f"{source['Bucket']}/{source['Key']}")
    if source.get("VersionId") is not None:
        header += f"?versionId={quote(source['VersionId'], safe='')}"
    return header


def _listed_info(bucket: str, entry: Mapping[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        bucket=bucket,
        key=entry["Key"],
        size=entry.get("Size", 0),
        etag=_unquote(entry.get("ETag", "")),
        last_modified=entry["LastModified"],
        storage_class=entry.get("StorageClass") or "STANDARD",
        version_id=entry.get("VersionId"),
        is_latest=bool(entry.get("IsLatest", True)),
    )


def _page_versions(bucket: str, page: Mapping[str, Any]) -> list[ObjectInfo]:
    """One ListObjectVersions page's versions and delete markers, merged: key order, newest first."""
    versions = [_listed_info(bucket, entry) for entry in page.get("Versions", [])]
    markers = [
        replace(_listed_info(bucket, entry), is_delete_marker=True) for entry in page.get("DeleteMarkers", [])
    ]
    # Both lists are already key order, newest first; a stable sort merges them. LastModified
    # has 1-second resolution, so IsLatest decides first and ties keep the server's order.
    return sorted([*versions, *markers], key=lambda i: (i.key, not i.is_latest, -i.last_modified.timestamp()))


def _replication_rules(config: Mapping[str, Any]) -> list[ReplicationRule]:
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


def _parse_timestamp(value: Any) -> datetime:
    """botocore's parser goes through dateutil, which took about half the client CPU of a
    listing (one LastModified per key); S3's ISO 8601 form ("...T12:00:00.000Z") parses
    natively in a fraction of that. Anything else goes to botocore's parser."""
    if isinstance(value, str) and value.endswith("Z"):
        with contextlib.suppress(ValueError):
            return datetime.fromisoformat(value[:-1] + "+00:00")
    parsed: datetime = botocore_parse_timestamp(value)
    return parsed


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


def _target(bucket: str, key: str, version_id: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if version_id is not None:
        params["VersionId"] = version_id
    return params


def _unquote(etag: str) -> str:
    return etag.strip('"')


def _object_info(bucket: str, key: str, response: Mapping[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        bucket=bucket,
        key=key,
        size=response.get("ContentLength", 0),
        etag=_unquote(response.get("ETag", "")),
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


def _tagging_header(tags: Mapping[str, str]) -> str:
    # %20 rather than "+" for spaces: some S3 servers do not decode "+" in x-amz-tagging.
    return urlencode(dict(tags), quote_via=quote)


def _part_size(total: int, preferred: int) -> int:
    """`preferred`, grown as needed to stay within MAX_PARTS."""
    return max(preferred, math.ceil(total / MAX_PARTS))


def _ranges(total: int, part_size: int) -> Iterator[tuple[int, int]]:
    """Inclusive (first, last) byte ranges covering `total` bytes."""
    for first in range(0, total, part_size):
        yield first, min(first + part_size, total) - 1


def _read_range(path: Path, first: int, last: int) -> bytes:
    with path.open("rb") as f:
        f.seek(first)
        return f.read(last - first + 1)


def _completed_part(number: int, result: Mapping[str, Any]) -> dict[str, Any]:
    part: dict[str, Any] = {"PartNumber": number, "ETag": result["ETag"]}
    # With a ChecksumAlgorithm, CompleteMultipartUpload must list each part's checksum.
    part.update({k: v for k, v in result.items() if k.startswith("Checksum")})
    return part


async def _all_or_first_error(coros: Sequence[Awaitable[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run all; on the first failure cancel the rest and raise that failure itself."""

    async def run(coro: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        return await coro

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(run(coro)) for coro in coros]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]


def _delete_entry(ref: VersionRef) -> dict[str, str]:
    entry = {"Key": ref.key}
    if ref.version_id is not None:
        entry["VersionId"] = ref.version_id
    return entry


def _delete_outcomes(
    batch: Sequence[VersionRef], errors: Sequence[Mapping[str, Any]]
) -> list[Exception | None]:
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


# -- errors -------------------------------------------------------------------------------


async def _local_io(path: Path, work: Awaitable[_T]) -> _T:
    """A local file read for put_file; its OSError is the caller's problem, not S3's."""
    try:
        return await work
    except OSError as exc:
        raise StorageError("LocalFileError", f"{path}: {exc}") from exc


@contextlib.contextmanager
def _translating() -> Iterator[None]:
    """Turn whatever botocore, aiohttp or the socket raise into a StorageError."""
    try:
        yield
    except StorageError:
        raise
    except ClientError as exc:
        raise _from_client_error(exc) from exc
    except (TimeoutError, ReadTimeoutError, ConnectTimeoutError) as exc:
        raise StorageError("RequestTimeout", _describe(exc), None, True) from exc
    except BotoSSLError as exc:
        if _tls_refused(exc):  # as the lean path reports it: lean.connection_error
            raise StorageError(TLS_ERROR, f"{_describe(exc)}; {TLS_HINT}") from exc
        raise StorageError("ConnectionError", _describe(exc), None, True) from exc
    except (BotoConnectionError, HTTPClientError, IncompleteReadError, aiohttp.ClientError, OSError) as exc:
        raise StorageError("ConnectionError", _describe(exc), None, True) from exc
    except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as exc:
        raise StorageError("CredentialsError", _describe(exc)) from exc
    except ParamValidationError as exc:
        raise StorageError("InvalidArgument", _describe(exc)) from exc
    except BotoCoreError as exc:
        raise StorageError(type(exc).__name__, _describe(exc)) from exc


def _tls_refused(exc: BaseException) -> bool:
    """Whether a certificate refusal (untrusted, expired, wrong host) is among `exc`'s causes;
    other TLS failures (a handshake cut short) may pass and stay retryable."""
    cause: BaseException | None = exc
    for _ in range(_CAUSE_DEPTH):
        if cause is None:
            return False
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _from_client_error(exc: ClientError) -> StorageError:
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = str(error.get("Code") or status or "Unknown")
    return storage_error(code, str(error.get("Message") or exc), status)
