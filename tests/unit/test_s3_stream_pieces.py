"""How S3Store.iter_bytes hands on a body streamed on the lean path: a server that ignored the
range has its first bytes skipped, and no piece is longer than the chunk size asked for."""

from __future__ import annotations

from collections.abc import AsyncIterator

from s3batch.storage.s3.store import _cut


async def stream(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece


async def cut(pieces: tuple[bytes, ...], skip: int, most: int) -> list[bytes]:
    return [piece async for piece in _cut(stream(*pieces), skip, most)]


async def test_pieces_within_the_size_pass_unchanged() -> None:
    assert await cut((b"abc", b"de"), 0, 3) == [b"abc", b"de"]


async def test_a_long_piece_is_cut_to_the_size() -> None:
    assert await cut((b"abcdefg",), 0, 3) == [b"abc", b"def", b"g"]


async def test_the_bytes_already_read_are_skipped_across_pieces() -> None:
    # A whole object answered to "bytes=4-": the first four bytes were read before.
    assert await cut((b"ab", b"cdef", b"gh"), 4, 10) == [b"ef", b"gh"]
    assert await cut((b"abcd", b"efghijk"), 4, 3) == [b"efg", b"hij", b"k"]
    assert await cut((b"abcd",), 4, 3) == []
