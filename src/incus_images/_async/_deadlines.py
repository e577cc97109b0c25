"""Deadlines the SDK keeps itself, whatever pace the server sets.

httpx's timeouts bound each network step: a server that sends one byte a second never trips
them. Two rules close that gap (``AsyncClient`` documents them as what ``timeout=`` means):

* A call's exchange (connect, request, whole answer) ends within its deadline, counted from
  its first network step (waiting for a pooled connection behind other calls does not count).
  The deadline lives in a context variable that the network streams below consult: every
  connect, read and write waits at most until the deadline, and one that starts after it fails
  at once. Both flavours share it, since httpx runs a request in the caller's thread or task.
* An image body (upload, export, relay) may take as long as it needs while it moves: it fails
  when less than ``MIN_TRANSFER_BYTES`` move within a window of ``timeout`` seconds
  (:class:`TransferPace`).
"""

from __future__ import annotations

import contextlib
import contextvars
import ssl
import time
import typing
from collections.abc import Iterator

import httpcore

from .._sockets import SocketOption


class Deadline:
    """``seconds`` for the current call, counted from its first network step: waiting for a
    connection from the pool (behind the client's other calls) does not count."""

    def __init__(self, seconds: float, *, started: bool = False) -> None:
        self.seconds = seconds
        self.ends: float | None = time.monotonic() + seconds if started else None

    def left(self) -> float:
        now = time.monotonic()
        if self.ends is None:
            self.ends = now + self.seconds
        return self.ends - now


#: The current call's deadline (None: no deadline).
CALL_DEADLINE: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "incus_images_call_deadline", default=None
)

#: Least an image body must move per ``timeout`` seconds: below that it is stalled (about
#: 2 KiB/s at the default 30 s; any real link moves far more).
MIN_TRANSFER_BYTES = 64 * 1024


@contextlib.contextmanager
def call_deadline(seconds: float | None) -> Iterator[None]:
    """Within the block, network steps end by ``seconds`` from now (None: no deadline)."""
    token = CALL_DEADLINE.set(None if seconds is None else Deadline(seconds))
    try:
        yield
    finally:
        CALL_DEADLINE.reset(token)


def start_deadline(seconds: float | None) -> None:
    """From now on, the current call ends within ``seconds`` (for the answer to an upload,
    once its body is sent; the enclosing ``call_deadline`` block restores the outer value)."""
    CALL_DEADLINE.set(None if seconds is None else Deadline(seconds, started=True))


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    deadline = CALL_DEADLINE.get()
    if deadline is None:
        return timeout
    left = deadline.left()
    if left <= 0:
        raise error(
            f"the call did not end within timeout={deadline.seconds:g} s: the server answers "
            "too slowly"
        )
    return left if timeout is None else min(timeout, left)


class TransferPace:
    """Fails an image body that stops moving: fewer than ``MIN_TRANSFER_BYTES`` in any window
    of ``window`` seconds. Call ``moved(count)`` as bytes pass."""

    def __init__(self, window: float | None) -> None:
        self._window = window
        self._started = time.monotonic()
        self._moved = 0

    def moved(self, count: int) -> None:
        if self._window is None:
            return
        self._moved += count
        now = time.monotonic()
        if now - self._started < self._window:
            return
        if self._moved < MIN_TRANSFER_BYTES:
            raise TimeoutError(
                f"the transfer stalled: {self._moved} bytes in {now - self._started:.0f} s "
                f"(at least {MIN_TRANSFER_BYTES} are expected every {self._window:g} s)"
            )
        self._started, self._moved = now, 0


class AsyncDeadlineBackend(httpcore.AsyncNetworkBackend):
    """The network backend httpcore uses, with every step bounded by the call's deadline."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend) -> None:
        self._backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_tcp(
            host,
            port,
            _bounded(timeout, httpcore.ConnectTimeout),
            local_address,
            socket_options,
        )
        return AsyncDeadlineStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._backend.connect_unix_socket(
            path, _bounded(timeout, httpcore.ConnectTimeout), socket_options
        )
        return AsyncDeadlineStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class AsyncDeadlineStream(httpcore.AsyncNetworkStream):
    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._stream.start_tls(
            ssl_context, server_hostname, _bounded(timeout, httpcore.ConnectTimeout)
        )
        return AsyncDeadlineStream(stream)

    def get_extra_info(self, info: str) -> typing.Any:
        # The socket and the TLS object stay reachable (the fast export path, pinning).
        return self._stream.get_extra_info(info)
