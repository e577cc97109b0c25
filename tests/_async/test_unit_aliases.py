"""Unit tests (respx) of the alias methods: one percent-encoded path segment, bodies, errors."""

from __future__ import annotations

import json
from urllib.parse import unquote

import httpx
import pytest
import respx

from incus_images import (
    AmbiguousFingerprintError,
    AsyncClient,
    ConflictError,
    ImageAlias,
    InvalidInputError,
    NotFoundError,
)
from tests.helpers import OFFLINE_SERVER, error_response, sha256, sync_response

pytestmark = pytest.mark.anyio

FP = sha256(b"aliased image")
OTHER_FP = sha256(b"another image")
ALIASES = "/1.0/images/aliases"

#: Names and the raw path segment each must be sent as (written out, not computed).
ENCODED_NAMES = [
    ("plain-name", "plain-name"),
    ("with/slash", "with%2Fslash"),
    ("what?", "what%3F"),
    ("x#y", "x%23y"),
    ("100%", "100%25"),
    ("%2F", "%252F"),
    ("with space", "with%20space"),
    ("a+b&c=d", "a%2Bb%26c%3Dd"),
    (".", "%2E"),
    ("..", "%2E%2E"),
    ("../../1.0/instances", "%2E%2E%2F%2E%2E%2F1%2E0%2Finstances"),
    ("übung ☃", "%C3%BCbung%20%E2%98%83"),
]


def alias_entry(name: str, target: str = FP, description: str = "") -> dict[str, str]:
    """An ImageAliasesEntry as incusd sends it."""
    return {"description": description, "target": target, "name": name, "type": "container"}


def any_alias(router: respx.MockRouter, method: str, response: httpx.Response) -> respx.Route:
    """A route for every path under /1.0/images/aliases/ (respx matches decoded paths)."""
    return router.route(method=method, path__startswith=f"{ALIASES}/").mock(return_value=response)


def raw_path(route: respx.Route) -> str:
    return route.calls.last.request.url.raw_path.decode("ascii")


# ------------------------------------------------------------------------------------------
# get_alias


@pytest.mark.parametrize(("name", "segment"), ENCODED_NAMES)
async def test_get_alias_sends_the_name_as_one_encoded_segment(
    client: AsyncClient, router: respx.MockRouter, name: str, segment: str
) -> None:
    route = any_alias(router, "GET", sync_response(alias_entry(name)))
    alias = await client.images.get_alias(name)
    path = raw_path(route)
    assert path == f"{ALIASES}/{segment}"
    # One segment, no query or fragment, and it decodes back to the exact name.
    encoded = path.removeprefix(f"{ALIASES}/")
    assert "/" not in encoded
    assert "?" not in encoded
    assert "#" not in encoded
    assert unquote(encoded) == name
    assert route.calls.last.request.url.query == b""
    assert alias == ImageAlias(name=name, target=FP, description="", type="container")


async def test_get_alias_not_found(client: AsyncClient, router: respx.MockRouter) -> None:
    any_alias(router, "GET", error_response(404, "Image alias not found"))
    with pytest.raises(NotFoundError) as caught:
        await client.images.get_alias("nope/x")
    error = caught.value
    assert error.status_code == 404
    assert error.url == f"{ALIASES}/nope%2Fx"
    assert "'nope/x'" in str(error)
    assert OFFLINE_SERVER in str(error)


@pytest.mark.parametrize("name", ["", None, 42, b"bytes", "a\x00b"])
async def test_alias_names_refused_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, name: object
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await client.images.get_alias(name)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    with pytest.raises(InvalidInputError):
        await client.images.delete_alias(name)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        await client.images.create_alias(name, FP)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        await client.images.update_alias(name, FP)  # type: ignore[arg-type]
    assert not silent.calls


@pytest.mark.parametrize("name", ["esc\x1b[2J", "evil\u202egnp", "c1\x9b", "x" * 256])
async def test_names_a_new_alias_may_not_have_are_refused_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, name: str
) -> None:
    with pytest.raises(InvalidInputError, match="alias"):
        await client.images.create_alias(name, FP)
    with pytest.raises(InvalidInputError, match="alias new_name"):
        await client.images.rename_alias("old", name)
    with pytest.raises(InvalidInputError, match="alias aliases"):
        await client.images.create(b"\x1f\x8b\x08\x00", aliases=[name])
    with pytest.raises(InvalidInputError, match="alias aliases"):
        await client.images.publish("c1", aliases=[name])
    assert not silent.calls


# ------------------------------------------------------------------------------------------
# create_alias


async def test_create_alias_posts_then_reads_the_alias(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    name = "team/web server?"
    post = router.post(ALIASES).mock(
        return_value=sync_response(
            None, status=201, headers={"Location": f"{ALIASES}/team%2Fweb%20server%3F"}
        )
    )
    read = any_alias(router, "GET", sync_response(alias_entry(name, description="prod")))
    alias = await client.images.create_alias(name, FP[:12].upper(), description="prod")
    assert json.loads(post.calls.last.request.content) == {
        "name": name,
        "target": FP[:12],
        "description": "prod",
    }
    assert raw_path(read) == f"{ALIASES}/team%2Fweb%20server%3F"
    assert isinstance(alias, ImageAlias)
    assert alias == ImageAlias(name=name, target=FP, description="prod", type="container")
    assert [call.request.method for call in router.calls] == ["POST", "GET"]


async def test_create_alias_without_description_sends_empty_one(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    post = router.post(ALIASES).mock(return_value=sync_response(None, status=201))
    any_alias(router, "GET", sync_response(alias_entry("a")))
    await client.images.create_alias("a", FP)
    assert json.loads(post.calls.last.request.content) == {
        "name": "a",
        "target": FP,
        "description": "",
    }


async def test_create_alias_duplicate_is_a_conflict(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.post(ALIASES).mock(return_value=error_response(409, 'Alias "a" already exists'))
    with pytest.raises(ConflictError) as caught:
        await client.images.create_alias("a", FP)
    error = caught.value
    assert error.status_code == 409
    assert error.server_message == 'Alias "a" already exists'
    assert "'a'" in str(error)
    assert OFFLINE_SERVER in str(error)
    assert len(router.calls) == 1  # no GET after the failure


async def test_create_alias_unknown_target_is_not_found(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.post(ALIASES).mock(return_value=error_response(404, "Image not found"))
    with pytest.raises(NotFoundError) as caught:
        await client.images.create_alias("a", "abcdef")
    assert "abcdef" in str(caught.value)


async def test_create_alias_ambiguous_target(client: AsyncClient, router: respx.MockRouter) -> None:
    router.post(ALIASES).mock(return_value=error_response(500, "More than one image matches"))
    with pytest.raises(AmbiguousFingerprintError):
        await client.images.create_alias("a", "a")


@pytest.mark.parametrize(
    ("target", "description"),
    [("", None), ("xyz", None), ("_", None), (None, None), (FP, 42), (FP, b"bytes")],
)
async def test_create_alias_bad_target_or_description_refused(
    client: AsyncClient, silent: respx.MockRouter, target: object, description: object
) -> None:
    with pytest.raises(InvalidInputError):
        await client.images.create_alias("a", target, description)  # type: ignore[arg-type]
    assert not silent.calls


# ------------------------------------------------------------------------------------------
# update_alias


async def test_update_alias_without_description_keeps_it(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    """description=None: PATCH carries only the target (PATCH keeps unsent fields)."""
    patch = any_alias(router, "PATCH", sync_response({}))
    any_alias(router, "GET", sync_response(alias_entry("web/x", OTHER_FP, "kept")))
    alias = await client.images.update_alias("web/x", OTHER_FP.upper())
    request = patch.calls.last.request
    assert request.url.raw_path == f"{ALIASES}/web%2Fx".encode()
    assert json.loads(request.content) == {"target": OTHER_FP}
    assert alias == ImageAlias(name="web/x", target=OTHER_FP, description="kept", type="container")
    assert [call.request.method for call in router.calls] == ["PATCH", "GET"]


async def test_update_alias_empty_description_clears_it(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    patch = any_alias(router, "PATCH", sync_response({}))
    any_alias(router, "GET", sync_response(alias_entry("a", OTHER_FP, "")))
    await client.images.update_alias("a", OTHER_FP, description="")
    assert json.loads(patch.calls.last.request.content) == {
        "target": OTHER_FP,
        "description": "",
    }


async def test_update_alias_new_description(client: AsyncClient, router: respx.MockRouter) -> None:
    patch = any_alias(router, "PATCH", sync_response({}))
    any_alias(router, "GET", sync_response(alias_entry("a", FP, "new ü")))
    alias = await client.images.update_alias("a", FP[:4], description="new ü")
    assert json.loads(patch.calls.last.request.content) == {
        "target": FP[:4],
        "description": "new ü",
    }
    assert alias.description == "new ü"


async def test_update_alias_missing_alias(client: AsyncClient, router: respx.MockRouter) -> None:
    any_alias(router, "PATCH", error_response(404, "Image alias not found"))
    with pytest.raises(NotFoundError) as caught:
        await client.images.update_alias("gone", FP)
    assert caught.value.method == "PATCH"
    assert "'gone'" in str(caught.value)
    assert len(router.calls) == 1


async def test_update_alias_bad_target_refused(
    client: AsyncClient, silent: respx.MockRouter
) -> None:
    with pytest.raises(InvalidInputError, match="target"):
        await client.images.update_alias("a", "not-hex")
    assert not silent.calls


# ------------------------------------------------------------------------------------------
# delete_alias


@pytest.mark.parametrize(("name", "segment"), ENCODED_NAMES)
async def test_delete_alias_sends_the_encoded_name_once(
    client: AsyncClient, router: respx.MockRouter, name: str, segment: str
) -> None:
    route = any_alias(router, "DELETE", sync_response({}))
    await client.images.delete_alias(name)
    assert raw_path(route) == f"{ALIASES}/{segment}"
    assert len(router.calls) == 1


async def test_delete_alias_missing(client: AsyncClient, router: respx.MockRouter) -> None:
    any_alias(router, "DELETE", error_response(404, "Image alias not found"))
    with pytest.raises(NotFoundError) as caught:
        await client.images.delete_alias("gone")
    assert caught.value.server_message == "Image alias not found"
    assert OFFLINE_SERVER in str(caught.value)
