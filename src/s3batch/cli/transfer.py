"""`s3batch transfer SRC DST`: copy a folder or bucket prefix to another store as one job.

SRC and DST are each one of:
- `s3://bucket[/prefix]`: S3 as this environment reaches it (AWS_ENDPOINT_URL, AWS_PROFILE, ...);
- `NAME:bucket[/prefix]`: a store of $S3BATCH_HOME/stores.toml (docs/transfer.md);
- a folder path: the folder is the bucket (its parent the folder store's root);
  `file:///path` says the same.

The command lists SRC with a manifest generator (the listing create-job's --manifest-generator
does), creates an S3batchTransfer job on SRC's store, follows it with the progress bar, and
prints what was copied, skipped and failed. Exit status: 0 when every object is in DST.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from s3batch.cli.context import CliContext
from s3batch.cli.jobs import EXIT_COMPLETE, EXIT_NOT_COMPLETE, follow, pass_ctx
from s3batch.cli.render import report_table
from s3batch.domain.job import Job, JobStatus
from s3batch.domain.named_stores import STORE_NAME
from s3batch.domain.report import ReportRow
from s3batch.domain.stores import LocalConfig, StorageConfig
from s3batch.domain.transfer import COPIED, SKIPPED_IDENTICAL, SkipExisting
from s3batch.errors import S3BatchError
from s3batch.service.jobs import JobService
from s3batch.service.stores import FOLDER_URL_PREFIX, S3_ENVIRONMENT_URL, environment_s3, load_named_stores

#: Failed rows printed after the summary (all of them are in `s3batch report JOB`).
MAX_FAILURES_SHOWN = 20
#: The job's priority: above the default, as the user is waiting for it.
TRANSFER_PRIORITY = 10
_ALGORITHMS = (
    "CRC32",
    "CRC32C",
    "CRC64NVME",
    "SHA1",
    "SHA256",
    "SHA512",
    "MD5",
    "XXHASH64",
    "XXHASH3",
    "XXHASH128",
)


@dataclass(frozen=True, slots=True)
class Location:
    """One side of a transfer: the store, how a job names it, a bucket and a key prefix."""

    store: StorageConfig
    #: TargetStore's value for this store.
    store_ref: str
    bucket: str
    prefix: str

    @property
    def text(self) -> str:
        return f"{self.store_ref}:{self.bucket}/{self.prefix}"


def parse_location(text: str, named: dict[str, StorageConfig]) -> Location:
    """SRC or DST as the module docstring describes. Raises click.BadParameter."""
    if text.startswith("s3://"):
        bucket, prefix = _bucket_and_prefix(text[len("s3://") :], text)
        return Location(environment_s3(), S3_ENVIRONMENT_URL, bucket, prefix)
    if text.startswith("file://"):
        return _folder(text[len("file://") :])
    name, sep, rest = text.partition(":")
    if sep and "/" not in name and STORE_NAME.fullmatch(name):
        if name not in named:
            raise click.BadParameter(f"{text!r}: no store {name!r} in stores.toml (docs/transfer.md)")
        bucket, prefix = _bucket_and_prefix(rest, text)
        return Location(named[name], name, bucket, prefix)
    return _folder(text)


def _bucket_and_prefix(path: str, text: str) -> tuple[str, str]:
    bucket, _, prefix = path.partition("/")
    if not bucket:
        raise click.BadParameter(f"{text!r}: no bucket")
    if prefix and not prefix.endswith("/"):
        prefix += "/"  # a prefix names a folder of keys, as `aws s3 sync` reads it
    return bucket, prefix


def _folder(path: str) -> Location:
    folder = Path(path).expanduser().resolve()
    if not folder.name or folder.name.startswith("."):
        raise click.BadParameter(
            f"{path!r}: a folder store needs a folder whose name does not start with '.'"
        )
    root = str(folder.parent)
    return Location(LocalConfig(root=root), FOLDER_URL_PREFIX + root.lstrip("/"), folder.name, "")


def transfer_request(
    src: Location, dst: Location, skip: str, algorithm: str, part_size: int | None
) -> dict[str, Any]:
    """The CreateJob request: a generated manifest of SRC, an S3batchTransfer into DST."""
    generator: dict[str, Any] = {"SourceBucket": f"arn:aws:s3:::{src.bucket}", "EnableManifestOutput": False}
    if src.prefix:
        generator["Filter"] = {"KeyNameConstraint": {"MatchAnyPrefix": [src.prefix]}}
    operation: dict[str, Any] = {
        "TargetStore": dst.store_ref,
        "TargetResource": f"arn:aws:s3:::{dst.bucket}",
        "TargetKeyPrefix": dst.prefix,
        "SourceKeyPrefix": src.prefix,
        "SkipExisting": skip,
        "ChecksumAlgorithm": algorithm,
    }
    if part_size is not None:
        operation["PartSizeBytes"] = part_size
    return {
        "Operation": {"S3batchTransfer": operation},
        "ManifestGenerator": {"S3JobManifestGenerator": generator},
        "Report": {"Enabled": False},
        "Priority": TRANSFER_PRIORITY,
        "ConfirmationRequired": False,
        "Description": f"s3batch transfer {src.text} {dst.text}"[:256],
    }


@dataclass(frozen=True, slots=True)
class Summary:
    copied: int
    skipped: int
    failed: int
    bytes_copied: int

    def line(self) -> str:
        return (
            f"{self.copied} copied ({self.bytes_copied:,} bytes), {self.skipped} skipped (identical), "
            f"{self.failed} failed"
        )


def summarize(rows: list[ReportRow]) -> Summary:
    counts: Counter[str] = Counter()
    copied_bytes = 0
    for row in rows:
        if row.status == "failed":
            counts["failed"] += 1
        elif row.message.startswith(SKIPPED_IDENTICAL):
            counts["skipped"] += 1
        elif row.message.startswith(COPIED):
            counts["copied"] += 1
            copied_bytes += _bytes_of(row.message)
    return Summary(counts["copied"], counts["skipped"], counts["failed"], copied_bytes)


def _bytes_of(message: str) -> int:
    for field in message.split("; "):
        if field.startswith("Bytes="):
            return int(field[len("Bytes=") :])
    return 0


@click.command("transfer")
@click.argument("src")
@click.argument("dst")
@click.option(
    "--skip-existing",
    type=click.Choice([m.value for m in SkipExisting]),
    default=SkipExisting.SIZE_AND_CHECKSUM.value,
    show_default=True,
    help="Leave objects DST already holds alone (like DistCp -update).",
)
@click.option("--checksum-algorithm", type=click.Choice(_ALGORITHMS), default="CRC32C", show_default=True)
@click.option(
    "--part-size-bytes", type=int, help="Preferred part size (default 8 MiB; grown for huge objects)."
)
@click.option("--no-wait", is_flag=True, help="Print the job id and let a background worker run it.")
@pass_ctx
def transfer(
    ctx: CliContext,
    /,
    src: str,
    dst: str,
    skip_existing: str,
    checksum_algorithm: str,
    part_size_bytes: int | None,
    no_wait: bool,
) -> None:
    """Copy a folder or bucket prefix to another store as one job, with verified checksums."""
    try:
        named = load_named_stores(ctx.settings.home)
    except S3BatchError as exc:
        raise click.ClickException(str(exc)) from exc
    source, target = parse_location(src, named), parse_location(dst, named)
    if isinstance(target.store, LocalConfig):
        (Path(target.store.root) / target.bucket).mkdir(parents=True, exist_ok=True)
    request = transfer_request(source, target, skip_existing, checksum_algorithm, part_size_bytes)

    async def go(service: JobService) -> Job:
        return await service.create_job(request, storage=source.store, functions={})

    job = ctx.with_service(go)
    if no_wait:
        from s3batch.service.worker import ensure_worker

        ensure_worker(ctx.settings)
        click.echo(job.job_id)
        return
    final = follow(ctx, job.job_id, job.account_id)
    sys.exit(_print_summary(ctx, final))


def _print_summary(ctx: CliContext, job: Job) -> int:
    """The outcome on stdout; the exit status."""

    async def rows(service: JobService) -> list[ReportRow]:
        return [r async for batch in service.store.report_rows(job.job_id) for r in batch]

    all_rows = ctx.with_service(rows)
    summary = summarize(all_rows)
    click.echo(f"Job {job.job_id} {job.status.value}: {summary.line()}")
    failed = [r for r in all_rows if r.status == "failed"]
    if failed:
        from rich.console import Console

        Console(width=max(Console().width, 120)).print(
            report_table(
                failed[:MAX_FAILURES_SHOWN], f"Failures (all: s3batch report {job.job_id} --failed-only)"
            )
        )
    for reason in job.failure_reasons:
        click.echo(f"{reason.code}: {reason.reason}", err=True)
    ok = job.status is JobStatus.COMPLETE and summary.failed == 0
    return EXIT_COMPLETE if ok else EXIT_NOT_COMPLETE
