"""What strikes in a trial, and what the trial moved: the vocabulary the injectors share."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

UP = "up"  # client -> server
DOWN = "down"  # server -> client
ARROW = {UP: "client->server", DOWN: "server->client"}


@dataclasses.dataclass(frozen=True)
class Fault:
    """What strikes, once, in one trial.

    ``close``/``reset``: after ``offset`` bytes in ``direction`` (counted over all of the
    trial's connections), the connection carrying them is closed (FIN) or reset (RST); in
    process, the transport raises what httpx raises when that happens.
    ``stall``: those bytes go on only ``seconds`` later. ``interrupt``/``kill``: the trial's
    callback runs there (the bytes flow on). ``timed``: every open connection is reset
    ``seconds`` after the call starts. ``interrupt`` without a direction: the progress
    callback interrupts the call once ``offset`` bytes were reported (KeyboardInterrupt in the
    blocking client, ``task.cancel()`` of the call's task in the async one).
    """

    kind: str
    direction: str | None = None
    offset: int | None = None
    seconds: float = 0.0

    def describe(self) -> str:
        if self.kind == "none":
            return "no fault"
        if self.kind == "timed":
            return f"reset {self.seconds:.3f} s into the call"
        if self.direction is None:
            at = "the last" if self.offset == FINAL_REPORT else f"{self.offset}"
            return f"interrupt at progress byte {at} (Ctrl-C; async: task.cancel())"
        where = f"after {self.offset} B {ARROW[self.direction]}"
        if self.kind == "stall":
            return f"stall {self.seconds:.2f} s {where}"
        if self.kind == "interrupt":
            return f"cancel the task {where}"
        if self.kind == "kill":
            return f"SIGKILL the daemon {where}"
        return f"{self.kind} {where}"


NO_FAULT = Fault("none")
#: The offset of an interruption at the progress report of the last byte.
FINAL_REPORT = -1


@dataclasses.dataclass(frozen=True)
class Traffic:
    """What one trial moved through its injector, and whether its fault struck."""

    up: int
    down: int
    #: Connections the proxy accepted; requests, in process (httpx keeps its connections).
    connections: int
    fired: bool
    #: (direction, offset in that direction) wherever the bytes changed direction: on a unix
    #: socket, one entry per request and per answer.
    turns: tuple[tuple[str, int], ...] = ()

    def bytes(self, direction: str) -> int:
        return self.up if direction == UP else self.down

    def starts(self, direction: str) -> list[int]:
        """Where each run of bytes in ``direction`` begins (offsets in that direction)."""
        return [offset for turn, offset in self.turns if turn == direction]


class Injector(Protocol):
    """Where a trial's fault is injected: the proxy on a socket, or a transport in process."""

    def arm(self, fault: Fault, on_fire: Callable[[], object] | None = None) -> None:
        """Start a trial: count from zero, and strike with ``fault`` once (``on_fire`` runs
        where an ``interrupt`` or ``kill`` strikes)."""

    def disarm(self) -> Traffic:
        """End the trial; return what it moved."""

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until the trial's connections are closed."""

    def abort_all(self) -> None:
        """Cut everything the trial still has open (a trial past its deadline)."""

    def close(self) -> None: ...
