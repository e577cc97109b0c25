"""The catalogue reader against a real simplestreams tree (made by incus-simplestreams, served
over HTTPS on 127.0.0.1: tests/streams_fixtures.py) and its two references: the incus CLI's
listing of the same tree, and what incusd does with it (the images it copies, and what its
filter selects among them)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from incus_images import AsyncClient, AsyncSimpleStreams, Image
from tests.streams_fixtures import StreamsServer
from tests.streams_tree import cli_image_list

pytestmark = pytest.mark.anyio

#: Filters whose selection among the tree's images must be the same on incusd (over the
#: copies) and in the catalogue: on the fields a pull copy keeps as the catalogue has them.
FILTERS = [
    "type eq container",
    "type eq virtual-machine",
    "architecture eq aarch64",
    "architecture ne x86_64 or type eq virtual-machine",
    "properties.os eq tiny and type eq container",
    "properties.release eq split",
    "properties.release eq S.*",
    "properties.type eq squashfs",
    "not properties.type eq squashfs",
    "properties.variant eq default and architecture eq x86_64",
    "properties.serial eq 2023111[45].*",
    "properties.description eq .*arm64.*",
    'properties.description eq "^tiny u"',
    "properties.missing eq ''",
]


@pytest.fixture
async def hub(streams_server: StreamsServer) -> AsyncIterator[AsyncSimpleStreams]:
    async with AsyncSimpleStreams(
        streams_server.url, certificate=streams_server.certificate
    ) as server:
        yield server


def _shown(image: Image) -> dict[str, Any]:
    """An image as the CLI's JSON listing has it (the fields both have)."""
    return {
        "fingerprint": image.fingerprint,
        "type": image.type,
        "architecture": image.architecture,
        "size": image.size,
        "aliases": [alias.name for alias in image.aliases] or None,
        "properties": dict(image.properties),
    }


async def test_list_is_what_the_incus_cli_lists(
    hub: AsyncSimpleStreams, streams_server: StreamsServer
) -> None:
    cli = cli_image_list(streams_server.url, streams_server.certificate).images
    expected = [
        {
            "fingerprint": listed["fingerprint"],
            "type": listed["type"],
            "architecture": listed["architecture"],
            "size": listed["size"],
            "aliases": None
            if listed["aliases"] is None
            else [alias["name"] for alias in listed["aliases"]] or None,
            "properties": listed["properties"],
        }
        for listed in cli
    ]
    # The same images, fields and aliases, in the CLI's order.
    assert [_shown(image) for image in await hub.images.list()] == expected
    assert len(expected) == len(streams_server.tree.images)


async def test_a_filter_selects_the_same_images_here_and_on_incusd(
    daemon_client: AsyncClient,
    hub: AsyncSimpleStreams,
    streams_server: StreamsServer,
    cleanup: list[str],
) -> None:
    tree = {image.fingerprint for image in streams_server.tree.images}
    for image in streams_server.tree.images:
        copied = await daemon_client.images.copy(image.fingerprint, hub)
        assert isinstance(copied, Image)
        cleanup.append(copied.fingerprint)
    differing = []
    for expression in FILTERS:
        on_server = {i.fingerprint for i in await daemon_client.images.list(filter=expression)}
        here = {i.fingerprint for i in await hub.images.list(filter=expression)}
        if on_server & tree != here:
            differing.append((expression, sorted(on_server & tree), sorted(here)))
    assert differing == []
    # The filters really tell the images apart (none selects all or none of them).
    sizes = [len(await hub.images.list(filter=expression)) for expression in FILTERS[:-1]]
    assert all(0 < size < len(tree) for size in sizes), sizes


@pytest.mark.parametrize("key", ["unified", "split", "vm", "split-arm64"])
async def test_export_writes_the_files_of_the_image_verified(
    hub: AsyncSimpleStreams, streams_server: StreamsServer, tmp_path: Path, key: str
) -> None:
    image = streams_server.tree.image(key)
    written = await hub.images.export(image.fingerprint, tmp_path / "out")
    assert [path.stat().st_size for path in written] == [file.size for file in image.files]
    whole = hashlib.sha256()
    for path, file in zip(written, image.files, strict=True):
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == file.sha256
        whole.update(data)
    assert whole.hexdigest() == image.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)


async def test_an_alias_resolves_by_type_and_architecture(
    hub: AsyncSimpleStreams, streams_server: StreamsServer
) -> None:
    tree = streams_server.tree
    found = {
        (type_, architecture): (
            await hub.images.get_by_alias("tiny/split", type=type_, architecture=architecture)
        ).fingerprint
        for type_, architecture in [
            (None, "x86_64"),
            (None, "aarch64"),
            (None, "arm64"),
            ("virtual-machine", "x86_64"),
        ]
    }
    assert found == {
        (None, "x86_64"): tree.image("split").fingerprint,
        (None, "aarch64"): tree.image("split-arm64").fingerprint,
        (None, "arm64"): tree.image("split-arm64").fingerprint,
        ("virtual-machine", "x86_64"): tree.image("split-vm").fingerprint,
    }
