"""Unit tests of receiving an export (incus_images._transfer.export and .multipart): names,
the multipart parser, atomic files, the target check."""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from incus_images._errors import (
    ChecksumMismatchError,
    InvalidInputError,
    LeftBehind,
    TransferError,
)
from incus_images._transfer.export import ExportReceiver
from incus_images._transfer.files import (
    ExportTarget,
    check_export_target,
    make_directories,
    remove_made_directories,
    safe_basename,
    temporary_name,
)
from incus_images._transfer.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnded,
    PartStarted,
    content_disposition_filename,
    multipart_boundary,
)
from tests.helpers import assert_left, random_pieces, sha256

#: A boundary as Go's multipart.Writer makes it (30 random bytes in hex), from the spec (§6.7).
BOUNDARY = b"e29038f40119e47d1d5fb5816b016d4e72748910f8ad25e9d26082e277cd"
CONTENT_TYPE = "multipart/form-data; boundary=" + BOUNDARY.decode()


def go_multipart(parts: Iterable[tuple[str, str, bytes]], boundary: bytes = BOUNDARY) -> bytes:
    """A body exactly as Go's mime/multipart Writer.CreateFormFile + Close writes it."""
    out = bytearray()
    for index, (name, filename, data) in enumerate(parts):
        out += (b"\r\n--" if index else b"--") + boundary + b"\r\n"
        # Go writes the header keys sorted, and escapes \ and " in the names.
        escaped = filename.replace("\\", "\\\\").replace('"', '\\"')
        out += f'Content-Disposition: form-data; name="{name}"; filename="{escaped}"\r\n'.encode()
        out += b"Content-Type: application/octet-stream\r\n\r\n"
        out += data
    out += b"\r\n--" + boundary + b"--\r\n"
    return bytes(out)


Parsed = list[tuple[dict[str, str], bytes]]


def parse(chunks: Iterable[bytes], boundary: bytes = BOUNDARY) -> Parsed:
    """Feed chunks; return [(headers, data)] and check the event sequence is well formed."""
    parser = MultipartParser(boundary)
    parts: Parsed = []
    open_part = False
    for chunk in chunks:
        for event in parser.feed(chunk):
            if isinstance(event, PartStarted):
                assert not open_part
                parts.append((dict(event.headers), b""))
                open_part = True
            elif isinstance(event, PartData):
                assert open_part
                assert len(event.data) > 0
                headers, data = parts[-1]
                parts[-1] = (headers, data + bytes(event.data))
            else:
                assert isinstance(event, PartEnded)
                assert open_part
                open_part = False
    parser.close()
    assert not open_part
    return parts


def split_at(body: bytes, *cuts: int) -> list[bytes]:
    bounds = [0, *cuts, len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds)]


def expected_parts(parts: list[tuple[str, str, bytes]]) -> Parsed:
    return [
        (
            {
                "content-disposition": (
                    f'form-data; name="{name}"; filename="'
                    + filename.replace("\\", "\\\\").replace('"', '\\"')
                    + '"'
                ),
                "content-type": "application/octet-stream",
            },
            data,
        )
        for name, filename, data in parts
    ]


#: Part data that looks like the delimiter, or like the start of one.
NEAR_DELIMITERS = [
    b"",
    b"\r",
    b"\r\n",
    b"\r\n-",
    b"\r\n--",
    b"\n--" + BOUNDARY,
    b"\r--" + BOUNDARY,
    b"--" + BOUNDARY,
    b"--" + BOUNDARY + b"--",
    b"\r\n-" + BOUNDARY,
    b"\r\n--" + BOUNDARY[:-1],
    b"\r\n--" + BOUNDARY[:-1] + b"X",
    b"\r\n--" + BOUNDARY[:30],
    b"\r\r\n\r\n--" + BOUNDARY[:-2] + b"\r\n--",
    b"x\r\n--" + BOUNDARY[1:],
    b"\r\n--" + BOUNDARY.upper(),
    b"\r\n\r\n",
]


# --------------------------------------------------------------------------------------------
# Names


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Incus's unified export: no quotes, no space (spec §6.7).
        ("inline;filename=abc.tar.gz", "abc.tar.gz"),
        ("inline; filename=abc.tar.gz", "abc.tar.gz"),
        ("attachment; FILENAME = abc.tar ", "abc.tar"),
        ('form-data; name="metadata"; filename="meta-x.tar.xz"', "meta-x.tar.xz"),
        ('form-data; name="rootfs.img"; filename="ab12"', "ab12"),
        ('form-data; name="f"; filename="a\\"b\\\\c.tar"', 'a"b\\c.tar'),
        ('form-data; name="f"; filename="semi;colon.tar"', "semi;colon.tar"),
        ('form-data; filename="x.tar"; name="f"', "x.tar"),
        ("inline;filename=abc.tar.gz;size=3", "abc.tar.gz"),
        ('inline;filename="Übung ☃.tar"', "Übung ☃.tar"),
    ],
)
def test_content_disposition_filename(value: str, expected: str) -> None:
    assert content_disposition_filename(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "inline",
        'form-data; name="metadata"',
        "inline;filename=",
        'inline;filename=""',
        "inline;myfilename=x",
    ],
)
def test_content_disposition_without_filename(value: str | None) -> None:
    assert content_disposition_filename(value) is None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("abc.tar.gz", "abc.tar.gz"),
        ("../../x", "x"),
        ("/etc/passwd", "passwd"),
        ("a/b\\c", "c"),
        ("..\\..\\win.ini", "win.ini"),
        ("a\x00b\x1fc\x7f.tar", "abc.tar"),
        ("  spaced.tar  ", "spaced.tar"),
        ("Übung ☃.tar", "Übung ☃.tar"),
        (".hidden", ".hidden"),
        ("x" * 255, "x" * 255),
        ("ü" * 127, "ü" * 127),  # 254 bytes
    ],
)
def test_safe_basename_keeps_a_plain_base_name(name: str, expected: str) -> None:
    assert safe_basename(name, "FALLBACK") == expected


@pytest.mark.parametrize(
    "name",
    [
        None,
        "",
        ".",
        "..",
        "../..",
        "a/..",
        "a/",
        "a\\",
        "/",
        " .. ",
        ".\x00.",
        "\x00\x01",
        "   ",
        "x" * 256,
        "ü" * 128,  # 256 bytes
    ],
)
def test_safe_basename_falls_back(name: str | None) -> None:
    assert safe_basename(name, "FALLBACK") == "FALLBACK"


def test_multipart_boundary() -> None:
    assert multipart_boundary(CONTENT_TYPE) == BOUNDARY
    assert multipart_boundary('multipart/form-data; boundary="a b;c"') == b"a b;c"
    assert multipart_boundary("Multipart/Form-Data; charset=x; BOUNDARY=xyz") == b"xyz"
    assert multipart_boundary("application/octet-stream") is None
    assert multipart_boundary(None) is None
    assert multipart_boundary("") is None
    with pytest.raises(MultipartError, match="without a boundary"):
        multipart_boundary("multipart/form-data")
    assert issubclass(MultipartError, ValueError)


# --------------------------------------------------------------------------------------------
# MultipartParser


SPLIT_PARTS = [
    ("metadata", "meta-ab12.tar.xz", b"\xfd7zXZ\x00metadata" + b"\r\n--" + BOUNDARY[:-1]),
    ("rootfs", "ab12.squashfs", b"hsqs" + bytes(range(256)) + b"\r\n"),
]


def test_parser_reads_a_go_body_in_one_piece() -> None:
    body = go_multipart(SPLIT_PARTS)
    assert parse([body]) == expected_parts(SPLIT_PARTS)


def test_parser_part_names_and_filenames() -> None:
    parser = MultipartParser(BOUNDARY)
    events = parser.feed(go_multipart([("rootfs.img", 'we"ird.img', b"x")]))
    started = [event for event in events if isinstance(event, PartStarted)]
    assert len(started) == 1
    assert started[0].name == "rootfs.img"
    assert started[0].filename == 'we"ird.img'
    assert PartStarted({}).name is None
    assert PartStarted({}).filename is None
    assert PartStarted({"content-disposition": "form-data; name=bare"}).name == "bare"


def test_parser_every_split_position() -> None:
    body = go_multipart(SPLIT_PARTS)
    expected = expected_parts(SPLIT_PARTS)
    for cut in range(len(body) + 1):
        assert parse(split_at(body, cut)) == expected, cut


def test_parser_every_pair_of_split_positions_around_delimiters() -> None:
    body = go_multipart(SPLIT_PARTS)
    expected = expected_parts(SPLIT_PARTS)
    # Around each delimiter, every pair of cuts within one delimiter length.
    width = len(BOUNDARY) + 6
    starts = [i for i in range(len(body)) if body.startswith(b"\r\n--" + BOUNDARY, i)]
    assert len(starts) == 2
    for start in starts:
        low, high = max(0, start - 3), min(len(body), start + width)
        for first in range(low, high):
            for second in range(first, high):
                assert parse(split_at(body, first, second)) == expected, (first, second)


def test_parser_byte_by_byte() -> None:
    body = go_multipart(SPLIT_PARTS)
    assert parse([body[i : i + 1] for i in range(len(body))]) == expected_parts(SPLIT_PARTS)


@pytest.mark.parametrize("data", NEAR_DELIMITERS, ids=range(len(NEAR_DELIMITERS)))
def test_parser_near_delimiter_data_at_every_split(data: bytes) -> None:
    parts = [("metadata", "m", data), ("rootfs", "r", data + b"tail" + data)]
    body = go_multipart(parts)
    expected = expected_parts(parts)
    for cut in range(len(body) + 1):
        assert parse(split_at(body, cut)) == expected, cut


def test_parser_random_bodies_and_chunkings() -> None:
    rng = random.Random(20261126)
    pieces = [*NEAR_DELIMITERS, b"a", b"\x00\xff", b"-", b"--", b"\r\n--" + BOUNDARY[:5]]
    for _ in range(300):
        parts = []
        for index in range(rng.randint(0, 3)):
            data = b"\r\n--" + BOUNDARY
            while b"\r\n--" + BOUNDARY in data:  # a real delimiter may not be in the data
                data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 8)))
                if rng.random() < 0.2:
                    data += rng.randbytes(rng.randint(0, 300))
            parts.append((f"part{index}", f"file{index}", data))
        body = go_multipart(parts)
        expected = expected_parts(parts)
        chunks = list(random_pieces(body, rng, rng.choice([1, 3, 8, 70, 200])))
        assert b"".join(chunks) == body
        assert parse(chunks) == expected, (parts, [len(c) for c in chunks])


def test_parser_preamble_and_epilogue() -> None:
    parts = [("metadata", "m", b"meta"), ("rootfs", "r", b"root")]
    body = (
        b"This is a preamble.\r\n--not-the-boundary\r\n"
        + b"\r\n"
        + go_multipart(parts)
        + b"This is the epilogue, with --"
        + BOUNDARY
        + b" in it.\r\n"
    )
    expected = expected_parts(parts)
    assert parse([body]) == expected
    for cut in range(len(body) + 1):
        assert parse(split_at(body, cut)) == expected, cut
    # Nothing follows the closing delimiter, not even the final CRLF.
    assert parse([go_multipart(parts)[:-2]]) == expected


def test_parser_transport_padding_after_a_delimiter() -> None:
    body = go_multipart([("a", "a", b"x")]).replace(
        b"--" + BOUNDARY + b"\r\n", b"--" + BOUNDARY + b" \t \r\n", 1
    )
    assert parse([body]) == expected_parts([("a", "a", b"x")])


def test_parser_no_parts() -> None:
    assert parse([b"--" + BOUNDARY + b"--\r\n"]) == []


def test_parser_hands_out_data_without_buffering_the_part() -> None:
    parser = MultipartParser(BOUNDARY)
    head = go_multipart([("rootfs", "r", b"")]).split(b"\r\n--" + BOUNDARY + b"--")[0]
    assert parser.feed(head)[0] == PartStarted(
        {
            "content-disposition": 'form-data; name="rootfs"; filename="r"',
            "content-type": "application/octet-stream",
        }
    )
    chunk = os.urandom(1024 * 1024)
    events = parser.feed(chunk)
    handed = sum(len(event.data) for event in events if isinstance(event, PartData))
    # Only a possible delimiter prefix is held back.
    assert handed >= len(chunk) - len(BOUNDARY) - 4
    assert all(isinstance(event, PartData) for event in events)


def test_parser_missing_closing_boundary_fails_on_close() -> None:
    body = go_multipart(SPLIT_PARTS)
    for truncated in (
        body[: -len(b"--\r\n")],  # the last delimiter, without its "--"
        body[: body.rindex(b"\r\n--")],  # inside the last part
        body[:10],  # inside the first delimiter
        b"",
        b"preamble only",
    ):
        parser = MultipartParser(BOUNDARY)
        parser.feed(truncated)
        with pytest.raises(MultipartError, match="ended before its closing boundary"):
            parser.close()


def test_parser_malformed_header_line() -> None:
    body = b"--" + BOUNDARY + b"\r\nContent-Type: x\r\nno colon here\r\n\r\ndata"
    with pytest.raises(MultipartError, match="malformed multipart part header: 'no colon here'"):
        MultipartParser(BOUNDARY).feed(body)


def test_parser_junk_after_a_boundary() -> None:
    body = b"--" + BOUNDARY + b"junk\r\nContent-Type: x\r\n\r\ndata"
    with pytest.raises(MultipartError, match="junk after a boundary"):
        MultipartParser(BOUNDARY).feed(body)


def test_parser_endless_boundary_line_is_refused() -> None:
    parser = MultipartParser(BOUNDARY)
    parser.feed(b"--" + BOUNDARY)
    for _ in range(16):
        parser.feed(b" " * 1024)  # within the limit: still waiting for the line's end
    with pytest.raises(MultipartError, match="junk after a boundary"):
        parser.feed(b" " * 1024)


def test_parser_too_long_headers_are_refused() -> None:
    parser = MultipartParser(BOUNDARY)
    parser.feed(b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; name=")
    for _ in range(15):
        parser.feed(b"x" * 1024)  # within the limit: still waiting for the blank line
    with pytest.raises(MultipartError, match="part headers too long"):
        parser.feed(b"x" * 2048)


# --------------------------------------------------------------------------------------------
# ExportReceiver


META = b"\xfd7zXZ\x00 metadata.yaml " * 50
ROOT = b"hsqs rootfs " * 300
UNIFIED = b"\x1f\x8b\x08\x00 unified image " * 100


def feed_all(receiver: ExportReceiver, body: bytes, size: int = 97) -> None:
    for start in range(0, len(body), size):
        receiver.feed(body[start : start + size])


def receive(target: Path, fingerprint: str, body: bytes, **options: object) -> list[Path]:
    """Run a receiver as the client does: feed, finish, and always discard."""
    receiver = ExportReceiver(ExportTarget(target), fingerprint, **options)  # type: ignore[arg-type]
    try:
        feed_all(receiver, body)
        return receiver.finish()
    finally:
        receiver.discard()


def unified_options(filename: str | None) -> dict[str, object]:
    return {
        "content_type": "application/octet-stream",
        "content_disposition": None if filename is None else f"inline;filename={filename}",
    }


SPLIT_OPTIONS: dict[str, object] = {"content_type": CONTENT_TYPE, "content_disposition": None}


def split_body(fp: str, meta: bytes = META, root: bytes = ROOT, root_name: str = "") -> bytes:
    return go_multipart(
        [("metadata", f"meta-{fp}.tar.xz", meta), ("rootfs", root_name or f"{fp}.squashfs", root)]
    )


def listing(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_unified_export_to_a_file_path(tmp_path: Path) -> None:
    fp = sha256(UNIFIED)
    target = tmp_path / "image.tar.gz"
    written = receive(target, fp, UNIFIED, **unified_options(f"{fp}.tar.gz"))
    assert written == [target]
    assert target.read_bytes() == UNIFIED
    assert listing(tmp_path) == ["image.tar.gz"]


def test_unified_export_replaces_an_existing_file(tmp_path: Path) -> None:
    fp = sha256(UNIFIED)
    target = tmp_path / "image.tar.gz"
    target.write_bytes(b"old")
    assert receive(target, fp, UNIFIED, **unified_options(None)) == [target]
    assert target.read_bytes() == UNIFIED


def test_unified_export_into_a_directory_uses_the_server_name(tmp_path: Path) -> None:
    fp = sha256(UNIFIED)
    written = receive(tmp_path, fp, UNIFIED, **unified_options(f"{fp}.tar.gz"))
    assert written == [tmp_path / f"{fp}.tar.gz"]
    assert written[0].read_bytes() == UNIFIED
    assert listing(tmp_path) == [f"{fp}.tar.gz"]


@pytest.mark.parametrize(
    ("disposition", "name"),
    [
        (None, "FP"),
        ("inline;filename=../../escape.tar", "escape.tar"),
        ("inline;filename=..", "FP"),
        ('inline;filename="/etc/cron.d/x"', "x"),
    ],
)
def test_unified_export_into_a_directory_never_leaves_it(
    tmp_path: Path, disposition: str | None, name: str
) -> None:
    fp = sha256(UNIFIED)
    directory = tmp_path / "out"
    directory.mkdir()
    written = receive(
        directory,
        fp,
        UNIFIED,
        content_type="application/octet-stream",
        content_disposition=disposition,
    )
    expected = fp if name == "FP" else name
    assert written == [directory / expected]
    assert listing(directory) == [expected]
    assert listing(tmp_path) == ["out"]


def test_split_export_to_a_file_path(tmp_path: Path) -> None:
    fp = sha256(META, ROOT)
    target = tmp_path / "image"
    written = receive(target, fp, split_body(fp), **SPLIT_OPTIONS)
    assert written == [target, tmp_path / "image.root"]
    assert target.read_bytes() == META
    assert (tmp_path / "image.root").read_bytes() == ROOT
    assert listing(tmp_path) == ["image", "image.root"]


def test_split_export_into_a_directory(tmp_path: Path) -> None:
    fp = sha256(META, ROOT)
    written = receive(tmp_path, fp, split_body(fp), **SPLIT_OPTIONS)
    assert written == [tmp_path / f"meta-{fp}.tar.xz", tmp_path / f"{fp}.squashfs"]
    assert written[0].read_bytes() == META
    assert written[1].read_bytes() == ROOT
    assert listing(tmp_path) == sorted([f"meta-{fp}.tar.xz", f"{fp}.squashfs"])


def test_split_vm_export_into_a_directory(tmp_path: Path) -> None:
    # A VM's rootfs part is named "rootfs.img" with the bare fingerprint as file name.
    fp = sha256(META, ROOT)
    body = go_multipart([("metadata", f"meta-{fp}.tar.xz", META), ("rootfs.img", fp, ROOT)])
    written = receive(tmp_path, fp, body, **SPLIT_OPTIONS)
    assert written == [tmp_path / f"meta-{fp}.tar.xz", tmp_path / fp]
    assert (tmp_path / fp).read_bytes() == ROOT


def test_split_export_into_a_directory_without_file_names(tmp_path: Path) -> None:
    fp = sha256(META, ROOT)
    boundary = BOUNDARY
    body = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="metadata"\r\n\r\n' + META
        + b"\r\n--" + boundary + b'\r\nContent-Disposition: form-data; name="rootfs"\r\n\r\n'
        + ROOT + b"\r\n--" + boundary + b"--\r\n"
    )  # fmt: skip
    written = receive(tmp_path, fp, body, **SPLIT_OPTIONS)
    assert written == [tmp_path / f"meta-{fp}", tmp_path / f"{fp}.root"]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("rootfs", "metadata"), "first part .* is 'rootfs', not 'metadata'"),
        (("metadata", "metadata"), "second part .* is 'metadata', not a rootfs"),
        (("", "rootfs"), "first part .* is '', not 'metadata'"),
        (("metadata", "../rootfs"), "second part"),
    ],
)
def test_split_export_parts_must_be_what_incus_sends(
    tmp_path: Path, names: tuple[str, str], message: str
) -> None:
    """Parts are metadata then rootfs (or rootfs.img): a relay must know which part is which."""
    fp = sha256(META, ROOT)
    body = go_multipart([(names[0], "m", META), (names[1], "r", ROOT)])
    with pytest.raises(TransferError, match=message):
        receive(tmp_path, fp, body, **SPLIT_OPTIONS)
    assert listing(tmp_path) == []


def test_split_export_with_two_parts_of_one_name_is_refused(tmp_path: Path) -> None:
    fp = sha256(META, ROOT)
    body = go_multipart([("metadata", "same", META), ("rootfs", "../same", ROOT)])
    with pytest.raises(TransferError, match="names two parts 'same'"):
        receive(tmp_path, fp, body, **SPLIT_OPTIONS)
    assert listing(tmp_path) == []


def test_temporary_files_live_beside_the_target(tmp_path: Path) -> None:
    fp = sha256(UNIFIED)
    target = tmp_path / "image.tar.gz"
    receiver = ExportReceiver(ExportTarget(target), fp, **unified_options(None))  # type: ignore[arg-type]
    receiver.feed(UNIFIED[:100])
    names = listing(tmp_path)
    assert len(names) == 1
    assert names[0].startswith(".image.tar.gz.")
    assert names[0].endswith(".partial")
    assert not target.exists()
    receiver.feed(UNIFIED[100:])
    assert receiver.received == len(UNIFIED)
    assert receiver.finish() == [target]
    assert listing(tmp_path) == ["image.tar.gz"]
    receiver.discard()  # nothing to do after finish(): the result stays
    assert target.read_bytes() == UNIFIED


@pytest.mark.parametrize("shape", ["unified", "split"])
@pytest.mark.parametrize("into_directory", [False, True])
def test_checksum_mismatch_leaves_no_file_at_all(
    tmp_path: Path, shape: str, into_directory: bool
) -> None:
    wrong = sha256(b"another image")
    if shape == "unified":
        body, options, data_size = UNIFIED, unified_options(f"{wrong}.tar.gz"), len(UNIFIED)
    else:
        # Image bytes are counted, not the multipart framing around them.
        body, options, data_size = split_body(wrong), SPLIT_OPTIONS, len(META) + len(ROOT)
    target = tmp_path if into_directory else tmp_path / "image"
    with pytest.raises(ChecksumMismatchError) as info:
        receive(target, wrong, body, **options)
    assert isinstance(info.value, TransferError)
    assert info.value.fingerprint == wrong
    assert f"{data_size} bytes received" in str(info.value)
    assert_left(info.value, LeftBehind.NOTHING, "nothing was written")
    assert listing(tmp_path) == []


def test_checksum_mismatch_keeps_a_previous_file_untouched(tmp_path: Path) -> None:
    target = tmp_path / "image"
    target.write_bytes(b"previous")
    (tmp_path / "image.root").write_bytes(b"previous root")
    with pytest.raises(ChecksumMismatchError):
        receive(target, sha256(b"x"), split_body("ab"), **SPLIT_OPTIONS)
    assert target.read_bytes() == b"previous"
    assert (tmp_path / "image.root").read_bytes() == b"previous root"
    assert listing(tmp_path) == ["image", "image.root"]


def test_checksum_mismatch_file_remains_only_until_discard(tmp_path: Path) -> None:
    fp = sha256(b"other")
    receiver = ExportReceiver(ExportTarget(tmp_path / "x"), fp, **unified_options(None))  # type: ignore[arg-type]
    receiver.feed(UNIFIED)
    with pytest.raises(ChecksumMismatchError):
        receiver.finish()
    assert not (tmp_path / "x").exists()
    receiver.discard()
    assert listing(tmp_path) == []


def test_discard_removes_temporary_files_midway(tmp_path: Path) -> None:
    fp = sha256(META, ROOT)
    receiver = ExportReceiver(ExportTarget(tmp_path / "image"), fp, **SPLIT_OPTIONS)  # type: ignore[arg-type]
    body = split_body(fp)
    receiver.feed(body[: len(body) - 50])  # into the rootfs part
    assert len(listing(tmp_path)) == 2
    assert all(name.endswith(".partial") for name in listing(tmp_path))
    receiver.discard()
    assert listing(tmp_path) == []
    receiver.discard()  # idempotent
    assert listing(tmp_path) == []


def test_an_unverifiable_image_is_accepted_only_when_allowed(tmp_path: Path) -> None:
    fp = sha256(b"not these bytes")
    target = tmp_path / "oci.tar"
    with pytest.raises(TransferError, match="allow_unverified=True"):
        receive(target, fp, UNIFIED, unverifiable=True, **unified_options(None))
    assert listing(tmp_path) == []
    options = unified_options(None)
    assert receive(target, fp, UNIFIED, unverifiable=True, allow_unverified=True, **options) == [
        target
    ]
    assert target.read_bytes() == UNIFIED


def test_allowing_unverified_images_still_verifies_the_others(tmp_path: Path) -> None:
    fp = sha256(b"not these bytes")
    with pytest.raises(ChecksumMismatchError):
        receive(tmp_path / "x", fp, UNIFIED, allow_unverified=True, **unified_options(None))
    assert listing(tmp_path) == []


def test_temporary_names_fit_the_file_name_limit() -> None:
    for name in ("x" * 255, "ü" * 127, "a", "☃" * 85):
        temporary = temporary_name(name)
        assert len(temporary.encode()) <= 255
        assert temporary.startswith(".") and temporary.endswith(".partial")
        assert temporary_name(name) != temporary  # unique each time


def test_more_than_two_parts_are_refused(tmp_path: Path) -> None:
    parts = [("metadata", "m", b"1"), ("rootfs", "r", b"2"), ("extra", "e", b"3")]
    fp = sha256(b"123")
    with pytest.raises(TransferError, match="more than two parts") as info:
        receive(tmp_path / "image", fp, go_multipart(parts), **SPLIT_OPTIONS)
    assert info.value.fingerprint == fp
    assert listing(tmp_path) == []


def test_truncated_split_export_is_refused(tmp_path: Path) -> None:
    fp = sha256(META, ROOT)
    body = split_body(fp)[:-20]
    with pytest.raises(TransferError, match="ended before its closing boundary"):
        receive(tmp_path / "image", fp, body, **SPLIT_OPTIONS)
    assert listing(tmp_path) == []


def test_malformed_split_export_is_a_transfer_error(tmp_path: Path) -> None:
    fp = sha256(META, ROOT)
    body = b"--" + BOUNDARY + b"\r\nbroken header\r\n\r\n" + META
    with pytest.raises(TransferError, match="malformed multipart part header"):
        receive(tmp_path / "image", fp, body, **SPLIT_OPTIONS)
    assert listing(tmp_path) == []


def test_multipart_content_type_without_boundary(tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="without a boundary") as info:
        ExportReceiver(
            ExportTarget(tmp_path / "x"),
            "ab",
            content_type="multipart/form-data",
            content_disposition=None,
            failure_context="Could not export image 'ab' to 'x' on unix:///s",
            server="unix:///s",
        )
    assert str(info.value).startswith("Could not export image 'ab' to 'x' on unix:///s: ")
    assert info.value.server == "unix:///s"
    assert info.value.fingerprint == "ab"
    assert listing(tmp_path) == []


def test_empty_multipart_body_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="has 0 part"):
        receive(tmp_path / "x", sha256(b""), go_multipart([]), **SPLIT_OPTIONS)
    assert listing(tmp_path) == []


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path: Path, mask: int, mode: int) -> None:
    fp = sha256(META, ROOT)
    with umask(mask):
        written = receive(tmp_path / "image", fp, split_body(fp), **SPLIT_OPTIONS)
    assert len(written) == 2
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_failed_commit_of_the_rootfs_leaves_nothing_under_the_target_name(
    tmp_path: Path,
) -> None:
    fp = sha256(META, ROOT)
    target = tmp_path / "image"
    target.write_bytes(b"previous")
    blocker = tmp_path / "image.root"  # a non-empty directory cannot be replaced by a file
    blocker.mkdir()
    (blocker / "keep").write_bytes(b"")
    with pytest.raises(TransferError):
        receive(target, fp, split_body(fp), **SPLIT_OPTIONS)
    assert target.read_bytes() == b"previous"


# --------------------------------------------------------------------------------------------
# check_export_target


def test_check_export_target_accepts_new_and_existing_files_and_directories(
    tmp_path: Path,
) -> None:
    assert check_export_target(tmp_path) == ExportTarget(tmp_path)
    assert check_export_target(str(tmp_path / "new.tar")) == ExportTarget(tmp_path / "new.tar")
    existing = tmp_path / "old.tar"
    existing.write_bytes(b"x")
    assert check_export_target(existing) == ExportTarget(existing)


def test_check_export_target_a_separator_names_a_directory(tmp_path: Path) -> None:
    assert check_export_target(f"{tmp_path}/") == ExportTarget(tmp_path)
    wanted = check_export_target(f"{tmp_path}/a/b/")
    assert wanted == ExportTarget(tmp_path / "a" / "b", make_directory=True)
    assert str(wanted) == f"{tmp_path}/a/b/"
    assert list(tmp_path.iterdir()) == []  # made only once the export starts


def test_check_export_target_a_separator_after_a_file_or_symlink(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    for raw in ("file/", "file/sub/", "dangling/"):
        with pytest.raises(InvalidInputError, match="not a directory"):
            check_export_target(f"{tmp_path}/{raw}")
    with pytest.raises(InvalidInputError, match="too long"):
        check_export_target(f"{tmp_path}/{'d' * 256}/")


def test_make_directories_returns_what_it_made_and_removal_spares_the_rest(
    tmp_path: Path,
) -> None:
    made = make_directories(tmp_path / "a" / "b" / "c")
    assert made == [tmp_path / "a" / "b" / "c", tmp_path / "a" / "b", tmp_path / "a"]
    (tmp_path / "a" / "kept").write_bytes(b"someone else's")
    remove_made_directories(made)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["kept"]


def test_check_export_target_missing_directory(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "image.tar"
    with pytest.raises(InvalidInputError, match="does not exist") as info:
        check_export_target(target)
    assert isinstance(info.value, ValueError)
    assert str(tmp_path / "missing") in str(info.value)


def test_check_export_target_refuses_non_regular_files(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInputError, match="exists and is not a regular file") as info:
        check_export_target(fifo)
    assert str(fifo) in str(info.value)


def test_check_export_target_refuses_non_paths() -> None:
    for value in (None, 3, ["a"]):
        with pytest.raises(InvalidInputError, match="target_path must be a path"):
            check_export_target(value)  # type: ignore[arg-type]
