"""`s3batch-ocr`: the text in images and PDF pages (RapidOCR, PP-OCRv4 models in ONNX).

The models (PaddleOCR's PP-OCRv4 text detector and recognizer, and its text-direction
classifier, converted to ONNX) ship inside the `rapidocr-onnxruntime` wheel and run on ONNX
Runtime: nothing is downloaded, ever. The recognizer reads Chinese and English (Latin letters,
digits, punctuation); it often drops the spaces between words.

Input: any image Pillow reads (PNG, JPEG, GIF, BMP, TIFF, WebP, ...; every frame of a
multi-page TIFF or GIF, up to `MAX_PAGES`) or a PDF, whose pages (up to `MAX_PAGES`) are
rendered at `PDF_DPI` by PDFium (the `pypdfium2` wheel ships it). Objects over
`MAX_OBJECT_BYTES` answer PermanentFailure `ObjectTooLarge`; other unusable objects answer
`UnsupportedFormat`, `InvalidImage`, `ImageTooLarge` or `InvalidPdf` (images.py).

Answers:

- resultString `{"Text":"first RESULT_TEXT_CHARS characters","Lines":12,"Confidence":0.9731,
  "Pages":1}`; Confidence is the mean of the lines' scores (null when no text was found);
- resultData `{"model": ..., "text": the full text (lines joined by "\\n", pages by "\\f"),
  "pages": N, "lines": [{"page": 1, "text": ..., "confidence": 0.97, "box": [[x, y] x 4]}]}`,
  boxes in pixels of the page as decoded (PDF pages: as rendered at PDF_DPI), corners clockwise
  from the top left.

An event's objects are read a few at a time (images.read_in_chunks); pages go through the
library's pipeline one at a time (detect, then recognize the lines of that page), its line
recognizer taking `LINE_BATCH_CPU` or `LINE_BATCH_GPU` lines per pass. Device:
`device.py` (`S3BATCH_DEVICE`); a GPU needs ONNX Runtime's CUDA build (`onnxruntime-gpu`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from s3batch.functions.builtin import images
from s3batch.functions.builtin.batch import Answer, respond
from s3batch.functions.builtin.device import Device, onnx_device, require, threads_per_worker
from s3batch.functions.builtin.images import PictureError

if TYPE_CHECKING:
    from PIL.Image import Image

#: What the answers name as the model.
MODEL_NAME: Final = "PP-OCRv4 (rapidocr-onnxruntime)"
#: Largest object read, in bytes: a larger one answers ObjectTooLarge (50 MiB).
MAX_OBJECT_BYTES: Final = 50 * 1024 * 1024
#: Pages of a PDF, or frames of an image, read per object; the rest are skipped ("Pages"
#: says how many were read).
MAX_PAGES: Final = 20
#: Resolution PDF pages are rendered at, in dots per inch (PDF's own unit is 1/72 inch).
PDF_DPI: Final = 200
POINTS_PER_INCH: Final = 72
#: Characters of text kept in resultString (all of it is in resultData).
RESULT_TEXT_CHARS: Final = 200
#: Decimal places kept of each confidence.
SCORE_DIGITS: Final = 4
#: Decimal places kept of each box coordinate, in pixels.
BOX_DIGITS: Final = 1
#: Text lines recognized per forward pass (the library's default on the CPU).
LINE_BATCH_CPU: Final = 6
LINE_BATCH_GPU: Final = 64
#: PDF files start with this within their first 1024 bytes (ISO 32000-1, 7.5.2 and Annex H).
PDF_MAGIC: Final = b"%PDF-"
PDF_MAGIC_WITHIN: Final = 1024
LINE_SEPARATOR: Final = "\n"
PAGE_SEPARATOR: Final = "\f"

INVALID_PDF: Final = "InvalidPdf"
OCR_FAILED: Final = "OcrFailed"


@dataclass(frozen=True, slots=True)
class Line:
    """One line of text found on a page (page numbers start at 1)."""

    page: int
    text: str
    confidence: float
    box: tuple[tuple[float, float], ...]


@dataclass(frozen=True, slots=True)
class Loaded:
    """The OCR engine of this worker process and where it runs."""

    engine: Any
    device: Device


@functools.cache
def loaded() -> Loaded:
    """Load the packaged models once per worker process."""
    device = onnx_device()
    rapidocr = require("rapidocr_onnxruntime")
    gpu = device.is_gpu
    engine = rapidocr.RapidOCR(
        det_use_cuda=gpu,
        cls_use_cuda=gpu,
        rec_use_cuda=gpu,
        rec_batch_num=LINE_BATCH_GPU if gpu else LINE_BATCH_CPU,
        intra_op_num_threads=threads_per_worker(),
    )
    return Loaded(engine, device)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """S3 Batch Operations entry point: one result per task in the event (one task, or a batch)."""
    answers = [
        body if isinstance(body, Answer) else read_object(body)
        for _, body in images.read_in_chunks(event, MAX_OBJECT_BYTES)
    ]
    return respond(event, answers)


def read_object(body: bytes) -> Answer:
    """The text of one object (an image or a PDF), or its failure."""
    try:
        images.check_size(body, MAX_OBJECT_BYTES)
        lines: list[Line] = []
        pages = 0
        for pages, page in enumerate(pages_of(body), start=1):
            lines.extend(recognize(page, pages))
    except PictureError as exc:
        return exc.answer
    return text_answer(lines, pages)


def pages_of(body: bytes) -> Iterator[Image]:
    """The pages of a PDF or the frames of an image, as RGB pictures (at most MAX_PAGES)."""
    if is_pdf(body):
        yield from pdf_pages(body)
    else:
        yield from images.frames(images.open_picture(body), MAX_PAGES)


def is_pdf(body: bytes) -> bool:
    return PDF_MAGIC in body[:PDF_MAGIC_WITHIN]


def pdf_pages(body: bytes) -> Iterator[Image]:
    """Render each page with PDFium at PDF_DPI (less for a page that would be too many pixels)."""
    pdfium = require("pypdfium2")
    try:
        document = pdfium.PdfDocument(body)
    except pdfium.PdfiumError as exc:
        raise PictureError(INVALID_PDF, f"PDFium cannot open the PDF: {exc}") from None
    try:
        for index in range(min(len(document), MAX_PAGES)):
            yield render(pdfium, document, index)
    finally:
        document.close()


def render(pdfium: Any, document: Any, index: int) -> Image:
    """One page of an open PDF as an RGB picture."""
    page = document[index]
    try:
        return page.render(scale=render_scale(*page.get_size())).to_pil().convert("RGB")
    except pdfium.PdfiumError as exc:
        raise PictureError(INVALID_PDF, f"PDFium cannot render page {index + 1}: {exc}") from None
    finally:
        page.close()


def render_scale(width_pt: float, height_pt: float) -> float:
    """Pixels per PDF point: PDF_DPI, or less so the page stays within MAX_PICTURE_PIXELS."""
    scale = PDF_DPI / POINTS_PER_INCH
    pixels = width_pt * height_pt * scale * scale
    if pixels > images.MAX_PICTURE_PIXELS:
        scale *= (images.MAX_PICTURE_PIXELS / pixels) ** 0.5
    return scale


def recognize(page: Image, number: int) -> list[Line]:
    """The lines the engine finds on one page, top to bottom."""
    engine = loaded().engine  # outside the try: a bad S3BATCH_DEVICE is the job's problem
    try:
        found, _elapsed = engine(page)
    except Exception as exc:  # the library's own errors on this page's pixels (e.g. 10000x10)
        detail = str(exc) or str(exc.__cause__ or "")
        raise PictureError(
            OCR_FAILED, f"page {number}: {type(exc).__name__}: {detail}".rstrip(": ")
        ) from None
    return [
        Line(number, str(text), round(float(score), SCORE_DIGITS), _box(box))
        for box, text, score in found or ()
    ]


def _box(points: Sequence[Sequence[float]]) -> tuple[tuple[float, float], ...]:
    return tuple((round(float(x), BOX_DIGITS), round(float(y), BOX_DIGITS)) for x, y in points)


def text_answer(lines: Sequence[Line], pages: int) -> Answer:
    """A Succeeded answer: a short summary in resultString, every line in resultData."""
    text = join_text(lines, pages)
    confidence = round(sum(line.confidence for line in lines) / len(lines), SCORE_DIGITS) if lines else None
    summary = {
        "Text": text[:RESULT_TEXT_CHARS],
        "Lines": len(lines),
        "Confidence": confidence,
        "Pages": pages,
    }
    data = {
        "model": MODEL_NAME,
        "text": text,
        "pages": pages,
        "lines": [
            {
                "page": line.page,
                "text": line.text,
                "confidence": line.confidence,
                "box": [list(p) for p in line.box],
            }
            for line in lines
        ],
    }
    return Answer.ok(json.dumps(summary, ensure_ascii=False, separators=(",", ":")), data)


def join_text(lines: Sequence[Line], pages: int) -> str:
    """Lines joined by LINE_SEPARATOR, pages by PAGE_SEPARATOR (an empty page stays empty)."""
    by_page: list[list[str]] = [[] for _ in range(pages)]
    for line in lines:
        by_page[line.page - 1].append(line.text)
    return PAGE_SEPARATOR.join(LINE_SEPARATOR.join(texts) for texts in by_page)
