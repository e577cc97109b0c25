"""Unit tests (respx) of reuse=True on create, copy and publish: a taken alias is moved to the
new image last, with PATCH and its ETag as If-Match, never deleted and made again (issue 16)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from incus_images import (
    AsyncClient,
    ConflictError,
    Image,
    InvalidInputError,
    LeftBehind,
    Operation,
    PreconditionFailedError,
    UnexpectedResponseError,
)
from tests.helpers import (
    SURVEY,
    accepted_response,
    assert_left,
    error_response,
    image,
    operation,
    sha256,
    sync_response,
)
from tests.helpers import ScriptedDaemon as Wire

pytestmark = pytest.mark.anyio

NEW = sha256(b"the new image")
OLD = sha256(b"the image the alias pointed at")
PUBLISH_ID = "2b3c4d5e-0000-4000-8000-000000000001"
UPLOAD_ID = "2b3c4d5e-0000-4000-8000-000000000002"
ALIASES = "/1.0/images/aliases"
INSTANCE = "/1.0/instances/c1"
ETAG = '"5d1b0c9a"'
DATA = b"\x1f\x8b\x08\x00" + bytes(range(256)) * 3
UPLOADED = sha256(DATA)


@pytest.fixture
def wire(router: Any) -> Wire:
    return Wire(router)


def alias_entry(name: str, target: str = OLD, description: str = "") -> dict[str, str]:
    return {"description": description, "target": target, "name": name, "type": "container"}


def taken(name: str, target: str = OLD, etag: str | None = ETAG) -> httpx.Response:
    return sync_response(alias_entry(name, target), headers={"ETag": etag} if etag else None)


def not_found_alias() -> httpx.Response:
    return error_response(404, "Image alias not found")


def wait_path(op_id: str) -> str:
    return f"GET /1.0/operations/{op_id}/wait?timeout=30"


def publishing(wire: Wire) -> None:
    """A daemon on which publishing the stopped instance c1 makes image NEW."""
    wire.on("GET", INSTANCE, sync_response({"name": "c1", "status": "Stopped"}))
    wire.on("GET", "/1.0/images", sync_response([f"/1.0/images/{OLD}"]))
    wire.on("POST", "/1.0/images", accepted_response(operation(PUBLISH_ID)))
    done = operation(PUBLISH_ID, status_code=200, metadata={"fingerprint": NEW, "size": "290"})
    wire.on("GET", f"/1.0/operations/{PUBLISH_ID}/wait", sync_response(done))
    wire.on("GET", f"/1.0/images/{NEW}", sync_response(image(NEW)))


PUBLISH_STEPS = [f"GET {INSTANCE}", SURVEY, "POST /1.0/images", wait_path(PUBLISH_ID)]


async def test_publish_reuse_moves_a_taken_alias_last_with_if_match(
    client: AsyncClient, wire: Wire
) -> None:
    publishing(wire)
    wire.on("GET", f"{ALIASES}/base", taken("base"))
    wire.on("GET", f"{ALIASES}/fresh", not_found_alias())
    wire.on("POST", ALIASES, sync_response(None, status=201))
    wire.on("PATCH", f"{ALIASES}/base", sync_response({}))
    result = await client.images.publish("c1", aliases=["base", "fresh"], reuse=True)
    assert isinstance(result, Image)
    assert wire.sent() == [
        f"GET {ALIASES}/base",
        f"GET {ALIASES}/fresh",
        *PUBLISH_STEPS,
        f"POST {ALIASES}",  # the free alias is made first
        f"PATCH {ALIASES}/base",  # the taken one moved last
        f"GET /1.0/images/{NEW}",
    ]
    assert wire.bodies("PATCH", f"{ALIASES}/base") == [{"target": NEW}]
    assert wire.requests("PATCH", f"{ALIASES}/base")[0].headers["If-Match"] == ETAG
    assert wire.bodies("POST", ALIASES) == [{"name": "fresh", "target": NEW, "description": ""}]


async def test_without_reuse_a_taken_alias_is_refused_before_anything(
    client: AsyncClient, wire: Wire
) -> None:
    publishing(wire)
    wire.on("GET", f"{ALIASES}/base", taken("base"))
    with pytest.raises(ConflictError, match="reuse=True") as caught:
        await client.images.publish("c1", aliases=["base"])
    assert wire.sent() == [f"GET {ALIASES}/base"]
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was sent")


async def test_a_concurrent_change_to_the_alias_is_not_overwritten_and_the_image_stays(
    client: AsyncClient, wire: Wire
) -> None:
    publishing(wire)
    wire.on("GET", f"{ALIASES}/base", taken("base"))
    wire.on("GET", f"{ALIASES}/next", taken("next"))
    wire.on("PATCH", f"{ALIASES}/base", sync_response({}))
    wire.on("PATCH", f"{ALIASES}/next", error_response(412, "ETag doesn't match: abc vs def"))
    with pytest.raises(PreconditionFailedError) as caught:
        await client.images.publish("c1", aliases=["base", "next"], reuse=True)
    # Never deleted: neither the new image (the moved alias would go with it) nor an alias.
    assert not [line for line in wire.sent() if line.startswith("DELETE")]
    assert caught.value.fingerprint == NEW
    assert_left(
        caught.value,
        LeftBehind.STORED,
        f"image {NEW} is stored and complete and stays",
        "alias 'next' was not moved",
        "changed after it was read",
        "moved to it before: 'base'",
    )


async def test_an_alias_already_on_the_new_image_is_left_alone(
    client: AsyncClient, wire: Wire
) -> None:
    publishing(wire)
    wire.on("GET", f"{ALIASES}/base", taken("base", target=NEW))
    result = await client.images.publish("c1", aliases=["base"], reuse=True)
    assert isinstance(result, Image)
    assert not [line for line in wire.sent() if line.startswith(("PATCH", "POST /1.0/images/a"))]


async def test_a_taken_alias_without_an_etag_is_refused_before_anything(
    client: AsyncClient, wire: Wire
) -> None:
    publishing(wire)
    wire.on("GET", f"{ALIASES}/base", taken("base", etag=None))
    with pytest.raises(UnexpectedResponseError, match="ETag") as caught:
        await client.images.publish("c1", aliases=["base"], reuse=True)
    assert wire.sent() == [f"GET {ALIASES}/base"]
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was sent")


async def test_reuse_with_wait_false_moves_the_alias_when_the_operation_is_waited_for(
    client: AsyncClient, wire: Wire
) -> None:
    publishing(wire)
    wire.on("GET", f"{ALIASES}/base", taken("base"))
    wire.on("PATCH", f"{ALIASES}/base", sync_response({}))
    started = await client.images.publish("c1", aliases=["base"], reuse=True, wait=False)
    assert isinstance(started, Operation)
    assert f"PATCH {ALIASES}/base" not in wire.sent()
    finished = await client.operations.wait(started)
    assert finished.succeeded
    assert wire.sent()[-1] == f"PATCH {ALIASES}/base"
    assert wire.requests("PATCH", f"{ALIASES}/base")[0].headers["If-Match"] == ETAG


async def test_create_reuse_moves_the_alias_once_the_upload_is_verified(
    client: AsyncClient, wire: Wire
) -> None:
    wire.on("GET", f"{ALIASES}/base", taken("base"))
    wire.on("GET", "/1.0/images", sync_response([f"/1.0/images/{OLD}"]))
    wire.on("POST", "/1.0/images", accepted_response(operation(UPLOAD_ID)))
    done = operation(UPLOAD_ID, status_code=200, metadata={"fingerprint": UPLOADED})
    wire.on("GET", f"/1.0/operations/{UPLOAD_ID}/wait", sync_response(done))
    wire.on("GET", f"/1.0/images/{UPLOADED}", sync_response(image(UPLOADED)))
    wire.on("PATCH", f"{ALIASES}/base", sync_response({}))
    result = await client.images.create(DATA, aliases=["base"], reuse=True, wait=True)
    assert isinstance(result, Image)
    sent = wire.sent()
    assert sent[0] == f"GET {ALIASES}/base"
    assert sent.index(f"PATCH {ALIASES}/base") > sent.index(wait_path(UPLOAD_ID))
    assert wire.bodies("PATCH", f"{ALIASES}/base") == [{"target": UPLOADED}]


async def test_reuse_must_be_a_bool(client: AsyncClient, silent: Any) -> None:
    images: Any = client.images
    with pytest.raises(InvalidInputError, match="reuse"):
        await images.create(DATA, aliases=["a"], reuse="yes")
    with pytest.raises(InvalidInputError, match="reuse"):
        await images.publish("c1", aliases=["a"], reuse=1)
    with pytest.raises(InvalidInputError, match="reuse"):
        await images.copy("a", client, reuse=None)
    assert silent.calls.call_count == 0
