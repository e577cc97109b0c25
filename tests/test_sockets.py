"""The blocking flavour's unix-socket stream (src/incus_images/_sockets.py), on a socket pair."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator

import httpcore
import pytest

from incus_images._sockets import UnixSocketStream


@pytest.fixture
def pair() -> Iterator[tuple[UnixSocketStream, socket.socket]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stream = UnixSocketStream(ours)
    yield stream, theirs
    stream.close()
    theirs.close()


def test_reads_and_writes(pair: tuple[UnixSocketStream, socket.socket]) -> None:
    stream, theirs = pair
    size = 4 << 20  # more than the socket's buffers: several send() calls
    received = bytearray()

    def read_all() -> None:
        while len(received) < size:
            received.extend(theirs.recv(1 << 20))

    reader = threading.Thread(target=read_all)
    reader.start()
    stream.write(b"x" * size, timeout=5)
    reader.join(5)
    assert received == b"x" * size
    theirs.sendall(b"answer")
    assert stream.read(100, timeout=5) == b"answer"
    assert stream.get_extra_info("socket").fileno() >= 0


def test_a_silent_peer_times_a_read_out(pair: tuple[UnixSocketStream, socket.socket]) -> None:
    stream, _ = pair
    with pytest.raises(httpcore.ReadTimeout):
        stream.read(100, timeout=0.05)


def test_a_peer_that_reads_nothing_times_a_write_out(
    pair: tuple[UnixSocketStream, socket.socket],
) -> None:
    stream, _ = pair
    with pytest.raises(httpcore.WriteTimeout):
        stream.write(b"x" * (64 << 20), timeout=0.05)


def test_an_idle_connection_the_peer_closed_is_readable(
    pair: tuple[UnixSocketStream, socket.socket],
) -> None:
    # The pool reuses an idle connection only while it is not readable.
    stream, theirs = pair
    assert stream.get_extra_info("is_readable") is False
    theirs.close()
    assert stream.get_extra_info("is_readable") is True
    with pytest.raises(httpcore.WriteError):
        stream.write(b"x" * 65536, timeout=1)


def test_tls_is_not_spoken_over_a_unix_socket(
    pair: tuple[UnixSocketStream, socket.socket],
) -> None:
    stream, _ = pair
    with pytest.raises(httpcore.ConnectError, match="TLS"):
        stream.start_tls(ssl.create_default_context())
