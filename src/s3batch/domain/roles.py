"""Roles: what a job's tasks may do (least privilege), as pure values.

A role is named by the job's `RoleArn` (`arn:aws:iam::<account>:role/<path/><name>`) and
defined in the server's config (service/roles.py loads it). It carries allow statements,
each a set of IAM-style action patterns and resource patterns (bucket names, or function
names/ARNs for `lambda:InvokeFunction`), with `*` and `?` globs as in IAM. A request is
allowed when one statement matches both its action and its resource; nothing else is.

Everything here is picklable, so a process-pool engine gets the same checks. Secrets never
appear here: a role names an AWS profile, resolved by the process that runs the tasks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase

#: `arn:<partition>:iam::<12 digits>:role/<optional path/><name>`.
_ROLE_ARN = re.compile(r"^arn:[^:]+:iam::(\d{12}):role/(?:.*/)?([^/]+)$")

BUCKET = "bucket"
FUNCTION = "function"


@dataclass(frozen=True, slots=True, kw_only=True)
class Statement:
    """One allow rule: every action pattern × every resource pattern of its kind."""

    #: IAM action patterns, e.g. "s3:GetObject", "s3:*", "s3:PutObject*".
    actions: tuple[str, ...]
    #: Bucket name patterns, e.g. "data-*".
    buckets: tuple[str, ...] = ()
    #: Function name or ARN patterns (for lambda:InvokeFunction).
    functions: tuple[str, ...] = ()

    def allows(self, action: str, kind: str, resource: str) -> bool:
        patterns = self.buckets if kind == BUCKET else self.functions
        # IAM compares action names case-insensitively; resource names are case-sensitive.
        wanted = action.lower()
        return any(fnmatchcase(wanted, a.lower()) for a in self.actions) and any(
            fnmatchcase(resource, p) for p in patterns
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Role:
    """A role of one account: its allow-list and where its tasks' credentials come from."""

    account_id: str
    name: str
    statements: tuple[Statement, ...] = ()
    #: AWS profile (shared config/credentials files of the server) the tasks sign with.
    profile: str | None = None
    #: S3 endpoint override for this role's tasks; None keeps the server's.
    endpoint_url: str | None = None
    #: Region override; None keeps the server's.
    region: str | None = None

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account_id}:role/{self.name}"

    def allows(self, action: str, kind: str, resource: str) -> bool:
        return any(s.allows(action, kind, resource) for s in self.statements)


@dataclass(frozen=True, slots=True)
class RoleRef:
    """The role a RoleArn names."""

    account_id: str
    name: str


def parse_role_arn(arn: str) -> RoleRef | None:
    match = _ROLE_ARN.match(arn)
    return RoleRef(match.group(1), match.group(2)) if match else None


@dataclass(frozen=True, slots=True)
class Need:
    """One permission a request needs: an action on a named resource."""

    action: str
    resource: str
    kind: str = BUCKET


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a role refuses: the first need it does not grant."""

    need: Need
    role_arn: str

    @property
    def message(self) -> str:
        what = "bucket" if self.need.kind == BUCKET else "function"
        return (
            f"403 Access Denied: role {self.role_arn} is not allowed to perform "
            f"{self.need.action} on {what} {self.need.resource}"
        )


def first_denied(role: Role, needs: tuple[Need, ...] | list[Need]) -> Denial | None:
    """The first need `role` does not grant, or None when it grants them all."""
    for need in needs:
        if not role.allows(need.action, need.kind, need.resource):
            return Denial(need, role.arn)
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleBook:
    """Every role the server defines, by (account, name)."""

    roles: tuple[Role, ...] = ()

    def __len__(self) -> int:
        return len(self.roles)

    def get(self, account_id: str, name: str) -> Role | None:
        for role in self.roles:
            if role.account_id == account_id and role.name == name:
                return role
        return None
