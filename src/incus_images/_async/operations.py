"""Background operations, and the waiter every waiting call goes through."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import httpx

from .._errors import IncusTimeoutError, NotFoundError, OperationError
from .._flavours import async_flavour
from .._logging import logger
from .._models import Operation
from .._protocol import (
    OPERATIONS,
    Call,
    operation_failure,
    parse_wait,
    structure,
)
from .._validate import operation_id, seconds
from ._connection import AsyncConnection

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


class AsyncOperationsAPI:
    """Operations on the server: read them, and wait for them to finish.

    Waiting long-polls ``/1.0/operations/{id}/wait`` (the server answers the moment the
    operation ends); nothing sleeps and polls.
    """

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def get(self, operation: Operation | str) -> Operation:
        """Return the current state of an operation (given as Operation, id or URL)."""
        op_id = operation_id(operation)
        call = Call(
            method="GET",
            path=f"{OPERATIONS}/{op_id}",
            action=f"get operation {op_id}",
            project_scoped=False,
        )
        envelope = await self._connection.request(call)
        return structure(call, self._connection.server, envelope.metadata, Operation)

    async def wait(self, operation: Operation | str, timeout: float | None = None) -> Operation:
        """Wait until the operation finishes and return it in its final state.

        Raises OperationError when it failed or was cancelled, IncusTimeoutError when it is
        still running after timeout seconds (None: wait as long as it takes), and
        OperationGoneError when the server no longer knows it.
        """
        op_id = operation_id(operation)
        return await self._wait(op_id, timeout, action=f"wait for operation {op_id}")

    async def _wait(
        self,
        op_id: str,
        timeout: float | None,
        *,
        action: str,
        fingerprint: str | None = None,
        watch: Callable[[Operation], object] | None = None,
    ) -> Operation:
        """Wait for op_id; failures are reported as failures to do ``action``.

        ``watch``, when given, is called with the operation's state about once a second while
        it runs (for progress); otherwise each long-poll lasts as long as it may.
        """
        timeout = seconds(timeout, "timeout", allow_zero=True)
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
            call = Call(
                method="GET",
                path=f"{OPERATIONS}/{op_id}/wait",
                params={"timeout": str(slice_seconds)},
                action=action,
                project_scoped=False,
            )
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
                raise IncusTimeoutError(
                    f"Could not {action} on {server}: operation {op_id} still runs after "
                    f"{timeout:g} s",
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
