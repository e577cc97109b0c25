"""How images, aliases, operations and their lists look in Jupyter and in IPython.

Jupyter calls ``_repr_html_``; IPython's pretty printer (the terminal, ``%pprint``, and the
``text/plain`` part of a notebook output) calls ``_repr_pretty_``. Both hooks come from
:func:`displayed`, the decorator of the models and of the list types, which also names the view
that draws each (``@displayed(image_card)``); everything else lives here, so the models stay
plain data, and this room knows the models only by the attributes it reads (the protocols
below): it imports nothing of theirs. Each model is first turned into a :class:`Card` (one
object) or a :class:`Table` (a list); one renderer per format draws those.

Everything shown comes from the server and is user data (property keys and values above all),
so every piece of text is cut to :data:`MAX_TEXT` characters, has its non-printable characters
escaped (a terminal never receives an escape sequence, a row never breaks), and is HTML-escaped
on its way into HTML. Output is bounded: at most :data:`MAX_ENTRIES` entries of a property map
and :data:`MAX_ROWS` rows of a list are drawn, then "… and N more". The lists themselves keep
every item: only the view is cut.

Nothing here is imported at import time beyond the standard library: IPython is never imported
(the pretty printer is passed in).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from itertools import islice
from typing import Any, Protocol, TypeVar

__all__ = [
    "MAX_ENTRIES",
    "MAX_ROWS",
    "MAX_TEXT",
    "displayed",
    "human_size",
    "local_time",
    "short_fingerprint",
]

#: Characters of one value drawn; a longer one ends in "…". Property values are free text
#: (a description may be a page), and a cell wider than this stops being a table.
MAX_TEXT = 80
#: Entries of a property map (or an operation's metadata and resources) drawn per object.
#: Images carry a handful; a map of thousands would bury the rest of the card.
MAX_ENTRIES = 30
#: Rows of a list's table. With the caps above, the HTML of any list stays under 300 KiB even
#: when every value is as long as allowed and every character needs escaping (about 25 KiB
#: for 100 ordinary images; tests/test_display.py checks the worst case).
MAX_ROWS = 100
#: The fingerprint digits shown, as the incus CLI shows them.
SHORT_FINGERPRINT = 12
#: What a missing value (a date Incus sends as its zero time, an empty field) is drawn as.
MISSING = "—"

#: Left-aligned, top-aligned cells: notebooks right-align table cells by default, which
#: scatters text columns. Scoped to our class so it touches no other output.
_STYLE = (
    "<style>.incus-images th,.incus-images td{text-align:left;vertical-align:top}"
    ".incus-images caption{text-align:left}</style>"
)


C = TypeVar("C", bound=type)


class AliasView(Protocol):
    """What the drawing reads of an ImageAlias."""

    @property
    def name(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def description(self) -> str: ...


class SourceView(Protocol):
    """What the drawing reads of an ImageSource."""

    @property
    def server(self) -> str: ...
    @property
    def alias(self) -> str: ...


class ImageView(Protocol):
    """What the drawing reads of an Image."""

    @property
    def fingerprint(self) -> str: ...
    @property
    def aliases(self) -> Sequence[AliasView]: ...
    @property
    def type(self) -> str: ...
    @property
    def architecture(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def public(self) -> bool: ...
    @property
    def auto_update(self) -> bool: ...
    @property
    def project(self) -> str: ...
    @property
    def profiles(self) -> Sequence[str]: ...
    @property
    def update_source(self) -> SourceView | None: ...
    @property
    def created_at(self) -> datetime | None: ...
    @property
    def uploaded_at(self) -> datetime | None: ...
    @property
    def last_used_at(self) -> datetime | None: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def properties(self) -> Mapping[str, str]: ...


class OperationView(Protocol):
    """What the drawing reads of an Operation."""

    @property
    def id(self) -> str: ...
    @property
    def class_(self) -> str: ...
    @property
    def description(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def status_code(self) -> int: ...
    @property
    def err(self) -> str: ...
    @property
    def may_cancel(self) -> bool: ...
    @property
    def created_at(self) -> datetime | None: ...
    @property
    def updated_at(self) -> datetime | None: ...
    @property
    def location(self) -> str: ...
    @property
    def resources(self) -> Mapping[str, Sequence[str]]: ...
    @property
    def metadata(self) -> Mapping[str, Any] | None: ...


class RequestorView(Protocol):
    """What the event cards read of an ``EventRequestor``."""

    @property
    def username(self) -> str: ...
    @property
    def protocol(self) -> str: ...


class ImageEventView(Protocol):
    """What the card reads of an ``ImageEvent``."""

    @property
    def action(self) -> str: ...
    @property
    def fingerprint(self) -> str | None: ...
    @property
    def alias(self) -> str | None: ...
    @property
    def old_alias(self) -> str | None: ...
    @property
    def project(self) -> str: ...
    @property
    def location(self) -> str: ...
    @property
    def requestor(self) -> RequestorView | None: ...
    @property
    def at(self) -> datetime: ...


class LifecycleEventView(Protocol):
    """What the card reads of a ``LifecycleEvent``."""

    @property
    def action(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def project(self) -> str: ...
    @property
    def location(self) -> str: ...
    @property
    def requestor(self) -> RequestorView | None: ...
    @property
    def context(self) -> Mapping[str, Any]: ...
    @property
    def at(self) -> datetime: ...


class OperationEventView(Protocol):
    """What the card reads of an ``OperationEvent``."""

    @property
    def operation(self) -> OperationView: ...
    @property
    def project(self) -> str: ...
    @property
    def location(self) -> str: ...
    @property
    def at(self) -> datetime: ...


class GapView(Protocol):
    """What the card reads of an ``EventGap``."""

    @property
    def since(self) -> datetime: ...
    @property
    def until(self) -> datetime: ...


class PrettyPrinter(Protocol):
    """The part of ``IPython.lib.pretty.RepresentationPrinter`` used here."""

    def text(self, obj: str) -> None: ...


# A display hook must never raise: the models are attrs classes anyone can build by hand with
# values of the wrong type (hypothesis does, to print its examples). Such an object shows as
# its plain repr instead of a traceback in place of the cell's output.


def _repr_html_(self: object) -> str | None:
    try:
        return to_html(self)
    except Exception:  # noqa: BLE001 - see above; None makes Jupyter show the text form
        return None


def _repr_pretty_(self: object, printer: PrettyPrinter, cycle: bool) -> None:
    if cycle:
        printer.text("[...]")
        return
    try:
        text = to_text(self)
    except Exception:  # noqa: BLE001 - see above
        text = repr(list(self)) if isinstance(self, list) else repr(self)
    printer.text(text)


def displayed(
    view: Callable[[Any], Card | Table], *, items: type | None = None
) -> Callable[[C], C]:
    """Give a model or list type the Jupyter (``_repr_html_``) and IPython (``_repr_pretty_``)
    hooks, drawing it with ``view``; a list type names the type of its ``items`` (a list
    holding anything else shows as a plain list: anything can be appended to it). The hooks
    go into the class itself, not a base class: IPython takes the first ``__repr__`` it finds
    in the MRO, and attrs defines one in every model."""

    def decorate(cls: C) -> C:
        cls._repr_html_ = _repr_html_  # type: ignore[attr-defined]
        cls._repr_pretty_ = _repr_pretty_  # type: ignore[attr-defined]
        cls._incus_view = staticmethod(view)  # type: ignore[attr-defined]
        cls._incus_items = items  # type: ignore[attr-defined]
        return cls

    return decorate


# --------------------------------------------------------------------------------------------
# Values.


def short_fingerprint(fingerprint: str) -> str:
    """The first 12 characters of a fingerprint, as the incus CLI shows it."""
    return fingerprint[:SHORT_FINGERPRINT]


_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def human_size(size: int) -> str:
    """A byte count in binary units: ``512 B``, ``3.2 MiB``."""
    if size < 1024:
        return f"{size} B"
    value = float(size)
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            break
    return f"{value:.1f} {unit}"


def local_time(moment: datetime | None) -> str:
    """A timestamp in the local time zone (to the minute), or the missing mark for None; one
    that would leave the calendar in local time (9999-12-31T23:59:59-12:00 is in year 10000
    east of it) is shown in its own offset, as given."""
    if moment is None:
        return MISSING
    with contextlib.suppress(OverflowError, ValueError):
        moment = moment.astimezone()
    # The year by hand: the C library's %Y does not pad years before 1000.
    return f"{moment.year:04d}-{moment:%m-%d %H:%M %Z}".rstrip()


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _scalar(value: object) -> str:
    """Operation metadata values are any JSON; strings are shown without quotes."""
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, ensure_ascii=False)


def clean(text: str) -> str:
    """Text with its non-printable characters escaped (``\\n``, ``\\x1b``), so that no value
    can break a row or drive a terminal, then cut to MAX_TEXT characters. Not yet HTML-escaped."""
    # One more character than fits tells whether anything was cut.
    head = text[: MAX_TEXT + 1]
    if not head.isprintable():
        head = "".join(
            char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
            for char in head
        )
    if len(head) > MAX_TEXT:
        return head[: MAX_TEXT - 1] + "…"
    return head


# --------------------------------------------------------------------------------------------
# What is drawn: cells, cards (one object) and tables (a list), independent of the format.


# Plain classes, not NamedTuple or attrs: building those costs a good part of a millisecond at
# import, for programs that may never draw anything.


class Cell:
    """One value. ``title`` is shown on hover in HTML (the full fingerprint)."""

    __slots__ = ("code", "text", "title")

    def __init__(self, text: str, title: str = "", code: bool = False) -> None:
        self.text = text
        self.title = title
        self.code = code


class Pairs:
    """A small key/value table inside a card, cut to MAX_ENTRIES."""

    __slots__ = ("more", "rows")

    def __init__(self, rows: list[tuple[str, str]], more: int) -> None:
        self.rows = rows
        self.more = more


class Card:
    """One object: a heading and labelled fields."""

    __slots__ = ("fields", "heading", "kind")

    def __init__(self, kind: str, heading: Cell, fields: list[tuple[str, Cell | Pairs]]) -> None:
        self.kind = kind
        self.heading = heading
        self.fields = fields


class Table:
    """A list: one row per item, cut to MAX_ROWS."""

    __slots__ = ("caption", "columns", "more", "rows")

    def __init__(self, caption: str, columns: list[str], rows: list[list[Cell]], more: int) -> None:
        self.caption = caption
        self.columns = columns
        self.rows = rows
        self.more = more


def _fingerprint_cell(fingerprint: str) -> Cell:
    return Cell(short_fingerprint(fingerprint), title=fingerprint, code=True)


def _pairs(entries: Iterable[tuple[str, str]], count: int) -> Pairs:
    rows = list(islice(entries, MAX_ENTRIES))
    return Pairs(rows, count - len(rows))


def _count(count: int, noun: str, nouns: str) -> str:
    return f"{count} {noun if count == 1 else nouns}"


def image_card(image: ImageView) -> Card:
    fields: list[tuple[str, Cell | Pairs]] = [
        ("aliases", Cell(", ".join(alias.name for alias in image.aliases) or MISSING)),
        ("type", Cell(image.type or MISSING)),
        ("architecture", Cell(image.architecture or MISSING)),
        ("size", Cell(human_size(image.size))),
        ("public", Cell(_yes_no(image.public))),
        ("auto update", Cell(_yes_no(image.auto_update))),
    ]
    if image.project:
        fields.append(("project", Cell(image.project)))
    if image.profiles:
        fields.append(("profiles", Cell(", ".join(image.profiles))))
    if image.update_source is not None:
        source = image.update_source
        fields.append(("source", Cell(" ".join(filter(None, (source.server, source.alias))))))
    fields += [
        ("created", Cell(local_time(image.created_at))),
        ("uploaded", Cell(local_time(image.uploaded_at))),
        ("last used", Cell(local_time(image.last_used_at))),
        ("expires", Cell(local_time(image.expires_at))),
        ("properties", _pairs(image.properties.items(), len(image.properties))),
    ]
    return Card("Image", _fingerprint_cell(image.fingerprint), fields)


def alias_card(alias: AliasView) -> Card:
    return Card(
        "ImageAlias",
        Cell(alias.name),
        [
            ("target", _fingerprint_cell(alias.target) if alias.target else Cell(MISSING)),
            ("type", Cell(alias.type or MISSING)),
            ("description", Cell(alias.description or MISSING)),
        ],
    )


def operation_card(operation: OperationView) -> Card:
    fields: list[tuple[str, Cell | Pairs]] = [
        ("description", Cell(operation.description or MISSING)),
        ("status", Cell(f"{operation.status or MISSING} ({operation.status_code})")),
    ]
    if operation.err:
        fields.append(("error", Cell(operation.err)))
    fields += [
        ("class", Cell(operation.class_ or MISSING)),
        ("may cancel", Cell(_yes_no(operation.may_cancel))),
        ("created", Cell(local_time(operation.created_at))),
        ("updated", Cell(local_time(operation.updated_at))),
    ]
    if operation.location:
        fields.append(("location", Cell(operation.location)))
    resources = operation.resources
    fields.append(
        (
            "resources",
            _pairs(((kind, ", ".join(urls)) for kind, urls in resources.items()), len(resources)),
        )
    )
    metadata = operation.metadata or {}
    fields.append(
        (
            "metadata",
            _pairs(((key, _scalar(value)) for key, value in metadata.items()), len(metadata)),
        )
    )
    return Card("Operation", Cell(operation.id, code=True), fields)


def _requestor(requestor: RequestorView | None) -> Cell:
    if requestor is None or not requestor.username:
        return Cell(MISSING)
    via = f" ({requestor.protocol})" if requestor.protocol else ""
    return Cell(requestor.username + via)


def _event_place(project: str, location: str) -> list[tuple[str, Cell | Pairs]]:
    fields: list[tuple[str, Cell | Pairs]] = [("project", Cell(project or MISSING))]
    # "none" is what a daemon outside a cluster says.
    if location and location != "none":
        fields.append(("member", Cell(location)))
    return fields


def image_event_card(event: ImageEventView) -> Card:
    fields: list[tuple[str, Cell | Pairs]] = []
    if event.fingerprint is not None:
        fields.append(("image", _fingerprint_cell(event.fingerprint)))
    if event.alias is not None:
        fields.append(("alias", Cell(event.alias)))
    if event.old_alias is not None:
        fields.append(("former name", Cell(event.old_alias)))
    fields += _event_place(event.project, event.location)
    fields += [("by", _requestor(event.requestor)), ("at", Cell(local_time(event.at)))]
    return Card("ImageEvent", Cell(event.action), fields)


def lifecycle_event_card(event: LifecycleEventView) -> Card:
    fields: list[tuple[str, Cell | Pairs]] = [("source", Cell(event.source, code=True))]
    fields += _event_place(event.project, event.location)
    context = event.context
    fields += [
        ("by", _requestor(event.requestor)),
        ("at", Cell(local_time(event.at))),
        ("context", _pairs(((k, _scalar(v)) for k, v in context.items()), len(context))),
    ]
    return Card("LifecycleEvent", Cell(event.action), fields)


def operation_event_card(event: OperationEventView) -> Card:
    # The operation's metadata is left out: a token operation's carries an image's download
    # secret, sent to every listener of the project; a card is easily shared.
    operation = event.operation
    fields: list[tuple[str, Cell | Pairs]] = [
        ("operation", Cell(operation.id, code=True)),
        ("status", Cell(f"{operation.status or MISSING} ({operation.status_code})")),
    ]
    if operation.err:
        fields.append(("error", Cell(operation.err)))
    fields += _event_place(event.project, event.location)
    resources = operation.resources
    fields += [
        ("at", Cell(local_time(event.at))),
        (
            "resources",
            _pairs(((kind, ", ".join(urls)) for kind, urls in resources.items()), len(resources)),
        ),
    ]
    return Card("OperationEvent", Cell(operation.description or MISSING), fields)


def event_gap_card(gap: GapView) -> Card:
    seconds = (gap.until - gap.since).total_seconds()
    return Card(
        "EventGap",
        Cell(f"events may be missing for {seconds:.1f} s"),
        [("since", Cell(local_time(gap.since))), ("until", Cell(local_time(gap.until)))],
    )


def images_table(images: Sequence[ImageView]) -> Table:
    # The project column only matters when the list spans projects (all_projects=True).
    by_project = len({image.project for image in images}) > 1
    columns = ["alias", "fingerprint", "public", "description", "architecture", "type", "size"]
    columns += ["uploaded", *(["project"] if by_project else [])]
    rows = [
        [
            Cell(", ".join(alias.name for alias in image.aliases)),
            _fingerprint_cell(image.fingerprint),
            Cell(_yes_no(image.public)),
            Cell(image.properties.get("description", "")),
            Cell(image.architecture),
            Cell(image.type),
            Cell(human_size(image.size)),
            Cell(local_time(image.uploaded_at)),
            *([Cell(image.project)] if by_project else []),
        ]
        for image in images[:MAX_ROWS]
    ]
    return Table(_count(len(images), "image", "images"), columns, rows, len(images) - len(rows))


def aliases_table(aliases: Sequence[AliasView]) -> Table:
    rows = [
        [
            Cell(alias.name),
            _fingerprint_cell(alias.target),
            Cell(alias.type),
            Cell(alias.description),
        ]
        for alias in aliases[:MAX_ROWS]
    ]
    columns = ["alias", "fingerprint", "type", "description"]
    return Table(_count(len(aliases), "alias", "aliases"), columns, rows, len(aliases) - len(rows))


def _view(obj: object) -> Card | Table | None:
    """What to draw for obj; None for a list holding something else than its items' type
    (it is a list: anything can be appended), which then shows as a plain list."""
    view: Callable[[Any], Card | Table] | None = getattr(type(obj), "_incus_view", None)
    if view is None:
        return None
    items: type | None = getattr(type(obj), "_incus_items", None)
    # A list holding anything else than its items' type shows as a plain list.
    if items is not None and not (isinstance(obj, list) and all(isinstance(i, items) for i in obj)):
        return None
    return view(obj)


# --------------------------------------------------------------------------------------------
# HTML.


def _html_text(text: str) -> str:
    """Server text, cleaned and HTML-escaped (quotes too: it also goes into attributes)."""
    # Imported here: the html module costs a millisecond at import, and most programs never
    # draw anything.
    from html import escape

    return escape(clean(text), quote=True)


def _more_text(count: int) -> str:
    return f"… and {count} more"


def _cell_html(cell: Cell) -> str:
    text = _html_text(cell.text)
    if cell.code:
        title = f' title="{_html_text(cell.title)}"' if cell.title else ""
        return f"<code{title}>{text}</code>"
    return text


def _pairs_html(pairs: Pairs) -> str:
    if not pairs.rows:
        return MISSING
    rows = "".join(
        f"<tr><th>{_html_text(key)}</th><td>{_html_text(value)}</td></tr>"
        for key, value in pairs.rows
    )
    if pairs.more:
        rows += f'<tr><td colspan="2">{_more_text(pairs.more)}</td></tr>'
    return f"<table>{rows}</table>"


def card_html(card: Card) -> str:
    rows = "".join(
        f"<tr><th>{label}</th>"
        f"<td>{_pairs_html(value) if isinstance(value, Pairs) else _cell_html(value)}</td></tr>"
        for label, value in card.fields
    )
    caption = f"<caption><b>{card.kind}</b> {_cell_html(card.heading)}</caption>"
    return f'{_STYLE}<table class="incus-images">{caption}{rows}</table>'


def table_html(table: Table) -> str:
    head = "".join(f"<th>{column}</th>" for column in table.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell_html(cell)}</td>" for cell in row) + "</tr>"
        for row in table.rows
    )
    foot = ""
    if table.more:
        more = f'<td colspan="{len(table.columns)}">{_more_text(table.more)}</td>'
        foot = f"<tfoot><tr>{more}</tr></tfoot>"
    return (
        f'{_STYLE}<table class="incus-images"><caption>{table.caption}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody>{foot}</table>"
    )


def to_html(obj: object) -> str | None:
    """The HTML of a model or list; None when there is no view of obj (see _view)."""
    view = _view(obj)
    if view is None:
        return None
    return card_html(view) if isinstance(view, Card) else table_html(view)


# --------------------------------------------------------------------------------------------
# Text, for IPython's pretty printer.


def _columns_text(rows: Sequence[Sequence[str]]) -> list[str]:
    """Rows of already clean text as aligned columns."""
    widths = [max(len(row[index]) for row in rows) for index in range(len(rows[0]))]
    return [
        "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def card_text(card: Card) -> str:
    width = max(len(label) for label, _ in card.fields)
    lines = [f"{card.kind} {clean(card.heading.text)}"]
    for label, value in card.fields:
        prefix = f"  {label.ljust(width)}  "
        if not isinstance(value, Pairs):
            lines.append(prefix + clean(value.text))
        elif not value.rows:
            lines.append(prefix + MISSING)
        else:
            entries = _columns_text([(clean(key), clean(text)) for key, text in value.rows])
            if value.more:
                entries.append(_more_text(value.more))
            lines.append(prefix + entries[0])
            lines += [" " * len(prefix) + entry for entry in entries[1:]]
    return "\n".join(lines)


def table_text(table: Table) -> str:
    header = [column.upper() for column in table.columns]
    lines = _columns_text([header, *([clean(cell.text) for cell in row] for row in table.rows)])
    if table.more:
        lines.append(_more_text(table.more))
    return "\n".join([table.caption, *lines])


def to_text(obj: object) -> str:
    """The text of a model or list; a plain repr when there is no view of obj (see _view)."""
    view = _view(obj)
    if view is None:
        return repr(list(obj)) if isinstance(obj, list) else repr(obj)
    return card_text(view) if isinstance(view, Card) else table_text(view)
