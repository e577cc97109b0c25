"""ImageBuild: an image made from local files, generated as it is uploaded or written.

Everything the caller gives is checked when the build is made (InvalidInputError); the tree
is read only when the build's bytes are produced (``create()`` or ``write()``), once per use.
This module stays light to import: the tar, YAML and compression machinery loads on first use.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import attrs

from .._errors import InvalidInputError
from .compress import EXTENSIONS, compressed, compression_name
from .metadata import (
    Metadata,
    build_architecture,
    fixed_time,
    properties_of,
    source_date_epoch,
    templates_of,
)

if TYPE_CHECKING:
    import datetime

    from .tree import Member

__all__ = ["ImageBuild"]

#: ``owner=``: a uid and gid for every file, or a map of ids (uids and gids alike).
Owner = tuple[int, int] | Mapping[int, int] | None
#: ``compression=``.
Compression = Literal["none", "gzip", "xz"]

_ID_LIMIT = 2**32 - 1  # (uid_t)-1 means "no change" to the kernel: not an id


def _an_id(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _ID_LIMIT:
        raise InvalidInputError(f"owner: {what} {value!r:.60} is not a uid or gid (0 to 2**32-2)")
    return value


def _id_maps(owner: object) -> tuple[Callable[[int], int], Callable[[int], int]]:
    """(uid map, gid map) for ``owner``."""
    if owner is None:
        if os.geteuid() == 0:
            return _same, _same
        return _root, _root
    if isinstance(owner, tuple):
        if len(owner) != 2:
            raise InvalidInputError(f"owner must be a (uid, gid) pair, got {owner!r:.60}")
        uid, gid = _an_id(owner[0], "uid"), _an_id(owner[1], "gid")
        return (lambda _: uid), (lambda _: gid)
    if isinstance(owner, Mapping):
        table = {_an_id(key, "host id"): _an_id(item, "image id") for key, item in owner.items()}

        def mapped(value: int) -> int:
            return table.get(value, value)

        return mapped, mapped
    raise InvalidInputError(
        f"owner must be None, a (uid, gid) pair or a mapping of ids, got {type(owner).__name__}"
    )


def _same(value: int) -> int:
    return value


def _root(value: int) -> int:
    return 0


def _existing(value: object, argument: str, *, directory: bool) -> bytes:
    if not isinstance(value, str | bytes | os.PathLike):
        raise InvalidInputError(f"{argument} must be a path, got {type(value).__name__}")
    path = os.fsencode(value)
    if not path:
        raise InvalidInputError(f"{argument} must not be empty")
    if directory and not os.path.isdir(path):
        raise InvalidInputError(f"{argument} {os.fsdecode(path)!r} is not a directory")
    if not directory:
        if not os.path.isfile(path):
            raise InvalidInputError(f"{argument} {os.fsdecode(path)!r} is not a file")
        try:
            with open(path, "rb") as file:
                empty = os.fstat(file.fileno()).st_size == 0
        except OSError as exc:
            raise InvalidInputError(
                f"{argument}: cannot read {os.fsdecode(path)!r}: {exc.strerror}"
            ) from exc
        if empty:
            raise InvalidInputError(f"{argument} {os.fsdecode(path)!r} is empty")
    return os.path.abspath(path)


class ImageBuild:
    """An image made from local files, produced while it is uploaded or written: no temporary
    tarball, constant memory, the same bytes (and fingerprint) for the same files, arguments
    and dates.

    Make one with ``from_directory`` (a container image from a root file system),
    ``virtual_machine`` (a VM image from a qcow2 disk) or ``metadata_only`` (the
    metadata tarball of a split image, for ``create(build, rootfs=...)``). Give it to
    ``images.create()`` as ``image_data``, or write it to files with ``write``. The
    arguments are checked when it is made (InvalidInputError); the files are read each time
    its bytes are produced.

    The tarball holds ``metadata.yaml`` (from the arguments: ``architecture``,
    ``creation_date``, ``properties``, ``templates``), then ``rootfs/`` (the tree), then
    ``templates/`` (the template files the rules name). Entries are sorted; owners are
    numeric (no user or group names).

    Dates: ``mtime`` (whole seconds, or an aware datetime) is every entry's time and the
    creation date. Without it, ``$SOURCE_DATE_EPOCH`` is the creation date when it is set,
    and newer entries are clamped to it; else each entry keeps its file's time, and the
    creation date is the newest of them (with no files at all, the time of the build).

    A file that changes size or vanishes while it is read, or that cannot be read, fails the
    build with ImageDataError naming it; sockets are skipped with a warning and listed in
    ``skipped``.
    """

    __slots__ = (
        "_compression",
        "_disk",
        "_gid_map",
        "_kind",
        "_metadata",
        "_mtime",
        "_root",
        "_skipped",
        "_source_date_epoch",
        "_uid_map",
    )

    def __init__(
        self, *, _kind: str, _source: bytes | None, _owner: object, _settings: _Settings
    ) -> None:
        self._kind = _kind
        self._root = _source if _kind == "unified" else None
        self._disk = _source if _kind == "virtual-machine" else None
        self._metadata = _settings.metadata
        self._uid_map, self._gid_map = _id_maps(_owner)
        self._mtime = _settings.mtime
        self._source_date_epoch = source_date_epoch() if _settings.mtime is None else None
        self._compression = _settings.compression
        self._skipped: list[str] = []

    # ----------------------------------------------------------------------------------------
    # Making one.

    @classmethod
    def from_directory(
        cls,
        root: str | os.PathLike[str],
        *,
        architecture: str | None = None,
        properties: Mapping[str, str] | None = None,
        templates: Mapping[str, Mapping[str, object]] | None = None,
        templates_dir: str | os.PathLike[str] | None = None,
        owner: Owner = None,
        mtime: int | datetime.datetime | None = None,
        compression: Compression = "gzip",
    ) -> ImageBuild:
        """A container image (a unified tarball) of the root file system at ``root``.

        Every kind of file is kept: regular files, directories, symlinks (never followed),
        hard links (stored once), device nodes, fifos, permissions including setuid, and
        extended attributes (``security.capability`` among them); sockets are skipped.
        (incusd does not unpack ``/dev/*`` of a root file system; device nodes elsewhere come
        through.)

        architecture is the image's (default: this machine's); properties its default
        properties (strings); templates the rules incusd renders files with
        (``{"/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"}}``),
        their files looked for in templates_dir (default: the current directory).

        owner: None keeps the files' ids when the caller is root, and makes every file
        root-owned (0:0) otherwise; a ``(uid, gid)`` pair is every file's owner; a mapping
        ``{host_id: image_id}`` maps uids and gids alike (ids not in it are kept).

        compression: "gzip" (default), "xz" or "none".
        """
        source = _existing(root, "root", directory=True)
        settings = _settings(architecture, properties, templates, templates_dir, mtime, compression)
        return cls(_kind="unified", _source=source, _owner=owner, _settings=settings)

    @classmethod
    def virtual_machine(
        cls,
        disk: str | os.PathLike[str],
        *,
        architecture: str | None = None,
        properties: Mapping[str, str] | None = None,
        templates: Mapping[str, Mapping[str, object]] | None = None,
        templates_dir: str | os.PathLike[str] | None = None,
        mtime: int | datetime.datetime | None = None,
        compression: Compression = "gzip",
    ) -> ImageBuild:
        """A virtual-machine image (split): a metadata tarball made from the arguments, and
        the qcow2 ``disk`` as it is as the root file system part. The arguments are those of
        ``from_directory``."""
        source = _existing(disk, "disk", directory=False)
        settings = _settings(architecture, properties, templates, templates_dir, mtime, compression)
        return cls(_kind="virtual-machine", _source=source, _owner=(0, 0), _settings=settings)

    @classmethod
    def metadata_only(
        cls,
        *,
        architecture: str | None = None,
        properties: Mapping[str, str] | None = None,
        templates: Mapping[str, Mapping[str, object]] | None = None,
        templates_dir: str | os.PathLike[str] | None = None,
        mtime: int | datetime.datetime | None = None,
        compression: Compression = "gzip",
    ) -> ImageBuild:
        """The metadata tarball of a split image alone, for
        ``create(build, rootfs="rootfs.squashfs")`` (``rootfs`` is required then). The
        arguments are those of ``from_directory``."""
        settings = _settings(architecture, properties, templates, templates_dir, mtime, compression)
        return cls(_kind="metadata", _source=None, _owner=(0, 0), _settings=settings)

    # ----------------------------------------------------------------------------------------
    # What it is.

    @property
    def skipped(self) -> tuple[str, ...]:
        """The tree paths skipped (sockets), as found by the last read of the tree."""
        return tuple(self._skipped)

    @property
    def kind(self) -> str:
        """ "unified" (from_directory), "virtual-machine" or "metadata" (metadata_only)."""
        return self._kind

    @property
    def disk(self) -> str | None:
        """The VM disk file (the rootfs part) of a virtual_machine build, else None."""
        return None if self._disk is None else os.fsdecode(self._disk)

    @property
    def file_name(self) -> str:
        """The tarball's file name: the tree's base name (or "metadata") and the extension."""
        base = "metadata"
        if self._root is not None:
            base = os.fsdecode(os.path.basename(self._root.rstrip(b"/"))) or "rootfs"
        return base + EXTENSIONS[self._compression]

    def __repr__(self) -> str:
        source = self._root if self._root is not None else self._disk
        where = "" if source is None else f"{os.fsdecode(source)!r}, "
        return f"ImageBuild({self._kind}: {where}compression={self._compression!r})"

    # ----------------------------------------------------------------------------------------
    # Its bytes.

    def stream(self) -> Iterator[bytes]:
        """The tarball (the unified image, or the metadata tarball of a split one), generated
        chunk by chunk as it is read; blocking I/O (the tree). Each call reads the files
        again."""
        from .tarstream import tar_chunks

        self._skipped = []
        return compressed(tar_chunks(self._members()), self._compression)

    def _dates(self) -> tuple[int | None, int | None, int]:
        """(every entry's time, the time entries are clamped to, the creation date)."""
        if self._mtime is not None:
            return self._mtime, None, self._mtime
        if self._source_date_epoch is not None:
            return None, self._source_date_epoch, self._source_date_epoch
        from .tree import newest_time

        paths = list(self._metadata.template_files.values())
        if self._root is not None:
            paths.append(self._root)
        newest = newest_time(paths)
        if not newest:
            newest = int(time.time())
        # A file touched after this first look is clamped, so the creation date stays the
        # newest time in the tarball.
        return None, newest, newest

    def _members(self) -> Iterator[Member]:
        import tarfile

        from .tree import TreeOptions, TreeWalker, entry_time, open_regular

        fixed, clamp, creation_date = self._dates()
        options = TreeOptions(
            uid_map=self._uid_map,
            gid_map=self._gid_map,
            mtime=fixed,
            clamp=clamp,
            skipped=self._skipped.append,
        )
        metadata = self._metadata.render(creation_date)
        yield _made("metadata.yaml", tarfile.REGTYPE, creation_date, metadata)
        if self._root is not None:
            yield from TreeWalker(self._root, "rootfs", options).members()
        files = self._metadata.template_files
        if not files:
            return
        yield _made("templates", tarfile.DIRTYPE, creation_date)
        made_directories = {"templates"}
        for name in sorted(files, key=os.fsencode):
            directory = "templates"
            for part in name.split("/")[:-1]:
                directory = f"{directory}/{part}"
                if directory not in made_directories:
                    made_directories.add(directory)
                    yield _made(directory, tarfile.DIRTYPE, creation_date)
            info = tarfile.TarInfo(f"templates/{name}")
            member = open_regular(files[name], info)
            status = os.fstat(member.fd) if member.fd is not None else None
            info.mode = 0o644
            info.uname = info.gname = ""
            if status is not None:
                info.mtime = entry_time(status, options)
            yield member

    def write(self, path: str | os.PathLike[str]) -> str:
        """Write what an upload would send to files: the tarball at ``path`` (a split image:
        its metadata tarball at ``path``, its root file system at ``path`` + ``.root``, as
        ``export()`` lays split images out). Each file is written under a temporary name and
        renamed into place once everything is written: on failure nothing is left. Return
        the fingerprint (the SHA-256 of everything written, in order). Blocking."""
        from .._transfer.files import PendingFile, rootfs_path
        from .tree import open_regular

        if not isinstance(path, str | os.PathLike):
            raise InvalidInputError(f"path must be a path, got {type(path).__name__}")
        target = Path(path)
        if not target.parent.is_dir():
            raise InvalidInputError(f"path {str(target)!r}: {str(target.parent)!r} is no directory")
        sha256 = hashlib.sha256()
        pending: list[PendingFile] = []
        try:
            main = PendingFile(target)
            pending.append(main)
            for chunk in self.stream():
                sha256.update(chunk)
                main.write(chunk)
                if main.backlogged:
                    main.wait_for_room()
            if self._disk is not None:
                import tarfile

                root = PendingFile(rootfs_path(target))
                pending.append(root)
                disk = open_regular(self._disk, tarfile.TarInfo("rootfs.img"))
                for chunk in disk.chunks():
                    sha256.update(chunk)
                    root.write(chunk)
                    if root.backlogged:
                        root.wait_for_room()
            for file in pending:
                file.finish_writing()
            for file in reversed(pending):
                file.commit()
        except BaseException:
            for file in pending:
                file.discard()
            raise
        return sha256.hexdigest()


@attrs.frozen
class _Settings:
    """The arguments every kind of build takes, checked."""

    metadata: Metadata
    mtime: int | None
    compression: str


def _settings(
    architecture: object,
    properties: object,
    templates: object,
    templates_dir: object,
    mtime: object,
    compression: object,
) -> _Settings:
    rules, files = templates_of(templates, templates_dir)
    metadata = Metadata(
        architecture=build_architecture(architecture),
        properties=properties_of(properties),
        templates=rules,
        template_files=files,
    )
    return _Settings(metadata, fixed_time(mtime), compression_name(compression))


def _made(name: str, kind: bytes, mtime: int, data: bytes | None = None) -> Member:
    """A member the build makes itself (root-owned)."""
    import tarfile

    from .tree import Member

    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = mtime
    info.uname = info.gname = ""
    if data is not None:
        info.size = len(data)
    return Member(info, os.fsencode(name), data=data)
