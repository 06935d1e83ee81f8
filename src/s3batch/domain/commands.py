"""S3batchRunCommand's rules that need no I/O: argument templates, environment names, resource
caps, and the commands an operator registers in server.toml for `s3batch serve`'s callers.

    [[commands]]
    account_id = "*"                     # or a 12-digit account, like [[functions]]
    name = "thumbnail"                   # what a job's CommandName names
    argv = ["/usr/bin/convert", "{input}", "-thumbnail", "128x128", "{output_dir}/{key}.jpg"]
    environment = { LANG = "C.UTF-8" }   # optional, fixed by the operator
    max_input_bytes = 104857600          # optional caps (defaults below)
    max_output_bytes = 10485760
    max_disk_bytes = 314572800
    timeout_seconds = 120

A caller of the server names a registration and adds nothing that changes what runs: no
argument, no environment, no PATH (docs/run-command.md#over-s3batch-serve). The job records the
registration as it was at CreateJob (`JobCommand`) and runs it only while server.toml still
registers exactly that.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from s3batch.errors import BadRequest, ConfigError, InvalidRequest

NAME = "S3batchRunCommand"

# -- limits and defaults ---------------------------------------------------------------------------

#: PATH of the command when no environment names one: system directories only.
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: Seconds a command may run by default, and the most anyone may allow.
DEFAULT_TIMEOUT_S = 300
MAX_TIMEOUT_S = 24 * 3600
#: Bytes of an input object by default (1 GiB), and the most anyone may allow (5 TiB, S3's
#: largest object).
DEFAULT_MAX_INPUT_BYTES = 1 << 30
MAX_INPUT_BYTES_LIMIT = 5 << 40
#: Bytes of output (all files below {output_dir}) per task by default (1 GiB), and the most
#: anyone may allow (5 TiB).
DEFAULT_MAX_OUTPUT_BYTES = 1 << 30
MAX_OUTPUT_BYTES_LIMIT = 5 << 40
#: Bytes of scratch space (tmp/, the task's HOME, anything besides input and output) granted
#: on top of the input and output caps when no disk cap is given: 1 GiB.
DEFAULT_SCRATCH_BYTES = 1 << 30
#: The most a task's whole folder may be allowed to hold: 16 TiB.
MAX_DISK_BYTES_LIMIT = 16 << 40
#: Arguments per command, characters per argument (templates and rendered).
MAX_ARGS = 1000
MAX_ARG_CHARS = 32 * 1024
#: Environment entries and characters per value.
MAX_ENV_VARS = 100
MAX_ENV_VALUE_CHARS = 32 * 1024

#: Placeholders of an argument (docs/run-command.md#placeholders).
PLACEHOLDERS = ("input", "output_dir", "key", "basename", "stem", "extension", "bucket", "version_id")
#: Placeholders of StdoutFile: it names a path inside {output_dir} already.
STDOUT_PLACEHOLDERS = ("key", "basename", "stem", "extension", "bucket", "version_id")

# -- environment -----------------------------------------------------------------------------------

#: Environment names the worker sets itself (to the task's folder).
RESERVED_ENV = frozenset({"HOME", "TMPDIR"})
#: Variables that make the dynamic loader, a shell or an interpreter run code or load modules
#: named by the variable's value. A caller's `Environment` may not set them: a defense in depth
#: on one's own machine (the list cannot be complete), and moot over `s3batch serve`, whose
#: callers set no environment at all. An operator's registration may set them (it is trusted,
#: e.g. MAGICK_CONFIGURE_PATH pointing ImageMagick at a hardened policy.xml).
HOOK_ENV_NAMES = frozenset(
    {
        # shells: startup files, options and prompts that run code (PS4 under xtrace)
        "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS1", "PS2", "PS3", "PS4", "PROMPT_COMMAND",
        "IFS", "CDPATH", "GLOBIGNORE", "BASH_XTRACEFD", "BASH_LOADABLES_PATH", "ZDOTDIR",
        "INPUTRC", "SHELL",
        # programs other tools start by name
        "EDITOR", "VISUAL", "PAGER", "MANPAGER", "BROWSER", "LESSOPEN", "LESSCLOSE",
        "SSH_ASKPASS", "SUDO_ASKPASS",
        # Python
        "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONWARNINGS",
        "PYTHONBREAKPOINT", "PYTHONINSPECT", "PYTHONPYCACHEPREFIX", "PYTHONPLATLIBDIR",
        "PYTHONEXECUTABLE",
        # other interpreters and runtimes
        "CLASSPATH", "PHPRC", "PHP_INI_SCAN_DIR", "TCLLIBPATH", "GS_LIB", "GS_OPTIONS",
        "R_PROFILE", "R_PROFILE_USER", "R_ENVIRON", "R_ENVIRON_USER", "R_LIBS", "R_LIBS_USER",
        "R_LIBS_SITE",
        # libraries that load modules or read configuration able to run commands
        "OPENSSL_CONF", "OPENSSL_ENGINES", "OPENSSL_MODULES", "NODE_OPTIONS", "NODE_PATH",
        "NODE_REPL_EXTERNAL_MODULE", "GIO_MODULE_DIR", "GIO_EXTRA_MODULES", "GTK_PATH", "GTK_MODULES",
        "GTK_IM_MODULE_FILE", "QT_PLUGIN_PATH", "QT_QPA_PLATFORM_PLUGIN_PATH",
        "XDG_CONFIG_HOME", "XDG_CONFIG_DIRS", "XDG_DATA_HOME", "XDG_DATA_DIRS",
    }
)  # fmt: skip
#: Prefixes of such variables: whole families are hooks (GIT_SSH_COMMAND, MAGICK_CODER_MODULE_PATH,
#: GLIBC_TUNABLES, PERL5OPT, RUBYOPT, LUA_INIT, JAVA_TOOL_OPTIONS, GCONV_PATH, ...).
HOOK_ENV_PREFIXES = (
    "LD_", "DYLD_", "GLIBC_", "GCONV_", "BASH_FUNC_", "PERL", "RUBY", "LUA_", "JAVA_", "_JAVA_",
    "JDK_", "GIT_", "MAGICK_", "GST_PLUGIN", "GDK_PIXBUF_",
)  # fmt: skip
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_hook_variable(name: str) -> bool:
    """Whether `name` is on the loader/interpreter-hook denylist."""
    return name in HOOK_ENV_NAMES or name.startswith(HOOK_ENV_PREFIXES)


def check_environment(value: Any, where: str, *, hooks: bool) -> tuple[tuple[str, str], ...]:
    """A table of variables, checked: names, values, no HOME/TMPDIR, PATH of absolute folders
    only, and (unless `hooks`) no hook variable. Raises BadRequest naming `where`."""
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
        if not hooks and is_hook_variable(name):
            raise BadRequest(
                f"{where}.{name}: a loader or interpreter hook, which s3batch does not pass to "
                "commands (docs/run-command.md#what-the-command-sees); set it inside a script "
                "you run instead"
            )
        if not isinstance(val, str) or "\x00" in val or len(val) > MAX_ENV_VALUE_CHARS:
            raise BadRequest(
                f"{where}.{name} must be a string without NUL of at most {MAX_ENV_VALUE_CHARS} characters"
            )
    path = value.get("PATH")
    if path is not None and not all(part.startswith("/") for part in path.split(":")):
        raise BadRequest(f"{where}.PATH {path!r}: every directory must be an absolute path")
    return tuple((str(k), str(v)) for k, v in value.items())


# -- argument templates ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """A placeholder inside an argument template."""

    name: str


#: An argument: literal text and placeholders, in order.
Template = tuple[str | Field, ...]
_FORMATTER = string.Formatter()


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


def parse_argv(value: Any, where: str) -> tuple[str, tuple[Template, ...]]:
    """(the executable as written, the argument templates) of an argument list whose first
    element is an executable's bare name or absolute path. Raises BadRequest naming `where`."""
    if not isinstance(value, list | tuple) or not value:
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


# -- resource caps ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Caps:
    """What one task may use: the command's deadline and the bytes of its input, its output and
    its whole folder (input, output, tmp/, anything the command writes there)."""

    timeout_s: int = DEFAULT_TIMEOUT_S
    max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    max_output_bytes: int = DEFAULT_MAX_OUTPUT_BYTES
    max_disk_bytes: int = DEFAULT_MAX_INPUT_BYTES + DEFAULT_MAX_OUTPUT_BYTES + DEFAULT_SCRATCH_BYTES

    def within(self, ceiling: Caps) -> Caps:
        """Each cap, lowered to `ceiling`'s where that is lower."""
        return Caps(
            timeout_s=min(self.timeout_s, ceiling.timeout_s),
            max_input_bytes=min(self.max_input_bytes, ceiling.max_input_bytes),
            max_output_bytes=min(self.max_output_bytes, ceiling.max_output_bytes),
            max_disk_bytes=min(self.max_disk_bytes, ceiling.max_disk_bytes),
        )


@dataclass(frozen=True, slots=True)
class CapField:
    """One cap as a job parameter and a server.toml field, with its range."""

    parameter: str
    setting: str
    attribute: str
    low: int
    high: int


CAP_FIELDS = (
    CapField("TimeoutSeconds", "timeout_seconds", "timeout_s", 1, MAX_TIMEOUT_S),
    CapField("MaxInputBytes", "max_input_bytes", "max_input_bytes", 0, MAX_INPUT_BYTES_LIMIT),
    CapField("MaxOutputBytes", "max_output_bytes", "max_output_bytes", 0, MAX_OUTPUT_BYTES_LIMIT),
    CapField("MaxDiskBytes", "max_disk_bytes", "max_disk_bytes", 0, MAX_DISK_BYTES_LIMIT),
)


def whole_number(value: Any, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{where} must be a whole number from {low} to {high}; got {value!r}")
    return value


def caps_of(given: Mapping[str, Any], names: str, where: str, ceiling: Caps | None = None) -> Caps:
    """Caps from `given`, keyed by each CapField's `names` ("parameter" or "setting").

    Without a `ceiling` a missing cap takes its default (the disk cap: input + output +
    DEFAULT_SCRATCH_BYTES) and a value outside its range is a BadRequest. With one (a
    registration's), a missing cap is the ceiling's and a higher one an InvalidRequest: a
    server's caller may lower what its operator allows, never raise it."""
    values: dict[str, int] = {}
    for cap in CAP_FIELDS:
        key = getattr(cap, names)
        if key not in given:
            continue
        values[cap.attribute] = whole_number(given[key], f"{where}{key}", cap.low, cap.high)
        if ceiling is not None and values[cap.attribute] > getattr(ceiling, cap.attribute):
            raise InvalidRequest(
                f"{where}{key} {values[cap.attribute]} is more than this server allows for the "
                f"command ({getattr(ceiling, cap.attribute)})"
            )
    if ceiling is not None:
        return Caps(**{**_as_dict(ceiling), **values})
    values.setdefault("timeout_s", DEFAULT_TIMEOUT_S)
    values.setdefault("max_input_bytes", DEFAULT_MAX_INPUT_BYTES)
    values.setdefault("max_output_bytes", DEFAULT_MAX_OUTPUT_BYTES)
    values.setdefault(
        "max_disk_bytes", values["max_input_bytes"] + values["max_output_bytes"] + DEFAULT_SCRATCH_BYTES
    )
    return Caps(**values)


def _as_dict(caps: Caps) -> dict[str, int]:
    return {cap.attribute: getattr(caps, cap.attribute) for cap in CAP_FIELDS}


# -- registrations ---------------------------------------------------------------------------------

#: `[[commands]]`: the commands a server's callers may run.
COMMANDS_TABLE = "commands"
#: `account_id` of a registration every account may use.
ANY_ACCOUNT = "*"
#: A registration's name: what a job's CommandName says.
MAX_COMMAND_NAME_CHARS = 64
COMMAND_NAME = re.compile(rf"[a-zA-Z0-9_-]{{1,{MAX_COMMAND_NAME_CHARS}}}")
_ACCOUNT_ID = re.compile(r"\d{12}")
_REGISTRATION_FIELDS = frozenset({"account_id", "name", "argv", "environment"}) | {
    cap.setting for cap in CAP_FIELDS
}


@dataclass(frozen=True, slots=True)
class RegisteredCommand:
    """One `[[commands]]` entry: exactly what runs for a job that names it."""

    account_id: str
    name: str
    #: The executable (an absolute path, exec'd as it is: no PATH lookup) and the argument
    #: templates, as written.
    argv: tuple[str, ...]
    environment: tuple[tuple[str, str], ...] = ()
    caps: Caps = field(default_factory=Caps)

    @property
    def program(self) -> str:
        return self.argv[0]

    def runs_as(self, other: RegisteredCommand) -> bool:
        """Whether `other` runs the same thing: executable, arguments and environment."""
        return (self.argv, self.environment) == (other.argv, other.environment)

    def as_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "name": self.name,
            "argv": list(self.argv),
            "environment": dict(self.environment),
            "caps": _as_dict(self.caps),
        }

    @classmethod
    def parse(cls, recorded: Mapping[str, Any]) -> RegisteredCommand:
        return cls(
            account_id=recorded["account_id"],
            name=recorded["name"],
            argv=tuple(recorded["argv"]),
            environment=tuple(recorded.get("environment", {}).items()),
            caps=Caps(**recorded["caps"]),
        )


@dataclass(frozen=True, slots=True)
class JobCommand:
    """What a job created by a server's caller runs, recorded at CreateJob: the registration as
    it was then, and the server.toml to check it against again when the job runs."""

    registration: RegisteredCommand
    #: Absolute path of the server.toml the registration came from.
    config: str

    def as_json(self) -> dict[str, Any]:
        return {"registration": self.registration.as_json(), "config": self.config}

    @classmethod
    def parse(cls, recorded: Mapping[str, Any]) -> JobCommand:
        return cls(RegisteredCommand.parse(recorded["registration"]), recorded["config"])


@dataclass(frozen=True, slots=True)
class ServerCommands:
    """A server's registrations: account id (or ANY_ACCOUNT) → name → registration."""

    by_account: Mapping[str, Mapping[str, RegisteredCommand]] = field(default_factory=dict)

    def for_account(self, account_id: str) -> Mapping[str, RegisteredCommand]:
        """The commands `account_id` may name; its own registration of a name wins over "*"'s."""
        return {**self.by_account.get(ANY_ACCOUNT, {}), **self.by_account.get(account_id, {})}


def parse_server_commands(entries: Any, where: str) -> ServerCommands:
    """server.toml's `[[commands]]` array. Raises ConfigError naming the entry and the field."""
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: must be an array of tables ([[{COMMANDS_TABLE}]])")
    by_account: dict[str, dict[str, RegisteredCommand]] = {}
    for n, entry in enumerate(entries, 1):
        command = registered_command(entry, f"{where} #{n}")
        names = by_account.setdefault(command.account_id, {})
        if command.name in names:
            raise ConfigError(
                f"{where} #{n}: command {command.name!r} is registered twice for account {command.account_id}"
            )
        names[command.name] = command
    return ServerCommands(by_account)


def registered_command(entry: Any, where: str) -> RegisteredCommand:
    """One `[[commands]]` table. Raises ConfigError."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(entry) - _REGISTRATION_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    account, name = entry.get("account_id"), entry.get("name")
    if not (isinstance(account, str) and (account == ANY_ACCOUNT or _ACCOUNT_ID.fullmatch(account))):
        raise ConfigError(f'{where}: account_id must be 12 digits or "{ANY_ACCOUNT}"')
    if not (isinstance(name, str) and COMMAND_NAME.fullmatch(name)):
        raise ConfigError(f"{where}: name must be 1-{MAX_COMMAND_NAME_CHARS} letters, digits, '-' or '_'")
    try:
        program, _ = parse_argv(entry.get("argv"), f"{where}: argv")
        environment = check_environment(entry.get("environment"), f"{where}: environment", hooks=True)
        caps = caps_of(entry, "setting", f"{where}: ")
    except BadRequest as exc:
        raise ConfigError(str(exc)) from None
    if not program.startswith("/"):
        raise ConfigError(
            f"{where}: argv[0] {program!r} must be an absolute path (a server looks up no PATH)"
        )
    return RegisteredCommand(account, name, tuple(entry["argv"]), environment, caps)
