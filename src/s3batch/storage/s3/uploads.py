"""S3Store's Capability.PART_UPLOADS: checksummed PutObject, the low-level multipart calls
(CreateMultipartUpload, UploadPart, ListParts, CompleteMultipartUpload) and HeadObject with
checksum mode on; and GetObject with checksum mode on (capabilities.CheckedGetStore), which
answers what that HEAD does along with the body. A mixin of S3Store (store.py), which supplies
the request paths.

Checksums go in `x-amz-checksum-<algorithm>` headers (botocore's `Checksum<ALGORITHM>`
parameters): S3 refuses a body that does not match with BadDigest. Servers that ignore the
header (moto 5.2, rclone serve s3) still answer with the MD5 ETag of what they stored, which
the caller compares (docs/transfer.md, "Checksums").

Checksummed puts and parts up to LEAN_PUT_MAX_BYTES take the lean request path like `put_bytes`
(it also copies a body once where aiohttp, under botocore, copies it twice); listings and
completions go through aiobotocore.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from s3batch.domain.checksums import ChecksumAlgorithm, ChecksumType
from s3batch.domain.uploads import (
    Body,
    CheckedHead,
    ChecksumValue,
    ObjectAttributes,
    UploadedPart,
    WrittenObject,
    parse_checksum,
)
from s3batch.errors import StorageError
from s3batch.storage.capabilities import CheckedGet
from s3batch.storage.s3.errors import TLS_ERROR, translating
from s3batch.storage.s3.http1 import BodyStream, HttpError, Response
from s3batch.storage.s3.lean import LeanS3, Route, connection_error
from s3batch.storage.s3.shapes import (
    LEAN_PUT_MAX_BYTES,
    head_object_info,
    lean_put_headers,
    object_params,
    parsed_head,
    tagging_header,
    unquoted_etag,
)

#: x-amz-checksum-mode: HeadObject and GetObject return the stored checksum only when asked.
CHECKSUM_MODE_HEADER = "x-amz-checksum-mode"
CHECKSUM_MODE = "ENABLED"
#: A checked GET's body up to this size is read whole with its headers (bytes): the connection
#: goes back to the pool at once, so the reader may wait for memory or make other requests
#: before reading it without holding a connection. A larger body streams.
CHECKED_GET_BUFFERED_MAX_BYTES = 256 * 1024
#: Bytes asked of aiobotocore's stream per read of a checked GET's larger body.
CHECKED_GET_READ_BYTES = 1 << 20


def checksum_param(algorithm: ChecksumAlgorithm) -> str:
    """botocore's parameter (and response field) for a checksum: ChecksumCRC32C, ..."""
    return f"Checksum{algorithm.value}"


def checksum_header(algorithm: ChecksumAlgorithm) -> str:
    return f"x-amz-checksum-{algorithm.value.lower()}"


#: Each algorithm with its botocore field and its header, in ChecksumAlgorithm's order (an answer
#: names one; the first found wins), made once: every checked GET and PUT looks them up.
_CHECKSUM_FIELDS = tuple((algorithm, checksum_param(algorithm)) for algorithm in ChecksumAlgorithm)
_CHECKSUM_HEADERS = tuple((algorithm, checksum_header(algorithm)) for algorithm in ChecksumAlgorithm)


def attribute_params(attributes: ObjectAttributes) -> dict[str, Any]:
    """PutObject / CreateMultipartUpload parameters for an object's attributes."""
    params: dict[str, Any] = dict(attributes.headers)
    if attributes.content_type is not None:
        params["ContentType"] = attributes.content_type
    if attributes.metadata:
        params["Metadata"] = dict(attributes.metadata)
    if attributes.tags:
        params["Tagging"] = tagging_header(attributes.tags)
    return params


def response_checksum(response: Mapping[str, Any]) -> ChecksumValue | None:
    """The checksum in a parsed answer (PutObject, CompleteMultipartUpload, HeadObject)."""
    for algorithm, field in _CHECKSUM_FIELDS:
        value = response.get(field)
        if value:
            return parse_checksum(algorithm, str(value), response.get("ChecksumType"))
    return None


def header_checksum(headers: Mapping[str, str]) -> ChecksumValue | None:
    """The checksum in an answer's raw headers (lower-case names): `x-amz-checksum-<algorithm>`
    and `x-amz-checksum-type`. Cheaper than botocore's parser for a PutObject answer."""
    for algorithm, header in _CHECKSUM_HEADERS:
        value = headers.get(header)
        if value:
            return parse_checksum(algorithm, value, headers.get("x-amz-checksum-type"))
    return None


def _unconverted(body: Body) -> Body:
    """The body as botocore leaves it alone. botocore wraps `bytes` in a BytesIO, whose size
    aiohttp then reads through getbuffer(), which copies the whole body (a part in flight would
    cost twice its size); a bytearray is sent as it is. Callers that stream large bodies
    (operations/_transfer_stream.PartReader) hand bytearrays in."""
    return body


def _part_checksum(entry: Mapping[str, Any]) -> str | None:
    found = response_checksum(entry)
    return None if found is None else found.value


def _lean_put_headers(
    size: int, attributes: ObjectAttributes, checksum: ChecksumValue | None
) -> dict[str, str] | None:
    """Headers of a checksummed PutObject on the lean path; None for what stays on botocore
    (system headers such as Expires, which botocore formats, and what `lean_put_headers` refuses)."""
    if attributes.headers:
        return None
    headers = lean_put_headers(size, attributes.content_type, attributes.metadata, None)
    if headers is None:
        return None
    if attributes.tags:
        headers["x-amz-tagging"] = tagging_header(attributes.tags)
    if checksum is not None:
        headers[checksum_header(checksum.algorithm)] = checksum.value
    return headers


class S3PartUploads:
    """The PART_UPLOADS methods, and GetObject with checksum mode (CheckedGetStore); S3Store
    inherits them."""

    if TYPE_CHECKING:

        async def _call(self, operation: str, **params: Any) -> dict[str, Any]: ...

        async def _lean_call(self, bucket: str, call: Callable[[LeanS3, Route], Awaitable[Any]]) -> Any: ...

        async def _head_not_found(self, bucket: str, version_id: str | None) -> StorageError: ...

        def iter_bytes(
            self,
            bucket: str,
            key: str,
            version_id: str | None = None,
            start: int = 0,
            chunk_size: int = 1 << 20,
        ) -> AsyncIterator[bytes]: ...

    async def put_with_checksum(
        self,
        bucket: str,
        key: str,
        body: Body,
        *,
        attributes: ObjectAttributes,
        checksum: ChecksumValue | None,
    ) -> WrittenObject:
        headers = _lean_put_headers(len(body), attributes, checksum)
        if headers is not None:
            checksummed = checksum is not None
            lean = await self._lean_call(
                bucket,
                lambda lean, route: lean.request(
                    route, "PUT", key, headers=headers, body=body, checksummed=checksummed
                ),
            )
            if isinstance(lean, Response):
                return WrittenObject(
                    unquoted_etag(lean.headers.get("etag", "")),
                    lean.headers.get("x-amz-version-id"),
                    header_checksum(lean.headers),
                )
        params: dict[str, Any] = {
            "Bucket": bucket, "Key": key, "Body": _unconverted(body), **attribute_params(attributes),
        }  # fmt: skip
        if checksum is not None:
            params[checksum_param(checksum.algorithm)] = checksum.value
        response = await self._call("put_object", **params)
        return WrittenObject(
            unquoted_etag(response.get("ETag", "")), response.get("VersionId"), response_checksum(response)
        )

    async def create_multipart_upload(
        self,
        bucket: str,
        key: str,
        *,
        attributes: ObjectAttributes,
        algorithm: ChecksumAlgorithm | None,
        checksum_type: ChecksumType,
    ) -> str:
        params: dict[str, Any] = {"Bucket": bucket, "Key": key, **attribute_params(attributes)}
        if algorithm is not None:
            params["ChecksumAlgorithm"] = algorithm.value
            if checksum_type is ChecksumType.FULL_OBJECT:
                # COMPOSITE is S3's default; saying only the exception keeps servers that do
                # not know the header out of the way.
                params["ChecksumType"] = checksum_type.value
        response = await self._call("create_multipart_upload", **params)
        return str(response["UploadId"])

    async def upload_part(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        number: int,
        body: Body,
        *,
        checksum: ChecksumValue | None,
    ) -> UploadedPart:
        if len(body) <= LEAN_PUT_MAX_BYTES:
            headers = {} if checksum is None else {checksum_header(checksum.algorithm): checksum.value}
            query = [("partNumber", str(number)), ("uploadId", upload_id)]
            checksummed = checksum is not None
            lean = await self._lean_call(
                bucket,
                lambda lean, route: lean.request(
                    route, "PUT", key, query, headers, body, checksummed=checksummed
                ),
            )
            if isinstance(lean, Response):
                etag = unquoted_etag(lean.headers.get("etag", ""))
                found = header_checksum(lean.headers)
                return UploadedPart(number, len(body), etag, None if found is None else found.value)
        params: dict[str, Any] = {
            "Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": number,
            "Body": _unconverted(body),
        }  # fmt: skip
        if checksum is not None:
            params[checksum_param(checksum.algorithm)] = checksum.value
        response = await self._call("upload_part", **params)
        return UploadedPart(
            number, len(body), unquoted_etag(response.get("ETag", "")), _part_checksum(response)
        )

    async def list_parts(self, bucket: str, key: str, upload_id: str) -> list[UploadedPart]:
        parts: list[UploadedPart] = []
        marker = 0
        while True:  # bounded: each page moves the marker past its parts (10,000 at most)
            response = await self._call(
                "list_parts", Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
            )
            page = [
                UploadedPart(
                    int(p["PartNumber"]), int(p["Size"]), unquoted_etag(p.get("ETag", "")), _part_checksum(p)
                )
                for p in response.get("Parts", [])
            ]
            parts.extend(page)
            next_marker = int(response.get("NextPartNumberMarker") or 0)
            if not response.get("IsTruncated") or not page or next_marker <= marker:
                return sorted({p.number: p for p in parts}.values(), key=lambda p: p.number)
            marker = next_marker

    async def complete_multipart_upload(
        self,
        bucket: str,
        key: str,
        upload_id: str,
        parts: Sequence[UploadedPart],
        *,
        checksum: ChecksumValue | None,
    ) -> WrittenObject:
        listed = []
        for part in parts:
            entry: dict[str, Any] = {"PartNumber": part.number, "ETag": f'"{part.etag}"'}
            if part.checksum is not None and checksum is not None:
                entry[checksum_param(checksum.algorithm)] = part.checksum
            listed.append(entry)
        params: dict[str, Any] = {
            "Bucket": bucket, "Key": key, "UploadId": upload_id, "MultipartUpload": {"Parts": listed},
        }  # fmt: skip
        if checksum is not None and checksum.type is ChecksumType.FULL_OBJECT:
            params[checksum_param(checksum.algorithm)] = checksum.value
            params["ChecksumType"] = ChecksumType.FULL_OBJECT.value
        response = await self._call("complete_multipart_upload", **params)
        return WrittenObject(
            unquoted_etag(response.get("ETag", "")), response.get("VersionId"), response_checksum(response)
        )

    async def head_with_checksum(
        self, bucket: str, key: str, version_id: str | None = None, *, etag: bool = True
    ) -> CheckedHead:
        # `etag` is ignored: HeadObject carries the ETag.
        query = [("versionId", version_id)] if version_id is not None else []
        try:
            lean = await self._lean_call(
                bucket,
                lambda lean, route: lean.request(
                    route, "HEAD", key, query, headers={CHECKSUM_MODE_HEADER: CHECKSUM_MODE}
                ),
            )
        except StorageError as exc:
            if exc.code == TLS_ERROR:
                raise
            lean = None  # botocore's path tells NoSuchKey from NoSuchBucket
        if isinstance(lean, Response):
            return _checked_head(bucket, key, parsed_head(lean.headers))
        try:
            response = await self._call(
                "head_object", **object_params(bucket, key, version_id), ChecksumMode=CHECKSUM_MODE
            )
        except StorageError as exc:
            if exc.http_status == 404:
                raise await self._head_not_found(bucket, version_id) from exc
            raise
        return _checked_head(bucket, key, response)

    async def get_with_checksum(self, bucket: str, key: str, version_id: str | None = None) -> CheckedGet:
        query = [("versionId", version_id)] if version_id is not None else []
        lean = await self._lean_call(
            bucket,
            lambda lean, route: lean.request(
                route, "GET", key, query, headers={CHECKSUM_MODE_HEADER: CHECKSUM_MODE},
                stream_over=CHECKED_GET_BUFFERED_MAX_BYTES,
            ),
        )  # fmt: skip
        if isinstance(lean, Response):
            stream = lean.stream
            try:
                chunked = "content-length" not in lean.headers
                head = None if chunked else _checked_head(bucket, key, parsed_head(lean.headers))
            except BaseException:  # headers it cannot read: the connection must not stay held
                if stream is not None:
                    stream.close()
                raise
            if head is None:
                if stream is not None:
                    stream.close()
                return await self._get_after_head(bucket, key, version_id)
            if stream is None:
                return CheckedGet(head, _once(lean.body), buffered=True)
            return CheckedGet(head, _lean_chunks(stream), buffered=stream.ended, release=stream.close)
        params = object_params(bucket, key, version_id)
        response = await self._call("get_object", **params, ChecksumMode=CHECKSUM_MODE)
        body = response["Body"]
        try:
            head = None if response.get("ContentLength") is None else _checked_head(bucket, key, response)
        except BaseException:
            body.close()
            raise
        if head is None:
            body.close()
            return await self._get_after_head(bucket, key, version_id)
        if head.size <= CHECKED_GET_BUFFERED_MAX_BYTES:
            try:
                with translating():
                    data: bytes = await body.read()
            finally:
                body.close()
            return CheckedGet(head, _once(data), buffered=True)
        return CheckedGet(head, _botocore_chunks(body), buffered=False, release=body.close)

    async def read_range_into(
        self,
        bucket: str,
        key: str,
        version_id: str | None,
        start: int,
        buffer: bytearray,
        *,
        size: int,
        etag: str | None,
    ) -> None:
        """capabilities.RangeReadStore: on the lean route's RangeReader (straight into `buffer`),
        else one ranged GetObject through aiobotocore, its chunks copied in."""
        lean = await self._lean_call(
            bucket,
            lambda lean, route: lean.get_range_into(
                route, key, version_id, start, buffer, size=size, if_match=etag
            ),
        )
        if lean is True:
            return
        end = start + len(buffer) - 1
        params = object_params(bucket, key, version_id)
        params["Range"] = f"bytes={start}-{end}"
        if etag:
            params["IfMatch"] = etag
        response = await self._call("get_object", **params)
        body = response["Body"]
        try:
            answered = unquoted_etag(response.get("ETag", ""))
            if etag and answered and answered != etag.strip('"'):
                raise StorageError(
                    "PreconditionFailed",
                    f"{key}: the object changed while it was read (ETag {answered})",
                    412,
                )
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            content_range = response.get("ContentRange")
            whole = status == 200 and content_range is None and start == 0 and len(buffer) == size
            if not whole and content_range != f"bytes {start}-{end}/{size}":
                raise StorageError(
                    "PreconditionFailed",
                    f"{key}: asked for bytes {start}-{end} of {size}, got Content-Range {content_range!r}",
                    412,
                )
            view, filled = memoryview(buffer), 0
            with translating():
                while chunk := await body.read(CHECKED_GET_READ_BYTES):
                    if filled + len(chunk) > len(view):
                        filled = -1
                        break
                    view[filled : filled + len(chunk)] = chunk
                    filled += len(chunk)
            if filled != len(view):
                raise StorageError(
                    "InternalError", f"{key}: the answer to bytes {start}-{end} was not that long", 500, True
                )
        finally:
            body.close()

    async def _get_after_head(self, bucket: str, key: str, version_id: str | None) -> CheckedGet:
        """An answer that did not say the body's length (a chunked GET) cannot tell the size:
        a HEAD does, and the body is read again."""
        head = await self.head_with_checksum(bucket, key, version_id)
        return CheckedGet(head, self.iter_bytes(bucket, key, version_id), buffered=False)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    if body:
        yield body


async def _lean_chunks(stream: BodyStream) -> AsyncIterator[bytes]:
    try:
        while piece := await stream.read():
            yield piece
    except HttpError as exc:
        raise connection_error(exc) from exc
    finally:
        stream.close()


async def _botocore_chunks(body: Any) -> AsyncIterator[bytes]:
    try:
        with translating():
            while chunk := await body.read(CHECKED_GET_READ_BYTES):
                yield chunk
    finally:
        body.close()  # before its end: aiohttp drops the connection rather than reuse it


def _checked_head(bucket: str, key: str, response: Mapping[str, Any]) -> CheckedHead:
    tag_count = response.get("TagCount")
    return CheckedHead(
        head_object_info(bucket, key, response),
        response_checksum(response),
        None if tag_count is None else int(tag_count),
    )
