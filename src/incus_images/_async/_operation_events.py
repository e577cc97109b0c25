"""Progress of a server-side operation from the event stream, instead of polling it.

A caller that watches an operation (``progress=`` of a pull or push copy, or of publish)
would otherwise long-poll it in one-second slices and read it after each: about two requests
a second for as long as it runs. Here one event stream (``/1.0/events?type=operation``)
carries the operation's updates as incusd makes them, and the watcher gets each; the caller
then ends with its usual ``/wait`` call, whose answer is the authoritative end (failures are
reported from it, as ever).

The events only ever help: when the stream cannot be opened (an untrusted client, a server
without the events API), drops, or would not keep the budget (a client made with its own
``transport=``, whose network streams do not keep the SDK's deadlines), the caller polls as
before for whatever its budget still allows.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Protocol

from .._errors import IncusError
from .._events import OperationEvent, parse_event
from .._logging import logger
from .._models import Operation
from .._waiting import WaitBudget
from ._connection import AsyncConnection
from ._event_stream import AsyncEventSocket, StreamLost, event_socket


class OperationsOfTheWait(Protocol):
    """What following an operation needs of the operations API (``operations.py``, which
    calls ``follow``): its connection, its count of the streams its waits hold, and a read
    of an operation's state. Described here rather than imported: the two modules would
    otherwise import each other."""

    _connection: AsyncConnection
    _followed: int

    async def _running_state(self, op_id: str) -> Operation | None: ...


#: Without news of the operation for this long (a stream that missed its end, a server whose
#: operation makes no progress for a while), its state is read again on a fresh stream: at
#: most two requests per this many seconds, as an unwatched wait's long-polls cost.
QUIET_SECONDS = 30.0
#: What is left of a budget for the final ``/wait`` (the server counts whole seconds): the
#: stream is left this long before the budget ends, so the wait ends within it.
LAST_SLICE_SECONDS = 1.0
#: Event streams one client holds at once for waits; further waits poll. A stream holds one
#: of the client's connections (and its slot) while the wait also sends requests: a bound far
#: below the pool's size keeps many watched waits at once from taking every slot.
MAX_FOLLOWED = 16


class _CannotFollow(Exception):
    """The event stream cannot tell (the message says why): poll instead."""


async def follow(
    operations: OperationsOfTheWait,
    op_id: str,
    budget: WaitBudget | None,
    watch: Callable[[Operation], object],
) -> None:
    """Call ``watch`` with op_id's state as the event stream reports it, until the operation
    ends, ``budget`` has about a second left, or the stream cannot tell (it cannot be opened,
    or drops). The caller then waits as usual: the operation's end, a timeout and a failure
    all come from that wait.

    A state older than one already given to ``watch`` is skipped (incusd hands each event
    to each listener separately: they may arrive out of order); the first final state ends
    the listening, so a ``Running`` that arrives after it is never seen.
    """
    connection = operations._connection
    while _listening_time(budget) != 0.0:
        try:
            async with _stream(operations) as socket:
                # Read after the stream is open, so that no change falls between the two:
                # the operation may have ended before.
                state = await _state(operations, op_id)
                if state is None or state.done:
                    return
                watch(state)
                if not await _listen(socket, op_id, budget, watch, state.updated_at):
                    return
        except _CannotFollow as exc:
            logger.debug(
                "operation %s on %s: followed by polling, as the event stream cannot tell (%s)",
                op_id,
                connection.server,
                exc,
            )
            return
        logger.debug(
            "operation %s on %s: no news for %g s, reading it again",
            op_id,
            connection.server,
            QUIET_SECONDS,
        )


def _listening_time(budget: WaitBudget | None) -> float | None:
    """Seconds the stream may still be listened to (None: no limit; 0.0: none)."""
    left = None if budget is None else budget.left()
    return None if left is None else max(0.0, left - LAST_SLICE_SECONDS)


@asynccontextmanager
async def _stream(operations: OperationsOfTheWait) -> AsyncIterator[AsyncEventSocket]:
    """The client's operation events; _CannotFollow when the stream cannot be opened (or
    too many waits hold one already)."""
    if operations._connection._user_transport is not None:
        # Its network streams do not keep the SDK's deadlines: a quiet stream's read could
        # outlast the budget (incusd's pings keep it open).
        raise _CannotFollow("the client's own transport does not bound the stream's reads")
    if operations._followed >= MAX_FOLLOWED:
        raise _CannotFollow(f"{MAX_FOLLOWED} waits of this client hold an event stream")
    operations._followed += 1
    # What failed: opening or closing the stream (then polling takes over), or the block.
    in_block = False
    try:
        async with event_socket(
            operations._connection, types="operation", all_projects=False
        ) as socket:
            in_block = True
            yield socket
            in_block = False
    except IncusError as exc:
        if in_block:
            raise
        raise _CannotFollow(f"opening or closing it failed: {exc}") from None
    finally:
        operations._followed -= 1


async def _state(operations: OperationsOfTheWait, op_id: str) -> Operation | None:
    """The operation's state (None: the server no longer knows it)."""
    try:
        return await operations._running_state(op_id)
    except IncusError as exc:
        raise _CannotFollow(f"reading the operation failed: {exc}") from None


async def _listen(
    socket: AsyncEventSocket,
    op_id: str,
    budget: WaitBudget | None,
    watch: Callable[[Operation], object],
    newest: datetime | None,
) -> bool:
    """Give each running state of op_id the stream reports to ``watch``. False once it
    ended or the budget's listening time is over; True after QUIET_SECONDS without news of
    it; _CannotFollow when the stream drops. The events' metadata is never logged: a token
    operation's holds a download secret."""
    quiet_from = time.monotonic()
    while True:
        left = _listening_time(budget)
        quiet = QUIET_SECONDS - (time.monotonic() - quiet_from)
        if left == 0.0:
            return False
        if quiet <= 0:
            return True
        try:
            # Pings answered meanwhile do not make it wait longer.
            frame = await socket.message_within(quiet if left is None else min(quiet, left))
        except StreamLost as exc:
            raise _CannotFollow(f"it was lost: {exc}") from None
        if frame is None:
            # The next turn says whether the budget or the quiet time is over.
            continue
        event = parse_event(frame)
        if not isinstance(event, OperationEvent) or event.operation.id != op_id:
            continue
        operation = event.operation
        if operation.done:
            return False
        updated = operation.updated_at
        if newest is not None and updated is not None and updated < newest:
            continue
        newest = updated or newest
        quiet_from = time.monotonic()
        watch(operation)
