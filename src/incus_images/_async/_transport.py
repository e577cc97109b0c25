"""The transports under the client's httpx client: where a request goes, how often, and on
which connection (httpx's own seam, ``httpx.AsyncBaseTransport``).

    AsyncPolicyTransport   the SDK's policy, on every request: a cluster's members (learnt
                           once per client), a request repeated when that is safe, failover
                           to another member, the call's deadline between tries, answers read
                           within their limits
    AsyncPoolTransport     the connection pool to a server (its unix socket, or TLS with the
                           client's context) on the network backend that keeps the call's
                           deadline in every network step (``_deadlines``)

A user's own transport (``Client(transport=...)``, for a proxy, tracing or tests) takes the
pool's place under the policy: the policy still repeats, fails over and bounds every request
step by the call's deadline, but a server that trickles its answer byte by byte within each
step is then bounded by the user's transport alone.

The policy reads the SDK's Call from the request (``request.extensions``) to name it in errors;
a request that does not come from the SDK has none and is not the policy's business.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from types import TracebackType
from typing import Any, NoReturn

import httpcore
import httpx

from .. import _api as api
from .._endpoint import MAX_CLUSTER_MEMBERS, Endpoint, learnt_members
from .._errors import (
    IncusConnectionError,
    IncusError,
    IncusTimeoutError,
    LeftBehind,
    note_left_behind,
)
from .._logging import logger
from .._protocol import (
    MAX_ERROR_BODY,
    Call,
    api_error,
    parse_envelope,
    transport_error,
    unexpected,
)
from .._sockets import AsyncSocketBackend
from ._deadlines import AsyncDeadlineBackend, call_deadline, current_deadline

#: Connections a client holds at most (httpx's default), and so its calls in flight at once.
MAX_CONNECTIONS = 100

#: The largest answer read (a listing of about ten thousand images). With the JSON density
#: check in _protocol, reading any answer keeps the client well under 200 MiB.
MAX_ANSWER_BYTES = 16 * 1024 * 1024

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

#: The request extensions the SDK sets (httpx passes extensions on to transports; httpcore
#: ignores keys it does not know).
CALL = "incus_images.call"
#: True: the answer's body is the caller's to stream (an export); else the policy reads it.
STREAMED = "incus_images.streamed"
#: The members the call this request belongs to tried (one list for all of its requests).
TRIED = "incus_images.tried"
#: The PEM certificate the server showed for this answer, read while its connection was open.
PEER_CERTIFICATE = "incus_images.peer_certificate"


# --------------------------------------------------------------------------------------------
# The pool.


def _httpcore_errors() -> list[tuple[type[Exception], type[httpx.TransportError]]]:
    """httpcore's exceptions and httpx's for them, the most specific first (as httpx maps
    them in its own transport)."""
    return [
        (httpcore.ConnectTimeout, httpx.ConnectTimeout),
        (httpcore.ReadTimeout, httpx.ReadTimeout),
        (httpcore.WriteTimeout, httpx.WriteTimeout),
        (httpcore.PoolTimeout, httpx.PoolTimeout),
        (httpcore.TimeoutException, httpx.TimeoutException),
        (httpcore.ConnectError, httpx.ConnectError),
        (httpcore.ReadError, httpx.ReadError),
        (httpcore.WriteError, httpx.WriteError),
        (httpcore.NetworkError, httpx.NetworkError),
        (httpcore.ProxyError, httpx.ProxyError),
        (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
        (httpcore.LocalProtocolError, httpx.LocalProtocolError),
        (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
        (httpcore.ProtocolError, httpx.ProtocolError),
    ]


def _as_httpx(exc: Exception) -> Exception:
    for raised, mapped in _httpcore_errors():
        if isinstance(exc, raised):
            return mapped(str(exc))
    return exc


class _PoolStream(httpx.AsyncByteStream):
    """An answer's body from the pool, its failures as httpx's exceptions."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self._stream:
                yield part
        except Exception as exc:
            mapped = _as_httpx(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        await self._stream.aclose()


class AsyncPoolTransport(httpx.AsyncBaseTransport):
    """Connections to one server (or a cluster's members, which share the TLS settings), on
    the network backend that keeps the SDK's deadlines; httpcore's public pool, as httpx's
    own transport uses it."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None,
        uds: str | None,
        socket_options: Sequence[Any] | None,
    ) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            uds=uds,
            socket_options=socket_options,
            network_backend=AsyncDeadlineBackend(AsyncSocketBackend()),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            answer = await self._pool.handle_async_request(core)
        except Exception as exc:
            mapped = _as_httpx(exc)
            if mapped is exc:
                raise
            raise mapped from exc
        return httpx.Response(
            status_code=answer.status,
            headers=answer.headers,
            stream=_PoolStream(answer.stream),
            extensions=answer.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


# --------------------------------------------------------------------------------------------
# The policy.


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
        self, call: Call, server: str, *, safe: bool, replayable: bool, tried: Sequence[str]
    ) -> None:
        self._call = call
        self._server = server
        self._safe = safe
        self._replayable = replayable
        self._first_here = server not in tried
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
        server = self._server
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
            return self._judged("elsewhere", f"{server} cannot be reached ({_reason(exc)})")
        dead = isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError)
        if dead and self._safe and self._first_here:
            return self._judged("again", f"the connection to {server} was dead ({_reason(exc)})")
        if not self._safe and not nothing_sent:
            note_left_behind(
                mapped,
                LeftBehind.MAY_BE_APPLIED,
                "the request may have reached the server and been applied: check before "
                "repeating it",
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
                timed_out_error = IncusTimeoutError(
                    error.message,
                    server=error.server,
                    method=error.method,
                    url=error.url,
                    status_code=error.status_code,
                    error_code=error.error_code,
                    server_message=error.server_message,
                )
                timed_out_error.left_behind = error.left_behind
                for note in getattr(error, "__notes__", ()):
                    timed_out_error.add_note(note)
                error = timed_out_error
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


class AsyncPolicyTransport(httpx.AsyncBaseTransport):
    """The SDK's policy over ``inner`` (the pool, or a user's transport).

    ``endpoint`` is the server (for a cluster, the member tried first). ``members`` are a
    cluster's members the caller named; ``learn`` asks an HTTPS server once, at its first
    request, which members its cluster has (a server that is none says so: one request per
    client). The member in use is ``self.endpoint``; requests are sent to it whatever host
    their URL names.
    """

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        endpoint: Endpoint,
        *,
        members: Sequence[Endpoint] = (),
        learn: bool = False,
        timeout: float | None = None,
    ) -> None:
        self._inner = inner
        self.endpoint = endpoint
        self._timeout = timeout
        if members or learn:
            self._members: Members | None = Members(members or [endpoint])
        else:
            self._members = None
        #: Whether the caller named a cluster (else an unanswered question is no news).
        self._cluster_named = bool(members)
        #: The member in use and its base URL, parsed once.
        self._base: tuple[Endpoint, httpx.URL] | None = None

    @property
    def server(self) -> str:
        return self.endpoint.display

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        call = request.extensions.get(CALL)
        if not isinstance(call, Call):
            return await self._inner.handle_async_request(request)
        tried = request.extensions.get(TRIED)
        if not isinstance(tried, list):
            tried = []
        await self._learn_members(request, tried)
        return await self._send(request, call, tried)

    async def _send(
        self, request: httpx.Request, call: Call, tried: list[str], *, failover: bool = True
    ) -> httpx.Response:
        streamed = bool(request.extensions.get(STREAMED))
        # Bytes can be sent again; a body streamed from elsewhere (an upload) cannot.
        replayable = isinstance(request.stream, httpx.ByteStream)
        retries = self._retries(call, replayable=replayable, tried=tried, failover=failover)
        for attempt in retries:
            with attempt:
                return await self._try(request, call, attempt, streamed=streamed)
        raise AssertionError("unreachable")  # pragma: no cover - the last attempt raises

    async def _try(
        self, request: httpx.Request, call: Call, attempt: Attempt, *, streamed: bool
    ) -> httpx.Response:
        """One try on the member in use; an answer to read is read whole, within limits."""
        response = await self._inner.handle_async_request(self._addressed(request))
        extensions = dict(response.extensions)
        peer = _peer_certificate(response)
        if peer is not None:
            extensions[PEER_CERTIFICATE] = peer
        if streamed and response.status_code < 400:
            response.extensions = extensions
            return response
        try:
            body = await _read_bounded(call, self.server, response)
        finally:
            await response.aclose()
        attempt.answered(response.status_code, body)
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=body,
            extensions=extensions,
        )

    def _addressed(self, request: httpx.Request) -> httpx.Request:
        """The request, sent to the member in use: as it is when it names that member already
        (every request but those a failover moves), else a copy for the member."""
        if self._base is None or self._base[0] is not self.endpoint:
            self._base = (self.endpoint, httpx.URL(self.endpoint.base_url))
        base = self._base[1]
        url = request.url
        if (url.scheme, url.host, url.port) == (base.scheme, base.host, base.port):
            return request
        url = url.copy_with(scheme=base.scheme, host=base.host, port=base.port)
        # Host follows the member the request goes to (httpx sets it only for a request it
        # builds from content, not from a stream).
        headers = [(b"Host", url.netloc)]
        headers += [(key, value) for key, value in request.headers.raw if key.lower() != b"host"]
        return httpx.Request(
            request.method,
            url,
            headers=headers,
            stream=request.stream,
            extensions=request.extensions,
        )

    def _retries(
        self, call: Call, *, replayable: bool, tried: list[str], failover: bool
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
            attempt = Attempt(call, self.server, safe=safe, replayable=replayable, tried=tried)
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
        if self._members is None:
            return False
        self._members.failed(self.endpoint)
        following = self._members.next_after(self.endpoint, exclude=exclude)
        if following is None:
            return False
        self.endpoint = following
        return True

    async def _learn_members(self, request: httpx.Request, tried: list[str]) -> None:
        """A cluster client asks which members the cluster has, until it has an answer: naming
        one member is then enough to outlive its loss. The question is part of the call that
        needs the answer: it takes at most LEARNING_SHARE of the call's time, and a member
        that fails it is left for the next one, which the call then uses."""
        members = self._members
        if members is None or members.learnt or members.asking:
            return
        call = api.cluster_members()
        question = httpx.Request(
            "GET",
            request.url.copy_with(path=call.path, params=call.params),
            headers={"User-Agent": request.headers.get("User-Agent", "")},
            extensions={**request.extensions, CALL: call, STREAMED: False, TRIED: tried},
        )
        members.asking = True
        try:
            share = None if self._timeout is None else self._timeout * LEARNING_SHARE
            with call_deadline(share):
                response = await self._send(question, call, tried, failover=False)
            envelope = parse_envelope(call, self.server, response)
        except (IncusConnectionError, IncusTimeoutError) as exc:
            # No answer: the call goes on with the next member, which is asked next time. A
            # server not named as a cluster's member may be none: no news for a WARNING.
            logger.log(
                logging.WARNING if self._cluster_named else logging.DEBUG,
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
        learnt = learnt_members(envelope.metadata, self.endpoint)
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

    async def aclose(self) -> None:
        await self._inner.aclose()


async def raw_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """An answer's body as it came (no content decoding), read from the network, or from
    memory when the transport built the answer from bytes (httpx reads those at once)."""
    if response.is_stream_consumed:
        yield response.content
        return
    async for chunk in response.aiter_raw():
        yield chunk


def _reason(exc: BaseException) -> str:
    """What a failure says, for a log line: its text, else its kind (httpx's ConnectTimeout
    and ReadError may carry none)."""
    return str(exc) or type(exc).__name__


def _peer_certificate(response: httpx.Response) -> str | None:
    """The certificate the server showed for this answer, as PEM (None over a unix socket, or
    through a transport that does not say). Read while the answer is open: a server that
    closes the connection after answering (HTTP/1.0) leaves a blocking client's closed socket
    without it."""
    stream = response.extensions.get("network_stream")
    ssl_object = stream.get_extra_info("ssl_object") if stream is not None else None
    der = ssl_object.getpeercert(True) if ssl_object is not None else None
    return ssl.DER_cert_to_PEM_cert(der) if der else None


async def _read_bounded(call: Call, server: str, response: httpx.Response) -> bytes:
    """The whole answer, up to sizes no Incus reaches: a larger success answer is refused, an
    error answer is quoted from its beginning."""
    limit = MAX_ERROR_BODY if response.status_code >= 400 else MAX_ANSWER_BYTES
    parts: list[bytes] = []
    size = 0
    async for chunk in raw_chunks(response):
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            if response.status_code >= 400:
                break  # an error is quoted from its beginning
            raise unexpected(
                call,
                server,
                f"the answer is larger than {limit // (1024 * 1024)} MiB, more than any "
                "Incus sends",
            )
    return b"".join(parts)
