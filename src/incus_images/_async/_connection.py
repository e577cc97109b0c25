"""One HTTP connection pool to one Incus server, opened on first use."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, NoReturn

import httpcore
import httpx

from .._converter import request_body
from .._endpoint import MAX_CLUSTER_MEMBERS, Endpoint, discover_socket, learnt_members
from .._errors import IncusConnectionError, IncusError, IncusTimeoutError
from .._flavours import async_flavour
from .._logging import log_answer, logger, redact_httpx_secrets
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
from .._sockets import AsyncSocketBackend
from .._version import __version__
from ._deadlines import (
    AsyncDeadlineBackend,
    Deadline,
    TransferPace,
    call_deadline,
    current_deadline,
    paused,
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
        network_backend=AsyncDeadlineBackend(AsyncSocketBackend()),
    )
    return transport


async def _unhurried(
    content: AsyncIterator[bytes], deadline: Deadline | None
) -> AsyncIterator[bytes]:
    """An upload body: while it moves the call's clock stops (the body is bounded by its
    progress instead, see ``_deadlines``), and runs on for the answer."""
    with paused(deadline):
        async for chunk in content:
            yield chunk


#: Seconds a cluster member that failed is tried only after the others.
SKIP_FAILED_MEMBER_SECONDS = 30.0

#: Cluster members one call tries at most, the listing of the cluster's members included:
#: enough to get past the few members a cluster loses at once, and no more, so that a list
#: of unreachable members cannot turn one call into a connection to each (1,000 refusing
#: members were 1,000 connects and 1,998 WARNINGs for one call before the cap).
MAX_MEMBERS_PER_CALL = 10

#: The part of a call's timeout that the listing of the cluster's members, before the call,
#: may take: the rest is the call's own, so a member that stalls the listing costs the call
#: time, not the call itself (the call goes on with another member).
LEARNING_SHARE = 0.5

#: What a member answers while it shuts down, for a while (incusd 6.0.4).
_SHUTTING_DOWN = ("database is closed", "Failed to begin transaction", "shutting down")


class _MemberGoing(Exception):
    """A member answered as one that is going down."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class Attempt:
    """One try of a request; as a context manager, it judges how the try ended.

    ``outcome`` is None when the request succeeded (or failed otherwise than by its transport:
    that error goes on as it is), "again" when it may be repeated at once on the same member
    (a safe request whose pooled connection turned out dead: the server restarted since it
    was opened), "elsewhere" when another member may take it (nothing was sent, or a safe
    request found its member going down), "failed" when it must not be repeated. A request
    whose body may have reached the server is never repeated; its error says so.
    """

    def __init__(
        self,
        connection: AsyncConnection,
        call: Call,
        *,
        safe: bool,
        replayable: bool,
        tried: Sequence[str],
    ) -> None:
        self._connection = connection
        self._call = call
        self._safe = safe
        self._replayable = replayable
        self._first_here = connection.server not in tried
        self.outcome: str | None = None
        #: Why the request is to be repeated (with ``outcome``), for the log.
        self.why = ""
        self._error: IncusError | None = None
        self._cause: BaseException | None = None

    def answered(self, status: int, body: bytes) -> None:
        """Judge an answer: a safe request answered by a member going down goes elsewhere."""
        if (
            self._safe
            and status in (500, 503)
            and any(text.encode() in body[:MAX_ERROR_BODY] for text in _SHUTTING_DOWN)
        ):
            raise _MemberGoing(status, body)

    def __enter__(self) -> Attempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if exc is None:
            return False
        server = self._connection.server
        call = self._call
        self._cause = exc
        if isinstance(exc, _MemberGoing):
            self._error = api_error(call, server, exc.status, exc.body)
            return self._judged("elsewhere", f"{server} is shutting down")
        if not isinstance(exc, httpx.TransportError):
            return False
        mapped = transport_error(call, server, exc)
        self._error = mapped
        nothing_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        if nothing_sent and self._replayable:
            return self._judged("elsewhere", f"{server} cannot be reached ({exc})")
        dead = isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError)
        if dead and self._safe and self._first_here:
            return self._judged("again", f"the connection to {server} was dead ({exc})")
        if not self._safe and not nothing_sent:
            self._error = mapped._amended(
                f"{mapped} The request may have reached the server and been applied: check "
                "before repeating it."
            )
        return self._judged("failed", str(exc))

    def _judged(self, outcome: str, why: str) -> bool:
        self.outcome = outcome
        self.why = why
        return True

    def log_retry(self, where: str) -> None:
        """A repeat, or a failover, is a WARNING: a service should see its servers falter even
        when every call still succeeds. Logged once the repeat is certain (a client without
        another member to try raises instead), and naming where it goes."""
        logger.warning(
            "incus_images: %s %s: %s; trying %s",
            self._call.method,
            self._call.path,
            self.why,
            where,
        )

    def give_up(
        self, tried: Sequence[str] = (), why: str = "", *, timed_out: bool = False
    ) -> NoReturn:
        """Raise this try's failure; on a cluster, naming the members ``tried`` and ``why``
        no other is (an IncusTimeoutError when the call's time ran out)."""
        error = self._error
        assert error is not None
        if tried:
            names = ", ".join(dict.fromkeys(tried))
            error = error._amended(f"{error} (cluster members tried: {names}; {why})")
            if timed_out and not isinstance(error, IncusTimeoutError):
                # A member refused, or was going down, just as the time ran out.
                error = IncusTimeoutError(
                    error.message,
                    server=error.server,
                    method=error.method,
                    url=error.url,
                    status_code=error.status_code,
                    error_code=error.error_code,
                    server_message=error.server_message,
                )
        raise error from self._cause


class Members:
    """The members of a cluster (at most MAX_CLUSTER_MEMBERS), and which failed lately."""

    def __init__(self, endpoints: Sequence[Endpoint]) -> None:
        self._endpoints = {endpoint.base_url: endpoint for endpoint in endpoints}
        self._failed_at: dict[str, float] = {}
        #: Whether the cluster answered the question which members it has.
        self.learnt = False
        #: Whether a call is asking it now (the others do not ask as well).
        self.asking = False

    def __len__(self) -> int:
        return len(self._endpoints)

    def add(self, endpoints: Sequence[Endpoint]) -> None:
        """Add the members not known yet (by base URL), up to MAX_CLUSTER_MEMBERS in all."""
        for endpoint in endpoints:
            if len(self._endpoints) >= MAX_CLUSTER_MEMBERS:
                return
            self._endpoints.setdefault(endpoint.base_url, endpoint)

    def failed(self, endpoint: Endpoint) -> None:
        self._failed_at[endpoint.base_url] = time.monotonic()

    def next_after(self, current: Endpoint, *, exclude: Sequence[str]) -> Endpoint | None:
        """The member to try next: those that did not fail lately first, in order after the
        current one; then those that did, the longest-failed first."""
        names = list(self._endpoints)
        start = names.index(current.base_url) + 1 if current.base_url in self._endpoints else 0
        ordered = [self._endpoints[name] for name in names[start:] + names[:start]]
        excluded = set(exclude)
        left = [endpoint for endpoint in ordered if endpoint.display not in excluded]
        now = time.monotonic()

        def recently_failed(endpoint: Endpoint) -> bool:
            failed = self._failed_at.get(endpoint.base_url)
            return failed is not None and now - failed < SKIP_FAILED_MEMBER_SECONDS

        fresh = [endpoint for endpoint in left if not recently_failed(endpoint)]
        if fresh:
            return fresh[0]
        left.sort(key=lambda endpoint: self._failed_at.get(endpoint.base_url, 0.0))
        return left[0] if left else None


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
        members: Sequence[Endpoint] = (),
    ) -> None:
        self._endpoint = endpoint
        #: The members of a cluster this client may use, in the order it tries them (the
        #: endpoint first); learnt from the cluster itself on first use.
        self._members = Members(members) if members else None
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
        """The server as messages name it (``unix:///…`` or ``https://…``; for a cluster, the
        member in use)."""
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

    def _peer_of(self, response: httpx.Response) -> str | None:
        """The certificate the server showed for this response, as PEM. Read while the
        response is open: a server that closes the connection after answering (HTTP/1.0)
        leaves a blocking client's closed socket without it."""
        if self.https_url is None:
            return None
        stream = response.extensions.get("network_stream")
        ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
        der = ssl_object.getpeercert(True) if ssl_object is not None else None
        return ssl.DER_cert_to_PEM_cert(der) if der else None

    def _remember_peer(self, peer: str | None) -> None:
        if peer is not None:
            self._peer_certificate = peer

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            if self._endpoint is None:
                self._endpoint = discover_socket()
                if self._project is None:
                    self._project = self._endpoint.default_project
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
        # First: finding the local socket may settle the project (incus-user's).
        client = self._client()
        assert self._endpoint is not None
        params = dict(call.params)
        if "secret" in params:
            redact_httpx_secrets()
        if self._project is not None and call.project_scoped:
            params["project"] = self._project
        return client.build_request(
            call.method,
            # Absolute: a cluster's members share the client (and its TLS settings).
            self._endpoint.base_url + call.path,
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

        The exchange ends within ``deadline`` seconds (default: the client's timeout), on a
        cluster whichever members it tries. An image body (``content``) is not hurried, only
        kept moving (see ``_deadlines``): what comes before it and the answer after it share
        the deadline. Answers are read up to sizes no Incus reaches: a larger success answer
        is refused, an error answer is quoted from its beginning.

        A request that is safe to repeat is repeated once, at once, when its connection turns
        out dead (the server restarted since it was opened); in a cluster, a request goes to
        another member when its member cannot be reached, or is shutting down (see _retries()).
        """
        async with self._call(self.timeout if deadline is None else deadline) as (whole, tried):
            if content is not None:
                content = _unhurried(content, whole)
            return await self._exchange(call, content=content, timeout=timeout, tried=tried)

    @asynccontextmanager
    async def _call(
        self, seconds: float | None
    ) -> AsyncIterator[tuple[Deadline | None, list[str]]]:
        """One call: its deadline (from its first network step, for everything in the block)
        and the members it tried, shared with the listing of the cluster's members that
        comes first on a cluster; its requests hold one of the pool's slots."""
        with call_deadline(seconds) as whole:
            tried: list[str] = []
            await self._learn_members(tried)
            async with self._slots:
                yield whole, tried

    async def _exchange(
        self,
        call: Call,
        *,
        content: AsyncIterator[bytes] | None = None,
        timeout: httpx.Timeout | None = None,
        tried: list[str],
        failover: bool = True,
    ) -> httpx.Response:
        """Send call, with the repeats and failovers it may make, and read the whole answer."""
        for attempt in self._retries(
            call, replayable=content is None, tried=tried, failover=failover
        ):
            with attempt:
                request = self._build(call, content, timeout)
                started = time.monotonic()
                response = await self._client().send(request, stream=True)
                peer = self._peer_of(response)
                try:
                    body = await self._read_bounded(call, response)
                finally:
                    await response.aclose()
                log_answer(call, self.server, response.status_code, len(body), started)
                attempt.answered(response.status_code, body)
                self._remember_peer(peer)
                return httpx.Response(
                    response.status_code,
                    headers=response.headers,
                    content=body,
                    request=request,
                    extensions=response.extensions,
                )
        raise AssertionError("unreachable")  # pragma: no cover - the last attempt raises

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
        Until the answer's head arrives, the request is repeated or sent to another member as
        send() does, within the client's timeout; once the body flows, it is not, and it only
        has to keep moving (see body()).
        """
        async with self._call(self.timeout) as (whole, tried):
            response: httpx.Response | None = None
            for attempt in self._retries(call, replayable=True, tried=tried):
                with attempt:
                    request = self._build(call, None, None)
                    started = time.monotonic()
                    response = await self._client().send(request, stream=True)
                    log_answer(call, self.server, response.status_code, None, started)
                    if response.status_code >= 400:
                        try:
                            body = await self._read_bounded(call, response)
                        finally:
                            await response.aclose()
                        attempt.answered(response.status_code, body)
                        raise api_error(call, self.server, response.status_code, body)
                    break
            assert response is not None
            try:
                self._remember_peer(self._peer_of(response))
                with paused(whole):
                    yield response
            except httpx.TransportError as exc:
                raise transport_error(call, self.server, exc) from exc
            finally:
                await response.aclose()

    def _retries(
        self, call: Call, *, replayable: bool, tried: list[str], failover: bool = True
    ) -> Iterator[Attempt]:
        """The attempts one request may make (see Attempt), switching members between them.

        ``tried`` collects the members tried by the call the request belongs to. A call tries
        at most MAX_MEMBERS_PER_CALL members, and none once its deadline has passed; then, or
        when no member is left, the last failure is raised naming the members tried, and the
        client starts its next call with another member. Without ``failover`` a member that
        fails is left for the next one, but the request is not sent there: its error is
        raised (the listing of members, which the call itself then follows).
        """
        safe = call.method == "GET"
        deadline = current_deadline()
        while True:
            attempt = Attempt(self, call, safe=safe, replayable=replayable, tried=tried)
            yield attempt
            if attempt.outcome is None:
                return
            tried.append(self.server)
            if attempt.outcome == "again":
                attempt.log_retry("again")
                continue
            timed_out = deadline is not None and deadline.spent
            if self._members is None or (attempt.outcome == "failed" and not timed_out):
                attempt.give_up()
            if timed_out:
                assert deadline is not None
                # A member that did not answer in time is left too, for the next call.
                self._next_member(exclude=[self.server])
                attempt.give_up(tried, f"{deadline.describe()} ran out", timed_out=True)
            # "elsewhere": this member failed; the next one, if the call may try another.
            if len(set(tried)) >= MAX_MEMBERS_PER_CALL:
                self._next_member(exclude=[self.server])
                attempt.give_up(tried, f"a call tries at most {MAX_MEMBERS_PER_CALL}")
            if not self._next_member(exclude=tried):
                attempt.give_up(tried, "no other is known")
            if not failover:
                attempt.give_up()
            attempt.log_retry(f"cluster member {self.server}")

    def _next_member(self, *, exclude: Sequence[str]) -> bool:
        """Leave the member in use, which failed, for the next one not in ``exclude``; False
        when there is none."""
        if self._members is None or self._endpoint is None:
            return False
        self._members.failed(self._endpoint)
        following = self._members.next_after(self._endpoint, exclude=exclude)
        if following is None:
            return False
        self._endpoint = following
        return True

    async def _learn_members(self, tried: list[str]) -> None:
        """A cluster client asks which members the cluster has, until it has an answer: naming
        one member is then enough to outlive its loss. The question is part of the call that
        needs the answer: it takes at most LEARNING_SHARE of the call's time, and a member
        that fails it is left for the next one, which the call then uses."""
        members = self._members
        if members is None or members.learnt or members.asking:
            return
        call = Call(
            method="GET",
            path="/1.0/cluster/members",
            params={"recursion": "1"},
            action="list the cluster's members",
            project_scoped=False,
        )
        members.asking = True
        try:
            async with self._slots:
                with call_deadline(None if self.timeout is None else self.timeout * LEARNING_SHARE):
                    response = await self._exchange(call, tried=tried, failover=False)
            envelope = parse_envelope(call, self.server, response)
        except (IncusConnectionError, IncusTimeoutError) as exc:
            # No answer: the call goes on with the next member, which is asked next time.
            logger.warning(
                "incus_images: cannot list the cluster's members: %s; going on with %s",
                exc,
                self.server,
            )
            return
        except IncusError as exc:
            # An error answer (an untrusted client, a server that is no cluster): asking
            # again would bring the same.
            members.learnt = True
            logger.debug("incus_images: cannot list the cluster's members: %s", exc)
            return
        finally:
            members.asking = False
        members.learnt = True
        assert self._endpoint is not None
        learnt = learnt_members(envelope.metadata, self._endpoint)
        if learnt.refused is not None:
            logger.warning(
                "incus_images: ignoring the cluster members %s lists: %s; going on with the "
                "%d known",
                self.server,
                learnt.refused,
                len(members),
            )
            return
        if learnt.skipped:
            logger.warning(
                "incus_images: %d of the cluster members %s lists are left out, not being "
                "https://host:port: %s",
                learnt.skipped,
                self.server,
                ", ".join(learnt.skipped_examples),
            )
        members.add(learnt.endpoints)

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
