"""The cattrs converter that turns Incus JSON into the models of :mod:`._models`.

Policy:

* At run time unknown keys are ignored: Incus adds fields through API extensions, and a newer
  server must not break an older client. Tests build the converter with ``strict=True``, which
  forbids unknown keys, so a fixture that drifts from the models fails loudly.
* ``null`` means "absent": the field's default applies (Incus sends ``null`` for empty maps and
  lists in places).
* Timestamps become aware datetimes; the zero time ``0001-01-01T00:00:00Z`` becomes None.
* Inside :class:`Image`, each alias gets the image's fingerprint and type as target and type.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from ._models import Image, ImageAlias, ImageSource, Operation

__all__ = ["converter", "make_converter", "parse_timestamp"]

T = TypeVar("T")

# Models used inside other models come first: a model's structuring function takes the hooks
# of its fields' types as they are when it is generated.
_MODELS: tuple[type[Any], ...] = (ImageAlias, ImageSource, Image, Operation)
_RENAMED = {Operation: {"class_": "class"}}


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
        if isinstance(data, dict):
            data = {key: value for key, value in data.items() if value is not None}
        return structure(data, cls)

    return hook


def make_converter(*, strict: bool = False) -> cattrs.Converter:
    """Build a converter; ``strict=True`` forbids keys the models do not know."""
    conv = cattrs.Converter(forbid_extra_keys=strict)
    conv.register_structure_hook(datetime | None, lambda value, _: parse_timestamp(value))
    for model in _MODELS:
        renames: dict[str, Any] = {
            name: override(rename=json_key) for name, json_key in _RENAMED.get(model, {}).items()
        }
        generated = make_dict_structure_fn(model, conv, _cattrs_forbid_extra_keys=strict, **renames)
        conv.register_structure_hook(model, _without_nulls(generated))

    structure_image = conv.get_structure_hook(Image)

    def image_with_alias_targets(data: Any, cls: Any) -> Image:
        image: Image = structure_image(data, cls)
        aliases = [
            attrs.evolve(alias, target=image.fingerprint, type=image.type)
            for alias in image.aliases
        ]
        return attrs.evolve(image, aliases=aliases)

    conv.register_structure_hook(Image, image_with_alias_targets)
    return conv


#: The run-time converter (lenient about unknown keys).
converter = make_converter()
