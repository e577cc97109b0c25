"""scripts/bench.py's events part runs, small, and prints its latency figures and verdicts.

No latency is checked here (a benchmark's figures are for its own runs, on a quiet machine):
this is the smallest run that goes through every variant, 5 alias creations in one round, and
checks that every listener heard every change, in order, and that nothing is left behind.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from bench_events import VARIANTS

from tests.helpers import run_bench_part

pytestmark = pytest.mark.incusd  # the benchmark starts a daemon of its own


def test_the_events_benchmark_runs_every_variant_and_cleans_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, verdicts = run_bench_part("events", tmp_path, "--rounds", "1", "--events-changes", "5")
    with capsys.disabled():
        print("\nevents: latency" + out.split("\nevents: latency", 1)[-1].split("\ntargets:")[0])
    variants = VARIANTS if shutil.which("incus") else [v for v in VARIANTS if v != "incus-monitor"]
    assert "events: latency from a change's request to its event, ms (5 changes each)" in out
    for variant in variants:
        row = rf"^  {variant} +[\d.]+ +[\d.]+ +[\d.]+ +-?[\d.]+  \d of 5$"
        assert re.search(row, out, re.MULTILINE), variant
    assert verdicts == [
        ("met   ", f"events {variant}: every change heard, in order") for variant in variants
    ]
    # Its daemon's directory is gone with the working directory.
    assert list(tmp_path.iterdir()) == []
