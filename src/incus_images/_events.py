"""Typed events from incusd's event stream (``/1.0/events``), and the parser of one frame.

Flavour-neutral and free of I/O: the reader of the websocket (not here yet) hands each text
message to :func:`parse_event`, which returns a typed event, or None for a frame to skip.

incusd 6.0.4 sends one JSON object per text message (captured in ``tests/data/events``)::

    {"type": "lifecycle", "timestamp": "2026-12-06T11:08:17.890836015Z",
     "metadata": {"action": "image-created", "source": "/1.0/images/<fp>?project=p2",
                  "context": {...}, "requestor": {"username": ..., "protocol": ..., ...}},
     "location": "none", "project": "p2"}
    {"type": "operation", "timestamp": ..., "metadata": <an operation>, "project": ..., ...}

Everything in a frame is server input: a frame that is too long, is not JSON, has a field of
the wrong type, or names an image or alias that is not valid is logged at WARNING and skipped;
it never ends the stream.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, unquote

import attrs

from . import _validate as validate
from ._converter import converter, parse_timestamp
from ._display import (
    displayed,
    event_gap_card,
    image_event_card,
    lifecycle_event_card,
    operation_event_card,
)
from ._errors import InvalidInputError
from ._logging import logger
from ._models import Operation
from ._protocol import STRUCTURE_ERRORS, loads

#: The longest frame read as an event. incusd's image and operation events are 250 to 510
#: bytes (measured, incusd 6.0.4); an operation with many resources stays far below this.
#: Parsed, the densest JSON of this size (``[{},{},...]``) costs Python about 25 MiB.
MAX_EVENT_BYTES = 1024 * 1024

#: Longest piece of a server's text (a source, a reason) quoted in a WARNING. The frame
#: itself is never quoted: a token operation's event carries an image's download secret.
_QUOTED = 200

#: Lifecycle actions of images, whose source is ``/1.0/images/<fingerprint>``.
IMAGE_ACTIONS = frozenset(
    {
        "image-created",
        "image-updated",
        "image-deleted",
        # incusd 6.0.4 sends it only when a newer image was found; it names the old image.
        "image-refreshed",
        "image-retrieved",
        "image-secret-created",
    }
)
#: Lifecycle actions of aliases, whose source is ``/1.0/images/aliases/<name>``.
ALIAS_ACTIONS = frozenset(
    {"image-alias-created", "image-alias-updated", "image-alias-renamed", "image-alias-deleted"}
)

_IMAGES = "/1.0/images/"
_ALIASES = "/1.0/images/aliases/"


@attrs.frozen(kw_only=True)
class EventRequestor:
    """Who caused a lifecycle event, as the server names them."""

    username: str = ""
    #: ``unix``, ``tls``, ``oidc``, ... (how the requestor reached the server).
    protocol: str = ""
    address: str = ""


@displayed(lifecycle_event_card)
@attrs.frozen(kw_only=True)
class LifecycleEvent:
    """A change to any object on the server (an instance started, a project created, ...)."""

    #: What happened, such as ``project-created``.
    action: str
    #: The API path of the object, as the server sent it (percent-encoded, with its query).
    source: str
    #: The project the object belongs to.
    project: str
    #: The cluster member that sent the event (``none`` outside a cluster).
    location: str = ""
    requestor: EventRequestor | None = None
    #: What the server adds about the change; its keys depend on the action.
    context: dict[str, Any] = attrs.field(factory=dict)
    #: When the server sent the event (timezone-aware).
    at: datetime


@displayed(image_event_card)
@attrs.frozen(kw_only=True)
class ImageEvent:
    """A change to an image or an image alias.

    Image actions (``image-created``, ``-updated``, ``-deleted``, ``-refreshed``,
    ``-retrieved``, ``-secret-created``) name the image by ``fingerprint``; alias actions
    (``image-alias-created``, ``-updated``, ``-renamed``, ``-deleted``) name the alias by
    ``alias``, and a rename names the alias's former name in ``old_alias``. ``image-refreshed``
    names the image that was replaced.
    """

    action: str
    fingerprint: str | None = None
    alias: str | None = None
    old_alias: str | None = None
    project: str
    location: str = ""
    requestor: EventRequestor | None = None
    at: datetime


@displayed(operation_event_card)
@attrs.frozen(kw_only=True)
class OperationEvent:
    """A background task on the server changed (created, running, done).

    Its operation's ``metadata`` may hold a secret (an image's download secret is sent to
    every listener of the project): the event's repr and card leave the metadata out.
    """

    operation: Operation = attrs.field(repr=lambda op: f"<Operation {op.id} {op.status}>")
    project: str
    location: str = ""
    at: datetime


@displayed(event_gap_card)
@attrs.frozen(kw_only=True)
class EventGap:
    """Events from ``since`` to ``until`` may have been missed (the stream was lost and
    reconnected): what they would have said must be read from the server again."""

    since: datetime
    until: datetime


Event = ImageEvent | LifecycleEvent | OperationEvent


class _BadFrame(ValueError):
    """A frame that cannot be read as an event (the message says why)."""


class SkipWarnings:
    """The WARNINGs of one stream about frames it skipped: at most one per
    ``SKIP_WARNING_SECONDS``, the frames skipped meanwhile counted in the next one. A server
    that sends nothing but garbage would otherwise fill the log (some 19,000 lines a second,
    measured on a loopback socket)."""

    def __init__(self) -> None:
        self._quiet_until = 0.0
        self._held = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now < self._quiet_until:
            self._held += 1
            return
        if self._held:
            message += " (and %d more skipped since the last such warning)"
            args = (*args, self._held)
            self._held = 0
        self._quiet_until = now + SKIP_WARNING_SECONDS
        logger.warning(message, *args)


#: Seconds between two WARNINGs of one stream about the frames it skipped.
SKIP_WARNING_SECONDS = 10.0


def parse_event(frame: bytes | str, *, warnings: SkipWarnings | None = None) -> Event | None:
    """Return the event one text message of the stream holds, or None for a frame to skip:
    one of a type that is not modelled (``logging``, ...), or one that is too long, is not
    JSON, or does not have the documented shape (logged at WARNING, through ``warnings``
    when given)."""
    warn = logger.warning if warnings is None else warnings.warning
    size = len(frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame)
    if size > MAX_EVENT_BYTES:
        warn(
            "Skipped an event of %d bytes from the event stream: at most %d are read",
            size,
            MAX_EVENT_BYTES,
        )
        return None
    try:
        data = loads(frame.encode("utf-8") if isinstance(frame, str) else frame)
        return _event(data)
    except (_BadFrame, UnicodeError, *STRUCTURE_ERRORS) as exc:
        warn(
            "Skipped an event of %d bytes from the event stream that cannot be read: %s",
            size,
            str(exc)[:_QUOTED],
        )
        return None


def _event(data: Any) -> Event | None:
    if not isinstance(data, dict):
        raise _BadFrame(f"expected a JSON object, got {type(data).__name__}")
    kind = _field(data, "type", str)
    if kind not in ("lifecycle", "operation"):
        # incusd adds event types with API extensions; the caller asked for the ones it reads.
        logger.debug("Skipped an event of type %r from the event stream", kind[:_QUOTED])
        return None
    at = parse_timestamp(_field(data, "timestamp", str))
    if at is None:
        raise _BadFrame("its timestamp is the zero time")
    metadata = _field(data, "metadata", dict)
    project = _field(data, "project", str, "")
    location = _field(data, "location", str, "")
    if kind == "operation":
        operation = converter.structure(metadata, Operation)
        return OperationEvent(operation=operation, project=project, location=location, at=at)
    action = _field(metadata, "action", str)
    source = _field(metadata, "source", str)
    requestor_data = _field(metadata, "requestor", dict, None)
    requestor = (
        None
        if requestor_data is None
        else EventRequestor(
            username=_field(requestor_data, "username", str, ""),
            protocol=_field(requestor_data, "protocol", str, ""),
            address=_field(requestor_data, "address", str, ""),
        )
    )
    context = _field(metadata, "context", dict, None) or {}
    if action in IMAGE_ACTIONS or action in ALIAS_ACTIONS:
        name, query_project = _source(source, alias=action in ALIAS_ACTIONS)
        project = project or query_project
        if action in IMAGE_ACTIONS:
            return ImageEvent(
                action=action,
                fingerprint=name,
                project=project,
                location=location,
                requestor=requestor,
                at=at,
            )
        old_alias = context.get("old_name") if action == "image-alias-renamed" else None
        if old_alias is not None:
            old_alias = _checked(validate.alias_name, old_alias, "its old alias name")
        return ImageEvent(
            action=action,
            alias=name,
            old_alias=old_alias,
            project=project,
            location=location,
            requestor=requestor,
            at=at,
        )
    return LifecycleEvent(
        action=action,
        source=source,
        project=project,
        location=location,
        requestor=requestor,
        context=context,
        at=at,
    )


_MISSING = object()


def _field(data: dict[str, Any], key: str, kind: type[Any], default: Any = _MISSING) -> Any:
    """data[key], of exactly this JSON type; null or absent gives the default when there is
    one."""
    value = data.get(key)
    if value is None and default is not _MISSING:
        return default
    if not isinstance(value, kind):
        raise _BadFrame(f"{key!r} is {type(value).__name__}, not {kind.__name__}")
    if isinstance(value, str):
        # JSON may spell a lone surrogate; such text could never be sent back.
        value.encode("utf-8")
    return value


def _source(source: str, *, alias: bool) -> tuple[str, str]:
    """The fingerprint (or alias name) a lifecycle source names, and its ``?project=``."""
    path, _, query = source.partition("?")
    prefix = _ALIASES if alias else _IMAGES
    if not path.startswith(prefix):
        raise _BadFrame(f"its source {source[:_QUOTED]!r} is not under {prefix}")
    segment = path[len(prefix) :]
    if "/" in segment:
        raise _BadFrame(f"its source {source[:_QUOTED]!r} names more than one path segment")
    name = unquote(segment, errors="strict")
    projects = parse_qs(query, errors="strict").get("project", [""])
    if alias:
        return _checked(validate.alias_name, name, "its alias name"), projects[-1]
    return _checked(validate.full_fingerprint, name, "its fingerprint"), projects[-1]


def _checked(check: Callable[[object], str], value: object, what: str) -> str:
    """The value as ``check`` (one of ``_validate``'s) returns it; a refusal as a bad frame."""
    try:
        checked = check(value)
    except InvalidInputError as exc:
        raise _BadFrame(f"{what} is not valid: {exc}") from None
    return checked


#: The event types a stream may ask for: the ones this module reads.
STREAM_TYPES = ("lifecycle", "operation")


def stream_types(types: object) -> tuple[str, ...]:
    """The ``types=`` of ``events()``, checked: some of STREAM_TYPES, each once, in order."""
    if isinstance(types, str | bytes) or not hasattr(types, "__iter__"):
        raise InvalidInputError(
            f"types must be a sequence of event types such as ('lifecycle', 'operation'), "
            f"got {type(types).__name__}"
        )
    chosen = list(types)
    for kind in chosen:
        if kind not in STREAM_TYPES:
            raise InvalidInputError(
                f"types may hold {' and '.join(map(repr, STREAM_TYPES))}, not {kind!r:.100}"
            )
    if not chosen:
        raise InvalidInputError("types must name at least one event type")
    return tuple(kind for kind in STREAM_TYPES if kind in chosen)


def every_event(event: Event) -> Event:
    """What ``events()`` keeps of each event: all of it."""
    return event


def image_change(event: Event) -> ImageEvent | None:
    """What ``images.watch()`` keeps of each event: the changes of images and aliases."""
    return event if isinstance(event, ImageEvent) else None
