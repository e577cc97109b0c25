"""The copy part of scripts/bench.py: an image copied between two loopback daemons (issue 6).

    python scripts/bench.py --only copy [--sizes 1] [--rounds 3] [--workdir DIR]

Two throwaway daemons serve HTTPS on 127.0.0.1 (free ports) and trust one client certificate.
The image (the bench's incompressible unified tar) is imported on the source as a public
image. Each variant copies it onto the target in a process of its own (wall time and peak RSS
from GNU time), interleaved and rotated every round, after a ``sync``; the copy is deleted on
the target after each run. One untimed copy (the CLI's pull) warms both daemons up first.

Variants:

* ``incus-cli``: ``incus image copy src:FP tgt:`` (pull, the default), with HTTPS remotes added
  by ``incus remote add NAME https://127.0.0.1:PORT --accept-certificate`` into an INCUS_CONF
  directory that already holds the trusted client.crt/client.key: the reference;
* ``cli-push``: the same with ``--mode push``; ``cli-relay``: ``--mode relay`` between
  unix-socket remotes (``incus remote add NAME unix:///.../unix.socket``): references only;
* ``pull-sync``/``pull-async``: ``images.copy(fp, source, mode="pull")``, HTTPS clients of
  both daemons (client certificate, each daemon's server.crt as ``verify``);
* ``push-sync``/``push-async``: the same with ``mode="push"``;
* ``relay-sync``/``relay-async``: unix-socket clients of both daemons, ``mode=None`` (relay);
* ``relay-https``: HTTPS clients, ``mode="relay"``, blocking client.

When the daemons finish: ``incus monitor --type=operation`` runs against each daemon for the
whole part and records the operation events each daemon stamps itself (``timestamp``, the
daemon's wall clock, the same clock as the children's ``time.time()``). Per run, over the
operations created while the child ran, on either daemon:

* ``before``: child launched -> the copy's first operation created (interpreter start, imports,
  look-ups; in relay mode the whole stream too, since the target creates its operation only
  once the upload body is in); for the SDK split into ``python`` (launch -> the child's code
  runs), ``import`` (-> incus_images imported) and ``calls`` (-> the first operation created:
  TLS handshakes, look-ups, the relay's stream);
* ``op``: first operation created -> the last one's Success event (the daemons' part);
* ``seen``: that Success event -> ``images.copy()`` returned in the child (CLI: its process
  ended, so that includes its exit);
* ``after``: ``images.copy()`` returned -> the child process ended (closing, interpreter exit).

CPU time per run: the client's (GNU time: user + system, its children included), each daemon's
(/proc/PID/stat: user + system, waited-for children included) and everybody else's: the user
and system time of all other user-space processes on the machine, their children's left out (a
test suite reaping a daemon it ran for minutes would add all of that daemon's time at once), and
kernel threads such as writeback left out too. A run during
which other processes took more than 5 % of a CPU (a test suite, another benchmark) is marked
``!``: on 2 vCPUs they slow everything down unevenly.

An operation's ``updated_at`` cannot serve: incusd 6.0 sets it on metadata updates only, not
when the operation ends, so it marks the last progress report. A finished operation is also
forgotten about 5 s after it ends; the events need no look-up afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs
from bench_common import HERE, MIB, RSS_LIMIT_MIB, Run, interleave, run_child, size_text
from throwaway_incusd import ThrowawayIncusd, make_client_certificate, unix_request

#: variant -> (who runs it, mode, clients over HTTPS)
COPY_SETUPS: dict[str, tuple[str, str | None, bool]] = {
    "incus-cli": ("cli", "pull", True),
    "cli-push": ("cli", "push", True),
    "cli-relay": ("cli", "relay", False),
    "pull-sync": ("sync", "pull", True),
    "pull-async": ("async", "pull", True),
    "push-sync": ("sync", "push", True),
    "push-async": ("async", "push", True),
    "relay-sync": ("sync", None, False),
    "relay-async": ("async", None, False),
    "relay-https": ("sync", "relay", True),
}
COPY_VARIANTS = list(COPY_SETUPS)
REFERENCE = "incus-cli"
#: Issue 6: the SDK's time over the CLI's pull (None: reported, no target).
COPY_TARGETS: dict[str, float | None] = {
    "pull-sync": 1.05,
    "pull-async": 1.05,
    "relay-sync": 1.30,
    "relay-async": 1.30,
    "relay-https": None,
    "push-sync": None,
    "push-async": None,
    "cli-push": None,
    "cli-relay": None,
}
#: Issue 6: a finished pull is seen by the SDK within this many seconds.
SEEN_LIMIT = 0.050
SEEN_TARGETS = ("pull-sync", "pull-async")
#: Whose peak RSS goes into bench.py's memory check (< 64 MiB, flat between sizes).
RSS_VARIANTS = ("relay-sync", "relay-async", "relay-https")
TERMINAL = ("Success", "Failure", "Cancelled")
#: A run is disturbed when other processes used more than this share of one CPU meanwhile.
DISTURBED_SHARE = 0.05
_TICK = os.sysconf("SC_CLK_TCK")
_PF_KTHREAD = 0x00200000
# Housekeeping the daemons run on their own; never part of a copy.
HOUSEKEEPING = re.compile(
    r"updating images|expired|pruning|expiring|instance types|backups|warnings", re.IGNORECASE
)


@attrs.frozen
class CopyRun:
    seconds: float
    peak_rss_mib: float
    client_cpu: float = 0.0
    source_cpu: float = 0.0
    target_cpu: float = 0.0
    other_cpu: float = 0.0
    before: float | None = None
    python: float | None = None
    imports: float | None = None
    calls: float | None = None
    op: float | None = None
    seen: float | None = None
    after: float | None = None
    operations: tuple[str, ...] = ()

    @property
    def disturbed(self) -> bool:
        return self.other_cpu > DISTURBED_SHARE * self.seconds


_TIME = re.compile(r"^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_time(text: str) -> float:
    """An RFC 3339 time with up to nanoseconds (as Go writes it) as seconds since the epoch."""
    match = _TIME.match(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    head, fraction, zone = match.groups()
    zone = "+00:00" if zone == "Z" else zone
    return datetime.fromisoformat(head + zone).timestamp() + float(f"0.{fraction or 0}")


class OperationLog:
    """The operation events of one daemon, as ``incus monitor`` writes them to a file."""

    def __init__(self, name: str, remote: str, path: Path, env: dict[str, str]) -> None:
        self.name = name
        self._path = path
        self._offset = 0
        self._partial = ""
        self.events: list[dict[str, Any]] = []
        with open(path, "wb") as out:
            self.process = subprocess.Popen(
                ["incus", "monitor", f"{remote}:", "--type=operation", "--format=json"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def read(self) -> list[dict[str, Any]]:
        """Take in what the monitor wrote since the last call; all events so far."""
        with open(self._path, encoding="utf-8", errors="replace") as log:
            log.seek(self._offset)
            data = log.read()
            self._offset = log.tell()
        lines = (self._partial + data).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                try:
                    self.events.append(json.loads(line))
                except json.JSONDecodeError:
                    print(f"  ({self.name} monitor: {line.strip()})", flush=True)
        if self.process.poll() is not None:
            raise RuntimeError(
                f"incus monitor of the {self.name} exited: {self.process.returncode}"
            )
        return self.events

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def cpu_by_process() -> dict[int, tuple[int, float, float]]:
    """pid -> (parent pid, CPU seconds of its own, CPU seconds with its waited-for children) of
    every user-space process (user + system; kernel threads are left out)."""
    found: dict[int, tuple[int, float, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="utf-8", errors="replace") as stat:
                data = stat.read()
        except OSError:
            continue
        fields = data[data.rfind(")") + 2 :].split()  # from field 3 (state) on
        if int(fields[6]) & _PF_KTHREAD:
            continue
        own = int(fields[11]) + int(fields[12])  # utime stime
        children = int(fields[13]) + int(fields[14])  # cutime cstime
        found[int(entry.name)] = (int(fields[1]), own / _TICK, (own + children) / _TICK)
    return found


@attrs.define
class _Op:
    daemon: str
    description: str
    created: float
    done: float | None = None
    status: str = ""


class CopyBench:
    """Two throwaway daemons, the CLI's remotes for them, and their operation monitors."""

    def __init__(
        self, workdir: Path, parent_dir: str | None, known_pids: tuple[int, ...] = ()
    ) -> None:
        self.workdir = workdir / "copy"
        self.known_pids = set(known_pids)  # other daemons of this benchmark
        self.parent_dir = parent_dir
        self.source = ThrowawayIncusd(parent_dir=parent_dir)
        self.target = ThrowawayIncusd(parent_dir=parent_dir)
        self.logs: list[OperationLog] = []
        self.python = sys.executable

    # ----------------------------------------------------------------------------------------
    # Setting up and tearing down.

    def __enter__(self) -> CopyBench:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _start(self) -> None:
        self.workdir.mkdir()
        self.source.start()
        self.target.start()
        self.cert, self.key = make_client_certificate(self.workdir, "bench-client")
        for daemon in (self.source, self.target):
            daemon.enable_https()
            daemon.trust(self.cert)
        # The CLI finds its client certificate in INCUS_CONF; as the daemons already trust it,
        # `remote add --accept-certificate` needs no token (without it the CLI would make a
        # certificate of its own and ask for a token on the terminal).
        config = self.workdir / "incus-cli-config"
        config.mkdir()
        shutil.copy(self.cert, config / "client.crt")
        shutil.copy(self.key, config / "client.key")
        (config / "client.key").chmod(0o600)
        self.env = {k: v for k, v in os.environ.items() if k not in ("INCUS_DIR", "INCUS_SOCKET")}
        self.env["INCUS_CONF"] = str(config)
        remotes = {
            "src": self.source.https_url,
            "tgt": self.target.https_url,
            "srcu": f"unix://{self.source.socket_path}",
            "tgtu": f"unix://{self.target.socket_path}",
        }
        for name, url in remotes.items():
            added = subprocess.run(
                ["incus", "remote", "add", name, str(url), "--accept-certificate"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
            )
            if added.returncode != 0:
                raise RuntimeError(f"incus remote add {name} {url} failed: {added.stderr}")
        for name, remote in (("source", "src"), ("target", "tgt")):
            self.logs.append(OperationLog(name, remote, self.workdir / f"{name}.events", self.env))
        for daemon, log in zip((self.source, self.target), self.logs, strict=True):
            self._wait_for_monitor(daemon, log)

    def _wait_for_monitor(self, daemon: ThrowawayIncusd, log: OperationLog) -> None:
        """Make operations (a trust token, cancelled at once) until the monitor reports one."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, body = unix_request(
                daemon.socket_path,
                "POST",
                "/1.0/certificates",
                {"name": "bench-monitor-probe", "type": "client", "token": True},
            )
            if status != 202:
                raise RuntimeError(f"could not make a probe operation: {status} {body}")
            probe = body["metadata"]["id"]
            unix_request(daemon.socket_path, "DELETE", f"/1.0/operations/{probe}")
            time.sleep(0.2)
            if any(e.get("metadata", {}).get("id") == probe for e in log.read()):
                return
        raise RuntimeError(f"incus monitor of the {log.name} reported nothing within 20 s")

    def close(self) -> None:
        for log in self.logs:
            log.close()
        self.logs = []
        self.target.stop()
        self.source.stop()

    # ----------------------------------------------------------------------------------------
    # One size.

    def run(
        self,
        image: Path,
        size: int,
        rounds: int,
        verdicts: list[tuple[str, bool]],
        peak_rss: dict[str, dict[int, float]],
    ) -> None:
        fingerprint = self._import(image)
        try:
            print(
                f"\ncopy, {size_text(size)}, between two loopback daemons "
                f"(image {fingerprint[:12]}):"
            )
            print(
                "  before = launch -> first operation created (SDK: python start + import + "
                "calls);\n  op = -> last operation's Success event; seen = -> images.copy() "
                "returned (CLI: process ended);\n  after = -> process ended. Event times are "
                "the daemons' own (incus monitor --type=operation),\n  not updated_at (not "
                "touched when an operation ends). CPU: user + system seconds.\n  !: other "
                f"processes used more than {DISTURBED_SHARE:.0%} of a CPU during the run."
            )
            warm = self.measure("incus-cli", fingerprint)
            print(f"  warm-up (not counted): incus-cli {warm.seconds:.2f} s")
            print(f"  before the runs: {self._others()}", flush=True)
            runs = interleave(
                COPY_VARIANTS, rounds, lambda v: self.measure(v, fingerprint), self._show
            )
            print(f"  after the runs: {self._others()}")
            report_copy(size, runs, verdicts)
            for variant in RSS_VARIANTS:
                if variant in runs:
                    rss = max(r.peak_rss_mib for r in runs[variant])
                    peak_rss.setdefault(f"copy {variant}", {})[size] = rss
        finally:
            self._delete(self.source, fingerprint)

    def _import(self, image: Path) -> str:
        before = set(self._fingerprints(self.source))
        argv = ["incus", "image", "import", str(image), "srcu:", "--public", "--quiet"]
        run_child(argv, self.env)
        (fingerprint,) = set(self._fingerprints(self.source)) - before
        for stale in self._fingerprints(self.target):
            self._delete(self.target, stale)
        os.sync()
        return fingerprint

    def _others(self) -> str:
        """The load average, and incusd processes other than these two daemons: anything else
        running on the machine (a test suite, another benchmark) shows in the figures."""
        ours = self._ours()
        others = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in ours:
                continue
            try:
                if (entry / "comm").read_text().strip() == "incusd":
                    others.append(entry.name)
            except OSError:
                continue
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        extra = f"; other incusd running: pid {', '.join(others)}" if others else ""
        return f"load average {load}{extra}"

    def _ours(self) -> set[int]:
        monitors = {log.process.pid for log in self.logs}
        return {os.getpid(), self.source.pid, self.target.pid, *monitors, *self.known_pids}

    def _cpu_split(
        self,
        before: dict[int, tuple[int, float, float]],
        after: dict[int, tuple[int, float, float]],
    ) -> tuple[float, float, float]:
        """CPU seconds between two snapshots: the source's and the target's (their children
        included), and everybody else's own (this benchmark, its monitors, its children and
        its daemons' children left out)."""

        def spent(pid: int, field: int) -> float:
            if pid not in after:
                return 0.0
            return max(0.0, after[pid][field] - before.get(pid, (0, 0.0, 0.0))[field])

        ours = self._ours()
        others = sum(
            spent(pid, 1)
            for pid, (ppid, *_) in after.items()
            if pid not in ours and ppid not in ours
        )
        return spent(self.source.pid, 2), spent(self.target.pid, 2), others

    @staticmethod
    def _fingerprints(daemon: ThrowawayIncusd) -> list[str]:
        body = daemon.request("GET", "/1.0/images")
        return [url.rsplit("/", 1)[1] for url in body["metadata"]]

    @staticmethod
    def _delete(daemon: ThrowawayIncusd, fingerprint: str) -> None:
        status, body = unix_request(daemon.socket_path, "DELETE", f"/1.0/images/{fingerprint}")
        if status != 202:
            raise RuntimeError(f"could not delete {fingerprint[:12]}: {status} {body.get('error')}")
        op = body["metadata"]["id"]
        unix_request(
            daemon.socket_path, "GET", f"/1.0/operations/{op}/wait?timeout=600", timeout=700
        )

    @staticmethod
    def _show(round_number: int, variant: str, run: CopyRun) -> None:
        split = ""
        if run.python is not None:
            split = (
                f" (python {_s(run.python).strip()} import {_s(run.imports).strip()} "
                f"calls {_s(run.calls).strip()})"
            )
        print(
            f"  round {round_number}:{'!' if run.disturbed else ' '}{variant:11} "
            f"{run.seconds:6.2f} s {run.peak_rss_mib:5.1f} MiB | CPU s: client "
            f"{run.client_cpu:.2f} source {run.source_cpu:.2f} target "
            f"{run.target_cpu:.2f} others {run.other_cpu:.2f} | before {_s(run.before)}"
            f"{split} op {_s(run.op)} seen {_ms(run.seen)} after {_s(run.after)}"
            f" | {'; '.join(run.operations)}",
            flush=True,
        )

    def _spec(self, daemon: ThrowawayIncusd, https: bool) -> dict[str, object]:
        if not https:
            return {"endpoint": daemon.endpoint}
        return {
            "endpoint": daemon.https_url,
            "cert": [self.cert, self.key],
            "verify": daemon.server_certificate,
        }

    def measure(self, variant: str, fingerprint: str) -> CopyRun:
        who, mode, https = COPY_SETUPS[variant]
        if who == "cli":
            src, tgt = ("src", "tgt") if https else ("srcu", "tgtu")
            argv = ["incus", "image", "copy", f"{src}:{fingerprint}", f"{tgt}:", "--quiet"]
            if mode != "pull":
                argv += ["--mode", str(mode)]
        else:
            spec = {
                "fingerprint": fingerprint,
                "mode": mode,
                "target": self._spec(self.target, https),
                "source": self._spec(self.source, https),
            }
            argv = [self.python, str(HERE / "bench_child.py"), "copy", who, json.dumps(spec)]
        os.sync()
        cpu_before = cpu_by_process()
        launched = time.time()
        run, out = run_child(argv, self.env)
        ended = time.time()
        cpu = self._cpu_split(cpu_before, cpu_by_process())
        told = json.loads(out.splitlines()[-1]) if who != "cli" else {}
        if fingerprint not in self._fingerprints(self.target):
            raise RuntimeError(f"{variant} left no copy of {fingerprint[:12]} on the target")
        ops = self._operations(launched, ended)
        self._delete(self.target, fingerprint)
        return self._timed(run, cpu, launched, ended, told, ops)

    def _operations(self, launched: float, ended: float) -> list[_Op]:
        """The operations created on either daemon while the child ran, once all have ended
        (the monitor may write the last events a moment after the child exits)."""
        deadline = time.monotonic() + 3
        while True:
            ops: dict[str, _Op] = {}
            for log in self.logs:
                for event in log.read():
                    meta = event.get("metadata") or {}
                    if "id" not in meta or HOUSEKEEPING.search(meta.get("description", "")):
                        continue
                    created = parse_time(meta["created_at"])
                    if not launched <= created <= ended:
                        continue
                    op = ops.setdefault(
                        meta["id"], _Op(log.name, meta.get("description", ""), created)
                    )
                    if meta.get("status") in TERMINAL:
                        op.done = parse_time(event["timestamp"])
                        op.status = meta["status"]
            # A push's receiving token may stay open; every other operation ends.
            waiting = [
                op
                for op in ops.values()
                if op.done is None and "token" not in op.description.lower()
            ]
            if (ops and not waiting) or time.monotonic() > deadline:
                return sorted(ops.values(), key=lambda op: op.created)
            time.sleep(0.05)

    @staticmethod
    def _timed(
        run: Run,
        cpu: tuple[float, float, float],
        launched: float,
        ended: float,
        told: dict[str, Any],
        ops: list[_Op],
    ) -> CopyRun:
        finished = [op.done for op in ops if op.done is not None and op.status == "Success"]
        names = tuple(
            f"{op.daemon}: {op.description or '?'} {op.status or 'open'}"
            + (f" {op.done - op.created:.2f} s" if op.done is not None else "")
            for op in ops
        )
        measured = {
            "seconds": run.seconds,
            "peak_rss_mib": run.peak_rss_mib,
            "client_cpu": run.cpu,
            "source_cpu": cpu[0],
            "target_cpu": cpu[1],
            "other_cpu": cpu[2],
            "operations": names,
        }
        if not ops or not finished:
            return CopyRun(**measured)
        first, last = ops[0].created, max(finished)
        returned = told.get("returned_at")
        split: dict[str, float] = {}
        if told:
            split = {
                "python": told["main_at"] - launched,
                "imports": told["imported_at"] - told["main_at"],
                "calls": first - told["imported_at"],
            }
        return CopyRun(
            **measured,
            before=first - launched,
            op=last - first,
            seen=(returned if returned is not None else ended) - last,
            after=None if returned is None else ended - returned,
            **split,
        )


def _s(value: float | None) -> str:
    return "   -  " if value is None else f"{value:5.2f}s"


def _ms(value: float | None) -> str:
    return "    -   " if value is None else f"{value * 1000:6.1f}ms"


def _cell(value: float | None, scale: float, digits: int) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def _ratios(runs: list[CopyRun], references: list[CopyRun]) -> tuple[float, str]:
    """The median of per-round time ratios, and the rounds shown (with the clean median)."""
    pairs = list(zip(runs, references, strict=True))
    ratios = [a.seconds / b.seconds for a, b in pairs]
    shown = " ".join(
        f"{r:.2f}{'!' if a.disturbed or b.disturbed else ''}"
        for r, (a, b) in zip(ratios, pairs, strict=True)
    )
    clean = [r for r, (a, b) in zip(ratios, pairs, strict=True) if not (a.disturbed or b.disturbed)]
    if len(clean) < len(ratios):
        shown += (
            f"; clean: {statistics.median(clean):.2f}x of {len(clean)}"
            if clean
            else "; clean: none"
        )
    return statistics.median(ratios), f"per round: {shown}"


def report_copy(
    size: int, runs: dict[str, list[CopyRun]], verdicts: list[tuple[str, bool]]
) -> None:
    shown_size = size_text(size)
    rounds = len(next(iter(runs.values())))
    print(f"\ncopy of a {shown_size} image between two loopback daemons (medians of {rounds}):")
    every = [r for variant_runs in runs.values() for r in variant_runs]
    disturbed = sum(r.disturbed for r in every)
    others = sorted(r.other_cpu for r in every)
    print(
        f"  other processes' CPU per run: median {statistics.median(others):.2f} s, most "
        f"{others[-1]:.2f} s; {disturbed} of {len(every)} runs disturbed (!)"
    )
    # Column names, and the groups above them: (group, [(name, width), ...]).
    groups = [
        ("", [("variant", -11), ("time s", 6), ("MiB/s", 5)]),
        ("MiB", [("RSS", 5)]),
        ("CPU seconds", [("client", 6), ("src", 5), ("tgt", 5)]),
        ("seconds", [("before", 6), ("python", 6), ("import", 6), ("calls", 6), ("op", 5)]),
        ("", [("seen ms", 7), ("after", 6)]),
    ]
    top, names = [], []
    for group, columns in groups:
        cells = [
            f"{name:<{-width}}" if width < 0 else f"{name:>{width}}" for name, width in columns
        ]
        names.append(" ".join(cells))
        top.append(f"{group:^{len(names[-1])}}")
    print("  " + " ".join(top).rstrip() + "\n  " + " ".join(names))
    for variant, variant_runs in runs.items():
        seconds = statistics.median(r.seconds for r in variant_runs)
        rss = statistics.median(r.peak_rss_mib for r in variant_runs)
        client = statistics.median(r.client_cpu for r in variant_runs)
        source = statistics.median(r.source_cpu for r in variant_runs)
        target = statistics.median(r.target_cpu for r in variant_runs)
        before = _median([r.before for r in variant_runs])
        python = _median([r.python for r in variant_runs])
        imports = _median([r.imports for r in variant_runs])
        calls = _median([r.calls for r in variant_runs])
        op = _median([r.op for r in variant_runs])
        seen = _median([r.seen for r in variant_runs])
        after = _median([r.after for r in variant_runs])
        print(
            f"  {variant:11} {seconds:6.2f} {size / MIB / seconds:5.0f} {rss:5.1f} "
            f"{client:6.2f} {source:5.2f} {target:5.2f} "
            f"{_cell(before, 1, 2):>6} {_cell(python, 1, 2):>6} {_cell(imports, 1, 2):>6} "
            f"{_cell(calls, 1, 2):>6} {_cell(op, 1, 2):>5} {_cell(seen, 1000, 1):>7} "
            f"{_cell(after, 1, 2):>6}"
        )
    if REFERENCE in runs:
        print(
            f"  ratios to {REFERENCE} (its pull), medians of per-round ratios (!: a disturbed "
            "round; clean: the median over rounds where neither run was disturbed):"
        )
        for variant, limit in COPY_TARGETS.items():
            if variant not in runs:
                continue
            ratio, shown = _ratios(runs[variant], runs[REFERENCE])
            if limit is None:
                print(f"    {variant:11} / {REFERENCE}: {ratio:.2f}x ({shown})")
                continue
            ok = ratio <= limit
            verdicts.append((f"copy {shown_size} {variant}/{REFERENCE} pull <= {limit:.2f}", ok))
            print(
                f"    {variant:11} / {REFERENCE}: {ratio:.2f}x ({shown}; "
                f"target <= {limit:.2f}x: {'met' if ok else 'MISSED'})"
            )
    for variant, reference in (
        ("push-sync", "cli-push"),
        ("relay-sync", "cli-relay"),
        ("relay-async", "cli-relay"),
    ):
        if variant in runs and reference in runs:
            ratio, shown = _ratios(runs[variant], runs[reference])
            print(f"    {variant:11} / {reference}: {ratio:.2f}x ({shown}; same mode, no target)")
    print(
        "  completion seen: the daemon's Success event of the copy's last operation -> "
        "images.copy() returned, ms per round:"
    )
    for variant, variant_runs in runs.items():
        seen = [r.seen for r in variant_runs]
        shown = " ".join(
            ("-" if r.seen is None else f"{r.seen * 1000:.1f}") + ("!" if r.disturbed else "")
            for r in variant_runs
        )
        if variant not in SEEN_TARGETS:
            note = " (CLI: until its process ended)" if COPY_SETUPS[variant][0] == "cli" else ""
            print(f"    {variant:11} {shown}{note}")
            continue
        ok = all(s is not None and s <= SEEN_LIMIT for s in seen)
        worst = max((s for s in seen if s is not None), default=float("nan"))
        verdicts.append(
            (
                f"copy {shown_size} {variant} finished copy seen within {SEEN_LIMIT * 1000:.0f} ms",
                ok,
            )
        )
        print(
            f"    {variant:11} {shown} (worst {worst * 1000:.1f}; target <= "
            f"{SEEN_LIMIT * 1000:.0f} ms every round: {'met' if ok else 'MISSED'})"
        )
    for variant in RSS_VARIANTS:
        if variant in runs:
            rss = max(r.peak_rss_mib for r in runs[variant])
            print(
                f"  {variant} client peak RSS {rss:.1f} MiB (max over rounds; < {RSS_LIMIT_MIB} "
                "MiB and flat between sizes: see the summary)"
            )
