"""scripts/demo.py, the README's demo, runs against the session's throwaway daemon.

Its update step is the one a user wants: one property changed, the others kept (properties
given to update() replace them all, so the demo merges).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from throwaway_incusd import ThrowawayIncusd

DEMO = Path(__file__).resolve().parent.parent / "scripts" / "demo.py"


def _fingerprints(incusd: ThrowawayIncusd) -> set[str]:
    urls = incusd.request("GET", "/1.0/images?recursion=0")["metadata"]
    return {url.rsplit("/", 1)[-1] for url in urls}


def test_the_demo_updates_one_property_and_keeps_the_others(incusd: ThrowawayIncusd) -> None:
    before = _fingerprints(incusd)
    result = subprocess.run(
        [sys.executable, str(DEMO)],
        env=dict(os.environ, INCUS_SOCKET=incusd.socket_path),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"using the local daemon at unix://{incusd.socket_path}" in result.stdout
    (imported,) = [line for line in result.stdout.splitlines() if line.startswith("properties: ")]
    (updated,) = [line for line in result.stdout.splitlines() if line.startswith("properties now:")]
    first = ast.literal_eval(imported.removeprefix("properties: "))
    after = ast.literal_eval(updated.removeprefix("properties now: ").split("; public=")[0])
    assert len(first) >= 4
    assert after == {**first, "release": "2"}
    assert "demo finished" in result.stdout
    assert _fingerprints(incusd) == before, "the demo left an image behind"
