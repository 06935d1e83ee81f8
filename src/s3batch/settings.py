"""Settings: every tunable named once, with its unit, read from the environment.

S3BATCH_HOME            state directory (job store, worker log, default local buckets)
S3BATCH_STORAGE         file:///path | s3:// | http(s)://host:port (see storage.config)
S3BATCH_CONCURRENCY     tasks in flight per job
S3BATCH_FUNCTION_WORKERS  handler processes for LambdaInvoke (default: CPU count)
S3BATCH_FUNCTION_TIMEOUT  seconds one handler call may run
S3BATCH_MAX_ATTEMPTS    attempts per task for retryable failures
S3BATCH_ENGINE          local (asyncio, default) | process (a pool of processes) | ray (a Ray cluster)
S3BATCH_PROCESSES       processes of the process engine (default: CPU count)
S3BATCH_RAY_ADDRESS     ray engine: auto | host:port of a Ray cluster (unset: a private one here)
S3BATCH_RAY_ACTORS      ray engine: actors per job (default: the cluster's CPUs)
S3BATCH_JOB_RETENTION_DAYS      days a finished job stays (default 90, as AWS)
S3BATCH_SUSPENDED_TIMEOUT_DAYS  days a job may wait for confirmation (default 30, as AWS)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from s3batch.errors import ConfigError
from s3batch.retry import RetryPolicy

#: The server's configuration file in S3BATCH_HOME: access keys, roles, functions, pipelines.
SERVER_FILE = "server.toml"
#: Default tasks in flight per job. More than ~64 rarely helps against one endpoint.
DEFAULT_CONCURRENCY = 64
#: Default seconds a function handler may run (AWS Lambda's default is 3; batch work is longer).
DEFAULT_FUNCTION_TIMEOUT_S = 60.0
#: Account used when none is given (the AWS CLI requires one; s3batch does not).
DEFAULT_ACCOUNT_ID = "000000000000"
DEFAULT_REGION = "us-east-1"
#: Days a finished job stays visible (AWS: 90), and days a job may wait for confirmation (AWS: 30).
DEFAULT_JOB_RETENTION_DAYS = 90.0
DEFAULT_SUSPENDED_TIMEOUT_DAYS = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    home: Path
    concurrency: int = DEFAULT_CONCURRENCY
    function_workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    function_timeout_s: float = DEFAULT_FUNCTION_TIMEOUT_S
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: "local" (asyncio in the worker), "process" (a pool of worker processes) or "ray" (docs/ray.md).
    engine: str = "local"
    processes: int = field(default_factory=lambda: os.cpu_count() or 1)
    #: The Ray cluster to join ("auto", host:port); None: start a private one on this machine.
    ray_address: str | None = None
    #: Actors of the ray engine per job; 0: as many as the cluster's CPUs allow.
    ray_actors: int = 0
    job_retention_days: float = DEFAULT_JOB_RETENTION_DAYS
    suspended_timeout_days: float = DEFAULT_SUSPENDED_TIMEOUT_DAYS
    account_id: str = DEFAULT_ACCOUNT_ID
    region: str = DEFAULT_REGION

    @property
    def db_path(self) -> Path:
        return self.home / "jobs.sqlite3"

    @property
    def buckets_root(self) -> Path:
        """The embedded default object store: one sub-folder per bucket."""
        return self.home / "buckets"

    @property
    def functions_file(self) -> Path:
        return self.home / "functions.toml"

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        home = Path(env.get("S3BATCH_HOME") or platformdirs.user_data_dir("s3batch"))
        return cls(
            home=home.expanduser().resolve(),
            concurrency=_int(env, "S3BATCH_CONCURRENCY", DEFAULT_CONCURRENCY),
            function_workers=_int(env, "S3BATCH_FUNCTION_WORKERS", os.cpu_count() or 1),
            function_timeout_s=_float(env, "S3BATCH_FUNCTION_TIMEOUT", DEFAULT_FUNCTION_TIMEOUT_S),
            retry=RetryPolicy(max_attempts=_int(env, "S3BATCH_MAX_ATTEMPTS", RetryPolicy().max_attempts)),
            engine=env.get("S3BATCH_ENGINE") or "local",
            job_retention_days=_float(env, "S3BATCH_JOB_RETENTION_DAYS", DEFAULT_JOB_RETENTION_DAYS),
            suspended_timeout_days=_float(
                env, "S3BATCH_SUSPENDED_TIMEOUT_DAYS", DEFAULT_SUSPENDED_TIMEOUT_DAYS
            ),
            processes=_int(env, "S3BATCH_PROCESSES", os.cpu_count() or 1),
            ray_address=env.get("S3BATCH_RAY_ADDRESS") or None,
            ray_actors=_int(env, "S3BATCH_RAY_ACTORS", 0),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
        )

    def to_env(self) -> dict[str, str]:
        """The environment from which `from_env` rebuilds these settings (for a child worker
        process). account_id is not read from the environment: the worker takes it from jobs.
        Nor is the region: it comes from the AWS variables the child inherits unchanged, which
        its identity fingerprint covers (service/identity.py)."""
        return {
            "S3BATCH_HOME": str(self.home),
            "S3BATCH_CONCURRENCY": str(self.concurrency),
            "S3BATCH_FUNCTION_WORKERS": str(self.function_workers),
            "S3BATCH_FUNCTION_TIMEOUT": repr(self.function_timeout_s),
            "S3BATCH_MAX_ATTEMPTS": str(self.retry.max_attempts),
            "S3BATCH_ENGINE": self.engine,
            "S3BATCH_JOB_RETENTION_DAYS": repr(self.job_retention_days),
            "S3BATCH_SUSPENDED_TIMEOUT_DAYS": repr(self.suspended_timeout_days),
            "S3BATCH_PROCESSES": str(self.processes),
            **({"S3BATCH_RAY_ADDRESS": self.ray_address} if self.ray_address else {}),
            **({"S3BATCH_RAY_ACTORS": str(self.ray_actors)} if self.ray_actors else {}),
        }


def _int(env: os._Environ[str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a whole number") from exc
    if value < 1:
        raise ConfigError(f"{name} must be at least 1")
    return value


def _float(env: os._Environ[str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a number") from exc
    if value <= 0:
        raise ConfigError(f"{name} must be positive")
    return value
