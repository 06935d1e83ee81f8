"""Benchmark: `s3batch diff` of two large inventories, time and peak memory.

    .venv/bin/python bench/bench_diff.py [--keys 1000000] [--dir /tmp/s3batch-bench-diff]

Writes two gzip CSV inventories (fields Size, ETag) into a folder store under --dir, rows in
random key order as AWS promises no order: OLD with --keys objects, NEW without every 7th key,
with 5 % new keys and a new ETag on every 10th. Then runs the diff in a process of its own (so
its peak RSS is the diff's) and prints the counts, the seconds and the peak RSS. docs/versions.md
quotes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import hashlib
import io
import json
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

#: Objects in OLD by default.
DEFAULT_KEYS = 1_000_000
#: Key prefixes ("folders") the keys are spread over.
FOLDERS = 1000
#: Seconds the measured diff may take.
DIFF_TIMEOUT_S = 3600


def write_inventory(root: Path, name: str, rows: list[list[str]]) -> None:
    text = io.StringIO()
    csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    data = gzip.compress(text.getvalue().encode(), 1)
    (root / "inv" / f"{name}.csv.gz").write_bytes(data)
    doc = {
        "sourceBucket": "src",
        "destinationBucket": "arn:aws:s3:::inv",
        "version": "2016-11-30",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size, ETag",
        "files": [{"key": f"{name}.csv.gz", "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()}],
    }
    (root / "inv" / name).mkdir(parents=True, exist_ok=True)
    (root / "inv" / name / "manifest.json").write_text(json.dumps(doc))


def seed(root: Path, keys: int) -> None:
    rng = random.Random(1)
    names = [f"dir{rng.randrange(FOLDERS)}/obj-{i:08d}.dat" for i in range(keys)]
    old = [["src", k, "100", "a" * 32] for k in names]
    new = [["src", k, "100", "b" * 32 if i % 10 == 0 else "a" * 32] for i, k in enumerate(names) if i % 7]
    new += [["src", f"added/{i}", "5", "c" * 32] for i in range(keys // 20)]
    rng.shuffle(old)
    rng.shuffle(new)
    (root / "inv").mkdir(parents=True)
    write_inventory(root, "old", old)
    write_inventory(root, "new", new)


def measure(root: Path) -> None:
    """The diff itself (run in a child process)."""
    from s3batch.domain.diff import parse_source
    from s3batch.service.diff import DiffRequest, diff
    from s3batch.storage.config import LocalConfig, open_store

    request = DiffRequest(
        parse_source("s3://inv/old/manifest.json", "OLD"),
        parse_source("s3://inv/new/manifest.json", "NEW"),
        "inv",
        "out",
    )

    async def go() -> dict[str, object]:
        store = open_store(LocalConfig(root=str(root)))
        try:
            return await diff(store, request)
        finally:
            await store.close()

    start = time.monotonic()
    summary = asyncio.run(go())
    seconds = time.monotonic() - start
    counts = {k: summary[k]["Objects"] for k in ("Added", "Removed", "Changed", "Unchanged")}  # type: ignore[index]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"counts": counts, "seconds": round(seconds, 1), "peak_rss_mib": round(peak_mib)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=DEFAULT_KEYS)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/s3batch-bench-diff"))
    parser.add_argument("--step", choices=["seed", "measure"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step == "seed":
        seed(args.dir, args.keys)
        return
    if args.step == "measure":
        measure(args.dir)
        return
    shutil.rmtree(args.dir, ignore_errors=True)
    # Each step in its own small process: Linux keeps a process's peak RSS across exec, so a
    # diff started from the (large) seeding process would report the seeding's peak.
    for step in ("seed", "measure"):
        command = [sys.executable, __file__, "--step", step, "--dir", str(args.dir), "--keys", str(args.keys)]
        subprocess.run(command, check=True, timeout=DIFF_TIMEOUT_S)
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
