"""S3batchRunCommand without a store: its parameters at CreateJob time, the server's allow-list
(server.toml's allow_commands and the per-caller check), the placeholders of one task and the
process-group runner (operations/_subprocess.py). End-to-end jobs: tests/integration/test_run_command.py."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from s3batch.api.server_config import load_server_config
from s3batch.api.xml import parse_request
from s3batch.domain.task import Task
from s3batch.errors import BadRequest, ConfigError, InvalidRequest
from s3batch.functions.registry import FunctionScope, ServerFunctions
from s3batch.operations import _subprocess, get_kind
from s3batch.operations import run_command as rc
from s3batch.service.jobs import check_command

GZIP = shutil.which("gzip", path=rc.DEFAULT_PATH)
TARGET = "arn:aws:s3:::out"
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
    assert rc.over_limits(tmp_path, 100)
    with pytest.raises(rc.TaskFailed, match="more than 2 files"):
        outputs_of(tmp_path)
    (tmp_path / "f2").unlink()
    assert not rc.over_limits(tmp_path, 100) and rc.over_limits(tmp_path, -1)


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


# -- the server's allow-list ---------------------------------------------------------------------


def scope(*commands: str) -> FunctionScope:
    return ServerFunctions(commands=commands).for_account("111111111111")


def request(command: list[str], **extra: Any) -> dict[str, Any]:
    return {"Operation": {rc.NAME: params(Command=command, **extra)}}


def test_the_allow_list_matches_the_resolved_absolute_path() -> None:
    assert GZIP is not None
    for allowed in (("gzip",), (GZIP,), ("sha256sum", "gzip")):
        check_command(request(["gzip", "-c"]), scope(*allowed))
        check_command(request([GZIP]), scope(*allowed))
    refusals = [
        (request(["gzip"]), scope()),
        (request(["gzip"]), scope("sha256sum")),
        (request(["sha256sum"]), scope("gzip")),
        (request(["no-such-tool-here"]), scope("gzip", "no-such-tool-here")),
        # The same file by another path is not the allowed path (exact match, no realpath).
        (request([str(Path(GZIP).parent / ".." / Path(GZIP).parent.name / "gzip")]), scope("gzip")),
    ]
    for denied, caller in refusals:
        with pytest.raises(InvalidRequest, match=r"Command\[0\] .* is not an executable this server runs"):
            check_command(denied, caller)


def test_a_path_of_the_callers_choosing_cannot_smuggle_in_a_lookalike(tmp_path: Path) -> None:
    fake = tmp_path / "gzip"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    with pytest.raises(InvalidRequest, match="is not an executable this server runs"):
        check_command(request(["gzip"], Environment={"PATH": f"{tmp_path}:/usr/bin:/bin"}), scope("gzip"))


def test_loader_variables_are_refused_to_server_callers() -> None:
    for name in ("LD_PRELOAD", "LD_LIBRARY_PATH", "DYLD_INSERT_LIBRARIES"):
        with pytest.raises(InvalidRequest, match=f"does not let jobs set {name}"):
            check_command(request(["gzip"], Environment={name: "/x.so"}), scope("gzip"))


def test_the_cli_and_python_api_are_not_held_to_an_allow_list() -> None:
    check_command(request(["anything-at-all"], Environment={"LD_PRELOAD": "/x.so"}), {})
    check_command({"Operation": {"S3PutObjectTagging": {}}}, scope())


def test_allow_commands_in_server_toml(tmp_path: Path) -> None:
    (tmp_path / "server.toml").write_text('[server]\nallow_commands = ["/usr/bin/convert", "gzip"]\n')
    assert load_server_config(tmp_path).functions.for_account("1").commands == ("/usr/bin/convert", "gzip")
    (tmp_path / "server.toml").write_text("[server]\n")
    assert load_server_config(tmp_path).functions.commands == ()
    for bad, message in (
        (
            'allow_commands = ["bin/gzip"]',
            "allow_commands entry 'bin/gzip' must be an absolute path or a bare name",
        ),
        ('allow_commands = "gzip"', "allow_commands must be a list of non-empty strings"),
        ('allow_commands = [""]', "allow_commands must be a list of non-empty strings"),
    ):
        (tmp_path / "server.toml").write_text(f"[server]\n{bad}\n")
        with pytest.raises(ConfigError, match=message):
            load_server_config(tmp_path)


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
