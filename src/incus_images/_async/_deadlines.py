"""Deadlines the SDK keeps itself, whatever pace the server sets.

httpx's timeouts bound each network step: a server that sends one byte a second never trips
them. Two rules close that gap (``AsyncClient`` documents them as what ``timeout=`` means):

* A call's exchange (connect, request, whole answer) ends within its deadline, counted from
  its first network step (waiting for a pooled connection behind other calls does not count).
  On a cluster, one deadline covers every member the call tries, and the listing of the
  cluster's members that comes first until the cluster has answered it once. The deadline
  lives in a context variable that the network streams below consult: every connect, read
  and write waits at most until the deadline, and one that starts after it fails at once.
  Both flavours share it, since httpx runs a request in the caller's thread or task.
* An image body (upload, export, relay) may take as long as it needs while it moves: it fails
  when less than ``MIN_TRANSFER_BYTES`` move within a window of ``timeout`` seconds
  (:class:`TransferPace`). The call's clock stops meanwhile (:func:`paused`): what comes
  before the body and the answer after it share the call's deadline.
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
    connection from the pool (behind the client's other calls) does not count. Stopped while
    an image body moves (:func:`paused`), which its progress bounds instead.

    A deadline ``within`` another ends by the other's end too (a part of a call)."""

    def __init__(self, seconds: float, *, within: Deadline | None = None) -> None:
        self.seconds = seconds
        self._within = within
        self._ends: float | None = None
        self._paused_at: float | None = None

    def left(self) -> float | None:
        """Seconds left (zero or less: none), or None while the clock is stopped."""
        if self._paused_at is not None:
            return None
        now = time.monotonic()
        if self._ends is None:
            self._ends = now + self.seconds
        left = self._ends - now
        outer = self._within.left() if self._within is not None else None
        return left if outer is None else min(left, outer)

    @property
    def spent(self) -> bool:
        """Whether no time is left (False before the first network step, or while stopped)."""
        left = self.left() if self._ends is not None else None
        return left is not None and left <= 0

    def describe(self) -> str:
        """The limit, as an error message states it."""
        if self._within is None:
            return f"timeout={self.seconds:g} s"
        return f"{self.seconds:g} s, its part of {self._within.describe()}"

    def pause(self) -> bool:
        """Stop the clock; False when it was stopped already (then resume() is not called)."""
        if self._paused_at is not None:
            return False
        self._paused_at = time.monotonic()
        return True

    def resume(self) -> None:
        """Run the clock on with the time that was left when it stopped."""
        assert self._paused_at is not None, "resume() follows pause()"
        if self._ends is not None:
            self._ends += time.monotonic() - self._paused_at
        self._paused_at = None


@contextlib.contextmanager
def paused(deadline: Deadline | None) -> Iterator[None]:
    """Within the block, ``deadline``'s clock stops: an image body that moves is bounded by its
    progress instead (TransferPace), however long it takes. Afterwards the clock runs on."""
    if deadline is None or not deadline.pause():
        yield
        return
    try:
        yield
    finally:
        deadline.resume()


#: The current call's deadline (None: no deadline).
CALL_DEADLINE: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar(
    "incus_images_call_deadline", default=None
)

#: Least an image body must move per ``timeout`` seconds: below that it is stalled (about
#: 2 KiB/s at the default 30 s; any real link moves far more).
MIN_TRANSFER_BYTES = 64 * 1024


@contextlib.contextmanager
def call_deadline(seconds: float | None) -> Iterator[Deadline | None]:
    """Within the block, network steps end by ``seconds`` from the first of them (None: no
    deadline of its own). A block inside another call's block (a request made as a part of
    that call) ends by the outer call's end too."""
    outer = CALL_DEADLINE.get()
    deadline = outer if seconds is None else Deadline(seconds, within=outer)
    token = CALL_DEADLINE.set(deadline)
    try:
        yield deadline
    finally:
        CALL_DEADLINE.reset(token)


def current_deadline() -> Deadline | None:
    """The deadline of the call in progress, if any."""
    return CALL_DEADLINE.get()


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    deadline = CALL_DEADLINE.get()
    left = deadline.left() if deadline is not None else None
    if deadline is None or left is None:
        return timeout
    if left <= 0:
        raise error(
            f"the call did not end within {deadline.describe()}: the server answers too slowly"
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


#: What a network stream says, asked (``get_extra_info``) for it: how many bytes of the body
#: of the answer in progress it has read, counted from the end of the answer's head (None
#: before the head's end was read).
BODY_BYTES_READ = "incus_images.body_bytes_read"


class AsyncDeadlineStream(httpcore.AsyncNetworkStream):
    """A network stream whose every step keeps the call's deadline, and which counts what it
    reads of an answer's body (``BODY_BYTES_READ``): the fast export path reads the socket
    itself only when the HTTP parser above holds none of the body back."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        # Since the last request was written: bytes read, where the answer's head ended (its
        # blank line), and the last three bytes read (a blank line may straddle two reads).
        self._read = 0
        self._head_end: int | None = None
        self._tail = b""

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data = await self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))
        if self._head_end is None:
            seen = self._tail + data
            blank = seen.find(b"\r\n\r\n")
            if blank >= 0:
                self._head_end = self._read - len(self._tail) + blank + 4
            self._tail = seen[-3:]
        self._read += len(data)
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if self._head_end is not None or self._read:
            # A new request: the next answer's head is still to come.
            self._read, self._head_end, self._tail = 0, None, b""
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
        if info == BODY_BYTES_READ:
            return None if self._head_end is None else self._read - self._head_end
        # The socket and the TLS object stay reachable (the fast export path, pinning).
        return self._stream.get_extra_info(info)
