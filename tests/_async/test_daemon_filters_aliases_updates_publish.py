"""The rest of the images API against a real incusd (issue 7), in both flavours: filters, all
projects, aliases by name, every writable field, and publishing instances and snapshots.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from tiny_image import unified_image

from incus_images import (
    APIError,
    AsyncClient,
    ConflictError,
    Image,
    ImageAliasList,
    InvalidInputError,
    NotFoundError,
    Operation,
    PreconditionFailedError,
)
from tests.helpers import UNIX_BASE, stored_image, unique, wait_raw

pytestmark = pytest.mark.anyio

ODD_NAMES = ["with/slash", "with.dots..", "with space", "ünï ☃ 日本", ".", "..", "%2F", "a?b#c"]


# --------------------------------------------------------------------------------------------
# Listing.


async def test_a_filter_selects_on_the_server(daemon_client: AsyncClient, new_image: Any) -> None:
    tag = unique("filter")
    debian = await new_image(properties={"os": "debian", "tag": tag}, public=True)
    other = await new_image(properties={"os": "alpine", "tag": tag})
    found = await daemon_client.images.list(filter=f"properties.tag eq {tag}")
    assert [image.fingerprint for image in found] == sorted([debian.fingerprint, other.fingerprint])
    found = await daemon_client.images.list(
        filter=f"properties.tag eq {tag} and properties.os eq DEBIAN and public eq true"
    )
    assert [image.fingerprint for image in found] == [debian.fingerprint]
    assert await daemon_client.images.list(
        0, filter=f"properties.tag eq {tag} and public eq false"
    ) == [other.fingerprint]


@pytest.mark.parametrize("bad", ["size gt 1", "Properties.os eq x", "public eq maybe", "os eq"])
async def test_a_filter_the_server_refuses_names_the_filter(
    daemon_client: AsyncClient, new_image: Any, bad: str
) -> None:
    await new_image()  # field errors show only when an image is evaluated
    with pytest.raises(APIError) as caught:
        await daemon_client.images.list(filter=bad)
    assert repr(bad) in str(caught.value)


async def test_a_filter_on_update_source_is_refused_before_it_crashes_the_request(
    daemon_client: AsyncClient,
) -> None:
    with pytest.raises(InvalidInputError, match="update_source"):
        await daemon_client.images.list(filter="update_source.alias eq x")
    with pytest.raises(InvalidInputError, match=r"aliases\.name eq x.*crashes"):
        await daemon_client.images.list(filter="public eq true and aliases.name eq x")


async def test_all_projects_lists_every_project_with_its_name(
    incusd: Any, daemon_client: AsyncClient, new_image: Any, raw_api: httpx.Client
) -> None:
    project = unique("proj")
    raw_api.post("/1.0/projects", json={"name": project, "config": {"features.images": "true"}})
    try:
        async with AsyncClient(incusd.endpoint, project=project) as other:
            in_project = await other.images.create(unified_image(), wait=True)
            assert isinstance(in_project, Image)
            in_default = await new_image()
            # The client's project must not be sent with all-projects: it would be refused.
            listed = await other.images.list(all_projects=True)
            where = {(image.project, image.fingerprint) for image in listed}
            assert (project, in_project.fingerprint) in where
            assert ("default", in_default.fingerprint) in where
            assert listed == sorted(listed, key=lambda image: (image.project, image.fingerprint))
            fingerprints = await other.images.list(0, all_projects=True)
            assert in_project.fingerprint in fingerprints
            assert len(set(fingerprints)) == len(fingerprints)
            assert [image.fingerprint for image in await other.images.list()] == [
                in_project.fingerprint
            ]
            await other.images.delete(in_project.fingerprint, wait=True)
    finally:
        raw_api.delete(f"/1.0/projects/{project}")


# --------------------------------------------------------------------------------------------
# Aliases.


@pytest.mark.parametrize("odd", ODD_NAMES)
async def test_aliases_of_odd_names_by_name(
    daemon_client: AsyncClient, new_image: Any, odd: str
) -> None:
    image = await new_image()
    name, renamed = unique(odd), unique("renamed " + odd)
    await daemon_client.images.create_alias(name, image.fingerprint, "odd")
    assert (await daemon_client.images.get_by_alias(name)).fingerprint == image.fingerprint
    alias = await daemon_client.images.rename_alias(name, renamed)
    assert alias.name == renamed and alias.target == image.fingerprint
    assert alias.description == "odd"
    with pytest.raises(NotFoundError):
        await daemon_client.images.get_alias(name)
    names = [entry.name for entry in await daemon_client.images.list_aliases()]
    assert renamed in names and name not in names
    await daemon_client.images.delete_alias(renamed)


async def test_list_aliases_is_sorted_by_code_point(
    daemon_client: AsyncClient, new_image: Any
) -> None:
    image = await new_image()
    stem = unique("sort")
    names = [f"{stem}-b", f"{stem}-B", f"{stem}-ä", f"{stem}-a"]
    for name in names:
        await daemon_client.images.create_alias(name, image.fingerprint)
    every = await daemon_client.images.list_aliases()
    assert type(every) is ImageAliasList
    listed = [alias for alias in every if alias.name.startswith(stem)]
    assert [alias.name for alias in listed] == sorted(names)
    # Drawn as one table: a row for each alias, the new ones among them.
    html = every._repr_html_()
    assert html.count("<tr>") >= len(names) + 1 and all(f">{n}<" in html for n in names[:2])
    assert {alias.target for alias in listed} == {image.fingerprint}
    assert {alias.type for alias in listed} == {"container"}


async def test_rename_refuses_a_taken_or_empty_name(
    daemon_client: AsyncClient, new_image: Any
) -> None:
    image = await new_image()
    first, second = unique("first"), unique("second")
    await daemon_client.images.create_alias(first, image.fingerprint)
    await daemon_client.images.create_alias(second, image.fingerprint)
    with pytest.raises(ConflictError):
        await daemon_client.images.rename_alias(first, second)
    with pytest.raises(InvalidInputError):
        # An empty-named alias could never be changed or deleted again.
        await daemon_client.images.rename_alias(first, "")


async def test_get_by_alias_checks_the_type(daemon_client: AsyncClient, new_image: Any) -> None:
    image = await new_image()
    name = unique("typed")
    await daemon_client.images.create_alias(name, image.fingerprint)
    assert (await daemon_client.images.get_by_alias(name, type="container")).fingerprint == (
        image.fingerprint
    )
    with pytest.raises(NotFoundError, match="virtual-machine"):
        await daemon_client.images.get_by_alias(name, type="virtual-machine")


# --------------------------------------------------------------------------------------------
# Every writable field.


async def test_each_field_alone_changes_only_itself(
    daemon_client: AsyncClient, new_image: Any, raw_api: httpx.Client
) -> None:
    image = await new_image(properties={"os": "tiny"}, profiles=["default"])
    fingerprint = image.fingerprint
    expiry = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    raw_api.patch(f"/1.0/images/{fingerprint}", json={"auto_update": True})

    before = stored_image(raw_api, fingerprint)
    assert before is not None
    unchanged = await daemon_client.images.update(fingerprint)
    assert unchanged.fingerprint == fingerprint
    assert stored_image(raw_api, fingerprint) == before

    steps: list[tuple[dict[str, Any], dict[str, Any]]] = [
        ({"public": True}, {"public": True}),
        ({"auto_update": False}, {"auto_update": False}),
        ({"profiles": []}, {"profiles": []}),
        ({"expires_at": expiry}, {"expires_at": expiry}),
        ({"properties": {"os": "debian"}}, {"properties": {"os": "debian"}}),
        ({"profiles": ["default"]}, {"profiles": ["default"]}),
    ]
    expected = {
        "public": False,
        "auto_update": True,
        "profiles": ["default"],
        "properties": image.properties,
        "expires_at": None,
    }
    for change, effect in steps:
        updated = await daemon_client.images.update(fingerprint, **change)
        expected.update(effect)
        for field, value in expected.items():
            assert getattr(updated, field) == value, (change, field)


async def test_all_fields_together(daemon_client: AsyncClient, new_image: Any) -> None:
    image = await new_image(properties={"os": "tiny", "gone": "x"})
    expiry = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    updated = await daemon_client.images.update(
        image.fingerprint,
        {"os": "debian"},
        public=True,
        auto_update=True,
        profiles=[],
        expires_at=expiry,
    )
    assert updated.properties == {"os": "debian"}
    assert updated.public and updated.auto_update
    assert updated.profiles == []
    assert updated.expires_at == expiry


async def test_a_naive_expiry_is_refused(daemon_client: AsyncClient, new_image: Any) -> None:
    image = await new_image()
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        await daemon_client.images.update(image.fingerprint, expires_at=datetime(2031, 1, 1))


def wait_until(condition: Callable[[], bool], seconds: float = 30) -> None:
    """Block (briefly) until another thread made condition true."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize(
    "change",
    [{"public": True}, {"profiles": []}, {"expires_at": datetime(2033, 3, 3, tzinfo=UTC)}],
    ids=["public", "profiles", "expires_at"],
)
async def test_a_concurrent_writer_loses_nothing(
    incusd: Any,
    daemon_client: AsyncClient,
    new_image: Any,
    raw_api: httpx.Client,
    change: dict[str, Any],
) -> None:
    """Another careful writer changes the properties again and again while we update another
    field (profiles and expires_at need a PUT, which sends the properties back): ours always
    lands, even when incusd's unlocked read-then-write lets the other writer put back a stale
    copy (update() checks and does it again), and the properties stay the other writer's."""
    image = await new_image(properties={"os": "tiny"})
    fingerprint = image.fingerprint
    stop = threading.Event()
    writes: list[str] = []

    def other_writer() -> None:
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=incusd.socket_path), base_url=UNIX_BASE, timeout=30
        ) as other:
            while not stop.is_set():
                # A careful writer too: incusd applies a PATCH as read-then-write without a
                # lock, so a writer without If-Match may write back a stale field.
                etag = other.get(f"/1.0/images/{fingerprint}").headers["ETag"]
                value = str(len(writes))
                response = other.patch(
                    f"/1.0/images/{fingerprint}",
                    json={"properties": {"other": value}},
                    headers={"If-Match": etag},
                )
                if response.status_code == 412:
                    continue
                assert response.status_code == 200, response.text
                writes.append(value)

    thread = threading.Thread(target=other_writer)
    thread.start()
    try:
        wait_until(lambda: len(writes) >= 3)  # the other writer is under way
        for _ in range(20):  # the other writer may win five attempts in a row
            try:
                updated = await daemon_client.images.update(fingerprint, **change)
                break
            except PreconditionFailedError:
                continue
        else:
            pytest.fail("the update never got through")
        written = len(writes)
        wait_until(lambda: len(writes) >= written + 3)  # and goes on after ours
    finally:
        stop.set()
        thread.join()
    final = stored_image(raw_api, fingerprint)
    assert final is not None and writes
    field, value = next(iter(change.items()))
    assert getattr(updated, field) == value
    # incusd reads and writes an image without a lock, even with If-Match: the other
    # writer's latest change may be lost to ours, but never replaced by an older value of ours.
    assert final["properties"]["other"] in writes
    assert set(final["properties"]) == {*image.properties, "other"}


# --------------------------------------------------------------------------------------------
# Publishing instances and snapshots.


@pytest.fixture
async def host_client(container_host: Any) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(container_host.daemon.endpoint) as client:
        yield client


@pytest.fixture
def instance(container_host: Any) -> Iterator[str]:
    """A stopped busybox container, deleted (with what was published of it) afterwards."""
    daemon = container_host.daemon
    name = unique("c")
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=daemon.socket_path), base_url=UNIX_BASE, timeout=60
    ) as raw:
        before = set(raw.get("/1.0/images").json()["metadata"])
        wait_raw(
            raw,
            raw.post(
                "/1.0/instances", json={"name": name, "source": {"type": "image", "alias": "bb"}}
            ),
        )
        yield name
        raw.put(f"/1.0/instances/{name}/state", json={"action": "stop", "force": True})
        response = raw.delete(f"/1.0/instances/{name}")
        if response.status_code == 202:
            raw.get(f"{response.json()['operation']}/wait", params={"timeout": "30"})
        for url in set(raw.get("/1.0/images").json()["metadata"]) - before:
            response = raw.delete(url)
            if response.status_code == 202:
                raw.get(f"{response.json()['operation']}/wait", params={"timeout": "30"})


def instance_status(container_host: Any, name: str) -> str:
    return str(container_host.daemon.request("GET", f"/1.0/instances/{name}")["metadata"]["status"])


def change_state(container_host: Any, name: str, action: str) -> None:
    daemon = container_host.daemon
    answer = daemon.request(
        "PUT", f"/1.0/instances/{name}/state", {"action": action, "timeout": 30}
    )
    done = daemon.request("GET", f"{answer['operation']}/wait?timeout=60")
    # Say why a container would not start (its lxc.log under the daemon's logs/ has the rest).
    error = done["error"] or (done["metadata"] or {}).get("err")
    assert not error, f"{action} {name}: {error}"


async def test_publish_a_stopped_instance(
    container_host: Any, host_client: AsyncClient, instance: str
) -> None:
    alias = unique("published")
    expiry = datetime(2032, 1, 1, tzinfo=UTC)
    calls: list[tuple[int, int | None]] = []
    image = await host_client.images.publish(
        instance,
        aliases=[alias],
        properties={"description": "published"},
        public=True,
        compression="none",
        expires_at=expiry,
        progress=lambda *call: calls.append(call),
    )
    assert isinstance(image, Image)
    assert image.properties["description"] == "published"
    assert image.properties["os"] == "busybox"  # the instance's image properties stay
    assert image.public and image.expires_at == expiry
    assert [entry.name for entry in image.aliases] == [alias]
    assert calls[0] == (0, None) and calls[-1] == (image.size, image.size)
    assert instance_status(container_host, instance) == "Stopped"


async def test_publish_with_reuse_moves_a_taken_alias_to_the_new_image(
    host_client: AsyncClient, instance: str
) -> None:
    alias = unique("published")
    first = await host_client.images.publish(
        instance, aliases=[alias], properties={"description": "first"}, compression="none"
    )
    with pytest.raises(ConflictError, match="reuse=True"):
        await host_client.images.publish(instance, aliases=[alias], compression="none")
    second = await host_client.images.publish(
        instance,
        aliases=[alias],
        reuse=True,
        properties={"description": "second"},
        compression="none",
    )
    assert isinstance(first, Image) and isinstance(second, Image)
    assert second.fingerprint != first.fingerprint
    assert (await host_client.images.get_alias(alias)).target == second.fingerprint
    # The image the alias named before stays, without it.
    kept = await host_client.images.get(first.fingerprint)
    assert [entry.name for entry in kept.aliases] == []


async def test_publish_a_snapshot_without_waiting(
    container_host: Any, host_client: AsyncClient, instance: str
) -> None:
    daemon = container_host.daemon
    answer = daemon.request("POST", f"/1.0/instances/{instance}/snapshots", {"name": "snap0"})
    daemon.request("GET", f"{answer['operation']}/wait?timeout=60")
    started = await host_client.images.publish(f"{instance}/snap0", compression="none", wait=False)
    assert isinstance(started, Operation)
    finished = await host_client.operations.wait(started)
    assert finished.metadata is not None
    image = await host_client.images.get(finished.metadata["fingerprint"])
    assert image.type == "container"


async def test_a_running_instance_is_refused_unless_forced(
    container_host: Any, host_client: AsyncClient, instance: str
) -> None:
    change_state(container_host, instance, "start")
    assert instance_status(container_host, instance) == "Running"
    images_before = await host_client.images.list(0)
    with pytest.raises(ConflictError, match="force=True"):
        await host_client.images.publish(instance)
    assert await host_client.images.list(0) == images_before
    assert instance_status(container_host, instance) == "Running"

    image = await host_client.images.publish(instance, force=True, compression="none")
    assert isinstance(image, Image)
    # Stopped for the publication, running again afterwards.
    assert instance_status(container_host, instance) == "Running"


async def test_publishing_what_does_not_exist(host_client: AsyncClient) -> None:
    with pytest.raises(NotFoundError):
        await host_client.images.publish(unique("missing"))
    with pytest.raises(InvalidInputError):
        await host_client.images.publish("../escape")
