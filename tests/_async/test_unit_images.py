"""Unit tests (respx) of images.list, get, delete and update: what is sent, what comes back."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest
import respx

from incus_images import (
    AmbiguousFingerprintError,
    APIError,
    AsyncClient,
    ForbiddenError,
    Image,
    ImageList,
    IncusError,
    InvalidInputError,
    LeftBehind,
    NotFoundError,
    Operation,
    OperationError,
    PreconditionFailedError,
)
from tests.helpers import (
    OFFLINE_SERVER,
    UNIX_BASE,
    accepted_response,
    assert_left,
    error_response,
    etagged,
    image,
    operation,
    sent,
    sha256,
    sync_response,
)

pytestmark = pytest.mark.anyio

#: The endpoint the clients are built for, and how error messages name it.

FP_A = sha256(b"image a")
FP_B = sha256(b"image b")
FP_C = sha256(b"image c")
OP_ID = "0f4c3e2a-1b2c-4d5e-8f90-a1b2c3d4e5f6"


def body(request: httpx.Request) -> object:
    return json.loads(request.content)


# ------------------------------------------------------------------------------------------
# list


async def test_list_returns_images_sorted_by_fingerprint(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    """The server's random order is sorted; each entry is a typed Image with parsed fields."""
    router.get("/1.0/images").mock(
        return_value=sync_response([image(FP_C), image(FP_A, public=True), image(FP_B)])
    )
    images = await client.images.list()
    assert [item.fingerprint for item in images] == sorted([FP_A, FP_B, FP_C])
    assert all(isinstance(item, Image) for item in images)
    # The list type notebooks draw as one table.
    assert type(images) is ImageList
    assert sent(router) == ["GET /1.0/images?recursion=1"]
    first = images[0]
    assert first.fingerprint == min(FP_A, FP_B, FP_C)
    # Fields are converted, not passed through: aware datetimes, zero time -> None.
    assert first.created_at == datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)
    assert first.last_used_at is None
    assert first.expires_at is None
    assert first.properties == {"os": "tiny"}
    assert [item.public for item in images if item.fingerprint == FP_A] == [True]


async def test_list_recursion_1_explicit(client: AsyncClient, router: respx.MockRouter) -> None:
    route = router.get("/1.0/images").mock(return_value=sync_response([image(FP_B)]))
    images = await client.images.list(recursion=1)
    assert [item.fingerprint for item in images] == [FP_B]
    assert route.calls.last.request.url.params["recursion"] == "1"


async def test_list_recursion_0_returns_full_fingerprints_from_urls(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    """URLs become full fingerprints, sorted, with any ?project= suffix removed."""
    router.get("/1.0/images").mock(
        return_value=sync_response(
            [f"/1.0/images/{FP_C}", f"/1.0/images/{FP_A}?project=dev", f"/1.0/images/{FP_B}"]
        )
    )
    fingerprints = await client.images.list(recursion=0)
    assert fingerprints == sorted([FP_A, FP_B, FP_C])
    assert type(fingerprints) is list
    assert sent(router) == ["GET /1.0/images?recursion=0"]


async def test_list_empty_store(client: AsyncClient, router: respx.MockRouter) -> None:
    router.get("/1.0/images").mock(return_value=sync_response([]))
    assert await client.images.list() == []


@pytest.mark.parametrize("recursion", [2, True, False, -1, "1", None])
async def test_list_refuses_other_recursion_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, recursion: object
) -> None:
    with pytest.raises(InvalidInputError, match="recursion"):
        await client.images.list(recursion=recursion)  # type: ignore[call-overload]
    assert not silent.calls


async def test_list_float_recursion_is_refused_or_sent_as_an_integer(
    client: AsyncClient,
) -> None:
    """recursion=1.0 must either be refused before any request or be sent as recursion=1."""

    def incusd(request: httpx.Request) -> httpx.Response:
        # incusd: strconv.Atoi; anything that is not an integer means recursion 0.
        value = request.url.params.get("recursion", "0")
        if value.lstrip("-").isdigit() and int(value) != 0:
            return sync_response([image(FP_A)])
        return sync_response([f"/1.0/images/{FP_A}"])

    with respx.mock(base_url=UNIX_BASE, assert_all_called=False) as mock:
        route = mock.get("/1.0/images").mock(side_effect=incusd)
        try:
            images = await client.images.list(recursion=1.0)  # type: ignore[call-overload]
        except InvalidInputError:
            assert not route.calls
        else:
            assert route.calls.last.request.url.params["recursion"] == "1"
            assert [item.fingerprint for item in images] == [FP_A]


@pytest.mark.parametrize(
    "urls",
    [
        ["/1.0/instances/c1"],
        [42],
        {"images": []},
    ],
)
async def test_list_recursion_0_malformed_answer_is_an_incus_error(
    client: AsyncClient, router: respx.MockRouter, urls: object
) -> None:
    router.get("/1.0/images").mock(return_value=sync_response(urls))
    with pytest.raises(IncusError, match="unexpected answer") as caught:
        await client.images.list(recursion=0)
    assert OFFLINE_SERVER in str(caught.value)
    assert not isinstance(caught.value, APIError)


async def test_list_server_error(client: AsyncClient, router: respx.MockRouter) -> None:
    router.get("/1.0/images").mock(
        return_value=error_response(404, "Check if project has images: fetch project: nope")
    )
    with pytest.raises(NotFoundError) as caught:
        await client.images.list()
    assert caught.value.server_message == "Check if project has images: fetch project: nope"
    assert "list images" in str(caught.value)


# ------------------------------------------------------------------------------------------
# get


async def test_get_lowercases_the_prefix_in_the_path(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    prefix = FP_A[:10].upper()
    assert prefix != prefix.lower()  # the data must exercise the lower-casing
    router.get(f"/1.0/images/{FP_A[:10]}").mock(
        return_value=sync_response(
            image(FP_A, aliases=[{"name": "tiny", "description": "the tiny one"}]),
            headers={"ETag": '"abc"'},
        )
    )
    result = await client.images.get(prefix)
    assert isinstance(result, Image)
    assert result.fingerprint == FP_A
    assert sent(router) == [f"GET /1.0/images/{FP_A[:10]}"]
    # Aliases inside an image get the image's fingerprint and type filled in.
    assert [(a.name, a.description, a.target, a.type) for a in result.aliases] == [
        ("tiny", "the tiny one", FP_A, "container")
    ]


async def test_get_full_uppercase_fingerprint(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.get(f"/1.0/images/{FP_B}").mock(return_value=sync_response(image(FP_B)))
    assert (await client.images.get(FP_B.upper())).fingerprint == FP_B


async def test_get_single_hex_digit_prefix(client: AsyncClient, router: respx.MockRouter) -> None:
    fingerprint = "f" + FP_C[1:]
    router.get("/1.0/images/f").mock(return_value=sync_response(image(fingerprint)))
    assert (await client.images.get("F")).fingerprint == fingerprint


@pytest.mark.parametrize(
    "fingerprint",
    ["", "xyz", "_", "%", "abc%", "ab_c", "../etc", "abc/export", "a b", " abc", "abc\n", "0" * 65],
)
async def test_get_refuses_non_hex_input_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, fingerprint: str
) -> None:
    with pytest.raises(InvalidInputError, match="fingerprint") as caught:
        await client.images.get(fingerprint)
    assert isinstance(caught.value, ValueError)
    assert not silent.calls


@pytest.mark.parametrize("fingerprint", [None, 123, b"abc", ["abc"]])
async def test_get_refuses_non_string_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, fingerprint: object
) -> None:
    with pytest.raises(InvalidInputError, match="must be a string"):
        await client.images.get(fingerprint)  # type: ignore[arg-type]
    assert not silent.calls


async def test_get_not_found_carries_context(client: AsyncClient, router: respx.MockRouter) -> None:
    router.get("/1.0/images/ffffffffffff").mock(
        return_value=error_response(404, 'Image "ffffffffffff" not found')
    )
    with pytest.raises(NotFoundError) as caught:
        await client.images.get("ffffffffffff")
    error = caught.value
    assert isinstance(error, APIError)
    assert error.status_code == 404
    assert error.error_code == 404
    assert error.method == "GET"
    assert error.url == "/1.0/images/ffffffffffff"
    assert error.server == OFFLINE_SERVER
    assert error.server_message == 'Image "ffffffffffff" not found'
    message = str(error)
    assert "ffffffffffff" in message
    assert OFFLINE_SERVER in message


async def test_get_ambiguous_prefix(client: AsyncClient, router: respx.MockRouter) -> None:
    router.get("/1.0/images/a").mock(
        return_value=error_response(500, "More than one image matches")
    )
    with pytest.raises(AmbiguousFingerprintError) as caught:
        await client.images.get("a")
    assert caught.value.status_code == 500
    assert isinstance(caught.value, APIError)
    assert "'a'" in str(caught.value)
    assert "ambiguous" in str(caught.value)


async def test_get_forbidden(client: AsyncClient, router: respx.MockRouter) -> None:
    router.get("/1.0/images/abc").mock(return_value=error_response(403, "not authorized"))
    with pytest.raises(ForbiddenError) as caught:
        await client.images.get("abc")
    assert caught.value.status_code == 403


async def test_get_other_server_error_is_a_plain_api_error(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.get("/1.0/images/abc").mock(return_value=error_response(500, "database is locked"))
    with pytest.raises(APIError) as caught:
        await client.images.get("abc")
    assert type(caught.value) is APIError
    assert caught.value.server_message == "database is locked"


@pytest.mark.parametrize("size", [2 * 1024 + 7, 10 * 1024 * 1024])
async def test_get_huge_non_json_error_body_gives_a_bounded_message(
    client: AsyncClient, router: respx.MockRouter, size: int
) -> None:
    router.get("/1.0/images/abc").mock(
        return_value=httpx.Response(502, content=b"<html>" + b"x" * size)
    )
    with pytest.raises(APIError) as caught:
        await client.images.get("abc")
    assert caught.value.status_code == 502
    assert len(str(caught.value)) < 2000
    assert caught.value.server_message is not None
    assert len(caught.value.server_message) < 2000
    assert caught.value.server_message.startswith("<html>")


async def test_get_huge_json_error_text_is_bounded(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.get("/1.0/images/abc").mock(return_value=error_response(500, "boom " * 5000))
    with pytest.raises(APIError) as caught:
        await client.images.get("abc")
    assert len(str(caught.value)) < 2000
    assert caught.value.error_code == 500


async def test_get_empty_error_body(client: AsyncClient, router: respx.MockRouter) -> None:
    router.get("/1.0/images/abc").mock(return_value=httpx.Response(500))
    with pytest.raises(APIError, match="empty response body") as caught:
        await client.images.get("abc")
    assert caught.value.error_code is None


async def test_get_error_envelope_under_200_is_an_error(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    """Incus may send an error envelope with a 2xx status: it must not be read as an image."""
    router.get("/1.0/images/abc").mock(
        return_value=error_response(404, 'Image "abc" not found', http_status=200)
    )
    with pytest.raises(NotFoundError):
        await client.images.get("abc")


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, content=b"not json at all"),
        httpx.Response(200, json=["a", "list"]),
        sync_response({"filename": "no fingerprint"}),
        sync_response(image(FP_A, size="big")),
    ],
    ids=["not-json", "not-envelope", "missing-fingerprint", "wrong-type"],
)
async def test_get_malformed_answer_is_an_incus_error_naming_the_server(
    client: AsyncClient, router: respx.MockRouter, response: httpx.Response
) -> None:
    router.get("/1.0/images/abc").mock(return_value=response)
    with pytest.raises(IncusError, match="unexpected answer") as caught:
        await client.images.get("abc")
    assert OFFLINE_SERVER in str(caught.value)
    assert "get image 'abc'" in str(caught.value)


# ------------------------------------------------------------------------------------------
# delete


async def test_delete_without_wait_returns_the_running_operation(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    running = operation(
        OP_ID,
        description="Deleting image",
        resources={"images": [f"/1.0/images/{FP_A}"]},
    )
    router.delete(f"/1.0/images/{FP_A[:8]}").mock(return_value=accepted_response(running))
    result = await client.images.delete(FP_A[:8].upper())
    assert isinstance(result, Operation)
    assert result.id == OP_ID
    assert result.status_code == 103
    assert not result.done
    assert result.resources == {"images": [f"/1.0/images/{FP_A}"]}
    assert sent(router) == [f"DELETE /1.0/images/{FP_A[:8]}"]


async def test_delete_with_wait_returns_the_finished_operation(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.delete(f"/1.0/images/{FP_A}").mock(
        return_value=accepted_response(operation(OP_ID, description="Deleting image"))
    )
    router.get(f"/1.0/operations/{OP_ID}/wait").mock(
        return_value=sync_response(operation(OP_ID, status_code=200, description="Deleting image"))
    )
    result = await client.images.delete(FP_A, wait=True)
    assert result.id == OP_ID
    assert result.succeeded
    assert sent(router) == [
        f"DELETE /1.0/images/{FP_A}",
        f"GET /1.0/operations/{OP_ID}/wait?timeout=30",
    ]


async def test_delete_not_found(client: AsyncClient, router: respx.MockRouter) -> None:
    router.delete("/1.0/images/abc").mock(return_value=error_response(404, "Image not found"))
    with pytest.raises(NotFoundError) as caught:
        await client.images.delete("abc", wait=True)
    assert caught.value.method == "DELETE"
    assert "delete image 'abc'" in str(caught.value)
    assert OFFLINE_SERVER in str(caught.value)


async def test_delete_operation_failure_new_shape(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    """6.0.5+: /wait returns the failed operation; its err becomes the error's message."""
    router.delete(f"/1.0/images/{FP_A}").mock(return_value=accepted_response(operation(OP_ID)))
    router.get(f"/1.0/operations/{OP_ID}/wait").mock(
        return_value=sync_response(operation(OP_ID, status_code=400, err="disk on fire"))
    )
    with pytest.raises(OperationError) as caught:
        await client.images.delete(FP_A, wait=True)
    assert caught.value.server_message == "disk on fire"
    assert "disk on fire" in str(caught.value)
    assert FP_A in str(caught.value)
    assert caught.value.operation is not None
    assert caught.value.operation.status_code == 400


async def test_delete_operation_failure_604_shape(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    """6.0.4: /wait answers 200 with an error body; the SDK then reads the operation."""
    router.delete(f"/1.0/images/{FP_A}").mock(return_value=accepted_response(operation(OP_ID)))
    router.get(f"/1.0/operations/{OP_ID}/wait").mock(
        return_value=error_response(500, "disk on fire", http_status=200)
    )
    router.get(f"/1.0/operations/{OP_ID}").mock(
        return_value=sync_response(operation(OP_ID, status_code=400, err="disk on fire"))
    )
    with pytest.raises(OperationError) as caught:
        await client.images.delete(FP_A, wait=True)
    assert caught.value.server_message == "disk on fire"
    assert caught.value.error_code == 500
    assert sent(router)[-1] == f"GET /1.0/operations/{OP_ID}"


@pytest.mark.parametrize(
    ("fingerprint", "wait"), [("_", False), ("", True), (FP_A, "yes"), (FP_A, 1), (None, False)]
)
async def test_delete_refuses_bad_input_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, fingerprint: object, wait: object
) -> None:
    with pytest.raises(InvalidInputError):
        await client.images.delete(fingerprint, wait=wait)  # type: ignore[arg-type]
    assert not silent.calls


# ------------------------------------------------------------------------------------------
# update


async def test_update_patches_with_if_match_and_rereads(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    """GET (ETag) -> PATCH with If-Match replacing the properties -> GET the result."""
    before = {"os": "tiny", "old": "gone soon", "keep": "1"}
    after = {"os": "new", "keep": "1", "k": "a&b=c d+e% ü"}
    first = router.get(f"/1.0/images/{FP_A[:12]}").mock(
        return_value=etagged(FP_A, '"etag-1"', properties=before, public=True)
    )
    patch = router.patch(f"/1.0/images/{FP_A}").mock(return_value=sync_response({}))
    final = router.get(f"/1.0/images/{FP_A}").mock(
        return_value=etagged(FP_A, '"etag-2"', properties=after, public=True)
    )
    result = await client.images.update(FP_A[:12], {"os": "new", "keep": "1", "k": after["k"]})
    assert sent(router) == [
        f"GET /1.0/images/{FP_A[:12]}",
        f"PATCH /1.0/images/{FP_A}",
        f"GET /1.0/images/{FP_A}",
    ]
    request = patch.calls.last.request
    assert request.headers["If-Match"] == '"etag-1"'
    # Removed keys are sent as "" (PATCH deletes them); nothing else is sent.
    assert body(request) == {
        "properties": {"old": "", "os": "new", "keep": "1", "k": "a&b=c d+e% ü"}
    }
    assert first.call_count == 1
    assert final.call_count == 1
    assert result.properties == after
    assert result.public is True


async def test_update_with_empty_mapping_removes_every_property(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.get(f"/1.0/images/{FP_A}").mock(
        side_effect=[
            etagged(FP_A, '"e"', properties={"a": "1", "b": "2"}),
            etagged(FP_A, '"f"', properties={}),
        ]
    )
    patch = router.patch(f"/1.0/images/{FP_A}").mock(return_value=sync_response({}))
    result = await client.images.update(FP_A, {})
    assert body(patch.calls.last.request) == {"properties": {"a": "", "b": ""}}
    assert result.properties == {}


async def test_update_without_etag_sends_no_if_match(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.get(f"/1.0/images/{FP_A}").mock(
        side_effect=[
            sync_response(image(FP_A)),
            sync_response(image(FP_A, properties={"os": "x"})),
        ]
    )
    patch = router.patch(f"/1.0/images/{FP_A}").mock(return_value=sync_response({}))
    await client.images.update(FP_A, {"os": "x"})
    assert "if-match" not in patch.calls.last.request.headers


async def test_update_retries_on_412_with_the_new_etag(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    reads = router.get(f"/1.0/images/{FP_A[:6]}").mock(
        side_effect=[
            etagged(FP_A, '"e1"', properties={"os": "tiny"}),
            etagged(FP_A, '"e2"', properties={"os": "tiny", "other": "writer"}),
            etagged(FP_A, '"e3"', properties={"os": "tiny", "other": "writer", "x": "y"}),
        ]
    )
    patch = router.patch(f"/1.0/images/{FP_A}").mock(
        side_effect=[
            error_response(412, 'ETag doesn\'t match: e2 vs "e1"'),
            error_response(412, 'ETag doesn\'t match: e3 vs "e2"'),
            sync_response({}),
        ]
    )
    router.get(f"/1.0/images/{FP_A}").mock(
        return_value=etagged(FP_A, '"e4"', properties={"os": "mine"})
    )
    result = await client.images.update(FP_A[:6], {"os": "mine"})
    assert result.properties == {"os": "mine"}
    assert reads.call_count == 3
    assert patch.call_count == 3
    assert [call.request.headers["If-Match"] for call in patch.calls] == ['"e1"', '"e2"', '"e3"']
    # Each attempt is computed from what was just read.
    assert [body(call.request) for call in patch.calls] == [
        {"properties": {"os": "mine"}},
        {"properties": {"os": "mine", "other": ""}},
        {"properties": {"os": "mine", "other": "", "x": ""}},
    ]


async def test_update_gives_up_after_five_412s(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    reads = router.get(f"/1.0/images/{FP_A}").mock(return_value=etagged(FP_A, '"e"'))
    patch = router.patch(f"/1.0/images/{FP_A}").mock(
        return_value=error_response(412, 'ETag doesn\'t match: x vs "e"')
    )
    with pytest.raises(PreconditionFailedError) as caught:
        await client.images.update(FP_A, {"os": "mine"})
    assert reads.call_count == 5
    assert patch.call_count == 5
    # No final GET after the failure.
    assert sent(router)[-1] == f"PATCH /1.0/images/{FP_A}"
    error = caught.value
    assert error.status_code == 412
    assert error.fingerprint == FP_A
    assert "5 attempts" in str(error)
    assert_left(error, LeftBehind.NOTHING, "nothing was written")
    assert OFFLINE_SERVER in str(error)


async def test_update_does_not_retry_other_errors(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.get(f"/1.0/images/{FP_A}").mock(return_value=etagged(FP_A, '"e"'))
    patch = router.patch(f"/1.0/images/{FP_A}").mock(
        return_value=error_response(404, "Image not found")
    )
    with pytest.raises(NotFoundError):
        await client.images.update(FP_A, {"os": "mine"})
    assert patch.call_count == 1


async def test_update_of_missing_image(client: AsyncClient, router: respx.MockRouter) -> None:
    router.get("/1.0/images/abc").mock(return_value=error_response(404, 'Image "abc" not found'))
    with pytest.raises(NotFoundError, match="abc"):
        await client.images.update("abc", {"os": "x"})
    assert len(router.calls) == 1


@pytest.mark.parametrize(
    ("fingerprint", "properties", "wait"),
    [
        (FP_A, {"a": ""}, False),
        (FP_A, {"": "a"}, False),
        (FP_A, {"a": 1}, False),
        (FP_A, {1: "a"}, False),
        (FP_A, [("a", "b")], False),
        (FP_A, {"a": "b"}, "no"),
        ("%", {"a": "b"}, False),
    ],
)
async def test_update_refuses_bad_input_before_any_request(
    client: AsyncClient,
    silent: respx.MockRouter,
    fingerprint: object,
    properties: object,
    wait: object,
) -> None:
    with pytest.raises(InvalidInputError):
        await client.images.update(fingerprint, properties, wait=wait)  # type: ignore[arg-type]
    assert not silent.calls
