"""A hostile server, scripted with respx: nothing it sends may name a file or a request path
unchecked (issue 10, classes 1 and 2), in both flavours.

Each test gives the SDK an answer no real incusd sends and checks what the SDK did with it:
which files exist afterwards (inside and outside the target directory) and which requests
went out after the hostile answer.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import httpx
import pytest
import respx
from tiny_image import unified_image

from incus_images import (
    AsyncClient,
    ChecksumMismatchError,
    IncusError,
    IncusTimeoutError,
    InvalidInputError,
    TransferError,
    UnexpectedResponseError,
)
from tests.helpers import (
    UNIX_BASE,
    accepted_response,
    everything_under,
    image,
    mock_survey,
    operation,
    sha256,
    sync_response,
)
from tests.hostile_server import HostileServer, dripping, head, sync_answer

pytestmark = pytest.mark.anyio

BODY = b"\x1f\x8b\x08\x00 an image body " + bytes(range(256))
FP = sha256(BODY)
#: Fingerprints a hostile server might send to steer a path or a file name.
HOSTILE_FINGERPRINTS = [
    "../outside/pwned",
    f"../../{FP}",
    f"{FP}/../../instances/c1",
    f"{FP[:63]}/",
    FP.upper(),  # incusd always sends lower case; anything else is not what it stores
    f"{FP}\x00",
    f"{FP}%2F..",
    "",
]


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    """Here some routes exist to prove they were never called."""
    with respx.mock(base_url=UNIX_BASE, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def nest(tmp_path: Path) -> Path:
    """tmp_path/inside/out is the export target; anything else under tmp_path is an escape."""
    target = tmp_path / "inside" / "out"
    target.mkdir(parents=True)
    return tmp_path


def export_answer(body: bytes, **headers: str) -> httpx.Response:
    return httpx.Response(200, content=body, headers=headers)


# --------------------------------------------------------------------------------------------
# Class 1: nothing the server says names a file outside the target.


@pytest.mark.parametrize("hostile", HOSTILE_FINGERPRINTS)
@pytest.mark.parametrize("oci", [False, True])
async def test_a_hostile_fingerprint_writes_nothing_anywhere(
    client: AsyncClient, router: respx.MockRouter, nest: Path, hostile: str, oci: bool
) -> None:
    """The reported attack: get() answers a path as the fingerprint, the export sends no file
    name (and, in one variant, says oci). The answer is refused before any export request."""
    router.get(f"/1.0/images/{FP[:12]}").mock(return_value=sync_response(image(hostile)))
    export = router.route(path__regex=r".*/export$").mock(
        return_value=export_answer(BODY, **({"X-Incus-Type": "oci"} if oci else {}))
    )
    with pytest.raises(UnexpectedResponseError, match="Could not get image") as info:
        await client.images.export(FP[:12], nest / "inside" / "out", allow_unverified=oci)
    assert not isinstance(info.value, InvalidInputError)  # the server's fault, not the caller's
    assert not export.called
    assert everything_under(nest) == ["inside", "inside/out"]


async def test_an_image_other_than_the_one_asked_for_is_refused(
    client: AsyncClient, router: respx.MockRouter, nest: Path
) -> None:
    other = sha256(b"another image")
    assert not other.startswith(FP[:12])
    router.get(f"/1.0/images/{FP[:12]}").mock(return_value=sync_response(image(other)))
    with pytest.raises(UnexpectedResponseError, match=f"describes another image, {other}"):
        await client.images.export(FP[:12], nest / "inside" / "out")
    with pytest.raises(UnexpectedResponseError, match="describes another image"):
        await client.images.get(FP[:12])
    assert everything_under(nest) == ["inside", "inside/out"]


@pytest.mark.parametrize(
    "disposition",
    [
        "inline;filename=../../escaped",
        "inline;filename=/etc/passwd",
        'inline; filename="..\\\\..\\\\escaped"',
        "inline;filename=..",
        "inline;filename=.",
        "inline;filename=a/../../../escaped",
        "inline;filename=" + "x" * 300,
    ],
)
async def test_hostile_file_names_stay_inside_the_target_directory(
    client: AsyncClient, router: respx.MockRouter, nest: Path, disposition: str
) -> None:
    router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP, size=len(BODY))))
    router.get(f"/1.0/images/{FP}/export").mock(
        return_value=export_answer(BODY, **{"Content-Disposition": disposition})
    )
    out = nest / "inside" / "out"
    written = await client.images.export(FP, out)
    assert len(written) == 1
    assert written[0].parent == out
    assert written[0].read_bytes() == BODY
    assert everything_under(nest) == ["inside", "inside/out", f"inside/out/{written[0].name}"]


async def test_a_longest_possible_file_name_still_gets_its_temporary_file(
    client: AsyncClient, router: respx.MockRouter, nest: Path
) -> None:
    """A 255-byte name is legal; its temporary name must not pass the limit."""
    name = "ü" * 127 + "x"  # 255 bytes in UTF-8
    router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP, size=len(BODY))))
    router.get(f"/1.0/images/{FP}/export").mock(
        return_value=httpx.Response(
            200, content=BODY, headers={"Content-Disposition": f"inline;filename={name}".encode()}
        )
    )
    out = nest / "inside" / "out"
    written = await client.images.export(FP, out)
    assert written[0].parent == out
    assert len(written[0].name.encode("utf-8", "surrogateescape")) <= 255
    assert everything_under(out) == [written[0].name]


async def test_the_oci_header_does_not_turn_verification_off(
    client: AsyncClient, router: respx.MockRouter, nest: Path
) -> None:
    """An image the server calls OCI is refused unless the caller accepts it unchecked."""
    tampered = b"not the image"
    router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP, size=13)))
    router.get(f"/1.0/images/{FP}/export").mock(
        return_value=export_answer(tampered, **{"X-Incus-Type": "OCI"})
    )
    out = nest / "inside" / "out"
    with pytest.raises(TransferError, match="allow_unverified=True") as info:
        await client.images.export(FP, out / "image.tar")
    assert not isinstance(info.value, ChecksumMismatchError)
    assert everything_under(nest) == ["inside", "inside/out"]

    written = await client.images.export(FP, out / "image.tar", allow_unverified=True)
    assert written == [out / "image.tar"]
    assert written[0].read_bytes() == tampered


async def test_allow_unverified_still_verifies_an_incus_image(
    client: AsyncClient, router: respx.MockRouter, nest: Path
) -> None:
    router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP, size=len(BODY))))
    router.get(f"/1.0/images/{FP}/export").mock(
        return_value=export_answer(BODY[:-8] + b"tampered", **{"X-Incus-Type": "incus"})
    )
    with pytest.raises(ChecksumMismatchError):
        await client.images.export(FP, nest / "inside" / "out", allow_unverified=True)
    assert everything_under(nest) == ["inside", "inside/out"]


async def test_allow_unverified_must_be_a_bool(
    client: AsyncClient, silent: respx.MockRouter
) -> None:
    with pytest.raises(InvalidInputError, match="allow_unverified"):
        await client.images.export(FP, "/tmp", allow_unverified="yes")  # type: ignore[arg-type]
    assert not silent.calls


# --------------------------------------------------------------------------------------------
# Class 2: nothing the server says goes into a request path unchecked.


@pytest.mark.parametrize("hostile", HOSTILE_FINGERPRINTS)
async def test_update_does_not_patch_a_path_the_server_named(
    client: AsyncClient, router: respx.MockRouter, hostile: str
) -> None:
    router.get(f"/1.0/images/{FP[:12]}").mock(
        return_value=sync_response(image(hostile), headers={"ETag": '"e"'})
    )
    writes = router.route(method__in=["PATCH", "PUT", "POST", "DELETE"]).respond(200)
    with pytest.raises(IncusError, match="Could not get image"):
        await client.images.update(FP[:12], {"os": "x"})
    assert not writes.called


@pytest.mark.parametrize(
    "urls",
    [
        ["/1.0/images/../instances/c1"],
        [f"/1.0/images/{FP}/../../instances"],
        ["/1.0/images/abc"],
        [f"/1.0/images/{FP.upper()}"],
        [f"/1.0/images/{FP}", 5],
    ],
)
async def test_listed_fingerprints_are_checked(
    client: AsyncClient, router: respx.MockRouter, urls: list[object]
) -> None:
    router.get("/1.0/images").mock(return_value=sync_response(urls))
    with pytest.raises(IncusError, match="not an image URL"):
        await client.images.list(recursion=0)


@pytest.mark.parametrize(
    "hostile_id",
    [
        "../../instances/c1",
        "6b9d4f3e-1111-4222-8333-444455556666/../../instances/c1",
        "x",
        "6B9D4F3E-1111-4222-8333-444455556666",
        "",
    ],
)
async def test_an_upload_operation_id_is_checked_before_waiting(
    client: AsyncClient, router: respx.MockRouter, hostile_id: str
) -> None:
    router.get(f"/1.0/images/aliases/{'a'}").respond(404)
    mock_survey(router)
    router.post("/1.0/images").mock(return_value=accepted_response(operation(hostile_id)))
    others = router.route(method__in=["GET", "PATCH", "DELETE"], path__startswith="/1.0/o")
    others.respond(500)
    with pytest.raises(IncusError, match="operation id"):
        await client.images.create(unified_image(), wait=True)
    assert not others.called


async def test_a_wrongly_typed_answer_is_refused_not_coerced(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    for hostile in ({"public": "yes"}, {"size": "290"}, {"size": True}, {"filename": 7}):
        router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP, **hostile)))
        with pytest.raises(IncusError, match="cannot read it as Image"):
            await client.images.get(FP)
    router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(int(FP[:15], 16))))
    with pytest.raises(IncusError, match="cannot read it as Image"):
        await client.images.get(FP)


# --------------------------------------------------------------------------------------------
# Class 4 (exports): a body is read no further than the image's size.


@pytest.mark.parametrize("split", [False, True])
async def test_an_export_that_runs_past_the_image_size_is_stopped_at_once(
    client: AsyncClient, router: respx.MockRouter, nest: Path, split: bool
) -> None:
    """A server that announces 400 bytes and then sends without end is cut off at 400."""
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        if split:
            yield b'--b\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n'
        while sent < 64 * 1024 * 1024:
            sent += 64 * 1024
            yield b"\0" * (64 * 1024)

    content_type = "multipart/form-data; boundary=b" if split else "application/octet-stream"
    router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP, size=400)))
    router.get(f"/1.0/images/{FP}/export").mock(
        return_value=httpx.Response(200, content=endless(), headers={"Content-Type": content_type})
    )
    with pytest.raises(TransferError, match="more than the image's 400 bytes"):
        await client.images.export(FP, nest / "inside" / "out")
    assert sent <= 2 * 64 * 1024
    assert everything_under(nest) == ["inside", "inside/out"]


async def test_an_export_that_ends_short_of_the_image_size_fails(
    client: AsyncClient, router: respx.MockRouter, nest: Path
) -> None:
    router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP, size=len(BODY))))
    router.get(f"/1.0/images/{FP}/export").mock(return_value=export_answer(BODY[:100]))
    with pytest.raises(TransferError, match=f"ended after 100 of the image's {len(BODY)} bytes"):
        await client.images.export(FP, nest / "inside" / "out")
    assert everything_under(nest) == ["inside", "inside/out"]


# --------------------------------------------------------------------------------------------
# Class 4 (time and memory): a scripted server on a real socket, since the deadlines live in
# the network layer that respx replaces.

MIB = 1024 * 1024
OP_ID = "6b9d4f3e-1111-4222-8333-444455556666"


@pytest.mark.parametrize("where", ["head", "body"])
async def test_a_call_ends_at_its_deadline_however_the_server_drips(
    tmp_path: Path, where: str
) -> None:
    """One byte a second never trips a per-read timeout; the call's deadline still ends it."""
    answer = sync_answer([])

    def drip(method: str, target: str) -> Iterable[bytes | float]:
        if where == "head":
            return dripping(answer)
        split = answer.index(b"\r\n\r\n") + 4
        return [answer[:split], *dripping(answer[split:])]

    with HostileServer(tmp_path, drip) as server:
        async with AsyncClient(server.endpoint, timeout=2) as incus:
            started = time.monotonic()
            with pytest.raises(IncusTimeoutError):
                await incus.images.list()
            took = time.monotonic() - started
    assert 1.5 < took < 10, took


async def test_an_export_that_stops_moving_ends_in_bounded_time(tmp_path: Path) -> None:
    size = 10 * MIB

    def answer(method: str, target: str) -> Iterable[bytes | float]:
        if target.endswith("/export"):
            return [head(Content_Length=str(size)), b"\0" * 1000, *dripping(b"\0" * 100)]
        return [sync_answer(image(FP, size=size))]

    out = tmp_path / "out"
    out.mkdir()
    with HostileServer(tmp_path, answer) as server:
        async with AsyncClient(server.endpoint, timeout=2) as incus:
            started = time.monotonic()
            with pytest.raises(IncusTimeoutError, match="stalled"):
                await incus.images.export(FP, out)
            took = time.monotonic() - started
    assert took < 10, took
    assert list(out.iterdir()) == []


class _SlowFile(io.BytesIO):
    """An image file that takes a quarter of a second for each read of an upload chunk."""

    def read(self, size: int | None = -1) -> bytes:
        time.sleep(0.25)
        return super().read(size)


@pytest.mark.parametrize("after_the_body", [0.0, 2.0], ids=["answered", "then stalled"])
async def test_an_upload_body_has_the_time_it_needs_and_its_answer_the_calls(
    tmp_path: Path, after_the_body: float
) -> None:
    """While the body moves the call's clock stops (the body's progress bounds it instead);
    the connection before the body and the answer after it share the call's deadline."""
    accepted = json.dumps(
        {
            "type": "async",
            "status_code": 100,
            "operation": f"/1.0/operations/{OP_ID}",
            "metadata": operation(OP_ID),
        }
    ).encode()

    def answer(method: str, target: str) -> Iterable[bytes | float]:
        return [after_the_body, head(202, Content_Length=str(len(accepted))), accepted]

    data = _SlowFile(b"\x1f\x8b\x08\x00" + bytes(3 * MIB))  # 1 MiB reads: 1 s for the body
    with HostileServer(tmp_path, answer) as server:
        async with AsyncClient(server.endpoint, timeout=0.5) as incus:
            started = time.monotonic()
            if after_the_body:
                with pytest.raises(IncusTimeoutError):
                    await incus.images.create(data)
            else:
                assert (await incus.images.create(data)).id == OP_ID
            took = time.monotonic() - started
        assert server.requests == ["POST /1.0/images"]
    assert 1 < took < 1 + 3, took  # the body's 1 s, twice the timeout; the answer in the rest


@pytest.mark.parametrize(
    ("status", "body", "match"),
    [
        (200, b'{"type":"sync","metadata":[' + b'"x",' * (40 * MIB // 4), "larger than 16 MiB"),
        (500, b'{"error":"' + b"e" * (300 * MIB) + b'"}', "HTTP 500"),
    ],
    ids=["100 MB answer", "300 MB error"],
)
async def test_a_huge_answer_is_not_read_whole(
    tmp_path: Path, status: int, body: bytes, match: str
) -> None:
    def answer(method: str, target: str) -> Iterable[bytes | float]:
        yield head(status, Content_Length=str(len(body)), Content_Type="application/json")
        for start in range(0, len(body), MIB):
            yield body[start : start + MIB]

    with HostileServer(tmp_path, answer) as server:
        async with AsyncClient(server.endpoint, timeout=10) as incus:
            with pytest.raises(IncusError, match=match) as caught:
                await incus.images.list()
        sent = server.sent
    # Read no further than the limit (plus what the socket buffers held).
    assert sent < 32 * MIB, sent
    assert len(str(caught.value)) < 2000


async def test_an_endless_chunked_answer_is_cut_off(tmp_path: Path) -> None:
    def answer(method: str, target: str) -> Iterable[bytes | float]:
        yield head(Transfer_Encoding="chunked", Content_Type="application/json")
        yield b"1\r\n[\r\n"
        chunk = b'"x",' * (MIB // 4)
        while True:
            yield f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"

    with HostileServer(tmp_path, answer) as server:
        async with AsyncClient(server.endpoint, timeout=10) as incus:
            with pytest.raises(UnexpectedResponseError, match="larger than 16 MiB"):
                await incus.images.list()
        assert server.sent < 32 * MIB


async def test_json_too_dense_to_parse_safely_is_refused(tmp_path: Path) -> None:
    """15 MiB of "[[],[],...]" would take several hundred MiB once parsed."""
    body = b'{"type":"sync","metadata":[' + b"[]," * (5 * MIB) + b"[]]}"

    def answer(method: str, target: str) -> Iterable[bytes | float]:
        return [head(Content_Length=str(len(body))), body]

    with HostileServer(tmp_path, answer) as server:
        async with AsyncClient(server.endpoint) as incus:
            with pytest.raises(UnexpectedResponseError, match="JSON values"):
                await incus.images.list()


# --------------------------------------------------------------------------------------------
# Class 6: a server that ignores /wait?timeout= cannot make the waiter spin.


async def test_a_wait_that_returns_at_once_is_paced(tmp_path: Path) -> None:
    running = operation(OP_ID, status_code=103)

    def answer(method: str, target: str) -> Iterable[bytes | float]:
        return [sync_answer(running)]  # at once, whatever timeout it was asked to wait

    with HostileServer(tmp_path, answer) as server:
        async with AsyncClient(server.endpoint) as incus:
            with pytest.raises(IncusTimeoutError):
                await incus.operations.wait(OP_ID, timeout=1)
        polls = [request for request in server.requests if "/wait" in request]
    assert 5 <= len(polls) <= 25, len(polls)


# --------------------------------------------------------------------------------------------
# Class 3 (answers): JSON no parser should be asked to build.


@pytest.mark.parametrize("depth", [10_000, 200_000])
async def test_absurdly_deep_json_is_an_unexpected_answer(
    client: AsyncClient, router: respx.MockRouter, depth: int
) -> None:
    body = b'{"type":"sync","metadata":' + b"[" * depth + b"]" * depth + b"}"
    router.get("/1.0/images").mock(return_value=httpx.Response(200, content=body))
    with pytest.raises(UnexpectedResponseError, match="unexpected answer") as caught:
        await client.images.list()
    assert not isinstance(caught.value, InvalidInputError)
