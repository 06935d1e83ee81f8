"""`s3batch-pii`: personal data in a text or CSV object, shaped like Amazon Comprehend's
DetectPiiEntities — where the data is, never what it is.

An ordinary S3 Batch Operations handler (schema 1.0 or 2.0) on the shared batch path. The first
`MAX_SCAN_BYTES` of each object are decoded as UTF-8 and scanned with the rules below (pure
functions: `find_pii`, `locate_in_csv`, `pii_result`). The resultString is

    {"Entities":[{"Type":"EMAIL","BeginOffset":12,"EndOffset":29,"Score":1.0}],
     "Counts":{"EMAIL":1}}

- BeginOffset/EndOffset count characters (code points) of the decoded text, after a leading
  byte-order mark, end exclusive, as Comprehend's offsets do.
- Entities lists at most `MAX_ENTITIES`, in text order; Counts counts every entity found, and
  `"Truncated":true` says the list was cut. An object longer than `MAX_SCAN_BYTES` is scanned
  only that far, and says so: `"ScanTruncated":true,"ScannedBytes":N`.
- Score is 1.0: every entity passed a fixed rule (and a checksum where the type has one); the
  rules' remaining risk of false positives is stated below.
- The matched text is never output: not in resultString, not in an error, not in a log.
- A CSV object (UserArguments `Format`: `csv`, or `auto` and the object's key ends in .csv) adds
  `"Row"` (1-based line of the table as a spreadsheet shows it, the header being row 1) and
  `"Column"` (1-based) to each entity. RFC 4180 quoting is understood; the delimiter is a comma.
- An object that is not UTF-8 text fails (PermanentFailure "InvalidEncoding: ... offset N").

Rules (Comprehend's type names; conservative, to keep false positives rare):

- EMAIL: local@domain with a dot-separated domain whose last label is 2-63 letters.
- PHONE: E.164-style international numbers (`+` country code, 8-15 digits, groups separated by
  one space, dot or dash, an optional parenthesised group such as "(0)"); North American numbers
  with separators ("(212) 555-0187", "212-555-0187", "212.555.0187", optional leading "1-"),
  whose area code and exchange start with 2-9; national numbers with a trunk 0 written in groups
  ("020 7946 0958", "01 23 45 67 89"), 10-11 digits. A bare run of digits is never a phone
  number: order ids and timestamps look the same.
- CREDIT_DEBIT_NUMBER: 13-19 digits, plain or grouped as cards print them (4-4-4-4, 4-6-5, with
  one kind of separator), with a known card network's prefix and length (`CARD_PREFIXES`), and
  passing the Luhn check.
- INTERNATIONAL_BANK_ACCOUNT_NUMBER: an IBAN (upper case, plain or in groups of 4) whose country
  is in the IBAN registry with that length (`IBAN_LENGTHS`) and whose ISO 7064 mod-97 check is 1.
- SSN: US Social Security numbers written AAA-GG-SSSS, without the never-issued area numbers
  (000, 666, 900-999), group 00 or serial 0000, nor the publicised specimens (`VOID_SSNS`).
- IP_ADDRESS: dotted-quad IPv4 (0-255, no leading zeros), not part of a longer dotted number.
- AWS_ACCESS_KEY: access key ids (AKIA... long-term, ASIA... temporary: 4 + 16 base32 chars).

Overlaps are settled by rule order (`PRIORITY`): a card number is not also reported as a phone.
"""

from __future__ import annotations

import bisect
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from s3batch.functions.builtin.batch import Answer
from s3batch.functions.builtin.inputs import (
    BadUserArgument,
    UndecodableText,
    batch_in_chunks,
    decode_head,
    fail_all,
    merge_responses,
    read_limit,
    user_argument,
)

EMAIL = "EMAIL"
PHONE = "PHONE"
CARD = "CREDIT_DEBIT_NUMBER"
IBAN = "INTERNATIONAL_BANK_ACCOUNT_NUMBER"
SSN = "SSN"
IP_ADDRESS = "IP_ADDRESS"
AWS_ACCESS_KEY = "AWS_ACCESS_KEY"
#: Rule order: on overlapping matches the earlier type wins (most specific first).
PRIORITY = (AWS_ACCESS_KEY, EMAIL, IBAN, CARD, SSN, IP_ADDRESS, PHONE)

#: Score of every entity: each passed a deterministic rule (see the module doc for their limits).
RULE_SCORE = 1.0
#: Entities listed per object at most; Counts stays complete.
MAX_ENTITIES = 100
#: Bytes of an object scanned at most (the scan takes about 0.2 s per MiB of text).
MAX_SCAN_BYTES = 8 * 1024 * 1024

#: UserArguments key choosing how an object is read, and its values.
FORMAT_ARGUMENT = "Format"
AUTO, TEXT, CSV = "auto", "text", "csv"
#: With Format auto, keys ending in one of these (any case) are read as CSV.
CSV_SUFFIXES = (".csv",)
CSV_DELIMITER = ","

#: E.164 allows at most 15 digits; fewer than 8 is no full international number.
E164_MIN_DIGITS, E164_MAX_DIGITS = 8, 15
#: Digits of a national number written with a trunk 0 (UK, France, Germany, ...).
TRUNK_MIN_DIGITS, TRUNK_MAX_DIGITS = 10, 11
CARD_MIN_DIGITS, CARD_MAX_DIGITS = 13, 19
#: Card networks' leading digits (issuer identification number ranges, as (low, high) of the same
#: length) and the lengths their numbers have: Visa, Mastercard, American Express, Discover, JCB,
#: Diners Club, UnionPay, Maestro.
_SIXTEEN_UP = (16, 17, 18, 19)
CARD_PREFIXES: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("4", "4", (13, 16, 19)),
    ("51", "55", (16,)),
    ("2221", "2720", (16,)),
    ("34", "34", (15,)),
    ("37", "37", (15,)),
    ("6011", "6011", _SIXTEEN_UP),
    ("644", "649", _SIXTEEN_UP),
    ("65", "65", _SIXTEEN_UP),
    ("3528", "3589", _SIXTEEN_UP),
    ("300", "305", (14, 15, 16, 17, 18, 19)),
    ("36", "36", (14, 15, 16, 17, 18, 19)),
    ("38", "39", _SIXTEEN_UP),
    ("62", "62", _SIXTEEN_UP),
    ("50", "50", (13, 14, 15, *_SIXTEEN_UP)),
    ("56", "58", (13, 14, 15, *_SIXTEEN_UP)),
)
#: How cards print their digits: group sizes of a separated number (the last group may be shorter).
CARD_GROUPINGS = ((4, 6, 5), (4, 6, 4))
CARD_GROUP = 4
#: IBAN length by country (SWIFT's IBAN registry).
IBAN_LENGTHS: Mapping[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
#: ISO 7064 MOD 97-10: a valid IBAN, rearranged and read as a number, leaves this remainder.
IBAN_REMAINDER = 1
IBAN_MODULUS = 97
#: SSN area numbers never issued: 000, 666 and 900-999.
SSN_INVALID_AREAS = frozenset({0, 666, *range(900, 1000)})
#: SSNs the Social Security Administration voided after they were printed in advertising.
VOID_SSNS = frozenset({"078-05-1120", "219-09-9999"})


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    """One entity: where it is in the text (characters, end exclusive) and its type."""

    begin: int
    end: int
    type: str


@dataclass(frozen=True, slots=True)
class CellPosition:
    """Where an offset of a CSV text lies: 1-based row (line of the table) and column."""

    row: int
    column: int


# --- the rules ---------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
    r"(?![\w-]|\.[A-Za-z0-9])"
)
# Digit runs are separated by exactly one character, so the pattern cannot backtrack badly.
_INTL_PHONE = re.compile(r"(?<![\w+])\+[1-9]\d*(?:[ .-]?\(\d{1,4}\)[ .-]?\d+|[ .-]\d+)*(?![\w]|[.-]\d)")
_NANP_PHONE = re.compile(
    r"(?<![\w+.-])(?:1[ .-])?(?:\((?P<area1>\d{3})\) ?|(?P<area2>\d{3})(?P<sep>[.-]))"
    r"(?P<exchange>\d{3})(?(sep)(?P=sep)|[.-])\d{4}(?![\w]|[.-]\d)"
)
_TRUNK_PHONE = re.compile(
    r"(?<![\w+.-])(?:0[1-9](?P<sep>[ .])\d\d(?:(?P=sep)\d\d){3}|0\d{2,4}(?: \d{3,6}){1,2})"
    r"(?![\w]|[ .-]\d)"
)
_CARD = re.compile(r"(?<![\w.+-])\d(?:[ -]?\d){12,18}(?!\w)")
_IBAN = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![\w])")
_SSN = re.compile(r"(?<![\w.-])(?P<area>\d{3})-(?P<group>\d{2})-(?P<serial>\d{4})(?![\w]|-\d)")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?![\w]|\.\d)")
_AWS_ACCESS_KEY = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z2-7]{16}(?![A-Za-z0-9])")
_NON_DIGITS = re.compile(r"\D")


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check of a card number: every second digit from the right doubled."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616: registry length for the country, and the ISO 7064 mod-97 check (spaces ignored)."""
    compact = iban.replace(" ", "")
    if IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    # Letters count as 10..35 (A=10); int(c, 36) maps digits to themselves and letters so.
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % IBAN_MODULUS == IBAN_REMAINDER


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """Whether AAA-GG-SSSS could have been issued (area, group and serial rules; voided ones)."""
    if int(area) in SSN_INVALID_AREAS or group == "00" or serial == "0000":
        return False
    return f"{area}-{group}-{serial}" not in VOID_SSNS


def card_network_known(digits: str) -> bool:
    """Whether `digits` start like a card network's numbers and have one of its lengths."""
    return any(
        low <= digits[: len(low)] <= high and len(digits) in lengths for low, high, lengths in CARD_PREFIXES
    )


def _card_grouping_ok(groups: Sequence[str]) -> bool:
    sizes = tuple(len(g) for g in groups)
    if len(sizes) == 1 or sizes in CARD_GROUPINGS:
        return True
    return all(size == CARD_GROUP for size in sizes[:-1]) and 1 <= sizes[-1] <= CARD_GROUP


def _card_spans(text: str) -> Iterator[tuple[int, int]]:
    for match in _CARD.finditer(text):
        raw = match.group()
        separators = set(_NON_DIGITS.findall(raw))
        if len(separators) > 1:
            continue
        groups = raw.split(separators.pop()) if separators else [raw]
        span = _card_in_groups(groups)
        if span is not None:
            yield match.start() + span[0], match.start() + span[1]


def _card_in_groups(groups: Sequence[str]) -> tuple[int, int] | None:
    """(begin, end) in the joined groups of the first, longest run of groups that is a card.

    A candidate may run into a neighbouring number ("0 4111 ...", "... 1111 12/29"), so runs
    of its groups are tried, from each start, longest first."""
    starts = [0]
    for group in groups:
        starts.append(starts[-1] + len(group) + 1)  # one separator between groups
    for first in range(len(groups)):
        for last in range(len(groups), first, -1):
            run = groups[first:last]
            digits = "".join(run)
            if len(digits) < CARD_MIN_DIGITS:
                break
            if _card_grouping_ok(run) and card_network_known(digits) and luhn_valid(digits):
                return starts[first], starts[last] - 1
    return None


def _iban_spans(text: str) -> Iterator[tuple[int, int]]:
    for match in _IBAN.finditer(text):
        raw = match.group()
        length = IBAN_LENGTHS.get(raw[:2])
        if length is None:
            continue
        # The country fixes the length; a longer match has run into the next word's characters.
        end = _end_after_chars(raw, length)
        if end is not None and (end == len(raw) or raw[end] == " ") and iban_valid(raw[:end]):
            yield match.start(), match.start() + end


def _end_after_chars(raw: str, count: int) -> int | None:
    """Index in `raw` just after its `count`-th non-space character, None if it has fewer."""
    seen = 0
    for index, char in enumerate(raw):
        if char != " ":
            seen += 1
            if seen == count:
                return index + 1
    return None


def _intl_phone_spans(text: str) -> Iterator[tuple[int, int]]:
    for match in _INTL_PHONE.finditer(text):
        # A "(0)" trunk digit is not dialled from abroad, so it does not count towards E.164.
        digits = len(_NON_DIGITS.sub("", match.group().replace("(0)", "")))
        if E164_MIN_DIGITS <= digits <= E164_MAX_DIGITS:
            yield match.span()


def _nanp_phone_spans(text: str) -> Iterator[tuple[int, int]]:
    for match in _NANP_PHONE.finditer(text):
        area = match["area1"] or match["area2"]
        if area[0] >= "2" and match["exchange"][0] >= "2":
            yield match.span()


def _trunk_phone_spans(text: str) -> Iterator[tuple[int, int]]:
    for match in _TRUNK_PHONE.finditer(text):
        digits = len(_NON_DIGITS.sub("", match.group()))
        if TRUNK_MIN_DIGITS <= digits <= TRUNK_MAX_DIGITS:
            yield match.span()


def _ssn_spans(text: str) -> Iterator[tuple[int, int]]:
    for match in _SSN.finditer(text):
        if ssn_valid(match["area"], match["group"], match["serial"]):
            yield match.span()


def _plain(pattern: re.Pattern[str]) -> Callable[[str], Iterator[tuple[int, int]]]:
    return lambda text: (match.span() for match in pattern.finditer(text))


#: Each type's span finders (find_pii runs them in PRIORITY order).
_FINDERS: Mapping[str, tuple[Callable[[str], Iterator[tuple[int, int]]], ...]] = {
    AWS_ACCESS_KEY: (_plain(_AWS_ACCESS_KEY),),
    EMAIL: (_plain(_EMAIL),),
    IBAN: (_iban_spans,),
    CARD: (_card_spans,),
    SSN: (_ssn_spans,),
    IP_ADDRESS: (_plain(_IPV4),),
    PHONE: (_intl_phone_spans, _nanp_phone_spans, _trunk_phone_spans),
}


def find_pii(text: str) -> list[Finding]:
    """Every entity in `text`, in text order; where matches overlap, the earlier rule wins."""
    begins: list[int] = []  # accepted spans, sorted by begin; they never overlap
    ends: list[int] = []
    found: list[Finding] = []
    for kind in PRIORITY:
        for finder in _FINDERS[kind]:
            for begin, end in finder(text):
                slot = bisect.bisect_right(begins, begin)
                if (slot and ends[slot - 1] > begin) or (slot < len(begins) and begins[slot] < end):
                    continue
                begins.insert(slot, begin)
                ends.insert(slot, end)
                found.append(Finding(begin, end, kind))
    return sorted(found)


# --- CSV positions -----------------------------------------------------------------------------

# One field: quoted (RFC 4180; "" inside stands for "), or unquoted up to a delimiter or line end.
_QUOTED_FIELD = re.compile(r'"[^"]*(?:""[^"]*)*"')
_LINE_END = re.compile(r"\r\n|\n|\r")


def locate_in_csv(text: str, offsets: Sequence[int], delimiter: str = CSV_DELIMITER) -> list[CellPosition]:
    """The cell of each offset (ascending) of `text` read as CSV; scans only as far as needed."""
    unquoted = re.compile(rf"[^{re.escape(delimiter)}\r\n]*")
    positions: list[CellPosition] = []
    row, column, pos = 1, 1, 0
    for target in offsets:
        while True:
            end = _field_end(text, pos, unquoted)
            if target < end or end >= len(text):
                break
            if text.startswith(delimiter, end):
                pos, column = end + len(delimiter), column + 1
                continue
            line_end = _LINE_END.match(text, end)
            if line_end:
                pos, row, column = line_end.end(), row + 1, 1
            else:
                pos = end + 1  # text after a closing quote belongs to the same cell
        positions.append(CellPosition(row, column))
    return positions


def _field_end(text: str, pos: int, unquoted: re.Pattern[str]) -> int:
    if text.startswith('"', pos):
        match = _QUOTED_FIELD.match(text, pos)
        # An unterminated quote runs to the end of the text, as Python's csv module reads it.
        return match.end() if match else len(text)
    match = unquoted.match(text, pos)
    return match.end() if match else pos


# --- results -----------------------------------------------------------------------------------


def pii_result(text: str, *, csv: bool = False, cut: bool = False, scanned_bytes: int = 0) -> dict[str, Any]:
    """The resultString object for `text` (module doc); `cut` says only `scanned_bytes` were read."""
    findings = find_pii(text)
    listed = findings[:MAX_ENTITIES]
    entities: list[dict[str, Any]] = [
        {"Type": f.type, "BeginOffset": f.begin, "EndOffset": f.end, "Score": RULE_SCORE} for f in listed
    ]
    if csv:
        for entity, cell in zip(entities, locate_in_csv(text, [f.begin for f in listed]), strict=True):
            entity["Row"], entity["Column"] = cell.row, cell.column
    result: dict[str, Any] = {"Entities": entities, "Counts": dict(Counter(f.type for f in findings))}
    if len(findings) > len(listed):
        result["Truncated"] = True
    if cut:
        result["ScanTruncated"] = True
        result["ScannedBytes"] = scanned_bytes
    return result


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """S3 Batch Operations entry point: one result per task in the event (one task, or a batch)."""
    try:
        fmt = user_argument(event, FORMAT_ARGUMENT, (AUTO, TEXT, CSV), AUTO)
    except BadUserArgument as exc:
        return fail_all(event, str(exc))
    tasks = list(event["tasks"])
    as_csv = [fmt == CSV or (fmt == AUTO and _csv_key(t)) for t in tasks]
    limit = read_limit(MAX_SCAN_BYTES)
    if len(set(as_csv)) <= 1:
        return batch_in_chunks(event, _answer_csv if as_csv and as_csv[0] else _answer_text, max_bytes=limit)
    # A batch of both kinds: one batch path per kind, answers merged back in the event's order.
    parts = [
        batch_in_chunks(
            {**event, "tasks": [t for t, c in zip(tasks, as_csv, strict=True) if c == kind]},
            _answer_csv if kind else _answer_text,
            max_bytes=limit,
        )
        for kind in (True, False)
    ]
    return merge_responses(event, parts)


def _csv_key(task: Mapping[str, Any]) -> bool:
    return str(task["s3Key"]).lower().endswith(CSV_SUFFIXES)


def _answer_text(bodies: Sequence[bytes]) -> list[Answer]:
    return [_answer(body, csv=False) for body in bodies]


def _answer_csv(bodies: Sequence[bytes]) -> list[Answer]:
    return [_answer(body, csv=True) for body in bodies]


def _answer(body: bytes, *, csv: bool) -> Answer:
    try:
        head = decode_head(body, MAX_SCAN_BYTES)
    except UndecodableText as exc:
        return Answer.failed(str(exc))
    result = pii_result(head.text, csv=csv, cut=head.cut, scanned_bytes=head.nbytes)
    return Answer.ok(json.dumps(result, separators=(",", ":")))
