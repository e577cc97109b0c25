"""Faults injected in process: an httpx transport around a real one (httpx's own, on the
daemon's unix socket), given to the SDK as ``Client(endpoint, transport=...)``.

It counts a call's HTTP bytes as HTTP/1.1 puts them on the wire (each request's line and
headers, then its body; each answer's status line and headers, then its body; not the framing
of a chunked body), over all of the trial's requests, and strikes once where the armed
:class:`Fault` says:

* ``close``/``reset`` in a request's head: nothing of the request reaches the server, and the
  call sees what httpx raises when the server closes (``RemoteProtocolError``) or resets
  (``ReadError``) the connection before answering;
* in a request's body: the server has the head and the body's first bytes, then the
  connection is closed under it; the call sees ``WriteError`` (a broken pipe, or a reset);
* in an answer's head: the server has answered (the request did all it does), the call sees
  the connection closed or reset before the answer;
* in an answer's body: the call reads the body's first bytes, then ``RemoteProtocolError``
  (closed before the body's end) or ``ReadError`` (reset); the connection is closed;
* ``stall``: the bytes from there on go on ``seconds`` later; ``interrupt``/``kill``: the
  callback runs there, in the call's own thread (async: in its event loop), and the bytes flow on.

A ``timed`` fault, which strikes from outside while a call waits in a read, needs the proxy.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import httpx

from .fault import DOWN, NO_FAULT, UP, Fault, Traffic

#: The faults a transport can strike with.
KINDS = frozenset({"close", "reset", "stall", "interrupt", "kill"})


@dataclasses.dataclass(frozen=True)
class _Strike:
    """What becomes of the next bytes: the first ``passed`` of them go on; then ``cut`` is
    raised, or the rest go on ``pause`` seconds later."""

    passed: int
    pause: float = 0.0
    cut: httpx.TransportError | None = None


def _cut(kind: str, where: str) -> httpx.TransportError:
    """What httpx raises when the server closes or resets the connection there."""
    if kind == "reset":
        message = "[Errno 104] Connection reset by peer"
        return httpx.WriteError(message) if where == "request body" else httpx.ReadError(message)
    if where == "request body":
        return httpx.WriteError("[Errno 32] Broken pipe")
    if where == "response body":
        return httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body"
        )
    return httpx.RemoteProtocolError("Server disconnected without sending a response.")


def _head_size(first_line: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """The size of an HTTP/1.1 head: its first line, its headers, each ending in CRLF, and
    the CRLF that ends it."""
    return len(first_line) + 2 + sum(len(name) + len(value) + 4 for name, value in headers) + 2


def _request_head(request: httpx.Request) -> int:
    line = request.method.encode() + b" " + request.url.raw_path + b" HTTP/1.1"
    return _head_size(line, request.headers.raw)


def _response_head(response: httpx.Response) -> int:
    reason = response.extensions.get("reason_phrase", b"")
    line = b"HTTP/1.1 %d " % response.status_code + reason
    return _head_size(line, response.headers.raw)


def _answer(
    response: httpx.Response, stream: httpx.SyncByteStream | httpx.AsyncByteStream
) -> httpx.Response:
    """The answer with its body read through ``stream``. Without the connection's socket: the
    SDK would read an export's body straight from it, beneath this transport."""
    extensions = {k: v for k, v in response.extensions.items() if k != "network_stream"}
    return httpx.Response(
        response.status_code, headers=response.headers, stream=stream, extensions=extensions
    )


def _with_body(
    request: httpx.Request, stream: httpx.SyncByteStream | httpx.AsyncByteStream
) -> httpx.Request:
    return httpx.Request(
        request.method,
        request.url,
        headers=request.headers,
        stream=stream,
        extensions=request.extensions,
    )


class InProcessInjector:
    """The proxy's counterpart in process, for a daemon's unix socket: armed and disarmed as
    the proxy is; ``transport(flavour)`` is what a client of either flavour is given."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        #: What a client connects to: the daemon's own socket (the transport carries it).
        self.endpoint = f"unix://{socket_path}"
        self._lock = threading.Lock()
        self._fault = NO_FAULT
        self._on_fire: Callable[[], object] | None = None
        self._fired = False
        self._aborted = False
        self._count = {UP: 0, DOWN: 0}
        self._turns: list[tuple[str, int]] = []
        self._requests = 0

    def transport(self, flavour: str) -> httpx.BaseTransport | httpx.AsyncBaseTransport:
        """A fresh transport to the daemon through this injector, for a client of
        ``flavour`` (the client closes it)."""
        return self.sync_transport() if flavour == "sync" else self.async_transport()

    def sync_transport(self) -> FaultTransport:
        return FaultTransport(self, httpx.HTTPTransport(uds=self.socket_path))

    def async_transport(self) -> AsyncFaultTransport:
        return AsyncFaultTransport(self, httpx.AsyncHTTPTransport(uds=self.socket_path))

    def arm(self, fault: Fault, on_fire: Callable[[], object] | None = None) -> None:
        """Start a trial: count from zero, and strike with ``fault`` once."""
        if fault.kind != "none" and (fault.kind not in KINDS or fault.direction is None):
            raise ValueError(f"a transport cannot strike with {fault.describe()}: use the proxy")
        with self._lock:
            self._fault = fault
            self._on_fire = on_fire
            self._fired = False
            self._aborted = False
            self._count = {UP: 0, DOWN: 0}
            self._turns = []
            self._requests = 0

    def disarm(self) -> Traffic:
        """End the trial; return what it moved (``connections``: the requests it made)."""
        with self._lock:
            traffic = Traffic(
                self._count[UP], self._count[DOWN], self._requests, self._fired, tuple(self._turns)
            )
            self._fault = NO_FAULT
            self._on_fire = None
        return traffic

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Nothing to wait for: a trial's client closes its transport before the trial ends."""
        return True

    def abort_all(self) -> None:
        """Reset what the trial reads or sends from now on (a call that waits in a read of
        the daemon's socket is not woken: its own timeout ends it)."""
        with self._lock:
            self._aborted = True

    def close(self) -> None:
        """Nothing to close: each client closes its own transport."""

    def strike(self, direction: str, size: int, where: str, *, turn: bool = False) -> _Strike:
        """Count the next ``size`` bytes in ``direction`` (a request's or an answer's head
        when ``turn``), and say what becomes of them."""
        with self._lock:
            if self._aborted:
                return _Strike(0, cut=_cut("reset", where))
            start = self._count[direction]
            if turn:
                self._turns.append((direction, start))
                self._requests += direction == UP
            fault = self._fault
            strikes = (
                not self._fired
                and fault.direction == direction
                and fault.offset is not None
                and start + size > fault.offset
            )
            if strikes:
                assert fault.offset is not None
                self._fired = True
                split = max(0, fault.offset - start)
                passes = fault.kind in ("stall", "interrupt", "kill")
                self._count[direction] += size if passes else split
            else:
                self._count[direction] += size
            on_fire = self._on_fire
        if not strikes:
            return _Strike(size)
        if fault.kind == "stall":
            return _Strike(split, pause=fault.seconds)
        if fault.kind in ("interrupt", "kill"):
            if on_fire is not None:
                on_fire()
            return _Strike(size)
        return _Strike(split, cut=_cut(fault.kind, where))


class _Counted:
    """A body (a request's, or an answer's) whose bytes the injector counts and strikes in."""

    def __init__(self, injector: InProcessInjector, stream: Any, direction: str) -> None:
        self._injector = injector
        self._stream = stream
        self._direction = direction
        self._where = "request body" if direction == UP else "response body"


class _Body(_Counted, httpx.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            strike = self._injector.strike(self._direction, len(chunk), self._where)
            if strike.passed:
                yield chunk[: strike.passed]
            if strike.cut is not None:
                raise strike.cut
            if strike.passed < len(chunk):
                time.sleep(strike.pause)
                yield chunk[strike.passed :]

    def close(self) -> None:
        if isinstance(self._stream, httpx.SyncByteStream):
            self._stream.close()


class FaultTransport(httpx.BaseTransport):
    """``inner`` (httpx's transport to the daemon) with the injector's fault in its bytes."""

    def __init__(self, injector: InProcessInjector, inner: httpx.BaseTransport) -> None:
        self._injector = injector
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        strike = self._injector.strike(UP, _request_head(request), "request head", turn=True)
        if strike.pause:
            time.sleep(strike.pause)
        if strike.cut is not None:
            raise strike.cut
        response = self._inner.handle_request(
            _with_body(request, _Body(self._injector, request.stream, UP))
        )
        strike = self._injector.strike(DOWN, _response_head(response), "response head", turn=True)
        if strike.pause:
            time.sleep(strike.pause)
        if strike.cut is not None:
            response.close()
            raise strike.cut
        return _answer(response, _Body(self._injector, response.stream, DOWN))

    def close(self) -> None:
        self._inner.close()


class _AsyncBody(_Counted, httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            strike = self._injector.strike(self._direction, len(chunk), self._where)
            if strike.passed:
                yield chunk[: strike.passed]
            if strike.cut is not None:
                raise strike.cut
            if strike.passed < len(chunk):
                await anyio.sleep(strike.pause)
                yield chunk[strike.passed :]

    async def aclose(self) -> None:
        if isinstance(self._stream, httpx.AsyncByteStream):
            await self._stream.aclose()


class AsyncFaultTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`FaultTransport`."""

    def __init__(self, injector: InProcessInjector, inner: httpx.AsyncBaseTransport) -> None:
        self._injector = injector
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        strike = self._injector.strike(UP, _request_head(request), "request head", turn=True)
        if strike.pause:
            await anyio.sleep(strike.pause)
        if strike.cut is not None:
            raise strike.cut
        response = await self._inner.handle_async_request(
            _with_body(request, _AsyncBody(self._injector, request.stream, UP))
        )
        strike = self._injector.strike(DOWN, _response_head(response), "response head", turn=True)
        if strike.pause:
            await anyio.sleep(strike.pause)
        if strike.cut is not None:
            await response.aclose()
            raise strike.cut
        return _answer(response, _AsyncBody(self._injector, response.stream, DOWN))

    async def aclose(self) -> None:
        await self._inner.aclose()
