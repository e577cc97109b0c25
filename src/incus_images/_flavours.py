"""The few things the two flavours must do differently, one object per flavour.

The async source uses ``async_flavour``; the generator renames it to ``sync_flavour`` in the
blocking twin. Everything else is written once.
"""

from __future__ import annotations

import socket
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["async_flavour", "sync_flavour"]


class _AsyncFlavour:
    #: Upload sources may be async iterables of bytes.
    accepts_async_iterables = True

    @staticmethod
    async def run_blocking(function: Callable[[], T]) -> T:
        """Run a blocking call on a worker thread, so the event loop goes on meanwhile."""
        # Imported here: anyio costs the blocking flavour start-up time it never needs.
        import anyio.to_thread

        return await anyio.to_thread.run_sync(function)

    @staticmethod
    async def sleep(seconds: float) -> None:
        import anyio

        await anyio.sleep(seconds)

    @staticmethod
    def slots(count: int) -> Any:
        """At most ``count`` holders at once (``async with``); the others queue, in order."""
        import anyio

        return anyio.Semaphore(count)

    @staticmethod
    async def receive(sock: socket.socket, size: int, timeout: float | None) -> bytes:
        """Read up to size bytes from a non-blocking socket, waiting as the event loop does."""
        import anyio
        import anyio.lowlevel

        while True:
            try:
                data = sock.recv(size)
            except BlockingIOError:
                # Only a wait needs a deadline: most reads find data waiting.
                with anyio.fail_after(timeout):
                    await anyio.wait_readable(sock)
            else:
                # Data that is always waiting must not starve other tasks or delay cancellation.
                await anyio.lowlevel.checkpoint()
                return data

    @staticmethod
    def close_when_collected(owner: object, close: Callable[[], Any]) -> Callable[[], Any]:
        """Nothing can await a close from a garbage collector: async users close explicitly
        (``async with`` or ``await client.aclose()``). Returns a detach function."""
        return lambda: None


class _SyncFlavour:
    accepts_async_iterables = False

    @staticmethod
    def run_blocking(function: Callable[[], T]) -> T:
        return function()

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(seconds)

    @staticmethod
    def slots(count: int) -> Any:
        return threading.BoundedSemaphore(count)

    @staticmethod
    def receive(sock: socket.socket, size: int, timeout: float | None) -> bytes:
        sock.settimeout(timeout)
        return sock.recv(size)

    @staticmethod
    def close_when_collected(owner: object, close: Callable[[], Any]) -> Callable[[], Any]:
        """Close the connection pool when owner is garbage-collected, so that
        ``Client().images.list()`` in a plain script or notebook leaks no sockets. Returns a
        detach function for an explicit close."""
        return weakref.finalize(owner, close).detach


async_flavour = _AsyncFlavour()
sync_flavour = _SyncFlavour()
