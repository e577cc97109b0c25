"""One HTTP connection pool to one Incus server, opened on first use."""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpcore
import httpx

from .._converter import request_body
from .._endpoint import Endpoint, discover_socket
from .._flavours import async_flavour
from .._protocol import (
    MAX_ERROR_BODY,
    Call,
    Envelope,
    api_error,
    parse_envelope,
    socket_error,
    transport_error,
    unexpected,
)
from .._version import __version__
from ._deadlines import (
    AsyncDeadlineBackend,
    TransferPace,
    call_deadline,
    start_deadline,
)

#: Connections to one server at most (httpx's default), and so calls in flight at once.
MAX_CONNECTIONS = 100

#: The largest answer read (a listing of about ten thousand images). With the JSON density
#: check in _protocol, reading any answer keeps the client well under 200 MiB.
MAX_ANSWER_BYTES = 16 * 1024 * 1024

#: Bytes asked of the socket per read on the fast body path.
_LARGE_READ = 1024 * 1024

#: Larger unix socket buffers (the kernel caps them at net.core.[rw]mem_max): with the default
#: ~200 KiB, an event loop wakes up every 200 KiB of a transfer, which cost the async client
#: a quarter of its upload speed. (TCP sockets keep the kernel's autotuning.)
UNIX_SOCKET_OPTIONS = [
    (socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024),
    (socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024),
]


def _transport(endpoint: Endpoint) -> httpx.AsyncHTTPTransport:
    if endpoint.socket_path is not None:
        # A unix socket carries no TLS: verify=False only spares httpx from loading a CA
        # bundle it would never use (about 50 ms at start-up).
        transport = httpx.AsyncHTTPTransport(
            uds=endpoint.socket_path, verify=False, socket_options=UNIX_SOCKET_OPTIONS
        )
    else:
        assert endpoint.ssl_context is not None, "an https endpoint has a TLS context"
        transport = httpx.AsyncHTTPTransport(verify=endpoint.ssl_context)
    # httpx has no way to give its pool a network backend: the pool is made again, as httpx
    # makes it (its default limits), on the backend that keeps the SDK's deadlines.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=endpoint.ssl_context,
        max_connections=MAX_CONNECTIONS,
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        uds=endpoint.socket_path,
        socket_options=UNIX_SOCKET_OPTIONS if endpoint.socket_path is not None else None,
        network_backend=AsyncDeadlineBackend(httpcore.AnyIOBackend()),
    )
    return transport


async def _then_deadline(
    content: AsyncIterator[bytes], seconds: float | None
) -> AsyncIterator[bytes]:
    """An upload body that, once sent, gives the rest of the exchange its deadline."""
    async for chunk in content:
        yield chunk
    start_deadline(seconds)


class AsyncConnection:
    """Sends Calls to one server and maps every failure to an IncusError.

    The local socket is looked for on the first request, not at construction, so that a client
    can be made before the daemon is up and a plain ``Client()`` costs nothing until used.
    """

    def __init__(
        self,
        endpoint: Endpoint | None,
        *,
        project: str | None,
        timeout: float | None,
    ) -> None:
        self._endpoint = endpoint
        self._project = project
        self.timeout = timeout
        # No limit on waiting for a pooled connection: every call ahead holds one only for as
        # long as its own deadline allows.
        self._timeout = httpx.Timeout(timeout, pool=None)
        # Calls beyond the pool's connections queue here, not in httpcore's async pool, which
        # slows down with every waiter (2,000 waiting calls ran at a tenth of the speed).
        self._slots = async_flavour.slots(MAX_CONNECTIONS)
        self._http: httpx.AsyncClient | None = None
        self._detach_finalizer: Callable[[], Any] = lambda: None
        self._peer_certificate: str | None = None

    @property
    def server(self) -> str:
        """The server as messages name it (``unix:///…`` or ``https://…``)."""
        if self._endpoint is None:
            return "the local Incus daemon"
        return self._endpoint.display

    @property
    def project(self) -> str | None:
        return self._project

    @property
    def https_url(self) -> str | None:
        """The server's HTTPS base URL, or None for a unix socket (or before discovery)."""
        if self._endpoint is None or self._endpoint.socket_path is not None:
            return None
        return self._endpoint.base_url

    @property
    def pinned_certificate(self) -> str | None:
        """The server's certificate as another daemon should pin it: the PEM this client
        verifies the server against (verify= a file), else the certificate the server showed
        on this client's last connection (None before any HTTPS request)."""
        if self._endpoint is not None and self._endpoint.verify_pem is not None:
            return self._endpoint.verify_pem
        return self._peer_certificate

    def _remember_peer(self, response: httpx.Response) -> None:
        if self.https_url is None:
            return
        stream = response.extensions.get("network_stream")
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        der = ssl_object.getpeercert(True) if ssl_object is not None else None
        if der:
            self._peer_certificate = ssl.DER_cert_to_PEM_cert(der)

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            if self._endpoint is None:
                self._endpoint = discover_socket()
            endpoint = self._endpoint
            self._http = httpx.AsyncClient(
                transport=_transport(endpoint),
                base_url=endpoint.base_url,
                timeout=self._timeout,
                headers={"User-Agent": f"incus_images/{__version__}"},
                # Incus never redirects API calls; following one would resend a body elsewhere.
                follow_redirects=False,
            )
            self._detach_finalizer = async_flavour.close_when_collected(self, self._http.aclose)
        return self._http

    def _build(self, call: Call, content: Any, timeout: httpx.Timeout | None) -> httpx.Request:
        params = dict(call.params)
        if self._project is not None and call.project_scoped:
            params["project"] = self._project
        return self._client().build_request(
            call.method,
            call.path,
            params=params,
            # As bytes: header values such as a UTF-8 file name are sent exactly as given.
            headers=[
                (name.encode("ascii"), value if isinstance(value, bytes) else value.encode())
                for name, value in call.headers.items()
            ],
            json=request_body(call.json),
            content=content,
            timeout=timeout if timeout is not None else self._timeout,
        )

    async def send(
        self,
        call: Call,
        *,
        content: AsyncIterator[bytes] | None = None,
        timeout: httpx.Timeout | None = None,
        deadline: float | None = None,
    ) -> httpx.Response:
        """Send call and read the whole answer, whatever its status, within limits.

        The exchange ends within ``deadline`` seconds (default: the client's timeout). An
        image body (``content``) is not hurried, only kept moving (see ``_deadlines``); the
        answer to it then has the deadline. Answers are read up to sizes no Incus reaches:
        a larger success answer is refused, an error answer is quoted from its beginning.
        """
        seconds = self.timeout if deadline is None else deadline
        if content is not None:
            content = _then_deadline(content, seconds)
        request = self._build(call, content, timeout)
        async with self._slots:
            with call_deadline(None if content is not None else seconds):
                try:
                    response = await self._client().send(request, stream=True)
                    try:
                        body = await self._read_bounded(call, response)
                    finally:
                        await response.aclose()
                except httpx.TransportError as exc:
                    raise transport_error(call, self.server, exc) from exc
        self._remember_peer(response)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=body,
            request=request,
            extensions=response.extensions,
        )

    async def _read_bounded(self, call: Call, response: httpx.Response) -> bytes:
        limit = MAX_ERROR_BODY if response.status_code >= 400 else MAX_ANSWER_BYTES
        parts: list[bytes] = []
        size = 0
        async for chunk in response.aiter_raw():
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                if response.status_code >= 400:
                    break  # an error is quoted from its beginning
                raise unexpected(
                    call,
                    self.server,
                    f"the answer is larger than {limit // (1024 * 1024)} MiB, more than any "
                    "Incus sends",
                )
        return b"".join(parts)

    async def request(
        self,
        call: Call,
        *,
        content: AsyncIterator[bytes] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> Envelope:
        """Send call; return the success envelope or raise the mapped error."""
        response = await self.send(call, content=content, timeout=timeout)
        return parse_envelope(call, self.server, response)

    @asynccontextmanager
    async def stream(self, call: Call) -> AsyncIterator[httpx.Response]:
        """Send call and yield the response with its body unread; errors are raised first.

        Transport failures while the body is read inside the ``with`` block are mapped too.
        """
        request = self._build(call, None, None)
        async with self._slots:
            try:
                # The answer's head arrives within the call's deadline; the body then only has
                # to keep moving (see body()).
                with call_deadline(self.timeout):
                    response = await self._client().send(request, stream=True)
            except httpx.TransportError as exc:
                raise transport_error(call, self.server, exc) from exc
            try:
                if response.status_code >= 400:
                    with call_deadline(self.timeout):
                        body = await self._read_bounded(call, response)
                    raise api_error(call, self.server, response.status_code, body)
                self._remember_peer(response)
                yield response
            except httpx.TransportError as exc:
                raise transport_error(call, self.server, exc) from exc
            finally:
                await response.aclose()

    async def body(self, call: Call, response: httpx.Response) -> AsyncIterator[bytes]:
        """The body of a streamed response, as it arrives.

        On a unix socket, a body with a Content-Length (a unified export) is read straight
        from the socket in large reads once httpx has handed over what it had buffered: h11
        parses each 64 KiB read in Python and copies it three times, which cost about a third
        of an export's time.
        """
        pace = TransferPace(self.timeout)
        sock = self._raw_socket(response)
        length = response.headers.get("content-length", "")
        if sock is None or not length.isdigit():
            async for chunk in response.aiter_raw():
                try:
                    pace.moved(len(chunk))
                except TimeoutError as exc:
                    raise socket_error(call, self.server, exc) from exc
                yield chunk
            return
        # After its first body chunk, h11 holds nothing back (a Content-Length body event takes
        # all it has buffered), so the rest of the body is still in the socket. The iterator
        # stays referenced: once closed, it would close the connection under the fast reads.
        chunks = response.aiter_raw()
        first = await anext(chunks, b"")
        left = int(length) - len(first)
        if first:
            yield first
        while left > 0:
            try:
                data = await async_flavour.receive(sock, min(_LARGE_READ, left), self.timeout)
            except OSError as exc:
                raise socket_error(call, self.server, exc) from exc
            if not data:
                raise socket_error(
                    call,
                    self.server,
                    ConnectionError(f"the server closed the connection {left} bytes early"),
                )
            try:
                pace.moved(len(data))
            except TimeoutError as exc:
                raise socket_error(call, self.server, exc) from exc
            left -= len(data)
            yield data

    def _raw_socket(self, response: httpx.Response) -> socket.socket | None:
        if self._endpoint is None or self._endpoint.socket_path is None:
            return None  # over TLS the bytes on the socket are not the body
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        return sock if isinstance(sock, socket.socket) else None

    async def aclose(self) -> None:
        if self._http is not None:
            self._detach_finalizer()
            await self._http.aclose()
            self._http = None
