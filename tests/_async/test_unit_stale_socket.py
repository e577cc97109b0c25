"""A daemon that is not there: a stale socket file, as a stopped incusd leaves behind.

Each call fails with IncusConnectionError and leaves no socket open. httpcore's blocking
backend used to leave a failed connect's socket to the garbage collector: descriptors piled up
until a collection, which then warned (ResourceWarning) in whatever code ran at the time.
"""

from __future__ import annotations

import gc
import os
import socket
import warnings
from pathlib import Path

import pytest

from incus_images import AsyncClient, IncusConnectionError

pytestmark = pytest.mark.anyio


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_stale_socket_fails_and_leaves_no_socket_open(tmp_path: Path) -> None:
    path = tmp_path / "unix.socket"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))  # the file stays; nobody listens on it any more
    async with AsyncClient(f"unix://{path}") as client:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            before = open_descriptors()
            for _ in range(5):
                with pytest.raises(IncusConnectionError, match=r"unix\.socket"):
                    await client.images.list()
            # Counted before any collection: a socket left to the collector is still open.
            after = open_descriptors()
            gc.collect()
    assert after == before
    assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
