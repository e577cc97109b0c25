"""The throwaway daemon scripts without a daemon: what their command lines say about
themselves, and the refusal that keeps a unit run (``pytest -m "not incusd"``) free of daemons.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from throwaway_cluster import ThrowawayCluster
from throwaway_incusd import REFUSE_TO_START, DaemonRefused, DaemonUnavailable, ThrowawayIncusd

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def test_this_unmarked_test_runs_with_daemons_refused() -> None:
    # tests/conftest.py sets the refusal around every test without the incusd mark.
    reason = os.environ.get(REFUSE_TO_START, "")
    assert "test_this_unmarked_test_runs_with_daemons_refused" in reason
    assert "pytest.mark.incusd" in reason


@pytest.mark.parametrize("kind", ["daemon", "cluster"])
def test_an_unmarked_test_cannot_start_a_daemon(kind: str, tmp_path: Path) -> None:
    parent = str(tmp_path)
    starter = (
        ThrowawayIncusd(parent_dir=parent)
        if kind == "daemon"
        else ThrowawayCluster(1, parent_dir=parent)
    )
    with pytest.raises(DaemonRefused, match="is not marked incusd") as info:
        starter.start()
    # Not a DaemonUnavailable: the daemon fixtures skip on that, and this must fail instead.
    assert not isinstance(info.value, DaemonUnavailable)
    assert list(tmp_path.iterdir()) == [], "a refused start made a directory"


def test_the_refusal_reaches_child_processes() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "throwaway_incusd.py"), "run", "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "DaemonRefused" in result.stderr
    assert "is not marked incusd" in result.stderr
