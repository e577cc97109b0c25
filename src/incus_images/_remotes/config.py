"""Reading the incus CLI's configuration: its remotes, certificates and defaults.

A file of the configuration that cannot be used raises ConfigurationError naming it; a name
the caller gives that names no remote is an argument's InvalidInputError.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import ConfigurationError, InvalidInputError
from .._small_files import (
    MAX_SMALL_FILE_BYTES,
    configuration_file,
    exists,
    read_small_file_if_any,
)
from .._validate import text

if TYPE_CHECKING:
    import yaml


CONFIG_FILE = "config.yml"
#: Where the system-wide configuration lives unless $INCUS_GLOBAL_CONF says otherwise.
GLOBAL_CONFIG_DIR = "/etc/incus"
#: The remote the CLI talks to when none is named (cliconfig/default.go).
DEFAULT_REMOTE = "local"
#: Remotes the CLI knows without a config.yml (cliconfig/default.go, DefaultRemotes); of
#: these, ``local`` is static: it is there whatever config.yml says.
_LOCAL: dict[str, Any] = {"addr": "unix://", "protocol": "incus", "public": False}
_IMAGES: dict[str, Any] = {
    "addr": "https://images.linuxcontainers.org",
    "protocol": "simplestreams",
    "public": True,
}
#: What the CLI writes as config.yml when it saves a configuration it did not read from a
#: file (yaml.v2's layout of cliconfig.Config): a remote is added to this.
_DEFAULT_CONFIG_YAML = """\
default-remote: local
remotes:
  images:
    addr: https://images.linuxcontainers.org
    protocol: simplestreams
    public: true
  local:
    addr: unix://
    protocol: incus
    public: false
aliases: {}
"""

#: Far larger than any CLI configuration; a bigger file is not one.
_MAX_CONFIG_BYTES = MAX_SMALL_FILE_BYTES
#: Far deeper than a CLI configuration nests (a remote's fields are three levels deep).
_MAX_DEPTH = 32
#: How messages name a config.yml.
_CONFIG = "the incus CLI's configuration"
#: Longest remote name: it names the file servercerts/<name>.crt, and stays a plain YAML key
#: (PyYAML writes keys over 128 characters in the explicit "? key" form).
_MAX_NAME_BYTES = 100
#: Never fold a long line of config.yml (PyYAML folds at 80 columns by default).
_NO_FOLDING = 1 << 16

# yaml.v2 reads these plain scalars as booleans (YAML 1.1, including y and n).
_YAML_TRUE = frozenset({"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"})
_YAML_FALSE = frozenset(
    {"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}
)
_NULL_TAG = "tag:yaml.org,2002:null"


# --------------------------------------------------------------------------------------------
# The configuration.


@attrs.frozen(kw_only=True)
class Remote:
    """A remote of the incus CLI's configuration, as the CLI reads it."""

    name: str
    #: ``https://host:port``, ``unix://`` (the local daemon, found as the CLI finds it),
    #: ``unix:///path/unix.socket``, or an image server's URL.
    addr: str
    #: ``incus`` (an Incus server), ``simplestreams`` or ``oci`` (image servers).
    protocol: str = "incus"
    #: A public image server: reached without a client certificate.
    public: bool = False
    #: The project the CLI uses on it (None: the server's default project).
    project: str | None = None
    #: How the CLI authenticates: ``tls`` (the client certificate) or ``oidc``; None for a
    #: public remote.
    auth_type: str | None = None
    #: Defined in the system-wide configuration ($INCUS_GLOBAL_CONF, else /etc/incus).
    is_global: bool = False
    #: Where the CLI keeps the server certificate pinned for this remote (None: nowhere,
    #: there is no configuration directory). The file may not exist: the server is then
    #: verified against the system's CA bundle, as the CLI does.
    server_certificate: Path | None = None
    #: The client certificate and key the CLI presents to this remote (its own
    #: ``clientcerts/<name>.crt`` when both files exist, else ``client.crt``), and the CA
    #: (``client.ca``) it verifies the server with instead of the system's, when present.
    client_certificate: Path | None = None
    client_key: Path | None = None
    client_ca: Path | None = None


@attrs.frozen(kw_only=True)
class RemoteConfig:
    """The incus CLI's configuration of remotes (see :func:`load_remotes`)."""

    #: The configuration directory (None: the user has no home directory to keep one in).
    directory: Path | None
    #: Its config.yml, which may not exist (the CLI then knows only its built-in remotes).
    path: Path | None
    #: The remote the CLI uses when none is named: $INCUS_REMOTE, else ``default-remote``.
    default_remote: str
    remotes: Mapping[str, Remote]

    def remote(self, name: object) -> Remote:
        """The remote of this name; InvalidInputError listing the known ones if none."""
        checked = remote_name(name)
        try:
            return self.remotes[checked]
        except KeyError:
            if self.path is None:
                where = "no configuration directory: built-in remotes only"
            elif not exists(self.path):
                where = f"{self.path} does not exist: built-in remotes only"
            else:
                where = str(self.path)
            raise InvalidInputError(
                f"No remote {checked!r} in the incus CLI's configuration ({where}); known "
                f"remotes: {', '.join(sorted(self.remotes))}. Add it with "
                "incus_images.add_remote() or `incus remote add`."
            ) from None


def remote_name(value: object, argument: str = "remote") -> str:
    """A remote name: what the CLI allows (no colon), and a safe file name, since it names
    ``servercerts/<name>.crt``."""
    name = text(value, f"{argument} name", empty=False)
    if ":" in name:
        raise InvalidInputError(f"{argument} name {name!r:.100}: remote names may not contain ':'")
    if (
        "/" in name
        or name in (".", "..")
        or not name.isprintable()
        or len(name.encode("utf-8")) > _MAX_NAME_BYTES
    ):
        raise InvalidInputError(
            f"{argument} name {name!r:.100} cannot name a file (servercerts/<name>.crt): use "
            f"printable characters without '/', at most {_MAX_NAME_BYTES} bytes"
        )
    return name


def _expand_env(path: str) -> str:
    """Go's os.ExpandEnv, which the CLI applies to $INCUS_CONF: $NAME and ${NAME}, unset
    variables expanding to nothing."""
    return re.sub(
        r"\$(?:\{([^}]*)\}|(\w+))",
        lambda match: os.environ.get(match.group(1) or match.group(2), ""),
        path,
    )


def config_directory(environ: Mapping[str, str] | None = None) -> Path | None:
    """Where the CLI keeps its configuration: $INCUS_CONF, else ~/.config/incus ($HOME, else
    the user's home directory, when it exists); None without either."""
    env = os.environ if environ is None else environ
    if env.get("INCUS_CONF"):
        return Path(_expand_env(env["INCUS_CONF"]))
    home = env.get("HOME")
    if not home or not os.path.exists(home):
        try:
            home = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:
            return None
        if not home or not os.path.exists(home):
            return None
    return Path(home) / ".config" / "incus"


def _given_directory(config_dir: object) -> Path | None:
    if config_dir is None:
        return config_directory()
    if not isinstance(config_dir, str | os.PathLike):
        raise InvalidInputError(f"config_dir must be a path, got {type(config_dir).__name__}")
    path = os.fspath(config_dir)
    if not isinstance(path, str):
        raise InvalidInputError("config_dir must be a str path")
    return Path(text(path, "config_dir", empty=False))


def _broken(path: Path, message: str) -> ConfigurationError:
    return ConfigurationError(message, path=str(path))


def read_config_text(path: Path) -> str | None:
    """The text of a config.yml (None: there is none), or ConfigurationError naming it."""
    data = read_small_file_if_any(path, _CONFIG, limit=_MAX_CONFIG_BYTES, refuse=configuration_file)
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _broken(path, f"{_CONFIG} {path} is not UTF-8 text: {exc}") from None


def compose_config(text: str, path: Path) -> yaml.Node | None:
    """config.yml's text as a YAML node tree (None: empty), or ConfigurationError naming it."""
    import yaml

    try:
        # PyYAML composes recursively: the depth is checked on the event stream first.
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > _MAX_DEPTH:
                    raise _broken(
                        path,
                        f"{_CONFIG} {path} nests deeper than {_MAX_DEPTH} levels: it is not "
                        "one (its remotes are three levels deep)",
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _broken(path, f"{_CONFIG} {path} is not valid YAML: {exc}") from None


def _pairs(node: yaml.Node | None, where: str, path: Path) -> list[tuple[str, yaml.Node]]:
    """The entries of a YAML mapping (a null is an empty one), keys as yaml.v2 reads them."""
    import yaml

    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG):
        return []
    if not isinstance(node, yaml.MappingNode):
        raise _broken(path, f"{path}: {where} must be a mapping, got {_describe(node)}")
    pairs = []
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode):
            raise _broken(path, f"{path}: {where} has a key that is not a name")
        pairs.append((key.value, value))
    return pairs


def _describe(node: yaml.Node) -> str:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.value!r:.60}"


def _string(node: yaml.Node, where: str, path: Path) -> str:
    # yaml.v2 stores any scalar's text in a string field (project: 123 is "123"); null is "".
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        raise _broken(path, f"{path}: {where} must be a string, got {_describe(node)}")
    return "" if node.tag == _NULL_TAG else str(node.value)


def _boolean(node: yaml.Node, where: str, path: Path) -> bool:
    import yaml

    if isinstance(node, yaml.ScalarNode):
        if node.tag == _NULL_TAG:
            return False
        if node.style is None and node.value in _YAML_TRUE | _YAML_FALSE:
            return node.value in _YAML_TRUE
    raise _broken(path, f"{path}: {where} must be true or false, got {_describe(node)}")


def _parse_file(path: Path) -> tuple[str, dict[str, dict[str, Any]]] | None:
    """(default-remote, {name: fields}) of a config.yml (None: there is none), checked as
    yaml.v2 decodes it into cliconfig.Config; keys the CLI does not know are ignored, as
    yaml.v2 does."""
    text_ = read_config_text(path)
    if text_ is None:
        return None
    default = ""
    remotes: dict[str, dict[str, Any]] = {}
    for key, value in _pairs(compose_config(text_, path), "the document", path):
        if key == "default-remote":
            default = _string(value, "default-remote", path)
        elif key == "remotes":
            for name, node in _pairs(value, "remotes", path):
                remotes[name] = _remote_fields(name, node, path)
    return default, remotes


def _remote_fields(name: str, node: yaml.Node, path: Path) -> dict[str, Any]:
    fields: dict[str, Any] = {"addr": "", "auth_type": "", "project": "", "protocol": ""}
    fields["public"] = False
    for key, value in _pairs(node, f"remote {name!r}", path):
        where = f"remotes.{name}.{key}"
        if key in ("addr", "auth_type", "project", "protocol"):
            fields[key] = _string(value, where, path)
        elif key == "public":
            fields["public"] = _boolean(value, where, path)
    return fields


def load_remotes(config_dir: str | os.PathLike[str] | None = None) -> RemoteConfig:
    """Read the incus CLI's remotes as the CLI does (lxc/incus ``cliconfig.LoadConfig``).

    ``config_dir`` is the configuration directory; None: ``$INCUS_CONF``, else
    ``~/.config/incus``. Without a config.yml there, the CLI's built-in remotes ``local`` and
    ``images``. A file that is not a CLI configuration raises ConfigurationError naming it.
    """
    directory = _given_directory(config_dir)
    path = directory / CONFIG_FILE if directory is not None else None
    parsed = _parse_file(path) if path is not None else None
    if parsed is None:
        # The CLI uses its defaults as they are: no system-wide remotes, no $INCUS_REMOTE.
        entries = {"images": dict(_IMAGES), "local": dict(_LOCAL)}
        default = ""
        global_names: set[str] = set()
    else:
        default, entries = parsed
        for fields in entries.values():
            if not fields["public"] and not fields["auth_type"]:
                fields["auth_type"] = "tls"
        global_names = set()
        global_parsed = _parse_file(_global_directory() / CONFIG_FILE)
        for name, fields in global_parsed[1].items() if global_parsed else ():
            if name not in entries:
                entries[name] = fields
                global_names.add(name)
        # The static remote: its address is fixed, only its project comes from the file.
        project = entries.get("local", {}).get("project", "")
        entries["local"] = dict(_LOCAL, project=project)
        global_names.discard("local")
        default = os.environ.get("INCUS_REMOTE") or default
    remotes = {
        name: _remote(name, fields, directory, is_global=name in global_names)
        for name, fields in sorted(entries.items())
    }
    return RemoteConfig(
        directory=directory,
        path=path,
        default_remote=default or DEFAULT_REMOTE,
        remotes=remotes,
    )


def _global_directory() -> Path:
    return Path(os.environ.get("INCUS_GLOBAL_CONF") or GLOBAL_CONFIG_DIR)


def _remote(
    name: str, fields: Mapping[str, Any], directory: Path | None, *, is_global: bool
) -> Remote:
    server_cert = client_cert = client_key = client_ca = None
    try:
        safe = remote_name(name) == name
    except InvalidInputError:
        safe = False  # a name no file may be made from: it has no certificates
    if safe and directory is not None:
        certs = (_global_directory() if is_global else directory) / "servercerts"
        server_cert = certs / f"{name}.crt"
        own = directory / "clientcerts"
        if exists(own / f"{name}.crt") and exists(own / f"{name}.key"):
            client_cert, client_key, client_ca = (
                own / f"{name}{ext}" for ext in (".crt", ".key", ".ca")
            )
        else:
            client_cert, client_key, client_ca = (
                directory / f"client{ext}" for ext in (".crt", ".key", ".ca")
            )
    return Remote(
        name=name,
        addr=fields.get("addr", ""),
        protocol=fields.get("protocol") or "incus",
        public=bool(fields.get("public")),
        project=fields.get("project") or None,
        auth_type=fields.get("auth_type") or None,
        is_global=is_global,
        server_certificate=server_cert,
        client_certificate=client_cert,
        client_key=client_key,
        client_ca=client_ca,
    )
