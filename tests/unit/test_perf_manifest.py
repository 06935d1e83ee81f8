"""The manifest parser's fast path (lines without quotes are split on commas) must agree with
the csv module on every line, including the errors it names."""

from __future__ import annotations

import csv
import random

import pytest

from s3batch.domain.manifest import CsvLayout, CsvManifestParser, RawLine
from s3batch.domain.task import Task
from s3batch.errors import ManifestError

#: Characters the random lines are built from: separators, quotes, spaces, controls, unicode.
ALPHABET = 'ab,/ %+"\t\r\x00\x01\x1f\x7f\x85\u2028é-_.'
LINES = 3000


def _outcome(parser: CsvManifestParser, text: str) -> Task | str | None:
    try:
        return parser.parse(RawLine(2, 0, text), 0)
    except ManifestError as exc:
        return f"error: {exc}"


class CsvOnly(CsvManifestParser):
    """The parser as it was: csv.reader for every line."""

    def _split(self, line: RawLine) -> list[str]:
        try:
            rows = list(csv.reader([line.text], strict=True))
        except csv.Error as exc:
            raise ManifestError(f"malformed CSV ({exc})", line.number) from exc
        if len(rows) != 1:
            raise ManifestError("malformed CSV (unterminated quote)", line.number)
        return rows[0]


@pytest.mark.parametrize("fields", [None, ["Bucket", "Key"], ["Ignore", "Key", "Bucket", "VersionId"]])
def test_fast_split_agrees_with_csv(fields: list[str] | None) -> None:
    rng = random.Random(6)
    layout = CsvLayout.from_fields(fields)
    for _ in range(LINES):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 14)))
        # resuming=True: skip the header rule; fresh parsers: no all-or-none VersionId state.
        fast, slow = CsvManifestParser(layout, resuming=True), CsvOnly(layout, resuming=True)
        assert _outcome(fast, text) == _outcome(slow, text), repr(text)


def test_checks_still_name_the_problem() -> None:
    parser = CsvManifestParser(CsvLayout.from_fields(["Bucket", "Key"]), resuming=True)
    for text, message in [
        ("bad bucket,k", "invalid bucket name"),
        ("a/b,k", "invalid bucket name"),
        ("b\u2028x,k", "invalid bucket name"),  # unicode whitespace, as str.isspace() says
        ("b,k\x01", "control character"),
        ("b,k\x7f", "control character"),
        ("b," + "k" * 1025, "the limit is 1024"),
        ("b", "expected 2 columns"),
    ]:
        with pytest.raises(ManifestError, match=message):
            parser.parse(RawLine(2, 0, text), 0)
