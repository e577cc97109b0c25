"""Transfers only the async flavour has, against the session's throwaway incusd.

Async iterables as upload sources (and their refusal by the blocking Client), and task
cancellation in the middle of an upload or an export, which must leave nothing behind.
Written by hand for AsyncClient (not generated): the blocking twin has no such thing.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from tiny_image import split_image, unified_image

from incus_images import AsyncClient, Client, Image, ImageDataError, InvalidInputError, LeftBehind
from tests.helpers import (
    assert_left,
    assert_nothing_new_stored,
    deleted_afterwards,
    sha256,
    store_image_to_export,
    stored_fingerprints,
    stored_image,
    upload_split_raw,
)

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
#: Where interruptions of an export land. Exports arrive in reads of at most 64 KiB (a split
#: export in smaller pieces), and each reported read costs the interrupting callback a pause.
EXPORT_AFTER = 64 * 1024


# --------------------------------------------------------------------------------------------
# Local helpers and fixtures.


async def chunks_of(data: bytes, size: int = 100) -> AsyncIterator[bytes]:
    """An async generator of data in chunks, yielding to the event loop between them."""
    for start in range(0, len(data), size):
        await anyio.lowlevel.checkpoint()
        yield data[start : start + size]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))


class CancelAfter:
    """A progress callback that cancels a scope once more than ``after`` bytes are done.

    Progress is reported at most every 0.1 s, and a few MiB go through the local socket in less
    than that; until ``after`` bytes are done the callback dawdles past the interval (a slow
    consumer) so that the next chunk is reported too, and the cancellation lands mid-way.
    """

    def __init__(self, after: int) -> None:
        self.after = after
        self.scope: anyio.CancelScope | None = None
        self.cancelled_at: int | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if done > self.after:
            if self.cancelled_at is None:
                self.cancelled_at = done
                assert self.scope is not None
                self.scope.cancel()
            return
        time.sleep(0.12)


@pytest.fixture
async def client(incusd: Any) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(incusd.endpoint) as async_client:
        yield async_client


@pytest.fixture
def cleanup(raw_api: httpx.Client) -> Iterator[list[str]]:
    """Fingerprints appended here are deleted (through the daemon) after the test."""
    yield from deleted_afterwards(raw_api)


# --------------------------------------------------------------------------------------------
# Async iterables as sources.


async def test_create_from_an_async_generator(
    client: AsyncClient, cleanup: list[str], raw_api: httpx.Client
) -> None:
    data = unified_image()
    progress = Recorder()
    image = await client.images.create(chunks_of(data, 7), wait=True, progress=progress)
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    assert image.fingerprint == sha256(data)
    assert image.size == len(data)
    stored = stored_image(raw_api, sha256(data))
    assert stored is not None
    assert stored["size"] == len(data)
    assert stored["properties"]["os"] == "tiny"
    # Size unknown in advance: total None throughout, ending at the bytes sent.
    assert len(progress.calls) >= 2
    assert progress.calls[0] == (0, None)
    assert progress.calls[-1] == (len(data), None)
    dones = [done for done, _ in progress.calls]
    assert dones == sorted(dones)


async def test_create_from_an_async_iterable_of_bytearray_and_memoryview(
    client: AsyncClient, cleanup: list[str]
) -> None:
    data = unified_image()
    half = len(data) // 2

    async def mixed() -> AsyncIterator[Any]:
        yield bytearray(data[:half])
        yield b""
        yield memoryview(data)[half:]

    image = await client.images.create(mixed(), wait=True)
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    assert image.fingerprint == sha256(data)


@pytest.mark.parametrize("image_type", ["container", "virtual-machine"])
@pytest.mark.parametrize("meta_async", [True, False], ids=["async-meta", "bytes-meta"])
async def test_create_split_image_from_async_generators(
    client: AsyncClient,
    cleanup: list[str],
    raw_api: httpx.Client,
    image_type: str,
    meta_async: bool,
) -> None:
    metadata, rootfs = split_image()
    if image_type == "virtual-machine":
        rootfs = os.urandom(5000)
    meta_source: Any = chunks_of(metadata, 50) if meta_async else metadata
    image = await client.images.create(
        meta_source, rootfs=chunks_of(rootfs, 333), type=image_type, wait=True
    )
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    assert image.fingerprint == sha256(metadata, rootfs)
    assert image.type == image_type
    assert image.size == len(metadata) + len(rootfs)
    assert image.filename == "rootfs"
    stored = stored_image(raw_api, sha256(metadata, rootfs))
    assert stored is not None
    assert (stored["type"], stored["size"]) == (image_type, len(metadata) + len(rootfs))


@pytest.mark.parametrize("what", ["empty", "str chunks"])
async def test_an_async_iterable_that_is_empty_or_not_bytes_is_refused(
    client: AsyncClient, raw_api: httpx.Client, what: str
) -> None:
    before = stored_fingerprints(raw_api)

    items: dict[str, list[Any]] = {"empty": [b""], "str chunks": ["not", "bytes"]}

    async def produce() -> AsyncIterator[Any]:
        for item in items[what]:
            yield item

    with pytest.raises(InvalidInputError):
        await client.images.create(produce(), wait=True)
    assert stored_fingerprints(raw_api) == before


@pytest.mark.parametrize("part", ["image_data", "rootfs"])
async def test_the_blocking_client_refuses_an_async_iterable_before_sending(
    incusd: Any, raw_api: httpx.Client, tmp_path: Path, part: str
) -> None:
    before = stored_fingerprints(raw_api)
    metadata, rootfs = split_image()
    started = False

    async def produce() -> AsyncGenerator[bytes, None]:
        nonlocal started
        started = True
        yield rootfs

    # A client of a socket nobody listens on would fail to connect if it sent anything.
    with Client(f"unix://{tmp_path / 'nobody-listens.socket'}") as unreachable:
        arguments: dict[str, Any] = (
            {"image_data": produce()}
            if part == "image_data"
            else {"image_data": metadata, "rootfs": produce()}
        )
        generator = arguments[part]
        with pytest.raises(InvalidInputError) as caught:
            unreachable.images.create(**arguments, wait=True)
        assert part in str(caught.value)
        assert "async" in str(caught.value)
        await generator.aclose()
    with Client(incusd.endpoint) as blocking:
        generator = produce()
        arguments = (
            {"image_data": generator}
            if part == "image_data"
            else {"image_data": metadata, "rootfs": generator}
        )
        with pytest.raises(InvalidInputError):
            blocking.images.create(**arguments, wait=True)
        await generator.aclose()
    assert not started
    assert stored_fingerprints(raw_api) == before


async def test_an_async_source_that_fails_mid_way_is_an_image_data_error_and_stores_nothing(
    client: AsyncClient, cleanup: list[str], raw_api: httpx.Client, big_image: bytes
) -> None:
    cleanup.append(sha256(big_image))
    before = stored_fingerprints(raw_api)
    error = OSError(5, "Input/output error (simulated)")

    async def failing() -> AsyncIterator[bytes]:
        yield big_image[: 2 * MiB]
        await anyio.lowlevel.checkpoint()
        yield big_image[2 * MiB : 3 * MiB]
        raise error

    with pytest.raises(ImageDataError, match="simulated") as caught:
        await client.images.create(failing(), wait=True)
    assert caught.value.__cause__ is error
    assert_left(caught.value, LeftBehind.NOTHING, "upload", "nothing was stored")
    assert_nothing_new_stored(raw_api, before)


# --------------------------------------------------------------------------------------------
# Cancellation.


@pytest.mark.parametrize("split", [False, True], ids=["unified", "split"])
async def test_cancelling_mid_export_leaves_no_file(
    client: AsyncClient,
    cleanup: list[str],
    raw_api: httpx.Client,
    tmp_path: Path,
    big_image: bytes,
    split: bool,
) -> None:
    fingerprint = store_image_to_export(raw_api, big_image, split=split)
    cleanup.append(fingerprint)
    directory = tmp_path / "exports"
    directory.mkdir()
    canceller = CancelAfter(EXPORT_AFTER)
    notes: list[str] = []
    with anyio.CancelScope() as scope:
        canceller.scope = scope
        try:
            await client.images.export(fingerprint, directory / "image", progress=canceller)
        except anyio.get_cancelled_exc_class() as exc:
            notes = list(getattr(exc, "__notes__", []))
            raise
    assert scope.cancelled_caught
    assert canceller.cancelled_at is not None and canceller.cancelled_at < 8 * MiB
    assert any("export" in note and fingerprint in note for note in notes), notes
    assert os.listdir(directory) == []  # no target, no target.root, no temporary file
    # The client goes on working, and the whole image exports afterwards.
    written = await client.images.export(fingerprint, directory / "image")
    assert sha256(*(path.read_bytes() for path in written)) == fingerprint


async def test_cancelling_mid_export_into_a_directory_leaves_no_file(
    client: AsyncClient, cleanup: list[str], raw_api: httpx.Client, tmp_path: Path
) -> None:
    metadata, _ = split_image()
    fingerprint = upload_split_raw(raw_api, metadata, os.urandom(8 * MiB), rootfs_part="rootfs.img")
    cleanup.append(fingerprint)
    canceller = CancelAfter(EXPORT_AFTER)
    with anyio.CancelScope() as scope:
        canceller.scope = scope
        await client.images.export(fingerprint, tmp_path, progress=canceller)
    assert scope.cancelled_caught
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kind", ["path", "async generator"])
async def test_cancelling_mid_upload_stores_nothing(
    client: AsyncClient,
    cleanup: list[str],
    raw_api: httpx.Client,
    tmp_path: Path,
    big_image: bytes,
    kind: str,
) -> None:
    cleanup.append(sha256(big_image))
    before = stored_fingerprints(raw_api)
    path = tmp_path / "big.tar.gz"
    path.write_bytes(big_image)
    source: Any = path if kind == "path" else chunks_of(big_image, MiB // 2)
    canceller = CancelAfter(MiB)
    notes: list[str] = []
    with anyio.move_on_after(120) as scope:
        canceller.scope = scope
        try:
            await client.images.create(source, wait=True, progress=canceller)
        except anyio.get_cancelled_exc_class() as exc:
            notes = list(getattr(exc, "__notes__", []))
            raise
    assert scope.cancelled_caught
    assert canceller.cancelled_at is not None and canceller.cancelled_at < len(big_image)
    assert any("upload" in note and "interrupted" in note for note in notes), notes
    assert_nothing_new_stored(raw_api, before)
    assert sha256(big_image) not in await client.images.list(recursion=0)


async def test_a_timeout_around_an_endless_upload_stores_nothing(
    client: AsyncClient, raw_api: httpx.Client
) -> None:
    before = stored_fingerprints(raw_api)
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b"\x1f\x8b\x08\x00"  # starts like a gzip stream, never ends
        while True:
            chunk = os.urandom(64 * 1024)
            sent += len(chunk)
            yield chunk
            await anyio.sleep(0.005)

    with anyio.move_on_after(0.5) as scope:
        await client.images.create(endless(), wait=True)
    assert scope.cancelled_caught
    assert sent > 0
    assert_nothing_new_stored(raw_api, before)


async def test_cancelling_the_task_group_of_an_export_leaves_no_file(
    client: AsyncClient, cleanup: list[str], tmp_path: Path, big_image: bytes
) -> None:
    # Cancellation from another task, as a supervisor would do it.
    image = await client.images.create(big_image, wait=True)
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    half_way = anyio.Event()
    finished = False

    def progress(done: int, total: int | None) -> None:
        if done > EXPORT_AFTER:
            half_way.set()
        else:
            time.sleep(0.12)

    async def export() -> None:
        nonlocal finished
        await client.images.export(image.fingerprint, tmp_path / "image", progress=progress)
        finished = True

    async with anyio.create_task_group() as group:
        group.start_soon(export)
        await half_way.wait()
        group.cancel_scope.cancel()
    assert not finished
    assert os.listdir(tmp_path) == []
