"""Progress reports of a transfer, paced so that a callback costs nothing noticeable."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

__all__ = ["Progress", "ProgressCallback", "daemon_progress"]

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


_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)%")
_AMOUNT = re.compile(r"(?:^|: )(\d{1,15}(?:\.\d{1,6})?)(B|kB|MB|GB|TB)\b")
_UNITS = {"B": 1, "kB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}


def daemon_progress(metadata: object, total: int | None) -> int | None:
    """Bytes done, read from what a daemon keeps in a running operation's metadata.

    incusd writes a ``progress`` map (``processed`` bytes, ``percent``) for most work, such as
    packing a published image; a download writes ``download_progress`` text instead, as
    ``rootfs: 42% (1.09MB/s)`` when it knows the size and ``163.64MB (163.63MB/s)`` (decimal
    units) when it does not. None when there is nothing to read.
    """
    if not isinstance(metadata, dict):
        return None
    structured = metadata.get("progress")
    if isinstance(structured, dict):
        processed = structured.get("processed")
        if isinstance(processed, str) and processed.isdigit() and len(processed) < 20:
            return min(total, int(processed)) if total else int(processed)
        percent = structured.get("percent")
        if total and isinstance(percent, str) and percent.isdigit() and len(percent) < 4:
            return min(total, total * int(percent) // 100)
    text = metadata.get("download_progress")
    if not isinstance(text, str):
        return None
    text = text[:200]
    if total and (match := _PERCENT.search(text)):
        return min(total, int(total * float(match.group(1)) / 100))
    if match := _AMOUNT.search(text):
        done = int(float(match.group(1)) * _UNITS[match.group(2)])
        return min(total, done) if total else done
    return None
