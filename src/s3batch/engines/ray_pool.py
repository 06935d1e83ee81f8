"""The Ray engine's idle actors, kept by the driver for its next job of the same shape.

Starting an actor costs about a second (a Ray worker process, s3batch's imports, its first
connection pool): a worker driving job after job would pay it per job. A run that ended cleanly
hands its actors back here; the next run with the same key takes them instead of starting new
ones. The key holds what an actor cannot change between jobs: the Ray session it lives in,
what it reserves (CPUs, GPUs) and the environment it was given (credentials among it: an actor
only ever serves the environment it already has; the digest stays in memory).

Idle actors hold their reservation, so they are released after `IDLE_S` without a job, and at
once when a run needs actors of another key (they would compete with it for the cluster's
CPUs). A run that failed kills its actors instead of keeping them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from s3batch.idle import IdlePool

#: Seconds an actor waits here for the next job before it is released.
IDLE_S = 60.0


@dataclass(frozen=True, slots=True)
class PoolKey:
    session: str
    cpus: float
    gpus: float
    env_digest: str


def pool_key(session: str, cpus: float, gpus: float, env: Mapping[str, str]) -> PoolKey:
    digest = hashlib.sha256(repr(sorted(env.items())).encode()).hexdigest()
    return PoolKey(session, cpus, gpus, digest)


#: The driver's pool (one per process: a process joins one Ray cluster in its life).
POOL: IdlePool[PoolKey, Any] = IdlePool(IDLE_S)
