"""What a catalogue read here says against what incusd does with the same catalogue: an alias
resolves to the image incusd copies, and the image incusd stores is the one listed here."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from simplestreams_server import SimpleStreamsServer
from tiny_image import split_image

from incus_images import AsyncClient, AsyncSimpleStreams, Image
from tests.helpers import unique

pytestmark = pytest.mark.anyio


@pytest.fixture
def image_server() -> Iterator[SimpleStreamsServer]:
    with SimpleStreamsServer() as server:
        yield server


async def test_an_alias_resolves_to_the_image_incusd_copies(
    daemon_client: AsyncClient, cleanup: list[str], image_server: SimpleStreamsServer
) -> None:
    alias = unique("tiny")
    for architecture in ("amd64", "arm64"):
        image_server.add_image(
            *split_image(architecture={"amd64": "x86_64", "arm64": "aarch64"}[architecture]),
            aliases=[alias],
            os="tiny",
            release="1",
            architecture=architecture,
        )
    # A second version of amd64: the newest wins, here and in incusd.
    image_server.add_image(*split_image(), aliases=[alias], os="tiny", release="1")
    async with AsyncSimpleStreams(
        image_server.url, certificate=image_server.certificate_pem
    ) as hub:
        for name, architecture in [(alias, None), (f"{alias}/arm64", None), (alias, "aarch64")]:
            mine = await hub.images.get_by_alias(name, architecture=architecture)
            asked = name if architecture is None else f"{name}/arm64"
            copied = await daemon_client.images.copy(asked, hub)
            assert isinstance(copied, Image)
            cleanup.append(copied.fingerprint)
            assert copied.fingerprint == mine.fingerprint
            assert (copied.architecture, copied.size) == (mine.architecture, mine.size)
        listed = {image.fingerprint for image in await hub.images.list()}
        assert len(listed) == 3
