"""Streaming transfers against a real incusd (the session's throwaway daemon), in both flavours.

Every source kind create() accepts, split container and VM images, the upload options
(aliases, profiles, fingerprint), exports of split images, progress callbacks, and interrupted
transfers that must leave nothing behind. Outcomes are checked on the daemon itself (raw_api)
and on disk, never only through the SDK's own answers.

Async-only behaviour (async iterables, cancellation): tests/test_daemon_async_only_transfers.py.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import tarfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from tiny_image import metadata_yaml, split_image, unified_image

from incus_images import (
    AsyncClient,
    ChecksumMismatchError,
    ConflictError,
    Image,
    ImageDataError,
    IncusConnectionError,
    InvalidInputError,
    LeftBehind,
    NotFoundError,
    Operation,
    OperationError,
    TransferError,
)
from incus_images.progress import TqdmProgress
from tests.helpers import (
    assert_left,
    assert_nothing_new_stored,
    notes_of,
    sha256,
    store_image_to_export,
    stored_fingerprints,
    stored_image,
    unique,
    upload_split_raw,
)

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
#: Where interruptions of an export land. Exports arrive in reads of at most 64 KiB (a split
#: export in smaller pieces), and each reported read costs the interrupting callback a pause.
EXPORT_AFTER = 64 * 1024
NON_ASCII_NAME = "bild ü ☃ 日本.tar.gz"


# --------------------------------------------------------------------------------------------
# Local helpers.


def stored_alias(raw_api: httpx.Client, name: str) -> dict[str, Any] | None:
    response = raw_api.get(f"/1.0/images/aliases/{quote(name, safe='')}")
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    return dict(response.json()["metadata"])


def chunked(data: bytes, sizes: tuple[int, ...] = (1, 7, 100, 4096)) -> Iterator[bytes]:
    """A generator of the data in chunks of uneven sizes."""
    position, turn = 0, 0
    while position < len(data):
        size = sizes[turn % len(sizes)]
        yield data[position : position + size]
        position += size
        turn += 1


class Watched:
    """An iterable of chunks that records whether anybody started reading it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.started = False

    def __iter__(self) -> Iterator[bytes]:
        self.started = True
        yield from chunked(self.data, (64 * 1024,))


class UnsizedReader:
    """A binary file object that cannot tell its size (like a pipe)."""

    def __init__(self, data: bytes) -> None:
        self._file = io.BytesIO(data)

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)


class Recorder:
    """A progress callback that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))


def check_progress(calls: list[tuple[int, int | None]], *, total: int | None, size: int) -> None:
    """Called at least twice, first (0, total), monotonic, ending at (size, total)."""
    assert len(calls) >= 2, calls
    assert calls[0] == (0, total)
    dones = [done for done, _ in calls]
    assert dones == sorted(dones), calls
    assert {reported for _, reported in calls} == {total}
    assert calls[-1] == (size, total)


class Interrupter:
    """A progress callback that raises ``error`` once more than ``after`` bytes are done.

    Progress is reported at most every 0.1 s, and a transfer of a few MiB on the local socket
    takes less than that. So until ``after`` bytes are done the callback dawdles past that
    interval (a slow consumer), so that the next chunk is reported too: the error then lands
    in the middle of the transfer on any machine, never at its final report.
    """

    def __init__(self, after: int, error: BaseException) -> None:
        self.after = after
        self.error = error
        self.calls: list[tuple[int, int | None]] = []
        self.raised_at: int | None = None

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))
        if done > self.after:
            self.raised_at = done
            raise self.error
        time.sleep(0.12)


@pytest.fixture
async def unreachable(tmp_path: Path) -> AsyncIterator[AsyncClient]:
    """A client of a socket nobody listens on: any request it sends fails to connect, so a
    refusal from it proves that nothing was sent."""
    async with AsyncClient(f"unix://{tmp_path / 'nobody-listens.socket'}") as client:
        yield client


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "exports"
    directory.mkdir()
    return directory


# --------------------------------------------------------------------------------------------
# create(): every accepted kind of source, unified images.

SOURCE_KINDS = [
    "bytes",
    "bytearray",
    "memoryview",
    "str-path",
    "pathlib-path",
    "file",
    "bytesio",
    "unsized-file",
    "generator",
    "list-of-chunks",
]


def make_source(kind: str, data: bytes, path: Path, stack: contextlib.ExitStack) -> Any:
    """data as the given kind of source (writing it to path when the kind needs a file)."""
    if kind in ("str-path", "pathlib-path", "file"):
        path.write_bytes(data)
    if kind == "bytes":
        return data
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview":
        return memoryview(data)
    if kind == "str-path":
        return str(path)
    if kind == "pathlib-path":
        return path
    if kind == "file":
        return stack.enter_context(open(path, "rb"))
    if kind == "bytesio":
        return io.BytesIO(data)
    if kind == "unsized-file":
        return UnsizedReader(data)
    if kind == "generator":
        return chunked(data)
    if kind == "list-of-chunks":
        return list(chunked(data, (50,)))
    raise AssertionError(kind)


#: The file name Incus stores when the source has one (paths and files opened from a path).
NAMED_KINDS = ("str-path", "pathlib-path", "file")


@pytest.mark.parametrize("kind", SOURCE_KINDS)
async def test_create_from_each_kind_of_source_stores_exactly_the_bytes(
    daemon_client: AsyncClient,
    cleanup: list[str],
    raw_api: httpx.Client,
    tmp_path: Path,
    kind: str,
) -> None:
    data = unified_image()
    with contextlib.ExitStack() as stack:
        source = make_source(kind, data, tmp_path / "tiny.tar.gz", stack)
        image = await daemon_client.images.create(source, wait=True)
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    assert image.fingerprint == sha256(data)
    assert image.size == len(data)
    assert image.type == "container"
    stored = stored_image(raw_api, sha256(data))
    assert stored is not None
    assert stored["size"] == len(data)
    assert stored["properties"]["os"] == "tiny"  # metadata.yaml was read: the tarball is whole
    assert stored["filename"] == ("tiny.tar.gz" if kind in NAMED_KINDS else "")


async def test_create_from_an_iterable_of_bytearray_memoryview_and_empty_chunks(
    daemon_client: AsyncClient, cleanup: list[str], raw_api: httpx.Client
) -> None:
    data = unified_image()
    third = len(data) // 3
    chunks: list[Any] = [
        b"",
        bytearray(data[:third]),
        b"",
        memoryview(data)[third : 2 * third],
        data[2 * third :],
    ]
    image = await daemon_client.images.create(iter(chunks), wait=True)
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    assert image.fingerprint == sha256(data)
    assert stored_image(raw_api, sha256(data)) is not None


async def test_create_from_a_file_positioned_mid_file_sends_only_the_rest(
    daemon_client: AsyncClient, cleanup: list[str], raw_api: httpx.Client, tmp_path: Path
) -> None:
    data = unified_image()
    junk = b"{ JSON-looking junk that must not be sent }" * 50
    path = tmp_path / "padded.bin"
    path.write_bytes(junk + data)
    progress = Recorder()
    with open(path, "rb") as file:
        file.seek(len(junk))
        image = await daemon_client.images.create(file, wait=True, progress=progress)
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    assert image.fingerprint == sha256(data)
    assert image.size == len(data)
    stored = stored_image(raw_api, sha256(data))
    assert stored is not None
    assert stored["size"] == len(data)
    assert stored["filename"] == "padded.bin"
    check_progress(progress.calls, total=len(data), size=len(data))


@pytest.mark.parametrize("opened", [False, True], ids=["path", "file"])
async def test_create_defaults_the_filename_to_a_non_ascii_base_name(
    daemon_client: AsyncClient,
    cleanup: list[str],
    raw_api: httpx.Client,
    tmp_path: Path,
    opened: bool,
) -> None:
    data = unified_image()
    path = tmp_path / NON_ASCII_NAME
    path.write_bytes(data)
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(open(path, "rb")) if opened else path
        image = await daemon_client.images.create(source, wait=True)
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    assert image.filename == NON_ASCII_NAME
    stored = stored_image(raw_api, sha256(data))
    assert stored is not None
    assert stored["filename"] == NON_ASCII_NAME


async def test_an_explicit_filename_wins_over_the_paths_name(
    daemon_client: AsyncClient, cleanup: list[str], raw_api: httpx.Client, tmp_path: Path
) -> None:
    data = unified_image()
    path = tmp_path / "on-disk.tar.gz"
    path.write_bytes(data)
    image = await daemon_client.images.create(path, filename="given ü.tar.gz", wait=True)
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    stored = stored_image(raw_api, sha256(data))
    assert stored is not None
    assert stored["filename"] == "given ü.tar.gz"


def refused_sources(tmp_path: Path, stack: contextlib.ExitStack) -> dict[str, Any]:
    """Sources create() must refuse before sending anything."""
    text = tmp_path / "image-as-text.tar.gz"
    text.write_bytes(unified_image())
    empty = tmp_path / "empty.tar.gz"
    empty.write_bytes(b"")
    return {
        "text-mode file": stack.enter_context(open(text, encoding="latin-1")),
        "dict": {"metadata": b"x"},
        "int": 42,
        "none": None,
        "str": "",
        "empty bytes": b"",
        "empty path": empty,
        "empty file object": stack.enter_context(open(empty, "rb")),
        "missing path": tmp_path / "no-such-image.tar.gz",
        "missing str path": str(tmp_path / "no-such-image.tar.gz"),
        "directory": tmp_path,
    }


REFUSED = [
    "text-mode file",
    "dict",
    "int",
    "none",
    "str",
    "empty bytes",
    "empty path",
    "empty file object",
    "missing path",
    "missing str path",
    "directory",
]


@pytest.mark.parametrize("what", REFUSED)
async def test_create_refuses_what_is_not_an_image_before_sending_anything(
    daemon_client: AsyncClient,
    unreachable: AsyncClient,
    raw_api: httpx.Client,
    tmp_path: Path,
    what: str,
) -> None:
    before = stored_fingerprints(raw_api)
    with contextlib.ExitStack() as stack:
        source = refused_sources(tmp_path, stack)[what]
        # A client that cannot connect anywhere: refused before any request, or this would
        # be a connection error.
        with pytest.raises(InvalidInputError) as caught:
            await unreachable.images.create(source, wait=True)
        assert isinstance(caught.value, ValueError)
        with pytest.raises(InvalidInputError):
            await daemon_client.images.create(source, wait=True)
    assert stored_fingerprints(raw_api) == before


# httpcore's blocking backend does not close its socket when a unix-socket connect fails.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_an_unreachable_server_is_a_connection_error_for_a_valid_source(
    unreachable: AsyncClient,
) -> None:
    # The control for the test above: a valid source does reach the (missing) server.
    with pytest.raises(IncusConnectionError) as caught:
        await unreachable.images.create(unified_image(), wait=True)
    assert "nobody-listens.socket" in str(caught.value)
    del caught
    gc.collect()  # the leaked socket is collected while its warning is ignored


@pytest.mark.parametrize("what", ["empty generator", "empty unsized file", "str chunks"])
async def test_create_refuses_a_stream_that_turns_out_empty_or_not_bytes(
    daemon_client: AsyncClient, raw_api: httpx.Client, what: str
) -> None:
    before = stored_fingerprints(raw_api)
    source: Any = {
        "empty generator": (chunk for chunk in [b""]),
        "empty unsized file": UnsizedReader(b""),
        "str chunks": iter(["not", "bytes"]),
    }[what]
    with pytest.raises(InvalidInputError):
        await daemon_client.images.create(source, wait=True)
    assert stored_fingerprints(raw_api) == before


# --------------------------------------------------------------------------------------------
# create(): split images, container and virtual machine.

SPLIT_KINDS = [("bytes", "bytes"), ("path", "path"), ("file", "generator")]


def split_source(
    kind: str, data: bytes, path: Path, stack: contextlib.ExitStack
) -> tuple[Any, str | None]:
    """data as a source of this kind, and the file name it gives the image (None: none)."""
    if kind == "bytes":
        return data, None
    if kind == "generator":
        return chunked(data, (3, 1000)), None
    path.write_bytes(data)
    if kind == "path":
        return path, path.name
    if kind == "file":
        return stack.enter_context(open(path, "rb")), path.name
    raise AssertionError(kind)


def split_parts(image_type: str) -> tuple[bytes, bytes]:
    metadata, rootfs = split_image()
    if image_type == "virtual-machine":
        rootfs = os.urandom(3 * 4096)  # incusd does not look inside rootfs.img
    return metadata, rootfs


@pytest.mark.parametrize("image_type", ["container", "virtual-machine"])
@pytest.mark.parametrize(("meta_kind", "rootfs_kind"), SPLIT_KINDS)
async def test_create_split_image_from_each_source_combination(
    daemon_client: AsyncClient,
    cleanup: list[str],
    raw_api: httpx.Client,
    tmp_path: Path,
    meta_kind: str,
    rootfs_kind: str,
    image_type: str,
) -> None:
    metadata, rootfs = split_parts(image_type)
    with contextlib.ExitStack() as stack:
        meta_source, _ = split_source(meta_kind, metadata, tmp_path / "meta ü.tar.gz", stack)
        rootfs_source, rootfs_name = split_source(
            rootfs_kind, rootfs, tmp_path / "rootfs ☃ 日本.img", stack
        )
        options: dict[str, Any] = {} if image_type == "container" else {"type": image_type}
        image = await daemon_client.images.create(
            meta_source, rootfs=rootfs_source, wait=True, **options
        )
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    assert image.fingerprint == sha256(metadata, rootfs)
    assert image.type == image_type
    assert image.size == len(metadata) + len(rootfs)
    # Incus takes the file name from the rootfs part.
    expected_name = rootfs_name if rootfs_name is not None else "rootfs"
    assert image.filename == expected_name
    stored = stored_image(raw_api, sha256(metadata, rootfs))
    assert stored is not None
    assert (stored["type"], stored["size"], stored["filename"]) == (
        image_type,
        len(metadata) + len(rootfs),
        expected_name,
    )
    assert stored["properties"]["os"] == "tiny"  # from the metadata part


@pytest.mark.parametrize("image_type", ["container", "virtual-machine"])
async def test_create_split_image_stores_a_non_ascii_filename_argument(
    daemon_client: AsyncClient,
    cleanup: list[str],
    raw_api: httpx.Client,
    tmp_path: Path,
    image_type: str,
) -> None:
    metadata, rootfs = split_parts(image_type)
    (tmp_path / "rootfs.bin").write_bytes(rootfs)
    name = "disque ü ☃ 日本.qcow2"
    image = await daemon_client.images.create(
        metadata, rootfs=tmp_path / "rootfs.bin", type=image_type, filename=name, wait=True
    )
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    assert image.filename == name
    stored = stored_image(raw_api, sha256(metadata, rootfs))
    assert stored is not None
    assert stored["filename"] == name
    assert stored["type"] == image_type


@pytest.mark.parametrize("image_type", ["container", "virtual-machine", "bogus"])
async def test_type_for_a_unified_image_is_refused_before_sending(
    daemon_client: AsyncClient, unreachable: AsyncClient, raw_api: httpx.Client, image_type: str
) -> None:
    before = stored_fingerprints(raw_api)
    data = unified_image()
    with pytest.raises(InvalidInputError):
        await unreachable.images.create(data, type=image_type, wait=True)
    with pytest.raises(InvalidInputError):
        await daemon_client.images.create(data, type=image_type, wait=True)
    assert stored_fingerprints(raw_api) == before


@pytest.mark.parametrize("image_type", ["bogus", "vm", "VIRTUAL-MACHINE", ""])
async def test_an_unknown_split_image_type_is_refused_before_sending(
    daemon_client: AsyncClient, unreachable: AsyncClient, raw_api: httpx.Client, image_type: str
) -> None:
    before = stored_fingerprints(raw_api)
    metadata, rootfs = split_image()
    with pytest.raises(InvalidInputError):
        await unreachable.images.create(metadata, rootfs=rootfs, type=image_type, wait=True)
    with pytest.raises(InvalidInputError):
        await daemon_client.images.create(metadata, rootfs=rootfs, type=image_type, wait=True)
    assert stored_fingerprints(raw_api) == before


@pytest.mark.parametrize("bad", ["text-mode file", "int", "empty bytes", "missing path"])
async def test_a_bad_rootfs_is_refused_before_sending(
    unreachable: AsyncClient, tmp_path: Path, bad: str
) -> None:
    metadata, _ = split_image()
    with contextlib.ExitStack() as stack:
        rootfs = refused_sources(tmp_path, stack)[bad]
        with pytest.raises(InvalidInputError) as caught:
            await unreachable.images.create(metadata, rootfs=rootfs, wait=True)
    assert "rootfs" in str(caught.value)


# --------------------------------------------------------------------------------------------
# create(): aliases, profiles and fingerprint.


async def test_create_with_aliases_creates_them_all(
    daemon_client: AsyncClient, cleanup: list[str], raw_api: httpx.Client
) -> None:
    names = [unique("dir/sub name"), unique("ünï ☃ two words"), unique("plain")]
    data = unified_image()
    image = await daemon_client.images.create(data, aliases=names, wait=True)
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    assert image.fingerprint == sha256(data)
    assert sorted(alias.name for alias in image.aliases) == sorted(names)
    for name in names:
        alias = stored_alias(raw_api, name)
        assert alias is not None, name
        assert alias["target"] == sha256(data)


async def test_create_with_aliases_and_no_wait_creates_them_when_waited_for(
    daemon_client: AsyncClient, cleanup: list[str], raw_api: httpx.Client
) -> None:
    name = unique("nowait/alias")
    data = unified_image()
    result = await daemon_client.images.create(data, aliases=[name])
    cleanup.append(sha256(data))
    assert isinstance(result, Operation)
    # By its id, as a service that kept only the id would.
    finished = await daemon_client.operations.wait(result.id)
    assert finished.succeeded
    alias = stored_alias(raw_api, name)
    assert alias is not None
    assert alias["target"] == sha256(data)


async def test_an_alias_already_taken_is_a_conflict_before_upload_and_stores_nothing(
    daemon_client: AsyncClient, new_image: Any, raw_api: httpx.Client
) -> None:
    owner = await new_image()
    taken = unique("taken/alias name")
    free = unique("free")
    await daemon_client.images.create_alias(taken, owner.fingerprint)
    before = stored_fingerprints(raw_api)
    data = unified_image()
    source = Watched(data)
    with pytest.raises(ConflictError) as caught:
        await daemon_client.images.create(source, aliases=[free, taken], wait=True)
    assert taken in str(caught.value)
    assert not source.started  # refused before a byte of the image was read
    assert stored_image(raw_api, sha256(data)) is None
    assert stored_fingerprints(raw_api) == before
    assert stored_alias(raw_api, free) is None
    alias = stored_alias(raw_api, taken)
    assert alias is not None
    assert alias["target"] == owner.fingerprint


async def test_profiles_default_is_kept(
    daemon_client: AsyncClient, cleanup: list[str], raw_api: httpx.Client
) -> None:
    data = unified_image()
    image = await daemon_client.images.create(data, profiles=["default"], wait=True)
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    assert image.profiles == ["default"]
    stored = stored_image(raw_api, sha256(data))
    assert stored is not None
    assert stored["profiles"] == ["default"]


@pytest.mark.parametrize("wait", [True, False])
async def test_an_empty_profiles_list_leaves_the_image_without_profiles(
    daemon_client: AsyncClient, cleanup: list[str], raw_api: httpx.Client, wait: bool
) -> None:
    data = unified_image()
    result = await daemon_client.images.create(data, profiles=[], wait=wait)
    cleanup.append(sha256(data))
    if wait:
        assert isinstance(result, Image)
        assert result.profiles == []
    else:
        assert isinstance(result, Operation)
        assert (await daemon_client.operations.wait(result)).succeeded
    stored = stored_image(raw_api, sha256(data))
    assert stored is not None
    assert stored["profiles"] == []


async def test_several_profiles_are_all_set(
    daemon_client: AsyncClient, raw_api: httpx.Client
) -> None:
    profile = unique("prof")
    response = raw_api.post("/1.0/profiles", json={"name": profile, "description": "test"})
    assert response.status_code in (200, 201), response.text
    data = unified_image()
    try:
        image = await daemon_client.images.create(data, profiles=["default", profile], wait=True)
        assert isinstance(image, Image)
        assert image.profiles == ["default", profile]
        stored = stored_image(raw_api, sha256(data))
        assert stored is not None
        assert stored["profiles"] == ["default", profile]
    finally:
        with contextlib.suppress(NotFoundError):
            await daemon_client.images.delete(sha256(data), wait=True)
        raw_api.delete(f"/1.0/profiles/{profile}")


async def test_an_unknown_profile_is_not_found_and_stores_nothing(
    daemon_client: AsyncClient, raw_api: httpx.Client
) -> None:
    before = stored_fingerprints(raw_api)
    missing = unique("no-such-profile")
    data = unified_image()
    source = Watched(data)
    with pytest.raises(NotFoundError) as caught:
        await daemon_client.images.create(source, profiles=["default", missing], wait=True)
    assert missing in str(caught.value)
    assert not source.started
    assert stored_image(raw_api, sha256(data)) is None
    assert stored_fingerprints(raw_api) == before


@pytest.mark.parametrize("case", ["lower", "upper"])
async def test_the_right_fingerprint_is_accepted(
    daemon_client: AsyncClient, cleanup: list[str], raw_api: httpx.Client, case: str
) -> None:
    data = unified_image()
    expected = sha256(data) if case == "lower" else sha256(data).upper()
    image = await daemon_client.images.create(data, fingerprint=expected, wait=True)
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    assert image.fingerprint == sha256(data)
    assert stored_image(raw_api, sha256(data)) is not None


@pytest.mark.parametrize("split", [False, True], ids=["unified", "split"])
async def test_a_wrong_fingerprint_fails_the_upload_and_stores_nothing(
    daemon_client: AsyncClient, cleanup: list[str], raw_api: httpx.Client, split: bool
) -> None:
    before = stored_fingerprints(raw_api)
    metadata, rootfs = split_image()
    data = metadata if split else unified_image()
    options: dict[str, Any] = {"rootfs": rootfs} if split else {}
    actual = sha256(metadata, rootfs) if split else sha256(data)
    cleanup.append(actual)  # in case it is stored after all
    wrong = sha256(b"something else")
    # incusd 6.0.4 fails the operation: "fingerprints don't match, got <actual> expected <sent>".
    with pytest.raises(ChecksumMismatchError) as caught:
        await daemon_client.images.create(data, fingerprint=wrong, wait=True, **options)
    error = caught.value
    assert f"the bytes sent hash to {actual}, not to the fingerprint given, {wrong}" in str(error)
    assert error.server_message is not None
    assert "fingerprints don't match" in error.server_message
    assert error.fingerprint == wrong
    assert_left(error, LeftBehind.NOTHING, "nothing was stored")
    assert stored_image(raw_api, actual) is None
    assert stored_image(raw_api, wrong) is None
    assert stored_fingerprints(raw_api) == before


@pytest.mark.parametrize("bad", ["abc", "z" * 64, "a" * 63, "a" * 65, ""])
async def test_a_malformed_fingerprint_is_refused_before_sending(
    daemon_client: AsyncClient, unreachable: AsyncClient, raw_api: httpx.Client, bad: str
) -> None:
    before = stored_fingerprints(raw_api)
    with pytest.raises(InvalidInputError):
        await unreachable.images.create(unified_image(), fingerprint=bad, wait=True)
    with pytest.raises(InvalidInputError):
        await daemon_client.images.create(unified_image(), fingerprint=bad, wait=True)
    assert stored_fingerprints(raw_api) == before


async def test_all_options_together_on_a_split_vm_image(
    daemon_client: AsyncClient, cleanup: list[str], raw_api: httpx.Client, tmp_path: Path
) -> None:
    metadata, rootfs = split_parts("virtual-machine")
    (tmp_path / "disk.qcow2").write_bytes(rootfs)
    fingerprint = sha256(metadata, rootfs)
    aliases = [unique("all/options"), unique("all options ü")]
    properties = {"os": "Übuntu ☃", "weird": "a&b=c d+e%"}
    image = await daemon_client.images.create(
        metadata,
        rootfs=tmp_path / "disk.qcow2",
        type="virtual-machine",
        public=True,
        auto_update=True,
        properties=properties,
        aliases=aliases,
        profiles=[],
        fingerprint=fingerprint,
        wait=True,
    )
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    stored = stored_image(raw_api, fingerprint)
    assert stored is not None
    assert stored["type"] == "virtual-machine"
    assert stored["filename"] == "disk.qcow2"
    assert stored["public"] is True
    assert stored["auto_update"] is True
    assert stored["profiles"] == []
    assert stored["properties"] == {**stored["properties"], **properties}
    assert stored["properties"]["release"] == "1"  # metadata.yaml's are kept beside them
    assert sorted(alias["name"] for alias in stored["aliases"]) == sorted(aliases)
    assert image.fingerprint == fingerprint
    assert image.properties == stored["properties"]


async def test_options_with_a_failed_upload_leave_neither_image_nor_aliases(
    daemon_client: AsyncClient, cleanup: list[str], raw_api: httpx.Client
) -> None:
    before = stored_fingerprints(raw_api)
    data = unified_image()
    cleanup.append(sha256(data))
    name = unique("never")
    with pytest.raises(ChecksumMismatchError):
        await daemon_client.images.create(
            data,
            aliases=[name],
            properties={"k": "v"},
            auto_update=True,
            public=True,
            fingerprint=sha256(b"not this"),
            wait=True,
        )
    assert stored_alias(raw_api, name) is None
    assert stored_fingerprints(raw_api) == before


# --------------------------------------------------------------------------------------------
# export(): split and VM images.


@pytest.mark.parametrize("rootfs_part", ["rootfs", "rootfs.img"])
async def test_export_split_image_to_a_file_writes_target_and_target_root(
    daemon_client: AsyncClient,
    cleanup: list[str],
    raw_api: httpx.Client,
    export_dir: Path,
    rootfs_part: str,
) -> None:
    metadata, rootfs = split_parts(
        "virtual-machine" if rootfs_part == "rootfs.img" else "container"
    )
    fingerprint = upload_split_raw(raw_api, metadata, rootfs, rootfs_part=rootfs_part)
    cleanup.append(fingerprint)
    target = export_dir / "image"
    written = await daemon_client.images.export(fingerprint, target)
    assert written == [target, export_dir / "image.root"]
    assert target.read_bytes() == metadata
    assert (export_dir / "image.root").read_bytes() == rootfs
    assert sha256(target.read_bytes(), (export_dir / "image.root").read_bytes()) == fingerprint
    assert sorted(os.listdir(export_dir)) == ["image", "image.root"]


@pytest.mark.parametrize("rootfs_part", ["rootfs", "rootfs.img"])
async def test_export_split_image_into_a_directory_uses_the_server_names(
    daemon_client: AsyncClient,
    cleanup: list[str],
    raw_api: httpx.Client,
    export_dir: Path,
    rootfs_part: str,
) -> None:
    vm = rootfs_part == "rootfs.img"
    metadata, rootfs = split_parts("virtual-machine" if vm else "container")
    fingerprint = upload_split_raw(raw_api, metadata, rootfs, rootfs_part=rootfs_part)
    cleanup.append(fingerprint)
    written = await daemon_client.images.export(fingerprint, export_dir)
    meta_name = f"meta-{fingerprint}.tar.gz"
    # A VM's rootfs has no extension; a container's is named after its detected compression.
    rootfs_name = fingerprint if vm else f"{fingerprint}.tar.gz"
    assert written == [export_dir / meta_name, export_dir / rootfs_name]
    assert sorted(os.listdir(export_dir)) == sorted([meta_name, rootfs_name])
    assert (export_dir / meta_name).read_bytes() == metadata
    assert (export_dir / rootfs_name).read_bytes() == rootfs


async def test_export_of_an_sdk_uploaded_split_image_round_trips(
    daemon_client: AsyncClient, cleanup: list[str], export_dir: Path, tmp_path: Path
) -> None:
    metadata, rootfs = split_parts("virtual-machine")
    (tmp_path / "disk.img").write_bytes(rootfs)
    image = await daemon_client.images.create(
        metadata, rootfs=tmp_path / "disk.img", type="virtual-machine", wait=True
    )
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    written = await daemon_client.images.export(image.fingerprint, export_dir / "vm")
    assert [path.read_bytes() for path in written] == [metadata, rootfs]


# --------------------------------------------------------------------------------------------
# progress=


@pytest.mark.parametrize("kind", ["bytes", "pathlib-path", "file", "bytesio"])
async def test_create_progress_of_a_sized_source_ends_at_the_total(
    daemon_client: AsyncClient, cleanup: list[str], tmp_path: Path, kind: str
) -> None:
    data = unified_image(payload_size=3 * MiB)
    progress = Recorder()
    with contextlib.ExitStack() as stack:
        source = make_source(kind, data, tmp_path / "image.tar.gz", stack)
        image = await daemon_client.images.create(source, wait=True, progress=progress)
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    check_progress(progress.calls, total=len(data), size=len(data))


@pytest.mark.parametrize("kind", ["generator", "unsized-file"])
async def test_create_progress_of_a_source_of_unknown_size_has_no_total(
    daemon_client: AsyncClient, cleanup: list[str], tmp_path: Path, kind: str
) -> None:
    data = unified_image(payload_size=MiB)
    progress = Recorder()
    with contextlib.ExitStack() as stack:
        source = make_source(kind, data, tmp_path / "image.tar.gz", stack)
        image = await daemon_client.images.create(source, wait=True, progress=progress)
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    check_progress(progress.calls, total=None, size=len(data))


async def test_create_progress_of_a_split_image_counts_both_parts(
    daemon_client: AsyncClient, cleanup: list[str], tmp_path: Path
) -> None:
    metadata, _ = split_image()
    rootfs = os.urandom(2 * MiB + 17)
    (tmp_path / "rootfs.img").write_bytes(rootfs)
    progress = Recorder()
    image = await daemon_client.images.create(
        metadata,
        rootfs=tmp_path / "rootfs.img",
        type="virtual-machine",
        wait=True,
        progress=progress,
    )
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    size = len(metadata) + len(rootfs)
    assert image.size == size
    check_progress(progress.calls, total=size, size=size)


async def test_create_progress_of_a_split_image_with_a_generator_has_no_total(
    daemon_client: AsyncClient, cleanup: list[str]
) -> None:
    metadata, rootfs = split_image()
    progress = Recorder()
    image = await daemon_client.images.create(
        metadata, rootfs=chunked(rootfs), wait=True, progress=progress
    )
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    check_progress(progress.calls, total=None, size=len(metadata) + len(rootfs))


@pytest.mark.parametrize("split", [False, True], ids=["unified", "split"])
async def test_export_progress_ends_at_the_images_size(
    daemon_client: AsyncClient,
    cleanup: list[str],
    raw_api: httpx.Client,
    export_dir: Path,
    split: bool,
) -> None:
    if split:
        metadata, _ = split_image()
        rootfs = os.urandom(2 * MiB)
        fingerprint = upload_split_raw(raw_api, metadata, rootfs)
        size = len(metadata) + len(rootfs)
    else:
        data = unified_image(payload_size=2 * MiB)
        image = await daemon_client.images.create(data, wait=True)
        assert isinstance(image, Image)
        fingerprint, size = image.fingerprint, len(data)
    cleanup.append(fingerprint)
    progress = Recorder()
    written = await daemon_client.images.export(fingerprint, export_dir / "out", progress=progress)
    check_progress(progress.calls, total=size, size=size)
    assert sum(path.stat().st_size for path in written) == size


async def test_tqdm_progress_bar_follows_create_and_export(
    daemon_client: AsyncClient, cleanup: list[str], export_dir: Path
) -> None:
    data = unified_image(payload_size=MiB)
    output = io.StringIO()
    with TqdmProgress("importing", file=output) as bar:
        image = await daemon_client.images.create(data, wait=True, progress=bar)
        assert isinstance(image, Image)
        cleanup.append(image.fingerprint)
        assert bar.bar.n == len(data)
        assert bar.bar.total == len(data)
    assert "importing" in output.getvalue()
    output = io.StringIO()
    with TqdmProgress("exporting", file=output) as bar:
        await daemon_client.images.export(image.fingerprint, export_dir / "out", progress=bar)
        assert bar.bar.n == len(data)
        assert bar.bar.total == len(data)
    assert "exporting" in output.getvalue()


async def test_tqdm_progress_bar_with_an_unknown_total(
    daemon_client: AsyncClient, cleanup: list[str]
) -> None:
    data = unified_image()
    with TqdmProgress(file=io.StringIO()) as bar:
        image = await daemon_client.images.create(chunked(data), wait=True, progress=bar)
        assert isinstance(image, Image)
        cleanup.append(image.fingerprint)
        assert bar.bar.n == len(data)
        assert bar.bar.total is None


@pytest.mark.parametrize("bad", [42, "not callable"])
async def test_a_progress_that_is_not_callable_is_refused_before_sending(
    unreachable: AsyncClient, export_dir: Path, bad: Any
) -> None:
    with pytest.raises(InvalidInputError):
        await unreachable.images.create(unified_image(), progress=bad)
    with pytest.raises(InvalidInputError):
        await unreachable.images.export("ab" * 32, export_dir / "out", progress=bad)


# --------------------------------------------------------------------------------------------
# Interruptions: nothing may be left behind.


@pytest.mark.parametrize("kind", ["path", "generator"])
async def test_keyboard_interrupt_mid_upload_stores_nothing_and_says_so(
    daemon_client: AsyncClient,
    cleanup: list[str],
    raw_api: httpx.Client,
    tmp_path: Path,
    big_image: bytes,
    kind: str,
) -> None:
    cleanup.append(sha256(big_image))  # should the daemon store it after all
    before = stored_fingerprints(raw_api)
    interrupter = Interrupter(MiB, KeyboardInterrupt())
    path = tmp_path / "big.tar.gz"
    path.write_bytes(big_image)
    # Big chunks: every reported chunk costs the interrupter a pause.
    source = path if kind == "path" else chunked(big_image, (MiB // 2,))
    with pytest.raises(KeyboardInterrupt) as caught:
        await daemon_client.images.create(source, wait=True, progress=interrupter)
    assert caught.value is interrupter.error
    assert interrupter.raised_at is not None and interrupter.raised_at < len(big_image)
    notes = notes_of(caught.value)
    assert any("upload" in note and "interrupted" in note for note in notes), notes
    assert any(f"after {interrupter.raised_at} of" in note for note in notes), notes
    assert not any("the the " in note for note in notes), notes
    assert_nothing_new_stored(raw_api, before)
    # The client is still usable afterwards.
    assert sha256(big_image) not in await daemon_client.images.list(recursion=0)


@pytest.mark.parametrize("split", [False, True], ids=["unified", "split"])
async def test_keyboard_interrupt_mid_export_leaves_no_file(
    daemon_client: AsyncClient,
    cleanup: list[str],
    raw_api: httpx.Client,
    export_dir: Path,
    big_image: bytes,
    split: bool,
) -> None:
    fingerprint = store_image_to_export(raw_api, big_image, split=split)
    cleanup.append(fingerprint)
    interrupter = Interrupter(EXPORT_AFTER, KeyboardInterrupt())
    target = export_dir / "image"
    with pytest.raises(KeyboardInterrupt) as caught:
        await daemon_client.images.export(fingerprint, target, progress=interrupter)
    assert caught.value is interrupter.error
    assert interrupter.raised_at is not None and interrupter.raised_at < 8 * MiB
    notes = notes_of(caught.value)
    assert any("export" in note and fingerprint in note for note in notes), notes
    assert os.listdir(export_dir) == []  # no target, no target.root, no temporary file
    # The image can still be exported whole afterwards.
    written = await daemon_client.images.export(fingerprint, target)
    assert sha256(*(path.read_bytes() for path in written)) == fingerprint


async def test_keyboard_interrupt_mid_export_into_a_directory_leaves_no_file(
    daemon_client: AsyncClient, cleanup: list[str], raw_api: httpx.Client, export_dir: Path
) -> None:
    metadata, _ = split_image()
    fingerprint = upload_split_raw(raw_api, metadata, os.urandom(8 * MiB), rootfs_part="rootfs.img")
    cleanup.append(fingerprint)
    interrupter = Interrupter(EXPORT_AFTER, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        await daemon_client.images.export(fingerprint, export_dir, progress=interrupter)
    assert interrupter.raised_at is not None
    assert os.listdir(export_dir) == []


@pytest.mark.parametrize("where", ["generator", "file object"])
async def test_a_source_that_fails_mid_way_is_an_image_data_error_and_stores_nothing(
    daemon_client: AsyncClient,
    cleanup: list[str],
    raw_api: httpx.Client,
    big_image: bytes,
    where: str,
) -> None:
    cleanup.append(sha256(big_image))
    before = stored_fingerprints(raw_api)
    error = OSError(5, "Input/output error (simulated)")

    def failing_chunks() -> Iterator[bytes]:
        yield big_image[: 2 * MiB]
        yield big_image[2 * MiB : 3 * MiB]
        raise error

    class FailingReader:
        """A binary file object whose disk fails after 3 MiB."""

        def __init__(self) -> None:
            self.position = 0

        def read(self, size: int = -1) -> bytes:
            if self.position >= 3 * MiB:
                raise error
            chunk = big_image[self.position : self.position + min(size, MiB)]
            self.position += len(chunk)
            return chunk

    source: Any = failing_chunks() if where == "generator" else FailingReader()
    # Not the OSError itself (no OSError reaches the caller): the SDK's error, caused by it.
    with pytest.raises(ImageDataError, match="simulated") as caught:
        await daemon_client.images.create(source, wait=True)
    assert caught.value.__cause__ is error
    assert_left(caught.value, LeftBehind.NOTHING, "upload", "nothing was stored")
    assert_nothing_new_stored(raw_api, before)


@pytest.mark.parametrize("change", ["shrinks", "grows"])
async def test_a_file_that_changes_size_while_it_is_sent_stores_nothing(
    daemon_client: AsyncClient,
    cleanup: list[str],
    raw_api: httpx.Client,
    tmp_path: Path,
    big_image: bytes,
    change: str,
) -> None:
    # The size was announced in Content-Length; then the file loses its tail, or gains one.
    path = tmp_path / "changing.tar.gz"
    path.write_bytes(big_image)
    cleanup.append(sha256(big_image))
    before = stored_fingerprints(raw_api)
    changed = False

    def change_once(done: int, total: int | None) -> None:
        nonlocal changed
        if done and not changed:
            changed = True
            if change == "shrinks":
                os.truncate(path, 4 * MiB)
            else:
                with open(path, "ab") as file:
                    file.write(os.urandom(2 * MiB))
        elif not done:
            time.sleep(0.12)  # so that the first chunk is reported (see Interrupter)

    with pytest.raises(TransferError) as caught:
        await daemon_client.images.create(path, wait=True, progress=change_once)
    assert changed
    assert "instead of" in str(caught.value)
    assert str(len(big_image)) in str(caught.value)
    assert_nothing_new_stored(raw_api, before)


def plain_tar_image(payload_size: int) -> bytes:
    """A valid unified image as an uncompressed tar: any byte of its payload may change and
    it stays a valid image."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in [
            ("metadata.yaml", metadata_yaml()),
            ("rootfs", None),
            ("rootfs/payload.bin", os.urandom(payload_size)),
        ]:
            info = tarfile.TarInfo(name)
            info.mtime = int(time.time())
            if data is None:
                info.type = tarfile.DIRTYPE
                archive.addfile(info)
            else:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize("region", ["already sent", "not yet sent"])
async def test_a_file_rewritten_in_place_while_it_is_sent_is_never_misreported(
    daemon_client: AsyncClient,
    cleanup: list[str],
    raw_api: httpx.Client,
    tmp_path: Path,
    region: str,
) -> None:
    # Same size, other bytes. Whatever the SDK makes of it, what it reports must be what the
    # daemon stores: the image whose fingerprint it returns, or no image and an error.
    original = plain_tar_image(8 * MiB)
    offset = 100 * 1024 if region == "already sent" else 6 * MiB  # inside the payload
    modified = original[:offset] + bytes(b ^ 0xFF for b in original[offset : offset + 4096])
    modified += original[offset + 4096 :]
    path = tmp_path / "rewritten.tar"
    path.write_bytes(original)
    cleanup += [sha256(original), sha256(modified)]
    before = stored_fingerprints(raw_api)
    rewritten = False

    def rewrite_once(done: int, total: int | None) -> None:
        nonlocal rewritten
        if done and not rewritten:
            assert done < offset or region == "already sent"
            rewritten = True
            with open(path, "r+b") as file:
                file.seek(offset)
                file.write(modified[offset : offset + 4096])
        elif not done:
            time.sleep(0.12)  # so that the first chunk is reported (see Interrupter)

    result: Image | Operation | None = None
    failure: BaseException | None = None
    try:
        result = await daemon_client.images.create(path, wait=True, progress=rewrite_once)
    except (TransferError, OperationError) as exc:
        failure = exc
    assert rewritten
    if failure is not None:
        # Refusing a file that changed under the upload is fine, if it leaves nothing behind
        # and says so.
        assert "changed" in str(failure) or "fingerprint" in str(failure), failure
        assert_nothing_new_stored(raw_api, before)
    else:
        # Accepting it is fine too, if the fingerprint is that of the bytes sent: those
        # changed before they were read went as they are now.
        assert isinstance(result, Image)
        sent = modified if region == "not yet sent" else original
        assert result.fingerprint == sha256(sent)
        assert stored_image(raw_api, result.fingerprint) is not None
        assert stored_fingerprints(raw_api) == before | {result.fingerprint}


# --------------------------------------------------------------------------------------------
# Interruptions at the very end of a transfer. The final progress report is made after the
# server has accepted the whole upload (images.py, create(): meter.sha256() inside the try
# block), and after an export's files were renamed into place (_export.py, finish():
# progress.finish() after commit()): an interruption there is reported as if nothing had been
# stored or written, and the image or file stays.


class InterruptAtTheEnd:
    """A progress callback that raises KeyboardInterrupt at the final report (done == total)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int | None]] = []

    def __call__(self, done: int, total: int | None) -> None:
        self.calls.append((done, total))
        if total is not None and done == total:
            raise KeyboardInterrupt


async def test_keyboard_interrupt_at_the_final_upload_report_leaves_no_image(
    daemon_client: AsyncClient, cleanup: list[str], raw_api: httpx.Client
) -> None:
    data = unified_image()
    cleanup.append(sha256(data))
    before = stored_fingerprints(raw_api)
    with pytest.raises(KeyboardInterrupt) as caught:
        await daemon_client.images.create(data, wait=True, progress=InterruptAtTheEnd())
    assert any("nothing was stored" in note for note in notes_of(caught.value))
    assert_nothing_new_stored(raw_api, before)


async def test_keyboard_interrupt_at_the_final_export_report_leaves_no_file(
    daemon_client: AsyncClient, new_image: Any, export_dir: Path
) -> None:
    image = await new_image()
    with pytest.raises(KeyboardInterrupt) as caught:
        await daemon_client.images.export(
            image.fingerprint, export_dir / "out", progress=InterruptAtTheEnd()
        )
    assert any("nothing was written" in note for note in notes_of(caught.value))
    assert os.listdir(export_dir) == []
