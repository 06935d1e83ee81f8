"""Pipeline notifications end to end: a CSV-ingest pipeline run from the CLI notifies a real HTTP
receiver (which fails its first posts, to prove retries) and a real SMTP server (aiosmtpd, with
STARTTLS and login), both on 127.0.0.1 and started here. Delivery outcomes land in the state DB.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from click.testing import CliRunner
from tests.certs import self_signed
from tests.conftest import free_port
from tests.integration.conftest import Env

from s3batch.cli import cli
from s3batch.pipelines.notify.base import NotifyEvent
from s3batch.pipelines.state import PipelineState

pytestmark = pytest.mark.integration

HEADER = "id,amount,note\n"
SMTP_USER = "s3batch"
SMTP_PASSWORD = "sink-password"
PASSWORD_ENV = "TEST_SMTP_PASSWORD"


@dataclass
class Receiver:
    """An HTTP server that answers `fail_status` to its first `fail_first` posts, then 200."""

    fail_first: int = 0
    fail_status: int = 503
    posts: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with state.lock:
                state.attempts += 1
                failing = state.attempts <= state.fail_first
                if not failing:
                    assert self.headers["Content-Type"] == "application/json"
                    state.posts.append(json.loads(body))
            self.send_response(state.fail_status if failing else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook?token=secret"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class Sink:
    port: int
    ca_file: Path
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[Sink]:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    sink = Sink(port=free_port(), ca_file=cert)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            sink.messages.append(message_from_bytes(envelope.content, policy=policy.default))
            return "250 OK"

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
            SMTP_USER.encode(),
            SMTP_PASSWORD.encode(),
        )
        if ok:
            sink.logins.append(data.login.decode())
        return AuthResult(success=ok)

    controller = Controller(
        Handler(), hostname="127.0.0.1", port=sink.port, tls_context=context, require_starttls=True,
        authenticator=authenticate, auth_require_tls=True,
    )  # fmt: skip
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def write_pipeline(tmp_path: Path, notify: str) -> Path:
    db = tmp_path / "table.sqlite3"
    path = tmp_path / "orders.toml"
    path.write_text(
        f"""name = "orders"
source = "staging"
on_success = "archive"
archive = "archive"
error = "errors"
[operation.S3batchCsvIngest]
Table = {{ Backend = "sqlite", Path = "{db}", Name = "orders" }}
Schema = {{ PartitionKey = "id", Columns = [
  {{ Name = "id", Type = "int", Required = true }},
  {{ Name = "amount", Type = "decimal" }},
  {{ Name = "note", Type = "string" }},
] }}
{notify}""",
        encoding="utf-8",
    )
    return path


def run_backlog(env: Env, path: Path) -> dict[str, Any]:
    for bucket in ("staging", "archive", "errors"):
        env.make_bucket(bucket)
    env.put("staging", "good.csv", (HEADER + "1,1.50,a\n2,2.50,b\n").encode())
    env.put("staging", "mixed.csv", (HEADER + "3,1,c\nx,2,bad id\n4,zz,bad amount\n").encode())
    out = CliRunner().invoke(
        cli, ["pipeline", "run", str(path), "--backlog"], env={"S3BATCH_STORAGE": f"file://{env.root}"}
    )
    assert out.exit_code == 0, out.output
    info: dict[str, Any] = json.loads(out.output)
    return info


def test_webhook_retries_and_email_carry_the_csv_summary(
    local_env: Env, tmp_path: Path, receiver: Receiver, smtp_sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, SMTP_PASSWORD)
    receiver.fail_first = 2  # the first two posts get 503: retried with backoff
    notify = f"""
[[notify]]
webhook = "{receiver.url}"
on = ["success", "failure", "batch"]
attempts = 4
backoff_s = 0.05
[[notify]]
on = ["failure", "batch"]
[notify.smtp]
host = "127.0.0.1"
port = {smtp_sink.port}
from = "s3batch@example.com"
to = ["ops@example.com", "dev@example.com"]
starttls = true
username = "{SMTP_USER}"
password_env = "{PASSWORD_ENV}"
ca_file = "{smtp_sink.ca_file}"
"""
    info = run_backlog(local_env, write_pipeline(tmp_path, notify))
    assert info["files"] == {"archived": 1, "errored": 1}

    # Webhook: one post per file and one for the batch, after two failed attempts.
    assert receiver.attempts == 5
    by_type = {(p["type"], p.get("key")): p for p in receiver.posts}
    assert set(by_type) == {
        ("s3batch.pipeline.file", "good.csv"),
        ("s3batch.pipeline.file", "mixed.csv"),
        ("s3batch.pipeline.batch", None),
    }
    mixed = by_type[("s3batch.pipeline.file", "mixed.csv")]
    assert (mixed["event"], mixed["status"], mixed["disposition"]) == ("failure", "failed", "errored")
    assert mixed["errorCode"] == "RowsRejected" and mixed["pipeline"] == "orders"
    summary = mixed["summary"]
    assert (summary["rowsRead"], summary["rowsWritten"], summary["rowsRejected"]) == (3, 1, 2)
    assert [r["line"] for r in summary["rejected"]] == [3, 4]
    assert "not an int" in summary["rejected"][0]["reason"]
    good = by_type[("s3batch.pipeline.file", "good.csv")]
    assert (good["event"], good["disposition"], good["summary"]["rowsWritten"]) == ("success", "archived", 2)
    batch = by_type[("s3batch.pipeline.batch", None)]
    assert (batch["files"], batch["succeeded"], batch["failed"]) == (2, 1, 1)
    assert batch["rows"] == {"read": 5, "written": 3, "rejected": 2}
    assert [f["key"] for f in batch["failures"]] == ["mixed.csv"]

    # Email: the failure and the batch (no success: not asked for), over STARTTLS with login.
    assert smtp_sink.logins == [SMTP_USER, SMTP_USER]
    assert all(
        e == ("s3batch@example.com", ["ops@example.com", "dev@example.com"]) for e in smtp_sink.envelopes
    )
    subjects = sorted(str(m["Subject"]) for m in smtp_sink.messages)
    assert subjects == [
        "[s3batch] orders: batch of 2 file(s), 1 succeeded, 1 failed; rows 5 read, 3 written, 2 rejected",
        "[s3batch] orders: mixed.csv failed (RowsRejected): 3 read, 1 written, 2 rejected",
    ]
    failure = next(m for m in smtp_sink.messages if "mixed.csv failed" in str(m["Subject"]))
    body = failure.get_content()
    assert "Rows: 3 read, 1 written, 2 rejected" in body
    assert "line 4: " in body and '"rowsRejected": 2' in body

    # Every outcome is recorded in the state DB; the webhook needed 5 attempts for 3 notices.
    state = PipelineState(tmp_path / "orders.pipeline.sqlite3")
    try:
        deliveries = [d for _, d in state.notifications()]
    finally:
        state.close()
    assert all(d.delivered for d in deliveries) and len(deliveries) == 5
    webhook = [d for d in deliveries if d.target.startswith("http://")]
    assert sum(d.attempts for d in webhook) == 5
    assert all("token" not in d.target for d in webhook)  # the query string is never stored
    assert sorted(d.event for d in deliveries if d.target.startswith("smtp://")) == [
        NotifyEvent.BATCH,
        NotifyEvent.FAILURE,
    ]


def test_failed_deliveries_are_recorded_and_never_fail_the_files(
    local_env: Env, tmp_path: Path, receiver: Receiver, smtp_sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)  # the SMTP login cannot happen
    receiver.fail_first, receiver.fail_status = 100, 400  # 400: permanent, no retry
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    notify = f"""
[[notify]]
webhook = "{receiver.url}"
on = ["failure"]
[[notify]]
webhook = "{dead}"
on = ["batch"]
attempts = 3
backoff_s = 0.01
[[notify]]
on = ["batch"]
[notify.smtp]
host = "127.0.0.1"
port = {smtp_sink.port}
from = "a@example.com"
to = "b@example.com"
starttls = true
username = "{SMTP_USER}"
password_env = "{PASSWORD_ENV}"
ca_file = "{smtp_sink.ca_file}"
"""
    path = write_pipeline(tmp_path, notify)
    info = run_backlog(local_env, path)
    assert info["files"] == {"archived": 1, "errored": 1}
    assert local_env.get("archive", "good.csv") is not None
    assert local_env.get("errors", "mixed.csv.error.json") is not None
    assert receiver.attempts == 1 and smtp_sink.messages == []

    out = CliRunner().invoke(cli, ["pipeline", "notifications", str(path), "--failed"])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert len(rows) == 3 and not any(r["delivered"] for r in rows)
    by_target = {r["target"]: r for r in rows}
    assert by_target[receiver.url.split("?")[0]]["attempts"] == 1
    assert by_target[receiver.url.split("?")[0]]["error"].startswith("HTTP 400")
    assert by_target[dead]["attempts"] == 3
    assert by_target[f"smtp://127.0.0.1:{smtp_sink.port}"]["attempts"] == 1
    assert PASSWORD_ENV in by_target[f"smtp://127.0.0.1:{smtp_sink.port}"]["error"]
