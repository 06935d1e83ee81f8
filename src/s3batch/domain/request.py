"""CreateJob request validation (docs/aws-contracts.md: #createjob-request, #manifests,
#completion-report), in AWS's JSON shape.

Operation parameters are checked by each operation kind; this module checks the envelope and
returns a normalized copy whose hash decides idempotency. Which operation names exist is the
operation registry's fact (`s3batch.operations`); the service layer passes them in, so the
domain does not depend on the operations.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from s3batch.domain.arn import bucket_from_arn, object_from_arn
from s3batch.domain.generator import normalize_generator
from s3batch.domain.manifest import CsvLayout, ManifestFormat
from s3batch.domain.report import REPORT_FORMAT, ReportScope
from s3batch.errors import BadRequest, TooManyTags

MAX_PRIORITY = 2_147_483_647
MAX_TAGS = 50
MAX_DESCRIPTION_CHARS = 256
MAX_TOKEN_CHARS = 64
_TAG_CHARS = re.compile(r"^[\w\s.:/=+\-@]*$", re.UNICODE)
_ROLE_ARN = re.compile(r"^arn:[^:]+:iam::\d{12}:role/.*$")
_KNOWN_FIELDS = {
    "AccountId",
    "ConfirmationRequired",
    "Operation",
    "Report",
    "ClientRequestToken",
    "Manifest",
    "ManifestGenerator",
    "Description",
    "Priority",
    "RoleArn",
    "Tags",
}


def normalize_create_job(request: Mapping[str, Any], *, operations: Sequence[str]) -> dict[str, Any]:
    """A validated, normalized copy of a CreateJob request whose operation is one of
    `operations` (in the order the refusal lists them). Raises BadRequest."""
    unknown = set(request) - _KNOWN_FIELDS
    if unknown:
        raise BadRequest(f"unknown CreateJob field(s): {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {
        "Operation": _operation(request.get("Operation"), operations),
        "Report": _report(request.get("Report")),
        "Priority": _priority(request.get("Priority")),
        "ConfirmationRequired": _bool(request.get("ConfirmationRequired", False), "ConfirmationRequired"),
    }
    has_manifest = request.get("Manifest") is not None
    if has_manifest == (request.get("ManifestGenerator") is not None):
        raise BadRequest("give exactly one of Manifest or ManifestGenerator")
    if has_manifest:
        out["Manifest"] = _manifest(request["Manifest"])
    else:
        out["ManifestGenerator"] = normalize_generator(request["ManifestGenerator"])
    if request.get("RoleArn") is not None:
        out["RoleArn"] = _role_arn(request["RoleArn"])
    if request.get("Description") is not None:
        out["Description"] = _description(request["Description"])
    out["Tags"] = validate_tags(request.get("Tags") or [])
    return out


def request_hash(normalized: Mapping[str, Any]) -> str:
    """Hash of what makes two CreateJob requests "the same" for idempotency."""
    return hashlib.sha256(json.dumps(normalized, sort_keys=True).encode()).hexdigest()


def client_token(request: Mapping[str, Any]) -> str | None:
    token = request.get("ClientRequestToken")
    if token is None:
        return None
    if not isinstance(token, str) or not 1 <= len(token) <= MAX_TOKEN_CHARS:
        raise BadRequest(f"ClientRequestToken must be 1-{MAX_TOKEN_CHARS} characters")
    return token


def _operation(op: Any, known: Sequence[str]) -> dict[str, Any]:
    if not isinstance(op, Mapping) or len(op) != 1:
        raise BadRequest('Operation must name exactly one operation, e.g. {"S3PutObjectTagging": {...}}')
    name, params = next(iter(op.items()))
    if name not in known:
        raise BadRequest(f"unknown operation {name!r}; known: {', '.join(known)}")
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise BadRequest(f"Operation.{name} must be an object")
    return {name: dict(params)}


def _report(report: Any) -> dict[str, Any]:
    if not isinstance(report, Mapping) or "Enabled" not in report:
        raise BadRequest("Report is required and must contain Enabled")
    enabled = _bool(report["Enabled"], "Report.Enabled")
    out: dict[str, Any] = {"Enabled": enabled}
    if not enabled:
        return out
    if not report.get("Bucket"):
        raise BadRequest("Report.Bucket is required when the report is enabled")
    bucket_from_arn(str(report["Bucket"]), "Report.Bucket")
    out["Bucket"] = str(report["Bucket"])
    fmt = report.get("Format", REPORT_FORMAT)
    if fmt != REPORT_FORMAT:
        raise BadRequest(f"Report.Format must be {REPORT_FORMAT}")
    out["Format"] = fmt
    scope = report.get("ReportScope", ReportScope.ALL.value)
    if scope not in {s.value for s in ReportScope}:
        raise BadRequest("Report.ReportScope must be AllTasks or FailedTasksOnly")
    out["ReportScope"] = scope
    prefix = report.get("Prefix")
    if prefix is not None:
        if not isinstance(prefix, str) or not 1 <= len(prefix) <= 512:
            raise BadRequest("Report.Prefix must be 1-512 characters")
        out["Prefix"] = prefix
    if report.get("ExpectedBucketOwner") is not None:
        out["ExpectedBucketOwner"] = str(report["ExpectedBucketOwner"])
    return out


def _manifest(manifest: Any) -> dict[str, Any]:
    if not isinstance(manifest, Mapping):
        raise BadRequest("Manifest must be an object with Spec and Location")
    spec, location = manifest.get("Spec"), manifest.get("Location")
    if not isinstance(spec, Mapping) or not isinstance(location, Mapping):
        raise BadRequest("Manifest needs Spec and Location")
    fmt = spec.get("Format")
    if fmt not in {f.value for f in ManifestFormat}:
        raise BadRequest(f"Manifest.Spec.Format must be one of {[f.value for f in ManifestFormat]}")
    # An inventory's columns come from its manifest.json (fileSchema): Fields is not used. Its
    # fileFormat may be CSV, or (s3batch extension) ORC or Parquet.
    fields = spec.get("Fields") if fmt == ManifestFormat.CSV else None
    CsvLayout.from_fields(fields)
    arn = location.get("ObjectArn")
    if not isinstance(arn, str):
        raise BadRequest("Manifest.Location.ObjectArn is required")
    object_from_arn(arn, "Manifest.Location.ObjectArn")
    etag = location.get("ETag")
    if not isinstance(etag, str) or not etag.strip('"'):
        raise BadRequest("Manifest.Location.ETag is required")
    out_loc: dict[str, Any] = {"ObjectArn": arn, "ETag": etag}
    if location.get("ObjectVersionId"):
        out_loc["ObjectVersionId"] = str(location["ObjectVersionId"])
    out_spec: dict[str, Any] = {"Format": fmt}
    if fields:
        out_spec["Fields"] = list(fields)
    return {"Spec": out_spec, "Location": out_loc}


def _priority(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest("Priority is required and must be an integer")
    if not 0 <= value <= MAX_PRIORITY:
        raise BadRequest(f"Priority must be between 0 and {MAX_PRIORITY}")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false")
    return value


def _role_arn(value: Any) -> str:
    if not isinstance(value, str) or not _ROLE_ARN.match(value) or len(value) > 2048:
        raise BadRequest("RoleArn must look like arn:aws:iam::123456789012:role/NAME")
    return value


def _description(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_DESCRIPTION_CHARS:
        raise BadRequest(f"Description must be 1-{MAX_DESCRIPTION_CHARS} characters")
    return value


def validate_tags(tags: Any) -> list[dict[str, str]]:
    """S3Tag list rules: ≤50 tags, unique keys 1-128, values 0-256, AWS's character set."""
    if not isinstance(tags, list):
        raise BadRequest("Tags must be a list of {Key, Value}")
    if len(tags) > MAX_TAGS:
        raise TooManyTags(f"a job can have at most {MAX_TAGS} tags, got {len(tags)}")
    out, seen = [], set()
    for tag in tags:
        if not isinstance(tag, Mapping) or not isinstance(tag.get("Key"), str):
            raise BadRequest("each tag needs a string Key")
        key, value = tag["Key"], tag.get("Value", "")
        if not isinstance(value, str):
            raise BadRequest(f"tag {key!r}: Value must be a string")
        if not 1 <= len(key) <= 128 or len(value) > 256:
            raise BadRequest(f"tag {key!r}: Key must be 1-128 and Value 0-256 characters")
        if not _TAG_CHARS.match(key) or not _TAG_CHARS.match(value):
            raise BadRequest(f"tag {key!r}: only letters, digits, spaces and _.:/=+-@ are allowed")
        if key in seen:
            raise BadRequest(f"tag key {key!r} appears twice")
        seen.add(key)
        out.append({"Key": key, "Value": value})
    return out
