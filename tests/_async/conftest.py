"""Client fixtures for the tests written once here and generated into tests/_sync/."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from tiny_image import unified_image

from incus_images import AsyncClient, Image, NotFoundError
from tests.helpers import OFFLINE_SERVER


class FakeClock:
    """Stands in for the time module inside the SDK's operations module: a mock server
    advances it by the seconds it "waited", so deadlines of seconds pass in microseconds."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(client: AsyncClient, monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    # The module the waiter's code is in: its class reports the package as its module.
    module = sys.modules[type(client.operations).wait.__module__]
    monkeypatch.setattr(module, "time", fake)
    return fake


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty directory for an export; its parent lets tests see escapes."""
    directory = tmp_path / "out"
    directory.mkdir()
    return directory


@pytest.fixture
async def client() -> AsyncIterator[AsyncClient]:
    """A client of no daemon at all, for unit tests that answer its requests with respx."""
    async with AsyncClient(OFFLINE_SERVER) as offline:
        yield offline


@pytest.fixture
async def daemon_client(incusd: Any) -> AsyncIterator[AsyncClient]:
    """A client of the session's throwaway daemon, over its unix socket."""
    async with AsyncClient(incusd.endpoint) as client:
        yield client


@pytest.fixture
async def async_https_client(https_server: Any) -> AsyncIterator[AsyncClient]:
    """A client of the session's throwaway daemon over HTTPS, trusted, verifying the server."""
    async with AsyncClient(
        https_server.url,
        cert=(https_server.client_cert, https_server.client_key),
        verify=https_server.server_cert,
    ) as client:
        yield client


@pytest.fixture
async def cleanup(daemon_client: AsyncClient) -> AsyncIterator[list[str]]:
    """Fingerprints appended here are deleted after the test, if still there."""
    fingerprints: list[str] = []
    yield fingerprints
    for fingerprint in fingerprints:
        with contextlib.suppress(NotFoundError):
            await daemon_client.images.delete(fingerprint, wait=True)


@pytest.fixture
def new_image(daemon_client: AsyncClient, cleanup: list[str]) -> Any:
    """Upload a fresh tiny image (removed after the test); keyword arguments go to create()."""

    async def upload(**options: Any) -> Image:
        image = await daemon_client.images.create(unified_image(), wait=True, **options)
        assert isinstance(image, Image)
        cleanup.append(image.fingerprint)
        return image

    return upload
