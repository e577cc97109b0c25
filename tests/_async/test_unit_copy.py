"""Unit tests (respx) of images.copy() and its companions: refresh, create_secret, and get and
export with a download secret.

Two servers are mocked at once: the source at ``https://source.test:8443`` and the target at
``https://target.test:8443`` (a unix-socket client is the third, ``http://incus``). One
catch-all route answers every request from a table keyed by (server, method, path), so that
the order of everything sent to both servers can be asserted; a request nobody expected gets
an error answer (and shows up in the sequence).

Answers are shaped like incusd 6.0.4's (spec 6.2(c,d), 6.7-6.10, 7).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from incus_images import (
    AsyncClient,
    ChecksumMismatchError,
    ConflictError,
    ForbiddenError,
    Image,
    IncusError,
    IncusTimeoutError,
    InvalidInputError,
    LeftBehind,
    NotFoundError,
    Operation,
    OperationError,
    SimpleStreams,
    TransferError,
    UnexpectedResponseError,
)
from tests.conftest import self_signed_certificate
from tests.helpers import (
    CLUSTER_MEMBERS,
    OFFLINE_SERVER,
    Answer,
    ScriptedWire,
    accepted_response,
    assert_left,
    deadline_604,
    error_response,
    image,
    multipart_parts,
    not_clustered,
    notes_of,
    operation,
    raw_header,
    sha256,
    sync_response,
)

pytestmark = pytest.mark.anyio

SOURCE = "https://source.test:8443"
TARGET = "https://target.test:8443"
#: How sent() names each server.
WHO = {"source.test": "S", "target.test": "T", "incus": "U"}

DATA = b"\x1f\x8b\x08\x00 a unified image " + bytes(range(256)) * 8
FP = sha256(DATA)
META = b"\xfd7zXZ\x00 metadata tarball " + bytes(range(100))
ROOTFS = b"hsqs a squashfs rootfs " + bytes(reversed(range(256))) * 6
SPLIT_FP = sha256(META, ROOTFS)

PULL_ID = "a1111111-1111-4111-8111-111111111111"
TOKEN_ID = "b2222222-2222-4222-8222-222222222222"
DELETE_ID = "c3333333-3333-4333-8333-333333333333"
PUSH_ID = "d4444444-4444-4444-8444-444444444444"
UPLOAD_ID = "e5555555-5555-4555-8555-555555555555"
REFRESH_ID = "f6666666-6666-4666-8666-666666666666"
SECRET = "5e" * 32
PUSH_SECRET = "a7" * 32


# --------------------------------------------------------------------------------------------
# The two mocked servers.


class Wire(ScriptedWire):
    """The source, the target and a unix socket, answered from one table."""

    def __init__(self, mock: respx.MockRouter) -> None:
        super().__init__(mock, WHO)
        #: The images each target holds before a copy: what its listing answers (a copy reads
        #: it first, and never deletes what it names).
        self.held: dict[str, list[str]] = {"T": [], "U": []}
        for who in self.held:
            self.on(who, "GET", "/1.0/images", self._listing(who))
        # Neither HTTPS server is a cluster's member (each client asks once).
        for who in ("S", "T"):
            self.on(who, "GET", CLUSTER_MEMBERS, not_clustered())

    def _listing(self, who: str) -> Callable[[httpx.Request], httpx.Response]:
        def respond(request: httpx.Request) -> httpx.Response:
            assert request.url.params.get("recursion") == "0"
            return sync_response([f"/1.0/images/{fp}" for fp in self.held[who]])

        return respond

    def sent(self, *, raw: bool = False) -> list[str]:
        """Every request as "<server> <method> <path>": S source, T target, U unix socket.

        Unless ``raw``, the wait slice is left out (``/wait``), and so is the question whether
        a server is a cluster's member, which each HTTPS client asks once: how long each
        long-poll lasts, and when a client asks, are asserted by the tests about them
        (test_unit_waiting, test_unit_cluster), not by every sequence."""
        lines = super().sent()
        if raw:
            return lines
        return [
            re.sub(r"/wait\?timeout=\d+$", "/wait", line)
            for line in lines
            if f" GET {CLUSTER_MEMBERS}?" not in line
        ]

    def body(self, who: str, method: str, path: str) -> Any:
        (body,) = self.bodies(who, method, path)
        return body

    def writes(self) -> list[str]:
        return [line for line in self.sent() if line.split()[1] != "GET"]


@pytest.fixture
def wire() -> Iterator[Wire]:
    with respx.mock(assert_all_called=False) as mock:
        yield Wire(mock)


@pytest.fixture
async def source() -> AsyncIterator[AsyncClient]:
    async with AsyncClient(SOURCE, verify=False) as client:
        yield client


@pytest.fixture
async def target() -> AsyncIterator[AsyncClient]:
    async with AsyncClient(TARGET, verify=False) as client:
        yield client


@pytest.fixture(scope="module")
def pem_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real self-signed certificate (PEM), made with openssl."""
    return self_signed_certificate(tmp_path_factory, "server")


# --------------------------------------------------------------------------------------------
# Answers.


def missing(what: str = "Image not found") -> httpx.Response:
    return error_response(404, what)


def alias_entry(name: str, fingerprint: str, kind: str = "container") -> httpx.Response:
    return sync_response({"description": "", "target": fingerprint, "name": name, "type": kind})


def server_info(trusted: bool) -> httpx.Response:
    return sync_response(
        {
            "auth": "trusted" if trusted else "untrusted",
            "api_version": "1.0",
            "api_status": "stable",
            "api_extensions": ["images_push_relay"],
            "auth_methods": ["tls"],
            "public": False,
        }
    )


def token(op_id: str, secret: object, description: str = "Image download token") -> httpx.Response:
    body = operation(op_id, metadata={"secret": secret}, description=description)
    body["class"] = "token"
    body["may_cancel"] = True
    return accepted_response(body)


def done(op_id: str, fingerprint: str | None = None, size: int = 0) -> httpx.Response:
    metadata = None if fingerprint is None else {"fingerprint": fingerprint, "size": str(size)}
    return sync_response(operation(op_id, status_code=200, metadata=metadata))


def failed_604(message: str) -> httpx.Response:
    """incusd 6.0.4's /wait answer for a failed operation: HTTP 200, an error body."""
    return error_response(500, message, http_status=200)


def source_image(wire: Wire, body: dict[str, Any], *, alias: str | None = None) -> None:
    """The source has the image; named by ``alias``, or else by its fingerprint (whose alias
    lookup fails first)."""
    fingerprint = body["fingerprint"]
    if alias is not None:
        wire.on("S", "GET", f"/1.0/images/aliases/{alias}", alias_entry(alias, fingerprint))
    else:
        wire.on("S", "GET", f"/1.0/images/aliases/{fingerprint}", missing("Image alias not found"))
    wire.on("S", "GET", f"/1.0/images/{fingerprint}", sync_response(body))


def target_image(
    wire: Wire, body: dict[str, Any], arrived: Callable[[], bool], who: str = "T"
) -> None:
    """The target has the image once ``arrived()``."""
    wire.on(
        who,
        "GET",
        f"/1.0/images/{body['fingerprint']}",
        lambda request: sync_response(body) if arrived() else missing(),
    )


def target_has(wire: Wire, body: dict[str, Any]) -> None:
    """The target held the image before the copy began."""
    wire.held["T"].append(body["fingerprint"])
    wire.on("T", "GET", f"/1.0/images/{body['fingerprint']}", sync_response(body))


def flag() -> tuple[list[bool], Callable[[], bool]]:
    box: list[bool] = []
    return box, lambda: bool(box)


def then_mark(box: list[bool], answer: httpx.Response) -> Callable[[httpx.Request], httpx.Response]:
    def respond(request: httpx.Request) -> httpx.Response:
        box.append(True)
        return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

    return respond


def public_image(**overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"public": True, "size": len(DATA), "filename": "tiny.tar.gz"}
    values.update(overrides)
    return image(FP, **values)


def pull_scenario(
    wire: Wire, body: dict[str, Any], *, alias: str | None = None, wait: Answer | None = None
) -> None:
    """A pull the target carries out (POST, then its operation finishes with the image)."""
    source_image(wire, body, alias=alias)
    arrived, has_arrived = flag()
    target_image(wire, body, has_arrived)
    wire.on("T", "POST", "/1.0/images", accepted_response(operation(PULL_ID)))
    wire.on(
        "T",
        "GET",
        f"/1.0/operations/{PULL_ID}/wait",
        wait if wait is not None else then_mark(arrived, done(PULL_ID, body["fingerprint"])),
    )


def deletes(wire: Wire, who: str, fingerprint: str) -> None:
    """The server deletes the image when asked (202, then the operation succeeds)."""
    wire.on(
        who,
        "DELETE",
        f"/1.0/images/{fingerprint}",
        accepted_response(operation(DELETE_ID, description="Deleting image")),
    )
    wire.on(who, "GET", f"/1.0/operations/{DELETE_ID}/wait", done(DELETE_ID))


# --------------------------------------------------------------------------------------------
# Pull.


async def test_pull_by_alias_sends_the_source_waits_then_creates_the_aliases(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    pull_scenario(wire, public_image(), alias="tiny")
    wire.on("T", "GET", "/1.0/images/aliases/copy-a", missing("Image alias not found"))
    wire.on("T", "GET", "/1.0/images/aliases/copy-b", missing("Image alias not found"))
    wire.on("T", "POST", "/1.0/images/aliases", sync_response(None, status=201))
    result = await target.images.copy("tiny", source, aliases=["copy-a", "copy-b"])
    assert isinstance(result, Image)
    assert result.fingerprint == FP
    assert wire.sent() == [
        "S GET /1.0/images/aliases/tiny",
        f"S GET /1.0/images/{FP}",
        "T GET /1.0/images?recursion=0",
        "T GET /1.0/images/aliases/copy-a",
        "T GET /1.0/images/aliases/copy-b",
        "T POST /1.0/images",
        f"T GET /1.0/operations/{PULL_ID}/wait",
        f"T GET /1.0/images/{FP}",  # the copy is there, of the source's type
        "T POST /1.0/images/aliases",
        "T POST /1.0/images/aliases",
        f"T GET /1.0/images/{FP}",
    ]
    # Without a TLS connection (respx) the SDK saw no certificate: none is pinned.
    assert wire.body("T", "POST", "/1.0/images") == {
        "source": {
            "type": "image",
            "mode": "pull",
            "server": SOURCE,
            "protocol": "incus",
            "fingerprint": FP,
            "image_type": "container",
        },
        "filename": "tiny.tar.gz",
    }
    aliases = [json.loads(r.content) for r in wire.requests("T", "POST", "/1.0/images/aliases")]
    assert aliases == [
        {"name": "copy-a", "target": FP, "description": ""},
        {"name": "copy-b", "target": FP, "description": ""},
    ]


async def test_pull_is_the_default_for_an_https_source_and_sends_the_settings(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    vm = public_image(type="virtual-machine", filename="")
    pull_scenario(wire, vm)
    prefix = FP[:12].upper()
    wire.on("S", "GET", f"/1.0/images/aliases/{prefix}", missing("Image alias not found"))
    wire.on("S", "GET", f"/1.0/images/{FP[:12]}", sync_response(vm))
    wire.on("T", "GET", "/1.0/profiles/default", sync_response({"name": "default"}))
    wire.on("T", "GET", "/1.0/profiles/gpu", sync_response({"name": "gpu"}))
    result = await target.images.copy(
        prefix, source, public=False, auto_update=False, profiles=["default", "gpu"]
    )
    assert isinstance(result, Image)
    assert wire.sent()[:3] == [
        f"S GET /1.0/images/aliases/{prefix}",
        f"S GET /1.0/images/{FP[:12]}",
        "T GET /1.0/images?recursion=0",
    ]
    # The full fingerprint from then on; no file name for an image that has none.
    assert wire.body("T", "POST", "/1.0/images") == {
        "source": {
            "type": "image",
            "mode": "pull",
            "server": SOURCE,
            "protocol": "incus",
            "fingerprint": FP,
            "image_type": "virtual-machine",
        },
        "public": False,
        "auto_update": False,
        "profiles": ["default", "gpu"],
    }


async def test_pull_with_no_profiles_puts_an_empty_list_after_the_copy(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    """A request cannot say "no profiles" (an empty list means the default one)."""
    body = public_image(properties={"os": "tiny"}, profiles=["default"])
    pull_scenario(wire, body)
    wire.on("T", "PUT", f"/1.0/images/{FP}", sync_response({}))
    await target.images.copy(FP, source, profiles=[])
    assert "profiles" not in wire.body("T", "POST", "/1.0/images")
    assert wire.body("T", "PUT", f"/1.0/images/{FP}") == {
        "public": True,
        "auto_update": False,
        "properties": {"os": "tiny"},
        "profiles": [],
    }


async def test_pull_by_fingerprint_prefix_looks_up_the_alias_first(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    wire.on("S", "GET", f"/1.0/images/aliases/{FP[:10]}", missing("Image alias not found"))
    wire.on("S", "GET", f"/1.0/images/{FP[:10]}", sync_response(public_image()))
    arrived, has_arrived = flag()
    target_image(wire, public_image(), has_arrived)
    wire.on("T", "POST", "/1.0/images", accepted_response(operation(PULL_ID)))
    wire.on("T", "GET", f"/1.0/operations/{PULL_ID}/wait", then_mark(arrived, done(PULL_ID, FP)))
    result = await target.images.copy(FP[:10], source, mode="pull")
    assert isinstance(result, Image)
    assert wire.sent()[:3] == [
        f"S GET /1.0/images/aliases/{FP[:10]}",
        f"S GET /1.0/images/{FP[:10]}",
        "T GET /1.0/images?recursion=0",
    ]
    assert wire.body("T", "POST", "/1.0/images")["source"]["fingerprint"] == FP


async def test_pull_pins_the_certificate_the_source_is_verified_with(
    wire: Wire, target: AsyncClient, pem_file: Path
) -> None:
    pull_scenario(wire, public_image())
    async with AsyncClient(SOURCE, verify=pem_file, project="web") as source:
        await target.images.copy(FP, source)
    sent = wire.body("T", "POST", "/1.0/images")["source"]
    assert sent["certificate"] == pem_file.read_text()
    # The source's project goes with the request; the target's own project is not touched.
    assert sent["project"] == "web"
    assert all("project=web" in line for line in wire.sent() if line.startswith("S ")), wire.sent()


async def test_pull_auto_update_by_alias_records_the_alias_not_the_fingerprint(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    pull_scenario(wire, public_image(), alias="tiny")
    await target.images.copy("tiny", source, auto_update=True)
    sent = wire.body("T", "POST", "/1.0/images")
    assert sent["auto_update"] is True
    assert sent["source"]["alias"] == "tiny"
    assert "fingerprint" not in sent["source"]


async def test_pull_auto_update_by_fingerprint_sends_the_fingerprint(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    pull_scenario(wire, public_image())
    await target.images.copy(FP, source, auto_update=True)
    sent = wire.body("T", "POST", "/1.0/images")
    assert sent["auto_update"] is True
    assert sent["source"]["fingerprint"] == FP
    assert "alias" not in sent["source"]


async def test_pull_wait_false_without_follow_up_returns_the_running_operation(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    pull_scenario(wire, public_image())
    result = await target.images.copy(FP, source, wait=False)
    assert isinstance(result, Operation)
    assert result.id == PULL_ID
    assert not result.done
    assert wire.sent()[-1] == "T POST /1.0/images"


async def test_pull_wait_false_with_aliases_returns_at_once_and_the_wait_finishes_the_copy(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    pull_scenario(wire, public_image())
    wire.on("T", "GET", "/1.0/images/aliases/x", missing("Image alias not found"))
    wire.on("T", "POST", "/1.0/images/aliases", sync_response(None, status=201))
    result = await target.images.copy(FP, source, aliases=["x"], wait=False)
    assert isinstance(result, Operation)
    assert not result.done
    assert wire.sent()[-1] == "T POST /1.0/images"
    finished = await target.operations.wait(result)
    assert finished.succeeded
    assert wire.sent()[-3:] == [
        f"T GET /1.0/operations/{PULL_ID}/wait",
        f"T GET /1.0/images/{FP}",  # the copy is there, of the source's type
        "T POST /1.0/images/aliases",
    ]


async def test_a_copy_the_wait_finds_stored_as_another_image_is_refused_there(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    """The checks of a copy returned early run when it is waited for: a lying source's
    image is refused then, and the image the target held stays."""
    held = sha256(b"an image the target already had")
    wire.held["T"].append(held)
    pull_scenario(wire, public_image(), wait=done(PULL_ID, held))
    started = await target.images.copy(FP, source, wait=False)
    with pytest.raises(TransferError, match="was on the server before and stays"):
        await target.operations.wait(started)
    assert wire.writes() == ["T POST /1.0/images"]


async def test_a_private_pull_that_times_out_keeps_its_secret_for_the_download(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    """The download goes on after the timeout and may still need the secret: it is kept,
    the note says so, and a later wait finishes the copy (and cancels it then)."""
    private_pull(wire, wait=deadline_604())
    with pytest.raises(IncusTimeoutError) as caught:
        await target.images.copy(FP, source, timeout=0)
    notes = "\n".join(caught.value.__notes__)
    assert f"token operation {TOKEN_ID}" in notes
    assert f"client.operations.wait({PULL_ID!r})" in notes
    assert not wire.requests("S", "DELETE", f"/1.0/operations/{TOKEN_ID}")
    arrived, has_arrived = flag()
    wire.on("T", "GET", f"/1.0/operations/{PULL_ID}/wait", then_mark(arrived, done(PULL_ID, FP)))
    target_image(wire, image(FP, public=False, size=len(DATA)), has_arrived)
    assert (await target.operations.wait(PULL_ID)).succeeded
    assert wire.requests("S", "DELETE", f"/1.0/operations/{TOKEN_ID}")


async def test_copy_aliases_adds_the_source_aliases_with_their_descriptions(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    aliases = [{"name": "a", "description": "first"}, {"name": "b", "description": "second"}]
    pull_scenario(wire, public_image(aliases=aliases))
    for name in ("a", "b"):
        wire.on("T", "GET", f"/1.0/images/aliases/{name}", missing("Image alias not found"))
    wire.on("T", "POST", "/1.0/images/aliases", sync_response(None, status=201))
    await target.images.copy(FP, source, aliases=["a"], copy_aliases=True)
    created = [json.loads(r.content) for r in wire.requests("T", "POST", "/1.0/images/aliases")]
    # "a" was asked for by name (no description); "b" comes from the source, with its own.
    assert created == [
        {"name": "a", "target": FP, "description": ""},
        {"name": "b", "target": FP, "description": "second"},
    ]


async def test_copy_aliases_skips_source_names_a_new_alias_may_not_have(
    wire: Wire, source: AsyncClient, target: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    bad = ["nul\x00x", "esc\x1b[2J", "evil\u202egnp", "", "x" * 256]
    aliases = [{"name": name, "description": ""} for name in [*bad, "ok"]]
    pull_scenario(wire, public_image(aliases=aliases))
    wire.on("T", "GET", "/1.0/images/aliases/ok", missing("Image alias not found"))
    wire.on("T", "POST", "/1.0/images/aliases", sync_response(None, status=201))
    with caplog.at_level(logging.WARNING, logger="incus_images"):
        await target.images.copy(FP, source, copy_aliases=True)
    created = [json.loads(r.content) for r in wire.requests("T", "POST", "/1.0/images/aliases")]
    assert created == [{"name": "ok", "target": FP, "description": ""}]
    # Only the name the rule allows was looked up on the target: no request carried the rest.
    assert [line for line in wire.sent() if line.startswith("T GET /1.0/images/aliases/")] == [
        "T GET /1.0/images/aliases/ok"
    ]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "5 alias name(s) of the source are not valid" in warning
    assert "'nul\\x00x'" in warning and "'esc\\x1b[2J'" in warning


async def test_copy_aliases_copies_at_most_a_thousand(
    wire: Wire, source: AsyncClient, target: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    names = [f"alias-{index:04d}" for index in range(1005)]
    pull_scenario(wire, public_image(aliases=[{"name": n, "description": ""} for n in names]))
    for name in names:
        wire.on("T", "GET", f"/1.0/images/aliases/{name}", missing("Image alias not found"))
    wire.on("T", "POST", "/1.0/images/aliases", sync_response(None, status=201))
    with caplog.at_level(logging.WARNING, logger="incus_images"):
        await target.images.copy(FP, source, copy_aliases=True)
    created = [
        json.loads(r.content)["name"] for r in wire.requests("T", "POST", "/1.0/images/aliases")
    ]
    assert created == names[:1000]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("1005 aliases; only the first 1000 are copied" in w for w in warnings), warnings


@pytest.mark.parametrize("mode", ["pull", "relay", "push"])
async def test_a_source_image_with_a_negative_size_is_refused_before_any_transfer(
    wire: Wire, source: AsyncClient, target: AsyncClient, mode: str
) -> None:
    source_image(wire, public_image(size=-1))
    with pytest.raises(UnexpectedResponseError, match="image size -1 is not a size") as caught:
        await target.images.copy(FP, source, mode=mode)
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was copied")
    assert wire.writes() == []
    assert not [line for line in wire.sent() if line.startswith("T ")]


async def test_type_picks_the_alias_of_that_type(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    vm = public_image(type="virtual-machine")
    wire.on("S", "GET", "/1.0/images/aliases/tiny", alias_entry("tiny", FP, "virtual-machine"))
    wire.on("S", "GET", f"/1.0/images/{FP}", sync_response(vm))
    arrived, has_arrived = flag()
    target_image(wire, vm, has_arrived)
    wire.on("T", "POST", "/1.0/images", accepted_response(operation(PULL_ID)))
    wire.on("T", "GET", f"/1.0/operations/{PULL_ID}/wait", then_mark(arrived, done(PULL_ID, FP)))
    await target.images.copy("tiny", source, type="virtual-machine")
    assert wire.body("T", "POST", "/1.0/images")["source"]["image_type"] == "virtual-machine"


async def test_type_refuses_an_alias_of_the_other_type(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    wire.on("S", "GET", "/1.0/images/aliases/tiny", alias_entry("tiny", FP, "container"))
    wire.on("S", "GET", "/1.0", server_info(trusted=True))
    with pytest.raises(NotFoundError) as caught:
        await target.images.copy("tiny", source, type="virtual-machine")
    message = str(caught.value)
    assert "virtual-machine image 'tiny'" in message
    assert SOURCE in message
    assert TARGET in message
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was copied")
    assert not [line for line in wire.sent() if line.startswith("T ")]


async def test_type_refuses_an_image_of_the_other_type_named_by_fingerprint(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    source_image(wire, public_image(type="container"))
    wire.on("S", "GET", "/1.0", server_info(trusted=False))
    with pytest.raises(NotFoundError) as caught:
        await target.images.copy(FP, source, type="virtual-machine")
    # An untrusted client sees only public images: the message says so.
    assert "does not trust this client" in str(caught.value)
    assert not [line for line in wire.sent() if line.startswith("T ")]


async def test_an_image_the_source_does_not_have_is_not_found(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    wire.on("S", "GET", "/1.0/images/aliases/abc123", missing("Image alias not found"))
    wire.on("S", "GET", "/1.0/images/abc123", missing('Image "abc123" not found'))
    wire.on("S", "GET", "/1.0", server_info(trusted=True))
    with pytest.raises(NotFoundError) as caught:
        await target.images.copy("abc123", source)
    message = str(caught.value)
    for part in (SOURCE, TARGET, "'abc123'", "pull mode"):
        assert part in message
    assert "does not trust" not in message
    assert wire.writes() == []


# --------------------------------------------------------------------------------------------
# Pull of a private image: a secret from the source.


def private_pull(wire: Wire, *, wait: Answer | None = None) -> None:
    pull_scenario(wire, image(FP, public=False, size=len(DATA)), wait=wait)
    wire.on("S", "GET", "/1.0", server_info(trusted=True))
    wire.on("S", "POST", f"/1.0/images/{FP}/secret", token(TOKEN_ID, SECRET))
    wire.on("S", "DELETE", f"/1.0/operations/{TOKEN_ID}", sync_response({}))


async def test_private_pull_sends_a_secret_from_the_source(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    private_pull(wire)
    result = await target.images.copy(FP, source)
    assert isinstance(result, Image)
    assert wire.sent() == [
        f"S GET /1.0/images/aliases/{FP}",
        f"S GET /1.0/images/{FP}",
        "T GET /1.0/images?recursion=0",
        "S GET /1.0",
        f"S POST /1.0/images/{FP}/secret",
        "T POST /1.0/images",
        f"T GET /1.0/operations/{PULL_ID}/wait",
        # Used, the secret is gone; unused (incusd copied files it already had), it is
        # cancelled: either way none stays valid.
        f"S DELETE /1.0/operations/{TOKEN_ID}",
        f"T GET /1.0/images/{FP}",
        f"T GET /1.0/images/{FP}",
    ]
    sent = wire.body("T", "POST", "/1.0/images")["source"]
    assert sent["secret"] == SECRET
    assert sent["fingerprint"] == FP


async def test_a_secret_a_finished_pull_did_not_use_that_cannot_be_cancelled_is_logged(
    wire: Wire, source: AsyncClient, target: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    private_pull(wire)
    wire.on("S", "DELETE", f"/1.0/operations/{TOKEN_ID}", error_response(500, "db locked"))
    with caplog.at_level(logging.WARNING, logger="incus_images"):
        result = await target.images.copy(FP, source)
    assert isinstance(result, Image)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"download secret issued by {SOURCE} (token operation {TOKEN_ID})" in warning
    assert "still valid" in warning


async def test_private_pull_by_alias_with_auto_update_sends_the_fingerprint_and_secret(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    """A secret names a fingerprint: a private image cannot be recorded by alias."""
    private_pull(wire)
    wire.on("S", "GET", "/1.0/images/aliases/tiny", alias_entry("tiny", FP))
    await target.images.copy("tiny", source, auto_update=True)
    sent = wire.body("T", "POST", "/1.0/images")["source"]
    assert sent["secret"] == SECRET
    assert sent["fingerprint"] == FP
    assert "alias" not in sent


async def test_private_pull_from_an_untrusting_source_is_refused_before_any_write(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    source_image(wire, image(FP, public=False))
    wire.on("T", "GET", f"/1.0/images/{FP}", missing())
    wire.on("S", "GET", "/1.0", server_info(trusted=False))
    # A trust condition of the source, not the caller's argument: what the source would
    # answer (403) if it were asked for the secret.
    with pytest.raises(ForbiddenError) as caught:
        await target.images.copy(FP, source)
    assert not isinstance(caught.value, ValueError)
    assert "private" in str(caught.value)
    assert f"{SOURCE} does not trust this client" in str(caught.value)
    assert (caught.value.server, caught.value.fingerprint) == (SOURCE, FP)
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was copied")
    assert wire.writes() == []


async def test_failed_private_pull_cancels_the_secret_on_the_source(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    private_pull(wire, wait=failed_604("Failed to download image"))
    wire.on(
        "T",
        "GET",
        f"/1.0/operations/{PULL_ID}",
        sync_response(operation(PULL_ID, status_code=400, err="Failed to download image")),
    )
    with pytest.raises(OperationError) as caught:
        await target.images.copy(FP, source)
    assert "Failed to download image" in str(caught.value)
    assert wire.sent()[-1] == f"S DELETE /1.0/operations/{TOKEN_ID}"
    assert wire.requests("S", "DELETE", f"/1.0/operations/{TOKEN_ID}")[0].url.query == b""


@pytest.mark.parametrize("refusal", ["unreachable", "error"])
async def test_a_secret_that_cannot_be_cancelled_is_said_to_be_still_valid(
    wire: Wire, source: AsyncClient, target: AsyncClient, refusal: str
) -> None:
    """The source became unreachable during the pull (or refuses the cancel): the failure
    says that the download secret it issued still works."""
    private_pull(wire, wait=failed_604("Failed to connect to the server"))
    wire.on(
        "T",
        "GET",
        f"/1.0/operations/{PULL_ID}",
        sync_response(operation(PULL_ID, status_code=400, err="Failed to connect")),
    )

    def refuse(request: httpx.Request) -> httpx.Response:
        if refusal == "unreachable":
            raise httpx.ConnectError("connection refused", request=request)
        return error_response(500, "database is locked")

    wire.on("S", "DELETE", f"/1.0/operations/{TOKEN_ID}", refuse)
    with pytest.raises(OperationError) as caught:
        await target.images.copy(FP, source)
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert f"token operation {TOKEN_ID}" in notes
    assert "still valid" in notes
    assert SOURCE in notes
    assert ("connection refused" if refusal == "unreachable" else "database is locked") in notes


@pytest.mark.parametrize("lost", ["reset", "garbled"])
async def test_a_secret_whose_answer_was_lost_is_said_to_be_maybe_still_valid(
    wire: Wire, source: AsyncClient, target: AsyncClient, lost: str
) -> None:
    """The request for a secret reached the source, but its answer (the token's id) was
    lost: nothing can cancel that secret, and the error says it may still be valid."""
    private_pull(wire)

    def issue(request: httpx.Request) -> httpx.Response:
        if lost == "reset":
            raise httpx.ReadError("connection reset by peer", request=request)
        return sync_response({"not": "an operation"}, status=202)

    wire.on("S", "POST", f"/1.0/images/{FP}/secret", issue)
    with pytest.raises(IncusError) as caught:
        await target.images.copy(FP, source)
    notes = "\n".join(notes_of(caught.value))
    assert f"a download secret for image {FP} may have been issued by {SOURCE}" in notes
    assert "still valid" in notes
    assert "T POST /1.0/images" not in wire.sent()


async def test_a_secret_already_used_or_gone_adds_no_note(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    private_pull(wire, wait=failed_604("Failed to download image"))
    wire.on(
        "T",
        "GET",
        f"/1.0/operations/{PULL_ID}",
        sync_response(operation(PULL_ID, status_code=400, err="Failed to download image")),
    )
    wire.on("S", "DELETE", f"/1.0/operations/{TOKEN_ID}", missing("Operation not found"))
    with pytest.raises(OperationError) as caught:
        await target.images.copy(FP, source)
    assert not getattr(caught.value, "__notes__", [])


async def test_refused_private_pull_cancels_the_secret_on_the_source(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    private_pull(wire)
    wire.on("T", "POST", "/1.0/images", error_response(403, "not authorized"))
    with pytest.raises(IncusError):
        await target.images.copy(FP, source)
    assert wire.sent()[-2:] == ["T POST /1.0/images", f"S DELETE /1.0/operations/{TOKEN_ID}"]


async def test_public_pull_asks_for_no_secret(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    pull_scenario(wire, public_image())
    await target.images.copy(FP, source)
    assert "secret" not in wire.body("T", "POST", "/1.0/images")["source"]
    assert not [line for line in wire.sent() if "/secret" in line or line == "S GET /1.0"]


# --------------------------------------------------------------------------------------------
# Push.


def push_scenario(wire: Wire, body: dict[str, Any], *, source_wait: Answer | None = None) -> None:
    source_image(wire, body)
    arrived, has_arrived = flag()
    target_image(wire, body, has_arrived)
    wire.on("S", "GET", "/1.0", server_info(trusted=True))
    wire.on("T", "POST", "/1.0/images", token(TOKEN_ID, PUSH_SECRET))
    wire.on("T", "DELETE", f"/1.0/operations/{TOKEN_ID}", sync_response({}))
    wire.on("S", "POST", f"/1.0/images/{FP}/export", accepted_response(operation(PUSH_ID)))
    wire.on(
        "S",
        "GET",
        f"/1.0/operations/{PUSH_ID}/wait",
        source_wait if source_wait is not None else then_mark(arrived, done(PUSH_ID)),
    )


async def test_push_asks_the_target_for_a_token_then_the_source_to_export(
    wire: Wire, source: AsyncClient
) -> None:
    body = public_image(properties={"os": "tiny", "release": "1"})
    push_scenario(wire, body)
    wire.on("T", "GET", "/1.0/profiles/default", sync_response({"name": "default"}))
    async with AsyncClient(TARGET, verify=False, project="dev") as target:
        result = await target.images.copy(
            FP, source, mode="push", public=True, profiles=["default"]
        )
    assert isinstance(result, Image)
    assert wire.sent() == [
        f"S GET /1.0/images/aliases/{FP}",
        f"S GET /1.0/images/{FP}",
        "T GET /1.0/images?recursion=0&project=dev",
        "T GET /1.0/profiles/default?project=dev",
        "S GET /1.0",
        "T POST /1.0/images?project=dev",
        f"S POST /1.0/images/{FP}/export",
        f"S GET /1.0/operations/{PUSH_ID}/wait",
        f"T GET /1.0/images/{FP}?project=dev",  # the copy is there, of the source's type
        f"T GET /1.0/images/{FP}?project=dev",  # read before the properties (already right)
        f"T GET /1.0/images/{FP}?project=dev",
    ]
    assert wire.body("T", "POST", "/1.0/images") == {
        "source": {"mode": "push", "fingerprint": FP},
        "public": True,
        "properties": {"os": "tiny", "release": "1"},
    }
    assert wire.body("S", "POST", f"/1.0/images/{FP}/export") == {
        "target": TARGET,
        "secret": PUSH_SECRET,
        "project": "dev",
        "profiles": ["default"],
    }


async def test_push_sets_the_source_properties_when_the_copy_lacks_them(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    push_scenario(wire, public_image(properties={"os": "tiny"}))
    arrived, has_arrived = flag()
    wire.on("S", "GET", f"/1.0/operations/{PUSH_ID}/wait", then_mark(arrived, done(PUSH_ID)))
    # The pushed copy arrives without the properties; PUT gives them back with the ETag read.
    copied = public_image(properties={})
    wire.on(
        "T",
        "GET",
        f"/1.0/images/{FP}",
        lambda request: (
            sync_response(copied, headers={"ETag": '"e1"'}) if has_arrived() else missing()
        ),
    )
    wire.on("T", "PUT", f"/1.0/images/{FP}", sync_response({}))
    await target.images.copy(FP, source, mode="push")
    (put,) = wire.requests("T", "PUT", f"/1.0/images/{FP}")
    assert put.headers["If-Match"] == '"e1"'
    assert json.loads(put.content) == {
        "public": True,
        "auto_update": False,
        "properties": {"os": "tiny"},
        "profiles": ["default"],
    }


async def test_failed_push_export_cancels_the_token_on_the_target(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    push_scenario(wire, public_image())
    wire.on("S", "POST", f"/1.0/images/{FP}/export", error_response(500, "export broke"))
    with pytest.raises(IncusError) as caught:
        await target.images.copy(FP, source, mode="push")
    assert "export broke" in str(caught.value)
    assert wire.sent()[-2:] == [
        f"S POST /1.0/images/{FP}/export",
        f"T DELETE /1.0/operations/{TOKEN_ID}",
    ]


async def test_push_token_without_a_usable_secret_is_cancelled(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    push_scenario(wire, public_image())
    wire.on("T", "POST", "/1.0/images", token(TOKEN_ID, "not a secret!"))
    with pytest.raises(IncusError, match="no usable secret"):
        await target.images.copy(FP, source, mode="push")
    assert wire.writes() == ["T POST /1.0/images", f"T DELETE /1.0/operations/{TOKEN_ID}"]


async def test_failed_push_operation_cancels_the_token_on_the_target(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    push_scenario(wire, public_image(), source_wait=failed_604("Failed to connect"))
    wire.on("S", "GET", f"/1.0/operations/{PUSH_ID}", missing("Operation not found"))
    with pytest.raises(OperationError):
        await target.images.copy(FP, source, mode="push")
    assert wire.sent()[-1] == f"T DELETE /1.0/operations/{TOKEN_ID}"


async def test_push_from_an_untrusting_source_is_refused_before_any_write(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    source_image(wire, public_image())
    wire.on("T", "GET", f"/1.0/images/{FP}", missing())
    wire.on("S", "GET", "/1.0", server_info(trusted=False))
    with pytest.raises(ForbiddenError, match="does not trust this client") as caught:
        await target.images.copy(FP, source, mode="push")
    assert not isinstance(caught.value, ValueError)
    assert caught.value.server == SOURCE
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was copied")
    assert wire.writes() == []


async def test_push_to_a_unix_socket_target_is_refused_before_anything(
    wire: Wire, source: AsyncClient, client: AsyncClient
) -> None:
    with pytest.raises(InvalidInputError, match="this server's HTTPS address"):
        await client.images.copy(FP, source, mode="push")
    assert wire.sent() == []


async def test_push_of_a_virtual_machine_image_is_refused_before_the_target_is_asked(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    """incusd pushes a VM image's disk as a container rootfs: the copy would change type."""
    source_image(wire, public_image(type="virtual-machine"))
    # The image's type rules the push out, as a running instance rules out publish().
    with pytest.raises(ConflictError, match="virtual-machine") as caught:
        await target.images.copy(FP, source, mode="push")
    assert not isinstance(caught.value, ValueError)
    assert (caught.value.server, caught.value.status_code) == (SOURCE, None)
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was copied")
    assert wire.sent() == [f"S GET /1.0/images/aliases/{FP}", f"S GET /1.0/images/{FP}"]


async def test_push_that_leaves_no_image_on_the_target_is_an_error(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    push_scenario(wire, public_image())
    wire.on("T", "GET", f"/1.0/images/{FP}", missing())
    with pytest.raises(TransferError) as caught:
        await target.images.copy(FP, source, mode="push")
    assert "not there" in str(caught.value)
    assert wire.writes()[-1] == f"S POST /1.0/images/{FP}/export"


# --------------------------------------------------------------------------------------------
# Relay.


def unified_export(data: bytes = DATA, fingerprint: str = FP) -> httpx.Response:
    return httpx.Response(
        200,
        content=data,
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"inline;filename={fingerprint}.tar.gz",
            "X-Incus-Type": "incus",
        },
    )


BOUNDARY = "e29038f40119e47d1d5fb5816b016d4e72748910f8ad25e9d26082e277cd"


async def chunked(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def split_export(rootfs_part: str = "rootfs") -> Callable[[httpx.Request], httpx.Response]:
    body = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="metadata"; filename="meta-{SPLIT_FP}.tar.xz"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body += META
    body += (
        f"\r\n--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="{rootfs_part}"; filename="{SPLIT_FP}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body += ROOTFS + f"\r\n--{BOUNDARY}--\r\n".encode()

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=chunked(body),
            headers={
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                "X-Incus-Type": "incus",
            },
        )

    return respond


def relay_scenario(wire: Wire, body: dict[str, Any], export: Answer, who: str = "S") -> None:
    fingerprint = body["fingerprint"]
    wire.on(who, "GET", f"/1.0/images/aliases/{fingerprint}", missing("Image alias not found"))
    wire.on(who, "GET", f"/1.0/images/{fingerprint}", sync_response(body))
    wire.on(who, "GET", f"/1.0/images/{fingerprint}/export", export)
    arrived, has_arrived = flag()
    target_image(wire, body, has_arrived)
    wire.on("T", "POST", "/1.0/images", accepted_response(operation(UPLOAD_ID)))
    wire.on(
        "T",
        "GET",
        f"/1.0/operations/{UPLOAD_ID}/wait",
        then_mark(arrived, done(UPLOAD_ID, fingerprint, body["size"])),
    )


def upload(wire: Wire) -> httpx.Request:
    (request,) = wire.requests("T", "POST", "/1.0/images")
    return request


async def test_relay_of_a_unified_image_uploads_the_export_with_its_headers(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    body = public_image(filename="my image ü.tar.gz")
    relay_scenario(wire, body, unified_export())
    for name in ("default", "gpu"):
        wire.on("T", "GET", f"/1.0/profiles/{name}", sync_response({"name": name}))
    result = await target.images.copy(
        FP, source, mode="relay", public=True, profiles=["default", "gpu"]
    )
    assert isinstance(result, Image)
    assert wire.sent() == [
        f"S GET /1.0/images/aliases/{FP}",
        f"S GET /1.0/images/{FP}",
        "T GET /1.0/images?recursion=0",
        "T GET /1.0/profiles/default",
        "T GET /1.0/profiles/gpu",
        f"S GET /1.0/images/{FP}/export",
        "T POST /1.0/images",
        f"T GET /1.0/operations/{UPLOAD_ID}/wait",
        f"T GET /1.0/images/{FP}",  # the copy is there, of the source's type
        f"T GET /1.0/images/{FP}",  # read for the properties: already those of the source
        f"T GET /1.0/images/{FP}",
    ]
    request = upload(wire)
    assert request.content == DATA
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert request.headers["Content-Length"] == str(len(DATA))
    assert "transfer-encoding" not in request.headers
    assert request.headers["X-Incus-fingerprint"] == FP
    assert raw_header(request, b"x-incus-filename") == ["my image ü.tar.gz".encode()]
    assert request.headers["X-Incus-public"] == "true"
    assert request.headers["X-Incus-profiles"] == "profile=default&profile=gpu"


async def test_a_relay_logs_its_start_its_verified_bytes_and_its_end(
    wire: Wire, source: AsyncClient, target: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="incus_images")
    relay_scenario(wire, public_image(), unified_export())
    await target.images.copy(FP, source, mode="relay")
    described = f"image '{FP}' from {source.server} to {target.server} (relay mode)"
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "incus_images"]
    messages = [message for _, message in lines]
    assert messages.index(f"copy of {described} started") < messages.index(
        f"relay of image {FP} from {source.server} to {target.server} started ({len(DATA)} bytes)"
    )
    assert (
        f"export image '{FP}' to relay it to {target.server} on {source.server}: "
        f"{len(DATA)} bytes verified"
    ) in messages
    assert lines[-1][0] == logging.INFO
    assert lines[-1][1].startswith(f"copied {described} in ")


async def test_relay_sends_no_file_name_when_the_source_has_none(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    relay_scenario(wire, public_image(filename="", public=False), unified_export())
    await target.images.copy(FP, source, mode="relay")
    request = upload(wire)
    assert "x-incus-filename" not in request.headers
    assert "x-incus-public" not in request.headers
    assert "x-incus-profiles" not in request.headers


@pytest.mark.parametrize(
    ("kind", "field"), [("container", "rootfs"), ("virtual-machine", "rootfs.img")]
)
async def test_relay_of_a_split_image_reframes_both_parts(
    wire: Wire, source: AsyncClient, target: AsyncClient, kind: str, field: str
) -> None:
    body = image(
        SPLIT_FP, size=len(META) + len(ROOTFS), type=kind, filename="disk.qcow2", public=True
    )
    relay_scenario(wire, body, split_export(field))
    await target.images.copy(SPLIT_FP, source, mode="relay")
    request = upload(wire)
    content_type = request.headers["Content-Type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    assert BOUNDARY not in content_type  # this client's own framing, not the source's
    assert int(request.headers["Content-Length"]) == len(request.content)
    assert len(request.content) > len(META) + len(ROOTFS)
    assert request.headers["X-Incus-fingerprint"] == SPLIT_FP
    # Incus takes a split image's name from the rootfs part, and ignores the header.
    assert "x-incus-filename" not in request.headers
    assert multipart_parts(content_type, request.content) == [
        ("metadata", f"meta-{SPLIT_FP}", META),
        (field, "disk.qcow2", ROOTFS),
    ]


async def test_relay_is_the_default_for_a_unix_socket_source(
    wire: Wire, client: AsyncClient, target: AsyncClient
) -> None:
    relay_scenario(wire, public_image(), unified_export(), who="U")
    result = await target.images.copy(FP, client)
    assert isinstance(result, Image)
    assert upload(wire).content == DATA
    assert f"U GET /1.0/images/{FP}/export" in wire.sent()


async def test_relay_sets_the_source_properties_on_the_copy(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    """An upload carries its metadata.yaml's properties; the copy gets the source's."""
    relay_scenario(wire, public_image(properties={"os": "tiny", "extra": "x"}), unified_export())
    arrived, has_arrived = flag()
    wire.on(
        "T",
        "GET",
        f"/1.0/operations/{UPLOAD_ID}/wait",
        then_mark(arrived, done(UPLOAD_ID, FP, len(DATA))),
    )
    wire.on(
        "T",
        "GET",
        f"/1.0/images/{FP}",
        lambda request: (
            sync_response(public_image(properties={"os": "from-yaml"}))
            if has_arrived()
            else missing()
        ),
    )
    wire.on("T", "PUT", f"/1.0/images/{FP}", sync_response({}))
    await target.images.copy(FP, source, mode="relay")
    (put,) = wire.requests("T", "PUT", f"/1.0/images/{FP}")
    assert json.loads(put.content)["properties"] == {"os": "tiny", "extra": "x"}


async def test_relay_of_an_export_that_does_not_hash_to_the_fingerprint_is_stopped(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    tampered = DATA[:-1] + bytes([DATA[-1] ^ 1])
    relay_scenario(wire, public_image(), unified_export(tampered))
    with pytest.raises(ChecksumMismatchError) as caught:
        await target.images.copy(FP, source, mode="relay")
    assert isinstance(caught.value, TransferError)
    message = str(caught.value)
    assert FP in message
    assert TARGET in message
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was stored")
    # The upload never completed: the mock never got a whole body, and nothing followed.
    assert upload_attempts(wire) == []
    assert wire.sent()[-1] == f"S GET /1.0/images/{FP}/export"


async def test_relay_of_an_export_longer_than_the_image_is_stopped(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    relay_scenario(wire, public_image(size=len(DATA) - 10), unified_export())
    with pytest.raises(TransferError, match=f"more than the image's {len(DATA) - 10} bytes"):
        await target.images.copy(FP, source, mode="relay")
    assert upload_attempts(wire) == []
    assert wire.sent()[-1] == f"S GET /1.0/images/{FP}/export"


def upload_attempts(wire: Wire) -> list[httpx.Request]:
    return wire.requests("T", "POST", "/1.0/images")


async def test_relay_of_an_oci_image_is_refused_before_the_upload(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    """An OCI image's export does not hash to its fingerprint: it cannot be relayed checked."""
    export = unified_export()
    export.headers["X-Incus-Type"] = "oci"
    relay_scenario(wire, public_image(), export)
    with pytest.raises(TransferError, match="OCI") as caught:
        await target.images.copy(FP, source, mode="relay")
    assert TARGET in str(caught.value)
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was stored")
    assert upload_attempts(wire) == []


async def test_relay_of_an_oci_image_gives_advice_copy_can_follow(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    export = unified_export()
    export.headers["X-Incus-Type"] = "oci"
    relay_scenario(wire, public_image(), export)
    with pytest.raises(TransferError) as caught:
        await target.images.copy(FP, source, mode="relay")
    assert "allow_unverified" not in str(caught.value)


def broken_export(after: int) -> Callable[[httpx.Request], httpx.Response]:
    """An export whose connection breaks after ``after`` bytes."""

    async def body() -> AsyncIterator[bytes]:
        yield DATA[:after]
        raise httpx.ReadError("Connection reset by peer")

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=body(),
            headers={"Content-Type": "application/octet-stream", "X-Incus-Type": "incus"},
        )

    return respond


async def test_relay_whose_source_connection_breaks_says_how_far_it_got(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    relay_scenario(wire, public_image(), broken_export(100))
    with pytest.raises(IncusError) as caught:
        await target.images.copy(FP, source, mode="relay")
    assert isinstance(caught.value, ConnectionError)
    assert "Connection reset by peer" in str(caught.value)
    assert_left(
        caught.value, LeftBehind.NOTHING, f"after 100 of {len(DATA)} bytes", "nothing was stored"
    )
    assert upload_attempts(wire) == []


async def test_relay_whose_source_connection_breaks_blames_the_source(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    relay_scenario(wire, public_image(), broken_export(100))
    with pytest.raises(IncusError) as caught:
        await target.images.copy(FP, source, mode="relay")
    message = str(caught.value)
    assert f"the connection to {SOURCE} failed" in message
    assert f"the connection to {TARGET} failed" not in message


async def test_relay_of_a_split_export_with_the_wrong_rootfs_part_is_stopped(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    """A VM image whose export sends a container rootfs would be stored as another type."""
    body = image(SPLIT_FP, size=len(META) + len(ROOTFS), type="virtual-machine")
    relay_scenario(wire, body, split_export("rootfs"))
    with pytest.raises(TransferError, match="'rootfs'"):
        await target.images.copy(SPLIT_FP, source, mode="relay")
    assert upload_attempts(wire) == []


async def test_relay_reports_the_bytes_it_moves(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    body = image(SPLIT_FP, size=len(META) + len(ROOTFS), public=True)
    relay_scenario(wire, body, split_export())
    reports: list[tuple[int, int | None]] = []
    await target.images.copy(
        SPLIT_FP, source, mode="relay", progress=lambda done, total: reports.append((done, total))
    )
    size = len(META) + len(ROOTFS)
    assert reports[0] == (0, size)
    assert reports[-1] == (size, size)
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)
    assert {total for _, total in reports} == {size}


async def test_relay_wait_false_returns_the_upload_operation(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    relay_scenario(wire, public_image(properties={}), unified_export())
    result = await target.images.copy(FP, source, mode="relay", wait=False)
    assert isinstance(result, Operation)
    assert result.id == UPLOAD_ID


async def test_relay_wait_false_finishes_the_copy_when_waited_for(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    """A relayed image carries its tarball's properties; only once it is stored can it be
    given the source's: with wait=False, when the upload's Operation is waited for."""
    relay_scenario(wire, public_image(properties={}), unified_export())
    result = await target.images.copy(FP, source, mode="relay", wait=False)
    assert isinstance(result, Operation)
    assert not result.done
    assert not [line for line in wire.sent() if "/wait" in line]
    finished = await target.operations.wait(result)
    assert finished.done and finished.succeeded


# --------------------------------------------------------------------------------------------
# Mode rules and bad input: refused before any request.


async def test_a_unix_socket_source_cannot_pull(
    wire: Wire, client: AsyncClient, target: AsyncClient
) -> None:
    """The target could not reach it; a push needs only the target's HTTPS address."""
    with pytest.raises(InvalidInputError, match="source's HTTPS address"):
        await target.images.copy(FP, client, mode="pull")
    assert wire.sent() == []


@pytest.mark.parametrize("mode", ["relay", "push"])
async def test_auto_update_needs_pull(
    wire: Wire, source: AsyncClient, target: AsyncClient, mode: str
) -> None:
    with pytest.raises(InvalidInputError, match="auto_update=True needs mode='pull'"):
        await target.images.copy(FP, source, mode=mode, auto_update=True)  # type: ignore[arg-type]
    assert wire.sent() == []


async def test_auto_update_with_a_unix_socket_source_is_refused(
    wire: Wire, client: AsyncClient, target: AsyncClient
) -> None:
    """mode=None means relay for a unix-socket source, which cannot auto-update."""
    with pytest.raises(InvalidInputError, match="auto_update"):
        await target.images.copy(FP, client, auto_update=True)
    assert wire.sent() == []


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "fast"},
        {"mode": "PULL"},
        {"type": "vm"},
        {"type": ""},
        {"aliases": "one"},
        {"aliases": ["a", "a"]},
        {"aliases": [""]},
        {"aliases": ["a\x00b"]},
        {"aliases": [1]},
        {"profiles": "default"},
        {"profiles": [""]},
        {"profiles": ["p", "p"]},
        {"copy_aliases": "yes"},
        {"public": 1},
        {"auto_update": "true"},
        {"progress": "bar"},
        {"wait": None},
    ],
    ids=repr,
)
async def test_copy_refuses_bad_options(
    wire: Wire, source: AsyncClient, target: AsyncClient, options: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await target.images.copy(FP, source, **options)
    assert isinstance(caught.value, ValueError)
    assert wire.sent() == []


@pytest.mark.parametrize("name", ["", None, 12, b"abc", "a\x00b"], ids=repr)
async def test_copy_refuses_a_bad_image_name(
    wire: Wire, source: AsyncClient, target: AsyncClient, name: object
) -> None:
    with pytest.raises(InvalidInputError, match="image"):
        await target.images.copy(name, source)  # type: ignore[arg-type]
    assert wire.sent() == []


@pytest.mark.parametrize("bad_source", [SOURCE, None, {"url": SOURCE}, object()], ids=repr)
async def test_copy_refuses_a_source_that_is_no_client(
    wire: Wire, target: AsyncClient, bad_source: object
) -> None:
    with pytest.raises(InvalidInputError, match="source must be"):
        await target.images.copy(FP, bad_source)  # type: ignore[arg-type]
    assert wire.sent() == []


# --------------------------------------------------------------------------------------------
# An image the target already has; aliases already taken.


async def test_an_image_the_target_has_is_not_copied_but_gets_the_aliases(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    source_image(wire, public_image())
    target_has(wire, public_image())
    wire.on("T", "GET", "/1.0/images/aliases/x", missing("Image alias not found"))
    wire.on("T", "POST", "/1.0/images/aliases", sync_response(None, status=201))
    result = await target.images.copy(FP, source, aliases=["x"], wait=False)
    # Nothing runs on the server: an Operation that is already finished, and that a wait
    # returns as it is.
    assert isinstance(result, Operation)
    assert result.succeeded
    assert result.metadata == {"fingerprint": FP, "size": str(len(DATA))}
    assert await target.operations.wait(result) is result
    assert wire.writes() == ["T POST /1.0/images/aliases"]
    assert wire.body("T", "POST", "/1.0/images/aliases") == {
        "name": "x",
        "target": FP,
        "description": "",
    }


async def test_a_taken_alias_is_refused_before_anything_is_copied(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    source_image(wire, public_image())
    wire.on("T", "GET", f"/1.0/images/{FP}", missing())
    wire.on("T", "GET", "/1.0/images/aliases/free", missing("Image alias not found"))
    wire.on("T", "GET", "/1.0/images/aliases/taken", alias_entry("taken", "ab" * 32))
    with pytest.raises(ConflictError) as caught:
        await target.images.copy(FP, source, aliases=["free", "taken"])
    assert "'taken'" in str(caught.value)
    assert TARGET in str(caught.value)
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was sent")
    assert wire.writes() == []


async def test_a_taken_alias_is_refused_for_an_image_the_target_has_too(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    source_image(wire, public_image())
    target_has(wire, public_image())
    wire.on("T", "GET", "/1.0/images/aliases/taken", alias_entry("taken", "ab" * 32))
    with pytest.raises(ConflictError, match="'taken'"):
        await target.images.copy(FP, source, aliases=["taken"])
    assert wire.writes() == []


async def test_a_failed_alias_after_the_copy_deletes_the_copy_and_says_so(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    pull_scenario(wire, public_image())
    wire.on("T", "GET", "/1.0/images/aliases/x", missing("Image alias not found"))
    wire.on("T", "POST", "/1.0/images/aliases", error_response(409, 'Alias "x" already exists'))
    deletes(wire, "T", FP)
    with pytest.raises(ConflictError) as caught:
        await target.images.copy(FP, source, aliases=["x"])
    assert 'Alias "x" already exists' in str(caught.value)
    assert_left(caught.value, LeftBehind.DELETED, f"image {FP} was deleted again")
    assert caught.value.fingerprint == FP
    assert wire.writes() == [
        "T POST /1.0/images",
        "T POST /1.0/images/aliases",
        f"T DELETE /1.0/images/{FP}",
    ]


async def test_a_failed_alias_on_an_image_that_was_there_keeps_the_image(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    source_image(wire, public_image())
    target_has(wire, public_image())
    wire.on("T", "GET", "/1.0/images/aliases/x", missing("Image alias not found"))
    wire.on("T", "POST", "/1.0/images/aliases", error_response(500, "database is locked"))
    with pytest.raises(IncusError) as caught:
        await target.images.copy(FP, source, aliases=["x"])
    assert "database is locked" in str(caught.value)
    assert_left(caught.value, LeftBehind.KEPT, f"image {FP} was on the server before and stays")
    assert wire.writes() == ["T POST /1.0/images/aliases"]


async def test_a_copy_stored_as_another_type_is_deleted(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    vm = public_image(type="virtual-machine")
    pull_scenario(wire, vm)
    arrived, has_arrived = flag()
    wire.on("T", "GET", f"/1.0/operations/{PULL_ID}/wait", then_mark(arrived, done(PULL_ID, FP)))
    target_image(wire, public_image(type="container"), has_arrived)
    wire.on("T", "GET", "/1.0/images/aliases/x", missing("Image alias not found"))
    deletes(wire, "T", FP)
    with pytest.raises(TransferError) as caught:
        await target.images.copy(FP, source, aliases=["x"])
    assert "container image, not a virtual-machine one" in str(caught.value)
    assert_left(caught.value, LeftBehind.DELETED, f"image {FP} was deleted again")
    # Nothing is applied to the wrong copy: no alias.
    assert wire.writes() == ["T POST /1.0/images", f"T DELETE /1.0/images/{FP}"]


async def test_a_pull_reported_done_without_the_image_is_an_error(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    pull_scenario(wire, public_image())
    wire.on("T", "GET", f"/1.0/images/{FP}", missing())
    with pytest.raises(TransferError, match="the image is not there") as caught:
        await target.images.copy(FP, source)
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was copied")
    assert wire.writes() == ["T POST /1.0/images"]


async def test_a_copy_stored_under_another_fingerprint_is_deleted(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    other = sha256(b"something else")
    pull_scenario(wire, public_image(), wait=done(PULL_ID, other))
    deletes(wire, "T", other)
    # A hash mismatch: the target stored the image under another fingerprint.
    with pytest.raises(ChecksumMismatchError) as caught:
        await target.images.copy(FP, source)
    message = str(caught.value)
    assert other in message
    assert FP in message
    assert_left(caught.value, LeftBehind.DELETED, f"image {other} was deleted again")
    assert wire.writes() == ["T POST /1.0/images", f"T DELETE /1.0/images/{other}"]


async def test_a_copy_reported_as_an_image_the_target_held_never_deletes_it(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    """A hostile source answers the target's download with another image, one the target
    already held: the daemon reports that one stored. It was there before: it stays."""
    held = sha256(b"an image the target already had")
    wire.held["T"].append(held)
    pull_scenario(wire, public_image(), wait=done(PULL_ID, held))
    deletes(wire, "T", held)
    with pytest.raises(ChecksumMismatchError) as caught:
        await target.images.copy(FP, source)
    assert_left(caught.value, LeftBehind.KEPT, f"image {held} was on the server before and stays")
    assert "deleted" not in " ".join(notes_of(caught.value))
    assert wire.writes() == ["T POST /1.0/images"]


# --------------------------------------------------------------------------------------------
# Progress of pull and push: the daemon's download_progress.


def running_with(op_id: str, text: str) -> Callable[[httpx.Request], httpx.Response]:
    def respond(request: httpx.Request) -> httpx.Response:
        # Longer than the progress reports' pace (0.1 s), so that this report is not skipped.
        time.sleep(0.12)
        return sync_response(operation(op_id, metadata={"download_progress": text}))

    return respond


@pytest.mark.parametrize(
    ("text", "size", "expected"),
    [
        ("rootfs: 42% (1.09MB/s)", 1000, 420),
        ("163.64MB (163.63MB/s)", 400_000_000, 163_640_000),
    ],
)
async def test_pull_reports_the_daemon_download_progress(
    wire: Wire,
    source: AsyncClient,
    target: AsyncClient,
    text: str,
    size: int,
    expected: int,
) -> None:
    body = public_image(size=size)
    arrived, has_arrived = flag()
    pull_scenario(wire, body)
    target_image(wire, body, has_arrived)
    wire.on(
        "T",
        "GET",
        f"/1.0/operations/{PULL_ID}/wait",
        deadline_604(),
        then_mark(arrived, done(PULL_ID, FP)),
    )
    wire.on("T", "GET", f"/1.0/operations/{PULL_ID}", running_with(PULL_ID, text))
    reports: list[tuple[int, int | None]] = []
    await target.images.copy(FP, source, progress=lambda d, t: reports.append((d, t)))
    assert reports == [(0, size), (expected, size), (size, size)]
    # incusd 6.0.4 answers a timed-out wait without the operation: it is read for its metadata.
    assert [line for line in wire.sent(raw=True) if "/operations/" in line] == [
        f"T GET /1.0/operations/{PULL_ID}/wait?timeout=1",
        f"T GET /1.0/operations/{PULL_ID}",
        f"T GET /1.0/operations/{PULL_ID}/wait?timeout=1",
    ]


async def test_push_reports_the_source_download_progress(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    body = public_image(size=2000)
    push_scenario(wire, body)
    arrived, has_arrived = flag()
    target_image(wire, body, has_arrived)
    wire.on(
        "S",
        "GET",
        f"/1.0/operations/{PUSH_ID}/wait",
        deadline_604(),
        then_mark(arrived, done(PUSH_ID)),
    )
    wire.on("S", "GET", f"/1.0/operations/{PUSH_ID}", running_with(PUSH_ID, "rootfs: 25% (1MB/s)"))
    reports: list[tuple[int, int | None]] = []
    await target.images.copy(FP, source, mode="push", progress=lambda d, t: reports.append((d, t)))
    assert reports == [(0, 2000), (500, 2000), (2000, 2000)]
    assert f"S GET /1.0/operations/{PUSH_ID}/wait?timeout=1" in wire.sent(raw=True)


async def test_pull_without_progress_long_polls(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    pull_scenario(wire, public_image())
    await target.images.copy(FP, source)
    assert f"T GET /1.0/operations/{PULL_ID}/wait?timeout=30" in wire.sent(raw=True)


async def test_relay_without_progress_long_polls(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    relay_scenario(wire, public_image(), unified_export())
    await target.images.copy(FP, source, mode="relay")
    assert f"T GET /1.0/operations/{UPLOAD_ID}/wait?timeout=30" in wire.sent(raw=True)


# --------------------------------------------------------------------------------------------
# From a simplestreams server.

STREAMS = "https://images.example/streams-root"


def streams_scenario(wire: Wire, *, before: list[str] | None = None) -> None:
    wire.on(
        "U",
        "GET",
        "/1.0/images",
        sync_response([f"/1.0/images/{fp}" for fp in before or []]),
    )
    wire.on("U", "POST", "/1.0/images", accepted_response(operation(PULL_ID)))
    wire.on("U", "GET", f"/1.0/operations/{PULL_ID}/wait", done(PULL_ID, FP, 300))
    wire.on("U", "GET", f"/1.0/images/{FP}", sync_response(image(FP, size=300)))


async def test_simplestreams_pull_body(wire: Wire, client: AsyncClient, pem_file: Path) -> None:
    streams_scenario(wire)
    pem = pem_file.read_text()
    result = await client.images.copy(
        "debian/12",
        SimpleStreams(STREAMS + "/", certificate=pem),
        type="virtual-machine",
        auto_update=True,
        public=True,
    )
    assert isinstance(result, Image)
    assert wire.sent() == [
        "U GET /1.0/images?recursion=0",
        "U POST /1.0/images",
        f"U GET /1.0/operations/{PULL_ID}/wait",
        f"U GET /1.0/images/{FP}",
    ]
    assert wire.body("U", "POST", "/1.0/images") == {
        "source": {
            "type": "image",
            "mode": "pull",
            "server": STREAMS,
            "protocol": "simplestreams",
            "alias": "debian/12",
            "certificate": pem,
            "image_type": "virtual-machine",
        },
        "public": True,
        "auto_update": True,
    }


async def test_simplestreams_wait_false_without_follow_up_returns_the_operation(
    wire: Wire, client: AsyncClient
) -> None:
    streams_scenario(wire)
    result = await client.images.copy("debian/12", SimpleStreams(STREAMS), wait=False)
    assert isinstance(result, Operation)
    assert result.id == PULL_ID
    assert not result.done
    assert wire.sent()[-1] == "U POST /1.0/images"
    assert "certificate" not in wire.body("U", "POST", "/1.0/images")["source"]


async def test_simplestreams_aliases_are_created_and_a_new_copy_deleted_on_failure(
    wire: Wire, client: AsyncClient
) -> None:
    streams_scenario(wire)
    wire.on("U", "GET", "/1.0/images/aliases/x", missing("Image alias not found"))
    wire.on("U", "POST", "/1.0/images/aliases", error_response(500, "alias broke"))
    deletes(wire, "U", FP)
    with pytest.raises(IncusError) as caught:
        await client.images.copy("debian/12", SimpleStreams(STREAMS), aliases=["x"])
    assert_left(caught.value, LeftBehind.DELETED, f"image {FP} was deleted again")
    assert wire.writes()[-2:] == ["U POST /1.0/images/aliases", f"U DELETE /1.0/images/{FP}"]


async def test_simplestreams_failure_keeps_an_image_that_was_there_before(
    wire: Wire, client: AsyncClient
) -> None:
    streams_scenario(wire, before=[FP])
    wire.on("U", "GET", "/1.0/images/aliases/x", missing("Image alias not found"))
    wire.on("U", "POST", "/1.0/images/aliases", error_response(500, "alias broke"))
    with pytest.raises(IncusError) as caught:
        await client.images.copy("debian/12", SimpleStreams(STREAMS), aliases=["x"])
    assert_left(caught.value, LeftBehind.KEPT, f"image {FP} was on the server before and stays")
    assert "DELETE" not in " ".join(wire.sent())


@pytest.mark.parametrize(
    "options",
    [{"mode": "push"}, {"mode": "relay"}, {"copy_aliases": True}],
    ids=repr,
)
async def test_simplestreams_refuses_what_it_cannot_do(
    wire: Wire, client: AsyncClient, options: dict[str, Any]
) -> None:
    with pytest.raises(InvalidInputError):
        await client.images.copy("debian/12", SimpleStreams(STREAMS), **options)
    assert wire.sent() == []


# --------------------------------------------------------------------------------------------
# refresh, create_secret, get and export with a secret.


async def test_refresh_without_wait_returns_the_running_operation(
    wire: Wire, target: AsyncClient
) -> None:
    wire.on("T", "GET", f"/1.0/images/{FP[:8]}", sync_response(public_image()))
    wire.on(
        "T",
        "POST",
        f"/1.0/images/{FP}/refresh",
        accepted_response(operation(REFRESH_ID, description="Refreshing image")),
    )
    result = await target.images.refresh(FP[:8])
    assert result.id == REFRESH_ID
    assert not result.done
    assert wire.sent() == [f"T GET /1.0/images/{FP[:8]}", f"T POST /1.0/images/{FP}/refresh"]


async def test_refresh_with_wait_returns_the_finished_operation(
    wire: Wire, target: AsyncClient
) -> None:
    wire.on("T", "GET", f"/1.0/images/{FP}", sync_response(public_image()))
    wire.on(
        "T",
        "POST",
        f"/1.0/images/{FP}/refresh",
        accepted_response(operation(REFRESH_ID, description="Refreshing image")),
    )
    wire.on(
        "T",
        "GET",
        f"/1.0/operations/{REFRESH_ID}/wait",
        sync_response(operation(REFRESH_ID, status_code=200, metadata={"refreshed": True})),
    )
    result = await target.images.refresh(FP, wait=True)
    assert result.succeeded
    assert result.metadata == {"refreshed": True}


async def test_refresh_of_an_image_without_source_fails(wire: Wire, target: AsyncClient) -> None:
    message = f'Failed to update image "{FP}" in project "default": Image source not found'
    wire.on("T", "GET", f"/1.0/images/{FP}", sync_response(public_image()))
    wire.on(
        "T",
        "POST",
        f"/1.0/images/{FP}/refresh",
        accepted_response(operation(REFRESH_ID, description="Refreshing image")),
    )
    wire.on("T", "GET", f"/1.0/operations/{REFRESH_ID}/wait", failed_604(message))
    wire.on("T", "GET", f"/1.0/operations/{REFRESH_ID}", missing("Operation not found"))
    with pytest.raises(OperationError, match="Image source not found") as caught:
        await target.images.refresh(FP, wait=True)
    assert f"refresh image '{FP}'" in str(caught.value)


async def test_refresh_refuses_a_bad_wait_before_any_request(
    wire: Wire, target: AsyncClient
) -> None:
    wire.on("T", "GET", f"/1.0/images/{FP}", sync_response(public_image()))
    wire.on(
        "T",
        "POST",
        f"/1.0/images/{FP}/refresh",
        accepted_response(operation(REFRESH_ID, description="Refreshing image")),
    )
    with pytest.raises(InvalidInputError):
        await target.images.refresh(FP, wait="yes")  # type: ignore[arg-type]
    assert wire.sent() == []


async def test_create_secret_returns_the_secret(wire: Wire, source: AsyncClient) -> None:
    wire.on("S", "GET", f"/1.0/images/{FP[:6]}", sync_response(image(FP)))
    wire.on("S", "POST", f"/1.0/images/{FP}/secret", token(TOKEN_ID, SECRET))
    assert await source.images.create_secret(FP[:6]) == SECRET
    assert wire.sent() == [f"S GET /1.0/images/{FP[:6]}", f"S POST /1.0/images/{FP}/secret"]


async def test_create_secret_cancels_a_token_without_a_usable_secret(
    wire: Wire, source: AsyncClient
) -> None:
    wire.on("S", "GET", f"/1.0/images/{FP}", sync_response(image(FP)))
    wire.on("S", "POST", f"/1.0/images/{FP}/secret", token(TOKEN_ID, "../x"))
    wire.on("S", "DELETE", f"/1.0/operations/{TOKEN_ID}", sync_response({}))
    with pytest.raises(IncusError):
        await source.images.create_secret(FP)
    assert wire.writes()[-1] == f"S DELETE /1.0/operations/{TOKEN_ID}"


@pytest.mark.parametrize("secret", [None, "", "a&b=c", "../x", 42, "x" * 129], ids=repr)
async def test_create_secret_refuses_a_token_without_a_usable_secret(
    wire: Wire, source: AsyncClient, secret: object
) -> None:
    wire.on("S", "GET", f"/1.0/images/{FP}", sync_response(image(FP)))
    wire.on("S", "POST", f"/1.0/images/{FP}/secret", token(TOKEN_ID, secret))
    with pytest.raises(IncusError, match="no usable secret") as caught:
        await source.images.create_secret(FP)
    assert not isinstance(caught.value, InvalidInputError)  # the server's fault


async def test_get_with_a_secret_sends_it_as_a_query_parameter(
    wire: Wire, source: AsyncClient
) -> None:
    wire.on("S", "GET", f"/1.0/images/{FP}", sync_response(image(FP)))
    result = await source.images.get(FP, secret=SECRET)
    assert result.fingerprint == FP
    assert wire.sent() == [f"S GET /1.0/images/{FP}?secret={SECRET}"]


async def test_export_with_a_secret_sends_it_on_both_requests(
    wire: Wire, source: AsyncClient, tmp_path: Path
) -> None:
    wire.on("S", "GET", f"/1.0/images/{FP}", sync_response(image(FP, size=len(DATA))))
    wire.on("S", "GET", f"/1.0/images/{FP}/export", unified_export())
    written = await source.images.export(FP, tmp_path / "image.tar.gz", secret=SECRET)
    assert written == [tmp_path / "image.tar.gz"]
    assert written[0].read_bytes() == DATA
    assert wire.sent() == [
        f"S GET /1.0/images/{FP}?secret={SECRET}",
        f"S GET /1.0/images/{FP}/export?secret={SECRET}",
    ]


@pytest.mark.parametrize("secret", ["", "a b", "a&b=c", "x/../y", "é1", 42, b"ab"], ids=repr)
async def test_get_and_export_refuse_a_bad_secret_before_any_request(
    wire: Wire, source: AsyncClient, tmp_path: Path, secret: object
) -> None:
    with pytest.raises(InvalidInputError, match="secret"):
        await source.images.get(FP, secret=secret)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="secret"):
        await source.images.export(FP, tmp_path / "x", secret=secret)  # type: ignore[arg-type]
    assert wire.sent() == []
    assert list(tmp_path.iterdir()) == []


async def test_server_info_says_whether_the_server_trusts_the_client(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    wire.on("S", "GET", "/1.0", server_info(trusted=True))
    wire.on("T", "GET", "/1.0", server_info(trusted=False))
    assert (await source.server_info()).trusted is True
    assert (await target.server_info()).trusted is False


# --------------------------------------------------------------------------------------------
# Failures name the source, the target, the image and the mode.


def assert_names_everything(error: BaseException, mode: str, name: str = FP) -> None:
    message = str(error)
    missing_parts = [part for part in (SOURCE, TARGET, name, mode) if part not in message]
    assert not missing_parts, f"{missing_parts} not in: {message}"


async def test_a_failed_pull_names_everything(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    pull_scenario(wire, public_image(), wait=failed_604("Failed to connect to the server"))
    wire.on("T", "GET", f"/1.0/operations/{PULL_ID}", missing("Operation not found"))
    with pytest.raises(OperationError) as caught:
        await target.images.copy(FP, source)
    assert_names_everything(caught.value, "pull")
    assert "Failed to connect to the server" in str(caught.value)


async def test_a_refused_pull_names_everything(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    pull_scenario(wire, public_image())
    wire.on("T", "POST", "/1.0/images", error_response(403, "not authorized"))
    with pytest.raises(IncusError) as caught:
        await target.images.copy(FP, source)
    assert_names_everything(caught.value, "pull")


async def test_an_image_missing_on_the_source_names_everything(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    wire.on("S", "GET", "/1.0/images/aliases/tiny", missing("Image alias not found"))
    wire.on("S", "GET", "/1.0", server_info(trusted=True))
    with pytest.raises(NotFoundError) as caught:
        await target.images.copy("tiny", source, mode="relay")
    assert_names_everything(caught.value, "relay", "'tiny'")


async def test_a_failed_relay_upload_names_everything(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    relay_scenario(wire, public_image(), unified_export())
    wire.on("T", "POST", "/1.0/images", error_response(500, "disk full"))
    with pytest.raises(IncusError) as caught:
        await target.images.copy(FP, source, mode="relay")
    assert_names_everything(caught.value, "relay")
    assert "disk full" in str(caught.value)


async def test_a_refused_relay_export_names_everything(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    relay_scenario(wire, public_image(), error_response(404, f'Image "{FP}" not found'))
    with pytest.raises(IncusError) as caught:
        await target.images.copy(FP, source, mode="relay")
    assert_names_everything(caught.value, "relay")


async def test_a_failed_lookup_on_the_target_names_everything(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    source_image(wire, public_image())
    wire.on("T", "GET", f"/1.0/images/{FP}", error_response(403, "not authorized"))
    with pytest.raises(IncusError) as caught:
        await target.images.copy(FP, source)
    assert_names_everything(caught.value, "pull")


async def test_a_failed_secret_names_everything(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    private_pull(wire)
    wire.on("S", "POST", f"/1.0/images/{FP}/secret", error_response(500, "secret broke"))
    with pytest.raises(IncusError) as caught:
        await target.images.copy(FP, source)
    assert_names_everything(caught.value, "pull")


async def test_a_failed_push_export_names_everything(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    push_scenario(wire, public_image())
    wire.on("S", "POST", f"/1.0/images/{FP}/export", error_response(500, "export broke"))
    with pytest.raises(IncusError) as caught:
        await target.images.copy(FP, source, mode="push")
    assert_names_everything(caught.value, "push")


async def test_a_failed_push_operation_names_everything(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    push_scenario(wire, public_image(), source_wait=failed_604("Failed to connect"))
    wire.on("S", "GET", f"/1.0/operations/{PUSH_ID}", missing("Operation not found"))
    with pytest.raises(OperationError) as caught:
        await target.images.copy(FP, source, mode="push")
    assert_names_everything(caught.value, "push")


async def test_a_refused_push_token_names_everything(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    push_scenario(wire, public_image())
    wire.on("T", "POST", "/1.0/images", error_response(403, "not authorized"))
    with pytest.raises(IncusError) as caught:
        await target.images.copy(FP, source, mode="push")
    assert_names_everything(caught.value, "push")


async def test_a_failed_alias_after_the_copy_names_everything(
    wire: Wire, source: AsyncClient, target: AsyncClient
) -> None:
    pull_scenario(wire, public_image())
    wire.on("T", "GET", "/1.0/images/aliases/x", missing("Image alias not found"))
    wire.on("T", "POST", "/1.0/images/aliases", error_response(500, "alias broke"))
    deletes(wire, "T", FP)
    with pytest.raises(IncusError) as caught:
        await target.images.copy(FP, source, aliases=["x"])
    assert_names_everything(caught.value, "pull")


async def test_a_failed_alias_after_a_simplestreams_copy_names_the_image_server(
    wire: Wire, client: AsyncClient
) -> None:
    streams_scenario(wire)
    wire.on("U", "GET", "/1.0/images/aliases/x", missing("Image alias not found"))
    wire.on("U", "POST", "/1.0/images/aliases", error_response(500, "alias broke"))
    deletes(wire, "U", FP)
    with pytest.raises(IncusError) as caught:
        await client.images.copy("debian/12", SimpleStreams(STREAMS), aliases=["x"])
    assert STREAMS in str(caught.value)
    assert "'debian/12'" in str(caught.value)


async def test_a_failed_relay_from_a_unix_socket_source_names_its_socket(
    wire: Wire, client: AsyncClient, target: AsyncClient
) -> None:
    """A unix-socket source is named by its socket URL in a relay's failure."""
    relay_scenario(wire, public_image(), unified_export(), who="U")
    wire.on("T", "POST", "/1.0/images", error_response(500, "disk full"))
    with pytest.raises(IncusError) as caught:
        await target.images.copy(FP, client)
    assert OFFLINE_SERVER in str(caught.value)
    assert "relay mode" in str(caught.value)
