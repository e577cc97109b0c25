"""A simplestreams server read through the SDK (AsyncSimpleStreams / SimpleStreams), its
answers scripted with respx: the catalogue read once and bounded, hostile catalogues refused,
exports written as a server's are, and either flavour's object a source of either client's
copy."""

from __future__ import annotations

import platform
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

import incus_images
from incus_images import (
    AsyncClient,
    AsyncSimpleStreams,
    ChecksumMismatchError,
    IncusConnectionError,
    IncusError,
    InvalidInputError,
    NotFoundError,
    TransferError,
    UnexpectedResponseError,
)
from tests.catalogue_data import (
    dumps,
    index_file,
    item,
    merged,
    product,
    products_file,
    sha,
    split_items,
    unified_items,
)
from tests.helpers import accepted_response, everything_under, operation

pytestmark = pytest.mark.anyio

HOST = "https://images.example"
URL = HOST + "/streams-root"
MIB = 1024 * 1024
META, ROOT, DISK, UNIFIED = b"metadata tarball", b"hsqs squashfs rootfs", b"qcow2 disk", b"one"
CONTAINER, VM = sha(META, ROOT), sha(META, DISK)
ARM = sha(META, b"hsqs arm rootfs")


def catalogue_products() -> dict[str, Any]:
    version = merged(
        split_items("images/debian/12/amd64/20240202", META, ROOT),
        split_items("images/debian/12/amd64/20240202", META, DISK, "disk-kvm.img"),
    )
    return products_file(
        {
            "debian:12:amd64:default": product("debian/12", {"20240202_05:24": version}),
            "debian:12:arm64:default": product(
                "debian/12",
                {"20240202_05:24": split_items("images/arm", META, b"hsqs arm rootfs")},
                arch="arm64",
            ),
            "tiny:1:amd64:default": product(
                "tiny/1", {"20240101": unified_items("images/tiny", UNIFIED)}, os="tiny"
            ),
        }
    )


FILES = {
    "images/debian/12/amd64/20240202/incus.tar.xz": META,
    "images/debian/12/amd64/20240202/rootfs.squashfs": ROOT,
    "images/debian/12/amd64/20240202/disk.qcow2": DISK,
    "images/tiny/image.tar.gz": UNIFIED,
}


@pytest.fixture(autouse=True)
def on_x86_64(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")


@pytest.fixture
def server() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=URL, assert_all_called=False) as mock:
        mock.get("/streams/v1/index.json", name="index").mock(
            return_value=httpx.Response(200, content=dumps(index_file()))
        )
        mock.get("/streams/v1/images.json", name="products").mock(
            return_value=httpx.Response(200, content=dumps(catalogue_products()))
        )
        for path, data in FILES.items():
            mock.get("/" + path).mock(return_value=httpx.Response(200, content=data))
        yield mock


@pytest.fixture
async def hub() -> AsyncIterator[AsyncSimpleStreams]:
    async with AsyncSimpleStreams(URL, timeout=10) as streams:
        yield streams


def paths(mock: respx.MockRouter) -> list[str]:
    return [call.request.url.path for call in mock.calls]


def serve(mock: respx.MockRouter, name: str, response: httpx.Response) -> None:
    mock.routes[name].mock(return_value=response)


# --------------------------------------------------------------------------------------------
# Browsing.


async def test_the_catalogue_is_read_once_and_again_on_refresh(
    server: respx.MockRouter, hub: AsyncSimpleStreams
) -> None:
    images = await hub.images.list()
    assert [image.fingerprint for image in images] == [CONTAINER, VM, ARM, sha(UNIFIED)]
    assert {image.architecture for image in images} == {"x86_64", "aarch64"}
    assert (await hub.images.get(VM[:10])).type == "virtual-machine"
    assert (await hub.images.get_by_alias("debian/12")).fingerprint == CONTAINER
    assert len(await hub.images.list_aliases()) == 7
    assert paths(server) == [
        "/streams-root/streams/v1/index.json",
        "/streams-root/streams/v1/images.json",
    ]
    request = server.calls[0].request
    assert request.headers["accept-encoding"] == "identity"
    await hub.refresh()
    assert len(server.calls) == 4


async def test_an_old_catalogue_is_read_again(
    server: respx.MockRouter, hub: AsyncSimpleStreams, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = sys.modules[type(hub).refresh.__module__]
    await hub.images.list()
    await hub.images.list()
    assert len(server.calls) == 2
    monkeypatch.setattr(module, "CATALOGUE_MAX_AGE_SECONDS", 0.0)
    await hub.images.list()
    assert len(server.calls) == 4
    # Out of reach: the catalogue read last stays in use, and refresh() says why.
    server.routes["index"].mock(side_effect=httpx.ConnectError("refused"))
    assert len(await hub.images.list()) == 4
    with pytest.raises(IncusConnectionError, match="refused"):
        await hub.refresh()


async def test_aliases_are_listed_as_the_cli_lists_them(
    server: respx.MockRouter, hub: AsyncSimpleStreams
) -> None:
    images = {image.fingerprint: image for image in await hub.images.list()}
    assert [alias.name for alias in images[CONTAINER].aliases] == ["debian/12", "debian/12/amd64"]
    assert [alias.name for alias in images[ARM].aliases] == ["debian/12/arm64"]
    listed = await hub.images.list_aliases()
    assert [(alias.name, alias.type, alias.target) for alias in listed] == [
        ("debian/12", "container", CONTAINER),
        ("debian/12", "virtual-machine", VM),
        ("debian/12/amd64", "container", CONTAINER),
        ("debian/12/amd64", "virtual-machine", VM),
        ("debian/12/arm64", "container", ARM),
        ("tiny/1", "container", sha(UNIFIED)),
        ("tiny/1/amd64", "container", sha(UNIFIED)),
    ]


async def test_get_by_alias_resolves_type_and_architecture(
    server: respx.MockRouter, hub: AsyncSimpleStreams
) -> None:
    assert (await hub.images.get_by_alias("debian/12", type="virtual-machine")).fingerprint == VM
    assert (await hub.images.get_by_alias("debian/12", architecture="arm64")).fingerprint == ARM
    assert (await hub.images.get_by_alias("debian/12", architecture="aarch64")).fingerprint == ARM
    with pytest.raises(NotFoundError, match="virtual-machine images for x86_64"):
        await hub.images.get_by_alias("debian/12", type="virtual-machine", architecture="aarch64")
    with pytest.raises(InvalidInputError, match="not one Incus knows"):
        await hub.images.get_by_alias("debian/12", architecture="sparc")
    with pytest.raises(InvalidInputError, match="type"):
        await hub.images.get_by_alias("debian/12", type="vm")


async def test_bad_arguments_are_refused_before_anything_is_sent(
    server: respx.MockRouter, hub: AsyncSimpleStreams, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError):
        await hub.images.get("not hex")
    with pytest.raises(InvalidInputError):
        await hub.images.get_by_alias("")
    with pytest.raises(InvalidInputError):
        await hub.images.export(CONTAINER, tmp_path / "missing" / "x")
    with pytest.raises(InvalidInputError):
        AsyncSimpleStreams(URL, timeout=-1)
    with pytest.raises(InvalidInputError, match="update_source"):
        await hub.images.list(filter="update_source.alias eq debian")
    assert server.calls == []  # type: ignore[comparison-overlap]


# --------------------------------------------------------------------------------------------
# A hostile or broken catalogue.


async def test_a_product_of_wrong_types_fails_the_listing_naming_it(
    server: respx.MockRouter, hub: AsyncSimpleStreams
) -> None:
    products = catalogue_products()
    products["products"]["tiny:1:amd64:default"]["versions"]["20240101"]["items"][
        "incus_combined.tar.gz"
    ]["size"] = "3"
    serve(server, "products", httpx.Response(200, content=dumps(products)))
    with pytest.raises(UnexpectedResponseError) as caught:
        await hub.images.list()
    message = str(caught.value)
    assert "product 'tiny:1:amd64:default', version '20240101'" in message
    assert "'size' is a JSON string, not an integer" in message
    assert URL in message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html>not json</html>", "not JSON"),
        (b"[]", "the index is a JSON array"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    ],
)
async def test_an_index_that_is_not_one_is_refused(
    server: respx.MockRouter, hub: AsyncSimpleStreams, body: bytes, message: str
) -> None:
    serve(server, "index", httpx.Response(200, content=body))
    with pytest.raises(UnexpectedResponseError, match=message):
        await hub.images.list()


@pytest.mark.parametrize("name", ["index", "products"])
async def test_an_endless_catalogue_is_cut_off(
    server: respx.MockRouter, hub: AsyncSimpleStreams, name: str
) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < 1024 * MIB:
            sent += MIB
            yield b" " * MIB

    serve(server, name, httpx.Response(200, content=endless()))
    with pytest.raises(UnexpectedResponseError, match="larger than"):
        await hub.images.list()
    assert sent <= (16 if name == "index" else 128) * MIB + MIB


async def test_an_error_or_a_redirect_is_no_catalogue(
    server: respx.MockRouter, hub: AsyncSimpleStreams
) -> None:
    serve(server, "index", httpx.Response(404, text="404 page not found"))
    with pytest.raises(NotFoundError, match="404 page not found"):
        await hub.images.list()
    serve(server, "index", httpx.Response(302, headers={"Location": "http://evil.example/"}))
    with pytest.raises(UnexpectedResponseError, match="HTTP 302"):
        await hub.images.list()
    assert all(call.request.url.host == "images.example" for call in server.calls)


@pytest.mark.parametrize(
    "path", ["../../etc/passwd", "https://evil.example/images.json", "/etc/images.json"]
)
async def test_an_index_naming_a_file_outside_the_tree_is_refused(
    server: respx.MockRouter, hub: AsyncSimpleStreams, path: str
) -> None:
    serve(server, "index", httpx.Response(200, content=dumps(index_file(path=path))))
    with pytest.raises(UnexpectedResponseError, match="path"):
        await hub.images.list()
    assert paths(server) == ["/streams-root/streams/v1/index.json"]


# --------------------------------------------------------------------------------------------
# Exports.


async def test_a_split_image_is_exported_into_a_directory_with_progress(
    server: respx.MockRouter, hub: AsyncSimpleStreams, tmp_path: Path
) -> None:
    reports: list[tuple[int, int | None]] = []
    written = await hub.images.export(
        CONTAINER[:12], str(tmp_path / "out") + "/", progress=lambda *r: reports.append(r)
    )
    assert [path.name for path in written] == ["incus.tar.xz", "rootfs.squashfs"]
    assert [path.read_bytes() for path in written] == [META, ROOT]
    assert reports[0] == (0, len(META + ROOT))
    assert reports[-1] == (len(META + ROOT), len(META + ROOT))
    assert paths(server)[2:] == [
        "/streams-root/images/debian/12/amd64/20240202/incus.tar.xz",
        "/streams-root/images/debian/12/amd64/20240202/rootfs.squashfs",
    ]


async def test_unified_and_vm_images_are_exported_as_a_server_exports_them(
    server: respx.MockRouter, hub: AsyncSimpleStreams, tmp_path: Path
) -> None:
    assert await hub.images.export(sha(UNIFIED), tmp_path / "tiny") == [tmp_path / "tiny"]
    assert (tmp_path / "tiny").read_bytes() == UNIFIED
    assert await hub.images.export(VM, tmp_path / "vm") == [tmp_path / "vm", tmp_path / "vm.root"]
    assert (tmp_path / "vm.root").read_bytes() == DISK
    assert everything_under(tmp_path) == ["tiny", "vm", "vm.root"]


def with_items(image_items: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return products_file(
        {"debian:12:amd64:default": product("debian/12", {"20240202": image_items})}
    )


def hostile(root: dict[str, Any]) -> dict[str, Any]:
    meta = item("incus.tar.xz", "images/debian/12/amd64/20240202/incus.tar.xz", META)
    meta["combined_squashfs_sha256"] = CONTAINER
    return with_items({"incus.tar.xz": meta, "squashfs": root})


@pytest.mark.parametrize(
    "path",
    [
        "../../../etc/shadow",
        "images/../../x",
        "/etc/shadow",
        "http://images.example/streams-root/images/rootfs.squashfs",
        "https://evil.example/rootfs.squashfs",
    ],
)
async def test_an_export_of_a_path_outside_the_tree_requests_and_writes_nothing(
    server: respx.MockRouter, hub: AsyncSimpleStreams, tmp_path: Path, path: str
) -> None:
    root = {"ftype": "squashfs", "path": path, "sha256": sha(ROOT), "size": len(ROOT)}
    serve(server, "products", httpx.Response(200, content=dumps(hostile(root))))
    with pytest.raises(UnexpectedResponseError, match="path"):
        await hub.images.export(CONTAINER, tmp_path / "out")
    assert len(server.calls) == 2
    assert everything_under(tmp_path) == []


@pytest.mark.parametrize(
    ("root", "error", "message"),
    [
        ({"size": len(ROOT) - 1}, TransferError, "more than the catalogue's 19 bytes"),
        ({"size": len(ROOT) + 1}, TransferError, "ended after 20 of the catalogue's 21"),
        ({"sha256": sha(b"other")}, ChecksumMismatchError, "not to the catalogue's"),
    ],
)
async def test_an_export_whose_catalogue_lies_leaves_nothing(
    server: respx.MockRouter,
    hub: AsyncSimpleStreams,
    tmp_path: Path,
    root: dict[str, Any],
    error: type[IncusError],
    message: str,
) -> None:
    entry = item("squashfs", "images/debian/12/amd64/20240202/rootfs.squashfs", ROOT, **root)
    serve(server, "products", httpx.Response(200, content=dumps(hostile(entry))))
    with pytest.raises(error, match=message) as caught:
        await hub.images.export(CONTAINER, str(tmp_path / "made") + "/")
    assert caught.value.fingerprint == CONTAINER
    assert everything_under(tmp_path) == []


async def test_a_fingerprint_the_files_do_not_hash_to_leaves_nothing(
    server: respx.MockRouter, hub: AsyncSimpleStreams, tmp_path: Path
) -> None:
    wrong = "f" * 64
    meta = item("incus.tar.xz", "images/debian/12/amd64/20240202/incus.tar.xz", META)
    meta["combined_squashfs_sha256"] = wrong
    root = item("squashfs", "images/debian/12/amd64/20240202/rootfs.squashfs", ROOT)
    serve(
        server,
        "products",
        httpx.Response(200, content=dumps(with_items({"incus.tar.xz": meta, "squashfs": root}))),
    )
    with pytest.raises(ChecksumMismatchError, match="fingerprint"):
        await hub.images.export(wrong, tmp_path / "out")
    assert everything_under(tmp_path) == []


async def test_a_file_that_never_ends_is_stopped_at_its_size(
    server: respx.MockRouter, hub: AsyncSimpleStreams, tmp_path: Path
) -> None:
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < 256 * MIB:
            sent += 64 * 1024
            yield b"\0" * (64 * 1024)

    server.get("/images/tiny/image.tar.gz").mock(
        return_value=httpx.Response(200, content=endless())
    )
    with pytest.raises(TransferError, match="more than the catalogue's 3 bytes"):
        await hub.images.export(sha(UNIFIED), tmp_path / "out")
    assert sent <= 2 * 64 * 1024
    assert everything_under(tmp_path) == []


# --------------------------------------------------------------------------------------------
# A source of copies, whichever flavour.


@pytest.mark.parametrize("kind", [AsyncSimpleStreams, incus_images.SimpleStreams])
async def test_either_flavour_is_a_source_of_a_copy(
    router: respx.MockRouter, client: AsyncClient, kind: type[Any]
) -> None:
    post = router.post("/1.0/images").mock(
        return_value=accepted_response(operation("0b2ad4b7-2a3e-4e1c-9d4a-3f1e1b1a2c3d"))
    )
    await client.images.copy("debian/12", kind(URL + "/"), wait=False)
    source = httpx.Response(200, content=post.calls[0].request.content).json()["source"]
    assert (source["server"], source["protocol"], source["alias"]) == (
        URL,
        "simplestreams",
        "debian/12",
    )
