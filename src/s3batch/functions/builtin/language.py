"""`s3batch-language`: the language of a text object, shaped like Amazon Comprehend's
DetectDominantLanguage.

An ordinary S3 Batch Operations handler (schema 1.0 or 2.0) on the shared batch path
(`batch.batch_handler`): each task's object is read through the job's own store, its first
`MAX_TEXT_BYTES` are decoded as UTF-8, and Lingua (lingua-language-detector, whose models ship
inside the package: no download) scores the whole batch in one call. The resultString is

    {"Languages":[{"LanguageCode":"en","Score":0.9731},{"LanguageCode":"nl","Score":0.0269}]}

- LanguageCode is ISO 639-1 (Lingua knows 75 languages); at most `TOP_LANGUAGES` entries, best
  first, each with a Score (Lingua's confidence, 0-1, the scores of all languages sum to 1) of at
  least `MIN_SCORE`, rounded to `SCORE_DIGITS` places.
- A text with nothing to go on (empty, blank, only digits or punctuation) succeeds with
  `{"Languages":[]}`: the object is fine, it just has no language, and an empty list keeps the
  report's failures for objects that really failed. An object that is not UTF-8 text fails
  (PermanentFailure "InvalidEncoding: ... offset N").

Accuracy (UserArguments `Accuracy`, schema 2.0; default `low`). Lingua's low-accuracy mode uses
its trigram models only. Measured on one process with all 75 languages: low accuracy takes about
130 MB and scores about 11,000 short texts a second; high accuracy (1- to 5-gram models) takes
about 1.1-1.3 GB once a few texts in Latin script have been seen, needs seconds to load (20 s on
a busy 2-CPU machine) and scores about 1,700-3,600 short texts a second. The built-in runs
inline (functions/inline.py): one detector per engine process, whose batch call Lingua spreads
over the cores. Lingua's authors document that low accuracy loses accuracy only on texts under about 120
characters (on 23 one-line texts it misread 6, high accuracy 1), and objects are usually
longer; a job of short texts can ask for `"Accuracy": "high"`. Models load lazily (as Lingua
needs them) rather than all at start: preloading costs more memory and saves only the first
call's fraction of a second.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Sequence
from typing import Any

from lingua import ConfidenceValue, LanguageDetector, LanguageDetectorBuilder

from s3batch.functions.builtin.batch import Answer
from s3batch.functions.builtin.inputs import (
    BadUserArgument,
    UndecodableText,
    batch_in_chunks,
    decode_head,
    fail_all,
    read_limit,
    user_argument,
)

#: Languages listed at most, best first.
TOP_LANGUAGES = 3
#: Languages scoring less than this are left out (Lingua gives every language a score).
MIN_SCORE = 0.01
#: Decimal places kept in Score.
SCORE_DIGITS = 4
#: Only the first this-many bytes are scored: a document's language is settled long before, and
#: Lingua's time grows with the text (about 0.04 s per 100 KiB in low-accuracy mode).
MAX_TEXT_BYTES = 100 * 1024
#: UserArguments key choosing Lingua's mode, and its values.
ACCURACY_ARGUMENT = "Accuracy"
LOW_ACCURACY = "low"
HIGH_ACCURACY = "high"


#: Inline (functions/inline.py), several threads may ask for the first detector at once.
_DETECTOR_LOCK = threading.Lock()


def _detector(high_accuracy: bool) -> LanguageDetector:
    """One detector per process and mode, built once even when threads ask together."""
    with _DETECTOR_LOCK:
        return _build_detector(high_accuracy)


@functools.cache
def _build_detector(high_accuracy: bool) -> LanguageDetector:
    """Lingua's models are the expensive part: built once per process and mode."""
    builder = LanguageDetectorBuilder.from_all_languages()
    if not high_accuracy:
        builder = builder.with_low_accuracy_mode()
    return builder.build()


def detect_languages(texts: Sequence[str], *, high_accuracy: bool = False) -> list[list[dict[str, Any]]]:
    """The Languages list of each text, scored in one call (Lingua spreads a batch over cores)."""
    detector = _detector(high_accuracy)
    if len(texts) == 1:
        confidences = [detector.compute_language_confidence_values(texts[0])]
    else:
        confidences = detector.compute_language_confidence_values_in_parallel(list(texts))
    return [_top(values) for values in confidences]


def _top(values: Sequence[ConfidenceValue]) -> list[dict[str, Any]]:
    # Lingua sorts by confidence, best first.
    return [
        {
            "LanguageCode": value.language.iso_code_639_1.name.lower(),
            "Score": round(value.value, SCORE_DIGITS),
        }
        for value in values[:TOP_LANGUAGES]
        if value.value >= MIN_SCORE
    ]


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """S3 Batch Operations entry point: one result per task in the event (one task, or a batch)."""
    try:
        accuracy = user_argument(event, ACCURACY_ARGUMENT, (LOW_ACCURACY, HIGH_ACCURACY), LOW_ACCURACY)
    except BadUserArgument as exc:
        return fail_all(event, str(exc))
    compute = functools.partial(_answer, high_accuracy=accuracy == HIGH_ACCURACY)
    return batch_in_chunks(event, compute, max_bytes=read_limit(MAX_TEXT_BYTES))


def _answer(bodies: Sequence[bytes], *, high_accuracy: bool) -> list[Answer]:
    answers: list[Answer | None] = [None] * len(bodies)
    texts: list[str] = []
    scored: list[int] = []
    for i, body in enumerate(bodies):
        try:
            texts.append(decode_head(body, MAX_TEXT_BYTES).text)
            scored.append(i)
        except UndecodableText as exc:
            answers[i] = Answer.failed(str(exc))
    for i, languages in zip(scored, detect_languages(texts, high_accuracy=high_accuracy), strict=True):
        answers[i] = Answer.ok(json.dumps({"Languages": languages}, separators=(",", ":")))
    return [a for a in answers if a is not None]
