"""Benchmark: an S3 Inventory report of a bucket, s3batch vs a boto3 ListObjectsV2 loop.

    .venv/bin/python bench/bench_inventory.py [--keys 20000] [--prefixes 50] [--runs 1]

Lays out --keys empty objects over --prefixes "folders" in `rclone serve s3`'s folder (on
tmpfs by default) before it starts: no PUTs, so a million objects take about a minute to seed
instead of many (the time taken is printed as "seeding"). Then writes the same report both
ways, each in its own process so its peak RSS is its own:

- `s3batch`: `generate_inventory` (CSV, fields Size, LastModifiedDate, ETag, StorageClass;
  parallel listing, gzipped data files of 1,000,000 rows, manifest.json, symlink.txt,
  manifest.checksum) to a second bucket of the same server;
- `boto3`: one ListObjectsV2 paginator loop writing the same rows (every field quoted, keys
  URL-encoded) with the `csv` module into one gzip file, then uploading it.

Prints keys/s (median of --runs, runs alternating), the ratio and each side's peak RSS, and
writes bench/results/bench_inventory_<keys>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import boto3
from botocore.config import Config

from launch import run_launched
from s3batch.domain.inventory_writer import inventory_config
from s3batch.service.gctune import worker_gc
from s3batch.service.inventory_report import generate_inventory
from s3batch.storage.config import S3Config, open_store
from servers import ACCESS_KEY, SECRET_KEY, rclone_server

SOURCE, DEST = "inventory-src", "inventory-dst"
FIELDS = ["Size", "LastModifiedDate", "ETag", "StorageClass"]
SIDES = ("boto3", "s3batch")
LABELS = {"boto3": "boto3 loop + csv + gzip", "s3batch": "s3batch inventory generate"}
#: Seconds one side may take before the benchmark gives up on it.
RUN_TIMEOUT_S = 900
#: gzip level of the boto3 side (the same as s3batch's GZIP_LEVEL).
GZIP_LEVEL = 6


def lay_out(data: Path, n: int, prefixes: int) -> None:
    """n empty files under `prefixes` folders of the source bucket, and an empty destination."""
    (data / DEST).mkdir()
    bucket = data / SOURCE
    for p in range(prefixes):
        (bucket / f"p{p:04d}").mkdir(parents=True)
    for i in range(n):
        (bucket / f"p{i % prefixes:04d}" / f"obj {i:07d}").touch()  # a space: keys get encoded


def run_s3batch(endpoint: str) -> int:
    config = inventory_config(bucket=SOURCE, destination=f"arn:aws:s3:::{DEST}/s3batch", config_id="bench",
                              fields=FIELDS)  # fmt: skip

    async def go() -> int:
        store = open_store(S3Config(endpoint_url=endpoint))
        try:
            return (await generate_inventory(store, config)).rows
        finally:
            await store.close()

    with worker_gc():  # as `s3batch inventory generate` runs it
        return asyncio.run(go())


def run_boto3(endpoint: str) -> int:
    config = Config(s3={"addressing_style": "path"})
    client = boto3.client("s3", endpoint_url=endpoint, config=config, region_name="us-east-1")
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.csv.gz"
        with gzip.open(path, "wt", encoding="utf-8", newline="", compresslevel=GZIP_LEVEL) as gz:
            writer = csv.writer(gz, quoting=csv.QUOTE_ALL, lineterminator="\n")
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=SOURCE):
                for o in page.get("Contents", []):
                    modified = (
                        o["LastModified"].strftime("%Y-%m-%dT%H:%M:%S.")
                        + f"{o['LastModified'].microsecond // 1000:03d}Z"
                    )
                    writer.writerow([SOURCE, quote_plus(o["Key"], safe="/"), o["Size"], modified,
                                     o["ETag"].strip('"'), o.get("StorageClass", "STANDARD")])  # fmt: skip
                    n += 1
        client.upload_file(str(path), DEST, "boto3/data.csv.gz")
    return n


def child(side: str, endpoint: str) -> None:
    """One side in this process: prints {rows, seconds}."""
    t0 = time.perf_counter()
    rows = run_s3batch(endpoint) if side == "s3batch" else run_boto3(endpoint)
    print(json.dumps({"rows": rows, "seconds": time.perf_counter() - t0}))


def measure(side: str, endpoint: str) -> dict[str, Any]:
    """One side in a process of its own, started by bench/launch.py so that its peak RSS is its
    own (Linux counts the spawning process's memory into a child's peak)."""
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_REGION": "us-east-1"}  # fmt: skip
    out, usage = run_launched(
        [sys.executable, __file__, "--child", side, "--endpoint", endpoint], RUN_TIMEOUT_S,
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    out.check_returncode()
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["peak_rss_mib"] = usage["peak_rss_mib"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=20_000)
    parser.add_argument("--prefixes", type=int, default=50)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--server-tmp",
        default="/dev/shm" if Path("/dev/shm").is_dir() else None,
        help="Folder for rclone's bucket files (default: /dev/shm, where laying out a million files "
        "takes about a minute instead of many on a disk)",
    )
    parser.add_argument(
        "--sides",
        default="boto3,s3batch",
        help="Which to run (comma-separated); s3batch alone shows its speed and memory at sizes "
        "where the boto3 loop would take too long",
    )
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.endpoint)
        return
    sides = [side for side in SIDES if side in args.sides.split(",")]
    tempfile.tempdir = args.server_tmp  # rclone_server's folder; each side's own files stay in $TMPDIR
    seeding, results = run_all(args.keys, args.prefixes, args.runs, sides)
    report(args, seeding, results)


def run_all(keys: int, prefixes: int, runs: int, sides: list[str]) -> tuple[float, dict[str, list[Any]]]:
    """(seconds spent seeding, each side's results), runs alternating between the sides."""
    seeding: list[float] = []

    def prepare(data: Path) -> None:
        t0 = time.perf_counter()
        lay_out(data, keys, prefixes)
        seeding.append(time.perf_counter() - t0)

    results: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
    with rclone_server(prepare) as (endpoint, _):
        # Warm-up (the quicker side): rclone's first walk of its folder is several times slower.
        measure(sides[-1], endpoint)
        for _ in range(runs):
            for side in sides:
                r = measure(side, endpoint)
                assert r["rows"] == keys, f"{side} wrote {r['rows']} rows, expected {keys}"
                results[side].append(r)
    return seeding[0], results


def report(args: argparse.Namespace, seeding: float, results: dict[str, list[dict[str, Any]]]) -> None:
    rate = {side: statistics.median(args.keys / r["seconds"] for r in rs) for side, rs in results.items()}
    rss = {side: max(r["peak_rss_mib"] for r in rs) for side, rs in results.items()}
    print(f"{args.keys} keys over {args.prefixes} prefixes on rclone serve s3 (median of {args.runs}); "
          f"seeding (files laid out, no PUTs) took {seeding:.1f} s")  # fmt: skip
    for side in results:
        print(f"{LABELS[side]:<28}{rate[side]:>12,.0f} keys/s   peak RSS {rss[side]:>6.0f} MiB")
    ratio = rate["s3batch"] / rate["boto3"] if len(rate) == len(SIDES) else None
    if ratio is not None:
        print(f"{'ratio':<28}{ratio:>12.2f}x")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    summary = {"keys": args.keys, "prefixes": args.prefixes, "runs": args.runs, "seeding_s": seeding,
               "keys_per_s": rate, "ratio": ratio, "peak_rss_mib": rss, "raw": results}  # fmt: skip
    (out / f"bench_inventory_{args.keys}.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
