"""FunctionArn → the Python handler that plays that Lambda function.

A LambdaInvoke job names its function the AWS way. Locally the function's NAME is looked up
in a registry (NAME → "module:callable"), filled from `S3BATCH_HOME/functions.toml`:

    [functions]
    thumbnailer = "my_project.handlers:lambda_handler"

and from `--function NAME=module:callable` on the command line. `python:module:callable`
names a handler directly, with no registry. Built-in functions (`BUILTIN_FUNCTIONS`) are
always known; a registry entry of the same name overrides one.

Resolution happens when the job is created and only checks syntax: the job may run on
another machine, so whether the module imports is found out by the first invocation.

All of the above is for one's own machine. A server resolves with a `FunctionScope` per caller
instead (`ServerFunctions.for_account`): only the functions its operator registered for that
account (and the built-ins) can run, `python:` ARNs only where the operator allows them, and
handlers import from the operator's `function_path`, never from the server's working directory
(see "Security of `s3batch serve`" in docs/compatibility.md).
"""

from __future__ import annotations

import keyword
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from s3batch.domain.arn import parse_lambda_arn
from s3batch.domain.commands import RegisteredCommand, ServerCommands
from s3batch.domain.function import FunctionSpec
from s3batch.domain.stores import StorageConfig
from s3batch.errors import BadRequest, ConfigError, InvalidRequest
from s3batch.settings import SERVER_FILE

#: Functions that ship with s3batch, by Lambda function name.
BUILTIN_FUNCTIONS: Mapping[str, str] = {
    "s3batch-sentiment": "s3batch.functions.builtin.sentiment:handler",
    "s3batch-language": "s3batch.functions.builtin.language:handler",
    "s3batch-pii": "s3batch.functions.builtin.pii:handler",
    "s3batch-profile-csv": "s3batch.functions.builtin.profile_csv:handler",
    "s3batch-embed-text": "s3batch.functions.builtin.embed_text:handler",
    "s3batch-embed-image": "s3batch.functions.builtin.embed_image:handler",
    "s3batch-ocr": "s3batch.functions.builtin.ocr:handler",
}
_BUILTIN_HANDLERS = frozenset(BUILTIN_FUNCTIONS.values())
_NAME_OF = {handler: name for name, handler in BUILTIN_FUNCTIONS.items()}
#: Built-ins whose whole answer is resultData (a vector): a job without a ResultsSink would
#: throw every result away, so it is refused when created.
BUILTINS_NEEDING_A_SINK = frozenset({"s3batch-embed-text", "s3batch-embed-image"})
#: Built-ins that run inline, in the engine's own process (functions/inline.py), rather than in
#: function worker processes: each object costs them a fraction of a millisecond, less than
#: shipping it to a worker and back, their code is pure and thread-safe (no state shared between
#: calls, no environment read per call), and their work runs outside the GIL (lingua's detector
#: is Rust), so the engine's threads use every core. Named as `python:module:callable` they run
#: in worker processes like any handler.
INLINE_BUILTINS = frozenset({"s3batch-language"})
#: Cheap built-ins that are pure Python: in threads they would share one core (the GIL) with the
#: engine's own per-task work, so they run in worker processes (kept warm between jobs) when the
#: job may use more than one, and inline only when it may use one (no pipe, no process start).
PURE_PYTHON_BUILTINS = frozenset({"s3batch-sentiment", "s3batch-pii", "s3batch-profile-csv"})
#: Prefix of a FunctionArn that names a handler directly.
PYTHON_PREFIX = "python:"
#: The registry file's table.
REGISTRY_TABLE = "functions"
#: `account_id` of a server.toml [[functions]] entry that every account may use.
ANY_ACCOUNT = "*"

# S3 Control's own FunctionArn pattern (botocore model), anchored: a partial ARN or a bare
# function name, with an optional version/alias qualifier.
_FUNCTION_ARN = re.compile(
    r"(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?"
    r"(\d{12}:)?(function:)?(?P<name>[a-zA-Z0-9-_]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?"
)
#: Lambda's limit on function names.
MAX_FUNCTION_NAME_CHARS = 64
_NAME = re.compile(rf"[a-zA-Z0-9-_]{{1,{MAX_FUNCTION_NAME_CHARS}}}")
_ACCOUNT_ID = re.compile(r"\d{12}")
_REGISTRATION_FIELDS = {"account_id", "name", "handler"}

HOW_TO_REGISTER = (
    "register it under [functions] in S3BATCH_HOME/functions.toml "
    '(NAME = "package.module:callable"), pass --function NAME=package.module:callable, '
    "or use FunctionArn python:package.module:callable"
)


@dataclass(frozen=True, slots=True)
class FunctionScope:
    """The functions one server caller may name in a FunctionArn, and where handlers import from;
    also the commands its S3batchRunCommand jobs may name (operations/run_command.py)."""

    #: NAME → "module:callable" registered for this caller (the built-ins are added on lookup).
    registry: Mapping[str, str] = field(default_factory=dict)
    #: Whether `python:module:callable` ARNs (any importable callable) are accepted.
    python_arns: bool = False
    #: Prepended to the handler workers' sys.path (the operator's choice; never the server's cwd).
    sys_path: tuple[str, ...] = ()
    #: server.toml's `[[commands]]` of this caller, by name: the only commands its
    #: S3batchRunCommand jobs may run (CommandName).
    commands: Mapping[str, RegisteredCommand] = field(default_factory=dict)
    #: server.toml's `[[stores]]` of this caller: the only stores its S3batchTransfer jobs may
    #: name as TargetStore (service/stores.py).
    stores: Mapping[str, StorageConfig] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServerFunctions:
    """The operator's function registrations for a server, per account.

    `by_account` maps an account id, or ANY_ACCOUNT for every account, to NAME → handler; an
    account's own entry of a name wins over the ANY_ACCOUNT one."""

    by_account: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    allow_python: bool = False
    sys_path: tuple[str, ...] = ()
    #: `[[commands]]`, per account.
    commands: ServerCommands = field(default_factory=ServerCommands)
    #: Account id (or ANY_ACCOUNT) → store name → config, from `[[stores]]`.
    stores: Mapping[str, Mapping[str, StorageConfig]] = field(default_factory=dict)

    def for_account(self, account_id: str) -> FunctionScope:
        registry = {**self.by_account.get(ANY_ACCOUNT, {}), **self.by_account.get(account_id, {})}
        stores = {**self.stores.get(ANY_ACCOUNT, {}), **self.stores.get(account_id, {})}
        return FunctionScope(
            registry,
            python_arns=self.allow_python,
            sys_path=self.sys_path,
            commands=self.commands.for_account(account_id),
            stores=stores,
        )


def resolve_function(
    function_arn: str, registry: Mapping[str, str] | FunctionScope, *, cwd: str, timeout_s: float
) -> FunctionSpec:
    """The handler a job's FunctionArn stands for. Raises BadRequest if there is none.

    With a plain mapping (the CLI and the Python API on one's own machine) `python:` ARNs are
    accepted and `cwd` (the creator's working directory) goes on the workers' sys.path so
    handlers next to the caller import as they would in `python -c`. With a FunctionScope (a
    server's caller) its rules apply and `cwd` is ignored; refusals are InvalidRequest.
    """
    if isinstance(registry, FunctionScope):
        return _resolve_scoped(function_arn, registry, timeout_s)
    if function_arn.startswith(PYTHON_PREFIX):
        handler, name = _python_handler(function_arn)
    else:
        name = function_name(function_arn)
        handler = _lookup(name, registry)
    return FunctionSpec(arn=function_arn, name=name, handler=handler, sys_path=(cwd,), timeout_s=timeout_s)


def _resolve_scoped(function_arn: str, scope: FunctionScope, timeout_s: float) -> FunctionSpec:
    if function_arn.startswith(PYTHON_PREFIX):
        if not scope.python_arns:
            raise InvalidRequest(
                f"FunctionArn {function_arn!r}: this server does not run python: handlers; "
                "name a function its operator registered for your account"
            )
        handler, name = _python_handler(function_arn)
    else:
        name = function_name(function_arn)
        if name not in scope.registry and name not in BUILTIN_FUNCTIONS:
            raise InvalidRequest(
                f"function {name!r} is not registered for your account on this server; "
                f"its operator registers functions per account with [[functions]] in {SERVER_FILE}"
            )
        handler = _lookup(name, scope.registry)
    return FunctionSpec(
        arn=function_arn, name=name, handler=handler, sys_path=scope.sys_path, timeout_s=timeout_s
    )


def _python_handler(function_arn: str) -> tuple[str, str]:
    """(handler, function name) of a python:module:callable ARN."""
    handler = function_arn.removeprefix(PYTHON_PREFIX)
    _check_handler(handler, f"FunctionArn {function_arn!r}")
    return handler, handler.rpartition(":")[2].rpartition(".")[2]


def function_name(function_arn: str) -> str:
    """The function name in a Lambda FunctionArn (full, partial or bare). Syntax only.

    Full ARNs are read leniently (any region or account text, e.g. account "1" in tests), as
    nothing here checks them against a real account; shorter forms follow S3 Control's pattern.
    """
    if function_arn.startswith("arn:"):
        parsed = parse_lambda_arn(function_arn)
        name = parsed.name if parsed is not None else None
    else:
        match = _FUNCTION_ARN.fullmatch(function_arn)
        name = match["name"] if match is not None else None
    if name is None or not _NAME.fullmatch(name):
        raise BadRequest(
            f"FunctionArn {function_arn!r} is not a Lambda function ARN "
            "(arn:aws:lambda:REGION:ACCOUNT:function:NAME) or python:package.module:callable"
        )
    return name


def ships_with_s3batch(spec: FunctionSpec) -> bool:
    """Whether the job's handler is a built-in's own code (installed with s3batch, so it cannot
    change while a process runs: its warm workers may serve later jobs)."""
    return spec.handler in _BUILTIN_HANDLERS


def answers_json_values(spec: FunctionSpec) -> bool:
    """Whether the job's function is a built-in known to answer JSON values only (the cheap
    ones, which also run inline): Lambda's JSON round trip of its answer would change nothing."""
    name = spec.name if spec.handler == BUILTIN_FUNCTIONS.get(spec.name) else _NAME_OF.get(spec.handler)
    return name in INLINE_BUILTINS or name in PURE_PYTHON_BUILTINS


def runs_inline(spec: FunctionSpec, workers: int) -> bool:
    """Whether the job's function runs inline: an `INLINE_BUILTINS` built-in, or a
    `PURE_PYTHON_BUILTINS` one when the job may use `workers` = 1 function worker (not a
    registry entry that reuses the name for a handler of its own)."""
    if spec.handler != BUILTIN_FUNCTIONS.get(spec.name):
        return False
    return spec.name in INLINE_BUILTINS or (spec.name in PURE_PYTHON_BUILTINS and workers <= 1)


def check_function_arn(function_arn: str) -> None:
    """Raise BadRequest unless `function_arn` is well-formed (registry not consulted)."""
    if function_arn.startswith(PYTHON_PREFIX):
        _check_handler(function_arn.removeprefix(PYTHON_PREFIX), f"FunctionArn {function_arn!r}")
    else:
        function_name(function_arn)


def load_registry(path: Path) -> dict[str, str]:
    """NAME → "module:callable" from a TOML file's [functions] table; {} if there is no file."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the function registry: {exc}") from exc
    table = data.get(REGISTRY_TABLE, {})
    if not isinstance(table, dict):
        raise ConfigError(f'{path}: [{REGISTRY_TABLE}] must be a table of NAME = "module:callable"')
    registry: dict[str, str] = {}
    for name, target in table.items():
        if not isinstance(target, str) or not _NAME.fullmatch(name):
            raise ConfigError(
                f'{path}: entry {name!r}: expected NAME = "package.module:callable" with NAME '
                f"of 1-{MAX_FUNCTION_NAME_CHARS} letters, digits, '-' or '_'"
            )
        registry[name] = target
    return registry


def _lookup(name: str, registry: Mapping[str, str]) -> str:
    handler = registry.get(name) or BUILTIN_FUNCTIONS.get(name)
    if handler is None:
        raise BadRequest(f"function {name!r} is not registered: {HOW_TO_REGISTER}")
    _check_handler(handler, f"function {name!r} (registered as {handler!r})")
    return handler


def registered_function(entry: object, where: str) -> tuple[str, str, str]:
    """(account_id, name, handler) of a server.toml `[[functions]]` table. Raises ConfigError.

    [[functions]]
    account_id = "111122223333"    # or "*": every account
    name = "thumbnailer"           # FunctionArn arn:aws:lambda:REGION:ACCOUNT:function:thumbnailer
    handler = "my_project.handlers:lambda_handler"
    """
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(entry) - _REGISTRATION_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    account, name, handler = (entry.get(key) for key in ("account_id", "name", "handler"))
    if not (isinstance(account, str) and (account == ANY_ACCOUNT or _ACCOUNT_ID.fullmatch(account))):
        raise ConfigError(f'{where}: account_id must be 12 digits or "{ANY_ACCOUNT}"')
    if not (isinstance(name, str) and _NAME.fullmatch(name)):
        raise ConfigError(f"{where}: name must be 1-{MAX_FUNCTION_NAME_CHARS} letters, digits, '-' or '_'")
    if not (isinstance(handler, str) and _is_handler(handler)):
        raise ConfigError(f'{where}: handler must be "package.module:callable"')
    return account, name, handler


def _check_handler(handler: str, what: str) -> None:
    if not _is_handler(handler):
        raise BadRequest(f"{what}: expected package.module:callable (dotted Python names), got {handler!r}")


def _is_handler(handler: str) -> bool:
    module, sep, attr = handler.partition(":")
    return bool(sep) and _dotted(module) and _dotted(attr)


def _dotted(path: str) -> bool:
    parts = path.split(".")
    return all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)
