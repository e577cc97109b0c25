"""Unit tests (respx) of issue 7's calls: list with filter and all projects, get_by_alias,
list_aliases, rename_alias, update of every writable field, and publish.

One catch-all route answers every request from a table keyed by (method, path), so that the
whole sequence of requests a call sends can be asserted; a request nobody expected gets an
error answer (and shows up in the sequence). Answers are shaped like incusd 6.0.4's (spec §3,
§6.4-6.5, §6.11-6.16, §8, §10).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx

from incus_images import (
    APIError,
    AsyncClient,
    ConflictError,
    Image,
    ImageAlias,
    ImageAliasList,
    IncusError,
    IncusTimeoutError,
    InvalidInputError,
    NotFoundError,
    Operation,
    OperationError,
    PreconditionFailedError,
)
from tests.helpers import (
    OFFLINE_SERVER,
    SURVEY,
    UNIX_BASE,
    Answer,
    accepted_response,
    deadline_604,
    error_response,
    etagged,
    image,
    operation,
    sha256,
    sync_response,
)
from tests.helpers import ScriptedDaemon as Wire

pytestmark = pytest.mark.anyio

FP_A = sha256(b"images api a")
FP_B = sha256(b"images api b")
FP_C = sha256(b"images api c")
PUBLISH_ID = "1a2b3c4d-0000-4000-8000-000000000001"
STOP_ID = "1a2b3c4d-0000-4000-8000-000000000002"
START_ID = "1a2b3c4d-0000-4000-8000-000000000003"
ALIASES = "/1.0/images/aliases"
INSTANCE = "/1.0/instances/c1"
#: Go's time.Time reads RFC 3339: a numeric offset is hours and minutes only.
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)")


# --------------------------------------------------------------------------------------------
# The mock daemon.


@pytest.fixture
def wire(router: respx.MockRouter) -> Wire:
    return Wire(router)


@pytest.fixture
async def dev_client() -> AsyncIterator[AsyncClient]:
    """An offline client in the project 'dev'."""
    async with AsyncClient(OFFLINE_SERVER, project="dev") as offline:
        yield offline


def assert_instant(sent: str, expected: datetime) -> None:
    """A time as incusd reads it: RFC 3339, with a zone, and the instant meant."""
    assert RFC3339.fullmatch(sent), sent
    assert datetime.fromisoformat(sent) == expected


def alias_entry(
    name: str, target: str = FP_A, description: str = "", kind: str = "container"
) -> dict[str, str]:
    """An ImageAliasesEntry as incusd sends it."""
    return {"description": description, "target": target, "name": name, "type": kind}


def not_found_alias() -> httpx.Response:
    return error_response(404, "Image alias not found")


def wait_path(op_id: str, seconds: int = 30) -> str:
    return f"GET /1.0/operations/{op_id}/wait?timeout={seconds}"


def finished(op_id: str, **fields: Any) -> httpx.Response:
    return sync_response(operation(op_id, status_code=200, **fields))


# --------------------------------------------------------------------------------------------
# list


@pytest.mark.parametrize(
    "expression",
    [
        "properties.os eq debian and public eq true",
        'properties.description eq "probe image u2"',
        "fingerprint eq ab12.*",
        "properties.k eq a+b&c=d%20#x;y",
        "not properties.name eq übung☃",
    ],
)
async def test_list_sends_the_filter_exactly(
    client: AsyncClient, wire: Wire, expression: str
) -> None:
    wire.on("GET", "/1.0/images", sync_response([image(FP_A)]))
    images = await client.images.list(filter=expression)
    assert [item.fingerprint for item in images] == [FP_A]
    (request,) = wire.requests("GET", "/1.0/images")
    # As Go's url.Query() reads it ('+' is a space): the expression, exactly, once.
    assert parse_qs(request.url.query.decode(), strict_parsing=True) == {
        "recursion": ["1"],
        "filter": [expression],
    }


async def test_list_all_projects_sends_no_project_and_sorts_by_project(
    dev_client: AsyncClient, wire: Wire
) -> None:
    wire.on(
        "GET",
        "/1.0/images",
        sync_response(
            [
                image(FP_B, project="dev"),
                image(FP_A, project="prod"),
                image(FP_C, project="default"),
                image(FP_A, project="dev"),
            ]
        ),
    )
    images = await dev_client.images.list(all_projects=True, filter="public eq false")
    assert [(item.project, item.fingerprint) for item in images] == [
        ("default", FP_C),
        ("dev", min(FP_A, FP_B)),
        ("dev", max(FP_A, FP_B)),
        ("prod", FP_A),
    ]
    (request,) = wire.requests("GET", "/1.0/images")
    # incusd refuses all-projects with any project but the default one.
    assert dict(request.url.params) == {
        "recursion": "1",
        "filter": "public eq false",
        "all-projects": "true",
    }


async def test_list_without_all_projects_sends_the_clients_project(
    dev_client: AsyncClient, wire: Wire
) -> None:
    wire.on("GET", "/1.0/images", sync_response([]))
    assert await dev_client.images.list() == []
    (request,) = wire.requests("GET", "/1.0/images")
    assert dict(request.url.params) == {"recursion": "1", "project": "dev"}


async def test_list_all_projects_recursion_0_deduplicates_and_sorts(
    dev_client: AsyncClient, wire: Wire
) -> None:
    """An image in two projects is listed twice, without ?project= (spec §6.1)."""
    wire.on(
        "GET",
        "/1.0/images",
        sync_response(
            [
                f"/1.0/images/{FP_C}",
                f"/1.0/images/{FP_A}",
                f"/1.0/images/{FP_C}",
                f"/1.0/images/{FP_B}",
                f"/1.0/images/{FP_A}",
            ]
        ),
    )
    fingerprints = await dev_client.images.list(0, all_projects=True)
    assert fingerprints == sorted([FP_A, FP_B, FP_C])
    assert wire.sent() == ["GET /1.0/images?recursion=0&all-projects=true"]


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (500, "Invalid filter: clause has no operator"),
        (500, "Unsupported operation"),
        (400, "Invalid filter: unterminated quote"),
    ],
)
async def test_a_refused_filter_is_named(
    client: AsyncClient, wire: Wire, status: int, message: str
) -> None:
    expression = "size gt 1"
    wire.on("GET", "/1.0/images", error_response(status, message))
    with pytest.raises(APIError) as caught:
        await client.images.list(filter=expression)
    error = caught.value
    assert error.status_code == status
    assert error.server_message == message
    assert "The server refused the filter 'size gt 1'." in str(error)
    assert message in str(error)
    assert OFFLINE_SERVER in str(error)
    assert len(wire.sent()) == 1


async def test_a_missing_project_is_not_blamed_on_the_filter(
    dev_client: AsyncClient, wire: Wire
) -> None:
    wire.on("GET", "/1.0/images", error_response(404, "Project not found"))
    with pytest.raises(NotFoundError) as caught:
        await dev_client.images.list(filter="public eq true")
    assert "refused the filter" not in str(caught.value)


@pytest.mark.parametrize(
    "expression",
    [
        "update_source.server eq x",
        "public eq true and update_source.alias eq debian",
        # Every other clause incusd 6.0 crashes the request on (no answer at all).
        "update_source.alias gt x",
        "aliases.name eq x",
        "public eq true or type.x eq y",
        "created_at. eq x",
        "",
        "properties.os eq a\x00b",
        "properties.os eq \ud800",
        b"public eq true",
        42,
        ["public eq true"],
    ],
)
async def test_list_refuses_a_bad_filter_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, expression: object
) -> None:
    with pytest.raises(InvalidInputError, match="filter") as caught:
        await client.images.list(filter=expression)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    assert not silent.calls


@pytest.mark.parametrize("all_projects", ["yes", 1, None])
async def test_list_refuses_a_non_bool_all_projects_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, all_projects: object
) -> None:
    with pytest.raises(InvalidInputError, match="all_projects"):
        await client.images.list(all_projects=all_projects)  # type: ignore[arg-type]
    assert not silent.calls


async def test_a_value_mentioning_update_source_is_not_refused(client: AsyncClient) -> None:
    expression = "properties.origin eq update_source-2"
    with respx.mock(base_url=UNIX_BASE, assert_all_called=False) as mock:
        route = mock.get("/1.0/images").mock(return_value=sync_response([]))
        assert await client.images.list(filter=expression) == []
    assert route.calls.last.request.url.params["filter"] == expression


# --------------------------------------------------------------------------------------------
# get_by_alias


async def test_get_by_alias_reads_the_alias_then_the_image(client: AsyncClient, wire: Wire) -> None:
    wire.on("GET", f"{ALIASES}/debian%2F12", sync_response(alias_entry("debian/12")))
    wire.on("GET", f"/1.0/images/{FP_A}", sync_response(image(FP_A)))
    result = await client.images.get_by_alias("debian/12", type="container")
    assert isinstance(result, Image)
    assert result.fingerprint == FP_A
    assert wire.sent() == [f"GET {ALIASES}/debian%2F12", f"GET /1.0/images/{FP_A}"]


async def test_get_by_alias_of_the_other_type_is_not_found_after_one_request(
    client: AsyncClient, wire: Wire
) -> None:
    wire.on("GET", f"{ALIASES}/vm", sync_response(alias_entry("vm", kind="virtual-machine")))
    wire.on("GET", f"/1.0/images/{FP_A}", sync_response(image(FP_A, type="virtual-machine")))
    with pytest.raises(NotFoundError) as caught:
        await client.images.get_by_alias("vm", type="container")
    assert wire.sent() == [f"GET {ALIASES}/vm"]
    message = str(caught.value)
    assert "'vm'" in message
    assert "virtual-machine" in message
    assert OFFLINE_SERVER in message


async def test_get_by_alias_without_type_takes_either(client: AsyncClient, wire: Wire) -> None:
    wire.on("GET", f"{ALIASES}/vm", sync_response(alias_entry("vm", kind="virtual-machine")))
    wire.on("GET", f"/1.0/images/{FP_A}", sync_response(image(FP_A, type="virtual-machine")))
    result = await client.images.get_by_alias("vm")
    assert result.type == "virtual-machine"
    assert len(wire.sent()) == 2


async def test_get_by_alias_of_a_missing_alias(client: AsyncClient, wire: Wire) -> None:
    wire.on("GET", f"{ALIASES}/nope", not_found_alias())
    with pytest.raises(NotFoundError, match="'nope'"):
        await client.images.get_by_alias("nope")
    assert wire.sent() == [f"GET {ALIASES}/nope"]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("a", "vm"),
        ("a", ""),
        ("a", "Container"),
        ("a", 1),
        ("a", b"container"),
        ("", None),
        ("a\x00b", None),
        (None, "container"),
    ],
)
async def test_get_by_alias_refuses_bad_input_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, name: object, kind: object
) -> None:
    with pytest.raises(InvalidInputError):
        await client.images.get_by_alias(name, type=kind)  # type: ignore[arg-type]
    assert not silent.calls


async def test_get_by_alias_with_a_hostile_target_sends_no_second_request(
    client: AsyncClient, wire: Wire
) -> None:
    wire.on("GET", f"{ALIASES}/a", sync_response(alias_entry("a", target="../../1.0/instances")))
    with pytest.raises(IncusError, match="unexpected answer") as caught:
        await client.images.get_by_alias("a")
    assert not isinstance(caught.value, APIError)
    assert wire.sent() == [f"GET {ALIASES}/a"]


async def test_get_by_alias_with_an_empty_target_sends_no_second_request(
    client: AsyncClient,
) -> None:
    with respx.mock(base_url=UNIX_BASE, assert_all_called=False) as mock:
        wire = Wire(mock)
        wire.on("GET", f"{ALIASES}/a", sync_response(alias_entry("a", target="")))
        wire.on("GET", "/1.0/images/", sync_response(image(FP_B)))
        with pytest.raises(IncusError, match="unexpected answer"):
            await client.images.get_by_alias("a")
        assert wire.sent() == [f"GET {ALIASES}/a"]


# --------------------------------------------------------------------------------------------
# list_aliases


async def test_list_aliases_sorted_by_code_point(dev_client: AsyncClient, wire: Wire) -> None:
    names = ["zeta", "Ωmega", "alpha/1", "9", "ä-umlaut", "Zeta", "alpha", "10"]
    wire.on("GET", ALIASES, sync_response([alias_entry(name, FP_B, name) for name in names]))
    aliases = await dev_client.images.list_aliases()
    assert type(aliases) is ImageAliasList
    assert [alias.name for alias in aliases] == [
        "10",
        "9",
        "Zeta",
        "alpha",
        "alpha/1",
        "zeta",
        "ä-umlaut",
        "Ωmega",
    ]
    assert aliases[0] == ImageAlias(name="10", target=FP_B, description="10", type="container")
    assert wire.sent() == [f"GET {ALIASES}?recursion=1&project=dev"]


async def test_list_aliases_empty(client: AsyncClient, wire: Wire) -> None:
    wire.on("GET", ALIASES, sync_response([]))
    assert await client.images.list_aliases() == []
    assert wire.sent() == [f"GET {ALIASES}?recursion=1"]


@pytest.mark.parametrize(
    "items",
    [
        [alias_entry("ok"), alias_entry("bad", target="../../1.0/instances")],
        [alias_entry("bad", target=FP_A.upper())],
        [alias_entry("bad", target=FP_A[:63])],
        [{**alias_entry("bad"), "name": 5}],
        [{**alias_entry("bad"), "type": ["container"]}],
        [{**alias_entry("bad"), "description": True}],
        [f"{ALIASES}/a"],
        {"a": alias_entry("a")},
    ],
    ids=[
        "path-target",
        "upper-case-target",
        "short-target",
        "numeric-name",
        "list-type",
        "bool-description",
        "url-item",
        "not-a-list",
    ],
)
async def test_list_aliases_refuses_a_hostile_answer(
    client: AsyncClient, wire: Wire, items: object
) -> None:
    wire.on("GET", ALIASES, sync_response(items))
    with pytest.raises(IncusError, match="unexpected answer") as caught:
        await client.images.list_aliases()
    assert not isinstance(caught.value, APIError)
    assert OFFLINE_SERVER in str(caught.value)
    assert "list aliases" in str(caught.value)


async def test_list_aliases_refuses_an_empty_target(client: AsyncClient, wire: Wire) -> None:
    wire.on("GET", ALIASES, sync_response([alias_entry("a", target="")]))
    with pytest.raises(IncusError, match="unexpected answer"):
        await client.images.list_aliases()


async def test_list_aliases_forbidden(client: AsyncClient, wire: Wire) -> None:
    wire.on("GET", ALIASES, error_response(403, "not authorized"))
    with pytest.raises(APIError) as caught:
        await client.images.list_aliases()
    assert caught.value.status_code == 403


# --------------------------------------------------------------------------------------------
# rename_alias

#: Names and the one raw path segment each must be sent as (written out, not computed).
SEGMENTS = [
    ("plain", "plain"),
    ("with/slash", "with%2Fslash"),
    (".", "%2E"),
    ("..", "%2E%2E"),
    ("../../1.0/instances", "%2E%2E%2F%2E%2E%2F1%2E0%2Finstances"),
    ("with space", "with%20space"),
    ("übung ☃", "%C3%BCbung%20%E2%98%83"),
    ("a?b#c%d", "a%3Fb%23c%25d"),
]


@pytest.mark.parametrize(("name", "segment"), SEGMENTS)
async def test_rename_alias_posts_the_new_name_then_reads_it(
    client: AsyncClient, wire: Wire, name: str, segment: str
) -> None:
    new_name = f"new {name}"
    new_segment = f"new%20{segment}"
    wire.on(
        "POST",
        f"{ALIASES}/{segment}",
        sync_response(None, status=201, headers={"Location": f"{ALIASES}/{new_segment}"}),
    )
    wire.on("GET", f"{ALIASES}/{new_segment}", sync_response(alias_entry(new_name, FP_C, "d")))
    alias = await client.images.rename_alias(name, new_name)
    assert wire.sent() == [f"POST {ALIASES}/{segment}", f"GET {ALIASES}/{new_segment}"]
    assert wire.bodies("POST", f"{ALIASES}/{segment}") == [{"name": new_name}]
    assert alias == ImageAlias(name=new_name, target=FP_C, description="d", type="container")


@pytest.mark.parametrize(("new_name", "segment"), SEGMENTS)
async def test_rename_alias_to_odd_names(
    client: AsyncClient, wire: Wire, new_name: str, segment: str
) -> None:
    wire.on("POST", f"{ALIASES}/old", sync_response(None, status=201))
    wire.on("GET", f"{ALIASES}/{segment}", sync_response(alias_entry(new_name)))
    alias = await client.images.rename_alias("old", new_name)
    assert alias.name == new_name
    assert wire.bodies("POST", f"{ALIASES}/old") == [{"name": new_name}]
    assert wire.sent()[-1] == f"GET {ALIASES}/{segment}"


@pytest.mark.parametrize(
    ("name", "new_name"),
    [("a", ""), ("a", None), ("a", 5), ("a", "b\x00"), ("a", "\udcff"), ("", "b"), (b"a", "b")],
)
async def test_rename_alias_refuses_bad_names_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, name: object, new_name: object
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await client.images.rename_alias(name, new_name)  # type: ignore[arg-type]
    if new_name == "":
        assert "new_name" in str(caught.value)
    assert not silent.calls


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (error_response(409, 'Alias "b" already exists'), ConflictError),
        (not_found_alias(), NotFoundError),
    ],
)
async def test_rename_alias_failure_reads_nothing_back(
    client: AsyncClient, wire: Wire, response: httpx.Response, error: type[APIError]
) -> None:
    wire.on("POST", f"{ALIASES}/a", response)
    with pytest.raises(error) as caught:
        await client.images.rename_alias("a", "b")
    assert wire.sent() == [f"POST {ALIASES}/a"]
    assert "rename alias 'a' to 'b'" in str(caught.value)
    assert OFFLINE_SERVER in str(caught.value)


# --------------------------------------------------------------------------------------------
# update

PREFIX = FP_A[:12]
#: What the image looks like when update() reads it first.
CURRENT: dict[str, Any] = {
    "public": True,
    "auto_update": False,
    "properties": {"os": "tiny", "old": "1"},
    "profiles": ["default", "extra"],
    "expires_at": "2030-06-01T00:00:00Z",
}


def read_then(wire: Wire, *after: dict[str, Any]) -> None:
    """First reads (by prefix) answer CURRENT with ETag "e1"; read-backs answer ``after``."""
    wire.on("GET", f"/1.0/images/{PREFIX}", etagged(FP_A, '"e1"', **CURRENT))
    wire.on(
        "GET", f"/1.0/images/{FP_A}", *(etagged(FP_A, '"e9"', **{**CURRENT, **a}) for a in after)
    )


def one_attempt(method: str) -> list[str]:
    return [f"GET /1.0/images/{PREFIX}", f"{method} /1.0/images/{FP_A}", f"GET /1.0/images/{FP_A}"]


@pytest.mark.parametrize(
    ("change", "sent", "after"),
    [
        ({"public": False}, {"public": False}, {"public": False}),
        ({"auto_update": True}, {"auto_update": True}, {"auto_update": True}),
        (
            {"properties": {"os": "debian", "new": "x"}},
            {"properties": {"os": "debian", "new": "x", "old": ""}},
            {"properties": {"os": "debian", "new": "x"}},
        ),
        ({"properties": {}}, {"properties": {"os": "", "old": ""}}, {"properties": {}}),
        (
            {"properties": {"old": "1"}, "public": True, "auto_update": True},
            {"properties": {"old": "1", "os": ""}, "public": True, "auto_update": True},
            {"properties": {"old": "1"}, "auto_update": True},
        ),
    ],
    ids=["public", "auto_update", "properties", "no-properties", "three-fields"],
)
async def test_update_of_patchable_fields_sends_a_patch(
    client: AsyncClient,
    wire: Wire,
    change: dict[str, Any],
    sent: dict[str, Any],
    after: dict[str, Any],
) -> None:
    read_then(wire, after)
    wire.on("PATCH", f"/1.0/images/{FP_A}", sync_response({}))
    updated = await client.images.update(PREFIX, **change)
    assert wire.sent() == one_attempt("PATCH")
    assert wire.bodies("PATCH", f"/1.0/images/{FP_A}") == [sent]
    (request,) = wire.requests("PATCH", f"/1.0/images/{FP_A}")
    assert request.headers["If-Match"] == '"e1"'
    for field, value in change.items():
        assert getattr(updated, field) == value


EXPIRY = datetime(2031, 1, 2, 3, 4, 5, 250000, tzinfo=timezone(timedelta(hours=2)))


@pytest.mark.parametrize(
    ("change", "sent", "after"),
    [
        (
            {"profiles": []},
            {
                "public": True,
                "auto_update": False,
                "properties": {"os": "tiny", "old": "1"},
                "profiles": [],
            },
            {"profiles": []},
        ),
        (
            {"expires_at": EXPIRY},
            {
                "public": True,
                "auto_update": False,
                "properties": {"os": "tiny", "old": "1"},
                "profiles": ["default", "extra"],
                "expires_at": EXPIRY,
            },
            # incusd answers in UTC: the same instant.
            {"expires_at": "2031-01-02T01:04:05.25Z"},
        ),
        (
            {
                "properties": {"os": "debian"},
                "public": False,
                "auto_update": True,
                "profiles": ["p1", "p 2"],
                "expires_at": datetime(2032, 2, 3, tzinfo=UTC),
            },
            {
                "public": False,
                "auto_update": True,
                # A PUT replaces: removed keys are simply not sent.
                "properties": {"os": "debian"},
                "profiles": ["p1", "p 2"],
                "expires_at": datetime(2032, 2, 3, tzinfo=UTC),
            },
            {
                "properties": {"os": "debian"},
                "public": False,
                "auto_update": True,
                "profiles": ["p1", "p 2"],
                "expires_at": "2032-02-03T00:00:00Z",
            },
        ),
    ],
    ids=["profiles", "expires_at", "everything"],
)
async def test_update_of_profiles_or_expiry_sends_a_put_of_everything(
    client: AsyncClient,
    wire: Wire,
    change: dict[str, Any],
    sent: dict[str, Any],
    after: dict[str, Any],
) -> None:
    read_then(wire, after)
    wire.on("PUT", f"/1.0/images/{FP_A}", sync_response({}))
    updated = await client.images.update(PREFIX, **change)
    assert wire.sent() == one_attempt("PUT")
    (body,) = wire.bodies("PUT", f"/1.0/images/{FP_A}")
    sent = dict(sent)
    if "expires_at" in sent:
        assert_instant(body.pop("expires_at"), sent.pop("expires_at"))
    # Nothing left out (a PUT resets what it omits), no expiry unless one was given.
    assert body == sent
    (request,) = wire.requests("PUT", f"/1.0/images/{FP_A}")
    assert request.headers["If-Match"] == '"e1"'
    for field, value in change.items():
        assert getattr(updated, field) == value


async def test_update_without_changes_only_reads(client: AsyncClient, wire: Wire) -> None:
    wire.on("GET", f"/1.0/images/{PREFIX}", etagged(FP_A, '"e1"', **CURRENT))
    result = await client.images.update(PREFIX, None)
    assert isinstance(result, Image)
    assert result.fingerprint == FP_A
    assert result.profiles == ["default", "extra"]
    assert wire.sent() == [f"GET /1.0/images/{PREFIX}"]


async def test_update_put_retries_a_412_with_what_it_reads_again(
    client: AsyncClient, wire: Wire
) -> None:
    wire.on(
        "GET",
        f"/1.0/images/{PREFIX}",
        etagged(FP_A, '"e1"', **CURRENT),
        etagged(FP_A, '"e2"', **{**CURRENT, "properties": {"os": "theirs"}, "public": False}),
    )
    wire.on(
        "PUT",
        f"/1.0/images/{FP_A}",
        error_response(412, 'ETag doesn\'t match: e2 vs "e1"'),
        sync_response({}),
    )
    wire.on(
        "GET",
        f"/1.0/images/{FP_A}",
        etagged(FP_A, '"e3"', **{**CURRENT, "properties": {"os": "theirs"}, "profiles": []}),
    )
    updated = await client.images.update(PREFIX, profiles=[])
    assert updated.profiles == []
    assert updated.properties == {"os": "theirs"}
    assert wire.sent() == [
        f"GET /1.0/images/{PREFIX}",
        f"PUT /1.0/images/{FP_A}",
        *one_attempt("PUT"),
    ]
    requests = wire.requests("PUT", f"/1.0/images/{FP_A}")
    assert [request.headers["If-Match"] for request in requests] == ['"e1"', '"e2"']
    # The second PUT sends back the other writer's properties and public, not ours.
    assert [json.loads(request.content) for request in requests] == [
        {
            "public": True,
            "auto_update": False,
            "properties": {"os": "tiny", "old": "1"},
            "profiles": [],
        },
        {"public": False, "auto_update": False, "properties": {"os": "theirs"}, "profiles": []},
    ]


async def test_update_does_a_lost_write_again(client: AsyncClient, wire: Wire) -> None:
    """incusd can lose a write to a racing writer after checking If-Match: the read-back
    shows it, and the change is made again."""
    read_then(wire, {}, {"public": False})
    wire.on("PATCH", f"/1.0/images/{FP_A}", sync_response({}))
    updated = await client.images.update(PREFIX, public=False)
    assert updated.public is False
    assert wire.sent() == one_attempt("PATCH") * 2
    assert wire.bodies("PATCH", f"/1.0/images/{FP_A}") == [{"public": False}] * 2


@pytest.mark.parametrize(
    ("change", "method"),
    [({"properties": {"os": "mine"}}, "PATCH"), ({"profiles": ["p"]}, "PUT")],
)
async def test_update_gives_up_after_five_lost_writes(
    client: AsyncClient, wire: Wire, change: dict[str, Any], method: str
) -> None:
    read_then(wire, {})
    wire.on(method, f"/1.0/images/{FP_A}", sync_response({}))
    with pytest.raises(PreconditionFailedError) as caught:
        await client.images.update(PREFIX, **change)
    assert wire.sent() == one_attempt(method) * 5
    error = caught.value
    assert error.server == OFFLINE_SERVER
    assert PREFIX in str(error)
    assert "5 times" in str(error)
    assert OFFLINE_SERVER in str(error)


@pytest.mark.parametrize(
    "arguments",
    [
        {"expires_at": datetime(2031, 1, 1)},  # naive on purpose
        {"expires_at": datetime(1, 1, 1, tzinfo=UTC)},
        {"expires_at": datetime(1, 6, 1, tzinfo=timezone(timedelta(hours=-3)))},
        {"expires_at": "2031-01-01T00:00:00Z"},
        {"expires_at": date(2031, 1, 1)},
        {"expires_at": 1_900_000_000},
        {"public": "yes"},
        {"public": 1},
        {"auto_update": "false"},
        {"profiles": "default"},
        {"profiles": [1]},
        {"profiles": [""]},
        {"profiles": ["a", "a"]},
        {"profiles": ["a\x00"]},
        {"properties": {"a": ""}},
        {"properties": {"a": None}},
        {"properties": [("a", "b")]},
        {"wait": "no"},
    ],
)
async def test_update_refuses_bad_input_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, arguments: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await client.images.update(FP_A, **arguments)
    assert next(iter(arguments)) in str(caught.value)
    assert not silent.calls


async def test_update_expiry_with_a_sub_minute_offset(client: AsyncClient) -> None:
    expiry = datetime(
        2031, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30, seconds=15))
    )
    stored: dict[str, Any] = {}

    def put(request: httpx.Request) -> httpx.Response:
        value = json.loads(request.content)["expires_at"]
        if not RFC3339.fullmatch(value):
            return error_response(400, f'parsing time "{value}": extra text')
        stored["expires_at"] = datetime.fromisoformat(value).astimezone(UTC).isoformat()
        return sync_response({})

    def read_back(request: httpx.Request) -> httpx.Response:
        return etagged(FP_A, '"e2"', **stored)

    with respx.mock(base_url=UNIX_BASE, assert_all_called=False) as mock:
        wire = Wire(mock)
        wire.on("GET", f"/1.0/images/{PREFIX}", etagged(FP_A, '"e1"'))
        wire.on("PUT", f"/1.0/images/{FP_A}", put)
        wire.on("GET", f"/1.0/images/{FP_A}", read_back)
        try:
            updated = await client.images.update(PREFIX, expires_at=expiry)
        except InvalidInputError:
            assert not mock.calls  # refusing it is fine too, but before anything is sent
        else:
            assert updated.expires_at == expiry


# --------------------------------------------------------------------------------------------
# publish


def instance_state(status: str) -> httpx.Response:
    return sync_response({"name": "c1", "status": status, "status_code": 102, "type": "container"})


def started(op_id: str, description: str = "Creating image") -> httpx.Response:
    return accepted_response(operation(op_id, description=description))


PUBLISHED = finished(PUBLISH_ID, metadata={"fingerprint": FP_A, "size": "290"})


def publishing(wire: Wire, *, state: str | None = "Stopped", wait: Answer = PUBLISHED) -> None:
    """A daemon on which publishing c1 (or a snapshot of it) works."""
    if state is not None:
        wire.on("GET", INSTANCE, instance_state(state))
    wire.on("GET", "/1.0/images", sync_response([]))  # the survey: the daemon held no image
    wire.on("POST", "/1.0/images", started(PUBLISH_ID))
    wire.on("GET", f"/1.0/operations/{PUBLISH_ID}/wait", wait)
    wire.on("GET", f"/1.0/images/{FP_A}", sync_response(image(FP_A, size=5000)))


def state_changes(wire: Wire) -> None:
    wire.on("PUT", f"{INSTANCE}/state", started(STOP_ID, "Stopping"), started(START_ID, "Starting"))
    wire.on("GET", f"/1.0/operations/{STOP_ID}/wait", finished(STOP_ID))
    wire.on("GET", f"/1.0/operations/{START_ID}/wait", finished(START_ID))


PUBLISH_STEPS = ["POST /1.0/images", wait_path(PUBLISH_ID), f"GET /1.0/images/{FP_A}"]
STOP_STEPS = [f"PUT {INSTANCE}/state", wait_path(STOP_ID)]
START_STEPS = [f"PUT {INSTANCE}/state", wait_path(START_ID)]
STOP = {"action": "stop", "timeout": -1, "force": True}
START = {"action": "start", "timeout": -1, "force": True}


async def test_publish_an_instance(client: AsyncClient, wire: Wire) -> None:
    publishing(wire)
    result = await client.images.publish("c1")
    assert isinstance(result, Image)
    assert result.fingerprint == FP_A
    assert wire.sent() == [f"GET {INSTANCE}", SURVEY, *PUBLISH_STEPS]
    assert wire.bodies("POST", "/1.0/images") == [{"source": {"type": "instance", "name": "c1"}}]


async def test_publish_a_snapshot_with_every_option(client: AsyncClient, wire: Wire) -> None:
    publishing(wire, state=None)
    result = await client.images.publish(
        "c1/snap 0",
        properties={"description": "published", "os": "busybox"},
        public=True,
        compression="none",
        expires_at=datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-7))),
    )
    (body,) = wire.bodies("POST", "/1.0/images")
    expiry = body["expires_at"]
    assert_instant(expiry, datetime(2031, 1, 2, 10, 4, 5, tzinfo=UTC))
    assert isinstance(result, Image)
    # A snapshot is never running: its instance is not looked at.
    assert wire.sent() == [SURVEY, *PUBLISH_STEPS]
    assert wire.bodies("POST", "/1.0/images") == [
        {
            "source": {"type": "snapshot", "name": "c1/snap 0"},
            "public": True,
            "properties": {"description": "published", "os": "busybox"},
            "compression_algorithm": "none",
            "expires_at": expiry,
        }
    ]


async def test_publish_with_aliases_checks_them_first_and_creates_them_after(
    client: AsyncClient, wire: Wire
) -> None:
    publishing(wire)
    for segment in ("a%2Fb", "%2E%2E"):
        wire.on("GET", f"{ALIASES}/{segment}", not_found_alias())
    wire.on("POST", ALIASES, sync_response(None, status=201))
    result = await client.images.publish("c1", aliases=["a/b", ".."])
    assert isinstance(result, Image)
    assert wire.sent() == [
        f"GET {ALIASES}/a%2Fb",
        f"GET {ALIASES}/%2E%2E",
        f"GET {INSTANCE}",
        SURVEY,
        "POST /1.0/images",
        wait_path(PUBLISH_ID),
        f"POST {ALIASES}",
        f"POST {ALIASES}",
        f"GET /1.0/images/{FP_A}",
    ]
    assert wire.bodies("POST", ALIASES) == [
        {"name": "a/b", "target": FP_A, "description": ""},
        {"name": "..", "target": FP_A, "description": ""},
    ]
    # The aliases go through their own requests, not the publish request.
    assert "aliases" not in wire.bodies("POST", "/1.0/images")[0]


async def test_publish_with_a_taken_alias_sends_nothing_else(
    client: AsyncClient, wire: Wire
) -> None:
    publishing(wire)
    wire.on("GET", f"{ALIASES}/taken", sync_response(alias_entry("taken")))
    with pytest.raises(ConflictError, match="'taken'"):
        await client.images.publish("c1", aliases=["taken"], force=True)
    assert wire.sent() == [f"GET {ALIASES}/taken"]


@pytest.mark.parametrize("status", ["Running", "Frozen"])
async def test_publish_a_running_instance_is_a_conflict(
    client: AsyncClient, wire: Wire, status: str
) -> None:
    publishing(wire, state=status)
    state_changes(wire)
    with pytest.raises(ConflictError) as caught:
        await client.images.publish("c1")
    assert wire.sent() == [f"GET {INSTANCE}"]
    message = str(caught.value)
    assert "force=True" in message
    assert "'c1'" in message
    assert OFFLINE_SERVER in message


async def test_publish_a_missing_instance(client: AsyncClient, wire: Wire) -> None:
    wire.on("GET", INSTANCE, error_response(404, "Instance not found"))
    with pytest.raises(NotFoundError, match="'c1'"):
        await client.images.publish("c1")
    assert wire.sent() == [f"GET {INSTANCE}"]


async def test_publish_force_stops_publishes_and_starts_again(
    client: AsyncClient, wire: Wire
) -> None:
    publishing(wire, state="Running")
    state_changes(wire)
    wire.on("GET", f"{ALIASES}/pub", not_found_alias())
    wire.on("POST", ALIASES, sync_response(None, status=201))
    result = await client.images.publish("c1", aliases=["pub"], force=True)
    assert isinstance(result, Image)
    assert wire.sent() == [
        f"GET {ALIASES}/pub",
        f"GET {INSTANCE}",
        SURVEY,
        *STOP_STEPS,
        "POST /1.0/images",
        wait_path(PUBLISH_ID),
        f"POST {ALIASES}",
        f"GET /1.0/images/{FP_A}",
        *START_STEPS,
    ]
    assert wire.bodies("PUT", f"{INSTANCE}/state") == [STOP, START]


@pytest.mark.parametrize("wait", [False, True])
async def test_update_wait_is_deprecated_and_changes_nothing(
    client: AsyncClient, wire: Wire, wait: bool
) -> None:
    wire.on("GET", f"/1.0/images/{PREFIX}", etagged(FP_A, '"e1"', **CURRENT))
    with pytest.warns(DeprecationWarning, match=r"wait=\) is deprecated and does nothing"):
        result = await client.images.update(PREFIX, None, wait)
    assert isinstance(result, Image)
    assert wire.sent() == [f"GET /1.0/images/{PREFIX}"]


async def test_publish_force_without_wait_is_refused_before_anything(
    client: AsyncClient, silent: respx.MockRouter
) -> None:
    """A stopped instance must be started again once its image is made: whoever returns
    early cannot promise that."""
    with pytest.raises(InvalidInputError, match="force=True, wait=False"):
        await client.images.publish("c1", force=True, wait=False)
    assert not silent.calls


async def test_publish_force_that_times_out_leaves_the_instance_stopped_and_says_so(
    client: AsyncClient, wire: Wire
) -> None:
    """The image is still being made from the stopped instance: starting it could spoil
    the image, so it stays stopped, and the note says so."""
    still = deadline_604()
    publishing(wire, state="Running", wait=still)
    state_changes(wire)
    with pytest.raises(IncusTimeoutError) as caught:
        await client.images.publish("c1", force=True, timeout=0)
    notes = "\n".join(caught.value.__notes__)
    assert "instance 'c1' stays stopped" in notes
    assert f"client.operations.wait({PUBLISH_ID!r})" in notes
    assert wire.bodies("PUT", f"{INSTANCE}/state") == [STOP]


async def test_publish_force_on_a_stopped_instance_changes_no_state(
    client: AsyncClient, wire: Wire
) -> None:
    publishing(wire, state="Stopped")
    await client.images.publish("c1", force=True)
    assert wire.sent() == [f"GET {INSTANCE}", SURVEY, *PUBLISH_STEPS]


async def test_publish_force_starts_again_when_publishing_fails(
    client: AsyncClient, wire: Wire
) -> None:
    failed = sync_response(operation(PUBLISH_ID, status_code=400, err="disk full"))
    publishing(wire, state="Running", wait=failed)
    state_changes(wire)
    wire.on("GET", f"{ALIASES}/pub", not_found_alias())
    with pytest.raises(OperationError) as caught:
        await client.images.publish("c1", aliases=["pub"], force=True)
    assert caught.value.server_message == "disk full"
    assert wire.sent() == [
        f"GET {ALIASES}/pub",
        f"GET {INSTANCE}",
        SURVEY,
        *STOP_STEPS,
        "POST /1.0/images",
        wait_path(PUBLISH_ID),
        *START_STEPS,
    ]
    assert wire.bodies("PUT", f"{INSTANCE}/state") == [STOP, START]


async def test_publish_force_starts_again_when_the_request_is_refused(
    client: AsyncClient, wire: Wire
) -> None:
    publishing(wire, state="Running")
    state_changes(wire)
    wire.on("POST", "/1.0/images", error_response(500, "Failed creating instance snapshot"))
    with pytest.raises(APIError) as caught:
        await client.images.publish("c1", force=True)
    assert caught.value.server_message == "Failed creating instance snapshot"
    assert wire.sent() == [f"GET {INSTANCE}", SURVEY, *STOP_STEPS, "POST /1.0/images", *START_STEPS]


async def test_publish_force_keeps_the_publishing_error_when_the_start_fails_too(
    client: AsyncClient, wire: Wire
) -> None:
    failed = sync_response(operation(PUBLISH_ID, status_code=400, err="disk full"))
    publishing(wire, state="Running", wait=failed)
    wire.on(
        "PUT",
        f"{INSTANCE}/state",
        started(STOP_ID, "Stopping"),
        error_response(500, "Failed to start: no root disk"),
    )
    wire.on("GET", f"/1.0/operations/{STOP_ID}/wait", finished(STOP_ID))
    with pytest.raises(OperationError) as caught:
        await client.images.publish("c1", force=True)
    assert caught.value.server_message == "disk full"
    notes = getattr(caught.value, "__notes__", [])
    assert any("starting instance 'c1' again failed" in note for note in notes)
    assert any("no root disk" in note for note in notes)
    assert wire.sent()[-1] == f"PUT {INSTANCE}/state"


@pytest.mark.parametrize(("source", "steps"), [("c1", [f"GET {INSTANCE}"]), ("c1/s", [])])
async def test_publish_without_wait_returns_the_running_operation(
    client: AsyncClient, wire: Wire, source: str, steps: list[str]
) -> None:
    publishing(wire, state="Stopped")
    result = await client.images.publish(source, wait=False)
    assert isinstance(result, Operation)
    assert result.id == PUBLISH_ID
    assert not result.done
    assert wire.sent() == [*steps, "POST /1.0/images"]


async def test_publish_without_wait_but_with_aliases_creates_them_when_waited_for(
    client: AsyncClient, wire: Wire
) -> None:
    publishing(wire, state=None)
    wire.on("GET", f"{ALIASES}/pub", not_found_alias())
    wire.on("POST", ALIASES, sync_response(None, status=201))
    result = await client.images.publish("c1/s", aliases=["pub"], wait=False)
    assert isinstance(result, Operation)
    assert not result.done
    assert wire.bodies("POST", ALIASES) == []
    finished = await client.operations.wait(result)
    assert finished.succeeded
    assert wire.bodies("POST", ALIASES) == [{"name": "pub", "target": FP_A, "description": ""}]


def slowly(response: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
    """The answer, after longer than the progress reports' pacing (0.1 s)."""

    def answer(request: httpx.Request) -> httpx.Response:
        time.sleep(0.12)
        return httpx.Response(
            response.status_code, headers=response.headers, content=response.content
        )

    return answer


PACKING = {"progress": {"processed": "1234", "percent": "", "speed": "1.2MB/s"}}
#: A watched wait asks for the event stream first; this mock has none (it answers 599), so
#: the wait polls (the events themselves: test_unit_operation_events).
NO_EVENTS = "GET /1.0/events?type=operation"


async def test_publish_progress_from_a_604_daemon(client: AsyncClient, wire: Wire) -> None:
    """incusd 6.0.4 answers a timed-out wait without the operation: it is read."""
    publishing(wire, state=None)
    wire.on(
        "GET",
        f"/1.0/operations/{PUBLISH_ID}/wait",
        slowly(deadline_604()),
        PUBLISHED,
    )
    wire.on(
        "GET",
        f"/1.0/operations/{PUBLISH_ID}",
        sync_response(operation(PUBLISH_ID, metadata=PACKING)),
    )
    calls: list[tuple[int, int | None]] = []
    await client.images.publish("c1/s", progress=lambda *call: calls.append(call))
    assert calls == [(0, None), (1234, None), (5000, 5000)]
    assert wire.sent() == [
        SURVEY,
        "POST /1.0/images",
        NO_EVENTS,
        wait_path(PUBLISH_ID, 1),
        f"GET /1.0/operations/{PUBLISH_ID}",
        wait_path(PUBLISH_ID, 1),
        f"GET /1.0/images/{FP_A}",
    ]


async def test_publish_progress_from_a_newer_daemon(client: AsyncClient, wire: Wire) -> None:
    """incusd 6.0.5+ answers a timed-out wait with the running operation."""
    publishing(wire, state=None)
    wire.on(
        "GET",
        f"/1.0/operations/{PUBLISH_ID}/wait",
        slowly(sync_response(operation(PUBLISH_ID, metadata=PACKING))),
        PUBLISHED,
    )
    calls: list[tuple[int, int | None]] = []
    await client.images.publish("c1/s", progress=lambda *call: calls.append(call))
    assert calls == [(0, None), (1234, None), (5000, 5000)]
    assert wire.sent() == [
        SURVEY,
        "POST /1.0/images",
        NO_EVENTS,
        wait_path(PUBLISH_ID, 1),
        wait_path(PUBLISH_ID, 1),
        f"GET /1.0/images/{FP_A}",
    ]


@pytest.mark.parametrize(
    "source",
    ["../x", "c1/", "/c1", "c1\x00", "c1/s\x00", "", "c1/a/b", "c 1", "-c1", "c1?x", 5, None],
)
async def test_publish_refuses_a_bad_source_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, source: object
) -> None:
    with pytest.raises(InvalidInputError, match="source"):
        await client.images.publish(source)  # type: ignore[arg-type]
    assert not silent.calls


@pytest.mark.parametrize(
    "arguments",
    [
        {"aliases": "pub"},
        {"aliases": [""]},
        {"aliases": ["a", "a"]},
        {"properties": {"a": ""}},
        {"public": None},
        {"compression": ""},
        {"compression": 1},
        {"expires_at": datetime(2031, 1, 1)},  # naive on purpose
        {"force": "yes"},
        {"progress": 5},
        {"wait": 1},
    ],
)
async def test_publish_refuses_bad_options_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, arguments: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await client.images.publish("c1", **arguments)
    assert next(iter(arguments)) in str(caught.value)
    assert not silent.calls
