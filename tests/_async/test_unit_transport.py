"""The connection layer's seams (issue 15), in both flavours:

* ``Client(transport=...)``: a user's own httpx transport carries every request, under the
  SDK's policy (repeats, failover, errors mapped);
* a client given one HTTPS address asks, once per client and never per call, whether its
  server is a cluster's member, and then outlives the loss of that member.

That nothing in the SDK touches httpx's or httpcore's internals: tests/test_private_names.py.
"""

from __future__ import annotations

import httpx
import pytest

from incus_images import AsyncClient, IncusConnectionError, InvalidInputError
from tests.helpers import CLUSTER_MEMBERS, image, not_clustered, sha256, sync_response

pytestmark = pytest.mark.anyio

A, B = "https://node1.test:8443", "https://node2.test:8443"
FP = sha256(b"transport")


class Recorder:
    """A user's transport: it answers as a server would, and records what it was sent."""

    def __init__(self, *, down: set[str] = frozenset(), members: list[str] | None = None) -> None:
        self.sent: list[str] = []
        self.down = down
        self.members = members

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(f"{request.url.host} {request.url.path}")
        if request.url.host in self.down:
            raise httpx.ConnectError("Connection refused", request=request)
        if request.url.path == CLUSTER_MEMBERS:
            if self.members is None:
                return not_clustered()
            return sync_response([{"server_name": "m", "url": url} for url in self.members])
        return sync_response(image(FP))


async def test_a_users_transport_carries_every_request() -> None:
    recorder = Recorder()
    async with AsyncClient(A, transport=httpx.MockTransport(recorder)) as client:
        assert (await client.images.get(FP)).fingerprint == FP
        await client.images.get(FP)
    assert recorder.sent == [
        "node1.test /1.0/cluster/members",  # once per client
        f"node1.test /1.0/images/{FP}",
        f"node1.test /1.0/images/{FP}",
    ]


async def test_failures_of_a_users_transport_are_the_sdks_errors() -> None:
    recorder = Recorder(down={"node1.test"})
    async with AsyncClient(A, transport=httpx.MockTransport(recorder)) as client:
        with pytest.raises(IncusConnectionError, match="Connection refused") as caught:
            await client.images.get(FP)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_the_sdks_failover_runs_over_a_users_transport() -> None:
    recorder = Recorder(down={"node1.test"})
    async with AsyncClient([A, B], transport=httpx.MockTransport(recorder)) as client:
        assert (await client.images.get(FP)).fingerprint == FP
        assert client.server == B


async def test_one_https_address_of_a_cluster_is_enough() -> None:
    """Client(remote="prod") of a cluster names one member: the others are learnt at the
    first call, and the next call outlives that member's loss."""
    recorder = Recorder(members=[A, B])
    async with AsyncClient(A, transport=httpx.MockTransport(recorder)) as client:
        await client.images.get(FP)
        recorder.down = {"node1.test"}
        assert (await client.images.get(FP)).fingerprint == FP
        assert client.server == B
    assert recorder.sent.count("node1.test /1.0/cluster/members") == 1
    assert "node2.test /1.0/cluster/members" not in recorder.sent


async def test_a_unix_socket_client_asks_nothing_more() -> None:
    recorder = Recorder()
    async with AsyncClient("unix:///run/x.sock", transport=httpx.MockTransport(recorder)) as c:
        await c.images.get(FP)
    assert recorder.sent == [f"incus /1.0/images/{FP}"]


async def test_a_transport_that_is_none_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="transport must be an httpx"):
        AsyncClient(A, transport=object())  # type: ignore[arg-type]
