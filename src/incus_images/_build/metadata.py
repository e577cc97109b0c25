"""``metadata.yaml`` from a build's arguments, checked before anything is read or sent.

incusd reads ``architecture`` (a name it knows), ``creation_date`` (it refuses 0),
``properties`` (the image's defaults) and ``templates`` (files it renders into an instance:
``when`` is any of create, copy, start; ``template`` a file under ``templates/`` in the
tarball). Keys are written sorted, so the same arguments give the same bytes.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from typing import Any

import attrs

from .._architectures import ARCHITECTURES, local_architecture
from .._errors import InvalidInputError
from .._validate import architecture_name, text

#: When incusd applies a template (its only triggers).
TRIGGERS = ("create", "copy", "start")

#: The keys a template rule may have, as incusd reads them.
TEMPLATE_KEYS = frozenset({"when", "create_only", "template", "properties"})


@attrs.frozen(kw_only=True)
class Metadata:
    """What metadata.yaml says, checked; ``creation_date`` is decided when the tarball is made."""

    architecture: str
    properties: dict[str, str]
    templates: dict[str, dict[str, Any]]
    #: Template file names (as in the tarball, under ``templates/``) -> the file on disk.
    template_files: dict[str, bytes]

    def render(self, creation_date: int) -> bytes:
        import yaml

        document: dict[str, Any] = {
            "architecture": self.architecture,
            "creation_date": creation_date,
            "properties": self.properties,
        }
        if self.templates:
            document["templates"] = self.templates
        rendered: str = yaml.safe_dump(
            document, sort_keys=True, default_flow_style=False, allow_unicode=True
        )
        return rendered.encode("utf-8")


def build_architecture(value: object) -> str:
    """The Incus name of the architecture asked for (default: this machine's)."""
    if value is None:
        local = local_architecture()
        if local not in ARCHITECTURES:
            raise InvalidInputError(
                f"this machine's architecture {local!r} is not one Incus knows: give architecture="
            )
        return ARCHITECTURES[local]
    return ARCHITECTURES[architecture_name(value)]


def properties_of(value: object) -> dict[str, str]:
    """Image properties: string keys and string values (incusd reads no other kind)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"properties must be a mapping of str to str, got {type(value).__name__}"
        )
    checked: dict[str, str] = {}
    for key, item in value.items():
        text(key, "properties: a key", empty=False)
        if not isinstance(item, str):
            raise InvalidInputError(
                f"properties[{key!r}] must be a string, got {type(item).__name__} {item!r:.60}"
            )
        checked[key] = text(item, f"properties[{key!r}]")
    return checked


def _template_name(value: object, where: str) -> str:
    name = text(value, f"{where}['template']", empty=False)
    parts = name.split("/")
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise InvalidInputError(
            f"{where}['template'] {name!r:.100} must be a relative file name inside "
            "templates_dir (no '..', no leading '/')"
        )
    return name


def templates_of(
    value: object, templates_dir: object
) -> tuple[dict[str, dict[str, Any]], dict[str, bytes]]:
    """Template rules, and the files they name (checked to exist in templates_dir)."""
    if templates_dir is None:
        directory = os.fsencode(os.getcwd())
    elif isinstance(templates_dir, str | bytes | os.PathLike):
        directory = os.fsencode(templates_dir)
        if not os.path.isdir(directory):
            raise InvalidInputError(f"templates_dir {templates_dir!r} is not a directory")
    else:
        raise InvalidInputError(f"templates_dir must be a path, got {type(templates_dir).__name__}")
    if value is None:
        return {}, {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"templates must be a mapping of paths to template rules, got {type(value).__name__}"
        )
    rules: dict[str, dict[str, Any]] = {}
    files: dict[str, bytes] = {}
    for path, rule in value.items():
        text(path, "templates: a path", empty=False)
        where = f"templates[{path!r}]"
        if not path.startswith("/"):
            raise InvalidInputError(f"{where}: the path must be absolute (inside the instance)")
        if not isinstance(rule, Mapping):
            raise InvalidInputError(f"{where} must be a mapping, got {type(rule).__name__}")
        unknown = sorted(str(key) for key in rule if key not in TEMPLATE_KEYS)
        if unknown:
            raise InvalidInputError(
                f"{where} has keys incusd does not read: {', '.join(unknown)} (it reads "
                f"{', '.join(sorted(TEMPLATE_KEYS))})"
            )
        when = rule.get("when")
        if (
            not isinstance(when, list | tuple)
            or not when
            or any(not isinstance(item, str) or item not in TRIGGERS for item in when)
        ):
            raise InvalidInputError(
                f"{where}['when'] must be a non-empty list of {', '.join(TRIGGERS)}, got "
                f"{when!r:.100}"
            )
        name = _template_name(rule.get("template"), where)
        file = os.path.join(directory, os.fsencode(name))
        if not os.path.isfile(file):
            raise InvalidInputError(
                f"{where}: the template file {os.fsdecode(file)!r} does not exist (templates "
                "are looked for in templates_dir, by default the current directory)"
            )
        checked: dict[str, Any] = {"when": list(when), "template": name}
        if "create_only" in rule:
            if not isinstance(rule["create_only"], bool):
                raise InvalidInputError(f"{where}['create_only'] must be a bool")
            checked["create_only"] = rule["create_only"]
        if "properties" in rule:
            checked["properties"] = properties_of(rule["properties"])
        rules[path] = checked
        files[name] = file
    return rules, files


def fixed_time(value: object) -> int | None:
    """``mtime=``: None, whole seconds (an int), or an aware datetime; the time must be after
    the epoch (incusd refuses a creation_date of 0)."""
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidInputError(
                f"mtime {value!r} is a naive datetime: give an aware one (with tzinfo)"
            )
        seconds = int(value.timestamp())
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        raise InvalidInputError(
            f"mtime must be None, whole seconds (int) or an aware datetime, got {value!r:.100}"
        )
    if not 0 < seconds < 8**11:
        raise InvalidInputError(
            f"mtime {value!r} is out of range: it must be after 1970-01-01 (incusd refuses a "
            "creation date of 0)"
        )
    return seconds


def source_date_epoch() -> int | None:
    """``$SOURCE_DATE_EPOCH`` (reproducible-builds.org), when set; refused when malformed."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    if not value.isascii() or not value.isdigit() or not 0 < int(value) < 8**11:
        raise InvalidInputError(
            f"$SOURCE_DATE_EPOCH {value!r:.40} is not a positive number of seconds"
        )
    return int(value)
