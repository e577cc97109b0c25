"""multipart/form-data, both ways: the split-image upload body and the split-image export.

Incus exchanges split images as two parts, the metadata tarball and then the rootfs
(``rootfs``, or ``rootfs.img`` for a virtual machine), framed as Go's multipart writer frames
them. The parser is a push parser: it is fed bytes as they arrive and never holds a part.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

__all__ = [
    "MultipartError",
    "MultipartParser",
    "PartData",
    "PartEnded",
    "PartStarted",
    "content_disposition_filename",
    "multipart_boundary",
    "part_header",
]

_MAX_PART_HEADERS = 16 * 1024


def content_disposition_filename(value: str | None) -> str | None:
    """The filename of a Content-Disposition value, tolerant of Incus's ``inline;filename=x``."""
    if not value:
        return None
    match = re.search(r"""(?:^|;)\s*filename\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))""", value, re.I)
    if match is None:
        return None
    if match.group(1) is not None:
        name = re.sub(r"\\(.)", r"\1", match.group(1))
    else:
        name = match.group(2).strip()
    return name or None


def _quoted(value: str) -> str:
    # As Go's mime/multipart quotes a form field: backslash-escape backslashes and quotes.
    return value.replace("\\", "\\\\").replace('"', '\\"')


def part_header(boundary: str, name: str, filename: str, *, first: bool) -> bytes:
    """The framing before a part's data (a part's data is followed by the next header, or
    by :func:`closing_delimiter`)."""
    lead = "" if first else "\r\n"
    return (
        f"{lead}--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{_quoted(name)}"; '
        f'filename="{_quoted(filename)}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def closing_delimiter(boundary: str) -> bytes:
    return f"\r\n--{boundary}--\r\n".encode("ascii")


@attrs.frozen
class PartStarted:
    headers: Mapping[str, str]

    @property
    def name(self) -> str | None:
        disposition = self.headers.get("content-disposition", "")
        match = re.search(r"""(?:^|;)\s*name\s*=\s*(?:"([^"]*)"|([^;]*))""", disposition, re.I)
        if match is None:
            return None
        return match.group(1) if match.group(1) is not None else match.group(2).strip()

    @property
    def filename(self) -> str | None:
        return content_disposition_filename(self.headers.get("content-disposition"))


@attrs.frozen
class PartData:
    data: bytes | memoryview


@attrs.frozen
class PartEnded:
    pass


Event = PartStarted | PartData | PartEnded


class MultipartError(ValueError):
    """The body is not the multipart document it claims to be."""


def multipart_boundary(content_type: str | None) -> bytes | None:
    """The boundary of a ``multipart/form-data`` Content-Type, or None for anything else."""
    if not content_type or not content_type.lower().startswith("multipart/"):
        return None
    match = re.search(r"""boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))""", content_type, re.I)
    if match is None:
        raise MultipartError(f"multipart Content-Type without a boundary: {content_type!r}")
    return (match.group(1) or match.group(2)).encode("latin-1")


class MultipartParser:
    """Split a multipart body into parts as bytes arrive, without holding any part in memory.

    ``feed()`` returns events: PartStarted (with the part's headers), PartData (views into the
    bytes fed, not copies), PartEnded. Call ``close()`` at the end of the body.
    """

    _PREAMBLE, _AFTER_DELIMITER, _HEADERS, _BODY, _DONE = range(5)

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"\r\n--" + boundary
        # The first delimiter has no CRLF before it; pretend there was one.
        self._buffer = b"\r\n"
        # Body bytes held back because they might begin a delimiter.
        self._tail = b""
        self._state = self._PREAMBLE

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        while True:
            if self._state == self._BODY:
                data = self._body(data, events)
                if self._state == self._BODY:
                    return events
            else:
                if data:
                    self._buffer += data
                    data = b""
                if not self._step(events):
                    return events
                if self._state == self._BODY:
                    data, self._buffer = self._buffer, b""

    def _body(self, data: bytes, events: list[Event]) -> bytes:
        """Consume part data; return the bytes after the part's closing delimiter, if reached."""
        delimiter = self._delimiter
        keep = len(delimiter) - 1
        if self._tail:
            if len(data) < keep:
                data, self._tail = self._tail + data, b""
            else:
                # A delimiter that starts in the tail ends within its first `keep` new bytes.
                held = len(self._tail)
                probe = self._tail + data[:keep]
                found = probe.find(delimiter)
                if found >= 0:
                    self._end_part(probe[:found], events)
                    return data[found + len(delimiter) - held :]
                events.append(PartData(self._tail))
                self._tail = b""
        found = data.find(delimiter)
        if found >= 0:
            self._end_part(memoryview(data)[:found], events)
            return data[found + len(delimiter) :]
        cut = max(0, len(data) - keep)
        if cut:
            events.append(PartData(memoryview(data)[:cut]))
        self._tail = data[cut:]
        return b""

    def _end_part(self, last: bytes | memoryview, events: list[Event]) -> None:
        if len(last):
            events.append(PartData(last))
        events.append(PartEnded())
        self._tail = b""
        self._state = self._AFTER_DELIMITER

    def _step(self, events: list[Event]) -> bool:
        """Advance through buffered bytes outside part bodies; False when more are needed."""
        buffer = self._buffer
        if self._state == self._PREAMBLE:
            found = buffer.find(self._delimiter)
            if found < 0:
                self._buffer = buffer[-(len(self._delimiter) - 1) :]
                return False
            self._buffer = buffer[found + len(self._delimiter) :]
            self._state = self._AFTER_DELIMITER
            return True
        if self._state == self._AFTER_DELIMITER:
            if buffer.startswith(b"--"):
                self._state = self._DONE
                self._buffer = b""
                return False
            end = buffer.find(b"\r\n")
            if end < 0:
                if len(buffer) > _MAX_PART_HEADERS:
                    raise MultipartError("malformed multipart body: junk after a boundary")
                return False
            if buffer[:end].strip(b" \t"):
                raise MultipartError("malformed multipart body: junk after a boundary")
            self._buffer = buffer[end + 2 :]
            self._state = self._HEADERS
            return True
        if self._state == self._HEADERS:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_PART_HEADERS:
                    raise MultipartError("malformed multipart body: part headers too long")
                return False
            headers = {}
            for line in buffer[:end].decode("utf-8", errors="replace").split("\r\n"):
                key, sep, value = line.partition(":")
                if not sep:
                    raise MultipartError(f"malformed multipart part header: {line[:100]!r}")
                headers[key.strip().lower()] = value.strip()
            events.append(PartStarted(headers))
            self._buffer = buffer[end + 4 :]
            self._state = self._BODY
            return True
        # After the closing delimiter: the epilogue is ignored.
        self._buffer = b""
        return False

    def close(self) -> None:
        if self._state != self._DONE:
            raise MultipartError("the multipart body ended before its closing boundary")
