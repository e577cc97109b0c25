"""Cluster failover on a real 3-member cluster on loopback addresses (issue 8), in both
flavours: the client names one member, learns the others, and keeps every safe call working
while the member it uses stops in the middle of a run."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from throwaway_cluster import ThrowawayCluster
from throwaway_incusd import DaemonUnavailable
from tiny_image import unified_image

from incus_images import AsyncClient, IncusError
from tests.conftest import Certificates, _unavailable
from tests.helpers import UNIX_BASE, unique, wait_raw

pytestmark = [pytest.mark.anyio, pytest.mark.incusd]  # starts daemons of its own

#: Calls made after the stop has finished, to show the client settled on another member.
CALLS_AFTER_THE_STOP = 40


@pytest.fixture(scope="module")
def cluster(certificates: Certificates) -> Iterator[ThrowawayCluster]:
    """A cluster of this module's own (a member is stopped here), trusting the client."""
    cluster = ThrowawayCluster(members=3)
    try:
        cluster.start()
    except DaemonUnavailable as exc:
        _unavailable(f"cannot form a throwaway cluster: {exc}")
    try:
        cluster.trust(certificates.client_cert)
        yield cluster
    finally:
        cluster.stop()


def _stored_image(cluster: ThrowawayCluster, alias: str) -> str:
    """Upload a small image through the first member; return its fingerprint."""
    member = cluster.members[0]
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=member.socket_path), base_url=UNIX_BASE, timeout=60
    ) as raw:
        response = raw.post(
            "/1.0/images",
            content=unified_image({"os": alias}),
            headers={
                "Content-Type": "application/octet-stream",
                "X-Incus-aliases": f"alias={alias}",
            },
        )
        return str(wait_raw(raw, response)["metadata"]["fingerprint"])


async def test_every_safe_call_survives_the_member_in_use_stopping(
    cluster: ThrowawayCluster,
    certificates: Certificates,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    alias = unique("cluster")
    fingerprint = _stored_image(cluster, alias)
    first = cluster.members[0]
    #: (started, seconds) of every call
    calls: list[tuple[float, float]] = []
    failures: list[str] = []
    stopped = threading.Event()
    caplog.set_level("WARNING", logger="incus_images")
    stop_seconds: list[float] = []
    enough_before = threading.Event()

    stop_window: list[float] = []

    def stop_first_member() -> None:
        enough_before.wait(60)
        stop_window.append(time.perf_counter())
        stop_seconds.append(cluster.stop_member(first))
        stop_window.append(time.perf_counter())
        stopped.set()

    stopper = threading.Thread(target=stop_first_member)
    async with AsyncClient(
        [first.url],
        cert=(certificates.client_cert, certificates.client_key),
        verify=cluster.certificate,
    ) as client:
        await client.images.list()
        assert client.server == first.url
        stopper.start()
        calls_after = 0
        round_number = 0
        try:
            while calls_after < CALLS_AFTER_THE_STOP:
                round_number += 1
                for name in ("list", "get", "get_alias", "export"):
                    started = time.perf_counter()
                    try:
                        if name == "list":
                            listed = await client.images.list()
                            assert fingerprint in [image.fingerprint for image in listed]
                        elif name == "get":
                            assert (await client.images.get(fingerprint)).fingerprint == fingerprint
                        elif name == "get_alias":
                            assert (await client.images.get_alias(alias)).target == fingerprint
                        else:
                            written = await client.images.export(
                                fingerprint, tmp_path / f"export-{round_number}.tar.gz"
                            )
                            assert len(written) == 1
                            written[0].unlink()
                    except IncusError as exc:
                        failures.append(f"{name}: {type(exc).__name__}: {exc}")
                    calls.append((started, time.perf_counter() - started))
                    if stopped.is_set():
                        calls_after += 1
                if round_number == 10:
                    enough_before.set()  # stop the member while calls keep coming
        finally:
            enough_before.set()
            stopper.join(60)
        member_in_use_after = client.server
    cluster.start_member(first)  # for whatever runs after this test on the cluster

    latencies = sorted(seconds for _, seconds in calls)
    # Calls that were in flight at some moment while member1 was stopping.
    during = [
        (started, seconds)
        for started, seconds in calls
        if started < stop_window[1] and started + seconds > stop_window[0]
    ]
    moved = [record for record in caplog.records if "trying cluster member" in record.getMessage()]
    with capsys.disabled():
        print(
            f"\ncluster failover: {len(calls)} calls (list/get/get_alias/export), "
            f"{len(failures)} failed; {len(during)} in flight while member1 stopped "
            f"({stop_seconds[0] * 1000:.0f} ms), {len(moved)} went on to another member; "
            f"slowest {latencies[-1] * 1000:.0f} ms, "
            f"median {latencies[len(latencies) // 2] * 1000:.1f} ms; "
            f"then served by {member_in_use_after}"
        )
    assert failures == []
    assert during, "no call was in flight while the member stopped: the run tested nothing"
    assert moved, "no call had to go to another member: the stop was not seen"
    assert member_in_use_after in cluster.urls[1:]
    # The warning names the member the client moved to.
    assert any(member_in_use_after in record.getMessage() for record in moved)


async def test_a_stalled_member_named_first_costs_half_the_first_call_at_most(
    cluster: ThrowawayCluster, certificates: Certificates, caplog: pytest.LogCaptureFixture
) -> None:
    """Listing the members is part of the first call and takes half its time at most: a
    member that never answers, named first, leaves the call the rest for a real member
    (before, the listing had a deadline of its own, and then the call)."""
    caplog.set_level(logging.WARNING, logger="incus_images")
    with socket.socket() as stalled:  # accepts connections (the kernel does), never answers
        stalled.bind(("127.0.0.1", 0))
        stalled.listen(16)
        stalled_url = f"https://127.0.0.1:{stalled.getsockname()[1]}"
        async with AsyncClient(
            [stalled_url, cluster.members[1].url],
            cert=(certificates.client_cert, certificates.client_key),
            verify=cluster.certificate,
            timeout=4,
        ) as client:
            started = time.monotonic()
            await client.images.list()
            took = time.monotonic() - started
            assert client.server == cluster.members[1].url
            await client.images.list()  # the cluster is asked now, and answers
    [warning] = [record.getMessage() for record in caplog.records]
    assert warning.startswith(
        f"incus_images: cannot list the cluster's members: Could not list the cluster's "
        f"members on {stalled_url}: no answer in time"
    )
    assert warning.endswith(f"2 s, its part of timeout=4 s ran out); going on with {client.server}")
    assert took < 3, took  # 2 s for the listing, then the call; 4 s and more before
