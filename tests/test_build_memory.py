"""A build's client memory does not grow with the tree (issue 17): a memory bound, no timing.

Each build runs in a child process of its own (the test process's memory tells nothing) that
streams a tree into the session's throwaway daemon with ``images.create(ImageBuild...)`` and
prints its VmHWM (the peak resident memory of the whole process, interpreter and imports
included). A tree of 10^5 small files must stay under 64 MiB, and at most 16 MiB above a tree
of three files built the same way: what the walk keeps per file is bounded (no list of every
entry's contents, no tarball in memory). The bounds are generous (a real leak of even 200 bytes
a file is 20 MiB); a failure here is a real regression, not noise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import wait_raw

pytestmark = pytest.mark.incusd

MiB = 1024 * 1024
LIMIT = 64 * MiB
GROWTH = 16 * MiB
FILES = 100_000

CHILD = r"""
import asyncio, json, sys

from incus_images import AsyncClient, Client, Image, ImageBuild

flavour, root = sys.argv[1:]


def peak():
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise SystemExit("no VmHWM in /proc/self/status")


def build_sync():
    with Client() as client:  # found through INCUS_SOCKET
        image = client.images.create(ImageBuild.from_directory(root), wait=True)
    assert isinstance(image, Image)
    return image.fingerprint


async def build_async():
    async with AsyncClient() as client:
        image = await client.images.create(ImageBuild.from_directory(root), wait=True)
    assert isinstance(image, Image)
    return image.fingerprint


fingerprint = build_sync() if flavour == "sync" else asyncio.run(build_async())
print(json.dumps({"fingerprint": fingerprint, "peak": peak()}))
"""


def small_files(root: Path, count: int) -> Path:
    """count files of 100 bytes or so, 1,000 a directory."""
    root.mkdir()
    for number in range(count):
        directory = root / f"d{number // 1000:03}"
        if number % 1000 == 0:
            directory.mkdir()
        (directory / f"f{number:06}").write_bytes(b"%06d" % number * 16)
    return root


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("trees")
    return {"three": small_files(base / "three", 3), "many": small_files(base / "many", FILES)}


def build_in_child(incusd: Any, raw_api: httpx.Client, flavour: str, root: Path) -> int:
    """The child's peak RSS; the image it made is deleted."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("INCUS")}
    environment["INCUS_SOCKET"] = incusd.socket_path
    done = subprocess.run(
        [sys.executable, "-c", CHILD, flavour, str(root)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    wait_raw(raw_api, raw_api.delete(f"/1.0/images/{result['fingerprint']}"))
    return int(result["peak"])


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_build_of_100000_files_stays_under_64_mib_and_grows_at_most_16_mib(
    incusd: Any, raw_api: httpx.Client, trees: dict[str, Path], flavour: str
) -> None:
    three = build_in_child(incusd, raw_api, flavour, trees["three"])
    many = build_in_child(incusd, raw_api, flavour, trees["many"])
    shown = f"three files: {three / MiB:.1f} MiB, {FILES} files: {many / MiB:.1f} MiB"
    print(f"{flavour}: {shown}")  # the figures, with pytest -s
    assert many < LIMIT, shown
    assert many - three <= GROWTH, shown
