"""Cluster failover (issues 8 and 14), in both flavours: which calls go to another member,
which members are learnt, and which are skipped for a while (respx); how long a call may take
and how many members it tries (members on loopback sockets, since the deadlines live in the
network layer that respx replaces)."""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from incus_images import (
    APIError,
    AsyncClient,
    IncusConnectionError,
    IncusTimeoutError,
    InvalidInputError,
)
from incus_images._endpoint import MAX_CLUSTER_MEMBERS
from incus_images._sockets import AsyncSocketBackend
from tests.helpers import error_response, image, sha256, sync_response

pytestmark = pytest.mark.anyio

A, B, C = (f"https://node{n}.test:8443" for n in (1, 2, 3))
#: The members one call tries at most (MAX_MEMBERS_PER_CALL, in the flavour's _transport).
MEMBERS_A_CALL_TRIES = 10
FP = sha256(b"cluster")
REFUSED = httpx.ConnectError("Connection refused")
GOING = error_response(500, "Failed to begin transaction: sql: database is closed")


def members(*urls: str) -> httpx.Response:
    return sync_response(
        [{"server_name": url.split("//")[1].split(".")[0], "url": url} for url in urls]
    )


@pytest.fixture
def mock() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


def hosts(router: respx.MockRouter) -> list[str]:
    return [f"{call.request.url.host} {call.request.url.path}" for call in router.calls]


async def test_a_member_that_cannot_be_reached_is_left_for_the_next(
    mock: respx.MockRouter,
) -> None:
    mock.route(host="node1.test").mock(side_effect=REFUSED)
    mock.get(f"{B}/1.0/cluster/members").mock(return_value=members(A, B))
    mock.get(f"{B}/1.0/images/{FP}").mock(return_value=sync_response(image(FP)))
    async with AsyncClient([A, B], verify=False) as client:
        assert (await client.images.get(FP)).fingerprint == FP
        assert client.server == B
        # The member that works is used first from then on; it is asked for the members,
        # which the cluster has not told yet.
        await client.images.get(FP)
    assert hosts(mock) == [
        "node1.test /1.0/cluster/members",
        "node2.test /1.0/images/" + FP,
        "node2.test /1.0/cluster/members",
        "node2.test /1.0/images/" + FP,
    ]


async def test_one_member_named_is_enough_once_the_others_are_learnt(
    mock: respx.MockRouter,
) -> None:
    node1 = mock.route(host="node1.test")
    node1.side_effect = [members(A, B, C), REFUSED]
    mock.get(f"{B}/1.0/images/{FP}").mock(return_value=sync_response(image(FP)))
    async with AsyncClient([A], verify=False) as client:
        assert (await client.images.get(FP)).fingerprint == FP
    assert hosts(mock)[-1] == f"node2.test /1.0/images/{FP}"


async def test_a_member_going_down_sends_reads_elsewhere_but_not_writes(
    mock: respx.MockRouter,
) -> None:
    mock.get(f"{A}/1.0/cluster/members").mock(return_value=members(A, B))
    mock.get(f"{A}/1.0/images/{FP}").mock(return_value=GOING)
    mock.get(f"{B}/1.0/images/{FP}").mock(return_value=sync_response(image(FP)))
    mock.post(f"{B}/1.0/images/aliases").mock(return_value=GOING)
    async with AsyncClient([A, B], verify=False) as client:
        assert (await client.images.get(FP)).fingerprint == FP
        # A write is not repeated: its member may have applied it before answering.
        with pytest.raises(APIError, match="database is closed"):
            await client.images.create_alias("x", FP)
    assert [line for line in hosts(mock) if "aliases" in line] == ["node2.test /1.0/images/aliases"]


async def test_a_write_that_never_left_goes_to_the_next_member(mock: respx.MockRouter) -> None:
    mock.get(f"{A}/1.0/cluster/members").mock(return_value=members(A, B))
    mock.post(f"{A}/1.0/images/aliases").mock(side_effect=REFUSED)
    mock.post(f"{B}/1.0/images/aliases").mock(return_value=sync_response(None, status=201))
    mock.get(f"{B}/1.0/images/aliases/x").mock(
        return_value=sync_response({"name": "x", "target": FP, "description": "", "type": ""})
    )
    async with AsyncClient([A, B], verify=False) as client:
        assert (await client.images.create_alias("x", FP)).name == "x"


async def test_a_failed_member_is_skipped_for_a_while(mock: respx.MockRouter) -> None:
    mock.get(f"{A}/1.0/cluster/members").mock(return_value=members(A, B, C))
    node1 = mock.get(f"{A}/1.0/images/{FP}").mock(side_effect=REFUSED)
    mock.get(f"{B}/1.0/images/{FP}").mock(side_effect=[sync_response(image(FP)), REFUSED, REFUSED])
    mock.get(f"{C}/1.0/images/{FP}").mock(return_value=sync_response(image(FP)))
    async with AsyncClient([A], verify=False) as client:
        await client.images.get(FP)  # A fails, B answers
        await client.images.get(FP)  # B fails: C next, not A, which failed just now
        assert client.server == C
    assert node1.call_count == 1


async def test_when_every_member_fails_the_last_error_is_raised(mock: respx.MockRouter) -> None:
    mock.route().mock(side_effect=REFUSED)
    async with AsyncClient([A, B, C], verify=False) as client:
        with pytest.raises(IncusConnectionError, match="refused"):
            await client.images.get(FP)


@pytest.mark.parametrize(
    "url",
    [
        "http://node4.test:8443",
        "https://node4.test:8443/path",
        "unix:///run/incus/unix.socket",
        "https://user@node4.test",
        "https://[bad",
        5,
        None,
    ],
)
async def test_hostile_member_urls_are_not_used(
    mock: respx.MockRouter, url: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad entry is left out, with a warning that quotes it; the good ones are used."""
    caplog.set_level(logging.WARNING, logger="incus_images")
    mock.get(f"{A}/1.0/cluster/members").mock(
        return_value=sync_response([{"url": url}, {"url": B}])
    )
    mock.get(f"{A}/1.0/images/{FP}").mock(side_effect=REFUSED)
    mock.get(f"{B}/1.0/images/{FP}").mock(return_value=sync_response(image(FP)))
    async with AsyncClient([A], verify=False) as client:
        await client.images.get(FP)
    assert {call.request.url.host for call in mock.calls} == {"node1.test", "node2.test"}
    left_out = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert left_out == [
        f"incus_images: 1 of the cluster members {A} lists are left out, not being "
        f"https://host:port: {repr(url)[:62]}"
    ]


@pytest.mark.parametrize("count", [MAX_CLUSTER_MEMBERS + 1, 100_000])
async def test_a_member_list_past_the_cap_is_not_used_at_all(
    mock: respx.MockRouter, caplog: pytest.LogCaptureFixture, count: int
) -> None:
    """No cluster has that many members: the answer is refused whole, at once, and the call
    goes on with the members the caller gave (100,000 URLs took 6 minutes to merge before)."""
    caplog.set_level(logging.WARNING, logger="incus_images")
    urls = [f"https://10.{n // 65536}.{n // 256 % 256}.{n % 256}:8443" for n in range(count)]
    mock.get(f"{A}/1.0/cluster/members").mock(
        return_value=sync_response([{"server_name": "m", "url": url} for url in urls])
    )
    mock.route().mock(side_effect=REFUSED)  # any other request, to any member
    async with AsyncClient([A, B], verify=False, timeout=10) as client:
        started = time.monotonic()
        with pytest.raises(IncusConnectionError):
            await client.images.get(FP)
        took = time.monotonic() - started
    assert {call.request.url.host for call in mock.calls} == {"node1.test", "node2.test"}
    assert [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()] == [
        f"incus_images: ignoring the cluster members {A} lists: it lists {count} members, more "
        f"than the {MAX_CLUSTER_MEMBERS} a client takes from a cluster; going on with the 2 known"
    ]
    assert took < 10, took  # within the call's timeout (measured: 0.1 s for 100,000)


@pytest.mark.parametrize("given", [[], ["http://a"], ["unix:///x"], [A, A], [A, 5], ()])
def test_bad_member_lists_are_refused(given: list[object]) -> None:
    with pytest.raises(InvalidInputError):
        AsyncClient(given, verify=False)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# One deadline and at most 10 members a call, on loopback sockets.


@pytest.fixture
def stalled() -> Iterator[list[str]]:
    """8 members that accept TCP connections (the kernel completes the handshake) and never
    answer: nothing accepts or reads them."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(8):
            listener = stack.enter_context(socket.socket())
            listener.bind(("127.0.0.1", 0))
            listener.listen(16)
            ports.append(listener.getsockname()[1])
        yield [f"https://127.0.0.1:{port}" for port in ports]


@pytest.fixture
def refusing() -> Iterator[list[str]]:
    """1,000 members on loopback ports where nothing listens: each port is held by a socket
    that is bound and does not listen, so a connection is refused and no one else can listen
    there meanwhile."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(MAX_CLUSTER_MEMBERS):
            holder = stack.enter_context(socket.socket())
            holder.bind(("127.0.0.1", 0))
            ports.append(holder.getsockname()[1])
        yield [f"https://127.0.0.1:{port}" for port in ports]


def count_connects(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every TCP connection the clients attempt from now on, as ``host:port``."""
    attempted: list[str] = []
    connect = AsyncSocketBackend.connect_tcp

    async def counted(self: AsyncSocketBackend, host: str, port: int, *args: Any) -> Any:
        attempted.append(f"{host}:{port}")
        return await connect(self, host, port, *args)

    monkeypatch.setattr(AsyncSocketBackend, "connect_tcp", counted)
    return attempted


def tried_members(error: BaseException) -> list[str]:
    """The members an error says were tried."""
    names = str(error).split("(cluster members tried: ")[1].split(";")[0]
    return names.split(", ")


async def test_a_call_on_stalled_members_ends_within_its_timeout(stalled: list[str]) -> None:
    """One deadline covers every member tried, and the listing of members before them (each
    member had a deadline of its own before: 16 s under timeout=1)."""
    async with AsyncClient(stalled, verify=False, timeout=1) as client:
        started = time.monotonic()
        with pytest.raises(IncusTimeoutError) as caught:
            await client.images.list()
        took = time.monotonic() - started
        assert took < 3, took
        assert str(caught.value).endswith("timeout=1 s ran out)")
        tried = tried_members(caught.value)
        assert set(tried) <= set(stalled)
        # The next call starts with another member.
        assert client.server not in tried


async def test_listing_the_members_is_within_the_calls_deadline(
    stalled: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The listing takes at most half of the call's time, and the call what is left."""
    caplog.set_level(logging.WARNING, logger="incus_images")
    async with AsyncClient(stalled[:1], verify=False, timeout=2) as client:
        started = time.monotonic()
        with pytest.raises(IncusTimeoutError) as caught:
            await client.images.list()
        took = time.monotonic() - started
    assert took < 3, took  # 4 s before: the listing and the call had 2 s each
    assert str(caught.value).endswith("timeout=2 s ran out)")
    [warning] = [record.getMessage() for record in caplog.records]
    assert warning.startswith(
        f"incus_images: cannot list the cluster's members: Could not list the cluster's "
        f"members on {stalled[0]}: no answer in time ("
    )
    assert warning.endswith(
        f"(cluster members tried: {stalled[0]}; 1 s, its part of timeout=2 s ran out); going "
        f"on with {stalled[0]}"
    )


async def test_a_call_tries_at_most_ten_members(
    refusing: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """1,000 members that refuse: 10 connection attempts, not 1,000 (or 2,000 with the
    listing of members), and a warning for each failover, not 1,998."""
    caplog.set_level(logging.WARNING, logger="incus_images")
    attempted = count_connects(monkeypatch)
    async with AsyncClient(refusing, verify=False) as client:
        with pytest.raises(IncusConnectionError) as caught:
            await client.images.list()
    assert len(attempted) == MEMBERS_A_CALL_TRIES
    assert tried_members(caught.value) == [f"https://{member}" for member in attempted]
    assert str(caught.value).endswith(f"; a call tries at most {MEMBERS_A_CALL_TRIES})")
    assert len(caplog.records) <= MEMBERS_A_CALL_TRIES
