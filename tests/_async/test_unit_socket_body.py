"""The fast body path: a unified export's body read straight from the unix socket.

On a unix socket, once httpx has handed over the first body chunk, the SDK reads the rest of a
Content-Length body from the socket itself (see Connection.body). Here the "socket" is one end
of a socketpair placed in the response's network_stream extension, as httpcore places its own;
the test writes the rest of the body into the other end.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from incus_images import AsyncClient, IncusConnectionError, LeftBehind
from tests.helpers import assert_left, image, sha256, sync_response

pytestmark = pytest.mark.anyio

#: Bigger than a socketpair's buffer, so the writer and the reader must take turns.
DATA = bytes(range(256)) * 4096 * 3
FP = sha256(DATA)
#: What httpx hands over before the SDK reads the socket itself.
FIRST = 4096


class NetworkStream:
    """Stands in for httpcore's network stream: it only says which socket it reads."""

    def __init__(self, sock: socket.socket | None) -> None:
        self.sock = sock
        #: How often the socket itself was asked for.
        self.asked = 0

    def get_extra_info(self, name: str) -> Any:
        if name != "socket":
            return None
        self.asked += 1
        return self.sock


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


async def test_over_https_the_socket_is_never_read_directly(tmp_path: Path) -> None:
    # Over TLS the socket carries encrypted records, not the body: httpx must read it all.
    stream = NetworkStream(None)
    with respx.mock(base_url="https://incus.invalid:8443", assert_all_called=True) as https:
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
