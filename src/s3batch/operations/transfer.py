"""S3batchTransfer (extension): copy each object to another store, streamed, with verified checksums.

    {"S3batchTransfer": {
        "TargetStore": "backup",                      # a named store (docs/transfer.md); absent:
                                                      # the job's own store
        "TargetResource": "arn:aws:s3:::dst",         # required: the destination bucket
        "TargetKeyPrefix": "copy/",                   # prepended to each key (as S3PutObjectCopy)
        "SourceKeyPrefix": "photos/",                 # removed from each key first
        "SkipExisting": "None|SizeAndChecksum|SizeOnly",
        "ChecksumAlgorithm": "CRC32C",                # CRC32, CRC32C (default), CRC64NVME, SHA1,
                                                      # SHA256, SHA512, MD5, XXHASH64/3/128
        "PartSizeBytes": 8388608}}                    # preferred part size (8 MiB - 5 GiB)

Each task reads the source's attributes and body with one GET (an S3 source; a folder source is
stat'ed, then read), streams the body (never a whole large object in memory, never a temp file)
and writes it with one PutObject when it fits in one part, else with a
multipart upload whose parts go up PARTS_IN_FLIGHT at a time. Content type, user metadata, the
system headers and tags go along (the report row notes what the destination did not keep).

Verified: every request carries the checksum of its bytes; the answer (the store's own checksum,
else its MD5 ETag: the bytes' MD5 is computed only then) must match, and for multipart the
completed object's composite checksum or multipart ETag too. A mismatch fails the task with
ChecksumMismatch and removes what was written. A folder destination writes each part straight
into the object's file (an assembled upload: storage/local_uploads.py).
The row's ResultMessage: `copied; ChecksumAlgorithm=CRC32C; Checksum=...; Bytes=...`.

Resumable: a multipart upload interrupted (a worker killed, a retryable error) is found again
(this operation's own record, else ListMultipartUploads for the key), its parts listed, and each
part whose size fits the plan and whose checksum or MD5 matches the source bytes is kept. Uploads
this operation abandons (a task that finally failed) are aborted when the job's run ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from s3batch.domain import pricing
from s3batch.domain.arn import bucket_from_arn
from s3batch.domain.checksums import ChecksumAlgorithm
from s3batch.domain.named_stores import STORE_NAME
from s3batch.domain.roles import Need
from s3batch.domain.task import Task, TaskResult
from s3batch.domain.transfer import (
    MAX_PART_BYTES,
    MIN_PART_BYTES,
    S3_MIN_PART_BYTES,
    KeyMapping,
    SkipExisting,
)
from s3batch.errors import BadRequest, StorageError
from s3batch.operations._params import one_of, reject_unknown
from s3batch.operations.actions import GET, GET_TAGS, Permissions
from s3batch.operations.base import (
    UNBATCHED,
    NoProbe,
    Operation,
    OperationContext,
    OperationKind,
)
from s3batch.storage.base import ObjectStore
from s3batch.storage.capabilities import part_upload_store
from s3batch.storage.config import StorageConfig, open_store

NAME = "S3batchTransfer"
#: The checksum when the job names none: the cheapest one S3 verifies on every request.
DEFAULT_ALGORITHM = ChecksumAlgorithm.CRC32C
#: TargetStore forms the CLI (never a server's caller) may use besides a name: a folder, and S3
#: through the creating environment's own endpoint and credentials (service/stores.py).
FOLDER_URL_PREFIX = "file:///"
S3_ENVIRONMENT_URL = "s3://"
_KNOWN = {
    "TargetStore",
    "TargetResource",
    "TargetKeyPrefix",
    "SourceKeyPrefix",
    "SkipExisting",
    "ChecksumAlgorithm",
    "PartSizeBytes",
}
_ALGORITHMS = tuple(a.value for a in ChecksumAlgorithm)
_SKIP_MODES = tuple(m.value for m in SkipExisting)
#: S3's longest key, which bounds both prefixes.
MAX_PREFIX_CHARS = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class TransferPlan:
    """The job's parameters, parsed and checked."""

    #: None: the job's own store.
    store: str | None
    bucket: str
    keys: KeyMapping
    skip: SkipExisting
    algorithm: ChecksumAlgorithm
    part_size: int

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> TransferPlan:
        reject_unknown(NAME, params, _KNOWN)
        target = params.get("TargetResource")
        if not isinstance(target, str):
            raise BadRequest(f"{NAME}.TargetResource (a bucket ARN) is required")
        algorithm = params.get("ChecksumAlgorithm", DEFAULT_ALGORITHM.value)
        return cls(
            store=_store_name(params.get("TargetStore")),
            bucket=bucket_from_arn(target, f"{NAME}.TargetResource"),
            keys=KeyMapping(_prefix(params, "SourceKeyPrefix"), _prefix(params, "TargetKeyPrefix")),
            skip=SkipExisting(one_of(NAME, "SkipExisting", params.get("SkipExisting", "None"), _SKIP_MODES)),
            algorithm=ChecksumAlgorithm(one_of(NAME, "ChecksumAlgorithm", algorithm, _ALGORITHMS)),
            part_size=_part_size(params.get("PartSizeBytes", MIN_PART_BYTES)),
        )


def _store_name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{NAME}.TargetStore must be a store name")
    if STORE_NAME.fullmatch(value) or value == S3_ENVIRONMENT_URL or value.startswith(FOLDER_URL_PREFIX):
        return value
    raise BadRequest(
        f"{NAME}.TargetStore {value!r}: expected the name of a registered store "
        "(letters, digits, '_', '.', '-'; docs/transfer.md)"
    )


def _prefix(params: Mapping[str, Any], field: str) -> str:
    value = params.get(field) or ""
    if not isinstance(value, str) or len(value) > MAX_PREFIX_CHARS:
        raise BadRequest(f"{NAME}.{field} must be a string of at most {MAX_PREFIX_CHARS} characters")
    return value


def _part_size(value: Any) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not S3_MIN_PART_BYTES <= value <= MAX_PART_BYTES
    ):
        raise BadRequest(
            f"{NAME}.PartSizeBytes must be an integer from {S3_MIN_PART_BYTES} (5 MiB) "
            f"to {MAX_PART_BYTES} (5 GiB)"
        )
    return value


def validate(params: Mapping[str, Any]) -> None:
    TransferPlan.from_params(params)


class Transfer(Operation):
    """Builds the per-task copier once per process; see operations/_transfer_copy.py."""

    name = NAME

    def __init__(self, params: Mapping[str, Any], ctx: OperationContext) -> None:
        from s3batch.operations._transfer_copy import Copier, unresolved, unsupported

        self.plan = TransferPlan.from_params(params)
        self._own_target = False
        self._failure: TaskResult | None = None
        target: ObjectStore = ctx.store
        if self.plan.store is not None:
            config: StorageConfig | None = ctx.job.stores.get(self.plan.store)
            if config is None:
                self._failure = unresolved(self.plan.store)
            else:
                target, self._own_target = open_store(config), True
        self.target = target
        writer = part_upload_store(target)
        if writer is None and self._failure is None:
            self._failure = unsupported(self.plan.store)
        self.copier = None if writer is None else Copier(self.plan, ctx.store, writer)

    async def apply(self, task: Task) -> TaskResult:
        if self._failure is not None or self.copier is None:
            assert self._failure is not None
            return self._failure
        return await self.copier.apply(task)

    async def close(self) -> None:
        try:
            if self.copier is not None:
                await self.copier.close()
        finally:
            if self._own_target:
                with contextlib.suppress(StorageError):
                    await self.target.close()


def target_needs(params: Mapping[str, Any], source: str, versioned: bool) -> list[Need]:
    """Reading the source's tags, and writing (parts included) to TargetResource (nothing when
    it is absent: the request is refused anyway)."""
    target = params.get("TargetResource")
    needs: list[Need] = []
    if isinstance(target, str):
        needs.append(Need(GET_TAGS.name(versioned), source))
        bucket = bucket_from_arn(target, "TargetResource")
        for action in (
            "s3:PutObject",
            "s3:PutObjectTagging",
            "s3:ListMultipartUploadParts",
            "s3:AbortMultipartUpload",
        ):
            needs.append(Need(action, bucket))
        needs.append(Need("s3:ListBucketMultipartUploads", bucket))
    return needs


def requests(params: Mapping[str, Any], tasks: int, buckets: int) -> dict[str, int]:
    """Per object: a GET of the source (it answers what a HEAD would), a PUT (an object in parts
    makes more, unknown before its size is), and with SkipExisting a HEAD of the destination."""
    heads = 1 if params.get("SkipExisting", "None") != "None" else 0
    return {pricing.HEAD: heads * tasks, pricing.GET: tasks, pricing.PUT: tasks}


KIND = OperationKind(
    name=NAME,
    validate=validate,
    permissions=Permissions(object_actions=(GET,), bucket_actions=(), extra=target_needs),
    requests=requests,
    # The source is only read; the destination is another store, which the job's capability
    # probe (run on the job's own store) cannot see: a destination lacking the writes it needs
    # fails each task with NotImplemented instead.
    probe=NoProbe.PLAIN_DATA_PATH,
    batch_size=UNBATCHED,
    create=Transfer,
)
