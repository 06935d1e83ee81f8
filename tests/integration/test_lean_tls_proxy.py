"""TLS trust, proxies and unreachable endpoints on the S3 adapter, lean path included.

moto's server speaks plain HTTP, so HTTPS is a TLS-terminating relay written here (its
certificate made at test time by a CA of the test's own), and a proxy is a small forward proxy
written here too (absolute-form requests for http://, CONNECT tunnels for https://), both on
127.0.0.1 in a thread of their own, each counting what it carried. Jobs run in-process, as
the other job tests do (test_jobs.create / run).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from test_jobs import create, run, seed

from conftest import Env
from s3batch.domain.task import Task
from s3batch.errors import StorageError
from s3batch.service import probe as probe_module
from s3batch.service import runner as runner_module
from s3batch.storage.config import S3Config
from s3batch.storage.s3 import S3Store
from s3batch.storage.s3 import client as s3_client
from s3batch.storage.s3.http1 import ConnectionPool, Response

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

_T = TypeVar("_T")
#: Seconds a test waits for its relay or proxy thread to start or stop.
THREAD_WAIT_S = 10.0
#: Bytes one read of a relayed stream takes at most.
PIPE_CHUNK_BYTES = 64 * 1024
#: Reads one relayed stream takes at most (far more than any test sends on one connection).
MAX_PIPE_READS = 100_000
#: Lines of one HTTP head, chunks of one chunked body, and requests on one client connection
#: the proxy handles at most.
MAX_HEAD_LINES = 200
MAX_CHUNKS = 100_000
MAX_REQUESTS_PER_CONNECTION = 10_000
TAGGING: dict[str, Any] = {"S3PutObjectTagging": {"TagSet": [{"Key": "team", "Value": "data"}]}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- certificates -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A CA of the test's own and a server certificate it signed for 127.0.0.1."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_pki(folder: Path, name: str) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"s3batch test CA {name}")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    pki.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return pki


# -- a loop in a thread, for the relay and the proxy --------------------------------------


class LoopThread:
    """An event loop in a daemon thread; `call` runs a coroutine there and waits for it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(THREAD_WAIT_S)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(THREAD_WAIT_S)
        self.loop.close()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy `reader` to `writer` until either side closes."""
    try:
        for _ in range(MAX_PIPE_READS):
            data = await reader.read(PIPE_CHUNK_BYTES)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


@dataclass
class Listener:
    """One server on the loop thread and the tasks serving its connections."""

    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    def track(self, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.writers.add(writer)

    async def stop(self) -> None:
        """Stop listening and cut every open connection (the port then refuses)."""
        if self.server is not None:
            self.server.close()
        for writer in list(self.writers):
            writer.transport.abort()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()
        self.server, self.tasks, self.writers = None, set(), set()


class TlsRelay:
    """HTTPS on 127.0.0.1:`port`, relayed byte for byte to moto's plain-HTTP port.
    `restart` serves another certificate on the same port; `stop` leaves the port closed."""

    def __init__(self, thread: LoopThread, upstream_port: int, pki: Pki) -> None:
        self._thread = thread
        self._upstream_port = upstream_port
        self.port = free_port()
        self.connections = 0
        self._listener = Listener()
        self.restart(pki)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def restart(self, pki: Pki) -> None:
        self.stop()
        self._thread.call(self._start(pki.server_context()))

    def stop(self) -> None:
        self._thread.call(self._listener.stop())

    async def _start(self, context: ssl.SSLContext) -> None:
        self._listener.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=context)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._listener.track(writer)
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except OSError:
            writer.close()
            return
        self._listener.writers.add(up_writer)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


class ForwardProxy:
    """A forward HTTP proxy on 127.0.0.1: absolute-form requests are rewritten to origin form
    and sent on (each counted in `requests`); CONNECT opens a tunnel (counted in `tunnels`)."""

    def __init__(self, thread: LoopThread) -> None:
        self._thread = thread
        self.port = free_port()
        self.requests: list[str] = []
        self.tunnels: list[str] = []
        self._listener = Listener()
        self._thread.call(self._start())

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._thread.call(self._listener.stop())

    async def _start(self) -> None:
        self._listener.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._listener.track(writer)
        try:
            head = await _read_head(reader)
            method, target, _version = head[0].split(" ", 2)
            if method == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(head, reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _tunnel(self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, _, port = target.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self._listener.writers.add(up_writer)
        self.tunnels.append(target)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def _forward(
        self, head: list[str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Requests of one client connection, all to the origin of the first one; answers are
        piped back as they come (the client reads them in order)."""
        origin = head[0].split(" ")[1].split("/")[2]
        host, _, port = origin.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        self._listener.writers.add(up_writer)
        answers = asyncio.ensure_future(pipe(up_reader, writer))
        try:
            for _ in range(MAX_REQUESTS_PER_CONNECTION):
                if not head:
                    break
                method, target, version = head[0].split(" ", 2)
                path = "/" + target.split("/", 3)[3] if target.startswith("http://") else target
                self.requests.append(f"{method} {target}")
                lines = [f"{method} {path} {version}", *head[1:]]
                up_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
                await _copy_body(head, reader, up_writer)
                await up_writer.drain()
                head = await _read_head(reader)
        finally:
            await answers


async def _read_head(reader: asyncio.StreamReader) -> list[str]:
    """The request line and headers of the next request; [] when the client closed."""
    lines: list[str] = []
    for _ in range(MAX_HEAD_LINES):
        line = await reader.readline()
        if not line:
            return []
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            return lines
        lines.append(text)
    raise ValueError("request head too long")


def _header(head: list[str], name: str) -> str:
    for line in head[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return ""


async def _copy_body(head: list[str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if "chunked" in _header(head, "transfer-encoding").lower():
        for _ in range(MAX_CHUNKS):
            size_line = await reader.readline()
            writer.write(size_line)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                for _ in range(MAX_HEAD_LINES):  # trailers, then the empty line
                    line = await reader.readline()
                    writer.write(line)
                    if line in (b"\r\n", b""):
                        return
                return
            writer.write(await reader.readexactly(size + 2))
        raise ValueError("too many chunks")
    length = int(_header(head, "content-length") or 0)
    if length:
        writer.write(await reader.readexactly(length))


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.close()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki-trusted"), "trusted")


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A second CA, never trusted by any test."""
    return make_pki(tmp_path_factory.mktemp("pki-other"), "other")


@pytest.fixture
def relay(loop_thread: LoopThread, moto_server: str, pki: Pki) -> Iterator[TlsRelay]:
    relay = TlsRelay(loop_thread, int(moto_server.rsplit(":", 1)[1]), pki)
    try:
        yield relay
    finally:
        relay.stop()


@pytest.fixture
def proxy(loop_thread: LoopThread) -> Iterator[ForwardProxy]:
    proxy = ForwardProxy(loop_thread)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def direct_s3(moto_server: str) -> Any:
    """boto3 straight to moto's plain-HTTP port (not through the relay or a proxy)."""
    return boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1")


@dataclass
class Paths:
    """Which way a job's requests went."""

    lean: list[str] = field(default_factory=list)
    boto: list[str] = field(default_factory=list)
    clients_built: int = 0


@pytest.fixture
def paths(monkeypatch: pytest.MonkeyPatch) -> Paths:
    """Counts requests sent by the lean path's pools, aiobotocore calls, and clients built."""
    seen = Paths()
    real_request = ConnectionPool.request
    real_call = S3Store._call
    real_create = s3_client._create_client

    async def lean_request(self: ConnectionPool, data: bytes, **kwargs: Any) -> Response:
        seen.lean.append(data.split(b"\r\n", 1)[0].decode())
        return await real_request(self, data, **kwargs)

    async def boto_call(self: S3Store, operation: str, **params: Any) -> dict[str, Any]:
        seen.boto.append(operation)
        return await real_call(self, operation, **params)

    def create_client(*args: Any) -> Any:
        seen.clients_built += 1
        return real_create(*args)

    monkeypatch.setattr(ConnectionPool, "request", lean_request)
    monkeypatch.setattr(S3Store, "_call", boto_call)
    monkeypatch.setattr(s3_client, "_create_client", create_client)
    return seen


def https_env(tmp_path: Path, relay: TlsRelay, client: Any, monkeypatch: pytest.MonkeyPatch) -> Env:
    """Jobs on the relay's HTTPS endpoint; objects arranged and checked over plain HTTP."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", relay.url)
    return Env("moto", S3Config(endpoint_url=relay.url), tmp_path / "home", client=client)


def http_env(tmp_path: Path, endpoint: str, client: Any, monkeypatch: pytest.MonkeyPatch) -> Env:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    return Env("moto", S3Config(endpoint_url=endpoint), tmp_path / "home", client=client)


def run_jobs(env: Env, bucket: str) -> None:
    """A copy, a tagging and a delete job, with manifest read and report written: each
    completes with its two objects done and the one missing object failed."""
    seed(env, bucket, ["a b.txt", "c+d.txt"])
    rows = [(bucket, "a b.txt"), (bucket, "c+d.txt"), (bucket, "missing")]
    operations: list[dict[str, Any]] = [
        {"S3PutObjectCopy": {"TargetResource": f"arn:aws:s3:::{bucket}", "TargetKeyPrefix": "copied"}},
        TAGGING,
        {"S3DeleteObject": {}},
    ]
    for op in operations:
        batch, job_id = create(env, bucket, op, rows)
        job = run(batch, job_id)
        assert job["Status"] == "Complete", job
        assert job["ProgressSummary"]["NumberOfTasksSucceeded"] >= 2, (op, job)
    keys = {o["Key"] for o in env.client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert {"copied/a b.txt", "copied/c+d.txt"} <= keys and "a b.txt" not in keys
    assert any(k.startswith("reports/") and k.endswith(".csv") for k in keys)


# -- TLS ----------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE"])
def test_lean_path_trusts_the_ca_bundle_variables(
    variable: str, tmp_path: Path, relay: TlsRelay, direct_s3: Any, pki: Pki, paths: Paths,
    bucket_name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv(variable, str(pki.ca_file))
    run_jobs(https_env(tmp_path, relay, direct_s3, monkeypatch), bucket_name)
    assert paths.lean and relay.connections > 0
    assert paths.clients_built == 0, paths.boto  # every call went the lean way, over TLS


def test_lean_path_trusts_the_profiles_ca_bundle(
    tmp_path: Path, relay: TlsRelay, direct_s3: Any, pki: Pki, paths: Paths,
    bucket_name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    config = tmp_path / "aws-config"
    config.write_text(f"[default]\nca_bundle = {pki.ca_file}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    run_jobs(https_env(tmp_path, relay, direct_s3, monkeypatch), bucket_name)
    assert paths.lean and paths.clients_built == 0, paths.boto


@pytest.mark.parametrize("how", ["env", "config"])
def test_verification_can_be_turned_off(
    how: str, tmp_path: Path, relay: TlsRelay, direct_s3: Any, paths: Paths,
    bucket_name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """No CA bundle at all: S3BATCH_VERIFY_SSL=0, or S3Config(verify_ssl=False), as the AWS
    CLI's --no-verify-ssl."""
    env = https_env(tmp_path, relay, direct_s3, monkeypatch)
    if how == "env":
        monkeypatch.setenv("S3BATCH_VERIFY_SSL", "0")
        run_jobs(env, bucket_name)
    else:
        asyncio.run(
            _store_round_trip(S3Config(endpoint_url=relay.url, verify_ssl=False), direct_s3, bucket_name)
        )
    assert paths.lean and paths.clients_built == 0, paths.boto


async def _store_round_trip(config: S3Config, client: Any, bucket: str) -> None:
    client.create_bucket(Bucket=bucket)
    store = S3Store(config)
    try:
        await store.put_bytes(bucket, "k", b"body")
        assert await store.get_bytes(bucket, "k") == b"body"
        await store.put_tags(bucket, "k", {"a": "1"})
        assert await store.get_tags(bucket, "k") == {"a": "1"}
        assert [o.key async for o in store.list_objects(bucket)] == ["k"]
        await store.delete(bucket, "k")
    finally:
        await store.close()


def test_untrusted_certificate_fails_clearly(
    tmp_path: Path, relay: TlsRelay, direct_s3: Any, paths: Paths,
    bucket_name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """No CA bundle for the endpoint's CA: the job fails at once (a refused certificate is not
    retried) and says why; nothing went around the TLS check through another client."""
    env = https_env(tmp_path, relay, direct_s3, monkeypatch)
    seed(env, bucket_name, ["a"])
    batch, job_id = create(env, bucket_name, {"S3DeleteObject": {}}, [(bucket_name, "a")])
    job = run(batch, job_id)
    assert job["Status"] == "Failed"
    [reason] = job["FailureReasons"]
    assert "TLSError" in reason["FailureReason"] and "certificate" in reason["FailureReason"], reason
    assert "AWS_CA_BUNDLE" in reason["FailureReason"], reason
    assert paths.clients_built == 0 and len(paths.lean) <= 1, paths  # refused once, no fallback
    assert env.get(bucket_name, "a") == b"body of a"


def test_unreadable_ca_bundle_is_a_tls_error(
    relay: TlsRelay, direct_s3: Any, tmp_path: Path, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tmp_path / "no-such-ca.pem"))
    direct_s3.create_bucket(Bucket=bucket_name)

    async def attempt() -> None:
        store = S3Store(S3Config(endpoint_url=relay.url))
        try:
            await store.put_bytes(bucket_name, "k", b"x")
        finally:
            await store.close()

    with pytest.raises(StorageError) as caught:
        asyncio.run(attempt())
    assert (caught.value.code, caught.value.retryable) == ("TLSError", False), caught.value
    assert "no-such-ca.pem" in caught.value.message


def test_aiobotocore_reports_a_refused_certificate_as_tls_error(
    relay: TlsRelay, direct_s3: Any, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3BATCH_LEAN_PATH", "0")
    direct_s3.create_bucket(Bucket=bucket_name)

    async def attempt() -> None:
        store = S3Store(S3Config(endpoint_url=relay.url))
        try:
            await store.put_bytes(bucket_name, "k", b"x")
        finally:
            await store.close()

    with pytest.raises(StorageError) as caught:
        asyncio.run(attempt())
    assert (caught.value.code, caught.value.retryable) == ("TLSError", False), caught.value
    assert "certificate" in caught.value.message.lower()


# -- proxies ------------------------------------------------------------------------------


def _set_proxy(monkeypatch: pytest.MonkeyPatch, name: str, url: str, no_proxy: str | None) -> None:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.lower(), raising=False)
    monkeypatch.setenv(name, url)
    if no_proxy is not None:
        monkeypatch.setenv("NO_PROXY", no_proxy)


@pytest.mark.parametrize("name", ["HTTP_PROXY", "http_proxy"])
def test_http_proxy_carries_every_request_unless_no_proxy_names_the_host(
    name: str, tmp_path: Path, proxy: ForwardProxy, moto_server: str, direct_s3: Any,
    paths: Paths, bucket_name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    env = http_env(tmp_path, moto_server, direct_s3, monkeypatch)
    _set_proxy(monkeypatch, name, proxy.url, "127.0.0.1")
    run_jobs(env, bucket_name + "-direct")
    assert proxy.requests == [] and proxy.tunnels == []
    assert paths.lean and paths.clients_built == 0  # not proxied: the lean path as usual

    paths.lean.clear()
    paths.boto.clear()
    _set_proxy(monkeypatch, name, proxy.url, None)
    run_jobs(env, bucket_name)
    assert paths.lean == []  # the lean client speaks no proxy protocol: all went to aiobotocore
    assert paths.boto and len(proxy.requests) >= len(paths.boto), (proxy.requests, paths.boto)
    assert all(r.split(" ")[1].startswith(moto_server) for r in proxy.requests)


def test_https_proxy_tunnels_https_endpoints(
    tmp_path: Path, proxy: ForwardProxy, relay: TlsRelay, direct_s3: Any, pki: Pki,
    paths: Paths, bucket_name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    _set_proxy(monkeypatch, "HTTPS_PROXY", proxy.url, None)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(pki.ca_file))
    run_jobs(https_env(tmp_path, relay, direct_s3, monkeypatch), bucket_name)
    assert paths.lean == [] and paths.boto
    assert proxy.tunnels and set(proxy.tunnels) == {f"127.0.0.1:{relay.port}"}
    assert relay.connections == len(proxy.tunnels)  # every connection came through the proxy


# -- an endpoint that cannot be reached ---------------------------------------------------


def _first_task(bucket: str) -> Task:
    return Task(seq=0, bucket=bucket, raw_key="k", key="k")


def test_probe_reports_a_closed_port_as_unreachable(bucket_name: str) -> None:
    async def check() -> Any:
        store = S3Store(S3Config(endpoint_url=f"http://127.0.0.1:{free_port()}", connect_timeout_s=2.0))
        try:
            return await probe_module.probe(store, TAGGING, _first_task(bucket_name))
        finally:
            await store.close()

    reason = asyncio.run(check())
    assert reason is not None and reason.code == "EndpointUnreachable", reason
    assert "ConnectionError" in reason.reason and "does not support" not in reason.reason


def _break_before_probe(monkeypatch: pytest.MonkeyPatch, breaking: Callable[[], None]) -> list[str]:
    """The endpoint changes between the manifest read and the probe (`breaking` runs then)."""
    calls: list[str] = []
    real_probe = probe_module.probe

    async def probe_after_break(*args: Any) -> Any:
        calls.append("probe")
        await asyncio.to_thread(breaking)
        return await real_probe(*args)

    monkeypatch.setattr(runner_module, "probe", probe_after_break)
    return calls


@pytest.mark.parametrize("failure", ["closed-port", "untrusted-certificate"])
def test_job_fails_as_unreachable_not_as_unsupported(
    failure: str, tmp_path: Path, relay: TlsRelay, direct_s3: Any, pki: Pki, other_pki: Pki,
    bucket_name: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("AWS_CA_BUNDLE", str(pki.ca_file))
    env = https_env(tmp_path, relay, direct_s3, monkeypatch)
    seed(env, bucket_name, ["a"])
    calls = _break_before_probe(
        monkeypatch, relay.stop if failure == "closed-port" else lambda: relay.restart(other_pki)
    )
    batch, job_id = create(env, bucket_name, TAGGING, [(bucket_name, "a")])
    job = run(batch, job_id)
    assert calls == ["probe"] and job["Status"] == "Failed", job
    [reason] = job["FailureReasons"]
    assert reason["FailureCode"] == "EndpointUnreachable", reason
    expected = "ConnectionError" if failure == "closed-port" else "TLSError"
    assert expected in reason["FailureReason"] and "does not support" not in reason["FailureReason"]
    assert direct_s3.get_object_tagging(Bucket=bucket_name, Key="a")["TagSet"] == []
