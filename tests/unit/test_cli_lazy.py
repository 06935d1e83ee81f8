"""`s3batch --help` lists every command from a table without importing the commands' modules;
the table cannot drift from the commands themselves."""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys

import click

from s3batch.cli import COMMANDS, LazyGroup, cli

#: Seconds a CLI subprocess may take in these tests.
SUBPROCESS_TIMEOUT_S = 60
#: What `--help` and `--version` must not import: the command modules and what they pull in.
HEAVY_MODULES = (
    "s3batch.cli.jobs", "s3batch.cli.pipeline", "s3batch.cli.demo", "s3batch.cli.serve",
    "s3batch.service.jobs", "s3batch.storage.config", "s3batch.pipelines.runner", "asyncio", "rich",
    "starlette", "botocore",
)  # fmt: skip


def first_paragraph(text: str) -> str:
    return " ".join(inspect.cleandoc(text).split("\n\n")[0].split())


def test_every_table_entry_is_the_command_with_its_docstring() -> None:
    for name, entry in COMMANDS.items():
        command = getattr(importlib.import_module(entry.module), entry.attr)
        assert isinstance(command, click.Command), name
        assert command.name == name
        assert entry.help == first_paragraph(command.help or ""), name


def test_lazy_listing_equals_clicks_listing_of_the_loaded_commands() -> None:
    fresh, loaded = LazyGroup("s3batch", lazy=COMMANDS), LazyGroup("s3batch", lazy=COMMANDS)
    lazy = click.HelpFormatter(width=100)
    fresh.format_commands(click.Context(fresh), lazy)
    assert fresh.commands == {}  # listed from the table alone
    eager = click.HelpFormatter(width=100)
    # Click's own listing: imports every command and asks it for its short help.
    click.Group.format_commands(loaded, click.Context(loaded), eager)
    assert sorted(loaded.commands) == sorted(COMMANDS)
    assert lazy.getvalue() == eager.getvalue()
    assert cli.list_commands(click.Context(cli)) == sorted(COMMANDS)


def loaded_after(*args: str) -> list[str]:
    code = (
        "import json, sys\nfrom s3batch.cli import main\nsys.argv = ['s3batch', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, check=True,
    )  # fmt: skip
    modules: list[str] = json.loads(proc.stderr.strip().splitlines()[-1])
    return modules


def test_help_and_version_import_no_command_module() -> None:
    for args in (["--help"], ["--version"]):
        modules = loaded_after(*args)
        heavy = [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY_MODULES)]
        assert heavy == [], (args, heavy)
    # A command's own help loads its module (and only then).
    assert "s3batch.cli.jobs" in loaded_after("report", "--help")
