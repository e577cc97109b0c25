"""scripts/bench.py's build part runs, small, and prints its figures and verdicts.

It times nothing that is checked here (a benchmark's targets are for the benchmark's own
runs); this is the smallest run that goes through every variant: an 8 MiB tree of four large
files and 200 small ones, one round.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bench_build import BUILD_VARIANTS

ROOT = Path(__file__).resolve().parent.parent
NEEDED = ("incus", "curl", "tar", "gzip", "/usr/bin/time")

pytestmark = pytest.mark.incusd  # the benchmark starts a daemon of its own


@pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in NEEDED),
    reason=f"the build benchmark needs {', '.join(NEEDED)}",
)
def test_the_build_benchmark_runs_every_variant_and_cleans_up(tmp_path: Path) -> None:
    argv = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--only", "build"]
    options = ["--rounds", "1", "--build-size", "8M", "--build-small-files", "200"]
    result = subprocess.run(
        [*argv, *options, "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    out = result.stdout
    # 1 when a target is missed, as it may be at this size: start-up outweighs the work.
    assert result.returncode in (0, 1), result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "build of a 8 MiB tree (200 small files) (medians of 1 rounds):" in out
    for variant in BUILD_VARIANTS:
        assert re.search(rf"^  {variant} +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+$", out, re.MULTILINE)
    verdicts = re.findall(r"^  (met   |MISSED) (.*)$", out.split("\ntargets:\n")[1], re.MULTILINE)
    assert {text for _, text in verdicts} >= {
        "build 8 MiB: sdk-sync/tar-import <= 1.0",
        "build 8 MiB: sdk-async/tar-import <= 1.0",
        "build 8 MiB: sdk-sync peak RSS < 64 MiB",
        "build 8 MiB: sdk-async peak RSS < 64 MiB",
    }
    # The SDK wrote no temporary file: that verdict is met even at this size.
    assert ("met   ", "build 8 MiB: no temporary file") in verdicts
    # Its tree, its daemon's directory and the CLI's configuration are gone.
    assert list(tmp_path.iterdir()) == []
