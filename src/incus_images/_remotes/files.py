"""Writing the CLI's configuration, each file atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import InvalidInputError
from .config import (
    _DEFAULT_CONFIG_YAML,
    _NO_FOLDING,
    CONFIG_FILE,
    _pairs,
    compose_config,
    read_config_text,
)

if TYPE_CHECKING:
    from .adding import _Added


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
                raise InvalidInputError(
                    f"Remote {name!r} appeared in {path} while it was added: not added again"
                )
            # yaml.v2 writes remotes sorted by name: keep a sorted file sorted.
            after = [i for i, other in enumerate(names) if other > name]
            value.value.insert(after[0] if after else len(names), added.value[0])
            break
    else:
        remotes = yaml.ScalarNode("tag:yaml.org,2002:str", "remotes")
        root.value.append((remotes, added))
    return yaml.serialize(root, Dumper=yaml.SafeDumper, allow_unicode=True, width=_NO_FOLDING)


def _save(directory: Path, path: Path | None, name: str, added: _Added) -> None:
    config_path = directory / CONFIG_FILE
    text_ = _config_text(path, name, added.entry)
    directory.mkdir(mode=0o750, parents=True, exist_ok=True)
    if added.client is not None:
        key, certificate = directory / "client.key", directory / "client.crt"
        if key.exists() or certificate.exists():
            raise InvalidInputError(
                f"{certificate} appeared while the remote was added: add the remote again"
            )
        write_atomically(key, added.client.key, 0o600)
        write_atomically(certificate, added.client.certificate, 0o644)
    if added.server_pem is not None:
        certs = directory / "servercerts"
        certs.mkdir(mode=0o750, exist_ok=True)
        write_atomically(certs / f"{name}.crt", added.server_pem.encode("ascii"), 0o644)
    # A config.yml that is a symbolic link (dotfiles) is replaced where it points.
    target = Path(os.path.realpath(config_path))
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
    write_atomically(target, text_.encode("utf-8"), mode)
