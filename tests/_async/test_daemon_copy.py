"""Copies between real daemons (pull, push, relay), from a local simplestreams server, secrets
and refreshes, in both flavours (issue 6).

Three throwaway daemons of their own (``copy_servers``): a source and a target, both serving
HTTPS on loopback and trusting the client certificate, and a third alone in a network
namespace, which cannot reach the others. Outcomes are read behind the SDK's back (plain httpx
on each daemon's socket); every test leaves all three daemons without images.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from simplestreams_server import SimpleStreamsServer, forget_daemon_catalogue
from tiny_image import split_image, unified_image

from incus_images import (
    AsyncClient,
    ChecksumMismatchError,
    ConflictError,
    ForbiddenError,
    Image,
    InvalidInputError,
    LeftBehind,
    NotFoundError,
    Operation,
    OperationError,
    SimpleStreams,
)
from tests.helpers import (
    UNIX_BASE,
    assert_left,
    sha256,
    stored_fingerprints,
    stored_image,
    unique,
)
from tests.hostile_copy_source import HostileCopySource

pytestmark = pytest.mark.anyio

MODES = ["pull", "push", "relay"]


# --------------------------------------------------------------------------------------------
# Fixtures.


def raw_client(daemon: Any) -> httpx.Client:
    return httpx.Client(
        transport=httpx.HTTPTransport(uds=daemon.socket_path), base_url=UNIX_BASE, timeout=60
    )


@pytest.fixture
def raws(copy_servers: Any) -> Iterator[dict[str, httpx.Client]]:
    """Plain httpx on each daemon; every image on them is deleted after the test."""
    clients = {
        name: raw_client(getattr(copy_servers, name)) for name in ("source", "target", "isolated")
    }
    try:
        yield clients
    finally:
        for client in clients.values():
            for fingerprint in stored_fingerprints(client):
                response = client.delete(f"/1.0/images/{fingerprint}")
                if response.status_code == 202:
                    client.get(f"{response.json()['operation']}/wait", params={"timeout": "30"})
            client.close()


def https_client(daemon: Any, certificates: Any, *, trusted: bool = True) -> AsyncClient:
    cert = (
        (certificates.client_cert, certificates.client_key)
        if trusted
        else (certificates.other_cert, certificates.other_key)
    )
    return AsyncClient(daemon.https_url, cert=cert, verify=daemon.server_certificate)


@pytest.fixture
async def source(copy_servers: Any, raws: Any) -> AsyncIterator[AsyncClient]:
    async with https_client(copy_servers.source, copy_servers.certificates) as client:
        yield client


@pytest.fixture
async def target(copy_servers: Any, raws: Any) -> AsyncIterator[AsyncClient]:
    async with https_client(copy_servers.target, copy_servers.certificates) as client:
        yield client


@pytest.fixture
async def local_source(copy_servers: Any, raws: Any) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(copy_servers.source.endpoint) as client:
        yield client


@pytest.fixture
async def local_target(copy_servers: Any, raws: Any) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(copy_servers.target.endpoint) as client:
        yield client


def clients_for(mode: str, source: AsyncClient, target: AsyncClient, **local: Any) -> Any:
    """Pull and push need HTTPS clients; relay runs over the unix sockets here."""
    if mode == "relay":
        return local["local_source"], local["local_target"]
    return source, target


async def publish_on(
    client: AsyncClient,
    *,
    public: bool = True,
    aliases: list[str] | None = None,
    split: bool = False,
    vm: bool = False,
    properties: dict[str, str] | None = None,
) -> Image:
    if split or vm:
        metadata, rootfs = split_image()
        image = await client.images.create(
            metadata,
            rootfs=rootfs,
            type="virtual-machine" if vm else None,
            public=public,
            aliases=aliases,
            properties=properties,
            wait=True,
        )
    else:
        image = await client.images.create(
            unified_image(), public=public, aliases=aliases, properties=properties, wait=True
        )
    assert isinstance(image, Image)
    return image


def running_tokens(raw: httpx.Client) -> list[dict[str, Any]]:
    operations = raw.get("/1.0/operations", params={"recursion": "1"}).json()["metadata"] or {}
    return [op for op in operations.get("running", []) if op["class"] == "token"]


# --------------------------------------------------------------------------------------------
# Every mode, every way of naming the image.


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("naming", ["alias", "fingerprint", "prefix"])
async def test_copy_in_every_mode_by_alias_fingerprint_or_prefix(
    source: AsyncClient,
    target: AsyncClient,
    local_source: AsyncClient,
    local_target: AsyncClient,
    raws: dict[str, httpx.Client],
    mode: str,
    naming: str,
) -> None:
    alias = unique("src/alias")
    original = await publish_on(source, aliases=[alias], properties={"edited": "on the source"})
    name = {"alias": alias, "fingerprint": original.fingerprint, "prefix": original.fingerprint[:8]}
    from_client, to_client = clients_for(
        mode, source, target, local_source=local_source, local_target=local_target
    )
    wanted = unique("copy")
    copied = await to_client.images.copy(name[naming], from_client, mode=mode, aliases=[wanted])
    assert isinstance(copied, Image)
    assert copied.fingerprint == original.fingerprint
    stored = stored_image(raws["target"], original.fingerprint)
    assert stored is not None
    # The copy has the source's properties (including those edited after the upload).
    assert stored["properties"] == original.properties
    assert stored["properties"]["edited"] == "on the source"
    assert [entry["name"] for entry in stored["aliases"]] == [wanted]
    assert copied.aliases[0].name == wanted
    assert stored["type"] == "container"
    # The source is untouched, and no secret or push token is left running anywhere.
    assert stored_image(raws["source"], original.fingerprint) is not None
    assert running_tokens(raws["source"]) == [] and running_tokens(raws["target"]) == []


@pytest.mark.parametrize(
    ("mode", "vm"),
    [(mode, vm) for mode in MODES for vm in (False, True) if (mode, vm) != ("push", True)],
)
async def test_split_and_vm_images_copy_whole_in_every_mode(
    source: AsyncClient,
    target: AsyncClient,
    local_source: AsyncClient,
    local_target: AsyncClient,
    raws: dict[str, httpx.Client],
    tmp_path: Path,
    mode: str,
    vm: bool,
) -> None:
    original = await publish_on(source, split=True, vm=vm)
    from_client, to_client = clients_for(
        mode, source, target, local_source=local_source, local_target=local_target
    )
    copied = await to_client.images.copy(original.fingerprint, from_client, mode=mode)
    assert isinstance(copied, Image)
    assert copied.fingerprint == original.fingerprint
    assert copied.type == ("virtual-machine" if vm else "container")
    assert copied.size == original.size
    # Exported from the target, both parts hash to the fingerprint.
    written = await to_client.images.export(copied.fingerprint, tmp_path / "copy")
    assert sha256(*(path.read_bytes() for path in written)) == original.fingerprint


async def test_a_vm_image_is_not_pushed(
    source: AsyncClient, target: AsyncClient, raws: dict[str, httpx.Client]
) -> None:
    """incusd pushes a VM image as a container image: refused before anything is sent."""
    original = await publish_on(source, split=True, vm=True)
    with pytest.raises(ConflictError, match="incusd pushes as a container image") as caught:
        await target.images.copy(original.fingerprint, source, mode="push")
    assert_left(caught.value, LeftBehind.NOTHING, "nothing was copied")
    assert stored_fingerprints(raws["target"]) == set()
    assert running_tokens(raws["target"]) == []


# --------------------------------------------------------------------------------------------
# Private images and secrets.


@pytest.mark.parametrize("mode", MODES)
async def test_a_private_image_is_copied_in_every_mode(
    source: AsyncClient,
    target: AsyncClient,
    local_source: AsyncClient,
    local_target: AsyncClient,
    raws: dict[str, httpx.Client],
    mode: str,
) -> None:
    original = await publish_on(source, public=False)
    from_client, to_client = clients_for(
        mode, source, target, local_source=local_source, local_target=local_target
    )
    copied = await to_client.images.copy(original.fingerprint, from_client, mode=mode)
    assert isinstance(copied, Image) and copied.fingerprint == original.fingerprint
    assert not copied.public
    # A pull's secret was used up: no download token stays open on the source.
    assert running_tokens(raws["source"]) == []


async def test_an_untrusted_client_reads_a_private_image_with_a_secret(
    copy_servers: Any, source: AsyncClient, tmp_path: Path
) -> None:
    original = await publish_on(source, public=False)
    secret = await source.images.create_secret(original.fingerprint[:12])
    async with AsyncClient(
        copy_servers.source.https_url, verify=copy_servers.source.server_certificate
    ) as untrusted:
        assert not (await untrusted.server_info()).trusted
        with pytest.raises(NotFoundError):
            await untrusted.images.get(original.fingerprint)
        image = await untrusted.images.get(original.fingerprint, secret=secret)
        assert image.fingerprint == original.fingerprint
        written = await untrusted.images.export(
            original.fingerprint, tmp_path / "private", secret=secret
        )
    assert sha256(written[0].read_bytes()) == original.fingerprint
    assert (await source.server_info()).trusted


async def test_a_public_only_source_cannot_copy_a_private_image(
    copy_servers: Any, source: AsyncClient, target: AsyncClient, raws: dict[str, httpx.Client]
) -> None:
    original = await publish_on(source, public=False)
    async with AsyncClient(
        copy_servers.source.https_url, verify=copy_servers.source.server_certificate
    ) as untrusted:
        with pytest.raises(NotFoundError, match="does not trust this client"):
            await target.images.copy(original.fingerprint, untrusted)
    assert stored_fingerprints(raws["target"]) == set()


# --------------------------------------------------------------------------------------------
# Aliases, settings, an image already there.


@pytest.mark.parametrize("mode", MODES)
async def test_copy_aliases_brings_the_source_aliases_with_their_descriptions(
    source: AsyncClient,
    target: AsyncClient,
    local_source: AsyncClient,
    local_target: AsyncClient,
    mode: str,
) -> None:
    first, second = unique("src/first"), unique("src/second")
    original = await publish_on(source, aliases=[first])
    await source.images.create_alias(second, original.fingerprint, "the second one")
    from_client, to_client = clients_for(
        mode, source, target, local_source=local_source, local_target=local_target
    )
    mine = unique("mine")
    copied = await to_client.images.copy(
        first, from_client, mode=mode, aliases=[mine], copy_aliases=True
    )
    assert isinstance(copied, Image)
    assert {alias.name for alias in copied.aliases} == {mine, first, second}
    assert (await to_client.images.get_alias(second)).description == "the second one"


async def test_copy_aliases_leaves_out_source_names_a_new_alias_may_not_have(
    source: AsyncClient, target: AsyncClient, raws: dict[str, httpx.Client]
) -> None:
    """incusd takes alias names with control characters; a copy does not pass them on."""
    good, bad = unique("src/good"), unique("src/esc\x1b[2J")
    original = await publish_on(source, aliases=[good])
    made = raws["source"].post(
        "/1.0/images/aliases", json={"name": bad, "target": original.fingerprint}
    )
    assert made.status_code in (200, 201), made.text
    copied = await target.images.copy(good, source, copy_aliases=True)
    assert isinstance(copied, Image)
    assert {alias.name for alias in copied.aliases} == {good}
    assert bad not in {alias.name for alias in await target.images.list_aliases()}


async def test_a_taken_alias_is_refused_before_anything_is_copied(
    source: AsyncClient, target: AsyncClient, raws: dict[str, httpx.Client]
) -> None:
    original = await publish_on(source)
    taken = unique("taken")
    other = await publish_on(target)
    await target.images.create_alias(taken, other.fingerprint)
    with pytest.raises(ConflictError, match=taken):
        await target.images.copy(original.fingerprint, source, aliases=["free-" + taken, taken])
    assert stored_fingerprints(raws["target"]) == {other.fingerprint}
    assert raws["target"].get(f"/1.0/images/aliases/free-{taken}").status_code == 404


async def test_an_image_the_target_has_is_returned_with_the_new_aliases(
    source: AsyncClient, target: AsyncClient, raws: dict[str, httpx.Client]
) -> None:
    original = await publish_on(source)
    first = await target.images.copy(original.fingerprint, source)
    assert isinstance(first, Image)
    uploaded_at = stored_image(raws["target"], original.fingerprint)["uploaded_at"]  # type: ignore[index]
    late = unique("late")
    again = await target.images.copy(original.fingerprint, source, aliases=[late], wait=False)
    # wait=False: an Operation, already finished (nothing ran), with the aliases added.
    assert isinstance(again, Operation)
    assert again.succeeded
    assert again.metadata is not None
    assert again.metadata["fingerprint"] == original.fingerprint
    assert await target.operations.wait(again) is again
    held = await target.images.copy(original.fingerprint, source, aliases=[late + "-2"])
    assert [alias.name for alias in held.aliases] == [late, late + "-2"]
    # Not copied again: the stored image is the same record.
    assert stored_image(raws["target"], original.fingerprint)["uploaded_at"] == uploaded_at  # type: ignore[index]


@pytest.mark.parametrize("mode", MODES)
async def test_public_and_profiles_are_set_on_the_copy(
    source: AsyncClient,
    target: AsyncClient,
    local_source: AsyncClient,
    local_target: AsyncClient,
    raws: dict[str, httpx.Client],
    mode: str,
) -> None:
    original = await publish_on(source, public=False)
    from_client, to_client = clients_for(
        mode, source, target, local_source=local_source, local_target=local_target
    )
    copied = await to_client.images.copy(
        original.fingerprint, from_client, mode=mode, public=True, profiles=[]
    )
    assert isinstance(copied, Image)
    stored = stored_image(raws["target"], original.fingerprint)
    assert stored is not None
    assert stored["public"] is True
    assert stored["profiles"] == []


async def test_auto_update_records_the_alias_and_refresh_follows_it(
    source: AsyncClient, target: AsyncClient, raws: dict[str, httpx.Client]
) -> None:
    alias = unique("src/moving")
    old = await publish_on(source, aliases=[alias])
    local_alias = unique("tgt/current")
    copied = await target.images.copy(alias, source, auto_update=True, aliases=[local_alias])
    assert isinstance(copied, Image)
    assert copied.auto_update
    assert copied.update_source is not None
    assert copied.update_source.alias == alias
    assert copied.update_source.server == source.server

    # Nothing new yet: the refresh finds nothing.
    current = await target.images.refresh(old.fingerprint, wait=True)
    assert current.metadata == {"refreshed": False}

    new = await publish_on(source)
    await source.images.update_alias(alias, new.fingerprint)
    started = await target.images.refresh(old.fingerprint[:12])
    assert isinstance(started, Operation) and not started.done
    finished = await target.operations.wait(started)
    assert finished.metadata == {"refreshed": True}
    # The new image replaced the old one, and the local alias moved with it.
    assert stored_fingerprints(raws["target"]) == {new.fingerprint}
    assert (await target.images.get_alias(local_alias)).target == new.fingerprint


async def test_refreshing_an_image_without_a_source_fails(target: AsyncClient) -> None:
    uploaded = await publish_on(target)
    with pytest.raises(OperationError, match="source"):
        await target.images.refresh(uploaded.fingerprint, wait=True)


@pytest.mark.parametrize("mode", ["push", "relay"])
async def test_auto_update_needs_a_pull(
    source: AsyncClient, target: AsyncClient, raws: dict[str, httpx.Client], mode: str
) -> None:
    original = await publish_on(source)
    with pytest.raises(InvalidInputError, match="auto_update=True needs mode='pull'"):
        await target.images.copy(original.fingerprint, source, mode=mode, auto_update=True)
    assert stored_fingerprints(raws["target"]) == set()


# --------------------------------------------------------------------------------------------
# Modes chosen, progress.


async def test_a_unix_socket_source_is_relayed(
    local_source: AsyncClient, target: AsyncClient, raws: dict[str, httpx.Client]
) -> None:
    """mode=None: the target cannot reach a unix socket, so this client relays."""
    original = await publish_on(local_source)
    copied = await target.images.copy(original.fingerprint, local_source)
    assert isinstance(copied, Image) and copied.fingerprint == original.fingerprint
    with pytest.raises(InvalidInputError, match="mode='relay'"):
        await target.images.copy(original.fingerprint, local_source, mode="pull")


async def test_wait_false_returns_the_operation_that_stores_the_image(
    source: AsyncClient, target: AsyncClient
) -> None:
    original = await publish_on(source)
    started = await target.images.copy(original.fingerprint, source, wait=False)
    assert isinstance(started, Operation)
    finished = await target.operations.wait(started)
    assert finished.metadata is not None
    assert finished.metadata["fingerprint"] == original.fingerprint


@pytest.mark.parametrize("mode", MODES)
async def test_progress_runs_from_zero_to_the_image_size(
    source: AsyncClient,
    target: AsyncClient,
    local_source: AsyncClient,
    local_target: AsyncClient,
    mode: str,
) -> None:
    original = await publish_on(source, split=True)
    from_client, to_client = clients_for(
        mode, source, target, local_source=local_source, local_target=local_target
    )
    calls: list[tuple[int, int | None]] = []
    await to_client.images.copy(
        original.fingerprint, from_client, mode=mode, progress=lambda *call: calls.append(call)
    )
    assert calls[0] == (0, original.size)
    assert calls[-1] == (original.size, original.size)
    done = [count for count, _ in calls]
    assert done == sorted(done)


# --------------------------------------------------------------------------------------------
# Failures: clear errors, nothing left on the target.


async def test_a_source_the_target_cannot_reach(
    copy_servers: Any, source: AsyncClient, raws: dict[str, httpx.Client]
) -> None:
    """The isolated daemon lives in a network namespace of its own: the source's loopback
    address is not reachable from there."""
    original = await publish_on(source)
    async with AsyncClient(copy_servers.isolated.endpoint) as isolated:
        with pytest.raises(OperationError) as caught:
            await isolated.images.copy(original.fingerprint, source, mode="pull")
    message = str(caught.value)
    assert source.server in message
    assert copy_servers.isolated.endpoint in message
    assert original.fingerprint in message
    assert "pull mode" in message
    assert stored_fingerprints(raws["isolated"]) == set()
    assert running_tokens(raws["source"]) == []


async def test_an_image_missing_on_the_source(
    source: AsyncClient, target: AsyncClient, raws: dict[str, httpx.Client]
) -> None:
    with pytest.raises(NotFoundError) as caught:
        await target.images.copy(unique("no-such-alias"), source)
    assert source.server in str(caught.value)
    with pytest.raises(NotFoundError):
        await target.images.copy("0" * 64, source)
    assert stored_fingerprints(raws["target"]) == set()


async def test_a_lying_source_never_makes_the_target_delete_an_image_it_held(
    local_target: AsyncClient, raws: dict[str, httpx.Client], tmp_path: Path
) -> None:
    """The source shows the SDK image F1 and the target daemon, for the same URL, F2: an image
    the target already held. The daemon reports F2 stored; the copy fails, and F2 stays."""
    held = await publish_on(local_target)
    held_json = raws["target"].get(f"/1.0/images/{held.fingerprint}").json()["metadata"]
    asked = sha256(b"the image the SDK is shown")
    shown = {**held_json, "fingerprint": asked, "aliases": []}
    with HostileCopySource(tmp_path, {asked: shown}, {asked: held_json}) as liar:
        async with AsyncClient(liar.url, verify=False) as source:
            with pytest.raises(ChecksumMismatchError) as caught:
                await local_target.images.copy(asked, source, mode="pull")
        assert ("daemon", f"GET /1.0/images/{asked}") in liar.requests
    assert_left(
        caught.value,
        LeftBehind.KEPT,
        f"image {held.fingerprint} was on the server before and stays",
    )
    assert stored_fingerprints(raws["target"]) == {held.fingerprint}


async def test_a_target_that_does_not_trust_the_client(
    copy_servers: Any, source: AsyncClient, raws: dict[str, httpx.Client]
) -> None:
    original = await publish_on(source)
    async with https_client(
        copy_servers.target, copy_servers.certificates, trusted=False
    ) as untrusted_target:
        for mode in MODES:
            if mode == "relay":
                continue  # needs a unix-socket or trusted target: the same refusal below
            # A trust condition, never the caller's argument (issue 15).
            with pytest.raises(ForbiddenError):
                await untrusted_target.images.copy(original.fingerprint, source, mode=mode)
    assert stored_fingerprints(raws["target"]) == set()
    assert running_tokens(raws["source"]) == [] and running_tokens(raws["target"]) == []


# --------------------------------------------------------------------------------------------
# A simplestreams image server.


@pytest.fixture
def image_server() -> Iterator[SimpleStreamsServer]:
    with SimpleStreamsServer() as server:
        yield server


@pytest.mark.parametrize("naming", ["alias", "fingerprint"])
async def test_copy_from_a_simplestreams_server(
    local_target: AsyncClient,
    image_server: SimpleStreamsServer,
    raws: dict[str, httpx.Client],
    naming: str,
) -> None:
    metadata, rootfs = split_image()
    alias = unique("tiny")
    fingerprint = image_server.add_image(metadata, rootfs, aliases=[alias], os="tiny", release="1")
    server = SimpleStreams(image_server.url, certificate=image_server.certificate_pem)
    mine = unique("local")
    copied = await local_target.images.copy(
        alias if naming == "alias" else fingerprint, server, aliases=[mine], auto_update=True
    )
    assert isinstance(copied, Image)
    assert copied.fingerprint == fingerprint
    assert [entry.name for entry in copied.aliases] == [mine]
    if naming == "alias":
        # Recorded, so that refreshes follow the alias (a fingerprint names one image only).
        assert copied.update_source is not None
        assert copied.update_source.protocol == "simplestreams"
        assert copied.update_source.alias == alias
    assert stored_fingerprints(raws["target"]) == {fingerprint}
    assert any(path.endswith(".tar.xz") or "incus" in path for path in image_server.requests)


async def test_a_simplestreams_refresh_follows_a_new_version(
    copy_servers: Any,
    local_target: AsyncClient,
    image_server: SimpleStreamsServer,
    raws: dict[str, httpx.Client],
) -> None:
    alias = unique("tiny")
    old = image_server.add_image(*split_image(), aliases=[alias], os="tiny", release="2")
    server = SimpleStreams(image_server.url, certificate=image_server.certificate_pem)
    await local_target.images.copy(alias, server, auto_update=True)
    new = image_server.add_image(*split_image(), aliases=[alias], os="tiny", release="2")
    # incusd caches a catalogue for an hour; the test makes it read the new one now.
    forget_daemon_catalogue(copy_servers.target.directory, image_server.url)
    finished = await local_target.images.refresh(old, wait=True)
    assert finished.metadata == {"refreshed": True}
    assert stored_fingerprints(raws["target"]) == {new}


async def test_a_wrong_certificate_for_the_image_server_is_refused(
    certificates: Any,
    local_target: AsyncClient,
    image_server: SimpleStreamsServer,
    raws: dict[str, httpx.Client],
) -> None:
    alias = unique("tiny")
    image_server.add_image(*split_image(), aliases=[alias], os="tiny", release="3")
    wrong = SimpleStreams(image_server.url, certificate=Path(certificates.other_cert).read_text())
    taken_before = stored_fingerprints(raws["target"])
    with pytest.raises(OperationError) as caught:
        await local_target.images.copy(alias, wrong, aliases=[unique("never")])
    assert image_server.url in str(caught.value)
    assert "certificate" in str(caught.value)
    assert stored_fingerprints(raws["target"]) == taken_before


# --------------------------------------------------------------------------------------------
# Server information.


async def test_server_info_says_whether_the_client_is_trusted(
    copy_servers: Any, source: AsyncClient
) -> None:
    info = await source.server_info()
    assert info.trusted
    assert info.environment is not None
    assert info.environment.certificate.startswith("-----BEGIN CERTIFICATE-----")
    assert "images_push_relay" in info.api_extensions
    async with https_client(
        copy_servers.source, copy_servers.certificates, trusted=False
    ) as stranger:
        assert not (await stranger.server_info()).trusted


async def test_a_private_image_looks_missing_and_the_error_says_why(
    copy_servers: Any, source: AsyncClient, tmp_path: Path
) -> None:
    original = await publish_on(source, public=False)
    async with https_client(
        copy_servers.source, copy_servers.certificates, trusted=False
    ) as stranger:
        for call in (
            lambda: stranger.images.get(original.fingerprint),
            lambda: stranger.images.export(original.fingerprint, tmp_path),
        ):
            with pytest.raises(NotFoundError, match="does not trust this client"):
                await call()
    # A trusted client's 404 says nothing of the kind.
    with pytest.raises(NotFoundError) as caught:
        await source.images.get("0" * 64)
    assert "trust" not in str(caught.value)
