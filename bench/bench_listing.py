"""Benchmark: one ListObjectsV2 loop (boto3) vs s3batch's parallel generator listing.

    .venv/bin/python bench/bench_listing.py [--keys 20000] [--prefixes 50] [--runs 3]

Seeds --keys empty objects spread over --prefixes "folders" in moto's server (its own process
on 127.0.0.1), then lists the bucket both ways and prints keys/s (median of --runs) and the
ratio. moto is server-bound at about 300 requests/s with 1,000 keys per page, so the ratio at
20k keys says how much fan-out buys on a server that can answer requests in parallel; the
issue's "a million keys several times faster" is not measurable against moto on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
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
from s3batch.service.manifests import write_listing
from s3batch.storage.config import S3Config, open_store
from servers import moto_server

#: Threads seeding the bucket.
SEED_THREADS = 32
BUCKET = "listing"


def boto3_client(endpoint: str) -> Any:
    config = Config(max_pool_connections=SEED_THREADS, s3={"addressing_style": "path"})
    return boto3.client("s3", endpoint_url=endpoint, config=config, region_name="us-east-1")


def seed(client: Any, n: int, prefixes: int) -> None:
    client.create_bucket(Bucket=BUCKET)
    keys = [f"p{i % prefixes:03d}/obj-{i:07d}" for i in range(n)]
    with ThreadPoolExecutor(SEED_THREADS) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=BUCKET, Key=k, Body=b""), keys))


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

    return asyncio.run(go())


def keys_per_s(fn: Callable[[], int], runs: int, expected: int) -> float:
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        n = fn()
        assert n == expected, f"listed {n} keys, expected {expected}"
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--prefixes", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    os.environ.setdefault("AWS_REGION", "us-east-1")
    with moto_server() as (endpoint, _):
        client = boto3_client(endpoint)
        seed(client, args.keys, args.prefixes)
        single = keys_per_s(lambda: boto3_list(client), args.runs, args.keys)
        parallel = keys_per_s(lambda: s3batch_list(endpoint), args.runs, args.keys)
    print(f"{args.keys} keys over {args.prefixes} prefixes on moto (median of {args.runs})")
    print(f"{'boto3 ListObjectsV2 loop':<32}{single:>12,.0f} keys/s")
    print(f"{'s3batch parallel listing':<32}{parallel:>12,.0f} keys/s   ({parallel / single:.2f}x)")


if __name__ == "__main__":
    main()
