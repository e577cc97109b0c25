"""A real simplestreams tree for the tests, made by ``incus-simplestreams`` (Debian package
``incus-extra``) from tiny image files, and the incus CLI's listing of it, the reference the
SDK's catalogue reader must match.

    tree = build_tree(directory)          # -> StreamsTree: its path and what it holds
    with SimpleStreamsServer.from_tree(tree.path) as server:
        listing = cli_image_list(server.url, server.certificate_pem)   # incus image list

What the tree holds (``TREE_IMAGES``; product keys are ``os:release:variant:arch`` as
incus-simplestreams names them, ``arch`` being the metadata's ``properties.architecture``):

* ``unified``: a unified container image (one ``incus_combined.tar.gz`` item), product
  ``tiny:unified:default:amd64``, aliases ``tiny/unified/default`` and ``tiny/unified``.
* ``unified-old``: an older version (a day earlier) of the same product.
* ``split``: a split container image, metadata tarball + squashfs rootfs (made with
  mksquashfs), product ``tiny:split:default:amd64``, aliases ``tiny/split/default`` and
  ``tiny/split``.
* ``split-vm``: a virtual-machine image in the same product version as ``split``, sharing its
  metadata tarball (as real image servers publish a container and a VM: one ``incus.tar.xz``
  item with both ``combined_squashfs_sha256`` and ``combined_disk-kvm-img_sha256``) + a qcow2
  disk.
* ``split-arm64``: the same alias for a second architecture: product
  ``tiny:split:default:arm64`` (incus architecture ``aarch64``), a split squashfs container.
* ``vm``: a virtual-machine-only product ``tiny:vm:default:amd64`` (alias ``tiny/vm/default``
  and ``tiny/vm``): metadata tarball + qcow2 disk.

Everything is deterministic: fixed creation dates (the version name incus-simplestreams makes
from them is read in UTC here), fixed tar and gzip times, reproducible squashfs with fixed
times, so the fingerprints are the same on every run and machine with the same tools.

What ``incus image list NAME: --format json`` (incus 6.0.4, a simplestreams remote, on an
x86_64 machine) reports for this tree, observed on it (tests/test_streams_tree.py checks it;
the code is lxc/incus shared/simplestreams/products.go ``ToAPI`` and simplestreams.go
``applyAliases``):

* One image per product version and file combination: the version with metadata + squashfs +
  qcow2 is two images, a container (fingerprint sha256(metadata + squashfs)) and a
  virtual-machine (sha256(metadata + qcow2)); a unified image's fingerprint is its tarball's
  sha256. Six images here. Listed in the order ``applyAliases`` sorts them: by os, release,
  variant, then version newest first, architecture, then type (squashfs, root.tar.xz,
  disk-kvm.img, ...).
* ``architecture``: Incus's name (``x86_64``, ``aarch64``), from the product's ``arch``
  (``amd64``, ``arm64``) through shared/osarch.
* ``size``: the sum of the image's files: metadata + squashfs (4096 + ~225 bytes here) or
  metadata + qcow2 for a split image, the tarball alone for a unified one.
* ``aliases`` (each ``{"name": ..., "description": ""}``), in this order: for each alias
  ``A`` of the product, in the catalogue's order, the bare ``A`` (only on images of the
  machine's architecture) then ``A/<arch>`` with the architecture as the CATALOGUE spells it.
  The amd64 container of ``tiny:split:default:amd64`` lists ``tiny/split/default``,
  ``tiny/split/default/amd64``, ``tiny/split``, ``tiny/split/amd64``; the arm64 one lists only
  ``tiny/split/default/arm64`` and ``tiny/split/arm64`` (never ``.../aarch64``). The VM of
  the same version lists exactly the same four aliases as the container: an alias is unique
  per (name, type, Incus architecture), not per name.
* Only the newest version of a product (per type and architecture) carries aliases: each
  alias goes to the first image, in the sorted order above, with its (name, type,
  architecture). ``unified-old`` lists ``"aliases": null`` (JSON null, not ``[]``).
* ``type``: ``container`` or ``virtual-machine``.
* ``properties``: ``os``, ``release``, ``variant``, ``architecture`` (catalogue spelling,
  ``amd64``), ``serial`` (the version name: ``202311142213``; the metadata's own ``serial``
  is not in the catalogue), ``description`` (``"<os> <release_title> <arch> (<version>)"``:
  ``"tiny split amd64 (202311142213)"``) and ``type``, the rootfs's ftype: ``squashfs``,
  ``disk-kvm.img``, and ``tar.gz`` for a unified image (not ``incus_combined.tar.gz``).
* ``created_at`` and ``uploaded_at``: midnight UTC of the date the version name starts with
  (``2023-11-14T00:00:00Z``); ``expires_at`` ``1970-01-01T00:00:00Z``; ``last_used_at``
  ``0001-01-01T00:00:00Z``; ``public`` true; ``auto_update`` and ``cached`` false;
  ``profiles`` null; ``project`` ""; ``filename`` the metadata file's base name.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
from simplestreams_server import cli_environment
from tiny_image import metadata_yaml

from tests.helpers import sha256

ImageType = Literal["container", "virtual-machine"]

#: The one time every file in the tree carries (tar members, gzip headers, squashfs).
FIXED_MTIME = 1_700_000_000

#: The commands the tree needs, and the Debian package of each (the CLI listing needs
#: ``incus`` too, see cli_image_list).
TOOLS = {"incus-simplestreams": "incus-extra", "mksquashfs": "squashfs-tools"}

#: Incus's name of each catalogue architecture used here (lxc/incus shared/osarch).
INCUS_ARCHITECTURES = {"amd64": "x86_64", "arm64": "aarch64"}


class ToolMissing(RuntimeError):
    """A command the tree needs is not installed; the message names its package."""


def missing_tools() -> list[str]:
    """The needed commands that are not on PATH, each with its Debian package."""
    return [f"{tool} (package {pkg})" for tool, pkg in TOOLS.items() if shutil.which(tool) is None]


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise ToolMissing("the simplestreams tree needs " + ", ".join(missing))


@attrs.frozen
class TreeFile:
    """One file of an image, as the catalogue lists it."""

    ftype: str
    path: str  # relative to the tree root
    size: int
    sha256: str


@attrs.frozen
class TreeImage:
    """One image of the tree: what a catalogue reader must find."""

    key: str
    fingerprint: str
    type: ImageType
    #: Incus's architecture name (``x86_64``, ``aarch64``).
    architecture: str
    #: The product's ``arch`` as the catalogue spells it (``amd64``, ``arm64``).
    catalogue_architecture: str
    #: ``os:release:variant:arch``.
    product: str
    #: The version name (``YYYYMMDDhhmm`` from the creation date, UTC).
    version: str
    #: The product's aliases, as given to incus-simplestreams (default alias first).
    aliases: tuple[str, ...]
    #: The sum of the files' sizes (what the CLI reports as ``size``).
    size: int
    #: The metadata (or unified tarball) first, then the rootfs or disk, if any.
    files: tuple[TreeFile, ...]
    properties: Mapping[str, str]
    creation_date: int


@attrs.frozen
class StreamsTree:
    """A simplestreams tree on disk and the images in it."""

    path: Path
    images: tuple[TreeImage, ...]

    def image(self, key: str) -> TreeImage:
        """The image with this key (``unified``, ``unified-old``, ``split``, ``split-vm``,
        ``split-arm64``, ``vm``)."""
        for image in self.images:
            if image.key == key:
                return image
        raise KeyError(f"no image {key!r}; there are {[i.key for i in self.images]}")

    @property
    def fingerprints(self) -> set[str]:
        return {image.fingerprint for image in self.images}


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def _tar(members: Sequence[tuple[str, bytes | None]]) -> bytes:
    """An uncompressed tar of directories (data None) and files, with fixed times and
    owners (deterministic)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mtime = FIXED_MTIME
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _payload(key: str, size: int = 256) -> bytes:
    """Bytes unique to one image (so no two images share a fingerprint), the same each run."""
    seed = hashlib.sha256(key.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


def qcow2_image(virtual_size: int = 1 << 20) -> bytes:
    """A valid, empty qcow2 (version 3) disk of ``virtual_size`` bytes, 16 KiB on disk: what
    ``qemu-img create -f qcow2 -o cluster_size=4096`` writes, without qemu-img.

    Four 4 KiB clusters: the header, the refcount table, one refcount block (16-bit
    refcounts, each of the four clusters used once), and the L1 table (all zero: nothing
    allocated, the disk reads as zeros). incus-simplestreams recognises a disk by its
    ``QFI\\xfb`` magic only; incusd and qemu-img read the rest.
    """
    cluster_bits = 12
    cluster = 1 << cluster_bits
    per_l2 = (cluster // 8) * cluster  # bytes one L2 table maps
    l1_size = max(1, -(-virtual_size // per_l2))
    if l1_size * 8 > cluster:
        raise ValueError(f"virtual_size {virtual_size} needs more than one L1 cluster")
    refcount_table, refcount_block, l1_table = cluster, 2 * cluster, 3 * cluster
    header = b"".join(
        [
            b"QFI\xfb",
            (3).to_bytes(4, "big"),  # version
            (0).to_bytes(8, "big"),  # backing_file_offset
            (0).to_bytes(4, "big"),  # backing_file_size
            cluster_bits.to_bytes(4, "big"),
            virtual_size.to_bytes(8, "big"),
            (0).to_bytes(4, "big"),  # crypt_method
            l1_size.to_bytes(4, "big"),
            l1_table.to_bytes(8, "big"),
            refcount_table.to_bytes(8, "big"),
            (1).to_bytes(4, "big"),  # refcount_table_clusters
            (0).to_bytes(4, "big"),  # nb_snapshots
            (0).to_bytes(8, "big"),  # snapshots_offset
            (0).to_bytes(8, "big"),  # incompatible_features
            (0).to_bytes(8, "big"),  # compatible_features
            (0).to_bytes(8, "big"),  # autoclear_features
            (4).to_bytes(4, "big"),  # refcount_order: 16-bit refcounts
            (104).to_bytes(4, "big"),  # header_length
            (0).to_bytes(8, "big"),  # end of header extensions
        ]
    )
    image = bytearray(4 * cluster)
    image[: len(header)] = header
    image[refcount_table : refcount_table + 8] = refcount_block.to_bytes(8, "big")
    for index in range(4):
        offset = refcount_block + 2 * index
        image[offset : offset + 2] = (1).to_bytes(2, "big")
    return bytes(image)


def squashfs_image(directory: Path, files: Mapping[str, bytes]) -> bytes:
    """A squashfs filesystem of ``files`` (relative names), reproducible, made with mksquashfs
    in ``directory`` (a scratch directory)."""
    source = directory / "squashfs-source"
    source.mkdir()
    for name, data in files.items():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    out = directory / "rootfs.squashfs"
    options = ["-noappend", "-no-xattrs", "-all-root", "-quiet", "-no-progress"]
    times = ["-mkfs-time", str(FIXED_MTIME), "-all-time", str(FIXED_MTIME)]
    command = ["mksquashfs", str(source), str(out), *options, *times, "-processors", "1"]
    subprocess.run(command, check=True, capture_output=True)
    data = out.read_bytes()
    shutil.rmtree(source)
    out.unlink()
    return data


@attrs.frozen
class _Spec:
    key: str
    release: str
    arch: str  # catalogue spelling
    kind: Literal["unified", "squashfs", "qcow2"]
    creation_date: int


#: The images of the tree, in the order they are added (``split-vm`` after ``split``, whose
#: version and metadata it shares).
TREE_IMAGES = (
    _Spec("unified", "unified", "amd64", "unified", FIXED_MTIME),
    _Spec("unified-old", "unified", "amd64", "unified", FIXED_MTIME - 86_400),
    _Spec("split", "split", "amd64", "squashfs", FIXED_MTIME),
    _Spec("split-vm", "split", "amd64", "qcow2", FIXED_MTIME),
    _Spec("split-arm64", "split", "arm64", "squashfs", FIXED_MTIME),
    _Spec("vm", "vm", "amd64", "qcow2", FIXED_MTIME + 86_400),
)


def _properties(spec: _Spec) -> dict[str, str]:
    return {
        "os": "tiny",
        "release": spec.release,
        "variant": "default",
        "architecture": spec.arch,
        "description": f"tiny {spec.release} {spec.arch}",
        "serial": "1",
    }


def _metadata(spec: _Spec, properties: Mapping[str, str]) -> bytes:
    architecture = INCUS_ARCHITECTURES[spec.arch]
    text = metadata_yaml(properties, architecture=architecture, creation_date=spec.creation_date)
    if spec.kind == "unified":
        rootfs = [("rootfs", None), ("rootfs/payload.bin", _payload(spec.key))]
        return _gzip(_tar([("metadata.yaml", text), *rootfs]))
    return _gzip(_tar([("metadata.yaml", text)]))


def _run_add(tree: Path, files: Sequence[Path], aliases: Sequence[str]) -> None:
    args = ["incus-simplestreams", "add", *map(str, files)]
    for alias in aliases:
        args += ["--alias", alias]
    # The version name is the creation date formatted in local time: UTC, the same everywhere.
    env = {**os.environ, "TZ": "UTC"}
    result = subprocess.run(args, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")


def build_tree(directory: str | Path) -> StreamsTree:
    """Build the tree (``TREE_IMAGES``) in ``directory`` (made if missing, must be empty) with
    incus-simplestreams, and return what is in it, read back from its images.json.

    Raises ToolMissing when incus-simplestreams or mksquashfs is not installed.
    """
    require_tools()
    tree = Path(directory)
    tree.mkdir(parents=True, exist_ok=True)
    if any(tree.iterdir()):
        raise ValueError(f"{tree} is not empty")
    built: list[TreeImage] = []
    metadata_of: dict[tuple[str, int], bytes] = {}
    with tempfile.TemporaryDirectory(prefix="streams-tree-") as scratch_name:
        scratch = Path(scratch_name)
        for spec in TREE_IMAGES:
            properties = _properties(spec)
            product = f"tiny:{spec.release}:default:{spec.arch}"
            # A VM added to an existing product version must bring the same metadata.
            metadata = metadata_of.setdefault(
                (product, spec.creation_date), _metadata(spec, properties)
            )
            meta_file = scratch / f"{spec.key}.meta"
            meta_file.write_bytes(metadata)
            extra = (f"tiny/{spec.release}",)
            if spec.kind == "unified":
                _run_add(tree, [meta_file], extra)
                rootfs = None
                fingerprint = sha256(metadata)
                image_type: ImageType = "container"
            else:
                if spec.kind == "squashfs":
                    rootfs = squashfs_image(scratch, {"payload.bin": _payload(spec.key)})
                    image_type = "container"
                else:
                    rootfs = qcow2_image()
                    image_type = "virtual-machine"
                root_file = scratch / f"{spec.key}.root"
                root_file.write_bytes(rootfs)
                _run_add(tree, [meta_file, root_file], extra)
                fingerprint = sha256(metadata + rootfs)
            built.append(
                _read_back(tree, spec, product, fingerprint, image_type, properties, rootfs)
            )
    return StreamsTree(path=tree, images=tuple(built))


def _read_back(
    tree: Path,
    spec: _Spec,
    product: str,
    fingerprint: str,
    image_type: ImageType,
    properties: Mapping[str, str],
    rootfs: bytes | None,
) -> TreeImage:
    """The image as images.json now lists it, checked against what was added."""
    products = json.loads((tree / "streams/v1/images.json").read_text())["products"]
    entry = products[product]
    version = time.strftime("%Y%m%d%H%M", time.gmtime(spec.creation_date))
    items = entry["versions"][version]["items"]
    if spec.kind == "unified":
        wanted = ["incus_combined.tar.gz"]
    else:
        wanted = ["incus.tar.xz", "squashfs" if spec.kind == "squashfs" else "disk-kvm.img"]
    files = tuple(
        TreeFile(
            ftype=items[k]["ftype"],
            path=items[k]["path"],
            size=items[k]["size"],
            sha256=items[k]["sha256"],
        )
        for k in wanted
    )
    for file in files:
        data = (tree / file.path).read_bytes()
        assert (len(data), sha256(data)) == (file.size, file.sha256), file
    if rootfs is not None:
        assert files[1].sha256 == sha256(rootfs)
        combined = {"squashfs": "combined_squashfs_sha256", "qcow2": "combined_disk-kvm-img_sha256"}
        combined_field = combined[spec.kind]
        assert items["incus.tar.xz"][combined_field] == fingerprint, (items, fingerprint)
    else:
        assert files[0].sha256 == fingerprint
    return TreeImage(
        key=spec.key,
        fingerprint=fingerprint,
        type=image_type,
        architecture=INCUS_ARCHITECTURES[spec.arch],
        catalogue_architecture=spec.arch,
        product=product,
        version=version,
        aliases=tuple(entry["aliases"].split(",")),
        size=sum(file.size for file in files),
        files=files,
        properties=dict(properties),
        creation_date=spec.creation_date,
    )


@attrs.frozen
class CliListing:
    """What ``incus image list NAME: --format json`` printed, parsed, and how long it took
    (that command alone, not the ``remote add`` before it)."""

    images: list[dict[str, Any]]
    seconds: float


def cli_image_list(
    url: str, certificate_pem: str, *, name: str = "tree", timeout: float = 120.0
) -> CliListing:
    """The incus CLI's listing of the simplestreams server at ``url``, cold: ``incus image
    list NAME: --format json`` in a fresh environment (``cli_environment`` of
    scripts/simplestreams_server.py: a new remote, no cached catalogue).
    """
    if shutil.which("incus") is None:
        raise ToolMissing("the incus CLI (package incus-client) is not installed")
    with tempfile.TemporaryDirectory(prefix="incus-cli-") as scratch:
        env = cli_environment(scratch, url, certificate_pem, name=name, timeout=timeout)
        args = ["incus", "image", "list", f"{name}:", "--format", "json"]
        started = time.perf_counter()
        result = subprocess.run(
            args, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    images = json.loads(result.stdout)
    if not isinstance(images, list):
        raise RuntimeError(f"incus image list printed {type(images).__name__}, not a list")
    return CliListing(images=images, seconds=seconds)
