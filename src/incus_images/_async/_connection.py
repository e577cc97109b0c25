"""The client's connection to one server (or a cluster): Calls in, typed answers out.

A Call becomes an httpx request here; what happens to it on the way (repeats, failover
between a cluster's members, the pool and its deadlines) is the transports' business
(``_transport``), and what comes back is mapped to the SDK's errors. Image bodies (uploads,
exports) are streamed through here, an export on a unix socket by the fast path (body()).
"""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx

from .._converter import request_body
from .._endpoint import Endpoint, discover_socket
from .._flavours import async_flavour
from .._logging import log_answer, logger, redact_httpx_secrets
from .._protocol import (
    Call,
    Envelope,
    api_error,
    parse_envelope,
    socket_error,
    transport_error,
)
from .._version import __version__
from ._deadlines import BODY_BYTES_READ, Deadline, TransferPace, call_deadline, paused
from ._transport import (
    CALL,
    MAX_CONNECTIONS,
    PEER_CERTIFICATE,
    STREAMED,
    TRIED,
    AsyncPolicyTransport,
    AsyncPoolTransport,
    raw_chunks,
)

#: Bytes asked of the socket per read on the fast body path.
_LARGE_READ = 1024 * 1024

#: Larger unix socket buffers (the kernel caps them at net.core.[rw]mem_max): with the default
#: ~200 KiB, an event loop wakes up every 200 KiB of a transfer, which cost the async client
#: a quarter of its upload speed. (TCP sockets keep the kernel's autotuning.)
UNIX_SOCKET_OPTIONS = [
    (socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024),
    (socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024),
]


async def _unhurried(
    content: AsyncIterator[bytes], deadline: Deadline | None
) -> AsyncIterator[bytes]:
    """An upload body: while it moves the call's clock stops (the body is bounded by its
    progress instead, see ``_deadlines``), and runs on for the answer."""
    with paused(deadline):
        async for chunk in content:
            yield chunk


class AsyncConnection:
    """Sends Calls to one server (or a cluster) and maps every failure to an IncusError.

    The local socket is looked for on the first request, not at construction, so that a client
    can be made before the daemon is up and a plain ``Client()`` costs nothing until used.

    ``transport``, when given, is the user's own ``httpx.AsyncBaseTransport``, used instead of
    the SDK's connection pool (see ``_transport``).
    """

    def __init__(
        self,
        endpoint: Endpoint | None,
        *,
        project: str | None,
        timeout: float | None,
        members: Sequence[Endpoint] = (),
        transport: httpx.AsyncBaseTransport | None = None,
        ask_members: bool = True,
    ) -> None:
        self._endpoint = endpoint
        self._ask_members = ask_members
        #: The members of a cluster the caller named, in the order they are tried.
        self._members = list(members)
        self._project = project
        self.timeout = timeout
        self._user_transport = transport
        # No limit on waiting for a pooled connection: every call ahead holds one only for as
        # long as its own deadline allows.
        self._timeout = httpx.Timeout(timeout, pool=None)
        # Calls beyond the pool's connections queue here, not in httpcore's async pool, which
        # slows down with every waiter (2,000 waiting calls ran at a tenth of the speed).
        self._slots = async_flavour.slots(MAX_CONNECTIONS)
        self._http: httpx.AsyncClient | None = None
        self._policy: AsyncPolicyTransport | None = None
        self._detach_finalizer: Callable[[], Any] = lambda: None
        self._peer_certificate: str | None = None

    @property
    def _in_use(self) -> Endpoint | None:
        """The server (a cluster's member) requests go to now, once known."""
        return self._policy.endpoint if self._policy is not None else self._endpoint

    @property
    def server(self) -> str:
        """The server as messages name it (``unix:///…`` or ``https://…``; for a cluster, the
        member in use)."""
        endpoint = self._in_use
        return "the local Incus daemon" if endpoint is None else endpoint.display

    @property
    def project(self) -> str | None:
        return self._project

    @property
    def https_url(self) -> str | None:
        """The server's HTTPS base URL, or None for a unix socket (or before discovery)."""
        endpoint = self._in_use
        if endpoint is None or endpoint.socket_path is not None:
            return None
        return endpoint.base_url

    @property
    def pinned_certificate(self) -> str | None:
        """The server's certificate as another daemon should pin it: the PEM this client
        verifies the server against (verify= a file), else the certificate the server showed
        on this client's last connection (None before any HTTPS request)."""
        endpoint = self._in_use
        if endpoint is not None and endpoint.verify_pem is not None:
            return endpoint.verify_pem
        return self._peer_certificate

    def _remember_peer(self, response: httpx.Response) -> None:
        peer = response.extensions.get(PEER_CERTIFICATE)
        if isinstance(peer, str):
            self._peer_certificate = peer

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            if self._endpoint is None:
                self._endpoint = discover_socket()
                if self._project is None:
                    self._project = self._endpoint.default_project
            endpoint = self._endpoint
            inner = self._user_transport or AsyncPoolTransport(
                ssl_context=endpoint.ssl_context,
                uds=endpoint.socket_path,
                socket_options=UNIX_SOCKET_OPTIONS if endpoint.socket_path is not None else None,
            )
            self._policy = AsyncPolicyTransport(
                inner,
                endpoint,
                members=self._members,
                # A server reached over HTTPS may be a cluster's member: it is asked once.
                learn=self._ask_members and endpoint.socket_path is None,
                timeout=self.timeout,
            )
            self._http = httpx.AsyncClient(
                transport=self._policy,
                base_url=endpoint.base_url,
                timeout=self._timeout,
                headers={"User-Agent": f"incus_images/{__version__}"},
                # Incus never redirects API calls; following one would resend a body elsewhere.
                follow_redirects=False,
                trust_env=False,
            )
            self._detach_finalizer = async_flavour.close_when_collected(self, self._http.aclose)
        return self._http

    def _build(
        self,
        call: Call,
        content: Any,
        timeout: httpx.Timeout | None,
        *,
        streamed: bool,
        tried: list[str],
    ) -> httpx.Request:
        # First: finding the local socket may settle the project (incus-user's).
        client = self._client()
        endpoint = self._in_use
        assert endpoint is not None
        params = dict(call.params)
        if "secret" in params:
            redact_httpx_secrets()
        if self._project is not None and call.project_scoped:
            params["project"] = self._project
        request = client.build_request(
            call.method,
            endpoint.base_url + call.path,
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
        request.extensions.update({CALL: call, STREAMED: streamed, TRIED: tried})
        return request

    async def send(
        self,
        call: Call,
        *,
        content: AsyncIterator[bytes] | None = None,
        timeout: httpx.Timeout | None = None,
        deadline: float | None = None,
    ) -> httpx.Response:
        """Send call and read the whole answer, whatever its status, within limits.

        The exchange ends within ``deadline`` seconds (default: the client's timeout), on a
        cluster whichever members it tries. An image body (``content``) is not hurried, only
        kept moving (see ``_deadlines``): what comes before it and the answer after it share
        the deadline. Answers are read up to sizes no Incus reaches: a larger success answer
        is refused, an error answer is quoted from its beginning.

        A request that is safe to repeat is repeated once, at once, when its connection turns
        out dead (the server restarted since it was opened); in a cluster, a request goes to
        another member when its member cannot be reached, or is shutting down (_transport).
        """
        async with self._call(self.timeout if deadline is None else deadline) as (whole, tried):
            if content is not None:
                content = _unhurried(content, whole)
            request = self._build(call, content, timeout, streamed=False, tried=tried)
            started = time.monotonic()
            response = await self._send(call, request)
            log_answer(call, self.server, response.status_code, len(response.content), started)
            return response

    async def _send(self, call: Call, request: httpx.Request) -> httpx.Response:
        """Through the transports; an httpx failure that got past them (a user's transport
        failing in its own way) is mapped too."""
        try:
            response = await self._client().send(request, stream=True)
        except httpx.TransportError as exc:
            raise transport_error(call, self.server, exc) from exc
        self._remember_peer(response)
        return response

    @asynccontextmanager
    async def _call(
        self, seconds: float | None
    ) -> AsyncIterator[tuple[Deadline | None, list[str]]]:
        """One call: its deadline (from its first network step, for everything in the block)
        and the members it tried, shared with the listing of the cluster's members that
        comes first on a cluster; its requests hold one of the pool's slots."""
        with call_deadline(seconds) as whole:
            async with self._slots:
                yield whole, []

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
        Until the answer's head arrives, the request is repeated or sent to another member as
        send() does, within the client's timeout; once the body flows, it is not, and it only
        has to keep moving (see body()).
        """
        async with self._call(self.timeout) as (whole, tried):
            request = self._build(call, None, None, streamed=True, tried=tried)
            started = time.monotonic()
            response = await self._send(call, request)
            log_answer(call, self.server, response.status_code, None, started)
            try:
                if response.status_code >= 400:
                    # The transport read the error's beginning.
                    raise api_error(call, self.server, response.status_code, response.content)
                with paused(whole):
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
            async for chunk in raw_chunks(response):
                try:
                    pace.moved(len(chunk))
                except TimeoutError as exc:
                    raise socket_error(call, self.server, exc) from exc
                yield chunk
            return
        # The iterator stays referenced: once closed, it would close the connection under the
        # fast reads.
        chunks = response.aiter_raw()
        first = await anext(chunks, b"")
        left = int(length) - len(first)
        if first:
            yield first
        # The rest of the body is still in the socket only if the HTTP parser handed over all
        # it had read: a Content-Length body event takes its whole buffer (h11 0.14 to 0.16),
        # but that is checked, not assumed: the SDK's network stream counts what it read of
        # the body. Reading the socket past bytes the parser kept would lose them.
        held = _held_back(response, len(first))
        if left > 0 and held != 0:
            logger.debug(
                "incus_images: %s %s: the body goes on through httpx, not straight from the "
                "socket: %s",
                call.method,
                call.path,
                "what its HTTP parser holds cannot be told"
                if held is None
                else f"its HTTP parser holds {held} bytes not handed over",
            )
            async for chunk in chunks:
                try:
                    pace.moved(len(chunk))
                except TimeoutError as exc:
                    raise socket_error(call, self.server, exc) from exc
                yield chunk
            return
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
        """The unix socket under a streamed answer, for the fast path (None over TLS, whose
        bytes on the socket are not the body, or under a transport that does not say)."""
        endpoint = self._in_use
        if endpoint is None or endpoint.socket_path is None:
            return None
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        return sock if isinstance(sock, socket.socket) else None

    async def aclose(self) -> None:
        if self._http is not None:
            self._detach_finalizer()
            await self._http.aclose()
            self._http = None


def _held_back(response: httpx.Response, handed: int) -> int | None:
    """How many bytes of the body the HTTP parser read from the socket and has not handed
    over yet (``handed`` were): what the SDK's network stream read of it less what came out.
    None when the stream cannot tell (a transport of the user's)."""
    stream = response.extensions.get("network_stream")
    read = stream.get_extra_info(BODY_BYTES_READ) if stream is not None else None
    return read - handed if isinstance(read, int) else None
