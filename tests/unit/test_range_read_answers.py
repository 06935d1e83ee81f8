"""S3Store.read_range_into's checks of a ranged GetObject's answer, on the aiobotocore path
(a proxy, `lean_path = false`) and the lean path: only the bytes asked for, of the object
pinned by its ETag and size, may fill the buffer."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from s3batch.errors import StorageError
from s3batch.storage.s3.http1 import ConnectionPool
from s3batch.storage.s3.lean import Credentials, LeanS3, Route, Signer
from s3batch.storage.s3.ranged import RangeAnswer, RangeIgnored, RangeReader
from s3batch.storage.s3.store import SKIP
from s3batch.storage.s3.uploads import S3PartUploads

MIB = 1024**2
OBJ = os.urandom(3 * MIB)


class Body:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    async def read(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + n]
        self.pos += len(chunk)
        return chunk

    def close(self) -> None:
        pass


class Botocore(S3PartUploads):
    """The lean path skipped; GetObject answers `answer`."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer

    async def _lean_call(self, bucket: str, call: Callable[[LeanS3, Route], Awaitable[Any]]) -> Any:
        return SKIP

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        return self.answer


def boto_answer(status: int, body: bytes, content_range: str | None, etag: str = "e") -> dict[str, Any]:
    answer: dict[str, Any] = {
        "ETag": f'"{etag}"',
        "Body": Body(body),
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    if content_range is not None:
        answer["ContentRange"] = content_range
    return answer


@pytest.mark.parametrize(
    "answer",
    [
        boto_answer(200, OBJ, None),  # the Range ignored: the whole object
        boto_answer(206, OBJ[:MIB], f"bytes 0-{MIB - 1}/{len(OBJ)}"),  # another range
        boto_answer(206, OBJ[MIB : 2 * MIB], f"bytes {MIB}-{2 * MIB - 1}/{len(OBJ) + 1}"),  # another size
        boto_answer(206, OBJ[MIB : 2 * MIB], f"bytes {MIB}-{2 * MIB - 1}/{len(OBJ)}", etag="other"),
    ],
    ids=["whole", "other-range", "other-size", "other-etag"],
)
async def test_the_aiobotocore_path_refuses_any_other_bytes(answer: dict[str, Any]) -> None:
    buffer = bytearray(MIB)
    with pytest.raises(StorageError) as caught:
        await Botocore(answer).read_range_into("b", "k", None, MIB, buffer, size=len(OBJ), etag="e")
    assert caught.value.code == "PreconditionFailed"


async def test_the_aiobotocore_path_takes_the_range_asked_for() -> None:
    answer = boto_answer(206, OBJ[MIB : 2 * MIB], f"bytes {MIB}-{2 * MIB - 1}/{len(OBJ)}")
    buffer = bytearray(MIB)
    await Botocore(answer).read_range_into("b", "k", None, MIB, buffer, size=len(OBJ), etag="e")
    assert buffer == OBJ[MIB : 2 * MIB]


class ScriptedReader:
    """Stands in for RangeReader: fills the buffer with `body` and answers `status`/`headers`."""

    def __init__(
        self, status: int, headers: dict[str, str], body: bytes = b"", error: Exception | None = None
    ):
        self.status, self.headers, self.body, self.error = status, headers, body, error

    async def read_into(self, request: bytes, buffer: bytearray) -> RangeAnswer:
        if self.error is not None:
            raise self.error
        if self.status < 300:
            buffer[:] = self.body
            return RangeAnswer(self.status, self.headers, b"")
        return RangeAnswer(self.status, self.headers, self.body)


async def lean_read(
    reader: ScriptedReader, start: int = MIB, length: int = MIB, size: int = len(OBJ)
) -> None:
    async def credentials() -> Credentials:
        return Credentials("AKID", "secret")

    pool = ConnectionPool("127.0.0.1", 9, tls=False, max_connections=1, connect_timeout_s=1, read_timeout_s=1)
    route = Route(pool, "127.0.0.1:9", "/b/", cast(RangeReader, reader))
    await LeanS3(Signer("us-east-1"), credentials).get_range_into(
        route, "k", None, start, bytearray(length), size=size, if_match="e"
    )


@pytest.mark.parametrize(
    ("reader", "code"),
    [
        (
            ScriptedReader(206, {"etag": '"e"', "content-range": f"bytes 0-{MIB - 1}/{len(OBJ)}"}, OBJ[:MIB]),
            "PreconditionFailed",
        ),
        (
            ScriptedReader(
                206, {"etag": '"x"', "content-range": f"bytes {MIB}-{2 * MIB - 1}/{len(OBJ)}"}, OBJ[:MIB]
            ),
            "PreconditionFailed",
        ),
        (ScriptedReader(200, {"etag": '"e"'}, OBJ[:MIB]), "PreconditionFailed"),
        (
            ScriptedReader(412, {}, b"<Error><Code>PreconditionFailed</Code><Message>m</Message></Error>"),
            "PreconditionFailed",
        ),
        (ScriptedReader(200, {}, error=RangeIgnored("whole object", sent=True)), "NotImplemented"),
    ],
    ids=["other-range", "other-etag", "200-for-a-range", "412", "range-ignored"],
)
async def test_the_lean_path_refuses_any_other_bytes(reader: ScriptedReader, code: str) -> None:
    with pytest.raises(StorageError) as caught:
        await lean_read(reader)
    assert caught.value.code == code
    assert not caught.value.retryable


async def test_the_lean_path_takes_rclones_200_with_the_content_range_asked_for() -> None:
    headers = {"etag": '"e"', "content-range": f"bytes {MIB}-{2 * MIB - 1}/{len(OBJ)}"}
    await lean_read(ScriptedReader(200, headers, OBJ[MIB : 2 * MIB]))
