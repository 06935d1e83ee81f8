"""Benchmark: one ListObjectsV2 loop (boto3) vs s3batch's parallel generator listing.

    .venv/bin/python bench/bench_listing.py [--server moto|rclone] [--keys 20000] [--prefixes 50] [--runs 3]

Seeds --keys empty objects spread over --prefixes "folders" in a local S3 server (its own
process on 127.0.0.1; for rclone, as files laid out in its folder before it starts, so a
million keys take seconds instead of a million PUTs), then lists the bucket both ways and
prints keys/s (median of --runs) and the ratio. moto's server answers one request at a time,
so fan-out cannot beat one loop there; `rclone serve s3` answers requests in parallel, which
is what the parallel lister is for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from s3batch.domain.generator import generator_from_json, normalize_generator
from s3batch.service.gctune import worker_gc
from s3batch.service.manifests import write_listing
from s3batch.storage.config import S3Config, open_store
from servers import ACCESS_KEY, SECRET_KEY, moto_server, rclone_server

#: Threads seeding the bucket.
SEED_THREADS = 32
BUCKET = "listing"
#: Server name → (context manager starting it, (access key, secret key) it accepts).
SERVERS: dict[str, tuple[Callable[[], Any], tuple[str, str]]] = {
    "moto": (moto_server, ("testing", "testing")),
    "rclone": (rclone_server, (ACCESS_KEY, SECRET_KEY)),
}


def boto3_client(endpoint: str) -> Any:
    config = Config(max_pool_connections=SEED_THREADS, s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=endpoint, config=config, region_name="us-east-1")


def seed(client: Any, n: int, prefixes: int) -> None:
    client.create_bucket(Bucket=BUCKET)
    keys = [f"p{i % prefixes:03d}/obj-{i:07d}" for i in range(n)]
    with ThreadPoolExecutor(SEED_THREADS) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=BUCKET, Key=k, Body=b""), keys))


def lay_out(data: Path, n: int, prefixes: int) -> None:
    """The same keys as `seed`, written as empty files into rclone's folder (no PUTs)."""
    bucket = data / BUCKET
    for p in range(prefixes):
        (bucket / f"p{p:03d}").mkdir(parents=True)
    for i in range(n):
        (bucket / f"p{i % prefixes:03d}" / f"obj-{i:07d}").touch()


def boto3_list(client: Any) -> int:
    n = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        n += len(page.get("Contents", []))
    return n


def s3batch_list(endpoint: str) -> int:
    gen = generator_from_json(
        normalize_generator(
            {
                "S3JobManifestGenerator": {
                    "SourceBucket": f"arn:aws:s3:::{BUCKET}",
                    "EnableManifestOutput": False,
                }
            }
        )
    )

    async def go() -> int:
        store = open_store(S3Config(endpoint_url=endpoint))
        try:
            with tempfile.TemporaryDirectory() as tmp:
                return await write_listing(store, gen, Path(tmp) / "out.csv", Path(tmp))
        finally:
            await store.close()

    with worker_gc():  # as inside a job's Preparing step (see s3batch/service/gctune.py)
        return asyncio.run(go())


def keys_per_s(fns: list[Callable[[], int]], runs: int, expected: int) -> list[float]:
    """Median keys/s of each lister. Runs alternate between listers, so load from elsewhere on
    the machine (or a server cache warming up) does not favour whichever ran last."""
    rates: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, fn_rates in zip(fns, rates, strict=True):
            t0 = time.perf_counter()
            n = fn()
            assert n == expected, f"listed {n} keys, expected {expected}"
            fn_rates.append(n / (time.perf_counter() - t0))
    return [statistics.median(r) for r in rates]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=sorted(SERVERS), default="moto")
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--prefixes", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    start_server, (access_key, secret_key) = SERVERS[args.server]
    os.environ.update({"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key})
    os.environ.setdefault("AWS_REGION", "us-east-1")
    direct = args.server == "rclone"  # rclone serves a folder: lay the bucket out as files
    server = rclone_server(lambda data: lay_out(data, args.keys, args.prefixes)) if direct else start_server()
    with server as (endpoint, _):
        client = boto3_client(endpoint)
        if not direct:
            seed(client, args.keys, args.prefixes)
        boto3_list(client)  # warm-up: rclone's first walk of its folder is several times slower
        single, parallel = keys_per_s(
            [lambda: boto3_list(client), lambda: s3batch_list(endpoint)], args.runs, args.keys
        )
    print(f"{args.keys} keys over {args.prefixes} prefixes on {args.server} (median of {args.runs})")
    print(f"{'boto3 ListObjectsV2 loop':<32}{single:>12,.0f} keys/s")
    print(f"{'s3batch parallel listing':<32}{parallel:>12,.0f} keys/s   ({parallel / single:.2f}x)")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    result = {"server": args.server, "keys": args.keys, "prefixes": args.prefixes, "runs": args.runs}
    result |= {"boto3_keys_per_s": single, "s3batch_keys_per_s": parallel, "ratio": parallel / single}
    (out / f"bench_listing_{args.server}_{args.keys}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
