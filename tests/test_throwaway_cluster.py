"""The throwaway 3-member cluster (scripts/throwaway_cluster.py), against real incusd daemons.

Besides checking the fixture, this measures what the cluster failover of issue 8 must
handle, and prints it (run with ``-s``): how long forming, a stop, a restart and the OFFLINE
detection take, and what a member answers while it shuts down, on its unix socket and over
HTTPS, next to what a surviving member answers meanwhile.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from throwaway_cluster import ClusterMember, ThrowawayCluster, served_certificate
from throwaway_incusd import DaemonUnavailable
from tiny_image import unified_image

from incus_images import Client
from incus_images._sockets import SocketBackend
from tests.helpers import UNIX_BASE, sha256, wait_raw

pytestmark = pytest.mark.incusd

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
IMAGES = "/1.0/images?recursion=1"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI needs a real incusd cluster and cannot have one: {reason}", pytrace=False)
    pytest.skip(f"no throwaway cluster: {reason}")


@pytest.fixture(scope="module")
def cluster(certificates: Any) -> Iterator[ThrowawayCluster]:
    """A 3-member cluster on loopback addresses, trusting the session's client certificate."""
    made = ThrowawayCluster(members=3)
    try:
        made.start()
    except (DaemonUnavailable, subprocess.CalledProcessError) as exc:
        _unavailable(str(exc))
    try:
        made.trust(certificates.client_cert)
        yield made
    finally:
        made.stop()


def _unix(member: ClusterMember, **options: Any) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=member.socket_path, **options)
    # Plain httpx, but on the SDK's blocking network backend: httpcore's own leaves the socket
    # of each failed unix connect to the garbage collector, and the probes below connect to a
    # stopped member in a loop (on Python 3.13 the collector then reported them, as
    # ResourceWarnings, in a later test).
    transport._pool._network_backend = SocketBackend()
    return httpx.Client(transport=transport, base_url=UNIX_BASE, timeout=10)


def _pinned(certificate: str, certificates: Any) -> ssl.SSLContext:
    """The server must present exactly ``certificate``; its names are not checked (what the
    incus CLI does with a pinned certificate)."""
    context = ssl.create_default_context(cafile=certificate)
    context.check_hostname = False
    context.load_cert_chain(certificates.client_cert, certificates.client_key)
    return context


def _https(member: ClusterMember, context: ssl.SSLContext, **options: Any) -> httpx.Client:
    transport = httpx.HTTPTransport(verify=context, **options)
    return httpx.Client(transport=transport, base_url=member.url, timeout=10)


def _member_list(member: ClusterMember) -> list[dict[str, Any]]:
    with _unix(member) as raw:
        response = raw.get("/1.0/cluster/members", params={"recursion": "1"})
    assert response.status_code == 200, response.text
    return list(response.json()["metadata"])


def test_three_members_form_a_cluster_on_loopback_addresses(cluster: ThrowawayCluster) -> None:
    print(
        f"\ncluster: daemons started in {cluster.timings['daemons']:.2f} s, formed (bootstrap, "
        f"2 joins, all Online) in {cluster.timings['form']:.2f} s, "
        f"{cluster.timings['total']:.2f} s in all"
    )
    names = [member.name for member in cluster.members]
    hosts = [member.host for member in cluster.members]
    assert len(set(hosts)) == 3 and all(host.startswith("127.0.") for host in hosts)
    assert len({member.pid for member in cluster.members}) == 3
    for member in cluster.members:
        entries = _member_list(member)
        assert sorted(entry["server_name"] for entry in entries) == sorted(names)
        assert {entry["status"] for entry in entries} == {"Online"}
        assert {entry["url"] for entry in entries} == set(cluster.urls)
        with _unix(member) as raw:
            server = raw.get("/1.0").json()["metadata"]
        assert server["environment"]["server_clustered"] is True
        assert server["environment"]["server_name"] == member.name
        assert server["environment"]["addresses"] == [member.address]
        assert member.socket_path == f"{member.directory}/unix.socket"
    roles = {entry["server_name"]: entry["roles"] for entry in _member_list(cluster.members[0])}
    print(f"cluster: {[str(member) for member in cluster.members]}, roles {roles}")


def test_every_member_serves_the_one_cluster_certificate(cluster: ThrowawayCluster) -> None:
    expected = ssl.PEM_cert_to_DER_cert(Path(cluster.certificate).read_text())
    for member in cluster.members:
        served = ssl.PEM_cert_to_DER_cert(served_certificate(member.address))
        assert served == expected
        own = ssl.PEM_cert_to_DER_cert(Path(member.server_certificate).read_text())
        assert own != expected  # a member's own server.crt is not what it serves


def test_an_image_uploaded_on_one_member_is_listed_on_every_member(
    cluster: ThrowawayCluster,
) -> None:
    data = unified_image({"os": "cluster", "description": "uploaded on member2"})
    fingerprint = sha256(data)
    with _unix(cluster.members[1]) as raw:
        response = raw.post(
            "/1.0/images", content=data, headers={"Content-Type": "application/octet-stream"}
        )
        assert wait_raw(raw, response)["metadata"]["fingerprint"] == fingerprint
    try:
        for member in cluster.members:
            with _unix(member) as raw:
                listed = raw.get("/1.0/images", params={"recursion": "1"}).json()["metadata"]
            assert fingerprint in [image["fingerprint"] for image in listed], member.name
            with Client(member.endpoint) as client:
                assert client.images.get(fingerprint).properties["os"] == "cluster"
    finally:
        with _unix(cluster.members[2]) as raw:
            wait_raw(raw, raw.delete(f"/1.0/images/{fingerprint}"))


def test_a_trusted_client_works_over_https_on_every_member(
    cluster: ThrowawayCluster, certificates: Any
) -> None:
    # Incus's own cluster.crt, pinned: every member accepts the client.
    context = _pinned(cluster.certificate, certificates)
    for member in cluster.members:
        with _https(member, context) as raw:
            server = raw.get("/1.0").json()["metadata"]
            assert server["auth"] == "trusted", member.name
            assert raw.get(IMAGES).status_code == 200
    # Incus names only its host name, 127.0.0.1 and ::1 in cluster.crt: a client that checks
    # host names (the SDK with verify=<file>, today) refuses it on 127.0.X.Y.
    names = subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", cluster.certificate],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split("\n", 1)[-1]
    print(f"\nIncus's cluster.crt names: {names.strip()}")
    outcome = _sdk_list(cluster.members[0], cluster.certificate, certificates)
    print(f"SDK, verify=<Incus's cluster.crt> on {cluster.members[0].url}: {outcome}")

    # With a cluster certificate that names the members' addresses, verify= works as it is.
    started = time.monotonic()
    path = cluster.use_address_certificate()
    print(f"a cluster certificate naming the addresses installed in {_since(started)}")
    assert path == cluster.certificate
    for member in cluster.members:
        assert _sdk_list(member, path, certificates) == "works", member.name


def _sdk_list(member: ClusterMember, verify: str, certificates: Any) -> str:
    cert = (certificates.client_cert, certificates.client_key)
    try:
        with Client(member.url, cert=cert, verify=verify, timeout=10) as client:
            client.images.list()
            assert client.server_info().trusted
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "works"


# --- a member shutting down ------------------------------------------------------------------


class Probe:
    """Sends one GET after another on one client, in a thread, and records every outcome."""

    def __init__(self, label: str, make_client: Callable[[], httpx.Client]) -> None:
        self.label = label
        self._make_client = make_client
        self.outcomes: list[tuple[float, float, str]] = []  # (start, seconds, outcome)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Probe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with self._make_client() as client:
            while not self._stop.is_set():
                started = time.monotonic()
                outcome = self._outcome(client)
                self.outcomes.append((started, time.monotonic() - started, outcome))
                time.sleep(0.005)

    @staticmethod
    def _outcome(client: httpx.Client) -> str:
        try:
            response = client.get(IMAGES, timeout=5)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if response.status_code == 200:
            return "200"
        try:
            error = response.json().get("error")
        except ValueError:
            error = response.text[:200]
        return f"{response.status_code} {error}"

    def phases(self, origin: float) -> list[tuple[float, float, int, float, str]]:
        """Runs of equal outcomes: (first start, last start, count, slowest, outcome), times
        relative to ``origin``."""
        runs: list[list[Any]] = []
        for started, seconds, outcome in self.outcomes:
            if runs and runs[-1][4] == outcome:
                runs[-1][1] = started - origin
                runs[-1][2] += 1
                runs[-1][3] = max(runs[-1][3], seconds)
            else:
                runs.append([started - origin, started - origin, 1, seconds, outcome])
        return [(a, b, n, slowest, outcome) for a, b, n, slowest, outcome in runs]


def _since(started: float) -> str:
    return f"{time.monotonic() - started:.2f} s"


def _leader(cluster: ThrowawayCluster) -> ClusterMember:
    for entry in _member_list(cluster.members[0]):
        if "database-leader" in entry["roles"]:
            return cluster.member(entry["server_name"])
    raise AssertionError("no database leader")


# httpcore 1.0.9's blocking unix-socket connect leaks its socket when the connect fails (the
# socket file is gone): a ResourceWarning per refused probe, not a failure of the cluster.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_stopping_member_goes_offline_and_comes_back(
    cluster: ThrowawayCluster, certificates: Any
) -> None:
    # The database leader: the worst case (the survivors elect another one meanwhile).
    victim = _leader(cluster)
    survivor = next(member for member in cluster.members if member is not victim)
    context = _pinned(cluster.certificate, certificates)
    no_keepalive = {"limits": httpx.Limits(max_keepalive_connections=0)}
    probes = [
        Probe("unix socket, kept-alive connection", lambda: _unix(victim)),
        Probe("unix socket, a connection per request", lambda: _unix(victim, **no_keepalive)),
        Probe("HTTPS, kept-alive connection", lambda: _https(victim, context)),
        Probe("HTTPS, a connection per request", lambda: _https(victim, context, **no_keepalive)),
        Probe(f"the survivor {survivor.name}, unix socket", lambda: _unix(survivor)),
    ]
    for probe in probes:
        probe.start()
    time.sleep(0.3)
    signalled = time.monotonic()
    took = cluster.stop_member(victim)
    exited = time.monotonic()
    time.sleep(1.0)
    for probe in probes:
        probe.stop()

    print(
        f"\n{victim.name} (database leader) stopped with SIGTERM: exited after {took:.3f} s. "
        f"GET {IMAGES} in a loop, times from the SIGTERM:"
    )
    for probe in probes:
        print(f"  {probe.label}:")
        for first, last, count, slowest, outcome in probe.phases(signalled):
            print(
                f"    {first:+.3f} .. {last:+.3f} s  x{count:<4} slowest {slowest * 1000:4.0f} ms"
                f"  {outcome}"
            )
    assert took < 15
    for probe in probes[:4]:
        outcomes = [outcome for started, _, outcome in probe.outcomes if started > exited]
        assert outcomes and all(outcome.startswith("ConnectError") for outcome in outcomes)
        during = {outcome for started, _, outcome in probe.outcomes if started >= signalled}
        expected = ("200", "500 ", "ConnectError", "ReadError", "RemoteProtocolError")
        assert all(outcome.startswith(expected) for outcome in during), during
    assert {outcome for _, _, outcome in probes[4].outcomes} == {"200"}

    cluster.wait_for_status(victim, "Offline", timeout=40)
    print(
        f"{victim.name} Offline for the others {_since(exited)} after its exit "
        f"(cluster.offline_threshold = {cluster.offline_threshold} s)"
    )
    back = cluster.start_member(victim)
    print(f"{victim.name} restarted on its directory: answers and Online for all in {back:.2f} s")
    assert {entry["status"] for entry in _member_list(victim)} == {"Online"}
    with _https(victim, context) as raw:
        assert raw.get(IMAGES).status_code == 200


def test_a_killed_member_comes_back(cluster: ThrowawayCluster) -> None:
    victim = cluster.members[2]
    old_pid = victim.pid
    took = cluster.kill_member(victim)
    assert not victim.running
    with _unix(cluster.members[0]) as raw:
        assert raw.get(IMAGES).status_code == 200
    back = cluster.start_member(victim)
    print(f"\n{victim.name} SIGKILLed ({took:.3f} s), restarted and Online in {back:.2f} s")
    assert victim.pid != old_pid and victim.pids[-1] == victim.pid
    assert {entry["status"] for entry in _member_list(victim)} == {"Online"}


def test_a_member_that_cannot_join_fails_the_start_and_leaves_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = ThrowawayCluster(members=2, attempts=1)
    monkeypatch.setattr(broken, "_join_token", lambda sponsor, name: "bm90IGEgdG9rZW4=")
    started = time.monotonic()
    with pytest.raises(DaemonUnavailable) as caught:
        broken.start()
    message = str(caught.value)
    print(f"\na failed join, reported and cleaned up in {_since(started)}:\n{message[:300]}")
    assert "member2" in message and "joining the cluster failed" in message
    assert "level=" in message  # the member's log tail
    _assert_gone(broken)


def test_a_formation_that_failed_is_tried_again_on_new_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = ThrowawayCluster(members=2)
    real_token = made._join_token
    calls: list[str] = []

    def token(sponsor: ClusterMember, name: str) -> str:
        calls.append(name)
        return "bm90IGEgdG9rZW4=" if len(calls) == 1 else real_token(sponsor, name)

    monkeypatch.setattr(made, "_join_token", token)
    started = time.monotonic()
    made.start()
    try:
        print(f"\na failed formation, then a good one: {_since(started)}")
        assert len(made.failed_attempts) == 1 and "joining the cluster" in made.failed_attempts[0]
        assert {entry["status"] for entry in _member_list(made.members[1])} == {"Online"}
    finally:
        made.stop()
    _assert_gone(made)


def test_stop_ends_every_daemon_and_removes_everything(cluster: ThrowawayCluster) -> None:
    pids = [pid for member in cluster.members for pid in member.pids]
    started = time.monotonic()
    taken = cluster.stop()
    print(
        f"\ncluster stopped in {_since(started)}: "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in taken.items())
    )
    assert len(pids) >= 3
    _assert_gone(cluster)
    assert cluster.stop() == {}  # a second stop does nothing


def _assert_gone(cluster: ThrowawayCluster) -> None:
    for member in cluster.members:
        assert not member.running
        assert member.directory is None
        for pid in member.pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            assert b"incusd" not in cmdline, f"{member.name}: pid {pid} still runs"
        with pytest.raises(ConnectionRefusedError):  # nobody listens on its address any more
            socket.create_connection((member.host, member.port), timeout=2).close()
