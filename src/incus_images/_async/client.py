"""The client: a server (or a cluster of them), one project, one connection."""

from __future__ import annotations

import os
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING

import httpx

from .._endpoint import CertificateArg, Endpoint, VerifyArg, parse_endpoint, parse_members
from .._errors import InvalidInputError
from .._models import ServerInfo
from .._validate import boolean, seconds, text
from ._connection import AsyncConnection
from .images import AsyncImagesAPI
from .operations import AsyncOperationsAPI

if TYPE_CHECKING:
    from .._events import Event
    from .._remotes import Remote
    from .events import AsyncEventStream

#: What ``events()`` asks for by default: every type it reads (``_events.STREAM_TYPES``;
#: written out here so that the module is imported only when events are watched).
STREAM_TYPES = ("lifecycle", "operation")

#: Seconds a call may take (and a transfer may go without moving 64 KiB).
DEFAULT_TIMEOUT = 30.0


class AsyncClient:
    """A client for one Incus server.

    ``endpoint`` is where the server listens, or, for a cluster, a list of its members'
    ``https://`` URLs (at most 1,000): a call that cannot reach its member, or whose member is
    shutting down, goes to the next one when that is safe (reads; nothing is sent twice that
    may have arrived), trying at most 10 members within its ``timeout``, and the client
    learns the cluster's other members on first use, so one member is enough to outlive its
    loss. Omitted, the local daemon is found as the incus CLI finds it: $INCUS_SOCKET, then
    $INCUS_DIR/unix.socket, then /run/incus/unix.socket, then /var/lib/incus/unix.socket
    (looked for at the first request). Otherwise give ``unix:///path/to/unix.socket`` or
    ``https://host[:port]``.

    Over HTTPS, ``cert`` is the client certificate (one PEM file with certificate and key, or a
    (certificate, key) pair) and ``verify`` checks the server: True (default) trusts the
    system's CA bundle, a path trusts the certificates of that PEM file (e.g. the server's
    own ``server.crt``, or a CA), an ``ssl.SSLContext`` is used as given, and False disables
    the check (never the default). Of a file, the first certificate is pinned: a server
    showing exactly it is accepted whatever name it carries (Incus names its certificate
    after its host, not the address it is reached at), as the incus CLI does; any other
    certificate must be issued by one of the file's and carry the server's host name.

    ``remote`` names a remote of the incus CLI's configuration (``$INCUS_CONF``, else
    ``~/.config/incus``; see ``load_remotes()``), or is a ``Remote``: the client connects as
    the CLI does, with the CLI's client certificate and the server certificate it pinned
    (checked as a ``verify=`` file is; else ``client.ca``, else the system's CA bundle), to
    the remote's project unless ``project`` names another.
    ``local`` is the local daemon. Give it instead of ``endpoint``, ``cert`` and ``verify``.

    ``project`` selects the Incus project (None: the server's default project).

    ``timeout`` (seconds; None: no limit) is what a call may take: connecting, sending the
    request and reading the whole answer end within it, however slowly a server answers,
    and on a cluster whichever members it tries. Image transfers (uploads, exports, relays)
    are not hurried: they may take as long as they need while they move, and fail once
    fewer than 64 KiB move within ``timeout`` seconds (a stalled or trickling server).
    Waiting for an operation is bounded by the ``timeout=`` of the call that waits
    (``create``, ``copy``, ``publish``, ``delete``, ``refresh``, ``operations.wait``). Answers
    larger than any Incus sends (16 MiB of JSON, 64 KiB of error text) are refused, so a
    hostile server cannot fill the client's memory.

    ``transport`` is an httpx transport of your own (``httpx.AsyncBaseTransport`` for
    AsyncClient, ``httpx.BaseTransport`` for Client), used for every request instead of the
    SDK's connection pool: for a proxy, tracing or tests. The SDK's policy stays on top of it
    (repeats, cluster failover, the call's deadline for every request). TLS is then the
    transport's business (``verify=`` a file still names the certificate another server is
    told to pin in a copy), and a server that trickles its answer within each network step
    is bounded only by the transport's own timeouts. The client closes it when closed.

    Use it as a context manager, or close it when done. A blocking Client used without either
    (a plain script, a notebook cell) is also closed when it is garbage-collected; an
    AsyncClient cannot be, as nothing can await in a garbage collector.
    """

    def __init__(
        self,
        endpoint: str | os.PathLike[str] | list[str] | tuple[str, ...] | None = None,
        *,
        remote: str | Remote | None = None,
        cert: CertificateArg = None,
        verify: VerifyArg = True,
        project: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if project is not None:
            text(project, "project", empty=False)
        members: list[Endpoint] = []
        if isinstance(endpoint, list | tuple):
            if remote is not None:
                raise InvalidInputError("give a cluster's members or a remote=, not both")
            members = parse_members(endpoint, cert=cert, verify=verify)
            target: Endpoint | None = members[0]
        elif remote is None:
            target = parse_endpoint(endpoint, cert=cert, verify=verify)
        elif endpoint is not None or cert is not None or verify is not True:
            raise InvalidInputError(
                "remote= brings the address and certificates from the incus CLI's "
                "configuration: give it without endpoint=, cert= or verify="
            )
        else:
            # Here only: reading the CLI's configuration takes modules a client of an
            # explicit endpoint never needs (and YAML, and maybe cryptography, on use).
            from .._remotes import remote_endpoint

            resolved = remote_endpoint(remote)
            target = resolved.endpoint
            project = resolved.project if project is None else project
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise InvalidInputError(
                f"transport must be an httpx.AsyncBaseTransport, got {type(transport).__name__}"
            )
        self._connection = AsyncConnection(
            target,
            project=project,
            timeout=seconds(timeout, "timeout"),
            members=members,
            transport=transport,
        )
        self._operations = AsyncOperationsAPI(self._connection)
        self._images = AsyncImagesAPI(self._connection, self._operations)

    # Read-only properties rather than plain attributes: help() and the API reference show
    # them with what they do, and nobody can swap the client's API objects by mistake.
    @property
    def images(self) -> AsyncImagesAPI:
        """The images and image aliases of this server, in the client's project.

        ``client.images.list()``, ``get()``, ``create()``, ``copy()``, ``publish()``,
        ``update()``, ``export()``, ``refresh()`` and ``delete()`` work on images;
        ``create_alias()``, ``get_alias()``, ``get_by_alias()``, ``list_aliases()``,
        ``rename_alias()``, ``update_alias()`` and ``delete_alias()`` on aliases.
        """
        return self._images

    @property
    def operations(self) -> AsyncOperationsAPI:
        """The server's background operations (an upload, a copy, a deletion, ...).

        ``client.operations.get(op)`` reads one's current state; ``client.operations.wait(op,
        timeout=None)`` waits until it ends and returns it, raising OperationError if it
        failed. Calls given ``wait=False`` return the Operation to wait for; waiting for it
        here does what the call still had to do (verify, settings, aliases).
        """
        return self._operations

    @property
    def server(self) -> str:
        """The server this client talks to, as error messages name it."""
        return self._connection.server

    @property
    def project(self) -> str | None:
        """The Incus project this client works in (None: the server's default project)."""
        return self._connection.project

    async def server_info(self) -> ServerInfo:
        """Return what the server says about itself, and whether it trusts this client
        (``.trusted``): an untrusted client sees only public images and changes nothing."""
        return await self._images._calls.server_info()

    def events(
        self,
        *,
        types: Iterable[str] = STREAM_TYPES,
        all_projects: bool = False,
        reconnect: bool = True,
    ) -> AsyncEventStream[Event]:
        """The server's events as they happen: a stream to use as a context manager.

        ::

            async with client.events(types=("lifecycle", "operation")) as events:
                async for event in events:  # ImageEvent, LifecycleEvent, OperationEvent, EventGap
                    ...

        ``types`` chooses what is sent: ``"lifecycle"`` (objects created, changed, deleted:
        images and aliases as ``ImageEvent``, everything else as ``LifecycleEvent``) and
        ``"operation"`` (``OperationEvent``: background tasks as they start, run and end).
        Only the client's project is seen; ``all_projects=True`` sees every project.

        Entering opens the stream (an untrusted client gets ``ForbiddenError``). Each step of
        the iteration reads the next event from the server: nothing is read ahead, and the
        server's pings are answered meanwhile; a caller that stops iterating for more than
        about 20 s may be dropped by the server. A frame that cannot be read is logged at
        WARNING and skipped. When the stream drops (a daemon restart, a cluster member lost),
        it is opened again, through another cluster member if need be, and an ``EventGap``
        says from when to when events may have been missed; after the client's ``timeout``
        without a stream, ``IncusConnectionError`` (``reconnect=False``: at the first drop).
        Leaving the context (``break``, an exception, cancellation) closes the stream.

        An ``OperationEvent``'s operation may carry secrets (an image's download secret is
        sent to every listener of the project): log its metadata with care.
        """
        from .._events import every_event, stream_types
        from .events import AsyncEventStream

        return AsyncEventStream(
            self._connection,
            types=stream_types(types),
            all_projects=boolean(all_projects, "all_projects"),
            reconnect=boolean(reconnect, "reconnect"),
            keep=every_event,
            label="events()",
        )

    async def aclose(self) -> None:
        """Close the connections. The client can be used again afterwards (it reconnects)."""
        await self._connection.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        project = f", project={self.project!r}" if self.project is not None else ""
        return f"<{type(self).__name__} {self.server}{project}>"
