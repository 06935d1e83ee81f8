"""A driver process for the Ray engine's tests: drives one job with the engine its environment
names, as a worker would (S3BATCH_ENGINE=ray; S3BATCH_RAY_ADDRESS set or not).

    python tests/ray_driver.py JOB_ID            # S3BATCH_HOME has the job
    python tests/ray_driver.py JOB_ID --observe  # also report the private cluster's processes

Prints one JSON line at the end: the job's status and, with --observe, what it saw while the
first results came in (the PIDs of the private cluster, every address they listened on, and its
temporary folder), so the test can check them after this process has exited.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

from raycluster import descendants, listening_addresses
from s3batch.domain.task import Task
from s3batch.engines import make_engine
from s3batch.engines.base import Engine, Finished
from s3batch.engines.ray_cluster import private_cluster
from s3batch.operations.base import JobContext
from s3batch.service.runner import JobRunner
from s3batch.settings import Settings
from s3batch.store.sqlite import SqliteJobStore


class Observed:
    """Wraps an engine; notes the private cluster's processes at the first group of results."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.seen: dict[str, Any] = {}

    async def run(
        self, job: JobContext, operation: Mapping[str, Any], tasks: AsyncIterator[Task]
    ) -> AsyncIterator[Finished]:
        async for group in self.engine.run(job, operation, tasks):
            if not self.seen:
                self.seen = self._look()
            yield group

    @staticmethod
    def _look() -> dict[str, Any]:
        cluster = private_cluster()
        assert cluster is not None, "no private cluster was started"
        pids = descendants(cluster.process.pid, include_self=True)
        return {
            "pids": pids,
            "listening": listening_addresses(pids),
            "temp_dir": str(cluster.temp_dir),
        }


async def drive(job_id: str, observe: bool) -> dict[str, Any]:
    settings = Settings.from_env()
    engine: Any = make_engine(settings)
    if observe:
        engine = Observed(engine)
    store = SqliteJobStore(settings.db_path)
    try:
        runner = JobRunner(store, engine, settings.function_workers, settings.home / "spool")
        job = await runner.drive(job_id)
    finally:
        await store.close()
    return {"status": job.status.value, **(engine.seen if observe else {})}


def main() -> None:
    result = asyncio.run(drive(sys.argv[1], "--observe" in sys.argv[2:]))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
