"""Unit tests (respx) of operations.get and operations.wait, in both /wait answer shapes.

incusd 6.0.4 answers /wait with HTTP 200 and an error body on failure and on timeout
("context deadline exceeded"); 6.0.5+ answers with the operation (spec 4.4).

Deadline tests use a fake clock that the mock server advances by the seconds it "waited", so a
timeout of several seconds is tested in microseconds, with the requested ?timeout= checked.
"""

from __future__ import annotations

import math

import httpx
import pytest
import respx

from incus_images import (
    AsyncClient,
    ImageExistsError,
    IncusError,
    IncusTimeoutError,
    InvalidInputError,
    NotFoundError,
    Operation,
    OperationError,
    OperationGoneError,
    OperationStatus,
)
from tests._async.conftest import FakeClock
from tests.helpers import (
    OFFLINE_SERVER,
    UNIX_BASE,
    deadline_604,
    error_response,
    operation,
    sync_response,
)

pytestmark = pytest.mark.anyio

OP_ID = "41b69ae9-44bf-4b27-a0e5-23d3b8614fbf"
WAIT = f"/1.0/operations/{OP_ID}/wait"


def done(status_code: int = 200, **fields: object) -> httpx.Response:
    return sync_response(operation(OP_ID, status_code=status_code, **fields))  # type: ignore[arg-type]


def timeouts(route: respx.Route) -> list[str]:
    return [call.request.url.params["timeout"] for call in route.calls]


# ------------------------------------------------------------------------------------------
# Success, and what identifies the operation.


async def test_wait_returns_the_finished_operation(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    route = router.get(WAIT).mock(
        return_value=done(metadata={"fingerprint": "ab" * 32, "size": "289"})
    )
    result = await client.operations.wait(OP_ID)
    assert isinstance(result, Operation)
    assert result.id == OP_ID
    assert result.status_code == OperationStatus.SUCCESS
    assert result.succeeded
    assert result.metadata == {"fingerprint": "ab" * 32, "size": "289"}
    assert result.class_ == "task"
    assert result.created_at is not None
    assert result.created_at.tzinfo is not None
    # No deadline: the long-poll slice is 30 s, read timeout a margin beyond it.
    request = route.calls.last.request
    assert request.url.params["timeout"] == "30"
    assert request.extensions["timeout"]["read"] == 40.0
    assert "project" not in request.url.params


@pytest.mark.parametrize(
    "given",
    [
        OP_ID,
        f"/1.0/operations/{OP_ID}",
        f"/1.0/operations/{OP_ID}?project=dev",
        "operation object",
    ],
)
async def test_wait_accepts_operation_id_or_url(
    client: AsyncClient, router: respx.MockRouter, given: str
) -> None:
    target: Operation | str = given
    if given == "operation object":
        target = Operation(id=OP_ID, status_code=103)
    route = router.get(WAIT).mock(return_value=done())
    assert (await client.operations.wait(target)).id == OP_ID
    assert route.call_count == 1


@pytest.mark.parametrize(
    "given",
    ["", "../images", "a/b", "/1.0/operations/", "/1.0/operations/a/wait", "a b", "x" * 129, 42],
)
async def test_invalid_operation_ids_refused_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, given: object
) -> None:
    with pytest.raises(InvalidInputError):
        await client.operations.wait(given)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        await client.operations.get(given)  # type: ignore[arg-type]
    assert not silent.calls


@pytest.mark.parametrize("timeout", [-1, "5", [1]])
async def test_invalid_timeouts_refused_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, timeout: object
) -> None:
    with pytest.raises(InvalidInputError, match="timeout"):
        await client.operations.wait(OP_ID, timeout=timeout)  # type: ignore[arg-type]
    assert not silent.calls


@pytest.mark.parametrize("timeout", [math.inf, math.nan])
async def test_non_finite_timeout_is_refused_or_honoured(
    client: AsyncClient, timeout: float
) -> None:
    """inf may mean "no deadline"; NaN must be refused. Neither may escape as a bare error."""
    with respx.mock(base_url=UNIX_BASE, assert_all_called=False) as mock:
        mock.get(WAIT).mock(return_value=done())
        try:
            result = await client.operations.wait(OP_ID, timeout=timeout)
        except InvalidInputError:
            assert not mock.calls
        else:
            assert not math.isnan(timeout)
            assert result.succeeded


# ------------------------------------------------------------------------------------------
# Still running: both shapes are re-polled until a final answer.


async def test_604_deadline_answers_are_repolled_until_final(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    route = router.get(WAIT).mock(side_effect=[deadline_604(), deadline_604(), done()])
    result = await client.operations.wait(OP_ID)
    assert result.succeeded
    assert route.call_count == 3


async def test_new_shape_running_answers_are_repolled_until_final(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    route = router.get(WAIT).mock(side_effect=[done(103), done(105), done(200)])
    assert (await client.operations.wait(OP_ID)).succeeded
    assert route.call_count == 3


async def test_deadline_604_shape_raises_timeout(
    client: AsyncClient, router: respx.MockRouter, clock: FakeClock
) -> None:
    def incusd(request: httpx.Request) -> httpx.Response:
        clock.now += int(request.url.params["timeout"])
        return deadline_604()

    route = router.get(WAIT).mock(side_effect=incusd)
    with pytest.raises(IncusTimeoutError) as caught:
        await client.operations.wait(OP_ID, timeout=1)
    assert timeouts(route) == ["1"]
    error = caught.value
    assert isinstance(error, TimeoutError)
    assert OP_ID in str(error)
    assert OFFLINE_SERVER in str(error)
    assert "1 s" in str(error)
    assert route.calls.last.request.extensions["timeout"]["read"] == 11.0


async def test_deadline_new_shape_raises_timeout_with_the_running_operation(
    client: AsyncClient, router: respx.MockRouter, clock: FakeClock
) -> None:
    def incusd(request: httpx.Request) -> httpx.Response:
        clock.now += int(request.url.params["timeout"])
        return done(103)

    router.get(WAIT).mock(side_effect=incusd)
    with pytest.raises(IncusTimeoutError) as caught:
        await client.operations.wait(OP_ID, timeout=1)
    assert caught.value.operation is not None
    assert caught.value.operation.status_code == 103


async def test_each_poll_asks_only_for_the_time_left(
    client: AsyncClient, router: respx.MockRouter, clock: FakeClock
) -> None:
    """A server answering after 4 s each time: slices 10, 6, 2, then the deadline."""

    def incusd(request: httpx.Request) -> httpx.Response:
        clock.now += 4
        return deadline_604()

    route = router.get(WAIT).mock(side_effect=incusd)
    with pytest.raises(IncusTimeoutError):
        await client.operations.wait(OP_ID, timeout=10)
    assert timeouts(route) == ["10", "6", "2"]


async def test_fractional_timeout_rounds_the_slice_up(
    client: AsyncClient, router: respx.MockRouter, clock: FakeClock
) -> None:
    def incusd(request: httpx.Request) -> httpx.Response:
        clock.now += 0.4
        return deadline_604()

    route = router.get(WAIT).mock(side_effect=incusd)
    with pytest.raises(IncusTimeoutError):
        await client.operations.wait(OP_ID, timeout=1.5)
    # 1.5 -> 2, 1.1 -> 2, 0.7 -> 1, 0.3 -> 1, then 1.6 s have passed.
    assert timeouts(route) == ["2", "2", "1", "1"]


async def test_zero_timeout_polls_once(client: AsyncClient, router: respx.MockRouter) -> None:
    route = router.get(WAIT).mock(return_value=done(103))
    with pytest.raises(IncusTimeoutError):
        await client.operations.wait(OP_ID, timeout=0)
    assert timeouts(route) == ["1"]


async def test_zero_timeout_still_returns_a_finished_operation(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.get(WAIT).mock(return_value=done())
    assert (await client.operations.wait(OP_ID, timeout=0)).succeeded


# ------------------------------------------------------------------------------------------
# Failures.


async def test_failure_new_shape(client: AsyncClient, router: respx.MockRouter) -> None:
    router.get(WAIT).mock(return_value=done(400, err="Metadata tarball is missing metadata.yaml"))
    with pytest.raises(OperationError) as caught:
        await client.operations.wait(OP_ID)
    error = caught.value
    assert error.server_message == "Metadata tarball is missing metadata.yaml"
    assert "missing metadata.yaml" in str(error)
    assert OP_ID in str(error)
    assert OFFLINE_SERVER in str(error)
    assert error.operation is not None
    assert error.operation.status_code == 400
    assert not isinstance(error, ImageExistsError)


async def test_failure_604_shape_reads_the_operation(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.get(WAIT).mock(return_value=error_response(404, "Instance not found", http_status=200))
    op = router.get(f"/1.0/operations/{OP_ID}").mock(
        return_value=done(400, err="Failed to fetch instance: Instance not found")
    )
    with pytest.raises(OperationError) as caught:
        await client.operations.wait(OP_ID)
    error = caught.value
    # The operation's own err is preferred; the wait body's code is kept.
    assert error.server_message == "Failed to fetch instance: Instance not found"
    assert error.error_code == 404
    assert error.operation is not None
    assert error.operation.id == OP_ID
    assert op.call_count == 1
    assert "project" not in op.calls.last.request.url.params


async def test_failure_604_shape_when_the_operation_is_already_gone(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.get(WAIT).mock(
        return_value=error_response(500, "Unsupported compression", http_status=200)
    )
    router.get(f"/1.0/operations/{OP_ID}").mock(
        return_value=error_response(404, "Operation not found")
    )
    with pytest.raises(OperationError) as caught:
        await client.operations.wait(OP_ID)
    assert caught.value.server_message == "Unsupported compression"
    assert caught.value.operation is None
    assert "Unsupported compression" in str(caught.value)


async def test_huge_failure_message_is_bounded(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.get(WAIT).mock(return_value=done(400, err="x" * 20000))
    with pytest.raises(OperationError) as caught:
        await client.operations.wait(OP_ID)
    assert len(str(caught.value)) < 2000


async def test_cancelled_operation_is_an_operation_error(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.get(WAIT).mock(return_value=done(401))
    with pytest.raises(OperationError, match="cancelled") as caught:
        await client.operations.wait(OP_ID)
    assert not isinstance(caught.value, OperationGoneError)
    assert caught.value.operation is not None
    assert caught.value.operation.status_code == OperationStatus.CANCELLED


async def test_gone_operation(client: AsyncClient, router: respx.MockRouter) -> None:
    router.get(WAIT).mock(return_value=error_response(404, "Operation not found"))
    with pytest.raises(OperationGoneError) as caught:
        await client.operations.wait(OP_ID)
    error = caught.value
    assert isinstance(error, OperationError)
    assert error.status_code == 404
    assert error.url == WAIT
    assert OFFLINE_SERVER in str(error)
    assert OP_ID in str(error)


async def test_forbidden_wait_is_an_api_error(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.get(WAIT).mock(return_value=error_response(403, "not authorized"))
    with pytest.raises(IncusError) as caught:
        await client.operations.wait(OP_ID)
    assert caught.value.status_code == 403
    assert not isinstance(caught.value, OperationGoneError)


async def test_wait_answer_that_is_not_json(client: AsyncClient, router: respx.MockRouter) -> None:
    router.get(WAIT).mock(return_value=httpx.Response(200, content=b"<html>proxy</html>"))
    with pytest.raises(IncusError, match="unexpected answer"):
        await client.operations.wait(OP_ID)


async def test_read_timeout_during_the_long_poll(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.get(WAIT).mock(side_effect=httpx.ReadTimeout("timed out"))
    with pytest.raises(IncusTimeoutError) as caught:
        await client.operations.wait(OP_ID)
    assert OFFLINE_SERVER in str(caught.value)


# ------------------------------------------------------------------------------------------
# get


async def test_get_operation(client: AsyncClient, router: respx.MockRouter) -> None:
    route = router.get(f"/1.0/operations/{OP_ID}").mock(
        return_value=sync_response(
            operation(OP_ID, resources={"images": ["/1.0/images/abc?project=dev"]})
        )
    )
    result = await client.operations.get(f"/1.0/operations/{OP_ID}")
    assert result.id == OP_ID
    assert result.status == "Running"
    assert not result.done
    assert result.resources == {"images": ["/1.0/images/abc?project=dev"]}
    assert route.calls.last.request.url.query == b""


async def test_get_operation_not_found(client: AsyncClient, router: respx.MockRouter) -> None:
    router.get(f"/1.0/operations/{OP_ID}").mock(
        return_value=error_response(404, "Operation not found")
    )
    with pytest.raises(NotFoundError) as caught:
        await client.operations.get(OP_ID)
    assert OP_ID in str(caught.value)
    assert OFFLINE_SERVER in str(caught.value)
