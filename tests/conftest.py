"""Fixtures shared by every test, in both flavours.

* The generated ``_sync/`` trees are brought up to date before collection (outside CI; in CI
  a stale tree fails the run, since CI must test what the build generates).
* ``incusd`` is one throwaway daemon for the whole session, started and stopped here by PID.
  Where none can be had, the tests that need it are skipped with the reason, except under
  ``CI=true``, where they fail.
* Every test that needs a real daemon carries the ``incusd`` mark: given here to each test
  that uses a daemon fixture (DAEMON_FIXTURES), by hand to a module that starts daemons of its
  own. ``pytest -m "not incusd"`` runs the rest, the unit tests. A test without the mark cannot
  start a daemon: it fails if it tries (see ``pytest_runtest_protocol``), so the mark is never
  missing where it is needed.
* Every response is read with the strict converter, so a model that misses a field the
  daemon sends, or a fixture that drifts from the models, fails the test.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import respx

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _generated_code_is_current() -> None:
    generator = ROOT / "scripts" / "run_unasync.py"
    args = [sys.executable, str(generator)] + (["--check"] if IN_CI else [])
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.exit(
            f"generated code is not current ({' '.join(args[1:])}):\n"
            f"{result.stdout}{result.stderr}",
            returncode=3,
        )


_generated_code_is_current()

from throwaway_incusd import (  # noqa: E402 - scripts/ is on pythonpath (pyproject.toml)
    REFUSE_TO_START,
    DaemonUnavailable,
    ThrowawayIncusd,
    make_client_certificate,
)

import incus_images._protocol  # noqa: E402
from incus_images._converter import make_converter  # noqa: E402
from tests.helpers import UNIX_BASE, incompressible_image, wait_raw  # noqa: E402

pytest_plugins = [
    "tests.streams_fixtures",  # streams_tree, streams_server: a real simplestreams tree
]

#: The fixtures that are, or stand on, a real daemon.
DAEMON_FIXTURES = frozenset({"incusd", "https_server", "raw_api", "copy_servers", "container_host"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark incusd every test whose fixtures, directly or through others, include a daemon
    (before ``-m`` selects by marks)."""
    for item in items:
        if DAEMON_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.incusd)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """While a test without the incusd mark runs (its fixtures' set-up and tear-down too),
    every throwaway daemon refuses to start, in this process and in the processes it starts:
    a unit run (``-m "not incusd"``) provably starts none, and a daemon test that lacks the
    mark fails instead of slipping into it."""
    if item.get_closest_marker("incusd") is not None:
        return (yield)
    before = os.environ.get(REFUSE_TO_START)
    os.environ[REFUSE_TO_START] = (
        f"{item.nodeid} is not marked incusd: mark it (pytest.mark.incusd) or use a daemon fixture"
    )
    try:
        return (yield)
    finally:
        if before is None:
            del os.environ[REFUSE_TO_START]
        else:
            os.environ[REFUSE_TO_START] = before


@pytest.fixture(scope="session", autouse=True)
def _strict_converter() -> Iterator[None]:
    original = incus_images._protocol.converter
    incus_images._protocol.converter = make_converter(strict=True)
    yield
    incus_images._protocol.converter = original


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI needs a real incusd and cannot have one: {reason}", pytrace=False)
    pytest.skip(f"no throwaway incusd: {reason}")


def self_signed_certificate(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A real self-signed certificate (PEM; its key beside it), made with openssl as the
    daemons' client certificates are."""
    directory = tmp_path_factory.mktemp("pem")
    try:
        cert, _ = make_client_certificate(directory, name)
    except (DaemonUnavailable, subprocess.CalledProcessError) as exc:
        _unavailable(f"cannot make a certificate: {exc}")
    return Path(cert)


@pytest.fixture(scope="module")
def big_image() -> bytes:
    """A unified image of about 8 MiB that does not compress, made once a module."""
    return incompressible_image()


@pytest.fixture(scope="session")
def incusd() -> Iterator[ThrowawayIncusd]:
    """A private incusd for this test session."""
    daemon = _daemon()
    try:
        yield daemon
    finally:
        daemon.stop()


@attrs.frozen
class Certificates:
    client_cert: str
    client_key: str
    #: A certificate no daemon trusts or serves, for the refusal tests.
    other_cert: str
    other_key: str


@pytest.fixture(scope="session")
def certificates() -> Iterator[Certificates]:
    """A client certificate (the daemons' tests trust it) and another one."""
    with tempfile.TemporaryDirectory(prefix="incus-tls-") as directory:
        try:
            cert, key = make_client_certificate(directory, "client")
            other, other_key = make_client_certificate(directory, "other")
        except (DaemonUnavailable, subprocess.CalledProcessError) as exc:
            _unavailable(f"cannot make certificates: {exc}")
        yield Certificates(client_cert=cert, client_key=key, other_cert=other, other_key=other_key)


@attrs.frozen
class HttpsServer:
    url: str
    client_cert: str
    client_key: str
    server_cert: str
    #: A certificate that is not the server's, for the refusal tests.
    other_cert: str


@pytest.fixture(scope="session")
def https_server(incusd: ThrowawayIncusd, certificates: Certificates) -> HttpsServer:
    """The session daemon served over HTTPS too, with a trusted client certificate."""
    url = incusd.enable_https()
    incusd.trust(certificates.client_cert)
    return HttpsServer(
        url=url,
        client_cert=certificates.client_cert,
        client_key=certificates.client_key,
        server_cert=incusd.server_certificate,
        other_cert=certificates.other_cert,
    )


@attrs.frozen
class CopyServers:
    """Two more daemons, each over HTTPS on loopback too, trusting the client certificate; and
    a third alone in a network namespace, which cannot reach the others (copy tests)."""

    source: ThrowawayIncusd
    target: ThrowawayIncusd
    isolated: ThrowawayIncusd
    certificates: Certificates


def _daemon(**options: Any) -> ThrowawayIncusd:
    daemon = ThrowawayIncusd(**options)
    try:
        daemon.start()
    except (DaemonUnavailable, subprocess.CalledProcessError) as exc:
        _unavailable(str(exc))
    return daemon


@pytest.fixture(scope="session")
def copy_servers(certificates: Certificates) -> Iterator[CopyServers]:
    with contextlib.ExitStack() as stack:
        daemons = []
        for options in ({}, {}, {"network_namespace": True}):
            daemon = _daemon(**options)
            stack.callback(daemon.stop)
            daemon.enable_https()
            daemon.trust(certificates.client_cert)
            daemons.append(daemon)
        yield CopyServers(*daemons, certificates=certificates)


@attrs.frozen
class ContainerHost:
    """A daemon that can run containers: a dir storage pool, the default profile's root disk,
    and a busybox image (alias ``bb``) that starts."""

    daemon: ThrowawayIncusd
    image: str


@pytest.fixture(scope="session")
def container_host() -> Iterator[ContainerHost]:
    from tiny_image import busybox_image

    try:
        image = busybox_image()
    except FileNotFoundError as exc:
        _unavailable(str(exc))
    daemon = _daemon()
    try:
        daemon.request("POST", "/1.0/storage-pools", {"name": "default", "driver": "dir"})
        daemon.request(
            "PATCH",
            "/1.0/profiles/default",
            {"devices": {"root": {"type": "disk", "path": "/", "pool": "default"}}},
        )
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=daemon.socket_path), base_url=UNIX_BASE, timeout=60
        ) as raw:
            response = raw.post(
                "/1.0/images",
                content=image,
                headers={"Content-Type": "application/octet-stream", "X-Incus-aliases": "alias=bb"},
            )
            fingerprint = wait_raw(raw, response)["metadata"]["fingerprint"]
        yield ContainerHost(daemon=daemon, image=fingerprint)
    finally:
        daemon.stop(stop_instances=True)


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    """A mock incusd on the unix-socket base URL (both flavours); every route must be used."""
    with respx.mock(base_url=UNIX_BASE, assert_all_called=True) as mock:
        yield mock


@pytest.fixture
def silent() -> Iterator[respx.MockRouter]:
    """A mock incusd that answers anything, for tests that check nothing is sent at all."""
    with respx.mock(base_url=UNIX_BASE, assert_all_called=False) as mock:
        mock.route().respond(500)
        yield mock


@pytest.fixture(scope="session")
def raw_api(incusd: ThrowawayIncusd) -> Iterator[httpx.Client]:
    """Plain httpx on the daemon's socket, to arrange and inspect state behind the SDK's back."""
    transport = httpx.HTTPTransport(uds=incusd.socket_path)
    with httpx.Client(transport=transport, base_url=UNIX_BASE, timeout=60) as client:
        yield client
