"""S3Store: the ObjectStore contract, and every capability, over an S3-compatible endpoint.

The hot, simple calls (plain copy, delete, tagging, listing, small reads and writes) go on the
lean request path (lean.py) when the bucket has a lean route; everything else, and anything
the lean path does not recognise, goes through aiobotocore. Both share one connection per
config (client.py). Every botocore/aiohttp failure leaves this module as a StorageError (see
errors.translating).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from s3batch.domain.objects import AclSpec, KmsEncryption, ObjectInfo, ReplicationRule, Retention
from s3batch.errors import ConfigError, StorageError
from s3batch.storage.base import Capability, CopyOptions, CopyResult, MultipartUpload, VersionRef
from s3batch.storage.capabilities import ALL_CAPABILITIES
from s3batch.storage.config import S3Config
from s3batch.storage.s3.client import SharedClient, acquire, release
from s3batch.storage.s3.errors import TLS_ERROR, local_io, translating
from s3batch.storage.s3.lean import Fallback, LeanS3, Route
from s3batch.storage.s3.shapes import (
    acl_params,
    byte_ranges,
    completed_part,
    copy_source_header,
    delete_entry,
    delete_outcomes,
    head_object_info,
    lean_copy_headers,
    lean_put_headers,
    listed_info,
    object_params,
    page_versions,
    parse_replication_rules,
    parse_timestamp,
    parsed_head,
    part_size_for,
    range_total,
    tagging_header,
    unquoted_etag,
)
from s3batch.storage.s3.uploads import S3PartUploads

#: S3's limit for one CopyObject request, in bytes.
SINGLE_COPY_MAX_BYTES = 5 * 1024**3
#: Sources larger than this are copied with UploadPartCopy, in bytes. Tests lower it.
MULTIPART_COPY_THRESHOLD_BYTES = SINGLE_COPY_MAX_BYTES
#: Preferred UploadPartCopy range, in bytes (S3 allows 5 MiB to 5 GiB per part).
MULTIPART_COPY_PART_BYTES = 512 * 1024**2
#: UploadPartCopy requests in flight for one multipart copy.
MULTIPART_COPY_CONCURRENCY = 4
#: put_file uploads files of at least this size in parts, in bytes.
MULTIPART_UPLOAD_THRESHOLD_BYTES = 64 * 1024**2
#: Preferred UploadPart size for put_file, in bytes; one part is held in memory at a time.
MULTIPART_UPLOAD_PART_BYTES = 32 * 1024**2
#: S3's limit on keys in one DeleteObjects request.
DELETE_OBJECTS_MAX_KEYS = 1000
#: S3's largest ListObjectsV2 page, in keys.
LIST_PAGE_MAX_KEYS = 1000
#: First page of a listing bounded by `end_before`, in keys; each next page doubles up to
#: LIST_PAGE_MAX_KEYS. Small, because a parallel lister's range usually ends a few keys in.
BOUNDED_FIRST_PAGE_KEYS = 10
#: Pages one bounded listing may fetch (a billion keys at full pages): a server that never
#: stops saying "truncated" fails the listing instead of looping forever.
MAX_BOUNDED_PAGES = 1_000_000
#: S3Config.addressing_style values, as botocore's `s3.addressing_style` takes them.
ADDRESSING_STYLES = ("auto", "path", "virtual")
#: Codes with which S3 may refuse a CopyObject because the source is too large.
_TOO_LARGE_CODES = frozenset({"InvalidRequest", "EntityTooLarge"})
#: CopyObject as S3 does it by default: metadata and tags copied from the source.
DEFAULT_COPY_OPTIONS = CopyOptions()
#: HEAD ?partNumber= requests in flight for one object_parts call.
PART_HEAD_CONCURRENCY = 8

_T = TypeVar("_T")


class _Skip(enum.Enum):
    """A lean call that did not happen: the caller goes through aiobotocore."""

    SKIP = 0


SKIP = _Skip.SKIP


class S3Store(S3PartUploads):
    """ObjectStore over S3. The client is created on first use and closed by `close()`.
    Capability.PART_UPLOADS's methods, and `get_with_checksum` (capabilities.CheckedGetStore),
    come from S3PartUploads (uploads.py)."""

    #: The whole S3 API; whether the server behind the endpoint supports each part of it is
    #: for the capability probe to find out.
    capabilities: ClassVar[frozenset[Capability]] = ALL_CAPABILITIES

    def __init__(self, config: S3Config) -> None:
        if config.addressing_style not in ADDRESSING_STYLES:
            raise ConfigError(
                f"addressing_style {config.addressing_style!r}: expected one of {ADDRESSING_STYLES}"
            )
        self._config = config
        self._shared: SharedClient | None = None
        self._open_lock = asyncio.Lock()

    # -- client lifecycle -------------------------------------------------------------------

    async def _opened(self) -> SharedClient:
        if self._shared is None:
            async with self._open_lock:  # many tasks start at once; open one client
                if self._shared is None:
                    self._shared = await acquire(self._config)
        return self._shared

    async def _s3(self) -> Any:
        return await (await self._opened()).botocore()

    async def close(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            await release(shared)

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        client = await self._s3()
        with translating():
            response: dict[str, Any] = await getattr(client, operation)(**params)
        return response

    # -- the lean request path ---------------------------------------------------------------

    async def _lean_call(self, bucket: str, call: Callable[[LeanS3, Route], Awaitable[_T]]) -> _T | _Skip:
        """Run `call` on the lean path, or SKIP when `bucket` has no lean route (the caller
        then uses aiobotocore). A redirect-type answer moves the bucket to aiobotocore for good."""
        shared = self._shared or await self._opened()
        route = await shared.route(bucket)
        if route is None or shared.lean is None:
            return SKIP
        try:
            return await call(shared.lean, route)
        except Fallback:
            shared.routes[bucket] = None
            return SKIP

    # -- buckets and reads ------------------------------------------------------------------

    async def create_bucket(self, bucket: str) -> None:
        region = (await self._opened()).region
        params: dict[str, Any] = {"Bucket": bucket}
        if region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
            params["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            await self._call("create_bucket", **params)
        except StorageError as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    async def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo:
        lean = await self._lean_call(
            bucket, lambda lean, route: _or_none(lean.head_object(route, key, version_id))
        )
        if lean is not SKIP and lean is not None:
            return head_object_info(bucket, key, parsed_head(lean))
        try:
            response = await self._call("head_object", **object_params(bucket, key, version_id))
        except StorageError as exc:
            if exc.http_status == 404:
                raise await self._head_not_found(bucket, version_id) from exc
            raise
        return head_object_info(bucket, key, response)

    async def _head_not_found(self, bucket: str, version_id: str | None) -> StorageError:
        """A HEAD 404 has no body: ask the bucket to tell NoSuchBucket from NoSuchKey."""
        try:
            await self._call("head_bucket", Bucket=bucket)
        except StorageError as bucket_exc:
            if bucket_exc.http_status == 404:
                return StorageError("NoSuchBucket", "The specified bucket does not exist", 404)
        if version_id is not None:
            return StorageError("NoSuchVersion", "The specified version does not exist.", 404)
        return StorageError("NoSuchKey", "The specified key does not exist.", 404)

    async def get_bytes(self, bucket: str, key: str, version_id: str | None = None) -> bytes:
        lean = await self._lean_call(
            bucket, lambda lean, route: _or_none(lean.get_object(route, key, version_id))
        )
        if lean is not SKIP and lean is not None:
            return lean.body
        response = await self._call("get_object", **object_params(bucket, key, version_id))
        with translating():
            async with response["Body"] as body:
                data: bytes = await body.read()
        return data

    async def iter_bytes(
        self,
        bucket: str,
        key: str,
        version_id: str | None = None,
        start: int = 0,
        chunk_size: int = 1 << 20,
    ) -> AsyncIterator[bytes]:
        # The first `chunk_size` bytes on the lean path: all of a small object (a manifest, a
        # CSV) in one cheap request; a larger one goes on streaming through aiobotocore, pinned
        # to the same object by its ETag.
        byte_range = f"bytes={start}-{start + chunk_size - 1}"
        lean = await self._lean_call(
            bucket, lambda lean, route: _or_none(lean.get_object(route, key, version_id, byte_range))
        )
        if_match = None
        if lean is not SKIP and lean is not None:
            # The whole object came back, unless a Content-Range says otherwise: rclone serve s3
            # answers 200 with a Content-Range to a ranged GET of an object stored with a checksum.
            if lean.status != 206 and "content-range" not in lean.headers:
                if rest := lean.body[start:]:
                    yield rest
                return
            yield lean.body
            total = range_total(lean.headers.get("content-range", ""))
            start += len(lean.body)
            if total is not None and start >= total:
                return
            if_match = lean.headers.get("etag")
        params = object_params(bucket, key, version_id)
        if start > 0:
            params["Range"] = f"bytes={start}-"
        if if_match:
            params["IfMatch"] = if_match
        try:
            response = await self._call("get_object", **params)
        except StorageError as exc:
            # Reading on from the very end is a valid resume point: nothing is left.
            if exc.code == "InvalidRange" and (await self.head(bucket, key, version_id)).size == start:
                return
            raise
        with translating():
            async with response["Body"] as body:
                _check_pinned(key, if_match, response.get("ETag"))
                while chunk := await body.read(chunk_size):
                    yield chunk

    async def list_objects(
        self,
        bucket: str,
        prefix: str = "",
        start_after: str | None = None,
        *,
        end_before: str | None = None,
        etags: bool = True,
    ) -> AsyncIterator[ObjectInfo]:
        # `etags` is ignored: ListObjectsV2 carries every ETag.
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if start_after is not None:
            params["StartAfter"] = start_after
        if end_before is not None:
            async for info in self._list_bounded(params, end_before):
                yield info
            return
        for _ in range(MAX_BOUNDED_PAGES):
            infos, token = await self._list_page(params, LIST_PAGE_MAX_KEYS)
            for info in infos:
                yield info
            if token is None:
                return
            params = {**params, "ContinuationToken": token}
        raise StorageError(
            "InternalError", f"listing of {bucket} did not end after {MAX_BOUNDED_PAGES} pages"
        )

    async def _list_page(
        self, params: Mapping[str, Any], max_keys: int
    ) -> tuple[list[ObjectInfo], str | None]:
        """One ListObjectsV2 page: its objects and the next token, if any."""
        bucket = params["Bucket"]
        query = [("max-keys", str(max_keys)), ("prefix", params.get("Prefix", ""))]
        for name, param in (("start-after", "StartAfter"), ("continuation-token", "ContinuationToken")):
            if params.get(param) is not None:
                query.append((name, params[param]))
        lean = await self._lean_call(bucket, lambda lean, route: lean.list_page(route, bucket, query))
        if lean is not SKIP:
            return lean
        # botocore asks for URL-encoded keys and decodes them, so odd keys survive XML.
        page = await self._call("list_objects_v2", **params, MaxKeys=max_keys)
        token = page.get("NextContinuationToken") if page.get("IsTruncated") else None
        return [listed_info(bucket, entry) for entry in page.get("Contents", [])], token or None

    async def _list_bounded(self, params: dict[str, Any], end_before: str) -> AsyncIterator[ObjectInfo]:
        """ListObjectsV2 pages growing from BOUNDED_FIRST_PAGE_KEYS, up to the first key at or
        after `end_before`: S3 has no end bound, so this is how a short range stays cheap."""
        page_keys = BOUNDED_FIRST_PAGE_KEYS
        for _ in range(MAX_BOUNDED_PAGES):
            infos, token = await self._list_page(params, page_keys)
            for info in infos:
                if info.key >= end_before:
                    return
                yield info
            if token is None:
                return
            params = {**params, "ContinuationToken": token}
            page_keys = min(page_keys * 2, LIST_PAGE_MAX_KEYS)
        raise StorageError(
            "InternalError", f"listing of {params['Bucket']} did not end after {MAX_BOUNDED_PAGES} pages"
        )

    async def list_prefixes(self, bucket: str, prefix: str = "", delimiter: str = "/") -> list[str]:
        found: list[str] = []
        token: str | None = None
        for _ in range(MAX_BOUNDED_PAGES):
            query = [("delimiter", delimiter), ("max-keys", str(LIST_PAGE_MAX_KEYS)), ("prefix", prefix)]
            if token is not None:
                query.append(("continuation-token", token))
            page = await self._lean_prefix_page(bucket, query)
            if page is SKIP:  # no lean route (any more): the whole listing through aiobotocore
                return await self._botocore_prefixes(bucket, prefix, delimiter)
            prefixes, token = page
            found.extend(prefixes)
            if token is None:
                return found
        raise StorageError(
            "InternalError", f"listing of {bucket} did not end after {MAX_BOUNDED_PAGES} pages"
        )

    async def _lean_prefix_page(
        self, bucket: str, query: list[tuple[str, str]]
    ) -> tuple[list[str], str | None] | _Skip:
        return await self._lean_call(bucket, lambda lean, route: lean.prefix_page(route, query))

    async def _botocore_prefixes(self, bucket: str, prefix: str, delimiter: str) -> list[str]:
        client = await self._s3()
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, Delimiter=delimiter
        )
        found: list[str] = []
        with translating():
            async for page in pages:
                found.extend(entry["Prefix"] for entry in page.get("CommonPrefixes", []))
        return found

    async def list_versions(
        self, bucket: str, prefix: str = "", start_after: str | None = None, *, etags: bool = True
    ) -> AsyncIterator[ObjectInfo]:
        # `etags` is ignored: ListObjectVersions carries every ETag.
        client = await self._s3()
        params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if start_after is not None:
            params["KeyMarker"] = start_after  # KeyMarker alone: keys after it, as StartAfter
        pages = client.get_paginator("list_object_versions").paginate(**params)
        with translating():
            async for page in pages:
                for info in page_versions(bucket, page):
                    # moto (5.x) reads a lone KeyMarker as (key, its first version) and still
                    # returns that key's older versions; S3 returns none of them.
                    if start_after is None or info.key > start_after:
                        yield info

    async def object_parts(self, bucket: str, key: str, version_id: str | None = None) -> list[int] | None:
        # moto (5.2) leaves ObjectParts out of GetObjectAttributes: HEAD ?partNumber= works everywhere.
        first = await self._call("head_object", **object_params(bucket, key, version_id), PartNumber=1)
        count = first.get("PartsCount")
        if count is None:
            return None  # not a multipart upload
        limit = asyncio.Semaphore(PART_HEAD_CONCURRENCY)

        async def size_of(number: int) -> int:
            async with limit:
                part = await self._call(
                    "head_object", **object_params(bucket, key, version_id), PartNumber=number
                )
            return int(part["ContentLength"])

        rest = await asyncio.gather(*(size_of(n) for n in range(2, int(count) + 1)))
        return [int(first["ContentLength"]), *rest]

    # -- writes -----------------------------------------------------------------------------

    async def put_bytes(
        self,
        bucket: str,
        key: str,
        body: bytes,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ObjectInfo:
        etag, version_id = await self._put_lean(bucket, key, body, content_type, metadata, extra)
        if etag is None:
            params: dict[str, Any] = {**(extra or {}), "Bucket": bucket, "Key": key, "Body": body}
            if content_type is not None:
                params["ContentType"] = content_type
            if metadata:
                params["Metadata"] = dict(metadata)
            response = await self._call("put_object", **params)
            etag, version_id = unquoted_etag(response.get("ETag", "")), response.get("VersionId")
        # PutObject returns no date; the local clock saves a HEAD per write.
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=len(body),
            etag=etag,
            last_modified=datetime.now(UTC),
            version_id=version_id,
            content_type=content_type,
            metadata={k.lower(): v for k, v in (metadata or {}).items()},
        )

    async def _put_lean(
        self,
        bucket: str,
        key: str,
        body: bytes,
        content_type: str | None,
        metadata: Mapping[str, str] | None,
        extra: Mapping[str, Any] | None,
    ) -> tuple[str | None, str | None]:
        """PutObject on the lean path → (ETag, VersionId); (None, None) when it can't go there."""
        headers = lean_put_headers(len(body), content_type, metadata, extra)
        if headers is None:
            return None, None
        lean = await self._lean_call(bucket, lambda lean, route: lean.put_object(route, key, body, headers))
        return (None, None) if lean is SKIP else lean

    async def put_file(
        self,
        bucket: str,
        key: str,
        path: Path,
        *,
        content_type: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        size = (await local_io(path, asyncio.to_thread(path.stat))).st_size
        create: dict[str, Any] = dict(extra or {})
        if content_type is not None:
            create["ContentType"] = content_type
        if size < MULTIPART_UPLOAD_THRESHOLD_BYTES:
            body = await local_io(path, asyncio.to_thread(path.read_bytes))
            etag, _ = await self._put_lean(bucket, key, body, content_type, None, extra)
            if etag is None:
                await self._call("put_object", **create, Bucket=bucket, Key=key, Body=body)
            return
        part_size = part_size_for(size, MULTIPART_UPLOAD_PART_BYTES)

        async def upload_parts(upload_id: str) -> list[dict[str, Any]]:
            parts = []
            for number, (first, last) in enumerate(byte_ranges(size, part_size), start=1):
                data = await local_io(path, asyncio.to_thread(_read_range, path, first, last))
                response = await self._call(
                    "upload_part",
                    Bucket=bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=data,
                )
                parts.append({"PartNumber": number, "ETag": response["ETag"]})
            return parts

        await self._multipart(bucket, key, create, {}, upload_parts)

    # -- incomplete multipart uploads (the pipelines' staging-bucket sweep) -------------------

    async def list_multipart_uploads(self, bucket: str, prefix: str = "") -> AsyncIterator[MultipartUpload]:
        client = await self._s3()
        pages = client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
        with translating():
            async for page in pages:
                for entry in page.get("Uploads", []):
                    value = entry["Initiated"]  # a datetime already: the client's parser is ours
                    initiated = value if isinstance(value, datetime) else parse_timestamp(value)
                    if initiated.tzinfo is None:
                        initiated = initiated.replace(tzinfo=UTC)
                    yield MultipartUpload(entry["Key"], entry["UploadId"], initiated)

    async def abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        await self._call("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)

    async def copy(
        self,
        src_bucket: str,
        src_key: str,
        dst_bucket: str,
        dst_key: str,
        *,
        src_version_id: str | None = None,
        options: CopyOptions = DEFAULT_COPY_OPTIONS,
    ) -> CopyResult:
        source = object_params(src_bucket, src_key, src_version_id)
        if MULTIPART_COPY_THRESHOLD_BYTES < SINGLE_COPY_MAX_BYTES:
            # A lowered threshold (tests, stores with a smaller limit) needs the size first.
            info = await self.head(src_bucket, src_key, src_version_id)
            if info.size > MULTIPART_COPY_THRESHOLD_BYTES:
                return await self._copy_multipart(source, info, dst_bucket, dst_key, options)
            return await self._copy_single(source, dst_bucket, dst_key, options)
        try:
            # Nearly every object fits one CopyObject: try it rather than HEAD every source.
            return await self._copy_single(source, dst_bucket, dst_key, options)
        except StorageError as exc:
            if exc.code not in _TOO_LARGE_CODES:
                raise
            info = await self.head(src_bucket, src_key, src_version_id)
            if info.size <= MULTIPART_COPY_THRESHOLD_BYTES:
                raise
            return await self._copy_multipart(source, info, dst_bucket, dst_key, options)

    async def _copy_single(
        self, source: dict[str, Any], dst_bucket: str, dst_key: str, options: CopyOptions
    ) -> CopyResult:
        headers = lean_copy_headers(options)
        if headers is not None:
            copy_source = copy_source_header(source)
            lean = await self._lean_call(
                dst_bucket, lambda lean, route: lean.copy_object(route, dst_key, copy_source, headers)
            )
            if lean is not SKIP:
                return CopyResult(*lean)
        params: dict[str, Any] = {"Bucket": dst_bucket, "Key": dst_key, "CopySource": source}
        if options.replace_metadata:
            params.update(MetadataDirective="REPLACE", Metadata=dict(options.metadata))
            params.update(options.headers)
        else:
            params["MetadataDirective"] = "COPY"
        if options.tags is None:
            params["TaggingDirective"] = "COPY"
        else:
            params["TaggingDirective"] = "REPLACE"
            if options.tags:  # no Tagging header at all means an empty tag set
                params["Tagging"] = tagging_header(options.tags)
        if options.storage_class:
            params["StorageClass"] = options.storage_class
        params.update(options.extra)
        response = await self._call("copy_object", **params)
        etag = response.get("CopyObjectResult", {}).get("ETag", "")
        return CopyResult(unquoted_etag(etag), response.get("VersionId"))

    async def _copy_multipart(
        self,
        source: dict[str, Any],
        info: ObjectInfo,
        dst_bucket: str,
        dst_key: str,
        options: CopyOptions,
    ) -> CopyResult:
        create, part_params = await self._multipart_copy_params(source, info, options)
        part_size = part_size_for(info.size, MULTIPART_COPY_PART_BYTES)
        ranges = list(byte_ranges(info.size, part_size))
        # Every part must come from the same source bytes even if the key is overwritten.
        part_params.setdefault("CopySourceIfMatch", f'"{info.etag}"')

        async def copy_parts(upload_id: str) -> list[dict[str, Any]]:
            limit = asyncio.Semaphore(MULTIPART_COPY_CONCURRENCY)

            async def one(number: int, first: int, last: int) -> dict[str, Any]:
                async with limit:
                    response = await self._call(
                        "upload_part_copy",
                        Bucket=dst_bucket,
                        Key=dst_key,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource=source,
                        CopySourceRange=f"bytes={first}-{last}",
                        **part_params,
                    )
                return completed_part(number, response["CopyPartResult"])

            return await _all_or_first_error(
                [one(n, first, last) for n, (first, last) in enumerate(ranges, start=1)]
            )

        common = {"RequestPayer": options.extra["RequestPayer"]} if "RequestPayer" in options.extra else {}
        response = await self._multipart(dst_bucket, dst_key, create, common, copy_parts)
        return CopyResult(unquoted_etag(response.get("ETag", "")), response.get("VersionId"))

    async def _multipart_copy_params(
        self, source: dict[str, Any], info: ObjectInfo, options: CopyOptions
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """CreateMultipartUpload parameters giving the result what CopyObject would give it,
        and the extra parameters for each UploadPartCopy."""
        create: dict[str, Any] = {}
        if options.replace_metadata:
            create.update(options.headers, Metadata=dict(options.metadata))
        else:
            create.update(info.headers, Metadata=dict(info.metadata))
            if info.content_type is not None:
                create["ContentType"] = info.content_type
        tags = options.tags
        if tags is None:
            tags = await self.get_tags(source["Bucket"], source["Key"], source.get("VersionId"))
        if tags:
            create["Tagging"] = tagging_header(tags)
        if options.storage_class:
            create["StorageClass"] = options.storage_class
        part_params: dict[str, Any] = {}
        for name, value in options.extra.items():
            # Source conditions apply to each part read; everything else shapes the result.
            target = part_params if name.startswith("CopySource") else create
            target[name] = value
        if "RequestPayer" in options.extra:
            part_params["RequestPayer"] = options.extra["RequestPayer"]
        return create, part_params

    async def _multipart(
        self,
        bucket: str,
        key: str,
        create: Mapping[str, Any],
        common: Mapping[str, Any],
        upload_parts: Callable[[str], Awaitable[list[dict[str, Any]]]],
    ) -> dict[str, Any]:
        """Create, fill and complete a multipart upload; abort it if anything fails."""
        upload = await self._call("create_multipart_upload", Bucket=bucket, Key=key, **create, **common)
        upload_id = upload["UploadId"]
        try:
            parts = await upload_parts(upload_id)
            return await self._call(
                "complete_multipart_upload",
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **common,
            )
        except BaseException:
            # Uploaded parts are billed until aborted; cancellation must clean up too.
            with contextlib.suppress(StorageError):
                await self._call(
                    "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id, **common
                )
            raise

    # -- tags and deletes -------------------------------------------------------------------

    async def get_tags(self, bucket: str, key: str, version_id: str | None = None) -> dict[str, str]:
        lean = await self._lean_call(bucket, lambda lean, route: lean.get_tagging(route, key, version_id))
        if lean is not SKIP:
            return lean
        response = await self._call("get_object_tagging", **object_params(bucket, key, version_id))
        return {tag["Key"]: tag["Value"] for tag in response.get("TagSet", [])}

    async def put_tags(
        self, bucket: str, key: str, tags: Mapping[str, str], version_id: str | None = None
    ) -> None:
        lean = await self._lean_call(
            bucket, lambda lean, route: lean.put_tagging(route, key, tags, version_id)
        )
        if lean is not SKIP:
            return
        tag_set = [{"Key": k, "Value": v} for k, v in tags.items()]
        await self._call(
            "put_object_tagging", **object_params(bucket, key, version_id), Tagging={"TagSet": tag_set}
        )

    async def delete_tags(self, bucket: str, key: str, version_id: str | None = None) -> None:
        lean = await self._lean_call(bucket, lambda lean, route: lean.delete_tagging(route, key, version_id))
        if lean is not SKIP:
            return
        await self._call("delete_object_tagging", **object_params(bucket, key, version_id))

    async def delete(self, bucket: str, key: str, version_id: str | None = None) -> None:
        lean = await self._lean_call(bucket, lambda lean, route: lean.delete_object(route, key, version_id))
        if lean is not SKIP:
            return
        await self._call("delete_object", **object_params(bucket, key, version_id))

    async def delete_many(self, bucket: str, objects: Sequence[VersionRef]) -> list[Exception | None]:
        outcomes: list[Exception | None] = []
        for start in range(0, len(objects), DELETE_OBJECTS_MAX_KEYS):
            batch = objects[start : start + DELETE_OBJECTS_MAX_KEYS]
            lean = await self._lean_call(bucket, functools.partial(_lean_delete_objects, pairs=batch))
            if lean is not SKIP:
                errors = [{"Key": k, "VersionId": v, "Code": c, "Message": m} for k, v, c, m in lean]
                outcomes.extend(delete_outcomes(batch, errors))
                continue
            entries = [delete_entry(ref) for ref in batch]
            response = await self._call(
                "delete_objects", Bucket=bucket, Delete={"Objects": entries, "Quiet": True}
            )
            outcomes.extend(delete_outcomes(batch, response.get("Errors", [])))
        return outcomes

    # -- ACLs, archive, object lock, replication, encryption -----------------------------

    async def put_acl(self, bucket: str, key: str, acl: AclSpec, version_id: str | None = None) -> None:
        # Explicit grants go as x-amz-grant-* headers, which replace the whole ACL exactly as an
        # AccessControlPolicy body does; moto (5.2) silently ignores the body's grants.
        await self._call("put_object_acl", **object_params(bucket, key, version_id), **acl_params(acl))

    async def restore(
        self,
        bucket: str,
        key: str,
        days: int | None,
        tier: str | None,
        version_id: str | None = None,
    ) -> None:
        request: dict[str, Any] = {}
        if days is not None:
            request["Days"] = days
        if tier is not None:
            request["GlacierJobParameters"] = {"Tier": tier}
        await self._call("restore_object", **object_params(bucket, key, version_id), RestoreRequest=request)

    async def put_legal_hold(self, bucket: str, key: str, status: str, version_id: str | None = None) -> None:
        target = object_params(bucket, key, version_id)
        try:
            await self._call("put_object_legal_hold", **target, LegalHold={"Status": status})
        except StorageError as exc:
            raise await self._missing_or(exc, bucket, key, version_id) from exc

    async def put_retention(
        self,
        bucket: str,
        key: str,
        retention: Retention,
        version_id: str | None = None,
        *,
        bypass_governance: bool = False,
    ) -> None:
        body: dict[str, Any] = {}
        if retention.mode is not None:
            body["Mode"] = retention.mode
        if retention.retain_until is not None:
            body["RetainUntilDate"] = retention.retain_until
        extra = {"BypassGovernanceRetention": True} if bypass_governance else {}
        try:
            await self._call(
                "put_object_retention", **object_params(bucket, key, version_id), Retention=body, **extra
            )
        except StorageError as exc:
            raise await self._missing_or(exc, bucket, key, version_id) from exc

    async def _missing_or(
        self, exc: StorageError, bucket: str, key: str, version_id: str | None
    ) -> StorageError:
        """moto answers 500 to lock calls on a missing key; a HEAD tells the real reason."""
        if exc.http_status != 500:
            return exc
        try:
            await self.head(bucket, key, version_id)
        except StorageError as head_exc:
            if head_exc.http_status == 404:
                return head_exc
        return exc

    async def replication_rules(self, bucket: str) -> list[ReplicationRule]:
        try:
            response = await self._call("get_bucket_replication", Bucket=bucket)
        except StorageError as exc:
            if exc.code == "ReplicationConfigurationNotFoundError":
                return []
            raise
        return parse_replication_rules(response.get("ReplicationConfiguration", {}))

    async def update_encryption(
        self, bucket: str, key: str, sse: KmsEncryption, version_id: str | None = None
    ) -> None:
        extra = {
            "ServerSideEncryption": "aws:kms",
            "SSEKMSKeyId": sse.key_arn,
            "BucketKeyEnabled": sse.bucket_key_enabled,
        }
        # A copy onto itself keeping metadata and tags (the CopyOptions defaults) re-encrypts.
        await self.copy(bucket, key, bucket, key, src_version_id=version_id, options=CopyOptions(extra=extra))


def _check_pinned(key: str, if_match: str | None, etag: str | None) -> None:
    """PreconditionFailed when the rest of a read comes from another object than its start.
    S3 refuses the If-Match itself; a server that ignores it (rclone serve s3 does) still says
    which object it sent, and splicing two objects' bytes must never pass."""
    if if_match and etag and etag.strip('"') != if_match.strip('"'):
        raise StorageError(
            "PreconditionFailed", f"{key}: the object changed while it was read (ETag {etag})", 412
        )


async def _or_none(call: Awaitable[_T]) -> _T | None:
    """A lean read, or None when it failed. A read's errors (a HEAD 404 without a body to
    tell NoSuchKey from NoSuchBucket, a range past the end, a body over http1's limit) are
    left to botocore's path, whose handling of each the callers rely on."""
    try:
        return await call
    except StorageError as exc:
        if exc.code == TLS_ERROR:  # botocore would be refused too: say why, don't retry there
            raise
        return None


async def _lean_delete_objects(
    lean: LeanS3, route: Route, *, pairs: Sequence[tuple[str, str | None]]
) -> list[tuple[str, str | None, str, str]]:
    return await lean.delete_objects(route, pairs)


def _read_range(path: Path, first: int, last: int) -> bytes:
    with path.open("rb") as f:
        f.seek(first)
        return f.read(last - first + 1)


async def _all_or_first_error(coros: Sequence[Awaitable[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Run all; on the first failure cancel the rest and raise that failure itself."""

    async def run(coro: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        return await coro

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(run(coro)) for coro in coros]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]
