"""Fault injection, the short version for CI (the long one: ``python scripts/faults.py``).

A loopback proxy cuts, resets, stalls or interrupts the SDK's calls at seeded random byte
offsets, and a daemon is killed mid-transfer and restarted on its directory; after every trial
the harness (``scripts/faults.py``) checks the promises: success or a typed error, no partial
file, no temporary file, no image left behind without the error saying so. The seed is fixed
and printed; a failing trial prints the command that replays it.

The proxy's own behaviour is tested first, against plain loopback servers, so that a finding
below is the SDK's and not the harness's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faults import (
    DOWN,
    FINAL_REPORT,
    FLAVOURS,
    KILL_OPS,
    KILL_PAYLOAD,
    NO_FAULT,
    STALL_TIMEOUT,
    UP,
    FaultDaemon,
    FaultProxy,
    Harness,
    Site,
    TrialSpec,
    report,
)
from faults import Fault as ProxyFault
from throwaway_incusd import DaemonUnavailable

SEED = 1010
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

EXPORTS = ("export-file", "export-dir", "export-split-file", "export-split-dir")
UPLOADS = ("create-bytes", "create-path", "create-split")
WAITS_AND_LISTS = ("wait-upload", "wait-token", "list")
COPIES = ("copy-relay", "copy-pull")


class BrokenPromise(AssertionError):
    """A trial broke one of the SDK's promises."""


def keep_promises(harness: Harness, started: float) -> None:
    text = report(harness, time.monotonic() - started)
    print(text)
    if harness.broken:
        raise BrokenPromise(text)


# --------------------------------------------------------------------------------------------
# The proxy itself, against plain loopback servers.


class Upstream:
    """A loopback server for one connection: it reads until EOF (or ``expect`` bytes), then
    sends ``reply`` bytes and closes. ``received`` counts what arrived."""

    def __init__(self, reply: int, *, expect: int | None = None, unix: str | None = None) -> None:
        self.reply = reply
        self.expect = expect
        self.received = 0
        self.ended_by: str | None = None
        if unix is None:
            self.listener = socket.create_server(("127.0.0.1", 0))
            self.address: Any = ("127.0.0.1", self.listener.getsockname()[1])
        else:
            self.listener = socket.socket(socket.AF_UNIX)
            self.listener.bind(unix)
            self.listener.listen(1)
            self.address = unix
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            try:
                while self.expect is None or self.received < self.expect:
                    data = connection.recv(65536)
                    if not data:
                        self.ended_by = "eof"
                        return
                    self.received += len(data)
                connection.sendall(b"r" * self.reply)
                self.ended_by = "replied"
            except OSError as exc:
                self.ended_by = type(exc).__name__

    def close(self) -> None:
        self.thread.join(10)
        self.listener.close()


def proxy_address(proxy: FaultProxy) -> tuple[str, int]:
    return ("127.0.0.1", int(proxy.endpoint.rsplit(":", 1)[1]))


def exchange(proxy: FaultProxy, send: int) -> tuple[int, str]:
    """Send ``send`` bytes through the proxy, then read the answer; return (bytes read, how
    the read ended)."""
    with socket.create_connection(proxy_address(proxy), timeout=10) as client:
        try:
            client.sendall(b"s" * send)
            received = 0
            while True:
                data = client.recv(65536)
                if not data:
                    return received, "eof"
                received += len(data)
        except OSError as exc:
            return received, type(exc).__name__


@pytest.fixture
def tcp_proxy() -> Iterator[tuple[FaultProxy, Upstream]]:
    upstream = Upstream(50_000, expect=100_000)
    proxy = FaultProxy(upstream.address)
    yield proxy, upstream
    proxy.close()
    upstream.close()


def test_the_proxy_forwards_both_ways_and_counts_every_byte(
    tcp_proxy: tuple[FaultProxy, Upstream],
) -> None:
    proxy, _ = tcp_proxy
    proxy.arm(NO_FAULT)
    assert exchange(proxy, 100_000) == (50_000, "eof")
    assert proxy.wait_idle()
    traffic = proxy.disarm()
    assert (traffic.up, traffic.down, traffic.connections, traffic.fired) == (
        100_000,
        50_000,
        1,
        False,
    )
    assert traffic.starts(UP) == [0]
    assert traffic.starts(DOWN) == [0]


def test_a_close_lets_exactly_offset_bytes_through_then_ends_both_sides(
    tcp_proxy: tuple[FaultProxy, Upstream],
) -> None:
    proxy, upstream = tcp_proxy
    proxy.arm(ProxyFault("close", UP, 12_345))
    received, _ = exchange(proxy, 100_000)
    upstream.thread.join(10)
    assert (upstream.received, upstream.ended_by, received) == (12_345, "eof", 0)
    assert proxy.disarm().fired


def test_a_reset_in_the_answer_resets_the_client_after_offset_bytes(
    tcp_proxy: tuple[FaultProxy, Upstream],
) -> None:
    proxy, _ = tcp_proxy
    proxy.arm(ProxyFault("reset", DOWN, 1_000))
    assert exchange(proxy, 100_000) == (1_000, "ConnectionResetError")
    assert proxy.disarm().fired


def test_a_stall_holds_the_rest_back_and_then_delivers_it(
    tcp_proxy: tuple[FaultProxy, Upstream],
) -> None:
    proxy, _ = tcp_proxy
    proxy.arm(ProxyFault("stall", DOWN, 10, seconds=0.3))
    started = time.monotonic()
    assert exchange(proxy, 100_000) == (50_000, "eof")
    assert time.monotonic() - started >= 0.3
    assert proxy.disarm().fired


def test_an_offset_beyond_the_traffic_never_strikes(
    tcp_proxy: tuple[FaultProxy, Upstream],
) -> None:
    proxy, _ = tcp_proxy
    proxy.arm(ProxyFault("reset", DOWN, 50_000))
    assert exchange(proxy, 100_000) == (50_000, "eof")
    assert not proxy.disarm().fired


def test_a_callback_runs_at_the_offset_and_the_bytes_flow_on(
    tcp_proxy: tuple[FaultProxy, Upstream],
) -> None:
    proxy, _ = tcp_proxy
    calls: list[int] = []
    proxy.arm(ProxyFault("kill", UP, 70_000), on_fire=lambda: calls.append(1))
    assert exchange(proxy, 100_000) == (50_000, "eof")
    assert calls == [1]
    assert proxy.disarm().up == 100_000


def test_a_unix_socket_proxy_cuts_the_same_way() -> None:
    with tempfile.TemporaryDirectory(prefix="faults-") as directory:
        upstream = Upstream(10, expect=5_000, unix=os.path.join(directory, "up.sock"))
        proxy = FaultProxy(upstream.address)
        try:
            assert proxy.endpoint.startswith("unix://")
            proxy.arm(ProxyFault("close", UP, 777))
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(proxy.endpoint.removeprefix("unix://"))
                with contextlib.suppress(OSError):
                    client.sendall(b"s" * 5_000)
                assert client.recv(100) == b""
            upstream.thread.join(10)
            assert (upstream.received, upstream.ended_by) == (777, "eof")
        finally:
            proxy.close()
            upstream.close()


@pytest.mark.parametrize("host", ["192.0.2.1", "10.0.0.1", "0.0.0.0"])
def test_the_proxy_forwards_only_to_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        FaultProxy((host, 8443))


# --------------------------------------------------------------------------------------------
# The SDK under faults, on the session's daemon.


@pytest.fixture(scope="module")
def site(incusd: Any, https_server: Any) -> Iterator[Site]:
    """The session daemon behind two proxies (HTTPS and unix socket), with the images the
    export trials read (deleted afterwards)."""
    site = Site(incusd, (https_server.client_cert, https_server.client_key))
    yield site
    try:
        for fingerprint in site.exports.values():
            site.delete_image(fingerprint)
    finally:
        site.close()


def harness_for(site: Site, directory: Path, **options: Any) -> Harness:
    print(f"seed {SEED}")
    return Harness(site, directory, seed=SEED, log=print, **options)


@pytest.mark.incusd
def test_exports_cut_stalled_or_interrupted_leave_no_partial_or_temporary_file(
    site: Site, tmp_path: Path
) -> None:
    started = time.monotonic()
    harness = harness_for(site, tmp_path, ops=EXPORTS, mid_transfer=True)
    results = harness.run(16)
    assert sum(record.fired for record in results) >= 12
    assert {record.outcome for record in results} - {"success"}, "no fault made a call fail"
    keep_promises(harness, started)


@pytest.mark.incusd
def test_waits_and_lists_under_faults_end_in_success_or_a_typed_error(
    site: Site, tmp_path: Path
) -> None:
    started = time.monotonic()
    harness = harness_for(site, tmp_path, ops=WAITS_AND_LISTS)
    results = harness.run(12)
    assert sum(record.fired for record in results) >= 8
    keep_promises(harness, started)


@pytest.mark.incusd
def test_uploads_cut_stalled_or_interrupted_while_sending_store_nothing_unannounced(
    site: Site, tmp_path: Path
) -> None:
    started = time.monotonic()
    harness = harness_for(site, tmp_path, ops=UPLOADS, mid_transfer=True)
    results = harness.run(12)
    assert sum(record.fired for record in results) >= 10
    keep_promises(harness, started)


@pytest.mark.incusd
def test_copies_from_a_faulted_source_lose_and_leave_nothing_unannounced(
    site: Site, tmp_path: Path
) -> None:
    """The client's connection to the source is cut, reset, stalled or interrupted: the source
    keeps its image, the target holds nothing unannounced, and a download secret left valid
    is named in the error. (Source and target are two projects of one daemon, which copies
    the image's files between them instead of downloading them, so a pull's secret goes
    unused: these trials found that a successful pull left it valid.)"""
    started = time.monotonic()
    harness = harness_for(site, tmp_path, ops=COPIES)
    results = harness.run(12)
    assert sum(record.fired for record in results) >= 8
    assert {record.outcome for record in results} - {"success"}, "no fault made a copy fail"
    keep_promises(harness, started)


def _upload_turns(harness: Harness, site: Site) -> tuple[list[int], list[int], int]:
    """Where, on the unix socket, an upload's requests and answers begin: the POST and its
    202, the operation's wait and its answer, the image's GET and its answer (after the
    survey of the images held, which every upload that waits makes first)."""
    traffic = harness.calibrated(site, "create-bytes", "unix")
    requests, answers = traffic.starts(UP), traffic.starts(DOWN)
    assert len(requests) == 4, traffic.turns
    assert len(answers) == 4, traffic.turns
    return requests[1:], answers[1:], traffic.down


def _run_one(harness: Harness, site: Site, spec: TrialSpec, *, succeeds: bool = False) -> None:
    """One call under one fault that must strike and make it fail (or, where the SDK repeats
    the request, succeed); then the promises."""
    started = time.monotonic()
    record = harness.run_spec(site, spec)
    harness.sweep()
    assert record.fired
    assert (record.outcome == "success") is succeeds, record.outcome
    keep_promises(harness, started)


def _run_after_acceptance(
    harness: Harness,
    site: Site,
    flavour: str,
    fault: ProxyFault,
    where: str,
    *,
    succeeds: bool = False,
) -> None:
    spec = TrialSpec(where, "create-bytes", flavour, "unix", fault)
    _run_one(harness, site, spec, succeeds=succeeds)


def _wait_fault(harness: Harness, site: Site, where: str) -> ProxyFault:
    requests, answers, _ = _upload_turns(harness, site)
    if where == "request":
        return ProxyFault("reset", UP, (requests[1] + requests[2]) // 2)
    if where == "answer":
        return ProxyFault("close", DOWN, (answers[1] + answers[2]) // 2)
    return ProxyFault("interrupt", UP, (requests[1] + requests[2]) // 2)


@pytest.mark.incusd
@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("where", ["request", "answer"])
def test_a_connection_lost_while_create_waits_is_repeated_and_the_upload_succeeds(
    site: Site, tmp_path: Path, flavour: str, where: str
) -> None:
    """The wait is safe to repeat: a connection that dies under it is replaced at once."""
    harness = harness_for(site, tmp_path)
    fault = _wait_fault(harness, site, where)
    _run_after_acceptance(harness, site, flavour, fault, f"wait's {where}", succeeds=True)


@pytest.mark.incusd
def test_a_task_cancelled_while_create_waits_for_the_upload_says_the_image_may_be_stored(
    site: Site, tmp_path: Path
) -> None:
    harness = harness_for(site, tmp_path)
    fault = _wait_fault(harness, site, "cancel")
    _run_after_acceptance(harness, site, "async", fault, "cancelled in the wait")


@pytest.mark.incusd
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_connection_lost_while_create_reads_the_new_image_is_repeated(
    site: Site, tmp_path: Path, flavour: str
) -> None:
    harness = harness_for(site, tmp_path)
    _, answers, down = _upload_turns(harness, site)
    fault = ProxyFault("reset", DOWN, (answers[2] + down) // 2)
    _run_after_acceptance(harness, site, flavour, fault, "the image's answer", succeeds=True)


@pytest.mark.incusd
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_stall_while_create_reads_the_new_image_says_the_image_is_stored(
    site: Site, tmp_path: Path, flavour: str
) -> None:
    """A timeout is not repeated (the server may just be slow): the error says what is there."""
    harness = harness_for(site, tmp_path)
    _, answers, down = _upload_turns(harness, site)
    # Longer than the trial's timeout.
    fault = ProxyFault("stall", DOWN, (answers[2] + down) // 2, STALL_TIMEOUT * 2.5)
    spec = TrialSpec("the image's answer stalled", "create-bytes", flavour, "unix", fault)
    _run_one(harness, site, dataclasses.replace(spec, timeout=STALL_TIMEOUT))


@pytest.mark.incusd
def test_a_task_cancelled_as_the_last_upload_bytes_go_out_does_not_say_nothing_was_stored(
    site: Site, tmp_path: Path
) -> None:
    harness = harness_for(site, tmp_path)
    # From the progress callback, at the report of the last byte (one 1 MiB chunk holds the
    # whole of a small image); the same happens when another task cancels at that moment.
    fault = ProxyFault("interrupt", None, FINAL_REPORT)
    spec = TrialSpec("cancelled at the last byte", "create-bytes", "async", "https", fault)
    _run_one(harness, site, dataclasses.replace(spec, payload=4096))


@pytest.mark.incusd
@pytest.mark.parametrize("op", ["export-file", "export-dir"])
def test_a_task_cancelled_at_the_last_export_report_leaves_nothing_under_the_target(
    site: Site, tmp_path: Path, op: str
) -> None:
    harness = harness_for(site, tmp_path)
    fault = ProxyFault("interrupt", None, FINAL_REPORT)
    _run_one(harness, site, TrialSpec("cancelled at the last report", op, "async", "unix", fault))


# --------------------------------------------------------------------------------------------
# A daemon killed mid-call.


@pytest.fixture(scope="module")
def kill_site(certificates: Any) -> Iterator[Site]:
    """A daemon of this module's own, over HTTPS too, that the trials SIGKILL and restart."""
    daemon = FaultDaemon()
    try:
        daemon.start()
    except (DaemonUnavailable, subprocess.CalledProcessError) as exc:
        if IN_CI:
            pytest.fail(f"CI needs a real incusd and cannot have one: {exc}", pytrace=False)
        pytest.skip(f"no throwaway incusd: {exc}")
    try:
        daemon.enable_https()
        daemon.trust(certificates.client_cert)
        site = Site(
            daemon, (certificates.client_cert, certificates.client_key), payload=KILL_PAYLOAD
        )
        try:
            yield site
        finally:
            site.close()
    finally:
        daemon.stop()


@pytest.mark.incusd
def test_a_daemon_killed_mid_upload_or_export_leaves_nothing_behind(
    site: Site, kill_site: Site, tmp_path: Path
) -> None:
    started = time.monotonic()
    harness = harness_for(site, tmp_path, kill_site=kill_site, mid_transfer=True)
    results = [harness.run_kill(index) for index in range(len(KILL_OPS))]
    harness.sweep()
    assert all(record.restarted for record in results), [r.line() for r in results]
    assert {record.spec.flavour for record in results} == set(FLAVOURS)
    keep_promises(harness, started)
