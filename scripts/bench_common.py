"""What the benchmark scripts share (bench.py and its parts bench_catalogue.py, bench_copy.py,
bench_startup.py): sizes, the images, running a measured child process, interleaving."""

from __future__ import annotations

import os
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import attrs

HERE = Path(__file__).resolve().parent
GIB = 1024**3
MIB = 1024**2

#: Peak RSS every SDK transfer must stay under, whatever the image's size.
RSS_LIMIT_MIB = 64
GNU_TIME = "/usr/bin/time"

R = TypeVar("R")


def size_text(size: int) -> str:
    if size % GIB == 0:
        return f"{size // GIB} GiB"
    if size >= GIB:
        return f"{size / GIB:.2f} GiB"
    return f"{size / MIB:.0f} MiB" if size % MIB == 0 else f"{size / MIB:.1f} MiB"


@attrs.frozen
class Run:
    seconds: float
    peak_rss_mib: float
    #: The child's CPU time, user + system (GNU time).
    cpu: float


def run_child(argv: list[str], env: dict[str, str], *, cwd: Path | None = None) -> tuple[Run, str]:
    """Run argv to completion (in cwd, when given); its wall time, peak RSS, CPU time and
    stdout.

    The peak RSS comes from GNU time, not from wait4() here: Linux counts the memory of the
    process that forked a child into the child's peak, so a child of this (bigger) Python
    process would inherit its size. GNU time is a small C program; it adds ~1 ms.
    """
    with tempfile.NamedTemporaryFile("r") as report:
        started = time.perf_counter()
        result = subprocess.run(
            [GNU_TIME, "-f", "%M %U %S", "-o", report.name, *argv],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(
                f"{argv} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        peak_kib, user, system = report.read().split()[-3:]
    return Run(seconds, int(peak_kib) / 1024, float(user) + float(system)), result.stdout


def make_image(path: Path, size: int) -> None:
    """A unified image of about size bytes: metadata.yaml, then rootfs/random.bin."""
    metadata = f"architecture: x86_64\ncreation_date: {int(time.time())}\nproperties: {{}}\n"
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("metadata.yaml")
        info.size = len(metadata)
        archive.addfile(info, _Bytes(metadata.encode()))
        folder = tarfile.TarInfo("rootfs")
        folder.type = tarfile.DIRTYPE
        folder.mode = 0o755
        archive.addfile(folder)
        payload = tarfile.TarInfo("rootfs/random.bin")
        payload.size = size - 10 * 1024
        archive.addfile(payload, _Random(payload.size))


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, size: int = -1) -> bytes:
        chunk, self._data = self._data[:size], self._data[size:]
        return chunk


class _Random:
    def __init__(self, size: int) -> None:
        self._left = size

    def read(self, size: int = -1) -> bytes:
        size = self._left if size < 0 else min(size, self._left)
        self._left -= size
        return os.urandom(size)


def interleave(
    variants: list[str],
    rounds: int,
    measure: Callable[[str], R],
    show: Callable[[int, str, R], None] | None = None,
) -> dict[str, list[R]]:
    """Each variant measured once per round, the order rotated every round, so that load on
    the machine hits all of them alike; ``show(round_number, variant, run)`` (from 1) after
    each measurement."""
    runs: dict[str, list[R]] = {variant: [] for variant in variants}
    for round_number in range(rounds):
        shift = round_number % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            run = measure(variant)
            runs[variant].append(run)
            if show is not None:
                show(round_number + 1, variant, run)
    return runs


def compare(
    runs: dict[str, list[Run]],
    variant: str,
    reference: str,
    limit: float | None,
    verdicts: list[tuple[str, bool]],
    verdict: str,
) -> None:
    """Print the median of variant's per-round ratios to reference's time, with each round's;
    with a limit, whether it is met, recorded in verdicts as ``verdict``."""
    per_round = [a.seconds / b.seconds for a, b in zip(runs[variant], runs[reference], strict=True)]
    ratio = statistics.median(per_round)
    line = f"  {variant} / {reference}: {ratio:.2f}x (per round: "
    line += " ".join(f"{r:.2f}" for r in per_round)
    if limit is None:
        print(line + ")")
        return
    ok = ratio <= limit
    verdicts.append((verdict, ok))
    print(f"{line}; target <= {limit:.2f}x: {'met' if ok else 'MISSED'})")


def show_run(round_number: int, variant: str, run: Run) -> None:
    print(
        f"  round {round_number}: {variant:12} {run.seconds:7.3f} s  CPU {run.cpu:6.3f} s  "
        f"{run.peak_rss_mib:6.1f} MiB",
        flush=True,
    )


def report(
    title: str,
    runs: dict[str, list[Run]],
    reference: str,
    targets: dict[str, float | None],
    verdicts: list[tuple[str, bool]],
) -> None:
    """Medians, per-round ratios to the reference, and a verdict for each target."""
    print(f"\n{title} (medians of {len(runs[reference])} rounds):")
    print(f"  {'variant':12} {'wall s':>8} {'CPU s':>8} {'peak RSS MiB':>13}")
    for variant, variant_runs in runs.items():
        wall = statistics.median(r.seconds for r in variant_runs)
        cpu = statistics.median(r.cpu for r in variant_runs)
        rss = statistics.median(r.peak_rss_mib for r in variant_runs)
        print(f"  {variant:12} {wall:8.3f} {cpu:8.3f} {rss:13.1f}")
    for variant, limit in targets.items():
        if variant not in runs or reference not in runs:
            continue
        verdict = f"{title}: {variant}/{reference} <= {limit}"
        compare(runs, variant, reference, limit, verdicts, verdict)


def check_rss(
    title: str, runs: dict[str, list[Run]], limit: float, verdicts: list[tuple[str, bool]]
) -> None:
    for variant, variant_runs in runs.items():
        if not variant.startswith("sdk"):
            continue
        peak = max(r.peak_rss_mib for r in variant_runs)
        ok = peak < limit
        verdicts.append((f"{title}: {variant} peak RSS < {limit} MiB", ok))
        print(f"  {variant} peak RSS (max of rounds): {peak:.1f} MiB ({'met' if ok else 'MISSED'})")
