"""The event stream against a real incusd, in both flavours: the websocket reader, and
``client.events()`` / ``client.images.watch()`` watching what another client changes.

The blocking flavour has no second thread to read while the test changes the daemon: every
test opens its stream first, makes its changes, then reads (incusd's frames wait in the
socket). Each read ends at a change the test knows will come (a marker), so a missing event
fails the test instead of hanging it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from simplestreams_server import SimpleStreamsServer, forget_daemon_catalogue
from tiny_image import split_image, unified_image

from incus_images import (
    AsyncClient,
    AsyncEventStream,
    EventGap,
    ForbiddenError,
    Image,
    ImageEvent,
    LifecycleEvent,
    NotFoundError,
    OperationEvent,
    SimpleStreams,
    _events,
)
from incus_images._async._event_stream import event_socket
from tests.helpers import unique

pytestmark = pytest.mark.anyio

AnyEvent = ImageEvent | LifecycleEvent | OperationEvent | EventGap


async def read_until(
    stream: AsyncEventStream[Any], last: Callable[[Any], bool], *, within: float = 60.0
) -> list[AnyEvent]:
    """Every event the stream yields up to and including the first one ``last`` accepts (the
    stream stays open); an AssertionError when other events went on for ``within`` seconds."""
    seen: list[AnyEvent] = []
    deadline = time.monotonic() + within
    async for event in stream:
        seen.append(event)
        if last(event):
            return seen
        if time.monotonic() > deadline:
            break
    raise AssertionError(f"the awaited event did not come; the stream gave {seen[-20:]}")


def about(event: AnyEvent, fingerprints: set[str], aliases: set[str]) -> bool:
    """An image event about one of these images or aliases."""
    return isinstance(event, ImageEvent) and (
        event.fingerprint in fingerprints or event.alias in aliases
    )


def deleted(fingerprint: str) -> Callable[[Any], bool]:
    return lambda event: (
        isinstance(event, ImageEvent)
        and event.action == "image-deleted"
        and event.fingerprint == fingerprint
    )


def alias_deleted(name: str) -> Callable[[Any], bool]:
    return lambda event: (
        isinstance(event, ImageEvent)
        and event.action == "image-alias-deleted"
        and event.alias == name
    )


def all_of(*wanted: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """True at the event by which each of ``wanted`` has accepted one, in any order."""
    pending = list(wanted)

    def last(event: Any) -> bool:
        for accepts in pending:
            if accepts(event):
                pending.remove(accepts)
                break
        return not pending

    return last


def alias_created(name: str) -> Callable[[Any], bool]:
    return lambda event: (
        isinstance(event, ImageEvent)
        and event.action == "image-alias-created"
        and event.alias == name
    )


@pytest.fixture
def image_server() -> Iterator[SimpleStreamsServer]:
    with SimpleStreamsServer() as server:
        yield server


@pytest.fixture
async def watcher(incusd: Any) -> AsyncIterator[AsyncClient]:
    """A second client of the session's daemon: the one that watches."""
    async with AsyncClient(incusd.endpoint) as client:
        yield client


async def test_an_alias_change_arrives_as_a_typed_event(
    daemon_client: AsyncClient, new_image: Any
) -> None:
    image = await new_image()
    name = unique("ev") + " with/slash"
    connection = daemon_client._connection
    async with event_socket(connection, types="lifecycle", all_projects=False) as socket:
        sent = time.monotonic()
        await daemon_client.images.create_alias(name, image.fingerprint)
        await daemon_client.images.rename_alias(name, name + "2")
        seen = []
        while len(seen) < 2:
            event = _events.parse_event(await socket.message())
            if isinstance(event, _events.ImageEvent) and event.alias in (name, name + "2"):
                seen.append((event.action, event.alias, event.old_alias))
        latency = time.monotonic() - sent
    assert seen == [
        ("image-alias-created", name, None),
        ("image-alias-renamed", name + "2", name),
    ]
    assert latency < 5
    await daemon_client.images.delete_alias(name + "2")


async def test_the_socket_is_closed_when_the_block_is_left(daemon_client: AsyncClient) -> None:
    connection = daemon_client._connection
    async with event_socket(connection, types="operation", all_projects=True) as socket:
        sock = socket._stream.get_extra_info("socket")
        assert sock.fileno() != -1
    assert sock.fileno() == -1


async def test_every_image_change_is_watched_in_order(
    incusd: Any,
    daemon_client: AsyncClient,
    watcher: AsyncClient,
    image_server: SimpleStreamsServer,
    cleanup: list[str],
) -> None:
    """Create, alias, rename, update, refresh (finding a newer image), delete: made by one
    client, each seen by another's ``images.watch()`` as an ImageEvent, in order."""
    images = daemon_client.images
    name, renamed = unique("ev-a"), unique("ev-b")
    remote_alias = unique("ev/remote")
    old = image_server.add_image(*split_image(), aliases=[remote_alias], os="ev", release="1")
    server = SimpleStreams(image_server.url, certificate=image_server.certificate_pem)
    async with watcher.images.watch() as changes:
        created = await images.create(unified_image({"os": "events"}), wait=True)
        assert isinstance(created, Image)
        cleanup.append(created.fingerprint)
        fingerprint = created.fingerprint
        await images.create_alias(name, fingerprint)
        await images.rename_alias(name, renamed)
        await images.update(fingerprint, {"os": "events", "changed": "yes"})
        pulled = await images.copy(remote_alias, server, auto_update=True)
        assert isinstance(pulled, Image) and pulled.fingerprint == old
        cleanup.append(old)
        # Nothing newer yet: a refresh that finds nothing sends no lifecycle event.
        assert (await images.refresh(old, wait=True)).metadata == {"refreshed": False}
        new = image_server.add_image(*split_image(), aliases=[remote_alias], os="ev", release="1")
        cleanup.append(new)
        # incusd caches a catalogue for an hour; it must read the new one now.
        forget_daemon_catalogue(incusd.directory, image_server.url)
        refreshed = await images.refresh(old, wait=True)
        assert refreshed.metadata == {"refreshed": True}
        await images.delete(new, wait=True)
        await images.delete(fingerprint, wait=True)
        seen = await read_until(
            changes, all_of(deleted(fingerprint), alias_deleted(renamed)), within=30
        )
    ours = [
        (event.action, event.fingerprint or event.alias, event.old_alias, event.project)
        for event in seen
        if about(event, {fingerprint, old, new}, {name, renamed})
    ]
    # A refresh that finds a newer image sends two events, both naming the image it
    # replaced, stamped 0.3 ms apart: they arrive in either order (incusd 6.0.4).
    # incusd hands each event to each listener on its own: two events of one request,
    # stamped a fraction of a millisecond apart, arrive in either order (seen with both
    # pairs below). Requests one after the other are in order.
    assert sorted(ours[5:7]) == [
        # A refresh that finds a newer image names the image it replaced, twice.
        ("image-created", old, None, "default"),
        ("image-refreshed", old, None, "default"),
    ]
    assert sorted(ours[8:10]) == [
        # Deleting an image deletes its alias too, and says so.
        ("image-alias-deleted", renamed, None, "default"),
        ("image-deleted", fingerprint, None, "default"),
    ]
    assert ours[:5] + ours[7:8] == [
        ("image-created", fingerprint, None, "default"),
        ("image-alias-created", name, None, "default"),
        ("image-alias-renamed", renamed, name, "default"),
        ("image-updated", fingerprint, None, "default"),
        ("image-created", old, None, "default"),  # the pull
        ("image-deleted", new, None, "default"),
    ]
    assert len(ours) == 10
    with pytest.raises(NotFoundError):
        await images.get_alias(renamed)
    # watch() yields image events only (and gaps, of which there are none here).
    assert all(isinstance(event, ImageEvent) for event in seen)
    for event in seen:
        assert event.at.tzinfo is not None
        assert event.requestor is not None and event.requestor.protocol == "unix"


async def test_operation_events_follow_an_operation_to_its_end(
    daemon_client: AsyncClient, watcher: AsyncClient, new_image: Any
) -> None:
    image = await new_image()
    async with watcher.events(types=("operation",)) as events:
        deleting = await daemon_client.images.delete(image.fingerprint)
        seen = await read_until(
            events,
            lambda event: (
                isinstance(event, OperationEvent)
                and event.operation.id == deleting.id
                and event.operation.done
            ),
        )
    assert all(isinstance(event, OperationEvent) for event in seen)
    mine = [event for event in seen if event.operation.id == deleting.id]
    assert mine[-1].operation.succeeded
    assert mine[-1].operation.resources["images"] == [f"/1.0/images/{image.fingerprint}"]
    assert {event.project for event in mine} == {"default"}


@pytest.fixture
def project(incusd: Any) -> Iterator[str]:
    """A project of this test's own, with images of its own; removed with its images after."""
    name = unique("evp")
    incusd.request("POST", "/1.0/projects", {"name": name, "config": {"features.images": "true"}})
    yield name
    for url in incusd.request("GET", f"/1.0/images?project={name}")["metadata"]:
        answer = incusd.request("DELETE", f"{url}?project={name}")
        incusd.request("GET", f"{answer['operation']}/wait?timeout=30")
    incusd.request("DELETE", f"/1.0/projects/{name}")


async def test_all_projects_works_from_a_client_made_with_a_project(
    incusd: Any, daemon_client: AsyncClient, new_image: Any, project: str
) -> None:
    """incusd refuses all-projects with a project: the stream sends only all-projects."""
    image = await new_image()
    here, there, last = unique("ev-here"), unique("ev-there"), unique("ev-last")
    async with (
        AsyncClient(incusd.endpoint, project=project) as in_project,
        in_project.images.watch(all_projects=True) as everywhere,
        in_project.images.watch() as own,
    ):
        other = await in_project.images.create(unified_image({"os": "p"}), wait=True)
        assert isinstance(other, Image)
        await daemon_client.images.create_alias(here, image.fingerprint)
        await in_project.images.create_alias(there, other.fingerprint)
        await in_project.images.create_alias(last, other.fingerprint)
        seen_everywhere = await read_until(everywhere, alias_created(last))
        seen_own = await read_until(own, alias_created(last))
    created = "image-alias-created"
    assert [
        (event.alias, event.project)
        for event in seen_everywhere
        if isinstance(event, ImageEvent) and event.action == created
    ] == [(here, "default"), (there, project), (last, project)]
    assert [
        (event.alias, event.project)
        for event in seen_own
        if isinstance(event, ImageEvent) and event.action == created
    ] == [(there, project), (last, project)]
    await daemon_client.images.delete_alias(here)


async def test_an_untrusted_client_is_refused_on_entering(https_server: Any) -> None:
    async with AsyncClient(https_server.url, verify=https_server.server_cert) as client:
        for stream in (client.events(), client.images.watch(), client.events(all_projects=True)):
            with pytest.raises(ForbiddenError) as caught:
                async with stream:
                    raise AssertionError("entered")
            assert "trust" in str(caught.value)
            assert "GET /1.0/events" in str(caught.value)
