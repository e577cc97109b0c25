"""The websocket under the event stream (``/1.0/events``), read only as its caller asks.

The upgrade request goes through the client's connection like any streamed call (failover,
the unix socket, the pinned TLS certificate, the client certificate, the call's deadline);
after ``101 Switching Protocols`` the SDK drives wsproto (sans-IO) on the network stream the
pool handed back: no task and no thread reads ahead, a message is bounded in size and time
while it arrives, the server's pings are answered while the caller waits for the next message,
its close is answered with ours, and leaving closes the stream whatever state it is in.
docs/design/events.md says why this and not httpx-ws.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

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

#: Seconds message() waits for a whole frame, by default. incusd pings every 10 s, so a live
#: stream never stays silent this long (measured: pings at 10.0 s intervals, incusd 6.0.4).
SILENCE_SECONDS = 30.0

#: Seconds the goodbye (a close frame) may take when the stream is left, at most: leaving
#: does not wait on a server that stopped reading.
CLOSE_SECONDS = 1.0

_ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class StreamLost(Exception):
    """The event stream ended (the server closed it, went silent, or broke the protocol)."""


def _accept(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer to this key (RFC 6455, 4.2.2)."""
    return base64.b64encode(
        hashlib.sha1(key.encode() + _ACCEPT_GUID, usedforsecurity=False).digest()
    ).decode()


class AsyncEventSocket:
    """Text messages of one event stream, one at a time, each at most ``MAX_EVENT_BYTES``.

    ``silence``: seconds message() waits for a whole frame (a ping counts), and at most for
    a message to arrive whole from its first frame, before it gives up (StreamLost); the
    event stream may set it lower (the client's timeout). ``last_frame_at``: when the last
    whole frame arrived (aware UTC; None before the first).
    """

    def __init__(
        self, stream: httpcore.AsyncNetworkStream, *, timeout: float | None = None
    ) -> None:
        self._stream = stream
        self._ws = ws.Connection(ws.ConnectionType.CLIENT)
        self.silence = SILENCE_SECONDS
        self.last_frame_at: datetime | None = None
        # Leaving says goodbye within this, whatever the server does (the client's timeout).
        self._goodbye_seconds = CLOSE_SECONDS if timeout is None else min(CLOSE_SECONDS, timeout)
        # Why the stream ended, once it has: every later message() says the same.
        self._lost: str | None = None
        # The message being assembled (kept here, so that an interrupted message() loses
        # nothing) and the monotonic time its first piece arrived.
        self._parts: list[bytes] = []
        self._size = 0
        self._started: float | None = None

    async def message(self) -> bytes:
        """The next text message, whole; pings are answered meanwhile. StreamLost when the
        stream ends (the server's close is answered first), sends no whole frame for
        ``silence`` seconds, takes longer than that to send one message, or sends a message
        too long or binary (the stream is closed then); every later call raises it too."""
        whole = await self._guarded(None)
        assert whole is not None  # only a call with an end returns None
        return whole

    async def message_within(self, seconds: float) -> bytes | None:
        """The next text message as message() reads it, or None when none came whole
        within ``seconds``: the stream goes on, and a message begun is kept for the next
        call (a caller with a deadline of its own, such as a wait's budget)."""
        return await self._guarded(time.monotonic() + seconds)

    async def _guarded(self, until: float | None) -> bytes | None:
        if self._lost is not None:
            raise StreamLost(self._lost)
        try:
            return await self._next_message(until)
        except StreamLost as exc:
            self._lost = str(exc)
            raise

    async def _next_message(self, until: float | None) -> bytes | None:
        # Silence counts from the call, not from the last frame: the caller may have been
        # busy, and what waited in the socket meanwhile is still to be read.
        heard = time.monotonic()
        while True:
            for event in self._ws.events():
                if isinstance(event, Ping | Pong) or (
                    isinstance(event, TextMessage) and event.frame_finished
                ):
                    heard = time.monotonic()
                    self.last_frame_at = datetime.now(UTC)
                if isinstance(event, Ping):
                    await self._send(event.response(), self.silence)
                elif isinstance(event, TextMessage):
                    part = event.data.encode("utf-8", "surrogatepass")
                    if self._size + len(part) > MAX_EVENT_BYTES:
                        await self._close(CloseReason.MESSAGE_TOO_BIG)
                        raise StreamLost(f"it sent an event over {MAX_EVENT_BYTES} bytes")
                    whole = self._add(part, finished=event.message_finished)
                    if whole is not None:
                        return whole
                elif isinstance(event, BytesMessage):
                    await self._close(CloseReason.UNSUPPORTED_DATA)
                    raise StreamLost("it sent a binary message")
                elif isinstance(event, CloseConnection):
                    await self._closed(event)
                # A Pong nobody asked for (the SDK sends no ping) is ignored.
            since = heard if self._started is None else self._started
            wait = since + self.silence - time.monotonic()
            if wait <= 0:
                if self._started is not None:
                    raise StreamLost(f"one message took it over {self.silence:g} s")
                raise StreamLost(f"it sent no whole frame for {self.silence:g} s")
            if until is not None:
                if until <= time.monotonic():
                    return None
                wait = min(wait, until - time.monotonic())
            try:
                data = await self._stream.read(READ_BYTES, timeout=wait)
            except httpcore.ReadTimeout:
                continue
            except (httpcore.ReadError, OSError) as exc:
                raise StreamLost(f"reading it failed ({exc})") from None
            if not data:
                raise StreamLost("it closed the connection")
            # A frame that breaks the protocol comes out as a CloseConnection (1002, 1007).
            self._ws.receive_data(data)

    def _add(self, part: bytes, *, finished: bool) -> bytes | None:
        """Keep a piece of a text message; the message once it is whole."""
        if self._started is None:
            self._started = time.monotonic()
        self._parts.append(part)
        self._size += len(part)
        if not finished:
            return None
        whole = b"".join(self._parts)
        self._parts, self._size, self._started = [], 0, None
        return whole

    async def _closed(self, event: CloseConnection) -> None:
        """The server closed the stream (answered with ours), or broke the protocol (wsproto
        reports that as a close of its own, which is sent)."""
        if self._ws.state is ws.ConnectionState.REMOTE_CLOSING:
            with contextlib.suppress(StreamLost):
                await self._send(event.response(), self._goodbye_seconds)
            raise StreamLost(f"it closed the stream ({event.code})")
        await self._close(event.code)
        raise StreamLost(f"it broke the protocol ({event.code}: {event.reason})")

    async def _send(self, event: Pong | CloseConnection, seconds: float) -> None:
        data = self._ws.send(event)
        try:
            await self._stream.write(data, timeout=seconds)
        except Exception as exc:  # noqa: BLE001 - any failure of the write ends the stream
            # Any failure of the write means the stream is gone: httpcore maps most to
            # WriteError, but its async TLS stream lets anyio's EndOfStream out of a write to
            # a peer that closed the connection (httpcore 1.0.9; encode/httpcore#808).
            raise StreamLost(f"writing to it failed ({exc!r})") from None

    async def _close(self, code: int) -> None:
        """Send a close frame if the stream is still open, within the client's timeout (at
        most CLOSE_SECONDS); a server that went away or stopped reading is no error (why the
        stream ends is said by the caller)."""
        if self._ws.state is ws.ConnectionState.OPEN:
            with contextlib.suppress(StreamLost):
                await self._send(CloseConnection(code=code), self._goodbye_seconds)

    async def goodbye(self) -> None:
        """Close the stream politely (1000) if it is still open."""
        await self._close(CloseReason.NORMAL_CLOSURE)


@asynccontextmanager
async def event_socket(
    connection: AsyncConnection, *, types: str, all_projects: bool
) -> AsyncIterator[AsyncEventSocket]:
    """Open the event stream; an error answer raises as any call's does (an untrusted
    client's 403 as ForbiddenError), an answer that does not switch to websocket (another
    status, a wrong Sec-WebSocket-Accept) as UnexpectedResponseError. Leaving the block
    closes the stream (a close frame, if it is still open, then the socket), whether or not
    the server is still there."""
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    call = api.events(types=types, key=key, all_projects=all_projects)
    async with connection.stream(call) as response:
        if response.status_code != 101:
            raise unexpected(
                call,
                connection.server,
                f"status {response.status_code}, not 101 Switching Protocols",
            )
        if response.headers.get("upgrade", "").lower() != "websocket":
            raise unexpected(
                call, connection.server, "it switched to another protocol than websocket"
            )
        if response.headers.get("sec-websocket-accept") != _accept(key):
            raise unexpected(call, connection.server, "its Sec-WebSocket-Accept is wrong")
        stream = response.extensions.get("network_stream")
        if stream is None:
            raise unexpected(call, connection.server, "its transport hands over no stream")
        socket = AsyncEventSocket(stream, timeout=connection.timeout)
        try:
            yield socket
        finally:
            await socket.goodbye()
