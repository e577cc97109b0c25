"""How soon an image change is heard on the event stream (issue 18): the SDK's watch(), in
both flavours, against a raw wsproto listener and ``incus monitor``, on one throwaway incusd.

    python scripts/bench_events.py [--changes 50] [--rounds 3] [--variants A,B,...]
    python scripts/bench.py --only events [--events-changes 50] [--rounds 3]

One changer (plain httpx on the daemon's unix socket, in the main thread) creates aliases of
one image, one after another, each only once the listener has heard the one before. Each
listener, opened before the first change, notes when each alias's ``image-alias-created``
arrives. A change's latency is that arrival minus the moment just before its request was sent
(incusd sends the event about when it answers the request, before or after). The listeners,
each a process of its own that stamps each arrival with ``time.perf_counter()`` (the system's
monotonic clock, shared by every process), one at a time, interleaved and rotated every round:

* ``sdk-sync``: ``Client(...).images.watch()``, iterated;
* ``sdk-async``: ``AsyncClient(...).images.watch()``, iterated in an event loop of its own;
* ``raw-wsproto``: the reference: the same websocket read with wsproto directly on a plain
  unix socket, each frame parsed with ``json.loads`` only (what the SDK adds is its transport,
  its bounds and its typed events);
* ``incus-monitor``: ``incus monitor --type lifecycle --format json``, its output read line by
  line (when the incus CLI is installed), each line stamped when read here: what a user of the
  CLI sees.

Printed per variant: the median, 90th percentile and worst latency over every change of every
round, and how many events arrived before their change's answer; and the changes' own round
trips. There is no timing target: the only verdicts are that each listener heard every change,
in order.

Needs root and incusd (scripts/install-incus.sh), and the SDK importable by this Python.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
from bench_common import HERE
from throwaway_incusd import ThrowawayIncusd, incusd_binary
from tiny_image import unified_image

VARIANTS = ["sdk-sync", "sdk-async", "raw-wsproto", "incus-monitor"]
#: What every listener listens for; its source names the alias.
ACTION = "image-alias-created"
ALIAS_SOURCE = "/1.0/images/aliases/"
#: Seconds a listener has to hear a change before the run is called broken.
HEAR_TIMEOUT = 10.0
#: Seconds a warm-up change is waited for: the listener may not be connected yet (it is a
#: new process), and then the next warm-up change tells; 60 of them at most.
WARM_UP_WAIT = 0.25
WARM_UP_CHANGES = 60
UNIX_BASE = "http://incus"


class BenchError(RuntimeError):
    """The run went wrong (a listener failed, missed a change or heard one out of order)."""


#: (arrival, perf_counter; alias name) of each heard change.
Heard = tuple[float, str]


class Listener:
    """One variant's listener, a process of its own: puts (arrival, alias) on ``heard`` for
    every alias created, from ``start()`` until ``stop()``.

    The SDK's and the raw wsproto listeners run in a child Python (``listen()``), which stamps
    each arrival with ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux: the same clock in
    every process) and prints it; in this process the changer would have held the GIL when an
    event arrived, and the figure would have measured that. ``incus monitor`` prints its
    events as JSON, stamped when this process reads the line (its output pipe counted)."""

    def __init__(self, variant: str, daemon: ThrowawayIncusd, workdir: Path) -> None:
        self.variant = variant
        self.daemon = daemon
        self.workdir = workdir
        self.heard: queue.Queue[Heard | BaseException] = queue.Queue()
        self._errors = workdir / f"listener-{variant}.err"
        self._process: subprocess.Popen[str] | None = None
        self._thread = threading.Thread(target=self._read, name=variant, daemon=True)

    def start(self) -> None:
        if self.variant == "incus-monitor":
            config = self.workdir / "incus-cli-config"
            config.mkdir(exist_ok=True)
            env = dict(os.environ, INCUS_DIR=str(self.daemon.directory), INCUS_CONF=str(config))
            argv = ["incus", "monitor", "--type", "lifecycle", "--format", "json"]
        else:
            path = os.environ.get("PYTHONPATH")
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), path])))
            call = f"listen({self.variant!r}, {self.daemon.socket_path!r})"
            program = f"import bench_events; bench_events.{call}"
            argv = [sys.executable, "-c", program]
        with self._errors.open("w") as errors:
            self._process = subprocess.Popen(
                argv, env=env, stdout=subprocess.PIPE, stderr=errors, text=True
            )
        self._thread.start()

    def stop(self) -> None:
        """End the listener's process (by its own PID)."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
            self._process.wait(HEAR_TIMEOUT)
        self._thread.join(HEAR_TIMEOUT)
        self._errors.unlink(missing_ok=True)

    def _read(self) -> None:
        assert self._process is not None
        assert self._process.stdout is not None
        with self._process.stdout as lines:
            for line in lines:
                if self.variant == "incus-monitor":
                    arrival = time.perf_counter()
                    alias = _created_alias(json.loads(line)) if line.strip() else None
                    if alias is not None:
                        self.heard.put((arrival, alias))
                else:
                    stamp, _, alias = line.rstrip("\n").partition(" ")
                    self.heard.put((float(stamp), alias))
        if self._process.wait(HEAR_TIMEOUT) not in (0, -signal.SIGTERM):
            errors = self._errors.read_text(errors="replace")[-2000:]
            self.heard.put(BenchError(f"{self.variant}: its listener failed:\n{errors}"))


def listen(variant: str, socket_path: str) -> None:
    """A listener's process: print ``<perf_counter> <alias>`` for every alias created on the
    daemon, until it is ended."""

    def heard(alias: str) -> None:
        arrival = time.perf_counter()
        sys.stdout.write(f"{arrival!r} {alias}\n")
        sys.stdout.flush()

    endpoint = f"unix://{socket_path}"
    if variant == "sdk-sync":
        _sdk_sync(endpoint, heard)
    elif variant == "sdk-async":
        asyncio.run(_sdk_async(endpoint, heard))
    else:
        _raw_wsproto(socket_path, heard)


def _sdk_sync(endpoint: str, heard: Callable[[str], None]) -> None:
    from incus_images import Client, ImageEvent

    with Client(endpoint) as client, client.images.watch() as changes:
        for change in changes:
            if isinstance(change, ImageEvent) and change.action == ACTION:
                assert change.alias is not None
                heard(change.alias)


async def _sdk_async(endpoint: str, heard: Callable[[str], None]) -> None:
    from incus_images import AsyncClient, ImageEvent

    async with AsyncClient(endpoint) as client, client.images.watch() as changes:
        async for change in changes:
            if isinstance(change, ImageEvent) and change.action == ACTION:
                assert change.alias is not None
                heard(change.alias)


def _raw_wsproto(socket_path: str, heard: Callable[[str], None]) -> None:
    """The event stream with nothing but wsproto on a unix socket, and json.loads."""
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import CloseConnection, Ping, Request, TextMessage

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(socket_path)
        ws = WSConnection(ConnectionType.CLIENT)
        sock.sendall(ws.send(Request(host="incus", target="/1.0/events?type=lifecycle")))
        parts: list[str] = []
        while data := sock.recv(65536):
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Ping):
                    sock.sendall(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    raise BenchError(f"raw-wsproto: closed ({event.code})")
                elif isinstance(event, TextMessage):
                    parts.append(event.data)
                    if event.message_finished:
                        alias = _created_alias(json.loads("".join(parts)))
                        parts.clear()
                        if alias is not None:
                            heard(alias)
        raise BenchError("raw-wsproto: the daemon closed the stream")


def _created_alias(frame: Any) -> str | None:
    """The alias an ``image-alias-created`` frame names, or None for any other frame."""
    if not isinstance(frame, dict) or frame.get("type") != "lifecycle":
        return None
    metadata = frame.get("metadata") or {}
    source = str(metadata.get("source", ""))
    if metadata.get("action") != ACTION or not source.startswith(ALIAS_SOURCE):
        return None
    return unquote(source[len(ALIAS_SOURCE) :].partition("?")[0])


class EventsBench:
    """The measurement, on a throwaway daemon of its own (started by ``__enter__``)."""

    def __init__(self, workdir: Path, parent_dir: str | None, *, changes: int) -> None:
        self.workdir = workdir
        self.changes = changes
        self._daemon = ThrowawayIncusd(parent_dir=parent_dir)
        self._raw: httpx.Client | None = None
        self._fingerprint = ""

    def __enter__(self) -> EventsBench:
        self._daemon.start()
        version = subprocess.run(
            [incusd_binary(), "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        print(f"incusd {version} (throwaway for events, pid {self._daemon.pid})")
        transport = httpx.HTTPTransport(uds=self._daemon.socket_path)
        self._raw = httpx.Client(transport=transport, base_url=UNIX_BASE, timeout=30)
        self._fingerprint = self._upload()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._raw is not None:
            self._raw.close()
        self._daemon.stop()

    def _upload(self) -> str:
        assert self._raw is not None
        answer = self._raw.post(
            "/1.0/images",
            content=unified_image(),
            headers={"Content-Type": "application/octet-stream"},
        )
        operation = answer.json()["operation"]
        waited = self._raw.get(f"{operation}/wait", params={"timeout": "60"}).json()
        return str(waited["metadata"]["metadata"]["fingerprint"])

    def _create_alias(self, name: str) -> float:
        """Create the alias; the moment just before its request was sent."""
        assert self._raw is not None
        sent = time.perf_counter()
        answer = self._raw.post(
            "/1.0/images/aliases", json={"name": name, "target": self._fingerprint}
        )
        answer.raise_for_status()
        return sent

    def _delete_alias(self, name: str) -> None:
        assert self._raw is not None
        self._raw.delete(f"/1.0/images/aliases/{name}").raise_for_status()

    def _heard(self, listener: Listener, alias: str, timeout: float = HEAR_TIMEOUT) -> float | None:
        """When the listener heard this alias's creation (None: not within the timeout);
        other arrivals before it are an ordering failure."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = listener.heard.get(timeout=left)
            except queue.Empty:
                break
            if isinstance(item, BaseException):
                raise BenchError(f"{listener.variant}: its listener failed: {item!r}") from item
            arrival, name = item
            if name == alias:
                return arrival
            if not name.startswith("warm-"):  # a late warm-up is no change of the run
                raise BenchError(f"{listener.variant}: heard {name!r} while waiting for {alias}")
        return None

    def measure(
        self, variant: str, round_number: int
    ) -> tuple[list[float], list[float], list[float], bool]:
        """One round of one listener: the latencies, the changes' own round trips (request
        sent to answer read), each event's arrival less its change's answer (negative: it
        came first), and whether every change was heard in order."""
        listener = Listener(variant, self._daemon, self.workdir)
        listener.start()
        made: list[str] = []
        try:
            # Listening once a warm-up change is heard (incus monitor connects on its own).
            for attempt in range(WARM_UP_CHANGES):
                name = f"warm-{variant}-{round_number}-{attempt}"
                self._create_alias(name)
                made.append(name)
                if self._heard(listener, name, WARM_UP_WAIT) is not None:
                    break
            else:
                raise BenchError(f"{variant}: its listener heard no warm-up change")
            latencies: list[float] = []
            round_trips: list[float] = []
            after_answer: list[float] = []
            in_order = True
            for index in range(self.changes):
                name = f"bench-{variant}-{round_number}-{index}"
                sent = self._create_alias(name)
                answered = time.perf_counter()
                round_trips.append(answered - sent)
                made.append(name)
                arrival = self._heard(listener, name)
                if arrival is None:
                    in_order = False
                    continue
                latencies.append(arrival - sent)
                after_answer.append(arrival - answered)
        finally:
            listener.stop()
            for name in made:
                self._delete_alias(name)
        return latencies, round_trips, after_answer, in_order

    def run(self, rounds: int, verdicts: list[tuple[str, bool]], variants: list[str]) -> None:
        print(
            f"\nevents: {self.changes} alias creations a round, {rounds} rounds, "
            f"listeners {', '.join(variants)}",
            flush=True,
        )
        latencies: dict[str, list[float]] = {variant: [] for variant in variants}
        round_trips: list[float] = []
        after_answer: dict[str, list[float]] = {variant: [] for variant in variants}
        complete: dict[str, bool] = dict.fromkeys(variants, True)
        for round_number in range(1, rounds + 1):
            shift = (round_number - 1) % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                seconds, trips, offsets, in_order = self.measure(variant, round_number)
                latencies[variant] += seconds
                round_trips += trips
                after_answer[variant] += offsets
                complete[variant] &= in_order and len(seconds) == self.changes
                shown = f"median {_ms(statistics.median(seconds))}" if seconds else "nothing"
                print(f"  round {round_number}: {variant:13} {shown}", flush=True)
        print(
            f"\nevents: latency from a change's request to its event, ms "
            f"({self.changes * rounds} changes each)"
        )
        print(
            f"  {'variant':13} {'median':>8} {'p90':>8} {'worst':>8}  "
            "after the answer (median)  before the answer"
        )
        for variant in variants:
            got = sorted(latencies[variant])
            if not got:
                print(f"  {variant:13} {'-':>8} {'-':>8} {'-':>8}  -")
                continue
            p90 = got[min(len(got) - 1, int(len(got) * 0.9))]
            offsets = after_answer[variant]
            early = sum(offset <= 0 for offset in offsets)
            print(
                f"  {variant:13} {_ms(statistics.median(got)):>8} {_ms(p90):>8} "
                f"{_ms(got[-1]):>8}  {_ms(statistics.median(offsets)):>25}  "
                f"{early} of {len(got)}"
            )
        print(
            f"  (the alias creation itself, request sent to answer read: median "
            f"{_ms(statistics.median(round_trips))}, worst {_ms(max(round_trips))})"
        )
        for variant in variants:
            verdicts.append((f"events {variant}: every change heard, in order", complete[variant]))


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def available_variants(chosen: list[str] | None = None) -> list[str]:
    """The variants to run: those chosen (default all), less incus-monitor without the CLI."""
    variants = [v for v in VARIANTS if chosen is None or v in chosen]
    if "incus-monitor" in variants and shutil.which("incus") is None:
        print("incus-monitor left out: the incus CLI is not installed")
        variants.remove("incus-monitor")
    return variants


@contextlib.contextmanager
def _workdir(parent: str | None) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="incus-bench-events-", dir=parent))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run_part(
    workdir: Path,
    parent_dir: str | None,
    *,
    changes: int,
    rounds: int,
    verdicts: list[tuple[str, bool]],
    variants: list[str] | None = None,
) -> None:
    """The events part of scripts/bench.py (and of this script)."""
    chosen = available_variants(variants)
    if not chosen:
        print(f"\nevents: none of the variants chosen is one of {', '.join(VARIANTS)}")
        return
    with EventsBench(workdir, parent_dir, changes=changes) as bench:
        bench.run(rounds, verdicts, chosen)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="needs root and incusd; the incus CLI for the incus-monitor variant",
    )
    parser.add_argument("--changes", type=int, default=50, help="alias creations a round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where the daemon goes (default /tmp)")
    parser.add_argument(
        "--variants", default=None, help=f"comma-separated subset of {','.join(VARIANTS)}"
    )
    args = parser.parse_args(argv)
    if args.changes < 1 or args.rounds < 1:
        parser.error("--changes and --rounds must be at least 1")
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    verdicts: list[tuple[str, bool]] = []
    with _workdir(args.workdir) as workdir:
        run_part(
            workdir,
            args.workdir,
            changes=args.changes,
            rounds=args.rounds,
            verdicts=verdicts,
            variants=args.variants.split(",") if args.variants else None,
        )
    print("\ntargets:")
    for text, ok in verdicts:
        print(f"  {'met   ' if ok else 'MISSED'} {text}")
    return 0 if all(ok for _, ok in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
