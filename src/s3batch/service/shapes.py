"""Jobs rendered in the AWS S3 Control shapes (DescribeJob's JobDescriptor, ListJobs' entries).

Timestamps are timezone-aware datetimes; the CLI prints them as the AWS CLI does (ISO-8601).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from s3batch.domain.job import Job


def job_arn(job: Job) -> str:
    region = job.runtime.get("region", "us-east-1")
    return f"arn:aws:s3:{region}:{job.account_id}:job/{job.job_id}"


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def progress_summary(job: Job) -> dict[str, Any]:
    p = job.progress
    return {
        "TotalNumberOfTasks": p.total or 0,
        "NumberOfTasksSucceeded": p.succeeded,
        "NumberOfTasksFailed": p.failed,
        "Timers": {"ElapsedTimeInActiveSeconds": int(p.elapsed_active_s)},
    }


def job_descriptor(job: Job) -> dict[str, Any]:
    req = job.request
    out: dict[str, Any] = {
        "JobId": job.job_id,
        "ConfirmationRequired": bool(req.get("ConfirmationRequired", False)),
        "JobArn": job_arn(job),
        "Status": job.status.value,
        "Operation": req["Operation"],
        "Priority": job.priority,
        "ProgressSummary": progress_summary(job),
        "Report": req["Report"],
        "CreationTime": _time(job.creation_time),
    }
    optional: dict[str, Any] = {
        # A job made by a ManifestGenerator has no Manifest (AWS leaves it out too).
        "Manifest": req.get("Manifest"),
        "ManifestGenerator": req.get("ManifestGenerator"),
        "GeneratedManifestDescriptor": job.extra.get("GeneratedManifestDescriptor"),
        "Description": req.get("Description"),
        "RoleArn": req.get("RoleArn"),
        "StatusUpdateReason": job.status_update_reason,
        "TerminationDate": _time(job.termination_date) if job.termination_date else None,
        "SuspendedDate": _time(job.suspended_date) if job.suspended_date else None,
        "SuspendedCause": job.suspended_cause,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    if job.failure_reasons:
        out["FailureReasons"] = [
            {"FailureCode": f.code, "FailureReason": f.reason} for f in job.failure_reasons
        ]
    return out


def job_list_entry(job: Job) -> dict[str, Any]:
    out: dict[str, Any] = {
        "JobId": job.job_id,
        "Operation": job.operation_name,
        "Priority": job.priority,
        "Status": job.status.value,
        "CreationTime": _time(job.creation_time),
        "ProgressSummary": progress_summary(job),
    }
    if job.request.get("Description"):
        out["Description"] = job.request["Description"]
    if job.termination_date:
        out["TerminationDate"] = _time(job.termination_date)
    return out
