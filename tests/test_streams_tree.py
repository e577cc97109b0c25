"""The tests' real simplestreams tree (tests/streams_tree.py), built by incus-simplestreams and
served by scripts/simplestreams_server.py, is what the incus CLI lists: the reference the SDK's
catalogue reader is held to. What the CLI reports is described in tests/streams_tree.py.
"""

from __future__ import annotations

import json
import platform
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from simplestreams_server import SimpleStreamsServer, synthetic_catalogue

from tests.helpers import deleted_afterwards, stored_image, wait_raw
from tests.streams_fixtures import StreamsServer
from tests.streams_tree import (
    INCUS_ARCHITECTURES,
    StreamsTree,
    TreeImage,
    build_tree,
    cli_image_list,
    qcow2_image,
)

#: This machine's architecture, as Incus names it.
HOST_ARCHITECTURE = {"amd64": "x86_64", "arm64": "aarch64"}.get(
    platform.machine(), platform.machine()
)


@pytest.fixture(scope="module")
def listing(streams_server: StreamsServer) -> dict[str, dict[str, Any]]:
    """The CLI's listing of the session's tree, by fingerprint."""
    images = cli_image_list(streams_server.url, streams_server.certificate).images
    by_fingerprint = {image["fingerprint"]: image for image in images}
    assert len(by_fingerprint) == len(images), "the CLI listed a fingerprint twice"
    return by_fingerprint


def cli_aliases(tree: StreamsTree, image: TreeImage) -> list[str] | None:
    """The aliases the CLI shows for an image (see tests/streams_tree.py): None unless the
    image is the newest of its product and type."""
    rivals = [i for i in tree.images if (i.product, i.type) == (image.product, image.type)]
    if image.version != max(i.version for i in rivals):
        return None
    names = []
    for alias in image.aliases:
        if image.architecture == HOST_ARCHITECTURE:
            names.append(alias)
        names.append(f"{alias}/{image.catalogue_architecture}")
    return names


def test_the_tree_holds_what_the_issue_asks_for(streams_tree: StreamsTree) -> None:
    kinds = {(i.type, tuple(f.ftype for f in i.files)) for i in streams_tree.images}
    assert kinds == {
        ("container", ("incus_combined.tar.gz",)),
        ("container", ("incus.tar.xz", "squashfs")),
        ("virtual-machine", ("incus.tar.xz", "disk-kvm.img")),
    }
    # One alias, two architectures.
    split = [i for i in streams_tree.images if "tiny/split" in i.aliases and i.type == "container"]
    assert {i.architecture for i in split} == {"x86_64", "aarch64"}
    # Two versions of one product.
    assert streams_tree.image("unified").version > streams_tree.image("unified-old").version
    assert streams_tree.image("unified").product == streams_tree.image("unified-old").product
    assert len(streams_tree.fingerprints) == len(streams_tree.images) == 6


def test_the_cli_lists_exactly_the_tree(
    streams_tree: StreamsTree, listing: dict[str, dict[str, Any]]
) -> None:
    assert set(listing) == streams_tree.fingerprints
    for image in streams_tree.images:
        listed = listing[image.fingerprint]
        assert (listed["type"], listed["architecture"], listed["size"]) == (
            image.type,
            image.architecture,
            image.size,
        ), image.key
        aliases = listed["aliases"]
        names = None if aliases is None else [alias["name"] for alias in aliases]
        assert names == cli_aliases(streams_tree, image), image.key


def test_the_cli_sizes_a_split_image_as_the_sum_of_its_files(
    streams_tree: StreamsTree, listing: dict[str, dict[str, Any]]
) -> None:
    for key in ("split", "split-vm", "split-arm64"):
        image = streams_tree.image(key)
        metadata, rootfs = image.files
        assert rootfs.size > 4 * metadata.size  # the sum, not the metadata alone
        assert listing[image.fingerprint]["size"] == metadata.size + rootfs.size


def test_the_cli_properties_and_dates(
    streams_tree: StreamsTree, listing: dict[str, dict[str, Any]]
) -> None:
    ftypes = {"incus_combined.tar.gz": "tar.gz", "squashfs": "squashfs"}
    for image in streams_tree.images:
        listed = listing[image.fingerprint]
        release = image.properties["release"]
        arch = image.catalogue_architecture
        assert listed["properties"] == {
            "architecture": arch,
            "description": f"tiny {release} {arch} ({image.version})",
            "os": "tiny",
            "release": release,
            "serial": image.version,
            "type": ftypes.get(image.files[-1].ftype, image.files[-1].ftype),
            "variant": "default",
        }
        day = f"{image.version[:4]}-{image.version[4:6]}-{image.version[6:8]}T00:00:00Z"
        assert (listed["created_at"], listed["uploaded_at"]) == (day, day)
        assert listed["filename"] == Path(image.files[0].path).name


def test_the_cli_needs_only_the_catalogue(streams_server: StreamsServer) -> None:
    """Listing reads index.json and images.json, no image file (a cold run: both read)."""
    before = len(streams_server.server.requests)
    cli_image_list(streams_server.url, streams_server.certificate)
    assert streams_server.server.requests[before:] == [
        "/streams/v1/index.json",
        "/streams/v1/images.json",
    ]


def test_the_tree_is_the_same_each_time(tmp_path: Path, streams_tree: StreamsTree) -> None:
    again = build_tree(tmp_path / "again")
    assert again.images == streams_tree.images
    assert [i.fingerprint for i in again.images] == [i.fingerprint for i in streams_tree.images]
    versions = ["202311142213", "202311132213", *["202311142213"] * 3, "202311152213"]
    assert [i.version for i in again.images] == versions


def test_the_qcow2_disk_is_what_qemu_img_reads() -> None:
    disk = qcow2_image(virtual_size=1 << 20)
    assert disk[:4] == b"QFI\xfb" and len(disk) == 16384
    assert int.from_bytes(disk[24:32], "big") == 1 << 20
    with pytest.raises(ValueError, match="more than one L1 cluster"):
        qcow2_image(virtual_size=1 << 40)


def get(server: SimpleStreamsServer, path: str) -> httpx.Response:
    context = ssl.create_default_context(cadata=server.certificate_pem)
    with httpx.Client(verify=context, timeout=10) as client:
        return client.get(server.url + path)


def test_a_tree_server_serves_only_the_files_its_catalogue_names(
    tmp_path: Path, streams_tree: StreamsTree
) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(streams_tree.path, tree)
    (tree / "images" / "unlisted").write_bytes(b"not in the catalogue")
    (tmp_path / "outside").write_bytes(b"outside the tree")
    image = streams_tree.image("split")
    with SimpleStreamsServer.from_tree(tree) as server:
        assert (
            get(server, "/" + image.files[1].path).content
            == (tree / image.files[1].path).read_bytes()
        )
        assert get(server, "/streams/v1/index.json").json()["format"] == "index:1.0"
        for path in ("/images/unlisted", "/../outside", "/images/../../outside", "/images/"):
            assert get(server, path).status_code == 404, path
        with pytest.raises(ValueError, match="fixed files"):
            server.add_image(b"metadata", aliases=["x"], os="x", release="1")
        with pytest.raises(ValueError, match="fixed files"):
            server.remove_image(image.fingerprint)


@pytest.mark.parametrize("path", ["../outside", "/etc/hostname", "images/./x", "images//x"])
def test_a_tree_whose_catalogue_leaves_it_is_refused(
    tmp_path: Path, streams_tree: StreamsTree, path: str
) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(streams_tree.path, tree)
    (tmp_path / "outside").write_bytes(b"outside the tree")
    products_file = tree / "streams/v1/images.json"
    catalogue = json.loads(products_file.read_text())
    version = next(iter(catalogue["products"]["tiny:vm:default:amd64"]["versions"].values()))
    version["items"]["disk-kvm.img"]["path"] = path
    products_file.write_text(json.dumps(catalogue))
    with pytest.raises(ValueError, match=r"relative path|inside"):
        SimpleStreamsServer.from_tree(tree)


def test_a_symlink_out_of_the_tree_is_refused(tmp_path: Path, streams_tree: StreamsTree) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(streams_tree.path, tree)
    (tmp_path / "outside").write_bytes(b"outside the tree")
    disk = tree / streams_tree.image("vm").files[1].path
    disk.unlink()
    disk.symlink_to(tmp_path / "outside")
    with pytest.raises(ValueError, match="not a regular file inside"):
        SimpleStreamsServer.from_tree(tree)


def test_the_cli_lists_a_synthetic_catalogue_of_any_size() -> None:
    count = 203  # not a multiple of four: the last product is partial
    with SimpleStreamsServer.from_files(synthetic_catalogue(count)) as server:
        images = cli_image_list(server.url, server.certificate_pem).images
        assert server.requests == ["/streams/v1/index.json", "/streams/v1/images.json"]
    assert len({image["fingerprint"] for image in images}) == count
    kinds = {(image["type"], image["architecture"]) for image in images}
    assert kinds == {
        (kind, arch)
        for kind in ("container", "virtual-machine")
        for arch in INCUS_ARCHITECTURES.values()
    }


@pytest.fixture
def pulled(raw_api: httpx.Client) -> Iterator[list[str]]:
    """Fingerprints appended here are deleted from the daemon after the test."""
    yield from deleted_afterwards(raw_api)


def pull(raw_api: httpx.Client, streams_server: StreamsServer, **source: str) -> str:
    """Have the daemon copy an image from the tree; return the fingerprint it stored."""
    request = {
        "source": {
            "type": "image",
            "mode": "pull",
            "server": streams_server.url,
            "protocol": "simplestreams",
            "certificate": streams_server.certificate,
            **source,
        }
    }
    finished = wait_raw(raw_api, raw_api.post("/1.0/images", json=request))
    assert finished["status_code"] == 200, finished
    return str(finished["metadata"]["fingerprint"])


def test_incusd_copies_every_image_of_the_tree(
    raw_api: httpx.Client, streams_server: StreamsServer, pulled: list[str]
) -> None:
    """incusd checks each file's sha256 while downloading: the tree's files are what its
    catalogue says, and each image is stored as the CLI lists it."""
    for image in streams_server.tree.images:
        fingerprint = pull(raw_api, streams_server, fingerprint=image.fingerprint)
        pulled.append(fingerprint)
        stored = stored_image(raw_api, fingerprint)
        assert stored is not None and fingerprint == image.fingerprint
        assert (stored["type"], stored["architecture"], stored["size"]) == (
            image.type,
            image.architecture,
            image.size,
        ), image.key
    requested = set(streams_server.server.requests)
    for image in streams_server.tree.images:
        assert {"/" + file.path for file in image.files} <= requested, image.key


def test_incusd_resolves_the_two_architecture_alias(
    raw_api: httpx.Client, streams_server: StreamsServer, pulled: list[str]
) -> None:
    tree = streams_server.tree
    for alias, wanted in (("tiny/split", "split"), ("tiny/split/arm64", "split-arm64")):
        fingerprint = pull(raw_api, streams_server, alias=alias)
        pulled.append(fingerprint)
        assert fingerprint == tree.image(wanted).fingerprint, alias
    vm = pull(raw_api, streams_server, alias="tiny/split", image_type="virtual-machine")
    pulled.append(vm)
    assert vm == tree.image("split-vm").fingerprint
