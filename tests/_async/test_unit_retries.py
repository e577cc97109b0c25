"""What is repeated and what is not (issue 8, reconnects), in both flavours, with respx.

A request that is safe to repeat (a GET, and so the operation long-poll) is repeated once, at
once, when its connection turns out dead: the server restarted since the pooled connection was
opened. A request that may have reached the server is never repeated, and its error says it may
have been applied. A request that never left (the connection could not be made) is not
repeated on a lone server either: the server is not there.
"""

from __future__ import annotations

import logging

import httpx
import pytest
import respx

from incus_images import AsyncClient, IncusConnectionError, IncusTimeoutError, LeftBehind
from tests.helpers import (
    accepted_response,
    assert_left,
    image,
    mock_survey,
    operation,
    sha256,
    sync_response,
)

pytestmark = pytest.mark.anyio

FP = sha256(b"retries")
OP_ID = "6b9d4f3e-1111-4222-8333-444455556666"
DEAD = httpx.RemoteProtocolError("Server disconnected without sending a response.")


async def test_a_get_on_a_dead_connection_is_repeated_once(
    client: AsyncClient, router: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="incus_images")
    route = router.get(f"/1.0/images/{FP}").mock(side_effect=[DEAD, sync_response(image(FP))])
    assert (await client.images.get(FP)).fingerprint == FP
    assert route.call_count == 2
    # The repeat is a warning, with the request and why; then the answer, at DEBUG.
    logged = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "incus_images"]
    assert logged[0] == (
        "WARNING",
        f"incus_images: GET /1.0/images/{FP}: the connection to {client.server} was dead "
        f"({DEAD}); trying again",
    )
    assert logged[1][0] == "DEBUG"
    assert logged[1][1].startswith(f"GET /1.0/images/{FP} on {client.server}: 200, ")


async def test_a_repeat_says_what_failed_even_when_the_failure_says_nothing(
    client: AsyncClient, router: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    silent = httpx.ReadError("")
    router.get(f"/1.0/images/{FP}").mock(side_effect=[silent, sync_response(image(FP))])
    with caplog.at_level(logging.WARNING, logger="incus_images"):
        await client.images.get(FP)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "was dead (ReadError); trying again" in warning


async def test_a_get_is_repeated_only_once(client: AsyncClient, router: respx.MockRouter) -> None:
    route = router.get(f"/1.0/images/{FP}").mock(side_effect=[DEAD, DEAD, sync_response({})])
    with pytest.raises(IncusConnectionError, match="Server disconnected"):
        await client.images.get(FP)
    assert route.call_count == 2


async def test_a_wait_is_repeated(client: AsyncClient, router: respx.MockRouter) -> None:
    route = router.get(f"/1.0/operations/{OP_ID}/wait").mock(
        side_effect=[DEAD, sync_response(operation(OP_ID, status_code=200))]
    )
    assert (await client.operations.wait(OP_ID)).succeeded
    assert route.call_count == 2


@pytest.mark.parametrize("error", [DEAD, httpx.ReadError("reset"), httpx.WriteError("broken")])
async def test_a_write_that_may_have_arrived_is_not_repeated(
    client: AsyncClient, router: respx.MockRouter, error: Exception
) -> None:
    route = router.post("/1.0/images/aliases").mock(side_effect=[error, sync_response(None)])
    with pytest.raises(IncusConnectionError) as caught:
        await client.images.create_alias("a", FP)
    assert_left(caught.value, LeftBehind.MAY_BE_APPLIED, "may have reached the server and been")
    assert route.call_count == 1


async def test_a_delete_is_not_repeated(client: AsyncClient, router: respx.MockRouter) -> None:
    route = router.delete(f"/1.0/images/{FP}").mock(
        side_effect=[DEAD, accepted_response(operation(OP_ID))]
    )
    with pytest.raises(IncusConnectionError) as caught:
        await client.images.delete(FP)
    assert_left(caught.value, LeftBehind.MAY_BE_APPLIED, "may have reached the server")
    assert route.call_count == 1


async def test_an_upload_body_is_never_sent_twice(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    mock_survey(router)
    route = router.post("/1.0/images").mock(
        side_effect=[httpx.ConnectError("refused"), accepted_response(operation(OP_ID))]
    )
    with pytest.raises(IncusConnectionError):
        await client.images.create(b"\x1f\x8b\x08\x00 an image", wait=True)
    assert route.call_count == 1


async def test_a_lone_server_that_cannot_be_reached_is_not_retried(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    route = router.get(f"/1.0/images/{FP}").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(IncusConnectionError, match="refused") as caught:
        await client.images.get(FP)
    assert route.call_count == 1
    assert "may have reached the server" not in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_a_timeout_is_not_repeated(client: AsyncClient, router: respx.MockRouter) -> None:
    """A slow server is not a dead connection: asking again would double the wait."""
    route = router.get(f"/1.0/images/{FP}").mock(
        side_effect=[httpx.ReadTimeout("slow"), sync_response(image(FP))]
    )
    with pytest.raises(IncusTimeoutError):
        await client.images.get(FP)
    assert route.call_count == 1
