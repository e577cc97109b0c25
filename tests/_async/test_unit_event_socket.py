"""The event stream's websocket reader against scripted server bytes, in both flavours: its
bounds, its answers to pings, and how a stream that breaks ends."""

from __future__ import annotations

import httpcore
import pytest
from wsproto import connection as ws
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.frame_protocol import CloseReason

from incus_images import _events, _flavours
from incus_images._async import _event_stream
from incus_images._async._event_stream import AsyncEventSocket, StreamLost

pytestmark = pytest.mark.anyio


class ScriptedStream:
    """A network stream whose reads give the server's bytes, a read at a time (b"" at the
    end), and which keeps what the client writes."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = list(chunks)
        self.written: list[bytes] = []
        self.reads = 0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        self.reads += 1
        assert max_bytes <= _event_stream.READ_BYTES
        if not self.chunks:
            return b""
        chunk = self.chunks.pop(0)
        if len(chunk) > max_bytes:
            self.chunks.insert(0, chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        return chunk

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.written.append(buffer)

    def client_events(self) -> list[object]:
        """What the client sent, as the server reads it."""
        server = ws.Connection(ws.ConnectionType.SERVER)
        server.receive_data(b"".join(self.written))
        return list(server.events())


def server_frames(*events: object) -> bytes:
    server = ws.Connection(ws.ConnectionType.SERVER)
    return b"".join(server.send(event) for event in events)  # type: ignore[arg-type]


def socket_over(stream: ScriptedStream) -> AsyncEventSocket:
    return AsyncEventSocket(stream)  # type: ignore[arg-type]


async def test_messages_come_whole_and_pings_are_answered() -> None:
    data = server_frames(
        Ping(payload=b"keepalive"),
        TextMessage(data='{"a": ', message_finished=False),
        TextMessage(data="1}"),
        TextMessage(data="second"),
    )
    stream = ScriptedStream([data[i : i + 7] for i in range(0, len(data), 7)])
    socket = socket_over(stream)
    assert await socket.message() == b'{"a": 1}'
    assert await socket.message() == b"second"
    pongs = [e for e in stream.client_events() if type(e).__name__ == "Pong"]
    assert [bytes(p.payload) for p in pongs] == [b"keepalive"]  # type: ignore[attr-defined]


async def test_a_message_over_the_limit_ends_the_stream_before_it_is_read_whole() -> None:
    # One frame announcing 100 MB, of which the server sends plenty.
    head = server_frames(TextMessage(data="x" * 10))[:2]
    huge = bytes([0x81, 127]) + (100_000_000).to_bytes(8, "big")
    assert head[0] == 0x81
    stream = ScriptedStream([huge] + [b"x" * 65536] * 2000)
    socket = socket_over(stream)
    with pytest.raises(StreamLost, match="over"):
        await socket.message()
    assert stream.reads <= _events.MAX_EVENT_BYTES // 65536 + 2
    closes = [e for e in stream.client_events() if isinstance(e, CloseConnection)]
    assert [c.code for c in closes] == [CloseReason.MESSAGE_TOO_BIG]


async def test_many_fragments_add_up_to_the_limit() -> None:
    piece = "y" * 1000
    fragments = [TextMessage(data=piece, message_finished=False)] * (
        _events.MAX_EVENT_BYTES // 1000 + 5
    )
    stream = ScriptedStream([server_frames(*fragments)])
    with pytest.raises(StreamLost, match="over"):
        await socket_over(stream).message()


async def test_a_binary_message_ends_the_stream() -> None:
    stream = ScriptedStream([server_frames(BytesMessage(data=b"\x00" * 10))])
    with pytest.raises(StreamLost, match="binary"):
        await socket_over(stream).message()
    closes = [e for e in stream.client_events() if isinstance(e, CloseConnection)]
    assert [c.code for c in closes] == [CloseReason.UNSUPPORTED_DATA]


@pytest.mark.parametrize(
    ("chunks", "why"),
    [
        ([], "closed the connection"),
        ([b"\x0f\x00"], r"broke the protocol \(1002"),  # an unknown opcode: wsproto closes
        ([server_frames(CloseConnection(code=1001))], "closed the stream"),
    ],
)
async def test_a_stream_that_ends(chunks: list[bytes], why: str) -> None:
    with pytest.raises(StreamLost, match=why):
        await socket_over(ScriptedStream(chunks)).message()


class PausingStream(ScriptedStream):
    """A ScriptedStream whose None chunks are reads that time out (nothing came)."""

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self.chunks and self.chunks[0] is None:
            self.chunks.pop(0)
            assert timeout is not None and timeout <= 0.05
            await _flavours.async_flavour.sleep(timeout)
            raise httpcore.ReadTimeout("nothing came")
        return await super().read(max_bytes, timeout)


async def test_message_within_returns_none_and_keeps_a_message_begun() -> None:
    whole = server_frames(TextMessage(data='{"a": 1}'))
    first, rest = whole[:4], whole[4:]
    stream = PausingStream([first, None, rest])  # type: ignore[list-item]
    socket = socket_over(stream)
    assert await socket.message_within(0.05) is None
    # The stream goes on: the message begun before the pause is whole after it.
    assert await socket.message_within(0.05) == b'{"a": 1}'
    with pytest.raises(StreamLost, match="closed the connection"):
        await socket.message_within(0.05)
