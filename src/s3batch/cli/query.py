"""`s3batch query "SQL"` and the manifest of `create-job --manifest-query` (docs/query.md)."""

from __future__ import annotations

import base64
import csv
import json
import sys
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from s3batch.cli.context import CliContext
from s3batch.errors import S3BatchError

if TYPE_CHECKING:
    import pyarrow as pa  # type: ignore[import-untyped]

    from s3batch.service.query import LiveTable, QueryResult, QuerySession
    from s3batch.storage.base import ObjectStore

#: Rows `--output table` shows before it stops with a note (csv and json print every row).
DEFAULT_TABLE_ROWS = 100
#: Exit status of a query that failed: bad SQL, an unreadable inventory, an unknown job...
EXIT_QUERY_FAILED = 1
#: Narrowest table drawn, in characters (rich shrinks columns to the terminal otherwise).
MIN_TABLE_WIDTH = 120

pass_ctx = click.make_pass_decorator(CliContext)


class QueryFailed(click.ClickException):
    exit_code = EXIT_QUERY_FAILED


@click.command("query")
@click.argument("sql")
@click.option(
    "--output",
    "-o",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
    help="table: the first --max-rows rows; csv and json: every row, streamed.",
)
@click.option("--max-rows", type=click.IntRange(min=1), default=DEFAULT_TABLE_ROWS, show_default=True)
@pass_ctx
def query(ctx: CliContext, sql: str, output: str, max_rows: int) -> None:
    """Run SQL (DuckDB) over inventory reports, completion reports and jobs.

    SQL is the query text, `-` for standard input, or file://path.sql. Tables:
    inventory('s3://bucket/path/manifest.json'), report('JOB_ID'), pipeline_report('file.toml'),
    pipeline_journal('file.toml'), pipeline_inventory('file.toml'), pipeline_reconciles('file.toml'),
    jobs and reports (every job's report rows, with job_id). See docs/query.md."""
    text = _sql_text(sql)
    with _session(ctx) as session:
        result = _guarded(lambda: session.run(text))
        if output == "table":
            _print_table(result, _guarded_rows(result), max_rows)
        elif output == "csv":
            _print_csv(result, _guarded_batches(result))
        else:
            _print_json(_guarded_rows(result))


def _sql_text(sql: str) -> str:
    if sql == "-":
        return sys.stdin.read()
    if sql.startswith("file://"):
        path = Path(sql[len("file://") :]).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="SQL") from exc
    return sql


def _session(ctx: CliContext) -> QuerySession:
    try:
        from s3batch.service.query import QuerySession
    except ImportError as exc:  # duckdb or fsspec: the `query` extra
        raise QueryFailed(
            f"s3batch query needs the query extra ({exc.name} is missing): pip install 's3batch[query]'"
        ) from exc
    try:
        return QuerySession(
            ctx.settings, ctx.storage, pipeline_rows=_pipeline_rows, pipeline_tables=_pipeline_table
        )
    except S3BatchError as exc:
        raise QueryFailed(str(exc)) from exc


def _guarded(fn: Any) -> Any:
    """`fn()`, its s3batch errors (SQL, storage, an unknown job) as a message and exit status."""
    from s3batch.errors import ApiError

    try:
        return fn()
    except ApiError as exc:
        raise QueryFailed(exc.message) from exc
    except S3BatchError as exc:
        raise QueryFailed(str(exc)) from exc


def _guarded_batches(result: QueryResult) -> Iterator[pa.RecordBatch]:
    batches = iter(result.batches)
    # Bounded by the answer: each pass takes one record batch.
    while True:
        batch = _guarded(lambda: next(batches, None))
        if batch is None:
            return
        yield batch


def _guarded_rows(result: QueryResult) -> Iterator[dict[str, Any]]:
    """The answer's rows, one dict at a time (a record batch is converted at once)."""
    for batch in _guarded_batches(result):
        yield from batch.to_pylist()


def _pipeline_rows(file: str) -> list[tuple[str, tuple[str, ...]]]:
    """pipeline_report(file): the completion-report rows kept in the pipeline's state DB."""
    from s3batch.errors import BadRequest
    from s3batch.pipelines.config import load_config
    from s3batch.pipelines.state import PipelineState

    try:
        state = PipelineState(load_config(Path(file).expanduser()).state_path)
    except S3BatchError as exc:
        raise BadRequest(f"pipeline_report({file!r}): {exc}") from exc
    try:
        return [(run_id, tuple(row)) for run_id, row in state.report_rows()]
    finally:
        state.close()


async def _pipeline_table(file: str, table: str, store: ObjectStore) -> LiveTable:
    """pipeline_<table>(file): one of the pipeline's live tables (docs/pipeline-tables.md), as
    its database's rows or its Parquet files in `store`."""
    from s3batch.errors import BadRequest
    from s3batch.pipelines.tables.query import table_source
    from s3batch.service.query import LiveTable
    from s3batch.service.query_fs import ServedObject

    try:  # no [tables], a bad file, a database that cannot be opened, files not listable
        source = await table_source(Path(file).expanduser(), table, store)
    except S3BatchError as exc:
        raise BadRequest(f"pipeline_{table}({file!r}): {exc}") from exc
    files = tuple(ServedObject(f.bucket, f.key, f.size) for f in source.files)
    return LiveTable(source.schema, source.reader, files)


# -- output -----------------------------------------------------------------------------


def _iso(value: datetime | date | time) -> str:
    """ISO 8601; times with microseconds always, so every row of a column has one width."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat()
    return value.isoformat(timespec="microseconds")


def _text(value: Any) -> str:
    """A value as csv and the table print it: ISO 8601 times, NULL as an empty field."""
    if value is None:
        return ""
    if isinstance(value, datetime | date | time):
        return _iso(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, list | dict):
        return json.dumps(value, default=_json_default, ensure_ascii=False)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date | time):
        return _iso(value)
    if isinstance(value, Decimal):
        # Exact when it is an integer (sum() of sizes is a DECIMAL in DuckDB).
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)  # UUIDs and the like


def _print_csv(result: QueryResult, batches: Iterator[pa.RecordBatch]) -> None:
    """A header row, then every row. A batch of flat columns is written by Arrow's CSV writer
    (C++, an order of magnitude faster than Python's); one with nested or binary values, row by
    row as the table prints them. Both write times as _iso does and NULL as an empty field."""
    import pyarrow.csv as pcsv  # type: ignore[import-untyped]

    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(result.columns)
    options = pcsv.WriteOptions(include_header=False, quoting_style="needed")
    for batch in batches:
        if _flat(batch.schema):
            sys.stdout.flush()
            pcsv.write_csv(_times_as_text(batch), sys.stdout.buffer, options)
            sys.stdout.buffer.flush()
        else:
            writer.writerows([_text(v) for v in row.values()] for row in batch.to_pylist())


def _flat(schema: pa.Schema) -> bool:
    import pyarrow as pa

    return not any(pa.types.is_nested(f.type) or pa.types.is_binary(f.type) for f in schema)


def _times_as_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Timestamp and time columns as _iso writes them (Arrow's CSV writer has its own format)."""
    import pyarrow as pa
    import pyarrow.compute as pc  # type: ignore[import-untyped]

    columns = []
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_timestamp(field.type):
            us = column.cast(pa.timestamp("us", tz=field.type.tz))
            column = pc.strftime(us, "%Y-%m-%dT%H:%M:%S")  # seconds carry the unit's fraction
            if field.type.tz is not None:  # the session's time zone is UTC
                column = pc.binary_join_element_wise(column, "+00:00", "")
        elif pa.types.is_time(field.type):
            column = pc.strftime(column.cast(pa.time64("us")), "%H:%M:%S")
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names)


def _print_json(rows: Iterator[dict[str, Any]]) -> None:
    """A JSON array, one object per line, written as the rows come."""
    out = sys.stdout
    out.write("[")
    sep = "\n"
    for row in rows:
        out.write(sep + json.dumps(row, default=_json_default, ensure_ascii=False))
        sep = ",\n"
    out.write("\n]\n")


def _print_table(result: QueryResult, rows: Iterator[dict[str, Any]], max_rows: int) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for name, kind in zip(result.columns, result.types, strict=True):
        table.add_column(Text(f"{name}\n{kind}"))  # a name may hold [...], which is not markup
    shown, more = 0, 0
    for row in rows:
        if shown == max_rows:
            more = 1 + sum(1 for _ in rows)
            break
        # Text(): keys and messages are data, not rich markup.
        table.add_row(*[Text(_text(v)) if v is not None else Text("NULL", style="dim") for v in row.values()])
        shown += 1
    console = Console(width=max(Console().width, MIN_TABLE_WIDTH))
    console.print(table)
    if more:
        console.print(f"First {shown:,} of {shown + more:,} rows: --output csv or json prints every row.")
    else:
        console.print(f"{shown:,} row{'' if shown == 1 else 's'}")


# -- create-job --manifest-query ---------------------------------------------------------


def manifest_from_query(
    ctx: CliContext, request: dict[str, Any], sql: str, output: str | None
) -> dict[str, Any]:
    """Run a manifest query, write its rows as a CSV manifest and return the job's Manifest.
    The manifest goes to `output` (an object ARN) or under the job's report prefix."""
    if "Manifest" in request or "ManifestGenerator" in request:
        raise click.UsageError("--manifest-query replaces --manifest and --manifest-generator: give one")
    text = _sql_text(sql)
    with _session(ctx) as session:
        from s3batch.service.query import manifest_location

        where = _guarded(lambda: manifest_location(output, request.get("Report")))
        written = _guarded(lambda: session.write_manifest(text, where))
    click.echo(f"Manifest: {written.rows:,} objects written to s3://{written.bucket}/{written.key}", err=True)
    manifest: dict[str, Any] = written.as_job_manifest()
    return manifest
