"""The operation waiter against a real incusd, in both flavours."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from tiny_image import unified_image

from incus_images import (
    AsyncClient,
    IncusTimeoutError,
    Operation,
    OperationError,
    OperationGoneError,
)
from tests.helpers import sha256

pytestmark = pytest.mark.anyio


def start_token_operation(raw_api: httpx.Client, fingerprint: str) -> str:
    """An image secret: an operation that runs until it is cancelled."""
    response = raw_api.post(f"/1.0/images/{fingerprint}/secret")
    assert response.status_code == 202, response.text
    return str(response.json()["metadata"]["id"])


async def test_wait_accepts_an_operation_an_id_or_a_url(
    daemon_client: AsyncClient, cleanup: list[str]
) -> None:
    data = unified_image()
    operation = await daemon_client.images.create(data)
    assert isinstance(operation, Operation)
    cleanup.append(sha256(data))
    for handle in (operation, operation.id, f"/1.0/operations/{operation.id}"):
        finished = await daemon_client.operations.wait(handle)
        assert finished.id == operation.id
        assert finished.succeeded and finished.done


async def test_wait_raises_the_failure_of_a_failed_operation(daemon_client: AsyncClient) -> None:
    operation = await daemon_client.images.create(b"\x00not a tarball at all")
    assert isinstance(operation, Operation)
    with pytest.raises(OperationError) as caught:
        await daemon_client.operations.wait(operation)
    assert "Unsupported compression" in str(caught.value)
    assert operation.id in str(caught.value)
    assert caught.value.operation is not None
    assert caught.value.operation.status_code == 400


async def test_wait_times_out_at_its_deadline_and_reports_cancellation(
    daemon_client: AsyncClient, new_image: Any, raw_api: httpx.Client
) -> None:
    image = await new_image()
    op_id = start_token_operation(raw_api, image.fingerprint)
    started = time.monotonic()
    with pytest.raises(IncusTimeoutError) as caught:
        await daemon_client.operations.wait(op_id, timeout=1)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 10, elapsed
    assert op_id in str(caught.value)

    assert raw_api.delete(f"/1.0/operations/{op_id}").status_code == 200
    with pytest.raises(OperationError) as cancelled:
        await daemon_client.operations.wait(op_id, timeout=10)
    assert "cancelled" in str(cancelled.value)


async def test_get_reads_a_running_operation(
    daemon_client: AsyncClient, new_image: Any, raw_api: httpx.Client
) -> None:
    image = await new_image()
    op_id = start_token_operation(raw_api, image.fingerprint)
    try:
        operation = await daemon_client.operations.get(op_id)
        assert operation.status == "Running" and not operation.done
        assert operation.class_ == "token"
        assert operation.resources["images"] == [f"/1.0/images/{image.fingerprint}"]
    finally:
        raw_api.delete(f"/1.0/operations/{op_id}")


async def test_waiting_for_an_unknown_operation_says_it_is_gone(daemon_client: AsyncClient) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(OperationGoneError) as caught:
        await daemon_client.operations.wait(missing)
    assert missing in str(caught.value)
    assert daemon_client.server in str(caught.value)
