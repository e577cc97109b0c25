"""client.events() and images.watch() over scripted sockets, in both flavours: what is kept,
what is refused before anything is sent, and how a lost stream is reopened (or not)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from incus_images import (
    AsyncClient,
    EventGap,
    ForbiddenError,
    ImageEvent,
    IncusConnectionError,
    InvalidInputError,
    OperationEvent,
)
from incus_images._async import events as events_module
from incus_images._async._event_stream import StreamLost

pytestmark = pytest.mark.anyio

FRAMES = Path(__file__).parent.parent / "data" / "events"


def frame(name: str) -> bytes:
    return (FRAMES / f"{name}.json").read_bytes().strip()


class ScriptedSocket:
    """Messages of one opened stream: bytes are given in turn, an exception is raised."""

    def __init__(self, script: list[bytes | Exception]) -> None:
        self.script = list(script)
        #: As the reader keeps it: when a whole frame last arrived (None: none yet).
        self.last_frame_at: datetime | None = None

    async def message(self) -> bytes:
        if not self.script:
            raise StreamLost("the script ended")
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        self.last_frame_at = datetime.now(UTC)
        return step


class Opener:
    """Stands for event_socket: each opening takes the next entry (a socket's script, or
    an exception the opening raises) and records what was asked for."""

    def __init__(self, *openings: list[bytes | Exception] | Exception) -> None:
        self.openings = list(openings)
        self.asked: list[tuple[str, bool]] = []
        self.open = 0
        self.closed = 0

    @asynccontextmanager
    async def __call__(
        self, connection: Any, *, types: str, all_projects: bool
    ) -> AsyncIterator[ScriptedSocket]:
        self.asked.append((types, all_projects))
        opening = self.openings.pop(0) if self.openings else StreamLost("nothing to open")
        if isinstance(opening, Exception):
            raise opening
        self.open += 1
        try:
            yield ScriptedSocket(opening)
        finally:
            self.closed += 1


@pytest.fixture
def opener(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(*openings: list[bytes | Exception] | Exception) -> Opener:
        scripted = Opener(*openings)
        monkeypatch.setattr(events_module, "event_socket", scripted)
        monkeypatch.setattr(events_module, "RECONNECT_FIRST_SECONDS", 0.01)
        monkeypatch.setattr(events_module, "RECONNECT_MAX_SECONDS", 0.02)
        return scripted

    return install


async def until_it_raises(stream: Any, seen: list[Any]) -> BaseException:
    """Iterate, keeping what comes, until the iteration raises; what it raised."""
    try:
        async for item in stream:
            seen.append(item)
    except Exception as exc:  # the test checks what it is
        return exc
    pytest.fail("the iteration ended without an error")


async def rest_of(stream: Any) -> list[Any]:
    """What iterating further gives."""
    rest = []
    async for item in stream:
        rest.append(item)
    return rest


def refused(server: str = "unix:///nowhere") -> IncusConnectionError:
    return IncusConnectionError("refused", server=server)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"types": "lifecycle"}, "sequence of event types"),
        ({"types": ("logging",)}, "not 'logging'"),
        ({"types": ()}, "at least one"),
        ({"all_projects": "yes"}, "all_projects"),
        ({"reconnect": 1}, "reconnect"),
    ],
)
async def test_bad_arguments_are_refused_before_anything_is_opened(
    client: AsyncClient, opener: Any, options: dict[str, Any], message: str
) -> None:
    scripted = opener([frame("image-created")])
    with pytest.raises(InvalidInputError, match=message):
        client.events(**options)
    assert scripted.asked == []


async def test_types_are_sent_once_each_in_the_servers_order(
    client: AsyncClient, opener: Any
) -> None:
    scripted = opener([], [])
    async with client.events(types=["operation", "lifecycle", "operation"]):
        pass
    async with client.images.watch(all_projects=True):
        pass
    assert scripted.asked == [("lifecycle,operation", False), ("lifecycle", True)]
    assert scripted.closed == 2


async def test_watch_keeps_image_events_and_events_keeps_all(
    client: AsyncClient, opener: Any, caplog: pytest.LogCaptureFixture
) -> None:
    script: list[bytes | Exception] = [
        frame("project-created"),
        b"{not json",
        frame("operation-deleting-pending"),
        frame("image-alias-renamed"),
        frame("image-deleted-project"),
    ]
    opener(list(script), list(script))
    seen: list[Any] = []
    async with client.images.watch(reconnect=False) as changes:
        error = await until_it_raises(changes, seen)
    assert isinstance(error, IncusConnectionError)
    assert "reconnect=False" in str(error)
    assert [(type(c), c.action) for c in seen] == [
        (ImageEvent, "image-alias-renamed"),
        (ImageEvent, "image-deleted"),
    ]
    assert seen[0].old_alias and seen[1].project == "p2"
    assert "cannot be read" in caplog.text
    everything: list[Any] = []
    async with client.events(reconnect=False) as events:
        error = await until_it_raises(events, everything)
    assert isinstance(error, IncusConnectionError)
    assert [type(event).__name__ for event in everything] == [
        "LifecycleEvent",
        "OperationEvent",
        "ImageEvent",
        "ImageEvent",
    ]


async def test_a_lost_stream_is_reopened_after_a_gap(client: AsyncClient, opener: Any) -> None:
    scripted = opener(
        [frame("image-created"), StreamLost("the daemon went away")],
        refused(),
        refused(),
        [frame("image-deleted-project")],
    )
    seen: list[Any] = []
    before = datetime.now().astimezone()
    async with client.images.watch() as changes:
        async for change in changes:
            seen.append(change)
            if len(seen) == 3:
                break
    assert [type(c) for c in seen] == [ImageEvent, EventGap, ImageEvent]
    gap = seen[1]
    assert gap.since.tzinfo is not None and before <= gap.since <= gap.until
    assert scripted.open == 2
    assert scripted.closed == 2
    assert len(scripted.asked) == 4


async def test_a_forbidden_reopening_is_raised_at_once(client: AsyncClient, opener: Any) -> None:
    opener([StreamLost("gone")], ForbiddenError("not trusted", status_code=403), [])
    async with client.events() as events:
        with pytest.raises(ForbiddenError):
            await anext(events)


async def test_entering_raises_what_opening_raises(client: AsyncClient, opener: Any) -> None:
    opener(ForbiddenError("not trusted", status_code=403))
    with pytest.raises(ForbiddenError):
        async with client.events():
            pytest.fail("entered")


async def test_it_gives_up_after_the_clients_timeout(opener: Any) -> None:
    scripted = opener([StreamLost("gone")], *[refused() for _ in range(1000)])
    async with (
        AsyncClient("unix:///nowhere", timeout=0.2) as short,
        short.images.watch() as changes,
    ):
        started = time.monotonic()
        with pytest.raises(IncusConnectionError, match=r"within 0\.2 s"):
            await anext(changes)
        assert time.monotonic() - started < 1.0
        # Given up: iterating again ends at once, without opening.
        asked = len(scripted.asked)
        assert await rest_of(changes) == []
        assert len(scripted.asked) == asked


async def test_streams_that_open_and_deliver_nothing_count_as_none(opener: Any) -> None:
    # A server that accepts the upgrade and drops it at once, again and again: the client's
    # timeout runs on from the first loss, with pauses between the attempts.
    scripted = opener([frame("image-created")], *[[] for _ in range(1000)])
    seen: list[Any] = []
    async with (
        AsyncClient("unix:///nowhere", timeout=0.3) as short,
        short.images.watch() as changes,
    ):
        started = time.monotonic()
        error = await until_it_raises(changes, seen)
        assert time.monotonic() - started < 1.0
    assert isinstance(error, IncusConnectionError)
    assert "none opened delivered a frame" in str(error)
    gaps = sum(isinstance(change, EventGap) for change in seen)
    # Paused between attempts (0.01 s doubling to 0.02 s here): not thousands of them.
    assert 2 <= gaps <= 30
    assert scripted.open == gaps + 1


async def test_a_stream_that_delivered_starts_a_new_loss(opener: Any) -> None:
    # Each reopened stream delivers before it is lost: it never gives up.
    scripted = opener(*[[frame("image-created")] for _ in range(30)])
    async with (
        AsyncClient("unix:///nowhere", timeout=0.05) as short,
        short.images.watch() as changes,
    ):
        kinds = [type(await anext(changes)) for _ in range(40)]
    assert kinds[:3] == [ImageEvent, EventGap, ImageEvent]
    assert kinds.count(EventGap) == 20
    assert scripted.open == 21


async def test_it_must_be_entered_and_only_once(client: AsyncClient, opener: Any) -> None:
    opener([], [])
    stream = client.events()
    with pytest.raises(RuntimeError, match="context manager"):
        await anext(stream)
    async with stream:
        pass
    with pytest.raises(RuntimeError, match="once"):
        async with stream:
            pass
    assert await rest_of(stream) == []
    assert "closed" in repr(stream)


async def test_a_broken_loop_closes_the_stream(client: AsyncClient, opener: Any) -> None:
    scripted = opener([frame("image-created"), frame("image-updated")])
    async with client.images.watch() as changes:
        async for _ in changes:
            break
    assert scripted.closed == 1


def test_an_operation_events_secret_is_never_shown() -> None:
    from incus_images._events import parse_event

    event = parse_event(frame("operation-token-pending"))
    assert isinstance(event, OperationEvent)
    assert event.operation.metadata and "secret" in event.operation.metadata
    secret = event.operation.metadata["secret"]
    shown = [repr(event), str(event), event._repr_html_() or ""]  # type: ignore[attr-defined]

    class Printer:
        text = shown.append

    event._repr_pretty_(Printer(), False)  # type: ignore[attr-defined]
    assert len(shown) == 4
    assert all(secret not in text for text in shown)
    assert "Image download token" in shown[3]


def test_every_event_shows_as_a_card() -> None:
    from incus_images._events import parse_event

    for name, words in [
        ("image-alias-renamed", ("image-alias-renamed", "former name")),
        ("image-created-project", ("image-created", "p2")),
        ("project-created", ("project-created", "/1.0/projects")),
        ("operation-deleting-success", ("Deleting image", "Success")),
    ]:
        event = parse_event(frame(name))
        html = event._repr_html_()  # type: ignore[union-attr]
        assert all(word in html for word in words), (name, html)
    gap = EventGap(
        since=datetime.fromisoformat("2026-12-06T10:00:00+00:00"),
        until=datetime.fromisoformat("2026-12-06T10:00:02.5+00:00"),
    )
    assert "2.5 s" in gap._repr_html_()  # type: ignore[attr-defined]
