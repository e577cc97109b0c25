"""The event stream's websocket against a hostile websocket server of the project
(tests/ws_server.py, on a unix socket), end to end through the client's connection, in both
flavours: what each kind of hostility costs in memory and time, the errors it gives, and that
the socket is closed however the stream ends."""

from __future__ import annotations

import logging
import re
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from socket import SO_SNDBUF, SOL_SOCKET
from typing import Any

import pytest
from wsproto.events import CloseConnection, Pong

from incus_images import (
    AsyncClient,
    EventGap,
    ForbiddenError,
    ImageEvent,
    IncusConnectionError,
    UnexpectedResponseError,
    _events,
    _flavours,
)
from incus_images._async import _event_stream
from incus_images._async._event_stream import AsyncEventSocket, StreamLost, event_socket
from tests.hostile_server import head
from tests.pki import Issued, self_signed
from tests.ws_server import (
    BINARY,
    CLOSE,
    CONTINUATION,
    PING,
    PONG,
    TEXT,
    Peer,
    Script,
    WebSocketServer,
    captured,
    frame,
    incusd_error,
    interrupted_after,
)

pytestmark = pytest.mark.anyio

CREATED = captured("image-created")
ALIASED = captured("image-alias-created")


@asynccontextmanager
async def events_of(
    server: WebSocketServer, *, timeout: float = 2.0
) -> AsyncIterator[AsyncEventSocket]:
    """The event stream of a client of the server, open."""
    async with (
        client_of(server, timeout=timeout) as client,
        event_socket(client._connection, types="lifecycle", all_projects=False) as socket,
    ):
        yield socket


@contextmanager
def peak_allocation() -> Iterator[list[int]]:
    """The most memory allocated within the block over what was before (bytes, in the
    list once the block ends), as tracemalloc sees it: every thread's, the server's too."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    peak: list[int] = []
    try:
        yield peak
    finally:
        peak.append(tracemalloc.get_traced_memory()[1] - before)
        if not tracing:
            tracemalloc.stop()


def serving(tmp_path: Path, script: Script, over: Issued | None = None) -> WebSocketServer:
    """The server, on a unix socket or (``over`` a certificate) over TLS on loopback."""
    return WebSocketServer(tmp_path, script, tls=over)


def client_of(server: WebSocketServer, *, timeout: float = 2.0) -> AsyncClient:
    if server.certificate is None:
        return AsyncClient(server.endpoint, timeout=timeout)
    return AsyncClient(server.endpoint, timeout=timeout, verify=server.certificate)


@pytest.fixture(params=["unix", "tls"])
def over(request: pytest.FixtureRequest) -> Issued | None:
    """How the server is reached: its unix socket, or TLS (this certificate, shown)."""
    return None if request.param == "unix" else self_signed(ips=["127.0.0.1"])


@pytest.fixture
def quiet(monkeypatch: pytest.MonkeyPatch) -> float:
    """A short silence (seconds) after which a stream is given up."""
    monkeypatch.setattr(_event_stream, "SILENCE_SECONDS", 0.5)
    return 0.5


async def test_incusd_frames_come_whole_and_pings_get_pongs(
    tmp_path: Path, over: Issued | None
) -> None:
    def script(peer: Peer) -> None:
        # The first frame comes with the 101's head, in one write: it must not be lost.
        peer.upgrade(then=frame(TEXT, CREATED))
        peer.ping(b"one")
        peer.text(ALIASED)
        peer.ping(b"two")
        peer.text(CREATED)
        assert peer.expect(Pong) is not None
        assert peer.expect(Pong) is not None
        peer.wait_gone()

    with serving(tmp_path, script, over) as server:
        async with events_of(server) as socket:
            messages = [await socket.message() for _ in range(3)]
            assert socket.last_frame_at is not None
        server.wait_scripts()
    assert messages == [CREATED, ALIASED, CREATED]
    assert isinstance(_events.parse_event(messages[0]), _events.ImageEvent)
    pongs = [bytes(event.payload) for event in server.received if isinstance(event, Pong)]
    assert pongs == [b"one", b"two"]
    # Leaving said goodbye (1000), then closed the connection.
    assert server.closes() == [1000]
    assert server.gone == 1
    assert server.requests == ["GET /1.0/events?type=lifecycle"]


async def test_garbage_text_is_a_message_the_parser_skips(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def script(peer: Peer) -> None:
        peer.upgrade()
        for garbage in (b"not json", b'{"type": 5}', b"[]", "\u00e9t\u00e9".encode()):
            peer.text(garbage)
        peer.text(CREATED)
        peer.wait_gone()

    with serving(tmp_path, script) as server:
        async with events_of(server) as socket:
            caplog.set_level(logging.WARNING, logger="incus_images")
            parsed = [_events.parse_event(await socket.message()) for _ in range(5)]
    assert parsed[:4] == [None] * 4
    assert isinstance(parsed[4], _events.ImageEvent)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 4
    assert server.closes() == [1000]


@pytest.mark.parametrize(
    ("bad", "why", "code"),
    [
        (frame(TEXT, b'{"a": "\xff\xfe"}'), r"broke the protocol \(1007", 1007),
        (frame(BINARY, b"\x00" * 10), "binary", 1003),
        (b"\x81\x7e\x00\x02{}", r"broke the protocol \(1002", 1002),  # length not minimal
        (frame(0x3, b"x"), r"broke the protocol \(1002", 1002),  # a reserved opcode
        (frame(TEXT | 0x40, b"{}"), r"broke the protocol \(1002", 1002),  # RSV1, no extension
        (bytes([0x81, 0x82]) + b"mask{}", r"broke the protocol \(1002", 1002),  # masked
        (frame(0x9, b"p" * 126), r"broke the protocol \(1002", 1002),  # a ping over 125
        (frame(CONTINUATION, b"{}"), r"broke the protocol \(1002", 1002),  # nothing to go on
        (frame(CLOSE, (999).to_bytes(2, "big")), r"broke the protocol \(1002", 1002),  # no code
        (frame(CLOSE, b"\x03"), r"broke the protocol \(1002", 1002),  # half a code
        (frame(CLOSE, b"\x03\xe8\xff"), r"broke the protocol \(1007", 1007),  # reason not UTF-8
    ],
)
async def test_a_frame_that_breaks_the_protocol_ends_the_stream_with_a_close(
    tmp_path: Path, bad: bytes, why: str, code: int
) -> None:
    def script(peer: Peer) -> None:
        peer.upgrade()
        peer.text(CREATED)
        peer.send_raw(bad)
        peer.wait_gone()

    with serving(tmp_path, script) as server:
        async with events_of(server) as socket:
            assert await socket.message() == CREATED
            with pytest.raises(StreamLost, match=why):
                await socket.message()
            # Every later call says the same, without reading.
            with pytest.raises(StreamLost, match=why):
                await socket.message()
        server.wait_scripts()
    assert server.closes() == [code]
    assert server.gone == 1


@pytest.mark.parametrize(("opcode", "code"), [(TEXT, 1009), (BINARY, 1003)])
async def test_a_100_mb_frame_is_refused_as_it_arrives(
    tmp_path: Path, opcode: int, code: int, over: Issued | None
) -> None:
    sent: list[int] = []

    def script(peer: Peer) -> None:
        peer.upgrade()
        sent.append(peer.stream_frame(100_000_000, opcode=opcode))
        peer.wait_gone()

    with serving(tmp_path, script, over) as server:
        async with events_of(server) as socket:
            started = time.monotonic()
            with peak_allocation() as peak, pytest.raises(StreamLost, match=r"over|binary"):
                await socket.message()
            took = time.monotonic() - started
        server.wait_scripts()
    print(f"a 100 MB frame cost the client {peak[0] / 1e6:.2f} MB at most, {took:.2f} s")
    assert peak[0] < 2_000_000
    assert took < 3
    # The server could send only what the socket buffers held beyond the limit.
    assert sent[0] < 20_000_000
    assert server.closes() == [code]


async def test_a_message_fragmented_without_end_is_bounded_in_size(tmp_path: Path) -> None:
    def script(peer: Peer) -> None:
        peer.upgrade()
        peer.text(b"{", fin=False)
        peer.flood(frame(CONTINUATION, b" " * 1000, fin=False))
        peer.wait_gone()

    with serving(tmp_path, script) as server:
        async with events_of(server) as socket:
            with pytest.raises(StreamLost, match="over"):
                await socket.message()
        server.wait_scripts()
    assert server.closes() == [1009]


def never_sends(peer: Peer) -> None:
    peer.upgrade()


def sends_empty_fragments(peer: Peer) -> None:
    peer.upgrade()
    peer.text(b"{", fin=False)
    peer.flood(frame(CONTINUATION, fin=False) * 100)


def drips_a_frame(peer: Peer) -> None:
    peer.upgrade()
    peer.send_raw(frame(TEXT, length=len(CREATED)))
    for byte in CREATED:
        if not peer.send_raw(bytes([byte])):
            break
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("sends", "why"),
    [
        (never_sends, "it sent no whole frame for 0.5 s"),
        # A message without end, in frames of nothing: no size limit is ever reached.
        (sends_empty_fragments, "one message took it over 0.5 s"),
        # The frame's pieces start a message that never ends.
        (drips_a_frame, "one message took it over 0.5 s"),
    ],
)
async def test_a_stream_that_delivers_nothing_whole_is_given_up_in_time(
    tmp_path: Path, quiet: float, sends: Script, why: str
) -> None:
    def script(peer: Peer) -> None:
        sends(peer)
        peer.wait_gone()

    with serving(tmp_path, script) as server:
        async with events_of(server) as socket:
            started = time.monotonic()
            with pytest.raises(StreamLost, match=re.escape(why)):
                await socket.message()
            took = time.monotonic() - started
        server.wait_scripts()
    assert quiet <= took < quiet + 1
    # The stream was still open: leaving said goodbye.
    assert server.closes() == [1000]
    assert server.gone == 1


def pings_through_the_quiet(peer: Peer) -> None:
    # Four pings 0.25 s apart: 1 s in all, twice the silence a stream is given up after.
    for _ in range(4):
        time.sleep(0.25)
        peer.ping()


def pongs_unasked(peer: Peer) -> None:
    peer.send_raw(frame(PONG, b"nobody asked"))


@pytest.mark.parametrize(("before", "pongs"), [(pings_through_the_quiet, 4), (pongs_unasked, 0)])
async def test_control_frames_before_an_event_are_answered_or_ignored(
    tmp_path: Path, quiet: float, before: Script, pongs: int
) -> None:
    def script(peer: Peer) -> None:
        peer.upgrade()
        before(peer)
        peer.text(CREATED)
        peer.wait_gone()

    with serving(tmp_path, script) as server:
        async with events_of(server) as socket:
            assert await socket.message() == CREATED
        server.wait_scripts()
    assert len([event for event in server.received if isinstance(event, Pong)]) == pongs
    assert server.closes() == [1000]


async def test_the_servers_close_is_answered_with_ours(tmp_path: Path, over: Issued | None) -> None:
    def script(peer: Peer) -> None:
        peer.upgrade()
        peer.text(CREATED)
        peer.close(1001, "going away")
        assert peer.expect(CloseConnection) is not None
        peer.wait_gone()

    with serving(tmp_path, script, over) as server:
        async with events_of(server) as socket:
            assert await socket.message() == CREATED
            with pytest.raises(StreamLost, match=r"closed the stream \(1001\)"):
                await socket.message()
        server.wait_scripts()
    # One close: the answer; leaving sends no other.
    assert server.closes() == [1001]
    assert server.gone == 1


@pytest.mark.parametrize("last", [b"", frame(PING, b"keepalive")])
async def test_a_connection_dropped_without_a_close_ends_the_stream(
    tmp_path: Path, over: Issued | None, last: bytes
) -> None:
    # After a ping, the pong may be written to a connection already gone (over TLS the
    # async flavour's write then raised anyio.EndOfStream, not an httpcore error).
    def script(peer: Peer) -> None:
        peer.upgrade()
        peer.send_raw(frame(TEXT, CREATED) + last)
        peer.drop()

    with serving(tmp_path, script, over) as server:
        async with events_of(server) as socket:
            sock = socket._stream.get_extra_info("socket")
            assert await socket.message() == CREATED
            with pytest.raises(
                StreamLost, match=r"closed the connection|(reading|writing).* failed"
            ):
                await socket.message()
        server.wait_scripts()
    # Leaving closed the socket, although the goodbye could not be sent.
    assert sock.fileno() == -1


async def test_a_server_that_stops_reading_is_given_up(tmp_path: Path, quiet: float) -> None:
    # Pings without end, and never a pong read: the client's pongs fill the socket buffers
    # (made small, so that this takes little time) until a pong cannot be written within
    # the silence.
    def script(peer: Peer) -> None:
        peer.upgrade()
        peer.flood(frame(PING, b"keepalive") * 1000, seconds=5)
        peer.wait_gone()

    with serving(tmp_path, script) as server:
        async with events_of(server) as socket:
            sock = socket._stream.get_extra_info("socket")
            sock.setsockopt(SOL_SOCKET, SO_SNDBUF, 4096)
            started = time.monotonic()
            with pytest.raises(StreamLost, match="writing to it failed"):
                await socket.message()
            lost = time.monotonic() - started
        left = time.monotonic() - started - lost
        server.wait_scripts()
    assert quiet <= lost < quiet + 1
    # Leaving does not wait on the server for more than CLOSE_SECONDS.
    assert left < _event_stream.CLOSE_SECONDS + 0.5


async def test_a_flood_is_read_only_as_the_caller_asks(tmp_path: Path) -> None:
    burst = frame(TEXT, CREATED) * 100

    def script(peer: Peer) -> None:
        peer.upgrade()
        peer.flood(burst)

    with serving(tmp_path, script) as server:
        async with events_of(server) as socket:
            for _ in range(500):
                await socket.message()
            with peak_allocation() as peak:
                for _ in range(5000):
                    assert await socket.message() == CREATED
            # The caller pauses: the server can send only what the socket buffers hold.
            await _flavours.async_flavour.sleep(0.5)
            before = server.sent
            await _flavours.async_flavour.sleep(0.3)
            assert server.sent == before
            unread = before - 5500 * len(frame(TEXT, CREATED))
        server.wait_scripts()
    print(f"5,000 flooded events cost the client {peak[0] / 1e3:.0f} kB at most; {unread} unread")
    assert peak[0] < 500_000
    assert unread < 16 * 1024 * 1024


async def waits_on_the_socket(client: AsyncClient) -> None:
    async with event_socket(client._connection, types="operation", all_projects=True) as socket:
        await socket.message()


async def waits_on_the_stream(client: AsyncClient) -> None:
    async with client.events(types=("operation",), all_projects=True) as events:
        async for _ in events:
            pytest.fail("no event was expected")


@pytest.mark.parametrize("waits", [waits_on_the_socket, waits_on_the_stream])
async def test_a_stop_is_honoured_at_once_and_closes_the_socket(
    tmp_path: Path, waits: Callable[[AsyncClient], Any], over: Issued | None
) -> None:
    # The default silence (30 s): only the stop (a cancel, Ctrl-C) ends the wait.
    def script(peer: Peer) -> None:
        peer.upgrade()
        peer.wait_gone()

    with serving(tmp_path, script, over) as server:
        async with client_of(server) as client:
            started = time.monotonic()
            with interrupted_after(
                0.3, asynchronous=_flavours.async_flavour.accepts_async_iterables
            ):
                await waits(client)
            took = time.monotonic() - started
            # The client closed the connection before the client itself was closed.
            server.wait_scripts()
        assert server.gone == 1
    assert took < 1.5
    assert server.requests == ["GET /1.0/events?type=operation&all-projects=true"]


# The upgrade refused or answered wrong.


@pytest.mark.parametrize(
    ("answer", "error", "why"),
    [
        (
            lambda peer: peer.upgrade(accept="d3JvbmcgYWNjZXB0IGtleQ=="),
            UnexpectedResponseError,
            "Sec-WebSocket-Accept is wrong",
        ),
        (
            lambda peer: peer.upgrade(Sec_WebSocket_Accept=""),
            UnexpectedResponseError,
            "Sec-WebSocket-Accept is wrong",
        ),
        (
            lambda peer: peer.upgrade(Upgrade="h2c"),
            UnexpectedResponseError,
            "another protocol than websocket",
        ),
        (
            lambda peer: peer.send_raw(head(200, Content_Length="2") + b"{}"),
            UnexpectedResponseError,
            "status 200, not 101",
        ),
        (
            lambda peer: peer.send_raw(head(204)),
            UnexpectedResponseError,
            "status 204, not 101",
        ),
        (
            lambda peer: peer.send_raw(incusd_error(403, "not authorized")),
            ForbiddenError,
            r"not authorized \(HTTP 403 from GET /1.0/events\)",
        ),
    ],
)
async def test_an_upgrade_answered_wrong_is_a_clear_error(
    tmp_path: Path, answer: Script, error: type[Exception], why: str
) -> None:
    def script(peer: Peer) -> None:
        answer(peer)
        peer.wait_gone()

    with serving(tmp_path, script) as server:
        async with AsyncClient(server.endpoint, timeout=2) as client:
            with pytest.raises(error, match=why):
                async with event_socket(client._connection, types="lifecycle", all_projects=False):
                    pytest.fail("no stream was expected")
        server.wait_scripts()
    assert server.gone == 1
    assert len(server.requests) == 1


# The public stream (client.events()) over the same hostile server.


def connections(*scripts: Script) -> Script:
    """A script per connection, in order (the last for every connection after)."""
    opened: list[Peer] = []

    def script(peer: Peer) -> None:
        opened.append(peer)
        scripts[min(len(opened), len(scripts)) - 1](peer)

    return script


async def test_garbage_frames_are_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def script(peer: Peer) -> None:
        peer.upgrade()
        for garbage in (b"not json", b'{"type": "lifecycle", "metadata": 5}', b"{}" * 1000):
            peer.text(garbage)
        peer.text(CREATED)
        peer.wait_gone()

    caplog.set_level(logging.WARNING, logger="incus_images")
    with serving(tmp_path, script) as server:
        async with (
            AsyncClient(server.endpoint, timeout=2) as client,
            client.events() as events,
        ):
            event = await anext(events)
        server.wait_scripts()
    assert isinstance(event, ImageEvent)
    assert event.action == "image-created"
    # One WARNING for the three: a stream warns about skipped frames at most once in
    # SKIP_WARNING_SECONDS (a flood of garbage must not flood the log).
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot be read" in warnings[0].getMessage()
    assert server.closes() == [1000]


async def test_a_silent_stream_is_reopened_after_a_gap(tmp_path: Path, quiet: float) -> None:
    def silent(peer: Peer) -> None:
        peer.upgrade()
        peer.wait_gone()

    def talks(peer: Peer) -> None:
        peer.upgrade(then=frame(TEXT, ALIASED))
        peer.wait_gone()

    with serving(tmp_path, connections(silent, talks)) as server:
        async with AsyncClient(server.endpoint, timeout=2) as client:
            started = time.monotonic()
            async with client.events() as events:
                gap = await anext(events)
                took = time.monotonic() - started
                event = await anext(events)
        server.wait_scripts(2)
    assert isinstance(gap, EventGap)
    assert gap.since <= gap.until
    assert quiet <= took < quiet + 1
    assert isinstance(event, ImageEvent)
    assert event.action == "image-alias-created"
    assert len(server.requests) == 2


@pytest.mark.parametrize(
    ("sends", "why"),
    [
        (lambda peer: None, "no whole frame for 0.5 s"),
        (lambda peer: peer.stream_frame(100_000_000), "over 1048576 bytes"),
        (lambda peer: peer.send_raw(frame(BINARY, b"\x00")), "binary"),
        (lambda peer: peer.close(1001), r"closed the stream \(1001\)"),
        (Peer.drop, "closed the connection|reading it failed"),
    ],
)
async def test_without_reconnect_a_hostile_stream_raises_at_once(
    tmp_path: Path, quiet: float, sends: Script, why: str
) -> None:
    def script(peer: Peer) -> None:
        peer.upgrade()
        sends(peer)
        peer.wait_gone()

    with serving(tmp_path, script) as server:
        async with AsyncClient(server.endpoint, timeout=2) as client:
            started = time.monotonic()
            with pytest.raises(IncusConnectionError, match=why):
                async with client.events(reconnect=False) as events:
                    await anext(events)
            took = time.monotonic() - started
        server.wait_scripts()
    assert took < quiet + 1
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "refuses",
    [
        lambda peer: peer.upgrade(accept="d3JvbmcgYWNjZXB0IGtleQ=="),
        lambda peer: peer.send_raw(head(200, Content_Length="0")),
        lambda peer: peer.send_raw(incusd_error(503, "shutting down")),
        Peer.drop,
    ],
)
async def test_reopening_gives_up_within_the_clients_timeout(
    tmp_path: Path, refuses: Script
) -> None:
    def drops(peer: Peer) -> None:
        peer.upgrade()
        peer.drop()

    def script(peer: Peer) -> None:
        refuses(peer)
        peer.wait_gone()

    timeout = 1.0
    with serving(tmp_path, connections(drops, script)) as server:
        async with (
            AsyncClient(server.endpoint, timeout=timeout) as client,
            client.events() as events,
        ):
            started = time.monotonic()
            with pytest.raises(IncusConnectionError, match="could not be opened again"):
                await anext(events)
            took = time.monotonic() - started
        server.wait_scripts(len(server.requests))
    assert took < timeout + 1
    assert len(server.requests) >= 2


async def test_an_untrusted_client_is_refused_at_entry(tmp_path: Path) -> None:
    def script(peer: Peer) -> None:
        peer.send_raw(incusd_error(403, "not authorized"))
        peer.wait_gone()

    with serving(tmp_path, script) as server:
        async with AsyncClient(server.endpoint, timeout=2) as client:
            with pytest.raises(ForbiddenError, match="not authorized"):
                async with client.images.watch():
                    pytest.fail("no stream was expected")
        server.wait_scripts()
    assert len(server.requests) == 1
