"""A client outlives a daemon restart between two calls (issue 8, reconnects), in both
flavours: its pooled connection is dead, and the next safe call opens a new one at once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from throwaway_incusd import ThrowawayIncusd
from tiny_image import unified_image

from incus_images import AsyncClient, Image, IncusConnectionError, LeftBehind
from tests.helpers import notes_of

pytestmark = [pytest.mark.anyio, pytest.mark.incusd]  # starts daemons of its own


@pytest.fixture
def restartable() -> Iterator[ThrowawayIncusd]:
    """A daemon of this test's own: restarting the session's would disturb other tests."""
    with ThrowawayIncusd() as daemon:
        yield daemon


async def test_the_call_after_a_restart_works(restartable: ThrowawayIncusd) -> None:
    async with AsyncClient(restartable.endpoint) as client:
        image = await client.images.create(unified_image(), wait=True)
        assert isinstance(image, Image)
        assert [found.fingerprint for found in await client.images.list()] == [image.fingerprint]
        restartable.restart()
        # The pooled connection died with the old process: repeated on a new one.
        assert (await client.images.get(image.fingerprint)).fingerprint == image.fingerprint
        assert [found.fingerprint for found in await client.images.list()] == [image.fingerprint]
        await client.images.delete(image.fingerprint, wait=True)


async def test_a_write_after_a_restart_is_not_repeated_blindly(
    restartable: ThrowawayIncusd,
) -> None:
    """A write on a dead pooled connection fails, saying it may have been applied, or goes
    through on a fresh connection (when the dead one was noticed before the request left);
    it is never sent twice."""
    async with AsyncClient(restartable.endpoint) as client:
        image = await client.images.create(unified_image(), wait=True)
        assert isinstance(image, Image)
        restartable.restart()
        outcome = "created"
        try:
            await client.images.create_alias("after-restart", image.fingerprint)
        except IncusConnectionError as exc:  # a repeat would have been a ConflictError
            outcome = f"{exc.left_behind}: " + "\n".join(notes_of(exc))
        assert outcome == "created" or (
            outcome.startswith(f"{LeftBehind.MAY_BE_APPLIED}: ")
            and "may have reached the server" in outcome
        )
        aliases = await client.images.list_aliases()
        assert [alias.name for alias in aliases] in ([], ["after-restart"])
        await client.images.delete(image.fingerprint, wait=True)
