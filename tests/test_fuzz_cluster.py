"""Property-based fuzzing (Hypothesis) of what a cluster's member lists become (issue 14).

Whatever a member answers to ``GET /1.0/cluster/members?recursion=1`` (any JSON, any size up
to the JSON limits), reading it gives the members to use, each a checked ``https://host:port``
reached with the client's own TLS settings and listed once, or says why none is used: never an
exception, never more than MAX_CLUSTER_MEMBERS, and in time linear in the answer's length.
A caller's own list gives the same endpoints or an InvalidInputError.

Example counts as in ``tests/test_fuzz.py`` (whose strategies and settings this reuses): 300 a
property in the suite proper and CI, 30 in a bare ``pytest`` run, FUZZ_EXAMPLES to override.
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import httpx
from hypothesis import example, given
from hypothesis import strategies as st

from incus_images import InvalidInputError
from incus_images._async._transport import Members
from incus_images._endpoint import (
    MAX_CLUSTER_MEMBERS,
    Endpoint,
    LearntMembers,
    learnt_members,
    member_endpoint,
    parse_members,
)
from tests.test_fuzz import FEWER, FUZZ, https_endpoints, json_values, sendable, texts

#: The member that answered: every member learnt is reached as it is.
LIKE = Endpoint.https("https://node1.test:8443", ssl_context=ssl.create_default_context())

# --------------------------------------------------------------------------------------------
# Strategies: answers as incusd gives them, nearly, and not at all.

member_urls = st.one_of(
    https_endpoints,
    st.sampled_from(["https://10.0.0.2:8443", "https://NODE2.test", "https://[::1]:8443"]),
    texts,
    json_values,
)
members = st.one_of(
    st.fixed_dictionaries(
        {"url": member_urls},
        optional={"server_name": texts, "status": texts, "roles": json_values},
    ),
    json_values,
)
#: Answers about the cap's size: one entry repeated (the same member, or junk), many times.
long_answers = st.builds(
    lambda count, entry: [entry] * count,
    st.integers(MAX_CLUSTER_MEMBERS - 2, MAX_CLUSTER_MEMBERS + 2),
    members,
)
answers = st.one_of(json_values, st.lists(members, max_size=12), long_answers)


# --------------------------------------------------------------------------------------------
# Oracles.


def checked_member(endpoint: Endpoint, like: Endpoint = LIKE) -> str:
    """A member as the client may use it: https://host:port, nothing more, reached as
    ``like`` is."""
    assert isinstance(endpoint, Endpoint)
    base_url = sendable(endpoint.base_url)
    assert endpoint.display == base_url
    assert endpoint.socket_path is None
    assert endpoint.ssl_context is like.ssl_context
    url = httpx.URL(base_url)
    assert url.scheme == "https" and url.host and url.port is not None
    assert 0 < url.port < 65536 and url.raw_path in (b"", b"/")
    assert not url.query and not url.fragment and not url.userinfo
    return base_url


def usable(entry: object) -> str | None:
    """The base URL an entry names, when it names a usable member."""
    url = entry.get("url") if isinstance(entry, dict) else None
    try:
        return member_endpoint(url, LIKE).base_url
    except InvalidInputError:
        return None


# --------------------------------------------------------------------------------------------
# Properties.


@FEWER
@given(answer=answers)
@example(answer=[{"url": "https://[::1]:8443"}, {"url": "https://[0:0::1]:8443"}])
@example(answer=[{"url": "https://node2.test"}, {"url": "HTTPS://NODE2.TEST:8443/"}])
@example(answer=[{"url": "https://a" + "a" * 300}])
@example(answer=[{"url": "https://\udc80.test"}, {"url": "https://x\x00.test"}])
@example(answer=[{"url": "\x1f" * 60}])  # a warning's quote of 240 characters once
@example(answer=[10**4300])  # a ValueError once: its repr has too many digits
@example(answer=[{"url": 10**4300}])
def test_a_member_list_gives_checked_members_or_a_reason(answer: object) -> None:
    learnt = learnt_members(answer, LIKE)
    assert isinstance(learnt, LearntMembers)
    assert len(learnt.skipped_examples) <= min(3, learnt.skipped)
    assert all(type(quoted) is str and len(quoted) <= 80 for quoted in learnt.skipped_examples)
    if not isinstance(answer, list) or len(answer) > MAX_CLUSTER_MEMBERS:
        assert type(learnt.refused) is str
        assert learnt.endpoints == () and learnt.skipped == 0
        return
    assert learnt.refused is None
    base_urls = [checked_member(endpoint) for endpoint in learnt.endpoints]
    named = [usable(entry) for entry in answer]
    # Each usable member once, in the answer's order; every other entry counted as left out.
    assert base_urls == list(dict.fromkeys(url for url in named if url is not None))
    assert learnt.skipped == named.count(None)


@FUZZ
@given(urls=st.one_of(st.lists(member_urls, max_size=8), json_values))
@example(urls=["https://node1.test", "https://NODE1.test:8443"])
@example(urls=True)  # a TypeError once (len() of a bool)
def test_a_callers_member_list_gives_checked_members_or_invalid_input(urls: Any) -> None:
    try:
        given = parse_members(urls, verify=False)
    except InvalidInputError:
        return
    assert 0 < len(given) <= MAX_CLUSTER_MEMBERS
    assert len({endpoint.base_url for endpoint in given}) == len(given)
    for endpoint in given:
        checked_member(endpoint, like=given[0])


# --------------------------------------------------------------------------------------------
# Linear time, counted in Python calls rather than seconds (a count does not depend on the
# machine's load): twice the entries, twice the calls. Merging members pairwise, as before,
# made it about four times.


def python_calls(work: Callable[[], object]) -> int:
    calls = 0

    def count(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        work()
    finally:
        sys.setprofile(None)
    return calls


def distinct_members(count: int, network: int) -> list[dict[str, str]]:
    # Distinct per run: urlsplit's cache must not make a second run cheaper.
    return [{"url": f"https://10.{network}.{n // 256}.{n % 256}:8443"} for n in range(count)]


def test_reading_a_member_list_takes_linear_time() -> None:
    half = MAX_CLUSTER_MEMBERS // 2
    smaller = python_calls(lambda: learnt_members(distinct_members(half, 1), LIKE))
    larger = python_calls(lambda: learnt_members(distinct_members(2 * half, 2), LIKE))
    assert larger / smaller < 2.2, (smaller, larger)
    given = python_calls(lambda: parse_members([m["url"] for m in distinct_members(2 * half, 3)]))
    assert given / smaller < 2.2, (smaller, given)


def test_merging_learnt_members_takes_linear_time() -> None:
    def merge(count: int, network: int) -> int:
        given = learnt_members(distinct_members(count, network), LIKE).endpoints
        learnt = learnt_members(distinct_members(count, network + 1), LIKE).endpoints
        return python_calls(lambda: Members(given).add(learnt))

    quarter = MAX_CLUSTER_MEMBERS // 4
    smaller, larger = merge(quarter, 4), merge(2 * quarter, 6)
    assert larger / smaller < 2.2, (smaller, larger)


def test_a_member_list_past_the_cap_is_refused_unread() -> None:
    """However long, an answer past the cap costs a few calls: its entries are not read."""
    answer = [{"url": "https://10.0.0.1"}] * 100_000
    assert python_calls(lambda: learnt_members(answer, LIKE)) < 20
