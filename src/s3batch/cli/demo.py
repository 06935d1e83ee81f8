"""`s3batch demo`: the classic S3 Batch Operations + Lambda sentiment walkthrough, all local.

Three text files go into a bucket of a local-folder store, a CSV manifest lists them, and a
LambdaInvoke job runs the built-in sentiment function on each; the completion report is written
in AWS's layout and shown as a table.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from urllib.parse import quote_plus

import click
from rich.console import Console
from rich.table import Table

from s3batch.cli.context import run
from s3batch.cli.jobs import follow
from s3batch.domain.job import Job, JobStatus
from s3batch.domain.report import ReportRow
from s3batch.service.jobs import JobService, using_service
from s3batch.service.worker import ensure_worker
from s3batch.settings import Settings
from s3batch.storage.config import LocalConfig, open_store

DATA_BUCKET = "demo-bucket"
REPORT_BUCKET = "demo-reports"
REPORT_PREFIX = "batch-reports"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:s3batch-sentiment"
MARKER = ".s3batch-demo"


@click.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    default="demo-output",
    show_default=True,
    help="Where the demo's buckets and job store go (recreated each run).",
)
def demo(directory: str) -> None:
    """Run the sentiment walkthrough on a local folder store and print the report."""
    from s3batch.cli.context import CliContext

    root = _fresh_dir(Path(directory).resolve())
    settings = Settings.from_env()
    settings = Settings(
        home=root / "home",
        concurrency=settings.concurrency,
        function_workers=settings.function_workers,
        function_timeout_s=settings.function_timeout_s,
        retry=settings.retry,
    )
    storage = LocalConfig(root=str(root / "buckets"))
    console = Console(width=max(Console().width, 110), soft_wrap=True)
    etag = run(_seed(storage))
    console.print(f"[bold]Objects[/] in {storage.root}/{DATA_BUCKET}; manifest ETag {etag}")
    console.print("[bold]Equivalent command:[/] " + _equivalent_command(etag))
    job = run(_create(settings, storage, etag))
    ensure_worker(settings)
    final = follow(CliContext(settings, f"file://{storage.root}", None), job.job_id, job.account_id)
    rows = run(_rows(settings, final))
    console.print(_sentiment_table(rows, final))
    _print_report_files(console, storage, final)
    if final.status is not JobStatus.COMPLETE:
        raise SystemExit(1)


def _fresh_dir(root: Path) -> Path:
    if root.exists():
        if not (root / MARKER).exists():
            raise click.ClickException(f"{root} exists and is not a demo folder; pick --dir")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER).touch()
    return root


async def _seed(storage: LocalConfig) -> str:
    from s3batch.functions.builtin.demo_texts import DEMO_TEXTS

    store = open_store(storage)
    try:
        await store.create_bucket(DATA_BUCKET)
        await store.create_bucket(REPORT_BUCKET)
        lines = []
        for name, text in DEMO_TEXTS.items():
            key = f"letters/{name}"
            await store.put_bytes(DATA_BUCKET, key, text.encode(), content_type="text/plain")
            lines.append(f"{DATA_BUCKET},{quote_plus(key, safe='/')}\n")
        manifest = "".join(lines).encode()
        await store.put_bytes(DATA_BUCKET, "manifest.csv", manifest, content_type="text/csv")
        return hashlib.md5(manifest, usedforsecurity=False).hexdigest()
    finally:
        await store.close()


def _request(etag: str) -> dict[str, object]:
    return {
        "Operation": {
            "LambdaInvoke": {
                "FunctionArn": FUNCTION_ARN,
                "InvocationSchemaVersion": "2.0",
                "UserArguments": {"language": "en"},
            }
        },
        "Manifest": {
            "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
            "Location": {"ObjectArn": f"arn:aws:s3:::{DATA_BUCKET}/manifest.csv", "ETag": etag},
        },
        "Report": {
            "Bucket": f"arn:aws:s3:::{REPORT_BUCKET}",
            "Format": "Report_CSV_20180820",
            "Enabled": True,
            "Prefix": REPORT_PREFIX,
            "ReportScope": "AllTasks",
        },
        "Priority": 10,
        "ConfirmationRequired": False,
        "Description": "s3batch demo: sentiment of three letters",
    }


def _equivalent_command(etag: str) -> str:
    req = _request(etag)
    parts = ["s3batch --storage file://… create-job --wait"]
    for flag, key in (
        ("--operation", "Operation"),
        ("--manifest", "Manifest"),
        ("--report", "Report"),
    ):
        parts.append(f"{flag} '{json.dumps(req[key], separators=(',', ':'))}'")
    parts.append("--priority 10 --no-confirmation-required")
    return " ".join(parts)


async def _create(settings: Settings, storage: LocalConfig, etag: str) -> Job:
    return await using_service(settings, lambda s: s.create_job(_request(etag), storage=storage))


async def _rows(settings: Settings, job: Job) -> list[ReportRow]:
    async def rows(service: JobService) -> list[ReportRow]:
        return [r async for batch in service.store.report_rows(job.job_id) for r in batch]

    return await using_service(settings, rows)


def _sentiment_table(rows: list[ReportRow], job: Job) -> Table:
    table = Table(title=f"Job {job.job_id}: {job.status.value}")
    table.add_column("Key", no_wrap=True)
    for col in ("Status", "Sentiment", "Positive", "Negative", "Neutral", "Mixed"):
        table.add_column(col)
    for row in rows:
        try:
            result = json.loads(row.message)
            scores = result["SentimentScore"]
            cells = [
                result["Sentiment"],
                *(f"{scores[k]:.3f}" for k in ("Positive", "Negative", "Neutral", "Mixed")),
            ]
        except (ValueError, KeyError, TypeError):
            cells = [row.error_code or "?", "", "", "", row.message[:60]]
        table.add_row(row.key, row.status, *cells)
    return table


def _print_report_files(console: Console, storage: LocalConfig, job: Job) -> None:
    if not job.report_manifest:
        return
    folder = Path(storage.root) / REPORT_BUCKET / REPORT_PREFIX / f"job-{job.job_id}"
    console.print(f"[bold]Completion report[/] (AWS layout): {folder}")
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            console.print(f"  {path.relative_to(folder)}")
            if path.suffix == ".csv":
                for line in path.read_text().splitlines():
                    console.print(f"    {line}", markup=False, highlight=False)
