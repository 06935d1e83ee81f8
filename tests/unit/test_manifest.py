"""The CSV manifest parser: AWS's rules, and a clear error naming the line otherwise."""

from __future__ import annotations

from urllib.parse import quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3batch.domain.manifest import BLOCK_MAX_BYTES, CsvLayout, CsvManifestParser, LineSplitter, split_lines
from s3batch.domain.task import Task
from s3batch.errors import BadRequest, ManifestError


def parse(text: str | bytes, fields: list[str] | None = None) -> list[Task]:
    data = text.encode() if isinstance(text, str) else text
    parser = CsvManifestParser(CsvLayout.from_fields(fields))
    tasks: list[Task] = []
    for line in split_lines([data]):
        task = parser.parse(line, len(tasks))
        if task is not None:
            tasks.append(task)
    return tasks


def test_rows_become_tasks_with_decoded_keys_and_raw_keys_kept() -> None:
    tasks = parse("bkt,photos/a%20b.jpg\nbkt,x+y%2Bz\n")
    assert [(t.bucket, t.key, t.raw_key, t.seq) for t in tasks] == [
        ("bkt", "photos/a b.jpg", "photos/a%20b.jpg", 0),
        ("bkt", "x y+z", "x+y%2Bz", 1),
    ]


def test_version_ids_and_ignore_columns() -> None:
    tasks = parse("junk,bkt,k1,v1\njunk,bkt,k2,v2\n", ["Ignore", "Bucket", "Key", "VersionId"])
    assert [(t.key, t.version_id) for t in tasks] == [("k1", "v1"), ("k2", "v2")]


def test_without_fields_a_third_column_is_the_version() -> None:
    assert parse("b,k,ver\n")[0].version_id == "ver"
    assert parse("b,k\n")[0].version_id is None


def test_extra_columns_beyond_fields_are_ignored() -> None:
    assert parse("b,k,extra,more\n", ["Bucket", "Key"])[0].key == "k"


def test_version_ids_on_some_rows_only_is_refused_naming_the_line() -> None:
    with pytest.raises(ManifestError) as err:
        parse("b,k1,v1\nb,k2,v2\nb,k3,\n", ["Bucket", "Key", "VersionId"])
    assert err.value.line == 3
    assert "every row" in str(err.value)


def test_header_row_is_refused() -> None:
    with pytest.raises(ManifestError, match="header") as err:
        parse("Bucket,Key\nb,k\n")
    assert err.value.line == 1


def test_too_few_columns_names_the_line() -> None:
    with pytest.raises(ManifestError, match="expected 2 columns") as err:
        parse("b,k\nb,k2\nonly-bucket\n", ["Bucket", "Key"])
    assert err.value.line == 3


def test_key_longer_than_1024_characters_is_refused() -> None:
    assert parse(f"b,{'k' * 1024}\n")[0].key == "k" * 1024
    with pytest.raises(ManifestError, match=r"1,?024") as err:
        parse(f"b,ok\nb,{'k' * 1025}\n")
    assert err.value.line == 2


def test_non_utf8_names_the_line() -> None:
    with pytest.raises(ManifestError, match="UTF-8") as err:
        parse(b"b,ok\nb,caf\xe9\n")
    assert err.value.line == 2


def test_bom_crlf_blank_lines_and_quotes() -> None:
    tasks = parse(b'\xef\xbb\xbfb,k1\r\n\r\n"b","k,2"\r\nb,k3')
    assert [t.key for t in tasks] == ["k1", "k,2", "k3"]


def test_stray_quote_is_a_clear_error() -> None:
    with pytest.raises(ManifestError, match="malformed CSV") as err:
        parse('b,k1\nb,"unterminated\n')
    assert err.value.line == 2


def test_empty_bucket_or_key_and_control_characters() -> None:
    with pytest.raises(ManifestError, match="empty bucket"):
        parse(",k\n")
    with pytest.raises(ManifestError, match="empty key"):
        parse("b,\n")
    with pytest.raises(ManifestError, match="control character"):
        parse("b,a\x01b\n")


def test_bad_fields_are_a_bad_request() -> None:
    with pytest.raises(BadRequest):
        CsvLayout.from_fields(["Bucket", "Bucket", "Key"])
    with pytest.raises(BadRequest):
        CsvLayout.from_fields(["Bucket", "Nope"])


def test_line_splitter_tracks_offsets_across_chunk_boundaries() -> None:
    data = b"b,one\nb,two\r\nb,three"
    splitter = LineSplitter()
    lines = [line for i in range(len(data)) for line in splitter.feed(data[i : i + 1])]
    lines += splitter.close()
    assert [(ln.number, ln.offset, ln.text) for ln in lines] == [
        (1, 0, "b,one"),
        (2, 6, "b,two"),
        (3, 13, "b,three"),
    ]
    # Resuming at a recorded offset reads the same line.
    resumed = list(split_lines([data[13:]], start_offset=13, first_line=3))
    assert resumed[0].text == "b,three" and resumed[0].offset == 13


keys = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=60).filter(
    lambda k: k.strip() == k or True
)


@given(st.lists(keys, min_size=1, max_size=20), st.integers(min_value=1, max_value=64))
def test_url_encoded_keys_round_trip_whatever_the_chunking(keys: list[str], chunk: int) -> None:
    text = "".join(f"bkt,{quote_plus(k, safe='/')}\n" for k in keys).encode()
    chunks = [text[i : i + chunk] for i in range(0, len(text), chunk)]
    parser = CsvManifestParser(CsvLayout.from_fields(["Bucket", "Key"]))
    got = [parser.parse(line, i) for i, line in enumerate(split_lines(chunks))]
    assert [t.key for t in got if t] == keys


def test_blocks_are_bounded_and_cover_the_stream_exactly() -> None:
    lines = [b"bkt,first\n"] + [b"bkt,k%d\n" % i for i in range(20_000)]
    lines[5_000] = b"bkt," + b"x" * (BLOCK_MAX_BYTES + 10) + b"\n"  # longer than a block
    data = b"".join(lines) + b"bkt,tail-without-newline"
    splitter = LineSplitter()
    blocks = [b for i in range(0, len(data), 100_000) for b in splitter.feed_blocks(data[i : i + 100_000])]
    tail = splitter.close_block()
    assert tail is not None and tail.data == b"bkt,tail-without-newline"
    blocks.append(tail)
    assert b"".join(b.data for b in blocks) == data
    assert blocks[0].data == b"bkt,first\n"  # the first line alone
    offset, line = 0, 1
    for block in blocks:
        assert (block.offset, block.first_line) == (offset, line)
        assert len(block.data) <= BLOCK_MAX_BYTES or block.data.count(b"\n") == 1
        offset, line = offset + len(block.data), line + block.data.count(b"\n")
    numbered = [raw for block in blocks for raw in block.lines()]
    assert [r.number for r in numbered] == list(range(1, len(lines) + 2))
    long_line = numbered[5_000]
    assert long_line.text.startswith("bkt,xxx") and long_line.offset == len(b"".join(lines[:5_000]))
