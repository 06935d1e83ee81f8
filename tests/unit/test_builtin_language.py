"""s3batch-language's scoring and result shape, without I/O (functions/builtin/language.py).

Needs the `ml` extra's lingua-language-detector (its models ship inside the wheel)."""

from __future__ import annotations

import importlib
import json

import pytest

pytest.importorskip("lingua")

from s3batch.functions.builtin import inputs, language
from s3batch.functions.builtin.language import MIN_SCORE, TOP_LANGUAGES, detect_languages
from s3batch.functions.registry import BUILTIN_FUNCTIONS

TEXTS = {
    "en": "The quarterly report shows revenue growth across all regions, driven mainly by strong "
    "demand in the retail segment and lower logistics costs.",
    "fr": "Le rapport trimestriel montre une croissance du chiffre d'affaires dans toutes les "
    "régions, portée surtout par une forte demande dans le commerce de détail.",
    "de": "Der Quartalsbericht zeigt ein Umsatzwachstum in allen Regionen, getragen vor allem von "
    "der starken Nachfrage im Einzelhandel und niedrigeren Logistikkosten.",
    "ja": "四半期報告書によると、すべての地域で売上が伸びており、主に小売部門の強い需要が寄与した。",
}


def test_documents_get_their_language_first() -> None:
    results = detect_languages(list(TEXTS.values()))
    assert [langs[0]["LanguageCode"] for langs in results] == list(TEXTS)
    for langs in results:
        assert 1 <= len(langs) <= TOP_LANGUAGES
        scores = [entry["Score"] for entry in langs]
        assert scores == sorted(scores, reverse=True)
        assert all(MIN_SCORE <= score <= 1 for score in scores)
        assert all(len(entry["LanguageCode"]) == 2 and entry["LanguageCode"].islower() for entry in langs)


def test_a_batch_scores_like_one_text_at_a_time() -> None:
    batch = detect_languages(list(TEXTS.values()))
    single = [detect_languages([text])[0] for text in TEXTS.values()]
    assert batch == single


@pytest.mark.parametrize("text", ["", "   \n", "12345 678,90", "!!! ??? ...", "a"])
def test_text_without_language_has_an_empty_list(text: str) -> None:
    assert detect_languages([text]) == [[]]


def test_answers_keep_order_and_fail_only_undecodable_objects() -> None:
    bodies = [TEXTS["fr"].encode(), b"caf\xe9 au lait", b"", TEXTS["en"].encode()]
    answers = language._answer(bodies, high_accuracy=False)
    assert [a.code for a in answers] == ["Succeeded", "PermanentFailure", "Succeeded", "Succeeded"]
    assert json.loads(answers[0].message)["Languages"][0]["LanguageCode"] == "fr"
    assert answers[1].message == "InvalidEncoding: the object is not UTF-8 text (invalid byte at offset 3)"
    assert json.loads(answers[2].message) == {"Languages": []}
    assert json.loads(answers[3].message)["Languages"][0]["LanguageCode"] == "en"


def test_only_the_first_max_text_bytes_are_scored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(language, "MAX_TEXT_BYTES", len(TEXTS["de"].encode()))
    body = (TEXTS["de"] + " " + TEXTS["en"] * 20).encode()
    [answer] = language._answer([body[: language.MAX_TEXT_BYTES + 1]], high_accuracy=False)
    [first, *_] = json.loads(answer.message)["Languages"]
    assert first["LanguageCode"] == "de" and first["Score"] > 0.9


def test_bad_accuracy_argument_fails_every_task() -> None:
    event = {
        "invocationSchemaVersion": "2.0",
        "invocationId": "i",
        "job": {"id": "j", "userArguments": {"Accuracy": "best"}},
        "tasks": [{"taskId": "t1", "s3Bucket": "b", "s3Key": "k"}],
    }
    [result] = language.handler(event, None)["results"]
    assert result["resultCode"] == "PermanentFailure"
    assert result["resultString"] == "InvalidUserArguments: Accuracy must be one of 'low', 'high', got 'best'"


def test_is_registered_and_imports() -> None:
    module, _, attr = BUILTIN_FUNCTIONS["s3batch-language"].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_accuracy_argument_reaches_the_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    # The high-accuracy models take about 1 GB and many seconds to load, so a stand-in records
    # which detector the handler asked for.
    asked: list[bool] = []

    class Detector:
        def compute_language_confidence_values(self, text: str) -> list[object]:
            return []

    def detector(high_accuracy: bool) -> Detector:
        asked.append(high_accuracy)
        return Detector()

    def run_compute(event: dict[str, object], compute: object, *, max_bytes: int) -> dict[str, object]:
        assert max_bytes == language.MAX_TEXT_BYTES + 1
        return {"answers": compute([b"text"])}  # type: ignore[operator]

    monkeypatch.setattr(language, "_detector", detector)
    monkeypatch.setattr(inputs, "batch_handler", run_compute)
    for arguments, expected in (({}, False), ({"Accuracy": "low"}, False), ({"Accuracy": "high"}, True)):
        event = {"invocationSchemaVersion": "2.0", "job": {"userArguments": arguments}, "tasks": []}
        [answer] = language.handler(event, None)["answers"]
        assert json.loads(answer.message) == {"Languages": []}
        assert asked.pop() is expected
