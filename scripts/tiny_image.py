"""Build small, valid Incus images in memory (for tests, the demo and the README's quick start).

    python scripts/tiny_image.py image.tar.gz                   # a unified container image
    python scripts/tiny_image.py image.tar.gz -p os=debian -p release=12
    python scripts/tiny_image.py image.tar.gz --busybox         # one that really starts

Each image carries a random payload, so every call gives a new fingerprint. YAML is written
with JSON-quoted strings (valid YAML), so property text of any kind round-trips.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Mapping

DEFAULT_PROPERTIES = {"os": "tiny", "release": "1", "description": "incus_images tiny image"}


def metadata_yaml(
    properties: Mapping[str, str] | None = DEFAULT_PROPERTIES,
    *,
    architecture: str = "x86_64",
    creation_date: int | None = None,
) -> bytes:
    """metadata.yaml text; properties=None leaves the ``properties:`` map out entirely."""
    lines = [
        f"architecture: {json.dumps(architecture)}",
        f"creation_date: {creation_date or int(time.time())}",
    ]
    if properties is not None:
        lines.append("properties:" if properties else "properties: {}")
        lines.extend(
            f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in properties.items()
        )
    return ("\n".join(lines) + "\n").encode()


def _add(archive: tarfile.TarFile, name: str, data: bytes | None = None) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = int(time.time())
    if data is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        archive.addfile(info)
    else:
        info.size = len(data)
        info.mode = 0o644
        archive.addfile(info, io.BytesIO(data))


def _tarball(members: list[tuple[str, bytes | None]], compression: str = "gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}" if compression else "w") as archive:
        for name, data in members:
            _add(archive, name, data)
    return buffer.getvalue()


def unified_image(
    properties: Mapping[str, str] | None = DEFAULT_PROPERTIES,
    *,
    payload_size: int = 64,
    architecture: str = "x86_64",
) -> bytes:
    """A unified container image (tar.gz with metadata.yaml and rootfs/)."""
    return _tarball(
        [
            ("metadata.yaml", metadata_yaml(properties, architecture=architecture)),
            ("rootfs", None),
            ("rootfs/payload.bin", os.urandom(payload_size)),
        ]
    )


def split_image(
    properties: Mapping[str, str] | None = DEFAULT_PROPERTIES,
    *,
    payload_size: int = 64,
    architecture: str = "x86_64",
) -> tuple[bytes, bytes]:
    """A split container image: (metadata tar.gz, rootfs tar.gz)."""
    metadata = _tarball([("metadata.yaml", metadata_yaml(properties, architecture=architecture))])
    rootfs = _tarball([("payload.bin", os.urandom(payload_size))])
    return metadata, rootfs


#: Where Debian's busybox-static package puts its binary.
BUSYBOX = "/bin/busybox"

#: An init that lives until Incus stops it (incus stop sends SIGPWR).
_INIT = b"""#!/bin/sh
trap 'exit 0' PWR TERM INT
while :; do sleep 1 & wait $!; done
"""


def busybox_image(properties: Mapping[str, str] | None = None) -> bytes:
    """A unified container image that really starts: busybox-static as its whole userland
    (package busybox-static), an init that waits to be stopped, and a random marker file."""
    if not os.path.exists(BUSYBOX):
        raise FileNotFoundError(f"{BUSYBOX} is missing: install Debian's busybox-static package")
    with open(BUSYBOX, "rb") as file:
        busybox = file.read()
    applets = subprocess.run(
        [BUSYBOX, "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        _add(archive, "metadata.yaml", metadata_yaml(properties or {"os": "busybox"}))
        for directory in (
            "rootfs",
            "rootfs/bin",
            "rootfs/sbin",
            "rootfs/etc",
            "rootfs/dev",
            "rootfs/proc",
            "rootfs/sys",
            "rootfs/tmp",
            "rootfs/root",
            "rootfs/run",
        ):
            _add(archive, directory)
        info = tarfile.TarInfo("rootfs/bin/busybox")
        info.size, info.mode, info.mtime = len(busybox), 0o755, int(time.time())
        archive.addfile(info, io.BytesIO(busybox))
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"rootfs/bin/{applet}")
                link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
                archive.addfile(link)
        init = tarfile.TarInfo("rootfs/sbin/init")
        init.size, init.mode, init.mtime = len(_INIT), 0o755, int(time.time())
        archive.addfile(init, io.BytesIO(_INIT))
        _add(archive, "rootfs/root/marker", os.urandom(16).hex().encode())
    return buffer.getvalue()


def _property(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python scripts/tiny_image.py",
        description="Write a small, valid Incus container image (a unified tar.gz) to OUT.",
        epilog="Import it with Client().images.create(OUT, wait=True): its fingerprint is "
        "the SHA-256 this prints, new on every run (the image holds a random payload).",
    )
    parser.add_argument("out", metavar="OUT", help="the file to write, e.g. image.tar.gz")
    parser.add_argument(
        "-p",
        "--property",
        type=_property,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a property of metadata.yaml (repeatable; default: "
        + ", ".join(f"{key}={value}" for key, value in DEFAULT_PROPERTIES.items())
        + ")",
    )
    parser.add_argument(
        "--busybox",
        action="store_true",
        help=f"an image that really starts: {BUSYBOX} as its userland (Debian's busybox-static)",
    )
    args = parser.parse_args(argv)
    properties = dict(args.property) or None
    try:
        data = (
            busybox_image(properties)
            if args.busybox
            else unified_image(properties or DEFAULT_PROPERTIES)
        )
    except FileNotFoundError as exc:
        parser.exit(1, f"tiny_image.py: {exc}\n")
    with open(args.out, "wb") as out:
        out.write(data)
    print(f"wrote {args.out}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
