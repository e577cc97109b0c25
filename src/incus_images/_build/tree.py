"""A root file system as tar members: walked in sorted order, every file kind kept.

Each directory's entries are sorted by their names' bytes, and a directory comes before what
it holds, so the same tree always gives the same members. Kept as the kernel has them:
regular files, directories, symlinks (their target as it is: never followed), hard links (the
first name holds the data, later names link to it), character and block devices, fifos;
permission bits including setuid, setgid and sticky; numeric owners (after the owner map; no
user or group names); extended attributes. Sockets cannot be stored in a tarball: they are
skipped, with a warning, and recorded.

A regular file is opened without following symlinks, checked to be the file that was listed,
and read in chunks: one that is shorter or longer than when its header was written, or that
vanished, fails the build (ImageDataError naming it).
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
import warnings
from collections.abc import Callable, Iterator

import attrs

from .._errors import ImageDataError
from .._transfer.threads import CHUNK_SIZE

#: Maps a host uid or gid to the one stored in the image.
IdMap = Callable[[int], int]

#: Extended attributes never stored: the build host's SELinux label means nothing inside the
#: image, and a container host that enforces its own labels refuses it (Incus's own rsync
#: copies leave it out for the same reason).
SKIPPED_XATTRS = frozenset({"security.selinux"})

#: A regular file is opened without following a symlink, and without blocking if it turned into
#: a fifo since it was listed (then it fails the identity check).
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


def display(path: bytes) -> str:
    """A tree path as a message shows it (bytes that are not UTF-8 escaped)."""
    return os.fsdecode(path)


@attrs.define
class Member:
    """One tar member: its header, and for a regular file the open descriptor of its data."""

    info: tarfile.TarInfo
    #: The file on disk (for messages), and its descriptor while its data is still to be read.
    path: bytes
    fd: int | None = None
    #: The data of a member made here (metadata.yaml), not read from a file.
    data: bytes | None = None

    @property
    def has_data(self) -> bool:
        return self.fd is not None or self.data is not None

    def chunks(self) -> Iterator[bytes]:
        """The file's data, exactly ``info.size`` bytes, then the descriptor is closed. A file
        that is not that size any more fails (ImageDataError naming it)."""
        if self.data is not None:
            yield self.data
            return
        fd = self.fd
        if fd is None:
            return
        self.fd = None
        try:
            left = self.info.size
            while left:
                try:
                    chunk = os.read(fd, min(CHUNK_SIZE, left))
                except OSError as exc:
                    raise read_error(self.path, exc) from exc
                if not chunk:
                    raise changed(self.path, "shrank while it was read")
                left -= len(chunk)
                yield chunk
            try:
                more = os.read(fd, 1)
            except OSError as exc:
                raise read_error(self.path, exc) from exc
            if more:
                raise changed(self.path, "grew while it was read")
        finally:
            os.close(fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def changed(path: bytes, how: str) -> ImageDataError:
    return ImageDataError(
        f"{display(path)!r} {how}: a file must not change while an image is built from it "
        "(nothing was stored)"
    )


def read_error(path: bytes, exc: OSError) -> ImageDataError:
    if exc.errno == errno.ENOENT:
        return changed(path, "vanished")
    return ImageDataError(f"Could not read {display(path)!r}: {exc.strerror or exc}")


def xattrs(path: bytes) -> dict[str, str]:
    """The file's extended attributes as PAX records (``SCHILY.xattr.NAME``, as GNU tar, Go's
    archive/tar and incusd's unpacking read them); values are bytes, carried through a
    surrogate-escaped str (the tar writer turns them back into the same bytes)."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return {}
        raise read_error(path, exc) from exc
    records: dict[str, str] = {}
    for name in sorted(names):
        if name in SKIPPED_XATTRS:
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                continue  # gone since it was listed, or not readable by this user
            raise read_error(path, exc) from exc
        records[f"SCHILY.xattr.{name}"] = value.decode("utf-8", "surrogateescape")
    return records


@attrs.frozen(kw_only=True)
class TreeOptions:
    """How a tree's files become members."""

    uid_map: IdMap
    gid_map: IdMap
    #: Every member's time, when fixed; else each file's own, clamped to ``clamp``.
    mtime: int | None
    clamp: int | None
    #: Called with each socket's tree path (the build records it).
    skipped: Callable[[str], None]


def entry_time(status: os.stat_result, options: TreeOptions) -> int:
    if options.mtime is not None:
        return options.mtime
    seconds = max(0, int(status.st_mtime))
    return seconds if options.clamp is None else min(seconds, options.clamp)


class TreeWalker:
    """The members of one tree under one name in the tarball (``rootfs``)."""

    def __init__(self, root: bytes, name: str, options: TreeOptions) -> None:
        self._root = root
        self._name = name
        self._options = options
        #: (st_dev, st_ino) of files with several names -> the member name that holds the data.
        self._links: dict[tuple[int, int], str] = {}

    def members(self) -> Iterator[Member]:
        try:
            status = os.lstat(self._root)
        except OSError as exc:
            raise read_error(self._root, exc) from exc
        if not stat.S_ISDIR(status.st_mode):
            raise changed(self._root, "is no longer a directory")
        yield self._member(self._root, self._name, status)
        yield from self._below(self._root, self._name)

    def _below(self, directory: bytes, name: str) -> Iterator[Member]:
        # A stack of directories being listed, not recursion: a tree may nest deeper than
        # Python's recursion limit. Each directory's entries come sorted, a directory before
        # what it holds.
        stack = [iter(self._listing(directory, name))]
        while stack:
            for path, member_name in stack[-1]:
                try:
                    status = os.lstat(path)
                except OSError as exc:
                    raise read_error(path, exc) from exc
                if stat.S_ISSOCK(status.st_mode):
                    tree_path = os.fsdecode(os.path.relpath(path, self._root))
                    warnings.warn(
                        f"skipped the socket {display(path)!r}: a tarball cannot hold a socket",
                        stacklevel=1,
                    )
                    self._options.skipped(tree_path)
                    continue
                yield self._member(path, member_name, status)
                if stat.S_ISDIR(status.st_mode):
                    stack.append(iter(self._listing(path, member_name)))
                    break
            else:
                stack.pop()

    def _listing(self, directory: bytes, name: str) -> list[tuple[bytes, str]]:
        """The entries of a directory, sorted: (path, member name)."""
        try:
            names = sorted(os.listdir(directory))
        except OSError as exc:
            raise read_error(directory, exc) from exc
        return [(os.path.join(directory, entry), f"{name}/{os.fsdecode(entry)}") for entry in names]

    def _member(self, path: bytes, name: str, status: os.stat_result) -> Member:
        options = self._options
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(status.st_mode)
        info.uid = options.uid_map(status.st_uid)
        info.gid = options.gid_map(status.st_gid)
        info.uname = info.gname = ""
        info.mtime = entry_time(status, options)
        mode = status.st_mode
        key = (status.st_dev, status.st_ino)
        if not stat.S_ISDIR(mode) and status.st_nlink > 1:
            first = self._links.get(key)
            if first is not None:
                # The member that holds the data holds the attributes too.
                info.type = tarfile.LNKTYPE
                info.linkname = first
                return Member(info, path)
            self._links[key] = name
        info.pax_headers = xattrs(path)
        if stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(mode):
            info.type = tarfile.SYMTYPE
            try:
                info.linkname = os.fsdecode(os.readlink(path))
            except OSError as exc:
                raise read_error(path, exc) from exc
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor = os.major(status.st_rdev)
            info.devminor = os.minor(status.st_rdev)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
        elif stat.S_ISREG(mode):
            info.type = tarfile.REGTYPE
            return self._regular(path, info, status)
        else:  # pragma: no cover - Linux has no other kind of file
            raise ImageDataError(f"{display(path)!r} is a kind of file a tarball cannot hold")
        return Member(info, path)

    def _regular(self, path: bytes, info: tarfile.TarInfo, listed: os.stat_result) -> Member:
        return open_regular(path, info, listed)


def open_regular(
    path: bytes, info: tarfile.TarInfo, listed: os.stat_result | None = None
) -> Member:
    """A regular file's member, its descriptor open (the file checked to be the one listed)."""
    try:
        fd = os.open(path, _OPEN_FLAGS if listed is not None else os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise changed(path, "was replaced by a symlink") from exc
        raise read_error(path, exc) from exc
    problem = None
    try:
        status = os.fstat(fd)
        if listed is not None and (status.st_dev, status.st_ino) != (listed.st_dev, listed.st_ino):
            problem = "was replaced"
        elif not stat.S_ISREG(status.st_mode):
            problem = "is not a regular file"
        else:
            # Reads block as usual once the file is known to be a regular one.
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    if problem is not None:
        os.close(fd)
        raise changed(path, problem)
    info.type = tarfile.REGTYPE
    info.size = status.st_size
    return Member(info, path, fd)


def newest_time(paths: list[bytes]) -> int | None:
    """The newest modification time (whole seconds) of these trees and files, not following
    symlinks; None when there are none."""
    newest: int | None = None
    pending = list(paths)
    while pending:
        path = pending.pop()
        try:
            status = os.lstat(path)
        except OSError as exc:
            raise read_error(path, exc) from exc
        seconds = max(0, int(status.st_mtime))
        newest = seconds if newest is None else max(newest, seconds)
        if stat.S_ISDIR(status.st_mode):
            try:
                pending += [os.path.join(path, entry) for entry in os.listdir(path)]
            except OSError as exc:
                raise read_error(path, exc) from exc
    return newest
