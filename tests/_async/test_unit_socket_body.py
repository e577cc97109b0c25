"""The fast body path: a unified export's body read straight from the unix socket.

On a unix socket, once httpx has handed over the first body chunk, the SDK reads the rest of a
Content-Length body from the socket itself (see Connection.body), provided the HTTP parser
handed over all it had read of the body (the SDK's network stream counts what it read:
BODY_BYTES_READ). Here the "socket" is one end of a socketpair placed in the response's
network_stream extension, as httpcore places its own; the test writes the rest of the body
into the other end.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
import respx

from incus_images import AsyncClient, IncusConnectionError, LeftBehind
from incus_images._async._deadlines import BODY_BYTES_READ, AsyncDeadlineStream
from tests.helpers import (
    CLUSTER_MEMBERS,
    assert_left,
    image,
    not_clustered,
    sha256,
    sync_response,
)
from tests.hostile_server import HostileServer, head, sync_answer

pytestmark = pytest.mark.anyio

#: Bigger than a socketpair's buffer, so the writer and the reader must take turns.
DATA = bytes(range(256)) * 4096 * 3
FP = sha256(DATA)
#: What httpx hands over before the SDK reads the socket itself.
FIRST = 4096


class NetworkStream:
    """Stands in for the SDK's network stream: it says which socket it reads, and how much of
    the body it read (by default, what httpx handed over: the parser holds nothing)."""

    def __init__(self, sock: socket.socket | None, body_read: int | None = FIRST) -> None:
        self.sock = sock
        self.body_read = body_read
        #: How often the socket itself was asked for.
        self.asked = 0

    def get_extra_info(self, name: str) -> Any:
        if name == BODY_BYTES_READ:
            return self.body_read
        if name != "socket":
            return None
        self.asked += 1
        return self.sock


class CountingSocket(socket.socket):
    """A socket that counts the reads made on it."""

    reads = 0

    def recv(self, size: int, flags: int = 0) -> bytes:
        type(self).reads += 1
        return super().recv(size, flags)


class InTwoChunks(httpx.AsyncByteStream):
    """A body httpx hands over in two chunks: FIRST bytes, then the rest."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield DATA[:FIRST]
        yield DATA[FIRST:]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, server = socket.socketpair()
    ours.setblocking(False)  # as under an event loop; the blocking flavour sets a timeout
    yield ours, server
    ours.close()
    server.close()


def feed(server: socket.socket, data: bytes) -> threading.Thread:
    """Write data into the server end, then close it (the daemon's side of the socket)."""

    def write() -> None:
        try:
            server.sendall(data)
        finally:
            server.shutdown(socket.SHUT_WR)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def mock_export(router: respx.MockRouter, stream: NetworkStream, length: int) -> None:
    router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP, size=len(DATA))))
    router.get(f"/1.0/images/{FP}/export").mock(
        return_value=httpx.Response(
            200,
            headers={
                "Content-Length": str(length),
                "Content-Type": "application/octet-stream",
                "Content-Disposition": f"inline;filename={FP}.tar.gz",
            },
            content=DATA[:FIRST],
            extensions={"network_stream": stream},
        )
    )


async def test_the_rest_of_the_body_is_read_from_the_socket(
    router: respx.MockRouter, pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    ours, server = pair
    stream = NetworkStream(ours)
    mock_export(router, stream, len(DATA))
    writer = feed(server, DATA[FIRST:])
    async with AsyncClient("unix:///nonexistent/incus.sock") as client:
        written = await client.images.export(FP, tmp_path / "image.tar.gz")
    writer.join(5)
    assert stream.asked == 1
    assert written == [tmp_path / "image.tar.gz"]
    assert written[0].read_bytes() == DATA


async def test_a_connection_closed_early_leaves_nothing(
    router: respx.MockRouter, pair: tuple[socket.socket, socket.socket], tmp_path: Path
) -> None:
    ours, server = pair
    mock_export(router, NetworkStream(ours), len(DATA))
    missing = 1000
    writer = feed(server, DATA[FIRST:-missing])
    async with AsyncClient("unix:///nonexistent/incus.sock") as client:
        with pytest.raises(IncusConnectionError) as caught:
            await client.images.export(FP, tmp_path / "image.tar.gz")
    writer.join(5)
    assert f"closed the connection {missing} bytes early" in str(caught.value)
    assert_left(
        caught.value,
        LeftBehind.NOTHING,
        f"after {len(DATA) - missing} of {len(DATA)} bytes",
        "nothing was written",
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("body_read", "reason"), [(FIRST + 5, "holds 5 bytes"), (None, "told")])
async def test_a_parser_that_holds_bytes_back_leaves_the_body_to_httpx(
    router: respx.MockRouter,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    body_read: int | None,
    reason: str,
) -> None:
    """When the parser kept some of the body (or it cannot be told), reading the socket
    would lose those bytes: the rest comes through httpx, whole, and DEBUG says why."""
    ours, server = socket.socketpair()
    counting = CountingSocket(fileno=ours.detach())
    try:
        stream = NetworkStream(counting, body_read)
        router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP, size=len(DATA))))
        router.get(f"/1.0/images/{FP}/export").mock(
            return_value=httpx.Response(
                200,
                headers={"Content-Length": str(len(DATA))},
                stream=InTwoChunks(),
                extensions={"network_stream": stream},
            )
        )
        with caplog.at_level(logging.DEBUG, logger="incus_images"):
            async with AsyncClient("unix:///nonexistent/incus.sock") as client:
                written = await client.images.export(FP, tmp_path / "image.tar.gz")
    finally:
        counting.close()
        server.close()
    assert written[0].read_bytes() == DATA
    assert CountingSocket.reads == 0
    assert any(
        "the body goes on through httpx" in record.getMessage() and reason in record.getMessage()
        for record in caplog.records
    )


async def test_over_https_the_socket_is_never_read_directly(tmp_path: Path) -> None:
    # Over TLS the socket carries encrypted records, not the body: httpx must read it all.
    stream = NetworkStream(None)
    with respx.mock(base_url="https://incus.invalid:8443", assert_all_called=True) as https:
        https.get(CLUSTER_MEMBERS).mock(return_value=not_clustered())
        https.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP, size=len(DATA))))
        https.get(f"/1.0/images/{FP}/export").mock(
            return_value=httpx.Response(
                200,
                headers={"Content-Length": str(len(DATA))},
                content=DATA,
                extensions={"network_stream": stream},
            )
        )
        async with AsyncClient("https://incus.invalid:8443", verify=False) as client:
            written = await client.images.export(FP, tmp_path / "image.tar.gz")
    assert stream.asked == 0
    assert written[0].read_bytes() == DATA


# --------------------------------------------------------------------------------------------
# What the SDK's network stream counts, and the real stack.


class Chunks(httpcore.AsyncNetworkStream):
    """A network stream that answers reads with the chunks given."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = list(chunks)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        pass

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("cut", [1, 17, 18, 19, 20, 21, 40])
async def test_the_network_stream_counts_the_body_read_wherever_the_head_ends(cut: int) -> None:
    head = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n"  # the blank line ends at 25
    answer = head + b"x" * 30
    stream = AsyncDeadlineStream(Chunks(answer[:cut], answer[cut:40], answer[40:]))
    await stream.write(b"GET / HTTP/1.1\r\n\r\n")
    assert stream.get_extra_info(BODY_BYTES_READ) is None
    await stream.read(65536)
    expected_first = None if cut < len(head) else cut - len(head)
    assert stream.get_extra_info(BODY_BYTES_READ) == expected_first
    await stream.read(65536)
    assert stream.get_extra_info(BODY_BYTES_READ) == 40 - len(head)
    await stream.read(65536)
    assert stream.get_extra_info(BODY_BYTES_READ) == 30
    # The next request starts a new count.
    await stream.write(b"GET / HTTP/1.1\r\n\r\n")
    assert stream.get_extra_info(BODY_BYTES_READ) is None


async def test_with_the_installed_http_stack_the_fast_path_is_taken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real httpx, httpcore and h11 over a unix socket: the parser holds nothing back
    after the first body chunk, so the rest is read from the socket (no DEBUG line says it
    went through httpx). nox -s deps-lowest and deps-newest run this at both ends of the
    dependency range."""
    big = bytes(range(256)) * 4096 * 8  # 8 MiB: many socket reads
    fingerprint = sha256(big)

    def answer(method: str, target: str) -> list[bytes]:
        if target.startswith(f"/1.0/images/{fingerprint}/export"):
            return [
                head(Content_Length=str(len(big)), Content_Type="application/octet-stream"),
                big,
            ]
        return [sync_answer(image(fingerprint, size=len(big)))]

    with (
        HostileServer(tmp_path, answer) as server,
        caplog.at_level(logging.DEBUG, logger="incus_images"),
    ):
        async with AsyncClient(server.endpoint) as client:
            written = await client.images.export(fingerprint, tmp_path / "image.tar.gz")
    assert written[0].read_bytes() == big
    assert not [r for r in caplog.records if "goes on through httpx" in r.getMessage()]
