"""A relay: the verified parts of one server's export, re-framed as another server's upload.

The export is read by an :class:`.export.ExportReader` (which counts, bounds and hashes it);
:class:`RelayFraming` turns its events into the upload body: a unified image goes as the raw
body, a split image as this client's own ``multipart/form-data`` framing (metadata part, then
``rootfs`` or ``rootfs.img``). Both carry a Content-Length, since the image's size and the
framing are known before the first byte: incusd reads such a body at full speed.

The last bytes received are held back until the reader has verified the whole export, so the
receiving server never gets a complete body that does not hash to the fingerprint; on top of
that, ``X-Incus-fingerprint`` makes it check the hash itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from .._errors import InvalidInputError, TransferError
from .._models import Image
from .._validate import filename_header
from .export import ExportEvent, ExportPart
from .multipart import closing_delimiter, part_header

__all__ = ["RelayFraming"]


def _header_safe(name: str, fallback: str) -> str:
    try:
        filename_header(name)
    except InvalidInputError:
        return fallback
    return name


class RelayFraming:
    """The upload body and headers that carry one export to another server."""

    def __init__(
        self, image: Image, *, split: bool, failure: Callable[[str], TransferError]
    ) -> None:
        self._split = split
        self._failure = failure
        self._held: bytes | memoryview = b""
        self._sent_parts = 0
        #: Upload headers (Content-Type, Content-Length, X-Incus-fingerprint, file name).
        self.headers: dict[str, str | bytes] = {"X-Incus-fingerprint": image.fingerprint}
        # The copy keeps the source's file name where Incus takes one (a split image's is the
        # rootfs part's file name); a name that cannot be sent as it is falls back.
        filename = _header_safe(image.filename, image.fingerprint)
        if split:
            boundary = secrets.token_hex(16)
            rootfs_field = "rootfs.img" if image.type == "virtual-machine" else "rootfs"
            self._framing = [
                part_header(boundary, "metadata", f"meta-{image.fingerprint}", first=True),
                part_header(boundary, rootfs_field, filename, first=False),
            ]
            self._closing = closing_delimiter(boundary)
            self._rootfs_field = rootfs_field
            self.headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
            framing = sum(map(len, self._framing)) + len(self._closing)
        else:
            self._framing, self._closing, self._rootfs_field = [], b"", ""
            self.headers["Content-Type"] = "application/octet-stream"
            if image.filename:
                # An empty name stays empty, as on the source.
                self.headers["X-Incus-filename"] = filename_header(filename)
            framing = 0
        self.headers["Content-Length"] = str(image.size + framing)

    def take(self, event: ExportEvent) -> list[bytes | memoryview]:
        """The upload bytes for one export event, to send now (the newest data is held)."""
        out: list[bytes | memoryview] = []
        if isinstance(event, ExportPart):
            if event.role == "rootfs" and event.field != self._rootfs_field:
                # The part name says container or VM; the copy must be what the image is.
                raise self._failure(
                    f"the export's rootfs part is {event.field!r}, but the image is a "
                    f"{self._rootfs_field!r} image"
                )
            if self._held:
                out.append(self._held)
                self._held = b""
            if self._split:
                out.append(self._framing[self._sent_parts])
                self._sent_parts += 1
            return out
        if self._held:
            out.append(self._held)
        self._held = event
        return out

    def end(self) -> bytes:
        """The bytes held back and the closing framing: send them only once the export was
        verified."""
        tail = bytes(self._held) + self._closing
        self._held = b""
        return tail
