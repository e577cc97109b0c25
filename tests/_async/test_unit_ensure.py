"""Unit tests (respx) of images.ensure: what a call sends when the image is here already, and
how it settles aliases (issue 16)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from incus_images import (
    AsyncClient,
    Image,
    InvalidInputError,
    LeftBehind,
    NotFoundError,
    PreconditionFailedError,
    SimpleStreams,
)
from tests.helpers import ScriptedDaemon as Wire
from tests.helpers import assert_left, error_response, image, sha256, sync_response

pytestmark = pytest.mark.anyio

HUB = "https://images.example/streams"
HELD = sha256(b"held image")
OLDER = sha256(b"an older version")
ELSEWHERE = sha256(b"another image")
ALIASES = "/1.0/images/aliases"
ETAG = '"0a1b2c"'
LIST = "GET /1.0/images?recursion=1"


@pytest.fixture
def wire(router: Any) -> Wire:
    return Wire(router)


def server_info(*architectures: str) -> httpx.Response:
    environment = {"architectures": list(architectures), "server_name": "t"}
    return sync_response({"auth": "trusted", "environment": environment})


def from_hub(fingerprint: str, alias: str, **fields: Any) -> dict[str, Any]:
    source = {"alias": alias, "protocol": "simplestreams", "server": HUB, "certificate": ""}
    return image(fingerprint, update_source=source, **fields)


def alias_entry(name: str, target: str) -> httpx.Response:
    body = {"name": name, "target": target, "description": "", "type": "container"}
    return sync_response(body, headers={"ETag": ETAG})


def holding(wire: Wire, *images: dict[str, Any]) -> None:
    wire.on("GET", "/1.0", server_info("x86_64", "i686"))
    wire.on("GET", "/1.0/images", sync_response(list(images)))
    for held in images:
        wire.on("GET", f"/1.0/images/{held['fingerprint']}", sync_response(held))


async def test_an_image_recorded_from_the_source_is_returned_without_a_copy(
    client: AsyncClient, wire: Wire
) -> None:
    old = from_hub(OLDER, "debian/12", uploaded_at="2026-01-01T00:00:00Z")
    new = from_hub(HELD, "debian/12", uploaded_at="2026-06-01T00:00:00Z")
    holding(wire, old, new, image(ELSEWHERE))
    wire.on("GET", f"{ALIASES}/base", alias_entry("base", HELD))
    held = await client.images.ensure("debian/12", SimpleStreams(HUB), aliases=["base"])
    assert isinstance(held, Image)
    assert held.fingerprint == HELD  # the newest of the versions held
    assert wire.sent() == ["GET /1.0", LIST, f"GET {ALIASES}/base", f"GET /1.0/images/{HELD}"]


@pytest.mark.parametrize(
    ("recorded", "architecture"),
    [("debian/12/arm64", "aarch64"), ("debian/12/arm64", "arm64"), ("debian/12", None)],
)
async def test_the_architecture_decides_which_held_image_is_the_one(
    client: AsyncClient, wire: Wire, recorded: str, architecture: str | None
) -> None:
    arch = "x86_64" if architecture is None else "aarch64"
    # Another architecture's image from the same alias is never taken for this one.
    decoy = "aarch64" if arch == "x86_64" else "x86_64"
    holding(
        wire,
        from_hub(ELSEWHERE, "debian/12", architecture=decoy),
        from_hub(HELD, recorded, architecture=arch),
    )
    held = await client.images.ensure("debian/12", SimpleStreams(HUB), architecture=architecture)
    assert held.fingerprint == HELD
    assert not [line for line in wire.sent() if line.startswith("POST")]


async def test_without_an_architecture_the_image_the_bare_alias_gave_is_the_one(
    client: AsyncClient, wire: Wire
) -> None:
    """An alias without an image of the server's own architecture gave another one: that is
    the one, found again; with an image of its own architecture too, that one is preferred."""
    foreign = from_hub(ELSEWHERE, "debian/12", architecture="aarch64")
    holding(wire, foreign)
    held = await client.images.ensure("debian/12", SimpleStreams(HUB))
    assert held.fingerprint == ELSEWHERE
    native = from_hub(HELD, "debian/12", uploaded_at="2020-01-01T00:00:00Z")
    holding(wire, foreign, native)
    held = await client.images.ensure("debian/12", SimpleStreams(HUB))
    assert held.fingerprint == HELD
    assert not [line for line in wire.sent() if line.startswith("POST")]


async def test_an_unknown_native_architecture_is_no_trouble(
    client: AsyncClient, wire: Wire
) -> None:
    holding(wire, from_hub(HELD, "debian/12", architecture="e2k"))
    wire.on("GET", "/1.0", server_info("e2k"))
    held = await client.images.ensure("debian/12", SimpleStreams(HUB))
    assert held.fingerprint == HELD


async def test_a_taken_alias_is_moved_with_if_match(client: AsyncClient, wire: Wire) -> None:
    holding(wire, from_hub(HELD, "debian/12"))
    wire.on("GET", f"{ALIASES}/base", alias_entry("base", ELSEWHERE))
    wire.on("PATCH", f"{ALIASES}/base", sync_response({}))
    await client.images.ensure("debian/12", SimpleStreams(HUB), aliases=["base"])
    assert wire.bodies("PATCH", f"{ALIASES}/base") == [{"target": HELD}]
    assert wire.requests("PATCH", f"{ALIASES}/base")[0].headers["If-Match"] == ETAG
    assert not [line for line in wire.sent() if line.startswith("DELETE")]


async def test_a_concurrent_move_elsewhere_is_not_overwritten(
    client: AsyncClient, wire: Wire
) -> None:
    holding(wire, from_hub(HELD, "debian/12"))
    other = sha256(b"a third image")
    wire.on(
        "GET",
        f"{ALIASES}/base",
        alias_entry("base", ELSEWHERE),
        alias_entry("base", other),
    )
    wire.on("PATCH", f"{ALIASES}/base", error_response(412, "ETag doesn't match"))
    with pytest.raises(PreconditionFailedError) as caught:
        await client.images.ensure("debian/12", SimpleStreams(HUB), aliases=["base"])
    assert_left(caught.value, LeftBehind.STORED, f"image {HELD} is here and stays")
    assert wire.sent().count(f"PATCH {ALIASES}/base") == 1


async def test_a_concurrent_move_to_the_same_image_is_fine(client: AsyncClient, wire: Wire) -> None:
    holding(wire, from_hub(HELD, "debian/12"))
    wire.on("GET", f"{ALIASES}/base", alias_entry("base", ELSEWHERE), alias_entry("base", HELD))
    wire.on("PATCH", f"{ALIASES}/base", error_response(412, "ETag doesn't match"))
    held = await client.images.ensure("debian/12", SimpleStreams(HUB), aliases=["base"])
    assert held.fingerprint == HELD


async def test_a_held_fingerprint_of_another_architecture_is_not_found(
    client: AsyncClient, wire: Wire
) -> None:
    wire.on("GET", f"/1.0/images/{HELD}", sync_response(image(HELD)))
    with pytest.raises(NotFoundError, match="x86_64"):
        await client.images.ensure(HELD, SimpleStreams(HUB), architecture="riscv64")
    assert wire.sent() == [f"GET /1.0/images/{HELD}"]


async def test_bad_arguments_are_refused_before_anything(client: AsyncClient, silent: Any) -> None:
    images: Any = client.images
    hub = SimpleStreams(HUB)
    with pytest.raises(InvalidInputError, match="architecture"):
        await images.ensure("debian/12", hub, architecture="z80")
    with pytest.raises(InvalidInputError, match="source"):
        await images.ensure("debian/12", "images:")
    with pytest.raises(InvalidInputError, match="aliases"):
        await images.ensure("debian/12", hub, aliases="base")
    with pytest.raises(InvalidInputError, match="image"):
        await images.ensure("", hub)
    assert silent.calls.call_count == 0
