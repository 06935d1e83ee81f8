"""The operation registry: every kind states every fact, and the tables derived from the kinds are
the ones s3batch has always used (written out below as literals)."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import math
from collections.abc import Mapping
from typing import Any

import pytest

from s3batch.domain.pricing import REQUEST_PRICES_USD
from s3batch.domain.roles import FUNCTION, Need
from s3batch.errors import BadRequest
from s3batch.operations import get_kind, kind_of, kinds, operation_names, supported
from s3batch.operations.actions import ObjectAction, Permissions, no_extra_needs
from s3batch.operations.base import CapabilityProbe, NoProbe, Operation, OperationKind, PerTask
from s3batch.operations.permissions import bucket_actions, object_actions, task_needs
from s3batch.service.dryrun import requests_for
from s3batch.service.jobs import validated

#: The facts an operation kind must state, each a required field.
FACTS = ("name", "validate", "permissions", "requests", "probe", "batch_size", "create")

# -- the tables as they were written by hand before they were derived -----------------------------

OPERATION_NAMES = (
    "LambdaInvoke",
    "S3PutObjectCopy",
    "S3PutObjectAcl",
    "S3PutObjectTagging",
    "S3DeleteObjectTagging",
    "S3InitiateRestoreObject",
    "S3PutObjectLegalHold",
    "S3PutObjectRetention",
    "S3ReplicateObject",
    "S3ComputeObjectChecksum",
    "S3UpdateObjectEncryption",
    "S3DeleteObject",
    "S3batchCsvIngest",
    "S3batchRunCommand",
    "S3batchTransfer",
)
GET = ("s3:GetObject", "s3:GetObjectVersion")
#: Operation → actions on the task's object, as (plain, with a version id).
OBJECT_ACTIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "S3PutObjectCopy": (GET,),
    "S3PutObjectTagging": (("s3:PutObjectTagging", "s3:PutObjectVersionTagging"),),
    "S3DeleteObjectTagging": (("s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging"),),
    "S3PutObjectAcl": (("s3:PutObjectAcl", "s3:PutObjectVersionAcl"),),
    "S3InitiateRestoreObject": (("s3:RestoreObject", "s3:RestoreObject"),),
    "S3PutObjectLegalHold": (("s3:PutObjectLegalHold", "s3:PutObjectLegalHold"),),
    "S3PutObjectRetention": (("s3:PutObjectRetention", "s3:PutObjectRetention"),),
    "S3ReplicateObject": (("s3:InitiateReplication", "s3:InitiateReplication"),),
    "S3ComputeObjectChecksum": (GET,),
    "S3UpdateObjectEncryption": (("s3:UpdateObjectEncryption", "s3:UpdateObjectEncryption"),),
    "S3DeleteObject": (("s3:DeleteObject", "s3:DeleteObjectVersion"),),
    "S3batchCsvIngest": (GET,),
    "S3batchRunCommand": (GET,),
    "S3batchTransfer": (GET,),
    "LambdaInvoke": (),
}
#: Operation → bucket-level actions (operations not listed: none).
BUCKET_ACTIONS: dict[str, tuple[str, ...]] = {
    "S3PutObjectLegalHold": ("s3:GetBucketObjectLockConfiguration",),
    "S3PutObjectRetention": ("s3:GetBucketObjectLockConfiguration",),
    "S3ReplicateObject": ("s3:GetReplicationConfiguration",),
}
#: Operation → requests per task (S3DeleteObject is batched: see old_requests_for).
PER_TASK: dict[str, dict[str, int]] = {
    "S3PutObjectCopy": {"COPY": 1},
    "S3PutObjectTagging": {"PUT": 1},
    "S3DeleteObjectTagging": {"DELETE": 1},
    "S3PutObjectAcl": {"PUT": 1},
    "S3PutObjectLegalHold": {"PUT": 1},
    "S3PutObjectRetention": {"PUT": 1},
    "S3InitiateRestoreObject": {"POST": 1},
    "S3ReplicateObject": {"COPY": 1},
    "S3UpdateObjectEncryption": {"COPY": 1},
    "S3ComputeObjectChecksum": {"GET": 1},
    "LambdaInvoke": {"LAMBDA_INVOKE": 1},
    "S3batchCsvIngest": {"GET": 1},
    "S3batchRunCommand": {"HEAD": 1, "GET": 1, "PUT": 1},
    "S3batchTransfer": {"HEAD": 0, "GET": 1, "PUT": 1},
}
DELETE_BATCH = 1000
#: Operation → the feature its capability probe checks (operations not listed: no probe).
PROBE_FEATURES: dict[str, str] = {
    "S3PutObjectTagging": "object tagging",
    "S3DeleteObjectTagging": "object tagging",
    "S3PutObjectAcl": "object ACLs",
    "S3PutObjectLegalHold": "Object Lock legal holds",
    "S3PutObjectRetention": "Object Lock retention",
    "S3InitiateRestoreObject": "restore from archive",
    "S3UpdateObjectEncryption": "SSE-KMS encryption",
}
#: Operation → tasks per apply_many call (operations not listed: 1).
BATCH_SIZES = {"S3DeleteObject": 1000}


def old_requests_for(operation: str, tasks: int, buckets: int) -> dict[str, int]:
    if operation == "S3DeleteObject":
        counts = {"POST": math.ceil(tasks / DELETE_BATCH) + max(buckets - 1, 0)}
    else:
        counts = {kind: n * tasks for kind, n in PER_TASK.get(operation, {}).items()}
    counts["GET"] = counts.get("GET", 0) + 1
    return counts


# -- every kind states every fact ----------------------------------------------------------------


def test_the_contract_is_exactly_the_facts_and_none_has_a_default() -> None:
    fields = dataclasses.fields(OperationKind)
    assert tuple(f.name for f in fields) == FACTS
    for f in fields:
        assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, f.name


def _facts_of(kind: OperationKind) -> dict[str, Any]:
    return {name: getattr(kind, name) for name in FACTS}


@pytest.mark.parametrize("missing", FACTS)
def test_a_kind_without_a_fact_cannot_be_built(missing: str) -> None:
    facts = _facts_of(kind_of("S3PutObjectTagging"))
    del facts[missing]
    with pytest.raises(TypeError, match=missing):
        OperationKind(**facts)


def test_facts_are_named_not_positional() -> None:
    facts = _facts_of(kind_of("S3PutObjectTagging"))
    with pytest.raises(TypeError):
        OperationKind(*facts.values())  # type: ignore[misc]


def test_every_registered_operation_is_installed_and_registered_once() -> None:
    assert supported() == operation_names()
    assert len(set(operation_names())) == len(operation_names())
    assert [kind.name for kind in kinds()] == list(operation_names())


@pytest.mark.parametrize("name", operation_names())
def test_every_kind_states_every_fact(name: str) -> None:
    kind = kind_of(name)
    assert kind.name == name
    assert callable(kind.validate) and callable(kind.create)
    permissions = kind.permissions
    assert isinstance(permissions, Permissions) and callable(permissions.extra)
    assert all(isinstance(a, ObjectAction) and a.plain and a.versioned for a in permissions.object_actions)
    assert all(isinstance(a, str) and a.startswith("s3:") for a in permissions.bucket_actions)
    counts = kind.requests({}, 10, 1)
    assert counts and set(counts) <= set(REQUEST_PRICES_USD), counts
    assert all(isinstance(n, int) and n >= 0 for n in counts.values())
    if isinstance(kind.probe, CapabilityProbe):
        assert kind.probe.feature and inspect.iscoroutinefunction(kind.probe.check)
    else:
        assert kind.probe is NoProbe.PLAIN_DATA_PATH
    assert isinstance(kind.batch_size, int) and kind.batch_size >= 1


@pytest.mark.parametrize("name", operation_names())
def test_the_kinds_batch_size_is_its_operations(name: str) -> None:
    kind = kind_of(name)
    assert inspect.isclass(kind.create) and issubclass(kind.create, Operation)
    assert kind.create.batch_size == kind.batch_size
    assert kind.create.name == name


def test_get_kind_keeps_every_fact_but_create() -> None:
    for name in operation_names():
        plain, wrapped = kind_of(name), get_kind(name)
        assert wrapped.create is not plain.create
        assert dataclasses.replace(wrapped, create=plain.create) == plain


def test_an_unregistered_operation_is_refused() -> None:
    with pytest.raises(BadRequest, match="operation S3Nope is not supported yet; supported: LambdaInvoke, "):
        kind_of("S3Nope")
    with pytest.raises(BadRequest) as caught:
        validated({"Operation": {"S3Nope": {}}})
    assert str(caught.value) == f"unknown operation 'S3Nope'; known: {', '.join(OPERATION_NAMES)}"


# -- the derived tables equal the hand-written ones ---------------------------------------------


def test_operation_names() -> None:
    assert operation_names() == OPERATION_NAMES


def test_object_and_bucket_actions() -> None:
    derived = {
        name: tuple((a.plain, a.versioned) for a in actions) for name, actions in object_actions().items()
    }
    assert derived == OBJECT_ACTIONS
    assert {name: actions for name, actions in bucket_actions().items() if actions} == BUCKET_ACTIONS


@pytest.mark.parametrize("name", OPERATION_NAMES)
@pytest.mark.parametrize("versioned", [False, True])
def test_task_needs_without_parameter_extras(name: str, versioned: bool) -> None:
    expected = [Need(a[versioned], "b") for a in OBJECT_ACTIONS[name]]
    expected += [Need(a, "b") for a in BUCKET_ACTIONS.get(name, ())]
    if name == "S3PutObjectCopy":
        expected += [Need("s3:PutObject", "dst"), Need("s3:PutObjectTagging", "dst")]
    params: Mapping[str, Any] = {
        "S3PutObjectCopy": {"TargetResource": "arn:aws:s3:::dst", "NewObjectTagging": [{"Key": "k"}]},
        "LambdaInvoke": {"FunctionArn": "arn:aws:lambda:us-east-1:1:function:f"},
    }.get(name, {})
    if name == "LambdaInvoke":
        expected.append(Need("lambda:InvokeFunction", "arn:aws:lambda:us-east-1:1:function:f", FUNCTION))
    assert task_needs(name, params, "b", versioned) == tuple(expected)


@pytest.mark.parametrize(
    ("params", "versioned", "expected"),
    [
        (
            {"TargetResource": "arn:aws:s3:::dst"},
            False,
            [("s3:GetObject", "src"), ("s3:PutObject", "dst"), ("s3:GetObjectTagging", "src"),
             ("s3:PutObjectTagging", "dst")],
        ),
        (
            {"TargetResource": "arn:aws:s3:::dst", "NewObjectTagging": []},
            True,
            [("s3:GetObjectVersion", "src"), ("s3:PutObject", "dst")],
        ),
        (
            {
                "TargetResource": "arn:aws:s3:::dst",
                "NewObjectTagging": [],
                "AccessControlGrants": [{}],
                "ObjectLockLegalHoldStatus": "ON",
                "ObjectLockRetainUntilDate": "2030-01-01T00:00:00Z",
            },
            False,
            [("s3:GetObject", "src"), ("s3:PutObject", "dst"), ("s3:PutObjectAcl", "dst"),
             ("s3:PutObjectLegalHold", "dst"), ("s3:PutObjectRetention", "dst")],
        ),
        (
            {"TargetResource": "arn:aws:s3:::dst", "NewObjectTagging": [], "ObjectLockMode": "GOVERNANCE"},
            False,
            [("s3:GetObject", "src"), ("s3:PutObject", "dst"), ("s3:PutObjectRetention", "dst")],
        ),
    ],
)  # fmt: skip
def test_copy_needs(params: Mapping[str, Any], versioned: bool, expected: list[tuple[str, str]]) -> None:
    assert [
        (n.action, n.resource) for n in task_needs("S3PutObjectCopy", params, "src", versioned)
    ] == expected


def test_retention_needs_bypass_only_when_asked() -> None:
    plain = ["s3:PutObjectRetention", "s3:GetBucketObjectLockConfiguration"]
    for bypass, extra in ((False, []), (True, ["s3:BypassGovernanceRetention"])):
        params = {"Retention": {}, "BypassGovernanceRetention": bypass}
        assert [n.action for n in task_needs("S3PutObjectRetention", params, "b", False)] == plain + extra


@pytest.mark.parametrize("name", OPERATION_NAMES)
@pytest.mark.parametrize(("tasks", "buckets"), [(0, 1), (1, 1), (999, 1), (1000, 1), (1001, 3), (2001, 1)])
def test_requests(name: str, tasks: int, buckets: int) -> None:
    assert requests_for(name, {}, tasks, buckets) == old_requests_for(name, tasks, buckets)


@pytest.mark.parametrize("name", OPERATION_NAMES)
def test_probes_and_batch_sizes(name: str) -> None:
    kind = kind_of(name)
    feature = kind.probe.feature if isinstance(kind.probe, CapabilityProbe) else None
    assert feature == PROBE_FEATURES.get(name)
    assert kind.batch_size == BATCH_SIZES.get(name, 1)


# -- the vocabulary ---------------------------------------------------------------------------


def test_per_task_counts_and_no_extra_needs() -> None:
    assert PerTask("PUT", 2)({}, 5, 3) == {"PUT": 10}
    assert no_extra_needs({"anything": 1}, "b", True) == ()


def test_a_probe_check_runs_on_the_memory_store() -> None:
    """The checks moved into the operation modules still drive a store end to end."""
    from s3batch.domain.task import Task
    from s3batch.service.probe import probe
    from s3batch.storage.memory import MemoryStore

    async def run() -> list[Any]:
        store = MemoryStore()
        await store.create_bucket("b")
        first = Task(seq=0, bucket="b", raw_key="k", key="k")
        return [await probe(store, {name: {}}, first) for name in ("S3PutObjectTagging", "S3PutObjectCopy")]

    assert asyncio.run(run()) == [None, None]
