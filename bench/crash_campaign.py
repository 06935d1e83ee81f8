"""Crash campaign: `kill -9` the background worker at many points of a job, then check that the
job still completes, reports every task exactly once, and leaves objects in the right state.

    .venv/bin/python bench/crash_campaign.py [--tasks 50000] [--kills 20] \
        [--operation copy|tagging|delete|invoke|pipeline|all] [--seed 1] [--server local|moto]

Each campaign seeds objects (keys with spaces and `+`), writes a URL-encoded CSV manifest,
creates the job with `python -m s3batch create-job`, then kills the worker (pid from
$S3BATCH_HOME/worker.pid) N times and restarts it each time with `describe-job`, as a user
would. Kill points: some while Preparing (right after the job starts), most at random progress
points while Active (plus random jitter so kills land anywhere in a flush cycle), and some while
Completing (the report being written). tagging always runs on moto's server: the folder store
is checked through files only, and rclone destroys objects on tagging.

The pipeline campaign (`--operation pipeline`, on the folder store) lays out N files in a
staging bucket, writes a pipeline file (function `pipeline_handlers:check`, which refuses every
key containing "bad": those go to the error bucket with a `.error.json` record after
max_attempts, the rest to the archive), runs `s3batch pipeline run FILE --backlog` in its own
process group, SIGKILLs the group at N points (Starting, random progress fractions read from
the state DB plus jitter, Closing) and relaunches it each time. In the end: every file exactly
once in the archive or the error bucket with its own bytes, staging empty, one final row per
file in the state DB, each file exactly once in `s3batch pipeline report` with its outcome, no
file twice in the per-run reports, and re-run claims within one batch per kill.

Tests import this module (tests/integration/test_crash.py runs a small variant in CI).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote_plus

ROOT = Path(__file__).resolve().parent.parent
HANDLERS = ROOT / "tests" / "fixtures" / "handlers"
sys.path.insert(0, str(Path(__file__).resolve().parent))

OPERATIONS = ("copy", "tagging", "delete", "invoke")
#: The event-pipeline campaign (`s3batch pipeline run --backlog`), run after the job campaigns.
PIPELINE = "pipeline"
CAMPAIGNS = (*OPERATIONS, PIPELINE)
SOURCE, DEST, META = "crash-src", "crash-dst", "crash-meta"
MANIFEST_KEY, REPORT_PREFIX = "manifest.csv", "reports"
TAG = {"Key": "crash", "Value": "survived"}
ACCOUNT = "123456789012"
TERMINAL = frozenset({"Complete", "Failed", "Cancelled"})

#: Poll interval for the job's status in the job store, in seconds: short, so a kill aimed at a
#: brief phase (Preparing, Completing) lands while the phase is still on.
POLL_S = 0.002
#: Upper bound of the random delay added after a kill point is reached, in seconds (about
#: three flush intervals, so kills fall anywhere between two durable flushes).
JITTER_MAX_S = 0.3
#: How long a killed worker may take to disappear (and release its flock), in seconds.
DEATH_TIMEOUT_S = 5.0
#: How long a restarted worker may take to write worker.pid, in seconds.
WORKER_START_TIMEOUT_S = 15.0
#: `describe-job` calls made to get a worker back after one kill before giving up.
RESTART_TRIES = 3
#: Seconds between `describe-job` calls while waiting for the end (each makes sure a worker runs).
NUDGE_INTERVAL_S = 3.0
#: Limit on one CLI command, in seconds.
CLI_TIMEOUT_S = 120.0
#: Threads that seed and check objects on an S3 server.
IO_THREADS = 16
#: Slack on the in-flight + unflushed duplicate bound for scheduling jitter on 2 cores.
DUPLICATE_SLACK = 2.0
#: Fake credentials: moto accepts any, and they keep botocore away from real AWS config.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


# Pipeline campaign: staging → pipeline_handlers:check → archive (or errors), on the folder store.
STAGING, ARCHIVE, ERRORS = "crash-staging", "crash-archive", "crash-errors"
PIPELINE_NAME = "crash"
#: The function: raises ValueError for any key containing "bad", else returns {"keys": [key]},
#: which the pipeline's report row carries (so each row shows which file the call saw).
PIPELINE_FUNCTION = "pipeline_handlers:check"
#: Attempts per file: 2, so failing files take the retry path before the error bucket.
PIPELINE_MAX_ATTEMPTS = 2
#: Every PIPELINE_BAD_EVERY-th file fails deterministically (and waits runner.RETRY_DELAY_S
#: before its second attempt, while other files go on).
PIPELINE_BAD_EVERY = 100
#: Every PIPELINE_TOP_EVERY-th file lies at the top level as "batch NNN+…", which sorts before
#: the folder "batch NNN/" ('+' < '/'): the poll cursor resumed after a kill must honour it.
PIPELINE_TOP_EVERY = 7
#: Where the pipeline writes its per-run completion reports (bucket META).
PIPELINE_REPORT_PREFIX = "pipelines"
#: Error records next to failed files, as the README documents: `<key>.error.json`.
ERROR_RECORD_SUFFIX = ".error.json"
#: Name marker of the folder store's in-progress writes (temp files, not objects).
TEMP_MARKER = ".s3batch-tmp-"
#: File states on the way through the pipeline (pipelines/state.py); every other state is final.
PIPELINE_PENDING_STATES = ("received", "processing", "processed")
#: Upper bound of the random delay after a run's first write to the state DB (admission, first
#: claim, or finishing the previous run's processed files) before a "Starting" kill, in seconds:
#: a few files' worth at ~200 files/s, so it lands among the run's first steps.
STARTING_JITTER_MAX_S = 0.05


# -- object stores, driven through their own API (never through s3batch) -----------------------


class Objects(Protocol):
    storage_url: str

    def make_bucket(self, bucket: str) -> None: ...
    def put_many(self, bucket: str, items: dict[str, bytes]) -> None: ...
    def put(self, bucket: str, key: str, body: bytes) -> str: ...
    def get(self, bucket: str, key: str) -> bytes | None: ...
    def get_many(self, bucket: str, keys: list[str]) -> dict[str, bytes | None]: ...
    def keys(self, bucket: str) -> list[str]: ...
    def tags_many(self, bucket: str, keys: list[str]) -> dict[str, dict[str, str]]: ...


class LocalObjects:
    """The embedded folder store: one file per object under root/bucket/key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.storage_url = f"file://{root}"

    def make_bucket(self, bucket: str) -> None:
        (self.root / bucket).mkdir(parents=True, exist_ok=True)

    def put(self, bucket: str, key: str, body: bytes) -> str:
        path = self.root / bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        return hashlib.md5(body, usedforsecurity=False).hexdigest()

    def put_many(self, bucket: str, items: dict[str, bytes]) -> None:
        for key, body in items.items():
            self.put(bucket, key, body)

    def get(self, bucket: str, key: str) -> bytes | None:
        path = self.root / bucket / key
        return path.read_bytes() if path.is_file() else None

    def get_many(self, bucket: str, keys: list[str]) -> dict[str, bytes | None]:
        return {k: self.get(bucket, k) for k in keys}

    def keys(self, bucket: str) -> list[str]:
        base = self.root / bucket
        # The store may keep hidden side files (metadata); objects are the visible files.
        return [
            str(p.relative_to(base))
            for p in base.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(base).parts)
        ]

    def tags_many(self, bucket: str, keys: list[str]) -> dict[str, dict[str, str]]:
        raise NotImplementedError("tagging campaigns run on moto")


class S3Objects:
    """An S3 server (moto's) through boto3."""

    def __init__(self, endpoint: str) -> None:
        import boto3
        from botocore.config import Config

        self.storage_url = endpoint
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
            config=Config(max_pool_connections=IO_THREADS, retries={"max_attempts": 10}),
        )

    def make_bucket(self, bucket: str) -> None:
        with contextlib.suppress(self.client.exceptions.BucketAlreadyOwnedByYou):
            self.client.create_bucket(Bucket=bucket)

    def put(self, bucket: str, key: str, body: bytes) -> str:
        return str(self.client.put_object(Bucket=bucket, Key=key, Body=body)["ETag"]).strip('"')

    def put_many(self, bucket: str, items: dict[str, bytes]) -> None:
        with ThreadPoolExecutor(IO_THREADS) as pool:
            list(pool.map(lambda kv: self.put(bucket, *kv), items.items()))

    def get(self, bucket: str, key: str) -> bytes | None:
        try:
            return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())
        except self.client.exceptions.NoSuchKey:
            return None

    def get_many(self, bucket: str, keys: list[str]) -> dict[str, bytes | None]:
        with ThreadPoolExecutor(IO_THREADS) as pool:
            return dict(zip(keys, pool.map(lambda k: self.get(bucket, k), keys), strict=True))

    def keys(self, bucket: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]

    def tags_many(self, bucket: str, keys: list[str]) -> dict[str, dict[str, str]]:
        def tags(key: str) -> dict[str, str]:
            tag_set = self.client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
            return {t["Key"]: t["Value"] for t in tag_set}

        with ThreadPoolExecutor(IO_THREADS) as pool:
            return dict(zip(keys, pool.map(tags, keys), strict=True))


# -- the campaign ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CampaignConfig:
    operation: str
    tasks: int
    kills: int
    seed: int = 1
    #: S3BATCH_CONCURRENCY: tasks in flight per job, which bounds re-runs per kill.
    concurrency: int = 64
    #: S3BATCH_FUNCTION_WORKERS for invoke; the pipeline file's `workers` for pipeline.
    function_workers: int = 2
    #: Seconds the invoke handler sleeps per call (0: as fast as it goes).
    handler_delay_s: float = 0.0
    #: Upper bound on the whole job, kills and restarts included, in seconds.
    job_timeout_s: float = 600.0
    #: Pipeline campaign: every bad_every-th file fails (see PIPELINE_BAD_EVERY).
    bad_every: int = PIPELINE_BAD_EVERY


@dataclass(frozen=True, slots=True)
class Kill:
    index: int
    aim: str  # "Preparing", "Active@0.42", "Completing"
    status: str  # the job's status read right before the kill
    done: int  # tasks durably finished then
    at_s: float  # seconds since the job was created
    in_flight: int = -1  # pipeline: files claimed or processed but not yet disposed of (-1: jobs)


@dataclass(slots=True)
class CampaignResult:
    config: CampaignConfig
    server: str
    job_id: str = ""
    status: str = ""
    duration_s: float = 0.0
    kills: list[Kill] = field(default_factory=list)
    duplicates: int = 0
    duplicate_bound: int | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # facts worth printing that are not failures

    @property
    def phases(self) -> Counter[str]:
        return Counter(k.status for k in self.kills)


def object_keys(n: int) -> list[str]:
    """Keys that need URL-encoding in the manifest: spaces, `+`, and a `/` folder level."""
    return [f"part {i // 1000:03d}/obj+{i:06d} a b.txt" for i in range(n)]


def body_of(key: str) -> bytes:
    return f"crash-campaign:{key}".encode()


def encoded(key: str) -> str:
    """A key as the manifest (and so the report and the Lambda event) carries it."""
    return quote_plus(key, safe="/")


def operation_spec(operation: str) -> dict[str, Any]:
    specs: dict[str, dict[str, Any]] = {
        "copy": {"S3PutObjectCopy": {"TargetResource": f"arn:aws:s3:::{DEST}"}},
        "tagging": {"S3PutObjectTagging": {"TagSet": [TAG]}},
        "delete": {"S3DeleteObject": {}},
        "invoke": {"LambdaInvoke": {"FunctionArn": "python:crash_handler:handler"}},
    }
    return specs[operation]


class Campaign:
    """One job under repeated `kill -9`; every wait is bounded by the job's deadline."""

    def __init__(self, config: CampaignConfig, objects: Objects, workdir: Path, server: str) -> None:
        self.config = config
        self.objects = objects
        self.home = workdir / "home"
        self.invocations = workdir / "invocations.log"
        self.keys = object_keys(config.tasks)
        self.rng = random.Random(config.seed)
        self.result = CampaignResult(config, server)
        self.env = {
            **os.environ,
            **FAKE_AWS,
            "S3BATCH_HOME": str(self.home),
            "S3BATCH_STORAGE": objects.storage_url,
            "S3BATCH_CONCURRENCY": str(config.concurrency),
            "S3BATCH_FUNCTION_WORKERS": str(config.function_workers),
            "PYTHONPATH": str(HANDLERS),
            "CRASH_HANDLER_LOG": str(self.invocations),
            "CRASH_HANDLER_DELAY_S": str(config.handler_delay_s),
        }
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
            self.env.pop(name, None)
        self.started = 0.0
        self.deadline = 0.0
        self._db: sqlite3.Connection | None = None

    # -- running ----------------------------------------------------------------------

    def run(self) -> CampaignResult:
        try:
            manifest = self.seed()
            self.started = time.monotonic()
            self.deadline = self.started + self.config.job_timeout_s
            self.result.job_id = self.create_job(manifest)
            self.kill_repeatedly()
            self.result.status = self.wait_terminal()
            self.result.duration_s = time.monotonic() - self.started
            self.verify()
        finally:
            if self._db is not None:
                self._db.close()
            cleanup_processes(self.home)
        return self.result

    def cli(self, *args: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "s3batch", *args],
            capture_output=True, text=True, env=self.env, timeout=CLI_TIMEOUT_S, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"s3batch {args[0]} exited {done.returncode}: {done.stderr[-2000:]}")
        out: dict[str, Any] = json.loads(done.stdout)
        return out

    def seed(self) -> dict[str, Any]:
        for bucket in (SOURCE, DEST, META):
            self.objects.make_bucket(bucket)
        self.objects.put_many(SOURCE, {k: body_of(k) for k in self.keys})
        body = "".join(f"{SOURCE},{encoded(k)}\n" for k in self.keys).encode()
        etag = self.objects.put(META, MANIFEST_KEY, body)
        return {
            "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
            "Location": {"ObjectArn": f"arn:aws:s3:::{META}/{MANIFEST_KEY}", "ETag": etag},
        }

    def create_job(self, manifest: dict[str, Any]) -> str:
        report = {
            "Bucket": f"arn:aws:s3:::{META}", "Format": "Report_CSV_20180820", "Enabled": True,
            "Prefix": REPORT_PREFIX, "ReportScope": "AllTasks",
        }  # fmt: skip
        out = self.cli(
            "create-job", "--account-id", ACCOUNT, "--no-confirmation-required", "--priority", "10",
            "--operation", json.dumps(operation_spec(self.config.operation)),
            "--manifest", json.dumps(manifest), "--report", json.dumps(report),
            "--role-arn", f"arn:aws:iam::{ACCOUNT}:role/batch",
        )  # fmt: skip
        return str(out["JobId"])

    def aims(self) -> list[str]:
        """Where each kill is aimed, in order: ~10 % early (Preparing), ~10 % at the report
        (Completing), the rest at sorted random progress fractions while Active."""
        n = self.config.kills
        n_prep = max(1, n // 10) if n >= 2 else 0
        n_comp = max(1, n // 10) if n >= 3 else 0
        fractions = sorted(self.rng.uniform(0.02, 0.98) for _ in range(n - n_prep - n_comp))
        return ["Preparing"] * n_prep + [f"Active@{f:.2f}" for f in fractions] + ["Completing"] * n_comp

    def kill_repeatedly(self) -> None:
        killed: set[int] = set()
        for index, aim in enumerate(self.aims()):
            pid = self.current_worker(killed)
            if pid is None:
                break  # the job ended: no worker left to kill
            status, done = self.wait_for_aim(aim)
            if status in TERMINAL:
                break
            if aim.startswith("Active@"):
                time.sleep(self.rng.uniform(0.0, JITTER_MAX_S))
                status, done = self.job_row()
            if status in TERMINAL:
                break
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
            at_s = time.monotonic() - self.started
            self.result.kills.append(Kill(index, aim, status, done, at_s))
            wait_gone(pid)
            self.cli("describe-job", "--account-id", ACCOUNT, "--job-id", self.result.job_id)

    def current_worker(self, killed: set[int]) -> int | None:
        """The live worker's pid (not one already killed), restarting it if it does not come
        back; None once the job is terminal."""
        for _ in range(RESTART_TRIES):
            limit = min(self.deadline, time.monotonic() + WORKER_START_TIMEOUT_S)
            while time.monotonic() < limit:
                pid = read_worker_pid(self.home)
                if pid is not None and pid not in killed and is_worker(pid):
                    return pid
                if self.job_row()[0] in TERMINAL:
                    return None
                time.sleep(POLL_S * 10)
            self.cli("describe-job", "--account-id", ACCOUNT, "--job-id", self.result.job_id)
        raise RuntimeError(f"no worker came back within {RESTART_TRIES} restarts")

    def wait_for_aim(self, aim: str) -> tuple[str, int]:
        """Poll the job store until the kill point is reached (or passed); bounded."""
        fraction = float(aim.split("@")[1]) if "@" in aim else 0.0
        while time.monotonic() < self.deadline:
            status, done = self.job_row()
            if status in TERMINAL:
                return status, done
            if aim == "Preparing" and status not in ("New",):
                return status, done
            if aim == "Completing" and status not in ("New", "Preparing", "Ready", "Active"):
                return status, done
            if "@" in aim and (status not in ("New", "Preparing", "Ready", "Active") or (
                status == "Active" and done >= fraction * self.config.tasks
            )):  # fmt: skip
                return status, done
            # Preparing and Completing can last only milliseconds on a small job: spin (the
            # worker gets the other core) instead of sleeping past them.
            time.sleep(POLL_S if "@" in aim else 0)
        raise RuntimeError(f"timed out waiting for kill point {aim}")

    def job_row(self) -> tuple[str, int]:
        """(status, succeeded + failed) straight from the job store: a CLI call takes ~0.4 s,
        too slow to aim at a phase that lasts a few milliseconds."""
        if self._db is None:
            db_path = self.home / "jobs.sqlite3"
            while not db_path.exists():
                time.sleep(POLL_S)
            self._db = sqlite3.connect(db_path, timeout=10.0)
        row = self._db.execute(
            "SELECT status, succeeded + failed FROM jobs WHERE job_id=?", (self.result.job_id,)
        ).fetchone()
        return str(row[0]), int(row[1])

    def wait_terminal(self) -> str:
        nudged = time.monotonic()
        while time.monotonic() < self.deadline:
            status, _ = self.job_row()
            if status in TERMINAL:
                return status
            if time.monotonic() - nudged > NUDGE_INTERVAL_S:
                # describe-job starts a worker if none runs: a stuck job shows as a timeout.
                self.cli("describe-job", "--account-id", ACCOUNT, "--job-id", self.result.job_id)
                nudged = time.monotonic()
            time.sleep(POLL_S * 25)
        self.result.problems.append(
            f"job stuck in {self.job_row()[0]} after {self.config.job_timeout_s:.0f} s"
        )
        return self.job_row()[0]

    # -- checking ---------------------------------------------------------------------

    def verify(self) -> None:
        problems = self.result.problems
        n = self.config.tasks
        job = self.cli("describe-job", "--account-id", ACCOUNT, "--job-id", self.result.job_id)["Job"]
        if job["Status"] != "Complete":
            problems.append(f"status {job['Status']}: {job.get('FailureReasons')}")
        summary = job["ProgressSummary"]
        totals = (
            summary["TotalNumberOfTasks"],
            summary["NumberOfTasksSucceeded"],
            summary["NumberOfTasksFailed"],
        )
        if totals != (n, n, 0):
            problems.append(f"ProgressSummary total/succeeded/failed = {totals}, expected ({n}, {n}, 0)")
        self.verify_report()
        self.verify_objects()

    def verify_report(self) -> None:
        problems = self.result.problems
        base = f"{REPORT_PREFIX}/job-{self.result.job_id}/"
        raw = self.objects.get(META, base + "manifest.json")
        if raw is None:
            problems.append("no report manifest.json")
            return
        reported: Counter[str] = Counter()
        for entry in json.loads(raw)["Results"]:
            body = self.objects.get(META, entry["Key"]) or b""
            if hashlib.md5(body, usedforsecurity=False).hexdigest() != entry["MD5Checksum"]:
                problems.append(f"report file {entry['Key']}: MD5 mismatch")
            for row in csv.reader(io.StringIO(body.decode(), newline="")):
                reported[row[1]] += 1
                if row[3] != "succeeded":
                    problems.append(f"task {row[1]} reported {row[3]}: {row[5]} {row[6]}")
        expected = Counter(encoded(k) for k in self.keys)
        missing, extra = expected - reported, reported - expected
        if missing:
            problems.append(
                f"{sum(missing.values())} tasks missing from the report, e.g. {list(missing)[:3]}"
            )
        if extra:
            problems.append(f"{sum(extra.values())} extra report rows (duplicates), e.g. {list(extra)[:3]}")

    def verify_objects(self) -> None:
        op, problems = self.config.operation, self.result.problems
        if op == "copy":
            got = self.objects.get_many(DEST, self.keys)
            wrong = [k for k in self.keys if got[k] != body_of(k)]
            if wrong:
                problems.append(f"{len(wrong)} copies missing or wrong, e.g. {wrong[:3]}")
        elif op == "tagging":
            tags = self.objects.tags_many(SOURCE, self.keys)
            untagged = [k for k in self.keys if tags[k].get(TAG["Key"]) != TAG["Value"]]
            if untagged:
                problems.append(f"{len(untagged)} objects without the tag, e.g. {untagged[:3]}")
        elif op == "delete":
            left = self.objects.keys(SOURCE)
            if left:
                problems.append(f"{len(left)} objects not deleted, e.g. {left[:3]}")
        elif op == "invoke":
            self.verify_invocations()

    def verify_invocations(self) -> None:
        problems = self.result.problems
        lines = self.invocations.read_text().splitlines() if self.invocations.exists() else []
        calls = Counter(lines)
        expected = Counter(encoded(k) for k in self.keys)
        never = expected - calls
        if never:
            problems.append(f"{sum(never.values())} tasks never invoked, e.g. {list(never)[:3]}")
        self.result.duplicates = len(lines) - len(set(lines))
        bound = self.duplicate_bound()
        self.result.duplicate_bound = bound
        if self.result.duplicates > bound:
            problems.append(f"{self.result.duplicates} re-run invocations, bound {bound}")

    def duplicate_bound(self) -> int:
        """Re-runs a kill may cause: the tasks in flight (concurrency) plus those finished but
        not yet flushed (the runner flushes every FLUSH_INTERVAL_S, or FLUSH_MAX_ROWS rows),
        times the kills that landed while Active (Preparing and Completing run no tasks)."""
        from s3batch.service.progress import FLUSH_INTERVAL_S, FLUSH_MAX_ROWS

        cfg = self.config
        if cfg.handler_delay_s > 0:
            rate_per_s = cfg.function_workers / cfg.handler_delay_s
            unflushed = min(FLUSH_MAX_ROWS, int(rate_per_s * FLUSH_INTERVAL_S * DUPLICATE_SLACK) + 1)
        else:
            unflushed = FLUSH_MAX_ROWS  # no known rate: the size cap is the bound
        active_kills = sum(1 for k in self.result.kills if k.status == "Active")
        return active_kills * (cfg.concurrency + unflushed)


# -- the pipeline campaign ---------------------------------------------------------------------


def pipeline_keys(n: int, bad_every: int) -> list[str]:
    """Keys with spaces and `+`, most in "batch NNN/" folders, some beside them at the top level;
    every bad_every-th contains "bad" (the function refuses it)."""
    keys = []
    for i in range(n):
        kind = "bad" if bad_every > 0 and i % bad_every == bad_every // 2 else "obj"
        if i % PIPELINE_TOP_EVERY == PIPELINE_TOP_EVERY // 2:
            keys.append(f"batch {i // 1000:03d}+{kind} {i:06d}.txt")
        else:
            keys.append(f"batch {i // 1000:03d}/{kind}+{i:06d} a b.txt")
    return keys


def is_bad(key: str) -> bool:
    return "bad" in key  # what pipeline_handlers.check refuses


def pipeline_toml(config: CampaignConfig) -> str:
    return "\n".join([
        f'name = "{PIPELINE_NAME}"', f'source = "{STAGING}"', f'function = "{PIPELINE_FUNCTION}"',
        f"workers = {config.function_workers}", f"max_attempts = {PIPELINE_MAX_ATTEMPTS}",
        'on_success = "archive"', f'archive = "{ARCHIVE}"', f'error = "{ERRORS}"',
        "[report]", f'bucket = "{META}"', f'prefix = "{PIPELINE_REPORT_PREFIX}"', "",
    ])  # fmt: skip


def objects_only(keys: list[str]) -> list[str]:
    """Listed keys less the folder store's in-progress temp files."""
    return [k for k in keys if TEMP_MARKER not in k]


class PipelineCampaign:
    """`s3batch pipeline run --backlog` (the CLI, in its own process group) under repeated
    `kill -9` of that group, restarted after each kill as a user would; every wait is bounded.

    Kill points: ~10 % "Starting" (right after the run's first write to the state DB, plus jitter),
    one "Closing" (every file final, the run still writing its report and closing), the rest at
    random progress fractions (files in a final state in the state DB) plus jitter, each after
    the restarted run has finished at least one file itself.
    """

    def __init__(self, config: CampaignConfig, objects: Objects, workdir: Path) -> None:
        self.config = config
        self.objects = objects
        self.workdir = workdir
        self.home = workdir / "home"
        self.file = workdir / "pipeline.toml"
        self.state_path = workdir / f"{PIPELINE_NAME}.pipeline.sqlite3"
        self.keys = pipeline_keys(config.tasks, config.bad_every)
        self.bad = {k for k in self.keys if is_bad(k)}
        self.rng = random.Random(config.seed)
        self.result = CampaignResult(config, "local")
        self.env = {
            **os.environ,
            **FAKE_AWS,
            "S3BATCH_HOME": str(self.home),  # also marks our processes for cleanup_processes
            "S3BATCH_STORAGE": objects.storage_url,
            "PYTHONPATH": str(HANDLERS),
        }
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
            self.env.pop(name, None)
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.launched_at = 0.0
        self.launched_wall = 0.0  # time.time() at the launch, to compare with the rows' `updated`
        self.done_at_launch = 0
        self.final_files: dict[str, int] = {}
        self.started = 0.0
        self.deadline = 0.0
        self._db: sqlite3.Connection | None = None

    # -- running ----------------------------------------------------------------------

    def run(self) -> CampaignResult:
        try:
            self.seed()
            self.started = time.monotonic()
            self.deadline = self.started + self.config.job_timeout_s
            self.launch()
            self.kill_repeatedly()
            self.result.status = self.wait_finished()
            self.result.duration_s = time.monotonic() - self.started
            self.verify()
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.kill_group()
            if self._db is not None:
                self._db.close()
            cleanup_processes(self.home)
        return self.result

    def seed(self) -> None:
        for bucket in (STAGING, ARCHIVE, ERRORS, META):
            self.objects.make_bucket(bucket)
        self.objects.put_many(STAGING, {k: body_of(k) for k in self.keys})
        self.file.write_text(pipeline_toml(self.config), encoding="utf-8")

    def launch(self) -> None:
        """Start `s3batch pipeline run FILE --backlog` in a new session (its own process group:
        the CLI and the function workers it spawns), output to run-NN.out / .err."""
        self.runs += 1
        out, err = (self.workdir / f"run-{self.runs:02d}.{ext}" for ext in ("out", "err"))
        with out.open("wb") as stdout, err.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "s3batch", "pipeline", "run", str(self.file), "--backlog"],
                env=self.env, cwd=self.workdir, stdout=stdout, stderr=stderr, start_new_session=True,
            )  # fmt: skip
        self.launched_at = time.monotonic()
        self.launched_wall = time.time()
        self.done_at_launch = self.progress()[0]

    def aims(self) -> list[str]:
        n = self.config.kills
        n_start = max(1, n // 10) if n >= 2 else 0
        n_close = 1 if n >= 3 else 0  # one run only ends with work to close (see wait_for_aim)
        fractions = sorted(self.rng.uniform(0.02, 0.98) for _ in range(n - n_start - n_close))
        return ["Starting"] * n_start + [f"Active@{f:.2f}" for f in fractions] + ["Closing"] * n_close

    def kill_repeatedly(self) -> None:
        for index, aim in enumerate(self.aims()):
            if not self.wait_for_aim(aim):
                break  # the run ended on its own: nothing left to kill
            done, in_flight = self.progress()
            status = self.phase(done)
            if not self.kill_group():
                break  # it exited between the check and the kill: the kill did not land
            at_s = time.monotonic() - self.started
            self.result.kills.append(Kill(index, aim, status, done, at_s, in_flight))
            self.launch()

    def phase(self, done: int) -> str:
        if done >= self.config.tasks:
            return "Closing"
        return "Starting" if done <= self.done_at_launch else "Active"

    def wait_for_aim(self, aim: str) -> bool:
        """Wait until the kill point; False if the run ended first."""
        assert self.proc is not None
        n = self.config.tasks
        if aim == "Starting":
            return self.wait_for_start()
        fraction = float(aim.split("@")[1]) if "@" in aim else 1.0
        while time.monotonic() < self.deadline:
            if self.proc.poll() is not None:
                return False
            done = self.progress()[0]
            if aim == "Closing" and done >= n:
                # Only the run that finished the last files has a report to write; a run started
                # after that has nothing to close: a kill there would be a second Starting.
                return self.done_at_launch < n
            if "@" in aim and done >= fraction * n and done > self.done_at_launch:
                return self.sleep_while_running(time.monotonic() + self.rng.uniform(0.0, JITTER_MAX_S))
            time.sleep(POLL_S)  # Closing lasts only as long as the report write: poll fast
        raise RuntimeError(f"timed out waiting for kill point {aim}")

    def wait_for_start(self) -> bool:
        """Wait for the run's first write to the state DB, then a little jitter."""
        assert self.proc is not None
        while time.monotonic() < self.deadline:
            if self.proc.poll() is not None:
                return False
            if self.wrote_since_launch():
                return self.sleep_while_running(
                    time.monotonic() + self.rng.uniform(0.0, STARTING_JITTER_MAX_S)
                )
            time.sleep(POLL_S)
        raise RuntimeError("timed out waiting for kill point Starting")

    def sleep_while_running(self, until: float) -> bool:
        assert self.proc is not None
        while time.monotonic() < min(until, self.deadline) and self.proc.poll() is None:
            time.sleep(POLL_S)
        return self.proc.poll() is None

    def kill_group(self) -> bool:
        """SIGKILL the run's process group and wait until every process of this campaign is
        gone; True if the kill ended a running process (False: it had already exited)."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        landed = self.proc.wait(timeout=DEATH_TIMEOUT_S) == -signal.SIGKILL
        limit = time.monotonic() + DEATH_TIMEOUT_S
        while (alive := live_processes_of(self.home)) and time.monotonic() < limit:
            time.sleep(POLL_S)
        if alive:
            self.result.problems.append(f"{len(alive)} processes outlived kill -9 of run {self.runs}")
        return landed

    def state_db(self) -> sqlite3.Connection | None:
        """A reader on the pipeline's state DB; None until the first run has created it."""
        if self._db is None:
            # Connect once WAL mode is on (its -wal file exists): a reader in the old journal
            # mode could hold the lock the pipeline's `PRAGMA journal_mode=WAL` needs.
            if not self.state_path.with_name(self.state_path.name + "-wal").exists():
                return None
            self._db = sqlite3.connect(self.state_path, timeout=10.0)
        return self._db

    def wrote_since_launch(self) -> bool:
        """Whether the current run has changed a file row yet (every change sets `updated`)."""
        db = self.state_db()
        try:
            query = "SELECT 1 FROM files WHERE updated > ? LIMIT 1"
            return db is not None and db.execute(query, (self.launched_wall,)).fetchone() is not None
        except sqlite3.OperationalError:  # the schema is not there yet
            return False

    def progress(self) -> tuple[int, int]:
        """(files in a final state, files claimed or processed but not yet disposed of), straight
        from the state DB (0, 0 until the first run has created it)."""
        db = self.state_db()
        if db is None:
            return 0, 0
        # Two cheap reads (~0.1 ms at 50,000 files: count(*), then the few pending rows through
        # the state index), total first: `done` can lag, never run ahead of the real count.
        try:
            (total,) = db.execute("SELECT count(*) FROM files").fetchone()
            rows = db.execute(
                "SELECT state, count(*) FROM files WHERE state IN (?, ?, ?) GROUP BY state",
                PIPELINE_PENDING_STATES,
            ).fetchall()
        except sqlite3.OperationalError:  # the schema is not there yet
            return 0, 0
        pending = {str(state): int(count) for state, count in rows}
        return int(total) - sum(pending.values()), pending.get("processing", 0) + pending.get("processed", 0)

    def wait_finished(self) -> str:
        """Let the last run finish; its JSON line gives the files by state."""
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=max(0.0, self.deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.result.problems.append(f"pipeline still running after {self.config.job_timeout_s:.0f} s")
            return "Stuck"
        out, err = (self.workdir / f"run-{self.runs:02d}.{ext}" for ext in ("out", "err"))
        if rc != 0:
            self.result.problems.append(f"run {self.runs} exited {rc}: {err.read_text()[-2000:]}")
            return "Failed"
        self.final_files = json.loads(out.read_text().strip().splitlines()[-1])["files"]
        return "Complete"

    # -- checking ---------------------------------------------------------------------

    def verify(self) -> None:
        n_bad = len(self.bad)
        expected = {"archived": len(self.keys) - n_bad, "errored": n_bad}
        if self.final_files != {k: v for k, v in expected.items() if v}:
            self.result.problems.append(f"last run reports files {self.final_files}, expected {expected}")
        self.verify_buckets()
        self.verify_state()
        self.verify_report()
        self.verify_bucket_reports()

    def verify_buckets(self) -> None:
        """Each file ends exactly once: in the archive (succeeded) or the error bucket (failed,
        with its record), with its own bytes; nothing is left in staging."""
        problems = self.result.problems
        left = objects_only(self.objects.keys(STAGING))
        if left:
            problems.append(f"{len(left)} files left unprocessed in staging, e.g. {left[:3]}")
        archived = objects_only(self.objects.keys(ARCHIVE))
        in_errors = objects_only(self.objects.keys(ERRORS))
        records = [k for k in in_errors if k.endswith(ERROR_RECORD_SUFFIX)]
        errored = [k for k in in_errors if not k.endswith(ERROR_RECORD_SUFFIX)]
        placed = Counter(archived) + Counter(errored)
        known = set(self.keys)
        for what, found in (
            ("missing from both archive and errors", [k for k in self.keys if not placed[k]]),
            ("in both archive and errors", [k for k, c in placed.items() if c > 1]),
            ("unexpected in the buckets", [k for k in placed if k not in known]),
            ("good files in the error bucket", [k for k in errored if k not in self.bad]),
            ("bad files in the archive", [k for k in archived if k in self.bad]),
        ):
            if found:
                problems.append(f"{len(found)} {what}, e.g. {found[:3]}")
        bodies = self.objects.get_many(ARCHIVE, archived) | self.objects.get_many(ERRORS, errored)
        wrong = [k for k, body in bodies.items() if body != body_of(k)]
        if wrong:
            problems.append(f"{len(wrong)} moved files with wrong bytes, e.g. {wrong[:3]}")
        self.verify_error_records(records)
        temp = [k for b in (STAGING, ARCHIVE, ERRORS) for k in self.objects.keys(b) if TEMP_MARKER in k]
        if temp:
            self.result.notes.append(f"{len(temp)} temp files of interrupted writes left behind")

    def verify_error_records(self, records: list[str]) -> None:
        problems = self.result.problems
        expected = {k + ERROR_RECORD_SUFFIX for k in self.bad}
        if set(records) != expected:
            problems.append(f"error records: {len(expected - set(records))} missing, "
                            f"{len(set(records) - expected)} unexpected")  # fmt: skip
        most = PIPELINE_MAX_ATTEMPTS + len(self.result.kills)
        for name, raw in self.objects.get_many(ERRORS, sorted(expected & set(records))).items():
            record = json.loads(raw or b"{}")
            key = name[: -len(ERROR_RECORD_SUFFIX)]
            got = (record.get("key"), record.get("code"), record.get("bucket"))
            if got != (key, "ValueError", STAGING) or not PIPELINE_MAX_ATTEMPTS <= record["attempts"] <= most:
                problems.append(f"error record {name}: {got}, attempts {record.get('attempts')}")

    def verify_state(self) -> None:
        """One row per file in the state DB, in its final state; count re-runs (claims beyond a
        file's normal attempts: 1 if it succeeds, max_attempts if it fails)."""
        problems = self.result.problems
        with contextlib.closing(sqlite3.connect(self.state_path, timeout=10.0)) as db:
            rows = db.execute("SELECT key, state, succeeded, attempts FROM files").fetchall()
        per_key = Counter(str(r[0]) for r in rows)
        twice = [k for k, c in per_key.items() if c > 1]
        missing = [k for k in self.keys if not per_key[k]]
        if twice or missing or len(per_key) != len(self.keys):
            problems.append(f"state DB: {len(rows)} rows for {len(self.keys)} files; "
                            f"{len(twice)} keys twice, {len(missing)} missing")  # fmt: skip
        reruns, wrong = 0, []
        for key, state, succeeded, attempts in rows:
            bad = key in self.bad
            if (state, bool(succeeded)) != (("errored", False) if bad else ("archived", True)):
                wrong.append((key, state))
            reruns += max(0, attempts - (PIPELINE_MAX_ATTEMPTS if bad else 1))
        if wrong:
            problems.append(f"{len(wrong)} files in the wrong final state, e.g. {wrong[:3]}")
        # At most one batch (workers × records_per_call = 1) is claimed at a time, and only a
        # claimed batch can run again: that bounds the re-runs each kill may cause.
        self.result.duplicates = reruns
        bound = sum(1 for k in self.result.kills if k.status != "Closing") * self.config.function_workers
        self.result.duplicate_bound = bound
        if reruns > bound:
            problems.append(f"{reruns} re-run claims, bound {bound}")

    def verify_report(self) -> None:
        """`s3batch pipeline report` (every run's rows, from the state DB): each file exactly
        once, with its outcome and what the function said about it."""
        problems = self.result.problems
        done = subprocess.run(
            [sys.executable, "-m", "s3batch", "pipeline", "report", str(self.file)],
            capture_output=True, text=True, env=self.env, timeout=CLI_TIMEOUT_S, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            problems.append(f"pipeline report exited {done.returncode}: {done.stderr[-2000:]}")
            return
        rows = list(csv.reader(io.StringIO(done.stdout, newline="")))
        self.check_rows(rows, "report", exactly_once=True)

    def check_rows(self, rows: list[list[str]], where: str, *, exactly_once: bool) -> None:
        problems = self.result.problems
        by_raw = {encoded(k): k for k in self.keys}
        reported = Counter(row[1] for row in rows)
        missing = [k for k in by_raw if not reported[k]] if exactly_once else []
        twice = [k for k, c in reported.items() if c > 1]
        unknown = [k for k in reported if k not in by_raw]
        if missing or twice or unknown:
            problems.append(f"{where}: {len(missing)} files missing, {len(twice)} listed more than once, "
                            f"{len(unknown)} unknown, e.g. {(missing + twice + unknown)[:3]}")  # fmt: skip
        wrong = []
        for row in rows:
            key = by_raw.get(row[1])
            if key is None:
                continue
            if key in self.bad:
                ok = row[3] == "failed" and row[5] == "ValueError" and f"refusing {[key]}" in row[6]
            else:
                ok = row[3] == "succeeded" and row[6] == json.dumps({"keys": [key]})
            if not ok:
                wrong.append(row[1:4])
        if wrong:
            problems.append(f"{where}: {len(wrong)} rows with the wrong outcome, e.g. {wrong[:3]}")

    def verify_bucket_reports(self) -> None:
        """The per-run completion reports in the report bucket: intact (MD5), and every file in
        exactly one of them (a killed run's report is written by the next run)."""
        base = f"{PIPELINE_REPORT_PREFIX}/{PIPELINE_NAME}/"
        manifests = [k for k in self.objects.keys(META) if k.startswith(base) and k.endswith("manifest.json")]
        rows: list[list[str]] = []
        for name in manifests:
            for entry in json.loads(self.objects.get(META, name) or b"{}").get("Results", []):
                body = self.objects.get(META, entry["Key"]) or b""
                if hashlib.md5(body, usedforsecurity=False).hexdigest() != entry["MD5Checksum"]:
                    self.result.problems.append(f"report file {entry['Key']}: MD5 mismatch")
                rows.extend(csv.reader(io.StringIO(body.decode(), newline="")))
        self.check_rows(rows, "report bucket", exactly_once=True)
        self.result.notes.append(
            f"report bucket: {len(manifests)} run report(s) of {self.runs} runs list {len(rows)} of "
            f"{len(self.keys)} files"
        )


# -- processes ---------------------------------------------------------------------------------


def read_worker_pid(home: Path) -> int | None:
    try:
        return int((home / "worker.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def is_worker(pid: int) -> bool:
    """A live (not zombie) `s3batch worker` process: guards against killing a recycled pid."""
    if _proc_state(pid) in (None, "Z", "X"):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"s3batch" in argv and b"worker" in argv


def wait_gone(pid: int) -> None:
    """Wait until a killed process is dead (a zombie counts): its flock is then released, so
    the next command's ensure_worker starts a new worker instead of seeing the old lock."""
    limit = time.monotonic() + DEATH_TIMEOUT_S
    while time.monotonic() < limit and _proc_state(pid) not in (None, "Z", "X"):
        time.sleep(POLL_S)


def processes_of(home: Path) -> list[int]:
    """Our user's processes started for this S3BATCH_HOME (workers and their handler pools)."""
    marker = f"S3BATCH_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def live_processes_of(home: Path) -> list[int]:
    """processes_of(home) less zombies (a killed process not yet reaped by its parent)."""
    return [pid for pid in processes_of(home) if _proc_state(pid) not in (None, "Z", "X")]


def cleanup_processes(home: Path) -> None:
    """Kill every process this campaign's HOME started, by pid, so none outlives a failure."""
    pid = read_worker_pid(home)
    if pid is not None and is_worker(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for other in processes_of(home):
        with contextlib.suppress(ProcessLookupError):
            os.kill(other, signal.SIGKILL)


# -- command line ------------------------------------------------------------------------------


@contextlib.contextmanager
def objects_for(server: str, workdir: Path) -> Iterator[tuple[Objects, str]]:
    if server == "local":
        root = workdir / "buckets"
        root.mkdir(parents=True, exist_ok=True)
        yield LocalObjects(root), "local"
        return
    from servers import moto_server

    with moto_server() as (endpoint, _proc):
        yield S3Objects(endpoint), "moto"


def run_one(config: CampaignConfig, server: str) -> CampaignResult:
    with tempfile.TemporaryDirectory(prefix=f"crash-{config.operation}-") as tmp:
        if config.operation == PIPELINE:  # pipelines run on the folder store (checked through files)
            return PipelineCampaign(config, LocalObjects(Path(tmp) / "buckets"), Path(tmp)).run()
        with objects_for(server, Path(tmp)) as (objects, name):
            return Campaign(config, objects, Path(tmp), name).run()


def summary_table(results: list[CampaignResult]) -> str:
    head = f"{'operation':<9} {'server':<6} {'tasks':>7} {'kills':>5} {'Prep':>4} {'Active':>6} {'Compl':>5} "
    head += f"{'other':>5} {'status':<9} {'time s':>7} {'dups':>11}  result"
    lines = [head, "-" * len(head)]
    for r in results:
        p = r.phases
        # A pipeline's kill points: Starting counts as Prep, Closing (report write) as Compl.
        p["Preparing"] += p.pop("Starting", 0)
        p["Completing"] += p.pop("Closing", 0)
        other = sum(p.values()) - p["Preparing"] - p["Active"] - p["Completing"]
        dups = f"{r.duplicates}/{r.duplicate_bound}" if r.duplicate_bound is not None else "-"
        verdict = "OK" if not r.problems else "FAIL"
        cells = (
            f"{r.config.operation:<9} {r.server:<6} {r.config.tasks:>7} {len(r.kills):>5}",
            f"{p['Preparing']:>4} {p['Active']:>6} {p['Completing']:>5} {other:>5}",
            f"{r.status:<9} {r.duration_s:>7.1f} {dups:>11}  {verdict}",
        )
        lines.append(" ".join(cells))
        lines.extend(f"    ! {problem}" for problem in r.problems)
        lines.extend(f"    - {note}" for note in r.notes)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--operation", choices=(*CAMPAIGNS, "all"), default="all")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--server", choices=("local", "moto"), default="local")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--handler-delay", type=float, default=0.0, help="seconds per invoke call")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per job, kills included")
    parser.add_argument(
        "--bad-every", type=int, default=PIPELINE_BAD_EVERY, help="pipeline: every Nth file fails"
    )
    args = parser.parse_args()
    operations = CAMPAIGNS if args.operation == "all" else (args.operation,)
    results = []
    for i, op in enumerate(operations):
        config = CampaignConfig(
            op, args.tasks, args.kills, args.seed + i, args.concurrency,
            handler_delay_s=args.handler_delay, job_timeout_s=args.timeout, bad_every=args.bad_every,
        )  # fmt: skip
        server = {"tagging": "moto", PIPELINE: "local"}.get(op, args.server)
        print(f"== {op} on {server}: {args.tasks} tasks, {args.kills} kills", flush=True)
        result = run_one(config, server)
        for k in result.kills:
            print(f"   kill {k.index:>2} aimed {k.aim:<12} hit {k.status:<10}", end="")
            in_flight = f" in flight {k.in_flight:>3}" if k.in_flight >= 0 else ""
            print(f" done {k.done:>6}{in_flight} at {k.at_s:6.1f} s")
        results.append(result)
        print(summary_table([result]), flush=True)  # each verdict as soon as known: runs are long
    print(summary_table(results))
    return 0 if all(not r.problems for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
