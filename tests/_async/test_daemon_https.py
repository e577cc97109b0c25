"""Every method over HTTPS with client and server certificates, against a real incusd."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from tiny_image import unified_image

from incus_images import AsyncClient, ForbiddenError, Image, IncusConnectionError, Operation
from tests.helpers import unique

pytestmark = pytest.mark.anyio


async def test_every_method_works_over_https(
    async_https_client: AsyncClient, tmp_path: Path
) -> None:
    images = async_https_client.images
    data = unified_image()
    operation = await images.create(data, filename="tls.tar.gz")
    assert isinstance(operation, Operation)
    assert (await async_https_client.operations.wait(operation)).succeeded
    fingerprint = hashlib.sha256(data).hexdigest()
    try:
        assert fingerprint in await images.list(recursion=0)
        assert fingerprint in [image.fingerprint for image in await images.list()]
        image = await images.get(fingerprint[:12])
        assert image.filename == "tls.tar.gz"
        assert (await images.update(fingerprint, {"via": "https"})).properties == {"via": "https"}
        written = await images.export(fingerprint, tmp_path / "out")
        assert hashlib.sha256(written[0].read_bytes()).hexdigest() == fingerprint

        name = unique("tls")
        assert (await images.create_alias(name, fingerprint, "d")).target == fingerprint
        assert (await images.get_alias(name)).description == "d"
        assert (await images.update_alias(name, fingerprint, "")).description == ""
        await images.delete_alias(name)
    finally:
        deleted = await images.delete(fingerprint, wait=True)
    assert deleted.succeeded
    second = await images.create(unified_image(), properties={"k": "v"}, wait=True)
    assert isinstance(second, Image) and second.properties["k"] == "v"
    await images.delete(second.fingerprint, wait=True)


async def test_a_different_server_certificate_is_refused(https_server: Any) -> None:
    async with AsyncClient(
        https_server.url,
        cert=(https_server.client_cert, https_server.client_key),
        verify=https_server.other_cert,
    ) as client:
        with pytest.raises(IncusConnectionError) as caught:
            await client.images.list()
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value) or "certificate" in str(caught.value)
    assert https_server.url in str(caught.value)


async def test_verification_is_on_by_default(https_server: Any) -> None:
    # The daemon's self-signed certificate is in no CA bundle: the default must refuse it.
    async with AsyncClient(
        https_server.url, cert=(https_server.client_cert, https_server.client_key)
    ) as client:
        with pytest.raises(IncusConnectionError):
            await client.images.list()


async def test_verification_can_be_turned_off_only_explicitly(https_server: Any) -> None:
    async with AsyncClient(
        https_server.url,
        cert=(https_server.client_cert, https_server.client_key),
        verify=False,
    ) as client:
        assert isinstance(await client.images.list(), list)


async def test_an_untrusted_client_may_read_but_not_write(https_server: Any) -> None:
    async with AsyncClient(https_server.url, verify=https_server.server_cert) as client:
        assert all(image.public for image in await client.images.list())
        with pytest.raises(ForbiddenError) as caught:
            await client.images.create(unified_image())
    assert "trust" in str(caught.value)
