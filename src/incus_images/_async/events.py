"""The event stream of a server (``/1.0/events``), typed, read as its caller iterates.

``client.events()`` and ``client.images.watch()`` return an ``AsyncEventStream``: a context
manager that opens the websocket (``_event_stream``) and an iterator that reads one message
each time it is asked for the next event. When the stream drops (a daemon restart, a cluster
member lost), it reopens through the client's connection (which fails over to another
member) and says what may have been missed with an ``EventGap``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from types import TracebackType
from typing import Generic, TypeVar

from .._errors import (
    APIError,
    IncusConnectionError,
    IncusTimeoutError,
    UnexpectedResponseError,
)
from .._events import Event, EventGap, SkipWarnings, parse_event
from .._flavours import async_flavour
from .._logging import logger
from ._connection import AsyncConnection
from ._event_stream import AsyncEventSocket, StreamLost, event_socket

__all__ = ["AsyncEventStream"]

EventT = TypeVar("EventT")

#: First pause before reopening a lost stream, doubled after each failed attempt up to
#: RECONNECT_MAX_SECONDS: a restarting daemon answers again within a second or two.
RECONNECT_FIRST_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 2.0

#: Errors of opening the stream that a later attempt may not meet (the daemon is down or
#: restarting, a member is lost). Any other (ForbiddenError, ...) is raised at once.
_PASSING = (IncusConnectionError, IncusTimeoutError, UnexpectedResponseError)


class AsyncEventStream(Generic[EventT]):
    """Events of one server, as an async iterator used inside ``async with``.

    Each ``async for`` step reads the next message from the server: nothing is read ahead or
    queued, and the server's pings are answered meanwhile. A caller that stops iterating for
    more than about 20 s may be dropped by the server; the next step then reconnects and
    yields an ``EventGap``.

    When the stream drops, it is reopened (through the client's cluster members, after a
    pause of 0.1 s doubling up to 2 s) and an ``EventGap`` says from when to when events may
    have been missed; then events go on. It gives up with ``IncusConnectionError`` when no
    stream could be opened for the client's ``timeout`` (None: it keeps trying). Made with
    ``reconnect=False``, it raises ``IncusConnectionError`` at the first drop instead.

    Entering the context opens the stream (an untrusted client gets ``ForbiddenError``);
    leaving it, however it is left (``break``, an exception, cancellation), closes the
    socket. Iterating after that ends at once.
    """

    def __init__(
        self,
        connection: AsyncConnection,
        *,
        types: tuple[str, ...],
        all_projects: bool,
        reconnect: bool,
        keep: Callable[[Event], EventT | None],
        label: str,
    ) -> None:
        self._connection = connection
        self._types = ",".join(types)
        self._all_projects = all_projects
        self._reconnect = reconnect
        self._keep = keep
        self._label = label
        self._stack: AsyncExitStack | None = None
        self._socket: AsyncEventSocket | None = None
        self._entered = False
        self._closed = False
        #: When the open stream last showed it was alive (opened, or a message arrived).
        self._alive_at = datetime.now(UTC)
        #: Since when (monotonic) no stream has delivered a frame: from the drop that
        #: started reconnecting until a reopened stream delivers one (a ping counts). A
        #: server that accepts the stream and then drops it, or says nothing, is no more a
        #: stream than one that refuses it: the client's timeout runs on across both.
        self._lost_at: float | None = None
        #: The pause before the next attempt to reopen, doubling while none delivers.
        self._pause = RECONNECT_FIRST_SECONDS
        self._skipped = SkipWarnings()

    @property
    def server(self) -> str:
        """The server the events come from, as error messages name it."""
        return self._connection.server

    async def __aenter__(self) -> AsyncEventStream[EventT]:
        if self._entered:
            raise RuntimeError(f"{self._label} can be entered once: call it again for another")
        self._entered = True
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncEventStream[EventT]:
        return self

    async def __anext__(self) -> EventT | EventGap:
        if not self._entered:
            raise RuntimeError(
                f"use {self._label} as a context manager, then iterate over what it gives"
            )
        while not self._closed:
            socket = self._socket
            if socket is None:
                # A reconnection that was interrupted (cancelled, Ctrl-C) left no stream.
                return await self._reopen(self._alive_at, "it was interrupted")
            try:
                frame = await socket.message()
            except StreamLost as lost:
                since = self._alive_at
                if socket.last_frame_at is not None:
                    # It delivered (a ping at least): what follows is a new loss.
                    self._lost_at = None
                    since = max(since, socket.last_frame_at)
                return await self._reopen(since, str(lost))
            self._alive_at = datetime.now(UTC)
            self._lost_at = None
            event = parse_event(frame, warnings=self._skipped)
            kept = None if event is None else self._keep(event)
            if kept is not None:
                return kept
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Close the stream (again: nothing happens). Iterating afterwards ends at once."""
        self._closed = True
        await self._drop()

    async def _open(self) -> None:
        stack = AsyncExitStack()
        try:
            socket = await stack.enter_async_context(
                event_socket(self._connection, types=self._types, all_projects=self._all_projects)
            )
        except BaseException:
            await stack.aclose()
            raise
        self._stack = stack
        self._socket = socket
        self._alive_at = datetime.now(UTC)

    async def _drop(self) -> None:
        stack, self._stack, self._socket = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def _reopen(self, since: datetime, why: str) -> EventGap:
        """Reopen the lost stream; the gap from ``since`` to the new stream's opening."""
        await self._drop()
        server = self._connection.server
        if not self._reconnect:
            self._closed = True
            raise IncusConnectionError(
                f"The event stream of {server} was lost ({why}); reconnect=False", server=server
            )
        logger.info("The event stream of %s was lost (%s): reconnecting", server, why)
        timeout = self._connection.timeout
        # A stream reopened that delivered nothing before it was lost again: wait before the
        # next attempt, as after a refusal, and keep counting from the first loss.
        wait_first = self._lost_at is not None
        if self._lost_at is None:
            self._lost_at = time.monotonic()
            self._pause = RECONNECT_FIRST_SECONDS
        failure = why
        while True:
            if wait_first:
                waited = time.monotonic() - self._lost_at
                if timeout is not None and waited + self._pause > timeout:
                    self._closed = True
                    raise IncusConnectionError(
                        f"The event stream of {server} was lost ({why}) and could not be "
                        f"opened again within {timeout:g} s (none opened delivered a frame): "
                        f"{failure}",
                        server=server,
                    )
                await async_flavour.sleep(self._pause)
                self._pause = min(self._pause * 2, RECONNECT_MAX_SECONDS)
            wait_first = True
            try:
                await self._open()
                break
            except _PASSING as exc:
                failure = str(exc)
            except APIError as exc:
                # A daemon shutting down answers 503 until it is gone.
                if exc.status_code is None or exc.status_code < 500:
                    raise
                failure = str(exc)
        gap = EventGap(since=since, until=self._alive_at)
        # After a failover the stream comes from another member than the one it lost.
        logger.info(
            "The event stream of %s is open again on %s; events may be missing",
            server,
            self._connection.server,
        )
        return gap

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._socket is not None else "not open"
        return f"<{type(self).__name__} {self._label} of {self.server} ({state})>"
