"""The IAM vocabulary an operation kind declares its per-task permissions in (pure values).

Follows AWS's "Granting permissions for Batch Operations" policies: each task needs its
operation's object actions on its own object's bucket, where a version-specific action
(s3:GetObjectVersion, s3:PutObjectVersionTagging, ...) replaces the plain one only when the
manifest row carries a version id; bucket-level actions on that bucket; and extras that depend
on the job's parameters (a copy's target bucket, BypassGovernanceRetention, the function of
LambdaInvoke). Each operation module states all three in its `KIND.permissions`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from s3batch.domain.roles import Need

#: (job parameters, the task's bucket, whether the row has a version id) → the extra needs.
ExtraNeeds = Callable[[Mapping[str, Any], str, bool], Sequence[Need]]


@dataclass(frozen=True, slots=True)
class ObjectAction:
    """An action on the task's object: the plain name, and the one used with a version id."""

    plain: str
    versioned: str

    def name(self, versioned: bool) -> str:
        return self.versioned if versioned else self.plain


def object_action(plain: str, versioned: str | None = None) -> ObjectAction:
    """An object action; without a version-specific name the plain one serves both."""
    return ObjectAction(plain, versioned or plain)


GET = object_action("s3:GetObject", "s3:GetObjectVersion")
GET_TAGS = object_action("s3:GetObjectTagging", "s3:GetObjectVersionTagging")
#: Bucket-level: Object Lock operations read the bucket's lock configuration first.
GET_LOCK_CONFIGURATION = "s3:GetBucketObjectLockConfiguration"


def no_extra_needs(params: Mapping[str, Any], bucket: str, versioned: bool) -> tuple[Need, ...]:
    """For an operation whose needs do not depend on its parameters."""
    return ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Permissions:
    """Everything one task of an operation kind needs, in the order a denial names them."""

    #: Actions on the task's own object (bucket of the manifest row).
    object_actions: tuple[ObjectAction, ...]
    #: Bucket-level actions on the task's bucket.
    bucket_actions: tuple[str, ...]
    #: Needs that depend on the job's parameters (`no_extra_needs` when none do).
    extra: ExtraNeeds

    def needs(self, params: Mapping[str, Any], bucket: str, versioned: bool) -> tuple[Need, ...]:
        """What one task on an object of `bucket` needs."""
        needs = [Need(a.name(versioned), bucket) for a in self.object_actions]
        needs += [Need(action, bucket) for action in self.bucket_actions]
        needs += self.extra(params, bucket, versioned)
        return tuple(needs)
