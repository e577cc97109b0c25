"""Image aliases against a real incusd, in both flavours."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from incus_images import AsyncClient, ConflictError, ImageAlias, InvalidInputError, NotFoundError
from tests.helpers import unique

pytestmark = pytest.mark.anyio

AWKWARD_NAMES = ["with/slash", "what?", "hash#tag", "100%", "two words", ".", "..", "ünï ☃"]


@pytest.mark.parametrize("suffix", AWKWARD_NAMES)
async def test_alias_lifecycle_with_awkward_names(
    daemon_client: AsyncClient, new_image: Any, raw_api: httpx.Client, suffix: str
) -> None:
    first, second = await new_image(), await new_image()
    name = f"{unique('a')}-{suffix}" if suffix not in (".", "..") else suffix
    images = daemon_client.images

    created = await images.create_alias(name, first.fingerprint[:8], description="first")
    assert created == ImageAlias(
        name=name, target=first.fingerprint, description="first", type="container"
    )
    assert await images.get_alias(name) == created
    listed = raw_api.get("/1.0/images/aliases", params={"recursion": "1"}).json()["metadata"]
    assert {"name": name, "target": first.fingerprint} in [
        {"name": a["name"], "target": a["target"]} for a in listed
    ]
    assert [a.name for a in (await images.get(first.fingerprint)).aliases] == [name]

    moved = await images.update_alias(name, second.fingerprint)
    assert moved.target == second.fingerprint
    assert moved.description == "first"  # description=None keeps it
    cleared = await images.update_alias(name, second.fingerprint, description="")
    assert cleared.description == ""

    await images.delete_alias(name)
    with pytest.raises(NotFoundError):
        await images.get_alias(name)
    assert await images.get(second.fingerprint)  # the image stays


async def test_a_duplicate_alias_raises_conflict(
    daemon_client: AsyncClient, new_image: Any
) -> None:
    image = await new_image()
    name = unique("dup")
    await daemon_client.images.create_alias(name, image.fingerprint)
    with pytest.raises(ConflictError) as caught:
        await daemon_client.images.create_alias(name, image.fingerprint)
    assert name in str(caught.value)
    assert daemon_client.server in str(caught.value)
    await daemon_client.images.delete_alias(name)


async def test_an_alias_to_an_unknown_image_raises_not_found(daemon_client: AsyncClient) -> None:
    name = unique("orphan")
    with pytest.raises(NotFoundError) as caught:
        await daemon_client.images.create_alias(name, "c" * 64)
    assert name in str(caught.value)
    with pytest.raises(NotFoundError):
        await daemon_client.images.get_alias(name)


async def test_unknown_aliases_raise_not_found(daemon_client: AsyncClient, new_image: Any) -> None:
    image = await new_image()
    name = unique("missing")
    with pytest.raises(NotFoundError) as caught:
        await daemon_client.images.get_alias(name)
    assert name in str(caught.value)
    with pytest.raises(NotFoundError):
        await daemon_client.images.update_alias(name, image.fingerprint)
    with pytest.raises(NotFoundError):
        await daemon_client.images.delete_alias(name)


async def test_update_alias_to_an_unknown_image_raises_not_found(
    daemon_client: AsyncClient, new_image: Any
) -> None:
    image = await new_image()
    name = unique("retarget")
    await daemon_client.images.create_alias(name, image.fingerprint)
    with pytest.raises(NotFoundError):
        await daemon_client.images.update_alias(name, "c" * 64)
    assert (await daemon_client.images.get_alias(name)).target == image.fingerprint
    await daemon_client.images.delete_alias(name)


async def test_an_empty_alias_name_is_refused(daemon_client: AsyncClient, new_image: Any) -> None:
    image = await new_image()
    with pytest.raises(InvalidInputError):
        await daemon_client.images.create_alias("", image.fingerprint)
    with pytest.raises(InvalidInputError):
        await daemon_client.images.get_alias("")
    with pytest.raises(InvalidInputError):
        await daemon_client.images.update_alias("", image.fingerprint)
    with pytest.raises(InvalidInputError):
        await daemon_client.images.delete_alias("")
    assert (await daemon_client.images.get(image.fingerprint)).aliases == []
