"""Planning and metering an upload: what the body is made of, and what went through it.

A source is bytes, a path, a binary file object, or an iterable of bytes chunks (an async
iterable too, in the async flavour). Nothing reads a whole source into memory: the body is
produced chunk by chunk by the flavour's client, which passes each chunk through
:class:`UploadMeter` (hash, byte count, progress, checks) on its way out.

A unified image goes as the raw body; a split image as ``multipart/form-data`` with the parts
``metadata`` and ``rootfs`` (``rootfs.img`` for a virtual machine), in that order. When every
size is known the body carries a Content-Length; only then does incusd read it at full speed.
"""

from __future__ import annotations

import io
import os
import secrets
import stat
from collections.abc import AsyncIterable, Iterable, Iterator
from typing import Any, Literal

import attrs

from ._errors import InvalidInputError, TransferError
from ._multipart import closing_delimiter, part_header
from ._protocol import JSON_WHITESPACE, filename_header, looks_like_json
from ._transfer import CHUNK_SIZE, Hasher, Progress, ProgressCallback

__all__ = ["Source", "UploadMeter", "UploadPlan", "open_source", "read_chunks"]

SourceKind = Literal["bytes", "path", "file", "iterable", "async_iterable"]
IMAGE_TYPES = ("container", "virtual-machine")


@attrs.frozen
class Source:
    """One stream of image bytes."""

    kind: SourceKind
    value: Any
    #: Its length in bytes, when known before reading it.
    size: int | None
    #: A file name for it (a path's base name), when it has one.
    name: str | None = None


def _file_size(file: Any) -> int | None:
    """Bytes left in a file object, when it is a regular file we can ask."""
    try:
        fd = file.fileno()
        position = file.tell()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        return None
    return max(0, status.st_size - int(position))


def open_source(data: object, argument: str, *, accept_async: bool) -> Source:
    """Classify what the caller gave as image bytes; refuse what cannot be one."""
    if isinstance(data, bytes | bytearray | memoryview):
        value = bytes(data)
        if not value:
            raise InvalidInputError(f"{argument} is empty")
        return Source("bytes", value, len(value))
    if isinstance(data, str | os.PathLike):
        path = os.fspath(data)
        if not isinstance(path, str) or not path:
            raise InvalidInputError(f"{argument}: {data!r} is not a usable path")
        if not os.path.isfile(path):
            raise InvalidInputError(f"{argument}: {path!r} is not a file")
        size = os.path.getsize(path)
        if size == 0:
            raise InvalidInputError(f"{argument}: {path!r} is empty")
        return Source("path", path, size, os.path.basename(path))
    if isinstance(data, io.TextIOBase):
        raise InvalidInputError(f"{argument} is a text file; open it in binary mode ('rb')")
    if callable(getattr(data, "read", None)):
        name = getattr(data, "name", None)
        return Source(
            "file",
            data,
            _file_size(data),
            os.path.basename(name) if isinstance(name, str) and name else None,
        )
    if isinstance(data, AsyncIterable):
        if not accept_async:
            raise InvalidInputError(
                f"{argument} is an async iterable; the blocking Client needs bytes, a path, a "
                "file or a plain iterable (or use AsyncClient)"
            )
        return Source("async_iterable", data, None)
    if isinstance(data, Iterable) and not isinstance(data, str | dict):
        return Source("iterable", data, None)
    raise InvalidInputError(
        f"{argument} must be bytes, a path, a binary file object or an iterable of bytes, "
        f"got {type(data).__name__}"
    )


_JSON_MESSAGE = (
    "image_data looks like JSON, not an image tarball (incusd would read it as an image "
    "request instead of an image)"
)


def _head(source: Source) -> bytes | None:
    """The first bytes past any whitespace, read without consuming the source, when possible."""
    if source.kind == "bytes":
        data: bytes = source.value
        return data.lstrip(JSON_WHITESPACE)[:4]
    if source.kind == "path":
        with open(source.value, "rb") as file:
            return _head_of(file)
    if source.kind == "file":
        file = source.value
        try:
            position = file.tell()
        except (AttributeError, OSError, ValueError):
            return None
        if not getattr(file, "seekable", lambda: False)():
            return None
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
        raise InvalidInputError(_JSON_MESSAGE)


def chunk_bytes(chunk: object, argument: str) -> bytes:
    """A chunk from a caller's iterable or file, checked."""
    if isinstance(chunk, bytes):
        return chunk
    if isinstance(chunk, bytearray | memoryview):
        return bytes(chunk)
    raise InvalidInputError(f"{argument} produced {type(chunk).__name__}, not bytes")


def read_chunks(source: Source, argument: str) -> Iterator[bytes]:
    """The chunks of a source that is not an async iterable, read as they are needed."""
    if source.kind == "bytes":
        data: bytes = source.value
        for start in range(0, len(data), CHUNK_SIZE):
            yield data[start : start + CHUNK_SIZE]
    elif source.kind == "path":
        with open(source.value, "rb") as file:
            while chunk := file.read(CHUNK_SIZE):
                yield chunk
    elif source.kind == "file":
        while chunk := source.value.read(CHUNK_SIZE):
            yield chunk_bytes(chunk, argument)
    elif source.kind == "iterable":
        for chunk in source.value:
            yield chunk_bytes(chunk, argument)
    else:  # pragma: no cover - async iterables are read by the async flavour itself
        raise AssertionError(f"read_chunks cannot read a {source.kind} source")


@attrs.frozen
class Segment:
    """A piece of the body: fixed framing bytes, or a source (named for error messages)."""

    framing: bytes = b""
    source: Source | None = None
    argument: str = ""


class UploadPlan:
    """The headers and the body layout of one upload."""

    def __init__(
        self,
        image: Source,
        rootfs: Source | None,
        *,
        image_type: str | None,
        filename: str | None,
    ) -> None:
        self.sources = [image] if rootfs is None else [image, rootfs]
        self.headers: dict[str, str | bytes] = {}
        self.segments: list[Segment] = []
        if rootfs is None:
            if image_type is not None:
                raise InvalidInputError(
                    "type= applies to split images (metadata plus rootfs=); a unified "
                    "image's type comes from its tarball"
                )
            self.headers["Content-Type"] = "application/octet-stream"
            name = filename if filename is not None else image.name
            if name is not None:
                self.headers["X-Incus-filename"] = filename_header(name)
            self.segments.append(Segment(source=image, argument="image_data"))
        else:
            image_type = image_type or "container"
            if image_type not in IMAGE_TYPES:
                raise InvalidInputError(
                    f"type must be 'container' or 'virtual-machine', got {image_type!r}"
                )
            # Incus takes the image's file name from the rootfs part (and ignores the header).
            rootfs_name = filename if filename is not None else rootfs.name or "rootfs"
            filename_header(rootfs_name)  # the same checks as for a header value
            boundary = secrets.token_hex(16)
            self.headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
            rootfs_part = "rootfs.img" if image_type == "virtual-machine" else "rootfs"
            self.segments += [
                Segment(
                    framing=part_header(boundary, "metadata", image.name or "metadata", first=True)
                ),
                Segment(source=image, argument="image_data"),
                Segment(framing=part_header(boundary, rootfs_part, rootfs_name, first=False)),
                Segment(source=rootfs, argument="rootfs"),
                Segment(framing=closing_delimiter(boundary)),
            ]
        sizes = [source.size for source in self.sources]
        #: Image bytes to send (framing not counted), when every size is known.
        self.data_size: int | None = None if None in sizes else sum(sizes)  # type: ignore[arg-type]
        if self.data_size is not None:
            framing = sum(len(segment.framing) for segment in self.segments)
            self.headers["Content-Length"] = str(self.data_size + framing)
        self.multipart = rootfs is not None
        #: How messages name the image before its fingerprint is known.
        self.description = " + ".join(
            f"'{source.name}'"
            if source.name
            else f"of {source.size} bytes"
            if source.size is not None
            else f"from an {source.kind.replace('_', ' ')}"
            for source in self.sources
        )


class UploadMeter:
    """Everything each chunk of image data passes through on its way to the server.

    It hashes (on a worker thread), counts, reports progress, checks that sources deliver the
    size they announced, and refuses a raw body that incusd would read as a JSON request
    (holding back the first bytes until that is decided; see ``looks_like_json``).
    """

    def __init__(self, plan: UploadPlan, progress: ProgressCallback | None) -> None:
        self._hasher = Hasher()
        self.progress = Progress(progress, plan.data_size)
        self._part_bytes = 0
        self._head: bytes | None = None if plan.multipart else b""
        self.progress.start()

    def start(self) -> None:
        self._part_bytes = 0

    def take(self, chunk: bytes) -> bytes:
        """Meter one chunk of a source; return the bytes to send now (maybe fewer, or more)."""
        if not chunk:
            return b""
        self._hasher.update(chunk)
        self._part_bytes += len(chunk)
        self.progress.advance(len(chunk))
        if self._head is None:
            return chunk
        self._head += chunk
        if len(self._head.lstrip(JSON_WHITESPACE)) < 4:
            return b""
        return self._release_head()

    def _release_head(self) -> bytes:
        head, self._head = self._head or b"", None
        if looks_like_json(head.lstrip(JSON_WHITESPACE)[:4]):
            raise InvalidInputError(f"{_JSON_MESSAGE}; the upload was stopped, nothing stored")
        return head

    def end(self, segment: Segment) -> bytes:
        """Close a source; return held-back bytes still to send."""
        source = segment.source
        assert source is not None
        if source.size is not None and self._part_bytes != source.size:
            raise TransferError(
                f"{segment.argument} delivered {self._part_bytes} bytes instead of the "
                f"{source.size} it had when the upload started (did the file change?)"
            )
        if self._part_bytes == 0:
            raise InvalidInputError(f"{segment.argument} is empty")
        return self._release_head() if self._head is not None else b""

    @property
    def backlogged(self) -> bool:
        return self._hasher.backlogged

    def wait_for_room(self) -> None:
        self._hasher.wait_for_room()

    def sha256(self) -> str:
        """The SHA-256 of all image data sent (metadata then rootfs, without framing)."""
        digest = self._hasher.hexdigest()
        self.progress.finish()
        return digest

    def close(self) -> None:
        self._hasher.close()
