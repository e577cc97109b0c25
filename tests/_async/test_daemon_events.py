"""The event stream's websocket against a real incusd, in both flavours (the reader only:
client.events() is not written yet)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from incus_images import AsyncClient, _events
from incus_images._async._event_stream import event_socket
from tests.helpers import unique

pytestmark = pytest.mark.anyio


async def test_an_alias_change_arrives_as_a_typed_event(
    daemon_client: AsyncClient, new_image: Any
) -> None:
    image = await new_image()
    name = unique("ev") + " with/slash"
    connection = daemon_client._connection
    async with event_socket(connection, types="lifecycle", all_projects=False) as socket:
        sent = time.monotonic()
        await daemon_client.images.create_alias(name, image.fingerprint)
        await daemon_client.images.rename_alias(name, name + "2")
        seen = []
        while len(seen) < 2:
            event = _events.parse_event(await socket.message())
            if isinstance(event, _events.ImageEvent) and event.alias in (name, name + "2"):
                seen.append((event.action, event.alias, event.old_alias))
        latency = time.monotonic() - sent
    assert seen == [
        ("image-alias-created", name, None),
        ("image-alias-renamed", name + "2", name),
    ]
    assert latency < 5
    await daemon_client.images.delete_alias(name + "2")


async def test_the_socket_is_closed_when_the_block_is_left(daemon_client: AsyncClient) -> None:
    connection = daemon_client._connection
    async with event_socket(connection, types="operation", all_projects=True) as socket:
        sock = socket._stream.get_extra_info("socket")
        assert sock.fileno() != -1
    assert sock.fileno() == -1
