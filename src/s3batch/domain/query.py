"""`s3batch query`: finding s3batch's table functions in a SQL text, and the tables' columns.

Pure: no I/O. DuckDB (the engine, service/query.py) has no table functions written in Python,
so a call such as `inventory('s3://inv/path/manifest.json')` is replaced, before DuckDB sees
the text, by the name of a view s3batch registers over that data. Calls are found with a small
tokenizer that knows SQL's string literals ('...', E'...', $tag$...$tag$), quoted identifiers
("...") and comments (--, nested /* */), so a function name inside any of them is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from urllib.parse import quote_plus, urlparse

from s3batch.domain.arn import ObjectLocation, object_from_arn
from s3batch.errors import BadRequest

#: Table functions, by the name written in SQL, and what their one argument is.
FUNCTIONS: dict[str, str] = {
    "inventory": "an inventory manifest.json location (arn:aws:s3:::bucket/key or s3://bucket/key)",
    "report": "a job id",
    "pipeline_report": "a pipeline file (TOML or YAML)",
    "pipeline_journal": "a pipeline file (TOML or YAML) with a [tables] section",
    "pipeline_inventory": "a pipeline file (TOML or YAML) with a [tables] section",
    "pipeline_reconciles": "a pipeline file (TOML or YAML) with a [tables] section",
}
#: Table functions over a pipeline's live tables (docs/pipeline-tables.md) → the table's name.
PIPELINE_TABLES: dict[str, str] = {
    "pipeline_journal": "journal",
    "pipeline_inventory": "inventory",
    "pipeline_reconciles": "reconciles",
}
#: Tables available by name, registered only when the SQL names them.
NAMED_TABLES = ("jobs", "reports")
#: Prefix of the views that stand in for calls; a user's own names never start with it.
VIEW_PREFIX = "s3batch_"
#: Columns a manifest query must return (version_id optional), in this order in the manifest.
MANIFEST_COLUMNS = ("bucket", "key")
MANIFEST_VERSION_COLUMN = "version_id"
#: A job id as s3batch makes them (a UUID); checked before the job store is asked.
_JOB_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")
#: CamelCase boundaries, for inventory CSV field names → the snake_case names AWS uses in
#: ORC/Parquet inventories (LastModifiedDate → last_modified_date, ETag → e_tag).
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


class TokenKind(Enum):
    WORD = auto()
    NUMBER = auto()
    STRING = auto()
    ESCAPE_STRING = auto()
    DOLLAR_STRING = auto()
    QUOTED_NAME = auto()
    PUNCT = auto()
    SPACE = auto()
    COMMENT = auto()


@dataclass(frozen=True, slots=True)
class Token:
    kind: TokenKind
    text: str
    start: int
    end: int

    @property
    def significant(self) -> bool:
        return self.kind not in (TokenKind.SPACE, TokenKind.COMMENT)


@dataclass(frozen=True, slots=True)
class TableCall:
    """One distinct table-function call: `function('argument')`, standing in the SQL as `view`."""

    function: str
    argument: str
    view: str


@dataclass(frozen=True, slots=True)
class RewrittenQuery:
    sql: str
    calls: tuple[TableCall, ...]
    #: NAMED_TABLES the SQL mentions.
    tables: frozenset[str]


def tokenize(sql: str) -> list[Token]:
    """The SQL text as tokens that cover it exactly. Raises BadRequest for an unterminated
    string, quoted name or comment, naming where it starts."""
    tokens: list[Token] = []
    i, n = 0, len(sql)
    while i < n:  # every pass consumes at least one character
        kind, end = _scan(sql, i)
        tokens.append(Token(kind, sql[i:end], i, end))
        i = end
    return tokens


def _scan(sql: str, i: int) -> tuple[TokenKind, int]:
    c, nxt = sql[i], sql[i + 1 : i + 2]
    if c.isspace():
        return TokenKind.SPACE, _while(sql, i, str.isspace)
    if c == "-" and nxt == "-":
        end = sql.find("\n", i)
        return TokenKind.COMMENT, len(sql) if end < 0 else end + 1
    if c == "/" and nxt == "*":
        return TokenKind.COMMENT, _block_comment(sql, i)
    if c == "'":
        return TokenKind.STRING, _quoted(sql, i, "'", "string literal")
    if c == '"':
        return TokenKind.QUOTED_NAME, _quoted(sql, i, '"', "quoted name")
    if c in "eE" and nxt == "'":
        return TokenKind.ESCAPE_STRING, _escape_string(sql, i + 1)
    if c == "$" and (dollar_end := _dollar_string(sql, i)) is not None:
        return TokenKind.DOLLAR_STRING, dollar_end
    if c.isalpha() or c == "_":
        return TokenKind.WORD, _while(sql, i, lambda ch: ch.isalnum() or ch in "_$")
    if c.isdigit():
        return TokenKind.NUMBER, _while(sql, i, lambda ch: ch.isalnum() or ch in "_.")
    return TokenKind.PUNCT, i + 1


def _while(sql: str, i: int, ok: Callable[[str], bool]) -> int:
    while i < len(sql) and ok(sql[i]):
        i += 1
    return i


def _where(sql: str, i: int) -> str:
    line = sql.count("\n", 0, i) + 1
    column = i - (sql.rfind("\n", 0, i) + 1) + 1
    return f"line {line} column {column}"


def _quoted(sql: str, i: int, quote: str, what: str) -> int:
    """End of a '...' or "..." token starting at i; a doubled quote stands for one."""
    j = i + 1
    while True:
        j = sql.find(quote, j)
        if j < 0:
            raise BadRequest(f"SQL: unterminated {what} at {_where(sql, i)}")
        if sql[j + 1 : j + 2] != quote:
            return j + 1
        j += 2


def _escape_string(sql: str, i: int) -> int:
    """End of E'...' (i at its quote): a backslash escapes the next character."""
    j = i + 1
    while j < len(sql):
        if sql[j] == "\\":
            j += 2
        elif sql[j] == "'":
            if sql[j + 1 : j + 2] != "'":
                return j + 1
            j += 2
        else:
            j += 1
    raise BadRequest(f"SQL: unterminated string literal at {_where(sql, i - 1)}")


_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


def _dollar_string(sql: str, i: int) -> int | None:
    """End of $tag$...$tag$ starting at i, or None when i starts no dollar quote ($1 is a
    parameter)."""
    m = _DOLLAR_TAG.match(sql, i)
    if m is None:
        return None
    close = sql.find(m.group(0), m.end())
    if close < 0:
        raise BadRequest(f"SQL: unterminated dollar-quoted string at {_where(sql, i)}")
    return close + len(m.group(0))


def _block_comment(sql: str, i: int) -> int:
    """End of a /* */ comment; they nest, as in PostgreSQL's (and DuckDB's) grammar."""
    depth, j = 0, i
    while j < len(sql):
        pair = sql[j : j + 2]
        if pair == "/*":
            depth, j = depth + 1, j + 2
        elif pair == "*/":
            depth, j = depth - 1, j + 2
            if depth == 0:
                return j
        else:
            j += 1
    raise BadRequest(f"SQL: unterminated /* comment at {_where(sql, i)}")


def literal_value(token: Token) -> str:
    """The text a '...' or $$...$$ literal stands for."""
    if token.kind is TokenKind.STRING:
        return token.text[1:-1].replace("''", "'")
    if token.kind is TokenKind.DOLLAR_STRING:
        tag = _DOLLAR_TAG.match(token.text)
        assert tag is not None  # the tokenizer made this token from a tag
        return token.text[len(tag.group(0)) : -len(tag.group(0))]
    raise ValueError(f"{token.kind} is not a plain literal")


def rewrite(sql: str) -> RewrittenQuery:
    """Replace every s3batch table-function call with its view's name; note named tables.

    Raises BadRequest for an empty text, more than one statement, or a call whose arguments
    are not one plain string literal."""
    tokens = tokenize(sql)
    sig = [t for t in tokens if t.significant]
    _one_statement(sig, sql)
    calls: dict[tuple[str, str], TableCall] = {}
    tables: set[str] = set()
    out: list[str] = []
    pos = 0
    for k, tok in enumerate(sig):
        if tok.kind is not TokenKind.WORD or tok.start < pos:
            continue
        name = tok.text.lower()
        after_dot = k > 0 and sig[k - 1].text == "."
        opens = k + 1 < len(sig) and sig[k + 1].text == "("
        if name in NAMED_TABLES and not after_dot and not opens:
            tables.add(name)
        if name not in FUNCTIONS or after_dot or not opens:
            continue
        argument, close = _argument(sig, k, name, sql)
        check_argument(name, argument)
        call = calls.setdefault(
            (name, argument), TableCall(name, argument, f"{VIEW_PREFIX}{name}_{len(calls) + 1}")
        )
        out += [sql[pos : tok.start], call.view]
        pos = close.end
    out.append(sql[pos:])
    return RewrittenQuery("".join(out), tuple(calls.values()), frozenset(tables))


def _one_statement(sig: Sequence[Token], sql: str) -> None:
    body = list(sig)
    while body and body[-1].text == ";":
        body.pop()
    if not body:
        raise BadRequest("SQL: the query is empty")
    for tok in body:
        if tok.text == ";":
            raise BadRequest(f"SQL: one statement at a time (a ';' at {_where(sql, tok.start)} ends one)")


def _argument(sig: Sequence[Token], k: int, name: str, sql: str) -> tuple[str, Token]:
    """The one literal argument of the call whose name is sig[k], and its closing parenthesis."""
    usage = f"{name}() takes one string literal: {FUNCTIONS[name]}, e.g. {name}('...')"
    inner = sig[k + 2 : k + 4]
    if (
        len(inner) < 2
        or inner[0].kind not in (TokenKind.STRING, TokenKind.DOLLAR_STRING)
        or inner[1].text != ")"
    ):
        raise BadRequest(f"SQL at {_where(sql, sig[k].start)}: {usage}")
    return literal_value(inner[0]), inner[1]


def check_argument(function: str, argument: str) -> None:
    """Name-check a call's argument before anything is read."""
    if function == "inventory":
        inventory_location(argument)
    elif function == "report" and not is_job_id(argument):
        raise BadRequest(f"report({argument!r}): not a job id (s3batch list-jobs shows them)")
    elif function.startswith("pipeline_") and not argument.strip():
        raise BadRequest(f"{function}(''): name the pipeline's TOML or YAML file")


def is_job_id(text: str) -> bool:
    """Whether `text` can be a job id (letters, digits and "-": s3batch's are UUIDs)."""
    return _JOB_ID.fullmatch(text) is not None


def inventory_location(argument: str) -> ObjectLocation:
    """`arn:aws:s3:::bucket/key` or `s3://bucket/key` → where the manifest.json is."""
    if argument.startswith("s3://"):
        parsed = urlparse(argument)
        key = argument[len("s3://") + len(parsed.netloc) + 1 :]
        if not parsed.netloc or not key:
            raise BadRequest(f"inventory({argument!r}): expected s3://bucket/path/manifest.json")
        return ObjectLocation(parsed.netloc, key)
    try:
        return object_from_arn(argument, "inventory()")
    except BadRequest as exc:
        raise BadRequest(
            f"inventory({argument!r}): expected arn:aws:s3:::bucket/path/manifest.json "
            "or s3://bucket/path/manifest.json"
        ) from exc


def snake_name(field: str) -> str:
    """An inventory CSV field name as AWS names the column in ORC/Parquet inventories."""
    return _CAMEL.sub("_", field.strip()).lower()


def manifest_has_versions(columns: Sequence[str]) -> bool:
    """Whether a manifest query's result (its column names) carries version ids. Raises
    BadRequest naming the columns found unless they are exactly bucket, key[, version_id]."""
    names = [c.lower() for c in columns]
    wanted = set(MANIFEST_COLUMNS)
    if set(names) in (wanted, wanted | {MANIFEST_VERSION_COLUMN}) and len(set(names)) == len(names):
        return MANIFEST_VERSION_COLUMN in names
    found = ", ".join(columns) or "none"
    raise BadRequest(
        f"--manifest-query must return exactly the columns bucket, key and optionally version_id "
        f"(found: {found}); e.g. SELECT bucket, key FROM inventory('...') WHERE ..."
    )


def manifest_line(bucket: str, key: str, version_id: str | None) -> str:
    """One CSV manifest line (Bucket,Key[,VersionId] and LF) for an object key as it is: the
    key URL-encoded as S3 Batch Operations manifests require (quote_plus, "/" kept, as
    s3batch writes every manifest), a field quoted only when it holds , " CR or LF."""
    fields = [bucket, quote_plus(key, safe="/")] + ([] if version_id is None else [version_id])
    return ",".join(_csv_field(f) for f in fields) + "\n"


def _csv_field(value: str) -> str:
    if any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value
