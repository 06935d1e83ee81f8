"""ManifestGenerator (docs/aws-contracts.md#manifest-generator): the S3JobManifestGenerator request and its
Filter.

Pure: parses and validates AWS's JSON, and decides whether one listed object matches.

Boundaries (documented in docs/compatibility.md):
- ObjectSizeGreaterThanBytes / ObjectSizeLessThanBytes are strict (size > N, size < N);
- CreatedAfter / CreatedBefore compare `last_modified` strictly (after: > t, before: < t);
- KeyNameConstraint lists match when any entry matches (prefix / suffix / substring of the
  decoded key); several constraint kinds must all hold;
- ObjectReplicationStatuses and MatchAnyObjectEncryption need HEAD data that listings lack:
  `needs_head` is then True and the service HEADs every object that passed the other filters;
  an object with no replication status counts as NONE, one whose store reports no encryption
  counts as NOT-SSE;
- EligibleForReplication=true: an object is eligible when (1) its key starts with the filter
  prefix of at least one *enabled* rule of the source bucket's replication configuration (the
  service reads it once per job and binds the prefixes with `with_replication_rules`; no
  configuration or no enabled rule → nothing is eligible) and (2) its HEAD replication status
  is not REPLICA (a replica was written by replication; S3 does not replicate it again by
  default). Rule tag filters are not seen (the storage contract keeps the prefix only), so a
  tag-filtered rule counts for every key under its prefix. false filters nothing, as an absent
  field does: AWS's "not eligible" has no meaning without a configuration to judge against.
- `IncludeVersions` ("Current" | "All") is an s3batch extension inside S3JobManifestGenerator
  (AWS has no such field): "All" lists every version (delete markers skipped).
- `NewerNoncurrentVersions` and `NoncurrentDays` are s3batch extensions inside Filter, named and
  meant as in S3 Lifecycle's NoncurrentVersionExpiration: either one makes the generator select
  only noncurrent versions (domain/versions.py, docs/versions.md); they need IncludeVersions
  "All". NewerNoncurrentVersions is at least 1 (keeping none is NoncurrentDays 0 alone, a
  choice that has to be spelled out); the other filters then narrow the selected versions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from s3batch.domain.arn import bucket_from_arn
from s3batch.domain.objects import ObjectInfo
from s3batch.domain.versions import NoncurrentRule
from s3batch.errors import BadRequest

GENERATED_MANIFEST_FORMAT = "S3InventoryReport_CSV_20211130"
MAX_CONSTRAINT_CHARS = 1024
MAX_MANIFEST_PREFIX_CHARS = 512
STORAGE_CLASSES = (
    "STANDARD",
    "STANDARD_IA",
    "ONEZONE_IA",
    "GLACIER",
    "INTELLIGENT_TIERING",
    "DEEP_ARCHIVE",
    "GLACIER_IR",
    "REDUCED_REDUNDANCY",
    "OUTPOSTS",
    "SNOW",
    "EXPRESS_ONEZONE",
)
REPLICATION_STATUSES = ("COMPLETED", "FAILED", "REPLICA", "NONE")
#: The replication status of an object written by replication: never eligible itself.
REPLICA_STATUS = "REPLICA"
ENCRYPTION_KINDS = ("SSE-S3", "SSE-KMS", "DSSE-KMS", "SSE-C", "NOT-SSE")
_KMS_KINDS = ("SSE-KMS", "DSSE-KMS")
_FILTER_FIELDS = {
    "EligibleForReplication",
    "CreatedAfter",
    "CreatedBefore",
    "ObjectReplicationStatuses",
    "KeyNameConstraint",
    "ObjectSizeGreaterThanBytes",
    "ObjectSizeLessThanBytes",
    "MatchAnyStorageClass",
    "MatchAnyObjectEncryption",
    # s3batch extensions (NONCURRENT_FIELDS)
    "NewerNoncurrentVersions",
    "NoncurrentDays",
}
_KEY_CONSTRAINTS = ("MatchAnyPrefix", "MatchAnySuffix", "MatchAnySubstring")
#: The s3batch extensions of Filter that select noncurrent versions (domain/versions.py).
NONCURRENT_FIELDS = ("NewerNoncurrentVersions", "NoncurrentDays")
#: Upper bound of NoncurrentDays (about 270 years): keeps the day count a valid time span.
MAX_NONCURRENT_DAYS = 100_000


class IncludeVersions(StrEnum):
    CURRENT = "Current"
    ALL = "All"


@dataclass(frozen=True, slots=True)
class EncryptionMatch:
    kind: str
    kms_key_arn: str | None = None
    bucket_key_enabled: bool | None = None

    def matches(self, info: ObjectInfo) -> bool:
        if (info.encryption or "NOT-SSE") != self.kind:
            return False
        if self.kms_key_arn is not None and not _same_kms_key(self.kms_key_arn, info.kms_key_id):
            return False
        return self.bucket_key_enabled is None or self.bucket_key_enabled == info.bucket_key_enabled


def _same_kms_key(arn: str, key_id: str | None) -> bool:
    """Stores report either the key ARN or its bare id; both name the same key."""
    return key_id is not None and (arn == key_id or arn.endswith("/" + key_id))


@dataclass(frozen=True, slots=True)
class ManifestFilter:
    """JobManifestGeneratorFilter. Empty tuples / None mean "no constraint"."""

    created_after: datetime | None = None
    created_before: datetime | None = None
    replication_statuses: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    substrings: tuple[str, ...] = ()
    size_greater_than: int | None = None
    size_less_than: int | None = None
    storage_classes: tuple[str, ...] = ()
    encryptions: tuple[EncryptionMatch, ...] = field(default=())
    eligible_for_replication: bool = False
    #: Filter prefixes of the source bucket's enabled replication rules, bound at run time by
    #: `with_replication_rules`; only read when `eligible_for_replication`.
    replication_prefixes: tuple[str, ...] = ()
    #: The NewerNoncurrentVersions / NoncurrentDays extension, None when neither is given.
    noncurrent: NoncurrentRule | None = None

    @property
    def needs_head(self) -> bool:
        """Whether `matches` needs HEAD data (replication status, encryption)."""
        return bool(self.replication_statuses or self.encryptions or self.eligible_for_replication)

    def with_replication_rules(self, prefixes: Sequence[str]) -> ManifestFilter:
        """This filter with the source bucket's enabled replication rule prefixes bound."""
        return replace(self, replication_prefixes=tuple(prefixes))

    @property
    def list_prefix(self) -> str:
        """The longest prefix every matching key starts with: where listing can begin."""
        if not self.prefixes:
            return ""
        first, last = min(self.prefixes), max(self.prefixes)
        n = 0
        while n < min(len(first), len(last)) and first[n] == last[n]:
            n += 1
        return first[:n]

    def matches_listing(self, info: ObjectInfo) -> bool:
        """The filters a listing entry can answer (key, size, date, storage class)."""
        return (
            self._key_ok(info.key)
            and (self.size_greater_than is None or info.size > self.size_greater_than)
            and (self.size_less_than is None or info.size < self.size_less_than)
            and (self.created_after is None or info.last_modified > self.created_after)
            and (self.created_before is None or info.last_modified < self.created_before)
            and (not self.storage_classes or (info.storage_class or "STANDARD") in self.storage_classes)
            and self._rule_covers(info.key)
        )

    def matches_head(self, info: ObjectInfo) -> bool:
        """The filters that need HEAD data; True when there are none."""
        status = info.replication_status or "NONE"
        if self.replication_statuses and status not in self.replication_statuses:
            return False
        if self.eligible_for_replication and status == REPLICA_STATUS:
            return False
        return not self.encryptions or any(e.matches(info) for e in self.encryptions)

    def matches(self, info: ObjectInfo) -> bool:
        """Every filter; `info` must carry HEAD data when `needs_head`."""
        return self.matches_listing(info) and self.matches_head(info)

    def _rule_covers(self, key: str) -> bool:
        """The key half of EligibleForReplication: some enabled rule's prefix covers it."""
        return not self.eligible_for_replication or any(key.startswith(p) for p in self.replication_prefixes)

    def _key_ok(self, key: str) -> bool:
        return (
            (not self.prefixes or any(key.startswith(p) for p in self.prefixes))
            and (not self.suffixes or any(key.endswith(s) for s in self.suffixes))
            and (not self.substrings or any(s in key for s in self.substrings))
        )


@dataclass(frozen=True, slots=True)
class ManifestGenerator:
    source_bucket: str
    enable_output: bool
    #: (bucket, prefix) of the generated manifest, when enable_output.
    output_bucket: str | None
    output_prefix: str
    include_versions: IncludeVersions
    filter: ManifestFilter
    #: PutObject server-side encryption parameters for the generated manifest's files.
    output_sse: Mapping[str, str] = field(default_factory=dict)


# -- parsing ------------------------------------------------------------------------------


def normalize_generator(value: Any) -> dict[str, Any]:
    """Validate a ManifestGenerator ({"S3JobManifestGenerator": {...}}); return it normalized.

    Raises BadRequest with the offending field named.
    """
    if not isinstance(value, Mapping) or set(value) != {"S3JobManifestGenerator"}:
        raise BadRequest('ManifestGenerator must be {"S3JobManifestGenerator": {...}}')
    gen = value["S3JobManifestGenerator"]
    if not isinstance(gen, Mapping):
        raise BadRequest("ManifestGenerator.S3JobManifestGenerator must be an object")
    name = "ManifestGenerator.S3JobManifestGenerator"
    source = gen.get("SourceBucket")
    if not isinstance(source, str):
        raise BadRequest(f"{name}.SourceBucket is required (a bucket ARN)")
    bucket_from_arn(source, f"{name}.SourceBucket")
    enabled = gen.get("EnableManifestOutput")
    if not isinstance(enabled, bool):
        raise BadRequest(f"{name}.EnableManifestOutput is required and must be true or false")
    out: dict[str, Any] = {"SourceBucket": source, "EnableManifestOutput": enabled}
    if gen.get("ExpectedBucketOwner") is not None:
        out["ExpectedBucketOwner"] = str(gen["ExpectedBucketOwner"])
    if gen.get("ManifestOutputLocation") is not None:
        out["ManifestOutputLocation"] = _output_location(gen["ManifestOutputLocation"], name)
    elif enabled:
        raise BadRequest(f"{name}.ManifestOutputLocation is required when EnableManifestOutput is true")
    versions = gen.get("IncludeVersions", IncludeVersions.CURRENT.value)
    if versions not in {v.value for v in IncludeVersions}:
        raise BadRequest(f"{name}.IncludeVersions must be Current or All")
    if versions != IncludeVersions.CURRENT:
        out["IncludeVersions"] = versions
    if gen.get("Filter") is not None:
        out["Filter"] = normalize_filter(gen["Filter"])
        _check_noncurrent_needs_versions(out["Filter"], versions, name)
    unknown = set(gen) - {*out, "Filter", "IncludeVersions", "ManifestOutputLocation", "ExpectedBucketOwner"}
    if unknown:
        raise BadRequest(f"{name}: unknown field(s) {', '.join(sorted(unknown))}")
    return {"S3JobManifestGenerator": out}


def _check_noncurrent_needs_versions(flt: Mapping[str, Any], versions: str, name: str) -> None:
    for field_name in NONCURRENT_FIELDS:
        if field_name in flt and versions != IncludeVersions.ALL:
            raise BadRequest(
                f"{name}.Filter.{field_name} selects noncurrent versions: it needs "
                f'"IncludeVersions": "All" in {name}'
            )


def _output_location(loc: Any, name: str) -> dict[str, Any]:
    where = f"{name}.ManifestOutputLocation"
    if not isinstance(loc, Mapping):
        raise BadRequest(f"{where} must be an object")
    bucket = loc.get("Bucket")
    if not isinstance(bucket, str):
        raise BadRequest(f"{where}.Bucket is required (a bucket ARN)")
    bucket_from_arn(bucket, f"{where}.Bucket")
    if loc.get("ManifestFormat") != GENERATED_MANIFEST_FORMAT:
        raise BadRequest(f"{where}.ManifestFormat must be {GENERATED_MANIFEST_FORMAT}")
    out: dict[str, Any] = {"Bucket": bucket, "ManifestFormat": GENERATED_MANIFEST_FORMAT}
    prefix = loc.get("ManifestPrefix")
    if prefix is not None:
        if not isinstance(prefix, str) or not 1 <= len(prefix) <= MAX_MANIFEST_PREFIX_CHARS:
            raise BadRequest(f"{where}.ManifestPrefix must be 1-{MAX_MANIFEST_PREFIX_CHARS} characters")
        out["ManifestPrefix"] = prefix
    enc = loc.get("ManifestEncryption")
    if enc is not None:
        out["ManifestEncryption"] = _manifest_encryption(enc, where)
    if loc.get("ExpectedManifestBucketOwner") is not None:
        out["ExpectedManifestBucketOwner"] = str(loc["ExpectedManifestBucketOwner"])
    return out


def _manifest_encryption(enc: Any, where: str) -> dict[str, Any]:
    if not isinstance(enc, Mapping) or len(enc) != 1 or not set(enc) <= {"SSES3", "SSEKMS"}:
        raise BadRequest(f"{where}.ManifestEncryption must be {{SSES3: {{}}}} or {{SSEKMS: {{KeyId}}}}")
    if "SSEKMS" in enc and not isinstance((enc["SSEKMS"] or {}).get("KeyId"), str):
        raise BadRequest(f"{where}.ManifestEncryption.SSEKMS.KeyId is required")
    return {k: dict(v or {}) for k, v in enc.items()}


def normalize_filter(value: Any) -> dict[str, Any]:
    """Validate a JobManifestGeneratorFilter; return it normalized (timestamps as ISO-8601 UTC)."""
    where = "ManifestGenerator.S3JobManifestGenerator.Filter"
    if not isinstance(value, Mapping):
        raise BadRequest(f"{where} must be an object")
    unknown = set(value) - _FILTER_FIELDS
    if unknown:
        raise BadRequest(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    if value.get("EligibleForReplication") is not None:
        out["EligibleForReplication"] = _eligible(value["EligibleForReplication"], where)
    for name in ("CreatedAfter", "CreatedBefore"):
        if value.get(name) is not None:
            out[name] = _timestamp(value[name], f"{where}.{name}").isoformat()
    if value.get("ObjectReplicationStatuses") is not None:
        out["ObjectReplicationStatuses"] = _enum_list(
            value["ObjectReplicationStatuses"], REPLICATION_STATUSES, f"{where}.ObjectReplicationStatuses"
        )
    if value.get("KeyNameConstraint") is not None:
        out["KeyNameConstraint"] = _key_constraint(value["KeyNameConstraint"], f"{where}.KeyNameConstraint")
    for name in ("ObjectSizeGreaterThanBytes", "ObjectSizeLessThanBytes"):
        if value.get(name) is not None:
            out[name] = _size(value[name], f"{where}.{name}")
    if value.get("MatchAnyStorageClass") is not None:
        out["MatchAnyStorageClass"] = _enum_list(
            value["MatchAnyStorageClass"], STORAGE_CLASSES, f"{where}.MatchAnyStorageClass"
        )
    if value.get("MatchAnyObjectEncryption") is not None:
        out["MatchAnyObjectEncryption"] = _encryptions(
            value["MatchAnyObjectEncryption"], f"{where}.MatchAnyObjectEncryption"
        )
    out.update(_noncurrent_fields(value, where))
    return out


def _noncurrent_fields(value: Mapping[str, Any], where: str) -> dict[str, int]:
    out: dict[str, int] = {}
    newer = value.get("NewerNoncurrentVersions")
    if newer is not None:
        if isinstance(newer, bool) or not isinstance(newer, int) or newer < 1:
            raise BadRequest(
                f"{where}.NewerNoncurrentVersions must be a whole number of at least 1 (versions kept "
                "per key); to select every noncurrent version give NoncurrentDays 0 without it"
            )
        out["NewerNoncurrentVersions"] = newer
    days = value.get("NoncurrentDays")
    if days is not None:
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= MAX_NONCURRENT_DAYS:
            raise BadRequest(f"{where}.NoncurrentDays must be a whole number from 0 to {MAX_NONCURRENT_DAYS}")
        out["NoncurrentDays"] = days
    return out


def _eligible(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise BadRequest(f"{where}.EligibleForReplication must be true or false")
    return value


def _timestamp(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        parsed = datetime.fromtimestamp(value, UTC)
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise BadRequest(f"{where} must be an ISO-8601 timestamp, got {value!r}") from exc
    else:
        raise BadRequest(f"{where} must be a timestamp")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _enum_list(value: Any, allowed: tuple[str, ...], where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise BadRequest(f"{where} must be a non-empty list")
    for item in value:
        if item not in allowed:
            raise BadRequest(f"{where}: {item!r} is not one of {', '.join(allowed)}")
    return list(value)


def _key_constraint(value: Any, where: str) -> dict[str, list[str]]:
    if not isinstance(value, Mapping) or not value:
        raise BadRequest(
            f"{where} must be an object with MatchAnyPrefix, MatchAnySuffix or MatchAnySubstring"
        )
    unknown = set(value) - set(_KEY_CONSTRAINTS)
    if unknown:
        raise BadRequest(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    out = {}
    for name, items in value.items():
        if not isinstance(items, list) or not items:
            raise BadRequest(f"{where}.{name} must be a non-empty list of strings")
        for item in items:
            if not isinstance(item, str) or not 1 <= len(item) <= MAX_CONSTRAINT_CHARS:
                raise BadRequest(f"{where}.{name}: each entry must be 1-{MAX_CONSTRAINT_CHARS} characters")
        out[name] = list(items)
    return out


def _size(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{where} must be a non-negative integer (bytes)")
    return value


def _encryptions(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise BadRequest(f"{where} must be a non-empty list")
    return [_encryption(item, f"{where}[{i}]") for i, item in enumerate(value)]


def _encryption(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, Mapping) or len(item) != 1:
        raise BadRequest(f"{where} must name exactly one of {', '.join(ENCRYPTION_KINDS)}")
    kind, params = next(iter(item.items()))
    if kind not in ENCRYPTION_KINDS:
        raise BadRequest(f"{where}: {kind!r} is not one of {', '.join(ENCRYPTION_KINDS)}")
    params = params or {}
    if not isinstance(params, Mapping):
        raise BadRequest(f"{where}.{kind} must be an object")
    allowed = {"SSE-KMS": {"KmsKeyArn", "BucketKeyEnabled"}, "DSSE-KMS": {"KmsKeyArn"}}.get(kind, set())
    unknown = set(params) - allowed
    if unknown:
        raise BadRequest(f"{where}.{kind}: unknown field(s) {', '.join(sorted(unknown))}")
    if "KmsKeyArn" in params and not isinstance(params["KmsKeyArn"], str):
        raise BadRequest(f"{where}.{kind}.KmsKeyArn must be a string")
    if "BucketKeyEnabled" in params and not isinstance(params["BucketKeyEnabled"], bool):
        raise BadRequest(f"{where}.{kind}.BucketKeyEnabled must be true or false")
    return {kind: dict(params)}


def filter_from_json(value: Mapping[str, Any] | None) -> ManifestFilter:
    """A normalized Filter (see normalize_filter) → ManifestFilter."""
    if not value:
        return ManifestFilter()
    keys = value.get("KeyNameConstraint", {})
    return ManifestFilter(
        created_after=_timestamp(value["CreatedAfter"], "CreatedAfter") if "CreatedAfter" in value else None,
        created_before=_timestamp(value["CreatedBefore"], "CreatedBefore")
        if "CreatedBefore" in value
        else None,
        replication_statuses=tuple(value.get("ObjectReplicationStatuses", ())),
        prefixes=tuple(keys.get("MatchAnyPrefix", ())),
        suffixes=tuple(keys.get("MatchAnySuffix", ())),
        substrings=tuple(keys.get("MatchAnySubstring", ())),
        size_greater_than=value.get("ObjectSizeGreaterThanBytes"),
        size_less_than=value.get("ObjectSizeLessThanBytes"),
        storage_classes=tuple(value.get("MatchAnyStorageClass", ())),
        encryptions=tuple(_encryption_match(e) for e in value.get("MatchAnyObjectEncryption", ())),
        eligible_for_replication=bool(value.get("EligibleForReplication", False)),
        noncurrent=_noncurrent_rule(value),
    )


def _noncurrent_rule(value: Mapping[str, Any]) -> NoncurrentRule | None:
    if not any(name in value for name in NONCURRENT_FIELDS):
        return None
    return NoncurrentRule(value.get("NewerNoncurrentVersions"), value.get("NoncurrentDays"))


def _encryption_match(item: Mapping[str, Any]) -> EncryptionMatch:
    kind, params = next(iter(item.items()))
    return EncryptionMatch(kind, params.get("KmsKeyArn"), params.get("BucketKeyEnabled"))


def generator_from_json(value: Mapping[str, Any]) -> ManifestGenerator:
    """A normalized ManifestGenerator (see normalize_generator) → ManifestGenerator."""
    gen = value["S3JobManifestGenerator"]
    loc = gen.get("ManifestOutputLocation") or {}
    return ManifestGenerator(
        source_bucket=bucket_from_arn(gen["SourceBucket"]),
        enable_output=bool(gen["EnableManifestOutput"]),
        output_bucket=bucket_from_arn(loc["Bucket"]) if loc.get("Bucket") else None,
        output_prefix=loc.get("ManifestPrefix", ""),
        include_versions=IncludeVersions(gen.get("IncludeVersions", IncludeVersions.CURRENT.value)),
        filter=filter_from_json(gen.get("Filter")),
        output_sse=manifest_sse_params(loc.get("ManifestEncryption")),
    )


def manifest_sse_params(encryption: Mapping[str, Any] | None) -> dict[str, str]:
    """A normalized ManifestEncryption → PutObject parameters (botocore names)."""
    if not encryption:
        return {}
    if "SSEKMS" in encryption:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": str(encryption["SSEKMS"]["KeyId"])}
    return {"ServerSideEncryption": "AES256"}
