"""Job commands with the same options and JSON as `aws s3control ...`, plus report and worker."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from s3batch.cli.context import CliContext, load_json_arg, run
from s3batch.cli.render import JobProgress, causes_table, failure_table, print_json, report_table
from s3batch.domain.job import Job, JobStatus
from s3batch.domain.report import ReportRow, failure_causes
from s3batch.service.identity import current_key
from s3batch.service.jobs import JobService
from s3batch.service.shapes import job_descriptor, job_list_entry
from s3batch.service.worker import drives, ensure_worker, job_key, run_worker, worker_lock, worker_running
from s3batch.store import open_job_store
from s3batch.store.base import JobStore

#: How often `--wait` refreshes the progress bar once a job has run a while, in seconds.
FOLLOW_POLL_S = 0.2
#: The first refresh interval of `--wait`, in seconds. A one-object job ends within a second, and
#: half an interval is lost on average after it ends, so the interval starts small...
FOLLOW_POLL_FIRST_S = 0.02
#: ...and grows by this factor per poll up to FOLLOW_POLL_S (about 0.85 s to get there; a poll
#: is one indexed SQLite read).
FOLLOW_POLL_GROWTH = 1.25
#: How often `--wait` checks that a worker is alive (restarting one after a crash), in seconds.
WORKER_CHECK_S = 2.0
#: Exit codes of `create-job --wait`, `wait` and `describe-job --wait` (an unknown job id is a
#: service error: EXIT_SERVICE_ERROR, 254, as the AWS CLI).
EXIT_COMPLETE, EXIT_NOT_COMPLETE = 0, 1

pass_ctx = click.make_pass_decorator(CliContext)
F = TypeVar("F", bound=Callable[..., Any])


def _json_opt(name: str, help: str) -> Callable[[F], F]:
    return click.option(name, help=help + " JSON, or file://path.json.")


@click.command("create-job")
@click.option("--account-id", help="Account that owns the job (optional).")
@click.option("--confirmation-required/--no-confirmation-required", default=None)
@_json_opt("--operation", "The JobOperation, e.g. '{\"S3PutObjectTagging\": {...}}'.")
@_json_opt("--report", "The JobReport.")
@click.option("--client-request-token", help="Idempotency token (a UUID if omitted).")
@_json_opt("--manifest", "The JobManifest.")
@_json_opt("--manifest-generator", "The ManifestGenerator.")
@click.option(
    "--manifest-query",
    metavar="SQL",
    help="Make the manifest from a query returning bucket, key[, version_id] (docs/query.md).",
)
@click.option(
    "--manifest-query-output",
    metavar="ARN",
    help="Where --manifest-query writes the manifest (default: under the report prefix).",
)
@click.option("--description")
@click.option("--priority", type=int)
@click.option("--role-arn", help="Accepted for compatibility; optional.")
@_json_opt("--tags", "A list of {Key, Value}.")
@_json_opt("--cli-input-json", "All parameters in one document.")
@click.option(
    "--function",
    "functions",
    multiple=True,
    metavar="NAME=module:callable",
    help="Register a Lambda function name for this job (repeatable).",
)
@click.option("--wait", is_flag=True, help="Follow the job with a progress bar until it ends.")
@click.option("--dry-run", is_flag=True, help="Read the manifest, count, price; change nothing.")
@pass_ctx
def create_job(
    ctx: CliContext, /, wait: bool, dry_run: bool, functions: tuple[str, ...], **options: Any
) -> None:
    """Create a job (aws s3control create-job). It runs in a background worker."""
    query, query_output = options.pop("manifest_query"), options.pop("manifest_query_output")
    request = _create_request(options)
    if query is not None:
        from s3batch.cli.query import manifest_from_query

        request["Manifest"] = manifest_from_query(ctx, request, query, query_output)
    account = request.pop("AccountId", None)
    registry = _registry(ctx, functions)
    if dry_run:
        from s3batch.service.dryrun import dry_run as plan

        print_json({"DryRun": ctx.with_service(
            lambda s: plan(s, request, storage=ctx.storage, account_id=account, functions=registry)
        )})  # fmt: skip
        return

    async def go(service: JobService) -> Job:
        return await service.create_job(request, storage=ctx.storage, account_id=account, functions=registry)

    _started(ctx, ctx.with_service(go), wait)


def _started(ctx: CliContext, job: Job, wait: bool) -> None:
    """Print the new job's id and make sure a worker runs it, or follow it to its end (driving
    it in this process when this environment has no worker) and exit by outcome."""
    if not wait:
        ensure_worker(ctx.settings)
        print_json({"JobId": job.job_id})
        return
    final = follow(ctx, job.job_id, job.account_id)
    _exit_with(final)


def _exit_with(final: Job) -> NoReturn:
    """Print the ended job as describe-job does and exit 0 if it completed, else 1."""
    print_json({"Job": job_descriptor(final)})
    sys.exit(EXIT_COMPLETE if final.status is JobStatus.COMPLETE else EXIT_NOT_COMPLETE)


_OPTION_FIELDS = {
    "account_id": "AccountId",
    "confirmation_required": "ConfirmationRequired",
    "client_request_token": "ClientRequestToken",
    "description": "Description",
    "priority": "Priority",
    "role_arn": "RoleArn",
}
_JSON_FIELDS = {
    "operation": "Operation",
    "report": "Report",
    "manifest": "Manifest",
    "manifest_generator": "ManifestGenerator",
    "tags": "Tags",
}


def _create_request(options: dict[str, Any]) -> dict[str, Any]:
    base = load_json_arg(options.pop("cli_input_json"), "--cli-input-json") or {}
    if not isinstance(base, dict):
        raise click.BadParameter("must be a JSON object", param_hint="--cli-input-json")
    request = dict(base)
    for opt, field in _OPTION_FIELDS.items():
        if options.get(opt) is not None:
            request[field] = options[opt]
    for opt, field in _JSON_FIELDS.items():
        value = load_json_arg(options.get(opt), "--" + opt.replace("_", "-"))
        if field == "Tags" and isinstance(value, dict):
            value = [value]  # shorthand for a one-tag list
        if value is not None:
            request[field] = value
    for field in ("Operation", "Report", "Priority"):
        if field not in request:
            flag = "--" + "".join("-" + c.lower() if c.isupper() else c for c in field).lstrip("-")
            raise click.UsageError(f"the following arguments are required: {flag}")
    return request


def _registry(ctx: CliContext, functions: tuple[str, ...]) -> dict[str, str]:
    from s3batch.functions.registry import load_registry

    registry: dict[str, str] = dict(load_registry(ctx.settings.functions_file))
    for item in functions:
        name, sep, target = item.partition("=")
        if not sep or ":" not in target:
            raise click.BadParameter(f"{item!r}: expected NAME=module:callable", param_hint="--function")
        registry[name.strip()] = target.strip()
    return registry


def follow(ctx: CliContext, job_id: str, account_id: str) -> Job:
    """Poll the job store until the job ends, drawing progress on stderr.

    When no worker of this environment runs, this process becomes it for as long as it
    follows: no second interpreter to start, and the end is seen the moment the driver
    returns. Whatever it leaves unfinished (other jobs; this one after Ctrl-C, resumed from
    its durable progress) goes to a background worker."""

    async def go() -> Job:
        store = open_job_store(ctx.settings)
        drove = False
        try:
            with worker_lock(ctx.settings.home) as held:
                drove = held is not None
                return await _poll(ctx, store, job_id, account_id, drive=drove)
        finally:
            if drove and await _work_left(store, ctx.settings.home):
                ensure_worker(ctx.settings)
            await store.close()

    return run(go())


async def _poll(ctx: CliContext, store: JobStore, job_id: str, account_id: str, *, drive: bool) -> Job:
    """The follow loop; `drive`: this process holds this environment's worker lock."""
    hinted, last_check, delay_s = False, time.monotonic(), FOLLOW_POLL_FIRST_S
    own_key = current_key(ctx.settings.home)
    driver: asyncio.Task[int] | None = None
    restart_at = 0.0
    try:
        with JobProgress() as bar:
            while True:
                job = await store.get_job(job_id, account_id)
                bar.update(job)
                if job.status.terminal:
                    return job
                hint = None if hinted else _hint(ctx, job, own_key)
                if hint is not None:
                    hinted = True
                    bar.console.print(hint)
                if driver is not None and driver.done():
                    driver.result()  # a driver that failed ends the follow with its error
                    driver = None
                # (Again once confirmed; at most every FOLLOW_POLL_S, should one find nothing.)
                if drive and driver is None and drives(job, own_key) and time.monotonic() >= restart_at:
                    restart_at = time.monotonic() + FOLLOW_POLL_S
                    driver = asyncio.create_task(
                        run_worker(
                            ctx.settings, exit_when_idle=True, idle_exit_s=0.0, store=store, key=own_key
                        )
                    )
                if not drive and time.monotonic() - last_check > WORKER_CHECK_S:
                    ensure_worker(ctx.settings)  # a crashed worker is replaced and resumes
                    last_check = time.monotonic()
                if driver is not None:
                    await asyncio.wait([driver], timeout=delay_s)  # woken when the driver returns
                else:
                    await asyncio.sleep(delay_s)
                delay_s = min(delay_s * FOLLOW_POLL_GROWTH, FOLLOW_POLL_S)
    finally:
        if driver is not None and not driver.done():
            driver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await driver


def _hint(ctx: CliContext, job: Job, own_key: str) -> str | None:
    """Why the followed job does not move, when that is something the user must do."""
    if job.status is JobStatus.SUSPENDED:
        return (
            f"Job {job.job_id} waits for confirmation: s3batch update-job-status "
            f"--job-id {job.job_id} --requested-job-status Ready"
        )
    key = job_key(job)
    if key is None or key == own_key or worker_running(ctx.settings.home, key):
        return None
    return (
        f"Job {job.job_id} was created from another environment (other AWS credentials, endpoint "
        "or proxy settings) and runs only in a worker started from that environment: run any "
        f"s3batch command there (e.g. s3batch describe-job --job-id {job.job_id}) to resume it, "
        f"or run it with this environment's credentials: s3batch adopt-job {job.job_id}"
    )


async def _work_left(store: JobStore, home: Path) -> bool:
    """Whether a job of this environment still waits for a worker."""
    key = current_key(home)
    return any(drives(job, key) for job in await store.runnable_jobs())


@click.command("describe-job")
@click.option("--account-id")
@click.option("--job-id", required=True)
@click.option("--wait", is_flag=True, help="Follow the job until it ends, as `s3batch wait`.")
@pass_ctx
def describe_job(ctx: CliContext, account_id: str | None, job_id: str, wait: bool) -> None:
    """Show a job (aws s3control describe-job)."""
    job = ctx.with_service(lambda s: s.describe_job(job_id, account_id))
    if wait:  # follow drives the job here, or keeps a worker of this environment alive
        _exit_with(follow(ctx, job.job_id, job.account_id))
    ensure_worker(ctx.settings)
    print_json({"Job": job_descriptor(job)})


@click.command("wait")
@click.argument("job_id")
@click.option("--account-id")
@pass_ctx
def wait_job(ctx: CliContext, job_id: str, account_id: str | None) -> None:
    """Follow an existing job with a progress bar until it ends; exit by its outcome.

    Prints the ended job as describe-job does. Exit status: 0 Complete, 1 Failed or Cancelled,
    254 when there is no such job (the AWS CLI's status for a service error)."""
    job = ctx.with_service(lambda s: s.describe_job(job_id, account_id))
    # follow drives the job here, or keeps a worker of this environment alive (a job whose
    # worker died still runs).
    _exit_with(follow(ctx, job.job_id, job.account_id))


@click.command("list-jobs")
@click.option("--account-id")
@click.option("--job-statuses", multiple=True, help="Repeatable, or space-separated.")
@click.option("--next-token")
@click.option("--max-results", type=int)
@pass_ctx
def list_jobs(
    ctx: CliContext,
    account_id: str | None,
    job_statuses: tuple[str, ...],
    next_token: str | None,
    max_results: int | None,
) -> None:
    """List jobs, newest first (aws s3control list-jobs)."""
    statuses = [s for item in job_statuses for s in item.split()]
    jobs, token = ctx.with_service(lambda s: s.list_jobs(account_id, statuses, max_results, next_token))
    ensure_worker(ctx.settings)
    out: dict[str, Any] = {"Jobs": [job_list_entry(j) for j in jobs]}
    if token:
        out["NextToken"] = token
    print_json(out)


@click.command("update-job-status")
@click.option("--account-id")
@click.option("--job-id", required=True)
@click.option("--requested-job-status", required=True, type=click.Choice(["Cancelled", "Ready"]))
@click.option("--status-update-reason")
@pass_ctx
def update_job_status(
    ctx: CliContext,
    account_id: str | None,
    job_id: str,
    requested_job_status: str,
    status_update_reason: str | None,
) -> None:
    """Confirm (Ready) or cancel (Cancelled) a job (aws s3control update-job-status)."""
    job = ctx.with_service(
        lambda s: s.update_status(job_id, requested_job_status, status_update_reason, account_id)
    )
    ensure_worker(ctx.settings)
    out = {"JobId": job.job_id, "Status": job.status.value}
    if job.status_update_reason:
        out["StatusUpdateReason"] = job.status_update_reason
    print_json(out)


@click.command("update-job-priority")
@click.option("--account-id")
@click.option("--job-id", required=True)
@click.option("--priority", required=True, type=int)
@pass_ctx
def update_job_priority(ctx: CliContext, account_id: str | None, job_id: str, priority: int) -> None:
    """Change a job's priority (aws s3control update-job-priority)."""
    job = ctx.with_service(lambda s: s.update_priority(job_id, priority, account_id))
    print_json({"JobId": job.job_id, "Priority": job.priority})


@click.command()
@click.argument("job_id")
@click.option("--account-id")
@click.option("--failed-only", is_flag=True, help="Only failed tasks.")
@pass_ctx
def report(ctx: CliContext, job_id: str, account_id: str | None, failed_only: bool) -> None:
    """Print a job's completion report as a table, failures first."""

    async def go(service: JobService) -> tuple[Job, list[ReportRow]]:
        job = await service.describe_job(job_id, account_id)
        rows = [r async for batch in service.store.report_rows(job.job_id) for r in batch]
        return job, rows

    job, rows = ctx.with_service(go)
    if failed_only:
        rows = [r for r in rows if r.status == "failed"]
    p = job.progress
    title = (
        f"Job {job.job_id} — {job.status.value}: {p.succeeded} succeeded, {p.failed} failed of {p.total or 0}"
    )
    from rich.console import Console

    console = Console(width=max(Console().width, 120))
    causes = failure_causes(rows)
    if causes:  # why most tasks failed, before the rows themselves
        console.print(causes_table(causes, f"Job {job.job_id}"))
    if rows or not job.failure_reasons:
        console.print(report_table(rows, title))
    if job.failure_reasons:  # e.g. a job that failed before it ran any task: why, instead of no rows
        console.print(failure_table(job.failure_reasons, f"Job {job.job_id} — {job.status.value}"))
    if job.report_manifest:
        console.print(f"Completion report: {job.report_manifest}")


@click.command()
@click.option("--exit-when-idle", is_flag=True, help="Exit once no job is left to run.")
@pass_ctx
def worker(ctx: CliContext, exit_when_idle: bool) -> None:
    """Run jobs in the foreground (normally started for you in the background)."""
    with worker_lock(ctx.settings.home) as held:
        if held is None:
            click.echo(
                "another worker of this environment is already running for this S3BATCH_HOME", err=True
            )
            return
        (ctx.settings.home / "worker.pid").write_text(str(__import__("os").getpid()))
        run(run_worker(ctx.settings, exit_when_idle))


@click.command("get-job-tagging")
@click.option("--account-id")
@click.option("--job-id", required=True)
@pass_ctx
def get_job_tagging(ctx: CliContext, account_id: str | None, job_id: str) -> None:
    """Show a job's tags (aws s3control get-job-tagging)."""
    print_json({"Tags": ctx.with_service(lambda s: s.get_tags(job_id, account_id))})


@click.command("put-job-tagging")
@click.option("--account-id")
@click.option("--job-id", required=True)
@_json_opt("--tags", "A list of {Key, Value}; replaces every tag.")
@pass_ctx
def put_job_tagging(ctx: CliContext, account_id: str | None, job_id: str, tags: str | None) -> None:
    """Replace a job's tags (aws s3control put-job-tagging)."""
    value = load_json_arg(tags, "--tags")
    if value is None:
        raise click.UsageError("the following arguments are required: --tags")
    ctx.with_service(lambda s: s.put_tags(job_id, [value] if isinstance(value, dict) else value, account_id))


@click.command("delete-job-tagging")
@click.option("--account-id")
@click.option("--job-id", required=True)
@pass_ctx
def delete_job_tagging(ctx: CliContext, account_id: str | None, job_id: str) -> None:
    """Remove every tag of a job (aws s3control delete-job-tagging)."""
    ctx.with_service(lambda s: s.delete_tags(job_id, account_id))


@click.command("adopt-job")
@click.argument("job_id")
@click.option("--account-id")
@click.option("--wait", is_flag=True, help="Follow the job with a progress bar until it ends.")
@pass_ctx
def adopt_job(ctx: CliContext, job_id: str, account_id: str | None, wait: bool) -> None:
    """Run an unfinished job with this environment's credentials from now on."""
    _started(ctx, ctx.with_service(lambda s: s.adopt_job(job_id, account_id)), wait)


@click.command("rerun-failed")
@click.argument("job_id")
@click.option("--account-id")
@click.option("--wait", is_flag=True, help="Follow the new job with a progress bar until it ends.")
@pass_ctx
def rerun_failed(ctx: CliContext, job_id: str, account_id: str | None, wait: bool) -> None:
    """Create a job over exactly the failed tasks of a finished job."""
    from s3batch.service.rerun import rerun_failed as rerun

    _started(ctx, ctx.with_service(lambda s: rerun(s, job_id, account_id)), wait)
