"""What the dashboard's job page draws and downloads, as JSON API routes under /api/v1/jobs/{id}.

- `timeline`: chart points (domain/timeline.py) from the job's durable samples;
- `causes`: failed tasks grouped by error code and HTTP status, most frequent first;
- `report/succeeded.csv`, `report/failed.csv`: the completion report's results files, byte for
  byte: both are the report lines the job store keeps, which is exactly what the report writer
  concatenates into the files in the report bucket (service/reporting.py). They can be
  downloaded while the job runs (then they hold the tasks finished so far), and for a job whose
  report is disabled;
- `report/manifest.json`: the report's manifest, read from the job's own report location.

Every route first looks the job up with the caller's account, so another account's job (or a
job that does not exist) answers 404 and nothing else. The downloads never take a bucket or key
from the request, nor from anything a user could have rewritten since (the manifest in the
bucket names files, but the server reads only the key it computes for the job itself).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import asdict

from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from s3batch.api.json_api import API_PREFIX, Caller, json_endpoint
from s3batch.domain.report import CauseTally, manifest_key
from s3batch.domain.timeline import MAX_CHART_POINTS, SAMPLE_INTERVAL_S, points
from s3batch.errors import NotFound, StorageError

#: The results files, by the name the routes use → the task status whose lines they hold.
RESULT_FILES = {"succeeded.csv": "succeeded", "failed.csv": "failed"}
MANIFEST_FILE = "manifest.json"
CSV_TYPE = "text/csv; charset=utf-8"


async def timeline(caller: Caller) -> Response:
    await caller.state.service.describe_job(caller.job_id, caller.account_id)  # 404s first
    samples = await caller.state.service.store.samples(caller.job_id, MAX_CHART_POINTS)
    return JSONResponse(
        {
            "interval_s": SAMPLE_INTERVAL_S,
            "points": [asdict(p) for p in points(samples, MAX_CHART_POINTS)],
        }
    )


async def causes(caller: Caller) -> Response:
    """Counted chunk by chunk as the store streams them: memory per cause, not per failure."""
    await caller.state.service.describe_job(caller.job_id, caller.account_id)
    tally = CauseTally()
    async for chunk in caller.state.service.store.report_rows(caller.job_id):
        tally.add(chunk)
    return JSONResponse({"causes": [asdict(c) for c in tally.causes()]})


async def download(caller: Caller) -> Response:
    job = await caller.state.service.describe_job(caller.job_id, caller.account_id)
    name = str(caller.request.path_params["name"])
    if name == MANIFEST_FILE:
        return await _manifest(caller, job.report_manifest, job.spec.report.bucket, job.spec.report.prefix)
    status = RESULT_FILES.get(name)
    if status is None:
        raise NotFound(f"no report file {name!r}; the files are {', '.join([*RESULT_FILES, MANIFEST_FILE])}")
    headers = {"content-disposition": f'attachment; filename="job-{job.job_id}-{name}"'}
    return StreamingResponse(_lines(caller, status), media_type=CSV_TYPE, headers=headers)


async def _lines(caller: Caller, status: str) -> AsyncIterator[bytes]:
    async for chunk in caller.state.service.store.report_lines(caller.job_id, (status,)):
        if lines := chunk.get(status):
            yield lines


async def _manifest(caller: Caller, written: str | None, bucket: str | None, prefix: str | None) -> Response:
    key = manifest_key(prefix, caller.job_id)
    if not written or bucket is None or written != f"s3://{bucket}/{key}":
        raise NotFound(f"job {caller.job_id} has no completion report (yet)")
    from s3batch.storage.config import open_store

    store = open_store(caller.state.storage)
    try:
        body = await store.get_bytes(bucket, key)
    except StorageError as exc:
        raise NotFound(f"the report's manifest.json cannot be read: {exc.code}") from exc
    finally:
        await store.close()
    headers = {"content-disposition": f'attachment; filename="job-{caller.job_id}-manifest.json"'}
    return Response(body, media_type="application/json", headers=headers)


ROUTES = [
    Route(API_PREFIX + "/jobs/{id}/timeline", json_endpoint(timeline), methods=["GET"]),
    Route(API_PREFIX + "/jobs/{id}/causes", json_endpoint(causes), methods=["GET"]),
    Route(API_PREFIX + "/jobs/{id}/report/{name}", json_endpoint(download), methods=["GET"]),
]
