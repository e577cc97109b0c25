"""Reading an export: the body's parts, counted, bounded and verified against the fingerprint.

The server sends a unified image as one raw body, and a split image as a
``multipart/form-data`` body (the ``metadata`` part, then ``rootfs`` or ``rootfs.img``) without
a Content-Length. :class:`ExportReader` is fed the body's bytes as they arrive and hands back
the parts' starts and data; it hashes everything (on a worker thread), stops a body that runs
past the image's size, and checks the SHA-256 at the end. What the parts become is the caller's
business: files (:class:`ExportReceiver`, with :class:`.files.ExportFiles`) or the body of an
upload to another server (:mod:`.relay`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

import attrs

from .._errors import ChecksumMismatchError, LeftBehind, TransferError, note_left_behind
from .files import ExportFiles, ExportTarget
from .multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartStarted,
    content_disposition_filename,
    multipart_boundary,
)
from .reports import Progress, ProgressCallback
from .threads import Hasher

__all__ = ["ExportPart", "ExportReader", "ExportReceiver"]

#: Builds the error for a failure from what went wrong (and the class to raise).
FailureFactory = Callable[[str, type[TransferError]], TransferError]

Role = Literal["unified", "metadata", "rootfs"]
#: The multipart field names of a split export, in order, as incusd writes them.
METADATA_FIELD = "metadata"
ROOTFS_FIELDS = ("rootfs", "rootfs.img")


@attrs.frozen
class ExportPart:
    """The start of one part of an export."""

    role: Role
    #: The multipart field name (``metadata``, ``rootfs`` or ``rootfs.img``); "" when unified.
    field: str = ""
    #: The file name the server gave, unchecked: reduce it (``safe_basename``) before use.
    filename: str | None = None


ExportEvent = ExportPart | bytes | memoryview


class ExportReader:
    """Turn an export body into parts whose bytes are counted, bounded and verified.

    ``feed()`` returns events in order: an :class:`ExportPart` at the start of each part, then
    its data (bytes or views of the bytes fed). When ``backlogged`` is true, call
    ``wait_for_room()`` (it blocks until the hash catches up). ``finish()`` checks that the body
    was whole and hashes to the fingerprint; ``close()`` stops the hash in any case.

    ``total`` is the image's size: a body that passes it is stopped at once, and one that ends
    short of it fails. Some images cannot be verified: Incus marks OCI images
    (``unverifiable``), whose fingerprint is not the hash of their export; they are refused
    unless ``allow_unverified``.
    """

    def __init__(
        self,
        fingerprint: str,
        *,
        content_type: str | None,
        content_disposition: str | None,
        failure: FailureFactory,
        unverifiable: bool = False,
        allow_unverified: bool = False,
        total: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self._fingerprint = fingerprint
        self._failure = failure
        if unverifiable and not allow_unverified:
            raise self._fail(
                "the server says it is an OCI image, whose bytes cannot be checked against "
                "its fingerprint (pass allow_unverified=True to accept it unchecked)"
            )
        self._verify = not unverifiable
        self._total = total
        self._hasher = Hasher()
        #: Image bytes received so far (multipart framing not counted).
        self.progress = Progress(progress, total)
        #: The parts started so far.
        self.parts: list[ExportPart] = []
        try:
            boundary = multipart_boundary(content_type)
        except MultipartError as exc:
            raise self._fail(str(exc)) from None
        self._parser = MultipartParser(boundary) if boundary is not None else None
        self._unified_name = content_disposition_filename(content_disposition)

    def _fail(self, detail: str, cls: type[TransferError] = TransferError) -> TransferError:
        return self._failure(detail, cls)

    def start(self) -> None:
        """Report the start (a progress callback may raise: call it where failures are handled)."""
        self.progress.start()

    @property
    def received(self) -> int:
        return self.progress.done

    @property
    def multipart(self) -> bool:
        return self._parser is not None

    def _data(self, data: bytes | memoryview, events: list[ExportEvent]) -> None:
        if not self.parts:
            raise self._fail("the export sent data outside any part")
        if self._total is not None and self.progress.done + len(data) > self._total:
            raise self._fail(f"the server sent more than the image's {self._total} bytes")
        self._hasher.update(data)
        self.progress.advance(len(data))
        events.append(data)

    def _part(self, started: PartStarted, events: list[ExportEvent]) -> None:
        field = started.name or ""
        if not self.parts:
            if field != METADATA_FIELD:
                raise self._fail(f"the first part of a split export is {field!r}, not 'metadata'")
            part = ExportPart("metadata", field, started.filename)
        elif len(self.parts) == 1:
            if field not in ROOTFS_FIELDS:
                raise self._fail(f"the second part of a split export is {field!r}, not a rootfs")
            part = ExportPart("rootfs", field, started.filename)
        else:
            raise self._fail("the export has more than two parts")
        self.parts.append(part)
        events.append(part)

    def feed(self, chunk: bytes) -> list[ExportEvent]:
        events: list[ExportEvent] = []
        if self._parser is None:
            if not self.parts:
                part = ExportPart("unified", "", self._unified_name)
                self.parts.append(part)
                events.append(part)
            self._data(chunk, events)
            return events
        try:
            parsed = self._parser.feed(chunk)
        except MultipartError as exc:
            raise self._fail(str(exc)) from None
        for event in parsed:
            if isinstance(event, PartData):
                self._data(event.data, events)
            elif isinstance(event, PartStarted):
                self._part(event, events)
        return events

    @property
    def backlogged(self) -> bool:
        return self._hasher.backlogged

    def wait_for_room(self) -> None:
        self._hasher.wait_for_room()

    def finish(self) -> None:
        """Check that the body is whole and hashes to the fingerprint."""
        if self._parser is not None:
            try:
                self._parser.close()
            except MultipartError as exc:
                raise self._fail(str(exc)) from None
            if len(self.parts) != 2:
                raise self._fail(f"the split export has {len(self.parts)} part(s), not two")
        if not self.parts:
            raise self._fail("the export body held no image data")
        if self._total is not None and self.received != self._total:
            raise self._fail(
                f"the export ended after {self.received} of the image's {self._total} bytes"
            )
        digest = self._hasher.hexdigest()
        if self._verify and digest != self._fingerprint:
            raise self._fail(
                f"the {self.received} bytes received hash to {digest}, not to the "
                "image's fingerprint",
                ChecksumMismatchError,
            )

    def close(self) -> None:
        """Stop hashing (idempotent)."""
        self._hasher.close()


class ExportReceiver:
    """An export turned into verified files: an :class:`ExportReader` feeding
    :class:`.files.ExportFiles`.

    Feed it with ``feed()``; when ``backlogged`` is true, call ``wait_for_room()``. Then
    ``finish()`` (verify, then move the files into place), and ``discard()`` in any case.
    """

    def __init__(
        self,
        target: ExportTarget,
        fingerprint: str,
        *,
        content_type: str | None,
        content_disposition: str | None,
        unverifiable: bool = False,
        allow_unverified: bool = False,
        total: int | None = None,
        progress: ProgressCallback | None = None,
        failure_context: str = "Could not export the image",
        server: str | None = None,
    ) -> None:
        def failure(detail: str, cls: type[TransferError] = TransferError) -> TransferError:
            error = cls(f"{failure_context}: {detail}", server=server, fingerprint=fingerprint)
            return note_left_behind(error, LeftBehind.NOTHING, "nothing was written")

        self._reader = ExportReader(
            fingerprint,
            content_type=content_type,
            content_disposition=content_disposition,
            failure=failure,
            unverifiable=unverifiable,
            allow_unverified=allow_unverified,
            total=total,
            progress=progress,
        )
        self._files = ExportFiles(target, fingerprint, failure)

    def start(self) -> None:
        self._reader.start()

    @property
    def received(self) -> int:
        return self._reader.received

    def feed(self, chunk: bytes) -> None:
        for event in self._reader.feed(chunk):
            if isinstance(event, ExportPart):
                self._files.end_part()
                self._files.open(event.filename, event.role)
            else:
                self._files.write(event)

    @property
    def backlogged(self) -> bool:
        return self._reader.backlogged or self._files.backlogged

    def wait_for_room(self) -> None:
        self._reader.wait_for_room()
        self._files.wait_for_room()

    def finish(self) -> list[Path]:
        """Check the body is whole and its hash right, then move every file into place."""
        self.verify()
        return self.place()

    def verify(self) -> None:
        """Check the body is whole and its hash right; every byte is on disk afterwards."""
        self._reader.finish()
        self._files.finish_writing()
        # The last report comes before anything is renamed: a callback that raises (Ctrl-C in a
        # progress bar) must leave nothing behind.
        self._reader.progress.finish()

    def place(self) -> list[Path]:
        """Move every file into place (after verify())."""
        return self._files.commit()

    def discard(self) -> None:
        """Remove every temporary file (idempotent; nothing to do after finish())."""
        self._reader.close()
        self._files.discard()
