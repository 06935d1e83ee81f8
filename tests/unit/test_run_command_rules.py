"""S3batchRunCommand without a store: its parameters at CreateJob time, the server's registered
commands (server.toml's [[commands]], the per-caller check, the check again when the job runs),
the environment denylist, the caps and the folder watch, the placeholders of one task and the
process-group runner (operations/_subprocess.py). End-to-end jobs: tests/integration/test_run_command.py
and, over HTTP, tests/integration/test_run_command_serve.py."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import stat
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from s3batch.api.server_config import load_server_config
from s3batch.api.xml import parse_request
from s3batch.domain.commands import (
    CAP_FIELDS,
    MAX_DISK_BYTES_LIMIT,
    Caps,
    JobCommand,
    RegisteredCommand,
    ServerCommands,
    caps_of,
)
from s3batch.domain.spec import JobRuntime
from s3batch.domain.stores import LocalConfig
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import BadRequest, ConfigError, InvalidRequest
from s3batch.functions.registry import FunctionScope, ServerFunctions
from s3batch.operations import _subprocess, get_kind
from s3batch.operations import run_command as rc
from s3batch.operations.base import JobContext, OperationContext
from s3batch.service.jobs import check_command
from s3batch.storage.memory import MemoryStore

GZIP = shutil.which("gzip", path=rc.DEFAULT_PATH)
TARGET = "arn:aws:s3:::out"
ACCOUNT = "111111111111"
SERVER_TOML = Path("/srv/s3batch/server.toml")
#: Bounds of the process tests, in seconds.
PROCESS_GONE_S = 5.0
POLL_S = 0.05


def params(**extra: Any) -> dict[str, Any]:
    return {"Command": ["gzip", "-c", "{input}"], "TargetResource": TARGET, **extra}


def validate(value: dict[str, Any]) -> None:
    get_kind(rc.NAME).validate(value)


# -- parameters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "good",
    [
        params(),
        params(
            Command=["convert", "{input}", "-thumbnail", "128x128", "{output_dir}/{stem}.jpg"],
            TargetKeyPrefix="thumbs/",
            TimeoutSeconds=1,
            MaxOutputBytes=0,
            MaxStderrTailBytes=0,
            Environment={"LANG": "C.UTF-8", "PATH": "/opt/tools/bin:/usr/bin"},
        ),
        params(Command=["/usr/bin/env"], StdoutFile="{key}.env/{bucket}-{version_id}{extension}"),
        params(Command=["echo", "{{literal}}", "{{{key}}}", "x}}y"]),
        params(TargetResource="out"),
        params(MaxInputBytes=0, MaxDiskBytes=MAX_DISK_BYTES_LIMIT),
        {"CommandName": "thumb-1_x", "TargetResource": TARGET, "StdoutFile": "{key}.gz", "TimeoutSeconds": 5},
    ],
)
def test_good_parameters(good: dict[str, Any]) -> None:
    validate(good)


BAD: list[tuple[dict[str, Any], str]] = [
    ({"TargetResource": TARGET}, r"S3batchRunCommand.Command \(a non-empty list"),
    (params(Command=[]), r"Command \(a non-empty list"),
    (params(Command="gzip -c"), r"Command \(a non-empty list"),
    (params(Command=["gzip", 3]), r"Command\[1\] must be a string"),
    (params(Command=["{input}"]), r"Command\[0\] must be an executable's name or absolute path"),
    (params(Command=[""]), r"Command\[0\] must be an executable's name"),
    (params(Command=["./tool"]), r"Command\[0\] './tool': give a bare name"),
    (
        params(Command=["gzip", "{nope}"]),
        r"Command\[1\]: unknown placeholder \{nope\} in '\{nope\}'; known: ",
    ),
    (params(Command=["gzip", "{}"]), r"Command\[1\]: unknown placeholder \{\}"),
    (params(Command=["gzip", "{0}"]), r"Command\[1\]: unknown placeholder \{0\}"),
    (params(Command=["gzip", "{key!r}"]), r"unknown placeholder \{key!r\}"),
    (params(Command=["gzip", "{key:>9}"]), r"unknown placeholder \{key:>9\}"),
    (params(Command=["gzip", "{key.upper}"]), r"unknown placeholder \{key.upper\}"),
    (params(Command=["gzip", "{input[0]}"]), r"unknown placeholder \{input\[0\]\}"),
    (params(Command=["gzip", "a{b"]), r"Command\[1\]: .*write \{\{ and \}\} for literal braces"),
    (params(Command=["gzip", "a}b"]), r"Command\[1\]: Single '\}' encountered"),
    (params(Command=["gzip", "a\x00b"]), r"Command\[1\] contains a NUL"),
    (params(Command=["gzip"] * (rc.MAX_ARGS + 1)), r"more than 1000 arguments"),
    (params(Command=["gzip", "x" * (rc.MAX_ARG_CHARS + 1)]), r"Command\[1\] is longer than"),
    (params(TargetResource=None), r"TargetResource \(a bucket ARN\) is required"),
    (params(TargetResource="arn:aws:s3:::out/key"), r"TargetResource: expected a bucket ARN"),
    (params(TargetKeyPrefix=7), r"TargetKeyPrefix must be a string"),
    (params(TimeoutSeconds=0), r"TimeoutSeconds must be a whole number from 1 to 86400; got 0"),
    (params(TimeoutSeconds=True), r"TimeoutSeconds must be a whole number"),
    (params(TimeoutSeconds="5"), r"TimeoutSeconds must be a whole number"),
    (params(MaxOutputBytes=-1), r"MaxOutputBytes must be a whole number from 0 to"),
    (params(MaxStderrTailBytes=9000), r"MaxStderrTailBytes must be a whole number from 0 to 8192"),
    (params(Environment=["A=b"]), r"Environment must map variable names"),
    (params(Environment={"1X": "y"}), r"Environment: '1X' is not a variable name"),
    (params(Environment={"A-B": "y"}), r"'A-B' is not a variable name"),
    (params(Environment={"HOME": "/root"}), r"Environment.HOME: set by s3batch"),
    (params(Environment={"TMPDIR": "/tmp"}), r"Environment.TMPDIR: set by s3batch"),
    (params(Environment={"A": 1}), r"Environment.A must be a string"),
    (params(Environment={"PATH": "bin:/usr/bin"}), r"Environment.PATH 'bin:/usr/bin': every directory"),
    (params(Environment={"PATH": "/usr/bin::/bin"}), r"every directory must be an absolute path"),
    (params(StdoutFile="../x"), r"StdoutFile '../x' must be a relative path inside \{output_dir\}"),
    (params(StdoutFile="/etc/x"), r"StdoutFile '/etc/x' must be a relative path"),
    (params(StdoutFile="a/./b"), r"must be a relative path"),
    (params(StdoutFile="{input}.gz"), r"StdoutFile: unknown placeholder \{input\}"),
    (params(StdoutFile="{output_dir}/x"), r"unknown placeholder \{output_dir\}"),
    (params(Shell=True), r"S3batchRunCommand: unknown or unsupported parameter\(s\): Shell"),
    (params(MaxInputBytes=-1), r"MaxInputBytes must be a whole number from 0 to"),
    (params(MaxDiskBytes=MAX_DISK_BYTES_LIMIT + 1), r"MaxDiskBytes must be a whole number from 0 to"),
    (params(CommandName="gzip"), r"Command: a registered command \(CommandName\) runs with its registration"),
    ({"CommandName": "a b", "TargetResource": TARGET}, r"CommandName must be 1-64 letters"),
    ({"CommandName": 3, "TargetResource": TARGET}, r"CommandName must be 1-64 letters"),
    ({"CommandName": "z"}, r"TargetResource \(a bucket ARN\) is required"),
    ({"CommandName": "z", "TargetResource": TARGET, "TimeoutSeconds": 0}, r"TimeoutSeconds must be"),
    ({"CommandName": "z", "TargetResource": TARGET, "Shell": 1}, r"unknown or unsupported parameter"),
]


@pytest.mark.parametrize(("bad", "message"), BAD)
def test_bad_parameters_name_the_field(bad: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        validate(bad)


def test_templates_keep_literal_braces_and_fill_placeholders() -> None:
    template = rc.parse_template("x", "{{a}}-{key}-}}{{-{stem}", rc.PLACEHOLDERS)
    assert template == ("{a}-", rc.Field("key"), "-}{-", rc.Field("stem"))
    assert rc.render(template, {"key": "k", "stem": "s"}) == "{a}-k-}{-s"


@pytest.mark.parametrize(
    ("key", "basename", "stem", "extension", "input_name"),
    [
        ("dir/photo.tar.gz", "photo.tar.gz", "photo.tar", ".gz", "photo.tar.gz"),
        ("plain", "plain", "plain", "", "plain"),
        (".bashrc", ".bashrc", ".bashrc", "", ".bashrc"),
        ("folder/", "", "", "", rc.INPUT_FALLBACK_NAME),
        ("a/..", "..", "..", "", rc.INPUT_FALLBACK_NAME),
        ("-rf", "-rf", "-rf", "", "-rf"),
        ("ünï/ключ.txt", "ключ.txt", "ключ", ".txt", "ключ.txt"),
        ("x" * 300, "x" * 300, "x" * 300, "", rc.INPUT_FALLBACK_NAME),
    ],
)
def test_placeholders_of_a_task(key: str, basename: str, stem: str, extension: str, input_name: str) -> None:
    task = Task(seq=0, bucket="b", raw_key="raw", key=key, version_id="v1")
    values = rc.placeholder_values(task, Path("/w/input/in"), Path("/w/output"))
    assert values == {
        "input": "/w/input/in",
        "output_dir": "/w/output",
        "key": key,
        "basename": basename,
        "stem": stem,
        "extension": extension,
        "bucket": "b",
        "version_id": "v1",
    }
    assert rc.input_name(basename) == input_name


def test_target_keys_join_the_prefix_like_copy() -> None:
    for prefix, expected in (("", "a/b.gz"), ("thumbs", "thumbs/a/b.gz"), ("thumbs/", "thumbs/a/b.gz")):
        assert rc.plan_of(params(TargetKeyPrefix=prefix)).target_key("a/b.gz") == expected


def test_the_environment_is_built_from_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret")
    workdir = rc.Workdir(tmp_path)
    plain = rc.clean_environment(rc.plan_of(params()), workdir)
    assert plain == {"PATH": rc.DEFAULT_PATH, "HOME": str(tmp_path), "TMPDIR": str(tmp_path / "tmp")}
    named = rc.clean_environment(rc.plan_of(params(Environment={"PATH": "/opt/bin", "LANG": "C"})), workdir)
    assert named == {"PATH": "/opt/bin", "LANG": "C", "HOME": str(tmp_path), "TMPDIR": str(tmp_path / "tmp")}


def test_a_workdir_is_private_and_removed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    workdir = rc.Workdir.create()
    assert workdir.root.parent == tmp_path and workdir.root.name.startswith(rc.TEMP_DIR_PREFIX)
    assert stat.S_IMODE(workdir.root.stat().st_mode) == 0o700
    locked = workdir.output_dir / "locked"
    locked.mkdir()
    (locked / "f").write_bytes(b"x")
    locked.chmod(0o500)  # a command may leave this behind
    workdir.remove()
    assert list(tmp_path.iterdir()) == []


def test_folders_a_command_locked_are_opened_up_for_removal(tmp_path: Path) -> None:
    locked = tmp_path / "a" / "b"
    locked.mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a")
    for folder in (locked, locked.parent):
        folder.chmod(0)
    rc._unlock(tmp_path)
    assert {stat.S_IMODE(p.stat().st_mode) for p in (locked, locked.parent)} == {0o700}


def outputs_of(tmp_path: Path, **extra: Any) -> rc.Outputs:
    return rc.collect_outputs(rc.plan_of(params(**extra)), tmp_path)


def test_outputs_are_regular_files_by_key(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.txt").write_bytes(b"12345")
    (tmp_path / "a.jpg").write_bytes(b"")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "up").symlink_to(tmp_path.parent)
    found = outputs_of(tmp_path, TargetKeyPrefix="p")
    assert [(f.key, f.size) for f in found.files] == [("p/a.jpg", 0), ("p/d/x.txt", 5)]
    assert (found.total, found.skipped_links) == (5, 1)


@pytest.mark.parametrize(
    ("make", "code", "message"),
    [
        (lambda d: (d / os.fsdecode(b"bad\xff.txt")).write_bytes(b"x"), "InvalidOutputName", "not UTF-8"),
        (lambda d: (d / ("k" * 250)).write_bytes(b"x"), "InvalidOutputName", "longer than 1024 bytes"),
        (lambda d: (d / "big").write_bytes(bytes(11)), "OutputTooLarge", "MaxOutputBytes (10 bytes)"),
    ],
)
def test_outputs_that_cannot_be_uploaded_fail_the_task(
    tmp_path: Path, make: Any, code: str, message: str
) -> None:
    make(tmp_path)
    with pytest.raises(rc.TaskFailed) as caught:
        outputs_of(tmp_path, TargetKeyPrefix="p" * 800, MaxOutputBytes=10)
    assert caught.value.result.error_code == code and message in caught.value.result.message


def test_too_many_output_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rc, "MAX_OUTPUT_FILES", 2)
    for n in range(3):
        (tmp_path / f"f{n}").write_bytes(b"")
    with pytest.raises(rc.TaskFailed, match="more than 2 files"):
        outputs_of(tmp_path)


def workdir_with(tmp_path: Path, files: dict[str, int]) -> rc.Workdir:
    workdir = rc.Workdir(tmp_path)
    for sub in ("input", "output", "tmp"):
        (tmp_path / sub).mkdir()
    for name, size in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(bytes(size))
    return workdir


def test_the_watch_counts_the_whole_folder_against_the_disk_cap(tmp_path: Path) -> None:
    """Before, only output/ was watched: a command could fill the disk through tmp/ or HOME."""
    files = {"input/in": 10, "tmp/scratch": 50_000, ".cache/x": 50_000, "output/o": 10}
    workdir = workdir_with(tmp_path, files)
    used = {name: max(size, (tmp_path / name).stat().st_blocks * 512) for name, size in files.items()}
    total = sum(used.values())
    caps = Caps(max_input_bytes=10, max_output_bytes=used["output/o"], max_disk_bytes=total)
    assert rc.over_caps(workdir, caps) is None
    assert rc.over_caps(workdir, replace(caps, max_disk_bytes=total - 1)) == rc.DISK_LIMIT_EXCEEDED
    assert rc.over_caps(workdir, replace(caps, max_output_bytes=used["output/o"] - 1)) == rc.OUTPUT_TOO_LARGE


def test_the_watch_counts_entries_files_and_allocated_blocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = workdir_with(tmp_path, {})
    with open(tmp_path / "tmp" / "sparse", "wb") as sparse:
        sparse.truncate(1 << 30)  # a size without blocks still counts as its size
    assert rc.over_caps(workdir, Caps(max_disk_bytes=(1 << 30) - 1)) == rc.DISK_LIMIT_EXCEEDED
    (tmp_path / "tmp" / "sparse").unlink()
    monkeypatch.setattr(rc, "MAX_FOLDER_ENTRIES", 10)
    for n in range(8):
        (tmp_path / "tmp" / f"d{n}").mkdir()  # empty folders: no bytes, still entries
    assert rc.over_caps(workdir, Caps()) == rc.DISK_LIMIT_EXCEEDED
    monkeypatch.setattr(rc, "MAX_OUTPUT_FILES", 2)
    monkeypatch.setattr(rc, "MAX_FOLDER_ENTRIES", 100)
    for n in range(3):
        (tmp_path / "output" / f"f{n}").write_bytes(b"")
    assert rc.over_caps(workdir, Caps()) == rc.OUTPUT_TOO_LARGE


def test_success_messages_are_bounded() -> None:
    files = tuple(rc.OutputFile(f"out/{n:04d}-" + "k" * 50, Path("/x"), 10) for n in range(100))
    message = rc.success_message(rc.Outputs(files, skipped_links=2))
    assert message.startswith("ExitCode 0; uploaded 100 file(s), 1000 bytes: out/0000-")
    assert message.endswith(" more); skipped 2 symbolic link(s)")
    assert len(message) < rc.MAX_LISTED_KEYS_CHARS + 200
    assert rc.success_message(rc.Outputs((), 0)) == "ExitCode 0; uploaded 0 file(s), 0 bytes"


def test_content_types_come_from_the_extension_but_not_for_compressed_files() -> None:
    assert rc.content_type("t/a.jpg") == "image/jpeg"
    assert rc.content_type("a.csv.gz") is None
    assert rc.content_type("noext") is None


# -- the server's registered commands ------------------------------------------------------------


def registration(name: str = "gzip", account: str = "*", **caps: int) -> RegisteredCommand:
    assert GZIP is not None
    return RegisteredCommand(
        account, name, (GZIP, "-c", "-n", "{input}"), (("LANG", "C.UTF-8"),), caps_of(caps, "setting", "")
    )


def scope(*commands: RegisteredCommand) -> FunctionScope:
    by_account: dict[str, dict[str, RegisteredCommand]] = {}
    for command in commands:
        by_account.setdefault(command.account_id, {})[command.name] = command
    return ServerFunctions(commands=ServerCommands(by_account)).for_account(ACCOUNT)


def request(**fields: Any) -> dict[str, Any]:
    return {"Operation": {rc.NAME: {"TargetResource": TARGET, **fields}}}


def check(fields: dict[str, Any], caller: FunctionScope | dict[str, str]) -> JobCommand | None:
    """CreateJob's two checks, in its order: the parameters alone, then the caller's rules."""
    validate(request(**fields)["Operation"][rc.NAME])
    return check_command(request(**fields), caller, SERVER_TOML)


def test_a_server_caller_runs_exactly_a_registered_command() -> None:
    recorded = check({"CommandName": "gzip", "StdoutFile": "{key}.gz"}, scope(registration()))
    assert recorded == JobCommand(registration(), str(SERVER_TOML))
    assert recorded.registration.program == GZIP  # an absolute path, recorded at CreateJob


def test_a_server_caller_cannot_choose_arguments_even_of_a_registered_executable() -> None:
    """The exfiltration: with gzip runnable, `gzip -c <the server's secrets>` read any file."""
    loot = {"Command": ["gzip", "-c", "/srv/s3batch/server.toml"], "StdoutFile": "loot.gz"}
    for caller in (scope(registration()), scope(registration(name="other"))):
        with pytest.raises(InvalidRequest, match=r"Command: this server runs only commands its operator"):
            check(loot, caller)
    with pytest.raises(BadRequest, match=r"Command: a registered command \(CommandName\) runs with"):
        check({**loot, "CommandName": "gzip"}, scope(registration()))


@pytest.mark.parametrize(
    "environment",
    [
        {"BASH_ENV": "$(id > /tmp/pwned)"},
        {"PATH": "/tmp/attacker:/usr/bin:/bin"},
        {"LANG": "C"},  # harmless, but a registration's environment is its operator's alone
    ],
)
def test_a_server_caller_sets_no_environment(environment: dict[str, str]) -> None:
    with pytest.raises(BadRequest, match=r"Environment: a registered command \(CommandName\)"):
        check({"CommandName": "gzip", "Environment": environment}, scope(registration()))
    with pytest.raises(InvalidRequest, match=r"Environment: this server runs only commands its operator"):
        check_command(request(Environment=environment), scope(registration()), SERVER_TOML)


def test_a_name_registered_for_another_account_or_not_at_all_is_refused_alike() -> None:
    for caller in (scope(), scope(registration(account="999999999999")), scope(registration("zip"))):
        with pytest.raises(InvalidRequest, match=r"CommandName 'gzip' is not a command registered for your"):
            check({"CommandName": "gzip"}, caller)
    assert check({"CommandName": "gzip"}, scope(registration(account=ACCOUNT))) is not None


def test_an_accounts_own_registration_wins_over_every_accounts() -> None:
    mine = RegisteredCommand(ACCOUNT, "gzip", ("/bin/true",))
    assert scope(registration(), mine).commands["gzip"] is mine


@pytest.mark.parametrize(
    ("field", "value", "cap"),
    [
        ("TimeoutSeconds", rc.MAX_TIMEOUT_S, 60),
        ("MaxOutputBytes", rc.MAX_OUTPUT_BYTES_LIMIT, 1 << 20),
        ("MaxInputBytes", 1 << 30, 1 << 20),
        ("MaxDiskBytes", 1 << 40, 1 << 30),
    ],
)
def test_a_server_caller_may_lower_the_registrations_caps_never_raise_them(
    field: str, value: int, cap: int
) -> None:
    setting = next(c.setting for c in CAP_FIELDS if c.parameter == field)
    caller = scope(registration(**{setting: cap}))
    with pytest.raises(InvalidRequest, match=rf"{field} {value} is more than this server allows .*\({cap}\)"):
        check({"CommandName": "gzip", field: value}, caller)
    check({"CommandName": "gzip", field: cap}, caller)
    lowered = rc.registered_plan({"CommandName": "gzip", "TargetResource": TARGET, field: 1}, registration())
    assert getattr(lowered.caps, next(c.attribute for c in CAP_FIELDS if c.parameter == field)) == 1


def test_a_registration_whose_executable_is_missing_is_refused(tmp_path: Path) -> None:
    gone = RegisteredCommand("*", "gone", (str(tmp_path / "gone"),))
    with pytest.raises(InvalidRequest, match=r"CommandName 'gone': the command is not available"):
        check({"CommandName": "gone"}, scope(gone))


def test_one_s_own_machine_runs_its_own_command_and_names_none() -> None:
    assert check({"Command": ["anything-at-all", "{input}"]}, {}) is None
    with pytest.raises(BadRequest, match=r"CommandName names a command an s3batch serve operator registered"):
        check({"CommandName": "gzip"}, {})
    check_command({"Operation": {"S3PutObjectTagging": {}}}, scope(), SERVER_TOML)


@pytest.mark.parametrize(
    "name",
    [
        "BASH_ENV", "ENV", "SHELLOPTS", "PS4", "PROMPT_COMMAND", "LD_PRELOAD", "LD_LIBRARY_PATH",
        "DYLD_INSERT_LIBRARIES", "GLIBC_TUNABLES", "GCONV_PATH", "PERL5OPT", "PERL5LIB", "RUBYOPT",
        "PYTHONPATH", "PYTHONSTARTUP", "PYTHONWARNINGS", "NODE_OPTIONS", "JAVA_TOOL_OPTIONS",
        "GIT_SSH_COMMAND", "GIT_CONFIG_GLOBAL", "MAGICK_CONFIGURE_PATH", "MAGICK_CODER_MODULE_PATH",
        "OPENSSL_CONF", "LESSOPEN",
    ],
)  # fmt: skip
def test_loader_and_interpreter_hooks_are_refused_on_one_s_own_machine_too(name: str) -> None:
    with pytest.raises(BadRequest, match=rf"Environment.{name}: a loader or interpreter hook"):
        validate(params(Environment={name: "x"}))


def test_ordinary_variables_stay_allowed() -> None:
    ordinary = {"LANG": "C.UTF-8", "TZ": "UTC", "PYTHONUNBUFFERED": "1", "NODE_ENV": "production",
                "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1"}  # fmt: skip
    assert dict(rc.plan_of(params(Environment=ordinary)).environment) == ordinary


def test_caps_default_and_the_disk_cap_follows_input_and_output() -> None:
    assert rc.plan_of(params()).caps == Caps(
        timeout_s=300, max_input_bytes=1 << 30, max_output_bytes=1 << 30, max_disk_bytes=3 << 30
    )
    derived = rc.plan_of(params(MaxInputBytes=10, MaxOutputBytes=20)).caps
    assert derived.max_disk_bytes == 30 + rc.DEFAULT_SCRATCH_BYTES
    assert rc.plan_of(params(MaxDiskBytes=5)).caps.max_disk_bytes == 5


# -- server.toml's [[commands]] --------------------------------------------------------------------

GOOD_TOML = """
[[commands]]
account_id = "*"
name = "thumbnail"
argv = ["/usr/bin/convert", "{input}", "-thumbnail", "128x128", "{output_dir}/{key}.jpg"]
environment = { LANG = "C.UTF-8", MAGICK_CONFIGURE_PATH = "/etc/s3batch/magick" }
max_input_bytes = 100
max_output_bytes = 200
timeout_seconds = 30

[[commands]]
account_id = "111111111111"
name = "thumbnail"
argv = ["/usr/local/bin/thumb", "{input}"]
"""


def test_commands_in_server_toml(tmp_path: Path) -> None:
    (tmp_path / "server.toml").write_text(GOOD_TOML)
    functions = load_server_config(tmp_path).functions
    every = functions.for_account("222222222222").commands["thumbnail"]
    assert every.argv[0] == "/usr/bin/convert"
    assert dict(every.environment)["MAGICK_CONFIGURE_PATH"] == "/etc/s3batch/magick"  # the operator's call
    assert every.caps == Caps(
        timeout_s=30, max_input_bytes=100, max_output_bytes=200, max_disk_bytes=200 + 100 + (1 << 30)
    )
    own = functions.for_account(ACCOUNT).commands["thumbnail"]
    assert own.argv == ("/usr/local/bin/thumb", "{input}") and own.caps == Caps()
    assert rc.load_server_commands(tmp_path / "server.toml") == functions.commands
    assert rc.load_server_commands(tmp_path / "none.toml") == ServerCommands()


ENTRY = 'account_id = "*"\nname = "z"\nargv = ["/bin/gzip"]\n'
NAMED = '[[commands]]\naccount_id = "*"\nname = "z"\n'


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[server]\nallow_commands = ["gzip"]\n', r"\[server\]: unknown field\(s\) allow_commands"),
        ("commands = 3\n", r"\[\[commands\]\]: must be an array of tables"),
        (f"[[commands]]\n{ENTRY}shell = true\n", r"#1: unknown field\(s\) shell"),
        ('[[commands]]\nname = "z"\nargv = ["/bin/gzip"]\n', r"#1: account_id must be 12 digits"),
        ('[[commands]]\naccount_id = "*"\nname = "a b"\nargv = ["/bin/gzip"]\n', r"#1: name must be"),
        (f'{NAMED}argv = ["gzip"]\n', r"argv\[0\] 'gzip' must be an absolute"),
        (f"{NAMED}argv = []\n", r"#1: argv \(a non-empty list"),
        (f'{NAMED}argv = ["/bin/gzip", "{{nope}}"]\n', r"argv\[1\]: unknown placeholder"),
        (f"[[commands]]\n{ENTRY}environment = {{ HOME = '/' }}\n", r"environment.HOME: set by s3batch"),
        (f"[[commands]]\n{ENTRY}environment = {{ PATH = 'bin' }}\n", r"environment.PATH 'bin': every"),
        (f"[[commands]]\n{ENTRY}timeout_seconds = 0\n", r"#1: timeout_seconds must be a whole number"),
        (f"[[commands]]\n{ENTRY}max_output_bytes = -1\n", r"#1: max_output_bytes must be a whole number"),
        (f"[[commands]]\n{ENTRY}\n[[commands]]\n{ENTRY}", r"#2: command 'z' is registered twice for"),
    ],
)  # fmt: skip
def test_bad_registrations_name_the_entry_and_field(tmp_path: Path, toml: str, message: str) -> None:
    (tmp_path / "server.toml").write_text(toml)
    with pytest.raises(ConfigError, match=message):
        load_server_config(tmp_path)


# -- when the job runs -----------------------------------------------------------------------------


def job_context(command: JobCommand | None, account: str = ACCOUNT) -> JobContext:
    return JobContext(
        job_id="j", account_id=account, region="us-east-1", storage=LocalConfig(root="/"), command=command
    )


def write_commands(path: Path, argv: list[str], **caps: int) -> None:
    extra = "".join(f"{name} = {value}\n" for name, value in caps.items())
    quoted = ", ".join(f'"{arg}"' for arg in argv)
    path.write_text(
        f'[[commands]]\naccount_id = "*"\nname = "gzip"\nargv = [{quoted}]\n'
        f'environment = {{ LANG = "C.UTF-8" }}\n{extra}'
    )


CALLER = {"CommandName": "gzip", "TargetResource": TARGET, "StdoutFile": "{key}.gz"}


def test_a_registered_command_runs_the_recorded_path_while_still_registered(tmp_path: Path) -> None:
    assert GZIP is not None
    config = tmp_path / "server.toml"
    write_commands(config, [GZIP, "-c", "-n", "{input}"], timeout_seconds=7)
    recorded = check_command(request(**CALLER), scope(registration()), config)
    assert recorded is not None
    ready = rc.job_setup(CALLER, job_context(recorded))
    assert isinstance(ready, rc.Ready)
    assert ready.program == GZIP and ready.plan.environment == (("LANG", "C.UTF-8"),)
    assert ready.plan.caps.timeout_s == 7  # the operator's cap as it is now, when lower


@pytest.mark.parametrize(
    ("server_toml", "message"),
    [
        (None, "command 'gzip' is no longer registered for this account"),
        ("", "command 'gzip' is no longer registered for this account"),
        ("[[commands]\n", "cannot read the server's registered commands"),
        ("sha256sum", "command 'gzip' is registered differently than when the job was created"),
    ],
)
def test_a_registration_removed_or_changed_since_create_job_fails_every_task(
    tmp_path: Path, server_toml: str | None, message: str
) -> None:
    config = tmp_path / "server.toml"
    recorded = JobCommand(registration(), str(config))
    if server_toml == "sha256sum":
        write_commands(config, ["/usr/bin/sha256sum", "{input}"])
    elif server_toml is not None:
        config.write_text(server_toml)
    refused = rc.job_setup(CALLER, job_context(recorded))
    assert isinstance(refused, TaskResult)
    assert (refused.error_code, refused.http_status) == ("CommandNotRegistered", 403)
    assert message in (refused.message or "")
    op = rc.RunCommand(CALLER, OperationContext(job=job_context(recorded), store=MemoryStore()))
    assert asyncio.run(op.apply(Task(seq=0, bucket="b", raw_key="k", key="k"))) == refused


def test_a_command_name_without_a_recorded_registration_never_runs() -> None:
    refused = rc.job_setup(CALLER, job_context(None))
    assert isinstance(refused, TaskResult) and refused.error_code == "CommandNotRegistered"


def test_the_runtime_record_keeps_the_registration() -> None:
    recorded = JobCommand(registration(max_input_bytes=5), "/srv/s3batch/server.toml")
    runtime = JobRuntime(storage=LocalConfig(root="/b"), region="us-east-1", command=recorded)
    assert JobRuntime.parse(json.loads(json.dumps(runtime.as_json()))).command == recorded
    assert "command" not in JobRuntime(storage=LocalConfig(root="/b"), region="us-east-1").as_json()


def test_the_s3_control_xml_carries_the_extension() -> None:
    body = (
        '<CreateJobRequest xmlns="http://awss3control.amazonaws.com/doc/2018-08-20/">'
        "<Operation><S3batchRunCommand>"
        "<Command><member>gzip</member><member>-c</member><member>{input}</member></Command>"
        "<TargetResource>arn:aws:s3:::out</TargetResource><TimeoutSeconds>30</TimeoutSeconds>"
        "<Environment><entry><key>LANG</key><value>C.UTF-8</value></entry></Environment>"
        "</S3batchRunCommand></Operation></CreateJobRequest>"
    )
    parsed = parse_request("CreateJob", body.encode())
    assert parsed["Operation"] == {
        rc.NAME: {
            "Command": ["gzip", "-c", "{input}"],
            "TargetResource": "arn:aws:s3:::out",
            "TimeoutSeconds": 30,
            "Environment": {"LANG": "C.UTF-8"},
        }
    }
    named = body.replace(
        "<Command><member>gzip</member><member>-c</member><member>{input}</member></Command>",
        "<CommandName>thumbnail</CommandName><MaxInputBytes>10</MaxInputBytes><MaxDiskBytes>20</MaxDiskBytes>",
    )
    assert parse_request("CreateJob", named.encode())["Operation"][rc.NAME]["CommandName"] == "thumbnail"
    unknown = body.replace("<TimeoutSeconds>30</TimeoutSeconds>", "<Shell>true</Shell>")
    with pytest.raises(BadRequest, match=r"Operation.S3batchRunCommand: unknown element <Shell>"):
        parse_request("CreateJob", unknown.encode())
    # Other extensions stay CLI-only.
    other = body.replace("S3batchRunCommand>", "S3batchCsvIngest>")
    with pytest.raises(BadRequest, match="unknown element <S3batchCsvIngest>"):
        parse_request("CreateJob", other.encode())


# -- the process group -----------------------------------------------------------------------------


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting for a reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + PROCESS_GONE_S
    while running(pid) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return not running(pid)


SPAWN_AND_HANG = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"  # inherited by the child: only SIGKILL works
    "child = subprocess.Popen(['sleep', '60'])\n"
    "print(child.pid, file=sys.stderr, flush=True)\n"
    "time.sleep(60)\n"
)


def launch(tmp_path: Path, code: str, timeout_s: float = 30.0, tail: int = 100) -> _subprocess.Launch:
    return _subprocess.Launch(
        argv=[sys.executable, "-c", code], cwd=tmp_path, env={}, timeout_s=timeout_s, tail_bytes=tail
    )


def test_a_timeout_kills_the_whole_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_subprocess, "KILL_GRACE_S", 0.3)
    started = time.monotonic()
    finished = asyncio.run(_subprocess.run(launch(tmp_path, SPAWN_AND_HANG, timeout_s=1.0)))
    assert finished.ending is _subprocess.Ending.TIMED_OUT
    assert finished.returncode == -9
    assert wait_gone(int(finished.stderr_tail))
    assert time.monotonic() - started < 10


def test_cancelling_the_task_kills_the_whole_group(tmp_path: Path) -> None:
    async def cancel_soon() -> int:
        pid_file = tmp_path / "pid"
        code = SPAWN_AND_HANG.replace("file=sys.stderr", f"file=open({str(pid_file)!r}, 'w')")
        task = asyncio.ensure_future(_subprocess.run(launch(tmp_path, code)))
        deadline = time.monotonic() + PROCESS_GONE_S
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline, "the command never started"
            await asyncio.sleep(POLL_S)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return int(pid_file.read_text())

    assert wait_gone(asyncio.run(cancel_soon()))


def test_stragglers_are_killed_after_a_normal_exit(tmp_path: Path) -> None:
    code = "import subprocess, sys\nprint(subprocess.Popen(['sleep', '60']).pid, file=sys.stderr)\n"
    finished = asyncio.run(_subprocess.run(launch(tmp_path, code)))
    assert (finished.ending, finished.returncode) == (_subprocess.Ending.EXITED, 0)
    assert wait_gone(int(finished.stderr_tail))


def test_only_the_tail_of_a_chatty_command_is_kept(tmp_path: Path) -> None:
    code = "import sys\nfor _ in range(2000): sys.stderr.write('x' * 1000)\nsys.stderr.write('END')\n"
    code += "print('out')"
    finished = asyncio.run(_subprocess.run(launch(tmp_path, code, tail=10)))
    assert finished.stderr_tail == b"xxxxxxxEND" and finished.stdout_tail == b"out\n"
    tail = _subprocess.Tail(4)
    for _ in range(1000):
        tail.add(b"abc")
    assert len(tail.buffer) <= 8 and tail.value() == b"cabc"
    assert _subprocess.Tail(0).value() == b""


def test_a_watch_alarm_stops_the_command(tmp_path: Path) -> None:
    calls: list[float] = []

    def watch() -> bool:
        calls.append(time.monotonic())
        return len(calls) == 2

    finished = asyncio.run(_subprocess.run(launch(tmp_path, "import time; time.sleep(60)"), watch))
    assert finished.ending is _subprocess.Ending.STOPPED_BY_WATCH
    assert len(calls) == 2


def test_a_file_over_the_size_limit_stops_the_command(tmp_path: Path) -> None:
    """RLIMIT_FSIZE: the kernel stops a file at the disk cap, between two looks of the watch.
    The limit is set once the command has started, so it writes more than a few bytes."""
    started = _subprocess.Launch(
        argv=["head", "-c", str(256 << 20), "/dev/zero"],
        cwd=tmp_path,
        env={"PATH": rc.DEFAULT_PATH},
        timeout_s=30,
        tail_bytes=100,
        stdout_path=tmp_path / "big",
        max_file_bytes=1000,
    )
    finished = asyncio.run(_subprocess.run(started))
    assert finished.returncode == -signal.SIGXFSZ
    assert (tmp_path / "big").stat().st_size < 64 << 20
    assert rc.command_failure(rc.plan_of(params()), finished).error_code == rc.DISK_LIMIT_EXCEEDED  # type: ignore[union-attr]


def test_the_command_sees_only_the_given_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret")
    code = "import os, sys; sys.stderr.write(repr(sorted(k for k in os.environ if k != 'LC_CTYPE')))"
    finished = asyncio.run(_subprocess.run(_subprocess.Launch(
        argv=[sys.executable, "-c", code], cwd=tmp_path, env={"ONLY": "this"}, timeout_s=30, tail_bytes=200
    )))  # fmt: skip
    assert finished.stderr_tail == b"['ONLY']"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "worker-secret"


def test_a_process_that_left_the_group_cannot_hold_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_subprocess, "DRAIN_TIMEOUT_S", 0.3)
    code = (
        "import subprocess, sys\n"
        "escaped = subprocess.Popen(['sleep', '60'], start_new_session=True)\n"  # keeps stderr open
        "print(escaped.pid, file=sys.stderr, flush=True)\n"
    )
    started = time.monotonic()
    finished = asyncio.run(_subprocess.run(launch(tmp_path, code)))
    escaped = int(finished.stderr_tail)
    try:
        assert (finished.ending, finished.returncode) == (_subprocess.Ending.EXITED, 0)
        assert time.monotonic() - started < 5
        assert running(escaped)  # out of reach of a process-group kill, as documented
    finally:
        os.kill(escaped, 9)
