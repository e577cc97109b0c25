"""The websocket under the event stream (``/1.0/events``), read only as its caller asks.

The upgrade request goes through the client's connection like any streamed call (failover,
the unix socket, the pinned TLS certificate, the client certificate, the call's deadline);
after ``101 Switching Protocols`` the SDK drives wsproto (sans-IO) on the network stream the
pool handed back: no task and no thread reads ahead, a message is bounded while it arrives,
and the server's pings are answered while the caller waits for the next message.
docs/design/events.md says why this and not httpx-ws.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpcore
from wsproto import connection as ws
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason

from .. import _api as api
from .._events import MAX_EVENT_BYTES
from .._protocol import unexpected
from ._connection import AsyncConnection

#: Bytes one read asks for: wsproto holds at most this plus a frame header before the SDK
#: has counted them against the message's bound.
READ_BYTES = 64 * 1024

#: Seconds one read waits for the server. incusd pings every 10 s, so a live stream never
#: stays silent this long (measured: pings at 10.0 s intervals, incusd 6.0.4).
SILENCE_SECONDS = 30.0

_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class StreamLost(Exception):
    """The event stream ended (the server closed it, went silent, or broke the protocol)."""


def _accept(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer to this key (RFC 6455, 4.2.2)."""
    return base64.b64encode(
        hashlib.sha1(key.encode() + _ACCEPT_GUID, usedforsecurity=False).digest()
    ).decode()


class AsyncEventSocket:
    """Text messages of one event stream, one at a time, each at most ``MAX_EVENT_BYTES``."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._ws = ws.Connection(ws.ConnectionType.CLIENT)

    async def message(self) -> bytes:
        """The next text message, whole; pings are answered meanwhile. StreamLost when the
        stream ends, stays silent for SILENCE_SECONDS, or sends a message too long or binary
        (the stream is closed then)."""
        parts: list[bytes] = []
        size = 0
        while True:
            for event in self._ws.events():
                if isinstance(event, Ping):
                    await self._send(event.response())
                elif isinstance(event, TextMessage):
                    part = event.data.encode("utf-8", "surrogatepass")
                    size += len(part)
                    if size > MAX_EVENT_BYTES:
                        await self._close(CloseReason.MESSAGE_TOO_BIG)
                        raise StreamLost(f"it sent an event over {MAX_EVENT_BYTES} bytes")
                    parts.append(part)
                    if event.message_finished:
                        return b"".join(parts)
                elif isinstance(event, BytesMessage):
                    await self._close(CloseReason.UNSUPPORTED_DATA)
                    raise StreamLost("it sent a binary message")
                elif isinstance(event, CloseConnection):
                    raise StreamLost(f"it closed the stream ({event.code})")
            try:
                data = await self._stream.read(READ_BYTES, timeout=SILENCE_SECONDS)
            except httpcore.ReadTimeout:
                raise StreamLost(f"it sent nothing for {SILENCE_SECONDS:g} s") from None
            except (httpcore.ReadError, OSError) as exc:
                raise StreamLost(f"reading it failed ({exc})") from None
            if not data:
                raise StreamLost("it closed the connection")
            # A frame that breaks the protocol comes out as a CloseConnection (1002).
            self._ws.receive_data(data)

    async def _send(self, event: Pong | CloseConnection) -> None:
        try:
            await self._stream.write(self._ws.send(event), timeout=SILENCE_SECONDS)
        except (httpcore.WriteError, httpcore.WriteTimeout, OSError) as exc:
            raise StreamLost(f"writing to it failed ({exc})") from None

    async def _close(self, code: int) -> None:
        if self._ws.state is ws.ConnectionState.OPEN:
            await self._send(CloseConnection(code=code))


@asynccontextmanager
async def event_socket(
    connection: AsyncConnection, *, types: str, all_projects: bool
) -> AsyncIterator[AsyncEventSocket]:
    """Open the event stream; an error answer raises as any call's does (an untrusted
    client's 403 as ForbiddenError). Leaving the block closes the socket."""
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    call = api.events(types=types, key=key, all_projects=all_projects)
    async with connection.stream(call) as response:
        if response.status_code != 101:
            raise unexpected(call, connection.server, f"status {response.status_code}, not 101")
        if response.headers.get("sec-websocket-accept") != _accept(key):
            raise unexpected(call, connection.server, "its Sec-WebSocket-Accept is wrong")
        stream = response.extensions.get("network_stream")
        if stream is None:
            raise unexpected(call, connection.server, "its transport hands over no stream")
        yield AsyncEventSocket(stream)
