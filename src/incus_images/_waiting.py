"""What waiting means, once for every call that can wait for the server.

``create``, ``copy``, ``publish``, ``delete``, ``refresh`` and ``operations.wait`` follow one
rule:

* ``wait=True``: the call returns once the server's operation has ended and everything the
  call promises is done (a new image stored, verified, its settings and aliases applied, what
  it opened on the way closed). ``create``, ``copy`` and ``publish`` return the ``Image``;
  ``delete`` and ``refresh`` the finished ``Operation``.
* ``wait=False``: the call returns the server's ``Operation`` as soon as the server has taken
  the work on (an upload or a relay: once its bytes are sent), never after waiting for an
  operation. Whatever the call still has to do once the operation ends (verify the image,
  apply settings and aliases, cancel a download secret) is done when that ``Operation`` is
  waited for with the same client's ``operations.wait()``.
* ``timeout=`` bounds all the waiting one call does, across every operation it waits for,
  counted from the moment it starts waiting (None: as long as it takes). Requests and
  transfers keep their own bounds (the client's ``timeout``). Past it, ``IncusTimeoutError``,
  whose note says what is left behind; the operation runs on, and ``operations.wait()``
  finishes what the call had left to do.
"""

from __future__ import annotations

import time

from ._validate import seconds

__all__ = ["WaitBudget"]


class WaitBudget:
    """One deadline for all the waiting a call does: each wait gets what is left of it."""

    def __init__(self, timeout: object) -> None:
        #: The whole budget in seconds (None: no limit), as the caller gave it.
        self.timeout = seconds(timeout, "timeout", allow_zero=True)
        self._end: float | None = None

    def left(self) -> float | None:
        """Seconds left (never below zero), or None without a limit. The clock starts at
        the first question: a transfer before the first wait does not count."""
        if self.timeout is None:
            return None
        if self._end is None:
            self._end = time.monotonic() + self.timeout
        return max(0.0, self._end - time.monotonic())
