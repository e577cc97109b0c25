"""incus-user, for real: a user who cannot use the daemon's socket is connected to incus-user's
``unix.socket.user`` beside it and confined to a project of their own, as the incus CLI is.

The client runs in a child process that drops from root to ``nobody`` before connecting, in
both flavours. The daemon runs alone in a network namespace this test made (incus-user gives
each new user a profile on a bridge, which is then made there, not on the machine).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from throwaway_incusd import ThrowawayIncusd
from tiny_image import unified_image

from tests.conftest import _daemon, _unavailable
from tests.helpers import UNIX_BASE, upload_raw

pytestmark = pytest.mark.incusd  # starts a daemon of its own

INCUS_USER = "/usr/libexec/incus/incus-user"

#: Runs as root until it has imported everything (the SDK's deferred modules too), then as
#: nobody: from there on, an import would read files nobody may not read (CI's checkout), so
#: any is refused and fails loudly.
CHILD = r"""
import asyncio, grp, importlib, json, os, pkgutil, pwd, sys
import anyio, httpx
import incus_images
from incus_images import AsyncClient, Client, IncusConnectionError

# The SDK imports what a call needs when it is first made (start-up time): all of it now.
for module in pkgutil.walk_packages(incus_images.__path__, "incus_images."):
    importlib.import_module(module.name)

anyio.run(anyio.sleep, 0)
httpx.URL("http://incus/1.0")
image = open(sys.argv[1], "rb").read()  # as root: nobody may not read the test's files

os.setgroups([])
os.setgid(grp.getgrnam("nogroup").gr_gid)
os.setuid(pwd.getpwnam("nobody").pw_uid)
os.environ["HOME"] = "/nonexistent"


class NoImportsNow:
    def find_spec(self, name, path=None, target=None):
        raise ImportError(f"{name} imported after dropping root")


sys.meta_path.insert(0, NoImportsNow())
results = {"uid": os.geteuid()}

with Client() as client:
    # The first request is a write: it must already go to the user's project.
    created = client.images.create(image, aliases=["mine-sync"], wait=True)
    fingerprints = [image.fingerprint for image in client.images.list()]
    results["sync"] = {
        "server": client.server,
        "project": client.project,
        "listed": fingerprints,
        "created": created.fingerprint,
        "alias": client.images.get_alias("mine-sync").target,
    }


async def main():
    async with AsyncClient() as client:
        images = await client.images.list()
        results["async"] = {
            "server": client.server,
            "project": client.project,
            "listed": [image.fingerprint for image in images],
        }
        got = await client.images.get(results["sync"]["created"])
        results["async"]["got"] = got.properties.get("os")


asyncio.run(main())
print(json.dumps(results))
"""


class IncusUser:
    def __init__(self, daemon: ThrowawayIncusd, process: subprocess.Popen[bytes]) -> None:
        self.daemon = daemon
        self.process = process


@pytest.fixture(scope="module")
def incus_user() -> Iterator[IncusUser]:
    """A throwaway incusd in a namespace of its own, with incus-user serving its user socket."""
    if not os.path.exists(INCUS_USER):
        _unavailable(f"{INCUS_USER} is missing (package incus-base)")
    if shutil.which("dnsmasq") is None:
        _unavailable("incus-user's bridge needs dnsmasq (package dnsmasq-base)")
    daemon = _daemon(network_namespace=True)
    process = None
    try:
        assert daemon.directory is not None and daemon.namespace is not None
        # What a packaged install has and a throwaway daemon lacks: incus-user gives every
        # new user a profile with a root disk on "default" and a NIC on "incusbr0".
        daemon.request("POST", "/1.0/storage-pools", {"name": "default", "driver": "dir"})
        daemon.request(
            "POST",
            "/1.0/networks",
            {
                "name": "incusbr0",
                "type": "bridge",
                "config": {"ipv4.address": "none", "ipv6.address": "none"},
            },
        )
        log = open(daemon.directory / "incus-user.log", "wb")  # noqa: SIM115 - the child's
        try:
            process = subprocess.Popen(
                ["ip", "netns", "exec", daemon.namespace, INCUS_USER, "--group", "nogroup"],
                env=dict(os.environ, INCUS_DIR=str(daemon.directory)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        user_socket = daemon.directory / "unix.socket.user"
        deadline = time.monotonic() + 30
        while not user_socket.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                output = (daemon.directory / "incus-user.log").read_text(errors="replace")
                pytest.fail(f"incus-user did not create its socket:\n{output[-2000:]}")
            time.sleep(0.02)
        yield IncusUser(daemon, process)
    finally:
        if process is not None and process.poll() is None:
            process.terminate()  # by PID: the one this fixture started
            process.wait(20)
        daemon.stop()


def _run_as_nobody(daemon: ThrowawayIncusd, image_path: Path) -> dict[str, Any]:
    assert daemon.directory is not None
    environment = {key: value for key, value in os.environ.items() if not key.startswith("INCUS_")}
    environment["INCUS_DIR"] = str(daemon.directory)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(image_path)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_a_user_without_the_daemon_socket_uses_incus_user_in_both_flavours(
    incus_user: IncusUser, tmp_path: Path
) -> None:
    daemon = incus_user.daemon
    assert daemon.directory is not None
    # An administrator's image in the default project: the user must not see it.
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=daemon.socket_path), base_url=UNIX_BASE, timeout=60
    ) as raw:
        root_fingerprint = upload_raw(raw, unified_image({"os": "root-only"}))
    mine = unified_image({"os": "mine"})
    image_path = tmp_path / "mine.tar.gz"
    image_path.write_bytes(mine)
    results = _run_as_nobody(daemon, image_path)

    nobody = pwd.getpwnam("nobody").pw_uid
    assert results["uid"] == nobody
    user_socket = f"unix://{daemon.directory}/unix.socket.user"
    project = f"user-{nobody}"
    for flavour in ("sync", "async"):
        assert results[flavour]["server"] == user_socket
        assert results[flavour]["project"] == project
    created = results["sync"]["created"]
    assert results["sync"]["listed"] == [created]
    assert results["sync"]["alias"] == created
    assert created in results["async"]["listed"], results
    assert root_fingerprint not in results["async"]["listed"]
    assert results["async"]["got"] == "mine"
    # The user's image went to their project, as the daemon itself says.
    in_default = daemon.request("GET", "/1.0/images")["metadata"]
    assert f"/1.0/images/{root_fingerprint}" in in_default
    assert f"/1.0/images/{created}" not in in_default
    in_project = daemon.request("GET", f"/1.0/images?project={project}")["metadata"]
    assert in_project == [f"/1.0/images/{created}"]


def test_stopping_a_daemon_stops_the_dnsmasq_it_left_in_its_namespace() -> None:
    # incusd leaves a bridge's dnsmasq running when it stops; every incus-user test run used
    # to leave one behind for good. ThrowawayIncusd.stop() now stops its namespace's processes.
    if shutil.which("dnsmasq") is None:
        _unavailable("a bridge needs dnsmasq (package dnsmasq-base)")
    daemon = _daemon(network_namespace=True)
    try:
        assert daemon.namespace is not None
        daemon.request(
            "POST",
            "/1.0/networks",
            {"name": "incusbr9", "type": "bridge", "config": {"ipv4.address": "none"}},
        )
        listed = subprocess.run(
            ["ip", "netns", "pids", daemon.namespace], capture_output=True, text=True, check=True
        )
        left = [int(pid) for pid in listed.stdout.split() if pid != str(daemon.pid)]
        names = [Path(f"/proc/{pid}/comm").read_text().strip() for pid in left]
        assert "dnsmasq" in names
    finally:
        daemon.stop()
    assert [pid for pid in left if Path(f"/proc/{pid}").exists()] == []
