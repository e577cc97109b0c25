"""Tar members as a stream of bytes chunks, in the PAX format, never a whole file in memory.

Headers come from :meth:`tarfile.TarInfo.tobuf` (the standard library's PAX writer: long
names and link targets, large ids, and names that are not UTF-8 go into an extended header,
``hdrcharset=BINARY`` with the bytes as they are; extended attributes as ``SCHILY.xattr.*``
records, read by GNU tar ``--xattrs``, which incusd unpacks with, and by Go's archive/tar).
The data is read by the member itself, chunk by chunk. ``tarfile.open(mode="w|")`` is not
used: it copies a whole file into its output before returning, so a stream of it could not
yield between chunks.

The pieces are small (a header) or large (a chunk of a file); ``compress.compressed`` gathers
them into chunks of about CHUNK_SIZE.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Iterator

from .tree import Member

BLOCK = tarfile.BLOCKSIZE


def header(info: tarfile.TarInfo) -> bytes:
    """A member's header blocks (an extended header first when needed)."""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def tar_chunks(members: Iterable[Member]) -> Iterator[bytes]:
    """The tarball of these members, piece by piece (headers, data chunks, padding), ending
    as tarfile and GNU tar end one: two zero blocks, then zeros to a whole 10 KiB record."""
    total = 0
    for member in members:
        try:
            for piece in _pieces(member):
                total += len(piece)
                yield piece
        finally:
            # A member whose data was not read (the consumer stopped) keeps no file open.
            member.close()
    end = 2 * BLOCK
    yield b"\0" * (end + -(total + end) % tarfile.RECORDSIZE)


def _pieces(member: Member) -> Iterator[bytes]:
    yield header(member.info)
    if member.has_data:
        yield from member.chunks()
        if padding := _padding(member.info.size):
            yield padding
