"""What the SDK logs (respx), in both flavours: each request at DEBUG with its method and path,
transfer milestones, and never a secret, a body or a header value."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from incus_images import AsyncClient, Image, IncusConnectionError, NotFoundError
from tests.helpers import (
    CLUSTER_MEMBERS,
    accepted_response,
    error_response,
    image,
    mock_survey,
    operation,
    sha256,
    sync_response,
)

pytestmark = pytest.mark.anyio

#: Image bytes with a marker that must never reach a log.
DATA = b"\x1f\x8b\x08\x00BODY-MARKER-7f3a" + bytes(range(256)) * 3
FP = sha256(DATA)
UPLOAD_ID = "11111111-2222-4333-8444-555555555555"
SECRET = "5ecret0f64hexdigits5ecret0f64hexdigits5ecret0f64hexdigits5ecret0"
#: A property value in an answer: server data, not for the log either.
ANSWER_MARKER = "ANSWER-MARKER-c41d"


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG (httpx's and httpcore's too): what a service logging all sees."""
    caplog.set_level(logging.DEBUG)
    return caplog


def sdk_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "incus_images" and record.levelno == level
    ]


def answer_an_upload(router: respx.MockRouter, **stored: Any) -> None:
    """The server's side of create(DATA, wait=True): the image it stores has ``stored``."""
    mock_survey(router)
    router.post("/1.0/images").mock(return_value=accepted_response(operation(UPLOAD_ID)))
    router.get(f"/1.0/operations/{UPLOAD_ID}/wait").mock(
        return_value=sync_response(
            operation(UPLOAD_ID, status_code=200, metadata={"fingerprint": FP, "size": "1"})
        )
    )
    router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP, **stored)))


async def test_each_request_is_logged_at_debug_with_method_path_and_status(
    client: AsyncClient, router: respx.MockRouter, debug_log: pytest.LogCaptureFixture
) -> None:
    router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP)))
    router.get("/1.0/images/aliases/gone").mock(return_value=error_response(404, "not found"))
    await client.images.get(FP)
    with pytest.raises(NotFoundError):
        await client.images.get_alias("gone")
    lines = sdk_lines(debug_log, logging.DEBUG)
    assert any(
        line.startswith(f"GET /1.0/images/{FP} on {client.server}: 200, ") for line in lines
    ), lines
    # A request that failed is logged as well, with its status.
    assert any(
        line.startswith(f"GET /1.0/images/aliases/gone on {client.server}: 404, ") for line in lines
    ), lines


async def test_a_secret_in_the_query_string_is_never_logged(
    client: AsyncClient, router: respx.MockRouter, debug_log: pytest.LogCaptureFixture
) -> None:
    route = router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP)))
    await client.images.get(FP, secret=SECRET)
    assert route.calls.last.request.url.params["secret"] == SECRET  # it was sent
    assert any(f"GET /1.0/images/{FP} on" in line for line in sdk_lines(debug_log, logging.DEBUG))
    # httpx logs each URL at INFO: its line is there, with the secret's value hidden.
    httpx_lines = [r.getMessage() for r in debug_log.records if r.name == "httpx"]
    assert any("secret=REDACTED" in line for line in httpx_lines), httpx_lines
    assert SECRET not in debug_log.text
    assert all(SECRET not in record.getMessage() for record in debug_log.records)


async def test_no_body_and_no_header_value_is_logged(
    client: AsyncClient, router: respx.MockRouter, debug_log: pytest.LogCaptureFixture
) -> None:
    answer_an_upload(router, properties={"note": ANSWER_MARKER})
    filename = "HEADER-MARKER-92be.tar.gz"
    created = await client.images.create(DATA, filename=filename, wait=True)
    assert isinstance(created, Image)
    assert created.properties == {"note": ANSWER_MARKER}
    for marker in ("BODY-MARKER-7f3a", ANSWER_MARKER, filename):
        assert marker not in debug_log.text
        assert all(marker not in record.getMessage() for record in debug_log.records)


async def test_an_upload_logs_its_start_and_its_verified_end(
    client: AsyncClient, router: respx.MockRouter, debug_log: pytest.LogCaptureFixture
) -> None:
    answer_an_upload(router)
    await client.images.create(DATA, wait=True)
    debug = sdk_lines(debug_log, logging.DEBUG)
    assert any(f"started ({len(DATA)} bytes)" in line for line in debug), debug
    assert any(
        line.startswith("waited ") and f"operation {UPLOAD_ID} on {client.server}" in line
        for line in debug
    ), debug
    info = sdk_lines(debug_log, logging.INFO)
    assert len(info) == 1, info
    assert info[0].startswith(
        f"uploaded image {FP} to {client.server}: {len(DATA)} bytes, stored and verified in "
    )


async def test_an_export_logs_that_it_was_verified_and_placed(
    client: AsyncClient,
    router: respx.MockRouter,
    debug_log: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP, size=len(DATA))))
    router.get(f"/1.0/images/{FP}/export").mock(
        return_value=httpx.Response(
            200,
            content=DATA,
            headers={
                "Content-Disposition": f"inline;filename={FP}.tar.gz",
                "Content-Type": "application/octet-stream",
            },
        )
    )
    target = tmp_path / "image.tar.gz"
    await client.images.export(FP, target)
    info = sdk_lines(debug_log, logging.INFO)
    assert len(info) == 1, info
    assert info[0].startswith(
        f"export image '{FP}' to {str(target)!r} on {client.server}: {len(DATA)} bytes "
        "verified and renamed into place in "
    )
    assert f"GET /1.0/images/{FP}/export on {client.server}: 200 in " in "\n".join(
        sdk_lines(debug_log, logging.DEBUG)
    )


async def test_nothing_is_logged_below_the_level_set(
    client: AsyncClient, router: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="incus_images")
    router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP)))
    await client.images.get(FP)
    assert [record for record in caplog.records if record.name == "incus_images"] == []


#: Two cluster members, mocked by host (tests/_async/test_unit_cluster.py does the same).
MEMBER_A, MEMBER_B = "https://node1.test:8443", "https://node2.test:8443"


def cluster_of_two(router: respx.MockRouter) -> None:
    """The cluster's answer to ``GET /1.0/cluster/members``, from whichever member is asked."""
    router.get(path="/1.0/cluster/members").mock(
        return_value=sync_response(
            [{"server_name": f"node{n}", "url": url} for n, url in ((1, MEMBER_A), (2, MEMBER_B))]
        )
    )


@pytest.mark.parametrize("how", ["refused", "shutting down"])
async def test_a_failover_to_another_member_is_a_warning_naming_both(
    debug_log: pytest.LogCaptureFixture, how: str
) -> None:
    with respx.mock(assert_all_called=False) as router:
        cluster_of_two(router)
        first = router.get(f"{MEMBER_A}/1.0/images/{FP}")
        if how == "refused":
            first.mock(side_effect=httpx.ConnectError("Connection refused"))
        else:
            first.mock(return_value=error_response(503, "Daemon is shutting down"))
        router.get(f"{MEMBER_B}/1.0/images/{FP}").mock(return_value=sync_response(image(FP)))
        async with AsyncClient([MEMBER_A, MEMBER_B], verify=False) as client:
            assert (await client.images.get(FP)).fingerprint == FP
            assert client.server == MEMBER_B
    warnings = sdk_lines(debug_log, logging.WARNING)
    why = "cannot be reached (Connection refused)" if how == "refused" else "is shutting down"
    assert warnings == [
        f"incus_images: GET /1.0/images/{FP}: {MEMBER_A} {why}; trying cluster member {MEMBER_B}"
    ]


async def test_no_warning_when_there_is_no_other_member_to_try(
    debug_log: pytest.LogCaptureFixture,
) -> None:
    # Nothing is repeated: the error raised says all, and a warning would promise a retry.
    with respx.mock() as router:
        route = router.get(f"{MEMBER_A}/1.0/images/{FP}")
        route.mock(side_effect=httpx.ConnectError("Connection refused"))
        router.get(f"{MEMBER_A}{CLUSTER_MEMBERS}").mock(
            side_effect=httpx.ConnectError("Connection refused")
        )
        async with AsyncClient(MEMBER_A, verify=False) as client:
            with pytest.raises(IncusConnectionError):
                await client.images.get(FP)
    assert route.call_count == 1
    assert sdk_lines(debug_log, logging.WARNING) == []
