"""add_remote against servers on loopback (issue 14, items 5 and 9): several processes adding
to one configuration at once, the configuration's lock, and a token whose addresses stall.

Every server here is the test's own, on 127.0.0.0/8: TLS servers of tests/pki.py, and
listeners that accept connections and never answer. The CLI's configuration is in tmp_path.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import incus_images._remotes.adding as adding_module
from incus_images import (
    ForbiddenError,
    IncusConnectionError,
    IncusTimeoutError,
    LeftBehind,
    add_remote,
    load_remotes,
)
from tests.helpers import assert_left, closed_port
from tests.pki import Authority, TlsServer, self_signed

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
        assert str(conf / "config.yml.lock") in str(caught.value)
        assert_left(caught.value, LeftBehind.NOTHING, "nothing was sent or written")
        # Without a timeout too: the wait is bounded (LOCK_WAIT_WITHOUT_TIMEOUT, made short).
        monkeypatch.setattr(adding_module, "LOCK_WAIT_WITHOUT_TIMEOUT", 0.5)
        with pytest.raises(IncusTimeoutError, match="held the lock"):
            add_remote("r", server.url(), accept_certificate=True, config_dir=conf, timeout=None)
    assert server.requests == []
    assert sorted(path.name for path in conf.iterdir()) == ["config.yml.lock"]
    # Released: the next call gets it.
    assert add_remote("r", server.url(), accept_certificate=True, config_dir=conf).public


def test_a_server_that_accepts_no_client_certificate_is_refused_as_untrusting(
    conf: Path, server: TlsServer
) -> None:
    """The server's state, not the caller's argument: it will trust no client certificate."""
    server.info.update(public=False, auth_methods=["oidc"])
    with pytest.raises(ForbiddenError, match="does not accept client certificates") as caught:
        add_remote("r", server.url(), accept_certificate=True, config_dir=conf, timeout=10)
    assert not isinstance(caught.value, ValueError)
    assert caught.value.server == server.url()
    assert not (conf / "config.yml").exists()


def token_for(addresses: list[str], der: bytes) -> str:
    fields = {
        "client_name": "tok",
        "fingerprint": hashlib.sha256(der).hexdigest(),
        "addresses": addresses,
        "secret": "f3eaacd7d52974af94acaec117c56a22303f7b17e63749ebce26aa283ff70bb6",
        "expires_at": "0001-01-01T00:00:00Z",
    }
    return base64.b64encode(json.dumps(fields).encode()).decode()


@pytest.fixture
def stalled() -> Iterator[list[str]]:
    """Ten listeners on 127.0.0.2 to 127.0.0.11 whose connections are accepted (by the
    kernel, into their backlog) and never answered."""
    listeners = [socket.create_server((f"127.0.0.{host}", 0)) for host in range(2, 12)]
    try:
        yield [f"{listener.getsockname()[0]}:{listener.getsockname()[1]}" for listener in listeners]
    finally:
        for listener in listeners:
            listener.close()


@pytest.mark.timeout(60)
def test_stalled_token_addresses_share_one_deadline(conf: Path, stalled: list[str]) -> None:
    token = token_for(stalled, self_signed().der)
    started = time.monotonic()
    with pytest.raises(IncusTimeoutError) as caught:
        add_remote("prod", token, config_dir=conf, timeout=1)
    # A sanity guard on the promise (one deadline for the call), not a benchmark: each
    # address took the whole timeout before, ten seconds in all.
    assert time.monotonic() - started < 3 * 1
    message = str(caught.value)
    assert "timeout=1 s" in message
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was sent")
    for address in stalled:
        assert f"https://{address} (no certificate in time)" in message
    assert not (conf / "config.yml").exists()


@pytest.mark.timeout(60)
def test_a_stalled_address_hides_none_that_answers(
    conf: Path, stalled: list[str], tmp_path: Path
) -> None:
    shown = Authority().issue(ips=["127.0.0.1"])
    with TlsServer(shown, tmp_path / "real") as real:
        real.info["auth"] = "trusted"  # the client is trusted already: the token is kept
        url = real.url()
        address = url.removeprefix("https://")
        remote = add_remote("prod", token_for([*stalled, address], shown.der), config_dir=conf)
    assert remote.addr == url
    assert real.requests == ["GET /1.0", "GET /1.0"]
    pinned = (conf / "servercerts" / "prod.crt").read_text()
    assert pinned.startswith("-----BEGIN CERTIFICATE-----")


@pytest.mark.timeout(60)
def test_refused_addresses_are_named_with_their_reason(conf: Path) -> None:
    refused = [f"127.0.0.1:{closed_port()}", f"127.0.0.1:{closed_port()}"]
    with pytest.raises(IncusConnectionError, match="Connection refused") as caught:
        add_remote("prod", token_for(refused, self_signed().der), config_dir=conf, timeout=5)
    assert not isinstance(caught.value, IncusTimeoutError)
    for address in refused:
        assert f"https://{address}" in str(caught.value)
    assert os.listdir(conf) == ["config.yml.lock"]


@pytest.mark.timeout(60)
def test_an_address_listed_twice_is_probed_once(conf: Path) -> None:
    twice = f"127.0.0.1:{closed_port()}"
    with pytest.raises(IncusConnectionError, match="Connection refused") as caught:
        add_remote("prod", token_for([twice, twice], self_signed().der), config_dir=conf)
    assert str(caught.value).count(twice) == 1
