"""RayEngine: one job across the machines of a Ray cluster (docs/ray.md).

The driver (this process, where the runner and its job store are) cuts the task stream into
chunks (sized by time: `ChunkSizer`) and hands each to whichever started actor has room: at most
`CHUNKS_PER_ACTOR` chunks per actor are in flight, so a fast actor takes more chunks than a slow
one and nothing is assigned ahead (no stragglers). Each actor runs s3batch's own asyncio engine
over its chunks (engines/ray_actor.py) and returns a chunk's results in one message; the driver
yields them to the runner as one group, so the job store keeps its one writer.

Faults: actors restart without limit (`max_restarts=-1`) and Ray re-runs the chunks a dead
actor was running on its new incarnation (`ACTOR_TASK_RETRIES`); past that, the driver hands the
chunk to another actor (`CHUNK_REDISPATCHES`), and past that its tasks fail with a reason. Each
task is recorded once (the driver drops a result for a task it no longer waits for), but the
operations of a chunk cut short run again: at-least-once, as AWS S3 Batch Operations.

Throttling: every actor's requests share one adaptive limit per job and endpoint, held by the
driver's limiter actor on its node (engines/ray_limiter.py; one for the driver's life, holding
every running job's limit); `stats` mirrors it for the job's timeline. S3BATCH_CONCURRENCY is
that limit's maximum: requests in flight across the cluster.

Actors outlive their job: a run that ended cleanly leaves them to the driver's next job of the
same shape (engines/ray_pool.py), so a worker driving job after job starts no process per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from s3batch.domain.task import Task, TaskResult
from s3batch.engines.base import Finished
from s3batch.engines.batching import ready_batches
from s3batch.engines.limiter import LimitStats
from s3batch.engines.ray_actor import ChunkJob, ChunkWorker
from s3batch.engines.ray_cluster import join, require_ray
from s3batch.engines.ray_limiter import LimiterActor, SharedStats
from s3batch.engines.ray_pool import POOL, pool_key
from s3batch.errors import ConfigError
from s3batch.operations.base import JobContext
from s3batch.operations.invoke import FUNCTION_RESOURCES, function_resources
from s3batch.operations.invoke import NAME as LAMBDA_INVOKE
from s3batch.retry import RetryPolicy
from s3batch.storage.config import S3Config

log = logging.getLogger(__name__)

#: Most tasks per chunk (one remote call and one result message): the per-call overhead
#: (~0.3 ms) is noise against it, and a re-run chunk repeats at most that many operations.
CHUNK_TASKS = 500
#: Fewest tasks per chunk, the size of a job's first chunks (nothing is measured yet).
MIN_CHUNK_TASKS = 20
#: Seconds of one actor's work a chunk aims at. Chunks are sized from the rate actors finish
#: them at, between the two bounds above: slow tasks (a 2 ms function) get small chunks, so
#: progress stays fine-grained and a job's last chunks end close together instead of one
#: actor finishing a long chunk while the others idle; fast ones (copies) get large chunks.
CHUNK_TARGET_S = 0.25
#: Weight of the latest chunk in the rate estimate (an exponential moving average).
RATE_SMOOTHING = 0.5
#: Chunks in flight per actor: one being worked on while the next waits in the actor, so the
#: actor never runs dry between chunks.
CHUNKS_PER_ACTOR = 2
#: Times Ray re-runs a chunk on the restarted actor after its actor died (max_task_retries).
ACTOR_TASK_RETRIES = 3
#: Times the driver hands a chunk to another actor once Ray's retries are spent.
CHUNK_REDISPATCHES = 3
#: CPUs one actor reserves when the job does not say (LambdaInvoke's FunctionResources).
DEFAULT_ACTOR_CPUS = 1.0
#: Function worker processes per actor: an actor is one function worker's slot, so
#: FunctionResources (per worker) is what the actor reserves.
FUNCTION_WORKERS_PER_ACTOR = 1
#: Seconds the actors get to finish at the end of a run (a results sink commits).
CLOSE_TIMEOUT_S = 60.0
#: Seconds between reads of the shared limit for `stats`.
STATS_POLL_S = 0.5
#: Environment applied in every actor: what the S3 client and function handlers read to know
#: where requests go and as whom (the store-facing part of the job's identity; the job store's
#: own settings stay with the driver).
FORWARDED_PREFIXES = ("AWS_",)
FORWARDED_NAMES = frozenset(
    {
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
        "http_proxy", "https_proxy", "no_proxy", "all_proxy",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
        "PYTHONPATH", "S3BATCH_LEAN_PATH", "S3BATCH_VERIFY_SSL",
    }
)  # fmt: skip
#: Forwarded to the private cluster's actors only: they run on this machine as this user, so
#: ~/.aws is the same; a user's cluster nodes keep their own HOME.
PRIVATE_ONLY_NAMES = frozenset({"HOME"})


class ChunkFailed(RuntimeError):
    """A chunk raised inside its actor (not a lost actor): the engine itself failed."""


def forwarded_environment(env: Mapping[str, str], private: bool) -> dict[str, str]:
    names = FORWARDED_NAMES | PRIVATE_ONLY_NAMES if private else FORWARDED_NAMES
    return {k: v for k, v in env.items() if k in names or k.startswith(FORWARDED_PREFIXES)}


@dataclass(frozen=True, slots=True)
class ActorPlan:
    """How many actors a run starts and what each reserves."""

    count: int
    cpus: float
    gpus: float


def plan_actors(
    wanted: int, resources: Mapping[str, float], nodes: Sequence[Mapping[str, float]]
) -> ActorPlan:
    """`wanted` actors (0: as many as the nodes' CPUs and GPUs hold now) reserving `resources`.

    An actor that no node could host would wait forever, and its chunks with it: a job that
    asks for more than any node has fails at once, naming the field that asked.
    """
    cpus = resources.get("CPU", DEFAULT_ACTOR_CPUS)
    gpus = resources.get("GPU", 0.0)
    fits = sum(_fits(node, cpus, gpus) for node in nodes)
    if fits < 1:
        largest = max(nodes, key=lambda node: (node.get("GPU", 0.0), node.get("CPU", 0.0)), default={})
        have = {name: largest.get(name, 0.0) for name in ("CPU", "GPU")}
        raise ConfigError(
            f"{LAMBDA_INVOKE}.{FUNCTION_RESOURCES} asks {{'CPU': {cpus}, 'GPU': {gpus}}} per worker; "
            f"no node of the Ray cluster has that much (the largest has {have})"
        )
    if wanted > fits:
        log.warning("S3BATCH_RAY_ACTORS=%d: the cluster holds %d now; the rest wait for room", wanted, fits)
    return ActorPlan(wanted or fits, cpus, gpus)


def _fits(node: Mapping[str, float], cpus: float, gpus: float) -> int:
    """Actors reserving `cpus` and `gpus` that fit on one node (its CPUs if they reserve none)."""
    asked = [(name, amount) for name, amount in (("CPU", cpus), ("GPU", gpus)) if amount > 0]
    if not asked:
        return int(node.get("CPU", 0.0))
    return min(int(node.get(name, 0.0) // amount) for name, amount in asked)


def endpoint_name(job: JobContext) -> str:
    """What the shared limit is named after: the store the job's tasks call."""
    storage = job.storage
    if isinstance(storage, S3Config):
        return storage.endpoint_url or f"s3.{storage.region or job.region}.amazonaws.com"
    return f"file://{storage.root}"


class RayEngine:
    def __init__(
        self,
        address: str | None,
        actors: int,
        concurrency: int,
        retry: RetryPolicy,
        *,
        chunk_tasks: int = CHUNK_TASKS,
        chunks_per_actor: int = CHUNKS_PER_ACTOR,
        task_retries: int = ACTOR_TASK_RETRIES,
    ) -> None:
        require_ray()
        self.address = address
        self.actors = actors
        self.concurrency = concurrency
        self.retry = retry
        self.chunk_tasks = chunk_tasks
        self.chunks_per_actor = chunks_per_actor
        self.task_retries = task_retries
        #: The shared limit as last read (for the job's timeline), and its final record.
        self.stats = LimitStats()
        self.shared: SharedStats | None = None
        #: Each actor's own gate (requests it waited for, its lease's samples), after a run.
        self.actor_stats: list[LimitStats] = []
        #: Chunks handed to another actor, and task results dropped as duplicates, last run.
        self.redispatched = 0
        self.duplicates = 0
        #: The actors of the latest run, and how many of them an earlier run had kept.
        self.plan: ActorPlan | None = None
        self.reused = 0
        #: Actors of the latest run that never started (the cluster had no room): killed.
        self.unstarted = 0

    async def run(
        self, job: JobContext, operation: Mapping[str, Any], tasks: AsyncIterator[Task]
    ) -> AsyncIterator[Finished]:
        ray = await asyncio.to_thread(join, self.address, os.cpu_count() or 1)
        name, params = next(iter(operation.items()))
        resources = function_resources(params) if name == LAMBDA_INVOKE else {}
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        self.plan = plan_actors(self.actors, resources, nodes)
        limiter, limiter_name = _limiter(ray)
        limit = f"{job.job_id}:{endpoint_name(job)}:{uuid.uuid4().hex[:8]}"
        env = forwarded_environment(os.environ, private=self.address is None)
        remote_job = dataclasses.replace(job, function_workers=FUNCTION_WORKERS_PER_ACTOR)
        spec = ChunkJob(
            uuid.uuid4().hex,
            remote_job,
            dict(operation),
            self.concurrency,
            self.retry,
            env,
            limiter_name,
            limit,
        )
        key = pool_key(ray.get_runtime_context().get_job_id(), self.plan.cpus, self.plan.gpus, env)
        kill = functools.partial(_kill, ray)
        actors = POOL.take(key, self.plan.count, kill)
        self.reused = len(actors)
        actors += self._start_actors(ray, self.plan.count - len(actors))
        sizer = ChunkSizer(min(MIN_CHUNK_TASKS, self.chunk_tasks), self.chunk_tasks, self.chunks_per_actor)
        dispatch = _Dispatch(ray, actors, self.chunks_per_actor, spec, sizer)
        poll = asyncio.create_task(self._poll_stats(limiter, limit))
        clean = False
        try:
            async for group in dispatch.results(ready_batches(tasks, sizer.size)):
                yield group
            # Only an actor handed a chunk has this run to close. One the cluster had no room
            # for never started: a close sent to it would wait for room the others hold.
            used = [actor for actor, sent in zip(actors, dispatch.sent, strict=True) if sent]
            self.actor_stats, clean = await _close_all(ray, used, spec.run_id)
        finally:
            self.redispatched, self.duplicates = dispatch.redispatched, dispatch.duplicates
            self.unstarted = dispatch.started.count(False)
            poll.cancel()
            with contextlib.suppress(BaseException):
                await poll
            await self._read_final_stats(limiter, limit)
            if clean:  # kept for the next job of the same shape (engines/ray_pool.py)
                POOL.give_back(key, [a for a, ok in zip(actors, dispatch.ready, strict=True) if ok], kill)
            for handle, ok in zip(actors, dispatch.ready, strict=True):
                if not (clean and ok):
                    kill(handle)

    def _start_actors(self, ray: Any, count: int) -> list[Any]:
        plan = self.plan
        assert plan is not None
        worker = ray.remote(ChunkWorker).options(
            num_cpus=plan.cpus,
            num_gpus=plan.gpus,
            max_restarts=-1,
            max_task_retries=self.task_retries,
            scheduling_strategy="SPREAD",  # one job across the machines, not packed on one
        )
        return [worker.remote() for _ in range(count)]

    async def _poll_stats(self, limiter: Any, limit: str) -> None:
        while True:
            await asyncio.sleep(STATS_POLL_S)
            with contextlib.suppress(Exception):
                recent = await _await(limiter.recent.remote(limit))
                if recent is not None:
                    self.stats = recent

    async def _read_final_stats(self, limiter: Any, limit: str) -> None:
        with contextlib.suppress(Exception):
            closing = _await(limiter.close.remote(limit))
            shared: SharedStats | None = await asyncio.wait_for(closing, STATS_POLL_S * 4)
            if shared is not None:
                self.shared, self.stats = shared, shared.stats


#: The driver's limiter actor, by Ray session: (session, handle, name).
_LIMITER: list[tuple[str, Any, str]] = []
_LIMITER_LOCK = threading.Lock()


def _limiter(ray: Any) -> tuple[Any, str]:
    """The driver's shared limits (engines/ray_limiter.LimiterActor), started once per Ray
    session on the driver's node: it lives and dies with the driver."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    session = ray.get_runtime_context().get_job_id()
    with _LIMITER_LOCK:
        if _LIMITER and _LIMITER[0][0] == session:
            return _LIMITER[0][1], _LIMITER[0][2]
        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)
        name = f"s3batch-limits:{uuid.uuid4().hex}"
        handle = (
            ray.remote(LimiterActor)
            .options(name=name, num_cpus=0, max_restarts=-1, max_task_retries=-1, scheduling_strategy=here)
            .remote()
        )
        _LIMITER[:] = [(session, handle, name)]
        return handle, name


async def _await(ref: Any) -> Any:
    """A Ray ObjectRef's value, awaited on this event loop (any loop: uvloop too)."""
    return await asyncio.wrap_future(ref.future())


def _kill(ray: Any, handle: Any) -> None:
    with contextlib.suppress(Exception):
        ray.kill(handle, no_restart=True)


async def _close_all(ray: Any, actors: list[Any], run_id: str) -> tuple[list[LimitStats], bool]:
    """Let every actor finish the run (its operation closes: a results sink commits); the
    actors' stats, and whether every actor closed cleanly (only then may they serve again)."""
    closing = [_await(actor.close.remote(run_id)) for actor in actors]
    try:
        done = await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), CLOSE_TIMEOUT_S)
    except TimeoutError:
        raise RuntimeError(f"the Ray actors did not finish within {CLOSE_TIMEOUT_S:.0f} s") from None
    stats = []
    for outcome in done:
        if isinstance(outcome, ray.exceptions.RayTaskError):  # the operation's close raised
            cause = outcome.cause if isinstance(outcome.cause, BaseException) else outcome
            raise ChunkFailed(f"a Ray actor could not finish the job: {type(cause).__name__}: {cause}")
        if isinstance(outcome, BaseException):  # the actor died: nothing of it left to close
            log.warning("a Ray actor did not close cleanly: %s", outcome)
        else:
            stats.append(outcome)
    return stats, len(stats) == len(actors)


class ChunkSizer:
    """The chunk size wanted now: `CHUNK_TARGET_S` of one actor's work at the rate chunks come
    back at. A chunk's time (sent → answered) includes the wait behind the other chunks its
    actor holds, so the actor's rate counts `per_actor` chunks over that time."""

    def __init__(self, smallest: int, largest: int, per_actor: int) -> None:
        self.smallest, self.largest, self.per_actor = smallest, largest, per_actor
        self.rate = 0.0  # tasks/s of one actor; 0: nothing measured yet
        self._size = smallest

    def size(self) -> int:
        return self._size

    def record(self, tasks: int, seconds: float) -> None:
        if tasks <= 0 or seconds <= 0:
            return
        rate = tasks * self.per_actor / seconds
        self.rate = rate if not self.rate else RATE_SMOOTHING * rate + (1 - RATE_SMOOTHING) * self.rate
        self._size = min(self.largest, max(self.smallest, round(self.rate * CHUNK_TARGET_S)))


@dataclass(eq=False)
class _Chunk:
    tasks: list[Task]
    actor: int
    #: Times the driver handed it to another actor.
    redispatches: int = 0
    #: When it was sent (time.monotonic()).
    sent_at: float = 0.0


@dataclass(eq=False)
class _Dispatch:
    """Chunks to actors with room, results back as groups, each task recorded once."""

    ray: Any
    actors: list[Any]
    per_actor: int
    #: The job, sent with every chunk (engines/ray_actor.ChunkJob).
    spec: Any
    #: Learns from each chunk's time (None: chunk sizes are fixed).
    sizer: ChunkSizer | None = None
    redispatched: int = 0
    duplicates: int = 0
    load: list[int] = field(default_factory=list)
    running: dict[asyncio.Future[Any], _Chunk] = field(default_factory=dict)
    #: Tasks handed out and not yet recorded, by seq.
    open: set[int] = field(default_factory=set)

    #: Actors known to run (their `ready` call answered). An actor the cluster has no room for
    #: yet gets no chunk: one given to it would wait for the room the job's other actors hold
    #: until the job ends, which it then never would.
    started: list[bool] = field(default_factory=list)
    #: `ready` calls not answered yet, by actor index.
    starting: dict[asyncio.Future[Any], int] = field(default_factory=dict)
    #: Actors whose `ready` call answered True (not an error): fit to serve another run.
    ready: list[bool] = field(default_factory=list)
    #: Actors handed at least one chunk of this run: they have the run to close.
    sent: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.load = [0] * len(self.actors)
        self.started = [False] * len(self.actors)
        self.ready = [False] * len(self.actors)
        self.sent = [False] * len(self.actors)

    async def results(self, batches: AsyncIterator[list[Task]]) -> AsyncIterator[Finished]:
        reading: asyncio.Task[list[Task] | None] | None = None
        ended = False
        self.starting = {asyncio.wrap_future(a.ready.remote().future()): i for i, a in enumerate(self.actors)}
        try:
            while not ended or self.running:
                if reading is None and not ended and self._room():
                    reading = asyncio.create_task(_next_batch(batches))
                waiting: set[asyncio.Future[Any]] = set(self.running) | set(self.starting)
                if reading is not None:
                    waiting.add(reading)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                self._note_started(done)
                if reading is not None and reading in done:
                    batch, reading = reading.result(), None
                    if batch is None:
                        ended = True
                    else:
                        self.open.update(task.seq for task in batch)
                        self._send(_Chunk(batch, self._least_loaded()))
                for future in done:
                    chunk = self.running.pop(future, None)
                    if chunk is not None:
                        group = self._finish(future, chunk)
                        if group:
                            yield group
        finally:
            if reading is not None:
                reading.cancel()
                with contextlib.suppress(BaseException):
                    await reading
            for future in [*self.running, *self.starting]:
                future.cancel()
            await _close_stream(batches)

    def _note_started(self, done: set[asyncio.Future[Any]]) -> None:
        """Actors whose `ready` call came back. One that died first counts as started too:
        its chunks then fail over as any dead actor's do."""
        for future in done:
            index = self.starting.pop(future, None)
            if index is not None:
                self.started[index] = True
                if future.cancelled():
                    continue
                if future.exception() is not None:
                    log.warning("a Ray actor failed to start: %s", future.exception())
                else:
                    self.ready[index] = True

    def _room(self) -> bool:
        return sum(self.load) < self.per_actor * sum(self.started)

    def _least_loaded(self, avoid: int | None = None) -> int:
        candidates = [i for i in range(len(self.actors)) if self.started[i]]
        order = sorted(candidates, key=lambda i: (i == avoid, self.load[i]))
        return order[0]

    def _send(self, chunk: _Chunk) -> None:
        self.load[chunk.actor] += 1
        self.sent[chunk.actor] = True
        chunk.sent_at = time.monotonic()
        ref = self.actors[chunk.actor].run_chunk.remote(self.spec, chunk.tasks)
        self.running[asyncio.wrap_future(ref.future())] = chunk

    def _finish(self, future: asyncio.Future[Any], chunk: _Chunk) -> Finished:
        """The chunk's tasks not recorded before, with their results; [] if it was handed on."""
        self.load[chunk.actor] -= 1
        exceptions = self.ray.exceptions
        try:
            results: list[TaskResult] = future.result()
        except exceptions.RayTaskError as exc:  # the engine raised inside the actor
            cause = exc.cause if isinstance(exc.cause, BaseException) else exc
            raise ChunkFailed(f"{type(cause).__name__}: {cause}") from exc
        except exceptions.RayError as exc:  # the actor or its node died, Ray's retries spent
            return self._hand_on(chunk, exc)
        if self.sizer is not None:
            self.sizer.record(len(chunk.tasks), time.monotonic() - chunk.sent_at)
        return self._record(chunk.tasks, results)

    def _hand_on(self, chunk: _Chunk, error: BaseException) -> Finished:
        if chunk.redispatches >= CHUNK_REDISPATCHES:
            log.error(
                "chunk of %d tasks lost its actor %d times: %s",
                len(chunk.tasks),
                chunk.redispatches + 1,
                error,
            )
            failed = TaskResult.fail(
                "InternalError",
                f"the Ray actor running this task died {chunk.redispatches + 1} times "
                f"(each time after {ACTOR_TASK_RETRIES} restarts)",
                None,
            )
            return self._record(chunk.tasks, [failed] * len(chunk.tasks))
        log.warning("a chunk of %d tasks lost its actor (%s); handing it to another", len(chunk.tasks), error)
        self.redispatched += 1
        self._send(_Chunk(chunk.tasks, self._least_loaded(avoid=chunk.actor), chunk.redispatches + 1))
        return []

    def _record(self, tasks: list[Task], results: list[TaskResult]) -> Finished:
        group: Finished = []
        for task, result in zip(tasks, results, strict=True):
            if task.seq in self.open:
                self.open.discard(task.seq)
                group.append((task, result))
            else:
                self.duplicates += 1
        return group


async def _next_batch(batches: AsyncIterator[list[Task]]) -> list[Task] | None:
    try:
        return await anext(batches)
    except StopAsyncIteration:
        return None


async def _close_stream(batches: AsyncIterator[list[Task]]) -> None:
    closer = getattr(batches, "aclose", None)
    if closer is not None:
        await closer()
