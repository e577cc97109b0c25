"""Writing the CLI's configuration, each file atomically, under the configuration's lock.

A configuration that cannot be written, or that changes under the lock (the incus CLI does not
take it), raises ConfigurationError naming the file or directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from .._errors import ConfigurationError, IncusTimeoutError, LeftBehind, note_left_behind
from .._small_files import exists
from .config import (
    _DEFAULT_CONFIG_YAML,
    _NO_FOLDING,
    CONFIG_FILE,
    _pairs,
    compose_config,
    read_config_text,
)


@attrs.frozen
class _Certificate:
    """A client certificate the configuration does not hold yet (written on success)."""

    certificate: bytes
    key: bytes


@attrs.frozen(kw_only=True)
class _Added:
    """What adding a remote writes: its config.yml entry and the certificates."""

    #: The entry, in the order of cliconfig.Remote's fields (yaml.v2 writes them so).
    entry: dict[str, Any]
    server_pem: str | None = None
    client: _Certificate | None = None


# --------------------------------------------------------------------------------------------
# Writing the configuration.


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Replace path with data: a temporary file beside it, flushed to disk, renamed over it."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _config_text(path: Path | None, name: str, entry: Mapping[str, Any]) -> str:
    """config.yml with the remote added. The rest of an existing file is written back as it
    was read (its scalars as written, its order, even keys the CLI does not know; its
    comments are lost, as when the CLI saves it); a new one holds the CLI's defaults too, as
    the CLI's would (without them the CLI would lose its ``images`` remote)."""
    import yaml

    text_ = None if path is None else read_config_text(path)
    if path is not None and text_ is not None:
        root = compose_config(text_, path)
        _pairs(root, "the document", path)  # still a mapping (or empty), as when it was read
    else:
        root = yaml.compose(_DEFAULT_CONFIG_YAML, Loader=yaml.SafeLoader)
    if not isinstance(root, yaml.MappingNode):
        root = yaml.MappingNode("tag:yaml.org,2002:map", [])
    added = yaml.compose(
        yaml.safe_dump({name: dict(entry)}, sort_keys=False, allow_unicode=True, width=_NO_FOLDING),
        Loader=yaml.SafeLoader,
    )
    assert isinstance(added, yaml.MappingNode)
    for index, (key, value) in enumerate(root.value):
        if isinstance(key, yaml.ScalarNode) and key.value == "remotes":
            if not isinstance(value, yaml.MappingNode):
                root.value[index] = (key, added)
                break
            names = [str(k.value) for k, _ in value.value]
            if name in names:
                # yaml.v2 refuses a mapping that names a key twice: the CLI could not start.
                raise ConfigurationError(
                    f"Remote {name!r} appeared in {path} while it was added (another program "
                    "changed the file): not added again",
                    path=None if path is None else str(path),
                )
            # yaml.v2 writes remotes sorted by name: keep a sorted file sorted.
            after = [i for i, other in enumerate(names) if other > name]
            value.value.insert(after[0] if after else len(names), added.value[0])
            break
    else:
        remotes = yaml.ScalarNode("tag:yaml.org,2002:str", "remotes")
        root.value.append((remotes, added))
    return yaml.serialize(root, Dumper=yaml.SafeDumper, allow_unicode=True, width=_NO_FOLDING)


def check_writable(directory: Path) -> None:
    """Refuse, before anything is sent, a configuration that add_remote could not write to:
    the directory, servercerts/ and the directory config.yml lies in (a symbolic link's
    target's) must be directories this process may write to."""
    places = [directory, directory / "servercerts"]
    places.append(Path(os.path.realpath(directory / CONFIG_FILE)).parent)
    for place in dict.fromkeys(places):
        if place.name == "servercerts" and not exists(place):
            continue  # made when it is needed, in the directory checked already
        if not place.is_dir():
            _unwritable(place, f"{place} is not a directory")
        if not os.access(place, os.W_OK | os.X_OK):
            _unwritable(
                place, f"Cannot write to {place} (permission denied, or a read-only file system)"
            )


def _unwritable(place: Path, why: str) -> None:
    refused = ConfigurationError(
        f"{why}: the remote cannot be added to the incus CLI's configuration", path=str(place)
    )
    raise note_left_behind(refused, LeftBehind.NOTHING, "nothing was sent")


def kept_note(directory: Path) -> str:
    """What an error says once a new client certificate is kept after a failure."""
    return (
        f"The server trusts this client now: its new certificate was kept in {directory} "
        "(client.crt, client.key); add the remote again with its URL instead of the token"
    )


def keep_client_certificate(directory: Path, certificate: _Certificate) -> None:
    """Write a new client certificate as client.crt and client.key (mode 0600)."""
    key, public = directory / "client.key", directory / "client.crt"
    if exists(key) or exists(public):
        raise ConfigurationError(
            f"{public} appeared while the remote was added (another program made it): add "
            "the remote again",
            path=str(public),
        )
    write_atomically(key, certificate.key, 0o600)
    write_atomically(public, certificate.certificate, 0o644)


def _save(directory: Path, config_path: Path, name: str, added: _Added) -> None:
    """Write what adding the remote ``name`` made: its entry in config.yml (config_path),
    its pinned server certificate, a new client certificate. Under the configuration's lock;
    a failure leaves no servercerts/ file behind (a new client certificate stays: the server
    trusts it now)."""
    text_ = _config_text(config_path, name, added.entry)
    pinned = directory / "servercerts" / f"{name}.crt"
    new_pin = added.server_pem is not None and not exists(pinned)
    kept = False
    try:
        directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        if added.client is not None:
            keep_client_certificate(directory, added.client)
            kept = True
        if added.server_pem is not None:
            pinned.parent.mkdir(mode=0o750, exist_ok=True)
            write_atomically(pinned, added.server_pem.encode("ascii"), 0o644)
        # A config.yml that is a symbolic link (dotfiles) is replaced where it points.
        target = Path(os.path.realpath(config_path))
        mode = target.stat().st_mode & 0o777 if exists(target) else 0o644
        write_atomically(target, text_.encode("utf-8"), mode)
    except BaseException as exc:
        if new_pin:
            with contextlib.suppress(OSError):
                pinned.unlink()
        failure = exc
        if isinstance(exc, OSError):
            failure = ConfigurationError(
                f"Could not write the incus CLI's configuration in {directory}: "
                f"{exc.strerror or exc} ({exc.filename or 'a file'}); the remote {name!r} "
                "was not added",
                path=None if exc.filename is None else os.fsdecode(exc.filename),
            )
        if kept:
            failure.add_note(kept_note(directory))
        if failure is exc:
            raise
        raise failure from exc


# --------------------------------------------------------------------------------------------
# The lock.

#: The lock add_remote holds while it reads, adds to and writes the configuration: an
#: advisory flock() on this file beside config.yml (the incus CLI does not take it). It is
#: never removed: a process waiting on the file it opened would lock a file no one else sees.
LOCK_FILE = "config.yml.lock"
#: Longest pause between two tries for a busy lock (flock() itself cannot time out).
_LOCK_POLL_SECONDS = 0.05


@contextlib.contextmanager
def configuration_lock(directory: Path, wait: float) -> Iterator[None]:
    """Hold the lock of the configuration in directory (made, mode 0750, if missing),
    waiting at most ``wait`` seconds while another process holds it; IncusTimeoutError
    after that."""
    lock = directory / LOCK_FILE
    try:
        directory.mkdir(mode=0o750, parents=True, exist_ok=True)
        # O_NOFOLLOW: the lock is made here, not where a symbolic link would point.
        flags = os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(lock, flags, 0o644)
    except OSError as exc:
        raise _unlockable(lock, exc) from exc
    try:
        ends = time.monotonic() + wait
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = ends - time.monotonic()
                if left <= 0:
                    busy = IncusTimeoutError(
                        f"Another process held the lock {lock} on the incus CLI's "
                        f"configuration for {wait:g} s (another add_remote adding a remote)"
                    )
                    raise note_left_behind(
                        busy, LeftBehind.NOTHING, "nothing was sent or written"
                    ) from None
                time.sleep(min(pause, left))
                pause = min(2 * pause, _LOCK_POLL_SECONDS)
            except OSError as exc:
                raise _unlockable(lock, exc) from exc
        yield
    finally:
        os.close(fd)  # which releases the lock


def _unlockable(lock: Path, exc: OSError) -> ConfigurationError:
    refused = ConfigurationError(
        f"Cannot lock the incus CLI's configuration with {lock}: {exc.strerror or exc}",
        path=str(lock),
    )
    return note_left_behind(refused, LeftBehind.NOTHING, "nothing was sent")
