"""Unit tests (respx) of images.export: files written, verification, and nothing left on failure.

Bodies are shaped like incusd 6.0.4's (spec 6.7): a unified image is one raw body with
``Content-Disposition: inline;filename=<fp>.tar.gz``; a split image is a chunked
``multipart/form-data`` body written by Go's multipart.Writer (metadata part, then rootfs part).
"""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import respx

import incus_images
from incus_images import (
    APIError,
    AsyncClient,
    IncusConnectionError,
    InvalidInputError,
    NotFoundError,
    TransferError,
)
from tests.helpers import (
    OFFLINE_SERVER,
    assert_left,
    error_response,
    image,
    sha256,
    sync_response,
)

pytestmark = pytest.mark.anyio

#: The boundary incusd sent in the probe (spec 6.7).
BOUNDARY = "e29038f40119e47d1d5fb5816b016d4e72748910f8ad25e9d26082e277cd"
#: What the SDK asks of the socket per read (1 MiB), to place part edges across reads.
READ_SIZE = 1024 * 1024

UNIFIED = b"\x1f\x8b\x08\x00unified image bytes" + bytes(range(256)) * 4
UNIFIED_FP = sha256(UNIFIED)
META = b"\xfd7zXZ\x00metadata tarball" + bytes(range(200))
ROOTFS = b"hsqs squashfs rootfs" + bytes(reversed(range(256))) * 5
SPLIT_FP = sha256(META, ROOTFS)


def listing(directory: Path) -> list[str]:
    """Every entry in directory, hidden temporary files included."""
    return sorted(entry.name for entry in directory.iterdir())


def unified_response(data: bytes, fingerprint: str, **headers: str) -> httpx.Response:
    values = {
        "Accept-Ranges": "bytes",
        "Content-Disposition": f"inline;filename={fingerprint}.tar.gz",
        "Content-Type": "application/octet-stream",
        "X-Incus-Type": "incus",
    }
    values.update({name.replace("_", "-"): value for name, value in headers.items()})
    return httpx.Response(200, content=data, headers=values)


def multipart(
    fingerprint: str,
    meta: bytes,
    rootfs: bytes,
    *,
    rootfs_part: str = "rootfs",
    meta_filename: str | None = None,
    rootfs_filename: str | None = None,
    closing: bool = True,
) -> bytes:
    """A split-image body exactly as Go's multipart.Writer writes it."""
    meta_filename = meta_filename if meta_filename is not None else f"meta-{fingerprint}.tar.xz"
    if rootfs_filename is None:
        rootfs_filename = f"{fingerprint}.squashfs"
    head = (
        f"--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="metadata"; filename="{meta_filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    middle = (
        f"\r\n--{BOUNDARY}\r\n"
        f'Content-Disposition: form-data; name="{rootfs_part}"; filename="{rootfs_filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode() if closing else b""
    return head + meta + middle + rootfs + tail


async def chunked(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    """The body in pieces, with no Content-Length (incusd streams split exports chunked)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def split_response(data: bytes, **headers: str) -> httpx.Response:
    values = {
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
        "X-Incus-Type": "incus",
    }
    values.update(headers)
    return httpx.Response(200, content=chunked(data), headers=values)


#: The image sizes the server reports (the sum of both parts for a split image).
SIZES = {UNIFIED_FP: len(UNIFIED), SPLIT_FP: len(META) + len(ROOTFS)}


def serve(
    router: respx.MockRouter,
    fingerprint: str,
    export: httpx.Response,
    prefix: str | None = None,
    *,
    size: int | None = None,
) -> respx.Route:
    """GET /1.0/images/<prefix> answers the image (of ``size`` bytes: by default the known
    size of the test images, else the length of a unified body); its /export answers export."""
    if size is None:
        size = SIZES.get(fingerprint)
    if size is None:
        size = len(export.content)
    router.get(f"/1.0/images/{prefix or fingerprint}").mock(
        return_value=sync_response(image(fingerprint, size=size))
    )
    return router.get(f"/1.0/images/{fingerprint}/export").mock(return_value=export)


# ------------------------------------------------------------------------------------------
# Unified images.


async def test_unified_export_writes_one_file_with_the_exact_bytes(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    serve(router, UNIFIED_FP, unified_response(UNIFIED, UNIFIED_FP), prefix=UNIFIED_FP[:8])
    target = out / "image.tar.gz"
    written = await client.images.export(UNIFIED_FP[:8].upper(), target)
    assert written == [target]
    assert target.read_bytes() == UNIFIED
    assert listing(out) == ["image.tar.gz"]  # no temporary file left beside it
    assert [f"{c.request.method} {c.request.url.raw_path.decode()}" for c in router.calls] == [
        f"GET /1.0/images/{UNIFIED_FP[:8]}",
        f"GET /1.0/images/{UNIFIED_FP}/export",
    ]


async def test_unified_export_accepts_a_str_path(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    serve(router, UNIFIED_FP, unified_response(UNIFIED, UNIFIED_FP))
    written = await client.images.export(UNIFIED_FP, str(out / "x"))
    assert written == [out / "x"]
    assert (out / "x").read_bytes() == UNIFIED


async def test_unified_export_replaces_an_existing_file(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    target = out / "image.tar.gz"
    target.write_bytes(b"old content")
    serve(router, UNIFIED_FP, unified_response(UNIFIED, UNIFIED_FP))
    await client.images.export(UNIFIED_FP, target)
    assert target.read_bytes() == UNIFIED


async def test_unified_export_into_a_directory_uses_the_server_name(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    serve(router, UNIFIED_FP, unified_response(UNIFIED, UNIFIED_FP))
    written = await client.images.export(UNIFIED_FP, out)
    assert written == [out / f"{UNIFIED_FP}.tar.gz"]
    assert listing(out) == [f"{UNIFIED_FP}.tar.gz"]
    assert written[0].read_bytes() == UNIFIED


@pytest.mark.parametrize(
    ("disposition", "expected"),
    [
        ("inline;filename=../../evil", "evil"),
        ("inline;filename=/etc/evil", "evil"),
        ('attachment; filename="..\\\\..\\\\evil"', "evil"),
        ("inline;filename=..", UNIFIED_FP),
        ("inline;filename=", UNIFIED_FP),
        ("inline", UNIFIED_FP),
    ],
)
async def test_server_file_names_stay_inside_the_directory(
    client: AsyncClient,
    router: respx.MockRouter,
    out: Path,
    disposition: str,
    expected: str,
) -> None:
    serve(
        router,
        UNIFIED_FP,
        unified_response(UNIFIED, UNIFIED_FP, Content_Disposition=disposition),
    )
    written = await client.images.export(UNIFIED_FP, out)
    assert written == [out / expected]
    assert listing(out) == [expected]
    assert listing(out.parent) == ["out"]  # nothing escaped into the parent
    assert written[0].read_bytes() == UNIFIED


# ------------------------------------------------------------------------------------------
# A target that ends in a separator names a directory (made if missing, as mkdir -p would).


@pytest.fixture
def umask_027() -> Iterator[None]:
    previous = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(previous)


async def test_a_missing_directory_named_with_a_separator_is_made(
    client: AsyncClient, router: respx.MockRouter, out: Path, umask_027: None
) -> None:
    serve(router, UNIFIED_FP, unified_response(UNIFIED, UNIFIED_FP))
    written = await client.images.export(UNIFIED_FP, f"{out}/new/deeper/")
    made = out / "new" / "deeper"
    assert written == [made / f"{UNIFIED_FP}.tar.gz"]
    assert written[0].read_bytes() == UNIFIED
    assert listing(out) == ["new"]  # never a file named "new" or "deeper"
    assert listing(made) == [f"{UNIFIED_FP}.tar.gz"]
    # mkdir -p's mode: 0o755 under the umask, for the parent made on the way too.
    assert [stat.S_IMODE(p.stat().st_mode) for p in (out / "new", made)] == [0o750, 0o750]


async def test_a_split_image_goes_into_a_directory_named_with_a_separator(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    serve(router, SPLIT_FP, split_response(multipart(SPLIT_FP, META, ROOTFS)))
    written = await client.images.export(SPLIT_FP, Path(out, "split").as_posix() + "/")
    made = out / "split"
    assert written == [made / f"meta-{SPLIT_FP}.tar.xz", made / f"{SPLIT_FP}.squashfs"]
    assert [p.read_bytes() for p in written] == [META, ROOTFS]


async def test_an_existing_directory_named_with_a_separator_is_used_as_it_is(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    serve(router, UNIFIED_FP, unified_response(UNIFIED, UNIFIED_FP))
    written = await client.images.export(UNIFIED_FP, f"{out}/")
    assert written == [out / f"{UNIFIED_FP}.tar.gz"]


async def test_a_failed_export_removes_the_directories_it_made(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    serve(router, SPLIT_FP, split_response(multipart(SPLIT_FP, META, ROOTFS[:-1] + b"x")))
    with pytest.raises(incus_images.ChecksumMismatchError) as caught:
        await client.images.export(SPLIT_FP, f"{out}/a/b/")
    assert listing(out) == []
    assert "'" + str(out / "a" / "b") + os.sep + "'" in str(caught.value)


async def test_a_failed_export_keeps_a_directory_it_did_not_make(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    (out / "mine").mkdir()
    serve(router, UNIFIED_FP, unified_response(UNIFIED[:-1] + b"x", UNIFIED_FP))
    with pytest.raises(incus_images.ChecksumMismatchError):
        await client.images.export(UNIFIED_FP, f"{out}/mine/made/")
    assert listing(out) == ["mine"]
    assert listing(out / "mine") == []


@pytest.mark.parametrize("below", ["", "sub/"])
async def test_a_separator_after_a_file_is_refused_before_any_request(
    client: AsyncClient, router: respx.MockRouter, out: Path, below: str
) -> None:
    (out / "file").write_bytes(b"mine")
    with pytest.raises(InvalidInputError, match="not a directory"):
        await client.images.export(UNIFIED_FP, f"{out}/file/{below}")
    assert not router.calls
    assert listing(out) == ["file"]
    assert (out / "file").read_bytes() == b"mine"


# ------------------------------------------------------------------------------------------
# Split images.


async def test_split_export_to_a_file_writes_target_and_target_root(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    serve(router, SPLIT_FP, split_response(multipart(SPLIT_FP, META, ROOTFS)))
    target = out / "img"
    written = await client.images.export(SPLIT_FP, target)
    assert written == [target, out / "img.root"]
    assert target.read_bytes() == META
    assert (out / "img.root").read_bytes() == ROOTFS
    assert listing(out) == ["img", "img.root"]


async def test_split_export_into_a_directory_uses_the_server_names(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    serve(router, SPLIT_FP, split_response(multipart(SPLIT_FP, META, ROOTFS)))
    written = await client.images.export(SPLIT_FP, out)
    assert written == [out / f"meta-{SPLIT_FP}.tar.xz", out / f"{SPLIT_FP}.squashfs"]
    assert written[0].read_bytes() == META
    assert written[1].read_bytes() == ROOTFS
    assert listing(out) == sorted([f"meta-{SPLIT_FP}.tar.xz", f"{SPLIT_FP}.squashfs"])


async def test_split_vm_export_into_a_directory(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    """VM images: rootfs part "rootfs.img" named just <fp>, without an extension."""
    body = multipart(SPLIT_FP, META, ROOTFS, rootfs_part="rootfs.img", rootfs_filename=SPLIT_FP)
    serve(router, SPLIT_FP, split_response(body))
    written = await client.images.export(SPLIT_FP, out)
    assert written == [out / f"meta-{SPLIT_FP}.tar.xz", out / SPLIT_FP]
    assert written[1].read_bytes() == ROOTFS


async def test_split_export_hostile_part_names_stay_inside(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    body = multipart(
        SPLIT_FP, META, ROOTFS, meta_filename="../../meta-evil", rootfs_filename="/tmp/root-evil"
    )
    serve(router, SPLIT_FP, split_response(body))
    written = await client.images.export(SPLIT_FP, out)
    assert written == [out / "meta-evil", out / "root-evil"]
    assert listing(out.parent) == ["out"]


@pytest.mark.parametrize("shift", [-70, -40, -5, -1, 0, 1, 30])
async def test_split_export_with_the_boundary_across_two_reads(
    client: AsyncClient, router: respx.MockRouter, out: Path, shift: int
) -> None:
    """The delimiter after the metadata part straddles the SDK's 1 MiB read at some offset."""
    head = multipart(SPLIT_FP, b"", b"").split(b"\r\n--", 1)[0]
    meta = bytes(i % 251 for i in range(READ_SIZE - len(head) + shift))
    rootfs = b"rootfs after a long metadata part" * 3
    fingerprint = sha256(meta, rootfs)
    body = multipart(fingerprint, meta, rootfs)
    serve(router, fingerprint, split_response(body), size=len(meta) + len(rootfs))
    written = await client.images.export(fingerprint, out / "img")
    assert written[0].read_bytes() == meta
    assert written[1].read_bytes() == rootfs


async def test_split_body_may_contain_boundary_like_bytes(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    """Bytes that start like the delimiter but are not one belong to the part."""
    meta = b"x\r\n--" + BOUNDARY[:-1].encode() + b"Z tail"
    fingerprint = sha256(meta, ROOTFS)
    body = multipart(fingerprint, meta, ROOTFS)
    serve(router, fingerprint, split_response(body), size=len(meta) + len(ROOTFS))
    written = await client.images.export(fingerprint, out / "img")
    assert written[0].read_bytes() == meta


# ------------------------------------------------------------------------------------------
# Failures leave nothing behind.


async def test_checksum_mismatch_leaves_nothing(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    serve(router, UNIFIED_FP, unified_response(UNIFIED[:-8] + b"tampered", UNIFIED_FP))
    with pytest.raises(incus_images.ChecksumMismatchError) as caught:
        await client.images.export(UNIFIED_FP, out / "image.tar.gz")
    assert isinstance(caught.value, TransferError)
    assert caught.value.fingerprint == UNIFIED_FP
    assert UNIFIED_FP in str(caught.value)
    assert OFFLINE_SERVER in str(caught.value)
    assert listing(out) == []


async def test_checksum_mismatch_into_a_directory_leaves_nothing(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    serve(router, SPLIT_FP, split_response(multipart(SPLIT_FP, META, ROOTFS[:-1] + b"x")))
    with pytest.raises(incus_images.ChecksumMismatchError):
        await client.images.export(SPLIT_FP, out)
    assert listing(out) == []


async def test_checksum_mismatch_keeps_an_existing_target_untouched(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    target = out / "img"
    target.write_bytes(b"previous export")
    serve(router, SPLIT_FP, split_response(multipart(SPLIT_FP, ROOTFS, META)))  # parts swapped
    with pytest.raises(incus_images.ChecksumMismatchError):
        await client.images.export(SPLIT_FP, target)
    assert target.read_bytes() == b"previous export"
    assert listing(out) == ["img"]


async def test_truncated_multipart_is_a_transfer_error_and_leaves_nothing(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    body = multipart(SPLIT_FP, META, ROOTFS, closing=False)
    serve(router, SPLIT_FP, split_response(body))
    with pytest.raises(TransferError) as caught:
        await client.images.export(SPLIT_FP, out / "img")
    assert not isinstance(caught.value, incus_images.ChecksumMismatchError)
    assert_left(caught.value, incus_images.LeftBehind.NOTHING, "nothing was written")
    assert listing(out) == []


async def test_truncated_in_the_middle_of_a_part_leaves_nothing(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    body = multipart(SPLIT_FP, META, ROOTFS)
    serve(router, SPLIT_FP, split_response(body[: len(body) // 2]))
    with pytest.raises(TransferError):
        await client.images.export(SPLIT_FP, out)
    assert listing(out) == []


async def test_multipart_with_three_parts_is_refused(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    extra = (
        f"\r\n--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="extra"; filename="x"\r\n\r\nmore'
    ).encode()
    body = (
        multipart(SPLIT_FP, META, ROOTFS, closing=False)
        + extra
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    serve(router, SPLIT_FP, split_response(body))
    with pytest.raises(TransferError, match="more than two parts"):
        await client.images.export(SPLIT_FP, out / "img")
    assert listing(out) == []


async def test_multipart_without_boundary_is_refused(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    serve(
        router,
        SPLIT_FP,
        split_response(
            multipart(SPLIT_FP, META, ROOTFS), **{"Content-Type": "multipart/form-data"}
        ),
    )
    with pytest.raises(TransferError, match="boundary"):
        await client.images.export(SPLIT_FP, out / "img")
    assert listing(out) == []


async def test_connection_lost_mid_body_leaves_nothing(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield UNIFIED[:100]
        raise httpx.ReadError("connection reset by peer")

    serve(
        router,
        UNIFIED_FP,
        httpx.Response(200, content=broken(), headers={"Content-Type": "application/octet-stream"}),
    )
    with pytest.raises(IncusConnectionError) as caught:
        await client.images.export(UNIFIED_FP, out / "image")
    assert OFFLINE_SERVER in str(caught.value)
    assert listing(out) == []


async def test_not_found_on_export_leaves_nothing(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    serve(router, UNIFIED_FP, error_response(404, f'Image "{UNIFIED_FP}" not found'))
    with pytest.raises(NotFoundError) as caught:
        await client.images.export(UNIFIED_FP, out / "image")
    assert caught.value.url == f"/1.0/images/{UNIFIED_FP}/export"
    assert caught.value.server_message == f'Image "{UNIFIED_FP}" not found'
    assert listing(out) == []


async def test_not_found_image_stops_before_export(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    router.get("/1.0/images/abcd").mock(return_value=error_response(404, 'Image "abcd" not found'))
    with pytest.raises(NotFoundError):
        await client.images.export("abcd", out)
    assert len(router.calls) == 1
    assert listing(out) == []


async def test_huge_error_body_on_export_gives_a_bounded_message(
    client: AsyncClient, router: respx.MockRouter, out: Path
) -> None:
    serve(router, UNIFIED_FP, httpx.Response(500, content=chunked(b"E" * (10 * 1024 * 1024))))
    with pytest.raises(APIError) as caught:
        await client.images.export(UNIFIED_FP, out)
    assert caught.value.status_code == 500
    assert len(str(caught.value)) < 2000
    assert listing(out) == []


async def test_target_in_a_missing_directory_is_refused_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        await client.images.export(UNIFIED_FP, tmp_path / "missing" / "image")
    assert not silent.calls
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize("fingerprint", ["", "zz", "_", "../x"])
async def test_bad_fingerprint_is_refused_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, out: Path, fingerprint: str
) -> None:
    with pytest.raises(InvalidInputError):
        await client.images.export(fingerprint, out)
    assert not silent.calls


async def test_target_that_is_not_a_path_is_refused(
    client: AsyncClient, silent: respx.MockRouter
) -> None:
    with pytest.raises(InvalidInputError, match="target_path"):
        await client.images.export(UNIFIED_FP, 42)  # type: ignore[arg-type]
    assert not silent.calls
