"""The S3 adapter's connection to an endpoint: one botocore session, credentials, lean request
path and (built on first use) aiobotocore client per config and event loop, shared by every
S3Store of that config; the lean path's per-bucket routes and connection pools; and the TLS
and proxy settings botocore would use, so both request paths reach the endpoint alike.

botocore's own retries are off: s3batch retries whole tasks itself (s3batch.retry) and feeds
throttling into its concurrency limit, so a hidden second retry loop would only hide both.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import os
import ssl
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import botocore.session
from botocore.config import Config
from botocore.credentials import create_credential_resolver
from botocore.exceptions import BotoCoreError
from botocore.hooks import HierarchicalEmitter
from botocore.httpsession import create_urllib3_context, get_cert_path
from botocore.utils import get_environ_proxies

from s3batch.errors import StorageError
from s3batch.storage.config import S3Config
from s3batch.storage.s3.credentials import GivenCredentials, SharedKeys, aio_credentials
from s3batch.storage.s3.errors import TLS_ERROR, translating
from s3batch.storage.s3.http1 import ConnectionPool
from s3batch.storage.s3.lean import Credentials, Fallback, LeanS3, Route, Signer
from s3batch.storage.s3.ranged import RangeReader
from s3batch.storage.s3.shapes import parse_timestamp, shared_loader

if TYPE_CHECKING:
    from aiobotocore.session import AioSession

#: Region used when neither the config, the environment nor the profile names one.
DEFAULT_REGION = "us-east-1"
#: Set to "0" to send every request through aiobotocore (to compare, or to rule the lean
#: request path out when debugging a store).
LEAN_PATH_ENV = "S3BATCH_LEAN_PATH"
#: Set to "0" to skip TLS certificate verification, as the AWS CLI's --no-verify-ssl does
#: (botocore has no variable of its own for it); S3Config.verify_ssl=False does it for one store.
VERIFY_SSL_ENV = "S3BATCH_VERIFY_SSL"
#: The key in the presigned URL from which a bucket's lean route is learnt (never requested).
_ROUTE_PROBE_KEY = "s3batch-route-probe"
#: Credentials of the route-learning presigner: its URLs are parsed, never sent.
_PLACEHOLDER_CREDENTIAL = "s3batch-route-probe"
#: Presigners kept per process (one per config, region and AWS_* environment).
PRESIGNERS_CACHED = 16


@dataclass(eq=False)
class SharedClient:
    """One botocore session, lean request path and (when a call needs it) aiobotocore client,
    shared by the S3Stores of one config on one event loop: a job's manifest reader and its
    engine then pay for one of each and one connection pool.

    The aiobotocore client is built on first use only, and aiobotocore (with aiohttp under it,
    ~0.2 s to import, most of it building TLS contexts) is imported then: a job whose calls all
    take the lean path (a delete, a plain copy, tagging, a transfer of small objects, with its
    manifest generated or read and its report written on the lean path too) never loads it."""

    key: tuple[S3Config, asyncio.AbstractEventLoop]
    #: botocore's own session: the config's settings, and the credentials both paths sign with.
    session: botocore.session.Session
    region: str
    lean: LeanS3 | None
    #: What `session` resolved once (None: no credentials); the aiobotocore client signs with
    #: the same (credentials.py).
    keys: SharedKeys | None = None
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
    #: The lean routes' ranged readers (ranged.py), by (host, port, tls), made on first use.
    readers: dict[tuple[str, int, bool], RangeReader] = field(default_factory=dict)
    #: Open S3Stores using it; the last close() closes it.
    users: int = 0

    async def botocore(self) -> Any:
        """The aiobotocore client, built on first use."""
        if self.client is None:
            async with self.client_lock:
                if self.client is None:
                    with translating():
                        creator = _create_client(self.key[0], self.region, self.keys)
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
            return Route.parse(url, _ROUTE_PROBE_KEY, self._pool, self._reader)
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

    def _reader(self, host: str, port: int, tls: bool) -> RangeReader:
        reader_key = (host, port, tls)
        if reader_key not in self.readers:
            cfg = self.key[0]
            self.readers[reader_key] = RangeReader(
                host,
                port,
                ssl_context=(self.ssl_context or ssl.create_default_context()) if tls else None,
                connect_timeout_s=cfg.connect_timeout_s,
                read_timeout_s=cfg.read_timeout_s,
            )
        return self.readers[reader_key]

    async def aclose(self) -> None:
        readers, self.readers = self.readers, {}
        for reader in readers.values():
            reader.close()
        pools, self.pools = self.pools, {}
        for pool in pools.values():
            await pool.close()
        with translating():
            await self.stack.aclose()


#: The open shared clients, by (config, event loop).
_OPEN: dict[tuple[S3Config, asyncio.AbstractEventLoop], SharedClient] = {}


async def acquire(cfg: S3Config) -> SharedClient:
    """The shared client of `cfg` on the running loop, opened if none is; `release` it after."""
    key = (cfg, asyncio.get_running_loop())
    shared = _OPEN.get(key)
    if shared is None:
        shared = await _open_client(cfg, key)
        if key in _OPEN:  # another store of this config opened one meanwhile: use that
            await shared.aclose()
            shared = _OPEN[key]
        else:
            _OPEN[key] = shared
    shared.users += 1
    return shared


async def release(shared: SharedClient) -> None:
    """One user fewer; the last one closes the client."""
    shared.users -= 1
    if shared.users == 0:
        if _OPEN.get(shared.key) is shared:
            del _OPEN[shared.key]
        await shared.aclose()


def _builtin_handlers(aio: bool) -> HierarchicalEmitter:
    """botocore's built-in event handlers, registered once per process and kind of session
    (botocore's, or aiobotocore's with its async emitter). A new session registers its ~130
    one by one (~3.5 ms of CPU: each name is aliased and each handler's signature inspected);
    a copy of this emitter is the same trie for ~0.3 ms. botocore itself gives every client a
    copy of its session's emitter the same way.

    It holds BUILTIN_HANDLERS only, rebuilt whenever that list grew: a session's initializers
    (botocore.register_initializer; AWS Lambda Powertools registers one that adds a user-agent
    hook) run on every new session anyway, so a copy that held their handlers would get them
    twice."""
    from botocore.handlers import BUILTIN_HANDLERS

    return _emitter_for(len(BUILTIN_HANDLERS), aio)


@functools.lru_cache(maxsize=2)
def _emitter_for(_builtins: int, aio: bool) -> HierarchicalEmitter:
    if aio:
        from aiobotocore.hooks import AioHierarchicalEmitter
        from aiobotocore.session import AioSession

        emitter: HierarchicalEmitter = AioHierarchicalEmitter()
        session: botocore.session.Session = AioSession(include_builtin_handlers=False)
    else:
        emitter = HierarchicalEmitter()
        session = botocore.session.Session(include_builtin_handlers=False)
    # The initializers run into the throwaway session's own emitter; then the built-ins are
    # registered into `emitter` through botocore's own registration code.
    session._events = type(session._events)(emitter)
    session._register_builtin_handlers(session._events)
    return emitter


def _session(profile: str | None) -> botocore.session.Session:
    """botocore's own session for a config: its settings, and the credential chain."""
    hooks = copy.copy(_builtin_handlers(aio=False))
    session = botocore.session.Session(profile=profile, event_hooks=hooks, include_builtin_handlers=False)
    session.register_component("data_loader", shared_loader(session.get_config_variable("data_path")))
    return session


async def _open_client(cfg: S3Config, key: tuple[S3Config, asyncio.AbstractEventLoop]) -> SharedClient:
    with translating():
        session = _session(cfg.profile)
        region = cfg.region or session.get_config_variable("region") or DEFAULT_REGION
        # The chain's STS calls (assumed roles, web identity) go to the config's region, as
        # they did when aiobotocore's client resolved it.
        resolver = create_credential_resolver(session, region_name=region)
        # The chain may call out (an instance's metadata service, STS, SSO): off the loop.
        credentials = await asyncio.to_thread(resolver.load_credentials)
        keys = None if credentials is None else SharedKeys(credentials)
        lean = None
        if keys is not None and cfg.lean_path and os.environ.get(LEAN_PATH_ENV, "1") != "0":
            lean = await _lean_client(keys, region)
        verify = _verify_setting(session, cfg)
    return SharedClient(key, session, region, lean, keys, verify)


def _aio_session(profile: str | None) -> AioSession:
    """An aiobotocore session set up as every one of this process's: botocore's handlers copied
    in (`_builtin_handlers`), the shared data loader, s3batch's timestamp parser."""
    from aiobotocore.session import AioSession

    hooks = copy.copy(_builtin_handlers(aio=True))
    session = AioSession(profile=profile, event_hooks=hooks, include_builtin_handlers=False)
    session.register_component("data_loader", shared_loader(session.get_config_variable("data_path")))
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=parse_timestamp)
    return session


def _create_client(cfg: S3Config, region: str, keys: SharedKeys | None) -> Any:
    """aiobotocore's client context manager for `cfg`, signing with `keys`, the shared client's
    credentials: the chain is not resolved a second time (credentials.py)."""
    from aiobotocore.config import AioConfig

    session = _aio_session(cfg.profile)
    given = None if keys is None else aio_credentials(keys)
    session.register_component("credential_provider", GivenCredentials(given))
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


def _verify_setting(session: botocore.session.Session, cfg: S3Config) -> bool | str:
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
    credential chain (and its network calls) stays with the job's own session. Built once per
    process, not per job: the first client of a process loads botocore's S3 model and endpoint
    rules (~0.1-0.2 s; later clients share them through `shared_loader`), a later one ~8 ms.
    Not tied to an event loop."""
    session = botocore.session.Session(profile=cfg.profile)
    session.register_component("data_loader", shared_loader(session.get_config_variable("data_path")))
    config = Config(region_name=region, s3={"addressing_style": cfg.addressing_style})
    return session.create_client(
        "s3",
        endpoint_url=cfg.endpoint_url,
        config=config,
        aws_access_key_id=_PLACEHOLDER_CREDENTIAL,
        aws_secret_access_key=_PLACEHOLDER_CREDENTIAL,
        verify=False,
    )


async def _lean_client(keys: SharedKeys, region: str) -> LeanS3:
    """The lean path, signing with the credentials botocore's chain resolved."""
    frozen = await keys.frozen()  # temporary ones may be fetched only now
    fixed = Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    async def static() -> Credentials:
        return fixed

    async def current() -> Credentials:
        # Temporary credentials (SSO, assumed roles) renew here, as they would in botocore.
        frozen = await keys.frozen()
        return Credentials(frozen.access_key, frozen.secret_key, frozen.token)

    return LeanS3(Signer(region), current if keys.temporary else static)
