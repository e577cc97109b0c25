"""scripts/bench.py's build part runs, small, and prints its figures and verdicts.

It times nothing that is checked here (a benchmark's targets are for the benchmark's own
runs); this is the smallest run that goes through every variant: an 8 MiB tree of four large
files and 200 small ones, one round.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from bench_build import BUILD_VARIANTS

from tests.helpers import run_bench_part

NEEDED = ("incus", "curl", "tar", "gzip", "/usr/bin/time")

pytestmark = pytest.mark.incusd  # the benchmark starts a daemon of its own


@pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in NEEDED),
    reason=f"the build benchmark needs {', '.join(NEEDED)}",
)
def test_the_build_benchmark_runs_every_variant_and_cleans_up(tmp_path: Path) -> None:
    options = ["--rounds", "1", "--build-size", "8M", "--build-small-files", "200"]
    out, verdicts = run_bench_part("build", tmp_path, *options)
    title = "build of 8 MiB (200 small files)"
    assert f"{title} (medians of 1 rounds):" in out
    for variant in BUILD_VARIANTS:
        assert re.search(rf"^  {variant} +[\d.]+ +[\d.]+ +[\d.]+$", out, re.MULTILINE), variant
    assert {text for _, text in verdicts} >= {
        f"{title}: sdk-sync/tar-import <= 1.0",
        f"{title}: sdk-async/tar-import <= 1.0",
        f"{title}: sdk-sync peak RSS < 64 MiB",
        f"{title}: sdk-async peak RSS < 64 MiB",
    }
    # The SDK wrote no temporary file: that verdict is met even at this size.
    assert ("met   ", f"{title}: no temporary file") in verdicts
    # Its tree, its daemon's directory and the CLI's configuration are gone.
    assert list(tmp_path.iterdir()) == []
