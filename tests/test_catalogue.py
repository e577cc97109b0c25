"""The catalogue reader without I/O (_catalogue): a simplestreams catalogue read into images,
aliases and files as incus 6.0 reads it, hostile catalogues refused, and downloads checked."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from incus_images import (
    AmbiguousFingerprintError,
    ChecksumMismatchError,
    NotFoundError,
    TransferError,
)
from incus_images._architectures import incus_architecture, local_architecture
from incus_images._catalogue.catalogue import (
    Catalogue,
    CatalogueError,
    ImageFile,
    build_catalogue,
    products_paths,
)
from incus_images._catalogue.download import ImageDownload, checked_path, file_request_path
from incus_images._catalogue.lookup import alias_list, image_by_alias, image_by_fingerprint
from incus_images._transfer.files import check_export_target
from tests.catalogue_data import (
    index_file,
    merged,
    product,
    products_file,
    sha,
    split_items,
    unified_items,
)
from tests.helpers import everything_under

SERVER = "https://images.example"
META, ROOT, DISK = b"metadata tarball", b"hsqs squashfs rootfs", b"qcow2 disk"
OLD_META = b"older metadata"


def catalogue(*products: tuple[str, dict[str, Any]], local: str = "x86_64") -> Catalogue:
    return build_catalogue([products_file(dict(products))], local_architecture=local)


def debian(arch: str = "amd64", **versions: Any) -> tuple[str, dict[str, Any]]:
    return (f"debian:12:{arch}:default", product("debian/12,debian/bookworm", versions, arch=arch))


# --------------------------------------------------------------------------------------------
# Architectures.


@pytest.mark.parametrize(
    ("name", "incus"),
    [("amd64", "x86_64"), ("arm64", "aarch64"), ("armhf", "armv7l"), ("i386", "i686"),
     ("ppc64el", "ppc64le"), ("s390x", "s390x"), ("riscv64", "riscv64"), ("x86_64", "x86_64"),
     ("sparc", None)],
)  # fmt: skip
def test_architectures_get_incus_names(name: str, incus: str | None) -> None:
    assert incus_architecture(name) == incus


def test_this_machine_is_named_as_incus_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    assert local_architecture() == "aarch64"


# --------------------------------------------------------------------------------------------
# Images.


def test_a_split_image_is_listed_as_incus_lists_it() -> None:
    versions = {"20240102_05:24": split_items("images/d/1", META, ROOT)}
    (image,) = catalogue(
        ("debian:12:amd64:default", product("debian/12", versions, support_eol="2028-06-10"))
    ).images
    assert image.fingerprint == sha(META, ROOT)
    assert (image.architecture, image.type, image.size) == ("x86_64", "container", 36)
    assert image.filename == "incus.tar.xz"
    assert image.public is True
    assert image.properties == {
        "os": "debian",
        "release": "12",
        "architecture": "amd64",
        "serial": "20240102_05:24",
        "description": "debian bookworm amd64 (20240102_05:24)",
        "variant": "default",
        "type": "squashfs",
    }
    assert image.created_at == image.uploaded_at == datetime(2024, 1, 2, tzinfo=UTC)
    assert image.expires_at == datetime(2028, 6, 10, tzinfo=UTC)


def test_a_variant_and_a_label_as_incus_6_0_describes_them() -> None:
    items = split_items("d", META, ROOT)
    versions = {"20240102": items}
    data = product("debian/12/cloud", versions, variant="cloud", requirements={"cgroup": "v2"})
    data["versions"]["20240102"]["label"] = "daily"
    (image,) = catalogue(("debian:12:amd64:cloud", data)).images
    # incus 6.0 leaves the variant out of the description (7.0 puts it in).
    assert image.properties["description"] == "debian bookworm amd64 (daily) (20240102)"
    assert image.properties["variant"] == "cloud"
    assert image.properties["label"] == "daily"
    assert image.properties["requirements.cgroup"] == "v2"


def test_without_an_end_of_support_the_expiry_is_the_epoch_as_incus_lists_it() -> None:
    (image,) = catalogue(debian(**{"20240102": split_items("d", META, ROOT)})).images
    assert image.expires_at == datetime(1970, 1, 1, tzinfo=UTC)


def test_unified_and_vm_images_and_the_root_types_fingerprints() -> None:
    vm = split_items("images/d/vm", META, DISK, "disk-kvm.img")
    tarball = split_items("images/d/tar", OLD_META, ROOT, "root.tar.xz")
    # Older servers give only combined_sha256 for a root.tar.xz.
    tarball["incus.tar.xz"]["combined_sha256"] = tarball["incus.tar.xz"].pop(
        "combined_rootxz_sha256"
    )
    found = catalogue(
        ("a:1:amd64:default", product("a", {"20240101": unified_items("u", b"unified")})),
        ("b:1:amd64:default", product("b", {"20240101": vm})),
        ("c:1:amd64:default", product("c", {"20240101": tarball})),
    )
    kinds = {image.fingerprint: (image.type, image.properties["type"]) for image in found.images}
    assert kinds == {
        sha(b"unified"): ("container", "tar.gz"),
        sha(META, DISK): ("virtual-machine", "disk-kvm.img"),
        sha(OLD_META, ROOT): ("container", "root.tar.xz"),
    }
    assert [file.role for file in found.files[sha(b"unified")]] == ["unified"]
    assert [file.role for file in found.files[sha(META, DISK)]] == ["metadata", "rootfs"]


def test_what_incus_skips_is_skipped() -> None:
    items = split_items("x", META, ROOT)
    no_fingerprint = split_items("y", b"m2", b"r2")
    del no_fingerprint["incus.tar.xz"]["combined_squashfs_sha256"]
    found = catalogue(
        ("a", product("a", {"20240101": items}, arch="sparc")),  # unknown architecture
        ("b", product("b", {"2024": items, "latest": items})),  # versions not named by dates
        ("c", product("c", {"20241301": items})),  # no such date
        ("d", product("d", {"20240101": no_fingerprint})),
    )
    assert found.images == ()


def test_every_field_of_a_wrong_type_fails_naming_the_product() -> None:
    good = split_items("x", META, ROOT)
    bad_size = split_items("x", META, ROOT)
    bad_size["squashfs"]["size"] = "20"
    cases: list[tuple[dict[str, Any], str]] = [
        (product(["debian/12"], {"20240101": good}), "'aliases' is a JSON array, not a string"),
        (product("d", {"20240101": bad_size}), "item 'squashfs': 'size' is a JSON string"),
        (product("d", {"20240101": good}, supported="yes"), "'supported' is a JSON string"),
        (product("d", {"20240101": []}), "version '20240101'"),
        (product("d", {"20240101": good}, requirements={"secureboot": False}), "requirement"),
    ]
    for data, message in cases:
        with pytest.raises(CatalogueError, match="product 'debian:12:amd64:default'") as caught:
            catalogue(("debian:12:amd64:default", data))
        assert message in str(caught.value)
    with pytest.raises(CatalogueError, match="a JSON array, not an object"):
        build_catalogue([[]], local_architecture="x86_64")


def test_sizes_and_fingerprints_that_cannot_be_are_refused() -> None:
    negative = split_items("x", META, ROOT)
    negative["squashfs"]["size"] = -1
    with pytest.raises(CatalogueError, match="size -1"):
        catalogue(debian(**{"20240101": negative}))
    boolean = split_items("x", META, ROOT)
    boolean["squashfs"]["size"] = True
    with pytest.raises(CatalogueError, match="'size' is a JSON boolean"):
        catalogue(debian(**{"20240101": boolean}))
    steering = split_items("x", META, ROOT)
    steering["incus.tar.xz"]["combined_squashfs_sha256"] = "../../etc/passwd"
    with pytest.raises(CatalogueError, match="is not a SHA-256"):
        catalogue(debian(**{"20240101": steering}))


def test_the_index_names_its_products_files() -> None:
    assert products_paths(index_file()) == ["streams/v1/images.json"]
    assert products_paths(index_file(products=[])) == []  # incus skips an empty one
    with pytest.raises(CatalogueError, match="'products' holds something"):
        products_paths(index_file(products=[1]))
    with pytest.raises(CatalogueError, match="'path' is a JSON number"):
        products_paths(index_file(path=3))
    with pytest.raises(CatalogueError, match="the index is a JSON array"):
        products_paths([])


# --------------------------------------------------------------------------------------------
# Aliases, as the CLI lists them.


def two_architectures(local: str = "x86_64") -> Catalogue:
    return catalogue(
        debian(
            "amd64",
            **{
                "20240101": split_items("a/old", OLD_META, ROOT),
                "20240202": split_items("a/new", META, ROOT),
            },
        ),
        debian("arm64", **{"20240202": split_items("b", META, DISK)}),
        local=local,
    )


def test_aliases_go_to_the_newest_version_with_the_catalogue_architecture() -> None:
    found = two_architectures()
    aliases = {image.fingerprint: [alias.name for alias in image.aliases] for image in found.images}
    assert aliases == {
        sha(META, ROOT): [
            "debian/12",
            "debian/12/amd64",
            "debian/bookworm",
            "debian/bookworm/amd64",
        ],
        sha(OLD_META, ROOT): [],
        sha(META, DISK): ["debian/12/arm64", "debian/bookworm/arm64"],
    }
    assert [image.properties["serial"] for image in found.images] == [
        "20240202", "20240202", "20240101"
    ]  # fmt: skip
    on_arm = two_architectures("aarch64")
    assert [alias.name for alias in on_arm.images[0].aliases] == [
        "debian/12/amd64", "debian/bookworm/amd64"
    ]  # fmt: skip


def test_a_squashfs_root_is_preferred_to_a_tarball_of_the_same_version() -> None:
    items = merged(split_items("x", META, b"tarball", "root.tar.xz"), split_items("x", META, ROOT))
    found = catalogue(debian(**{"20240101": items}))
    owners = {image.properties["type"]: len(image.aliases) for image in found.images}
    assert owners == {"squashfs": 4, "root.tar.xz": 0}


def test_the_alias_listing_prefers_this_machines_architecture() -> None:
    listed = alias_list(two_architectures())
    assert [(alias.name, alias.target) for alias in listed][:2] == [
        ("debian/12", sha(META, ROOT)),
        ("debian/12/amd64", sha(META, ROOT)),
    ]
    assert len(listed) == 6
    on_arm = {alias.name: alias.target for alias in alias_list(two_architectures("aarch64"))}
    assert on_arm["debian/12"] == sha(META, DISK)


# --------------------------------------------------------------------------------------------
# Finding an image.


def test_a_fingerprint_prefix_finds_one_image_or_says_why_not() -> None:
    found = two_architectures()
    fingerprint = sha(META, DISK)
    assert image_by_fingerprint(found, fingerprint[:6], server=SERVER).fingerprint == fingerprint
    with pytest.raises(NotFoundError, match="no image with that fingerprint"):
        image_by_fingerprint(found, "0" * 64, server=SERVER)
    with pytest.raises(AmbiguousFingerprintError, match="3 images"):
        image_by_fingerprint(found, "", server=SERVER)


def resolve(found: Catalogue, name: str, **options: Any) -> str:
    options.setdefault("image_type", None)
    options.setdefault("architecture", None)
    return image_by_alias(found, name, server=SERVER, **options).fingerprint


def test_an_alias_resolves_to_this_machines_architecture_else_its_only_one() -> None:
    assert resolve(two_architectures(), "debian/12") == sha(META, ROOT)
    assert resolve(two_architectures("aarch64"), "debian/12") == sha(META, DISK)
    assert resolve(two_architectures(), "debian/12", architecture="aarch64") == sha(META, DISK)
    assert resolve(two_architectures(), "debian/12/arm64") == sha(META, DISK)
    arm_only = catalogue(debian("arm64", **{"20240101": split_items("b", META, DISK)}))
    assert resolve(arm_only, "debian/12") == sha(META, DISK)


def test_an_alias_with_several_architectures_none_ours_names_them() -> None:
    with pytest.raises(NotFoundError) as caught:
        resolve(two_architectures("s390x"), "debian/12")
    message = str(caught.value)
    assert "this machine's architecture, s390x" in message
    assert "container images for aarch64, x86_64" in message
    with pytest.raises(NotFoundError, match="for riscv64"):
        resolve(two_architectures(), "debian/12", architecture="riscv64")
    with pytest.raises(NotFoundError, match="no such alias"):
        resolve(two_architectures(), "ubuntu/24.04")


def test_an_alias_prefers_a_container_unless_the_type_is_asked() -> None:
    found = catalogue(
        debian(
            **{
                "20240101": merged(
                    split_items("c", META, ROOT), split_items("c", META, DISK, "disk-kvm.img")
                )
            }
        )
    )
    assert resolve(found, "debian/12") == sha(META, ROOT)
    assert resolve(found, "debian/12", image_type="virtual-machine") == sha(META, DISK)
    vm_only = catalogue(debian(**{"20240101": split_items("v", META, DISK, "disk-kvm.img")}))
    assert resolve(vm_only, "debian/12") == sha(META, DISK)
    with pytest.raises(NotFoundError, match="virtual-machine images for x86_64"):
        resolve(vm_only, "debian/12", image_type="container")


# --------------------------------------------------------------------------------------------
# Paths and downloads.


@pytest.mark.parametrize(
    "path",
    ["../etc/passwd", "images/../../x", "/etc/passwd", "https://evil.example/x",
     "http://images.example/x", "//evil.example/x", "images/./x", "images//x", "a\\b",
     "x?y", "x#y", "a\nb", "", "javascript:x", "x" * 5000],
)  # fmt: skip
def test_a_path_that_leaves_the_servers_tree_is_refused(path: str) -> None:
    with pytest.raises(CatalogueError):
        checked_path("/root", path, "a file")


def test_a_path_is_encoded_segment_by_segment() -> None:
    path = "images/debian/20240101_05:24/a %2e%2e b.tar.xz"
    assert checked_path("/r", path, "a file") == (
        "/r/images/debian/20240101_05:24/a%20%252e%252e%20b.tar.xz"
    )
    with pytest.raises(CatalogueError, match="sha256"):
        file_request_path("", ImageFile("metadata", "x", "not a hash", 1))


def download(
    tmp_path: Path, files: tuple[ImageFile, ...], fingerprint: str, data: list[bytes]
) -> list[Path]:
    def failure(detail: str, cls: type[TransferError]) -> TransferError:
        return cls(detail)

    target = check_export_target(str(tmp_path / "out") + "/")
    reports: list[tuple[int, int | None]] = []
    loader = ImageDownload(
        target, fingerprint, files, progress=lambda *report: reports.append(report),
        failure=failure,
    )  # fmt: skip
    try:
        loader.start()
        for file, body in zip(files, data, strict=True):
            loader.open(file)
            loader.feed(body)
            loader.close_file()
        loader.verify()
        placed = loader.place()
    finally:
        loader.discard()
    assert reports[-1] == (sum(len(body) for body in data), sum(file.size for file in files))
    return placed


def split_files(meta: bytes = META, root: bytes = ROOT) -> tuple[ImageFile, ImageFile]:
    return (
        ImageFile("metadata", "i/incus.tar.xz", sha(meta), len(meta)),
        ImageFile("rootfs", "i/rootfs.squashfs", sha(root), len(root)),
    )


def test_a_split_download_is_verified_then_placed(tmp_path: Path) -> None:
    placed = download(tmp_path, split_files(), sha(META, ROOT), [META, ROOT])
    assert [path.name for path in placed] == ["incus.tar.xz", "rootfs.squashfs"]
    assert [path.read_bytes() for path in placed] == [META, ROOT]
    assert everything_under(tmp_path) == ["out", "out/incus.tar.xz", "out/rootfs.squashfs"]


@pytest.mark.parametrize(
    ("files", "fingerprint", "data", "error", "message"),
    [
        (split_files(), sha(META, ROOT), [META, ROOT + b"!"], TransferError, "more than"),
        (split_files(), sha(META, ROOT), [META, ROOT[:-1]], TransferError, "ended after"),
        (split_files(root=b"hsqs SQUASHFS rootfs"), sha(META, ROOT), [META, ROOT],
         ChecksumMismatchError, "not to the catalogue's"),
        (split_files(), sha(ROOT, META), [META, ROOT], ChecksumMismatchError, "fingerprint"),
    ],
)  # fmt: skip
def test_a_download_that_lies_leaves_nothing(
    tmp_path: Path,
    files: tuple[ImageFile, ...],
    fingerprint: str,
    data: list[bytes],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message):
        download(tmp_path, files, fingerprint, data)
    assert everything_under(tmp_path) == []
