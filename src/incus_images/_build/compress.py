"""Streaming compression of a tarball: none, gzip or xz, the same bytes for the same input.

gzip is written here around a raw deflate stream (``zlib.compressobj``) so that its header
holds no time and no file name (RFC 1952 allows MTIME 0: "no time stamp is available"); the
gzip module's own writer puts the current time in it. xz (``lzma``) records neither.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable, Iterator

from .._errors import InvalidInputError
from .._transfer.threads import CHUNK_SIZE

#: The compressions a build can use, and the file name extension each gives a tarball.
EXTENSIONS = {"none": ".tar", "gzip": ".tar.gz", "xz": ".tar.xz"}

#: gzip's own default level: tar -czf's speed and size.
GZIP_LEVEL = 6

#: ID1 ID2, CM deflate, FLG none, MTIME 0, XFL 0, OS 3 (Unix).
GZIP_HEADER = b"\x1f\x8b\x08\x00" + b"\0\0\0\0" + b"\x00\x03"


def compression_name(value: object) -> str:
    """A compression a build can use; refused otherwise."""
    if not isinstance(value, str) or value not in EXTENSIONS:
        raise InvalidInputError(
            f"compression must be one of {', '.join(repr(name) for name in EXTENSIONS)}, "
            f"got {value!r:.100}"
        )
    return value


def compressed(pieces: Iterable[bytes], compression: str) -> Iterator[bytes]:
    """The pieces, compressed as asked, in chunks of about CHUNK_SIZE: a tree of many small
    files is neither compressed nor sent as millions of tiny pieces."""
    chunks = _gathered(pieces)
    if compression == "none":
        return chunks
    return _gathered(_gzip(chunks) if compression == "gzip" else _xz(chunks))


def _gzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    deflate = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    crc = 0
    size = 0
    yield GZIP_HEADER
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
        size += len(chunk)
        yield deflate.compress(chunk)
    yield deflate.flush()
    yield struct.pack("<II", crc & 0xFFFFFFFF, size & 0xFFFFFFFF)


def _xz(chunks: Iterable[bytes]) -> Iterator[bytes]:
    import lzma

    compressor = lzma.LZMACompressor(lzma.FORMAT_XZ, lzma.CHECK_CRC64)
    for chunk in chunks:
        yield compressor.compress(chunk)
    yield compressor.flush()


def _gathered(pieces: Iterable[bytes]) -> Iterator[bytes]:
    pending: list[bytes] = []
    size = 0
    for piece in pieces:
        if not piece:
            continue
        if not pending and len(piece) >= CHUNK_SIZE:
            yield piece  # a file's chunk goes as it is: no copy
            continue
        pending.append(piece)
        size += len(piece)
        if size >= CHUNK_SIZE:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)
