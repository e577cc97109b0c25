"""What the benchmark scripts share (bench.py, bench_copy.py, bench_startup.py): sizes, and
running a measured child process."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

import attrs

HERE = Path(__file__).resolve().parent
GIB = 1024**3
MIB = 1024**2

#: Peak RSS every SDK transfer must stay under, whatever the image's size.
RSS_LIMIT_MIB = 64
GNU_TIME = "/usr/bin/time"


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


def run_child(argv: list[str], env: dict[str, str]) -> tuple[Run, str]:
    """Run argv to completion; its wall time, peak RSS, CPU time and stdout.

    The peak RSS comes from GNU time, not from wait4() here: Linux counts the memory of the
    process that forked a child into the child's peak, so a child of this (bigger) Python
    process would inherit its size. GNU time is a small C program; it adds ~1 ms.
    """
    with tempfile.NamedTemporaryFile("r") as report:
        started = time.perf_counter()
        result = subprocess.run(
            [GNU_TIME, "-f", "%M %U %S", "-o", report.name, *argv],
            env=env,
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
