"""Objects to pictures for the image built-ins (`s3batch-ocr`, `s3batch-embed-image`).

Decoding is Pillow's, so any format it reads works (PNG, JPEG, GIF, BMP, TIFF, WebP, ...).
An object that is not such a picture, is cut short, or is too big to decode safely becomes a
`PictureError` whose `answer` is that task's PermanentFailure ("CODE: message"); one bad object
never fails the others of its batch.

Objects are read up to `cap + 1` bytes (`read_cap`): one more byte than allowed tells an object
over the cap from one exactly at it, and an image cut at the cap could not be decoded anyway.
An event's objects are read as many at a time as fit `MAX_HELD_BYTES`, each counted at its cap
(`read_in_chunks`): with `InvocationBatchSize` up to 1,000, holding them all could take 1,000
times the cap.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from s3batch.errors import StorageError
from s3batch.functions.builtin.batch import PERMANENT_FAILURE, TEMPORARY_FAILURE, Answer, task_ref
from s3batch.functions.objects import read_objects

if TYPE_CHECKING:
    from PIL.Image import Image

#: Largest picture decoded, in pixels (50 megapixels: a 300 DPI scan of an A2 page). Pillow's
#: own bomb guard warns only past ~89 megapixels, and a decoded RGB picture takes 3 bytes a pixel.
MAX_PICTURE_PIXELS: Final = 50_000_000
#: Bytes of objects one worker holds at once while reading an event, each counted at its read
#: cap (256 MiB: five objects at a 50 MiB cap).
MAX_HELD_BYTES: Final = 256 * 1024 * 1024
#: Background that transparent pixels are laid on (white, as a page or a viewer shows them).
BACKGROUND_RGB: Final = (255, 255, 255)

TOO_LARGE: Final = "ObjectTooLarge"
UNSUPPORTED: Final = "UnsupportedFormat"
PICTURE_TOO_LARGE: Final = "ImageTooLarge"
BROKEN: Final = "InvalidImage"


class PictureError(Exception):
    """An object that cannot become a picture; `answer` is its task's failure."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def answer(self) -> Answer:
        return Answer.failed(f"{self.code}: {self.message}")


def read_cap(max_bytes: int) -> int:
    """Bytes to read of each object so that `check_size` can tell one over `max_bytes`."""
    return max_bytes + 1


def read_in_chunks(event: Mapping[str, Any], max_bytes: int) -> Iterator[tuple[int, bytes | Answer]]:
    """(task index, body) for each task of `event`, in order; a body that could not be read is
    its task's answer, as `batch_handler` gives it. Objects are read `read_cap(max_bytes)` long,
    concurrently, as many at a time as fit MAX_HELD_BYTES."""
    tasks = list(event["tasks"])
    size = max(1, MAX_HELD_BYTES // read_cap(max_bytes))
    for start in range(0, len(tasks), size):
        chunk = tasks[start : start + size]
        bodies = read_objects([task_ref(task) for task in chunk], max_bytes=read_cap(max_bytes))
        for offset, body in enumerate(bodies):
            yield start + offset, storage_answer(body) if isinstance(body, StorageError) else body


def storage_answer(error: StorageError) -> Answer:
    """A task whose object could not be read: TemporaryFailure when the store may recover."""
    return Answer(
        TEMPORARY_FAILURE if error.retryable else PERMANENT_FAILURE, f"{error.code}: {error.message}"
    )


def check_size(body: bytes, max_bytes: int) -> None:
    """Raise PictureError when `body` (read with `read_cap`) is over `max_bytes`."""
    if len(body) > max_bytes:
        raise PictureError(
            TOO_LARGE, f"object is larger than {max_bytes} bytes, the most this function reads"
        )


@contextmanager
def bomb_guard() -> Iterator[None]:
    """Pillow's decompression-bomb warning and error, inside the block, as PictureError.

    Pillow warns, then refuses, past its own limit (which it checks again when a frame's pixels
    are loaded); both mean "too large" here, a failed task rather than a failed invocation."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
            raise PictureError(PICTURE_TOO_LARGE, str(exc)) from None


def open_picture(body: bytes) -> Image:
    """The picture in `body`, its first frame checked for size before its pixels are decoded
    (`frames` checks each later frame when it gets there)."""
    from PIL import Image, UnidentifiedImageError

    with bomb_guard():
        try:
            picture = Image.open(io.BytesIO(body))
        except UnidentifiedImageError:
            raise PictureError(UNSUPPORTED, "object is not an image format Pillow reads") from None
    check_pixels(picture.width, picture.height)
    return picture


def check_pixels(width: int, height: int) -> None:
    """Raise PictureError for a picture over MAX_PICTURE_PIXELS."""
    if width * height > MAX_PICTURE_PIXELS:
        raise PictureError(
            PICTURE_TOO_LARGE, f"{width}x{height} pixels is more than {MAX_PICTURE_PIXELS} pixels"
        )


def frames(picture: Image, limit: int) -> Iterator[Image]:
    """The first `limit` frames of a picture (pages of a TIFF, frames of a GIF), each as RGB.

    Each frame has its own size (a TIFF's second page may claim far more pixels than its first),
    so each is checked against MAX_PICTURE_PIXELS before its pixels are decoded."""
    count = getattr(picture, "n_frames", 1)
    for index in range(min(count, limit)):
        # The guard covers one frame and never spans a `yield`: warning filters are
        # process-wide, and the consumer's code must not run under this one.
        with bomb_guard():
            if index:
                seek(picture, index)
            frame = rgb(picture)
        yield frame


def seek(picture: Image, index: int) -> None:
    """Move `picture` to frame `index` (from 0) and check that frame's size."""
    try:
        picture.seek(index)
    except (EOFError, OSError, ValueError) as exc:  # a frame the header promised is missing
        raise PictureError(BROKEN, f"cannot decode frame {index + 1}: {exc}") from None
    check_pixels(picture.width, picture.height)


def rgb(picture: Image) -> Image:
    """The picture as upright 8-bit RGB: EXIF rotation applied, transparency on white."""
    from PIL import Image, ImageOps

    try:
        upright = ImageOps.exif_transpose(picture)
        if upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info:
            rgba = upright.convert("RGBA")
            flat = Image.new("RGB", rgba.size, BACKGROUND_RGB)
            flat.paste(rgba, mask=rgba.getchannel("A"))
            return flat
        return upright.convert("RGB")
    except (OSError, ValueError, SyntaxError) as exc:  # Pillow's errors for a cut or corrupt body
        raise PictureError(BROKEN, f"cannot decode the image: {exc}") from None
