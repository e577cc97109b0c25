"""A loopback proxy that cuts, resets, stalls or interrupts a connection after N bytes."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import selectors
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable

from .fault import DOWN, NO_FAULT, UP, Fault, Traffic


class _Side:
    """One direction of a proxied connection."""

    def __init__(self, direction: str, src: socket.socket, dst: socket.socket) -> None:
        self.direction = direction
        self.src = src
        self.dst = dst
        self.pending = bytearray()  # read from src, not yet written to dst
        self.held = b""  # stalled bytes
        self.resume_at: float | None = None
        self.eof = False
        self.shut = False
        self.cut_after_flush: str | None = None

    @property
    def wants_read(self) -> bool:
        return (
            not self.eof
            and not self.pending
            and self.resume_at is None
            and self.cut_after_flush is None
        )


class _Pair:
    def __init__(self, client: socket.socket, server: socket.socket) -> None:
        self.client = client
        self.server = server
        self.sides = (_Side(UP, client, server), _Side(DOWN, server, client))
        self.closed = False

    @property
    def done(self) -> bool:
        return all(side.eof and side.shut for side in self.sides)


class FaultProxy:
    """A TCP or unix-socket proxy on loopback that injects one :class:`Fault` per trial.

    ``upstream`` is ``(host, port)`` with a loopback host, or the path of a unix socket. The
    proxy listens on 127.0.0.1 (a free port) or on a unix socket in a private directory;
    ``endpoint`` is what a client connects to. One thread runs a selector loop over every socket.
    """

    CHUNK = 64 * 1024

    def __init__(self, upstream: tuple[str, int] | str) -> None:
        self._directory: str | None = None
        if isinstance(upstream, tuple):
            host = upstream[0]
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError(f"the proxy only forwards to loopback addresses, not {host}")
            self._upstream_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(("127.0.0.1", 0))
            self.endpoint = f"https://127.0.0.1:{self._listener.getsockname()[1]}"
        else:
            self._upstream_family = socket.AF_UNIX
            # A short private directory: unix socket paths must stay under 108 bytes.
            self._directory = tempfile.mkdtemp(prefix="fault-proxy-")
            path = os.path.join(self._directory, "proxy.sock")
            self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._listener.bind(path)
            self.endpoint = f"unix://{path}"
        self._upstream: tuple[str, int] | str = upstream
        self._listener.listen(64)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._fault = NO_FAULT
        self._on_fire: Callable[[], object] | None = None
        self._fired = False
        self._timed_at: float | None = None
        self._count = {UP: 0, DOWN: 0}
        self._turns: list[tuple[str, int]] = []
        self._connections = 0
        self._abort = False
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="fault-proxy", daemon=True)
        self._thread.start()

    # -- control, from other threads -------------------------------------------------------

    def arm(self, fault: Fault, on_fire: Callable[[], object] | None = None) -> None:
        """Start a trial: count from zero, and strike with ``fault`` once."""
        with self._lock:
            self._fault = fault
            self._on_fire = on_fire
            self._fired = False
            self._count = {UP: 0, DOWN: 0}
            self._turns = []
            self._connections = 0
            self._timed_at = time.monotonic() + fault.seconds if fault.kind == "timed" else None
        self._wake()

    def disarm(self) -> Traffic:
        """End the trial; return what it moved."""
        with self._lock:
            traffic = Traffic(
                self._count[UP],
                self._count[DOWN],
                self._connections,
                self._fired,
                tuple(self._turns),
            )
            self._fault = NO_FAULT
            self._on_fire = None
            self._timed_at = None
        return traffic

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until no connection is open (a stalled one may still be delivering)."""
        deadline = time.monotonic() + timeout
        while self.open_connections:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def abort_all(self) -> None:
        """Reset every open connection."""
        with self._lock:
            self._abort = True
        self._wake()

    def close(self) -> None:
        with self._lock:
            self._stopping = True
        self._wake()
        self._thread.join(10)
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"!")

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._selector.register(self._listener, selectors.EVENT_READ, None)
            self._selector.register(self._wake_r, selectors.EVENT_READ, None)
            while True:
                with self._lock:
                    if self._stopping:
                        break
                    abort, self._abort = self._abort, False
                if abort:
                    for pair in list(self._pairs):
                        self._cut(pair, "reset")
                self._timers()
                self._interest()
                for key, events in self._selector.select(self._next_timer()):
                    self._event(key, events)
        finally:
            for pair in list(self._pairs):
                self._cut(pair, "reset")
            self._selector.close()
            self._listener.close()

    def _next_timer(self) -> float:
        now = time.monotonic()
        times = [
            side.resume_at
            for pair in self._pairs
            for side in pair.sides
            if side.resume_at is not None
        ]
        with self._lock:
            if self._timed_at is not None and not self._fired:
                times.append(self._timed_at)
        return max(0.0, min([now + 1.0, *times]) - now)

    def _timers(self) -> None:
        now = time.monotonic()
        for pair in list(self._pairs):
            for side in pair.sides:
                if side.resume_at is not None and now >= side.resume_at:
                    side.resume_at = None
                    with self._lock:
                        self._count[side.direction] += len(side.held)
                    side.pending += side.held
                    side.held = b""
        with self._lock:
            strike = self._timed_at is not None and now >= self._timed_at and not self._fired
            if strike:
                self._timed_at = None
                self._fired = bool(self._pairs)
        if strike:
            for pair in list(self._pairs):
                self._cut(pair, "reset")

    def _interest(self) -> None:
        wanted: dict[socket.socket, int] = {}
        for pair in self._pairs:
            for side in pair.sides:
                if side.wants_read:
                    wanted[side.src] = wanted.get(side.src, 0) | selectors.EVENT_READ
                if side.pending:
                    wanted[side.dst] = wanted.get(side.dst, 0) | selectors.EVENT_WRITE
        for pair in self._pairs:
            for sock in (pair.client, pair.server):
                events = wanted.get(sock, 0)
                try:
                    key = self._selector.get_key(sock)
                except KeyError:
                    if events:
                        self._selector.register(sock, events, pair)
                    continue
                if not events:
                    self._selector.unregister(sock)
                elif key.events != events:
                    self._selector.modify(sock, events, pair)

    def _event(self, key: selectors.SelectorKey, events: int) -> None:
        sock = key.fileobj
        if sock is self._wake_r:
            with contextlib.suppress(OSError):
                self._wake_r.recv(4096)
            return
        if sock is self._listener:
            self._accept()
            return
        pair: _Pair = key.data
        if pair.closed:
            return
        try:
            for side in pair.sides:
                if events & selectors.EVENT_READ and side.src is sock and side.wants_read:
                    self._read(pair, side)
                if pair.closed:
                    return
                if events & selectors.EVENT_WRITE and side.dst is sock and side.pending:
                    self._write(pair, side)
                if pair.closed:
                    return
        except OSError:
            self._cut(pair, "reset")
            return
        if pair.done:
            self._close(pair)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        server = socket.socket(self._upstream_family, socket.SOCK_STREAM)
        try:
            server.settimeout(5)
            server.connect(self._upstream)
        except OSError:
            server.close()
            client.close()
            return
        for sock in (client, server):
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = _Pair(client, server)
        with self._lock:
            self._pairs.append(pair)
            self._connections += 1

    def _read(self, pair: _Pair, side: _Side) -> None:
        try:
            data = side.src.recv(self.CHUNK)
        except BlockingIOError:
            return
        if not data:
            side.eof = True
            self._flushed(pair, side)
            return
        self._take(pair, side, data)

    def _take(self, pair: _Pair, side: _Side, data: bytes) -> None:
        with self._lock:
            fault = self._fault
            start = self._count[side.direction]
            if not self._turns or self._turns[-1][0] != side.direction:
                self._turns.append((side.direction, start))
            strikes = (
                not self._fired
                and fault.direction == side.direction
                and fault.offset is not None
                and start + len(data) > fault.offset
            )
            if not strikes:
                self._count[side.direction] += len(data)
            else:
                self._fired = True
                assert fault.offset is not None
                split = max(0, fault.offset - start)
                self._count[side.direction] += split
                if fault.kind in ("interrupt", "kill"):
                    self._count[side.direction] += len(data) - split
            on_fire = self._on_fire
        if not strikes:
            side.pending += data
            return
        head, tail = data[:split], data[split:]
        side.pending += head
        if fault.kind in ("close", "reset"):
            side.cut_after_flush = fault.kind
            if not side.pending:
                self._cut(pair, fault.kind)
        elif fault.kind == "stall":
            side.held = tail
            side.resume_at = time.monotonic() + fault.seconds
        else:
            if on_fire is not None:
                on_fire()
            side.pending += tail

    def _write(self, pair: _Pair, side: _Side) -> None:
        try:
            sent = side.dst.send(side.pending)
        except BlockingIOError:
            return
        del side.pending[:sent]
        if not side.pending:
            if side.cut_after_flush is not None:
                self._cut(pair, side.cut_after_flush)
            else:
                self._flushed(pair, side)

    def _flushed(self, pair: _Pair, side: _Side) -> None:
        if side.eof and not side.pending and not side.held and not side.shut:
            side.shut = True
            with contextlib.suppress(OSError):
                side.dst.shutdown(socket.SHUT_WR)

    def _cut(self, pair: _Pair, how: str) -> None:
        if how == "reset":
            for sock in (pair.client, pair.server):
                if sock.family != socket.AF_UNIX:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
        else:
            for sock in (pair.client, pair.server):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._close(pair)

    def _close(self, pair: _Pair) -> None:
        if pair.closed:
            return
        pair.closed = True
        for sock in (pair.client, pair.server):
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()
        with self._lock:
            self._pairs.remove(pair)
