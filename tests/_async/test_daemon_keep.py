"""reuse=True against a real incusd, in both flavours (issue 16): a taken alias moves to the
new image once it is stored, with If-Match, and a concurrent change is never overwritten."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from simplestreams_server import SimpleStreamsServer
from tiny_image import split_image, unified_image

import incus_images
from incus_images import (
    AsyncClient,
    ConflictError,
    Image,
    LeftBehind,
    NotFoundError,
    Operation,
    PreconditionFailedError,
    SimpleStreams,
)
from tests.helpers import assert_left, unique

pytestmark = pytest.mark.anyio


async def test_create_reuse_moves_a_taken_alias_and_keeps_the_old_image(
    daemon_client: AsyncClient, new_image: Any, cleanup: list[str]
) -> None:
    images = daemon_client.images
    old = await new_image()
    name = unique("base")
    await images.create_alias(name, old.fingerprint, description="kept")
    with pytest.raises(ConflictError, match="already taken"):
        await images.create(unified_image(), aliases=[name], wait=True)
    new = await images.create(unified_image(), aliases=[name], reuse=True, wait=True)
    cleanup.append(new.fingerprint)
    alias = await images.get_alias(name)
    assert alias.target == new.fingerprint
    assert alias.description == "kept"  # a move changes the target only
    assert [entry.name for entry in new.aliases] == [name]
    # The image the alias pointed at before stays.
    assert (await images.get(old.fingerprint)).aliases == []


async def test_a_change_to_the_alias_before_the_move_is_not_overwritten(
    daemon_client: AsyncClient, new_image: Any, cleanup: list[str]
) -> None:
    images = daemon_client.images
    old, other = await new_image(), await new_image()
    name = unique("base")
    await images.create_alias(name, old.fingerprint)
    started = await images.create(unified_image(), aliases=[name], reuse=True, wait=False)
    assert isinstance(started, Operation)
    # Someone else moves the alias while the upload is processed: incusd's ETag changes.
    await images.update_alias(name, other.fingerprint)
    with pytest.raises(PreconditionFailedError) as caught:
        await daemon_client.operations.wait(started)
    fingerprint = caught.value.fingerprint
    assert fingerprint is not None
    cleanup.append(fingerprint)
    assert_left(caught.value, LeftBehind.STORED, f"alias {name!r} was not moved")
    assert (await images.get_alias(name)).target == other.fingerprint
    stored = await images.get(fingerprint)  # the new image stays
    assert stored.aliases == []


@pytest.fixture
async def pair(copy_servers: Any) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    """Clients of a source and a target daemon (unix sockets); every image on both is
    deleted after the test."""
    async with (
        AsyncClient(copy_servers.source.endpoint) as source,
        AsyncClient(copy_servers.target.endpoint) as target,
    ):
        try:
            yield source, target
        finally:
            for client in (source, target):
                for fingerprint in await client.images.list(0):
                    with contextlib.suppress(NotFoundError):
                        await client.images.delete(fingerprint, wait=True)


async def test_copy_reuse_moves_the_alias_on_the_target(
    pair: tuple[AsyncClient, AsyncClient],
) -> None:
    source, target = pair
    original = await source.images.create(unified_image(), wait=True)
    old = await target.images.create(unified_image(), wait=True)
    name = unique("base")
    await target.images.create_alias(name, old.fingerprint)
    with pytest.raises(ConflictError, match="already taken"):
        await target.images.copy(original.fingerprint, source, aliases=[name])
    copied = await target.images.copy(original.fingerprint, source, aliases=[name], reuse=True)
    assert isinstance(copied, Image)
    assert copied.fingerprint == original.fingerprint
    assert [entry.name for entry in copied.aliases] == [name]
    assert (await target.images.get(old.fingerprint)).aliases == []


# --------------------------------------------------------------------------------------------
# copy(architecture=) from an image server.


@pytest.fixture
def image_server() -> Iterator[SimpleStreamsServer]:
    with SimpleStreamsServer() as server:
        yield server


def two_architectures(image_server: SimpleStreamsServer) -> tuple[str, str, str]:
    """One alias with an amd64 and an arm64 image (the catalogue's Debian spellings); the
    alias and both fingerprints."""
    alias = unique("tiny")
    release = unique("r")
    amd64 = image_server.add_image(
        *split_image(architecture="x86_64"), aliases=[alias], os="tiny", release=release
    )
    arm64 = image_server.add_image(
        *split_image(architecture="aarch64"),
        aliases=[alias],
        os="tiny",
        release=release,
        architecture="arm64",
    )
    return alias, amd64, arm64


@pytest.mark.parametrize("spelling", ["aarch64", "arm64"])
async def test_copy_another_architecture_from_an_image_server(
    pair: tuple[AsyncClient, AsyncClient], image_server: SimpleStreamsServer, spelling: str
) -> None:
    _, target = pair
    alias, amd64, arm64 = two_architectures(image_server)
    hub = SimpleStreams(image_server.url, certificate=image_server.certificate_pem)
    copied = await target.images.copy(alias, hub, architecture=spelling, auto_update=True)
    assert isinstance(copied, Image)
    assert copied.fingerprint == arm64
    assert copied.architecture == "aarch64"
    # Updates follow that architecture: the catalogue's own ALIAS/ARCH is recorded.
    assert copied.update_source is not None
    assert copied.update_source.alias == f"{alias}/arm64"
    assert await target.images.list(0) == [arm64]
    # The target's own architecture: the bare alias.
    native = await target.images.copy(alias, hub, architecture="x86_64", auto_update=True)
    assert isinstance(native, Image)
    assert native.fingerprint == amd64
    assert native.update_source is not None and native.update_source.alias == alias


async def test_an_architecture_the_image_server_lacks_is_not_found(
    pair: tuple[AsyncClient, AsyncClient], image_server: SimpleStreamsServer
) -> None:
    _, target = pair
    alias, _, _ = two_architectures(image_server)
    hub = SimpleStreams(image_server.url, certificate=image_server.certificate_pem)
    with pytest.raises(NotFoundError) as caught:
        await target.images.copy(alias, hub, architecture="riscv64")
    assert f"{alias}/riscv64" in str(caught.value)
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was copied")
    assert await target.images.list(0) == []


async def test_an_incus_alias_of_another_architecture_is_not_found(
    pair: tuple[AsyncClient, AsyncClient],
) -> None:
    source, target = pair
    name = unique("base")
    original = await source.images.create(unified_image(), aliases=[name], wait=True)
    with pytest.raises(NotFoundError) as caught:
        await target.images.copy(name, source, architecture="aarch64")
    assert "x86_64" in str(caught.value) and original.fingerprint in str(caught.value)
    assert await target.images.list(0) == []
    copied = await target.images.copy(name, source, architecture="amd64")
    assert isinstance(copied, Image) and copied.fingerprint == original.fingerprint


# --------------------------------------------------------------------------------------------
# ensure()


async def test_ensure_twice_copies_once_and_points_the_aliases(
    pair: tuple[AsyncClient, AsyncClient], image_server: SimpleStreamsServer
) -> None:
    _, target = pair
    alias, amd64, _ = two_architectures(image_server)
    hub = SimpleStreams(image_server.url, certificate=image_server.certificate_pem)
    other = await target.images.create(unified_image(), wait=True)
    taken = unique("base")
    await target.images.create_alias(taken, other.fingerprint)
    first = await target.images.ensure(alias, hub, aliases=[taken], auto_update=True)
    assert first.fingerprint == amd64
    assert first.auto_update
    assert (await target.images.get_alias(taken)).target == amd64  # moved to it
    downloads = list(image_server.requests)
    second = await target.images.ensure(alias, hub, aliases=[taken], auto_update=True)
    assert second == first
    assert image_server.requests == downloads
    assert sorted(await target.images.list(0)) == sorted([amd64, other.fingerprint])
    # The other architecture is another image, ensured once too.
    arm = await target.images.ensure(alias, hub, architecture="aarch64")
    assert arm.architecture == "aarch64"
    again = await target.images.ensure(alias, hub, architecture="arm64")
    assert again.fingerprint == arm.fingerprint


async def test_ensure_settles_settings_on_an_image_held_already(
    pair: tuple[AsyncClient, AsyncClient],
) -> None:
    source, target = pair
    name = unique("base")
    original = await source.images.create(unified_image(), aliases=[name], wait=True)
    first = await target.images.ensure(name, source)
    assert first.fingerprint == original.fingerprint and not first.public
    second = await target.images.ensure(name, source, public=True)
    assert second.fingerprint == first.fingerprint and second.public
    assert await target.images.list(0) == [original.fingerprint]


#: The other processes of the race: each connects, waits for the word, then ensures the image.
RACER = """
import json, sys
from incus_images import Client, SimpleStreams
target, kind, name, aliases, url, certificate = json.loads(sys.argv[1])
with Client(target) as client:
    if kind == "simplestreams":
        source = SimpleStreams(url, certificate=certificate)
    else:
        source = Client(url)
    # Warm up: connections made and the copying code loaded, so that the race is even.
    client.server_info()
    if kind != "simplestreams":
        source.server_info()
    import incus_images._sync._copying, incus_images._sync._importing
    print("ready", flush=True)
    sys.stdin.readline()
    print(client.images.ensure(name, source, aliases=aliases).fingerprint, flush=True)
"""


@pytest.mark.parametrize("kind", ["simplestreams", "incus"])
async def test_processes_ensuring_at_once_end_with_one_image(
    copy_servers: Any,
    pair: tuple[AsyncClient, AsyncClient],
    image_server: SimpleStreamsServer,
    kind: str,
) -> None:
    """This client and two other processes ensure the same image at the same moment: one
    image, the aliases pointing at it, all get it back, no ConflictError."""
    source, target = pair
    if kind == "simplestreams":
        alias, expected, _ = two_architectures(image_server)
        url, certificate = image_server.url, image_server.certificate_pem
        origin: Any = SimpleStreams(url, certificate=certificate)
    else:
        alias = unique("img")
        created = await source.images.create(unified_image(), aliases=[alias], wait=True)
        expected, origin = created.fingerprint, source
        url, certificate = copy_servers.source.endpoint, None
    names = [unique("base"), unique("also")]
    arguments = [copy_servers.target.endpoint, kind, alias, names, url, certificate]
    package = Path(incus_images.__file__).parents[1]
    environment = {**os.environ, "PYTHONPATH": str(package)}
    with contextlib.ExitStack() as stack:
        racers = [
            stack.enter_context(
                subprocess.Popen(
                    [sys.executable, "-c", RACER, json.dumps(arguments)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    env=environment,
                )
            )
            for _ in range(2)
        ]
        for racer in racers:
            assert racer.stdout is not None
            assert racer.stdout.readline().strip() == "ready"
        for racer in racers:
            assert racer.stdin is not None
            racer.stdin.write("go\n")
            racer.stdin.flush()
        mine = await target.images.ensure(alias, origin, aliases=names)
        theirs = []
        for racer in racers:
            assert racer.stdout is not None
            theirs.append(racer.stdout.read().strip())
            assert racer.wait(timeout=120) == 0
    assert [mine.fingerprint, *theirs] == [expected] * 3
    assert await target.images.list(0) == [expected]
    for name in names:
        assert (await target.images.get_alias(name)).target == expected
