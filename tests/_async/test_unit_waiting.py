"""Unit tests (respx) of the one rule for waiting (README, "What waiting means"):

* wait=False returns the Operation without waiting for it; what the call still had to do
  (verify, settings, aliases) is done by operations.wait() on the same client, by the
  Operation or its id, once;
* timeout= bounds all the waiting of a call; past it, IncusTimeoutError whose note says what
  is left behind, and a later operations.wait() finishes it;
* an Operation already final is returned by operations.wait() as it is.

The waits use a fake clock that the mock server advances by the seconds it "waited".
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import httpx
import pytest
import respx

from incus_images import (
    AsyncClient,
    Image,
    IncusTimeoutError,
    InvalidInputError,
    LeftBehind,
    Operation,
    OperationError,
)
from tests._async.conftest import FakeClock
from tests.helpers import (
    SURVEY,
    UNIX_BASE,
    accepted_response,
    assert_left,
    deadline_604,
    error_response,
    image,
    mock_survey,
    operation,
    sha256,
    sync_response,
)

pytestmark = pytest.mark.anyio

DATA = b"\x1f\x8b\x08\x00 an image to wait for " + bytes(range(256))
FP = sha256(DATA)
UPLOAD_ID = "11111111-2222-4333-8444-555555555555"
DELETE_ID = "99999999-8888-4777-8666-555555555555"


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    """A mock incusd whose routes a test need not all use (the server's side of an upload
    is set up whole)."""
    with respx.mock(base_url=UNIX_BASE, assert_all_called=False) as mock:
        yield mock


class Upload:
    """The server's side of an upload that runs until ``finished`` is set."""

    def __init__(self, router: respx.MockRouter, clock: FakeClock | None = None) -> None:
        self.finished = False
        self.clock = clock
        mock_survey(router)
        self.post = router.post("/1.0/images").mock(
            return_value=accepted_response(operation(UPLOAD_ID))
        )
        self.wait = router.get(f"/1.0/operations/{UPLOAD_ID}/wait").mock(side_effect=self._wait)
        self.image = router.get(f"/1.0/images/{FP}").mock(
            return_value=sync_response(image(FP, size=len(DATA)))
        )
        self.alias = router.post("/1.0/images/aliases").mock(
            return_value=sync_response(None, status=201)
        )
        router.get("/1.0/images/aliases/web").mock(
            return_value=error_response(404, "Image alias not found")
        )

    def _wait(self, request: httpx.Request) -> httpx.Response:
        if self.finished:
            metadata = {"fingerprint": FP, "size": str(len(DATA))}
            return sync_response(operation(UPLOAD_ID, status_code=200, metadata=metadata))
        if self.clock is not None:
            self.clock.now += int(request.url.params["timeout"])
        return deadline_604()


# ------------------------------------------------------------------------------------------
# wait=False: the rest is done by operations.wait(), once.


async def test_a_call_returned_early_is_finished_by_a_wait_on_its_id(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    upload = Upload(router)
    upload.finished = True
    started = await client.images.create(DATA, aliases=["web"])
    assert isinstance(started, Operation)
    assert not upload.wait.called and not upload.alias.called
    finished = await client.operations.wait(f"/1.0/operations/{started.id}")
    assert finished.succeeded
    assert json.loads(upload.alias.calls.last.request.content)["target"] == FP
    # Once only: waiting again asks the server, and creates nothing.
    await client.operations.wait(started)
    assert upload.alias.call_count == 1


async def test_another_client_waiting_only_waits(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    """What is left lives in the client that returned early: another client's wait is the
    plain wait (and the first client still finishes it)."""
    upload = Upload(router)
    upload.finished = True
    started = await client.images.create(DATA, aliases=["web"])
    async with AsyncClient(client.server) as other:
        assert (await other.operations.wait(started)).succeeded
    assert not upload.alias.called
    await client.operations.wait(started)
    assert upload.alias.called


async def test_the_oldest_call_returned_early_is_forgotten_past_the_limit(
    client: AsyncClient,
    router: respx.MockRouter,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    module = sys.modules[type(client.operations).wait.__module__]
    monkeypatch.setattr(module, "MAX_PENDING", 1)
    upload = Upload(router)
    other_id = "22222222-3333-4444-8555-666666666666"
    upload.post.side_effect = [
        accepted_response(operation(UPLOAD_ID)),
        accepted_response(operation(other_id)),
    ]
    with caplog.at_level(logging.WARNING, logger="incus_images"):
        first = await client.images.create(DATA, aliases=["web"])
        second = await client.images.create(DATA, properties={"os": "x"})
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"operation {first.id} is forgotten" in warning
    assert "create the aliases 'web'" in warning
    assert second.id == other_id
    # The forgotten one is waited for as any operation: no alias is made.
    upload.finished = True
    assert (await client.operations.wait(first)).succeeded
    assert not upload.alias.called


async def test_a_final_operation_is_returned_as_it_is(
    client: AsyncClient, silent: respx.MockRouter
) -> None:
    final = Operation(id="", status="Success", status_code=200, metadata={"fingerprint": FP})
    assert await client.operations.wait(final) is final
    failed = Operation(id="", status="Failure", status_code=400, err="disk full")
    with pytest.raises(OperationError, match="disk full"):
        await client.operations.wait(failed)
    assert not silent.calls


# ------------------------------------------------------------------------------------------
# timeout=: the whole wait, a note on what is left, a later wait finishes it.


async def test_create_timeout_says_what_is_left_and_a_later_wait_finishes_it(
    client: AsyncClient, router: respx.MockRouter, clock: FakeClock
) -> None:
    upload = Upload(router, clock)
    with pytest.raises(IncusTimeoutError) as caught:
        await client.images.create(DATA, aliases=["web"], wait=True, timeout=5)
    notes = "\n".join(caught.value.__notes__)
    assert f"operation {UPLOAD_ID} runs on" in notes
    assert "create the aliases 'web'" in notes
    assert f"client.operations.wait({UPLOAD_ID!r})" in notes
    assert_left(caught.value, LeftBehind.MAY_BE_STORED, "so it may be stored")
    assert sum(int(call.request.url.params["timeout"]) for call in upload.wait.calls) == 5
    assert not upload.alias.called
    upload.finished = True
    assert (await client.operations.wait(UPLOAD_ID)).succeeded
    assert upload.alias.called


async def test_a_wait_on_a_call_returned_early_that_times_out_can_be_repeated(
    client: AsyncClient, router: respx.MockRouter, clock: FakeClock
) -> None:
    upload = Upload(router, clock)
    started = await client.images.create(DATA, aliases=["web"])
    with pytest.raises(IncusTimeoutError) as caught:
        await client.operations.wait(started, timeout=2)
    assert "create the aliases 'web'" in "\n".join(caught.value.__notes__)
    upload.finished = True
    assert (await client.operations.wait(started)).succeeded
    assert upload.alias.called


async def test_delete_timeout_says_the_image_may_still_be_deleted(
    client: AsyncClient, router: respx.MockRouter, clock: FakeClock
) -> None:
    router.delete(f"/1.0/images/{FP}").mock(
        return_value=accepted_response(operation(DELETE_ID, description="Deleting image"))
    )

    def still(request: httpx.Request) -> httpx.Response:
        clock.now += int(request.url.params["timeout"])
        return deadline_604()

    router.get(f"/1.0/operations/{DELETE_ID}/wait").mock(side_effect=still)
    with pytest.raises(IncusTimeoutError) as caught:
        await client.images.delete(FP, wait=True, timeout=3)
    notes = "\n".join(caught.value.__notes__)
    assert "the image may still be deleted" in notes
    assert DELETE_ID in notes


@pytest.mark.parametrize("timeout", [-1, "5", float("nan"), [1]])
async def test_a_bad_timeout_is_refused_before_anything_is_sent(
    client: AsyncClient, silent: respx.MockRouter, timeout: object
) -> None:
    for call in (
        lambda: client.images.create(DATA, wait=True, timeout=timeout),  # type: ignore[arg-type]
        lambda: client.images.delete(FP, wait=True, timeout=timeout),  # type: ignore[arg-type]
        lambda: client.images.refresh(FP, wait=True, timeout=timeout),  # type: ignore[arg-type]
        lambda: client.images.publish("c1", timeout=timeout),  # type: ignore[arg-type]
    ):
        with pytest.raises(InvalidInputError, match="timeout"):
            await call()
    assert not silent.calls


async def test_a_timeout_that_is_not_reached_changes_nothing(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    upload = Upload(router)
    upload.finished = True
    created = await client.images.create(DATA, wait=True, timeout=60)
    assert isinstance(created, Image)
    sent = [f"{call.request.method} {call.request.url.raw_path.decode()}" for call in router.calls]
    assert sent[0] == SURVEY
