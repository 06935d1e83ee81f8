"""S3BatchOperations_CSV_20180820 manifests: spec, and a streaming line parser.

The parser works on raw lines with their byte offsets, so the runner can record where each
chunk of tasks starts and re-read only that part of the manifest after a crash.

Choices where AWS leaves behaviour unspecified (documented in docs/compatibility.md):
- a UTF-8 byte-order mark on line 1 is ignored; CRLF and LF both end a line;
- blank lines are skipped (they are not tasks and do not shift later line numbers);
- a first row equal to the Fields names ("Bucket,Key") is refused as a header row instead of
  becoming a task on a bucket named "Bucket";
- the key field is limited to 1,024 characters as written (URL-encoded), as AWS documents.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import unquote_plus

from s3batch.domain.task import Task
from s3batch.errors import BadRequest, ManifestError

#: Longest key field AWS accepts in a CSV manifest, in characters.
MAX_KEY_FIELD_CHARS = 1024
#: Characters after which a line needs the csv module (quoting; a bare CR or NUL that csv
#: refuses). Lines without any are split on commas, which is what csv.reader does for them.
_NEEDS_CSV = re.compile('["\r\x00]')
#: A key field may not hold control characters (it must be URL-encoded).
_CONTROL_CHAR = re.compile("[\x00-\x1f\x7f]")
#: A bucket name may not hold a slash or whitespace (re's \s is str.isspace() for str patterns).
_BAD_BUCKET_CHAR = re.compile(r"[/\s]")


#: Largest block `LineSplitter.feed_blocks` hands out (unless one line is longer), in bytes:
#: small enough that a job's first requests go out after ~1,000 lines are parsed, not after
#: a whole read (MANIFEST_READ_BYTES), large enough that per-block costs vanish.
BLOCK_MAX_BYTES = 64 * 1024
#: Fast path (whole blocks of lines, see CsvManifestParser.parse_block): what a plain field may
#: hold. Anything else — quotes, other bucket characters, whitespace around a value, a key of
#: more than 1,024 bytes, a blank line — sends the block line by line, which gives the same
#: tasks or names the bad line. Patterns work on the UTF-8 bytes; blocks are decoded first,
#: so invalid UTF-8 never gets through.
_FAST_BUCKET = rb"[A-Za-z0-9._-]+"
_FAST_KEY = rb'[^,"\x00-\x1f\x7f]{1,%d}' % MAX_KEY_FIELD_CHARS
#: A version ID: printable ASCII without space, quote or comma (S3's are base64-like).
_FAST_VERSION = rb"[\x21\x23-\x2b\x2d-\x7e]+"
_FAST_IGNORE = rb'[^,"\r\n\x00]*'
_FAST_FIELD = {"Bucket": _FAST_BUCKET, "Key": _FAST_KEY, "Ignore": _FAST_IGNORE}


class ManifestFormat(StrEnum):
    CSV = "S3BatchOperations_CSV_20180820"
    INVENTORY_CSV = "S3InventoryReport_CSV_20161130"


class Field(StrEnum):
    IGNORE = "Ignore"
    BUCKET = "Bucket"
    KEY = "Key"
    VERSION_ID = "VersionId"


#: Without Fields, rows are Bucket,Key with an optional third VersionId column.
DEFAULT_FIELDS: tuple[Field, ...] = (Field.BUCKET, Field.KEY, Field.VERSION_ID)


@dataclass(frozen=True, slots=True)
class CsvLayout:
    """Where Bucket, Key and VersionId sit in a row."""

    fields: tuple[Field, ...]
    #: True when Fields was not given: the VersionId column may be absent.
    inferred: bool = False

    @classmethod
    def from_fields(cls, names: Sequence[str] | None) -> CsvLayout:
        if not names:
            return cls(DEFAULT_FIELDS, inferred=True)
        try:
            fields = tuple(Field(n) for n in names)
        except ValueError as exc:
            raise BadRequest(f"Manifest.Spec.Fields: {exc}; allowed: Ignore, Bucket, Key, VersionId") from exc
        for required in (Field.BUCKET, Field.KEY):
            if fields.count(required) != 1:
                raise BadRequest(f"Manifest.Spec.Fields must name {required.value} exactly once")
        if fields.count(Field.VERSION_ID) > 1:
            raise BadRequest("Manifest.Spec.Fields names VersionId more than once")
        return cls(fields)

    @property
    def has_versions(self) -> bool:
        return Field.VERSION_ID in self.fields


@dataclass(frozen=True, slots=True)
class RawLine:
    """One physical manifest line: 1-based number, byte offset of its start, and text."""

    number: int
    offset: int
    text: str


class LineSplitter:
    """Cuts a byte stream into lines, tracking 1-based numbers and byte offsets.

    Feed it chunks as they arrive (from a sync or async source); it decodes each line as UTF-8.
    """

    def __init__(self, start_offset: int = 0, first_line: int = 1) -> None:
        self._buf = b""
        self._offset = start_offset
        self._number = first_line

    def feed(self, chunk: bytes) -> list[RawLine]:
        self._buf += chunk
        lines = []
        start = 0
        while (nl := self._buf.find(b"\n", start)) >= 0:
            lines.append(self._emit(self._buf[start : nl + 1]))
            start = nl + 1
        self._buf = self._buf[start:]
        return lines

    def feed_blocks(self, chunk: bytes) -> list[Block]:
        """Like feed, but hands back the complete lines undecoded, in blocks of up to
        BLOCK_MAX_BYTES (`Block.lines()` cuts a block into RawLines when needed).

        The manifest's first line comes in a block of its own: it may start with a BOM and is
        checked for a header row, which only the line-by-line path does.
        """
        data = self._buf + chunk
        blocks, start = [], 0
        while True:
            if self._number == 1:
                end = data.find(b"\n", start) + 1
            else:
                end = data.rfind(b"\n", start, start + BLOCK_MAX_BYTES) + 1
                if end <= start:  # no line ends within the window: one long line
                    end = data.find(b"\n", start + BLOCK_MAX_BYTES) + 1
            if end <= start:
                break
            blocks.append(self._block(data[start:end]))
            start = end
        self._buf = data[start:]
        return blocks

    def _block(self, data: bytes) -> Block:
        block = Block(self._number, self._offset, data)
        self._number += data.count(b"\n")
        self._offset += len(data)
        return block

    def close(self) -> list[RawLine]:
        rest, self._buf = self._buf, b""
        return [self._emit(rest)] if rest else []

    def close_block(self) -> Block | None:
        """What is left after the last LF (a last line without one), as a block."""
        rest, self._buf = self._buf, b""
        return self._block(rest) if rest else None

    def _emit(self, raw: bytes) -> RawLine:
        line = RawLine(self._number, self._offset, _decode(raw, self._number))
        self._offset += len(raw)
        self._number += 1
        return line


@dataclass(frozen=True, slots=True)
class Block:
    """Whole manifest lines, as bytes: the 1-based number and byte offset of the first."""

    first_line: int
    offset: int
    data: bytes

    def lines(self) -> list[RawLine]:
        return list(split_lines([self.data], self.offset, self.first_line))


def split_lines(chunks: Iterable[bytes], start_offset: int = 0, first_line: int = 1) -> Iterator[RawLine]:
    """All lines of a byte stream (convenience for sync sources and tests)."""
    splitter = LineSplitter(start_offset, first_line)
    for chunk in chunks:
        yield from splitter.feed(chunk)
    yield from splitter.close()


def _decode(line: bytes, number: int) -> str:
    if number == 1 and line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]
    try:
        return line.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise ManifestError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})", number) from exc


class CsvManifestParser:
    """Turns manifest lines into Tasks, validating each and naming the line on error.

    Stateful only for the all-or-none VersionId rule and the header check on the first row.
    """

    def __init__(self, layout: CsvLayout, resuming: bool = False) -> None:
        self.layout = layout
        self._versioned: bool | None = None
        #: When resuming mid-file, the header check (first row only) must not apply.
        self._seen_rows = 1 if resuming else 0
        # Column positions, resolved once instead of per row.
        fields = layout.fields
        self._n_fields = len(fields)
        self._bucket_at = fields.index(Field.BUCKET)
        self._key_at = fields.index(Field.KEY)
        self._version_at = fields.index(Field.VERSION_ID) if Field.VERSION_ID in fields else None
        #: Whole-block patterns for rows without and with a VersionId (see parse_block).
        self._plain = _block_pattern(layout, versioned=False)
        self._with_versions = _block_pattern(layout, versioned=True) if layout.has_versions else None

    def parse_block(self, block: Block, seq: int) -> list[Task] | None:
        """The tasks of a block of plain data lines (numbered from `seq`), or None when any
        line needs the line-by-line path (`parse`). About 4x faster than `parse` per line:
        one pattern match and one UTF-8 decode for the whole block, no per-line checks."""
        text = self._plain_text(block)
        if text is None:
            return None
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        lines = text.split("\n")
        lines.pop()  # after the last newline
        bucket_at, key_at = self._bucket_at, self._key_at
        version_at = self._version_at if self._versioned else None
        tasks = []
        for line in lines:
            row = line.split(",")
            raw_key = row[key_at]
            tasks.append(
                Task(
                    seq=seq,
                    bucket=row[bucket_at],
                    raw_key=raw_key,
                    key=unquote_plus(raw_key) if "%" in raw_key or "+" in raw_key else raw_key,
                    version_id=None if version_at is None else row[version_at],
                )
            )
            seq += 1
        return tasks

    def count_block(self, block: Block) -> int | None:
        """How many tasks a block of plain data lines holds, or None (see parse_block)."""
        return None if self._plain_text(block) is None else block.data.count(b"\n")

    def _plain_text(self, block: Block) -> str | None:
        """The block's text when every line is a plain data row, updating the parser's state
        as `parse` would; None (state untouched) when it is not."""
        if not self._seen_rows:  # the header check needs the first row itself
            return None
        data = block.data
        if self._versioned is not True and self._plain.fullmatch(data):
            versioned = False
        elif self._versioned is not False and self._with_versions and self._with_versions.fullmatch(data):
            versioned = True
        else:
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if self.layout.has_versions:
            self._versioned = versioned
        self._seen_rows += 1
        return text

    def parse(self, line: RawLine, seq: int) -> Task | None:
        """A Task for a data line, None for a blank line."""
        if not line.text.strip():
            return None
        row = self._split(line)
        self._check_header(row, line.number)
        self._seen_rows += 1
        values = self._pick(row, line.number)
        bucket, raw_key, version = values
        return Task(
            seq=seq,
            bucket=bucket,
            raw_key=raw_key,
            key=unquote_plus(raw_key),
            version_id=version,
        )

    def _split(self, line: RawLine) -> list[str]:
        if _NEEDS_CSV.search(line.text) is None:
            return line.text.split(",")
        try:
            rows = list(csv.reader([line.text], strict=True))
        except csv.Error as exc:
            raise ManifestError(f"malformed CSV ({exc})", line.number) from exc
        if len(rows) != 1:
            raise ManifestError("malformed CSV (unterminated quote)", line.number)
        return rows[0]

    def _check_header(self, row: list[str], number: int) -> None:
        if self._seen_rows:
            return
        names = [f.value for f in self.layout.fields]
        if row[: len(names)] == names or [c.strip().lower() for c in row[:2]] == ["bucket", "key"]:
            raise ManifestError(
                "looks like a header row; S3 Batch Operations manifests have no header", number
            )

    def _pick(self, row: list[str], number: int) -> tuple[str, str, str | None]:
        n_fields = self._n_fields
        if self.layout.inferred and len(row) == n_fields - 1:
            row = [*row, ""]
        if len(row) < n_fields:
            fields = self.layout.fields
            raise ManifestError(
                f"expected {n_fields} columns ({', '.join(f.value for f in fields)}), found {len(row)}",
                number,
            )
        bucket, key = row[self._bucket_at].strip(), row[self._key_at]
        if not bucket:
            raise ManifestError("empty bucket name", number)
        if _BAD_BUCKET_CHAR.search(bucket) is not None:
            raise ManifestError(f"invalid bucket name {bucket!r}", number)
        if not key:
            raise ManifestError("empty key", number)
        if len(key) > MAX_KEY_FIELD_CHARS:
            raise ManifestError(
                f"key field is {len(key)} characters; the limit is {MAX_KEY_FIELD_CHARS}", number
            )
        if _CONTROL_CHAR.search(key) is not None:
            raise ManifestError("key contains a control character; keys must be URL-encoded", number)
        at = self._version_at
        return bucket, key, self._version(None if at is None else row[at], number)

    def _version(self, value: str | None, number: int) -> str | None:
        version = value.strip() if value else None
        has = bool(version)
        if self.layout.has_versions:
            if self._versioned is None:
                self._versioned = has
            elif self._versioned != has:
                raise ManifestError("VersionId must be given on every row or on none", number)
        return version or None


def _block_pattern(layout: CsvLayout, versioned: bool) -> re.Pattern[bytes]:
    """Matches a run of plain data lines of `layout`, each ending in LF or CRLF."""
    parts = [
        (_FAST_VERSION if versioned else b"") if f is Field.VERSION_ID else _FAST_FIELD[f.value]
        for f in layout.fields
    ]
    line = b",".join(parts)
    if layout.inferred and not versioned:  # Bucket,Key with the VersionId column absent or empty
        line = b",".join(parts[:-1]) + b",?"
    return re.compile(rb"(?:%s\r?\n)*" % line)
