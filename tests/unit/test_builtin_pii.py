"""s3batch-pii's rules, CSV positions and result shape, without I/O (functions/builtin/pii.py)."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest

from s3batch.functions.builtin import inputs, pii
from s3batch.functions.builtin.inputs import decode_head, read_limit
from s3batch.functions.builtin.pii import (
    AWS_ACCESS_KEY,
    CARD,
    EMAIL,
    IBAN,
    IP_ADDRESS,
    PHONE,
    SSN,
    CellPosition,
    find_pii,
    iban_valid,
    locate_in_csv,
    luhn_valid,
    pii_result,
)
from s3batch.functions.registry import BUILTIN_FUNCTIONS


def found(text: str) -> list[tuple[str, str]]:
    """(type, matched text) of every finding, in order."""
    return [(f.type, text[f.begin : f.end]) for f in find_pii(text)]


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (EMAIL, "jane.doe@example.co.uk"),
        (EMAIL, "a+tag@sub.example.org"),
        (PHONE, "+1 212 555 0187"),
        (PHONE, "+44 (0)20 7946 0958"),
        (PHONE, "+33 1 23 45 67 89"),
        (PHONE, "+4915112345678"),
        (PHONE, "(212) 555-0187"),
        (PHONE, "212-555-0187"),
        (PHONE, "212.555.0187"),
        (PHONE, "1-212-555-0187"),
        (PHONE, "020 7946 0958"),
        (PHONE, "01 23 45 67 89"),
        (CARD, "4111 1111 1111 1111"),
        (CARD, "4111-1111-1111-1111"),
        (CARD, "5555555555554444"),
        (CARD, "3782 822463 10005"),
        (CARD, "6011111111111117"),
        (IBAN, "DE89 3704 0044 0532 0130 00"),
        (IBAN, "GB82WEST12345698765432"),
        (IBAN, "NO9386011117947"),
        (SSN, "123-45-6789"),
        (IP_ADDRESS, "192.168.1.10"),
        (IP_ADDRESS, "8.8.8.8"),
        (AWS_ACCESS_KEY, "AKIAIOSFODNN7EXAMPLE"),
        (AWS_ACCESS_KEY, "ASIAY34FZKBOKMUTVV7A"),
    ],
)
def test_each_rule_finds_its_type_with_exact_offsets(kind: str, value: str) -> None:
    text = f"see: {value}. end"
    [finding] = find_pii(text)
    assert (finding.type, finding.begin, finding.end) == (kind, 5, 5 + len(value))


@pytest.mark.parametrize(
    "text",
    [
        "4111 1111 1111 1112",  # Luhn fails (last digit off by one)
        "4111111111111112",
        "0000 0000 0000 0000",  # Luhn passes, but no card network starts with 0
        "378282246310005123",  # Amex prefix and Luhn-valid length? Amex numbers have 15 digits
        "DE89 3704 0044 0532 0130 01",  # mod-97 check fails
        "DE89 3704 0044 0532 0130",  # too short for a German IBAN
        "XX89 3704 0044 0532 0130 00",  # no such country
        "de89 3704 0044 0532 0130 00",  # lower case is not matched (module doc)
        "000-12-3456",
        "666-12-3456",
        "912-12-3456",
        "123-00-4567",
        "123-45-0000",
        "078-05-1120",  # voided specimen
        "256.1.1.1",
        "1.2.3.4.5",
        "01.2.3.4",
        "AKIAIOSFODNN7EXAMPL",  # 15 characters after the prefix
        "AKIAIOSFODNN7EXAMPLE1",  # part of a longer token
        "AKIDIOSFODNN7EXAMPLE",  # not an access key prefix
        "555-123-4567",  # exchange starting with 1 is not a North American number
        "123-456-7890",  # neither is an area code starting with 1
        "1234567890",  # a bare digit run (order id)
        "+12345",  # too few digits for E.164
        "2024-01-15 12:30:45",
        "version 10.0.19041.1",
        "user@localhost",
        "joe@example.c",
    ],
)
def test_look_alikes_that_fail_a_rule_are_not_reported(text: str) -> None:
    assert found(f"x {text} y") == []


def test_luhn_and_iban_checks() -> None:
    assert luhn_valid("79927398713")
    assert not luhn_valid("79927398710")
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33")
    assert not iban_valid("GB82 WEST 1234 5698 7654 3")  # registry length for GB is 22


def test_card_next_to_another_number_is_still_found() -> None:
    assert found("4111 1111 1111 1111 12/29") == [(CARD, "4111 1111 1111 1111")]
    assert found("0 4111 1111 1111 1111") == [(CARD, "4111 1111 1111 1111")]
    assert found("5555555555554444 2024") == [(CARD, "5555555555554444")]


def test_iban_followed_by_text_ends_where_the_country_says() -> None:
    assert found("DE89 3704 0044 0532 0130 00 EUR") == [(IBAN, "DE89 3704 0044 0532 0130 00")]


def test_overlapping_matches_keep_the_more_specific_type() -> None:
    assert found("mail 212-555-0187@example.com") == [(EMAIL, "212-555-0187@example.com")]


def test_offsets_count_characters_not_bytes() -> None:
    text = "Grüße – écrivez à jane@example.com"
    [finding] = find_pii(text)
    assert text[finding.begin : finding.end] == "jane@example.com"
    assert finding.begin == text.index("jane")


SECRET_VALUES = [
    "jane.doe@example.com",
    "+44 20 7946 0958",
    "4111 1111 1111 1111",
    "DE89 3704 0044 0532 0130 00",
    "123-45-6789",
    "10.20.30.40",
    "AKIAIOSFODNN7EXAMPLE",
]


def test_result_has_positions_and_counts_but_never_the_values() -> None:
    text = "\n".join(f"line {i}: {value}" for i, value in enumerate(SECRET_VALUES))
    result = pii_result(text)
    dumped = json.dumps(result)
    for value in SECRET_VALUES:
        assert value not in dumped
        assert value.replace(" ", "") not in dumped
    assert result["Counts"] == {
        EMAIL: 1,
        PHONE: 1,
        CARD: 1,
        IBAN: 1,
        SSN: 1,
        IP_ADDRESS: 1,
        AWS_ACCESS_KEY: 1,
    }
    assert [text[e["BeginOffset"] : e["EndOffset"]] for e in result["Entities"]] == SECRET_VALUES
    assert all(e["Score"] == 1.0 for e in result["Entities"])
    assert "Truncated" not in result and "ScanTruncated" not in result


def test_entity_list_is_capped_but_counts_are_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pii, "MAX_ENTITIES", 5)
    text = " ".join(f"user{i}@example.com" for i in range(12)) + " 8.8.8.8"
    result = pii_result(text)
    assert len(result["Entities"]) == 5
    assert result["Counts"] == {EMAIL: 12, IP_ADDRESS: 1}
    assert result["Truncated"] is True


def test_csv_findings_carry_row_and_column() -> None:
    text = (
        "name,contact,note\r\n"
        '"Doe, Jane",jane@example.com,ok\r\n'
        '"Multi\nline ""quoted"" cell",x,"call +1 212 555 0187, or 212-555-0187"\r\n'
        "plain,,8.8.8.8"
    )
    result = pii_result(text, csv=True)
    cells = [(e["Type"], e["Row"], e["Column"]) for e in result["Entities"]]
    assert cells == [(EMAIL, 2, 2), (PHONE, 3, 3), (PHONE, 3, 3), (IP_ADDRESS, 4, 3)]
    assert text[result["Entities"][0]["BeginOffset"] :].startswith("jane@")


def test_locate_in_csv_other_delimiter_and_unterminated_quote() -> None:
    text = 'a;b;c\n1;"x;y";z\n2;"never closed;w\nmore'
    offsets = [text.index("z"), text.index("w"), text.index("more")]
    assert locate_in_csv(text, offsets, delimiter=";") == [
        CellPosition(2, 3),
        CellPosition(3, 2),
        CellPosition(3, 2),  # the open quote swallows the rest, as Python's csv module reads it
    ]


def test_scan_cut_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pii, "MAX_SCAN_BYTES", 40)
    body = ("mail jane@example.com " * 10).encode()
    answer = pii._answer(body[: read_limit(40)], csv=False)
    result = json.loads(answer.message)
    assert answer.code == "Succeeded"
    assert result["ScanTruncated"] is True and result["ScannedBytes"] == 40
    assert result["Counts"] == {EMAIL: 1}


def test_undecodable_object_fails_without_quoting_bytes() -> None:
    answer = pii._answer(b"ok \xff\xfe secret-bytes", csv=False)
    assert answer.code == "PermanentFailure"
    assert answer.message == "InvalidEncoding: the object is not UTF-8 text (invalid byte at offset 3)"


def test_decode_head_drops_a_character_split_by_the_cut() -> None:
    body = "é" * 10  # two bytes each
    head = decode_head(body.encode()[: read_limit(5)], 5)
    assert (head.text, head.cut, head.nbytes) == ("éé", True, 4)
    whole = decode_head("\ufeffabc".encode(), 100)
    assert (whole.text, whole.cut) == ("abc", False)


def test_bad_format_argument_fails_every_task_without_reading() -> None:
    event = {
        "invocationSchemaVersion": "2.0",
        "invocationId": "i",
        "job": {"id": "j", "userArguments": {"Format": "xml"}},
        "tasks": [
            {"taskId": "t1", "s3Bucket": "b", "s3Key": "k"},
            {"taskId": "t2", "s3Bucket": "b", "s3Key": "l"},
        ],
    }
    response = pii.handler(event, None)
    assert [r["resultCode"] for r in response["results"]] == ["PermanentFailure"] * 2
    assert response["results"][0]["resultString"].startswith("InvalidUserArguments: Format must be one of")


@pytest.mark.parametrize("name", ["s3batch-pii", "s3batch-profile-csv"])
def test_builtins_are_registered_and_import(name: str) -> None:
    module, _, attr = BUILTIN_FUNCTIONS[name].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))


def test_a_batch_of_csv_and_text_objects_is_answered_in_event_order(monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = {"a.csv": b"x,y\n1,a@b.org\n", "b.txt": b"a@b.org", "c.CSV": b"q\n8.8.8.8\n", "d": b"8.8.8.8"}
    calls: list[list[str]] = []

    def fake_batch_handler(event: dict[str, Any], compute: Any, *, max_bytes: int) -> dict[str, Any]:
        keys = [t["s3Key"] for t in event["tasks"]]
        calls.append(keys)
        answers = compute([bodies[k] for k in keys])
        results = [
            {"taskId": t["taskId"], "resultString": a.message}
            for t, a in zip(event["tasks"], answers, strict=True)
        ]
        return {"invocationId": event["invocationId"], "results": results}

    monkeypatch.setattr(inputs, "batch_handler", fake_batch_handler)
    event = {
        "invocationSchemaVersion": "2.0",
        "invocationId": "i",
        "job": {"id": "j", "userArguments": {}},
        "tasks": [{"taskId": f"t-{k}", "s3Bucket": "b", "s3Key": k} for k in bodies],
    }
    response = pii.handler(event, None)
    assert calls == [["a.csv", "c.CSV"], ["b.txt", "d"]]
    assert [r["taskId"] for r in response["results"]] == [f"t-{k}" for k in bodies]
    entities = [json.loads(r["resultString"])["Entities"][0] for r in response["results"]]
    assert [("Row" in e, e.get("Row"), e.get("Column")) for e in entities] == [
        (True, 2, 2),
        (False, None, None),
        (True, 2, 1),
        (False, None, None),
    ]
