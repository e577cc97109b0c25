"""A simplestreams catalogue read into Incus's models, as incus reads it.

The catalogue is ``streams/v1/index.json``, which names the products files (``datatype``
``image-downloads``), and those files, which describe products (an os, release, variant and
architecture, with aliases), their versions (named by date) and each version's items (files).
What an image is, its fingerprint, size, properties and dates, and which image an alias
names, follow lxc/incus (shared/simplestreams/products.go ``ToAPI``, simplestreams.go
``applyAliases``, sort.go) for incus 6.0:

* A product whose architecture incus does not know is skipped, and so is a version whose name
  does not start with a date (``YYYYMMDD``, the image's creation date).
* An image is an ``incus_combined.tar.gz`` item (a unified image, whose ``sha256`` is the
  fingerprint), or an ``incus.tar.xz`` item (the metadata) with one of the root items
  (``squashfs``, ``root.tar.xz``: a container; ``disk-kvm.img``, ``uefi1.img``,
  ``disk1.img``: a virtual machine), whose fingerprint is the metadata item's
  ``combined_*_sha256`` for that root. An image without one is skipped.
* Every product alias names, per image type and architecture, the newest version's image
  (the preferred root type, squashfs first, when a version has several): as it is, and with
  the catalogue's architecture name appended (``debian/12/arm64``). An image lists the
  appended aliases it got, and the bare ones too when it is of this machine's architecture.

Everything the server sent is checked here (the trust boundary): a field of the wrong JSON
type fails the whole catalogue with a :class:`CatalogueError` naming the product, version and
item, as incus's JSON decoder fails it; fingerprints are 64 hex digits. File paths and hashes
are checked when an image is downloaded (``download``): a hostile path spoils its own image,
not the listing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import attrs

from .._architectures import incus_architecture
from .._models import Image, ImageAlias

__all__ = [
    "AliasEntry",
    "Catalogue",
    "CatalogueError",
    "ImageFile",
    "build_catalogue",
    "products_paths",
]

#: The index's path below the server's URL.
INDEX_PATH = "streams/v1/index.json"
#: Products files one catalogue may name (the public servers name one).
MAX_PRODUCTS_FILES = 16

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
#: The largest size a Go int64 holds.
_MAX_SIZE = 2**63 - 1

#: The root item types, and the metadata item's field holding the fingerprint for each.
_ROOT_TYPES: dict[str, tuple[str, ...]] = {
    "squashfs": ("combined_squashfs_sha256",),
    "root.tar.xz": ("combined_rootxz_sha256", "combined_sha256"),
    "disk-kvm.img": ("combined_disk-kvm-img_sha256",),
    "uefi1.img": ("combined_uefi1-img_sha256",),
    "disk1.img": ("combined_disk1-img_sha256",),
}
_VM_ROOT_TYPES = frozenset({"disk-kvm.img", "uefi1.img", "disk1.img"})
#: Root types in incus's order of preference, when one version offers several.
_PREFERRED_ROOTS = ("squashfs", "root.tar.xz", "disk-kvm.img", "uefi1.img", "disk1.img")

_METADATA = "incus.tar.xz"
_UNIFIED = "incus_combined.tar.gz"

#: The JSON types of the fields incus reads (Go's decoder refuses any other).
_PRODUCT_FIELDS: dict[str, type] = {
    "aliases": str,
    "arch": str,
    "os": str,
    "release": str,
    "release_codename": str,
    "release_title": str,
    "supported": bool,
    "support_eol": str,
    "version": str,
    "variant": str,
    "requirements": dict,
    "versions": dict,
}
_VERSION_FIELDS: dict[str, type] = {"items": dict, "label": str, "pubname": str}
_ITEM_FIELDS: dict[str, type] = {
    "ftype": str,
    "path": str,
    "sha256": str,
    "md5": str,
    "size": int,
    "delta_base": str,
    **dict.fromkeys(
        [
            "combined_sha256",
            "combined_rootxz_sha256",
            "combined_squashfs_sha256",
            "combined_disk-kvm-img_sha256",
            "combined_uefi1-img_sha256",
            "combined_disk1-img_sha256",
        ],
        str,
    ),
}


class CatalogueError(ValueError):
    """A catalogue that is not what a simplestreams server sends (the message says where)."""


Role = Literal["unified", "metadata", "rootfs"]


@attrs.frozen
class ImageFile:
    """One file of an image, as the catalogue describes it (unchecked until downloaded)."""

    role: Role
    #: The path below the server's URL, as given.
    path: str
    #: The SHA-256 the catalogue gives ("" when none).
    sha256: str
    size: int


@attrs.frozen
class AliasEntry:
    """An alias of the catalogue: a name for one image of one type and architecture."""

    name: str
    type: str
    #: The Incus name of the image's architecture.
    architecture: str
    target: str


@attrs.frozen
class Catalogue:
    """What a catalogue holds: its images (in incus's order: os, release, variant, newest
    version first, architecture), each image's files, and its aliases."""

    images: tuple[Image, ...]
    files: Mapping[str, tuple[ImageFile, ...]]
    aliases: tuple[AliasEntry, ...]
    #: This machine's architecture, as the aliases were made for it.
    local_architecture: str


# --------------------------------------------------------------------------------------------
# The index.


def products_paths(index: Any) -> list[str]:
    """The products files the index names (``image-downloads`` with products), in order,
    each once."""
    if not isinstance(index, dict):
        raise CatalogueError(f"the index is a JSON {_json_type(index)}, not an object")
    entries = _typed(index, "index", dict, "the index", default={})
    paths: list[str] = []
    for name, entry in entries.items():
        where = f"index entry {name!r:.100}"
        if not isinstance(entry, dict):
            raise CatalogueError(f"{where} is a JSON {_json_type(entry)}, not an object")
        datatype = _typed(entry, "datatype", str, where, default="")
        path = _typed(entry, "path", str, where, default="")
        products = _typed(entry, "products", list, where, default=[])
        if any(not isinstance(product, str) for product in products):
            raise CatalogueError(f"{where}: 'products' holds something that is not a string")
        if datatype != "image-downloads" or not products or path in paths:
            continue
        paths.append(path)
        if len(paths) > MAX_PRODUCTS_FILES:
            raise CatalogueError(
                f"the index names more than {MAX_PRODUCTS_FILES} products files; a "
                "simplestreams server names one or two"
            )
    return paths


# --------------------------------------------------------------------------------------------
# Products.


@attrs.frozen
class _Found:
    """An image found in a products file, with what ordering and aliases need."""

    image: Image
    files: tuple[ImageFile, ...]
    alias_names: tuple[str, ...]
    #: The catalogue's architecture name (``arm64``), appended to aliases.
    catalogue_architecture: str
    root_type: str


def build_catalogue(products_files: list[Any], *, local_architecture: str) -> Catalogue:
    """The catalogue of these products files (parsed JSON, each checked here)."""
    found: list[_Found] = []
    for data in products_files:
        found.extend(_read_products(data))
    _sort_as_incus(found)
    images: list[Image] = []
    files: dict[str, tuple[ImageFile, ...]] = {}
    entries: list[AliasEntry] = []
    taken: set[tuple[str, str, str]] = set()
    for item in found:
        image = item.image
        if image.fingerprint in files:
            continue  # the same image twice (two products files): listed once
        files[image.fingerprint] = item.files
        aliases: list[ImageAlias] = []
        for name in item.alias_names:
            bare = (name, image.type, image.architecture)
            if bare not in taken:
                taken.add(bare)
                entries.append(AliasEntry(name, image.type, image.architecture, image.fingerprint))
                if image.architecture == local_architecture:
                    aliases.append(_alias(name, image))
            appended = f"{name}/{item.catalogue_architecture}"
            key = (appended, image.type, image.architecture)
            if key not in taken:
                taken.add(key)
                entries.append(
                    AliasEntry(appended, image.type, image.architecture, image.fingerprint)
                )
                aliases.append(_alias(appended, image))
        # The image was made here a moment ago: its list is no one else's yet.
        image.aliases.extend(aliases)
        images.append(image)
    return Catalogue(
        images=tuple(images),
        files=files,
        aliases=tuple(entries),
        local_architecture=local_architecture,
    )


def _alias(name: str, image: Image) -> ImageAlias:
    return ImageAlias(name=name, target=image.fingerprint, type=image.type)


def _sort_as_incus(found: list[_Found]) -> None:
    """incus's order of images (sort.go): by os, release, variant, then the newest version
    first, then architecture; within one version, the preferred root type first. Three
    stable sorts, least significant first (a comparison function costs ten times more)."""
    found.sort(
        key=lambda item: (
            item.image.properties.get("architecture", ""),
            _root_score(item.root_type),
            # Not incus's (its sort is not stable): the same order on every run.
            item.image.fingerprint,
        )
    )
    found.sort(key=lambda item: item.image.properties.get("serial", ""), reverse=True)
    found.sort(key=_grouping)


def _grouping(item: _Found) -> tuple[str, str, str]:
    """What incus groups images by: os, release, variant."""
    properties = item.image.properties
    return properties.get("os", ""), properties.get("release", ""), properties.get("variant", "")


def _root_score(root_type: str) -> int:
    return _PREFERRED_ROOTS.index(root_type) if root_type in _PREFERRED_ROOTS else 0


def _read_products(data: Any) -> list[_Found]:
    if not isinstance(data, dict):
        raise CatalogueError(f"a products file is a JSON {_json_type(data)}, not an object")
    products = _typed(data, "products", dict, "the products file", default={})
    found: list[_Found] = []
    for key, product in products.items():
        # Where a failure is, said only when one happens (naming every item costs time).
        place: list[str] = [f"product {key!r:.200}"]
        try:
            checked = _check_product(product, place)
        except CatalogueError as exc:
            raise CatalogueError(f"{', '.join(place)}{exc}") from None
        if checked is not None:
            found.extend(checked.images(key))
    return found


def _check_product(product: Any, place: list[str]) -> _Product | None:
    """The product's fields checked (``place`` names what is being checked), or None when
    incus skips the product."""
    fields = _fields(product, _PRODUCT_FIELDS)
    for name, value in fields.get("requirements", {}).items():
        if not isinstance(value, str):
            raise CatalogueError(
                f": requirement {name!r:.100} is a JSON {_json_type(value)}, not a string"
            )
    versions: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]] = {}
    for name, version in fields.get("versions", {}).items():
        place[1:] = [f"version {name!r:.100}"]
        version_fields = _fields(version, _VERSION_FIELDS)
        items = {}
        for item_name, item in version_fields.get("items", {}).items():
            place[2:] = [f"item {item_name!r:.100}"]
            items[item_name] = checked = _fields(item, _ITEM_FIELDS)
            size = checked.get("size", 0)
            if not 0 <= size <= _MAX_SIZE:
                raise CatalogueError(f": size {size} is not a file's size")
        versions[name] = (version_fields, items)
    del place[1:]
    architecture = incus_architecture(fields.get("arch", ""))
    if architecture is None:
        return None  # as incus: a product of an architecture it does not know is skipped
    return _Product(fields, architecture, versions)


class _Product:
    """A checked product, and what its images share."""

    def __init__(
        self,
        fields: dict[str, Any],
        architecture: str,
        versions: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]],
    ) -> None:
        self.architecture = architecture
        self.versions = versions
        self.catalogue_architecture = fields.get("arch", "")
        self.variant = fields.get("variant", "")
        self.expires = _end_of_life(fields.get("support_eol", ""))
        self.aliases = tuple(name for name in fields.get("aliases", "").split(",") if name)
        self.description = (
            f"{fields.get('os', '')} {fields.get('release_title', '')} "
            f"{self.catalogue_architecture}"
        )
        self.properties = {
            "os": fields.get("os", ""),
            "release": fields.get("release", ""),
            "version": fields.get("version", ""),
            "architecture": self.catalogue_architecture,
        }

        self.requirements = {
            f"requirements.{key}": value for key, value in fields.get("requirements", {}).items()
        }

    def images(self, key: str) -> list[_Found]:
        found: list[_Found] = []
        for name, (version, items) in self.versions.items():
            created = _creation_date(name)
            if created is None:
                continue  # as incus: a version not named by a date is skipped
            for item_name, item in items.items():
                ftype = item.get("ftype")
                if ftype == _UNIFIED:
                    found.extend(self._image(name, version, created, item, None))
                elif ftype == _METADATA:
                    for root in items.values():
                        if root.get("ftype") in _ROOT_TYPES:
                            try:
                                found.extend(self._image(name, version, created, item, root))
                            except CatalogueError as exc:
                                raise CatalogueError(
                                    f"product {key!r:.200}, version {name!r:.100}, item "
                                    f"{item_name!r:.100}: {exc}"
                                ) from None
        return found

    def _image(
        self,
        name: str,
        version: dict[str, Any],
        created: datetime,
        meta: dict[str, Any],
        root: dict[str, Any] | None,
    ) -> list[_Found]:
        """The image of these items (none when incus would skip it)."""
        if root is None:
            fingerprint = meta.get("sha256", "")
            root_type = "tar.gz"
            vm = False  # (incus 7 reads a unified VM's combined_type; 6.0 does not)
        else:
            root_type = root["ftype"]
            fingerprint = next((meta[key] for key in _ROOT_TYPES[root_type] if meta.get(key)), "")
            vm = root_type in _VM_ROOT_TYPES
        if not fingerprint or not meta.get("path"):
            return []
        if not _HEX64.fullmatch(fingerprint):
            raise CatalogueError(
                f"the fingerprint {fingerprint!r:.100} is not a SHA-256 (64 hex digits)"
            )
        fingerprint = fingerprint.lower()
        label = version.get("label", "")
        description = self.description
        if label:
            description += f" ({label})"
        properties = {
            **self.properties,
            "label": label,
            "serial": name,
            "description": f"{description} ({name})",
            **self.requirements,
            "variant": self.variant,
            "type": root_type,
        }
        metadata = ImageFile(
            "unified" if root is None else "metadata",
            meta["path"],
            meta.get("sha256", ""),
            meta.get("size", 0),
        )
        files: tuple[ImageFile, ...] = (metadata,)
        if root is not None:
            files = (
                metadata,
                ImageFile(
                    "rootfs", root.get("path", ""), root.get("sha256", ""), root.get("size", 0)
                ),
            )
        image = Image(
            fingerprint=fingerprint,
            filename=meta["path"].split("/")[-1],
            size=sum(file.size for file in files),
            architecture=self.architecture,
            type="virtual-machine" if vm else "container",
            public=True,
            properties={key: value for key, value in properties.items() if value},
            created_at=created,
            uploaded_at=created,
            expires_at=self.expires,
        )
        return [_Found(image, files, self.aliases, self.catalogue_architecture, root_type)]


def _creation_date(version: str) -> datetime | None:
    """The date a version's name starts with (incus's creation date), or None."""
    head = version[:8]
    if len(head) != 8 or not head.isascii() or not head.isdigit():
        return None
    return _date(int(head[:4]), int(head[4:6]), int(head[6:8]))


def _date(year: int, month: int, day: int) -> datetime | None:
    try:
        return datetime(year, month, day, tzinfo=UTC)
    except ValueError:
        return None


#: What incus gives as the expiry of an image whose product gives no end of support.
_NO_END_OF_LIFE = datetime(1970, 1, 1, tzinfo=UTC)


@functools.lru_cache(maxsize=1024)
def _end_of_life(text: str) -> datetime:
    """A product's ``support_eol`` (``YYYY-MM-DD``); the Unix epoch when it gives none, or
    none incus reads, as incus sets it (``incus image list --format json`` shows it)."""
    parts = text.split("-")
    if len(parts) == 3 and all(part.isascii() and part.isdigit() for part in parts):
        year, month, day = parts
        if (len(year), len(month), len(day)) == (4, 2, 2):
            return _date(int(year), int(month), int(day)) or _NO_END_OF_LIFE
    return _NO_END_OF_LIFE


def _fields(data: Any, types: dict[str, type]) -> dict[str, Any]:
    """The fields incus reads of a JSON object, each of its JSON type (null counts as
    absent, as in Go); else CatalogueError saying which is not (the caller says where)."""
    if not isinstance(data, dict):
        raise CatalogueError(f" is a JSON {_json_type(data)}, not an object")
    checked = {}
    for key, value in data.items():
        kind = types.get(key)
        if kind is None or value is None:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CatalogueError(
                f": {key!r} is a JSON {_json_type(value)}, not {_JSON_NAMES[kind]}"
            )
        checked[key] = value
    return checked


def _typed(data: dict[str, Any], key: str, kind: type, where: str, *, default: Any) -> Any:
    value = data.get(key)
    if value is None:
        return default
    # bool is an int to Python, not to JSON; a float is no JSON integer to Go.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CatalogueError(
            f"{where}: {key!r} is a JSON {_json_type(value)}, not {_JSON_NAMES[kind]}"
        )
    return value


_JSON_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    bool: "a boolean",
    dict: "an object",
    list: "an array",
}


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"
