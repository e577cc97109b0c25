"""The cattrs converter that turns Incus JSON into the models of :mod:`._models`.

Policy:

* At run time unknown keys are ignored: Incus adds fields through API extensions, and a newer
  server must not break an older client. Tests build the converter with ``strict=True``, which
  forbids unknown keys, so a fixture that drifts from the models fails loudly.
* ``null`` means "absent": the field's default applies (Incus sends ``null`` for empty maps and
  lists in places).
* Timestamps become aware datetimes; the zero time ``0001-01-01T00:00:00Z`` becomes None.
* Inside :class:`Image`, each alias gets the image's fingerprint and type as target and type.
* Types are checked, never coerced: ``"public": "yes"`` or a numeric fingerprint is refused
  (cattrs would turn them into ``True`` and ``"123"``).
* Identifiers the SDK later puts into request paths or file names are checked as strictly as a
  caller's input: an image fingerprint (and an alias target) is 64 lower-case hex digits, an
  operation id is a UUID. An image's size, which bounds its transfers, is not negative.
"""

from __future__ import annotations

import functools
import re
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from ._models import Image, ImageAlias, ImageSource, Operation, ServerEnvironment, ServerInfo

__all__ = ["converter", "make_converter", "parse_timestamp", "request_body"]

T = TypeVar("T")

_MODELS: tuple[type[Any], ...] = (ImageAlias, ImageSource, Image, Operation)
#: Read leniently even by the strict converter: GET /1.0 is a large object that grows with
#: every API extension, of which the SDK reads a few fields.
_LENIENT_MODELS: tuple[type[Any], ...] = (ServerEnvironment, ServerInfo)
_RENAMED = {Operation: {"class_": "class"}}


@functools.cache
def _request_bodies() -> tuple[type[Any], ...]:
    """The request bodies; a field left at None is not sent. Imported when a body is first
    serialized: a script that only reads images sends none."""
    from . import _requests as bodies

    return (
        bodies.AliasEntry,
        bodies.ImagesPostSource,
        bodies.ImagesPost,
        bodies.ImagePatch,
        bodies.ImagePut,
        bodies.ImageExportPost,
        bodies.ImageAliasesEntryPost,
        bodies.ImageAliasesPost,
        bodies.ImageAliasPatch,
    )


_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _exactly(kind: type[T]) -> Callable[[Any, Any], T]:
    """A structure hook that takes values of exactly this JSON type and refuses the rest."""

    def hook(value: Any, _: Any) -> T:
        # type() and not isinstance(): bool is an int, and True is not a size.
        if type(value) is not kind:
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r:.80}")
        if isinstance(value, str):
            # JSON may spell a lone surrogate; such text could never be sent back.
            value.encode("utf-8")
        return value

    return hook


def _identifier(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.fullmatch(value):
        raise ValueError(f"{what} {value!r:.100} is not valid")
    return value


def parse_timestamp(value: Any) -> datetime | None:
    """Parse an Incus RFC 3339 timestamp (nanoseconds are cut to microseconds)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        # Python 3.11 accepts the "Z" suffix and more than six fractional digits.
        parsed = datetime.fromisoformat(value)
    else:
        raise TypeError(f"expected an RFC 3339 timestamp string, got {value!r}")
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {value!r}")
    if parsed.year <= 1:  # Go's zero time: "never" or "unset"
        return None
    return parsed


def _without_nulls(structure: Callable[[Any, Any], T]) -> Callable[[Any, Any], T]:
    @functools.wraps(structure)
    def hook(data: Any, cls: Any) -> T:
        if not isinstance(data, dict):
            # cattrs would read any container as an object of defaults ("[]" as a model).
            raise TypeError(f"expected a JSON object, got {type(data).__name__}")
        return structure({key: value for key, value in data.items() if value is not None}, cls)

    return hook


def _list_of(structure_item: Callable[[Any, Any], Any], item: Any) -> Callable[[Any, Any], Any]:
    def hook(data: Any, _: Any) -> list[Any]:
        if type(data) is not list:
            raise TypeError(f"expected a JSON array, got {type(data).__name__}")
        return [structure_item(value, item) for value in data]

    return hook


def _containers(conv: cattrs.Converter) -> None:
    """Lists must be JSON arrays and maps JSON objects: cattrs would turn a string into a list
    of its characters, and an object into the list of its keys."""

    def is_list(kind: Any) -> bool:
        return typing.get_origin(kind) is list

    def is_map(kind: Any) -> bool:
        return typing.get_origin(kind) is dict

    def list_hook(kind: Any) -> Callable[[Any, Any], Any]:
        (item,) = typing.get_args(kind)
        return _list_of(conv.get_structure_hook(item), item)

    def map_hook(kind: Any) -> Callable[[Any, Any], Any]:
        key_type, value_type = typing.get_args(kind)
        structure_key = conv.get_structure_hook(key_type)
        structure_value = conv.get_structure_hook(value_type)

        def hook(data: Any, _: Any) -> dict[Any, Any]:
            if type(data) is not dict:
                raise TypeError(f"expected a JSON object, got {type(data).__name__}")
            return {
                structure_key(key, key_type): structure_value(value, value_type)
                for key, value in data.items()
            }

        return hook

    conv.register_structure_hook_factory(is_list, list_hook)
    conv.register_structure_hook_factory(is_map, map_hook)


def make_converter(*, strict: bool = False) -> cattrs.Converter:
    """Build a converter; ``strict=True`` forbids keys the models do not know.

    The hooks of the models and request bodies are generated when first used, each once:
    generating them all took about 7 ms, which a script that only lists images need not pay.
    """
    conv = cattrs.Converter(forbid_extra_keys=strict)
    for kind in (str, bool, int):
        conv.register_structure_hook(kind, _exactly(kind))
    _containers(conv)
    conv.register_structure_hook(datetime | None, lambda value, _: parse_timestamp(value))
    # RFC 3339, as Go's encoding/json reads time.Time.
    # In UTC: RFC 3339 offsets have no seconds, which isoformat() may write.
    conv.register_unstructure_hook(datetime, lambda value: value.astimezone(UTC).isoformat())

    def unstructure_request(request: type[Any]) -> Callable[[Any], Any]:
        omit_none: dict[str, Any] = {
            field.name: override(omit_if_default=True)
            for field in attrs.fields(request)
            if field.default is None
        }
        return make_dict_unstructure_fn(request, conv, **omit_none)

    def generated(model: type[Any]) -> Callable[[Any, Any], Any]:
        """The model's structuring function, without the identifier checks below."""
        overrides: dict[str, Any] = {
            name: override(rename=json_key) for name, json_key in _RENAMED.get(model, {}).items()
        }
        if model is Image:
            # The server sends an image's aliases without a target: they get the image's
            # fingerprint (below) instead of the check an alias read on its own must pass.
            overrides["aliases"] = override(struct_hook=_list_of(generated(ImageAlias), ImageAlias))
        forbid = strict and model not in _LENIENT_MODELS
        structure = make_dict_structure_fn(
            model, conv, _cattrs_forbid_extra_keys=forbid, **overrides
        )
        return _without_nulls(structure)

    def structure_model(model: type[Any]) -> Callable[[Any, Any], Any]:
        structure = generated(model)
        if model is Image:

            def image_with_alias_targets(data: Any, cls: Any) -> Image:
                image: Image = structure(data, cls)
                _identifier(image.fingerprint, _FINGERPRINT, "image fingerprint")
                if image.size < 0:
                    # A size bounds every transfer of the image (exports stop past it).
                    raise ValueError(f"image size {image.size} is not a size")
                aliases = [
                    attrs.evolve(alias, target=image.fingerprint, type=image.type)
                    for alias in image.aliases
                ]
                return attrs.evolve(image, aliases=aliases)

            return image_with_alias_targets
        if model is ImageAlias:

            def checked_alias(data: Any, cls: Any) -> ImageAlias:
                # An alias on its own names its image (inside an Image it gets the image's).
                alias: ImageAlias = structure(data, cls)
                _identifier(alias.target, _FINGERPRINT, "alias target")
                return alias

            return checked_alias
        if model is Operation:

            def checked_operation(data: Any, cls: Any) -> Operation:
                operation: Operation = structure(data, cls)
                _identifier(operation.id, _UUID, "operation id")
                return operation

            return checked_operation
        return structure

    conv.register_unstructure_hook_factory(
        lambda kind: kind in _request_bodies(), unstructure_request
    )
    conv.register_structure_hook_factory(
        lambda kind: kind in _MODELS + _LENIENT_MODELS, structure_model
    )
    return conv


#: The run-time converter (lenient about unknown keys).
converter = make_converter()


def request_body(body: Any) -> Any:
    """The JSON value of a request body: a request model serialized, anything else as it is."""
    if attrs.has(type(body)):
        return converter.unstructure(body)
    return body
