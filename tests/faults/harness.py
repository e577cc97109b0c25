"""The harness: plans trials from a seed, runs them on a site, and records what they broke.

Offsets are drawn from the bytes each call moves without a fault (measured once per call and
transport: the calibration), so that cuts land in handshakes, headers, bodies and the answers
after them. Trial ``n`` of a seed is the same trial in every run (``--only n`` replays it).
"""

from __future__ import annotations

import asyncio
import random
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tiny_image import split_image, unified_image

from incus_images import IncusError, OperationError

from .daemon import FaultDaemon
from .fault import DOWN, NO_FAULT, UP, Fault, Traffic
from .flavours import Canceller, Interrupter, invoke
from .site import Site
from .trials import (
    FLAVOURS,
    KILL_OPS,
    OPS,
    STALL_TIMEOUT,
    TIMEOUT,
    TRANSPORTS,
    Ledger,
    Trial,
    TrialResult,
    TrialSpec,
    WaitTrial,
    body_direction,
    injector_for,
    notes_and_message,
    trial_class,
)

#: The seed of a run when none is given.
DEFAULT_SEED = 1010
#: Size of the regions at the start and end of a direction's bytes where a fifth of the offsets
#: each are drawn (handshakes and headers; the end of a body and the answers after it).
EDGE = 6 * 1024
#: A trial that has not ended by then is broken (its connections are then reset).
TRIAL_DEADLINE = 60.0


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
        self.ledger = Ledger([s for s in (site, kill_site) if s is not None])
        self._serial = 0
        self._sizes: dict[tuple[str, int], int] = {}

    def sweep(self) -> None:
        """At the end: the images failed trials left to appear late."""
        self.ledger.sweep()

    # -- planning ----------------------------------------------------------------------------

    def _directory(self) -> Path:
        self._serial += 1
        directory = self.workdir / f"trial-{self._serial:05d}"
        directory.mkdir()
        return directory

    def calibrated(self, site: Site, op: str, injector: str) -> Traffic:
        """The bytes this call moves without a fault through this injector (IN_PROCESS, or the
        proxy of a transport), measured once with the blocking client (the async one moves the
        same bytes, give or take a few), which must succeed."""
        key = (op, injector)
        if key not in site.calibration:
            transport = "https" if injector == "https" else "unix"
            spec = TrialSpec(f"calibrate {op}", op, "sync", transport, NO_FAULT, injector=injector)
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
        rng = random.Random(f"{self.seed}:{index}")  # replayable, not secret
        op, flavour = self.combos[index % len(self.combos)]
        transport = rng.choice(TRANSPORTS)
        if op == "copy-pull":
            transport = "https"  # the target daemon pulls from the source's HTTPS address

        def calibrated(kind: str) -> Traffic:
            """The call's traffic through the injector that strikes ``kind`` at an offset."""
            injector = injector_for(op, transport, kind, directed=True)
            return self.calibrated(self.site, op, injector)

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
            traffic = calibrated(kind)
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
            offset = self._body_offset(rng, op, calibrated(kind), direction)
            seconds = round(rng.uniform(0.2, 1.6), 2) if kind == "stall" else 0.0
            if kind == "stall":
                timeout = STALL_TIMEOUT
            fault = Fault(kind, direction, offset, seconds)
        return TrialSpec(f"#{index}", op, flavour, transport, fault, timeout, finish_after)

    def plan_kill(self, index: int) -> TrialSpec:
        assert self.kill_site is not None
        rng = random.Random(f"{self.seed}:kill:{index}")
        op = KILL_OPS[index % len(KILL_OPS)]
        # Each call in both flavours, every len(KILL_OPS) trials in the other one.
        flavour = FLAVOURS[(index + index // len(KILL_OPS)) % len(FLAVOURS)]
        transport = rng.choice(TRANSPORTS)
        traffic = self.calibrated(self.kill_site, op, transport)  # the proxy's
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
        trial = trial_class(spec.op)(self.ledger, site, spec, directory)
        injector = site.injectors[spec.injector]
        fault = spec.fault
        interrupts = fault.kind == "interrupt"
        canceller = Canceller() if interrupts and spec.flavour == "async" else None
        interrupter = (
            Interrupter(fault.offset or 0, canceller)
            if interrupts and fault.direction is None
            else None
        )
        on_fire: Callable[[], object] | None = canceller if interrupter is None else None
        if fault.kind == "kill":
            assert isinstance(site.daemon, FaultDaemon)
            on_fire = site.daemon.kill
        endpoint, options = site.client_options(spec.injector, spec.flavour, spec.timeout)
        hung = threading.Event()

        def deadline() -> None:
            hung.set()
            injector.abort_all()

        watchdog = threading.Timer(TRIAL_DEADLINE, deadline)
        watchdog.daemon = True
        started = time.monotonic()
        injector.arm(fault if interrupter is None else NO_FAULT, on_fire)
        watchdog.start()
        try:
            result, error = invoke(
                spec.flavour, endpoint, options, lambda c: trial.call(c, interrupter), canceller
            )
        finally:
            watchdog.cancel()
            record.seconds = time.monotonic() - started
            record.traffic = injector.disarm()
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
        canceller: Canceller | None,
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
        return f"python -m tests.faults --seed {self.seed} {command}"

    @property
    def broken(self) -> list[TrialResult]:
        return [record for record in self.calibrations + self.results if record.broken]
