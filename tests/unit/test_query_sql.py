"""The pure parts of `s3batch query` (domain/query.py): finding table-function calls in SQL
outside literals and comments, checking their arguments, column names and manifest lines; and
the object file DuckDB reads data files through (service/query_fs.py)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from s3batch.domain.inventory import COLUMNAR_NAMES
from s3batch.domain.query import (
    TableCall,
    inventory_location,
    manifest_has_versions,
    manifest_line,
    rewrite,
    snake_name,
    tokenize,
)
from s3batch.errors import BadRequest
from s3batch.service.query_fs import LoopThread, ObjectFile, ServedFileSystem, ServedObject
from s3batch.storage.memory import MemoryStore


def test_calls_become_views_and_repeats_share_one() -> None:
    sql = (
        "SELECT * FROM inventory('s3://b/m.json') a JOIN Report('job-1') r USING (key) "
        "JOIN inventory ( 's3://b/m.json' ) c USING (key)"
    )
    out = rewrite(sql)
    assert out.sql == (
        "SELECT * FROM s3batch_inventory_1 a JOIN s3batch_report_2 r USING (key) "
        "JOIN s3batch_inventory_1 c USING (key)"
    )
    assert out.calls == (
        TableCall("inventory", "s3://b/m.json", "s3batch_inventory_1"),
        TableCall("report", "job-1", "s3batch_report_2"),
    )
    assert out.tables == frozenset()


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 'report(''x'')' AS s",
        "SELECT 1 -- report('x')\n",
        "SELECT 1 /* outer /* report('x') */ still a comment */",
        "SELECT $$ report('x') $$, $t$ inventory('y') $t$",
        'SELECT "report"(1)',
        "SELECT E'it\\'s report(''x'')'",
        "SELECT my.report('x')",
    ],
)
def test_names_inside_literals_comments_quotes_or_qualified_are_left_alone(sql: str) -> None:
    out = rewrite(sql)
    assert out.sql == sql and out.calls == ()


def test_named_tables_are_noted_unless_qualified_or_called() -> None:
    assert rewrite("SELECT * FROM jobs j JOIN Reports USING (job_id)").tables == {"jobs", "reports"}
    assert rewrite("SELECT x.jobs, jobs(1), 'reports' FROM t x").tables == frozenset()


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        ("", "the query is empty"),
        ("  ;; ", "the query is empty"),
        ("SELECT 1; SELECT 2", "one statement at a time (a ';' at line 1 column 9"),
        ("SELECT 'open", "unterminated string literal at line 1 column 8"),
        ("SELECT 1 /* open", "unterminated /* comment"),
        ('SELECT "open', "unterminated quoted name"),
        ("SELECT $x$ open", "unterminated dollar-quoted string"),
        ("SELECT * FROM report(job)", "report() takes one string literal: a job id"),
        ("SELECT * FROM report('a', 'b')", "report() takes one string literal"),
        ("SELECT * FROM report('a b')", "not a job id"),
        ("SELECT * FROM inventory('http://b/k')", "expected arn:aws:s3:::bucket/path/manifest.json"),
        ("SELECT * FROM inventory('s3://bucket-only')", "expected s3://bucket/path/manifest.json"),
        ("SELECT * FROM pipeline_report('  ')", "name the pipeline's TOML or YAML file"),
    ],
)
def test_bad_sql_or_arguments_are_refused_by_name(sql: str, message: str) -> None:
    with pytest.raises(BadRequest) as raised:
        rewrite(sql)
    assert message in raised.value.message


def test_a_trailing_semicolon_is_one_statement() -> None:
    assert rewrite("SELECT 1;\n").sql == "SELECT 1;\n"


def test_tokens_cover_the_text_exactly() -> None:
    sql = "SELECT a.b, 'x''y', \"q\"\"n\", $$d$$, 1.5e3 -- c\n/* k */ FROM t;"
    assert "".join(t.text for t in tokenize(sql)) == sql


def test_inventory_locations() -> None:
    assert inventory_location("arn:aws:s3:::inv/a/b/manifest.json").key == "a/b/manifest.json"
    loc = inventory_location("s3://inv/a b/manifest.json")
    assert (loc.bucket, loc.key) == ("inv", "a b/manifest.json")


def test_csv_field_names_match_aws_columnar_names() -> None:
    assert {snake_name(k): v for k, v in COLUMNAR_NAMES.items()} == {v: v for v in COLUMNAR_NAMES.values()}
    assert snake_name("ObjectLockRetainUntilDate") == "object_lock_retain_until_date"
    assert snake_name(" IntelligentTieringAccessTier") == "intelligent_tiering_access_tier"


def test_manifest_columns() -> None:
    assert manifest_has_versions(["bucket", "key"]) is False
    assert manifest_has_versions(["KEY", "version_id", "Bucket"]) is True
    for bad in (["bucket"], ["bucket", "key", "size"], ["bucket", "key", "key"], []):
        with pytest.raises(BadRequest, match="found: "):
            manifest_has_versions(bad)


def test_manifest_lines_encode_keys_and_quote_fields() -> None:
    assert manifest_line("b", "a,b c+d/ü%.txt", None) == "b,a%2Cb+c%2Bd/%C3%BC%25.txt\n"
    assert manifest_line("b", "k", 'v"1') == 'b,k,"v""1"\n'


# -- the object file DuckDB reads through ------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[LoopThread, MemoryStore, bytes]]:
    io = LoopThread()
    store = MemoryStore()
    body = bytes(range(256)) * 40_000  # ~10 MB: more than one read-ahead block

    async def put() -> None:
        await store.create_bucket("b")
        await store.put_bytes("b", "k", body)

    io.call(put())
    yield io, store, body
    io.stop()


def test_object_file_reads_front_to_back_and_at_random(served: tuple[LoopThread, MemoryStore, bytes]) -> None:
    io, store, body = served
    f = ObjectFile(io, store, ServedObject("b", "k", len(body)))
    got = bytearray()
    for size in [1, 65_536, 3, 9 << 20, 1 << 20] * 4:  # bounded; stops at the end
        chunk = f.read(size)
        if not chunk:
            break
        got += chunk
    assert bytes(got) == body
    for at, size in [(0, 4), (len(body) - 8, 8), (123_457, 70_000), (len(body) - 3, 100)]:
        f.seek(at)
        assert f.read(size) == body[at : at + size]


def test_object_file_seeks_are_per_thread_and_plain_reads_go_on(
    served: tuple[LoopThread, MemoryStore, bytes],
) -> None:
    io, store, body = served
    f = ObjectFile(io, store, ServedObject("b", "k", len(body)))
    f.seek(1000)
    other: list[bytes] = []
    # Another thread's seek + read does not move this thread's pending seek...
    t = threading.Thread(target=lambda: (f.seek(5000), other.append(f.read(10))))
    t.start()
    t.join()
    assert other == [body[5000:5010]]
    assert f.read(10) == body[1000:1010]
    # ...and a read with no seek of its own goes on where the file's last read ended.
    t = threading.Thread(target=lambda: other.append(f.read(10)))
    t.start()
    t.join()
    assert other[-1] == body[1010:1020]


def test_file_system_serves_only_given_objects(served: tuple[LoopThread, MemoryStore, bytes]) -> None:
    io, store, body = served
    fs = ServedFileSystem(io, store)
    fs.serve([ServedObject("b", "k", len(body))])
    assert fs.glob("s3batch://b/*") == ["b/k"] and fs.size("s3batch://b/k") == len(body)
    assert not fs.exists("s3batch://b/other")
    with pytest.raises(FileNotFoundError, match="reads only the data files"):
        fs.open("s3batch://b/other", "rb")
    with pytest.raises(PermissionError, match="never writes"):
        fs.open("s3batch://b/k", "wb")
    with fs.open("s3batch://b/k", "rb") as f:
        assert f.read(3) == body[:3]


def test_loop_thread_runs_coroutines() -> None:
    io = LoopThread()
    try:
        assert io.call(asyncio.sleep(0, result=7)) == 7
    finally:
        io.stop()
