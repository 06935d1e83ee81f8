"""S3batchRunCommand (s3batch extension): run an executable on each object, upload what it wrote.

AWS would send such work to AWS Batch or a container; here each task is (docs/run-command.md):

1. the object's size is checked against the job's MaxInputBytes (a HEAD), and the object is
   streamed (`ObjectStore.iter_bytes`) into `input/` of a private temporary folder (mode 0700,
   `TEMP_DIR_PREFIX*` under the worker's temporary directory), named after the key's last
   segment so tools that go by the extension still can;
2. the command runs there: an argv list (never a shell), each argument a template whose
   placeholders ({input} {output_dir} {key} {basename} {stem} {extension} {bucket}
   {version_id}) are filled in per task; in its own process group, in a clean environment
   (PATH, HOME, TMPDIR and the job's environment, nothing of the worker's), with a deadline,
   its stderr tail kept (operations/_subprocess.py), the whole folder watched against the
   job's disk cap and `output/` against its output cap;
3. every regular file the command left below `output/` (symbolic links are not followed or
   uploaded) goes to `TargetResource` under `TargetKeyPrefix` + its path relative to `output/`;
4. the folder is removed, whatever happened.

Who chooses what runs: on one's own machine (CLI, Python API) the job's `Command` and
`Environment`; for a caller of `s3batch serve`, only a command its operator registered in
server.toml (`CommandName`, domain/commands.py), recorded with the job at CreateJob
(`JobContext.command`) and checked against server.toml again when the job runs.

Commands run at most MAX_RUNNING_COMMANDS at a time per worker process (the CPUs: a command is
CPU work), and at most STAGED_PER_RUNNING times that many tasks hold a folder at once
(downloading, waiting for a CPU, running or uploading), which bounds the disk a job uses. Both
are apart from the job's storage concurrency.

Per-object problems are failed tasks (HTTP status 400, the command's or the object's fault):
`CommandFailed` ("ExitCode N: <stderr tail>"), `CommandTimedOut`, `InputTooLarge`,
`OutputTooLarge`, `DiskLimitExceeded`, `TooManyOutputFiles`, `InvalidOutputName`,
`UnreadableOutput`, `UnusableKey`, `CommandNotFound`, `CommandNotStarted`; a registered command
its server no longer registers as it was is `CommandNotRegistered` (403); a local disk problem
is `LocalIOError` (500, retryable); storage errors keep their own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import os
import shutil
import signal
import stat
import tempfile
import tomllib
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from s3batch.domain import pricing
from s3batch.domain.arn import bucket_from_arn
from s3batch.domain.commands import (
    COMMAND_NAME,
    COMMANDS_TABLE,
    DEFAULT_MAX_INPUT_BYTES,
    DEFAULT_MAX_OUTPUT_BYTES,
    DEFAULT_PATH,
    DEFAULT_SCRATCH_BYTES,
    DEFAULT_TIMEOUT_S,
    MAX_ARG_CHARS,
    MAX_ARGS,
    MAX_ENV_VALUE_CHARS,
    MAX_ENV_VARS,
    MAX_OUTPUT_BYTES_LIMIT,
    MAX_TIMEOUT_S,
    NAME,
    PLACEHOLDERS,
    RESERVED_ENV,
    STDOUT_PLACEHOLDERS,
    Caps,
    Field,
    JobCommand,
    RegisteredCommand,
    ServerCommands,
    Template,
    caps_of,
    check_environment,
    parse_argv,
    parse_server_commands,
    parse_template,
    render,
    whole_number,
)
from s3batch.domain.roles import Need
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import BadRequest, ConfigError, InvalidRequest, StorageError
from s3batch.operations import _subprocess
from s3batch.operations._params import reject_unknown
from s3batch.operations.actions import GET, Permissions
from s3batch.operations.base import (
    UNBATCHED,
    JobContext,
    NoProbe,
    Operation,
    OperationContext,
    OperationKind,
    storage_failure,
)
from s3batch.storage.base import ObjectStore

__all__ = [  # the rules' names, kept importable from here (domain/commands.py holds them)
    "DEFAULT_MAX_INPUT_BYTES",
    "DEFAULT_MAX_OUTPUT_BYTES",
    "DEFAULT_PATH",
    "DEFAULT_SCRATCH_BYTES",
    "DEFAULT_TIMEOUT_S",
    "KIND",
    "MAX_ARGS",
    "MAX_ARG_CHARS",
    "MAX_ENV_VALUE_CHARS",
    "MAX_ENV_VARS",
    "MAX_OUTPUT_BYTES_LIMIT",
    "MAX_TIMEOUT_S",
    "NAME",
    "PLACEHOLDERS",
    "RESERVED_ENV",
    "STDOUT_PLACEHOLDERS",
    "Field",
    "RunCommand",
    "Template",
    "parse_template",
    "render",
]

log = logging.getLogger(__name__)

# -- limits and defaults ---------------------------------------------------------------------------

#: Files a task may upload; more fails the task (a runaway command cannot flood the bucket).
MAX_OUTPUT_FILES = 10_000
#: Entries (files, folders, links) a task's whole folder may hold: a command making millions
#: of empty files exhausts the disk's inodes without using bytes.
MAX_FOLDER_ENTRIES = 100_000
#: Bytes of stderr kept for the report by default, and the most that may be asked for.
DEFAULT_STDERR_TAIL_BYTES = 1024
MAX_STDERR_TAIL_BYTES = 8192
#: Bytes a block of `st_blocks` counts (POSIX): a file's disk use is the larger of its size
#: and its blocks, so neither a sparse nor a preallocated file hides from the disk cap.
STAT_BLOCK_BYTES = 512
#: Commands running at once per worker process: one per CPU this process may use.
MAX_RUNNING_COMMANDS = (
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
)
#: Tasks holding a temporary folder at once, per running command: the next object downloads
#: while the current one runs, without the job staging every object on disk at once.
STAGED_PER_RUNNING = 2
#: Prefix of each task's private temporary folder (in tempfile.gettempdir(): TMPDIR).
TEMP_DIR_PREFIX = "s3batch-run-"
#: Bytes asked of the store per read while staging the input (1 MiB).
READ_CHUNK_BYTES = 1 << 20
#: The input file's name when the key's last segment cannot be a file name ("", ".", "..",
#: longer than NAME_MAX_BYTES, or not encodable).
INPUT_FALLBACK_NAME = "object"
NAME_MAX_BYTES = 255
#: S3's limit on key length, in UTF-8 bytes.
MAX_KEY_BYTES = 1024
#: Characters of the success message's key list before it is cut with "... (+N more)".
MAX_LISTED_KEYS_CHARS = 1024
#: HTTP status of a failure the command or the object causes; of a command the server no
#: longer allows; of a local disk failure.
COMMAND_FAULT_STATUS = 400
NOT_ALLOWED_STATUS = 403
LOCAL_FAULT_STATUS = 500

_KNOWN = {
    "Command",
    "CommandName",
    "TargetResource",
    "TargetKeyPrefix",
    "StdoutFile",
    "TimeoutSeconds",
    "MaxInputBytes",
    "MaxOutputBytes",
    "MaxDiskBytes",
    "MaxStderrTailBytes",
    "Environment",
}
#: What only a job on one's own machine chooses: a registered command's are its operator's.
_FREE_FORM = ("Command", "Environment")
HOW_TO_NAME_A_COMMAND = (
    "this server runs only commands its operator registers with [[commands]] in server.toml; "
    f"name one with {NAME}.CommandName (docs/run-command.md#over-s3batch-serve)"
)


# -- parameters -------------------------------------------------------------------------------------


def _uses(templates: tuple[Template, ...], name: str) -> bool:
    return any(isinstance(p, Field) and p.name == name for t in templates for p in t)


@dataclass(frozen=True, slots=True)
class Plan:
    """The checked parameters of one job."""

    #: The executable: a bare name (looked up on PATH) or an absolute path; for a registered
    #: command always the registration's absolute path.
    program: str
    args: tuple[Template, ...]
    bucket: str
    prefix: str
    stdout_file: Template | None
    caps: Caps
    tail_bytes: int
    #: The command's variables, in the order given.
    environment: tuple[tuple[str, str], ...]
    #: The registration's name for a registered command; None for one's own `Command`.
    registered: str | None = None

    @property
    def path(self) -> str:
        """The command's PATH: its environment's, else DEFAULT_PATH."""
        return dict(self.environment).get("PATH", DEFAULT_PATH)

    @property
    def timeout_s(self) -> int:
        return self.caps.timeout_s

    @property
    def max_output_bytes(self) -> int:
        return self.caps.max_output_bytes

    @property
    def uses_key(self) -> bool:
        """Whether {key} appears anywhere: then it may build paths, and must be safe to."""
        stdout = (self.stdout_file,) if self.stdout_file is not None else ()
        return _uses((*self.args, *stdout), "key")

    def target_key(self, relative: str) -> str:
        """TargetKeyPrefix + "/" + the file's path below {output_dir} (no extra "/" when the
        prefix ends with one), as S3PutObjectCopy builds its destination keys."""
        if not self.prefix:
            return relative
        return self.prefix + relative if self.prefix.endswith("/") else f"{self.prefix}/{relative}"


@dataclass(frozen=True, slots=True)
class _Delivery:
    """The parameters every job chooses itself: where outputs go and what the report keeps."""

    bucket: str
    prefix: str
    stdout_file: Template | None
    tail_bytes: int


def _delivery(params: Mapping[str, Any]) -> _Delivery:
    target = params.get("TargetResource")
    if not isinstance(target, str):
        raise BadRequest(f"{NAME}.TargetResource (a bucket ARN) is required")
    prefix = params.get("TargetKeyPrefix") or ""
    if not isinstance(prefix, str) or len(prefix) > MAX_KEY_BYTES:
        raise BadRequest(f"{NAME}.TargetKeyPrefix must be a string of at most {MAX_KEY_BYTES} characters")
    tail = params.get("MaxStderrTailBytes", DEFAULT_STDERR_TAIL_BYTES)
    return _Delivery(
        bucket=bucket_from_arn(target, f"{NAME}.TargetResource"),
        prefix=prefix,
        stdout_file=_stdout_file(params.get("StdoutFile")),
        tail_bytes=whole_number(tail, f"{NAME}.MaxStderrTailBytes", 0, MAX_STDERR_TAIL_BYTES),
    )


def plan_of(params: Mapping[str, Any]) -> Plan:
    """A job's own command (`Command`, one's own machine), checked. Raises BadRequest naming
    the field."""
    reject_unknown(NAME, params, _KNOWN)
    if "CommandName" in params:
        raise BadRequest(
            f"{NAME}: give Command (your own command) or CommandName (a registered one), not both"
        )
    program, args = parse_argv(params.get("Command"), f"{NAME}.Command")
    delivery = _delivery(params)
    return Plan(
        program=program,
        args=args,
        bucket=delivery.bucket,
        prefix=delivery.prefix,
        stdout_file=delivery.stdout_file,
        caps=caps_of(params, "parameter", f"{NAME}."),
        tail_bytes=delivery.tail_bytes,
        environment=check_environment(params.get("Environment"), f"{NAME}.Environment", hooks=False),
    )


def command_name(params: Mapping[str, Any]) -> str:
    """CommandName of a job naming a registered command, which may give neither Command nor
    Environment. Raises BadRequest."""
    reject_unknown(NAME, params, _KNOWN)
    name = params.get("CommandName")
    if not isinstance(name, str) or not COMMAND_NAME.fullmatch(name):
        raise BadRequest(f"{NAME}.CommandName must be 1-64 letters, digits, '-' or '_'; got {name!r}")
    for field in _FREE_FORM:
        if field in params:
            raise BadRequest(
                f"{NAME}.{field}: a registered command (CommandName) runs with its registration's "
                "arguments and environment; give Command or CommandName, not both"
            )
    return name


def registered_plan(params: Mapping[str, Any], registration: RegisteredCommand) -> Plan:
    """A job naming `registration`: its argv and environment, the job's own target, and caps
    no higher than the registration's (InvalidRequest naming the field otherwise)."""
    command_name(params)
    program, args = parse_argv(list(registration.argv), f"{NAME} command {registration.name!r}")
    delivery = _delivery(params)
    return Plan(
        program=program,
        args=args,
        bucket=delivery.bucket,
        prefix=delivery.prefix,
        stdout_file=delivery.stdout_file,
        caps=caps_of(params, "parameter", f"{NAME}.", ceiling=registration.caps),
        tail_bytes=delivery.tail_bytes,
        environment=registration.environment,
        registered=registration.name,
    )


def validate(params: Mapping[str, Any]) -> None:
    """The parameters on their own (what a registration allows is checked by `check_server_caller`)."""
    if "CommandName" in params:
        command_name(params)
        _delivery(params)
        caps_of(params, "parameter", f"{NAME}.")
    else:
        plan_of(params)


def _stdout_file(value: Any) -> Template | None:
    if value is None:
        return None
    where = f"{NAME}.StdoutFile"
    template = parse_template(where, value, STDOUT_PLACEHOLDERS)
    sample = {name: "x" for name in STDOUT_PLACEHOLDERS}
    if _relative_parts(render(template, sample)) is None:
        raise BadRequest(
            f"{where} {value!r} must be a relative path inside {{output_dir}} (no '..' or '.' parts)"
        )
    return template


def _relative_parts(path: str) -> tuple[str, ...] | None:
    """The segments of a relative path that stays where it starts, or None ('..', '.', an
    empty segment or a leading '/')."""
    parts = tuple(path.split("/"))
    if any(part in ("", ".", "..") for part in parts):
        return None
    return parts


# -- who may run what ------------------------------------------------------------------------------


def resolve_program(plan: Plan) -> str | None:
    """The absolute path Command[0] stands for in the command's clean environment, or None."""
    return shutil.which(plan.program, path=plan.path)


def is_executable_file(path: str) -> bool:
    """Whether `path` (absolute) is a regular file this process may execute."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode) and os.access(path, os.X_OK)
    except OSError:
        return False


def check_server_caller(
    params: Mapping[str, Any], commands: Mapping[str, RegisteredCommand], config: Path
) -> JobCommand:
    """For a job created by a server's caller (docs/run-command.md#over-s3batch-serve): it must
    name (CommandName) a command registered for its account in `commands`, whose executable
    exists, and may only lower its caps. Returns what the job records. Raises InvalidRequest;
    the same answer whether a name is registered for another account or not at all."""
    given = sorted(field for field in _FREE_FORM if field in params)
    if given:
        raise InvalidRequest(f"{NAME}.{given[0]}: {HOW_TO_NAME_A_COMMAND}")
    if "CommandName" not in params:
        raise InvalidRequest(f"{NAME}: {HOW_TO_NAME_A_COMMAND}")
    name = command_name(params)
    registration = commands.get(name)
    if registration is None:
        raise InvalidRequest(
            f"{NAME}.CommandName {name!r} is not a command registered for your account on this server; "
            "its operator registers commands with [[commands]] in server.toml"
        )
    registered_plan(params, registration)
    if not is_executable_file(registration.program):
        raise InvalidRequest(f"{NAME}.CommandName {name!r}: the command is not available on this server now")
    return JobCommand(registration, str(config))


def check_own_machine(params: Mapping[str, Any]) -> None:
    """For a job on one's own machine (CLI, Python API): CommandName is the server's."""
    if "CommandName" in params:
        raise BadRequest(
            f"{NAME}.CommandName names a command an s3batch serve operator registered for its "
            "callers ([[commands]] in server.toml); on your own machine give Command"
        )


def load_server_commands(config: Path) -> ServerCommands:
    """`[[commands]]` of a server.toml (none without the file). Raises ConfigError."""
    if not config.is_file():
        return ServerCommands()
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config}: {exc}") from exc
    return parse_server_commands(data.get(COMMANDS_TABLE, []), f"{config} [[{COMMANDS_TABLE}]]")


def not_registered(message: str) -> TaskResult:
    return TaskResult.fail("CommandNotRegistered", message, NOT_ALLOWED_STATUS)


def current_plan(params: Mapping[str, Any], recorded: JobCommand, account_id: str) -> Plan | TaskResult:
    """A registered command's plan when its job runs: only while server.toml still registers
    the same executable, arguments and environment for the job's account; caps lowered to the
    registration's current ones. Otherwise the failure every task reports."""
    name = recorded.registration.name
    try:
        current = load_server_commands(Path(recorded.config)).for_account(account_id).get(name)
    except ConfigError as exc:  # the details (the file's path) are the operator's, not the caller's
        log.error("S3batchRunCommand: %s", exc)
        return not_registered("cannot read the server's registered commands; its log says why")
    if current is None:
        return not_registered(f"command {name!r} is no longer registered for this account on the server")
    if not current.runs_as(recorded.registration):
        return not_registered(
            f"command {name!r} is registered differently than when the job was created; create the job again"
        )
    plan = registered_plan(params, recorded.registration)
    return replace(plan, caps=plan.caps.within(current.caps))


def target_needs(params: Mapping[str, Any], bucket: str, versioned: bool) -> tuple[Need, ...]:
    """s3:PutObject on TargetResource (nothing when absent: the request is refused anyway)."""
    target = params.get("TargetResource")
    if not isinstance(target, str):
        return ()
    return (Need("s3:PutObject", bucket_from_arn(target, "TargetResource")),)


def requests(params: Mapping[str, Any], tasks: int, buckets: int) -> dict[str, int]:
    """One HEAD (the input's size) and one GET per object and, as an estimate, one PUT (one
    output file) per object."""
    return {pricing.HEAD: tasks, pricing.GET: tasks, pricing.PUT: tasks}


# -- concurrency -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Slots:
    running: asyncio.Semaphore
    staged: asyncio.Semaphore


#: Per event loop (a worker process has one): the jobs it runs share its CPUs and its disk.
_SLOTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Slots] = weakref.WeakKeyDictionary()


def _slots() -> _Slots:
    loop = asyncio.get_running_loop()
    slots = _SLOTS.get(loop)
    if slots is None:
        slots = _Slots(
            asyncio.Semaphore(MAX_RUNNING_COMMANDS),
            asyncio.Semaphore(MAX_RUNNING_COMMANDS * STAGED_PER_RUNNING),
        )
        _SLOTS[loop] = slots
    return slots


# -- one task --------------------------------------------------------------------------------------


class TaskFailed(Exception):
    """A per-object problem found before or after the command ran."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.result = TaskResult.fail(code, message, COMMAND_FAULT_STATUS)


@dataclass(frozen=True, slots=True)
class Workdir:
    """A task's private folder: the command's cwd and HOME."""

    root: Path

    @property
    def input_dir(self) -> Path:
        return self.root / "input"

    @property
    def output_dir(self) -> Path:
        return self.root / "output"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @classmethod
    def create(cls) -> Workdir:
        root = Path(tempfile.mkdtemp(prefix=TEMP_DIR_PREFIX))  # 0700, owned by the worker
        for sub in ("input", "output", "tmp"):
            (root / sub).mkdir(mode=0o700)
        return cls(root)

    def remove(self) -> None:
        try:
            shutil.rmtree(self.root)
        except OSError:
            # A command may leave folders it took write or search permission from: open them
            # up (never through a symlink) and try once more.
            _unlock(self.root)
            shutil.rmtree(self.root, ignore_errors=True)


def _unlock(root: Path) -> None:
    for folder, subfolders, _ in os.walk(root):
        for name in subfolders:
            path = os.path.join(folder, name)
            if not os.path.islink(path):
                with contextlib.suppress(OSError):
                    os.chmod(path, 0o700)


def input_name(basename: str) -> str:
    """The staged input's file name: the key's last segment where that is a usable name."""
    try:
        size = len(basename.encode("utf-8"))
    except UnicodeEncodeError:
        return INPUT_FALLBACK_NAME
    if basename in ("", ".", "..") or size > NAME_MAX_BYTES or "\x00" in basename:
        return INPUT_FALLBACK_NAME
    return basename


def placeholder_values(task: Task, input_path: Path, output_dir: Path) -> dict[str, str]:
    basename = task.key.rpartition("/")[2]
    extension = PurePosixPath(basename).suffix if basename not in (".", "..") else ""
    return {
        "input": str(input_path),
        "output_dir": str(output_dir),
        "key": task.key,
        "basename": basename,
        "stem": basename[: len(basename) - len(extension)],
        "extension": extension,
        "bucket": task.bucket,
        "version_id": task.version_id or "",
    }


def clean_environment(plan: Plan, workdir: Workdir) -> dict[str, str]:
    """The command's whole environment: nothing of the worker's (its AWS credentials above all)."""
    return {
        "PATH": DEFAULT_PATH,
        **dict(plan.environment),
        "HOME": str(workdir.root),
        "TMPDIR": str(workdir.tmp),
    }


@dataclass(frozen=True, slots=True)
class OutputFile:
    key: str
    path: Path
    size: int


@dataclass(frozen=True, slots=True)
class Outputs:
    files: tuple[OutputFile, ...]
    skipped_links: int

    @property
    def total(self) -> int:
        return sum(f.size for f in self.files)


def _walk(
    folder: Path, unreadable: Callable[[str, OSError], None], *, folders: bool = False
) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(path relative to `folder`, entry) of everything below it (folders too when `folders`);
    symlinks are yielded, never followed, so nothing outside `folder` is reached. A folder that
    cannot be listed goes to `unreadable` (relative path, error). Lazy: a caller that stops
    early has not listed a huge folder whole."""
    pending: list[tuple[str, Path]] = [("", folder)]
    while pending:
        prefix, current = pending.pop()
        try:
            listing = os.scandir(current)
        except OSError as exc:
            unreadable(prefix or ".", exc)
            continue
        with listing:
            for entry in listing:
                relative = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    pending.append((relative + "/", Path(entry.path)))
                    if not folders:
                        continue
                yield relative, entry


def _ignore(relative: str, exc: OSError) -> None:
    """The watch runs while the command changes its folder: what vanished meanwhile is skipped."""


def _refuse(relative: str, exc: OSError) -> None:
    raise TaskFailed("UnreadableOutput", f"cannot read output folder {relative!r}: {exc.strerror}")


#: The error codes of the caps the watch enforces.
OUTPUT_TOO_LARGE = "OutputTooLarge"
DISK_LIMIT_EXCEEDED = "DiskLimitExceeded"


def disk_use(entry: os.DirEntry[str]) -> int:
    """Bytes a regular file takes: its size or its allocated blocks, whichever is larger."""
    info = entry.stat(follow_symlinks=False)
    return max(info.st_size, info.st_blocks * STAT_BLOCK_BYTES)


def over_caps(workdir: Workdir, caps: Caps) -> str | None:
    """The code of a cap the task's folder is over (None: within every cap): the whole folder
    (input, output, tmp/, whatever the command wrote there) against `max_disk_bytes` and
    MAX_FOLDER_ENTRIES, `output/` against `max_output_bytes` and MAX_OUTPUT_FILES. Stops
    counting as soon as one is over. Runs beside the command."""
    folder_bytes = entries = output_bytes = output_files = 0
    for relative, entry in _walk(workdir.root, _ignore, folders=True):
        entries += 1
        with contextlib.suppress(OSError):  # gone meanwhile
            if entry.is_file(follow_symlinks=False):
                used = disk_use(entry)
                folder_bytes += used
                if relative.startswith("output/"):
                    output_bytes += used
                    output_files += 1
        if folder_bytes > caps.max_disk_bytes or entries > MAX_FOLDER_ENTRIES:
            return DISK_LIMIT_EXCEEDED
        if output_bytes > caps.max_output_bytes or output_files > MAX_OUTPUT_FILES:
            return OUTPUT_TOO_LARGE
    return None


class FolderWatch:
    """The `watch` of a running command (operations/_subprocess.py): True, and the cap's code
    in `tripped`, once its folder is over a cap."""

    def __init__(self, workdir: Workdir, caps: Caps) -> None:
        self.workdir, self.caps = workdir, caps
        self.tripped: str | None = None

    def __call__(self) -> bool:
        self.tripped = over_caps(self.workdir, self.caps)
        return self.tripped is not None


def collect_outputs(plan: Plan, folder: Path) -> Outputs:
    """The files to upload, by target key. Raises TaskFailed (nothing is uploaded then)."""
    files: list[OutputFile] = []
    links = total = 0
    for relative, entry in _walk(folder, _refuse):
        if not entry.is_file(follow_symlinks=False):  # symlinks, FIFOs, sockets
            links += entry.is_symlink()
            continue
        if len(files) == MAX_OUTPUT_FILES:
            raise TaskFailed("TooManyOutputFiles", f"the command wrote more than {MAX_OUTPUT_FILES} files")
        size = entry.stat(follow_symlinks=False).st_size
        total += size
        if total > plan.max_output_bytes:
            raise TaskFailed(
                OUTPUT_TOO_LARGE,
                f"the command wrote more than MaxOutputBytes ({plan.max_output_bytes} bytes); "
                "nothing was uploaded",
            )
        files.append(OutputFile(_output_key(plan, relative), Path(entry.path), size))
    return Outputs(tuple(sorted(files, key=lambda f: f.key)), links)


def _output_key(plan: Plan, relative: str) -> str:
    try:
        key = plan.target_key(relative)
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:  # a file name that is not UTF-8 (os.fsdecode's surrogates)
        shown = relative.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise TaskFailed("InvalidOutputName", f"output file {shown!r} has a name that is not UTF-8") from None
    if size > MAX_KEY_BYTES:
        raise TaskFailed(
            "InvalidOutputName", f"target key {key[:100]!r}... is longer than {MAX_KEY_BYTES} bytes"
        )
    return key


def content_type(key: str) -> str | None:
    """The Content-Type its extension suggests; none for a compressed file (`x.csv.gz` is not
    text/csv unless Content-Encoding says gzip, which s3batch does not set)."""
    guessed, encoding = mimetypes.guess_type(key, strict=False)
    return guessed if encoding is None else None


def _text(tail: bytes) -> str:
    return tail.decode("utf-8", "replace").strip()


def disk_failure(caps: Caps, how: str) -> TaskResult:
    message = (
        f"the task's folder (input, output, tmp) held more than MaxDiskBytes ({caps.max_disk_bytes} "
        f"bytes) or {MAX_FOLDER_ENTRIES} entries; {how}; nothing was uploaded"
    )
    return TaskResult.fail(DISK_LIMIT_EXCEEDED, message, COMMAND_FAULT_STATUS)


def command_failure(
    plan: Plan, finished: _subprocess.Finished, tripped: str | None = None
) -> TaskResult | None:
    """The failed result of a run that did not exit 0 (None when it did). `tripped`: the cap
    the watch stopped it for."""
    said = _text(finished.stderr_tail) or _text(finished.stdout_tail)
    if finished.ending is _subprocess.Ending.TIMED_OUT:
        message = f"no exit within TimeoutSeconds ({plan.timeout_s} s); its process group was killed"
        return TaskResult.fail(
            "CommandTimedOut", f"{message}: {said}" if said else message, COMMAND_FAULT_STATUS
        )
    if finished.ending is _subprocess.Ending.STOPPED_BY_WATCH:
        if tripped == DISK_LIMIT_EXCEEDED:
            return disk_failure(plan.caps, "the command was stopped")
        message = (
            f"the command wrote more than MaxOutputBytes ({plan.max_output_bytes} bytes) or "
            f"{MAX_OUTPUT_FILES} files and was stopped; nothing was uploaded"
        )
        return TaskResult.fail(OUTPUT_TOO_LARGE, message, COMMAND_FAULT_STATUS)
    code = finished.returncode
    if code == 0:
        return None
    if code == -signal.SIGXFSZ:  # the kernel's file size limit (_subprocess.Launch.max_file_bytes)
        return disk_failure(plan.caps, "a file reached that size and the command got SIGXFSZ")
    status = f"ExitCode {code}"
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            status += f" ({signal.Signals(-code).name})"
    return TaskResult.fail("CommandFailed", f"{status}: {said}" if said else status, COMMAND_FAULT_STATUS)


def success_message(outputs: Outputs) -> str:
    files = outputs.files
    message = f"ExitCode 0; uploaded {len(files)} file(s), {outputs.total} bytes"
    if files:
        listed: list[str] = []
        used = 0
        for f in files:
            if used + len(f.key) > MAX_LISTED_KEYS_CHARS and listed:
                break
            listed.append(f.key)
            used += len(f.key) + 2
        more = len(files) - len(listed)
        message += ": " + ", ".join(listed) + (f" ... (+{more} more)" if more else "")
    if outputs.skipped_links:
        message += f"; skipped {outputs.skipped_links} symbolic link(s)"
    return message


@dataclass(frozen=True, slots=True)
class _Prepared:
    launch: _subprocess.Launch
    #: The placeholders' values for the task.
    values: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Ready:
    """What a job runs, as this worker process found it when the job started."""

    plan: Plan
    #: The absolute path exec'd; None when there is no such executable file (every task then
    #: fails with CommandNotFound).
    program: str | None


def job_setup(params: Mapping[str, Any], job: JobContext) -> Ready | TaskResult:
    """The job's plan and executable, or the failure every task reports (CommandNotRegistered)."""
    recorded = job.command
    if recorded is None:
        if "CommandName" in params:  # never the case for a job made by CreateJob
            return not_registered("the job names a registered command but recorded no registration")
        own = plan_of(params)
        return Ready(own, resolve_program(own))  # one's own PATH, once per job and process
    plan = current_plan(params, recorded, job.account_id)
    if isinstance(plan, TaskResult):
        return plan
    # Exactly the recorded absolute path: no PATH lookup, nothing resolved anew.
    return Ready(plan, plan.program if is_executable_file(plan.program) else None)


class RunCommand(Operation):
    name = NAME

    def __init__(self, params: Mapping[str, Any], ctx: OperationContext) -> None:
        self.store: ObjectStore = ctx.store
        self.ready = job_setup(params, ctx.job)

    async def apply(self, task: Task) -> TaskResult:
        if isinstance(self.ready, TaskResult):
            return self.ready
        try:
            return await self._apply(self.ready, task)
        except TaskFailed as exc:
            return exc.result
        except StorageError as exc:
            return storage_failure(exc)
        except OSError as exc:  # the local disk: full, unwritable temporary directory
            return TaskResult.fail(
                "LocalIOError", f"{type(exc).__name__}: {exc}", LOCAL_FAULT_STATUS, retryable=True
            )

    async def _apply(self, ready: Ready, task: Task) -> TaskResult:
        plan = ready.plan
        if ready.program is None:
            where = f" on PATH {plan.path}" if plan.registered is None else ""
            raise TaskFailed("CommandNotFound", f"{plan.program!r} is not an executable file{where}")
        if plan.uses_key and _relative_parts(task.key) is None:
            raise TaskFailed(
                "UnusableKey",
                "the command uses {key}, and this key has an empty, '.' or '..' segment (or a "
                "leading or trailing '/'), which could lead a path out of its folder",
            )
        await self._check_size(task, plan.caps)
        slots = _slots()
        async with slots.staged:
            workdir = await asyncio.to_thread(Workdir.create)
            try:
                return await self._in(ready, workdir, task, slots)
            finally:
                workdir.remove()  # in place even when cancelled: nothing may stay behind

    async def _check_size(self, task: Task, caps: Caps) -> None:
        """Refuse an object larger than MaxInputBytes before a byte of it is staged."""
        size = (await self.store.head(task.bucket, task.key, task.version_id)).size
        if size > caps.max_input_bytes:
            raise TaskFailed(
                "InputTooLarge",
                f"the object is {size} bytes, more than MaxInputBytes ({caps.max_input_bytes} bytes); "
                "nothing ran",
            )

    async def _in(self, ready: Ready, workdir: Workdir, task: Task, slots: _Slots) -> TaskResult:
        plan = ready.plan
        prepared = self._prepare(ready, workdir, task)
        await self._stage(task, Path(prepared.values["input"]), plan.caps.max_input_bytes)
        watch = FolderWatch(workdir, plan.caps)
        async with slots.running:
            try:
                finished = await _subprocess.run(prepared.launch, watch)
            except OSError as exc:  # not executable, not a binary this system runs, E2BIG
                raise TaskFailed("CommandNotStarted", f"{ready.program}: {exc.strerror or exc}") from None
        failure = command_failure(plan, finished, watch.tripped)
        if failure is not None:
            return failure
        # What it wrote after the last look, scratch space included, before anything is uploaded.
        if await asyncio.to_thread(over_caps, workdir, plan.caps) == DISK_LIMIT_EXCEEDED:
            return disk_failure(plan.caps, "found when the command exited")
        outputs = await asyncio.to_thread(collect_outputs, plan, workdir.output_dir)
        for output in outputs.files:
            await self.store.put_file(
                plan.bucket, output.key, output.path, content_type=content_type(output.key)
            )
        return TaskResult.ok(success_message(outputs))

    def _prepare(self, ready: Ready, workdir: Workdir, task: Task) -> _Prepared:
        """The task's argv, environment and stdout file; the key's folders below {output_dir}."""
        plan = ready.plan
        input_path = workdir.input_dir / input_name(task.key.rpartition("/")[2])
        values = placeholder_values(task, input_path, workdir.output_dir)
        argv = [str(ready.program), *(render(t, values) for t in plan.args)]
        if any("\x00" in arg for arg in argv):
            raise TaskFailed("UnusableKey", "an argument would contain a NUL character (from the key)")
        try:
            stdout_path = _stdout_path(plan, workdir, values)
            if plan.uses_key:  # {output_dir}/{key}... then works without the command making folders
                (workdir.output_dir / task.key).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a segment longer than the file system allows, say
            raise TaskFailed("UnusableKey", f"cannot make a path of this key: {exc.strerror}") from None
        launch = _subprocess.Launch(
            argv=argv,
            cwd=workdir.root,
            env=clean_environment(plan, workdir),
            timeout_s=plan.timeout_s,
            tail_bytes=plan.tail_bytes,
            stdout_path=stdout_path,
            max_file_bytes=plan.caps.max_disk_bytes,
        )
        return _Prepared(launch, values)

    async def _stage(self, task: Task, path: Path, max_bytes: int) -> None:
        """Stream the object into `path` (created here, 0600, never through a symlink), at most
        `max_bytes` of it: an object that grew since its HEAD fails the task."""
        chunks = self.store.iter_bytes(task.bucket, task.key, task.version_id, chunk_size=READ_CHUNK_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    written += len(chunk)
                    if written > max_bytes:
                        raise TaskFailed(
                            "InputTooLarge",
                            f"the object grew past MaxInputBytes ({max_bytes} bytes) while it was "
                            "downloaded; nothing ran",
                        )
                    await asyncio.to_thread(out.write, chunk)
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()


def _stdout_path(plan: Plan, workdir: Workdir, values: Mapping[str, str]) -> Path | None:
    if plan.stdout_file is None:
        return None
    parts = _relative_parts(render(plan.stdout_file, values))
    if parts is None:
        raise TaskFailed("UnusableKey", "StdoutFile would name a path outside {output_dir} for this key")
    path = workdir.output_dir.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(object_actions=(GET,), bucket_actions=(), extra=target_needs),
    requests=requests,
    probe=NoProbe.PLAIN_DATA_PATH,
    batch_size=UNBATCHED,
    create=RunCommand,
)
