"""Roles: allow-list matching, the per-operation action table, config loading, RoleArn rules,
and the per-task guard around an operation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from s3batch.domain.roles import FUNCTION, Need, Role, RoleBook, Statement, first_denied, parse_role_arn
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import AccessDenied, BadRequest, ConfigError
from s3batch.operations import kind_of, supported
from s3batch.operations.base import Operation
from s3batch.operations.guard import RoleCheck, guarded
from s3batch.operations.permissions import job_needs, object_actions, task_needs
from s3batch.service.jobs import passed_role
from s3batch.service.roles import load_roles, role_storage
from s3batch.storage.config import LocalConfig, S3Config

ACCOUNT = "111122223333"


def role(*statements: Statement, **extra: Any) -> Role:
    return Role(account_id=ACCOUNT, name="r", statements=statements, **extra)


# -- allow-list matching ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actions", "buckets", "action", "bucket", "allowed"),
    [
        (("s3:GetObject",), ("data",), "s3:GetObject", "data", True),
        (("s3:GetObject",), ("data",), "s3:GetObject", "data2", False),
        (("s3:GetObject",), ("data",), "s3:PutObject", "data", False),
        (("s3:*",), ("data-*",), "s3:PutObjectTagging", "data-eu", True),
        (("s3:*",), ("data-*",), "s3:PutObjectTagging", "logs", False),
        (("s3:Put*",), ("*",), "s3:GetObject", "any", False),
        (("s3:getobject",), ("b?",), "s3:GetObject", "b1", True),  # actions: any case, like IAM
        (("s3:GetObject",), ("Data",), "s3:GetObject", "data", False),  # buckets: exact case
        (("*",), ("*",), "lambda:InvokeFunction", "x", True),
    ],
)
def test_statement_matching(
    actions: tuple[str, ...], buckets: tuple[str, ...], action: str, bucket: str, allowed: bool
) -> None:
    assert role(Statement(actions=actions, buckets=buckets)).allows(action, "bucket", bucket) is allowed


def test_action_and_bucket_must_match_in_the_same_statement() -> None:
    r = role(
        Statement(actions=("s3:GetObject",), buckets=("a",)),
        Statement(actions=("s3:PutObject",), buckets=("b",)),
    )
    assert r.allows("s3:GetObject", "bucket", "a") and r.allows("s3:PutObject", "bucket", "b")
    assert not r.allows("s3:PutObject", "bucket", "a")
    assert not r.allows("s3:GetObject", "bucket", "b")


def test_functions_are_matched_against_function_patterns_only() -> None:
    r = role(Statement(actions=("lambda:InvokeFunction",), buckets=("*",), functions=("arn:*:fn-*",)))
    assert r.allows("lambda:InvokeFunction", FUNCTION, "arn:aws:lambda:us-east-1:1:function:fn-a")
    assert not r.allows("lambda:InvokeFunction", FUNCTION, "arn:aws:lambda:us-east-1:1:function:other")


def test_first_denied_names_action_bucket_and_role() -> None:
    r = role(Statement(actions=("s3:GetObject",), buckets=("a",)))
    assert first_denied(r, [Need("s3:GetObject", "a")]) is None
    denial = first_denied(r, [Need("s3:GetObject", "a"), Need("s3:PutObject", "b")])
    assert denial is not None
    assert "s3:PutObject" in denial.message and "bucket b" in denial.message and r.arn in denial.message


def test_parse_role_arn() -> None:
    assert parse_role_arn(f"arn:aws:iam::{ACCOUNT}:role/batch") == parse_role_arn(
        f"arn:aws:iam::{ACCOUNT}:role/path/to/batch"
    )
    ref = parse_role_arn(f"arn:aws:iam::{ACCOUNT}:role/path/batch")
    assert ref is not None and (ref.account_id, ref.name) == (ACCOUNT, "batch")
    assert parse_role_arn("arn:aws:iam::12:role/x") is None
    assert parse_role_arn(f"arn:aws:iam::{ACCOUNT}:user/x") is None


# -- the action table ---------------------------------------------------------------------------


def test_every_supported_operation_has_an_entry() -> None:
    assert set(supported()) <= set(object_actions())


def test_version_specific_actions_only_with_a_version_id() -> None:
    tagging = {"TagSet": []}
    assert [n.action for n in task_needs("S3PutObjectTagging", tagging, "b", False)] == [
        "s3:PutObjectTagging"
    ]
    assert [n.action for n in task_needs("S3PutObjectTagging", tagging, "b", True)] == [
        "s3:PutObjectVersionTagging"
    ]


def test_copy_needs_read_on_source_and_write_on_target() -> None:
    params = {
        "TargetResource": "arn:aws:s3:::dst",
        "NewObjectTagging": [],
        "CannedAccessControlList": "private",
    }
    needs = {(n.action, n.resource) for n in task_needs("S3PutObjectCopy", params, "src", False)}
    assert needs == {("s3:GetObject", "src"), ("s3:PutObject", "dst"), ("s3:PutObjectAcl", "dst")}
    copied_tags = {
        (n.action, n.resource) for n in task_needs("S3PutObjectCopy", {"TargetResource": "dst"}, "src", True)
    }
    assert ("s3:GetObjectVersionTagging", "src") in copied_tags and (
        "s3:PutObjectTagging",
        "dst",
    ) in copied_tags


def test_bucket_level_and_conditional_actions() -> None:
    retention = {"Retention": {"Mode": "GOVERNANCE"}, "BypassGovernanceRetention": True}
    actions = [n.action for n in task_needs("S3PutObjectRetention", retention, "b", False)]
    assert actions == [
        "s3:PutObjectRetention",
        "s3:GetBucketObjectLockConfiguration",
        "s3:BypassGovernanceRetention",
    ]
    invoke = task_needs("LambdaInvoke", {"FunctionArn": "arn:aws:lambda:us-east-1:1:function:f"}, "b", False)
    assert invoke == (Need("lambda:InvokeFunction", "arn:aws:lambda:us-east-1:1:function:f", FUNCTION),)


def test_job_needs_manifest_report_and_generator() -> None:
    request = {
        "Manifest": {"Location": {"ObjectArn": "arn:aws:s3:::m/list.csv", "ObjectVersionId": "v1"}},
        "Report": {"Enabled": True, "Bucket": "arn:aws:s3:::rep"},
    }
    assert job_needs(request) == (Need("s3:GetObjectVersion", "m"), Need("s3:PutObject", "rep"))
    generated = {
        "ManifestGenerator": {
            "S3JobManifestGenerator": {
                "SourceBucket": "arn:aws:s3:::src",
                "EnableManifestOutput": True,
                "ManifestOutputLocation": {"Bucket": "arn:aws:s3:::out"},
            }
        },
        "Report": {"Enabled": False},
    }
    assert job_needs(generated) == (Need("s3:ListBucket", "src"), Need("s3:PutObject", "out"))


# -- config ------------------------------------------------------------------------------------


def write(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "server.toml").write_text(text)
    return home


def test_load_roles(tmp_path: Path) -> None:
    home = write(
        tmp_path,
        f"""
[[keys]]
access_key = "AKID"
secret_key = "s"
account_id = "{ACCOUNT}"

[[roles]]
account_id = "{ACCOUNT}"
name = "tagger"
profile = "p"
endpoint_url = "http://127.0.0.1:9000"

[[roles.allow]]
actions = ["s3:PutObjectTagging"]
buckets = ["data-*"]
""",
    )
    book = load_roles(home)
    tagger = book.get(ACCOUNT, "tagger")
    assert tagger is not None and tagger.profile == "p"
    assert tagger.allows("s3:PutObjectTagging", "bucket", "data-1")
    assert not tagger.allows("s3:PutObjectTagging", "bucket", "other")
    assert book.get("999999999999", "tagger") is None
    assert not load_roles(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('account_id = "1"\nname = "r"', "12 digits"),
        (f'account_id = "{ACCOUNT}"\nname = "a/b"', "role name"),
        (f'account_id = "{ACCOUNT}"\nname = "r"\nsecret_access_key = "x"', "inline keys"),
        (f'account_id = "{ACCOUNT}"\nname = "r"\ncolour = "x"', "unknown field"),
        (f'account_id = "{ACCOUNT}"\nname = "r"\n[[roles.allow]]\nbuckets = ["b"]', "actions is empty"),
        (f'account_id = "{ACCOUNT}"\nname = "r"\n[[roles.allow]]\nactions = "s3:*"', "list of"),
    ],
)
def test_bad_role_config(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_roles(write(tmp_path, f"[[roles]]\n{body}\n"))


def test_role_storage_overrides_s3_but_not_a_folder() -> None:
    r = role(profile="p", endpoint_url="http://127.0.0.1:1", region="eu-west-1")
    s3 = role_storage(r, S3Config(endpoint_url="http://127.0.0.1:2", max_connections=7))
    assert isinstance(s3, S3Config)
    assert (s3.profile, s3.endpoint_url, s3.region, s3.max_connections) == (
        "p", "http://127.0.0.1:1", "eu-west-1", 7,
    )  # fmt: skip
    folder = LocalConfig(root="/tmp/x")
    assert role_storage(r, folder) is folder


# -- RoleArn at CreateJob ------------------------------------------------------------------------

BOOK = RoleBook(roles=(role(),))


def test_no_roles_means_no_enforcement() -> None:
    assert passed_role({"RoleArn": "arn:aws:iam::999999999999:role/x"}, ACCOUNT, RoleBook()) is None


def test_known_role_of_the_callers_account() -> None:
    ref = passed_role({"RoleArn": f"arn:aws:iam::{ACCOUNT}:role/r"}, ACCOUNT, BOOK)
    assert ref is not None and ref.name == "r"


def test_unknown_role_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="no role 'nope'"):
        passed_role({"RoleArn": f"arn:aws:iam::{ACCOUNT}:role/nope"}, ACCOUNT, BOOK)
    with pytest.raises(BadRequest, match="RoleArn is required"):
        passed_role({}, ACCOUNT, BOOK)


def test_another_accounts_role_is_access_denied_even_if_it_exists() -> None:
    with pytest.raises(AccessDenied, match="iam:PassRole") as caught:
        passed_role({"RoleArn": f"arn:aws:iam::{ACCOUNT}:role/r"}, "999999999999", BOOK)
    assert caught.value.http_status == 403


# -- the guard ---------------------------------------------------------------------------------


class Recorder(Operation):
    name = "S3PutObjectTagging"
    batch_size = 4

    def __init__(self) -> None:
        self.applied: list[str] = []

    async def apply(self, task: Task) -> TaskResult:
        self.applied.append(task.bucket)
        return TaskResult.ok()

    async def apply_many(self, tasks: Sequence[Task]) -> list[TaskResult]:
        return [await self.apply(t) for t in tasks]


def task(seq: int, bucket: str) -> Task:
    return Task(seq=seq, bucket=bucket, raw_key=f"k{seq}", key=f"k{seq}")


def test_guard_denies_per_task_and_runs_the_rest() -> None:
    inner = Recorder()
    allow = role(Statement(actions=("s3:PutObjectTagging",), buckets=("ok",)))
    op = guarded(inner, RoleCheck(allow, kind_of("S3PutObjectTagging").permissions, {"TagSet": []}))
    assert (op.name, op.batch_size) == ("S3PutObjectTagging", 4)
    results = asyncio.run(op.apply_many([task(0, "ok"), task(1, "no"), task(2, "ok")]))
    assert [r.error_code for r in results] == ["", "AccessDenied", ""]
    assert results[1].http_status == 403 and "bucket no" in results[1].message
    assert inner.applied == ["ok", "ok"]
    denied = asyncio.run(op.apply(task(3, "no")))
    assert denied.error_code == "AccessDenied" and inner.applied == ["ok", "ok"]
