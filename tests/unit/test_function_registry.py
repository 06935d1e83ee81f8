"""FunctionArn → handler resolution and the functions.toml registry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from s3batch.errors import BadRequest, ConfigError
from s3batch.functions.registry import (
    BUILTIN_FUNCTIONS,
    check_function_arn,
    function_name,
    load_registry,
    resolve_function,
)

ARN = "arn:aws:lambda:us-east-1:123456789012:function:thumbnailer"
REGISTRY = {"thumbnailer": "my_project.handlers:lambda_handler"}


def resolve(arn: str, registry: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return resolve_function(arn, REGISTRY if registry is None else registry, cwd="/work/dir", timeout_s=7.5)


def test_full_arn_resolves_by_name_through_the_registry() -> None:
    spec = resolve(ARN)
    assert spec.arn == ARN
    assert spec.name == "thumbnailer"
    assert spec.handler == "my_project.handlers:lambda_handler"
    assert spec.sys_path == ("/work/dir",)
    assert spec.timeout_s == 7.5


@pytest.mark.parametrize(
    "arn",
    [
        ARN + ":$LATEST",
        ARN + ":prod",
        "arn:aws-cn:lambda:cn-north-1:123456789012:function:thumbnailer",
        "arn:aws:lambda:local:1:function:thumbnailer",  # full ARNs are read leniently
        "123456789012:function:thumbnailer",
        "thumbnailer",
        "thumbnailer:7",
    ],
)
def test_partial_arns_qualifiers_and_bare_names_resolve_too(arn: str) -> None:
    spec = resolve(arn)
    assert (spec.name, spec.handler, spec.arn) == ("thumbnailer", REGISTRY["thumbnailer"], arn)


def test_builtin_sentiment_is_always_known() -> None:
    spec = resolve("arn:aws:lambda:us-east-1:123456789012:function:s3batch-sentiment", {})
    assert spec.handler == "s3batch.functions.builtin.sentiment:handler"
    assert spec.handler == BUILTIN_FUNCTIONS["s3batch-sentiment"]


def test_registry_entry_overrides_a_builtin() -> None:
    spec = resolve("s3batch-sentiment", {"s3batch-sentiment": "mine.sentiment:handler"})
    assert spec.handler == "mine.sentiment:handler"


def test_python_reference_needs_no_registry() -> None:
    spec = resolve("python:pkg.module:Handlers.run", {})
    assert spec.handler == "pkg.module:Handlers.run"
    assert spec.name == "run"
    assert spec.arn == "python:pkg.module:Handlers.run"


def test_modules_are_not_imported_at_resolution() -> None:
    spec = resolve("python:module_that_does_not_exist_anywhere:handler", {})
    assert spec.handler == "module_that_does_not_exist_anywhere:handler"


def test_unknown_function_says_how_to_register_one() -> None:
    with pytest.raises(BadRequest) as caught:
        resolve("arn:aws:lambda:us-east-1:123456789012:function:nobody", {})
    message = caught.value.message
    assert "'nobody' is not registered" in message
    assert "functions.toml" in message and "--function NAME=" in message and "python:" in message


@pytest.mark.parametrize(
    "arn",
    [
        "",
        "arn:aws:s3:::bucket",
        "arn:aws:lambda:us-east-1:123456789012:function:",
        "arn:aws:lambda:us-east-1:123456789012:function:a:b:c",
        "arn:aws:lambda:us-east-1:123456789012:function:bad name",
        "arn:aws:lambda:us-east-1:123456789012:layer:thumbnailer",
        "bad name",
        "python:",
        "python:module_only",
        "python:mod:",
        "python::func",
        "python:1bad:handler",
        "python:pkg.class:handler",
        "python:pkg..mod:handler",
    ],
)
def test_malformed_references_are_bad_requests(arn: str) -> None:
    with pytest.raises(BadRequest):
        resolve(arn)
    with pytest.raises(BadRequest):
        check_function_arn(arn)


@pytest.mark.parametrize("target", ["no_colon", "mod:", ":func", "mod:with space", "mod-dash:f"])
def test_malformed_registry_entries_are_bad_requests(target: str) -> None:
    with pytest.raises(BadRequest, match="thumbnailer"):
        resolve(ARN, {"thumbnailer": target})


def test_check_function_arn_accepts_what_resolve_accepts_without_a_registry() -> None:
    check_function_arn(ARN)
    check_function_arn("python:pkg.mod:handler")
    assert function_name(ARN + ":prod") == "thumbnailer"


def test_load_registry_reads_the_functions_table(tmp_path: Path) -> None:
    path = tmp_path / "functions.toml"
    path.write_text('[functions]\nthumbnailer = "a.b:c"\n"with-dash_1" = "x:y"\n\n[other]\nk = 1\n')
    assert load_registry(path) == {"thumbnailer": "a.b:c", "with-dash_1": "x:y"}


def test_missing_registry_file_is_empty(tmp_path: Path) -> None:
    assert load_registry(tmp_path / "absent.toml") == {}


def test_file_without_a_functions_table_is_empty(tmp_path: Path) -> None:
    path = tmp_path / "functions.toml"
    path.write_text("[other]\nk = 1\n")
    assert load_registry(path) == {}


@pytest.mark.parametrize(
    "text",
    [
        "[functions\n",  # not TOML
        'functions = "a:b"\n',  # not a table
        "[functions]\nname = 3\n",  # not a string
        '[functions]\n"bad name" = "a:b"\n',  # not a Lambda function name
    ],
)
def test_bad_registry_files_are_config_errors_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "functions.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape("functions.toml")):
        load_registry(path)


def test_registry_file_entries_resolve(tmp_path: Path) -> None:
    path = tmp_path / "functions.toml"
    path.write_text('[functions]\nthumbnailer = "pkg.thumbs:handler"\n')
    spec = resolve(ARN, load_registry(path))
    assert spec.handler == "pkg.thumbs:handler"
