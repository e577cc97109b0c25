"""Background operations, and the waiter every waiting call goes through.

What waiting means is one rule for every call (``_waiting``). A call given ``wait=False``
that still has work to do once its operation ends (verify the image, apply settings and
aliases) leaves it here, as an ``AsyncCompletion``, for ``wait()`` to do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

import httpx

from .. import _api as api
from .._errors import IncusTimeoutError, NotFoundError, OperationError
from .._flavours import async_flavour
from .._logging import logger
from .._models import Operation
from .._protocol import (
    operation_failure,
    parse_wait,
    structure,
)
from .._validate import operation_id
from .._waiting import WaitBudget
from ._connection import AsyncConnection
from ._operation_events import follow

#: Longest single long-poll when the caller set no deadline: short enough that a dead peer
#: is noticed, long enough that waiting costs one request per half minute.
WAIT_SLICE_SECONDS = 30
#: Long-poll length while a caller watches the operation's progress.
WATCH_SLICE_SECONDS = 1
#: Shortest time between two polls of a running operation: a server that answers a long-poll
#: at once (ignoring its timeout) is asked at most about 20 times a second.
MIN_POLL_INTERVAL = 0.05
#: Extra read time beyond the server-side wait, for the answer to arrive.
_READ_MARGIN_SECONDS = 10.0
#: Operations returned early whose calls still have work to do, kept per client until they
#: are waited for; past this many, the oldest is forgotten (with a WARNING saying what will
#: not be done). Each holds a few small objects, no image data.
MAX_PENDING = 1000


class AsyncCompletion(Protocol):
    """What a call that returned its Operation early (wait=False) still does once the
    operation has ended (see ``_waiting``)."""

    def describe(self) -> str:
        """What is left to do, for messages: "verify image 'ab12…' and create alias 'x'"."""
        ...

    async def complete(self, operation: Operation, budget: WaitBudget) -> Operation:
        """Wait for the operation within ``budget``, then do the rest; the finished
        Operation. A timeout leaves everything to a later call."""
        ...


class AsyncOperationsAPI:
    """Operations on the server: read them, and wait for them to finish.

    Waiting long-polls ``/1.0/operations/{id}/wait`` (the server answers the moment the
    operation ends); nothing sleeps and polls.
    """

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection
        #: Operation id -> (the operation as returned, what its call still has to do).
        self._pending: dict[str, tuple[Operation, AsyncCompletion]] = {}
        #: Event streams held by watched waits (``_operation_events``).
        self._followed = 0

    async def get(self, operation: Operation | str) -> Operation:
        """Return the current state of an operation (given as Operation, id or URL)."""
        op_id = operation_id(operation)
        call = api.get_operation(op_id)
        envelope = await self._connection.request(call)
        return structure(call, self._connection.server, envelope.metadata, Operation)

    async def wait(self, operation: Operation | str, timeout: float | None = None) -> Operation:
        """Wait until the operation finishes and return it in its final state.

        An operation a call returned early (``wait=False``) is finished as that call would
        have finished it: the image verified, its settings and aliases applied (see the
        README's "What waiting means"). An Operation already in a final state is returned as
        it is (or its failure raised) without asking the server.

        Raises OperationError when it failed or was cancelled, IncusTimeoutError when it is
        still running after timeout seconds (None: wait as long as it takes; a later wait can
        still finish it), and OperationGoneError when the server no longer knows it.
        """
        budget = WaitBudget(timeout)
        if (
            isinstance(operation, Operation)
            and operation.done
            and not (isinstance(operation.id, str) and operation.id in self._pending)
        ):
            # A final state is final: nothing to ask (an image a copy found already there
            # comes with a finished Operation that ran nowhere).
            if operation.succeeded:
                return operation
            action = f"wait for operation {operation.id}"
            raise operation_failure(action, self._connection.server, operation, operation.err)
        op_id = operation_id(operation)
        pending = self._pending.pop(op_id, None)
        if pending is None:
            return await self._wait(op_id, budget, action=f"wait for operation {op_id}")
        started, completion = pending
        return await self._complete(started, completion, budget)

    async def _finish(
        self, operation: Operation, completion: AsyncCompletion, *, wait: bool, budget: WaitBudget
    ) -> bool:
        """The end of every call that starts an operation: do what is left now (wait), or
        leave it for wait() (see ``_waiting``). Whether it was done now."""
        if not wait:
            self._defer(operation, completion)
            return False
        await self._complete(operation, completion, budget)
        return True

    async def _complete(
        self, operation: Operation, completion: AsyncCompletion, budget: WaitBudget
    ) -> Operation:
        """Do what is left of a call now. On a timeout the operation runs on: what is left is
        kept for a later wait(), and the error's note says so."""
        try:
            return await completion.complete(operation, budget)
        except IncusTimeoutError as exc:
            self._defer(operation, completion)
            exc.add_note(
                f"incus_images: operation {operation.id} runs on at {self._connection.server}; "
                f"still to do: {completion.describe()}. client.operations.wait"
                f"({operation.id!r}) waits for it and does the rest."
            )
            raise

    async def _wait_noting(
        self, operation: Operation, budget: WaitBudget | None, *, action: str, left: str
    ) -> Operation:
        """Wait for an operation a call started; on a timeout the note says what ``left``
        behind (the operation runs on)."""
        try:
            return await self._wait(operation.id, budget, action=action)
        except IncusTimeoutError as exc:
            exc.add_note(
                f"incus_images: operation {operation.id} runs on at {self._connection.server}: "
                f"{left}; client.operations.wait({operation.id!r}) waits for it."
            )
            raise

    def _defer(self, operation: Operation, completion: AsyncCompletion) -> None:
        """Keep what a call returning ``operation`` early still has to do, for wait()."""
        self._pending[operation.id] = (operation, completion)
        while len(self._pending) > MAX_PENDING:
            oldest = next(iter(self._pending))
            _, forgotten = self._pending.pop(oldest)
            logger.warning(
                "incus_images: more than %d operations on %s were returned early and never "
                "waited for; operation %s is forgotten, so this will not be done: %s",
                MAX_PENDING,
                self._connection.server,
                oldest,
                forgotten.describe(),
            )

    async def _wait(
        self,
        op_id: str,
        budget: WaitBudget | None = None,
        *,
        action: str,
        fingerprint: str | None = None,
        watch: Callable[[Operation], object] | None = None,
    ) -> Operation:
        """Wait for op_id within ``budget`` (None: no limit); failures are reported as
        failures to do ``action``.

        ``watch``, when given, is called with the operation's state while it runs (for
        progress): as the event stream reports it when one can be opened
        (``_operation_events``), else about once a second; otherwise each long-poll lasts as
        long as it may. The end always comes from the long-poll.
        """
        if watch is not None:
            await follow(self, op_id, budget, watch)
        timeout = None if budget is None else budget.left()
        server = self._connection.server
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        longest = WAIT_SLICE_SECONDS if watch is None else WATCH_SLICE_SECONDS
        while True:
            if deadline is None:
                slice_seconds = longest
            else:
                # The server counts whole seconds; the deadline is checked here after each poll.
                slice_seconds = min(longest, max(1, math.ceil(deadline - time.monotonic())))
            call = api.wait_operation(op_id, slice_seconds, action=action)
            asked = time.monotonic()
            longest_read = slice_seconds + _READ_MARGIN_SECONDS
            response = await self._connection.send(
                call,
                timeout=httpx.Timeout(self._connection.timeout, read=longest_read, pool=None),
                deadline=longest_read + (self._connection.timeout or 0),
            )
            result = parse_wait(call, server, response)
            if result.finished:
                logger.debug(
                    "waited %.1f s for operation %s on %s (%s): %s",
                    time.monotonic() - started,
                    op_id,
                    server,
                    action,
                    "Failure" if result.operation is None else result.operation.status,
                )
            if result.failure is not None:
                # incusd 6.0.4 sends only the error text; the operation itself (with its
                # metadata) is still readable for a few seconds.
                final = await self._final_state(op_id)
                raise operation_failure(
                    action,
                    server,
                    final,
                    final.err if final is not None and final.err else result.failure,
                    error_code=result.failure_code,
                    fingerprint=fingerprint,
                )
            if result.operation is not None and result.operation.done:
                final = result.operation
                if final.succeeded:
                    return final
                raise operation_failure(action, server, final, final.err, fingerprint=fingerprint)
            if deadline is not None and time.monotonic() >= deadline:
                assert budget is not None
                assert budget.timeout is not None
                raise IncusTimeoutError(
                    f"Could not {action} on {server}: operation {op_id} still runs after "
                    f"{budget.timeout:g} s",
                    server=server,
                    operation=result.operation,
                    fingerprint=fingerprint,
                )
            if watch is not None:
                # incusd 6.0.4 answers a timed-out wait without the operation: read it.
                running = result.operation or await self._running_state(op_id)
                if running is not None:
                    watch(running)
            # A server that answers at once although the operation runs on (it ignores the
            # timeout) must not turn the long-poll into a busy loop.
            early = MIN_POLL_INTERVAL - (time.monotonic() - asked)
            if early > 0:
                await async_flavour.sleep(early)

    async def _running_state(self, op_id: str) -> Operation | None:
        try:
            return await self.get(op_id)
        except NotFoundError:
            return None

    async def _final_state(self, op_id: str) -> Operation | None:
        try:
            return await self.get(op_id)
        except (NotFoundError, OperationError):
            return None
