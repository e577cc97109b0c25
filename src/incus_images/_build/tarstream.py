"""Tar members as a stream of bytes chunks, in the PAX format, never a whole file in memory.

Headers come from :meth:`tarfile.TarInfo.tobuf` (the standard library's PAX writer: long
names and link targets, large ids, and names that are not UTF-8 go into an extended header,
``hdrcharset=BINARY`` with the bytes as they are; extended attributes as ``SCHILY.xattr.*``
records, read by GNU tar ``--xattrs``, which incusd unpacks with, and by Go's archive/tar).
The data is read by the member itself, chunk by chunk. ``tarfile.open(mode="w|")`` is not
used: it copies a whole file into its output before returning, so a stream of it could not
yield between chunks.

Small pieces (headers, small files) are gathered into chunks of about CHUNK_SIZE: a tree of
many small files is not sent as millions of tiny writes.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Iterator

from .._transfer.threads import CHUNK_SIZE
from .tree import Member

BLOCK = tarfile.BLOCKSIZE


def header(info: tarfile.TarInfo) -> bytes:
    """A member's header blocks (an extended header first when needed)."""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def tar_chunks(members: Iterable[Member]) -> Iterator[bytes]:
    """The tarball of these members, ending as tarfile and GNU tar end one (two zero blocks,
    then zeros to a whole record of 10 KiB)."""
    pending: list[bytes] = []
    pending_size = 0
    total = 0
    for member in members:
        try:
            for piece in _pieces(member):
                total += len(piece)
                if len(piece) >= CHUNK_SIZE and not pending:
                    yield piece
                    continue
                pending.append(piece)
                pending_size += len(piece)
                if pending_size >= CHUNK_SIZE:
                    yield b"".join(pending)
                    pending, pending_size = [], 0
        finally:
            # A member whose data was not read (the consumer stopped) keeps no file open.
            member.close()
    end = 2 * BLOCK
    end += -(total + end) % tarfile.RECORDSIZE
    pending.append(b"\0" * end)
    yield b"".join(pending)


def _pieces(member: Member) -> Iterator[bytes]:
    yield header(member.info)
    if member.has_data:
        yield from member.chunks()
        if padding := _padding(member.info.size):
            yield padding
