"""The sources of an upload's bytes, opened and checked before anything is sent, then read
chunk by chunk: bytes, a path, a binary file object, or an iterable of bytes chunks (an async
iterable too, in the async flavour). Nothing reads a whole source into memory.

What the caller gives is checked before anything is sent (InvalidInputError, naming the
argument: a path that cannot be opened is one). A source that fails while it is read (an
OSError from a file's ``read()``, a path's disk, an iterable), or that changes while it is
sent, raises ImageDataError, with the OSError as its ``__cause__``.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
from collections.abc import AsyncIterable, Generator, Iterable, Iterator
from typing import Any, Literal

import attrs

from .._errors import ImageDataError, InvalidInputError
from .._validate import (
    text,
)
from .threads import CHUNK_SIZE

SourceKind = Literal["bytes", "path", "file", "iterable", "async_iterable", "build"]


JSON_WHITESPACE = b" \t\r\n"


def looks_like_json(start: bytes) -> bool:
    """Whether incusd would take an upload starting with these bytes for a JSON request.

    The server decodes every upload body as JSON before treating it as an image; a body that
    decodes as a JSON object (after any amount of whitespace) becomes an image *request*, and
    some such requests crash incusd. No image tarball starts with ``{`` or ``null``. start must
    reach past the leading whitespace (up to four more bytes), or the answer may be wrong.
    """
    return start.lstrip(JSON_WHITESPACE).startswith((b"{", b"null"))


@attrs.frozen
class Source:
    """One stream of image bytes."""

    kind: SourceKind
    value: Any
    #: Its length in bytes, when known before reading it.
    size: int | None
    #: A file name for it (a path's base name), when it has one.
    name: str | None = None
    #: Where a file object's bytes start (it is read from there, and can be read again).
    offset: int | None = None
    #: os.stat() identity of a path or regular file, to tell that it did not change.
    identity: tuple[int, ...] | None = None

    @property
    def rereadable(self) -> bool:
        """Whether the same bytes can be read a second time (immutable or checked unchanged)."""
        return self.kind == "bytes" or self.identity is not None


def _answers_true(method: Any) -> bool:
    try:
        return bool(method())
    except (OSError, ValueError):
        return False


def file_identity(status: os.stat_result) -> tuple[int, ...]:
    # Any write changes the size or the modification and change times.
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns)


def _file_size(file: Any) -> int | None:
    """Bytes left in a file object, when it can tell (a regular file, BytesIO, ...)."""
    try:
        position = int(file.tell())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    try:
        status = os.fstat(file.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        status = None
    if status is not None:
        return max(0, status.st_size - position) if stat.S_ISREG(status.st_mode) else None
    # No descriptor (BytesIO and the like): ask the object itself, then put it back.
    try:
        if not file.seekable():
            return None
        end = int(file.seek(0, io.SEEK_END))
        file.seek(position)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return max(0, end - position)


def _regular_file(file: Any) -> tuple[int | None, tuple[int, ...] | None]:
    """(offset, identity) of a seekable regular file object; (None, None) for anything else."""
    try:
        if not file.seekable():
            return None, None
        status = os.fstat(file.fileno())
        offset = int(file.tell())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None, None
    if not stat.S_ISREG(status.st_mode):
        return None, None
    return offset, file_identity(status)


def open_source(data: object, argument: str, *, accept_async: bool) -> Source:
    """Classify what the caller gave as image bytes; refuse what cannot be one."""
    from .._build.build import ImageBuild

    if isinstance(data, ImageBuild):
        if argument != "image_data":
            raise InvalidInputError(
                f"{argument} cannot be an ImageBuild: give the build as image_data"
            )
        # Generated as it is read: its length is not known before.
        return Source("build", data, None, data.file_name)
    if isinstance(data, bytes | bytearray | memoryview):
        value = bytes(data)
        if not value:
            raise InvalidInputError(f"{argument} is empty")
        return Source("bytes", value, len(value))
    if isinstance(data, str | os.PathLike):
        path = os.fspath(data)
        if not isinstance(path, str) or not path:
            raise InvalidInputError(f"{argument}: {data!r} is not a usable path")
        text(path, argument)
        if not os.path.isfile(path):
            raise InvalidInputError(f"{argument}: {path!r} is not a file")
        try:
            # Opened once here, so that a file that cannot be read fails before any request.
            with open(path, "rb") as file:
                status = os.fstat(file.fileno())
        except OSError as exc:
            raise InvalidInputError(f"{argument}: cannot read {path!r}: {exc.strerror}") from exc
        if status.st_size == 0:
            raise InvalidInputError(f"{argument}: {path!r} is empty")
        return Source(
            "path", path, status.st_size, os.path.basename(path), identity=file_identity(status)
        )
    if isinstance(data, io.TextIOBase):
        raise InvalidInputError(f"{argument} is a text file; open it in binary mode ('rb')")
    if callable(getattr(data, "read", None)):
        if getattr(data, "closed", False):
            raise InvalidInputError(f"{argument} is a closed file")
        readable = getattr(data, "readable", None)
        if callable(readable) and not _answers_true(readable):
            raise InvalidInputError(f"{argument} is a file not opened for reading ('rb')")
        name = getattr(data, "name", None)
        size = _file_size(data)
        if size == 0:
            raise InvalidInputError(f"{argument} is empty (the file has no bytes left to read)")
        offset, identity = _regular_file(data)
        return Source(
            "file",
            data,
            size,
            os.path.basename(name) if isinstance(name, str) and name else None,
            offset=offset,
            identity=identity,
        )
    if isinstance(data, AsyncIterable):
        if not accept_async:
            raise InvalidInputError(
                f"{argument} is an async iterable; the blocking Client needs bytes, a path, a "
                "file or a plain iterable (or use AsyncClient)"
            )
        return Source("async_iterable", data, None)
    if isinstance(data, Iterable) and not isinstance(data, str | dict):
        if isinstance(data, list | tuple):
            # A list can be checked before anything is sent; an iterator only as it goes.
            for chunk in data:
                if not isinstance(chunk, bytes | bytearray | memoryview):
                    raise InvalidInputError(
                        f"{argument} holds a {type(chunk).__name__}, not bytes chunks"
                    )
            if not any(len(chunk) for chunk in data):
                raise InvalidInputError(f"{argument} holds no bytes: there is no image in it")
        return Source("iterable", data, None)
    raise InvalidInputError(
        f"{argument} must be bytes, a path, a binary file object or an iterable of bytes, "
        f"got {type(data).__name__}"
    )


JSON_MESSAGE = (
    "image_data looks like JSON, not an image tarball (incusd would read it as an image "
    "request instead of an image)"
)


@contextlib.contextmanager
def reading(source: Source, argument: str) -> Iterator[None]:
    """Raise an OSError from reading the source (its file, its disk, an iterable's own
    reads) as the ImageDataError that names it."""
    try:
        yield
    except OSError as exc:
        if source.kind == "path":
            what = f"{argument} {source.value!r}"
        elif source.name:
            what = f"{argument} ({source.name!r})"
        else:
            what = argument
        raise ImageDataError(f"Could not read {what}: {exc.strerror or exc}") from exc


def _head(source: Source) -> bytes | None:
    """The first bytes past any whitespace, read without consuming the source, when possible."""
    if source.kind == "bytes":
        data: bytes = source.value
        return data.lstrip(JSON_WHITESPACE)[:4]
    if source.kind == "path":
        with reading(source, "image_data"), open(source.value, "rb") as file:
            return _head_of(file)
    if source.kind == "file":
        file = source.value
        try:
            position = file.tell()
        except (AttributeError, OSError, ValueError):
            return None
        if not getattr(file, "seekable", lambda: False)():
            return None
        with reading(source, "image_data"):
            try:
                return _head_of(file)
            finally:
                file.seek(position)
    return None


def _head_of(file: Any) -> bytes:
    head = b""
    while chunk := file.read(4096):
        head = (head + chunk_bytes(chunk, "image_data")).lstrip(JSON_WHITESPACE)
        if len(head) >= 4:
            break
    return head[:4]


def refuse_json_before_sending(source: Source) -> None:
    """Refuse, before any request, a source incusd would read as a JSON request."""
    head = _head(source)
    if head is not None and looks_like_json(head):
        raise InvalidInputError(JSON_MESSAGE)


def chunk_bytes(chunk: object, argument: str) -> bytes:
    """A chunk from a caller's iterable or file, checked."""
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, bytearray | memoryview):
        return bytes(chunk)
    raise InvalidInputError(f"{argument} produced {type(chunk).__name__}, not bytes")


def read_chunks(source: Source, argument: str) -> Generator[bytes, None, None]:
    """The chunks of a source that is not an async iterable, read as they are needed."""
    if source.kind == "bytes":
        data: bytes = source.value
        for start in range(0, len(data), CHUNK_SIZE):
            yield data[start : start + CHUNK_SIZE]
    elif source.kind == "path":
        with reading(source, argument), open(source.value, "rb") as file:
            while chunk := file.read(CHUNK_SIZE):
                yield chunk
    elif source.kind == "file":
        with reading(source, argument):
            while chunk := source.value.read(CHUNK_SIZE):
                yield chunk_bytes(chunk, argument)
    elif source.kind == "iterable":
        with reading(source, argument):
            for chunk in source.value:
                yield chunk_bytes(chunk, argument)
    elif source.kind == "build":
        # The build names the file in its own errors (ImageDataError).
        yield from source.value.stream()
    else:  # pragma: no cover - async iterables are read by the async flavour itself
        raise AssertionError(f"read_chunks cannot read a {source.kind} source")
