"""SimpleStreams against a real HTTPS simplestreams server (scripts/simplestreams_server.py,
on 127.0.0.1 with a certificate of its own): no daemon, real TLS, real files."""

from __future__ import annotations

import hashlib
import platform
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from simplestreams_server import SimpleStreamsServer

from incus_images import AsyncSimpleStreams, IncusConnectionError, IncusTimeoutError
from tests.helpers import everything_under

pytestmark = pytest.mark.anyio

META = b"metadata tarball " * 100
SQUASHFS = b"hsqs" + bytes(range(256)) * 4096
DISK = b"QFI\xfb" + b"\x01" * 300_000
UNIFIED = b"\x1f\x8b unified image " * 1000


@pytest.fixture(autouse=True)
def on_x86_64(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")


@pytest.fixture(scope="module")
def tree() -> Iterator[tuple[SimpleStreamsServer, dict[str, str]]]:
    with SimpleStreamsServer() as server:
        fingerprints = {
            "unified": server.add_image(UNIFIED, aliases=["tiny/1"], os="tiny", release="1"),
            "split": server.add_image(
                META, SQUASHFS, aliases=["debian/12"], os="debian", release="12"
            ),
            "vm": server.add_image(
                META, DISK, aliases=["debian/12"], os="debian", release="12",
                image_type="virtual-machine",
            ),
            "arm": server.add_image(
                META + b"arm", SQUASHFS, aliases=["debian/12"], os="debian", release="12",
                architecture="arm64",
            ),
        }  # fmt: skip
        yield server, fingerprints


@pytest.fixture
async def hub(
    tree: tuple[SimpleStreamsServer, dict[str, str]],
) -> AsyncIterator[AsyncSimpleStreams]:
    server, _ = tree
    async with AsyncSimpleStreams(server.url, certificate=server.certificate_pem) as streams:
        yield streams


async def test_a_real_tree_is_listed_resolved_and_exported(
    tree: tuple[SimpleStreamsServer, dict[str, str]], hub: AsyncSimpleStreams, tmp_path: Path
) -> None:
    server, fingerprints = tree
    before = len(server.requests)
    images = {image.fingerprint: image for image in await hub.images.list()}
    assert set(images) == set(fingerprints.values())
    split, vm, arm = (images[fingerprints[kind]] for kind in ("split", "vm", "arm"))
    assert (split.type, split.architecture, split.size) == (
        "container",
        "x86_64",
        len(META + SQUASHFS),
    )
    assert (vm.type, vm.size) == ("virtual-machine", len(META + DISK))
    assert (arm.architecture, [alias.name for alias in arm.aliases]) == (
        "aarch64",
        ["debian/12/arm64"],
    )
    assert [alias.name for alias in split.aliases] == ["debian/12", "debian/12/amd64"]

    assert (await hub.images.get_by_alias("debian/12")).fingerprint == split.fingerprint
    assert (
        await hub.images.get_by_alias("debian/12", type="virtual-machine")
    ).fingerprint == vm.fingerprint
    assert (
        await hub.images.get_by_alias("debian/12", architecture="aarch64")
    ).fingerprint == arm.fingerprint

    written = await hub.images.export(split.fingerprint, str(tmp_path / "split") + "/")
    assert [path.name for path in written] == ["incus.tar.xz", "rootfs.squashfs"]
    whole = hashlib.sha256(b"".join(path.read_bytes() for path in written)).hexdigest()
    assert whole == split.fingerprint
    assert await hub.images.export(vm.fingerprint, tmp_path / "vm") == [
        tmp_path / "vm", tmp_path / "vm.root"
    ]  # fmt: skip
    assert (tmp_path / "vm.root").read_bytes() == DISK
    unified = fingerprints["unified"]
    assert await hub.images.export(unified[:12], tmp_path / "tiny.tar.gz") == [
        tmp_path / "tiny.tar.gz"
    ]
    assert everything_under(tmp_path) == [
        "split", "split/incus.tar.xz", "split/rootfs.squashfs", "tiny.tar.gz", "vm", "vm.root"
    ]  # fmt: skip
    # The catalogue was read once: two files, then only image files.
    catalogue = [path for path in server.requests[before:] if path.startswith("/streams/")]
    assert catalogue == ["/streams/v1/index.json", "/streams/v1/images.json"]


async def test_the_pinned_certificate_is_the_only_one_accepted(
    tree: tuple[SimpleStreamsServer, dict[str, str]],
) -> None:
    server, _ = tree
    with SimpleStreamsServer() as other:
        async with AsyncSimpleStreams(server.url, certificate=other.certificate_pem) as wrong:
            with pytest.raises(IncusConnectionError, match=r"certificate|CERTIFICATE"):
                await wrong.images.list()
    async with AsyncSimpleStreams(server.url) as unpinned:
        with pytest.raises(IncusConnectionError):
            await unpinned.images.list()


async def test_a_catalogue_that_trickles_in_fails_within_the_timeout() -> None:
    with SimpleStreamsServer(bytes_per_second=64 * 1024) as server:
        for number in range(300):
            server.add_image(
                b"metadata %d" % number, aliases=[f"tiny/{number}"], os="tiny", release=str(number)
            )
        async with AsyncSimpleStreams(
            server.url, certificate=server.certificate_pem, timeout=1
        ) as hub:
            started = time.monotonic()
            with pytest.raises(IncusTimeoutError, match="timeout=1 s"):
                await hub.images.list()
            assert time.monotonic() - started < 2.5
