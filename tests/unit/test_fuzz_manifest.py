"""Property tests: the manifest parser on arbitrary bytes, URL-encoded keys from manifest to
report row, and report rendering round trips."""

from __future__ import annotations

from urllib.parse import quote_plus

from hypothesis import given, settings
from hypothesis import strategies as st

from s3batch.domain.manifest import (
    MAX_KEY_FIELD_CHARS,
    CsvLayout,
    CsvManifestParser,
    split_lines,
)
from s3batch.domain.report import ReportRow, parse_rows, render_rows
from s3batch.domain.task import Task, TaskResult
from s3batch.errors import ManifestError

#: Examples per property: enough to find the usual edge cases, quick enough for every run.
EXAMPLES = 300
LAYOUTS = [CsvLayout.from_fields(None), CsvLayout.from_fields(["Bucket", "Key"]),
           CsvLayout.from_fields(["Ignore", "Key", "Bucket", "VersionId"])]  # fmt: skip
#: Keys as S3 allows them: any Unicode text (no surrogates, which UTF-8 cannot carry).
KEYS = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=200)
#: Report fields: any text without NUL (csv cannot read NUL back) or surrogates.
FIELDS = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=60)


def parse_all(data: bytes, layout: CsvLayout, chunk: int) -> list[Task]:
    parser = CsvManifestParser(layout)
    chunks = [data[i : i + chunk] for i in range(0, len(data), chunk)]
    tasks = []
    for line in split_lines(chunks):
        task = parser.parse(line, len(tasks))
        if task is not None:
            tasks.append(task)
    return tasks


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(LAYOUTS), st.integers(1, 64))
def test_arbitrary_bytes_parse_or_raise_manifest_error(data: bytes, layout: CsvLayout, chunk: int) -> None:
    try:
        tasks = parse_all(data, layout, chunk)
    except ManifestError as exc:
        assert str(exc).startswith("manifest")
        return
    for task in tasks:  # what parses is a usable task
        assert task.bucket and task.raw_key
        assert len(task.raw_key) <= MAX_KEY_FIELD_CHARS


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=8))
def test_line_shaped_garbage_parses_or_raises_manifest_error(lines: list[bytes]) -> None:
    data = b"\n".join(b"bkt," + line for line in lines)
    try:
        parse_all(data, LAYOUTS[1], 7)
    except ManifestError:
        pass


@settings(max_examples=EXAMPLES, deadline=None)
@given(KEYS, st.sampled_from(["", "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"]))
def test_encoded_key_round_trips_manifest_task_report(key: str, version: str) -> None:
    encoded = quote_plus(key, safe="/")
    line = f"bkt,{encoded},{version}\n" if version else f"bkt,{encoded}\n"
    [task] = parse_all(line.encode(), LAYOUTS[0], 1024)
    assert task.key == key  # what storage calls use
    assert task.raw_key == encoded  # what the report and Lambda events carry
    assert task.version_id == (version or None)
    for result in (TaskResult.ok(), TaskResult.fail("NoSuchKey", 'gone, "really"\r\n', 404)):
        [row] = parse_rows(render_rows([ReportRow.of(task, result)]))
        assert row == ReportRow.of(task, result)
        assert row.key == encoded


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.tuples(*[FIELDS] * 7), min_size=1, max_size=5))
def test_report_rows_render_and_parse_back(values: list[tuple[str, ...]]) -> None:
    rows = [ReportRow(*v) for v in values]
    text = render_rows(rows)
    assert text.endswith("\n")
    # A row of seven empty fields renders as ",,,,,,", not a blank line: nothing is lost.
    assert parse_rows(text) == rows
