"""Unit tests (respx) of images.create: headers and body sent, waiting, checks, cleanup."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from incus_images import (
    APIError,
    AsyncClient,
    ChecksumMismatchError,
    ConflictError,
    Image,
    ImageExistsError,
    IncusError,
    InvalidInputError,
    LeftBehind,
    Operation,
    OperationError,
    OperationGoneError,
    TransferError,
    UnexpectedResponseError,
)
from tests.helpers import (
    OFFLINE_SERVER,
    SURVEY,
    accepted_response,
    assert_left,
    error_response,
    image,
    mock_survey,
    operation,
    raw_header,
    sent,
    sha256,
    sync_response,
)

pytestmark = pytest.mark.anyio


#: Stand-in image bytes (gzip magic, then binary noise): only their hash matters here.
DATA = b"\x1f\x8b\x08\x00" + bytes(range(256)) * 3
FP = sha256(DATA)
UPLOAD_ID = "11111111-2222-4333-8444-555555555555"
DELETE_ID = "99999999-8888-4777-8666-555555555555"
DUPLICATE = "Image with same fingerprint already exists"


def upload_done(fingerprint: str = FP, op_id: str = UPLOAD_ID) -> httpx.Response:
    """The /wait answer for a successful upload."""
    return sync_response(
        operation(op_id, status_code=200, metadata={"fingerprint": fingerprint, "size": "772"})
    )


def mock_upload(router: respx.MockRouter) -> respx.Route:
    return router.post("/1.0/images").mock(return_value=accepted_response(operation(UPLOAD_ID)))


def mock_wait(router: respx.MockRouter, answer: httpx.Response) -> respx.Route:
    """The upload's wait (and the survey that every waiting upload makes first)."""
    mock_survey(router)
    return router.get(f"/1.0/operations/{UPLOAD_ID}/wait").mock(return_value=answer)


# ------------------------------------------------------------------------------------------
# What is sent.


async def test_create_sends_the_bytes_with_octet_stream_and_returns_running_operation(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    """wait=False without properties: one POST, no wait; the Operation is returned as is."""
    post = mock_upload(router)
    result = await client.images.create(DATA)
    assert isinstance(result, Operation)
    assert result.id == UPLOAD_ID
    assert result.status_code == 103
    assert sent(router) == ["POST /1.0/images"]
    request = post.calls.last.request
    assert request.content == DATA
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert "x-incus-filename" not in request.headers
    assert "x-incus-public" not in request.headers
    assert "x-incus-properties" not in request.headers


async def test_create_sends_non_ascii_filename_as_raw_utf8(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    post = mock_upload(router)
    name = "my image ü ☃ 日本.tar.gz"
    await client.images.create(DATA, filename=name)
    request = post.calls.last.request
    assert raw_header(request, b"x-incus-filename") == [name.encode("utf-8")]


async def test_create_public_header_only_when_public(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    post = mock_upload(router)
    await client.images.create(DATA, public=True)
    await client.images.create(DATA, public=False)
    first, second = (call.request for call in post.calls)
    assert first.headers.get_list("X-Incus-public") == ["true"]
    assert "x-incus-public" not in second.headers


async def test_create_accepts_bytearray_and_memoryview(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    post = mock_upload(router)
    # Accepted at run time, though the annotation says bytes.
    await client.images.create(bytearray(DATA))  # type: ignore[arg-type]
    await client.images.create(memoryview(DATA))  # type: ignore[arg-type]
    assert [call.request.content for call in post.calls] == [DATA, DATA]


# ------------------------------------------------------------------------------------------
# Waiting, and what comes back.


async def test_create_wait_waits_then_gets_the_image(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    mock_upload(router)
    mock_wait(router, upload_done())
    router.get(f"/1.0/images/{FP}").mock(
        return_value=sync_response(image(FP, filename="x.tar.gz", size=len(DATA)))
    )
    result = await client.images.create(DATA, filename="x.tar.gz", wait=True)
    assert isinstance(result, Image)
    assert result.fingerprint == FP
    assert result.size == len(DATA)
    assert sent(router) == [
        SURVEY,
        "POST /1.0/images",
        f"GET /1.0/operations/{UPLOAD_ID}/wait?timeout=30",
        f"GET /1.0/images/{FP}",
    ]


async def test_create_properties_are_patched_after_upload_never_as_header(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    """Properties go in one PATCH to the full fingerprint, after the upload finished."""
    properties = {"os": "Übuntu ☃", "weird": "a&b=c d+e%", "description": "x"}
    post = mock_upload(router)
    mock_wait(router, upload_done())
    patch = router.patch(f"/1.0/images/{FP}").mock(return_value=sync_response({}))
    router.get(f"/1.0/images/{FP}").mock(
        return_value=sync_response(image(FP, properties=properties))
    )
    result = await client.images.create(DATA, properties=properties, wait=True)
    assert isinstance(result, Image)
    assert result.properties == properties
    assert "x-incus-properties" not in post.calls.last.request.headers
    assert patch.call_count == 1
    assert json.loads(patch.calls.last.request.content) == {"properties": properties}
    assert sent(router) == [
        SURVEY,
        "POST /1.0/images",
        f"GET /1.0/operations/{UPLOAD_ID}/wait?timeout=30",
        f"PATCH /1.0/images/{FP}",
        f"GET /1.0/images/{FP}",
    ]


async def test_create_auto_update_is_patched_after_upload(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    mock_upload(router)
    mock_wait(router, upload_done())
    patch = router.patch(f"/1.0/images/{FP}").mock(return_value=sync_response({}))
    router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP, auto_update=True)))
    result = await client.images.create(DATA, auto_update=True, wait=True)
    assert isinstance(result, Image)
    assert result.auto_update is True
    assert json.loads(patch.calls.last.request.content) == {"auto_update": True}


async def test_create_properties_and_auto_update_in_one_patch(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    mock_upload(router)
    mock_wait(router, upload_done())
    patch = router.patch(f"/1.0/images/{FP}").mock(return_value=sync_response({}))
    router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP)))
    await client.images.create(DATA, auto_update=True, properties={"a": "b"}, wait=True)
    assert patch.call_count == 1
    assert json.loads(patch.calls.last.request.content) == {
        "properties": {"a": "b"},
        "auto_update": True,
    }


async def test_create_with_properties_without_wait_returns_at_once_and_the_wait_patches(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    """wait=False returns the running upload once the bytes are sent; the properties are
    applied (and the image verified) when the Operation is waited for."""
    mock_upload(router)
    mock_wait(router, upload_done())
    router.patch(f"/1.0/images/{FP}").mock(return_value=sync_response({}))
    result = await client.images.create(DATA, properties={"a": "b"})
    assert isinstance(result, Operation)
    assert not result.done
    assert sent(router) == [SURVEY, "POST /1.0/images"]
    finished = await client.operations.wait(result)
    assert finished.succeeded
    assert finished.metadata == {"fingerprint": FP, "size": "772"}
    assert [line.split()[0] for line in sent(router)] == ["GET", "POST", "GET", "PATCH"]
    # Done once: a second wait asks the server again, and patches nothing more.
    await client.operations.wait(result.id)
    assert [line.split()[0] for line in sent(router)] == ["GET", "POST", "GET", "PATCH", "GET"]


async def test_create_empty_properties_mean_no_patch(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    mock_upload(router)
    result = await client.images.create(DATA, properties={})
    assert isinstance(result, Operation)
    assert sent(router) == ["POST /1.0/images"]


# ------------------------------------------------------------------------------------------
# Failures.


async def test_create_fingerprint_mismatch_deletes_the_reported_image(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    other = sha256(b"what the server claims it stored")
    mock_upload(router)
    mock_wait(router, upload_done(other))
    delete = router.delete(f"/1.0/images/{other}").mock(
        return_value=accepted_response(operation(DELETE_ID, description="Deleting image"))
    )
    router.get(f"/1.0/operations/{DELETE_ID}/wait").mock(
        return_value=sync_response(operation(DELETE_ID, status_code=200))
    )
    # A hash mismatch: the server stored another fingerprint than the bytes sent hash to.
    with pytest.raises(ChecksumMismatchError) as caught:
        await client.images.create(DATA, properties={"a": "b"}, wait=True)
    assert delete.call_count == 1
    error = caught.value
    assert error.fingerprint == FP
    assert other in str(error)
    assert FP in str(error)
    assert OFFLINE_SERVER in str(error)
    assert_left(error, LeftBehind.DELETED, f"image {other} was deleted again")
    # Nothing is patched or read after the mismatch.
    assert sent(router)[-1] == f"GET /1.0/operations/{DELETE_ID}/wait?timeout=30"


async def test_create_fingerprint_mismatch_never_deletes_an_image_that_was_there(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    """The server reports an image it held before the upload: it is not this upload's."""
    other = sha256(b"an image the server had before")
    mock_upload(router)
    router.get(f"/1.0/operations/{UPLOAD_ID}/wait").mock(return_value=upload_done(other))
    mock_survey(router, other)
    with pytest.raises(ChecksumMismatchError) as caught:
        await client.images.create(DATA, wait=True)
    assert_left(caught.value, LeftBehind.KEPT, f"image {other} was on the server before and stays")
    assert [line.split()[0] for line in sent(router)] == ["GET", "POST", "GET"]


async def test_create_fingerprint_mismatch_message_tells_when_delete_failed(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    other = sha256(b"what the server claims it stored")
    mock_upload(router)
    mock_wait(router, upload_done(other))
    router.delete(f"/1.0/images/{other}").mock(return_value=error_response(500, "db locked"))
    with pytest.raises(ChecksumMismatchError) as caught:
        await client.images.create(DATA, wait=True)
    assert_left(caught.value, LeftBehind.STILL_THERE, "db locked", "still on the server")
    assert "was deleted" not in " ".join(caught.value.__notes__)


async def test_create_without_reported_fingerprint_does_not_claim_a_deletion(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    mock_upload(router)
    mock_wait(router, sync_response(operation(UPLOAD_ID, status_code=200, metadata=None)))
    # A success that names nothing stored is an answer that makes no sense.
    with pytest.raises(UnexpectedResponseError, match="reports no fingerprint") as caught:
        await client.images.create(DATA, wait=True)
    assert sent(router)[-1].startswith("GET /1.0/operations/")  # no DELETE was possible
    assert_left(caught.value, LeftBehind.MAY_BE_STORED, "no image could be identified")
    assert "was deleted" not in " ".join(caught.value.__notes__)


#: How incusd 6.0.4 refuses an upload whose X-Incus-fingerprint is not the hash of its bytes.
WRONG = sha256(b"not the image")
MISMATCH = f"fingerprints don't match, got {FP} expected {WRONG}"


@pytest.mark.parametrize("shape", ["6.0.4", "6.0.5"])
async def test_a_fingerprint_the_server_refuses_is_a_checksum_mismatch(
    client: AsyncClient, router: respx.MockRouter, shape: str
) -> None:
    """Every hash mismatch is a ChecksumMismatchError: also the server's own check of the
    fingerprint= given, which fails the upload's operation and stores nothing."""
    mock_upload(router)
    failed = operation(UPLOAD_ID, status_code=400, err=MISMATCH)
    if shape == "6.0.4":
        mock_wait(router, error_response(500, MISMATCH, http_status=200))
        router.get(f"/1.0/operations/{UPLOAD_ID}").mock(return_value=sync_response(failed))
    else:
        mock_wait(router, sync_response(failed))
    with pytest.raises(ChecksumMismatchError) as caught:
        await client.images.create(DATA, fingerprint=WRONG, wait=True)
    error = caught.value
    assert isinstance(error, TransferError)
    assert error.fingerprint == WRONG
    assert error.server_message == MISMATCH
    assert error.operation is not None and error.operation.id == UPLOAD_ID
    assert f"the bytes sent hash to {FP}, not to the fingerprint given, {WRONG}" in str(error)
    assert OFFLINE_SERVER in str(error)
    assert_left(error, LeftBehind.NOTHING, "nothing was stored")
    assert "DELETE" not in " ".join(sent(router))


async def test_a_refused_fingerprint_waited_for_later_is_a_checksum_mismatch(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    mock_upload(router)
    router.get(f"/1.0/operations/{UPLOAD_ID}/wait").mock(
        return_value=sync_response(operation(UPLOAD_ID, status_code=400, err=MISMATCH))
    )
    started = await client.images.create(DATA, fingerprint=WRONG)
    with pytest.raises(ChecksumMismatchError):
        await client.operations.wait(started)


async def test_create_duplicate_604_shape(client: AsyncClient, router: respx.MockRouter) -> None:
    """6.0.4: /wait is HTTP 200 with an error body; the SDK reads the operation for details."""
    mock_upload(router)
    mock_wait(router, error_response(500, DUPLICATE, http_status=200))
    op = router.get(f"/1.0/operations/{UPLOAD_ID}").mock(
        return_value=sync_response(
            operation(
                UPLOAD_ID,
                status_code=400,
                err=DUPLICATE,
                metadata={"fingerprint": FP, "size": "772"},
            )
        )
    )
    with pytest.raises(ImageExistsError) as caught:
        await client.images.create(DATA, properties={"a": "b"}, wait=True)
    error = caught.value
    assert isinstance(error, ConflictError)
    assert isinstance(error, OperationError)
    assert error.fingerprint == FP
    assert FP in str(error)
    assert OFFLINE_SERVER in str(error)
    assert op.call_count == 1
    assert "project" not in op.calls.last.request.url.params
    # No PATCH and no image GET after the failure.
    assert [line.split()[0] for line in sent(router)] == ["GET", "POST", "GET", "GET"]


async def test_create_duplicate_604_shape_operation_already_gone(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    """The operation may be purged before it is read: the fingerprint is still the data's."""
    mock_upload(router)
    mock_wait(router, error_response(500, DUPLICATE, http_status=200))
    router.get(f"/1.0/operations/{UPLOAD_ID}").mock(
        return_value=error_response(404, "Operation not found")
    )
    with pytest.raises(ImageExistsError) as caught:
        await client.images.create(DATA, wait=True)
    assert caught.value.fingerprint == FP
    assert caught.value.operation is None


async def test_create_duplicate_new_shape(client: AsyncClient, router: respx.MockRouter) -> None:
    """6.0.5+: /wait returns the failed operation in a sync envelope."""
    mock_upload(router)
    mock_wait(
        router,
        sync_response(
            operation(
                UPLOAD_ID,
                status_code=400,
                err=DUPLICATE,
                metadata={"fingerprint": FP, "size": "772"},
            )
        ),
    )
    with pytest.raises(ImageExistsError) as caught:
        await client.images.create(DATA, wait=True)
    error = caught.value
    assert isinstance(error, ConflictError)
    assert isinstance(error, OperationError)
    assert error.fingerprint == FP
    assert error.operation is not None
    assert error.operation.id == UPLOAD_ID
    assert len(router.calls) == 3


async def test_create_garbage_upload_fails_with_the_server_message(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    mock_upload(router)
    mock_wait(router, error_response(500, "Unsupported compression", http_status=200))
    router.get(f"/1.0/operations/{UPLOAD_ID}").mock(
        return_value=sync_response(
            operation(UPLOAD_ID, status_code=400, err="Unsupported compression")
        )
    )
    with pytest.raises(OperationError) as caught:
        await client.images.create(DATA, wait=True)
    error = caught.value
    assert not isinstance(error, ConflictError)
    assert error.server_message == "Unsupported compression"
    assert "Unsupported compression" in str(error)
    assert FP[:12] in str(error)
    assert error.fingerprint == FP


async def test_create_failed_patch_deletes_the_image_and_says_so(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    mock_upload(router)
    mock_wait(router, upload_done())
    router.patch(f"/1.0/images/{FP}").mock(return_value=error_response(400, "bad properties"))
    delete = router.delete(f"/1.0/images/{FP}").mock(
        return_value=accepted_response(operation(DELETE_ID, description="Deleting image"))
    )
    router.get(f"/1.0/operations/{DELETE_ID}/wait").mock(
        return_value=sync_response(operation(DELETE_ID, status_code=200))
    )
    with pytest.raises(APIError) as caught:
        await client.images.create(DATA, properties={"a": "b"}, wait=True)
    error = caught.value
    assert delete.call_count == 1
    assert error.status_code == 400
    assert error.fingerprint == FP
    assert "bad properties" in str(error)
    assert_left(error, LeftBehind.DELETED, f"image {FP} was deleted again")
    assert [line.split()[0] for line in sent(router)] == [
        "GET",
        "POST",
        "GET",
        "PATCH",
        "DELETE",
        "GET",
    ]


async def test_create_failed_patch_and_failed_delete_says_the_image_remains(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    mock_upload(router)
    mock_wait(router, upload_done())
    router.patch(f"/1.0/images/{FP}").mock(return_value=error_response(500, "patch broke"))
    router.delete(f"/1.0/images/{FP}").mock(return_value=error_response(500, "delete broke"))
    with pytest.raises(APIError) as caught:
        await client.images.create(DATA, auto_update=True, wait=True)
    assert "patch broke" in str(caught.value)
    assert_left(caught.value, LeftBehind.STILL_THERE, "delete broke", "still on the server")


async def test_create_upload_refused_by_the_server(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.post("/1.0/images").mock(return_value=error_response(403, "not authorized"))
    with pytest.raises(APIError) as caught:
        await client.images.create(DATA)
    assert caught.value.status_code == 403
    assert caught.value.method == "POST"
    # The fingerprint is not known before the bytes are hashed on their way out.
    assert f"upload image of {len(DATA)} bytes" in str(caught.value)
    assert client.server in str(caught.value)


# ------------------------------------------------------------------------------------------
# Input refused before anything is sent.


@pytest.mark.parametrize(
    "image_data",
    [
        "a string",
        None,
        b"",
        [1, 2],
        b'{"source": {"type": "image", "fingerprint": "abc"}}',
        b"null",
        b"  \n\t{}",
        b"\r\nnull",
    ],
    ids=["str", "None", "empty", "list", "json-object", "null", "ws-object", "ws-null"],
)
async def test_create_refuses_bad_image_data(
    client: AsyncClient, silent: respx.MockRouter, image_data: object
) -> None:
    with pytest.raises(InvalidInputError, match="image_data"):
        await client.images.create(image_data)  # type: ignore[arg-type]
    assert not silent.calls


async def test_create_refuses_json_after_long_whitespace(
    client: AsyncClient, silent: respx.MockRouter
) -> None:
    data = b" " * 100 + b'{"source": {"type": "image", "fingerprint": "abc"}}'
    with pytest.raises(InvalidInputError):
        await client.images.create(data)
    assert not silent.calls


@pytest.mark.parametrize(
    "options",
    [
        {"filename": "a\nb"},
        {"filename": "a\x00b"},
        {"filename": "a\rX-Evil: 1"},
        {"filename": ""},
        {"filename": b"bytes.tar.gz"},
        {"properties": {"a": 1}},
        {"properties": {1: "a"}},
        {"properties": {"a": ""}},
        {"properties": {"": "a"}},
        {"properties": [("a", "b")]},
        {"public": "yes"},
        {"public": 1},
        {"auto_update": "true"},
        {"wait": None},
    ],
    ids=repr,
)
async def test_create_refuses_bad_options(
    client: AsyncClient, silent: respx.MockRouter, options: dict[str, object]
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await client.images.create(DATA, **options)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    assert not silent.calls


async def test_create_transport_failure_is_a_connection_error(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    router.post("/1.0/images").mock(side_effect=httpx.ConnectError("Connection refused"))
    with pytest.raises(IncusError) as caught:
        await client.images.create(DATA)
    assert isinstance(caught.value, ConnectionError)
    assert OFFLINE_SERVER in str(caught.value)
    assert "Connection refused" in str(caught.value)


# ------------------------------------------------------------------------------------------
# An operation the server forgot before it was read.


@pytest.mark.parametrize("source", ["bytes", "iterator"])
async def test_a_forgotten_upload_operation_is_judged_by_its_image(
    client: AsyncClient, router: respx.MockRouter, source: str
) -> None:
    """Incus forgets a finished operation after about 5 s; a client with many calls queued
    may ask later. The image the bytes hash to is there: the upload succeeded."""
    mock_upload(router)
    mock_wait(router, error_response(404, "Operation not found"))
    router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP)))
    data: object = DATA if source == "bytes" else iter([DATA[:100], DATA[100:]])
    result = await client.images.create(data, wait=True)  # type: ignore[arg-type]
    assert isinstance(result, Image) and result.fingerprint == FP


async def test_a_forgotten_upload_operation_without_its_image_stays_unknown(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    mock_upload(router)
    mock_wait(router, error_response(404, "Operation not found"))
    router.get(f"/1.0/images/{FP}").mock(return_value=error_response(404, "not found"))
    with pytest.raises(OperationGoneError, match="outcome is unknown"):
        await client.images.create(DATA, wait=True)
