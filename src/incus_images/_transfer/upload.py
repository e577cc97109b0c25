"""Planning and metering an upload: what the body is made of, and what went through it.

A source is bytes, a path, a binary file object, or an iterable of bytes chunks (an async
iterable too, in the async flavour). Nothing reads a whole source into memory: the body is
produced chunk by chunk by the flavour's client, which passes each chunk through
:class:`UploadMeter` (hash, byte count, progress, checks) on its way out.

A unified image goes as the raw body; a split image as ``multipart/form-data`` with the parts
``metadata`` and ``rootfs`` (``rootfs.img`` for a virtual machine), in that order. When every
size is known the body carries a Content-Length; only then does incusd read it at full speed.

What the caller gives is checked before anything is sent (InvalidInputError, naming the
argument: a path that cannot be opened is one). A source that fails while it is read (an
OSError from a file's ``read()``, a path's disk, an iterable), or that changes while it is
sent, raises ImageDataError, with the OSError as its ``__cause__``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import secrets
import stat
import threading
from collections.abc import AsyncIterable, Iterable, Iterator, Sequence
from typing import Any, Literal
from urllib.parse import urlencode

import attrs

from .._errors import ImageDataError, InvalidInputError
from .._requests import AliasEntry, FollowUp, ImagePatch
from .._validate import (
    IMAGE_TYPES,
    boolean,
    callback,
    filename_header,
    full_fingerprint,
    names_list,
    new_alias_name,
    profile_name,
    properties_map,
    text,
)
from .multipart import closing_delimiter, part_header
from .progress import Progress, ProgressCallback
from .threads import CHUNK_SIZE, Hasher

__all__ = [
    "PreparedUpload",
    "Rehash",
    "Source",
    "UploadMeter",
    "UploadPlan",
    "open_source",
    "prepare_upload",
    "read_chunks",
]

SourceKind = Literal["bytes", "path", "file", "iterable", "async_iterable"]


def list_header(key: str, values: Sequence[str]) -> str:
    """X-Incus-aliases / X-Incus-profiles: URL-encoded ``key=a&key=b``."""
    return urlencode([(key, value) for value in values])


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


def _identity(status: os.stat_result) -> tuple[int, ...]:
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
    return offset, _identity(status)


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
            "path", path, status.st_size, os.path.basename(path), identity=_identity(status)
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


_JSON_MESSAGE = (
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
    else:  # pragma: no cover - async iterables are read by the async flavour itself
        raise AssertionError(f"read_chunks cannot read a {source.kind} source")


def _usable(name: str | None) -> str | None:
    """A source's own file name, if it can go into a header as it is."""
    if name is None:
        return None
    try:
        filename_header(name)
    except InvalidInputError:
        return None
    return name


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
            name = filename if filename is not None else _usable(image.name)
            if name is not None:
                self.headers["X-Incus-filename"] = filename_header(name)
            self.segments.append(Segment(source=image, argument="image_data"))
        else:
            image_type = "container" if image_type is None else image_type
            if image_type not in IMAGE_TYPES:
                raise InvalidInputError(
                    f"type must be 'container' or 'virtual-machine', got {image_type!r}"
                )
            # Incus takes the image's file name from the rootfs part (and ignores the header).
            rootfs_name = filename if filename is not None else _usable(rootfs.name) or "rootfs"
            filename_header(rootfs_name)  # the same checks as for a header value
            boundary = secrets.token_hex(16)
            self.headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
            rootfs_part = "rootfs.img" if image_type == "virtual-machine" else "rootfs"
            self.segments += [
                Segment(
                    framing=part_header(
                        boundary, "metadata", _usable(image.name) or "metadata", first=True
                    )
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


@attrs.frozen
class PreparedUpload:
    """Everything create() checked and decided before sending anything."""

    plan: UploadPlan
    headers: dict[str, str | bytes]
    #: Checked beforehand: the aliases must be free, the profiles must exist.
    aliases: list[str]
    profiles: list[str]
    #: What is applied once the image is stored (so the call waits for the upload).
    follow_up: FollowUp
    progress: ProgressCallback | None


def prepare_upload(
    image_data: object,
    rootfs: object,
    *,
    filename: str | None,
    public: bool,
    auto_update: bool,
    properties: object,
    wait: bool,
    image_type: str | None,
    aliases: object,
    profiles: object,
    fingerprint: object,
    progress: object,
    accept_async: bool,
) -> PreparedUpload:
    """Check every argument of create() and work out the request; nothing is sent."""
    image = open_source(image_data, "image_data", accept_async=accept_async)
    rootfs_source = (
        None if rootfs is None else open_source(rootfs, "rootfs", accept_async=accept_async)
    )
    plan = UploadPlan(image, rootfs_source, image_type=image_type, filename=filename)
    if rootfs_source is None:
        refuse_json_before_sending(image)
    headers = dict(plan.headers)
    if boolean(public, "public"):
        headers["X-Incus-public"] = "true"
    # Incus ignores auto_update on uploads, and its properties header crashes incusd 6.0.4
    # when metadata.yaml has no properties map: both are applied after the upload.
    wanted_properties = properties_map(properties)
    patch = ImagePatch(
        auto_update=True if boolean(auto_update, "auto_update") else None,
        properties=wanted_properties or None,
    )
    boolean(wait, "wait")
    alias_names = names_list(aliases, "aliases", new_alias_name)
    profile_names = names_list(profiles, "profiles", profile_name)
    if profile_names:
        headers["X-Incus-profiles"] = list_header("profile", profile_names)
    if fingerprint is not None:
        headers["X-Incus-fingerprint"] = full_fingerprint(fingerprint)
    callback(progress, "progress")
    return PreparedUpload(
        plan=plan,
        headers=headers,
        aliases=alias_names,
        profiles=profile_names,
        follow_up=FollowUp(
            patch=patch if patch != ImagePatch() else None,
            # The profiles header cannot say "none": empty means the default profile.
            profiles=[] if profiles is not None and not profile_names else None,
            aliases=[AliasEntry(name=name) for name in alias_names],
        ),
        progress=progress,  # type: ignore[arg-type]  # checked by callback() above
    )


class UploadMeter:
    """Everything each chunk of image data passes through on its way to the server.

    It counts, reports progress, checks that sources deliver the size they announced, refuses
    a raw body that incusd would read as a JSON request (holding back the first bytes until
    that is decided; see ``looks_like_json``), and hashes, on a worker thread, when
    ``hash_inline`` (sources that cannot be read twice); otherwise see :class:`Rehash`.
    """

    def __init__(
        self, plan: UploadPlan, progress: ProgressCallback | None, *, hash_inline: bool = True
    ) -> None:
        self._hasher = Hasher() if hash_inline else None
        self.progress = Progress(progress, plan.data_size)
        self._segment = Segment()
        self._last_argument = "rootfs" if plan.multipart else "image_data"
        #: Whether the last bytes were handed to the HTTP client: from then on, incusd may
        #: have the whole image, whatever happens to the request.
        self.body_handed = False
        self._part_bytes = 0
        self._head: bytes | None = None if plan.multipart else b""

    def start(self, segment: Segment) -> None:
        """Begin a source (the first one also reports progress (0, total))."""
        if self._segment.source is None and self.progress.done == 0:
            self.progress.start()
        self._segment = segment
        self._part_bytes = 0

    def take(self, chunk: bytes) -> bytes:
        """Meter one chunk of a source; return the bytes to send now (maybe fewer, or more)."""
        if not chunk:
            return b""
        if self._hasher is not None:
            self._hasher.update(chunk)
        self._part_bytes += len(chunk)
        self.progress.advance(len(chunk))
        if self.progress.done == self.progress.total:
            # Report the end while the last bytes are still here: once they are sent, incusd
            # has the whole image, and a callback that raises could no longer stop it.
            self.progress.finish()
        source = self._segment.source
        if source is not None and source.size is not None and self._part_bytes > source.size:
            raise self._size_changed()
        if self._head is None:
            return chunk
        # Leading whitespace goes out at once; only the first bytes after it are held back.
        pending = self._head + chunk
        undecided = pending.lstrip(JSON_WHITESPACE)
        self._head = undecided
        if len(undecided) < 4:
            return pending[: len(pending) - len(undecided)]
        return pending[: len(pending) - len(undecided)] + self._release_head()

    def _release_head(self) -> bytes:
        head, self._head = self._head or b"", None
        if looks_like_json(head.lstrip(JSON_WHITESPACE)[:4]):
            raise InvalidInputError(f"{_JSON_MESSAGE}; the upload was stopped")
        return head

    def _size_changed(self) -> ImageDataError:
        source = self._segment.source
        assert source is not None
        return ImageDataError(
            f"{self._segment.argument} delivered {self._part_bytes} bytes or more instead of "
            f"the {source.size} it had when the upload started (did the file change?)"
        )

    def end(self, segment: Segment) -> bytes:
        """Close a source; return held-back bytes still to send."""
        source = segment.source
        assert source is not None
        if source.size is not None and self._part_bytes != source.size:
            raise self._size_changed()
        if self._part_bytes == 0:
            raise InvalidInputError(f"{segment.argument} is empty")
        if segment.argument == self._last_argument:
            self.progress.finish()
        return self._release_head() if self._head is not None else b""

    @property
    def backlogged(self) -> bool:
        return self._hasher is not None and self._hasher.backlogged

    def wait_for_room(self) -> None:
        if self._hasher is not None:
            self._hasher.wait_for_room()

    def finish(self) -> str | None:
        """End the upload; the SHA-256 of the image data sent (metadata then rootfs, without
        framing) when it was hashed inline, else None."""
        self.progress.finish()
        return None if self._hasher is None else self._hasher.hexdigest()

    def close(self) -> None:
        if self._hasher is not None:
            self._hasher.close()


class Rehash:
    """SHA-256 of sources that can be read twice, computed on a thread after they were sent.

    Hashing while sending puts a CPU-second per GiB on the client while incusd is busiest
    receiving; once the body is sent, incusd processes the upload on one core, and the hash
    of the same bytes, read again, runs beside it for free. A file whose stat() identity
    changed since the upload began was not sent as it is now, and fails the check.
    """

    def __init__(self, sources: list[Source]) -> None:
        self._sources = sources
        self._digest: str | None = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="incus-images-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sha256 = hashlib.sha256()
        try:
            for source in self._sources:
                with reading(source, "the image data"):
                    for chunk in _reread(source):
                        sha256.update(chunk)
        except BaseException as exc:  # noqa: BLE001 - handed over in result()
            self._failure = exc
        else:
            self._digest = sha256.hexdigest()

    def result(self) -> str:
        """Wait for the digest (blocking: from a worker thread in async code)."""
        self._thread.join()
        if self._failure is not None:
            raise self._failure
        assert self._digest is not None
        return self._digest


def _reread(source: Source) -> Iterator[bytes]:
    if source.kind == "bytes":
        yield source.value
        return
    if source.kind == "path":
        file = open(source.value, "rb")  # noqa: SIM115 - closed below
        close = True
    else:
        file, close = source.value, False
    try:
        if _identity(os.fstat(file.fileno())) != source.identity:
            raise ImageDataError(f"{source.name or 'the source file'} changed during the upload")
        position = file.tell()
        file.seek(source.offset or 0)
        left = source.size or 0
        while left and (chunk := file.read(min(CHUNK_SIZE, left))):
            left -= len(chunk)
            yield chunk
        file.seek(position)
        if left or _identity(os.fstat(file.fileno())) != source.identity:
            raise ImageDataError(f"{source.name or 'the source file'} changed during the upload")
    finally:
        if close:
            file.close()
