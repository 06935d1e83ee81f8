"""What `$S3BATCH_HOME/server.toml` says about running code and trusting the network.

    [server]
    allow_python_functions = false     # true: python:module:callable FunctionArns over HTTP too
    function_path = ["handlers"]       # sys.path of handlers of API-created jobs (relative: to HOME)
    trusted_proxies = ["10.0.0.7"]     # X-Forwarded-For/-Proto believed only from these peers
    operators = ["AKIAOPERATOR"]       # access key ids allowed operator actions (pipeline replay)

    [[functions]]
    account_id = "111122223333"        # or "*": every account
    name = "thumbnailer"
    handler = "my_project.handlers:lambda_handler"

    [[commands]]
    account_id = "*"                   # or "111122223333"
    name = "thumbnail"                 # S3batchRunCommand's CommandName
    argv = ["/usr/bin/convert", "{input}", "-thumbnail", "128x128", "{output_dir}/{key}.jpg"]
    timeout_seconds = 120              # optional caps (docs/run-command.md#over-s3batch-serve)

    [[stores]]
    account_id = "111122223333"        # or "*"
    name = "backup"                    # S3batchTransfer's TargetStore
    endpoint_url = "http://10.0.0.5:9000"
    profile = "nas"                    # credentials: an AWS profile of the server's environment

Every key holder of a server is treated as a stranger: a LambdaInvoke job created over HTTP may
only name a function registered here for its account (or for "*"), or a built-in one. HOME's
functions.toml, `--function` and `python:` ARNs are conveniences of the CLI on one's own machine;
the server ignores functions.toml and refuses `python:` ARNs unless `allow_python_functions`.
Likewise an S3batchTransfer job names only a store registered for its account in `[[stores]]`
(docs/transfer.md); HOME's stores.toml is the CLI's. An S3batchRunCommand job names only a
command registered for its account in `[[commands]]` (CommandName) and adds no argument or
environment of its own (docs/run-command.md#over-s3batch-serve).
The other tables of the file (`[[keys]]`, `[[roles]]`, `[[pipelines]]`, `[[inventories]]`) are
read by their own modules.
"""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s3batch.domain.commands import COMMANDS_TABLE, parse_server_commands
from s3batch.domain.named_stores import parse_server_stores
from s3batch.errors import ConfigError
from s3batch.functions.registry import ServerFunctions, registered_function
from s3batch.settings import SERVER_FILE

SERVER_TABLE = "server"
FUNCTIONS_TABLE = "functions"
#: `[[stores]]`: the stores each account's S3batchTransfer jobs may name (docs/transfer.md).
STORES_TABLE = "stores"
_SERVER_FIELDS = {"allow_python_functions", "function_path", "trusted_proxies", "operators"}


@dataclass(frozen=True, slots=True)
class ServerConfig:
    functions: ServerFunctions = field(default_factory=ServerFunctions)
    #: Peers (addresses or CIDR networks) whose X-Forwarded-For / X-Forwarded-Proto are believed.
    trusted_proxies: tuple[str, ...] = ()
    #: Access key ids that may take operator actions (replaying a hosted pipeline's failures):
    #: pipelines belong to the server's operator, not to an account. None by default.
    operators: frozenset[str] = frozenset()


def load_server_config(home: Path) -> ServerConfig:
    """`[server]` and `[[functions]]` of HOME/server.toml (defaults without the file)."""
    path = home / SERVER_FILE
    if not path.is_file():
        return ServerConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    options = _table(data.get(SERVER_TABLE, {}), f"{path} [{SERVER_TABLE}]")
    functions = ServerFunctions(
        by_account=_registrations(data.get(FUNCTIONS_TABLE, []), f"{path} [[{FUNCTIONS_TABLE}]]"),
        allow_python=_flag(options, "allow_python_functions", f"{path} [{SERVER_TABLE}]"),
        sys_path=tuple(str(home / p) for p in _strings(options, "function_path", f"{path} [{SERVER_TABLE}]")),
        commands=parse_server_commands(data.get(COMMANDS_TABLE, []), f"{path} [[{COMMANDS_TABLE}]]"),
        stores=parse_server_stores(data.get(STORES_TABLE, []), f"{path} [[{STORES_TABLE}]]"),
    )
    proxies = _strings(options, "trusted_proxies", f"{path} [{SERVER_TABLE}]")
    operators = frozenset(_strings(options, "operators", f"{path} [{SERVER_TABLE}]"))
    return ServerConfig(
        functions=functions, trusted_proxies=checked_proxies(proxies, str(path)), operators=operators
    )


def checked_proxies(proxies: tuple[str, ...], where: str) -> tuple[str, ...]:
    """The entries if each is an IP address or network. Raises ConfigError.

    uvicorn would also take "*" (every peer); that trusts any client to name its own address,
    which is exactly what this setting exists to prevent, so it is refused."""
    for proxy in proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{where}: trusted proxy {proxy!r} is not an IP address or network") from exc
    return proxies


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(value) - _SERVER_FIELDS
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    return value


def _flag(options: dict[str, Any], name: str, where: str) -> bool:
    value = options.get(name, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {name} must be true or false")
    return value


def _strings(options: dict[str, Any], name: str, where: str) -> tuple[str, ...]:
    value = options.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{where}: {name} must be a list of non-empty strings")
    return tuple(value)


def _registrations(entries: Any, where: str) -> dict[str, dict[str, str]]:
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: must be an array of tables ([[{FUNCTIONS_TABLE}]])")
    by_account: dict[str, dict[str, str]] = {}
    for n, entry in enumerate(entries, 1):
        account, name, handler = registered_function(entry, f"{where} #{n}")
        names = by_account.setdefault(account, {})
        if name in names:
            raise ConfigError(f"{where} #{n}: function {name!r} is registered twice for account {account}")
        names[name] = handler
    return by_account
