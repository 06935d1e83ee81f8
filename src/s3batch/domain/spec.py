"""A job's CreateJob request and runtime record as typed, frozen values: parsed once, read everywhere.

The AWS JSON shape (the normalized request of domain/request.py) stays the stored form and what
DescribeJob shows (`JobRequest.raw`); the code that runs a job reads these values instead of
digging into nested dicts. Operation parameters stay JSON here: each operation kind validates and
reads its own (operations/).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from s3batch.domain.arn import bucket_from_arn, object_from_arn
from s3batch.domain.commands import JobCommand
from s3batch.domain.function import FunctionSpec
from s3batch.domain.generator import ManifestGenerator, generator_from_json
from s3batch.domain.manifest import ManifestFormat
from s3batch.domain.report import ReportScope
from s3batch.domain.roles import RoleRef
from s3batch.domain.stores import StorageConfig, from_dict, to_dict

#: Region of a runtime record written before regions were recorded.
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True, slots=True)
class OperationSpec:
    """The job's one operation: its AWS name and its own parameters."""

    name: str
    params: Mapping[str, Any]

    @property
    def as_json(self) -> dict[str, Mapping[str, Any]]:
        """`{name: params}`, the JobOperation shape an engine or probe takes."""
        return {self.name: self.params}


@dataclass(frozen=True, slots=True)
class ManifestSpec:
    """Where the manifest object is and how to read it (JobManifest)."""

    format: ManifestFormat
    #: CSV columns (Fields); None for inventory reports, whose manifest.json names them.
    fields: tuple[str, ...] | None
    bucket: str
    key: str
    etag: str
    version_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """The completion report (JobReport)."""

    enabled: bool
    bucket: str | None = None
    prefix: str | None = None
    scope: ReportScope = ReportScope.ALL

    @property
    def failed_only(self) -> bool:
        return self.scope is ReportScope.FAILED_ONLY


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRequest:
    """A normalized CreateJob request, typed. Exactly one of `manifest` and `generator` is set."""

    operation: OperationSpec
    report: ReportSpec
    priority: int
    confirmation_required: bool
    manifest: ManifestSpec | None
    generator: ManifestGenerator | None
    role_arn: str | None
    description: str | None
    tags: tuple[tuple[str, str], ...]
    #: The normalized AWS JSON this was parsed from: the stored form, and DescribeJob's.
    raw: Mapping[str, Any]

    @classmethod
    def parse(cls, normalized: Mapping[str, Any]) -> JobRequest:
        """The typed view of a request normalize_create_job produced (or the job store kept)."""
        [(name, params)] = normalized["Operation"].items()
        manifest = normalized.get("Manifest")
        generator = normalized.get("ManifestGenerator")
        return cls(
            operation=OperationSpec(name, params or {}),
            report=_report(normalized["Report"]),
            priority=int(normalized["Priority"]),
            confirmation_required=bool(normalized.get("ConfirmationRequired", False)),
            manifest=_manifest(manifest) if manifest is not None else None,
            generator=generator_from_json(generator) if generator is not None else None,
            role_arn=normalized.get("RoleArn"),
            description=normalized.get("Description"),
            tags=tuple((t["Key"], t.get("Value", "")) for t in normalized.get("Tags") or ()),
            raw=normalized,
        )


def _report(report: Mapping[str, Any]) -> ReportSpec:
    if not report.get("Enabled"):
        return ReportSpec(enabled=False)
    return ReportSpec(
        enabled=True,
        bucket=bucket_from_arn(report["Bucket"], "Report.Bucket"),
        prefix=report.get("Prefix"),
        scope=ReportScope(report.get("ReportScope", ReportScope.ALL.value)),
    )


def _manifest(manifest: Mapping[str, Any]) -> ManifestSpec:
    spec, location = manifest["Spec"], manifest["Location"]
    where = object_from_arn(location["ObjectArn"], "Manifest.Location.ObjectArn")
    fields = spec.get("Fields")
    return ManifestSpec(
        format=ManifestFormat(spec["Format"]),
        fields=tuple(fields) if fields else None,
        bucket=where.bucket,
        key=where.key,
        etag=location["ETag"],
        version_id=location.get("ObjectVersionId"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRuntime:
    """What a worker needs besides the request, resolved when the job was created and recorded
    with it, so a resumed job (or one run elsewhere) behaves the same."""

    storage: StorageConfig
    region: str
    #: Fingerprint of the creating environment's credentials (service/identity.py); None for
    #: jobs recorded before fingerprints existed.
    identity: str | None = None
    #: The resolved handler of a LambdaInvoke job, and the endpoint/region variables it gets.
    function: FunctionSpec | None = None
    function_env: Mapping[str, str] | None = None
    #: The server-defined role the job runs as (jobs created through `s3batch serve`).
    role: RoleRef | None = None
    #: The registered command an S3batchRunCommand job of a server's caller runs, as registered
    #: at CreateJob (docs/run-command.md#over-s3batch-serve).
    command: JobCommand | None = None
    #: Named stores the job writes to (S3batchTransfer's TargetStore), resolved at CreateJob;
    #: configs only, never credentials (docs/transfer.md).
    stores: Mapping[str, StorageConfig] | None = None

    @classmethod
    def parse(cls, runtime: Mapping[str, Any]) -> JobRuntime:
        function, role, stores = runtime.get("function"), runtime.get("role"), runtime.get("stores")
        return cls(
            storage=from_dict(runtime["storage"]),
            region=runtime.get("region", DEFAULT_REGION),
            identity=runtime.get("identity"),
            function=_function(function) if function else None,
            function_env=runtime.get("function_env"),
            role=RoleRef(role["account_id"], role["name"]) if role else None,
            command=JobCommand.parse(runtime["command"]) if runtime.get("command") else None,
            stores={name: from_dict(config) for name, config in stores.items()} if stores else None,
        )

    def as_json(self) -> dict[str, Any]:
        """The stored form (JSON-able); `parse` reads it back."""
        out: dict[str, Any] = {"storage": to_dict(self.storage), "region": self.region}
        if self.identity is not None:
            out["identity"] = self.identity
        if self.role is not None:
            out["role"] = {"account_id": self.role.account_id, "name": self.role.name}
        if self.command is not None:
            out["command"] = self.command.as_json()
        if self.function is not None:
            out["function"] = asdict(self.function)
        if self.function_env is not None:
            out["function_env"] = dict(self.function_env)
        if self.stores:
            out["stores"] = {name: to_dict(config) for name, config in self.stores.items()}
        return out


def _function(recorded: Mapping[str, Any]) -> FunctionSpec:
    return FunctionSpec(**{**recorded, "sys_path": tuple(recorded.get("sys_path", ()))})
