"""Simplestreams catalogues for tests: products built item by item, as real servers write
them (images.linuxcontainers.org's layout), with honest hashes unless a test lies."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def sha(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
    return digest.hexdigest()


def item(ftype: str, path: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"ftype": ftype, "path": path, "sha256": sha(data), "size": len(data), **extra}


def split_items(
    folder: str, metadata: bytes, rootfs: bytes, root_type: str = "squashfs"
) -> dict[str, dict[str, Any]]:
    """A split image's items: ``incus.tar.xz`` and a root of ``root_type``."""
    field = {
        "squashfs": "combined_squashfs_sha256",
        "root.tar.xz": "combined_rootxz_sha256",
        "disk-kvm.img": "combined_disk-kvm-img_sha256",
    }[root_type]
    name = {"squashfs": "rootfs.squashfs", "root.tar.xz": "rootfs.tar.xz"}.get(
        root_type, "disk.qcow2"
    )
    meta = item(
        "incus.tar.xz", f"{folder}/incus.tar.xz", metadata, **{field: sha(metadata, rootfs)}
    )
    return {"incus.tar.xz": meta, root_type: item(root_type, f"{folder}/{name}", rootfs)}


def merged(*sets: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The items of one version offering several roots for one metadata file (as real
    servers offer squashfs and root.tar.xz, or a container and a VM, from one
    ``incus.tar.xz``): the metadata item holds every root's combined hash."""
    items: dict[str, dict[str, Any]] = {}
    for each in sets:
        for name, entry in each.items():
            items[name] = {**items.get(name, {}), **entry}
    return items


def unified_items(folder: str, data: bytes) -> dict[str, dict[str, Any]]:
    return {"incus_combined.tar.gz": item("incus_combined.tar.gz", f"{folder}/image.tar.gz", data)}


def product(
    aliases: str,
    versions: dict[str, dict[str, dict[str, Any]]],
    *,
    os: str = "debian",
    release: str = "12",
    arch: str = "amd64",
    variant: str = "default",
    **extra: Any,
) -> dict[str, Any]:
    """A product; ``versions`` maps a version name to its items."""
    return {
        "aliases": aliases,
        "arch": arch,
        "os": os,
        "release": release,
        "release_title": "bookworm",
        "variant": variant,
        "versions": {name: {"items": items} for name, items in versions.items()},
        **extra,
    }


def products_file(products: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "content_id": "images",
        "datatype": "image-downloads",
        "format": "products:1.0",
        "products": products,
    }


def index_file(
    path: str = "streams/v1/images.json", products: list[str] | None = None
) -> dict[str, Any]:
    return {
        "format": "index:1.0",
        "index": {
            "images": {
                "datatype": "image-downloads",
                "path": path,
                "format": "products:1.0",
                "products": ["debian:12:amd64:default"] if products is None else products,
            }
        },
    }


def dumps(data: Any) -> bytes:
    return json.dumps(data).encode()
