"""Files written atomically beside their targets, under names that never leave their directory.

An export is streamed into temporary files beside its targets and renamed into place only once
it was verified; whatever goes wrong, nothing is left under a target name and no temporary file
survives. File writes are plain blocking calls handed to a worker thread (see
:class:`PendingFile`), in both flavours.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

import attrs

from .._errors import InvalidInputError, TransferError
from .._validate import text
from .threads import ChunkWorker

__all__ = [
    "ExportFiles",
    "ExportTarget",
    "PendingFile",
    "check_export_target",
    "rootfs_path",
    "safe_basename",
    "temporary_name",
]


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


@attrs.frozen
class ExportTarget:
    """Where an export goes, as checked before anything is requested.

    ``path`` is a file, or a directory (the server's file names are then used). A path that
    ends in a separator (``"out/"``) names a directory; when it does not exist yet,
    ``make_directory`` is true and the directory (with its missing parents, as ``mkdir -p``
    makes them) is made once the export starts, then removed again if the export fails.
    """

    path: Path
    make_directory: bool = False

    def __str__(self) -> str:
        return f"{self.path}{os.sep}" if self.make_directory else str(self.path)


def check_export_target(target_path: str | os.PathLike[str]) -> ExportTarget:
    """Refuse, before anything is requested, a target that could not be written."""
    if not isinstance(target_path, str | os.PathLike):
        raise InvalidInputError(f"target_path must be a path, got {type(target_path).__name__}")
    raw = os.fspath(target_path)
    if not isinstance(raw, str):
        raise InvalidInputError(f"target_path must be a str path, got {type(raw).__name__}")
    if not raw:
        # Path("") is the current directory: an empty string is a mistake, not a choice.
        raise InvalidInputError("target_path is empty; give a file or directory name")
    text(raw, "target_path")
    target = Path(raw)
    # Path() drops a trailing separator, which is how a caller says "a directory".
    names_directory = raw.endswith(_SEPARATORS)
    try:
        if names_directory and not target.is_dir():
            directory = _directory_to_make(target, raw)
            _probe_writable(directory)
            return ExportTarget(target, make_directory=True)
        directory = _target_directory(target)
    except OSError as exc:  # a name too long for the file system, a loop of symlinks, ...
        raise InvalidInputError(f"target_path {raw!r}: {exc.strerror or exc}") from None
    _probe_writable(directory)
    return ExportTarget(target)


_SEPARATORS = tuple(sep for sep in (os.sep, os.altsep) if sep)


def _directory_to_make(target: Path, raw: str) -> Path:
    """The existing directory a missing ``target`` directory would be made in."""
    if target.exists() or target.is_symlink():
        raise InvalidInputError(
            f"target_path {raw!r} ends with a separator, so it names a directory, but "
            f"{str(target)!r} exists and is not a directory"
        )
    for part in target.parts:
        if len(part.encode("utf-8", "surrogateescape")) > _NAME_MAX:
            raise InvalidInputError(f"target_path {raw!r}: a directory name is too long")
    ancestor = target.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InvalidInputError(
            f"target_path {raw!r}: {str(ancestor)!r} exists and is not a directory"
        )
    return ancestor


def make_directories(directory: Path) -> list[Path]:
    """Make ``directory`` and its missing parents (mode 0o755 under the umask, as ``mkdir
    -p``); return the ones made, deepest first, for :func:`remove_made_directories`."""
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    made: list[Path] = []
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o755)
        except FileExistsError:
            if not path.is_dir():
                remove_made_directories(made[::-1])
                raise
            continue  # made by someone else meanwhile: theirs, never removed
        made.append(path)
    return made[::-1]


def remove_made_directories(made: list[Path]) -> None:
    """Remove directories an export made, deepest first, as long as they are empty."""
    for path in made:
        try:
            path.rmdir()
        except OSError:  # no longer empty (someone else's file), or gone: leave it
            return


def _target_directory(target: Path) -> Path:
    """The directory the export goes into; refuse a target file that could not be written."""
    if target.is_dir():
        return target
    if len(target.name.encode("utf-8")) > _NAME_MAX - len(".root"):
        raise InvalidInputError(
            f"target_path {str(target)!r}: the file name is too long (a split image also "
            "writes it with '.root' added)"
        )
    # A split image also writes target + ".root"; both must be free for regular files.
    for path in (target, rootfs_path(target)):
        if path.exists() and not path.is_file():
            raise InvalidInputError(f"{str(path)!r} exists and is not a regular file")
    if not target.parent.is_dir():
        raise InvalidInputError(
            f"target_path {str(target)!r}: its directory {str(target.parent)!r} does not exist"
        )
    return target.parent


def _probe_writable(directory: Path) -> None:
    """Create and remove a file where the export will go: permissions, read-only file systems
    and pseudo file systems (/proc) fail here, before the server is asked for anything."""
    probe = directory / temporary_name("probe")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise InvalidInputError(
            f"cannot write into {str(directory)!r}: {exc.strerror or exc}"
        ) from None
    os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(probe)


# --------------------------------------------------------------------------------------------
# Writing files atomically.

#: Longest file name in bytes on Linux file systems.
_NAME_MAX = 255
_TEMPORARY_SUFFIX_BYTES = len(".12345678.partial")


def temporary_name(name: str) -> str:
    """A hidden, unique name beside ``name`` that still fits the file system's name limit."""
    room = _NAME_MAX - 1 - _TEMPORARY_SUFFIX_BYTES
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > room:
        # Cut on a character boundary: a partial UTF-8 sequence would become another name.
        name = encoded[:room].decode("utf-8", "ignore")
    return f".{name}.{secrets.token_hex(4)}.partial"


_IOV_LIMIT = 512


class PendingFile:
    """A file written under a temporary name beside its target and renamed on commit.

    Writes go through a :class:`ChunkWorker`: on a slow page cache (a CPU-second per GiB was
    seen here) they would otherwise stall the thread that reads the socket. Each batch is one
    ``writev`` call, as cheap as one large write, with no copy to join the chunks.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        # Created with O_EXCL under a random name, with the process's umask like any new file.
        self.temporary = target.with_name(temporary_name(target.name))
        self._fd: int | None = os.open(
            self.temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666
        )
        self._writer = ChunkWorker(self._write_batch, "incus-images-write")

    def _write_batch(self, batch: list[bytes | memoryview]) -> None:
        assert self._fd is not None
        views = [memoryview(data) for data in batch]
        while views:
            # writev takes at most IOV_MAX (1024 on Linux) buffers at a time.
            written = os.writev(self._fd, views[:_IOV_LIMIT])
            done = 0
            while done < len(views) and written >= views[done].nbytes:
                written -= views[done].nbytes
                done += 1
            del views[:done]
            if views and written:
                views[0] = views[0][written:]

    def write(self, data: bytes | memoryview) -> None:
        self._writer.put(data)

    @property
    def backlogged(self) -> bool:
        return self._writer.backlogged

    def wait_for_room(self) -> None:
        self._writer.wait_for_room()

    def finish_writing(self) -> None:
        """Wait for every write; a failed write (a full disk) is raised here."""
        self._writer.drain()
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def commit(self) -> Path:
        self.finish_writing()
        os.replace(self.temporary, self.target)
        return self.target

    def discard(self) -> None:
        self._writer.close()
        self._close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.temporary)


# --------------------------------------------------------------------------------------------
# The files of one export.

#: Builds the error for a failure, from what went wrong.
Failure = Callable[[str], TransferError]


class ExportFiles:
    """Where the parts of one export go on disk, written as they arrive and placed on commit.

    One part (a unified image) goes to the target path, or into the target directory under the
    server's file name. Two parts (a split image) put the metadata at the target path and the
    rootfs at the target path + ``.root``, or both into the target directory under the server's
    file names. Server-given names are reduced to safe base names first.
    """

    def __init__(self, target: ExportTarget, fingerprint: str, failure: Failure) -> None:
        self._target = target.path
        self._make_directory = target.make_directory
        self._made_directories: list[Path] = []
        self._fingerprint = fingerprint
        self._failure = failure
        self._files: list[PendingFile] = []
        self._current: PendingFile | None = None

    def _path_for(self, server_name: str | None, role: str) -> Path:
        if self._make_directory:
            self._make_directory = False
            try:
                self._made_directories = make_directories(self._target)
            except OSError as exc:
                raise self._failure(
                    f"cannot make the directory {str(self._target)!r}: {exc}"
                ) from exc
        if self._target.is_dir():
            fallback = {
                "metadata": f"meta-{self._fingerprint}",
                "rootfs": f"{self._fingerprint}.root",
            }.get(role, self._fingerprint)
            # The fallback is reduced too: whatever the server said, the file stays inside.
            name = safe_basename(server_name, safe_basename(fallback, "image"))
            path = self._target / name
            if path.parent != self._target:  # pragma: no cover - safe_basename guarantees it
                raise self._failure(f"the server's file name {server_name!r:.100} is not safe")
            return path
        if role == "rootfs":
            return rootfs_path(self._target)
        return self._target

    def open(self, server_name: str | None, role: str) -> None:
        """Start the file of the next part (``role``: unified, metadata or rootfs)."""
        path = self._path_for(server_name, role)
        if any(pending.target == path for pending in self._files):
            raise self._failure(f"the export names two parts {path.name!r}")
        try:
            self._current = PendingFile(path)
        except OSError as exc:
            raise self._failure(f"cannot create a file beside {str(path)!r}: {exc}") from exc
        self._files.append(self._current)

    def write(self, data: bytes | memoryview) -> None:
        if self._current is None:
            raise self._failure("the export sent data outside any part")
        try:
            self._current.write(data)
        except OSError as exc:
            raise self._failure(f"cannot write {str(self._current.target)!r}: {exc}") from exc

    def end_part(self) -> None:
        # The part's file is finished at commit; its writer drains there.
        self._current = None

    @property
    def backlogged(self) -> bool:
        return bool(self._files) and self._files[-1].backlogged

    def wait_for_room(self) -> None:
        if self._files:
            self._files[-1].wait_for_room()

    def finish_writing(self) -> None:
        """Wait for every write (a full disk fails here)."""
        for pending in self._files:
            try:
                pending.finish_writing()
            except OSError as exc:
                raise self._failure(f"cannot write {str(pending.target)!r}: {exc}") from exc

    def commit(self) -> list[Path]:
        """Move every file into place, all or none; return the paths."""
        self.finish_writing()
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
        self._made_directories = []  # they hold the export now: the caller's
        return written

    def discard(self) -> None:
        """Remove every temporary file (idempotent; nothing to do after commit())."""
        for pending in self._files:
            pending.discard()
        self._files = []
        self._current = None
        remove_made_directories(self._made_directories)
        self._made_directories = []
