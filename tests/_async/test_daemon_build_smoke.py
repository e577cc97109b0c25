"""A smoke test of create(ImageBuild) against a real incusd (the session's throwaway daemon),
in both flavours: incusd takes the streamed tarball and stores the bytes write() writes.
(The thorough real-daemon tests of builds are in their own module.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from incus_images import AsyncClient, Image, ImageBuild

pytestmark = pytest.mark.anyio


async def test_a_streamed_build_is_stored_as_write_writes_it(
    daemon_client: AsyncClient, cleanup: list[str], tmp_path: Path
) -> None:
    root = tmp_path / "rootfs"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(os.urandom(200_000))
    (root / "bin" / "tool").chmod(0o4755)
    (root / "bin" / "sh").symlink_to("tool")
    (tmp_path / "hostname.tpl").write_text("{{ container.name }}\n")
    build = ImageBuild.from_directory(
        root,
        architecture="x86_64",
        properties={"os": "smoke", "description": tmp_path.name},
        templates={"/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"}},
        templates_dir=tmp_path,
        owner=(0, 0),
    )
    fingerprint = build.write(tmp_path / "image.tar.gz")
    reports: list[tuple[int, int | None]] = []
    image = await daemon_client.images.create(
        build, wait=True, progress=lambda done, total: reports.append((done, total))
    )
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    assert image.fingerprint == fingerprint
    assert image.architecture == "x86_64"
    assert image.type == "container"
    assert image.properties["os"] == "smoke"
    assert reports[-1] == ((tmp_path / "image.tar.gz").stat().st_size, None)
