"""The event stream of a 3-member loopback cluster moves to another member when the member it
watches stops (issue 18), in both flavours.

incusd forwards every member's events to the listeners of every other member (a change made
through member2 reaches a listener on member1, with ``location="member2"``). When the watched
member stops, its stream ends without a close frame; the stream reopens through the client's
failover on a member that is still up, says what may have been missed with an EventGap, and
events made through another member arrive again.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from throwaway_cluster import ThrowawayCluster
from throwaway_incusd import unix_request

from incus_images import AsyncClient, EventGap, ImageEvent
from tests._async.test_daemon_cluster import _stored_image, cluster  # noqa: F401 - the fixture
from tests._async.test_daemon_events import alias_created, read_until
from tests._async.test_daemon_events_restart import AliasMaker
from tests.conftest import Certificates
from tests.helpers import unique

pytestmark = [pytest.mark.anyio, pytest.mark.incusd]  # starts daemons of its own


async def test_the_stream_moves_to_another_member_when_the_watched_one_stops(
    cluster: ThrowawayCluster,  # noqa: F811 - the fixture imported above
    certificates: Certificates,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="incus_images")
    first, second = cluster.members[0], cluster.members[1]
    fingerprint = _stored_image(cluster, unique("events"))
    via_second = unique("via-member2")
    try:
        async with (
            AsyncClient(
                [first.url],
                cert=(certificates.client_cert, certificates.client_key),
                verify=cluster.certificate,
            ) as client,
            client.images.watch() as changes,
        ):
            assert client.server == first.url
            status, _ = unix_request(
                second.socket_path,
                "POST",
                "/1.0/images/aliases",
                {"name": via_second, "target": fingerprint},
            )
            assert status in (200, 201)
            before = await read_until(changes, alias_created(via_second))
            stop_began = datetime.now(UTC)
            took = cluster.stop_member(first)
            stopped = datetime.now(UTC)
            with AliasMaker(second.socket_path, fingerprint) as maker:
                after = await read_until(changes, maker.made_by_me)
            server_after = client.server
    finally:
        if not first.running:
            cluster.start_member(first)  # for whatever runs after this test on the cluster
    gap = after[0]
    print(
        f"\ncluster: member1 stopped in {took:.2f} s; the stream moved to {server_after}; "
        f"{gap!r}; {maker.failed} changes failed meanwhile"
    )
    # Made through member2, heard on member1.
    last_before = before[-1]
    assert isinstance(last_before, ImageEvent) and last_before.location == second.name
    assert isinstance(gap, EventGap), after
    assert gap.since <= stop_began <= stopped <= gap.until
    assert [event for event in after if isinstance(event, EventGap)] == [gap]
    assert server_after in cluster.urls[1:]
    heard = after[-1]
    assert isinstance(heard, ImageEvent) and heard.location == second.name
    # The log says where the stream went.
    [reopened] = [r.getMessage() for r in caplog.records if "is open again" in r.getMessage()]
    assert reopened.startswith(f"The event stream of {first.url} is open again on {server_after};")
