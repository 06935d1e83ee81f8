"""Benchmark: `s3batch query` over an S3 Inventory report vs DuckDB reading the same files from
local disk.

    .venv/bin/python bench/bench_query.py                     # 10,000,000 rows, 3 runs
    .venv/bin/python bench/bench_query.py --rows 2000000 --runs 5 --formats Parquet
    .venv/bin/python bench/bench_query.py --s3                # also through `rclone serve s3`

Writes an N-row inventory in AWS's layout (manifest.json + one data file, Parquet and gzip CSV
with quoted, URL-encoded keys, as AWS writes them) into a folder store, then times, for each
format and query, the same SQL two ways:

- `local`: DuckDB (the same version) reading the data file straight from disk with read_parquet
  / read_csv and the same column types: the ceiling;
- `s3batch`: a QuerySession (service/query.py, what `s3batch query` runs) on the folder store,
  reading through s3batch's object store and its sandboxed DuckDB; with --s3, also on an S3
  endpoint (`rclone serve s3` over the same folder).

Each run alternates the two, and the ratio is local median / s3batch median (1.0: as fast as
local disk; the goal is >= 0.8). Prints a table and writes
bench/results/bench_query_<rows>[_s3].json.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.csv as pcsv  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from s3batch.service.query import QuerySession
from s3batch.settings import Settings
from s3batch.storage.config import LocalConfig, S3Config, StorageConfig

RESULTS = Path(__file__).parent / "results"
BUCKET = "inventory"
SOURCE = "photos"
#: Rows per Parquet row group (AWS writes groups of about this many).
ROW_GROUP_ROWS = 1_000_000
#: Rows generated per step (bounds the generator's memory).
GENERATE_BATCH_ROWS = 1_000_000
#: gzip level of the CSV data file (fast to write; reading speed barely depends on it).
GZIP_LEVEL = 1
#: Multipliers of a cheap hash that spreads sizes and dates over the rows.
_SIZE_MIX, _DATE_MIX = 2_654_435_761, 40_503
#: Sizes up to 4 GiB; dates over ~3 years from 2021-01-01.
SIZE_MASK = (4 << 30) - 1
DATE_BASE_MS, DATE_SPAN_MS = 1_609_459_200_000, 100_000_000_000
CSV_SCHEMA = "Bucket, Key, Size, LastModifiedDate, ETag, StorageClass"
CSV_COLUMNS = {
    "bucket": "VARCHAR",
    "key": "VARCHAR",
    "size": "BIGINT",
    "last_modified_date": "TIMESTAMPTZ",
    "e_tag": "VARCHAR",
    "storage_class": "VARCHAR",
}
QUERIES = {
    "over 1 GB, older than a year, by class": (
        "SELECT storage_class, count(*) AS n, sum(size) AS bytes FROM {t} "
        "WHERE size > 1073741824 AND last_modified_date < TIMESTAMPTZ '2023-01-01' GROUP BY 1 ORDER BY 1"
    ),
    "keys matching a pattern": "SELECT count(*) AS n FROM {t} WHERE key LIKE '%/obj-0000042% x.bin'",
}


#: Distinct modification times (picked per row by a hash); their CSV text is formatted once.
DATE_CHOICES = 100_000
_DATES_MS = pa.array([DATE_BASE_MS + (i * 7_919_993_791) % DATE_SPAN_MS for i in range(DATE_CHOICES)])
DATES = pc.cast(_DATES_MS, pa.timestamp("ms", tz="UTC"))
DATE_TEXT = pc.strftime(DATES, "%Y-%m-%dT%H:%M:%SZ")  # AWS: 2024-05-01T12:30:00.000Z


def _mod(values: pa.Array, m: int) -> pa.Array:
    return pc.subtract(values, pc.multiply(pc.divide(values, m), m))


def _batch(start: int, n: int) -> pa.Table:
    idx = pa.array(range(start, start + n), pa.int64())
    key = pc.binary_join_element_wise(
        "photos/", pc.utf8_lpad(pc.cast(_mod(idx, 365), pa.string()), 3, "0"), "/obj-",
        pc.utf8_lpad(pc.cast(idx, pa.string()), 9, "0"), " x.bin", "",
    )  # fmt: skip
    size = pc.bit_wise_and(pc.multiply(idx, _SIZE_MIX), SIZE_MASK)
    date = _mod(pc.multiply(idx, _DATE_MIX), DATE_CHOICES)
    return pa.table({
        "bucket": pa.array([SOURCE] * n, pa.string()),
        "key": key,
        "size": size,
        "last_modified_date": pc.take(DATES, date),
        "e_tag": pc.utf8_lpad(pc.cast(size, pa.string()), 32, "0"),
        "storage_class": pc.if_else(pc.equal(_mod(idx, 7), 0), "GLACIER", "STANDARD"),
        "date_choice": date,  # dropped before writing: picks the CSV text of the date
    })  # fmt: skip


def _batches(rows: int) -> Iterator[pa.Table]:
    for start in range(0, rows, GENERATE_BATCH_ROWS):
        yield _batch(start, min(GENERATE_BATCH_ROWS, rows - start))


def _csv_view(table: pa.Table) -> pa.Table:
    """As AWS writes CSV: URL-encoded keys (here only the space), ISO 8601 times."""
    key = pc.replace_substring(table["key"], " ", "%20")
    stamp = pc.take(DATE_TEXT, table["date_choice"])
    return table.set_column(1, "key", key).set_column(3, "last_modified_date", stamp).drop(["date_choice"])


def write_inventory(root: Path, rows: int) -> dict[str, Path]:
    """Both formats' data files and manifest.json under root/BUCKET; returns the data files."""
    data = root / BUCKET / "data"
    data.mkdir(parents=True)
    files = {"Parquet": data / "part-0.parquet", "CSV": data / "part-0.csv.gz"}
    schema = _batch(0, 1).drop(["date_choice"]).schema
    with pq.ParquetWriter(files["Parquet"], schema) as parquet:
        for table in _batches(rows):
            parquet.write_table(table.drop(["date_choice"]), row_group_size=ROW_GROUP_ROWS)
    quoted = pcsv.WriteOptions(include_header=False, quoting_style="all_valid")
    with gzip.open(files["CSV"], "wb", compresslevel=GZIP_LEVEL) as sink:
        for table in _batches(rows):
            text = pa.BufferOutputStream()
            pcsv.write_csv(_csv_view(table), text, quoted)
            sink.write(text.getvalue())
    for fmt, path in files.items():
        doc = {
            "sourceBucket": SOURCE,
            "destinationBucket": f"arn:aws:s3:::{BUCKET}",
            "version": "2016-11-30",
            "creationTimestamp": "1714521600000",
            "fileFormat": fmt,
            "fileSchema": CSV_SCHEMA if fmt == "CSV" else "message s3.inventory { }",
            "files": [{"key": f"data/{path.name}", "size": path.stat().st_size, "MD5checksum": _md5(path)}],
        }
        folder = root / BUCKET / fmt
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps(doc))
    return files


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def local_source(fmt: str, path: Path) -> str:
    if fmt == "Parquet":
        return f"read_parquet('{path}')"
    columns = ", ".join(f"'{k}': '{v}'" for k, v in CSV_COLUMNS.items())
    return (
        f"(SELECT * REPLACE (url_decode(replace(key, '+', ' ')) AS key) FROM read_csv('{path}', "
        f"columns = {{{columns}}}, header = false, auto_detect = false, quote = '\"', escape = '\"'))"
    )


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def s3batch_runner(home: Path, storage: StorageConfig, fmt: str) -> Callable[[str], Any]:
    def run(sql: str) -> Any:
        with QuerySession(Settings(home=home), storage) as session:
            table = sql.format(t=f"inventory('s3://{BUCKET}/{fmt}/manifest.json')")
            result = session.run(table)
            return [row for batch in result.batches for row in batch.to_pylist()]

    return run


def local_runner(fmt: str, path: Path) -> Callable[[str], Any]:
    def run(sql: str) -> Any:
        with duckdb.connect() as con:
            relation = con.sql(sql.format(t=local_source(fmt, path)))
            return relation.to_arrow_table().to_pylist()

    return run


def measure(runners: dict[str, Callable[[str], Any]], sql: str, runs: int) -> dict[str, float]:
    """Median seconds per runner, the runners alternating within each run; every answer equal."""
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    answers = set()
    for i in range(runs):
        order = list(runners) if i % 2 == 0 else list(reversed(runners))
        for name in order:
            took, answer = timed(lambda name=name: runners[name](sql))  # type: ignore[misc]
            seconds[name].append(took)
            answers.add(json.dumps(answer, default=str))
    if len(answers) != 1:
        raise AssertionError(f"the engines disagree: {answers}")
    return {name: statistics.median(values) for name, values in seconds.items()}


@contextlib.contextmanager
def s3_endpoint(root: Path) -> Iterator[S3Config]:
    sys.path.insert(0, str(Path(__file__).parent))
    from servers import ACCESS_KEY, SECRET_KEY, rclone_server

    os.environ.update({"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    os.environ.setdefault("AWS_REGION", "us-east-1")
    # rclone answers a ranged GET with 200 and a Content-Range: the lean path takes a 200 for
    # the whole object, so reads go through botocore here.
    os.environ["S3BATCH_LEAN_PATH"] = "0"

    def prepare(folder: Path) -> None:  # hard links: the same files, no copy
        shutil.copytree(root / BUCKET, folder / BUCKET, copy_function=os.link)

    with rclone_server(prepare) as (endpoint, _):
        yield S3Config(endpoint_url=endpoint, addressing_style="path", lean_path=False)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--formats", nargs="+", default=["Parquet", "CSV"], choices=["Parquet", "CSV"])
    parser.add_argument("--s3", action="store_true", help="also query through rclone serve s3")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp:
        root, home = Path(tmp) / "buckets", Path(tmp) / "home"
        took, files = timed(lambda: write_inventory(root, args.rows))
        sizes = {fmt: path.stat().st_size for fmt, path in files.items()}
        print(f"{args.rows:,} rows written in {took:.1f} s: {sizes}", file=sys.stderr)
        with contextlib.ExitStack() as stack:
            s3 = stack.enter_context(s3_endpoint(root)) if args.s3 else None
            for fmt in args.formats:
                runners = {
                    "local": local_runner(fmt, files[fmt]),
                    "s3batch": s3batch_runner(home, LocalConfig(root=str(root)), fmt),
                }
                if s3 is not None:
                    runners["s3batch-s3"] = s3batch_runner(home, s3, fmt)
                for label, sql in QUERIES.items():
                    medians = measure(runners, sql, args.runs)
                    row = {"format": fmt, "query": label, "rows": args.rows, "seconds": medians}
                    row["ratio"] = {k: medians["local"] / v for k, v in medians.items() if k != "local"}
                    results.append(row)
                    ratios = "  ".join(f"{k} {v:.2f}x" for k, v in row["ratio"].items())
                    times = "  ".join(f"{k} {v:.3f}s" for k, v in medians.items())
                    print(f"{fmt:8} {label:40} {times}  ratio: {ratios}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"bench_query_{args.rows}{'_s3' if args.s3 else ''}.json"
    meta = {"python": platform.python_version(), "duckdb": duckdb.__version__, "cpus": os.cpu_count()}
    out.write_text(json.dumps({"meta": meta, "runs": args.runs, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
