"""Sans-IO pieces of copying (flavour-neutral): the relay's upload framing, the daemon's
download progress text, SimpleStreams sources and download secrets."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from throwaway_incusd import make_client_certificate

from incus_images import Image, InvalidInputError, SimpleStreams, TransferError
from incus_images._transfer.export import ExportPart
from incus_images._transfer.relay import RelayFraming
from incus_images._transfer.reports import daemon_progress
from incus_images._validate import secret_token
from tests.conftest import self_signed_certificate
from tests.helpers import multipart_parts, sha256

DATA = b"\x1f\x8b\x08\x00 unified " + bytes(range(256)) * 3
META = b"\xfd7zXZ\x00 metadata " + bytes(range(64))
ROOTFS = b"hsqs rootfs " + bytes(reversed(range(256))) * 2
FP = sha256(DATA)
SPLIT_FP = sha256(META, ROOTFS)


def fail(detail: str) -> TransferError:
    return TransferError(f"relay failed: {detail}")


def unified(filename: str = "tiny.tar.gz") -> RelayFraming:
    image = Image(fingerprint=FP, size=len(DATA), filename=filename, type="container")
    return RelayFraming(image, split=False, failure=fail)


def split(kind: str = "container", filename: str = "disk.qcow2") -> RelayFraming:
    image = Image(fingerprint=SPLIT_FP, size=len(META) + len(ROOTFS), filename=filename, type=kind)
    return RelayFraming(image, split=True, failure=fail)


def chunks(data: bytes, size: int = 100) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def feed_split(framing: RelayFraming, field: str = "rootfs") -> tuple[bytes, bytes]:
    """What the framing lets out before end(), and end()'s bytes."""
    out = []
    events: list[ExportPart | bytes] = [ExportPart("metadata", "metadata", "m")]
    events += chunks(META)
    events.append(ExportPart("rootfs", field, "r"))
    events += chunks(ROOTFS)
    for event in events:
        out += [bytes(piece) for piece in framing.take(event)]
    return b"".join(out), framing.end()


# --------------------------------------------------------------------------------------------
# RelayFraming: unified images.


def test_unified_headers() -> None:
    framing = unified()
    assert framing.headers == {
        "X-Incus-fingerprint": FP,
        "Content-Type": "application/octet-stream",
        "X-Incus-filename": b"tiny.tar.gz",
        "Content-Length": str(len(DATA)),
    }


def test_unified_without_a_file_name_sends_none() -> None:
    assert "X-Incus-filename" not in unified(filename="").headers


def test_unified_file_name_goes_as_utf8_bytes() -> None:
    assert unified(filename="tiny ü ☃.tar.gz").headers["X-Incus-filename"] == (
        "tiny ü ☃.tar.gz".encode()
    )


@pytest.mark.parametrize("name", ["a\nb", "a\r\nX-Evil: 1", "a\x00b", "a\x7fb"], ids=repr)
def test_unified_file_name_that_cannot_be_a_header_falls_back_to_the_fingerprint(
    name: str,
) -> None:
    assert unified(filename=name).headers["X-Incus-filename"] == FP.encode()


def test_unified_body_is_the_export_with_the_last_chunk_held_back() -> None:
    framing = unified()
    pieces = chunks(DATA)
    assert framing.take(ExportPart("unified", "", "x.tar.gz")) == []
    out = []
    for piece in pieces:
        out += [bytes(sent) for sent in framing.take(piece)]
    # Everything but the newest chunk is out; the last comes only with end().
    assert b"".join(out) == b"".join(pieces[:-1])
    tail = framing.end()
    assert tail == pieces[-1]
    assert b"".join(out) + tail == DATA
    assert len(DATA) == int(framing.headers["Content-Length"])


def test_unified_views_are_sent_as_they_came() -> None:
    framing = unified()
    framing.take(ExportPart("unified"))
    view = memoryview(DATA)
    assert framing.take(view[:10]) == []
    (first,) = framing.take(view[10:])
    assert bytes(first) == DATA[:10]
    assert framing.end() == DATA[10:]


# --------------------------------------------------------------------------------------------
# RelayFraming: split images.


@pytest.mark.parametrize(
    ("kind", "field"), [("container", "rootfs"), ("virtual-machine", "rootfs.img")]
)
def test_split_body_parses_back_into_the_two_parts(kind: str, field: str) -> None:
    framing = split(kind)
    before_end, tail = feed_split(framing, field)
    body = before_end + tail
    content_type = framing.headers["Content-Type"]
    assert isinstance(content_type, str)
    assert content_type.startswith("multipart/form-data; boundary=")
    assert framing.headers["Content-Length"] == str(len(body))
    assert framing.headers["X-Incus-fingerprint"] == SPLIT_FP
    # Incus takes a split image's file name from the rootfs part, never from the header.
    assert "X-Incus-filename" not in framing.headers
    assert multipart_parts(content_type, body) == [
        ("metadata", f"meta-{SPLIT_FP}", META),
        (field, "disk.qcow2", ROOTFS),
    ]


def test_split_holds_back_the_last_chunk_and_the_closing_delimiter() -> None:
    framing = split()
    before_end, tail = feed_split(framing)
    boundary = str(framing.headers["Content-Type"]).split("boundary=", 1)[1]
    last = chunks(ROOTFS)[-1]
    assert tail == last + f"\r\n--{boundary}--\r\n".encode()
    assert not before_end.endswith(last)
    assert f"--{boundary}--".encode() not in before_end
    # The metadata's last chunk was let out when the rootfs part began.
    assert META in before_end
    assert before_end.endswith(ROOTFS[: len(ROOTFS) - len(last)])


@pytest.mark.parametrize(
    "filename", ["disk ü ☃.qcow2", 'disk "1".qcow2', "back\\slash.qcow2"], ids=repr
)
def test_split_rootfs_file_names_round_trip_and_the_length_counts_bytes(filename: str) -> None:
    framing = split(filename=filename)
    before_end, tail = feed_split(framing)
    body = before_end + tail
    assert framing.headers["Content-Length"] == str(len(body))
    parts = multipart_parts(str(framing.headers["Content-Type"]), body)
    assert parts[1] == ("rootfs", filename, ROOTFS)


@pytest.mark.parametrize("filename", ["", "a\nb"], ids=repr)
def test_split_rootfs_without_a_usable_name_is_named_by_the_fingerprint(filename: str) -> None:
    framing = split(filename=filename)
    before_end, tail = feed_split(framing)
    parts = multipart_parts(str(framing.headers["Content-Type"]), before_end + tail)
    assert parts[1] == ("rootfs", SPLIT_FP, ROOTFS)


def test_each_split_framing_has_its_own_boundary() -> None:
    first, second = split().headers["Content-Type"], split().headers["Content-Type"]
    assert first != second


@pytest.mark.parametrize(
    ("kind", "field"), [("virtual-machine", "rootfs"), ("container", "rootfs.img")]
)
def test_split_rootfs_part_of_the_wrong_kind_is_refused(kind: str, field: str) -> None:
    framing = split(kind)
    framing.take(ExportPart("metadata", "metadata"))
    framing.take(META)
    with pytest.raises(TransferError, match=f"rootfs part is {field!r}"):
        framing.take(ExportPart("rootfs", field))


# --------------------------------------------------------------------------------------------
# daemon_progress: incusd's download_progress text.


@pytest.mark.parametrize(
    ("text", "total", "expected"),
    [
        ("rootfs: 42% (1.09MB/s)", 1000, 420),
        ("metadata: 100% (5.00MB/s)", 1000, 1000),
        ("rootfs: 0% (0B/s)", 1000, 0),
        ("rootfs: 42.5% (1.09MB/s)", 2000, 850),
        ("rootfs: 150% (1MB/s)", 1000, 1000),  # never more than the image
        ("163.64MB (163.63MB/s)", None, 163_640_000),
        ("163.64MB (163.63MB/s)", 10**9, 163_640_000),
        ("163.64MB (163.63MB/s)", 1000, 1000),
        ("12kB (1kB/s)", None, 12_000),
        ("1.5GB (100MB/s)", None, 1_500_000_000),
        ("2TB (1GB/s)", None, 2 * 10**12),
        ("512B (512B/s)", None, 512),
        ("rootfs: 163.64MB (163.63MB/s)", None, 163_640_000),
    ],
)
def test_daemon_progress_reads_incusd_texts(text: str, total: int | None, expected: int) -> None:
    assert daemon_progress({"download_progress": text}, total) == expected


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        {},
        [],
        "rootfs: 42%",
        {"download_progress": None},
        {"download_progress": 42},
        {"download_progress": ""},
        {"download_progress": "garbage"},
        {"download_progress": "rootfs: 42% (1.09MB/s)"},  # a percentage without a size
        {"download_progress": "Downloading (1.09MB/s)"},  # only a rate
        {"download_progress": "163.64MiB (1MiB/s)"},  # not incusd's units
        {"download_progress": "9" * 300 + "MB"},
    ],
    ids=repr,
)
def test_daemon_progress_without_a_usable_text_is_none(metadata: object) -> None:
    assert daemon_progress(metadata, None) is None


def test_daemon_progress_percent_needs_a_known_total() -> None:
    assert daemon_progress({"download_progress": "rootfs: 42% (1MB/s)"}, 0) is None
    assert daemon_progress({"download_progress": "rootfs: 42% (1MB/s)"}, 100) == 42


# --------------------------------------------------------------------------------------------
# SimpleStreams.


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return self_signed_certificate(tmp_path_factory, "streams")


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://images.example", "https://images.example"),
        ("https://images.example/", "https://images.example"),
        ("https://images.example:8443/streams/", "https://images.example:8443/streams"),
        ("https://[::1]:8443", "https://[::1]:8443"),
    ],
)
def test_simplestreams_keeps_an_https_url(url: str, kept: str) -> None:
    source = SimpleStreams(url)
    assert source.url == kept
    assert source.certificate is None


@pytest.mark.parametrize(
    "url",
    [
        "http://images.example",
        "ftp://images.example",
        "images.example",
        "https://",
        "https:///path",
        "https://images.example?os=debian",
        "https://images.example/streams#top",
        "https://user@images.example",
        "https://user:pw@images.example",
        "https://images.example:70000",
        "https://images.example:port",
        "https://images.example/a b",
        "https://images.example\n",
        "https://images.example/\x00",
        "",
        None,
        b"https://images.example",
    ],
    ids=repr,
)
def test_simplestreams_refuses_a_bad_url(url: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        SimpleStreams(url)  # type: ignore[arg-type]
    assert isinstance(caught.value, ValueError)


def test_simplestreams_refuses_port_zero() -> None:
    with pytest.raises(InvalidInputError):
        SimpleStreams("https://images.example:0")


@pytest.mark.parametrize("url", ["https://images.example/?", "https://images.example#"])
def test_simplestreams_refuses_an_empty_query_or_fragment(url: str) -> None:
    with pytest.raises(InvalidInputError):
        SimpleStreams(url)


def test_simplestreams_keeps_a_pem_certificate(pem: Path) -> None:
    text = pem.read_text()
    assert SimpleStreams("https://images.example", certificate=text).certificate == text


@pytest.mark.parametrize(
    "certificate",
    [
        "",
        "not a certificate",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!!\n-----END CERTIFICATE-----\n",
        "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
        b"-----BEGIN CERTIFICATE-----",
        42,
    ],
    ids=repr,
)
def test_simplestreams_refuses_what_is_not_a_pem_certificate(certificate: object) -> None:
    with pytest.raises(InvalidInputError, match="certificate"):
        SimpleStreams("https://images.example", certificate=certificate)  # type: ignore[arg-type]


def test_simplestreams_refuses_a_path_instead_of_the_pem_text(pem: Path) -> None:
    with pytest.raises(InvalidInputError, match="not its path"):
        SimpleStreams("https://images.example", certificate=str(pem))


def test_simplestreams_refuses_an_oversized_certificate(pem: Path) -> None:
    with pytest.raises(InvalidInputError):
        SimpleStreams("https://images.example", certificate=pem.read_text() + " " * 70_000)


def test_simplestreams_accepts_a_certificate_chain(tmp_path: Path) -> None:
    first, second = (
        Path(make_client_certificate(tmp_path, f"c{index}")[0]).read_text() for index in range(2)
    )
    chain = SimpleStreams("https://images.example", certificate=first + second).certificate
    assert chain == first + second


def test_simplestreams_passes_on_only_the_certificate_blocks(pem: Path) -> None:
    """Text around the blocks (a bundle's comments, or anything else) never reaches the
    daemon: it gets each certificate, re-encoded."""
    text = pem.read_text()
    wrapped = f"# the image server\nsubject=CN=streams\r\n{text}trailing text\n"
    assert SimpleStreams("https://images.example", certificate=wrapped).certificate == text


def test_simplestreams_refuses_base64_that_is_no_certificate(pem: Path) -> None:
    noise = base64.encodebytes(bytes(range(256)) * 3).decode()
    fake = f"-----BEGIN CERTIFICATE-----\n{noise}-----END CERTIFICATE-----\n"
    with pytest.raises(InvalidInputError, match="PEM block 2 of 2 is not a certificate"):
        SimpleStreams("https://images.example", certificate=pem.read_text() + fake)


def test_simplestreams_is_a_value() -> None:
    assert SimpleStreams("https://images.example/") == SimpleStreams("https://images.example")
    with pytest.raises(AttributeError):
        SimpleStreams("https://images.example").url = "https://other.example"  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Download and push secrets.


@pytest.mark.parametrize("secret", ["5e" * 32, "a", "ABCdef0123", "x" * 128])
def test_secret_token_accepts_letters_and_digits(secret: str) -> None:
    assert secret_token(secret) == secret


@pytest.mark.parametrize(
    "secret",
    [
        "",
        "x" * 129,
        "a b",
        "a&b=c",
        "a/../b",
        "a%20b",
        "a\nb",
        "é1",
        "١٢٣",  # Arabic-Indic digits are digits to str.isdigit, not to Incus
        None,
        42,
        b"abc",
    ],
    ids=repr,
)
def test_secret_token_refuses_anything_else(secret: object) -> None:
    with pytest.raises(InvalidInputError, match="secret"):
        secret_token(secret)


def test_secret_token_names_the_argument() -> None:
    with pytest.raises(InvalidInputError, match=r"^token "):
        secret_token("a b", argument="token")
