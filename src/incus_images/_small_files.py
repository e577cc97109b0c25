"""Reading the small local files a client is configured with: certificates, keys, and the
incus CLI's configuration.

Each is read whole, through one reader: only a regular file (a FIFO, a device or a directory
in its place is refused, and opening cannot block on one), bounded in size, and every failure
names the file and is refused before anything is sent. Whose file it is decides the class
(a :data:`Refusal`): a file the caller names as an argument (``cert=``, ``verify=``) is an
:class:`InvalidInputError`, a file of the incus CLI's configuration a
:class:`ConfigurationError`; an OSError is the error's ``__cause__``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from ._errors import ConfigurationError, IncusError, InvalidInputError

#: Makes the error for a file that cannot be used, from the message and the file's path.
Refusal = Callable[[str, str | None], IncusError]


def argument_file(message: str, path: str | None) -> IncusError:
    """The refusal of a file the caller named as an argument (``cert=``, ``verify=``)."""
    return InvalidInputError(message)


def configuration_file(message: str, path: str | None) -> IncusError:
    """The refusal of a file of the incus CLI's configuration."""
    return ConfigurationError(message, path=path)


#: Larger than any of these files: a certificate, a key, a bundle of every public CA (about
#: 220 KiB with 144 certificates on Debian 12), a CLI configuration.
MAX_SMALL_FILE_BYTES = 1024 * 1024

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_small_file(
    path: str | os.PathLike[str],
    what: str,
    *,
    limit: int = MAX_SMALL_FILE_BYTES,
    refuse: Refusal = argument_file,
) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (symbolic links followed).

    ``what`` names the file in messages (``"the pinned server certificate"``). Anything else
    (missing, unreadable, not a regular file, too large) raises the error ``refuse`` makes
    (an argument's InvalidInputError unless told), naming it.
    """
    data = read_small_file_if_any(path, what, limit=limit, refuse=refuse)
    if data is None:
        raise refuse(f"{what} {os.fspath(path)} does not exist", os.fspath(path))
    return data


def read_small_file_if_any(
    path: str | os.PathLike[str],
    what: str,
    *,
    limit: int = MAX_SMALL_FILE_BYTES,
    refuse: Refusal = argument_file,
) -> bytes | None:
    """As :func:`read_small_file`, but None when nothing is at ``path``."""
    name = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer, forever.
        # O_NOCTTY: a terminal in the file's place must not become this process's.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            return None  # a parent is a file: nothing is at path, as os.path.exists says
        raise refuse(_unreadable(what, name, exc), name) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((kind for test, kind in _KINDS if test(info.st_mode)), "not a file")
            raise refuse(f"{what} {name} is {kind}, not a regular file", name)
        if info.st_size > limit:
            raise refuse(_too_large(what, name, limit), name)
        chunks = []
        size = 0
        # The size stat gives may be wrong (a file growing, a /proc file that says 0): read
        # until the end, or one byte past the limit.
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise refuse(_unreadable(what, name, exc), name) from exc
    finally:
        os.close(fd)
    if size > limit:
        raise refuse(_too_large(what, name, limit), name)
    return b"".join(chunks)


def _unreadable(what: str, name: str, exc: OSError) -> str:
    return f"Cannot read {what} {name}: {exc.strerror or exc}"


def _too_large(what: str, name: str, limit: int) -> str:
    return f"{what} {name} is larger than {limit} bytes: it is not one"


def exists(path: Path | None) -> bool:
    """Whether something is at path, without raising (a file that cannot be looked at is
    there: reading it will say why)."""
    if path is None:
        return False
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return True
