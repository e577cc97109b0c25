"""Constant memory: an image four times larger than the limit goes up and comes back.

Each flavour runs in a child process of its own (the test process's memory tells nothing),
against the session's throwaway daemon found through INCUS_SOCKET. Right after its imports the
child resets its peak RSS (``5`` into /proc/self/clear_refs resets VmHWM), uploads a 256 MiB
incompressible image from a path, exports it to a file, and prints its VmHWM: the peak resident
memory of the transfer, which must stay under 64 MiB.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tiny_image import metadata_yaml

from tests.helpers import wait_raw

MiB = 1024 * 1024
IMAGE_PAYLOAD = 256 * MiB
#: The peak RSS allowed to the child: the interpreter and its imports included.
LIMIT = 64 * MiB

CHILD = r"""
import asyncio, json, os, sys

from incus_images import AsyncClient, Client, Image


def status(key):
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise SystemExit(f"no {key} in /proc/self/status")


flavour, source, target = sys.argv[1:]
# A peak of 128 MiB before the reset, to show that the reset does reset it.
ballast = b"x" * (128 * 1024 * 1024)
del ballast
before_reset = status("VmHWM")
with open("/proc/self/clear_refs", "w") as file:
    file.write("5")  # VmHWM := current RSS
reset_to = status("VmHWM")


def transfer_sync():
    with Client() as client:  # found through INCUS_SOCKET
        image = client.images.create(source, wait=True)
        assert isinstance(image, Image)
        files = client.images.export(image.fingerprint, target)
    return image.fingerprint, files


async def transfer_async():
    async with AsyncClient() as client:
        image = await client.images.create(source, wait=True)
        assert isinstance(image, Image)
        files = await client.images.export(image.fingerprint, target)
    return image.fingerprint, files


fingerprint, files = transfer_sync() if flavour == "sync" else asyncio.run(transfer_async())
print(json.dumps({
    "fingerprint": fingerprint,
    "files": [str(path) for path in files],
    "before_reset": before_reset,
    "reset_to": reset_to,
    "peak": status("VmHWM"),
}))
"""


def _tar_member(name: str, size: int, directory: bool = False) -> bytes:
    info = tarfile.TarInfo(name)
    info.mtime = 1_700_000_000
    info.mode = 0o755 if directory else 0o644
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.size = 0 if directory else size
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def incompressible_image(payload_size: int) -> Iterator[bytes]:
    """A unified image as a plain tar (metadata.yaml first, then a random payload), in chunks:
    never more than a few MiB of it in memory."""
    metadata = metadata_yaml()
    yield _tar_member("metadata.yaml", len(metadata)) + metadata + _padding(len(metadata))
    yield _tar_member("rootfs", 0, directory=True)
    yield _tar_member("rootfs/payload.bin", payload_size)
    left = payload_size
    while left:
        chunk = os.urandom(min(left, 4 * MiB))
        left -= len(chunk)
        yield chunk
    yield _padding(payload_size) + b"\0" * (2 * tarfile.BLOCKSIZE)


@pytest.fixture(scope="module")
def big_image_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The 256 MiB image on disk, and its SHA-256."""
    path = tmp_path_factory.mktemp("memory") / "big-image.tar"
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for chunk in incompressible_image(IMAGE_PAYLOAD):
            digest.update(chunk)
            out.write(chunk)
    yield path, digest.hexdigest()
    path.unlink()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def delete_image(raw_api: httpx.Client, fingerprint: str) -> None:
    response = raw_api.delete(f"/1.0/images/{fingerprint}")
    if response.status_code != 404:
        wait_raw(raw_api, response)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_upload_and_export_of_a_256_mib_image_stay_under_64_mib(
    incusd: Any,
    raw_api: httpx.Client,
    big_image_file: tuple[Path, str],
    tmp_path: Path,
    flavour: str,
) -> None:
    source, expected = big_image_file
    assert source.stat().st_size > 4 * LIMIT  # the image is 4x larger than the limit
    target = tmp_path / "exported.tar"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "INCUS_SOCKET": incusd.socket_path}
    env.pop("INCUS_DIR", None)
    try:
        result = subprocess.run(
            [sys.executable, str(script), flavour, str(source), str(target)],
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout.strip().splitlines()[-1])
        assert report["fingerprint"] == expected
        assert report["files"] == [str(target)]
        # The reset worked (it forgot the 128 MiB peak from before it), and the transfer of
        # 512 MiB (up and down) stayed within the limit.
        assert report["before_reset"] >= 128 * MiB
        assert 0 < report["reset_to"] < LIMIT
        assert report["reset_to"] <= report["peak"]
        assert report["peak"] < LIMIT, (
            f"peak RSS {report['peak'] / MiB:.1f} MiB (after the imports: "
            f"{report['reset_to'] / MiB:.1f} MiB)"
        )
        assert target.stat().st_size == source.stat().st_size
        assert file_sha256(target) == expected
        stored = raw_api.get(f"/1.0/images/{expected}").json()["metadata"]
        assert stored["size"] == source.stat().st_size
    finally:
        delete_image(raw_api, expected)
        target.unlink(missing_ok=True)
    assert raw_api.get(f"/1.0/images/{expected}").status_code == 404


# --------------------------------------------------------------------------------------------
# Whatever a server sends, the client's memory stays bounded (issue 10, class 4).

HOSTILE_LIMIT = 200 * MiB

HOSTILE_CHILD = r"""
import asyncio, json, sys

from incus_images import AsyncClient, Client, IncusError


def peak():
    with open("/proc/self/status") as file:
        for line in file:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024


flavour, endpoint = sys.argv[1:]
outcomes = []


def listing_sync():
    with Client(endpoint, timeout=20) as client:
        for _ in range(4):  # one answer of each kind, in the order the server sends them
            try:
                client.images.list()
                outcomes.append("ok")
            except IncusError as exc:
                outcomes.append(type(exc).__name__)


async def listing_async():
    async with AsyncClient(endpoint, timeout=20) as client:
        for _ in range(4):
            try:
                await client.images.list()
                outcomes.append("ok")
            except IncusError as exc:
                outcomes.append(type(exc).__name__)


listing_sync() if flavour == "sync" else asyncio.run(listing_async())
print(json.dumps({"outcomes": outcomes, "peak": peak()}))
"""


def _hostile_answers() -> Iterator[Iterator[bytes]]:
    """A 100 MB answer, a 300 MB error, an endless chunked answer, and 16 MiB of JSON as dense
    as the SDK still parses."""
    from tests.hostile_server import head

    def sized(status: int, first: bytes, filler: bytes, size: int) -> Iterator[bytes]:
        yield head(status, Content_Length=str(size), Content_Type="application/json") + first
        sent = len(first)
        while sent < size:
            piece = filler[: size - sent]
            sent += len(piece)
            yield piece

    yield sized(200, b'{"type":"sync","metadata":[', b'"x",' * (MiB // 4), 100 * 10**6)
    yield sized(500, b'{"error":"', b"e" * MiB, 300 * 10**6)

    def endless() -> Iterator[bytes]:
        yield head(Transfer_Encoding="chunked") + b"1\r\n[\r\n"
        chunk = b'"x",' * (MiB // 4)
        while True:
            yield f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"

    yield endless()
    # Just under the density limit, in the shape that costs Python most once parsed: one-key
    # objects, three counted values each.
    body = b'{"type":"sync","metadata":[' + b'{"a":1},' * 330_000 + b"{}]}"
    yield iter([head(Content_Length=str(len(body))), body])


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_hostile_answers_keep_the_client_under_200_mib(tmp_path: Path, flavour: str) -> None:
    from tests.hostile_server import HostileServer

    answers = _hostile_answers()

    def answer(method: str, target: str) -> Iterator[bytes]:
        return next(answers)

    script = tmp_path / "child.py"
    script.write_text(HOSTILE_CHILD)
    with HostileServer(tmp_path, answer) as server:
        result = subprocess.run(
            [sys.executable, str(script), flavour, server.endpoint],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # Refused (too large), mapped (the error), refused (endless), parsed (dense, but just
    # within the limit) and then refused as no list of images.
    unexpected = "UnexpectedResponseError"
    assert report["outcomes"] == [unexpected, "APIError", unexpected, unexpected], report
    print(f"{flavour}: peak RSS {report['peak'] / MiB:.1f} MiB")
    assert report["peak"] < HOSTILE_LIMIT, f"peak RSS {report['peak'] / MiB:.1f} MiB"
