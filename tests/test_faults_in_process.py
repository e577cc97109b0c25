"""The in-process fault injector (``tests/faults/inprocess.py``) strikes where it is asked, as
the proxy does (``tests/test_faults.py`` tests the proxy): against a plain HTTP server on a unix
socket, through httpx alone, in both flavours; and under the SDK's policy, which repeats a read
whose answer was cut.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from incus_images import Client, IncusError
from tests.faults.fault import DOWN, NO_FAULT, UP, Fault
from tests.faults.inprocess import InProcessInjector
from tests.helpers import UNIX_BASE, image, sha256
from tests.hostile_server import HostileServer, head, sync_answer

#: What a POST sends, and the body of the answer it gets.
BODY = 5_000
ANSWER = 50_000
FLAVOURS = ("sync", "async")


def answer(method: str, target: str) -> list[bytes]:
    if method == "GET":
        return [sync_answer([])]
    return [head(Content_Length=str(ANSWER)) + b"r" * ANSWER]


@pytest.fixture
def server() -> Iterator[HostileServer]:
    # A short directory: unix socket paths must stay under 108 bytes.
    with (
        tempfile.TemporaryDirectory(prefix="in-process-") as directory,
        HostileServer(Path(directory), answer) as server,
    ):
        yield server


@pytest.fixture
def injector(server: HostileServer) -> InProcessInjector:
    return InProcessInjector(server.path)


def exchange(injector: InProcessInjector, flavour: str) -> tuple[int, Exception | None]:
    """POST BODY bytes through a fresh transport of the injector and read the answer's body;
    return (the body's bytes read, the error that ended the exchange)."""
    read = [0]
    content = b"s" * BODY
    if flavour == "sync":
        try:
            with (
                httpx.Client(transport=injector.sync_transport(), base_url=UNIX_BASE) as client,
                client.stream("POST", "/up", content=content) as response,
            ):
                for chunk in response.iter_raw():
                    read[0] += len(chunk)
        except httpx.TransportError as exc:
            return read[0], exc
        return read[0], None

    async def main() -> Exception | None:
        try:
            async with (
                httpx.AsyncClient(
                    transport=injector.async_transport(), base_url=UNIX_BASE
                ) as client,
                client.stream("POST", "/up", content=content) as response,
            ):
                async for chunk in response.aiter_raw():
                    read[0] += len(chunk)
        except httpx.TransportError as exc:
            return exc
        return None

    error = asyncio.run(main())
    return read[0], error


def heads(injector: InProcessInjector) -> tuple[int, int]:
    """The sizes of the request's head and of the answer's, from an unfaulted exchange."""
    injector.arm(NO_FAULT)
    assert exchange(injector, "sync") == (ANSWER, None)
    traffic = injector.disarm()
    return traffic.up - BODY, traffic.down - ANSWER


def eventually(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + 5
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_bytes_are_counted_as_they_are_on_the_wire(
    injector: InProcessInjector, server: HostileServer, flavour: str
) -> None:
    injector.arm(NO_FAULT)
    assert exchange(injector, flavour) == (ANSWER, None)
    assert exchange(injector, flavour) == (ANSWER, None)
    traffic = injector.disarm()
    assert eventually(lambda: (traffic.up, traffic.down) == (server.received, server.sent))
    assert (traffic.connections, traffic.fired) == (2, False)  # requests, in process
    assert traffic.starts(UP) == [0, traffic.up // 2]
    assert traffic.starts(DOWN) == [0, traffic.down // 2]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_close_in_the_request_body_lets_exactly_offset_bytes_reach_the_server(
    injector: InProcessInjector, server: HostileServer, flavour: str
) -> None:
    request_head, _ = heads(injector)
    before = server.received
    injector.arm(Fault("close", UP, request_head + 1_000))
    read, error = exchange(injector, flavour)
    assert isinstance(error, httpx.WriteError), error
    assert "Broken pipe" in str(error)
    assert read == 0
    assert injector.disarm().fired
    assert eventually(lambda: server.received - before == request_head + 1_000)
    assert server.requests == ["POST /up"]  # the unfaulted one only


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_reset_in_the_answer_body_ends_the_read_after_offset_bytes(
    injector: InProcessInjector, flavour: str
) -> None:
    _, answer_head = heads(injector)
    injector.arm(Fault("reset", DOWN, answer_head + 1_234))
    read, error = exchange(injector, flavour)
    assert (read, type(error)) == (1_234, httpx.ReadError)
    assert "reset" in str(error)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_cut_in_the_answer_head_comes_after_the_server_answered(
    injector: InProcessInjector, server: HostileServer, flavour: str
) -> None:
    injector.arm(Fault("close", DOWN, 10))
    read, error = exchange(injector, flavour)
    assert (read, type(error)) == (0, httpx.RemoteProtocolError)
    assert "without sending a response" in str(error)
    assert server.requests == ["POST /up"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_cut_in_the_request_head_sends_nothing(
    injector: InProcessInjector, server: HostileServer, flavour: str
) -> None:
    injector.arm(Fault("reset", UP, 10))
    read, error = exchange(injector, flavour)
    assert (read, type(error)) == (0, httpx.ReadError)
    assert (server.received, server.requests) == (0, [])


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_stall_holds_the_rest_back_and_then_delivers_it(
    injector: InProcessInjector, flavour: str
) -> None:
    _, answer_head = heads(injector)
    injector.arm(Fault("stall", DOWN, answer_head + 10, seconds=0.3))
    started = time.monotonic()
    assert exchange(injector, flavour) == (ANSWER, None)
    assert time.monotonic() - started >= 0.3
    assert injector.disarm().fired


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_callback_runs_at_the_offset_and_the_bytes_flow_on(
    injector: InProcessInjector, flavour: str
) -> None:
    request_head, _ = heads(injector)
    calls: list[int] = []
    injector.arm(Fault("interrupt", UP, request_head + 2_000), on_fire=lambda: calls.append(1))
    assert exchange(injector, flavour) == (ANSWER, None)
    assert calls == [1]
    assert injector.disarm().up == request_head + BODY


def test_an_offset_beyond_the_traffic_never_strikes(injector: InProcessInjector) -> None:
    _, answer_head = heads(injector)
    injector.arm(Fault("reset", DOWN, answer_head + ANSWER))
    assert exchange(injector, "sync") == (ANSWER, None)
    assert not injector.disarm().fired


def test_a_fault_that_strikes_from_outside_a_call_needs_the_proxy(
    injector: InProcessInjector,
) -> None:
    with pytest.raises(ValueError, match="proxy"):
        injector.arm(Fault("timed", seconds=1.0))


def test_the_sdk_repeats_a_read_whose_answer_was_cut_in_process(
    injector: InProcessInjector, server: HostileServer
) -> None:
    """The injector stands where the SDK's connection pool would: the SDK's policy judges its
    cuts as it judges the pool's (a read whose connection died is sent again)."""
    injector.arm(Fault("reset", DOWN, 5))
    with Client(injector.endpoint, transport=injector.sync_transport()) as client:
        assert client.images.list() == []
    assert injector.disarm().fired
    assert len(server.requests) == 2
    assert server.requests[0] == server.requests[1]


def test_the_sdk_reads_an_export_through_the_injector(tmp_path: Path) -> None:
    """On a unix socket the SDK reads a unified export's body straight from the connection's
    socket once it can: through the injector it must not, or a cut there would never strike."""
    data = os.urandom(2 * 1024 * 1024)
    fingerprint = sha256(data)

    def answer(method: str, target: str) -> list[bytes]:
        if target.startswith(f"/1.0/images/{fingerprint}/export"):
            return [head(Content_Length=str(len(data))) + data]
        return [sync_answer(image(fingerprint, size=len(data)))]

    with (
        tempfile.TemporaryDirectory(prefix="in-process-") as directory,
        HostileServer(Path(directory), answer) as server,
    ):
        injector = InProcessInjector(server.path)
        injector.arm(Fault("reset", DOWN, len(data) // 2))
        with (
            Client(injector.endpoint, transport=injector.sync_transport()) as client,
            pytest.raises(IncusError),
        ):
            client.images.export(fingerprint, tmp_path / "image.tar.gz")
        assert injector.disarm().fired
    assert list(tmp_path.iterdir()) == []
