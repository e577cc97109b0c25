"""Checks of the caller's arguments: refuse bad input before anything is sent.

Every check raises :class:`InvalidInputError` naming the argument. Request paths are built only
from values that passed these checks: fingerprints are 1 to 64 hex digits (Incus matches them
with SQL ``LIKE``, where ``_`` and ``%`` are wildcards), operation ids are plain tokens, and
alias names are percent-encoded as one path segment by :mod:`._protocol`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from ._architectures import ARCHITECTURES
from ._errors import InvalidInputError
from ._models import Operation

_FINGERPRINT_PREFIX = re.compile(r"[0-9a-fA-F]{1,64}")
# Characters that would let a value spill into another header or end the request.
_HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_OPERATIONS_PATH = "/1.0/operations/"
#: Longest duration a timeout may name (about four months): sockets take no more.
MAX_SECONDS = 1e7


def text(value: object, argument: str, *, empty: bool = True) -> str:
    """A string the server will receive exactly: no NUL (incusd cuts text at one) and no lone
    surrogate (it has no UTF-8 encoding, so it could not be sent at all)."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{argument} must be a string, got {type(value).__name__}")
    if not value and not empty:
        raise InvalidInputError(f"{argument} must not be empty")
    if "\x00" in value:
        raise InvalidInputError(f"{argument} {value!r:.100} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{argument} {value!r:.100} contains a lone surrogate, which has no UTF-8 form"
        ) from None
    return value


def fingerprint_prefix(value: object, *, argument: str = "fingerprint") -> str:
    """Return value as a lower-case fingerprint prefix (1 to 64 hex digits), or refuse it."""
    if not isinstance(value, str):
        raise InvalidInputError(
            f"{argument} must be a string of 1 to 64 hex digits, got {type(value).__name__}"
        )
    if not _FINGERPRINT_PREFIX.fullmatch(value):
        raise InvalidInputError(
            f"{argument} {value!r} is not a fingerprint or a prefix of one (1 to 64 hex digits)"
        )
    return value.lower()


def full_fingerprint(value: object, *, argument: str = "fingerprint") -> str:
    """Return value as a full lower-case SHA-256 fingerprint (64 hex digits), or refuse it."""
    prefix = fingerprint_prefix(value, argument=argument)
    if len(prefix) != 64:
        raise InvalidInputError(f"{argument} {value!r} must be a full SHA-256: 64 hex digits")
    return prefix


def alias_name(value: object, *, argument: str = "name") -> str:
    """An alias name to look up, change or delete: any non-empty text that can be sent (an
    alias another client made with an odd name can still be managed)."""
    # Incus can be driven into an empty-named alias that can never be changed or deleted.
    return text(value, f"alias {argument}", empty=False)


#: The longest name a new alias may get (incusd checks none; file systems' names stop here).
MAX_ALIAS_NAME = 255
#: C0 and C1 control characters (DEL too), and the bidirectional overrides and isolates: a
#: name holding one prints as another name, or rewrites the terminal that shows it.
_UNSAFE_IN_ALIAS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def new_alias_name(value: object, *, argument: str = "name") -> str:
    """A name a new alias gets, whoever chose it (the caller, or a copy's source): non-empty,
    at most 255 characters, no NUL, lone surrogate, control character or bidirectional
    override."""
    name = alias_name(value, argument=argument)
    if len(name) > MAX_ALIAS_NAME:
        raise InvalidInputError(
            f"alias {argument} {name!r:.60}... is {len(name)} characters long; at most "
            f"{MAX_ALIAS_NAME} are allowed"
        )
    unsafe = _UNSAFE_IN_ALIAS.search(name)
    if unsafe is not None:
        raise InvalidInputError(
            f"alias {argument} {name!r:.100} contains the control character "
            f"U+{ord(unsafe.group()):04X}"
        )
    return name


def profile_name(value: object, *, argument: str = "profile") -> str:
    return text(value, f"{argument} name", empty=False)


def names_list(values: object, argument: str, check: Callable[..., str]) -> list[str]:
    """A list of alias or profile names: a sequence of checked, distinct strings."""
    if values is None:
        return []
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise InvalidInputError(f"{argument} must be a list of names, got {values!r}")
    names = [check(value, argument=argument) for value in values]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{argument} names a name twice: {names!r}")
    return names


def callback(value: object, argument: str) -> None:
    if value is not None and not callable(value):
        raise InvalidInputError(f"{argument} must be a callable or None, got {value!r}")


def alias_fields(target: object, description: object) -> dict[str, str]:
    """An alias request's target (a checked fingerprint prefix) and, unless None, description."""
    fields = {"target": fingerprint_prefix(target, argument="target")}
    if description is not None:
        fields["description"] = text(description, "description")
    return fields


def properties_map(value: object, *, argument: str = "properties") -> dict[str, str]:
    """Check an image properties mapping: non-empty string keys, non-empty string values.

    Incus treats an empty value as "delete this key" when properties are updated, so an empty
    value could not be stored as given; it is refused instead of being silently dropped.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{argument} must be a mapping of str to str, got {value!r}")
    checked: dict[str, str] = {}
    for key, item in value.items():
        text(key, f"{argument}: a key", empty=False)
        text(item, f"{argument}[{key!r}]")
        if item == "":
            raise InvalidInputError(
                f"{argument}[{key!r}] is empty: Incus deletes properties whose value is empty, "
                "so leave the key out instead"
            )
        checked[key] = item
    return checked


def seconds(value: object, argument: str, *, allow_zero: bool = False) -> float | None:
    """A duration in seconds: None (no limit) or a finite number > 0 (>= 0 with allow_zero)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{argument} must be None or a number of seconds, got {value!r}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidInputError(
            f"{argument} must be None (no limit) or a finite number {bound}, got {value!r}"
        )
    if value > MAX_SECONDS:
        # Sockets cannot wait that long (the blocking client would fail deep inside).
        raise InvalidInputError(
            f"{argument}={value!r} is more than {MAX_SECONDS:g} s; use None for no limit"
        )
    return float(value)


def boolean(value: object, argument: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInputError(f"{argument} must be True or False, got {value!r}")
    return value


def filename_header(value: object) -> bytes:
    """The X-Incus-filename header value: UTF-8 bytes (Incus stores the raw header bytes)."""
    text(value, "filename", empty=False)
    assert isinstance(value, str)
    if value != value.strip(" \t"):
        # HTTP drops a header value's outer blanks (h11 refuses to send them at all).
        raise InvalidInputError(f"filename {value!r} starts or ends with a space")
    if _HEADER_UNSAFE.search(value):
        raise InvalidInputError(f"filename {value!r} contains control characters")
    return value.encode("utf-8")


def operation_id(operation: object) -> str:
    """The id of an Operation, an operation id or an operation URL, checked."""
    if isinstance(operation, Operation):
        value = operation.id
        if not isinstance(value, str):
            raise InvalidInputError(f"{operation!r} has no operation id")
    elif isinstance(operation, str):
        value = operation.rsplit("?", 1)[0]
        if value.startswith(_OPERATIONS_PATH):
            value = value[len(_OPERATIONS_PATH) :]
    else:
        raise InvalidInputError(
            f"operation must be an Operation, an id or a URL, got {type(operation).__name__}"
        )
    if not re.fullmatch(r"[0-9A-Za-z-]{1,128}", value):
        raise InvalidInputError(f"{operation!r} is not an operation id")
    return value


_SECRET = re.compile(r"[0-9A-Za-z]{1,128}")


def secret_token(value: object, *, argument: str = "secret") -> str:
    """An image download or push secret: 1 to 128 letters and digits (Incus makes 64 hex)."""
    if not isinstance(value, str) or not _SECRET.fullmatch(value):
        raise InvalidInputError(f"{argument} must be the secret Incus issued (letters and digits)")
    return value


def choice(value: object, argument: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(repr(option) for option in choices)
        raise InvalidInputError(f"{argument} must be one of {options}, got {value!r:.100}")
    return value


def optional_boolean(value: object, argument: str) -> bool | None:
    return None if value is None else boolean(value, argument)


def aware_datetime(value: object, argument: str) -> datetime | None:
    """None, or a timezone-aware datetime after year 1 (Incus reads year 1 as "unset")."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidInputError(f"{argument} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidInputError(
            f"{argument} must be timezone-aware (e.g. datetime.now(timezone.utc) + ...), got "
            f"the naive {value.isoformat()}"
        )
    if value.year <= 1:
        raise InvalidInputError(f"{argument}: Incus reads a year-1 time as 'no expiry'")
    return value


#: The two kinds of image.
IMAGE_TYPES = ("container", "virtual-machine")


def image_filter(value: object) -> str:
    """An Incus filter expression for the images list."""
    return text(value, "filter", empty=False)


def architecture_name(value: object, *, argument: str = "architecture") -> str:
    """An architecture name incusd knows (``x86_64``, ``aarch64``, or another spelling such
    as ``amd64``, ``arm64``), as given; refused otherwise."""
    name = text(value, argument, empty=False)
    if name not in ARCHITECTURES:
        known = ", ".join(sorted(set(ARCHITECTURES.values())))
        raise InvalidInputError(
            f"{argument} {name!r:.100} is not an architecture Incus knows (its names: {known})"
        )
    return name
