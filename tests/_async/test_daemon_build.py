"""Images built from a directory (issue 17) on a real incusd, in both flavours.

* An ordinary user (nobody, in a child process) builds a busybox root filesystem into a file;
  root streams the same tree into the daemon and gets the same fingerprint, imports the user's
  file, launches a container from it and looks inside: root owns the files, and the setuid
  bit, the symlinks, the hard link, the device node outside /dev and the fifo came through;
  the template rendered /etc/hostname.
* The same tree built twice gives the same bytes; ``incus image export`` gives back what
  ``write()`` wrote, entry for entry.
* Bad trees: a file the user may not read, a file that grows, shrinks or vanishes while the
  build reads, fail naming the file, and nothing is stored; a symlink loop and names that are
  not UTF-8 are stored as they are.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from incus_images import AsyncClient, Image, ImageBuild, ImageDataError
from tests.build_trees import (
    NOBODY,
    PROPERTIES,
    TEMPLATES,
    busybox_tree,
    nobodys_directory,
    run_as_nobody,
    when_opened,
)
from tests.containers import running_container
from tests.helpers import (
    UNIX_BASE,
    assert_nothing_new_stored,
    deleted_afterwards,
    sha256,
    stored_fingerprints,
)

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024


def file_sha256(path: Path) -> str:
    return sha256(path.read_bytes())


@pytest.fixture
async def host_client(container_host: Any) -> AsyncIterator[AsyncClient]:
    """A client of the daemon that runs containers."""
    async with AsyncClient(container_host.daemon.endpoint) as client:
        yield client


@pytest.fixture
def made(container_host: Any) -> Iterator[list[str]]:
    """Fingerprints appended here are deleted from the container host after the test."""
    socket_path = container_host.daemon.socket_path
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=socket_path), base_url=UNIX_BASE, timeout=60
    ) as raw:
        yield from deleted_afterwards(raw)


# --------------------------------------------------------------------------------------------
# The proof: an ordinary user's tree, a container started from it.


async def test_an_ordinary_users_tree_starts_as_a_container_with_everything_kept(
    container_host: Any, host_client: AsyncClient, made: list[str]
) -> None:
    with nobodys_directory() as directory:
        templates = busybox_tree(directory / "rootfs")
        out = directory / "tiny.tar.gz"
        options: dict[str, Any] = {
            "properties": PROPERTIES,
            "templates": TEMPLATES,
            "templates_dir": str(templates),
        }
        built = run_as_nobody(directory / "rootfs", out, **options)
        assert "error" not in built, built
        assert built["fingerprint"] == file_sha256(out)
        assert built["skipped"] == []
        # Root streams the same tree, every file mapped to root: the very same bytes.
        streamed = await host_client.images.create(
            ImageBuild.from_directory(directory / "rootfs", owner=(0, 0), **options), wait=True
        )
        made.append(streamed.fingerprint)
        assert streamed.fingerprint == built["fingerprint"]
        await host_client.images.delete(streamed.fingerprint, wait=True)
        # The user's file, imported by root.
        image = await host_client.images.create(out, wait=True)
        made.append(image.fingerprint)
    assert isinstance(image, Image)
    assert image.fingerprint == built["fingerprint"]
    assert image.properties == PROPERTIES
    assert image.architecture == platform.machine()  # the default: this machine's
    assert image.type == "container"

    with running_container(container_host.daemon.socket_path, image.fingerprint) as container:
        busybox = container.file("/bin/busybox")
        assert (busybox.uid, busybox.gid, busybox.mode) == (0, 0, 0o755)
        assert busybox.content == Path("/bin/busybox").read_bytes()
        hostname = container.file("/etc/hostname")
        assert hostname.content == f"{container.name}\n".encode()
        paths = ["/usr/bin/suid", "/root/hard-a", "/root/hard-b", "/root/link", "/root/abs-link"]
        paths += ["/root/null", "/root/fifo", "/root", "/tmp", "/bin/sh"]
        shown = container.run("stat", "-c", "%n|%u:%g|%a|%F|%i|%h|%t:%T|%N", *paths)
        found = {line.split("|")[0]: line.split("|")[1:] for line in shown.splitlines()}
        assert set(found) == set(paths), shown
        owners = {owner for owner, *_ in found.values()}
        assert owners == {"0:0"}, shown  # nobody's files are root's in the container
        assert found["/usr/bin/suid"][1:3] == ["4755", "regular file"]
        assert found["/root/null"][1:3] == ["666", "character special file"]
        assert found["/root/null"][5] == "1:3"
        assert found["/root/fifo"][2] == "fifo"
        assert found["/root"][1] == "700" and found["/tmp"][1] == "1777"
        # One file with two names.
        assert found["/root/hard-a"][3] == found["/root/hard-b"][3]
        assert found["/root/hard-a"][4] == found["/root/hard-b"][4] == "2"
        assert found["/root/link"][2] == "symbolic link"
        assert found["/root/link"][6] == "'/root/link' -> 'hard-a'"
        assert found["/root/abs-link"][6] == "'/root/abs-link' -> '/bin/busybox'"
        assert found["/bin/sh"][6] == "'/bin/sh' -> 'busybox'"
        assert container.run("cat", "/root/link") == container.run("cat", "/root/hard-b")
        # The setuid file runs, and the device node is the null device.
        assert container.run("/usr/bin/suid") == "setuid\n"
        assert container.run("sh", "-c", "echo gone > /root/null; cat /root/null") == ""


# --------------------------------------------------------------------------------------------
# Reproducible, and what the daemon exports is what was built.


def tar_listing(path: Path) -> list[str]:
    """``tar -tvf`` of an image: names, types, modes, numeric owners, sizes, dates."""
    listing = subprocess.run(
        ["tar", "--numeric-owner", "-tvf", str(path)], check=True, capture_output=True, text=True
    ).stdout
    return listing.splitlines()


async def test_the_same_tree_gives_the_same_image_and_the_daemon_exports_it_unchanged(
    incusd: Any, daemon_client: AsyncClient, cleanup: list[str], tmp_path: Path
) -> None:
    if shutil.which("incus") is None:
        pytest.skip("the incus CLI is missing (package incus-client)")
    templates = busybox_tree(tmp_path / "rootfs")  # as root: nobody's ids are kept
    options: dict[str, Any] = {"templates": TEMPLATES, "templates_dir": templates}
    first = ImageBuild.from_directory(tmp_path / "rootfs", **options).write(tmp_path / "a.tar.gz")
    again = ImageBuild.from_directory(tmp_path / "rootfs", **options).write(tmp_path / "b.tar.gz")
    assert first == again == file_sha256(tmp_path / "a.tar.gz")
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()

    image = await daemon_client.images.create(tmp_path / "a.tar.gz", wait=True)
    cleanup.append(image.fingerprint)
    assert image.fingerprint == first
    environment = dict(os.environ, INCUS_DIR=str(incusd.directory), INCUS_CONF=str(tmp_path))
    subprocess.run(
        ["incus", "image", "export", first, str(tmp_path / "exported"), "--quiet"],
        env=environment,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (exported,) = (tmp_path / "exported").parent.glob("exported*")
    assert tar_listing(exported) == tar_listing(tmp_path / "a.tar.gz")
    assert file_sha256(exported) == first

    listing = {line.split()[-1] if " -> " not in line else line.split()[-3]: line
               for line in tar_listing(exported)}  # fmt: skip
    assert listing["metadata.yaml"].startswith("-rw-r--r-- 0/0")
    assert listing["templates/hostname.tpl"].startswith("-rw-r--r-- 0/0")
    assert listing["rootfs/usr/bin/suid"].startswith(f"-rwsr-xr-x {NOBODY}/{NOBODY}")
    assert listing["rootfs/root/null"].startswith(f"crw-rw-rw- {NOBODY}/{NOBODY}")
    assert listing["rootfs/root/fifo"].startswith("prw-r--r--")
    assert listing["rootfs/tmp/"].startswith("drwxrwxrwt")
    hard = [line for line in tar_listing(exported) if " link to " in line]
    assert len(hard) == 1 and hard[0].startswith("hrw-r--r--"), hard


# --------------------------------------------------------------------------------------------
# Bad trees.


async def test_a_file_the_user_may_not_read_fails_the_build_naming_it() -> None:
    with nobodys_directory() as directory:
        root = directory / "rootfs"
        (root / "etc").mkdir(parents=True)
        (root / "etc/readable").write_text("fine\n")
        (root / "etc/shadow").write_text("secret\n")
        for path in (root, root / "etc", root / "etc/readable"):
            os.chown(path, NOBODY, NOBODY)
        (root / "etc/shadow").chmod(0o600)  # root's
        before = sorted(os.listdir(directory))
        failed = run_as_nobody(root, directory / "out.tar.gz")
        assert failed.get("error") == "ImageDataError", failed
        assert "etc/shadow" in failed["message"], failed
        assert sorted(os.listdir(directory)) == before  # nothing written, not even in part


def big_tree(root: Path) -> Path:
    """A tree of a 256 MiB file (sparse: quick to make) between small ones; returns it."""
    root.mkdir()
    (root / "a-small").write_text("before\n")
    with open(root / "m-big", "wb") as file:
        file.truncate(256 * MiB)
    (root / "z-small").write_text("after\n")
    return root / "m-big"


def grow(path: Path) -> None:
    with open(path, "ab") as file:
        file.write(b"more" * 1024)


def shrink(path: Path) -> None:
    os.truncate(path, 1024)


def vanish(path: Path) -> None:
    (path.parent / "z-small").unlink()


@pytest.mark.parametrize(
    ("change", "named"), [(grow, "m-big"), (shrink, "m-big"), (vanish, "z-small")]
)
async def test_a_file_that_changes_while_it_is_read_fails_the_upload_and_nothing_is_stored(
    daemon_client: AsyncClient, raw_api: httpx.Client, tmp_path: Path, change: Any, named: str
) -> None:
    big = big_tree(tmp_path / "rootfs")
    before = stored_fingerprints(raw_api)
    build = ImageBuild.from_directory(tmp_path / "rootfs", compression="none")
    with (
        when_opened(big, lambda: change(big)) as changed,
        pytest.raises(ImageDataError, match=named),
    ):
        await daemon_client.images.create(build, wait=True)
    assert changed.is_set(), "the file was read before it could be changed"
    assert_nothing_new_stored(raw_api, before)


async def test_a_file_that_changes_while_it_is_written_fails_and_leaves_no_file(
    tmp_path: Path,
) -> None:
    big = big_tree(tmp_path / "rootfs")
    build = ImageBuild.from_directory(tmp_path / "rootfs", compression="gzip")
    out = tmp_path / "out"
    out.mkdir()
    with (
        when_opened(big, lambda: grow(big)) as changed,
        pytest.raises(ImageDataError, match="m-big"),
    ):
        build.write(out / "image.tar.gz")
    assert changed.is_set(), "the file was read before it could be changed"
    assert list(out.iterdir()) == []


async def test_symlink_loops_are_stored_as_symlinks(
    daemon_client: AsyncClient, cleanup: list[str], tmp_path: Path
) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "loop-a").symlink_to("loop-b")
    (root / "loop-b").symlink_to("loop-a")
    (root / "self").symlink_to("self")
    (root / "up").symlink_to("../../../../..")
    build = ImageBuild.from_directory(root)
    fingerprint = build.write(tmp_path / "image.tar.gz")
    with tarfile.open(tmp_path / "image.tar.gz") as archive:
        links = {m.name: m.linkname for m in archive.getmembers() if m.issym()}
    assert links == {
        "rootfs/loop-a": "loop-b",
        "rootfs/loop-b": "loop-a",
        "rootfs/self": "self",
        "rootfs/up": "../../../../..",
    }
    image = await daemon_client.images.create(ImageBuild.from_directory(root), wait=True)
    cleanup.append(image.fingerprint)
    assert image.fingerprint == fingerprint


async def test_names_that_are_not_utf8_are_stored_byte_for_byte(
    daemon_client: AsyncClient, cleanup: list[str], tmp_path: Path
) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    names = [b"caf\xe9", b"dir-\xff\xfe", b"dir-\xff\xfe/inner-\x80", b"ok-\xc3\xa9"]
    os.mkdir(os.path.join(os.fsencode(root), names[1]))
    for name in (names[0], names[2], names[3]):
        with open(os.path.join(os.fsencode(root), name), "wb") as file:
            file.write(name)
    fingerprint = ImageBuild.from_directory(root).write(tmp_path / "image.tar.gz")
    with tarfile.open(tmp_path / "image.tar.gz", errors="surrogateescape") as archive:
        stored = {
            os.fsencode(member.name): archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
            if member.isfile() and member.name.startswith("rootfs/")
        }
    assert stored == {b"rootfs/" + name: name for name in (names[0], names[2], names[3])}
    listed = subprocess.run(
        ["tar", "--quoting-style=literal", "-tf", str(tmp_path / "image.tar.gz")],
        check=True,
        capture_output=True,
    ).stdout.splitlines()
    assert b"rootfs/caf\xe9" in listed and b"rootfs/dir-\xff\xfe/inner-\x80" in listed
    image = await daemon_client.images.create(ImageBuild.from_directory(root), wait=True)
    cleanup.append(image.fingerprint)
    assert image.fingerprint == fingerprint
