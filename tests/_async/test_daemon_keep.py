"""reuse=True against a real incusd, in both flavours (issue 16): a taken alias moves to the
new image once it is stored, with If-Match, and a concurrent change is never overwritten."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tiny_image import unified_image

from incus_images import (
    AsyncClient,
    ConflictError,
    Image,
    LeftBehind,
    NotFoundError,
    Operation,
    PreconditionFailedError,
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
