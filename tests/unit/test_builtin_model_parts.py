"""The model built-ins' pure parts: S3BATCH_DEVICE, threads per worker, text and answer shaping."""

from __future__ import annotations

import json
from typing import Any

import pytest

from s3batch.errors import ConfigError
from s3batch.functions.builtin import device, embed_image, embed_text, images, ocr
from s3batch.functions.builtin.batch import PERMANENT_FAILURE, SUCCEEDED, Answer
from s3batch.functions.builtin.device import GPU_BATCH_SIZE, Device, DeviceChoice
from s3batch.functions.registry import BUILTIN_FUNCTIONS


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, DeviceChoice("auto")),
        ("", DeviceChoice("auto")),
        ("auto", DeviceChoice("auto")),
        (" CPU ", DeviceChoice("cpu")),
        ("cuda", DeviceChoice("cuda", 0)),
        ("cuda:3", DeviceChoice("cuda", 3)),
        ("CUDA:12", DeviceChoice("cuda", 12)),
    ],
)
def test_device_values(raw: str | None, expected: DeviceChoice) -> None:
    assert device.parse_device(raw) == expected


@pytest.mark.parametrize(
    "raw", ["gpu", "mps", "cuda:", "cuda:-1", "cuda:x", "cuda:1:2", "cpu,cuda", "cuda:1234"]
)
def test_bad_device_is_a_config_error_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"S3BATCH_DEVICE='.*' is not a device: expected auto, cpu, cuda"):
        device.parse_device(raw)


@pytest.mark.parametrize(
    ("choice", "gpus", "expected"),
    [
        (DeviceChoice("auto"), 0, Device("cpu")),
        (DeviceChoice("auto"), 2, Device("cuda", 0)),
        (DeviceChoice("auto"), None, Device("cuda", 0)),  # ONNX Runtime with its CUDA provider
        (DeviceChoice("cpu"), 4, Device("cpu")),
        (DeviceChoice("cuda", 1), 2, Device("cuda", 1)),
        (DeviceChoice("cuda", 5), None, Device("cuda", 5)),  # ONNX Runtime checks the index itself
    ],
)
def test_device_resolves_against_the_gpus_a_runtime_sees(
    choice: DeviceChoice, gpus: int | None, expected: Device
) -> None:
    assert device.resolve(choice, gpus=gpus, runtime="R") == expected


def test_asking_for_a_gpu_that_is_not_there_never_falls_back_to_the_cpu() -> None:
    with pytest.raises(ConfigError, match="S3BATCH_DEVICE=cuda:0 but R sees no CUDA GPU"):
        device.resolve(DeviceChoice("cuda", 0), gpus=0, runtime="R")
    with pytest.raises(ConfigError, match=r"S3BATCH_DEVICE=cuda:2 but R sees 2 GPU\(s\) \(indices 0-1\)"):
        device.resolve(DeviceChoice("cuda", 2), gpus=2, runtime="R")


def test_device_names_and_batch_sizes() -> None:
    assert (Device("cpu").name, Device("cpu").batch_size(8), Device("cpu").is_gpu) == ("cpu", 8, False)
    assert (Device("cuda", 1).name, Device("cuda", 1).batch_size(8)) == ("cuda:1", GPU_BATCH_SIZE)
    # Each model's CPU size is its own, and smaller than a GPU's.
    assert embed_text.CPU_BATCH_SIZE != embed_image.CPU_BATCH_SIZE
    assert max(embed_text.CPU_BATCH_SIZE, embed_image.CPU_BATCH_SIZE) < GPU_BATCH_SIZE


@pytest.mark.parametrize(
    ("cpus", "workers", "threads"), [(2, 2, 1), (16, 4, 4), (16, 3, 5), (2, 8, 1), (8, 1, 8)]
)
def test_workers_split_the_cores(cpus: int, workers: int, threads: int) -> None:
    assert device.threads_per_worker(cpus, workers) == threads


@pytest.mark.parametrize(("raw", "workers"), [("4", 4), ("", 6), ("zero", 6), ("0", 6)])
def test_worker_count_comes_from_the_settings_variable(
    monkeypatch: pytest.MonkeyPatch, raw: str, workers: int
) -> None:
    monkeypatch.setenv(device.FUNCTION_WORKERS_ENV, raw)
    assert device.function_workers(cpus=6) == workers


def test_bad_device_fails_before_a_runtime_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(device.DEVICE_ENV, "tpu")
    monkeypatch.setattr(device, "require", _must_not_import)
    for resolve in (device.torch_device, device.onnx_device):
        with pytest.raises(ConfigError, match="S3BATCH_DEVICE='tpu'"):
            resolve()


def _must_not_import(module: str) -> Any:
    raise AssertionError(f"imported {module}")


def test_a_missing_model_library_says_how_to_install_it() -> None:
    with pytest.raises(
        ConfigError, match=r"no_such_module_s3batch is not installed.*pip install 's3batch\[ml\]'"
    ):
        device.require("no_such_module_s3batch")


def test_the_model_builtins_are_registered() -> None:
    assert BUILTIN_FUNCTIONS["s3batch-embed-text"] == "s3batch.functions.builtin.embed_text:handler"
    assert BUILTIN_FUNCTIONS["s3batch-embed-image"] == "s3batch.functions.builtin.embed_image:handler"
    assert BUILTIN_FUNCTIONS["s3batch-ocr"] == "s3batch.functions.builtin.ocr:handler"


def test_importing_embed_text_forces_the_hugging_face_libraries_offline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    embed_text.force_offline()
    import os

    assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b"plain", "plain"),
        ("café".encode(), "café"),
        ("\ufeffwith bom".encode(), "with bom"),
        ("cut é".encode()[:-1], "cut "),  # the cap fell inside the last character
    ],
)
def test_text_objects_decode_as_utf8(body: bytes, text: str) -> None:
    assert embed_text.decode_text(body) == text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"ok\xff\xfe", "InvalidText: object is not UTF-8 text (invalid byte at offset 2)"),
        (b" \n\t ", "EmptyText: object has no text to embed"),
        (b"", "EmptyText: object has no text to embed"),
    ],
)
def test_unusable_text_objects_fail_permanently(body: bytes, message: str) -> None:
    answer = embed_text.decode_text(body)
    assert not isinstance(answer, str)
    assert (answer.code, answer.message) == (PERMANENT_FAILURE, message)


def test_text_vector_answer_keeps_the_vector_out_of_the_report_line() -> None:
    answer = embed_text.vector_answer([0.6, 0.8], truncated=True)
    assert answer.code == SUCCEEDED
    assert json.loads(answer.message) == {
        "Model": "sentence-transformers/all-MiniLM-L6-v2",
        "Dimensions": 2,
        "Normalized": True,
        "Truncated": True,
    }
    assert answer.data == {"model": "sentence-transformers/all-MiniLM-L6-v2", "vector": [0.6, 0.8]}


def test_ocr_answer_summarizes_and_keeps_every_line() -> None:
    lines = [
        ocr.Line(1, "first", 0.9, ((0.0, 0.0), (9.0, 0.0), (9.0, 2.0), (0.0, 2.0))),
        ocr.Line(1, "second", 0.8, ((0.0, 3.0), (9.0, 3.0), (9.0, 5.0), (0.0, 5.0))),
        ocr.Line(3, "third " * 50, 0.7, ((1.0, 1.0), (2.0, 1.0), (2.0, 2.0), (1.0, 2.0))),
    ]
    answer = ocr.text_answer(lines, pages=3)
    summary = json.loads(answer.message)
    full = "first\nsecond\f\f" + "third " * 50
    assert summary == {"Text": full[: ocr.RESULT_TEXT_CHARS], "Lines": 3, "Confidence": 0.8, "Pages": 3}
    assert answer.data is not None and answer.data["text"] == full and answer.data["pages"] == 3
    assert answer.data["lines"][2] == {
        "page": 3,
        "text": "third " * 50,
        "confidence": 0.7,
        "box": [[1.0, 1.0], [2.0, 1.0], [2.0, 2.0], [1.0, 2.0]],
    }


def test_ocr_of_a_picture_without_text_succeeds_with_no_lines() -> None:
    answer = ocr.text_answer([], pages=1)
    assert answer.code == SUCCEEDED
    assert json.loads(answer.message) == {"Text": "", "Lines": 0, "Confidence": None, "Pages": 1}


def test_pdf_is_told_by_its_header() -> None:
    assert ocr.is_pdf(b"%PDF-1.7\n...")
    assert ocr.is_pdf(b"junk before the header " + b"%PDF-1.4")
    assert not ocr.is_pdf(b"\x89PNG\r\n\x1a\n")
    assert not ocr.is_pdf(b" " * ocr.PDF_MAGIC_WITHIN + b"%PDF-1.4")


def test_pdf_pages_render_at_the_set_resolution_unless_too_many_pixels() -> None:
    a4 = (595.0, 842.0)
    assert ocr.render_scale(*a4) == pytest.approx(ocr.PDF_DPI / 72)
    huge = (14400.0, 14400.0)  # 200 x 200 inches, PDF's largest page
    scale = ocr.render_scale(*huge)
    assert huge[0] * huge[1] * scale * scale == pytest.approx(images.MAX_PICTURE_PIXELS)


def test_objects_over_the_cap_are_told_apart_from_objects_at_it() -> None:
    cap = 10
    assert images.read_cap(cap) == 11
    images.check_size(b"x" * cap, cap)
    with pytest.raises(images.PictureError) as raised:
        images.check_size(b"x" * images.read_cap(cap), cap)
    assert (
        raised.value.answer.message
        == "ObjectTooLarge: object is larger than 10 bytes, the most this function reads"
    )
    with pytest.raises(images.PictureError, match="ImageTooLarge: 10000x10000 pixels"):
        images.check_pixels(10_000, 10_000)


def test_pictures_decode_upright_and_flat(monkeypatch: pytest.MonkeyPatch) -> None:
    pil = pytest.importorskip("PIL.Image")
    import io
    import random

    buffer = io.BytesIO()
    pil.new("RGBA", (4, 2), (0, 0, 0, 0)).save(buffer, "PNG")
    [frame] = list(images.frames(images.open_picture(buffer.getvalue()), limit=5))
    assert (frame.mode, frame.size, frame.getpixel((0, 0))) == ("RGB", (4, 2), images.BACKGROUND_RGB)
    with pytest.raises(images.PictureError, match="UnsupportedFormat"):
        images.open_picture(b"this is text, not a picture")
    noisy = io.BytesIO()
    pil.frombytes("L", (64, 64), random.Random(0).randbytes(64 * 64)).save(noisy, "PNG")
    with pytest.raises(images.PictureError, match="InvalidImage: cannot decode the image"):
        list(images.frames(images.open_picture(noisy.getvalue()[:200]), limit=1))
    monkeypatch.setattr(images, "MAX_PICTURE_PIXELS", 7)
    with pytest.raises(images.PictureError, match="ImageTooLarge: 4x2 pixels"):
        images.open_picture(buffer.getvalue())


def _tiff(sizes: list[tuple[int, int]]) -> bytes:
    """A little-endian grayscale TIFF whose pages claim `sizes` but share 100 bytes of pixels:
    a page's header, not its data, says how many pixels it will decode to."""
    import struct

    pixels = b"\x80" * 100
    entry_count = 9
    ifd_bytes = 2 + entry_count * 12 + 4
    first_ifd = 8 + len(pixels)
    out = b"II*\x00" + struct.pack("<I", first_ifd) + pixels
    for number, (width, height) in enumerate(sizes):
        following = first_ifd + (number + 1) * ifd_bytes if number + 1 < len(sizes) else 0
        longs = {256: width, 257: height, 273: 8, 278: height, 279: len(pixels)}
        shorts = {258: 8, 259: 1, 262: 1, 277: 1}
        tags = sorted({**longs, **shorts})
        out += struct.pack("<H", len(tags))
        for tag in tags:
            if tag in longs:
                out += struct.pack("<HHII", tag, 4, 1, longs[tag])
            else:
                out += struct.pack("<HHIHH", tag, 3, 1, shorts[tag], 0)
        out += struct.pack("<I", following)
    return out


def test_every_frame_is_checked_for_size_before_it_is_decoded() -> None:
    pytest.importorskip("PIL.Image")
    # Page 2 over Pillow's own hard limit (~179 Mpixels): its DecompressionBombError is this
    # object's failure, not an exception out of the handler.
    picture = images.open_picture(_tiff([(10, 10), (20_000, 20_000)]))
    decoded = images.frames(picture, limit=5)
    assert next(decoded).size == (10, 10)
    with pytest.raises(images.PictureError, match="ImageTooLarge: 20000x20000 pixels"):
        next(decoded)
    # Page 2 over MAX_PICTURE_PIXELS but under Pillow's limits: only our check stops it.
    picture = images.open_picture(_tiff([(10, 10), (8_000, 8_000)]))
    with pytest.raises(images.PictureError, match="ImageTooLarge: 8000x8000 pixels"):
        list(images.frames(picture, limit=5))
    # Pages within the limits all come out, and a limit stops before the pages it leaves.
    fine = _tiff([(10, 10), (5, 20), (20_000, 20_000)])
    assert [f.size for f in images.frames(images.open_picture(fine), limit=2)] == [(10, 10), (5, 20)]


def test_pillows_bomb_warning_and_error_on_a_later_frame_are_picture_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import warnings

    pil = pytest.importorskip("PIL.Image")
    monkeypatch.setattr(images, "MAX_PICTURE_PIXELS", 10**9)  # leave it to Pillow's guard
    monkeypatch.setattr(pil, "MAX_IMAGE_PIXELS", 100)  # warns past 100 pixels, refuses past 200
    for size in ((15, 10), (30, 10)):
        decoded = images.frames(images.open_picture(_tiff([(10, 10), size])), limit=5)
        next(decoded)
        with pytest.raises(images.PictureError, match="ImageTooLarge: Image size"):
            next(decoded)
    # The guard is not left on for the caller between frames.
    decoded = images.frames(images.open_picture(_tiff([(10, 10), (10, 10)])), limit=5)
    next(decoded)
    with pytest.warns(pil.DecompressionBombWarning):
        warnings.warn("the caller's own warning", pil.DecompressionBombWarning, stacklevel=1)
    assert next(decoded).size == (10, 10)


def _event(keys: list[str]) -> dict[str, Any]:
    return {
        "invocationSchemaVersion": "2.0",
        "invocationId": "i",
        "job": {"id": "j"},
        "tasks": [{"taskId": f"t{i}", "s3Bucket": "b", "s3Key": key} for i, key in enumerate(keys)],
    }


def test_image_objects_are_read_a_few_at_a_time_and_embedded_in_device_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from s3batch.errors import StorageError
    from s3batch.functions.builtin import embed_image

    chunks: list[list[str]] = []
    batches: list[int] = []

    def read_objects(refs: list[Any], *, max_bytes: int) -> list[bytes | StorageError]:
        assert max_bytes == embed_image.MAX_OBJECT_BYTES + 1
        chunks.append([ref.key for ref in refs])
        missing = {
            "gone": StorageError("NoSuchKey", "gone", 404),
            "busy": StorageError("SlowDown", "s", 503, True),
        }
        return [missing.get(ref.key) or ref.key.encode() for ref in refs]

    def embed(pixels: list[Any]) -> list[list[float]]:
        batches.append(len(pixels))
        return [[float(len(p))] for p in pixels]

    monkeypatch.setattr(images, "read_objects", read_objects)
    monkeypatch.setattr(images, "MAX_HELD_BYTES", 3 * (embed_image.MAX_OBJECT_BYTES + 1))
    monkeypatch.setattr(embed_image, "prepare", lambda body: Answer.failed("bad") if body == b"bad" else body)
    monkeypatch.setattr(embed_image, "loaded", lambda: embed_image.Loaded(None, Device("cuda", 0)))
    monkeypatch.setattr(device, "GPU_BATCH_SIZE", 2)
    monkeypatch.setattr(embed_image, "embed", embed)
    keys = ["a", "gone", "bb", "bad", "ccc", "busy", "dddd", "e"]
    results = embed_image.handler(_event(keys), None)["results"]
    assert chunks == [["a", "gone", "bb"], ["bad", "ccc", "busy"], ["dddd", "e"]]
    assert batches == [2, 2, 1]  # the device's batch size, across chunks; the rest at the end
    assert [r["taskId"] for r in results] == [f"t{i}" for i in range(len(keys))]
    assert [(r["resultCode"], r.get("resultData", {}).get("vector")) for r in results] == [
        (SUCCEEDED, [1.0]),
        (PERMANENT_FAILURE, None),
        (SUCCEEDED, [2.0]),
        (PERMANENT_FAILURE, None),
        (SUCCEEDED, [3.0]),
        ("TemporaryFailure", None),
        (SUCCEEDED, [4.0]),
        (SUCCEEDED, [1.0]),
    ]
    assert results[1]["resultString"] == "NoSuchKey: gone" and results[3]["resultString"] == "bad"
