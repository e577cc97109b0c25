"""Unit tests of upload planning and metering (incus_images._transfer: sources, plan, meter,
rehash), flavour-neutral.

The flavours' clients produce the body as :func:`body` does here: the framing of every segment
as it is, and the chunks of every source through :class:`UploadMeter`.
"""

from __future__ import annotations

import io
import os
import random
import threading
import types
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import pytest

import incus_images._transfer.reports
from incus_images._errors import InvalidInputError, TransferError
from incus_images._transfer.meter import UploadMeter
from incus_images._transfer.multipart import (
    multipart_boundary,
)
from incus_images._transfer.plan import UploadPlan
from incus_images._transfer.sources import (
    Source,
    open_source,
    read_chunks,
    refuse_json_before_sending,
)
from incus_images._transfer.threads import CHUNK_SIZE
from tests.helpers import multipart_parts, sha256

#: Stand-in image bytes: gzip magic, then noise (never JSON-looking).
DATA = b"\x1f\x8b\x08\x00" + bytes(range(256)) * 20
META = b"\xfd7zXZ\x00metadata tarball" + bytes(range(200))
ROOTFS = b"hsqs squashfs rootfs" + bytes(reversed(range(256))) * 5


def make_file(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def source(data: object, argument: str = "image_data") -> Source:
    return open_source(data, argument, accept_async=False)


def plan_of(
    image: object,
    rootfs: object = None,
    *,
    image_type: str | None = None,
    filename: str | None = None,
) -> UploadPlan:
    return UploadPlan(
        source(image),
        None if rootfs is None else source(rootfs, "rootfs"),
        image_type=image_type,
        filename=filename,
    )


def body(plan: UploadPlan, meter: UploadMeter | None = None) -> bytes:
    """The whole request body, produced as the clients produce it."""
    own = meter is None
    meter = UploadMeter(plan, None) if meter is None else meter
    out = bytearray()
    try:
        for segment in plan.segments:
            if segment.source is None:
                out += segment.framing
                continue
            meter.start(segment)
            for chunk in read_chunks(segment.source, segment.argument):
                out += meter.take(chunk)
                if meter.backlogged:
                    meter.wait_for_room()
            out += meter.end(segment)
    except BaseException:
        meter.close()
        raise
    if own:
        meter.close()
    return bytes(out)


def parse_parts(plan: UploadPlan, data: bytes) -> list[tuple[str | None, str | None, bytes]]:
    return multipart_parts(str(plan.headers["Content-Type"]), data)


def pipe_with(data: bytes) -> io.BufferedReader:
    """A binary file object on a pipe holding data (small enough for the pipe buffer)."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, data)
    os.close(write_fd)
    return os.fdopen(read_fd, "rb")


class BytesPath(os.PathLike):  # type: ignore[type-arg]
    """A PathLike whose path is bytes."""

    def __init__(self, path: bytes) -> None:
        self._path = path

    def __fspath__(self) -> bytes:
        return self._path


class StrFile:
    """A file-like object that reads str, though it is not a TextIOBase."""

    def __init__(self) -> None:
        self._chunks = ["text", ""]

    def read(self, size: int = -1) -> str:
        return self._chunks.pop(0)


# --------------------------------------------------------------------------------------------
# open_source: what is accepted


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_bytes_like_sources(kind: type) -> None:
    given = kind(DATA) if kind is not memoryview else memoryview(bytearray(DATA))
    opened = source(given)
    assert opened.kind == "bytes"
    assert type(opened.value) is bytes
    assert opened.value == DATA
    assert opened.size == len(DATA)
    assert opened.name is None


def test_bytearray_source_is_a_copy() -> None:
    """Changing the caller's buffer afterwards does not change what is uploaded."""
    given = bytearray(DATA)
    opened = source(given)
    given[0:4] = b"XXXX"
    assert opened.value == DATA


def test_str_path_source(tmp_path: Path) -> None:
    path = make_file(tmp_path, "ímage ☃.tar.gz", DATA)
    opened = source(str(path))
    assert opened.kind == "path"
    assert opened.value == str(path)
    assert opened.size == len(DATA)
    assert opened.name == "ímage ☃.tar.gz"


def test_pathlike_source(tmp_path: Path) -> None:
    path = make_file(tmp_path, "image.tar.xz", DATA)
    opened = source(path)
    assert opened.kind == "path"
    assert opened.value == str(path)
    assert isinstance(opened.value, str)
    assert opened.size == len(DATA)
    assert opened.name == "image.tar.xz"


def test_binary_file_with_fileno(tmp_path: Path) -> None:
    path = make_file(tmp_path, "image.tar.gz", DATA)
    with path.open("rb") as file:
        opened = source(file)
        assert opened.kind == "file"
        assert opened.value is file
        assert opened.size == len(DATA)
        assert opened.name == "image.tar.gz"
        assert file.tell() == 0  # classifying it read nothing


def test_binary_file_positioned_midway_counts_the_rest(tmp_path: Path) -> None:
    path = make_file(tmp_path, "image.tar.gz", b"skip me!" + DATA)
    with path.open("rb") as file:
        file.seek(8)
        opened = source(file)
        assert opened.size == len(DATA)
        assert b"".join(read_chunks(opened, "image_data")) == DATA


def test_binary_file_object_without_fileno() -> None:
    buffer = io.BytesIO(b"head" + DATA)
    buffer.seek(4)
    opened = source(buffer)
    assert opened.kind == "file"
    assert opened.value is buffer
    # Not a regular file: no size is required, but if one is given it is what is left.
    assert opened.size in (None, len(DATA))
    assert opened.name is None
    assert b"".join(read_chunks(opened, "image_data")) == DATA


def test_pipe_has_no_size() -> None:
    with pipe_with(DATA) as pipe:
        opened = source(pipe)
        assert opened.kind == "file"
        assert opened.size is None
        assert opened.name is None  # a pipe's name is its descriptor number
        assert b"".join(read_chunks(opened, "image_data")) == DATA


def test_generator_source() -> None:
    def chunks() -> Iterator[bytes]:
        yield DATA[:10]
        yield DATA[10:]

    generator = chunks()
    opened = source(generator)
    assert opened.kind == "iterable"
    assert opened.value is generator
    assert opened.size is None
    assert opened.name is None


def test_list_of_chunks_source() -> None:
    chunks = [DATA[:10], bytearray(DATA[10:20]), memoryview(DATA[20:])]
    opened = source(chunks)
    assert opened.kind == "iterable"
    assert opened.size is None
    assert b"".join(read_chunks(opened, "image_data")) == DATA


async def _agen() -> AsyncIterator[bytes]:
    yield DATA


def test_async_generator_accepted_when_async_is() -> None:
    generator = _agen()  # never started: it needs no event loop to be dropped
    opened = open_source(generator, "rootfs", accept_async=True)
    assert opened.kind == "async_iterable"
    assert opened.value is generator
    assert opened.size is None


def test_async_generator_refused_by_the_blocking_flavour() -> None:
    with pytest.raises(InvalidInputError, match=r"rootfs is an async iterable.*AsyncClient"):
        open_source(_agen(), "rootfs", accept_async=False)


# --------------------------------------------------------------------------------------------
# open_source: what is refused


def test_text_file_is_refused(tmp_path: Path) -> None:
    path = make_file(tmp_path, "image.tar.gz", DATA)
    with path.open(encoding="latin-1") as file, pytest.raises(InvalidInputError) as caught:
        source(file)
    assert "binary mode" in str(caught.value)
    assert "image_data" in str(caught.value)


@pytest.mark.parametrize(
    "make",
    [
        lambda d: str(d / "missing.tar.gz"),
        lambda d: d / "missing.tar.gz",
        lambda d: str(d),
        lambda d: d,
        lambda d: str(make_file(d, "empty.tar.gz", b"")),
        lambda d: make_file(d, "empty.tar.gz", b""),
        lambda d: "",
        lambda d: BytesPath(os.fsencode(make_file(d, "x.tar.gz", DATA))),
        lambda d: b"",
        lambda d: bytearray(),
        lambda d: memoryview(b""),
        lambda d: 42,
        lambda d: 4.2,
        lambda d: {"a": b"b"},
        lambda d: None,
        lambda d: object(),
    ],
    ids=[
        "missing-str",
        "missing-path",
        "directory-str",
        "directory-path",
        "empty-file-str",
        "empty-file-path",
        "empty-str",
        "bytes-pathlike",
        "empty-bytes",
        "empty-bytearray",
        "empty-memoryview",
        "int",
        "float",
        "dict",
        "None",
        "object",
    ],
)
def test_refused_sources(tmp_path: Path, make: object) -> None:
    given = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(InvalidInputError) as caught:
        open_source(given, "rootfs", accept_async=True)
    assert isinstance(caught.value, ValueError)
    assert "rootfs" in str(caught.value)


# --------------------------------------------------------------------------------------------
# read_chunks


def _of_kind(tmp_path: Path, data: bytes, kind: str) -> object:
    path = make_file(tmp_path, "image.bin", data)
    if kind == "file":
        return path.open("rb")
    return {
        "bytes": data,
        "path": str(path),
        "bytesio": io.BytesIO(data),
        "list": [data[i : i + 700_001] for i in range(0, len(data), 700_001)],
    }[kind]


@pytest.mark.parametrize("kind", ["bytes", "path", "file", "bytesio", "list"])
def test_read_chunks_are_bounded_and_whole(tmp_path: Path, kind: str) -> None:
    data = random.Random(7).randbytes(2 * CHUNK_SIZE + CHUNK_SIZE // 2 + 3)
    given = _of_kind(tmp_path, data, kind)
    try:
        chunks = list(read_chunks(source(given), "image_data"))
    finally:
        if isinstance(given, io.IOBase):
            given.close()
    assert all(isinstance(chunk, bytes) for chunk in chunks)
    assert all(0 < len(chunk) <= CHUNK_SIZE for chunk in chunks)
    assert b"".join(chunks) == data
    if kind != "list":
        assert len(chunks) == 3


def test_read_chunks_of_an_iterable_keep_its_chunks(tmp_path: Path) -> None:
    """An iterable's chunks go as they are (the caller chose their size)."""
    data = bytes(range(256)) * 10
    chunks = list(read_chunks(source([data[:5], data[5:]]), "image_data"))
    assert chunks == [data[:5], data[5:]]


def test_read_chunks_read_lazily() -> None:
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for index in range(3):
            pulled.append(index)
            yield bytes([index]) * 10

    reader = read_chunks(source(chunks()), "image_data")
    assert pulled == []
    assert next(reader) == b"\x00" * 10
    assert pulled == [0]


@pytest.mark.parametrize("bad", ["text", 42, None, [b"x"]], ids=["str", "int", "None", "list"])
@pytest.mark.parametrize("argument", ["image_data", "rootfs"])
def test_read_chunks_refuses_non_bytes_chunks(bad: object, argument: str) -> None:
    # An iterator is checked as it goes (a list is checked before anything is sent).
    reader = read_chunks(source(iter([b"good", bad]), argument), argument)
    assert next(reader) == b"good"
    with pytest.raises(InvalidInputError) as caught:
        next(reader)
    assert argument in str(caught.value)
    assert type(bad).__name__ in str(caught.value)


def test_read_chunks_refuses_a_file_that_reads_str() -> None:
    with pytest.raises(InvalidInputError, match="rootfs produced str"):
        list(read_chunks(source(StrFile(), "rootfs"), "rootfs"))


# --------------------------------------------------------------------------------------------
# refuse_json_before_sending

JSON_HEADS = [
    b'{"source": {"type": "image"}}',
    b"null",
    b"{}",
    b"{",
    b" \t\r\n{}",
    b"\r\nnull",
    b" " * 10 * 1024 + b'{"source": {}}',
    b"\n" * 4095 + b"{}",
    b" " * 4096 + b"null",
]
JSON_IDS = ["object", "null", "empty", "brace", "ws", "ws-null", "10k-ws", "4095-ws", "4096-ws"]
IMAGE_HEADS = [
    DATA,
    b" " * 10 * 1024 + DATA,
    b"nul",
    b"nulL and more",
    b"[1, 2]",
    b"\x00{}",
]
IMAGE_IDS = ["tarball", "10k-ws-tarball", "nul", "nulL", "array", "nul-byte"]


@pytest.mark.parametrize("data", JSON_HEADS, ids=JSON_IDS)
def test_json_is_refused_as_bytes(data: bytes) -> None:
    with pytest.raises(InvalidInputError, match="JSON"):
        refuse_json_before_sending(source(data))


@pytest.mark.parametrize("data", JSON_HEADS, ids=JSON_IDS)
def test_json_is_refused_as_a_path(tmp_path: Path, data: bytes) -> None:
    path = make_file(tmp_path, "image.tar.gz", data)
    with pytest.raises(InvalidInputError, match="JSON"):
        refuse_json_before_sending(source(path))


@pytest.mark.parametrize("data", JSON_HEADS, ids=JSON_IDS)
def test_json_is_refused_as_a_seekable_file_and_the_position_is_kept(
    tmp_path: Path, data: bytes
) -> None:
    path = make_file(tmp_path, "image.tar.gz", b"prefix" + data)
    with path.open("rb") as file:
        file.seek(6)
        with pytest.raises(InvalidInputError, match="JSON"):
            refuse_json_before_sending(source(file))
        assert file.tell() == 6


@pytest.mark.parametrize("data", JSON_HEADS, ids=JSON_IDS)
def test_json_is_refused_as_a_bytesio(data: bytes) -> None:
    buffer = io.BytesIO(data)
    with pytest.raises(InvalidInputError, match="JSON"):
        refuse_json_before_sending(source(buffer))
    assert buffer.tell() == 0


@pytest.mark.parametrize("data", IMAGE_HEADS, ids=IMAGE_IDS)
def test_images_pass_in_every_kind_and_files_stay_where_they_were(
    tmp_path: Path, data: bytes
) -> None:
    refuse_json_before_sending(source(data))
    path = make_file(tmp_path, "image.tar.gz", b"{}" + data)  # JSON-looking before the position
    refuse_json_before_sending(source(make_file(tmp_path, "plain.tar.gz", data)))
    with path.open("rb") as file:
        file.seek(2)
        refuse_json_before_sending(source(file))
        assert file.tell() == 2
        assert file.read() == data


def test_a_pipe_is_not_read_before_sending() -> None:
    """A pipe cannot be rewound, so it is not peeked at: the meter checks it on the way."""
    with pipe_with(b'{"source": {}}') as pipe:
        refuse_json_before_sending(source(pipe))
        assert pipe.read() == b'{"source": {}}'


def test_an_iterable_is_not_consumed_before_sending() -> None:
    def chunks() -> Iterator[bytes]:
        yield b"{}"

    generator = chunks()
    refuse_json_before_sending(source(generator))
    assert next(generator) == b"{}"


# --------------------------------------------------------------------------------------------
# UploadPlan: unified images


def test_unified_bytes_headers() -> None:
    plan = plan_of(DATA)
    assert plan.headers == {
        "Content-Type": "application/octet-stream",
        "Content-Length": str(len(DATA)),
    }
    assert plan.multipart is False
    assert plan.data_size == len(DATA)
    assert body(plan) == DATA


def test_unified_path_sends_its_name_as_utf8(tmp_path: Path) -> None:
    name = "my image ü ☃ 日本.tar.gz"
    plan = plan_of(make_file(tmp_path, name, DATA))
    assert plan.headers["X-Incus-filename"] == name.encode("utf-8")
    assert plan.headers["Content-Length"] == str(len(DATA))
    assert body(plan) == DATA


def test_unified_filename_overrides_the_source_name(tmp_path: Path) -> None:
    plan = plan_of(make_file(tmp_path, "local.tar.gz", DATA), filename="wanted ☃.tar.gz")
    assert plan.headers["X-Incus-filename"] == "wanted ☃.tar.gz".encode()


def test_unified_bytes_with_a_filename() -> None:
    plan = plan_of(DATA, filename="x.tar.gz")
    assert plan.headers["X-Incus-filename"] == b"x.tar.gz"


def test_unified_file_object_sends_its_name(tmp_path: Path) -> None:
    with make_file(tmp_path, "from-file.tar.gz", DATA).open("rb") as file:
        plan = plan_of(file)
        assert plan.headers["X-Incus-filename"] == b"from-file.tar.gz"
        assert plan.headers["Content-Length"] == str(len(DATA))
        assert body(plan) == DATA


@pytest.mark.parametrize("chunks", [[DATA[:9], DATA[9:]], iter([DATA])], ids=["list", "iter"])
def test_unified_iterable_has_no_content_length(chunks: Iterable[bytes]) -> None:
    plan = plan_of(chunks)
    assert "Content-Length" not in plan.headers
    assert "X-Incus-filename" not in plan.headers
    assert plan.data_size is None
    assert body(plan) == DATA


@pytest.mark.parametrize("image_type", ["container", "virtual-machine", "vm"])
def test_type_is_refused_for_a_unified_image(image_type: str) -> None:
    with pytest.raises(InvalidInputError, match="type"):
        plan_of(DATA, image_type=image_type)


@pytest.mark.parametrize("filename", ["", "a\nb", "a\r\nX-Evil: 1", "a\x00b"])
def test_bad_filenames_are_refused(filename: str) -> None:
    with pytest.raises(InvalidInputError):
        plan_of(DATA, filename=filename)
    with pytest.raises(InvalidInputError):
        plan_of(META, ROOTFS, filename=filename)


# --------------------------------------------------------------------------------------------
# UploadPlan: split images


def test_split_container_body(tmp_path: Path) -> None:
    rootfs = make_file(tmp_path, "root ☃.squashfs", ROOTFS)
    plan = plan_of(META, rootfs)
    content_type = str(plan.headers["Content-Type"])
    assert content_type.startswith("multipart/form-data; boundary=")
    assert multipart_boundary(content_type)
    assert plan.multipart is True
    assert plan.data_size == len(META) + len(ROOTFS)
    assert "X-Incus-filename" not in plan.headers  # incusd ignores it for multipart
    sent = body(plan)
    assert plan.headers["Content-Length"] == str(len(sent))
    assert parse_parts(plan, sent) == [
        ("metadata", "metadata", META),
        ("rootfs", "root ☃.squashfs", ROOTFS),
    ]


def test_split_vm_body_uses_rootfs_img(tmp_path: Path) -> None:
    meta = make_file(tmp_path, "meta.tar.xz", META)
    plan = plan_of(meta, ROOTFS, image_type="virtual-machine", filename="disk.qcow2")
    sent = body(plan)
    assert plan.headers["Content-Length"] == str(len(sent))
    assert parse_parts(plan, sent) == [
        ("metadata", "meta.tar.xz", META),
        ("rootfs.img", "disk.qcow2", ROOTFS),
    ]


def test_split_explicit_container_type() -> None:
    plan = plan_of(META, ROOTFS, image_type="container")
    assert [part[:2] for part in parse_parts(plan, body(plan))] == [
        ("metadata", "metadata"),
        ("rootfs", "rootfs"),
    ]


def test_split_filename_overrides_the_rootfs_name(tmp_path: Path) -> None:
    rootfs = make_file(tmp_path, "local.squashfs", ROOTFS)
    plan = plan_of(META, rootfs, filename="wanted.squashfs")
    assert parse_parts(plan, body(plan))[1][:2] == ("rootfs", "wanted.squashfs")


@pytest.mark.parametrize("image_type", ["vm", "Container", "virtual_machine", " container"])
def test_split_unknown_type_is_refused(image_type: str) -> None:
    with pytest.raises(InvalidInputError, match="type"):
        plan_of(META, ROOTFS, image_type=image_type)


def test_split_empty_type_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="type"):
        plan_of(META, ROOTFS, image_type="")


def test_split_filename_with_quote_and_backslash_round_trips() -> None:
    name = 'we"ird\\name"; name="x.squashfs'
    plan = plan_of(META, ROOTFS, filename=name)
    assert parse_parts(plan, body(plan)) == [
        ("metadata", "metadata", META),
        ("rootfs", name, ROOTFS),
    ]


@pytest.mark.parametrize("unsized", ["metadata", "rootfs", "both"])
def test_split_without_every_size_has_no_content_length(unsized: str) -> None:
    meta: object = [META] if unsized in ("metadata", "both") else META
    rootfs: object = iter([ROOTFS]) if unsized in ("rootfs", "both") else ROOTFS
    plan = plan_of(meta, rootfs)
    assert "Content-Length" not in plan.headers
    assert plan.data_size is None
    assert parse_parts(plan, body(plan)) == [
        ("metadata", "metadata", META),
        ("rootfs", "rootfs", ROOTFS),
    ]


def test_split_plans_use_fresh_boundaries() -> None:
    first, second = plan_of(META, ROOTFS), plan_of(META, ROOTFS)
    assert first.headers["Content-Type"] != second.headers["Content-Type"]


def test_split_body_with_delimiter_like_data() -> None:
    """Part data that contains CRLF-dashes still parses back exactly."""
    meta = b"\r\n--\r\n--x" + META
    rootfs = ROOTFS + b"\r\n--"
    plan = plan_of(meta, rootfs)
    assert [part[2] for part in parse_parts(plan, body(plan))] == [meta, rootfs]


def test_split_metadata_path_with_a_newline_cannot_corrupt_the_body(tmp_path: Path) -> None:
    meta = make_file(tmp_path, 'meta\r\nX-Evil: 1\r\n\r\nabc"', META)
    try:
        plan = plan_of(meta, ROOTFS)
    except InvalidInputError:
        return  # refusing it, as a rootfs name with CR/LF is refused, is fine too
    parts = parse_parts(plan, body(plan))
    assert [(name, data) for name, _, data in parts] == [("metadata", META), ("rootfs", ROOTFS)]


def test_description_names_the_sources(tmp_path: Path) -> None:
    rootfs = make_file(tmp_path, "root.squashfs", ROOTFS)
    assert plan_of(META, rootfs).description == f"of {len(META)} bytes + 'root.squashfs'"
    assert plan_of([DATA]).description == "from an iterable"


# --------------------------------------------------------------------------------------------
# UploadMeter


def test_meter_hash_of_a_unified_body() -> None:
    plan = plan_of(DATA)
    meter = UploadMeter(plan, None)
    assert body(plan, meter) == DATA
    assert meter.finish() == sha256(DATA)


def test_meter_hash_of_a_split_body_excludes_the_framing() -> None:
    plan = plan_of(META, ROOTFS)
    meter = UploadMeter(plan, None)
    sent = body(plan, meter)
    assert len(sent) > len(META) + len(ROOTFS)
    assert meter.finish() == sha256(META, ROOTFS)


def _hash_threads() -> set[threading.Thread]:
    return {thread for thread in threading.enumerate() if thread.name == "incus-images-sha256"}


def test_meter_hash_of_a_large_body_is_computed_on_the_worker_thread(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(20 * 1024 * 1024)
    plan = plan_of(make_file(tmp_path, "big.bin", data))
    meter = UploadMeter(plan, None)
    before = _hash_threads()
    segment = plan.segments[0]
    assert segment.source is not None
    meter.start(segment)
    sent = bytearray()
    for chunk in read_chunks(segment.source, "image_data"):
        sent += meter.take(chunk)
        if meter.backlogged:
            meter.wait_for_room()
    sent += meter.end(segment)
    workers = _hash_threads() - before
    assert len(workers) == 1  # it waits for more work until the digest is asked for
    assert meter.finish() == sha256(data)
    assert sent == data
    (worker,) = workers
    assert not worker.is_alive()


def test_meter_progress_reports_every_chunk_with_a_ticking_clock(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clock = iter(range(0, 10**6, 10))  # 10 seconds pass between any two readings
    monkeypatch.setattr(
        incus_images._transfer.reports,
        "time",
        types.SimpleNamespace(monotonic=lambda: next(clock)),
    )
    data = random.Random(2).randbytes(2 * CHUNK_SIZE + 5)
    calls: list[tuple[int, int | None]] = []
    plan = plan_of(make_file(tmp_path, "x.bin", data))
    meter = UploadMeter(plan, lambda done, total: calls.append((done, total)))
    assert calls == []  # the first report comes when the first source begins
    body(plan, meter)
    meter.finish()
    total = len(data)
    assert calls == [(0, total), (CHUNK_SIZE, total), (2 * CHUNK_SIZE, total), (total, total)]


def test_meter_progress_with_unknown_total_ends_at_the_byte_count() -> None:
    calls: list[tuple[int, int | None]] = []
    plan = plan_of([DATA[:100], DATA[100:]])
    meter = UploadMeter(plan, lambda done, total: calls.append((done, total)))
    body(plan, meter)
    meter.finish()
    assert calls[0] == (0, None)
    assert calls[-1] == (len(DATA), None)
    assert all(total is None for _, total in calls)
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})


def test_meter_progress_counts_image_bytes_not_framing() -> None:
    calls: list[tuple[int, int | None]] = []
    plan = plan_of(META, ROOTFS)
    meter = UploadMeter(plan, lambda done, total: calls.append((done, total)))
    body(plan, meter)
    meter.finish()
    size = len(META) + len(ROOTFS)
    assert calls[0] == (0, size)
    assert calls[-1] == (size, size)
    assert calls.count((size, size)) == 1


def _feed(plan: UploadPlan, meter: UploadMeter, chunks: Iterable[bytes]) -> list[bytes]:
    """Meter the first source as chunks; return what was released for each chunk."""
    segment = next(segment for segment in plan.segments if segment.source is not None)
    meter.start(segment)
    out = [meter.take(chunk) for chunk in chunks]
    out.append(meter.end(segment))
    return out


@pytest.mark.parametrize("actual", [b"x" * 99, b"x" * 101, b"x"], ids=["fewer", "more", "one"])
def test_meter_refuses_a_source_that_does_not_deliver_its_size(actual: bytes) -> None:
    announced = Source("file", None, 100, "image.tar.gz")
    plan = UploadPlan(announced, None, image_type=None, filename=None)
    meter = UploadMeter(plan, None)
    with pytest.raises(TransferError) as caught:
        _feed(plan, meter, [actual])
    message = str(caught.value)
    assert f"delivered {len(actual)} bytes" in message
    assert "100" in message
    assert "image_data" in message
    meter.close()


def test_meter_refuses_a_rootfs_that_does_not_deliver_its_size() -> None:
    plan = UploadPlan(
        source(META),
        Source("path", "/nonexistent", 50, "root"),
        image_type=None,
        filename=None,
    )
    meter = UploadMeter(plan, None)
    meter.start(plan.segments[1])
    meter.take(META)
    meter.end(plan.segments[1])
    meter.start(plan.segments[3])
    meter.take(b"r" * 49)
    with pytest.raises(TransferError, match=r"rootfs delivered 49 bytes"):
        meter.end(plan.segments[3])
    meter.close()


@pytest.mark.parametrize("which", ["image_data", "rootfs"])
def test_meter_refuses_an_empty_part(which: str) -> None:
    def empty() -> Iterator[bytes]:
        yield from ()

    plan = plan_of(
        empty() if which == "image_data" else META, empty() if which == "rootfs" else ROOTFS
    )
    meter = UploadMeter(plan, None)
    segments = [segment for segment in plan.segments if segment.source is not None]
    segment = segments[0] if which == "image_data" else segments[1]
    if which == "rootfs":
        meter.start(segments[0])
        meter.take(META)
        meter.end(segments[0])
    meter.start(segment)
    meter.take(b"")
    with pytest.raises(InvalidInputError, match=f"{which} is empty"):
        meter.end(segment)
    meter.close()


def test_meter_refuses_an_empty_unified_iterable() -> None:
    plan = plan_of(iter([]))
    with pytest.raises(InvalidInputError, match="image_data is empty"):
        _feed(plan, UploadMeter(plan, None), [])


@pytest.mark.parametrize(
    "chunks",
    [
        [b" ", b"\n{", b'"', b"a"],
        [b" ", b"\t", b"\r", b"\n", b"n", b"u", b"l", b"l"],
        [b"{", b"}", b" ", b"\n", b"x"],
        [b" " * 5000, b"{", b'"source": {}}'],
        [b"\n{", b'"a": 1, "b": 2}'],
    ],
    ids=["ws-brace", "ws-null", "brace-ws", "long-ws", "two-chunks"],
)
def test_meter_guard_stops_json_without_releasing_any_of_it(chunks: list[bytes]) -> None:
    plan = plan_of(iter(chunks))
    meter = UploadMeter(plan, None)
    released: list[bytes] = []

    def send_all() -> None:
        meter.start(plan.segments[0])
        for chunk in chunks:
            released.append(meter.take(chunk))
        released.append(meter.end(plan.segments[0]))

    with pytest.raises(InvalidInputError, match="JSON") as caught:
        send_all()
    # Leading whitespace may go out at once; no byte of the JSON itself ever does.
    assert b"".join(released).strip(b" \t\r\n") == b""
    # The meter stops the upload; the upload records what that leaves (nothing stored).
    assert "the upload was stopped" in str(caught.value)
    meter.close()


@pytest.mark.parametrize("chunks", [[b" ", b"\n{"], [b"{"], [b"\r\n", b"{", b"}"], [b"  ", b"{}"]])
def test_meter_guard_stops_short_json_at_the_end(chunks: list[bytes]) -> None:
    plan = plan_of(iter(chunks))
    meter = UploadMeter(plan, None)
    meter.start(plan.segments[0])
    released = [meter.take(chunk) for chunk in chunks]
    assert b"".join(released).strip(b" \t\r\n") == b""
    with pytest.raises(InvalidInputError, match="JSON"):
        meter.end(plan.segments[0])
    meter.close()


def test_meter_guard_holds_back_until_four_bytes_past_whitespace() -> None:
    chunks = [b" ", b"\n", b"\x1f", b"\x8b\x08", b"\x00", b"rest", b"more"]
    plan = plan_of(iter(chunks))
    meter = UploadMeter(plan, None)
    released = _feed(plan, meter, chunks)
    assert released == [b" ", b"\n", b"", b"", b"\x1f\x8b\x08\x00", b"rest", b"more", b""]
    assert meter.finish() == sha256(b"".join(chunks))


@pytest.mark.parametrize("chunks", [[b"ab"], [b" ", b"a", b"b", b"c"], [b"nul"]])
def test_meter_guard_releases_a_short_non_json_body_at_the_end(chunks: list[bytes]) -> None:
    plan = plan_of(iter(chunks))
    meter = UploadMeter(plan, None)
    released = _feed(plan, meter, chunks)
    # Only whitespace goes out before the end; everything goes out in the end.
    assert b"".join(released[:-1]).strip(b" \t\r\n") == b""
    assert b"".join(released) == b"".join(chunks)
    meter.close()


def test_meter_never_holds_back_a_multipart_body() -> None:
    """Only a raw body is read as JSON by incusd: multipart parts go out as they come."""
    plan = plan_of(iter([b" ", b"{", b"}"]), iter([b"n", b"ull"]))
    meter = UploadMeter(plan, None)
    segments = [segment for segment in plan.segments if segment.source is not None]
    meter.start(segments[0])
    assert [meter.take(chunk) for chunk in (b" ", b"{", b"}")] == [b" ", b"{", b"}"]
    assert meter.end(segments[0]) == b""
    meter.start(segments[1])
    assert [meter.take(chunk) for chunk in (b"n", b"ull")] == [b"n", b"ull"]
    assert meter.end(segments[1]) == b""
    assert meter.finish() == sha256(b" {}null")


def test_meter_empty_chunks_are_nothing() -> None:
    plan = plan_of(DATA)
    meter = UploadMeter(plan, None)
    released = _feed(plan, meter, [b"", DATA, b""])
    assert b"".join(released) == DATA
    assert meter.finish() == sha256(DATA)


def test_meter_close_without_digest_returns() -> None:
    plan = plan_of(iter([DATA]))  # a size not known in advance: any amount may follow
    meter = UploadMeter(plan, None)
    before = _hash_threads()
    meter.start(plan.segments[0])
    for _ in range(8):
        meter.take(DATA * 300)  # past the inline limit: the worker starts
    workers = _hash_threads() - before
    assert len(workers) == 1
    meter.close()
    (worker,) = workers
    worker.join(timeout=10)
    assert not worker.is_alive()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([], "holds no bytes"),
        ([b"", b""], "holds no bytes"),
        (("a", "b"), "holds a str, not bytes chunks"),
        ([b"x", 5], "holds a int, not bytes chunks"),
    ],
)
def test_a_list_is_checked_before_anything_is_sent(data: object, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        source(data)


def test_files_that_cannot_be_read_are_refused_before_sending(tmp_path: Path) -> None:
    path = make_file(tmp_path, "image.tar.gz", DATA)
    with open(path, "rb") as closed:
        pass
    with pytest.raises(InvalidInputError, match="closed file"):
        source(closed)
    with open(tmp_path / "out", "wb") as writing, pytest.raises(InvalidInputError, match="'rb'"):
        source(writing)
    with pytest.raises(InvalidInputError, match="NUL"):
        source(str(path) + "\x00")
    with pytest.raises(InvalidInputError, match="surrogate"):
        source(str(tmp_path / "\udcff.tar"))
