"""Fault injection: cut, stall, interrupt and kill under the SDK's calls, and count what is left.

    python scripts/faults.py --trials 300 --kills 16    # the long run; prints the figures
    python scripts/faults.py --seed 1010 --only 17      # replay trial 17 of that seed, verbosely
    python scripts/faults.py --ops export-file,list --mid-transfer   # a plan as the CI test has

A loopback proxy (:class:`FaultProxy`) sits in front of a throwaway daemon's HTTPS port (TLS
passes through it untouched) or its unix socket, and strikes once per trial at a seeded random
byte offset in one direction: it closes the connection, resets it, stalls it, or has the call
interrupted (Ctrl-C in the blocking client, task cancellation in the async one). A second daemon
is killed (SIGKILL, by the PID of the process this script started) in the middle of uploads and
exports, and restarted on the same directory to count what it kept.

Every trial is checked against the SDK's promises:

* it ends in success or in a subclass of IncusError (KeyboardInterrupt or cancellation only
  where the trial injected them), within a deadline;
* no partial file: nothing under an export's target name that is not a complete, verified
  export, and nothing at all after a call that failed ("placed" counts complete exports a
  failed call left); no temporary file (``.*.partial``) beside it;
* no orphan image: a failed call leaves no image on the daemon unless its error says the image
  may still be stored ("stored, and said so", counted apart); a call that did not fail stored
  exactly the image asked for.

Offsets are drawn from the bytes each call moves without a fault (measured once per call and
transport: the calibration), so that cuts land in handshakes, headers, bodies and the answers
after them. The exit status is 1 when any promise was broken; every broken one is listed with
the command that replays its trial.

Only loopback addresses and unix sockets are used; the daemons are private to this run
(``throwaway_incusd``), stopped by PID, and their directories removed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import hashlib
import ipaddress
import os
import random
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from throwaway_incusd import (
    DaemonUnavailable,
    ThrowawayIncusd,
    incusd_binary,
    make_client_certificate,
    unix_request,
)
from tiny_image import split_image, unified_image

from incus_images import (
    AsyncClient,
    Client,
    Image,
    IncusError,
    LeftBehind,
    Operation,
    OperationError,
)

#: The seed of a run when none is given.
DEFAULT_SEED = 1010
#: Random payload of every test image: a few hundred KiB, so that most cuts land in bodies.
PAYLOAD = 320 * 1024
#: The payload on the daemon that is killed: larger than the socket buffers, so that the
#: daemon is still sending an export when it dies.
KILL_PAYLOAD = 8 * 1024 * 1024
#: Size of the regions at the start and end of a direction's bytes where a fifth of the offsets
#: each are drawn (handshakes and headers; the end of a body and the answers after it).
EDGE = 6 * 1024
#: A trial that has not ended by then is broken (its connections are then reset).
TRIAL_DEADLINE = 60.0
#: The client's per-step timeout: short in stall trials, so that a stall can outlast it.
TIMEOUT = 10.0
STALL_TIMEOUT = 1.0

UP = "up"  # client -> server
DOWN = "down"  # server -> client
ARROW = {UP: "client->server", DOWN: "server->client"}

#: The calls under test: create() from bytes, a path, and split (bytes + a rootfs path);
#: export() of a unified and a split image to a file and into a directory; operations.wait()
#: on an upload (it succeeds) and on a download token cancelled meanwhile (it fails); list();
#: copy() from the faulted site into a project of the same daemon, relayed by the client or
#: pulled by the daemon (through the proxy: its download is faulted too).
OPS = (
    "create-bytes",
    "create-path",
    "create-split",
    "export-file",
    "export-dir",
    "export-split-file",
    "export-split-dir",
    "wait-upload",
    "wait-token",
    "list",
    "copy-relay",
    "copy-pull",
)
#: The project a copy trial copies into (images of its own), on the site's daemon.
COPY_PROJECT = "fault-copies"
FLAVOURS = ("sync", "async")
TRANSPORTS = ("https", "unix")
#: The calls under which the second daemon is killed.
KILL_OPS = ("create-bytes", "create-split", "export-file", "export-split-file")

#: Words with which an error says that the image is, or may be, on the server after all.
SAID_STORED = (
    "may still store",
    "is still on the server",
    "still stored",
    "may be stored",
    "may have been stored",
    "was stored",
    "is stored",
)


#: What an error's ``left_behind`` says when the image is, or may be, on the server after all.
STORED_RECORDS = frozenset(
    {LeftBehind.MAY_BE_STORED, LeftBehind.STORED, LeftBehind.STILL_THERE, LeftBehind.KEPT}
)


def sha256(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def notes_and_message(error: BaseException) -> str:
    return " ".join([str(error), *getattr(error, "__notes__", [])])


def says_stored(error: BaseException) -> bool:
    """Whether the error (or a note on it) says the image is or may be on the server. An error
    that says it deleted the image again does not, unless it adds that it is still there.

    The SDK's own errors record it (``left_behind``); an interruption from outside (Ctrl-C, a
    cancellation) keeps its class and says it in a note only."""
    left = getattr(error, "left_behind", None)
    if left is not None:
        return left in STORED_RECORDS
    text = notes_and_message(error).lower().replace("nothing was stored", "")
    if "deleted again" in text and "still on the server" not in text:
        return False
    return any(words in text for words in SAID_STORED)


# --------------------------------------------------------------------------------------------
# The proxy.


@dataclasses.dataclass(frozen=True)
class Fault:
    """What strikes, once, in one trial.

    ``close``/``reset``: after ``offset`` bytes in ``direction`` (counted over all of the
    trial's connections), the connection carrying them is closed (FIN) or reset (RST).
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
    """What one trial moved through the proxy, and whether its fault struck."""

    up: int
    down: int
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


# --------------------------------------------------------------------------------------------
# A daemon that can be killed and restarted on its directory.


class FaultDaemon(ThrowawayIncusd):
    """A throwaway incusd that this script may SIGKILL and start again on the same directory."""

    def kill(self) -> None:
        """SIGKILL this object's own incusd process (never any other)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def restart(self) -> float:
        """Start a new incusd on the same INCUS_DIR once the old one is gone; return how long
        it took to answer again (its HTTPS address too, when it has one)."""
        assert self.directory is not None
        assert self.process is not None
        self.process.wait(30)
        started = time.monotonic()
        env = dict(os.environ, INCUS_DIR=str(self.directory))
        command = [
            incusd_binary(),
            "--group",
            "root",
            "--logfile",
            str(self.directory / "incusd.log"),
        ]
        with open(self.directory / "out.log", "ab") as log:
            self.process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = started + self.start_timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise DaemonUnavailable(f"incusd did not come back:\n{self._log_tail()}")
            time.sleep(0.02)
        return time.monotonic() - started

    def _answers(self) -> bool:
        try:
            status, _ = unix_request(self.socket_path, "GET", "/1.0", timeout=2)
        except OSError:
            return False
        if status != 200:
            return False
        if self.https_url is not None:
            address = urlsplit(self.https_url)
            try:
                socket.create_connection((address.hostname, address.port), timeout=1).close()
            except OSError:
                return False
        return True

    def leftovers(self, stored: set[str]) -> list[str]:
        """Files in the daemon's image store that belong to no stored image."""
        assert self.directory is not None
        names = []
        for entry in sorted(os.listdir(self.directory / "images")):
            if entry.split(".")[0] not in stored:
                names.append(entry)
        return names


# --------------------------------------------------------------------------------------------
# One daemon, its two proxies, and the images its export trials read.


class Site:
    """One daemon (serving HTTPS too, and trusting ``certificate``), the two proxies in front
    of it, the images its export trials read, and the calibration of its calls."""

    def __init__(
        self, daemon: ThrowawayIncusd, certificate: tuple[str, str], *, payload: int = PAYLOAD
    ) -> None:
        if daemon.https_url is None:
            raise ValueError("the daemon must serve HTTPS (enable_https) and trust certificate")
        self.daemon = daemon
        self.certificate = certificate
        #: The random payload of this site's images, in bytes.
        self.payload = payload
        address = urlsplit(daemon.https_url)
        assert address.hostname is not None
        assert address.port is not None
        self.proxies = {
            "https": FaultProxy((address.hostname, address.port)),
            "unix": FaultProxy(daemon.socket_path),
        }
        self._raw: httpx.Client | None = None
        self.exports: dict[str, str] = {}
        self.calibration: dict[tuple[str, str], Traffic] = {}
        #: Tasks that were running on the daemon when the current trial began.
        self.foreign_tasks: set[str] = set()
        self.payloads: dict[str, int] = {}

    @property
    def raw(self) -> httpx.Client:
        """Plain httpx on the daemon's own socket, behind the SDK's and the proxy's back."""
        if self._raw is None:
            transport = httpx.HTTPTransport(uds=self.daemon.socket_path)
            self._raw = httpx.Client(transport=transport, base_url="http://incus", timeout=60)
        return self._raw

    def reconnect(self) -> None:
        if self._raw is not None:
            self._raw.close()
            self._raw = None

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()
        self.reconnect()

    def client_options(self, transport: str, timeout: float) -> tuple[str, dict[str, Any]]:
        options: dict[str, Any] = {"timeout": timeout}
        if transport == "https":
            options["cert"] = self.certificate
            options["verify"] = self.daemon.server_certificate
        return self.proxies[transport].endpoint, options

    # -- the daemon's state ------------------------------------------------------------------

    def images(self, project: str = "default") -> set[str]:
        params = {"recursion": "0", "project": project}
        response = self.raw.get("/1.0/images", params=params)
        response.raise_for_status()
        return {url.rsplit("/", 1)[-1].split("?", 1)[0] for url in response.json()["metadata"]}

    def ensure_project(self, name: str) -> None:
        """A project with images of its own (copy trials copy into it)."""
        if self.raw.get(f"/1.0/projects/{name}").status_code == 200:
            return
        body = {"name": name, "config": {"features.images": "true", "features.profiles": "false"}}
        self.raw.post("/1.0/projects", json=body).raise_for_status()

    def tokens(self) -> list[str]:
        """The download secrets (token operations) open on the daemon."""
        response = self.raw.get("/1.0/operations", params={"recursion": "1"})
        response.raise_for_status()
        running = (response.json()["metadata"] or {}).get("running") or []
        return [op["id"] for op in running if op.get("class") == "token"]

    def running_tasks(self) -> list[str]:
        # Every project's: copy trials run the target's side in a project of its own.
        params = {"recursion": "1", "all-projects": "true"}
        response = self.raw.get("/1.0/operations", params=params)
        response.raise_for_status()
        running = (response.json()["metadata"] or {}).get("running") or []
        return [op["id"] for op in running if op.get("class") != "token"]

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until no proxied connection is open and no task runs, twice in a row (tasks
        that ran before the trial began are someone else's: they are not waited for)."""
        for proxy in self.proxies.values():
            if not proxy.wait_idle(timeout):
                proxy.abort_all()
                proxy.wait_idle(5)
        deadline = time.monotonic() + timeout
        quiet = 0
        while quiet < 2 and time.monotonic() < deadline:
            if set(self.running_tasks()) - self.foreign_tasks:
                quiet = 0
                time.sleep(0.02)
            else:
                quiet += 1
                if quiet < 2:
                    time.sleep(0.1)

    def wait_operation(self, op_id: str) -> dict[str, Any]:
        response = self.raw.get(f"/1.0/operations/{op_id}/wait", params={"timeout": "30"})
        return dict(response.json())

    def delete_image(self, fingerprint: str, project: str = "default") -> None:
        response = self.raw.delete(f"/1.0/images/{fingerprint}", params={"project": project})
        if response.status_code == 202:
            self.wait_operation(response.json()["metadata"]["id"])

    def start_upload(self, data: bytes) -> str:
        response = self.raw.post(
            "/1.0/images", content=data, headers={"Content-Type": "application/octet-stream"}
        )
        response.raise_for_status()
        return str(response.json()["metadata"]["id"])

    def store(self, data: bytes, rootfs: bytes | None = None) -> str:
        """Store an image behind the SDK's back; return its fingerprint."""
        if rootfs is None:
            op_id = self.start_upload(data)
        else:
            files = [
                ("metadata", ("meta.tar.gz", data, "application/octet-stream")),
                ("rootfs", ("rootfs.tar.gz", rootfs, "application/octet-stream")),
            ]
            response = self.raw.post("/1.0/images", files=files)
            response.raise_for_status()
            op_id = str(response.json()["metadata"]["id"])
        finished = self.wait_operation(op_id)
        if finished.get("type") == "error":
            raise RuntimeError(f"could not store an image: {finished.get('error')}")
        fingerprint = str(finished["metadata"]["metadata"]["fingerprint"])
        assert fingerprint == sha256(data, rootfs or b"")
        return fingerprint

    def ensure_exports(self) -> None:
        """The unified and the split image every export trial reads (stored again if lost)."""
        stored = self.images()
        if self.exports.get("unified") not in stored:
            self.exports["unified"] = self.store(unified_image(payload_size=self.payload))
        if self.exports.get("split") not in stored:
            metadata, rootfs = split_image(payload_size=self.payload)
            self.exports["split"] = self.store(metadata, rootfs)

    def create_token(self) -> str:
        """A download-secret operation: it runs until the secret is used or cancelled."""
        fingerprint = self.exports["unified"]
        response = self.raw.post(f"/1.0/images/{fingerprint}/secret", json={})
        response.raise_for_status()
        return str(response.json()["metadata"]["id"])

    def cancel_operation(self, op_id: str) -> None:
        with contextlib.suppress(httpx.HTTPError):
            self.raw.delete(f"/1.0/operations/{op_id}")


# --------------------------------------------------------------------------------------------
# Trials.


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    """Everything a trial does, drawn from the seed: replayable with ``--only``."""

    label: str  # "#17", or "kill #3"
    op: str
    flavour: str
    transport: str
    fault: Fault
    timeout: float = TIMEOUT
    finish_after: float = 0.2  # wait-token: when the harness cancels the token
    payload: int | None = None  # create: the image's random payload (None: the site's)

    def describe(self) -> str:
        return f"{self.label} {self.op} {self.flavour} {self.transport}: {self.fault.describe()}"


@dataclasses.dataclass
class TrialResult:
    spec: TrialSpec
    fired: bool = False
    outcome: str = "?"
    message: str = ""
    partial_files: list[str] = dataclasses.field(default_factory=list)
    #: The complete, verified export a failed call left under the target names anyway.
    placed: list[str] = dataclasses.field(default_factory=list)
    temp_files: list[str] = dataclasses.field(default_factory=list)
    orphans: list[str] = dataclasses.field(default_factory=list)
    stored_said_so: list[str] = dataclasses.field(default_factory=list)
    broken: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    traffic: Traffic | None = None
    #: Kill trials: what the restarted daemon kept.
    restarted: bool = False
    daemon_leftovers: list[str] = dataclasses.field(default_factory=list)
    image_lost: bool = False

    def line(self) -> str:
        verdict = "BROKEN: " + "; ".join(self.broken) if self.broken else "ok"
        fired = "struck" if self.fired else "did not strike"
        return (
            f"{self.spec.describe()} ({fired}) -> {self.outcome} in {self.seconds:.2f} s: {verdict}"
        )


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


class Trial:
    """One call under one fault: prepare, call, check, clean up."""

    expect_failure = False

    def __init__(self, harness: Harness, site: Site, spec: TrialSpec, directory: Path) -> None:
        self.harness = harness
        self.site = site
        self.spec = spec
        self.directory = directory
        self.before = site.images()

    #: Bytes the progress callback reports in all (sync interrupts draw their offset from it).
    progress_total = 0

    def call(self, client: Any, progress: Interrupter | None) -> Any:
        raise NotImplementedError

    def check(self, result: Any, error: BaseException | None, record: TrialResult) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Undo what the trial stored (called after check)."""

    def new_images(self, record: TrialResult, exclude: set[str]) -> None:
        """Images that appeared during the trial and nobody asked for are orphans (an image
        a failed earlier trial left to appear late is counted against that trial)."""
        for fingerprint in sorted(self.site.images() - self.before - exclude):
            if self.harness.claim_late(fingerprint):
                continue
            record.orphans.append(fingerprint)
            record.broken.append(f"image {fingerprint[:12]} appeared and nobody said so")
            self.site.delete_image(fingerprint)

    def stray_files(self, record: TrialResult, expected: set[str]) -> None:
        for name in sorted(os.listdir(self.directory)):
            if name in expected:
                continue
            if name.startswith(".") and name.endswith(".partial"):
                record.temp_files.append(name)
            else:
                record.partial_files.append(name)


class CreateTrial(Trial):
    def __init__(self, harness: Harness, site: Site, spec: TrialSpec, directory: Path) -> None:
        super().__init__(harness, site, spec, directory)
        self.sources: set[str] = set()
        self.kwargs: dict[str, Any] = {}
        payload = spec.payload or site.payload
        if spec.op == "create-split":
            metadata, rootfs = split_image(payload_size=payload)
            (directory / "rootfs.tar.gz").write_bytes(rootfs)
            self.sources.add("rootfs.tar.gz")
            self.data: Any = metadata
            self.kwargs["rootfs"] = directory / "rootfs.tar.gz"
            self.fingerprint = sha256(metadata, rootfs)
            self.progress_total = len(metadata) + len(rootfs)
        else:
            data = unified_image(payload_size=payload)
            self.data = data
            if spec.op == "create-path":
                self.data = directory / "image.tar.gz"
                self.data.write_bytes(data)
                self.sources.add("image.tar.gz")
            self.fingerprint = sha256(data)
            self.progress_total = len(data)

    def call(self, client: Any, progress: Interrupter | None) -> Any:
        return client.images.create(self.data, wait=True, progress=progress, **self.kwargs)

    def check(self, result: Any, error: BaseException | None, record: TrialResult) -> None:
        self.site.settle()
        stored = self.fingerprint in self.site.images()
        if error is None:
            if not isinstance(result, Image) or result.fingerprint != self.fingerprint:
                record.broken.append(f"create() returned {result!r:.100}, not the image")
            if not stored:
                record.broken.append("create() succeeded but the image is not stored")
        elif stored:
            self.harness.account_stored(record, self.fingerprint, error)
        else:
            self.harness.watch_late(self.fingerprint, record, error)
        self.new_images(record, {self.fingerprint})
        self.stray_files(record, self.sources)

    def cleanup(self) -> None:
        if self.fingerprint in self.site.images():
            self.site.delete_image(self.fingerprint)


class ExportTrial(Trial):
    def __init__(self, harness: Harness, site: Site, spec: TrialSpec, directory: Path) -> None:
        super().__init__(harness, site, spec, directory)
        self.split = "split" in spec.op
        self.fingerprint = site.exports["split" if self.split else "unified"]
        self.into_directory = spec.op.endswith("-dir")
        self.target = directory if self.into_directory else directory / "image.tar.gz"
        self.progress_total = site.payloads[self.fingerprint]

    def call(self, client: Any, progress: Interrupter | None) -> Any:
        return client.images.export(self.fingerprint, self.target, progress=progress)

    def check(self, result: Any, error: BaseException | None, record: TrialResult) -> None:
        expected: set[str] = set()
        if error is None:
            problem = self._verify(result)
            if problem is None:
                expected = {Path(path).name for path in result}
            else:
                record.broken.append(problem)
        self.stray_files(record, expected)
        if error is not None and record.partial_files and self._complete(record.partial_files):
            record.placed, record.partial_files = record.partial_files, []
            record.broken.append(
                f"the call failed ({type(error).__name__}), yet the complete, verified export "
                f"is in place: {record.placed}"
                + (
                    " (its error says nothing was written)"
                    if "nothing was written" in notes_and_message(error)
                    else ""
                )
            )
        if record.partial_files:
            record.broken.append(f"files left: {record.partial_files}")
        if record.temp_files:
            record.broken.append(f"temporary files left: {record.temp_files}")
        self.site.settle()
        self.new_images(record, set())

    def _complete(self, names: list[str]) -> bool:
        """Whether the files left are the whole export, verified."""
        if len(names) != 1 + self.split:
            return False
        if self.into_directory:
            names = sorted(names, key=lambda name: not name.startswith("meta-"))
            return self._verify([self.directory / name for name in names]) is None
        return self._verify([self.directory / name for name in sorted(names)]) is None

    def _verify(self, result: Any) -> str | None:
        if not isinstance(result, list) or not result:
            return f"export() returned {result!r:.100}"
        paths = [Path(path) for path in result]
        if any(path.parent != self.directory for path in paths):
            return f"export() wrote outside its directory: {paths}"
        if not self.into_directory:
            wanted = [self.target] + ([self.target.with_name("image.tar.gz.root")] * self.split)
            if paths != wanted:
                return f"export() wrote {paths}, not {wanted}"
        elif len(paths) != 1 + self.split:
            return f"export() wrote {paths}"
        digest = hashlib.sha256()
        for path in paths:
            digest.update(path.read_bytes())
        if digest.hexdigest() != self.fingerprint:
            return f"the files export() wrote hash to {digest.hexdigest()[:12]}, not the image"
        return None


class WaitTrial(Trial):
    """operations.wait() on an upload started behind the SDK's back (it succeeds), or on a
    download token the harness cancels after ``finish_after`` (it fails: OperationError)."""

    def __init__(self, harness: Harness, site: Site, spec: TrialSpec, directory: Path) -> None:
        super().__init__(harness, site, spec, directory)
        self.timer: threading.Timer | None = None
        self.fingerprint: str | None = None
        if spec.op == "wait-upload":
            self.expect_failure = False
            data = unified_image(payload_size=4096)
            self.fingerprint = sha256(data)
            self.op_id = site.start_upload(data)
        else:
            self.expect_failure = True
            self.op_id = site.create_token()
            self.timer = threading.Timer(spec.finish_after, site.cancel_operation, [self.op_id])
            self.timer.daemon = True

    def call(self, client: Any, progress: Interrupter | None) -> Any:
        if self.timer is not None:
            self.timer.start()
        return client.operations.wait(self.op_id)

    def check(self, result: Any, error: BaseException | None, record: TrialResult) -> None:
        if error is None and not (isinstance(result, Operation) and result.succeeded):
            record.broken.append(f"wait() returned {result!r:.100}, not a finished operation")
        if error is None and self.expect_failure:
            record.broken.append("wait() succeeded on a cancelled operation")
        self.site.settle()
        self.new_images(record, {self.fingerprint} if self.fingerprint else set())
        self.stray_files(record, set())

    def cleanup(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer.join()
        self.site.cancel_operation(self.op_id)
        self.site.wait_operation(self.op_id)
        if self.fingerprint is not None:
            self.site.delete_image(self.fingerprint)


class ListTrial(Trial):
    def call(self, client: Any, progress: Interrupter | None) -> Any:
        return client.images.list()

    def check(self, result: Any, error: BaseException | None, record: TrialResult) -> None:
        if error is None:
            listed = [image.fingerprint for image in result]
            if listed != sorted(self.before):
                record.broken.append(f"list() returned {len(listed)} images, not the stored ones")
        self.site.settle()
        self.new_images(record, set())
        self.stray_files(record, set())


class CopyTrial(Trial):
    """copy() of the site's unified image (private: a pull needs a download secret) from the
    faulted source into COPY_PROJECT of the same daemon, whose client talks to the daemon's
    own socket. The source keeps its image; the target holds the copy if the call succeeded,
    and otherwise nothing unless the error says it may; a download secret the pull was given
    is cancelled, or the error says it is still valid."""

    def __init__(self, harness: Harness, site: Site, spec: TrialSpec, directory: Path) -> None:
        super().__init__(harness, site, spec, directory)
        self.fingerprint = site.exports["unified"]
        self.mode = spec.op.removeprefix("copy-")
        self.progress_total = site.payloads[self.fingerprint]
        site.ensure_project(COPY_PROJECT)
        self.tokens_before = set(site.tokens())

    def call(self, client: Any, progress: Interrupter | None) -> Any:
        target_options: dict[str, Any] = {"project": COPY_PROJECT, "timeout": self.spec.timeout}
        endpoint = self.site.daemon.endpoint
        options = {"mode": self.mode, "progress": progress}
        if isinstance(client, AsyncClient):

            async def copy() -> Any:
                async with AsyncClient(endpoint, **target_options) as target:
                    return await target.images.copy(self.fingerprint, client, **options)

            return copy()
        with Client(endpoint, **target_options) as target:
            return target.images.copy(self.fingerprint, client, **options)

    def check(self, result: Any, error: BaseException | None, record: TrialResult) -> None:
        self.site.settle()
        copied = self.site.images(COPY_PROJECT)
        if self.fingerprint not in self.site.images():
            record.broken.append("the source lost its image")
        if error is None:
            if not isinstance(result, Image) or result.fingerprint != self.fingerprint:
                record.broken.append(f"copy() returned {result!r:.100}, not the image")
            if self.fingerprint not in copied:
                record.broken.append("copy() succeeded but the target has no copy")
        elif self.fingerprint in copied:
            self.harness.account_stored(record, self.fingerprint, error)
        for fingerprint in sorted(copied - {self.fingerprint}):
            record.orphans.append(fingerprint)
            record.broken.append(f"the target holds image {fingerprint[:12]} nobody asked for")
        left = sorted(set(self.site.tokens()) - self.tokens_before)
        if left and (error is None or "still valid" not in notes_and_message(error)):
            record.broken.append(f"download secrets left valid without a word: {left}")
        self.stray_files(record, set())

    def cleanup(self) -> None:
        for fingerprint in self.site.images(COPY_PROJECT):
            self.site.delete_image(fingerprint, COPY_PROJECT)
        for token in set(self.site.tokens()) - self.tokens_before:
            self.site.cancel_operation(token)


def trial_class(op: str) -> type[Trial]:
    if op.startswith("copy-"):
        return CopyTrial
    if op.startswith("create-"):
        return CreateTrial
    if op.startswith("export-"):
        return ExportTrial
    if op.startswith("wait-"):
        return WaitTrial
    return ListTrial


def body_direction(op: str) -> str | None:
    """The direction of the call's body, where interruptions strike (None: it has none)."""
    if op.startswith("create-"):
        return UP
    if op.startswith("export-") or op == "copy-relay":
        return DOWN
    return None


# --------------------------------------------------------------------------------------------
# Running a call in either flavour.


class _Canceller:
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
    canceller: _Canceller | None,
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


# --------------------------------------------------------------------------------------------
# The harness.


class Harness:
    """Runs trials against a main site (cuts, stalls, interrupts) and a kill site (SIGKILL)."""

    def __init__(
        self,
        site: Site,
        workdir: Path,
        *,
        seed: int = DEFAULT_SEED,
        kill_site: Site | None = None,
        ops: Sequence[str] = OPS,
        mid_transfer: bool = False,
        log: Callable[[str], object] | None = None,
    ) -> None:
        """``ops``: the calls the trials take in turn (each in both flavours).

        ``mid_transfer``: faults and interruptions strike only in the middle of a body, never
        at its end nor after it: uploads are cut, stalled or interrupted while being sent
        (client->server, within fewer bytes than the body holds), never once the server may
        have accepted them; async exports are cancelled only from outside the task (the
        proxy's thread) within the first half of the body, never from the progress callback
        (whose last report comes with the body's end); async uploads are not cancelled (a
        cancellation can land after the last write of the body)."""
        self.site = site
        self.kill_site = kill_site
        self.workdir = workdir
        self.seed = seed
        self.ops = tuple(ops)
        self.combos = [(op, flavour) for op in ops for flavour in FLAVOURS]
        self.mid_transfer = mid_transfer
        self.log = log or (lambda line: None)
        self.results: list[TrialResult] = []
        self.calibrations: list[TrialResult] = []
        #: Failed creates whose image was not there when checked: it may still appear.
        self._late: dict[str, tuple[TrialResult, BaseException]] = {}
        self._serial = 0
        self._sizes: dict[tuple[str, int], int] = {}

    # -- images that appear late -------------------------------------------------------------

    def account_stored(self, record: TrialResult, fingerprint: str, error: BaseException) -> None:
        if says_stored(error):
            record.stored_said_so.append(fingerprint)
        else:
            record.orphans.append(fingerprint)
            record.broken.append(
                f"the call failed ({type(error).__name__}) without saying so, but stored "
                f"image {fingerprint[:12]}"
            )

    def watch_late(self, fingerprint: str, record: TrialResult, error: BaseException) -> None:
        self._late[fingerprint] = (record, error)

    def claim_late(self, fingerprint: str) -> bool:
        """An image a failed earlier trial left to appear late: count it there, delete it."""
        entry = self._late.pop(fingerprint, None)
        if entry is None:
            return False
        record, error = entry
        self.account_stored(record, fingerprint, error)
        for site in filter(None, (self.site, self.kill_site)):
            if fingerprint in site.images():
                site.delete_image(fingerprint)
        return True

    def sweep(self) -> None:
        """At the end: the images failed trials left to appear late."""
        for site in filter(None, (self.site, self.kill_site)):
            site.settle()
            for fingerprint in site.images() & set(self._late):
                self.claim_late(fingerprint)

    # -- planning ----------------------------------------------------------------------------

    def _directory(self) -> Path:
        self._serial += 1
        directory = self.workdir / f"trial-{self._serial:05d}"
        directory.mkdir()
        return directory

    def calibrated(self, site: Site, op: str, transport: str) -> Traffic:
        """The bytes this call moves without a fault over this transport, measured once with
        the blocking client (the async one moves the same bytes, give or take a few), which
        must succeed."""
        key = (op, transport)
        if key not in site.calibration:
            spec = TrialSpec(f"calibrate {op}", op, "sync", transport, NO_FAULT)
            record = self._run(site, spec)
            self.calibrations.append(record)
            assert record.traffic is not None
            site.calibration[key] = record.traffic
        return site.calibration[key]

    def _progress_total(self, site: Site, op: str) -> int:
        if op.startswith("copy-"):
            return site.payloads[site.exports["unified"]]
        if op.startswith("export-"):
            return site.payloads[site.exports["split" if "split" in op else "unified"]]
        # A test image's size hardly varies (its payload is random, its size fixed).
        key = (op, site.payload)
        if key not in self._sizes:
            if op == "create-split":
                self._sizes[key] = len(b"".join(split_image(payload_size=site.payload)))
            else:
                self._sizes[key] = len(unified_image(payload_size=site.payload))
        return self._sizes[key]

    @staticmethod
    def _offset(rng: random.Random, total: int) -> int:
        """Anywhere in the direction's bytes; a fifth each in its first and last EDGE bytes."""
        if total <= 0:
            return 0
        region = rng.random()
        if region < 0.2:
            return rng.randrange(min(total, EDGE))
        if region < 0.4:
            return rng.randrange(max(0, total - EDGE), total)
        return rng.randrange(total)

    def _body_offset(
        self,
        rng: random.Random,
        op: str,
        traffic: Traffic,
        direction: str,
        *,
        site: Site | None = None,
    ) -> int:
        """An offset in ``direction``; while an upload is sent, if only those are wanted (fewer
        bytes than the body holds, so it is short of complete wherever it lands)."""
        if self.mid_transfer and op.startswith("create-") and direction == UP:
            return rng.randrange(self._progress_total(site or self.site, op))
        return self._offset(rng, traffic.bytes(direction))

    def plan(self, index: int) -> TrialSpec:
        """Trial ``index`` of this seed: the call and flavour in turn, the rest drawn."""
        rng = random.Random(f"{self.seed}:{index}")  # noqa: S311 - replayable, not secret
        op, flavour = self.combos[index % len(self.combos)]
        transport = rng.choice(TRANSPORTS)
        if op == "copy-pull":
            transport = "https"  # the target daemon pulls from the source's HTTPS address
        traffic = self.calibrated(self.site, op, transport)
        body = body_direction(op)
        kinds = (
            ["close", "reset", "stall"]
            + (["interrupt"] if body else [])
            + (["timed"] if op == "wait-token" else [])
        )
        weights = {"close": 3, "reset": 3, "stall": 1.5, "interrupt": 1.5, "timed": 3}
        kind = rng.choices(kinds, [weights[k] for k in kinds])[0]
        if kind == "interrupt" and self.mid_transfer and body == UP and flavour == "async":
            kind = rng.choice(("close", "reset"))
        from_progress = rng.random() < 0.5
        if kind == "interrupt" and self.mid_transfer and body == DOWN and flavour == "async":
            from_progress = False
        timeout = TIMEOUT
        finish_after = round(rng.uniform(0.05, 0.5), 3)
        if kind == "interrupt" and (flavour == "sync" or from_progress):
            total = self._progress_total(self.site, op)
            fault = Fault("interrupt", None, rng.randrange(1, total + 1))
        elif kind == "interrupt":
            assert body is not None
            if self.mid_transfer and body == DOWN:
                offset = rng.randrange(traffic.bytes(DOWN) // 2)
            else:
                offset = self._body_offset(rng, op, traffic, body)
            fault = Fault("interrupt", body, offset)
        elif kind == "timed":
            fault = Fault("timed", seconds=round(rng.uniform(0.01, finish_after + 0.1), 3))
        else:
            direction = rng.choice((UP, DOWN))
            if self.mid_transfer and op.startswith("create-"):
                direction = UP
            offset = self._body_offset(rng, op, traffic, direction)
            seconds = round(rng.uniform(0.2, 1.6), 2) if kind == "stall" else 0.0
            if kind == "stall":
                timeout = STALL_TIMEOUT
            fault = Fault(kind, direction, offset, seconds)
        return TrialSpec(f"#{index}", op, flavour, transport, fault, timeout, finish_after)

    def plan_kill(self, index: int) -> TrialSpec:
        assert self.kill_site is not None
        rng = random.Random(f"{self.seed}:kill:{index}")  # noqa: S311
        op = KILL_OPS[index % len(KILL_OPS)]
        # Each call in both flavours, every len(KILL_OPS) trials in the other one.
        flavour = FLAVOURS[(index + index // len(KILL_OPS)) % len(FLAVOURS)]
        transport = rng.choice(TRANSPORTS)
        traffic = self.calibrated(self.kill_site, op, transport)
        direction = body_direction(op)
        assert direction is not None
        offset = self._body_offset(rng, op, traffic, direction, site=self.kill_site)
        fault = Fault("kill", direction, offset)
        return TrialSpec(f"kill #{index}", op, flavour, transport, fault)

    # -- running -----------------------------------------------------------------------------

    def run_trial(self, index: int) -> TrialResult:
        return self.run_spec(self.site, self.plan(index))

    def run_kill(self, index: int) -> TrialResult:
        assert self.kill_site is not None
        return self.run_spec(self.kill_site, self.plan_kill(index))

    def run_spec(self, site: Site, spec: TrialSpec) -> TrialResult:
        """Run one trial as specified (on ``site``), check it, and record it."""
        record = self._run(site, spec)
        self.results.append(record)
        self.log(record.line())
        return record

    def _run(self, site: Site, spec: TrialSpec) -> TrialResult:
        site.ensure_exports()
        for fingerprint in site.exports.values():
            if fingerprint not in site.payloads:
                response = site.raw.get(f"/1.0/images/{fingerprint}")
                site.payloads[fingerprint] = int(response.json()["metadata"]["size"])
        site.foreign_tasks = set(site.running_tasks())
        directory = self._directory()
        record = TrialResult(spec)
        trial = trial_class(spec.op)(self, site, spec, directory)
        proxy = site.proxies[spec.transport]
        fault = spec.fault
        interrupts = fault.kind == "interrupt"
        canceller = _Canceller() if interrupts and spec.flavour == "async" else None
        interrupter = (
            Interrupter(fault.offset or 0, canceller)
            if interrupts and fault.direction is None
            else None
        )
        on_fire: Callable[[], object] | None = canceller if interrupter is None else None
        if fault.kind == "kill":
            assert isinstance(site.daemon, FaultDaemon)
            on_fire = site.daemon.kill
        endpoint, options = site.client_options(spec.transport, spec.timeout)
        hung = threading.Event()

        def deadline() -> None:
            hung.set()
            proxy.abort_all()

        watchdog = threading.Timer(TRIAL_DEADLINE, deadline)
        watchdog.daemon = True
        started = time.monotonic()
        proxy.arm(fault if interrupter is None else NO_FAULT, on_fire)
        watchdog.start()
        try:
            result, error = invoke(
                spec.flavour, endpoint, options, lambda c: trial.call(c, interrupter), canceller
            )
        finally:
            watchdog.cancel()
            record.seconds = time.monotonic() - started
            record.traffic = proxy.disarm()
        record.fired = record.traffic.fired or bool(interrupter and interrupter.raised)
        if isinstance(error, KeyboardInterrupt) and not (interrupter and interrupter.raised):
            raise error  # a real Ctrl-C
        if hung.is_set():
            record.broken.append(f"the call did not end within {TRIAL_DEADLINE:g} s")
        self._outcome(record, trial, result, error, interrupter, canceller)
        if fault.kind == "kill":
            self._restart(site, record)
        try:
            trial.check(result, error, record)
        finally:
            trial.cleanup()
        if isinstance(site.daemon, FaultDaemon) and fault.kind == "kill":
            record.daemon_leftovers = site.daemon.leftovers(site.images())
        if not record.broken:
            shutil.rmtree(directory, ignore_errors=True)
        return record

    def _outcome(
        self,
        record: TrialResult,
        trial: Trial,
        result: Any,
        error: BaseException | None,
        interrupter: Interrupter | None,
        canceller: _Canceller | None,
    ) -> None:
        if error is None:
            record.outcome = "success"
        else:
            record.outcome = type(error).__name__
            record.message = notes_and_message(error)
            injected = (isinstance(error, KeyboardInterrupt) and interrupter is not None) or (
                isinstance(error, asyncio.CancelledError) and canceller is not None
            )
            if not isinstance(error, IncusError) and not injected:
                record.broken.append(f"untyped error {type(error).__name__}: {error!s:.300}")
        if record.fired:
            return
        # The fault did not strike: the call must end as it does without one.
        expected_error = isinstance(trial, WaitTrial) and trial.expect_failure
        if expected_error and not isinstance(error, OperationError):
            record.broken.append(f"without a fault, wait() ended in {record.outcome}")
        if not expected_error and error is not None:
            record.broken.append(
                f"without a fault, the call failed: {record.outcome}: {record.message:.300}"
            )

    def _restart(self, site: Site, record: TrialResult) -> None:
        daemon = site.daemon
        assert isinstance(daemon, FaultDaemon)
        if not record.fired and daemon.alive:
            return
        daemon.restart()  # waits for the killed process first
        site.reconnect()
        record.restarted = True
        if not set(site.exports.values()) <= site.images():
            record.image_lost = True

    def run(self, trials: int, kills: int = 0) -> list[TrialResult]:
        for index in range(trials):
            self.run_trial(index)
        for index in range(kills):
            self.run_kill(index)
        self.sweep()
        return self.results

    def replay(self, record: TrialResult) -> str | None:
        """The command that runs this trial again (None for a trial specified by hand)."""
        label = record.spec.label
        if label.startswith("#"):
            command = f"--only {label.removeprefix('#')}"
            if self.ops != OPS:
                command += f" --ops {','.join(self.ops)}"
        elif label.startswith("kill #"):
            command = f"--only-kill {label.removeprefix('kill #')}"
        else:
            return None
        if self.mid_transfer:
            command += " --mid-transfer"
        return f"python scripts/faults.py --seed {self.seed} {command}"

    @property
    def broken(self) -> list[TrialResult]:
        return [record for record in self.calibrations + self.results if record.broken]


# --------------------------------------------------------------------------------------------
# Setting up the daemons, for the command line (the tests bring their own).


@contextlib.contextmanager
def daemons(kills: bool) -> Iterator[tuple[Site, Site | None, Path]]:
    """A daemon over HTTPS trusting a fresh client certificate (and a second one to kill),
    each with its proxies; everything is stopped and removed afterwards."""
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="faults-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        certificate = make_client_certificate(workdir, "faults")
        sites: list[Site] = []
        for _ in range(2 if kills else 1):
            daemon = FaultDaemon()
            stack.callback(daemon.stop)
            daemon.start()
            daemon.enable_https()
            daemon.trust(certificate[0])
            site = Site(daemon, certificate, payload=KILL_PAYLOAD if sites else PAYLOAD)
            stack.callback(site.close)
            sites.append(site)
        trials = workdir / "trials"
        trials.mkdir()
        yield sites[0], sites[1] if kills else None, trials


# --------------------------------------------------------------------------------------------
# Figures.


def _table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header))]
    lines = []
    for number, row in enumerate(cells):
        lines.append(
            "  ".join(
                cell.ljust(width) if column == 0 or column == 1 else cell.rjust(width)
                for column, (cell, width) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )
        if number == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _figures(records: list[TrialResult]) -> list[Any]:
    return [
        len(records),
        sum(record.fired for record in records),
        sum(record.outcome == "success" for record in records),
        sum(record.outcome != "success" for record in records),
        *_leftovers(records),
        sum(bool(record.broken) for record in records),
    ]


def _leftovers(records: list[TrialResult]) -> list[int]:
    return [
        sum(len(record.partial_files) for record in records),
        sum(len(record.placed) for record in records),
        sum(len(record.temp_files) for record in records),
        sum(len(record.orphans) for record in records),
        sum(len(record.stored_said_so) for record in records),
    ]


LEFTOVERS = ["files", "placed", "temp", "orphans", "stored+said"]
FIGURES = ["trials", "faults", "ok", "errors", *LEFTOVERS, "broken"]
LEGEND = (
    "faults: trials whose fault struck; files: partial files left under export targets; "
    "placed: complete exports left by a call that failed; temp: .*.partial files left; "
    "orphans: images left by a failed call that did not say so; stored+said: images left "
    "by a failed upload whose error said the image may be stored; broken: trials that broke "
    "a promise"
)


def report(harness: Harness, elapsed: float) -> str:
    main = [record for record in harness.results if not record.spec.label.startswith("kill")]
    kills = [record for record in harness.results if record.spec.label.startswith("kill")]
    out = []
    out.append(
        f"incus_images fault injection: seed {harness.seed}, {len(main)} trials, "
        f"{len(kills)} daemon kills, {len(harness.calibrations)} unfaulted calibration calls, "
        f"{elapsed:.1f} s"
    )
    out.append("")
    rows = []
    for op in OPS:
        for flavour in FLAVOURS:
            group = [r for r in main if r.spec.op == op and r.spec.flavour == flavour]
            if group:
                rows.append([op, flavour, *_figures(group)])
    rows.append(["all", "", *_figures(main)])
    out.append("Trials by call and flavour")
    out.append(_table(["call", "flavour", *FIGURES], rows))
    out.append(textwrap.fill(LEGEND, 100, initial_indent="  ", subsequent_indent="  "))

    out.append("")
    out.append("Outcomes by type")
    outcome_names = sorted({r.outcome for r in main}, key=lambda n: (n != "success", n))
    families = ["create", "export", "wait", "list", "copy"]
    rows = []
    for name in outcome_names:
        counts = [
            sum(r.outcome == name and r.spec.op.startswith(family) for r in main)
            for family in families
        ]
        rows.append([name, "", *counts, sum(counts)])
    out.append(_table(["outcome", "", *families, "all"], rows))

    out.append("")
    out.append("Faults (struck / planned)")
    kinds = ["close", "reset", "stall", "interrupt", "timed"]
    rows = []
    for transport in TRANSPORTS:
        row: list[Any] = [transport, ""]
        for kind in kinds:
            group = [r for r in main if r.spec.transport == transport and r.spec.fault.kind == kind]
            row.append(f"{sum(r.fired for r in group)}/{len(group)}")
        rows.append(row)
    for direction in (UP, DOWN):
        row = [ARROW[direction], ""]
        for kind in kinds:
            group = [
                r for r in main if r.spec.fault.direction == direction and r.spec.fault.kind == kind
            ]
            row.append(f"{sum(r.fired for r in group)}/{len(group)}")
        rows.append(row)
    out.append(_table(["", "", *kinds], rows))

    if kills:
        out.append("")
        out.append("Daemon killed mid-call (SIGKILL), restarted on its directory")
        rows = []
        for op in KILL_OPS:
            group = [r for r in kills if r.spec.op == op]
            if not group:
                continue
            outcomes = collections.Counter(r.outcome for r in group)
            rows.append(
                [
                    op,
                    ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items())),
                    len(group),
                    sum(r.restarted for r in group),
                    *_leftovers(group),
                    sum(r.image_lost for r in group),
                    sum(len(r.daemon_leftovers) for r in group),
                    sum(bool(r.broken) for r in group),
                ]
            )
        header = [
            "call", "outcomes", "trials", "killed", *LEFTOVERS,
            "image lost", "daemon leftovers", "broken",
        ]  # fmt: skip
        out.append(_table(header, rows))
        leftovers = sorted({name for r in kills for name in r.daemon_leftovers})
        if leftovers:
            out.append(f"  files the restarted daemon kept in images/: {leftovers[:6]}")
        out.append(
            "  image lost: the image an export read was gone after the restart; daemon "
            "leftovers: files in the daemon's images/ that belong to no image"
        )

    broken = harness.broken
    records = harness.calibrations + harness.results
    untyped = sum(any(b.startswith("untyped") for b in r.broken) for r in records)
    files, placed, temp, orphans, said = _leftovers(records)
    out.append("")
    out.append(
        f"In all {len(records)} calls (calibration included): {untyped} untyped errors, "
        f"{files} partial files, {placed} complete exports left by failed calls, {temp} "
        f"temporary files, {orphans} orphan images ({said} stored, and said so)."
    )
    if not broken:
        out.append("Promises: all kept.")
    else:
        out.append(f"BROKEN PROMISES: {len(broken)} trials")
        for record in broken:
            out.append(f"  {record.line()}")
            if record.message:
                out.append(f"      message: {record.message[:400]}")
            command = harness.replay(record)
            if command:
                out.append(f"      replay: {command}")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# The command line.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=300, help="trials under the proxy")
    parser.add_argument("--kills", type=int, default=16, help="trials that kill the daemon")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--only", type=int, help="run only this trial of the seed (replay)")
    parser.add_argument("--only-kill", type=int, help="run only this kill trial of the seed")
    parser.add_argument(
        "--ops", help=f"the calls to take in turn, comma-separated (default: {','.join(OPS)})"
    )
    parser.add_argument(
        "--mid-transfer",
        action="store_true",
        help="strike only in the middle of bodies (as the CI test does; see Harness)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every trial")
    args = parser.parse_args(argv)
    ops = tuple(args.ops.split(",")) if args.ops else OPS
    if not set(ops) <= set(OPS):
        parser.error(f"--ops: unknown calls {sorted(set(ops) - set(OPS))}")
    replay = args.only is not None or args.only_kill is not None
    verbose = args.verbose or replay
    print(f"seed {args.seed}", flush=True)
    started = time.monotonic()
    try:
        kills = args.only_kill is not None or (args.only is None and args.kills > 0)
        with daemons(kills=kills) as (site, kill_site, work):
            harness = Harness(
                site,
                work,
                seed=args.seed,
                kill_site=kill_site,
                ops=ops,
                mid_transfer=args.mid_transfer,
                log=(lambda line: print(line, flush=True)) if verbose else None,
            )
            if args.only is not None:
                harness.run_trial(args.only)
                harness.sweep()
            elif args.only_kill is not None:
                harness.run_kill(args.only_kill)
                harness.sweep()
            else:
                harness.run(args.trials, args.kills)
            print(report(harness, time.monotonic() - started))
            return 1 if harness.broken else 0
    except DaemonUnavailable as exc:
        print(f"no throwaway incusd: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
