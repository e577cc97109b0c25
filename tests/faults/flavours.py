"""A call in either flavour, and the two ways a trial interrupts it: Ctrl-C in the blocking
client, ``task.cancel()`` of the call's task in the async one."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from incus_images import AsyncClient, Client

from .fault import FINAL_REPORT


class Interrupter:
    """A progress callback that interrupts the call once ``at`` bytes were reported (``at``
    = FINAL_REPORT: at the report of the last byte): it raises KeyboardInterrupt (blocking
    client), or cancels the call's task (``cancel``: async)."""

    def __init__(self, at: int, cancel: Callable[[], object] | None = None) -> None:
        self.at = at
        self.cancel = cancel
        self.raised = False

    def __call__(self, done: int, total: int | None) -> None:
        at = total if self.at == FINAL_REPORT else self.at
        if not self.raised and at is not None and done >= at:
            self.raised = True
            if self.cancel is None:
                raise KeyboardInterrupt
            self.cancel()


class Canceller:
    """Cancels the async trial's task (``task.cancel()``, as asyncio code does), from the task
    itself (a progress callback) or from another thread (the proxy's, when the fault strikes).
    """

    def __init__(self) -> None:
        self.cancel: Callable[[], object] | None = None

    def __call__(self) -> None:
        if self.cancel is not None:
            self.cancel()


def invoke(
    flavour: str,
    endpoint: str,
    options: dict[str, Any],
    call: Callable[[Any], Any],
    canceller: Canceller | None,
) -> tuple[Any, BaseException | None]:
    """Make a fresh client of the flavour, run ``call(client)``, close it; return (result,
    error). The error is the exception the call raised (the original one, notes and all)."""
    if flavour == "sync":
        try:
            with Client(endpoint, **options) as client:
                return call(client), None
        except BaseException as exc:
            return None, exc
    raised: list[BaseException] = []
    # asyncio marks a task cancelled when a cancel() requested during its last step (from the
    # progress callback, say) finds its coroutine returning: the call itself succeeded.
    returned: list[Any] = []

    async def main() -> Any:
        async with AsyncClient(endpoint, **options) as client:

            async def guarded() -> Any:
                try:
                    result = await call(client)
                except BaseException as exc:
                    raised.append(exc)
                    raise
                returned.append(result)
                return result

            task = asyncio.create_task(guarded())
            if canceller is not None:
                loop = asyncio.get_running_loop()
                loop_thread = threading.get_ident()

                def cancel() -> None:
                    if threading.get_ident() == loop_thread:
                        task.cancel()
                    else:
                        loop.call_soon_threadsafe(task.cancel)

                canceller.cancel = cancel
            try:
                return await task
            finally:
                if canceller is not None:
                    canceller.cancel = None

    try:
        return asyncio.run(main()), None
    except BaseException as exc:
        if returned and isinstance(exc, asyncio.CancelledError):
            return returned[0], None
        return None, raised[0] if raised else exc
