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
    LineSplitter,
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


#: Report fields, mostly plain (the common case) with the characters that need quoting mixed in.
REPORT_FIELDS = st.one_of(
    st.sampled_from(["bkt", "k/ü", "", "204", "succeeded"]),
    FIELDS,
    st.sampled_from([",", '"', "\r", "\n", "a,b\r\n"]),
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.tuples(*[REPORT_FIELDS] * 7), max_size=8))
def test_rendering_many_rows_equals_rendering_each(values: list[tuple[str, ...]]) -> None:
    """render_rows' fast path (join everything, check the text once) gives exactly the lines
    render_row quotes one by one."""
    from s3batch.domain.report import render_row

    rows = [ReportRow(*v) for v in values]
    assert render_rows(rows) == "".join(render_row(r) for r in rows)
    assert render_rows(iter(rows)) == render_rows(rows)  # any iterable, read once


#: Fields drawn from what plain lines hold and what they must not (quotes, spaces, CR, NUL,
#: non-ASCII, %-escapes, long keys), so both the block path and its fallback are exercised.
MANIFEST_FIELDS = st.one_of(
    st.sampled_from(["bkt", "b.k-t_1", "", " bkt", "k%2Cx", "a+b", "v1", "3HL4+rmS/X=", '"q,"', "x" * 1025]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=12),
)
ALL_LAYOUTS = [*LAYOUTS, CsvLayout.from_fields(["Bucket", "Key", "VersionId"])]


def parse_by(data: bytes, layout: CsvLayout, read_bytes: int, blocks: bool) -> list[Task] | str:
    """Every task of `data`, or the error message, by blocks (with fallback) or line by line."""
    parser = CsvManifestParser(layout)
    splitter = LineSplitter()
    tasks: list[Task] = []
    try:
        for i in range(0, len(data) + 1, read_bytes):
            pieces = splitter.feed_blocks(data[i : i + read_bytes])
            tail = splitter.close_block() if i + read_bytes > len(data) else None
            for block in [*pieces, *([tail] if tail else [])]:
                found = parser.parse_block(block, len(tasks)) if blocks else None
                if found is None:
                    found = []
                    for line in block.lines():
                        if (task := parser.parse(line, len(tasks) + len(found))) is not None:
                            found.append(task)
                tasks.extend(found)
    except ManifestError as exc:
        return str(exc)
    return tasks


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.lists(st.lists(MANIFEST_FIELDS, min_size=1, max_size=4), max_size=12),
    st.sampled_from(ALL_LAYOUTS),
    st.sampled_from([b"\n", b"\r\n"]),
    st.integers(1, 200),
    st.booleans(),
)
def test_blocks_parse_exactly_as_lines(
    rows: list[list[str]], layout: CsvLayout, eol: bytes, read_bytes: int, bom: bool
) -> None:
    data = (b"\xef\xbb\xbf" if bom else b"") + b"".join(",".join(r).encode() + eol for r in rows)
    assert parse_by(data, layout, read_bytes, blocks=True) == parse_by(data, layout, read_bytes, blocks=False)


def test_plain_blocks_take_the_fast_path() -> None:
    """The property above would pass with a parse_block that always declines: check it doesn't."""
    rest = b"".join(b"bkt,k%%2B%d+x,v%d\r\n" % (i, i) for i in range(3))
    for first_line, fast in ((b"bkt,first,v\n", True), (b"bkt,first\n", False)):  # all or no versions
        parser = CsvManifestParser(LAYOUTS[0])
        first, others = LineSplitter().feed_blocks(first_line + rest)
        assert first.data == first_line  # the first line comes alone (BOM, header check) ...
        assert parser.parse_block(first, 0) is None  # ... and always goes line by line
        assert next(parser.parse(line, 0) for line in first.lines()) is not None
        assert (parser.count_block(others) == 3) is fast
    tasks = CsvManifestParser(LAYOUTS[0], resuming=True).parse_block(others, 7)
    assert tasks is not None and [t.seq for t in tasks] == [7, 8, 9]
    assert (tasks[0].key, tasks[0].raw_key, tasks[0].version_id) == ("k+0 x", "k%2B0+x", "v0")
