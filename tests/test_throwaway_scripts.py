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


def script(name: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run scripts/NAME as a user would, with the refusal of this test run lifted: --help must
    not depend on it, and nothing here may get as far as starting a daemon."""
    env = {key: value for key, value in os.environ.items() if key != REFUSE_TO_START}
    return subprocess.run(
        [sys.executable, str(SCRIPTS / name), *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(
    ("name", "says"),
    [
        (
            "throwaway_incusd.py",
            ["private incusd", "INCUS_SOCKET", "stop", "root", REFUSE_TO_START, "run -- incus"],
        ),
        (
            "throwaway_cluster.py",
            ["cluster", "loopback", "INCUS_CLUSTER_URLS", "root", "--members 5", "run --"],
        ),
    ],
)
@pytest.mark.parametrize("where", [(), ("run",)])
def test_help_explains_the_script(name: str, says: list[str], where: tuple[str, ...]) -> None:
    result = script(name, *where, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith(f"usage: {name} ")
    for text in says:
        assert text in result.stdout, (text, result.stdout)


@pytest.mark.parametrize("name", ["throwaway_incusd.py", "throwaway_cluster.py"])
def test_run_without_a_command_is_a_usage_error(name: str) -> None:
    result = script(name, "run", "--")
    assert result.returncode == 2
    assert "run needs a command" in result.stderr
