"""Which functions run inline (functions/registry.py), with how many workers, and how an inline
handler's reads are routed (functions/objects.py `reading_with`)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from s3batch.domain.function import FunctionSpec
from s3batch.errors import ConfigError, StorageError
from s3batch.functions.objects import STORAGE_CONFIG_ENV, ObjectRef, read_object, read_objects, reading_with
from s3batch.functions.registry import (
    BUILTIN_FUNCTIONS,
    INLINE_BUILTINS,
    PURE_PYTHON_BUILTINS,
    answers_json_values,
    resolve_function,
    runs_inline,
)

ARN = "arn:aws:lambda:us-east-1:123456789012:function:{}"


def spec_of(name: str) -> FunctionSpec:
    return resolve_function(ARN.format(name), {}, cwd="/", timeout_s=3.0)


@pytest.mark.parametrize("workers", [1, 2, 8])
@pytest.mark.parametrize("name", sorted(INLINE_BUILTINS))
def test_the_builtins_that_leave_the_gil_always_run_inline(name: str, workers: int) -> None:
    assert runs_inline(spec_of(name), workers)


@pytest.mark.parametrize("name", sorted(PURE_PYTHON_BUILTINS))
def test_the_pure_python_builtins_run_inline_only_with_one_worker(name: str) -> None:
    assert runs_inline(spec_of(name), 1)
    assert not runs_inline(spec_of(name), 2)  # threads would share the GIL: worker processes


@pytest.mark.parametrize("name", sorted(set(BUILTIN_FUNCTIONS) - INLINE_BUILTINS - PURE_PYTHON_BUILTINS))
@pytest.mark.parametrize("workers", [1, 2])
def test_the_model_builtins_run_in_worker_processes(name: str, workers: int) -> None:
    assert not runs_inline(spec_of(name), workers)


def test_a_registry_entry_reusing_a_builtins_name_runs_in_worker_processes() -> None:
    spec = resolve_function(
        ARN.format("s3batch-pii"), {"s3batch-pii": "mine.pii:handler"}, cwd="/", timeout_s=3.0
    )
    assert spec.handler == "mine.pii:handler" and not runs_inline(spec, 1)


def test_a_builtin_named_by_its_handler_runs_in_worker_processes() -> None:
    arn = "python:" + BUILTIN_FUNCTIONS["s3batch-sentiment"]
    assert not runs_inline(resolve_function(arn, {}, cwd="/", timeout_s=3.0), 1)


def test_reads_inside_reading_with_go_to_the_reader_and_only_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STORAGE_CONFIG_ENV, raising=False)
    asked: list[tuple[list[ObjectRef], int | None]] = []

    def reader(refs: Sequence[ObjectRef], max_bytes: int | None) -> list[bytes | StorageError]:
        asked.append((list(refs), max_bytes))
        return [b"body" if ref.key == "a" else StorageError("NoSuchKey", "gone", 404) for ref in refs]

    def handler() -> tuple[list[bytes | StorageError], bytes]:
        return read_objects([ObjectRef("b", "a"), ObjectRef("b", "z")], max_bytes=7), read_object("b", "a")

    bodies, one = reading_with(reader, handler)
    assert bodies[0] == b"body" and isinstance(bodies[1], StorageError) and one == b"body"
    assert asked == [([ObjectRef("b", "a"), ObjectRef("b", "z")], 7), ([ObjectRef("b", "a")], None)]
    with pytest.raises(StorageError, match="gone"):
        reading_with(reader, read_object, "b", "z")
    with pytest.raises(ConfigError, match=STORAGE_CONFIG_ENV):  # the reader did not stay behind
        read_objects([ObjectRef("b", "a")])


@pytest.mark.parametrize("name", sorted(BUILTIN_FUNCTIONS))
def test_only_the_cheap_builtins_skip_lambdas_json_round_trip(name: str) -> None:
    cheap = name in INLINE_BUILTINS | PURE_PYTHON_BUILTINS
    assert answers_json_values(spec_of(name)) is cheap
    by_handler = resolve_function("python:" + BUILTIN_FUNCTIONS[name], {}, cwd="/", timeout_s=3.0)
    assert answers_json_values(by_handler) is cheap  # the same code named by its handler


def test_a_users_handler_keeps_lambdas_json_round_trip() -> None:
    mine = resolve_function(
        ARN.format("s3batch-pii"), {"s3batch-pii": "mine.pii:handler"}, cwd="/", timeout_s=3.0
    )
    assert not answers_json_values(mine)
    assert not answers_json_values(resolve_function("python:mine:handler", {}, cwd="/", timeout_s=3.0))
