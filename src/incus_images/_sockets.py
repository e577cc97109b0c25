"""The network backends under the connection pools, one per flavour.

The async flavour uses httpcore's anyio backend as it is. The blocking flavour's unix-socket
connect is our own: httpcore's ``SyncBackend`` leaves the socket of a *failed* connect (a daemon
restarting, a stale socket file) to the garbage collector. The descriptor stays open until a
collection, which may be long after, and CPython then reports a ResourceWarning in whatever
code happens to run. A client that retries against a restarting daemon would pile them up.
"""

from __future__ import annotations

import select
import socket
import ssl
import typing

import httpcore

if typing.TYPE_CHECKING:
    from collections.abc import Iterable

#: What httpcore takes as a socket option (its own alias, which it does not export).
SocketOption = typing.Union[  # noqa: UP007 - httpcore's own alias
    tuple[int, int, int], tuple[int, int, bytes | bytearray], tuple[int, int, None, int]
]


class AsyncSocketBackend(httpcore.AnyIOBackend):
    """httpcore's anyio backend, unchanged: anyio closes the socket of a failed connect."""


class SocketBackend(httpcore.SyncBackend):
    """httpcore's blocking backend, with a unix-socket connect that never leaks its socket."""

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.NetworkStream:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.settimeout(timeout)
            sock.connect(path)
        except TimeoutError as exc:
            sock.close()
            raise httpcore.ConnectTimeout(str(exc)) from exc
        except OSError as exc:
            sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        return UnixSocketStream(sock)


class UnixSocketStream(httpcore.NetworkStream):
    """A connected unix socket, as httpcore's pool uses a stream (exceptions mapped alike)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            self._sock.settimeout(timeout)
            return self._sock.recv(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        try:
            view = memoryview(buffer)
            while view:
                # The timeout bounds each send, not the whole buffer, as httpcore's does.
                self._sock.settimeout(timeout)
                view = view[self._sock.send(view) :]
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc)) from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc)) from exc

    def close(self) -> None:
        self._sock.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        # The SDK never asks for TLS on a unix socket (Endpoint gives it no TLS context).
        raise httpcore.ConnectError("TLS is not spoken over a unix socket")

    def get_extra_info(self, info: str) -> typing.Any:
        if info == "socket":
            # The export's fast path reads a body straight from the socket.
            return self._sock
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "is_readable":
            # The pool asks before reusing an idle connection: readable while idle means the
            # daemon closed it (or sent something unasked), so it is not reused.
            # poll, not select: select fails on descriptors numbered above 1023.
            poller = select.poll()
            poller.register(self._sock, select.POLLIN)
            return bool(poller.poll(0))
        return None
