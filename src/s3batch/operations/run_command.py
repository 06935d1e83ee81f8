"""S3batchRunCommand (s3batch extension): run an executable on each object, upload what it wrote.

AWS would send such work to AWS Batch or a container; here each task is (docs/run-command.md):

1. the object is streamed (`ObjectStore.iter_bytes`) into `input/` of a private temporary
   folder (mode 0700, `TEMP_DIR_PREFIX*` under the worker's temporary directory), named after
   the key's last segment so tools that go by the extension still can;
2. `Command` runs there: an argv list (never a shell), each argument a template whose
   placeholders ({input} {output_dir} {key} {basename} {stem} {extension} {bucket}
   {version_id}) are filled in per task; in its own process group, in a clean environment
   (PATH, HOME, TMPDIR and `Environment`, nothing of the worker's), with a deadline, its stderr
   tail kept (operations/_subprocess.py);
3. every regular file the command left below `output/` (symbolic links are not followed or
   uploaded) goes to `TargetResource` under `TargetKeyPrefix` + its path relative to `output/`;
4. the folder is removed, whatever happened.

Commands run at most MAX_RUNNING_COMMANDS at a time per worker process (the CPUs: a command is
CPU work), and at most STAGED_PER_RUNNING times that many tasks hold a folder at once
(downloading, waiting for a CPU, running or uploading), which bounds the disk a job uses. Both
are apart from the job's storage concurrency.

Per-object problems are failed tasks (HTTP status 400, the command's or the object's fault):
`CommandFailed` ("ExitCode N: <stderr tail>"), `CommandTimedOut`, `OutputTooLarge`,
`TooManyOutputFiles`, `InvalidOutputName`, `UnreadableOutput`, `UnusableKey`, `CommandNotFound`,
`CommandNotStarted`; a local disk problem is `LocalIOError` (500, retryable); storage errors
keep their own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import mimetypes
import os
import re
import shutil
import signal
import string
import tempfile
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from s3batch.domain import pricing
from s3batch.domain.arn import bucket_from_arn
from s3batch.domain.roles import Need
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import BadRequest, InvalidRequest, StorageError
from s3batch.operations import _subprocess
from s3batch.operations._params import reject_unknown
from s3batch.operations.actions import GET, Permissions
from s3batch.operations.base import (
    UNBATCHED,
    NoProbe,
    Operation,
    OperationContext,
    OperationKind,
    storage_failure,
)
from s3batch.storage.base import ObjectStore

NAME = "S3batchRunCommand"

# -- limits and defaults ---------------------------------------------------------------------------

#: PATH of the command when `Environment` names none: system directories only.
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: Seconds a command may run when `TimeoutSeconds` is not given, and the most it may ask for.
DEFAULT_TIMEOUT_S = 300
MAX_TIMEOUT_S = 24 * 3600
#: Bytes of output (all files below {output_dir}) per task by default: 1 GiB.
DEFAULT_MAX_OUTPUT_BYTES = 1 << 30
#: The most `MaxOutputBytes` may be: 5 TiB, S3's largest object.
MAX_OUTPUT_BYTES_LIMIT = 5 << 40
#: Files a task may upload; more fails the task (a runaway command cannot flood the bucket).
MAX_OUTPUT_FILES = 10_000
#: Bytes of stderr kept for the report by default, and the most that may be asked for.
DEFAULT_STDERR_TAIL_BYTES = 1024
MAX_STDERR_TAIL_BYTES = 8192
#: Arguments per command, characters per argument (templates and rendered).
MAX_ARGS = 1000
MAX_ARG_CHARS = 32 * 1024
#: Environment entries and characters per value.
MAX_ENV_VARS = 100
MAX_ENV_VALUE_CHARS = 32 * 1024
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
#: HTTP status of a failure the command or the object causes; of a local disk failure.
COMMAND_FAULT_STATUS = 400
LOCAL_FAULT_STATUS = 500

#: Environment names the worker sets itself (to the task's folder).
RESERVED_ENV = frozenset({"HOME", "TMPDIR"})
#: Environment names a server caller may not set: they make the dynamic loader run code of
#: their choosing inside an allowed executable.
LOADER_ENV_PREFIXES = ("LD_", "DYLD_")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Placeholder → what it stands for (docs/run-command.md).
PLACEHOLDERS = ("input", "output_dir", "key", "basename", "stem", "extension", "bucket", "version_id")
#: Placeholders of StdoutFile: it names a path inside {output_dir} already.
STDOUT_PLACEHOLDERS = ("key", "basename", "stem", "extension", "bucket", "version_id")

_KNOWN = {
    "Command",
    "TargetResource",
    "TargetKeyPrefix",
    "StdoutFile",
    "TimeoutSeconds",
    "MaxOutputBytes",
    "MaxStderrTailBytes",
    "Environment",
}
_FORMATTER = string.Formatter()


# -- parameters -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """A placeholder inside an argument template."""

    name: str


#: An argument: literal text and placeholders, in order.
Template = tuple[str | Field, ...]


def parse_template(where: str, text: Any, allowed: Sequence[str]) -> Template:
    """`text` as literal pieces and placeholders, with str.format's syntax ({{ and }} are
    literal braces) but nothing else of it: no positional fields, attributes, indexes,
    conversions or format specs. Raises BadRequest naming `where`."""
    if not isinstance(text, str):
        raise BadRequest(f"{where} must be a string")
    if len(text) > MAX_ARG_CHARS:
        raise BadRequest(f"{where} is longer than {MAX_ARG_CHARS} characters")
    if "\x00" in text:
        raise BadRequest(f"{where} contains a NUL character")
    try:
        parsed = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise BadRequest(f"{where}: {exc} in {text!r}; write {{{{ and }}}} for literal braces") from None
    pieces: list[str | Field] = []
    for literal, name, spec, conversion in parsed:
        if literal and pieces and isinstance(pieces[-1], str):
            pieces[-1] += literal  # the parser splits literal text at each escaped brace
        elif literal:
            pieces.append(literal)
        if name is None:
            continue
        if spec or conversion or name not in allowed:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise BadRequest(
                f"{where}: unknown placeholder {shown} in {text!r}; known: "
                + ", ".join("{" + p + "}" for p in allowed)
                + "; write {{ and }} for literal braces"
            )
        pieces.append(Field(name))
    return tuple(pieces)


def render(template: Template, values: Mapping[str, str]) -> str:
    return "".join(values[p.name] if isinstance(p, Field) else p for p in template)


def _uses(templates: Sequence[Template], name: str) -> bool:
    return any(isinstance(p, Field) and p.name == name for t in templates for p in t)


@dataclass(frozen=True, slots=True)
class Plan:
    """The checked parameters of one job."""

    #: Command[0], as given: a bare name (looked up on PATH) or an absolute path.
    program: str
    args: tuple[Template, ...]
    bucket: str
    prefix: str
    stdout_file: Template | None
    timeout_s: int
    max_output_bytes: int
    tail_bytes: int
    #: `Environment`, in the order given.
    environment: tuple[tuple[str, str], ...]

    @property
    def path(self) -> str:
        """The command's PATH: Environment's, else DEFAULT_PATH."""
        return dict(self.environment).get("PATH", DEFAULT_PATH)

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


def plan_of(params: Mapping[str, Any]) -> Plan:
    """The parameters, checked. Raises BadRequest naming the field."""
    reject_unknown(NAME, params, _KNOWN)
    program, args = _command(params.get("Command"))
    target = params.get("TargetResource")
    if not isinstance(target, str):
        raise BadRequest(f"{NAME}.TargetResource (a bucket ARN) is required")
    prefix = params.get("TargetKeyPrefix") or ""
    if not isinstance(prefix, str) or len(prefix) > MAX_KEY_BYTES:
        raise BadRequest(f"{NAME}.TargetKeyPrefix must be a string of at most {MAX_KEY_BYTES} characters")
    return Plan(
        program=program,
        args=args,
        bucket=bucket_from_arn(target, f"{NAME}.TargetResource"),
        prefix=prefix,
        stdout_file=_stdout_file(params.get("StdoutFile")),
        timeout_s=_integer(params, "TimeoutSeconds", DEFAULT_TIMEOUT_S, 1, MAX_TIMEOUT_S),
        max_output_bytes=_integer(
            params, "MaxOutputBytes", DEFAULT_MAX_OUTPUT_BYTES, 0, MAX_OUTPUT_BYTES_LIMIT
        ),
        tail_bytes=_integer(
            params, "MaxStderrTailBytes", DEFAULT_STDERR_TAIL_BYTES, 0, MAX_STDERR_TAIL_BYTES
        ),
        environment=_environment(params.get("Environment")),
    )


def validate(params: Mapping[str, Any]) -> None:
    plan_of(params)


def _command(value: Any) -> tuple[str, tuple[Template, ...]]:
    where = f"{NAME}.Command"
    if not isinstance(value, list) or not value:
        raise BadRequest(f"{where} (a non-empty list of arguments, the executable first) is required")
    if len(value) > MAX_ARGS:
        raise BadRequest(f"{where} has more than {MAX_ARGS} arguments")
    templates = tuple(parse_template(f"{where}[{i}]", arg, PLACEHOLDERS) for i, arg in enumerate(value))
    program = value[0]
    # The executable is fixed per job: a placeholder there would run whatever a key names.
    if templates[0] != (program,) or not program:
        raise BadRequest(f"{where}[0] must be an executable's name or absolute path, without placeholders")
    if "/" in program and not program.startswith("/"):
        raise BadRequest(f"{where}[0] {program!r}: give a bare name (looked up on PATH) or an absolute path")
    return program, templates[1:]


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


def _integer(params: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{NAME}.{name} must be a whole number from {low} to {high}; got {value!r}")
    return value


def _environment(value: Any) -> tuple[tuple[str, str], ...]:
    where = f"{NAME}.Environment"
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise BadRequest(f"{where} must map variable names to string values")
    if len(value) > MAX_ENV_VARS:
        raise BadRequest(f"{where} has more than {MAX_ENV_VARS} variables")
    for name, val in value.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise BadRequest(f"{where}: {name!r} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)")
        if name in RESERVED_ENV:
            raise BadRequest(f"{where}.{name}: set by s3batch to the task's private folder")
        if not isinstance(val, str) or "\x00" in val or len(val) > MAX_ENV_VALUE_CHARS:
            raise BadRequest(
                f"{where}.{name} must be a string without NUL of at most {MAX_ENV_VALUE_CHARS} characters"
            )
    path = value.get("PATH")
    if path is not None and not all(part.startswith("/") for part in path.split(":")):
        raise BadRequest(f"{where}.PATH {path!r}: every directory must be an absolute path")
    return tuple((str(k), str(v)) for k, v in value.items())


def _relative_parts(path: str) -> tuple[str, ...] | None:
    """The segments of a relative path that stays where it starts, or None ('..', '.', an
    empty segment or a leading '/')."""
    parts = tuple(path.split("/"))
    if any(part in ("", ".", "..") for part in parts):
        return None
    return parts


# -- what a server caller may run ------------------------------------------------------------------


def resolve_program(plan: Plan) -> str | None:
    """The absolute path Command[0] stands for in the command's clean environment, or None."""
    return shutil.which(plan.program, path=plan.path)


def allowed_programs(entries: Sequence[str]) -> frozenset[str]:
    """An operator's allow-list as absolute paths: absolute entries as written, bare names as
    found on DEFAULT_PATH now (a name not installed allows nothing)."""
    found = (entry if entry.startswith("/") else shutil.which(entry, path=DEFAULT_PATH) for entry in entries)
    return frozenset(path for path in found if path)


def check_allowed(params: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """For a job created by a server's caller (docs/run-command.md#security): Command[0] must
    resolve, in the command's own environment, to exactly one of the operator's `allowed`
    executables, and Environment may not steer the dynamic loader. Raises InvalidRequest; the
    same answer whether the executable is missing or not allowed."""
    plan = plan_of(params)
    loader = sorted(name for name, _ in plan.environment if name.startswith(LOADER_ENV_PREFIXES))
    if loader:
        raise InvalidRequest(f"{NAME}.Environment: this server does not let jobs set {', '.join(loader)}")
    if resolve_program(plan) not in allowed_programs(allowed):
        raise InvalidRequest(
            f"{NAME}.Command[0] {plan.program!r} is not an executable this server runs; its operator "
            "allows executables with allow_commands in [server] of server.toml"
        )


def target_needs(params: Mapping[str, Any], bucket: str, versioned: bool) -> tuple[Need, ...]:
    """s3:PutObject on TargetResource (nothing when absent: the request is refused anyway)."""
    target = params.get("TargetResource")
    if not isinstance(target, str):
        return ()
    return (Need("s3:PutObject", bucket_from_arn(target, "TargetResource")),)


def requests(params: Mapping[str, Any], tasks: int, buckets: int) -> dict[str, int]:
    """One GET per object and, as an estimate, one PUT (one output file) per object."""
    return {pricing.GET: tasks, pricing.PUT: tasks}


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


def _walk(folder: Path, unreadable: Callable[[str, OSError], None]) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """(path relative to `folder`, entry) of everything below it; symlinks are yielded, never
    followed, so nothing outside `folder` is reached. A folder that cannot be listed goes to
    `unreadable` (relative path, error)."""
    pending: list[tuple[str, Path]] = [("", folder)]
    while pending:
        prefix, current = pending.pop()
        try:
            with os.scandir(current) as entries:
                listed = list(entries)
        except OSError as exc:
            unreadable(prefix or ".", exc)
            continue
        for entry in listed:
            relative = prefix + entry.name
            if entry.is_dir(follow_symlinks=False):
                pending.append((relative + "/", Path(entry.path)))
            else:
                yield relative, entry


def _ignore(relative: str, exc: OSError) -> None:
    """The watch runs while the command changes its folder: what vanished meanwhile is skipped."""


def _refuse(relative: str, exc: OSError) -> None:
    raise TaskFailed("UnreadableOutput", f"cannot read output folder {relative!r}: {exc.strerror}")


def over_limits(folder: Path, max_bytes: int) -> bool:
    """Whether `folder` holds more than `max_bytes` in regular files or more than
    MAX_OUTPUT_FILES files (stops counting as soon as it does). Runs beside the command."""
    total = files = 0
    for _, entry in _walk(folder, _ignore):
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
                files += 1
        if total > max_bytes or files > MAX_OUTPUT_FILES:
            return True
    return False


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
                "OutputTooLarge",
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


def command_failure(plan: Plan, finished: _subprocess.Finished) -> TaskResult | None:
    """The failed result of a run that did not exit 0 (None when it did)."""
    said = _text(finished.stderr_tail) or _text(finished.stdout_tail)
    if finished.ending is _subprocess.Ending.TIMED_OUT:
        message = f"no exit within TimeoutSeconds ({plan.timeout_s} s); its process group was killed"
        return TaskResult.fail(
            "CommandTimedOut", f"{message}: {said}" if said else message, COMMAND_FAULT_STATUS
        )
    if finished.ending is _subprocess.Ending.STOPPED_BY_WATCH:
        message = (
            f"the command wrote more than MaxOutputBytes ({plan.max_output_bytes} bytes) or "
            f"{MAX_OUTPUT_FILES} files and was stopped; nothing was uploaded"
        )
        return TaskResult.fail("OutputTooLarge", message, COMMAND_FAULT_STATUS)
    code = finished.returncode
    if code == 0:
        return None
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


class RunCommand(Operation):
    name = NAME

    def __init__(self, params: Mapping[str, Any], ctx: OperationContext) -> None:
        self.plan = plan_of(params)
        self.store: ObjectStore = ctx.store
        # Resolved once per job and process, in the command's own environment.
        self.program = resolve_program(self.plan)

    async def apply(self, task: Task) -> TaskResult:
        try:
            return await self._apply(task)
        except TaskFailed as exc:
            return exc.result
        except StorageError as exc:
            return storage_failure(exc)
        except OSError as exc:  # the local disk: full, unwritable temporary directory
            return TaskResult.fail(
                "LocalIOError", f"{type(exc).__name__}: {exc}", LOCAL_FAULT_STATUS, retryable=True
            )

    async def _apply(self, task: Task) -> TaskResult:
        if self.program is None:
            raise TaskFailed(
                "CommandNotFound", f"{self.plan.program!r} is not an executable file on PATH {self.plan.path}"
            )
        if self.plan.uses_key and _relative_parts(task.key) is None:
            raise TaskFailed(
                "UnusableKey",
                "the command uses {key}, and this key has an empty, '.' or '..' segment (or a "
                "leading or trailing '/'), which could lead a path out of its folder",
            )
        slots = _slots()
        async with slots.staged:
            workdir = await asyncio.to_thread(Workdir.create)
            try:
                return await self._in(workdir, task, slots)
            finally:
                workdir.remove()  # in place even when cancelled: nothing may stay behind

    async def _in(self, workdir: Workdir, task: Task, slots: _Slots) -> TaskResult:
        prepared = self._prepare(workdir, task)
        await self._stage(task, Path(prepared.values["input"]))
        async with slots.running:
            try:
                finished = await _subprocess.run(
                    prepared.launch, partial(over_limits, workdir.output_dir, self.plan.max_output_bytes)
                )
            except OSError as exc:  # not executable, not a binary this system runs, E2BIG
                raise TaskFailed("CommandNotStarted", f"{self.program}: {exc.strerror or exc}") from None
        failure = command_failure(self.plan, finished)
        if failure is not None:
            return failure
        outputs = await asyncio.to_thread(collect_outputs, self.plan, workdir.output_dir)
        for output in outputs.files:
            await self.store.put_file(
                self.plan.bucket, output.key, output.path, content_type=content_type(output.key)
            )
        return TaskResult.ok(success_message(outputs))

    def _prepare(self, workdir: Workdir, task: Task) -> _Prepared:
        """The task's argv, environment and stdout file; the key's folders below {output_dir}."""
        plan = self.plan
        input_path = workdir.input_dir / input_name(task.key.rpartition("/")[2])
        values = placeholder_values(task, input_path, workdir.output_dir)
        argv = [str(self.program), *(render(t, values) for t in plan.args)]
        if any("\x00" in arg for arg in argv):
            raise TaskFailed("UnusableKey", "an argument would contain a NUL character (from the key)")
        try:
            stdout_path = self._stdout_path(workdir, values)
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
        )
        return _Prepared(launch, values)

    def _stdout_path(self, workdir: Workdir, values: Mapping[str, str]) -> Path | None:
        if self.plan.stdout_file is None:
            return None
        parts = _relative_parts(render(self.plan.stdout_file, values))
        if parts is None:
            raise TaskFailed("UnusableKey", "StdoutFile would name a path outside {output_dir} for this key")
        path = workdir.output_dir.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    async def _stage(self, task: Task, path: Path) -> None:
        """Stream the object into `path` (created here, 0600, never through a symlink)."""
        chunks = self.store.iter_bytes(task.bucket, task.key, task.version_id, chunk_size=READ_CHUNK_BYTES)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    await asyncio.to_thread(out.write, chunk)
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()


KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(object_actions=(GET,), bucket_actions=(), extra=target_needs),
    requests=requests,
    probe=NoProbe.PLAIN_DATA_PATH,
    batch_size=UNBATCHED,
    create=RunCommand,
)
