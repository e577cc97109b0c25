"""Unit tests (respx) of create() with an ImageBuild: the body is what write() writes, hashed
and verified like every upload, its length unknown; the tree is read off the event loop."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import respx

from incus_images import (
    AsyncClient,
    ChecksumMismatchError,
    Image,
    ImageBuild,
    ImageDataError,
    InvalidInputError,
    LeftBehind,
    Operation,
)
from incus_images._flavours import async_flavour
from tests.helpers import accepted_response, image, mock_survey, operation, sha256, sync_response

pytestmark = pytest.mark.anyio

UPLOAD_ID = "11111111-2222-4333-8444-555555555555"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "busybox").write_bytes(b"\x7fELF" + bytes(range(256)) * 4000)
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("tiny\n")
    return root


def mock_stored(
    router: respx.MockRouter, fingerprint: str, *, read_back: bool = True
) -> respx.Route:
    mock_survey(router)
    post = router.post("/1.0/images").mock(return_value=accepted_response(operation(UPLOAD_ID)))
    router.get(f"/1.0/operations/{UPLOAD_ID}/wait").mock(
        return_value=sync_response(
            operation(UPLOAD_ID, status_code=200, metadata={"fingerprint": fingerprint})
        )
    )
    if read_back:
        router.get(f"/1.0/images/{fingerprint}").mock(
            return_value=sync_response(image(fingerprint))
        )
    return post


async def test_create_uploads_what_write_writes_and_verifies_its_fingerprint(
    client: AsyncClient, router: respx.MockRouter, tree: Path, tmp_path: Path
) -> None:
    build = ImageBuild.from_directory(tree, architecture="x86_64", owner=(0, 0), mtime=1000)
    fingerprint = build.write(tmp_path / "image.tar.gz")
    written = (tmp_path / "image.tar.gz").read_bytes()
    assert fingerprint == sha256(written)
    post = mock_stored(router, fingerprint)
    reports: list[tuple[int, int | None]] = []
    result = await client.images.create(
        build, wait=True, progress=lambda done, total: reports.append((done, total))
    )
    assert isinstance(result, Image)
    assert result.fingerprint == fingerprint
    request = post.calls.last.request
    assert request.content == written
    assert request.headers["Content-Type"] == "application/octet-stream"
    assert "content-length" not in request.headers  # generated as it goes: length unknown
    assert request.headers["X-Incus-filename"] == "rootfs.tar.gz"
    assert reports[0] == (0, None)
    assert reports[-1] == (len(written), None)
    assert {total for _, total in reports} == {None}


async def test_create_refuses_a_server_that_stored_other_bytes(
    client: AsyncClient, router: respx.MockRouter, tree: Path
) -> None:
    build = ImageBuild.from_directory(tree, architecture="x86_64", mtime=1000)
    mock_stored(router, "c" * 64, read_back=False)
    router.delete("/1.0/images/" + "c" * 64).mock(
        return_value=sync_response(operation("99999999-8888-4777-8666-555555555555"))
    )
    router.get("/1.0/operations/99999999-8888-4777-8666-555555555555/wait").mock(
        return_value=sync_response(
            operation("99999999-8888-4777-8666-555555555555", status_code=200)
        )
    )
    with pytest.raises(ChecksumMismatchError, match="the bytes sent hash to"):
        await client.images.create(build, wait=True)


async def test_the_tree_is_read_off_the_event_loop_in_the_async_flavour(
    client: AsyncClient,
    router: respx.MockRouter,
    tree: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build = ImageBuild.from_directory(tree, architecture="x86_64", mtime=1000)
    readers: set[threading.Thread] = set()
    original = ImageBuild.stream

    def stream(self: ImageBuild) -> Iterator[bytes]:
        for chunk in original(self):
            readers.add(threading.current_thread())
            yield chunk

    monkeypatch.setattr(ImageBuild, "stream", stream)
    router.post("/1.0/images").mock(return_value=accepted_response(operation(UPLOAD_ID)))
    assert isinstance(await client.images.create(build), Operation)
    assert readers
    on_the_loop = threading.main_thread() in readers
    assert on_the_loop is not async_flavour.accepts_async_iterables


async def test_a_virtual_machine_build_sends_its_disk_as_the_rootfs_img_part(
    client: AsyncClient, router: respx.MockRouter, tmp_path: Path
) -> None:
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"QFI\xfb" + b"\0" * 5000)
    build = ImageBuild.virtual_machine(disk, architecture="aarch64", mtime=1000)
    fingerprint = build.write(tmp_path / "vm.tar.gz")
    metadata = (tmp_path / "vm.tar.gz").read_bytes()
    assert (tmp_path / "vm.tar.gz.root").read_bytes() == disk.read_bytes()
    assert fingerprint == sha256(metadata, disk.read_bytes())
    post = mock_stored(router, fingerprint)
    await client.images.create(build, wait=True)
    request = post.calls.last.request
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    body = request.content
    assert b'name="metadata"; filename="metadata.tar.gz"' in body
    assert b'name="rootfs.img"; filename="disk.qcow2"' in body
    assert metadata in body
    assert body.index(metadata) < body.index(disk.read_bytes())


async def test_a_metadata_only_build_is_the_metadata_part_of_a_split_image(
    client: AsyncClient, router: respx.MockRouter, tmp_path: Path
) -> None:
    rootfs = tmp_path / "rootfs.squashfs"
    rootfs.write_bytes(b"hsqs" + b"\1" * 3000)
    build = ImageBuild.metadata_only(architecture="x86_64", mtime=1000, compression="xz")
    metadata_file = tmp_path / "meta.tar.xz"
    build.write(metadata_file)
    metadata = metadata_file.read_bytes()
    post = mock_stored(router, sha256(metadata, rootfs.read_bytes()))
    await client.images.create(build, rootfs=rootfs, wait=True)
    body = post.calls.last.request.content
    assert b'name="metadata"; filename="metadata.tar.xz"' in body
    assert b'name="rootfs"; filename="rootfs.squashfs"' in body
    assert metadata in body


@pytest.mark.parametrize(
    ("kind", "arguments", "message"),
    [
        ("tree", {"rootfs": "x"}, "rootfs cannot be given with an ImageBuild.from_directory"),
        ("tree", {"type": "container"}, "type= applies to split images"),
        ("vm", {"rootfs": "x"}, "it supplies its disk itself"),
        ("vm", {"type": "container"}, "does not fit an ImageBuild.virtual_machine"),
        ("metadata", {}, "rootfs is required with an ImageBuild.metadata_only"),
    ],
)
async def test_create_refuses_what_does_not_fit_the_build_before_sending(
    client: AsyncClient,
    router: respx.MockRouter,
    tree: Path,
    tmp_path: Path,
    kind: str,
    arguments: dict[str, Any],
    message: str,
) -> None:
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"QFI\xfb")
    build = {
        "tree": lambda: ImageBuild.from_directory(tree, architecture="x86_64"),
        "vm": lambda: ImageBuild.virtual_machine(disk, architecture="x86_64"),
        "metadata": lambda: ImageBuild.metadata_only(architecture="x86_64"),
    }[kind]()
    with pytest.raises(InvalidInputError, match=message):
        await client.images.create(build, **arguments)
    assert not router.calls


async def test_a_build_cannot_be_the_rootfs(
    client: AsyncClient, router: respx.MockRouter, tmp_path: Path
) -> None:
    build = ImageBuild.metadata_only(architecture="x86_64")
    with pytest.raises(InvalidInputError, match="rootfs cannot be an ImageBuild"):
        await client.images.create(build, rootfs=build)  # type: ignore[arg-type]
    assert not router.calls


async def test_a_file_that_vanishes_fails_the_upload_naming_it(
    client: AsyncClient, router: respx.MockRouter, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from incus_images._build import tree as tree_module

    build = ImageBuild.from_directory(tree, architecture="x86_64", mtime=1000)
    original = tree_module.open_regular

    def vanishing(path: bytes, info: Any, listed: Any = None) -> Any:
        if path.endswith(b"hostname"):
            (tree / "etc" / "hostname").unlink()
        return original(path, info, listed)

    monkeypatch.setattr(tree_module, "open_regular", vanishing)
    with pytest.raises(ImageDataError, match=r"hostname' vanished") as caught:
        await client.images.create(build)
    assert caught.value.left_behind == LeftBehind.NOTHING
