"""Progress reports of a transfer, paced so that a callback costs nothing noticeable."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Progress", "ProgressCallback"]

#: progress(bytes_done, bytes_total): bytes_total is None when the size is not known.
ProgressCallback = Callable[[int, int | None], object]


class Progress:
    """Reports bytes moved to a callback: first (0, total), then at most every ``interval``
    seconds, and always once more at the end, so a bar ends exactly at its total."""

    def __init__(
        self, callback: ProgressCallback | None, total: int | None, interval: float = 0.1
    ) -> None:
        self.callback = callback
        self.total = total
        self.done = 0
        self._interval = interval
        self._reported = -1
        self._last_call = 0.0

    def start(self) -> None:
        self._report()

    def advance(self, count: int) -> None:
        self.done += count
        if self.callback is not None and time.monotonic() - self._last_call >= self._interval:
            self._report()

    def finish(self) -> None:
        if self._reported != self.done:
            self._report()

    def _report(self) -> None:
        if self.callback is not None:
            self._last_call = time.monotonic()
            self._reported = self.done
            self.callback(self.done, self.total)
