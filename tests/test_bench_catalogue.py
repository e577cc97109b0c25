"""scripts/bench.py's catalogue part runs, small, and prints its figures and verdicts.

It times nothing that is checked here (a benchmark's targets are for the benchmark's own
runs); this is the smallest run that goes through every variant: 50 images listed, an 8 MiB
image exported, one round.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from bench_catalogue import EXPORT_VARIANTS, LIST_VARIANTS

from tests.helpers import run_bench_part

NEEDED = ("incus", "curl", "openssl", "sha256sum", "/usr/bin/time")


@pytest.mark.skipif(
    any(shutil.which(tool) is None for tool in NEEDED),
    reason=f"the catalogue benchmark needs {', '.join(NEEDED)}",
)
def test_the_catalogue_benchmark_runs_every_variant_and_cleans_up(tmp_path: Path) -> None:
    options = ["--rounds", "1", "--catalogue-images", "50", "--catalogue-export", "8M"]
    out, verdicts = run_bench_part("catalogue", tmp_path, *options)
    assert re.search(r"^machine: .* load average [\d.]+ [\d.]+ [\d.]+$", out, re.MULTILINE)
    assert "list of 50 images (medians of 1 rounds):" in out
    for variant in LIST_VARIANTS:
        assert re.search(rf"^  {variant} +[\d.]+ +[\d.]+ +[\d.]+$", out, re.MULTILINE), variant
    assert "export of 8 MiB (medians of 1 rounds):" in out
    for variant in EXPORT_VARIANTS:
        assert re.search(rf"^  {variant} +[\d.]+ +[\d.]+ +[\d.]+$", out, re.MULTILINE), variant
    assert {text for _, text in verdicts} >= {
        "list of 50 images: sdk/incus-cli <= 1.25",
        "list of 50 images: sdk peak RSS < 200 MiB",
        "export of 8 MiB: sdk-sync/curl-sha256 <= 1.1",
        "export of 8 MiB: sdk-async/curl-sha256 <= 1.1",
        "export of 8 MiB: sdk-sync peak RSS < 64 MiB",
    }
    # Its images, exports, certificate and CLI configurations are gone.
    assert list(tmp_path.iterdir()) == []
