"""REST-XML for the S3 Control job operations: request bodies in, result documents out.

Both directions walk botocore's own `s3control` service model, so every shape detail the
wire format has (lists of `<member>`, `MatchAnyObjectEncryption` items named
`<ObjectEncryption>`, maps of `<entry><key/><value/></entry>`, `SSE-S3`-style element names,
booleans, integers, timestamps) is exactly what boto3 sends and expects, without a second
hand-written copy of the model that could drift from it.

Parsing is by element name, never by position: botocore writes members in the caller's dict
order (docs/aws-contracts.md#gotchas). Unknown elements are refused (BadRequestException) rather than
dropped, so a
field this server cannot honour is never silently ignored.

XML attacks: bodies are capped (MAX_XML_BYTES), must be UTF-8, and any `<!DOCTYPE`/`<!ENTITY`
is refused before parsing, so no entity can be declared (no billion laughs, no external
entities); the stdlib expat parser then never resolves anything external.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from botocore.loaders import create_loader
from botocore.model import ListShape, MapShape, ServiceModel, Shape, ShapeResolver, StructureShape

from s3batch.errors import BadRequest

NAMESPACE = "http://awss3control.amazonaws.com/doc/2018-08-20/"
#: Largest request body parsed, in bytes. A maximal CreateJob (50 tags, long ARNs, generator
#: filters) is a few KiB; 1 MiB leaves room without letting a client make us parse megabytes.
MAX_XML_BYTES = 1024 * 1024
_FORBIDDEN_MARKUP = ("<!DOCTYPE", "<!ENTITY")
_DECLARED_ENCODING = re.compile(r"""^\s*<\?xml[^>]*\bencoding\s*=\s*["']([^"']+)["']""")
_UTF8_NAMES = {"utf-8", "utf8"}
_SCALAR_TYPES = {"string", "integer", "long", "boolean", "timestamp"}
#: s3batch extensions a CreateJob's <Operation> may hold besides botocore's JobOperation members,
#: in botocore's shape notation so they parse exactly like modeled ones (lists of <member>, maps
#: of <entry>). Only the extensions a server's operator can allow its callers: S3batchRunCommand
#: (docs/run-command.md#security) and S3batchTransfer into the stores it registers
#: (docs/transfer.md); the others name local paths or are CLI conveniences.
_EXTENSION_SHAPES: dict[str, dict[str, Any]] = {
    "S3batchRunCommandOperation": {
        "type": "structure",
        "members": {
            "Command": {"shape": "S3batchArguments"},
            "CommandName": {"shape": "S3batchString"},
            "TargetResource": {"shape": "S3batchString"},
            "TargetKeyPrefix": {"shape": "S3batchString"},
            "StdoutFile": {"shape": "S3batchString"},
            "TimeoutSeconds": {"shape": "S3batchLong"},
            "MaxInputBytes": {"shape": "S3batchLong"},
            "MaxOutputBytes": {"shape": "S3batchLong"},
            "MaxDiskBytes": {"shape": "S3batchLong"},
            "MaxStderrTailBytes": {"shape": "S3batchLong"},
            "Environment": {"shape": "S3batchEnvironment"},
        },
    },
    "S3batchTransferOperation": {
        "type": "structure",
        "members": {
            "TargetStore": {"shape": "S3batchString"},
            "TargetResource": {"shape": "S3batchString"},
            "TargetKeyPrefix": {"shape": "S3batchString"},
            "SourceKeyPrefix": {"shape": "S3batchString"},
            "SkipExisting": {"shape": "S3batchString"},
            "ChecksumAlgorithm": {"shape": "S3batchString"},
            "PartSizeBytes": {"shape": "S3batchLong"},
        },
    },
    "S3batchArguments": {"type": "list", "member": {"shape": "S3batchString"}},
    "S3batchEnvironment": {
        "type": "map",
        "key": {"shape": "S3batchString"},
        "value": {"shape": "S3batchString"},
    },
    "S3batchString": {"type": "string"},
    "S3batchLong": {"type": "long"},
}
#: Modeled structure → its extra members (name → extension shape).
_EXTENDED_STRUCTURES = {
    "JobOperation": {
        "S3batchRunCommand": "S3batchRunCommandOperation",
        "S3batchTransfer": "S3batchTransferOperation",
    }
}


@functools.cache
def service_model() -> ServiceModel:
    """botocore's s3control model (loaded once; a few ms)."""
    return ServiceModel(create_loader().load_service_model("s3control", "service-2"), "s3control")


# -- parsing ------------------------------------------------------------------------------------


def parse_request(operation: str, body: bytes) -> dict[str, Any]:
    """The body members of `operation`'s input (e.g. CreateJob) as boto3 would have passed them."""
    shape = service_model().operation_model(operation).input_shape
    root = _parse_document(body)
    expected = shape.serialization.get("name", shape.name)
    if _local(root.tag) != expected:
        raise BadRequest(f"expected a <{expected}> document, got <{_local(root.tag)}>")
    body_members = {n: m for n, m in shape.members.items() if "location" not in m.serialization}
    return _structure(root, body_members, expected)


@functools.cache
def _extension_members(structure: str) -> dict[str, Shape]:
    extra = _EXTENDED_STRUCTURES.get(structure, {})
    resolver = ShapeResolver(_EXTENSION_SHAPES)
    return {name: resolver.get_shape_by_name(shape) for name, shape in extra.items()}


def _parse_document(body: bytes) -> ET.Element:
    if len(body) > MAX_XML_BYTES:
        raise BadRequest(f"request body is larger than {MAX_XML_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("request body must be UTF-8 XML") from exc
    declared = _DECLARED_ENCODING.match(text)
    if declared and declared.group(1).lower() not in _UTF8_NAMES:
        raise BadRequest(f"request body must be UTF-8 XML, not {declared.group(1)}")
    if any(marker in text for marker in _FORBIDDEN_MARKUP):
        raise BadRequest("DOCTYPE and ENTITY declarations are not allowed")
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise BadRequest(f"malformed XML: {exc}") from exc


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _member_name(name: str, shape: Shape) -> str:
    return str(shape.serialization.get("name", name))


def _structure(element: ET.Element, members: Mapping[str, Shape], where: str) -> dict[str, Any]:
    by_wire = {_member_name(name, shape): (name, shape) for name, shape in members.items()}
    out: dict[str, Any] = {}
    for child in element:
        tag = _local(child.tag)
        if tag not in by_wire:
            raise BadRequest(f"{where}: unknown element <{tag}>")
        name, shape = by_wire[tag]
        if name in out:
            raise BadRequest(f"{where}: <{tag}> given twice")
        out[name] = _value(child, shape, f"{where}.{name}")
    return out


def _value(element: ET.Element, shape: Shape, where: str) -> Any:
    if isinstance(shape, StructureShape):
        return _structure(element, {**shape.members, **_extension_members(shape.name)}, where)
    if isinstance(shape, ListShape):
        item_tag = _member_name("member", shape.member)
        return [_value(_expect(item, item_tag, where), shape.member, f"{where}[]") for item in element]
    if isinstance(shape, MapShape):
        return dict(_entry(entry, shape, where) for entry in element)
    if len(element):
        raise BadRequest(f"{where}: expected a value, got nested elements")
    return _scalar(element.text or "", shape.type_name, where)


def _expect(element: ET.Element, tag: str, where: str) -> ET.Element:
    if _local(element.tag) != tag:
        raise BadRequest(f"{where}: expected <{tag}> items, got <{_local(element.tag)}>")
    return element


def _entry(entry: ET.Element, shape: MapShape, where: str) -> tuple[str, Any]:
    _expect(entry, "entry", where)
    key_tag, value_tag = _member_name("key", shape.key), _member_name("value", shape.value)
    found = {_local(child.tag): child for child in entry}
    if set(found) != {key_tag, value_tag}:
        raise BadRequest(f"{where}: each <entry> needs exactly <{key_tag}> and <{value_tag}>")
    key = _value(found[key_tag], shape.key, f"{where}.key")
    return str(key), _value(found[value_tag], shape.value, f"{where}[{key}]")


def _scalar(text: str, type_name: str, where: str) -> Any:
    if type_name == "boolean":
        if text not in ("true", "false"):
            raise BadRequest(f"{where} must be true or false, got {text!r}")
        return text == "true"
    if type_name in ("integer", "long"):
        try:
            return int(text.strip())
        except ValueError as exc:
            raise BadRequest(f"{where} must be a whole number, got {text!r}") from exc
    if type_name == "timestamp":
        return parse_timestamp(text, where)
    if type_name not in _SCALAR_TYPES:
        raise BadRequest(f"{where}: unsupported type {type_name}")
    return text


def parse_timestamp(text: str, where: str) -> datetime:
    """ISO-8601 (what botocore sends for rest-xml), as an aware UTC datetime."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # OverflowError: year 9999 at -01:00 is past UTC's range
        raise BadRequest(f"{where} must be an ISO-8601 timestamp, got {text!r}") from exc


# -- rendering ----------------------------------------------------------------------------------


def render_result(operation: str, data: Mapping[str, Any]) -> bytes:
    """`operation`'s output document (e.g. <DescribeJobResult>) from its boto3-shaped dict.

    Keys the model does not know (s3batch extensions such as S3DeleteObject) are left out:
    botocore would drop them anyway.
    """
    shape = service_model().operation_model(operation).output_shape
    if shape is None:
        raise ValueError(f"{operation} has no output document")
    root = ET.Element(shape.name, {"xmlns": NAMESPACE})
    _fill_structure(root, shape, data)
    return _serialize(root)


def render_error(code: str, message: str, request_id: str, host_id: str = "") -> bytes:
    """The S3-style error document botocore parses and maps to modeled exceptions by Code."""
    root = ET.Element("ErrorResponse")
    error = ET.SubElement(root, "Error")
    ET.SubElement(error, "Code").text = code
    ET.SubElement(error, "Message").text = message
    ET.SubElement(root, "RequestId").text = request_id
    ET.SubElement(root, "HostId").text = host_id
    return _serialize(root)


def _serialize(root: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + bytes(ET.tostring(root, encoding="utf-8"))


def _fill_structure(parent: ET.Element, shape: StructureShape, data: Mapping[str, Any]) -> None:
    for name, member in shape.members.items():
        value = data.get(name)
        if value is not None:
            _fill(ET.SubElement(parent, _member_name(name, member)), member, value)


def _fill(element: ET.Element, shape: Shape, value: Any) -> None:
    if isinstance(shape, StructureShape):
        _fill_structure(element, shape, value)
    elif isinstance(shape, ListShape):
        item_tag = _member_name("member", shape.member)
        for item in value:
            _fill(ET.SubElement(element, item_tag), shape.member, item)
    elif isinstance(shape, MapShape):
        for key, item in value.items():
            entry = ET.SubElement(element, "entry")
            _fill(ET.SubElement(entry, _member_name("key", shape.key)), shape.key, key)
            _fill(ET.SubElement(entry, _member_name("value", shape.value)), shape.value, item)
    else:
        element.text = _scalar_text(value, shape.type_name)


def _scalar_text(value: Any, type_name: str) -> str:
    if type_name == "boolean":
        return "true" if value else "false"
    if type_name == "timestamp":
        return format_timestamp(value)
    return str(value)


def format_timestamp(value: datetime | str | float) -> str:
    """ISO-8601 UTC with a `Z`, milliseconds only when there are any (botocore reads both)."""
    if isinstance(value, str):
        moment = parse_timestamp(value, "timestamp")
    elif isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
    else:
        moment = datetime.fromtimestamp(value, UTC)
    moment = moment.astimezone(UTC)
    whole = moment.strftime("%Y-%m-%dT%H:%M:%S")
    millis = moment.microsecond // 1000
    return f"{whole}.{millis:03d}Z" if millis else f"{whole}Z"
