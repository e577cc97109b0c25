"""How models and lists look in Jupyter (``_repr_html_``) and IPython (``_repr_pretty_``).

Everything drawn comes from the server, so most of these tests feed hostile text: markup must
arrive as text, control characters must not reach a terminal, and no input may produce an
unbounded page.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from IPython.lib.pretty import pretty

from incus_images import Image, ImageAlias, ImageAliasList, ImageList, Operation
from incus_images._display import (
    MAX_ENTRIES,
    MAX_ROWS,
    MAX_TEXT,
    MISSING,
    clean,
    human_size,
    local_time,
    short_fingerprint,
)

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    # Hypothesis's caches go outside the checkout (as in tests/fuzz_settings.py).
    set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "incus_images-hypothesis")

FP_A = "a1b2c3d4e5f6" + "0" * 52
FP_B = "b" * 64
OP_ID = "0b7e5c2c-1d2a-4c8e-9a55-2f1f3c4d5e6f"
HOSTILE = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>', "a&b", "it's"]

#: The markup the renderers write: anything else in the output came from the data.
OUR_TAGS = {"style", "table", "caption", "b", "code", "tr", "th", "td", "thead", "tbody", "tfoot"}
OUR_ATTRIBUTES = {"class", "title", "colspan"}


class Markup(HTMLParser):
    """What a browser would see: the tags and attributes, and the text between them."""

    def __init__(self, document: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.styles: list[str] = []
        self._in_style = False
        self.feed(document)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += attrs
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        (self.styles if self._in_style else self.text).append(data)

    def cells(self) -> list[str]:
        """The pieces of text, stripped (the spaces between a caption's parts drop out)."""
        return [chunk.strip() for chunk in self.text if chunk.strip()]

    def titles(self) -> list[str | None]:
        return [value for name, value in self.attributes if name == "title"]


def html_of(obj: Any) -> str:
    document = obj._repr_html_()
    assert isinstance(document, str)
    return document


def an_image(**fields: Any) -> Image:
    values: dict[str, Any] = {
        "fingerprint": FP_A,
        "size": 3_355_443,
        "architecture": "x86_64",
        "type": "container",
        "properties": {"os": "debian", "description": "Debian 12"},
        "aliases": [ImageAlias(name="debian/12", target=FP_A, type="container")],
        "uploaded_at": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    }
    values.update(fields)
    return Image(**values)


@pytest.fixture
def local_zone() -> Iterator[None]:
    """The process's local time zone set to UTC+05:30, named IST, as a user's might be."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "IST-5:30"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


# --------------------------------------------------------------------------------------------
# Values


def test_short_fingerprint_is_what_the_cli_shows() -> None:
    assert short_fingerprint(FP_A) == "a1b2c3d4e5f6"


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (3_355_443, "3.2 MiB"),
        (1024**3 * 5 // 2, "2.5 GiB"),
        (1024**4, "1.0 TiB"),
        (1024**7, "1024.0 EiB"),
    ],
)
def test_human_size(size: int, shown: str) -> None:
    assert human_size(size) == shown


@pytest.mark.usefixtures("local_zone")
def test_dates_are_shown_in_local_time() -> None:
    assert local_time(datetime(2024, 5, 1, 23, 45, tzinfo=UTC)) == "2024-05-02 05:15 IST"
    image = an_image(created_at=datetime(2024, 1, 31, 20, 0, tzinfo=UTC))
    assert "<th>created</th><td>2024-02-01 01:30 IST</td>" in html_of(image)
    assert "created       2024-02-01 01:30 IST" in pretty(image)


@pytest.mark.usefixtures("local_zone")
@pytest.mark.parametrize(
    ("moment", "shown"),
    [
        (
            datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-12))),
            "9999-12-31 23:59 UTC-12:00",
        ),
        (
            datetime(1, 1, 1, 0, 0, tzinfo=timezone(timedelta(hours=14))),
            "0001-01-01 00:00 UTC+14:00",
        ),
    ],
)
def test_a_date_that_leaves_the_calendar_in_local_time_is_shown_as_given(
    moment: datetime, shown: str
) -> None:
    assert local_time(moment) == shown
    image = an_image(expires_at=moment)
    assert f"<th>expires</th><td>{shown}</td>" in html_of(image)
    assert shown in pretty(image)


def test_missing_dates_are_marked_as_missing() -> None:
    image = an_image(uploaded_at=None)
    assert local_time(None) == MISSING
    document = html_of(image)
    for label in ("created", "uploaded", "last used", "expires"):
        assert f"<th>{label}</th><td>{MISSING}</td>" in document
    assert f"uploaded      {MISSING}" in pretty(image)
    assert pretty(ImageList([image])).splitlines()[2].endswith(MISSING)


def test_clean_cuts_long_text_and_escapes_control_characters() -> None:
    assert clean("x" * MAX_TEXT) == "x" * MAX_TEXT
    assert clean("x" * (MAX_TEXT + 1)) == "x" * (MAX_TEXT - 1) + "…"
    assert clean("red\x1b[31m\nline\u2028") == "red\\x1b[31m\\nline\\u2028"
    # Escaping lengthens text; the cut comes after it, so no value outgrows MAX_TEXT.
    assert len(clean("\x00" * MAX_TEXT)) == MAX_TEXT


# --------------------------------------------------------------------------------------------
# One object


def test_image_card() -> None:
    image = an_image()
    markup = Markup(html_of(image))
    assert markup.titles() == [FP_A]
    cells = markup.cells()
    assert cells[cells.index("Image") + 1] == "a1b2c3d4e5f6"
    for label, value in [
        ("aliases", "debian/12"),
        ("size", "3.2 MiB"),
        ("architecture", "x86_64"),
        ("os", "debian"),
        ("description", "Debian 12"),
    ]:
        assert cells[cells.index(label) + 1] == value
    text = pretty(image)
    assert text.splitlines()[0] == "Image a1b2c3d4e5f6"
    assert FP_A not in text
    assert "  properties    os           debian\n                description  Debian 12" in text


def test_empty_properties() -> None:
    image = an_image(properties={})
    assert f"<th>properties</th><td>{MISSING}</td>" in html_of(image)
    assert f"properties    {MISSING}" in pretty(image)


def test_alias_card() -> None:
    alias = ImageAlias(name="debian/12", target=FP_B, type="container", description="d")
    markup = Markup(html_of(alias))
    assert markup.titles() == [FP_B]
    assert markup.cells()[:2] == ["ImageAlias", "debian/12"]
    assert markup.cells()[markup.cells().index("target") + 1] == "bbbbbbbbbbbb"
    text = pretty(alias)
    assert text.splitlines()[:2] == ["ImageAlias debian/12", "  target       bbbbbbbbbbbb"]


def test_operation_card() -> None:
    operation = Operation(
        id=OP_ID,
        class_="task",
        description="Downloading image",
        status="Failure",
        status_code=400,
        err="boom",
        resources={"images": [f"/1.0/images/{FP_A}"]},
        metadata={"progress": {"percent": "40"}, "fingerprint": FP_A},
        created_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    )
    cells = Markup(html_of(operation)).cells()
    assert cells[cells.index("status") + 1] == "Failure (400)"
    assert cells[cells.index("error") + 1] == "boom"
    assert cells[cells.index("images") + 1] == f"/1.0/images/{FP_A}"
    assert cells[cells.index("progress") + 1] == '{"percent": "40"}'
    text = pretty(operation)
    assert text.splitlines()[0] == f"Operation {OP_ID}"
    assert "  metadata     progress     {" in text


def test_a_huge_property_map_is_cut() -> None:
    properties = {f"key{index:05}": "v" * 10_000 for index in range(5_000)}
    image = an_image(properties=properties)
    document = html_of(image)
    markup = Markup(document)
    assert sum(cell.startswith("key") for cell in markup.cells()) == MAX_ENTRIES
    assert f"… and {5_000 - MAX_ENTRIES} more" in markup.cells()
    assert len(document) < 32 * 1024
    assert f"… and {5_000 - MAX_ENTRIES} more" in pretty(image)


# --------------------------------------------------------------------------------------------
# Lists


def test_a_list_of_images_is_one_table_with_a_row_per_image() -> None:
    images = ImageList([an_image(), an_image(fingerprint=FP_B, aliases=[], properties={})])
    markup = Markup(html_of(images))
    assert markup.tags.count("table") == 1
    assert markup.tags.count("tr") == 3
    assert markup.titles() == [FP_A, FP_B]
    lines = pretty(images).splitlines()
    assert lines[0] == "2 images"
    assert lines[1].split() == [
        "ALIAS",
        "FINGERPRINT",
        "PUBLIC",
        "DESCRIPTION",
        "ARCHITECTURE",
        "TYPE",
        "SIZE",
        "UPLOADED",
    ]
    assert lines[2].split()[:4] == ["debian/12", "a1b2c3d4e5f6", "no", "Debian"]
    assert lines[3].split()[:2] == ["bbbbbbbbbbbb", "no"]
    # The uploaded column lines up under its header.
    assert lines[2].index("2024") == lines[1].index("UPLOADED")


def test_the_project_column_appears_when_the_list_spans_projects() -> None:
    one = ImageList([an_image(project="default"), an_image(fingerprint=FP_B, project="default")])
    two = ImageList([an_image(project="default"), an_image(fingerprint=FP_B, project="dev")])
    assert "<th>project</th>" not in html_of(one)
    assert "<th>project</th>" in html_of(two)
    assert pretty(two).splitlines()[3].endswith("dev")


def test_a_list_of_aliases_is_one_table() -> None:
    aliases = ImageAliasList(
        [ImageAlias(name=f"a{index}", target=FP_B, type="container") for index in range(3)]
    )
    markup = Markup(html_of(aliases))
    assert markup.tags.count("tr") == 4
    assert markup.titles() == [FP_B] * 3
    assert pretty(aliases).splitlines()[:2] == [
        "3 aliases",
        "ALIAS  FINGERPRINT   TYPE       DESCRIPTION",
    ]


def test_empty_lists() -> None:
    assert pretty(ImageList()).splitlines() == [
        "0 images",
        "ALIAS  FINGERPRINT  PUBLIC  DESCRIPTION  ARCHITECTURE  TYPE  SIZE  UPLOADED",
    ]
    assert Markup(html_of(ImageAliasList())).tags.count("tr") == 1


def test_thousands_of_images_make_a_bounded_table() -> None:
    images = ImageList(an_image(fingerprint=f"{index:064x}") for index in range(5_000))
    markup = Markup(html_of(images))
    assert markup.tags.count("tr") == 1 + MAX_ROWS + 1
    assert f"… and {5_000 - MAX_ROWS} more" in markup.cells()
    lines = pretty(images).splitlines()
    assert len(lines) == 2 + MAX_ROWS + 1
    assert lines[-1] == f"… and {5_000 - MAX_ROWS} more"


def test_the_worst_case_list_stays_under_300_kib() -> None:
    """Every field as long as possible and made of a character whose escape is longest
    (six characters): the bound documented at MAX_ROWS holds."""
    worst = '"' * 10_000
    image = an_image(
        fingerprint=worst,
        architecture=worst,
        type=worst,
        project=worst,
        properties={"description": worst},
        aliases=[ImageAlias(name=worst)] * 100,
    )
    other_project = attrs.evolve(image, project="other")
    document = html_of(ImageList([image, other_project] * 5_000))
    assert "<th>project</th>" in document
    assert len(document.encode()) < 300 * 1024


# --------------------------------------------------------------------------------------------
# Still a list


def test_image_list_is_a_plain_list_otherwise() -> None:
    first, second = an_image(), an_image(fingerprint=FP_B)
    images = ImageList([first, second])
    assert isinstance(images, list)
    assert images == [first, second]
    assert [first, second] == images
    assert images != [second, first]
    assert len(images) == 2
    assert images[1] is second
    assert images[-1] is second
    assert type(images[:1]) is ImageList
    assert images[:1] == [first]
    assert images[::-1] == [second, first]
    assert sorted(images, key=lambda image: image.fingerprint, reverse=True) == [second, first]


def test_lists_pickle_as_themselves() -> None:
    images = ImageList([an_image()])
    aliases = ImageAliasList([ImageAlias(name="x", target=FP_A)])
    for items in (images, aliases):
        copy = pickle.loads(pickle.dumps(items))
        assert type(copy) is type(items)
        assert copy == items


def test_lists_encode_as_json_arrays() -> None:
    def encode(value: object) -> object:
        return attrs.asdict(value) if attrs.has(type(value)) else str(value)

    images = ImageList([an_image(), an_image(fingerprint=FP_B)])
    encoded = json.dumps(images, default=encode)
    assert encoded == json.dumps(list(images), default=encode)
    assert [entry["fingerprint"] for entry in json.loads(encoded)] == [FP_A, FP_B]
    assert json.dumps(ImageAliasList()) == "[]"


def test_a_list_holding_something_else_shows_as_a_plain_list() -> None:
    """It is a list, so anything can be appended; then there is no table to draw."""
    images = ImageList([an_image()])
    images.append("not an image")
    assert images._repr_html_() is None
    assert pretty(images) == repr(list(images))


def test_a_plain_list_of_models_prints_each_card() -> None:
    text = pretty([an_image(), ImageAlias(name="x", target=FP_B)])
    assert "Image a1b2c3d4e5f6" in text
    assert "ImageAlias x" in text


# --------------------------------------------------------------------------------------------
# Hostile text


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_property_text_arrives_as_text(hostile: str) -> None:
    image = an_image(properties={hostile: hostile, "description": hostile})
    for document in (html_of(image), html_of(ImageList([image]))):
        markup = Markup(document)
        assert set(markup.tags) <= OUR_TAGS
        assert {name for name, _ in markup.attributes} <= OUR_ATTRIBUTES
        assert hostile in markup.cells()


server_text = st.text(max_size=120)


@st.composite
def hostile_images(draw: st.DrawFn) -> Image:
    return Image(
        fingerprint=draw(server_text),
        architecture=draw(server_text),
        type=draw(server_text),
        project=draw(server_text),
        properties=draw(st.dictionaries(server_text, server_text, max_size=5)),
        aliases=[ImageAlias(name=name) for name in draw(st.lists(server_text, max_size=3))],
        profiles=draw(st.lists(server_text, max_size=3)),
    )


@st.composite
def hostile_operations(draw: st.DrawFn) -> Operation:
    return Operation(
        id=draw(server_text),
        class_=draw(server_text),
        description=draw(server_text),
        status=draw(server_text),
        err=draw(server_text),
        location=draw(server_text),
        metadata=draw(st.dictionaries(server_text, server_text, max_size=5)),
        resources=draw(st.dictionaries(server_text, st.lists(server_text, max_size=2))),
    )


def shown_strings(obj: Image | Operation, *, in_table: bool) -> list[str]:
    """The server's strings that the view of obj shows (as their cleaned text)."""
    if isinstance(obj, Operation):
        return [
            obj.id,
            obj.description,
            obj.status,
            obj.err,
            obj.location,
            *(obj.metadata or {}),
            *(obj.metadata or {}).values(),
            *obj.resources,
            *(", ".join(urls) for urls in obj.resources.values()),
        ]
    aliases = ", ".join(alias.name for alias in obj.aliases)
    if in_table:
        return [aliases, obj.architecture, obj.type, obj.properties.get("description", "")]
    return [
        aliases,
        obj.architecture,
        obj.type,
        obj.project,
        ", ".join(obj.profiles),
        *obj.properties,
        *obj.properties.values(),
    ]


# No example database: the run must not write .hypothesis/ into the checkout.
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "200")), deadline=None, database=None)
@given(st.one_of(hostile_images(), hostile_operations(), st.lists(hostile_images(), max_size=4)))
def test_no_server_text_becomes_markup(subject: Image | Operation | list[Image]) -> None:
    """Whatever the server sends, the HTML holds only our tags and attributes, every value
    reaches the reader as its (cleaned) text, and the text form is one printable line per
    row."""
    shown = ImageList(subject) if isinstance(subject, list) else subject
    markup = Markup(html_of(shown))
    assert set(markup.tags) <= OUR_TAGS
    assert {name for name, _ in markup.attributes} <= OUR_ATTRIBUTES
    everything = "".join(markup.text)
    in_table = isinstance(subject, list)
    for item in subject if isinstance(subject, list) else [subject]:
        if isinstance(item, Image) and item.fingerprint:
            assert clean(item.fingerprint) in markup.titles()
        for value in shown_strings(item, in_table=in_table):
            assert clean(value) in everything
    text = pretty(shown)
    assert all(char.isprintable() or char == "\n" for char in text)
    if isinstance(subject, list):
        assert len(text.splitlines()) == 2 + len(subject)


@pytest.mark.parametrize(
    "obj",
    [
        Operation(id=0, status_code=200),  # type: ignore[arg-type]
        an_image(size="big"),
        ImageList([an_image(uploaded_at="yesterday")]),
    ],
    ids=["operation-id", "image-size", "list-date"],
)
def test_a_hand_built_model_with_wrong_types_shows_its_plain_repr(obj: Any) -> None:
    # Nothing checks types when a model is built by hand; showing it must still not raise.
    plain = repr(list(obj)) if isinstance(obj, list) else repr(obj)
    assert pretty(obj) == plain
    assert obj._repr_html_() is None
