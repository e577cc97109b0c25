"""Unit tests (respx) of the client: endpoints, project scoping, transport errors, closing."""

from __future__ import annotations

import math
import os
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import respx

import incus_images._endpoint
from incus_images import (
    AsyncClient,
    IncusConnectionError,
    IncusError,
    IncusTimeoutError,
    InvalidInputError,
)
from tests.helpers import (
    CLUSTER_MEMBERS,
    OFFLINE_SERVER,
    UNIX_BASE,
    accepted_response,
    image,
    not_clustered,
    operation,
    sha256,
    sync_response,
)

pytestmark = pytest.mark.anyio

FP = sha256(b"client test image")
OP_ID = "5a5a5a5a-0000-4000-8000-000000000001"


def alias_entry(name: str) -> dict[str, str]:
    return {"description": "", "target": FP, "name": name, "type": "container"}


@pytest.fixture
async def listening_socket() -> AsyncIterator[str]:
    """A unix socket that accepts connections (short path: sun_path is 108 bytes at most)."""
    with tempfile.TemporaryDirectory(prefix="iu-", dir="/tmp") as directory:
        path = os.path.join(directory, "unix.socket")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(path)
            server.listen(4)
            yield path
        finally:
            server.close()


# ------------------------------------------------------------------------------------------
# Project scoping.


async def test_project_is_sent_on_image_and_alias_calls_not_on_operations(
    router: respx.MockRouter, tmp_path: Path
) -> None:
    router.get("/1.0/images").mock(return_value=sync_response([image(FP, project="dev")]))
    router.get(f"/1.0/images/{FP}").mock(
        return_value=sync_response(
            # What update() below makes of it.
            image(FP, project="dev", size=13, properties={"a": "b"}),
            headers={"ETag": '"e"'},
        )
    )
    router.patch(f"/1.0/images/{FP}").mock(return_value=sync_response({}))
    router.delete(f"/1.0/images/{FP}").mock(return_value=accepted_response(operation(OP_ID)))
    router.get(f"/1.0/operations/{OP_ID}/wait").mock(
        return_value=sync_response(operation(OP_ID, status_code=200))
    )
    router.get(f"/1.0/operations/{OP_ID}").mock(
        return_value=sync_response(operation(OP_ID, status_code=200))
    )
    router.post("/1.0/images/aliases").mock(return_value=sync_response(None, status=201))
    router.get("/1.0/images/aliases/a%20b").mock(return_value=sync_response(alias_entry("a b")))
    router.delete("/1.0/images/aliases/a%20b").mock(return_value=sync_response({}))
    router.get(f"/1.0/images/{FP}/export").mock(
        return_value=httpx.Response(200, content=b"not the image", headers={"X-Incus-Type": "oci"})
    )

    async with AsyncClient(OFFLINE_SERVER, project="dev & test") as incus:
        assert incus.project == "dev & test"
        await incus.images.list()
        await incus.images.update(FP, {"a": "b"})
        await incus.images.create_alias("a b", FP)
        await incus.images.delete_alias("a b")
        await incus.images.export(FP, tmp_path / "x", allow_unverified=True)
        await incus.images.delete(FP, wait=True)
        await incus.operations.get(OP_ID)

    for call in router.calls:
        request = call.request
        params = request.url.params
        if request.url.path.startswith("/1.0/operations/"):
            assert "project" not in params, request.url
        else:
            assert params.get_list("project") == ["dev & test"], request.url
    paths = {call.request.url.path for call in router.calls}
    assert f"/1.0/operations/{OP_ID}/wait" in paths
    assert "/1.0/images/aliases" in paths


async def test_without_project_no_project_parameter_is_sent(
    client: AsyncClient, router: respx.MockRouter
) -> None:
    route = router.get("/1.0/images").mock(return_value=sync_response([]))
    assert client.project is None
    await client.images.list()
    assert "project" not in route.calls.last.request.url.params


# ------------------------------------------------------------------------------------------
# Transport failures.


@pytest.mark.parametrize(
    "exception",
    [httpx.ConnectError("[Errno 2] No such file or directory"), httpx.RemoteProtocolError("bye")],
)
async def test_connection_failure_is_a_connection_error_naming_the_server(
    client: AsyncClient, router: respx.MockRouter, exception: Exception
) -> None:
    router.get(f"/1.0/images/{FP[:6]}").mock(side_effect=exception)
    with pytest.raises(IncusConnectionError) as caught:
        await client.images.get(FP[:6])
    error = caught.value
    assert isinstance(error, ConnectionError)
    assert error.server == OFFLINE_SERVER
    assert error.method == "GET"
    assert error.url == f"/1.0/images/{FP[:6]}"
    assert OFFLINE_SERVER in str(error)
    assert f"get image '{FP[:6]}'" in str(error)
    assert isinstance(error.__cause__, httpx.TransportError)


@pytest.mark.parametrize(
    "exception",
    [httpx.ReadTimeout("timed out"), httpx.ConnectTimeout("timed out"), httpx.PoolTimeout("")],
)
async def test_timeouts_are_timeout_errors_naming_the_server(
    client: AsyncClient, router: respx.MockRouter, exception: Exception
) -> None:
    router.get("/1.0/images/aliases/x").mock(side_effect=exception)
    with pytest.raises(IncusTimeoutError) as caught:
        await client.images.get_alias("x")
    assert isinstance(caught.value, TimeoutError)
    assert not isinstance(caught.value, IncusConnectionError)
    assert OFFLINE_SERVER in str(caught.value)
    assert "'x'" in str(caught.value)


async def test_connection_failure_on_export_leaves_nothing(
    client: AsyncClient, router: respx.MockRouter, tmp_path: Path
) -> None:
    router.get(f"/1.0/images/{FP}").mock(return_value=sync_response(image(FP)))
    router.get(f"/1.0/images/{FP}/export").mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(IncusConnectionError, match="refused"):
        await client.images.export(FP, tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_timeout_setting_reaches_every_request(router: respx.MockRouter) -> None:
    route = router.get("/1.0/images").mock(return_value=sync_response([]))
    async with AsyncClient(OFFLINE_SERVER, timeout=7.5) as incus:
        await incus.images.list()
    assert route.calls.last.request.extensions["timeout"] == {
        "connect": 7.5,
        "read": 7.5,
        "write": 7.5,
        # Waiting for a pooled connection is not timed: the calls ahead are.
        "pool": None,
    }


async def test_no_timeout(router: respx.MockRouter) -> None:
    route = router.get("/1.0/images").mock(return_value=sync_response([]))
    async with AsyncClient(OFFLINE_SERVER, timeout=None) as incus:
        await incus.images.list()
    assert route.calls.last.request.extensions["timeout"]["read"] is None


async def test_user_agent_names_the_sdk(client: AsyncClient, router: respx.MockRouter) -> None:
    route = router.get("/1.0/images").mock(return_value=sync_response([]))
    await client.images.list()
    assert route.calls.last.request.headers["User-Agent"].startswith("incus_images/")


# ------------------------------------------------------------------------------------------
# Closing.


async def test_context_manager_closes_the_connection_pool(router: respx.MockRouter) -> None:
    router.get("/1.0/images").mock(return_value=sync_response([]))
    async with AsyncClient(OFFLINE_SERVER) as incus:
        await incus.images.list()
        # The private pool is looked at only to see that leaving the block closes it.
        pool = incus._connection._http
        assert pool is not None
        assert not pool.is_closed
    assert pool.is_closed


async def test_aclose_then_reuse_reconnects(router: respx.MockRouter) -> None:
    route = router.get("/1.0/images").mock(return_value=sync_response([]))
    incus = AsyncClient(OFFLINE_SERVER)
    await incus.images.list()
    await incus.aclose()
    await incus.aclose()  # closing twice is harmless
    assert await incus.images.list() == []
    await incus.aclose()
    assert route.call_count == 2


async def test_closing_an_unused_client_sends_nothing() -> None:
    with respx.mock(base_url=UNIX_BASE, assert_all_called=False) as mock:
        mock.route().respond(500)
        async with AsyncClient(OFFLINE_SERVER):
            pass
    assert not mock.calls


# ------------------------------------------------------------------------------------------
# Endpoints and discovery.


async def test_server_and_repr() -> None:
    incus = AsyncClient("/run/some/unix.socket", project="p1")
    assert incus.server == "unix:///run/some/unix.socket"
    assert "unix:///run/some/unix.socket" in repr(incus)
    assert "'p1'" in repr(incus)


async def test_https_endpoint_defaults_to_port_8443() -> None:
    with respx.mock(base_url="https://images.example:8443", assert_all_called=True) as mock:
        route = mock.get("/1.0/images").mock(return_value=sync_response([]))
        mock.get(CLUSTER_MEMBERS).mock(return_value=not_clustered())
        async with AsyncClient("https://images.example", verify=False) as incus:
            assert incus.server == "https://images.example:8443"
            await incus.images.list()
    assert route.calls.last.request.url.host == "images.example"
    assert route.calls.last.request.url.port == 8443


async def test_https_ipv6_endpoint() -> None:
    incus = AsyncClient("https://[::1]:9443", verify=False)
    assert incus.server == "https://[::1]:9443"


async def test_discovery_uses_incus_socket_first(
    listening_socket: str, monkeypatch: pytest.MonkeyPatch, router: respx.MockRouter
) -> None:
    monkeypatch.setenv("INCUS_SOCKET", listening_socket)
    monkeypatch.setenv("INCUS_DIR", "/nonexistent/incus-dir")
    router.get("/1.0/images/abc").mock(side_effect=httpx.ConnectError("refused"))
    async with AsyncClient() as incus:
        assert incus.server == "the local Incus daemon"  # nothing looked for yet
        with pytest.raises(IncusConnectionError) as caught:
            await incus.images.get("abc")
        assert incus.server == f"unix://{listening_socket}"
    assert f"unix://{listening_socket}" in str(caught.value)


async def test_incus_users_project_is_on_the_very_first_request(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, router: respx.MockRouter
) -> None:
    """Discovery that lands on incus-user's socket settles the project before the first
    request is built: without it, incusd answers from the default project (an empty list,
    or 403 on a write)."""
    monkeypatch.setattr(incus_images._endpoint, "_writable", lambda path: path.endswith(".user"))
    (tmp_path / "unix.socket").write_text("")
    (tmp_path / "unix.socket.user").write_text("")
    monkeypatch.delenv("INCUS_SOCKET", raising=False)
    monkeypatch.setenv("INCUS_DIR", str(tmp_path))
    route = router.post("/1.0/images/aliases").mock(return_value=sync_response({}, status=201))
    router.get("/1.0/images/aliases/a").mock(return_value=sync_response(alias_entry("a")))
    async with AsyncClient() as incus:
        assert incus.project is None
        await incus.images.create_alias("a", FP)
        assert incus.project == f"user-{os.geteuid()}"
    assert route.calls[0].request.url.params["project"] == f"user-{os.geteuid()}"


async def test_discovery_failure_names_every_path_tried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    system = (str(tmp_path / "run.socket"), str(tmp_path / "lib.socket"))
    monkeypatch.setattr(incus_images._endpoint, "SYSTEM_SOCKETS", system)
    monkeypatch.setenv("INCUS_SOCKET", str(tmp_path / "env.socket"))
    monkeypatch.setenv("INCUS_DIR", str(tmp_path / "dir"))
    (tmp_path / "lib.socket").write_text("not a socket")
    with respx.mock(base_url=UNIX_BASE, assert_all_called=False) as mock:
        mock.route().respond(500)
        incus = AsyncClient()
        with pytest.raises(IncusConnectionError) as caught:
            await incus.images.list()
        await incus.aclose()
    assert not mock.calls
    message = str(caught.value)
    for path in [
        str(tmp_path / "env.socket"),
        str(tmp_path / "dir" / "unix.socket"),
        *system,
    ]:
        assert path in message
    assert message.index("env.socket") < message.index("dir/unix.socket")
    assert message.index("dir/unix.socket") < message.index("run.socket")


@pytest.mark.parametrize(
    ("endpoint", "options"),
    [
        ("http://x", {}),
        ("ftp://x", {}),
        ("", {}),
        ("unix:relative/path", {}),
        ("unix://host/path", {}),
        ("https://", {}),
        ("https://host/path", {}),
        ("https://host?x=1", {}),
        ("https://host:notaport", {}),
        (OFFLINE_SERVER, {"timeout": 0}),
        (OFFLINE_SERVER, {"timeout": -3}),
        (OFFLINE_SERVER, {"timeout": True}),
        (OFFLINE_SERVER, {"timeout": "30"}),
        (OFFLINE_SERVER, {"project": ""}),
        (OFFLINE_SERVER, {"project": 5}),
        (OFFLINE_SERVER, {"cert": "/etc/hostname"}),
        (None, {"cert": "/etc/hostname"}),
        ("https://host", {"verify": "/missing.pem"}),
        ("https://host", {"verify": 42}),
        ("https://host", {"cert": "/missing/client.crt"}),
        ("https://host", {"cert": ("/missing/client.crt", "/missing/client.key")}),
        ("https://host", {"cert": ("a", "b", "c")}),
    ],
    ids=repr,
)
async def test_invalid_constructor_arguments(
    endpoint: str | None, options: dict[str, object]
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        AsyncClient(endpoint, **options)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, IncusError)


async def test_verify_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    bogus = tmp_path / "server.crt"
    bogus.write_text("not a certificate")
    with pytest.raises(InvalidInputError, match=r"server\.crt"):
        AsyncClient("https://host", verify=str(bogus))


@pytest.mark.parametrize("timeout", [math.nan, math.inf])
async def test_non_finite_client_timeout_is_refused_or_means_no_limit(timeout: float) -> None:
    """nan must be refused; inf must be refused or mean "no limit" (httpx spells it None)."""
    try:
        incus = AsyncClient(OFFLINE_SERVER, timeout=timeout)
    except InvalidInputError:
        return
    assert not math.isnan(timeout)
    with respx.mock(base_url=UNIX_BASE, assert_all_called=True) as mock:
        route = mock.get("/1.0/images").mock(return_value=sync_response([]))
        await incus.images.list()
        await incus.aclose()
    # inf reaches the socket layer as is, which refuses it with a bare OverflowError.
    assert route.calls.last.request.extensions["timeout"]["read"] is None
