"""The server's rules for functions (FunctionScope, server.toml's [server] and [[functions]])
and the access-log redaction, without a server."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from s3batch.api.accesslog import REDACTED, RedactQuerySecrets, redact_access_log, redact_target
from s3batch.api.server_config import ServerConfig, load_server_config
from s3batch.errors import ConfigError, InvalidRequest
from s3batch.functions.registry import BUILTIN_FUNCTIONS, FunctionScope, ServerFunctions, resolve_function

ALICE, BOB = "111111111111", "222222222222"
SERVER = ServerFunctions(
    by_account={
        ALICE: {"thumbs": "alice.handlers:thumbs", "shared": "alice.handlers:own_shared"},
        BOB: {"bobs": "bob.handlers:run"},
        "*": {"shared": "common.handlers:shared"},
    },
    sys_path=("/srv/handlers",),
)


def resolve(arn: str, scope: FunctionScope):  # type: ignore[no-untyped-def]
    return resolve_function(arn, scope, cwd="/the/servers/cwd", timeout_s=5.0)


def test_a_scope_runs_only_registered_functions_from_the_operators_path() -> None:
    spec = resolve(f"arn:aws:lambda:us-east-1:{ALICE}:function:thumbs", SERVER.for_account(ALICE))
    assert (spec.name, spec.handler, spec.sys_path) == ("thumbs", "alice.handlers:thumbs", ("/srv/handlers",))
    assert resolve("shared", SERVER.for_account(ALICE)).handler == "alice.handlers:own_shared"  # own wins
    assert resolve("shared", SERVER.for_account(BOB)).handler == "common.handlers:shared"
    assert (
        resolve("s3batch-sentiment", SERVER.for_account(BOB)).handler
        == BUILTIN_FUNCTIONS["s3batch-sentiment"]
    )


@pytest.mark.parametrize("arn", ["bobs", f"arn:aws:lambda:us-east-1:{BOB}:function:bobs", "nobody"])
def test_other_accounts_and_unknown_functions_are_invalid_requests(arn: str) -> None:
    with pytest.raises(InvalidRequest, match="is not registered for your account"):
        resolve(arn, SERVER.for_account(ALICE))


@pytest.mark.parametrize("arn", ["python:builtins:print", "python:os:system", "python:alice.handlers:thumbs"])
def test_python_arns_need_the_operators_consent(arn: str) -> None:
    with pytest.raises(InvalidRequest, match="does not run python: handlers"):
        resolve(arn, SERVER.for_account(ALICE))
    allowed = ServerFunctions(allow_python=True, sys_path=("/srv",)).for_account(ALICE)
    spec = resolve(arn, allowed)
    assert spec.handler == arn.removeprefix("python:") and spec.sys_path == ("/srv",)


def test_the_cli_keeps_python_arns_and_its_working_directory() -> None:
    spec = resolve_function("python:builtins:print", {}, cwd="/my/project", timeout_s=1.0)
    assert spec.handler == "builtins:print" and spec.sys_path == ("/my/project",)


def test_server_toml_functions_and_options(tmp_path: Path) -> None:
    (tmp_path / "server.toml").write_text(
        "[server]\n"
        'function_path = ["handlers", "/abs/path"]\n'
        'trusted_proxies = ["10.0.0.7", "192.168.0.0/16", "::1"]\n'
        "allow_python_functions = true\n\n"
        '[[functions]]\naccount_id = "111111111111"\nname = "thumbs"\nhandler = "pkg.mod:handler"\n\n'
        '[[functions]]\naccount_id = "*"\nname = "thumbs"\nhandler = "pkg.shared:handler"\n\n'
        '[[keys]]\naccess_key = "AKID"\nsecret_key = "s"\naccount_id = "111111111111"\n',
        encoding="utf-8",
    )
    config = load_server_config(tmp_path)
    assert config.trusted_proxies == ("10.0.0.7", "192.168.0.0/16", "::1")
    assert config.functions.allow_python
    assert config.functions.sys_path == (str(tmp_path / "handlers"), "/abs/path")
    assert config.functions.for_account(ALICE).registry == {"thumbs": "pkg.mod:handler"}
    assert config.functions.for_account(BOB).registry == {"thumbs": "pkg.shared:handler"}


def test_defaults_without_server_toml_trust_nothing(tmp_path: Path) -> None:
    config = load_server_config(tmp_path)
    assert config == ServerConfig()
    assert config.trusted_proxies == () and not config.functions.allow_python
    with pytest.raises(InvalidRequest):
        resolve("python:os:system", config.functions.for_account(ALICE))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\ntrusted_proxies = ['*']\n", "'*' is not an IP address or network"),
        ("[server]\nallow_python_functions = 'yes'\n", "must be true or false"),
        ("[server]\nfunction_paths = ['x']\n", "unknown field(s) function_paths"),
        ("[functions]\nthumbs = 'pkg.mod:handler'\n", "must be an array of tables"),
        ("[[functions]]\naccount_id = '1'\nname = 'a'\nhandler = 'm:f'\n", "12 digits or"),
        ("[[functions]]\naccount_id = '*'\nname = 'a b'\nhandler = 'm:f'\n", "name must be"),
        ("[[functions]]\naccount_id = '*'\nname = 'a'\nhandler = 'os.system'\n", "package.module:callable"),
        (
            "[[functions]]\naccount_id = '*'\nname = 'a'\nhandler = 'm:f'\npath = '/x'\n",
            "unknown field(s) path",
        ),
        (
            "[[functions]]\naccount_id = '*'\nname = 'a'\nhandler = 'm:f'\n"
            "[[functions]]\naccount_id = '*'\nname = 'a'\nhandler = 'm:g'\n",
            "registered twice",
        ),
    ],
)
def test_bad_server_toml_is_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "server.toml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_server_config(tmp_path)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/pipelines/p/events?token=abc", f"/pipelines/p/events?token={REDACTED}"),
        ("/x?a=1&Token=abc&b=2", f"/x?a=1&Token={REDACTED}&b=2"),
        (
            "/x?X-Amz-Signature=ff&X-Amz-Credential=AKID%2Fd",
            f"/x?X-Amz-Signature={REDACTED}&X-Amz-Credential={REDACTED}",
        ),
        (
            "/x?X-Amz-Security-Token=t&client_secret=s&password=p",
            f"/x?X-Amz-Security-Token={REDACTED}&client_secret={REDACTED}&password={REDACTED}",
        ),
        ("/x?my%5Ftoken=abc&nexttoken=", f"/x?my%5Ftoken={REDACTED}&nexttoken={REDACTED}"),
        (
            "/v20180820/jobs?maxResults=5&jobStatuses=Active",
            "/v20180820/jobs?maxResults=5&jobStatuses=Active",
        ),
        ("/no/query", "/no/query"),
        ("/x?token", "/x?token"),  # no value, nothing to hide
    ],
)
def test_redact_target(target: str, expected: str) -> None:
    assert redact_target(target) == expected


def test_the_filter_rewrites_uvicorn_access_records_once_installed() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "POST", "/pipelines/p/events?token=SECRET", "1.1", 202), None,
    )  # fmt: skip
    assert RedactQuerySecrets().filter(record)
    assert record.getMessage() == f'127.0.0.1:5 - "POST /pipelines/p/events?token={REDACTED} HTTP/1.1" 202'
    redact_access_log()
    redact_access_log()
    filters = logging.getLogger("uvicorn.access").filters
    assert sum(isinstance(f, RedactQuerySecrets) for f in filters) == 1
