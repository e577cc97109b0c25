"""Bad input is an InvalidInputError before any request, never a raw Python exception
(issue 10, classes 3 and 5), in both flavours.

Every test runs against the ``silent`` mock, which answers anything, and checks that nothing
was sent at all.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest
import respx
from tiny_image import unified_image

from incus_images import AsyncClient, InvalidInputError
from tests.helpers import OFFLINE_SERVER

pytestmark = pytest.mark.anyio

FP = "a" * 64
#: Text no server may receive: it has a NUL, or a lone surrogate (no UTF-8 form at all).
BAD_TEXT = ["with\x00nul", "lone \udc80 surrogate", "\ud800"]


@pytest.mark.parametrize("bad", BAD_TEXT)
async def test_bad_text_in_any_string_argument(
    client: AsyncClient, silent: respx.MockRouter, tmp_path: Path, bad: str
) -> None:
    images = client.images
    calls: list[Any] = [
        lambda: images.create_alias(bad, FP),
        lambda: images.create_alias("ok", FP, description=bad),
        lambda: images.get_alias(bad),
        lambda: images.update_alias(bad, FP),
        lambda: images.delete_alias(bad),
        lambda: images.update(FP, {"os": bad}),
        lambda: images.update(FP, {bad: "x"}),
        lambda: images.create(unified_image(), properties={"os": bad}),
        lambda: images.create(unified_image(), aliases=[bad]),
        lambda: images.create(unified_image(), profiles=[bad]),
        lambda: images.create(unified_image(), filename=bad),
        lambda: images.create(str(tmp_path / bad)),
        lambda: images.export(FP, str(tmp_path / bad)),
        lambda: images.copy(bad, client),
    ]
    for call in calls:
        with pytest.raises(InvalidInputError):
            await call()
    assert not silent.calls


@pytest.mark.parametrize("bad", BAD_TEXT)
def test_bad_text_in_client_arguments(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        AsyncClient(OFFLINE_SERVER, project=bad)
    with pytest.raises(InvalidInputError):
        AsyncClient("unix:///run/" + bad)
    with pytest.raises(InvalidInputError):
        AsyncClient("https://incus.example", cert=("/tmp/" + bad, "/tmp/key"))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"endpoint": 5}, "endpoint must be a path, got int"),
        ({"endpoint": b"/run/incus.sock"}, "endpoint must be a path, got bytes"),
        ({"endpoint": "https://h", "cert": 5}, "cert must be a path, got int"),
        ({"endpoint": "https://h", "cert": ("/a", 5)}, "cert must be a path, got int"),
        ({"endpoint": "https://h", "verify": 5}, "verify must be True, False"),
        ({"endpoint": OFFLINE_SERVER, "project": 5}, "project must be a string"),
        ({"endpoint": OFFLINE_SERVER, "project": ""}, "project must not be empty"),
        ({"endpoint": OFFLINE_SERVER, "timeout": "3"}, "timeout must be None or a number"),
        ({"endpoint": OFFLINE_SERVER, "timeout": 1e10}, "use None for no limit"),
    ],
)
def test_wrong_arguments_to_the_client(options: dict[str, Any], match: str) -> None:
    endpoint = options.pop("endpoint")
    with pytest.raises(InvalidInputError, match=match):
        AsyncClient(endpoint, **options)


async def test_a_huge_wait_timeout_is_refused(
    client: AsyncClient, silent: respx.MockRouter
) -> None:
    with pytest.raises(InvalidInputError, match="use None for no limit"):
        await client.operations.wait("6b9d4f3e-1111-4222-8333-444455556666", timeout=1e10)
    assert not silent.calls


# --------------------------------------------------------------------------------------------
# Export targets that cannot be written.


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("", "target_path is empty"),
        ("/proc/incus-images-export.tar", "cannot write into '/proc'"),
        ("/nonexistent-dir/x.tar", "does not exist"),
        (5, "target_path must be a path, got int"),
        (b"/tmp/x", "target_path must be a path, got bytes"),
    ],
)
async def test_an_export_target_that_cannot_be_written(
    client: AsyncClient, silent: respx.MockRouter, target: Any, match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        await client.images.export(FP, target)
    assert not silent.calls


async def test_a_read_only_directory_is_refused_before_any_request(
    client: AsyncClient, silent: respx.MockRouter, tmp_path: Path
) -> None:
    if os.geteuid() == 0:
        # root writes anywhere a mode allows nothing: a read-only bind would need a mount.
        readonly = Path("/sys/kernel")
    else:
        readonly = tmp_path / "ro"
        readonly.mkdir(mode=0o500)
    with pytest.raises(InvalidInputError, match="cannot write into"):
        await client.images.export(FP, readonly)
    assert not silent.calls


async def test_a_file_name_too_long_for_its_split_twin_is_refused(
    client: AsyncClient, silent: respx.MockRouter, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError, match="too long"):
        await client.images.export(FP, tmp_path / ("x" * 252))
    assert not silent.calls
    assert list(tmp_path.iterdir()) == []  # the writability probe left nothing


# --------------------------------------------------------------------------------------------
# Image data that cannot be sent.


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ([], "holds no bytes"),
        ([b""], "holds no bytes"),
        (["a", "b"], "holds a str"),
        ((b"ok", 3), "holds a int"),
        (io.StringIO("text"), "text file"),
        (b"", "is empty"),
        ("", "is not a usable path"),
    ],
)
async def test_image_data_that_cannot_be_sent(
    client: AsyncClient, silent: respx.MockRouter, data: Any, match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        await client.images.create(data)
    assert not silent.calls


async def test_closed_and_unreadable_files_are_refused(
    client: AsyncClient, silent: respx.MockRouter, tmp_path: Path
) -> None:
    path = tmp_path / "image.tar.gz"
    path.write_bytes(unified_image())
    with open(path, "rb") as closed:
        pass
    with pytest.raises(InvalidInputError, match="closed file"):
        await client.images.create(closed)
    with (
        open(tmp_path / "w", "wb") as writing,
        pytest.raises(InvalidInputError, match="not opened for reading"),
    ):
        await client.images.create(writing)
    unreadable = tmp_path / "secret.tar.gz"
    unreadable.write_bytes(b"x" * 10)
    unreadable.chmod(0)
    if os.geteuid() != 0:  # root reads it anyway
        with pytest.raises(InvalidInputError, match="cannot read"):
            await client.images.create(unreadable)
    assert not silent.calls
