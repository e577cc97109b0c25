"""Sans-IO pieces of image transfers, shared by both flavours.

Exports: the server sends a unified image as one raw body, and a split image as a
``multipart/form-data`` body (metadata part, then rootfs part) without a Content-Length.
:class:`ExportReceiver` is fed the body's bytes as they arrive, writes each part to a temporary
file beside its target, hashes everything, and only renames the files into place once the
SHA-256 matches the fingerprint. Whatever goes wrong, nothing is left under a target name and
no temporary file survives.

File writes are plain blocking calls in both flavours: a local disk accepts writes faster
than the daemon sends, and a thread hop per chunk would cost more than it saves.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path

import attrs

from ._errors import ChecksumMismatchError, InvalidInputError, TransferError

__all__ = [
    "ExportReceiver",
    "MultipartParser",
    "content_disposition_filename",
    "safe_basename",
]

#: Bytes asked of the socket per read when streaming a body.
CHUNK_SIZE = 1024 * 1024

_MAX_PART_HEADERS = 16 * 1024


# --------------------------------------------------------------------------------------------
# Names.


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


def safe_basename(name: str | None, fallback: str) -> str:
    """Reduce a server-given file name to a plain base name that cannot leave its directory."""
    if name:
        base = re.split(r"[/\\]", name)[-1]
        base = re.sub(r"[\x00-\x1f\x7f]", "", base).strip()
        if base not in ("", ".", "..") and len(base.encode("utf-8", "surrogateescape")) <= 255:
            return base
    return fallback


def rootfs_path(target: Path) -> Path:
    """Where the rootfs of a split image goes when the metadata goes to target."""
    return target.with_name(target.name + ".root")


def check_export_target(target_path: str | os.PathLike[str]) -> Path:
    """Refuse a target that cannot be written before anything is requested."""
    try:
        target = Path(os.fspath(target_path))
    except TypeError:
        raise InvalidInputError(
            f"target_path must be a path, got {type(target_path).__name__}"
        ) from None
    if target.is_dir():
        return target
    # A split image also writes target + ".root"; both must be free for regular files.
    for path in (target, rootfs_path(target)):
        if path.exists() and not path.is_file():
            raise InvalidInputError(f"{str(path)!r} exists and is not a regular file")
    if not target.parent.is_dir():
        raise InvalidInputError(
            f"target_path {str(target)!r}: its directory {str(target.parent)!r} does not exist"
        )
    return target


# --------------------------------------------------------------------------------------------
# multipart/form-data, as a push parser.


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


# --------------------------------------------------------------------------------------------
# Writing files atomically.


class PendingFile:
    """A file written under a temporary name beside its target and renamed on commit."""

    def __init__(self, target: Path) -> None:
        self.target = target
        # Created with O_EXCL under a random name, with the process's umask like any new file.
        self.temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.partial")
        fd = os.open(self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        self._file = open(fd, "wb", buffering=0)  # noqa: SIM115 - closed in close()/discard()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view.nbytes:
            written = self._file.write(view)
            if written is None:  # pragma: no cover - only for non-blocking files
                continue
            view = view[written:]
            self.size += written

    def close(self) -> None:
        self._file.close()

    def commit(self) -> Path:
        self._file.close()
        os.replace(self.temporary, self.target)
        return self.target

    def discard(self) -> None:
        self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporary)


# --------------------------------------------------------------------------------------------
# Receiving an export.


class ExportReceiver:
    """Turn an export response body into verified files.

    One part (a unified image) goes to the target path, or into the target directory under the
    server's file name. Two parts (a split image) put the metadata at the target path and the
    rootfs at the target path + ``.root``, or both into the target directory under the server's
    file names. SHA-256 over all parts in order must equal the fingerprint.
    """

    def __init__(
        self,
        target: Path,
        fingerprint: str,
        *,
        content_type: str | None,
        content_disposition: str | None,
        verify: bool = True,
        failure_context: str = "Could not export the image",
        server: str | None = None,
    ) -> None:
        self._target = target
        self._fingerprint = fingerprint
        self._verify = verify
        self._failure_context = failure_context
        self._server = server
        self._hash = hashlib.sha256()
        self._files: list[PendingFile] = []
        self._current: PendingFile | None = None
        self.bytes_received = 0
        try:
            boundary = multipart_boundary(content_type)
        except MultipartError as exc:
            raise self._failure(str(exc)) from None
        self._parser = MultipartParser(boundary) if boundary is not None else None
        if self._parser is None:
            self._open(content_disposition_filename(content_disposition), part="unified")

    def _failure(self, detail: str, cls: type[TransferError] = TransferError) -> TransferError:
        return cls(
            f"{self._failure_context}: {detail}; nothing was written",
            server=self._server,
            fingerprint=self._fingerprint,
        )

    def _path_for(self, server_name: str | None, part: str) -> Path:
        if self._target.is_dir():
            fallback = {
                "metadata": f"meta-{self._fingerprint}",
                "rootfs": f"{self._fingerprint}.root",
            }.get(part, self._fingerprint)
            return self._target / safe_basename(server_name, fallback)
        if part == "rootfs":
            return rootfs_path(self._target)
        return self._target

    def _open(self, server_name: str | None, part: str) -> None:
        path = self._path_for(server_name, part)
        if any(pending.target == path for pending in self._files):
            raise self._failure(f"the export names two parts {path.name!r}")
        self._current = PendingFile(path)
        self._files.append(self._current)

    def _write(self, data: bytes | memoryview) -> None:
        if self._current is None:
            raise self._failure("the export sent data outside any part")
        self._hash.update(data)
        self._current.write(data)

    def feed(self, chunk: bytes) -> None:
        self.bytes_received += len(chunk)
        if self._parser is None:
            self._write(chunk)
            return
        try:
            events = self._parser.feed(chunk)
        except MultipartError as exc:
            raise self._failure(str(exc)) from None
        for event in events:
            if isinstance(event, PartData):
                self._write(event.data)
            elif isinstance(event, PartStarted):
                if len(self._files) >= 2:
                    raise self._failure("the export has more than two parts")
                self._open(event.filename, "metadata" if not self._files else "rootfs")
            else:
                assert self._current is not None
                self._current.close()
                self._current = None

    def finish(self) -> list[Path]:
        """Check the body is whole and its hash right, then move every file into place."""
        if self._parser is not None:
            try:
                self._parser.close()
            except MultipartError as exc:
                raise self._failure(str(exc)) from None
        if not self._files:
            raise self._failure("the export body held no image data")
        digest = self._hash.hexdigest()
        if self._verify and digest != self._fingerprint:
            raise self._failure(
                f"the {self.bytes_received} bytes received hash to {digest}, not to the "
                f"image's fingerprint",
                ChecksumMismatchError,
            )
        # Refuse before renaming anything, so that a split image is placed whole or not at all.
        for pending in self._files:
            if pending.target.exists() and not pending.target.is_file():
                raise self._failure(f"{str(pending.target)!r} exists and is not a regular file")
        written = []
        try:
            for pending in self._files:
                written.append(pending.commit())
        except OSError as exc:
            for path in written:
                path.unlink(missing_ok=True)
            raise self._failure(f"cannot move the file into place: {exc}") from exc
        self._files = []
        return written

    def discard(self) -> None:
        """Remove every temporary file (idempotent; nothing to do after finish())."""
        for pending in self._files:
            pending.discard()
        self._files = []
