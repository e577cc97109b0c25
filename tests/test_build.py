"""ImageBuild without a server: the tarball's members, its reproducibility and dates, what GNU
tar and Python's tarfile read in it, compression, metadata checks, write()."""

from __future__ import annotations

import datetime
import errno
import gzip
import hashlib
import io
import lzma
import os
import shutil
import socket
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from incus_images import ImageBuild, ImageDataError, InvalidInputError

ROOT = os.geteuid() == 0


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A root file system with every kind of file."""
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    busybox = root / "bin" / "busybox"
    busybox.write_bytes(b"\x7fELF" + os.urandom(3 * 1024 * 1024 + 17))
    busybox.chmod(0o4755)
    os.link(busybox, root / "bin" / "ash")
    (root / "bin" / "sh").symlink_to("busybox")
    (root / "etc").mkdir()
    (root / "etc" / "hostname").write_text("tiny\n")
    (root / "etc" / "loop").symlink_to("../etc/loop")
    os.mkfifo(root / "etc" / "fifo")
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    os.setxattr(busybox, "user.note", b"\x00\xffbinary")
    if ROOT:
        os.mknod(root / "etc" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(root / "etc" / "loop0", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
        os.chown(root / "etc" / "hostname", 1000, 1000)
    return root


def tar_of(data: bytes) -> tarfile.TarFile:
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:*")


def built(build: ImageBuild, tmp_path: Path, name: str = "image.tar.gz") -> bytes:
    target = tmp_path / name
    fingerprint = build.write(target)
    data = target.read_bytes()
    assert fingerprint == hashlib.sha256(data).hexdigest()
    return data


def gnu_listing(build: ImageBuild, image: Path, options: str) -> str:
    """What GNU tar lists in the build, written to image."""
    build.write(image)
    return subprocess.run(
        ["tar", options, str(image)], capture_output=True, text=True, check=True
    ).stdout


def test_every_kind_of_file_is_kept(tree: Path, tmp_path: Path) -> None:
    build = ImageBuild.from_directory(tree, architecture="x86_64", mtime=1_700_000_000)
    with tar_of(built(build, tmp_path)) as tar:
        members = {member.name: member for member in tar.getmembers()}
        names = [member.name for member in tar.getmembers()]
        busybox = tar.extractfile("rootfs/bin/busybox")
        assert busybox is not None
        assert busybox.read() == (tree / "bin" / "busybox").read_bytes()
    assert names[0] == "metadata.yaml"
    assert names[1] == "rootfs"
    # The first name of a hard-linked file holds the data; the later one links to it.
    assert members["rootfs/bin/ash"].isfile()
    assert members["rootfs/bin/busybox"].islnk()
    assert members["rootfs/bin/busybox"].linkname == "rootfs/bin/ash"
    assert members["rootfs/bin/ash"].mode == 0o4755
    assert members["rootfs/bin/ash"].pax_headers["SCHILY.xattr.user.note"].encode(
        "utf-8", "surrogateescape"
    ) == (b"\x00\xffbinary")
    assert members["rootfs/bin/sh"].issym()
    assert members["rootfs/bin/sh"].linkname == "busybox"
    assert members["rootfs/etc/loop"].linkname == "../etc/loop"  # never followed
    assert members["rootfs/etc/fifo"].isfifo()
    assert members["rootfs/tmp"].mode == 0o1777
    assert all(member.mtime == 1_700_000_000 for member in members.values())
    assert all(member.uname == member.gname == "" for member in members.values())
    if ROOT:
        assert members["rootfs/etc/null"].ischr()
        assert (members["rootfs/etc/null"].devmajor, members["rootfs/etc/null"].devminor) == (
            1,
            3,
        )
        assert members["rootfs/etc/loop0"].isblk()
        assert members["rootfs/etc/hostname"].uid == 1000  # root: ids kept


def test_entries_are_sorted_depth_first(tree: Path, tmp_path: Path) -> None:
    build = ImageBuild.from_directory(tree, architecture="x86_64", mtime=1)
    with tar_of(built(build, tmp_path)) as tar:
        names = tar.getnames()
    rootfs = [name for name in names if name.startswith("rootfs/")]
    for directory in {name.rsplit("/", 1)[0] for name in rootfs}:
        children = [name for name in rootfs if name.rsplit("/", 1)[0] == directory]
        assert children == sorted(children)


def test_gnu_tar_lists_and_extracts_it_with_xattrs(tree: Path, tmp_path: Path) -> None:
    build = ImageBuild.from_directory(tree, architecture="x86_64", mtime=1_700_000_000)
    image = tmp_path / "image.tar.gz"
    listing = gnu_listing(build, image, "-tvzf")
    assert "-rwsr-xr-x 0/0" in listing
    assert "rootfs/bin/sh -> busybox" in listing
    assert "rootfs/bin/busybox link to rootfs/bin/ash" in listing
    out = tmp_path / "out"
    out.mkdir()
    # As incusd unpacks (shared/archive: Unpack).
    subprocess.run(
        ["tar", "-C", str(out), "--numeric-owner", "--xattrs-include=*", "-xzf", str(image)],
        check=True,
    )
    ash = out / "rootfs" / "bin" / "ash"
    assert ash.read_bytes() == (tree / "bin" / "busybox").read_bytes()
    assert os.getxattr(ash, "user.note") == b"\x00\xffbinary"
    assert os.stat(ash).st_ino == os.stat(out / "rootfs" / "bin" / "busybox").st_ino
    assert stat.S_IMODE(os.stat(ash).st_mode) == 0o4755
    metadata = yaml.safe_load((out / "metadata.yaml").read_text())
    assert metadata == {"architecture": "x86_64", "creation_date": 1_700_000_000, "properties": {}}


@pytest.mark.skipif(not ROOT or shutil.which("setcap") is None, reason="needs root and setcap")
def test_file_capabilities_come_through(tree: Path, tmp_path: Path) -> None:
    subprocess.run(["setcap", "cap_net_raw+ep", str(tree / "bin" / "busybox")], check=True)
    build = ImageBuild.from_directory(tree, architecture="x86_64", mtime=1)
    with tar_of(built(build, tmp_path)) as tar:
        headers = tar.getmember("rootfs/bin/ash").pax_headers
    assert "SCHILY.xattr.security.capability" in headers


def test_the_same_tree_gives_the_same_bytes(tree: Path, tmp_path: Path) -> None:
    first = ImageBuild.from_directory(tree, architecture="x86_64", owner=(0, 0))
    second = ImageBuild.from_directory(tree, architecture="x86_64", owner=(0, 0))
    assert first.write(tmp_path / "a.tar.gz") == second.write(tmp_path / "b.tar.gz")
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()


def test_without_mtime_the_creation_date_is_the_newest_file(tree: Path, tmp_path: Path) -> None:
    for path in tree.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000), follow_symlinks=False)
    os.utime(tree, (1_000_000, 1_000_000))
    os.utime(tree / "etc" / "hostname", (1_500_000, 1_500_000))
    build = ImageBuild.from_directory(tree, architecture="x86_64")
    with tar_of(built(build, tmp_path)) as tar:
        metadata = tar.extractfile("metadata.yaml")
        assert metadata is not None
        assert yaml.safe_load(metadata)["creation_date"] == 1_500_000
        assert tar.getmember("rootfs/etc/hostname").mtime == 1_500_000
        assert tar.getmember("rootfs/bin/ash").mtime == 1_000_000


def test_source_date_epoch_clamps_newer_entries(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.utime(tree / "etc" / "hostname", (1_000, 1_000))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "5000")
    build = ImageBuild.from_directory(tree, architecture="x86_64")
    with tar_of(built(build, tmp_path)) as tar:
        metadata = tar.extractfile("metadata.yaml")
        assert metadata is not None
        assert yaml.safe_load(metadata)["creation_date"] == 5000
        assert tar.getmember("rootfs/etc/hostname").mtime == 1_000
        assert tar.getmember("rootfs/bin/ash").mtime == 5000  # newer: clamped


def test_a_malformed_source_date_epoch_is_refused(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(InvalidInputError, match="SOURCE_DATE_EPOCH"):
        ImageBuild.from_directory(tree, architecture="x86_64")


def test_mtime_as_an_aware_datetime(tree: Path, tmp_path: Path) -> None:
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    build = ImageBuild.from_directory(tree, architecture="x86_64", mtime=when)
    with tar_of(built(build, tmp_path)) as tar:
        assert {member.mtime for member in tar.getmembers()} == {int(when.timestamp())}


@pytest.mark.parametrize(
    ("owner", "expected"),
    [((0, 0), (0, 0)), ((5, 6), (5, 6)), ({1000: 0}, (0, 0)), ({7: 8}, (1000, 1000))],
)
@pytest.mark.skipif(not ROOT, reason="chown needs root")
def test_owner_maps_ids(
    tree: Path, tmp_path: Path, owner: object, expected: tuple[int, int]
) -> None:
    build = ImageBuild.from_directory(tree, architecture="x86_64", owner=owner, mtime=1)  # type: ignore[arg-type]
    with tar_of(built(build, tmp_path)) as tar:
        member = tar.getmember("rootfs/etc/hostname")
    assert (member.uid, member.gid) == expected


def test_sockets_are_skipped_with_a_warning(tree: Path, tmp_path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tree / "etc" / "control"))
    build = ImageBuild.from_directory(tree, architecture="x86_64", mtime=1)
    with pytest.warns(UserWarning, match="control"):
        data = built(build, tmp_path)
    listener.close()
    assert build.skipped == ("etc/control",)
    with tar_of(data) as tar:
        assert "rootfs/etc/control" not in tar.getnames()


def test_names_that_are_not_utf8_are_stored_as_they_are(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    name = b"caf\xe9"
    with open(os.path.join(os.fsencode(root), name), "wb") as file:
        file.write(b"x")
    image = tmp_path / "image.tar"
    ImageBuild.from_directory(root, architecture="x86_64", mtime=1, compression="none").write(image)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tar", "-C", str(out), "-xf", str(image)], check=True)
    assert os.listdir(os.path.join(os.fsencode(out), b"rootfs")) == [name]
    with tar_of(image.read_bytes()) as tar:
        assert os.fsencode(tar.getnames()[-1]) == b"rootfs/" + name


def test_a_long_name_goes_in_a_pax_header(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    deep = root / ("d" * 120) / ("e" * 120)
    deep.mkdir(parents=True)
    (deep / "file").write_bytes(b"x")
    build = ImageBuild.from_directory(root, architecture="x86_64", mtime=1)
    listing = gnu_listing(build, tmp_path / "image.tar.gz", "-tzf")
    assert f"rootfs/{'d' * 120}/{'e' * 120}/file" in listing.splitlines()


def test_a_tree_deeper_than_the_recursion_limit_is_walked(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    depth = 1500  # over Python's default recursion limit (1,000)
    levels = [root]
    root.mkdir()
    for _ in range(depth):  # pathlib's mkdir(parents=True) would recurse as deep
        levels.append(levels[-1] / "d")
        levels[-1].mkdir()
    (levels[-1] / "file").write_bytes(b"deep")
    (root / "z").write_bytes(b"after the deep branch")
    try:
        build = ImageBuild.from_directory(root, architecture="x86_64", mtime=1)
        with tar_of(built(build, tmp_path)) as tar:
            names = [name for name in tar.getnames() if name.startswith("rootfs/")]
    finally:
        # Removed here, from the bottom: shutil.rmtree, which pytest cleans its old
        # directories with, recurses as deep and would fail in a later session.
        (levels[-1] / "file").unlink()
        for level in reversed(levels[1:]):
            level.rmdir()
    # The directory before what it holds, the deep branch whole before the next sibling.
    assert names[depth] == "rootfs/" + "d/" * depth + "file"
    assert names[-1] == "rootfs/z"
    assert len(names) == depth + 2


def test_a_file_that_grows_while_read_fails_naming_it(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from incus_images._build import tree as tree_module

    original = tree_module.Member.chunks

    def growing(self: tree_module.Member):  # type: ignore[no-untyped-def]
        if self.path.endswith(b"hostname"):
            with open(self.path, "ab") as file:
                file.write(b"more")
        yield from original(self)

    monkeypatch.setattr(tree_module.Member, "chunks", growing)
    build = ImageBuild.from_directory(tree, architecture="x86_64", mtime=1)
    with pytest.raises(ImageDataError, match="hostname' grew while it was read"):
        build.write(tmp_path / "image.tar.gz")
    assert list(tmp_path.glob("image.tar.gz*")) == []
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def test_an_unreadable_file_fails_naming_it(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What an ordinary user meets (tests/_async/test_daemon_build.py builds as nobody); as
    root, which reads every file, the refusal is the kernel's answer to the open."""
    real_open = os.open

    def refusing(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fsencode(path).endswith(b"/etc/hostname"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)
    build = ImageBuild.from_directory(tree, architecture="x86_64", mtime=1)
    with pytest.raises(ImageDataError, match="hostname") as caught:
        build.write(tmp_path / "image.tar.gz")
    assert isinstance(caught.value.__cause__, PermissionError)
    assert list(tmp_path.glob("image.tar.gz*")) == []


def test_gzip_has_no_time_and_no_name(tree: Path, tmp_path: Path) -> None:
    data = built(ImageBuild.from_directory(tree, architecture="x86_64", mtime=1), tmp_path)
    assert data[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03"
    assert gzip.decompress(data)[:13] == b"metadata.yaml"


def test_xz_and_none(tree: Path, tmp_path: Path) -> None:
    xz = built(
        ImageBuild.from_directory(tree, architecture="x86_64", mtime=1, compression="xz"),
        tmp_path,
        "a.tar.xz",
    )
    plain = built(
        ImageBuild.from_directory(tree, architecture="x86_64", mtime=1, compression="none"),
        tmp_path,
        "a.tar",
    )
    assert lzma.decompress(xz) == plain
    assert plain[257:262] == b"ustar"  # what incusd's format detection looks for
    assert len(plain) % tarfile.RECORDSIZE == 0


def test_metadata_holds_the_arguments(tmp_path: Path) -> None:
    (tmp_path / "hostname.tpl").write_text("{{ container.name }}\n")
    build = ImageBuild.metadata_only(
        architecture="amd64",
        properties={"os": "busybox", "description": "tiny ü"},
        templates={"/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"}},
        templates_dir=tmp_path,
        mtime=42,
    )
    with tar_of(built(build, tmp_path, "meta.tar.gz")) as tar:
        assert tar.getnames() == ["metadata.yaml", "templates", "templates/hostname.tpl"]
        metadata = tar.extractfile("metadata.yaml")
        assert metadata is not None
        document = yaml.safe_load(metadata)
    assert document == {
        "architecture": "x86_64",
        "creation_date": 42,
        "properties": {"description": "tiny ü", "os": "busybox"},
        "templates": {"/etc/hostname": {"template": "hostname.tpl", "when": ["create", "copy"]}},
    }


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"architecture": "vax"}, "not an architecture Incus knows"),
        ({"properties": {"version": 3}}, r"properties\['version'\] must be a string"),
        ({"compression": "zstd"}, "compression must be one of"),
        ({"mtime": 0}, "out of range"),
        ({"mtime": datetime.datetime(2026, 1, 1)}, "naive datetime"),
        (
            {"templates": {"/etc/hostname": {"when": ["boot"], "template": "hostname.tpl"}}},
            "must be a non-empty list of create, copy, start",
        ),
        (
            {"templates": {"/etc/hostname": {"when": ["create"], "template": "missing.tpl"}}},
            "missing.tpl' does not exist",
        ),
        (
            {"templates": {"/etc/hostname": {"when": ["create"], "template": "../x"}}},
            "relative file name",
        ),
        ({"templates": {"etc/hostname": {"when": ["create"], "template": "x"}}}, "absolute"),
    ],
)
def test_bad_arguments_are_refused_when_the_build_is_made(
    tmp_path: Path, arguments: dict[str, object], message: str
) -> None:
    (tmp_path / "rootfs").mkdir()
    with pytest.raises(InvalidInputError, match=message):
        ImageBuild.from_directory(
            tmp_path / "rootfs",
            **{"architecture": "x86_64", "templates_dir": tmp_path, **arguments},  # type: ignore[arg-type]
        )


def test_a_missing_root_or_disk_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="is not a directory"):
        ImageBuild.from_directory(tmp_path / "nothing", architecture="x86_64")
    with pytest.raises(InvalidInputError, match="is not a file"):
        ImageBuild.virtual_machine(tmp_path / "nothing.qcow2", architecture="x86_64")


def test_write_of_a_vm_build_places_both_parts(tmp_path: Path) -> None:
    disk = tmp_path / "disk.qcow2"
    disk.write_bytes(b"QFI\xfb" + os.urandom(100_000))
    build = ImageBuild.virtual_machine(disk, architecture="x86_64", mtime=7)
    fingerprint = build.write(tmp_path / "vm.tar.xz")
    metadata = (tmp_path / "vm.tar.xz").read_bytes()
    root = (tmp_path / "vm.tar.xz.root").read_bytes()
    assert root == disk.read_bytes()
    assert fingerprint == hashlib.sha256(metadata + root).hexdigest()
    with tar_of(metadata) as tar:
        assert tar.getnames() == ["metadata.yaml"]
