"""add_remote against servers on loopback (issue 14, item 5): several processes adding to one
configuration at once, and the configuration's lock.

Every server here is the test's own, on 127.0.0.0/8: TLS servers of tests/pki.py. The CLI's
configuration is in tmp_path.
"""

from __future__ import annotations

import fcntl
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import incus_images._remotes.adding as adding_module
from incus_images import IncusTimeoutError, add_remote, load_remotes
from tests.pki import TlsServer, self_signed

#: A child process: waits for a line on stdin (so that all start together), adds each remote
#: of its list, and prints what became of each as JSON.
CHILD = """
import json, sys
from incus_images import IncusError, add_remote
names, conf = json.loads(sys.argv[1])
sys.stdin.readline()
outcomes = {}
for name, url in names:
    try:
        add_remote(name, url, accept_certificate=True, public=True, config_dir=conf, timeout=60)
        outcomes[name] = "added"
    except IncusError as exc:
        outcomes[name] = type(exc).__name__
print(json.dumps(outcomes))
"""

PROCESSES = 8
EACH = 5


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's configuration directory for this test, and no system-wide one."""
    monkeypatch.setenv("INCUS_GLOBAL_CONF", str(tmp_path / "global"))
    monkeypatch.delenv("INCUS_REMOTE", raising=False)
    return tmp_path / "conf"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TlsServer]:
    """A public image server, as far as GET /1.0 tells, with a self-signed certificate."""
    with TlsServer(self_signed(ips=["127.0.0.1"]), tmp_path / "server") as serving:
        serving.info["public"] = True
        yield serving


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again: connections are refused


@pytest.mark.timeout(120)
def test_processes_adding_remotes_at_once_all_succeed_and_all_remain(
    conf: Path, server: TlsServer
) -> None:
    dead = f"https://127.0.0.1:{closed_port()}"
    children = []
    for index in range(PROCESSES):
        names = [(f"p{index}-r{count}", server.url()) for count in range(EACH)]
        names.insert(2, (f"p{index}-dead", dead))  # fails, between successes
        children.append(
            subprocess.Popen(
                [sys.executable, "-c", CHILD, json.dumps([names, str(conf)])],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    outcomes: dict[str, str] = {}
    for child in children:
        out, err = child.communicate(timeout=100)
        assert child.returncode == 0, err
        outcomes.update(json.loads(out))
    added = {name for name, outcome in outcomes.items() if outcome == "added"}
    assert outcomes == {
        **{f"p{i}-r{n}": "added" for i in range(PROCESSES) for n in range(EACH)},
        **{f"p{i}-dead": "IncusConnectionError" for i in range(PROCESSES)},
    }
    assert set(load_remotes(conf).remotes) == added | {"images", "local"}
    # No servercerts/ file of a remote that is not there, and none missing.
    assert {path.name for path in (conf / "servercerts").iterdir()} == {
        f"{name}.crt" for name in added
    }
    assert sorted(path.name for path in conf.iterdir()) == [
        "config.yml",
        "config.yml.lock",
        "servercerts",
    ]


@pytest.mark.timeout(60)
def test_a_held_lock_is_waited_for_only_within_the_timeout(
    conf: Path, server: TlsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf.mkdir()
    with open(conf / "config.yml.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(IncusTimeoutError) as caught:
            add_remote("r", server.url(), accept_certificate=True, config_dir=conf, timeout=0.5)
        message = str(caught.value)
        assert str(conf / "config.yml.lock") in message
        assert "nothing was sent or written" in message
        # Without a timeout too: the wait is bounded (LOCK_WAIT_WITHOUT_TIMEOUT, made short).
        monkeypatch.setattr(adding_module, "LOCK_WAIT_WITHOUT_TIMEOUT", 0.5)
        with pytest.raises(IncusTimeoutError, match="held the lock"):
            add_remote("r", server.url(), accept_certificate=True, config_dir=conf, timeout=None)
    assert server.requests == []
    assert sorted(path.name for path in conf.iterdir()) == ["config.yml.lock"]
    # Released: the next call gets it.
    assert add_remote("r", server.url(), accept_certificate=True, config_dir=conf).public
