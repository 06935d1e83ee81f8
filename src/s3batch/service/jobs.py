"""JobService: create, describe, list and update jobs (the S3 Control operations)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from s3batch.domain.commands import JobCommand
from s3batch.domain.job import FailureReason, Job, JobStatus, user_status_change
from s3batch.domain.request import (
    MAX_PRIORITY,
    client_token,
    normalize_create_job,
    request_hash,
    validate_tags,
)
from s3batch.domain.roles import RoleBook, RoleRef, parse_role_arn
from s3batch.domain.spec import JobRuntime
from s3batch.errors import AccessDenied, BadRequest, InvalidNextToken, JobStatusError, NotFound
from s3batch.operations import get_kind, operation_names
from s3batch.service.identity import current_key
from s3batch.service.stores import target_stores
from s3batch.settings import SERVER_FILE, Settings
from s3batch.storage.config import StorageConfig, endpoint_for_handlers
from s3batch.store import open_job_store
from s3batch.store.base import JobStore

if TYPE_CHECKING:
    from s3batch.functions.registry import FunctionScope

T = TypeVar("T")

#: ListJobs page size limit (AWS: maxResults 0..1000).
MAX_LIST_RESULTS = 1000
SECONDS_PER_DAY = 86_400


class JobService:
    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store

    async def create_job(
        self,
        request: Mapping[str, Any],
        *,
        storage: StorageConfig,
        account_id: str | None = None,
        functions: Mapping[str, str] | FunctionScope | None = None,
        roles: RoleBook | None = None,
    ) -> Job:
        """Validate and record a job (status New). Same token + same request → same job.

        With `roles` (the server's, when it defines any), RoleArn must name one of the
        caller's roles, and the job's tasks are then held to that role's allow-list."""
        normalized = validated(request)
        role = passed_role(normalized, account_id or self.settings.account_id, roles)
        job = self.new_job(normalized, request, storage, account_id, functions, role=role)
        return await self.store.insert_job(job)

    def new_job(
        self,
        normalized: dict[str, Any],
        request: Mapping[str, Any],
        storage: StorageConfig,
        account_id: str | None,
        functions: Mapping[str, str] | FunctionScope | None,
        *,
        role: RoleRef | None = None,
    ) -> Job:
        """A job (status New) for a validated request, not yet stored."""
        account = account_id or self.settings.account_id
        # A role is recorded as a reference only: it is looked up again when the job runs.
        runtime = self._runtime(normalized, storage, functions or {}, role).as_json()
        return Job(
            job_id=str(uuid.uuid4()),
            account_id=account,
            status=JobStatus.NEW,
            priority=normalized["Priority"],
            request=normalized,
            runtime=runtime,
            creation_time=time.time(),
            client_request_token=client_token(request),
            request_hash=request_hash(normalized),
            tags=tuple((t["Key"], t["Value"]) for t in normalized["Tags"]),
        )

    def _runtime(
        self,
        request: Mapping[str, Any],
        storage: StorageConfig,
        functions: Mapping[str, str] | FunctionScope,
        role: RoleRef | None,
    ) -> JobRuntime:
        """What a worker needs besides the request: recorded so a resume behaves the same."""
        function = None
        command = check_command(request, functions, self.settings.home / SERVER_FILE)
        invoke = request["Operation"].get("LambdaInvoke")
        if invoke is not None:
            from s3batch.functions.registry import resolve_function

            function = resolve_function(
                invoke["FunctionArn"], functions, cwd=os.getcwd(), timeout_s=self.settings.function_timeout_s
            )
        return JobRuntime(
            storage=storage,
            region=self.settings.region,
            # Which workers may run it: those started with the creator's credentials.
            identity=current_key(self.settings.home),
            function=function,
            function_env=_function_env(storage, self.settings.region) if function else None,
            role=role,
            command=command,
            stores=target_stores(request, functions, self.settings.home),
        )

    async def adopt_job(self, job_id: str, account_id: str | None = None) -> Job:
        """Make an unfinished job run with this process's environment (its credentials,
        endpoint and proxies) from now on: for a job whose creating environment is gone (a
        refreshed session token, another shell). Its finished tasks stay done."""
        job = await self.describe_job(job_id, account_id)
        if job.status.terminal:
            raise JobStatusError(f"job {job_id} is {job.status.value}: there is nothing left to run")
        runtime = {**job.runtime, "identity": current_key(self.settings.home)}
        return await self.store.update_fields(job.job_id, runtime=runtime)

    async def describe_job(self, job_id: str, account_id: str | None = None) -> Job:
        """`account_id=None` (local CLI and Python API without --account-id) sees every
        account's jobs; the HTTP API always passes the caller's account."""
        job = await self.store.get_job(job_id, account_id)
        if self._expired(job, time.time()):
            raise NotFound(
                f"No such job: {job_id} (expired {self.settings.job_retention_days:g} days after it ended)"
            )
        return job

    def _expired(self, job: Job, now: float) -> bool:
        retention_s = self.settings.job_retention_days * SECONDS_PER_DAY
        return job.termination_date is not None and now - job.termination_date > retention_s

    async def expire(self, now: float | None = None) -> None:
        """Delete jobs past retention; fail Suspended jobs never confirmed in time (as AWS)."""
        now = time.time() if now is None else now
        await self.store.delete_terminated_before(now - self.settings.job_retention_days * SECONDS_PER_DAY)
        limit_s = self.settings.suspended_timeout_days * SECONDS_PER_DAY
        for job in await self.store.list_jobs(None, [JobStatus.SUSPENDED]):
            if job.suspended_date is not None and now - job.suspended_date > limit_s:
                reason = FailureReason(
                    "SuspendedTimeout",
                    f"not confirmed within {self.settings.suspended_timeout_days:g} days",
                )
                await self.store.transition(
                    job.job_id, [JobStatus.SUSPENDED], JobStatus.FAILED,
                    failure_reasons=(reason,), termination_date=now,
                )  # fmt: skip

    async def list_jobs(
        self,
        account_id: str | None = None,
        statuses: list[str] | None = None,
        max_results: int | None = None,
        next_token: str | None = None,
    ) -> tuple[list[Job], str | None]:
        try:
            wanted = [JobStatus(s) for s in statuses or []]
        except ValueError as exc:
            raise BadRequest(f"jobStatuses: {exc}") from exc
        limit = MAX_LIST_RESULTS if max_results is None else max_results
        if not 0 <= limit <= MAX_LIST_RESULTS:
            raise BadRequest(f"maxResults must be between 0 and {MAX_LIST_RESULTS}")
        jobs = await self.store.list_jobs(
            account_id,
            wanted or None,
            limit + 1,
            _decode_token(next_token) if next_token else None,
        )
        now = time.time()
        jobs = [j for j in jobs if not self._expired(j, now)]
        if len(jobs) > limit and limit > 0:
            last = jobs[limit - 1]
            return jobs[:limit], f"{last.creation_time!r}:{last.job_id}"
        return jobs[:limit], None

    async def update_status(
        self, job_id: str, requested: str, reason: str | None = None, account_id: str | None = None
    ) -> Job:
        job = await self.describe_job(job_id, account_id)
        if reason is not None and not 1 <= len(reason) <= 256:
            raise BadRequest("statusUpdateReason must be 1-256 characters")
        target = user_status_change(job.status, requested)
        if target is None:
            raise JobStatusError(f"cannot move job {job_id} from {job.status.value} to {requested}")
        fields: dict[str, Any] = {"status_update_reason": reason}
        if target.terminal:
            fields["termination_date"] = time.time()
        updated = await self.store.transition(job_id, [job.status], target, **fields)
        if updated is None:  # raced with the runner: report the state it moved to
            raise JobStatusError(f"job {job_id} changed state meanwhile; try again")
        return updated

    async def update_priority(self, job_id: str, priority: int, account_id: str | None = None) -> Job:
        if isinstance(priority, bool) or not 0 <= priority <= MAX_PRIORITY:
            raise BadRequest(f"priority must be between 0 and {MAX_PRIORITY}")
        await self.describe_job(job_id, account_id)
        return await self.store.update_fields(job_id, priority=priority)

    async def get_tags(self, job_id: str, account_id: str | None = None) -> list[dict[str, str]]:
        job = await self.describe_job(job_id, account_id)
        return [{"Key": k, "Value": v} for k, v in job.tags]

    async def put_tags(self, job_id: str, tags: Any, account_id: str | None = None) -> None:
        """Replace the whole tag set (AWS rules: ≤50 tags, unique keys; [] removes all)."""
        checked = validate_tags(tags)
        await self.describe_job(job_id, account_id)
        await self.store.update_fields(job_id, tags=tuple((t["Key"], t["Value"]) for t in checked))

    async def delete_tags(self, job_id: str, account_id: str | None = None) -> None:
        await self.describe_job(job_id, account_id)
        await self.store.update_fields(job_id, tags=())


def validated(request: Mapping[str, Any]) -> dict[str, Any]:
    """The normalized request, after the envelope and the operation's own checks."""
    normalized = normalize_create_job(request, operations=operation_names())
    name, params = next(iter(normalized["Operation"].items()))
    get_kind(name).validate(params)
    return normalized


def check_command(
    request: Mapping[str, Any], functions: Mapping[str, str] | FunctionScope, config: Path
) -> JobCommand | None:
    """What an S3batchRunCommand job records: for a server's caller (a FunctionScope), the
    command its operator registered under the job's CommandName (`config`: the server.toml it
    is checked against again when the job runs); on one's own machine, nothing (its Command
    runs as given)."""
    params = request["Operation"].get("S3batchRunCommand")
    if params is None:
        return None
    from s3batch.functions.registry import FunctionScope
    from s3batch.operations.run_command import check_own_machine, check_server_caller

    if isinstance(functions, FunctionScope):
        return check_server_caller(params, functions.commands, config)
    check_own_machine(params)
    return None


def passed_role(normalized: Mapping[str, Any], account_id: str, roles: RoleBook | None) -> RoleRef | None:
    """The role a job runs as, or None when the server defines no roles (no enforcement).

    Like IAM's iam:PassRole: a role of another account is AccessDenied whether or not it
    exists (so nothing leaks about other accounts); an undefined role of the caller's own
    account is a BadRequestException."""
    if not roles:
        return None
    arn = normalized.get("RoleArn")
    if arn is None:
        raise BadRequest("RoleArn is required: this server runs every job as one of its roles")
    ref = parse_role_arn(arn)
    if ref is None:
        raise BadRequest(f"RoleArn {arn!r} is not a role ARN")
    if ref.account_id != account_id:
        raise AccessDenied(f"account {account_id} is not authorized to perform iam:PassRole on {arn}")
    if roles.get(ref.account_id, ref.name) is None:
        raise BadRequest(f"RoleArn {arn}: no role {ref.name!r} is defined for account {account_id}")
    return ref


def _function_env(storage: StorageConfig, region: str) -> dict[str, str]:
    """Environment for handler processes, so boto3 inside a handler reaches the same store."""
    env = {"AWS_REGION": region, "AWS_DEFAULT_REGION": region}
    if endpoint := endpoint_for_handlers(storage):
        env["AWS_ENDPOINT_URL"] = endpoint
        env["AWS_ENDPOINT_URL_S3"] = endpoint
    return env


def _decode_token(token: str) -> tuple[float, str]:
    stamp, sep, job_id = token.partition(":")
    try:
        if not sep or not job_id:
            raise ValueError(token)
        return float(stamp), job_id
    except ValueError as exc:
        raise InvalidNextToken(f"invalid nextToken {token!r}") from exc


async def using_service(settings: Settings, fn: Callable[[JobService], Awaitable[T]]) -> T:
    """Run `fn` with a JobService on the job store of `settings`, closing it after."""
    store = open_job_store(settings)
    try:
        return await fn(JobService(settings, store))
    finally:
        await store.close()
