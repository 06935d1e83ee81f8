"""S3batchRunCommand jobs end to end with real tools (gzip, env, stat, echo, head, and python
itself), on the folder store and on moto's S3 server. Outputs are read back through the
backend's own API and checked byte for byte (gzip output by decompressing it)."""

from __future__ import annotations

import gzip
import itertools
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.conftest import Env, read_report
from tests.integration.test_jobs import create, run
from tests.unit.test_run_command_rules import SPAWN_AND_HANG, wait_gone

from s3batch.errors import BadRequest
from s3batch.operations import _subprocess
from s3batch.operations import run_command as rc

pytestmark = pytest.mark.integration

AWKWARD_KEYS = ["plain.txt", "with space.txt", "100%.txt", "ünïcödé/ключ.txt", "-starts-with-dash"]
#: A job of quick commands finishes well within this, in seconds.
QUICK_JOB_S = 20.0


@pytest.fixture(autouse=True)
def run_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Every task's private folder goes here, and none may be left once the test is over."""
    base = tmp_path / "run-dirs"
    base.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    yield base
    assert list(base.iterdir()) == [], "a task's temporary folder was left behind"


def op(command: list[str], target: str, **extra: Any) -> dict[str, Any]:
    return {rc.NAME: {"Command": command, "TargetResource": f"arn:aws:s3:::{target}", **extra}}


def run_on(
    env: Env, bucket: str, files: dict[str, bytes], operation: dict[str, Any], listed: list[str] | None = None
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Put `files` in `bucket`, make `bucket`-out, run `operation` over `listed` (default: the
    files); returns (the job, report rows by key as written in the manifest)."""
    env.make_bucket(bucket)
    env.make_bucket(f"{bucket}-out")
    for key, body in files.items():
        env.put(bucket, key, body)
    keys = list(files) if listed is None else listed
    batch, job_id = create(env, bucket, operation, [(bucket, k) for k in keys])
    job = run(batch, job_id)
    assert job["Status"] == "Complete", job.get("FailureReasons")
    rows = read_report(env, bucket, job_id)["rows"]
    return job, {row[1]: row for status in rows.values() for row in status}


def out_keys(env: Env, bucket: str) -> list[str]:
    """Every key of the output bucket, through the backend's own API."""
    if env.root is not None:
        folder = env.root / bucket
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    listed = env.client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return sorted(o["Key"] for o in listed)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


# -- outputs -------------------------------------------------------------------------------------


def test_gzip_each_object_and_upload_the_result(env: Env, bucket_name: str) -> None:
    bodies = {key: f"body of {key}\n".encode() * 500 for key in AWKWARD_KEYS}
    gz = op(
        ["gzip", "-c", "-n", "{input}"], f"{bucket_name}-out", TargetKeyPrefix="gz", StdoutFile="{key}.gz"
    )
    job, rows = run_on(env, bucket_name, bodies, gz, listed=[*AWKWARD_KEYS, "missing.txt"])
    assert job["ProgressSummary"]["NumberOfTasksSucceeded"] == len(AWKWARD_KEYS)
    for key, body in bodies.items():
        stored = env.get(f"{bucket_name}-out", f"gz/{key}.gz")
        assert stored is not None and gzip.decompress(stored) == body, key
    assert out_keys(env, f"{bucket_name}-out") == sorted(f"gz/{key}.gz" for key in AWKWARD_KEYS)
    row = rows["with+space.txt"]
    size = len(env.get(f"{bucket_name}-out", "gz/with space.txt.gz") or b"")
    assert row[3:] == [
        "succeeded",
        "200",
        "",
        f"ExitCode 0; uploaded 1 file(s), {size} bytes: gz/with space.txt.gz",
    ]
    assert rows["missing.txt"][3:6] == ["failed", "404", "NoSuchKey"]


def test_files_below_the_output_folder_keep_their_paths_and_links_are_not_followed(
    local_env: Env, bucket_name: str, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the bucket")
    code = (
        "import os, sys\n"
        "out = sys.argv[1]\n"
        "os.makedirs(out + '/sub/dir')\n"
        "open(out + '/sub/dir/deep.txt', 'w').write('deep')\n"
        "open(out + '/top.txt', 'w').write('top')\n"
        f"os.symlink({str(secret)!r}, out + '/secret-link')\n"
        "os.symlink(os.path.dirname(out), out + '/sub/up')\n"
    )
    _, rows = run_on(
        local_env,
        bucket_name,
        {"a.bin": b"x"},
        op([*python(code), "{output_dir}"], f"{bucket_name}-out", TargetKeyPrefix="p/"),
    )
    assert out_keys(local_env, f"{bucket_name}-out") == ["p/sub/dir/deep.txt", "p/top.txt"]
    assert rows["a.bin"][6] == (
        "ExitCode 0; uploaded 2 file(s), 7 bytes: p/sub/dir/deep.txt, p/top.txt; skipped 2 symbolic link(s)"
    )


def test_placeholders_are_filled_per_argument_without_a_shell(local_env: Env, bucket_name: str) -> None:
    command = ["echo", "{{literal}}", "{key}", "{basename}", "{stem}", "{extension}", "{bucket}",
               "[{version_id}]", "{input}", "{output_dir}", "$HOME;", "*"]  # fmt: skip
    key = "dir/photo.tar.gz"
    run_on(local_env, bucket_name, {key: b"x"}, op(command, f"{bucket_name}-out", StdoutFile="{stem}.txt"))
    said = (local_env.get(f"{bucket_name}-out", "photo.tar.txt") or b"").decode()
    words = said.split(" ")
    assert words[:8] == ["{literal}", key, "photo.tar.gz", "photo.tar", ".gz", bucket_name, "[]", words[7]]
    assert re.fullmatch(rf".*/{rc.TEMP_DIR_PREFIX}[^/]+/input/photo\.tar\.gz", words[7])
    assert words[8] == str(Path(words[7]).parent.parent / "output")
    assert words[9:] == ["$HOME;", "*\n"]  # no shell: nothing expanded


def test_the_command_sees_a_clean_environment_and_a_private_folder(
    local_env: Env, bucket_name: str, run_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "worker-secret-value")
    monkeypatch.setenv("S3BATCH_SOMETHING", "worker-setting")
    files = {"a.txt": b"a"}
    env_job = op(["env"], f"{bucket_name}-out", StdoutFile="env.txt", Environment={"LANG": "C.UTF-8"})
    run_on(local_env, bucket_name, files, env_job)
    seen = (local_env.get(f"{bucket_name}-out", "env.txt") or b"").decode()
    assert "worker-secret-value" not in seen and "worker-setting" not in seen
    variables = dict(line.split("=", 1) for line in seen.splitlines())
    assert set(variables) == {"PATH", "HOME", "TMPDIR", "LANG"}
    assert variables["PATH"] == rc.DEFAULT_PATH and variables["LANG"] == "C.UTF-8"
    home = Path(variables["HOME"])
    assert home.parent == run_dirs and home.name.startswith(rc.TEMP_DIR_PREFIX)
    assert variables["TMPDIR"] == str(home / "tmp")

    stat_job = op(["stat", "-c", "%a %n", "."], f"{bucket_name}-out", StdoutFile="mode.txt")
    run_on(local_env, bucket_name, files, stat_job)
    assert local_env.get(f"{bucket_name}-out", "mode.txt") == b"700 .\n"


# -- failures ------------------------------------------------------------------------------------


def test_a_failing_command_reports_its_exit_code_and_stderr_tail(env: Env, bucket_name: str) -> None:
    code = "import sys; sys.stderr.write('x' * 5000 + ' the end\\n'); sys.exit(3)"
    files = {"a.txt": b"plain text, not gzip"}
    _, rows = run_on(env, bucket_name, files, op(python(code), f"{bucket_name}-out", MaxStderrTailBytes=64))
    assert rows["a.txt"][3:] == ["failed", "400", "CommandFailed", "ExitCode 3: " + "x" * 55 + " the end"]

    _, rows = run_on(env, bucket_name, files, op(["gzip", "-d", "-c", "{input}"], f"{bucket_name}-out"))
    status, http, code_, message = rows["a.txt"][3:]
    assert (status, http, code_) == ("failed", "400", "CommandFailed")
    assert message.startswith("ExitCode 1: gzip: ") and message.endswith("/input/a.txt: not in gzip format")
    assert out_keys(env, f"{bucket_name}-out") == []


def test_a_timeout_kills_the_process_group(
    local_env: Env, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_subprocess, "KILL_GRACE_S", 0.5)
    started = time.monotonic()
    _, rows = run_on(
        local_env,
        bucket_name,
        {"a.txt": b"a"},
        op(python(SPAWN_AND_HANG), f"{bucket_name}-out", TimeoutSeconds=1),
    )
    assert time.monotonic() - started < QUICK_JOB_S
    status, http, code, message = rows["a.txt"][3:]
    assert (status, http, code) == ("failed", "400", "CommandTimedOut")
    prefix = "no exit within TimeoutSeconds (1 s); its process group was killed: "
    assert message.startswith(prefix)
    # The child `sleep 60`, which ignored SIGTERM like its parent, is gone too.
    assert wait_gone(int(message.removeprefix(prefix)))


def test_output_over_the_cap_fails_and_uploads_nothing(local_env: Env, bucket_name: str) -> None:
    files = {"a.txt": b"a"}
    after_exit = op(
        ["head", "-c", "5000", "/dev/zero"], f"{bucket_name}-out", StdoutFile="zeros", MaxOutputBytes=4096
    )
    _, rows = run_on(local_env, bucket_name, files, after_exit)
    assert rows["a.txt"][3:6] == ["failed", "400", "OutputTooLarge"]
    assert "MaxOutputBytes (4096 bytes)" in rows["a.txt"][6]

    # A command still writing is stopped by the watch, long before its deadline.
    code = "import sys, time\nopen(sys.argv[1] + '/big', 'wb').write(bytes(2 << 20))\ntime.sleep(60)\n"
    started = time.monotonic()
    running = op(
        [*python(code), "{output_dir}"], f"{bucket_name}-out", MaxOutputBytes=1 << 20, TimeoutSeconds=60
    )
    _, rows = run_on(local_env, bucket_name, files, running)
    assert time.monotonic() - started < QUICK_JOB_S
    assert rows["a.txt"][3:6] == ["failed", "400", "OutputTooLarge"]
    assert "was stopped; nothing was uploaded" in rows["a.txt"][6]
    assert out_keys(local_env, f"{bucket_name}-out") == []


def test_a_missing_executable_fails_each_task(local_env: Env, bucket_name: str) -> None:
    _, rows = run_on(
        local_env, bucket_name, {"a.txt": b"a"}, op(["no-such-tool-anywhere"], f"{bucket_name}-out")
    )
    assert rows["a.txt"][3:] == [
        "failed", "400", "CommandNotFound",
        f"'no-such-tool-anywhere' is not an executable file on PATH {rc.DEFAULT_PATH}",
    ]  # fmt: skip


def test_keys_that_would_climb_out_of_the_folder(moto_env: Env, bucket_name: str) -> None:
    """S3 keys may hold '..' segments (the folder store cannot): used in a path through {key}
    they fail the task; {basename} and {stem} stay inside the folder whatever the key."""
    files = {"../up.txt": b"up", "a/../../b.txt": b"b", "ok/c.txt": b"c"}
    by_key = op(["gzip", "-c", "{input}"], f"{bucket_name}-out", StdoutFile="{key}.gz")
    _, rows = run_on(moto_env, bucket_name, files, by_key)
    assert rows["../up.txt"][3:6] == rows["a/../../b.txt"][3:6] == ["failed", "400", "UnusableKey"]
    assert rows["ok/c.txt"][3] == "succeeded"

    by_name = op(["gzip", "-c", "{input}"], f"{bucket_name}-out", StdoutFile="flat/{stem}.gz")
    _, rows = run_on(moto_env, bucket_name, files, by_name)
    assert {row[3] for row in rows.values()} == {"succeeded"}
    assert out_keys(moto_env, f"{bucket_name}-out") == ["flat/b.gz", "flat/c.gz", "flat/up.gz", "ok/c.txt.gz"]


# -- limits --------------------------------------------------------------------------------------


def test_running_commands_are_bounded_per_worker(
    local_env: Env, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rc, "MAX_RUNNING_COMMANDS", 1)
    code = "import time\nstart = time.time()\ntime.sleep(0.3)\nprint(start, time.time())\n"
    files = {f"f{n}.txt": b"x" for n in range(3)}
    run_on(local_env, bucket_name, files, op(python(code), f"{bucket_name}-out", StdoutFile="{key}.t"))
    spans = sorted(
        tuple(map(float, (local_env.get(f"{bucket_name}-out", f"{key}.t") or b"").split())) for key in files
    )
    assert len(spans) == 3
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, spans


def test_placeholders_are_checked_at_create_job(local_env: Env, bucket_name: str) -> None:
    local_env.make_bucket(bucket_name)
    for command, message in (
        (["gzip", "{inputt}"], r"Command\[1\]: unknown placeholder \{inputt\}"),
        (["gzip", "{input"], r"Command\[1\]: .*literal braces"),
        (["{input}"], r"Command\[0\] must be an executable's name"),
    ):
        with pytest.raises(BadRequest, match=message):
            create(local_env, bucket_name, op(command, "out"), [(bucket_name, "a.txt")])
    assert local_env.batch().list_jobs()["Jobs"] == []


# -- what a job on one's own machine may not do ----------------------------------------------------


def test_interpreter_hooks_in_the_environment_are_refused_at_create_job(
    local_env: Env, bucket_name: str, tmp_path: Path
) -> None:
    """BASH_ENV with a bash-script executable (ldd on Debian/Ubuntu; `bash -c :` stands in
    where ldd is a binary) ran the value's command substitution before the script."""
    marker = tmp_path / "pwned-by-bash-env"
    local_env.make_bucket(bucket_name)
    local_env.put(bucket_name, "a.bin", b"\x7fELF not really")
    hooks = {
        "BASH_ENV": f"$(id > {marker})",
        "SHELLOPTS": "xtrace",
        "PS4": f"$(id > {marker})",
        "PERL5OPT": "-e1",
        "PYTHONPATH": str(tmp_path),
        "NODE_OPTIONS": "--require=/x.js",
        "GCONV_PATH": str(tmp_path),
        "GIT_SSH_COMMAND": f"id > {marker}",
        "MAGICK_CONFIGURE_PATH": str(tmp_path),
        "LD_PRELOAD": "/x.so",
    }
    for name, value in hooks.items():
        for command in (["ldd", "{input}"], ["bash", "-c", ":"]):
            with pytest.raises(BadRequest, match=rf"Environment.{name}: a loader or interpreter hook"):
                create(
                    local_env,
                    bucket_name,
                    op(command, "out", Environment={name: value}),
                    [(bucket_name, "a.bin")],
                )
    assert local_env.batch().list_jobs()["Jobs"] == []
    assert not marker.exists()


def test_an_object_over_max_input_bytes_fails_before_it_is_staged(local_env: Env, bucket_name: str) -> None:
    files = {"small.txt": b"x" * 1000, "big.txt": b"x" * 1001}
    job = op(["gzip", "-c", "-n", "{input}"], f"{bucket_name}-out", StdoutFile="{key}.gz", MaxInputBytes=1000)
    _, rows = run_on(local_env, bucket_name, files, job)
    assert rows["small.txt"][3] == "succeeded"
    assert rows["big.txt"][3:] == [
        "failed", "400", "InputTooLarge",
        "the object is 1001 bytes, more than MaxInputBytes (1000 bytes); nothing ran",
    ]  # fmt: skip
    assert out_keys(local_env, f"{bucket_name}-out") == ["small.txt.gz"]


def test_an_object_that_grows_past_max_input_bytes_while_staged_fails(
    local_env: Env, bucket_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The size seen by HEAD is not trusted for the download: the stream is counted too."""
    real_head = rc.RunCommand._check_size

    async def stale_head(self: rc.RunCommand, task: Any, caps: Any) -> None:
        await real_head(self, task, type(caps)(max_input_bytes=1 << 30))

    monkeypatch.setattr(rc.RunCommand, "_check_size", stale_head)
    job = op(["gzip", "-c", "{input}"], f"{bucket_name}-out", MaxInputBytes=10, StdoutFile="x.gz")
    _, rows = run_on(local_env, bucket_name, {"a.txt": b"x" * 11}, job)
    assert rows["a.txt"][3:6] == ["failed", "400", "InputTooLarge"]
    assert "grew past MaxInputBytes (10 bytes) while it was downloaded" in rows["a.txt"][6]


SCRATCH = (
    "import os, sys, time\n"
    "for n, folder in enumerate((os.environ['TMPDIR'], os.environ['HOME'], os.environ['HOME'])):\n"
    "    open(os.path.join(folder, 'scratch' + str(n)), 'wb').write(os.urandom(1 << 20))\n"
    "time.sleep(float(sys.argv[1]))\n"
)


@pytest.mark.parametrize("linger_s", ["60", "0"])
def test_scratch_space_counts_against_the_disk_cap(local_env: Env, bucket_name: str, linger_s: str) -> None:
    """Before, only output/ was watched: tmp/ and HOME could fill the worker's disk. Still
    running, the command is stopped by the watch; exited, the check before the upload fails it."""
    started = time.monotonic()
    job = op([*python(SCRATCH), linger_s], f"{bucket_name}-out", MaxDiskBytes=2 << 20, TimeoutSeconds=60)
    _, rows = run_on(local_env, bucket_name, {"a.txt": b"a"}, job)
    assert time.monotonic() - started < QUICK_JOB_S
    status, http, code, message = rows["a.txt"][3:]
    assert (status, http, code) == ("failed", "400", "DiskLimitExceeded")
    assert message.startswith(
        f"the task's folder (input, output, tmp) held more than MaxDiskBytes ({2 << 20} bytes)"
    )
    assert out_keys(local_env, f"{bucket_name}-out") == []


def test_one_file_cannot_outgrow_the_disk_cap_between_two_looks(local_env: Env, bucket_name: str) -> None:
    job = op(["head", "-c", str(256 << 20), "/dev/zero"], f"{bucket_name}-out", StdoutFile="zeros",
             MaxDiskBytes=1 << 20, MaxOutputBytes=512 << 20)  # fmt: skip
    _, rows = run_on(local_env, bucket_name, {"a.txt": b"a"}, job)
    assert rows["a.txt"][3:6] == ["failed", "400", "DiskLimitExceeded"]
    assert "got SIGXFSZ" in rows["a.txt"][6]
