"""Downloading an image's files from a catalogue: the paths checked, the bytes counted and
verified, the files written as an export's are (``_transfer.files``).

Every path the catalogue gives is checked before anything is requested: it stays below the
server's URL (no scheme, host, absolute path, ``..`` or ``.`` segment, query or fragment)
and is percent-encoded segment by segment, so no dot segment can appear after decoding. A
file whose bytes run past the catalogue's size is stopped at once; one that ends short, or
whose SHA-256 is not the catalogue's, fails; and the whole (metadata then root, for a split
image) must hash to the fingerprint before anything is renamed into place.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote, urlsplit

from .._errors import ChecksumMismatchError, TransferError
from .._transfer.files import ExportFiles, ExportTarget
from .._transfer.reports import Progress, ProgressCallback
from .._transfer.threads import Hasher
from .catalogue import CatalogueError, ImageFile

__all__ = ["ImageDownload", "checked_path", "file_request_path"]

#: Longer than any path a real catalogue gives (about 80 characters).
MAX_PATH_CHARS = 4096
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
#: What a path segment may hold unencoded (RFC 3986 pchar, without "%").
_SEGMENT_SAFE = "!$&'()*+,;=:@-._~"

#: Builds the error for a failure from what went wrong (and the class to raise).
Failure = Callable[[str, type[TransferError]], TransferError]


def file_request_path(base_path: str, file: ImageFile) -> str:
    """The URL path of an image's file, its path and hash checked; else CatalogueError."""
    if file.sha256 and not _HEX64.fullmatch(file.sha256):
        raise CatalogueError(
            f"the {file.role} file's sha256 {file.sha256!r:.100} is not 64 hex digits"
        )
    return checked_path(base_path, file.path, f"the {file.role} file")


def checked_path(base_path: str, path: str, what: str) -> str:
    """The URL path of a file the catalogue names: the server's own path (``base_path``, ""
    or ``/dir``) and the catalogue's path, checked; else CatalogueError saying why."""
    shown = f"{path!r:.200}"
    if not path:
        raise CatalogueError(f"{what} has no path")
    if len(path) > MAX_PATH_CHARS or not path.isprintable():
        raise CatalogueError(f"{what}'s path {shown} is not a plain path")
    if path.startswith("/") or "\\" in path or "?" in path or "#" in path:
        raise CatalogueError(f"{what}'s path {shown} must be relative to the server's URL")
    if urlsplit(path).scheme:
        raise CatalogueError(
            f"{what}'s path {shown} names another server; a catalogue's files are below its own URL"
        )
    segments = path.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise CatalogueError(
            f"{what}'s path {shown} leaves the server's tree, or has an empty segment"
        )
    return base_path + "/" + "/".join(quote(segment, safe=_SEGMENT_SAFE) for segment in segments)


class ImageDownload:
    """The files of one image, downloaded one after the other into an export's layout.

    Call ``start()``; for each file, ``open(file)``, ``feed()`` its bytes (when
    ``backlogged``, call ``wait_for_room()``), ``close_file()``; then ``verify()`` and
    ``place()``; ``discard()`` in any case.
    """

    def __init__(
        self,
        target: ExportTarget,
        fingerprint: str,
        files: tuple[ImageFile, ...],
        *,
        progress: ProgressCallback | None,
        failure: Failure,
    ) -> None:
        self._fingerprint = fingerprint
        self._failure = failure
        self._whole = Hasher()
        self._files = ExportFiles(
            target, fingerprint, lambda detail: failure(detail, TransferError)
        )
        self.progress = Progress(progress, sum(file.size for file in files))
        self._file: ImageFile | None = None
        self._file_hasher: Hasher | None = None
        self._file_received = 0

    @property
    def received(self) -> int:
        return self.progress.done

    def start(self) -> None:
        self.progress.start()

    def open(self, file: ImageFile) -> None:
        self._files.end_part()
        self._files.open(file.path.rsplit("/", 1)[-1], file.role)
        self._file = file
        self._file_received = 0
        # A unified image's own hash is the fingerprint: checked once, as the whole.
        checked_alone = file.sha256 and file.sha256.lower() != self._fingerprint
        self._file_hasher = Hasher() if checked_alone else None

    def feed(self, data: bytes | memoryview) -> None:
        file = self._file
        assert file is not None, "open() comes first"
        if self._file_received + len(data) > file.size:
            raise self._failure(
                f"the server sent more than the catalogue's {file.size} bytes of {file.path!r}",
                TransferError,
            )
        self._file_received += len(data)
        self._whole.update(data)
        if self._file_hasher is not None:
            self._file_hasher.update(data)
        self._files.write(data)
        self.progress.advance(len(data))

    def close_file(self) -> None:
        """Check the file is whole and its SHA-256 the catalogue's."""
        file = self._file
        assert file is not None, "open() comes first"
        if self._file_received != file.size:
            raise self._failure(
                f"{file.path!r} ended after {self._file_received} of the catalogue's "
                f"{file.size} bytes",
                TransferError,
            )
        if self._file_hasher is not None:
            digest = self._file_hasher.hexdigest()
            self._file_hasher = None
            if digest != file.sha256.lower():
                raise self._failure(
                    f"{file.path!r} hashes to {digest}, not to the catalogue's {file.sha256}",
                    ChecksumMismatchError,
                )
        self._file = None

    @property
    def backlogged(self) -> bool:
        hashing = self._file_hasher is not None and self._file_hasher.backlogged
        return hashing or self._whole.backlogged or self._files.backlogged

    def wait_for_room(self) -> None:
        if self._file_hasher is not None:
            self._file_hasher.wait_for_room()
        self._whole.wait_for_room()
        self._files.wait_for_room()

    def verify(self) -> None:
        """Check the image hashes to its fingerprint; every byte is on disk afterwards."""
        digest = self._whole.hexdigest()
        if digest != self._fingerprint:
            raise self._failure(
                f"the {self.received} bytes received hash to {digest}, not to the image's "
                "fingerprint",
                ChecksumMismatchError,
            )
        self._files.finish_writing()
        # The last report comes before anything is renamed: a callback that raises must
        # leave nothing behind.
        self.progress.finish()

    def place(self) -> list[Path]:
        """Move every file into place (after verify())."""
        return self._files.commit()

    def discard(self) -> None:
        """Remove every temporary file (idempotent; nothing to do after place())."""
        self._whole.close()
        if self._file_hasher is not None:
            self._file_hasher.close()
        self._files.discard()
