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
"""

from __future__ import annotations

import keyword
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path

from s3batch.domain.arn import parse_lambda_arn
from s3batch.errors import BadRequest, ConfigError
from s3batch.operations.base import FunctionSpec

#: Functions that ship with s3batch, by Lambda function name.
BUILTIN_FUNCTIONS: Mapping[str, str] = {
    "s3batch-sentiment": "s3batch.functions.builtin.sentiment:handler",
}
#: Prefix of a FunctionArn that names a handler directly.
PYTHON_PREFIX = "python:"
#: The registry file's table.
REGISTRY_TABLE = "functions"

# S3 Control's own FunctionArn pattern (botocore model), anchored: a partial ARN or a bare
# function name, with an optional version/alias qualifier.
_FUNCTION_ARN = re.compile(
    r"(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?"
    r"(\d{12}:)?(function:)?(?P<name>[a-zA-Z0-9-_]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?"
)
#: Lambda's limit on function names.
MAX_FUNCTION_NAME_CHARS = 64
_NAME = re.compile(rf"[a-zA-Z0-9-_]{{1,{MAX_FUNCTION_NAME_CHARS}}}")

HOW_TO_REGISTER = (
    "register it under [functions] in S3BATCH_HOME/functions.toml "
    '(NAME = "package.module:callable"), pass --function NAME=package.module:callable, '
    "or use FunctionArn python:package.module:callable"
)


def resolve_function(
    function_arn: str, registry: Mapping[str, str], *, cwd: str, timeout_s: float
) -> FunctionSpec:
    """The handler a job's FunctionArn stands for. Raises BadRequest if there is none.

    `cwd` (the creator's working directory) goes on the workers' sys.path so handlers next
    to the caller import as they would in `python -c`.
    """
    if function_arn.startswith(PYTHON_PREFIX):
        handler = function_arn.removeprefix(PYTHON_PREFIX)
        _check_handler(handler, f"FunctionArn {function_arn!r}")
        name = handler.rpartition(":")[2].rpartition(".")[2]
    else:
        name = function_name(function_arn)
        handler = _lookup(name, registry)
    return FunctionSpec(arn=function_arn, name=name, handler=handler, sys_path=(cwd,), timeout_s=timeout_s)


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


def _check_handler(handler: str, what: str) -> None:
    module, sep, attr = handler.partition(":")
    if not sep or not _dotted(module) or not _dotted(attr):
        raise BadRequest(f"{what}: expected package.module:callable (dotted Python names), got {handler!r}")


def _dotted(path: str) -> bool:
    parts = path.split(".")
    return all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)
