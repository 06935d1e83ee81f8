"""`s3batch-sentiment`: the classic "S3 Batch Operations + Lambda + sentiment" walkthrough.

An ordinary S3 Batch Operations handler (schema 1.0 or 2.0): it reads each task's object
through the job's own store (`read_object`, so folder-backed jobs work too), scores it with
VADER (its lexicon ships with the package: no network, no model download), and answers
`Succeeded` with a resultString shaped like Amazon Comprehend's DetectSentiment:

    {"Sentiment":"POSITIVE","SentimentScore":{"Positive":0.35,"Negative":0.0,"Neutral":0.65,"Mixed":0.0}}

Classification (VADER's `compound` is in [-1, 1]; pos/neg/neu are word proportions summing
to 1):

- MIXED when pos and neg are both at least `MIXED_MIN_PROPORTION` and |compound| is below
  `MIXED_MAX_ABS_COMPOUND`: plenty of both, and neither side clearly wins;
- else POSITIVE when compound ≥ `POSITIVE_MIN_COMPOUND`, NEGATIVE when compound ≤
  `NEGATIVE_MAX_COMPOUND` (VADER's authors' own cut-offs), NEUTRAL in between.

SentimentScore is a confidence per class that sums to 1, built from the same numbers:
Mixed = balance × (1 − |compound|), where balance = 2·min(pos, neg) / (pos + neg) is 1 when
positive and negative words weigh the same; the rest, r = 1 − Mixed, is split as
Positive = r·max(0, compound), Negative = r·max(0, −compound), Neutral = r·(1 − |compound|).
Clear texts thus score near 1 for their class; a weak signal just past a threshold is still
labelled by the rules above but shows a low confidence, as it should.

A missing object answers PermanentFailure with "NoSuchKey: ..."; a retryable store error
(throttling, 5xx) answers TemporaryFailure so the job retries it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from s3batch.functions.builtin.batch import Answer, batch_handler

#: VADER's recommended thresholds on the compound score.
POSITIVE_MIN_COMPOUND = 0.05
NEGATIVE_MAX_COMPOUND = -0.05
#: Both positive and negative word proportions at least this → a MIXED candidate.
MIXED_MIN_PROPORTION = 0.15
#: ... and only if the compound score stays below this in absolute value.
MIXED_MAX_ABS_COMPOUND = 0.5
#: Decimal places kept in SentimentScore.
SCORE_DIGITS = 4
#: Only the first this-many bytes of an object are scored (VADER is linear in text length;
#: Comprehend itself accepts far less, 5 KB, per call).
MAX_TEXT_BYTES = 1024 * 1024


@functools.cache
def _analyzer() -> SentimentIntensityAnalyzer:
    """One analyzer per process: loading the lexicon is the expensive part."""
    return SentimentIntensityAnalyzer()


def detect_sentiment(text: str) -> dict[str, Any]:
    """Comprehend DetectSentiment-shaped result for `text`."""
    scores = _analyzer().polarity_scores(text)
    pos, neg, compound = float(scores["pos"]), float(scores["neg"]), float(scores["compound"])
    return {"Sentiment": classify(pos, neg, compound), "SentimentScore": confidences(pos, neg, compound)}


def confidences(pos: float, neg: float, compound: float) -> dict[str, float]:
    """Comprehend-style per-class scores summing to 1 (formulas in the module doc)."""
    balance = 2 * min(pos, neg) / (pos + neg) if pos + neg > 0 else 0.0
    strength = abs(compound)
    mixed = balance * (1 - strength)
    rest = 1 - mixed
    return {
        "Positive": round(rest * max(0.0, compound), SCORE_DIGITS),
        "Negative": round(rest * max(0.0, -compound), SCORE_DIGITS),
        "Neutral": round(rest * (1 - strength), SCORE_DIGITS),
        "Mixed": round(mixed, SCORE_DIGITS),
    }


def classify(pos: float, neg: float, compound: float) -> str:
    """POSITIVE, NEGATIVE, NEUTRAL or MIXED from VADER's scores (rules in the module doc)."""
    balanced = abs(compound) < MIXED_MAX_ABS_COMPOUND
    if pos >= MIXED_MIN_PROPORTION and neg >= MIXED_MIN_PROPORTION and balanced:
        return "MIXED"
    if compound >= POSITIVE_MIN_COMPOUND:
        return "POSITIVE"
    if compound <= NEGATIVE_MAX_COMPOUND:
        return "NEGATIVE"
    return "NEUTRAL"


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """S3 Batch Operations entry point: one result per task in the event (one task, or a batch)."""
    return batch_handler(event, _score, max_bytes=MAX_TEXT_BYTES)


def _score(bodies: Sequence[bytes]) -> list[Answer]:
    return [
        Answer.ok(json.dumps(detect_sentiment(body.decode("utf-8", errors="replace")), separators=(",", ":")))
        for body in bodies
    ]
