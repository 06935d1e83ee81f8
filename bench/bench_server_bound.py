"""Evidence for the two rows of bench_peers that the server, not the client, decides.

    .venv/bin/python bench/bench_server_bound.py [--objects 10000] [--runs 3] [--no-files]

1. Deletes: boto3 delete_objects on `rclone serve s3` with 1,000, 500, 250 and 100 keys per
   request (all requests in flight at once, from 64 threads), interleaved runs. If the wall
   time does not move with the request shape, the server's per-key work (one unlink each) is
   the bound, and no client can do much better than sending it the keys.
2. Large copies: 50 x 64 MiB server-side copies (boto3 ThreadPool, all in flight), with the
   CPU seconds the server process and the client spent in each run next to its wall time.
   A server busy for most of both cores while the client is nearly idle is the bound.
   For scale, the same bytes copied file to file on this disk by one thread, no S3 at all.

Prints wall times (medians and each run) and writes bench/results/bench_server_bound.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bench_peers as peers
from bench_core import boto3_client, measure, seed
from servers import ACCESS_KEY, SECRET_KEY, rclone_server

#: Keys per DeleteObjects request tried (1,000 is S3's maximum).
DELETE_SHAPES = (1000, 500, 250, 100)
#: The large-copy workload of bench_peers: file count and size in bytes.
LARGE_FILES, LARGE_BYTES = 50, 64 * 1024 * 1024
#: Read/write buffer of the file copy, in bytes (Go's io.Copy, which rclone uses, takes 32 KiB).
COPY_BUFFER_BYTES = 32 * 1024


def delete_shapes(objects: int, runs: int) -> dict[str, list[float]]:
    walls: dict[str, list[float]] = {f"{size} keys/request": [] for size in DELETE_SHAPES}
    with rclone_server() as (endpoint, _):
        client = boto3_client(endpoint)
        keys = seed(client, peers.BUCKET, objects)
        for i in range(runs):
            for size in DELETE_SHAPES:
                prefix = f"shape-{size}-{i}"
                batch = peers.fill(endpoint, client, keys, prefix)
                os.sync()
                wall, _ = measure(lambda: delete_in(client, batch, size))  # noqa: B023
                walls[f"{size} keys/request"].append(round(wall, 3))
                if peers.keys_under(client, f"{prefix}/"):
                    raise RuntimeError(f"{prefix}/ not empty after the delete")
    return walls


def delete_in(client: Any, keys: list[str], size: int) -> None:
    batches = [keys[i : i + size] for i in range(0, len(keys), size)]

    def one(batch: list[str]) -> None:
        client.delete_objects(
            Bucket=peers.BUCKET, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
        )

    with ThreadPoolExecutor(peers.BOTO3_THREADS) as pool:
        list(pool.map(one, batches))


def large_copies(runs: int) -> list[dict[str, float]]:
    """Wall, server CPU and client CPU seconds of each boto3 run of the large copies."""
    found = []
    with rclone_server() as (endpoint, server):
        client = boto3_client(endpoint)
        client.create_bucket(Bucket=peers.BUCKET)
        client.put_object(Bucket=peers.BUCKET, Key="seed-large", Body=os.urandom(LARGE_BYTES))
        sources = [f"large/{n:03d}.bin" for n in range(LARGE_FILES)]  # as bench_peers seeds them
        copy_all(client, [("seed-large", key) for key in sources])
        for i in range(runs):
            pairs = [(key, f"large-{i}/{key}") for key in sources]
            os.sync()
            server_before = process_cpu_s(server.pid)
            wall, client_cpu = measure(lambda: copy_all(client, pairs))  # noqa: B023
            server_cpu = process_cpu_s(server.pid) - server_before
            found.append(
                {
                    "wall_s": round(wall, 2),
                    "server_cpu_s": round(server_cpu, 2),
                    "client_cpu_s": round(client_cpu, 2),
                    "server_cores_busy": round(server_cpu / wall, 2),
                }
            )
    return found


def copy_all(client: Any, pairs: list[tuple[str, str]]) -> None:
    """Server-side copies (source key, target key), all in flight at once."""

    def one(pair: tuple[str, str]) -> None:
        client.copy_object(
            Bucket=peers.BUCKET, Key=pair[1], CopySource={"Bucket": peers.BUCKET, "Key": pair[0]}
        )

    with ThreadPoolExecutor(peers.BOTO3_THREADS) as pool:
        list(pool.map(one, pairs))


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def file_copies(runs: int) -> list[float]:
    walls = []
    root = Path(tempfile.mkdtemp(prefix="bench-files-"))
    try:
        source = root / "src"
        source.mkdir()
        block = os.urandom(1024 * 1024)
        for n in range(LARGE_FILES):
            with (source / str(n)).open("wb") as out:
                for _ in range(LARGE_BYTES // len(block)):
                    out.write(block)
        for i in range(runs):
            target = root / f"dst-{i}"
            target.mkdir()
            os.sync()
            started = time.perf_counter()
            for n in range(LARGE_FILES):
                with (source / str(n)).open("rb") as src, (target / str(n)).open("wb") as dst:
                    shutil.copyfileobj(src, dst, COPY_BUFFER_BYTES)
            walls.append(round(time.perf_counter() - started, 3))
            shutil.rmtree(target)
    finally:
        shutil.rmtree(root)
    return walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--objects", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-large", action="store_true", help="skip the 3.2 GB copy parts")
    args = parser.parse_args()
    os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    os.environ.setdefault("AWS_REGION", "us-east-1")
    out: dict[str, Any] = {"objects": args.objects, "runs": args.runs}
    out["delete_wall_s"] = delete_shapes(args.objects, args.runs)
    for shape, walls in out["delete_wall_s"].items():
        print(f"delete {args.objects:,}, {shape:>18}: median {statistics.median(walls):.3f} s  {walls}")
    if not args.no_large:
        out["server_copy_50x64MiB"] = runs = large_copies(args.runs)
        for run in runs:
            print(f"server-side copy {LARGE_FILES} x 64 MiB: {run}")
        out["file_copy_50x64MiB_wall_s"] = walls = file_copies(args.runs)
        print(f"file copy {LARGE_FILES} x 64 MiB, no S3: median {statistics.median(walls):.2f} s  {walls}")
    results = Path(__file__).parent / "results" / "bench_server_bound.json"
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
