"""A watched wait (``progress=``) follows its operation on the event stream, in both flavours:
the watcher gets each state the events report, the end comes from the usual ``/wait``, a
Running that arrives after the end is never seen, the budget is kept, and when the stream
cannot be opened or drops, the wait polls as before.

The server is mocked below the SDK's own transport (respx) and answers the upgrade with a
scripted network stream that keeps the call's deadline, as the SDK's network streams do.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpcore
import httpx
import pytest
import respx
from wsproto import connection as ws
from wsproto.events import Ping, TextMessage

from incus_images import (
    AsyncClient,
    IncusTimeoutError,
    Operation,
    OperationError,
    _flavours,
)
from incus_images._async import _operation_events
from incus_images._async._deadlines import current_deadline
from incus_images._async._event_stream import _accept
from incus_images._waiting import WaitBudget
from tests.helpers import (
    OFFLINE_SERVER,
    UNIX_BASE,
    deadline_604,
    error_response,
    operation,
    sync_response,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

OP = "0e1e2e3e-4e5e-4e6e-8e7e-9e0e1e2e3e4e"
OTHER = "0f1f2f3f-4f5f-4f6f-8f7f-9f0f1f2f3f4f"
SECRET = "5ec4e7" * 8
EVENTS = "GET /1.0/events?type=operation"
STATE = f"GET /1.0/operations/{OP}"
WAIT = f"GET /1.0/operations/{OP}/wait?timeout=1"

#: What a scripted stream does once its frames are read: stay silent until the read's deadline
#: (the client's own streams keep it), or end.
SILENT = "silent"
ENDS = b""


def progress_op(
    percent: int | None,
    *,
    op_id: str = OP,
    status_code: int = 103,
    updated: str = "2026-11-26T17:31:45.000000000Z",
) -> dict[str, Any]:
    metadata = None if percent is None else {"download_progress": f"rootfs: {percent}% (1MB/s)"}
    body = operation(op_id, status_code=status_code, metadata=metadata)
    body["updated_at"] = updated
    return body


def frame(op: dict[str, Any]) -> bytes:
    """One operation event, as incusd sends it (one text frame)."""
    event = {
        "type": "operation",
        "timestamp": "2026-11-26T17:31:45.100000000Z",
        "metadata": op,
        "location": "none",
        "project": "default",
    }
    server = ws.Connection(ws.ConnectionType.SERVER)
    return server.send(TextMessage(data=json.dumps(event)))


class ScriptedStream:
    """The network stream of an upgraded answer: each read gives the next item (bytes, or
    what a callable returns), then SILENT or ENDS."""

    def __init__(self, items: list[bytes | Callable[[], bytes]], then: bytes | str) -> None:
        self.items = list(items)
        self.then = then
        self.closed = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self.items:
            item = self.items.pop(0)
            return item() if callable(item) else item
        if self.then == SILENT:
            deadline = current_deadline()
            left = deadline.left() if deadline is not None else None
            left = timeout if left is None else left
            assert left is not None, "a read without a deadline would wait for ever"
            await _flavours.async_flavour.sleep(max(0.0, min(left, timeout or left)))
            raise httpcore.ReadTimeout("nothing came")
        return ENDS

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        pass

    async def aclose(self) -> None:
        self.closed = True

    def get_extra_info(self, info: str) -> Any:
        return None


class Server:
    """An incusd whose operation OP runs until ``ended``; its event streams in turn."""

    def __init__(self, *streams: ScriptedStream | httpx.Response) -> None:
        self.streams = list(streams)
        self.state = progress_op(0, updated="2026-11-26T17:31:44.000000000Z")
        self.final_op = progress_op(100, status_code=200)
        self.final = sync_response(self.final_op)
        self.sent: list[str] = []
        #: A /wait before the operation ended answers after this long (6.0.4's timeout).
        self.wait_seconds = 0.0

    def end(self) -> None:
        """Mark the operation done."""
        self.state = progress_op(100, status_code=200)

    def ending(self, data: bytes) -> Callable[[], bytes]:
        """A read that gives data (the event of the end) once the operation is done."""

        def read() -> bytes:
            self.end()
            return data

        return read

    def handle(self, request: httpx.Request) -> httpx.Response:
        line = f"{request.method} {request.url.raw_path.decode()}"
        self.sent.append(line)
        path = request.url.path
        if path == "/1.0/events":
            answer = self.streams.pop(0) if len(self.streams) > 1 else self.streams[0]
            if isinstance(answer, httpx.Response):
                return answer
            key = request.headers["sec-websocket-key"]
            return httpx.Response(
                101,
                headers={"Upgrade": "websocket", "Sec-WebSocket-Accept": _accept(key)},
                extensions={"network_stream": answer},
            )
        if path == f"/1.0/operations/{OP}":
            return sync_response(self.state)
        if path == f"/1.0/operations/{OP}/wait":
            if self.state["status_code"] >= 200:
                return self.final
            time.sleep(self.wait_seconds)
            return deadline_604()
        return error_response(404, "not found")


@pytest.fixture
def server() -> Server:
    return Server(ScriptedStream([], ENDS))


@pytest.fixture
async def client(server: Server) -> AsyncIterator[AsyncClient]:
    with respx.mock(base_url=UNIX_BASE, assert_all_called=False) as mock:
        mock.route().mock(side_effect=server.handle)
        async with AsyncClient(OFFLINE_SERVER) as offline:
            yield offline


def percents(states: list[Operation]) -> list[str]:
    return [str((state.metadata or {}).get("download_progress", "")) for state in states]


async def watched_wait(client: AsyncClient, timeout: float | None = None) -> list[Operation]:
    """Wait for OP with a watcher; the states it was given."""
    seen: list[Operation] = []
    finished = await client.operations._wait(
        OP, WaitBudget(timeout), action="copy an image", watch=seen.append
    )
    assert finished.succeeded
    return seen


async def test_progress_comes_from_the_events_and_the_end_from_the_wait(
    client: AsyncClient, server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    secret_op = operation(OTHER, metadata={"secret": SECRET}, description="Token")
    stream = ScriptedStream(
        [
            frame(progress_op(10)),
            server_ping(),
            frame(secret_op),
            frame(progress_op(20)),
            frame(progress_op(30, op_id=OTHER)),
            server.ending(
                frame({**progress_op(100, status_code=200), "metadata": {"secret": SECRET}})
            ),
        ],
        SILENT,
    )
    server.streams = [stream]
    caplog.set_level(logging.DEBUG, logger="incus_images")
    seen = await watched_wait(client)
    assert percents(seen) == ["rootfs: 0% (1MB/s)", "rootfs: 10% (1MB/s)", "rootfs: 20% (1MB/s)"]
    # The stream, the state once, the end: no polling.
    assert server.sent == [EVENTS, STATE, WAIT]
    assert SECRET not in caplog.text


def server_ping() -> bytes:
    return ws.Connection(ws.ConnectionType.SERVER).send(Ping(payload=b"keepalive"))


async def test_a_running_state_after_the_end_or_an_older_one_is_never_seen(
    client: AsyncClient, server: Server
) -> None:
    """incusd hands each event to each listener separately: a Success may come before a
    Running stamped earlier, and an older progress after a newer one."""
    newer = "2026-11-26T17:31:47.000000000Z"
    older = "2026-11-26T17:31:46.000000000Z"
    server.streams = [
        ScriptedStream(
            [
                frame(progress_op(40, updated=newer)),
                frame(progress_op(30, updated=older)),
                server.ending(frame(progress_op(100, status_code=200, updated=newer))),
                frame(progress_op(50, updated="2026-11-26T17:31:48.000000000Z")),
            ],
            SILENT,
        )
    ]
    seen = await watched_wait(client)
    assert percents(seen) == ["rootfs: 0% (1MB/s)", "rootfs: 40% (1MB/s)"]
    assert server.sent == [EVENTS, STATE, WAIT]


async def test_an_operation_ended_before_the_stream_opened(
    client: AsyncClient, server: Server
) -> None:
    server.end()
    assert await watched_wait(client) == []
    assert server.sent == [EVENTS, STATE, WAIT]


async def test_a_failure_comes_from_the_wait(client: AsyncClient, server: Server) -> None:
    failed = progress_op(None, status_code=400)
    failed["err"] = "Failed to download: boom"
    server.streams = [ScriptedStream([frame(failed)], SILENT)]
    server.state = progress_op(0)
    # incusd 6.0.4 answers a failed operation's /wait with HTTP 200 and an error body.
    server.final = error_response(500, "Failed to download: boom", http_status=200)
    server.end()  # /wait answers the failure; the operation is read for its message
    server.state = failed
    with pytest.raises(OperationError, match="boom"):
        await client.operations._wait(OP, None, action="copy an image", watch=lambda op: None)


@pytest.mark.parametrize(
    "refusal",
    [
        error_response(403, "not authorized"),
        # A user's transport that answers the upgrade but hands over no network stream.
        httpx.Response(101, headers={"Upgrade": "websocket"}),
        error_response(404, "not found"),
    ],
    ids=["forbidden", "no-stream", "no-events-api"],
)
async def test_without_a_stream_the_wait_polls(
    client: AsyncClient, server: Server, refusal: httpx.Response
) -> None:
    server.streams = [refusal]
    server.wait_seconds = 0.15
    polls: list[Operation] = []

    def watch(state: Operation) -> None:
        polls.append(state)
        if len(polls) == 2:
            server.end()

    await client.operations._wait(OP, None, action="copy an image", watch=watch)
    assert server.sent == [EVENTS, WAIT, STATE, WAIT, STATE, WAIT]


async def test_a_stream_that_drops_midway_leaves_the_rest_to_polling(
    client: AsyncClient, server: Server
) -> None:
    server.streams = [ScriptedStream([frame(progress_op(10))], ENDS)]
    server.wait_seconds = 0.15
    seen: list[Operation] = []

    def watch(state: Operation) -> None:
        seen.append(state)
        if len(seen) == 3:
            server.end()

    await client.operations._wait(OP, None, action="copy an image", watch=watch)
    assert percents(seen) == ["rootfs: 0% (1MB/s)", "rootfs: 10% (1MB/s)", "rootfs: 0% (1MB/s)"]
    assert server.sent == [EVENTS, STATE, WAIT, STATE, WAIT]


async def test_a_quiet_stream_is_opened_again_and_the_state_read_again(
    client: AsyncClient, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_operation_events, "QUIET_SECONDS", 0.3)
    server.streams = [
        ScriptedStream([server_ping()], SILENT),
        ScriptedStream([frame(progress_op(60)), server.ending(frame(server.final_op))], SILENT),
    ]
    started = time.monotonic()
    seen = await watched_wait(client)
    assert 0.3 <= time.monotonic() - started < 2
    assert percents(seen) == ["rootfs: 0% (1MB/s)", "rootfs: 0% (1MB/s)", "rootfs: 60% (1MB/s)"]
    assert server.sent == [EVENTS, STATE, EVENTS, STATE, WAIT]


async def test_the_budget_is_kept_while_the_stream_is_silent(
    client: AsyncClient, server: Server
) -> None:
    """The stream is left a second before the budget ends; the last /wait ends within it."""
    server.streams = [ScriptedStream([], SILENT)]
    server.wait_seconds = 0.2
    started = time.monotonic()
    with pytest.raises(IncusTimeoutError, match="still runs after 2 s"):
        await watched_wait(client, timeout=2)
    elapsed = time.monotonic() - started
    assert 1.9 <= elapsed < 2.5
    assert server.sent[:2] == [EVENTS, STATE]
    # What is left of the budget, about a second: one long-poll (this server answers early).
    assert server.sent[2] == WAIT
    assert set(server.sent[2:]) <= {WAIT, STATE}


async def test_a_budget_of_a_second_or_less_is_not_spent_on_a_stream(
    client: AsyncClient, server: Server
) -> None:
    server.streams = [ScriptedStream([], SILENT)]
    with pytest.raises(IncusTimeoutError):
        await watched_wait(client, timeout=0.5)
    assert EVENTS not in server.sent


async def test_a_client_holds_a_bounded_number_of_streams_for_waits(
    client: AsyncClient, server: Server
) -> None:
    server.streams = [
        ScriptedStream([frame(progress_op(10)), server.ending(frame(server.final_op))], SILENT)
    ]
    client.operations._followed = _operation_events.MAX_FOLLOWED
    server.end()
    await watched_wait(client)
    assert server.sent == [WAIT]
    client.operations._followed = 0
    server.state = progress_op(0)
    await watched_wait(client)
    assert server.sent == [WAIT, EVENTS, STATE, WAIT]
    assert client.operations._followed == 0


async def test_a_watcher_that_raises_is_not_taken_for_a_stream_failure(
    client: AsyncClient, server: Server
) -> None:
    server.streams = [ScriptedStream([frame(progress_op(10))], SILENT)]

    def watch(state: Operation) -> None:
        if state.metadata and "10%" in str(state.metadata):
            raise OperationError("the watcher's own error", server="x")

    with pytest.raises(OperationError, match="watcher's own"):
        await client.operations._wait(OP, None, action="copy an image", watch=watch)
    assert server.sent == [EVENTS, STATE]
    assert client.operations._followed == 0


async def test_a_client_with_its_own_transport_polls(server: Server) -> None:
    """A user's transport hands over network streams that keep no SDK deadline: a quiet
    stream could outlast the budget, so the wait polls."""
    server.streams = [ScriptedStream([frame(progress_op(10))], SILENT)]
    server.end()
    transport = httpx.MockTransport(server.handle)
    async with AsyncClient(OFFLINE_SERVER, transport=transport) as own:
        await watched_wait(own)
    assert server.sent == [WAIT]
