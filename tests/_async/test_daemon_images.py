"""Images against a real incusd (the session's throwaway daemon), in both flavours."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from tiny_image import split_image, unified_image

from incus_images import (
    AmbiguousFingerprintError,
    AsyncClient,
    ConflictError,
    Image,
    ImageExistsError,
    ImageList,
    InvalidInputError,
    NotFoundError,
    Operation,
    OperationError,
    PreconditionFailedError,
)
from tests.helpers import sha256, unique, upload_split_raw

pytestmark = pytest.mark.anyio

AWKWARD_PROPERTIES = {
    "weird": "a&b=c d+e%",
    "plus": "1+1=2",
    "percent": "100%25 %zz",
    "spaces": "  padded  value ",
    "os": "Übuntu ☃",
    "emoji key ü": "日本語テキスト",
}


def daemon_alive(raw_api: httpx.Client) -> bool:
    return raw_api.get("/1.0").status_code == 200


# --------------------------------------------------------------------------------------------
# create


async def test_create_wait_returns_the_image_whose_fingerprint_is_the_sha256_sent(
    daemon_client: AsyncClient, cleanup: list[str]
) -> None:
    data = unified_image()
    image = await daemon_client.images.create(data, wait=True)
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    assert image.fingerprint == hashlib.sha256(data).hexdigest()
    assert image.size == len(data)
    assert image.type == "container"
    assert image.properties["os"] == "tiny"  # from metadata.yaml
    assert image.uploaded_at is not None and image.uploaded_at.tzinfo is not None
    assert image.last_used_at is None  # Incus's zero time


@pytest.mark.parametrize("metadata_has_properties", [True, False])
async def test_create_properties_round_trip_awkward_text_without_crashing_incusd(
    daemon_client: AsyncClient,
    cleanup: list[str],
    raw_api: httpx.Client,
    metadata_has_properties: bool,
) -> None:
    # incusd 6.0.4 dies on an X-Incus-properties header when metadata.yaml has no properties
    # map; the SDK must store the properties without ever doing that.
    data = unified_image({"os": "tiny"} if metadata_has_properties else None)
    image = await daemon_client.images.create(data, properties=AWKWARD_PROPERTIES, wait=True)
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    assert daemon_alive(raw_api)
    expected = {"os": "tiny"} if metadata_has_properties else {}
    expected.update(AWKWARD_PROPERTIES)
    assert image.properties == expected
    stored = raw_api.get(f"/1.0/images/{image.fingerprint}").json()["metadata"]
    assert stored["properties"] == expected


async def test_create_stores_a_non_ascii_filename_exactly(
    daemon_client: AsyncClient, cleanup: list[str]
) -> None:
    name = "bild ü ☃ 日本.tar.gz"
    image = await daemon_client.images.create(unified_image(), filename=name, wait=True)
    assert isinstance(image, Image)
    cleanup.append(image.fingerprint)
    assert image.filename == name
    assert (await daemon_client.images.get(image.fingerprint)).filename == name


@pytest.mark.parametrize("public", [True, False])
async def test_create_honours_public(
    daemon_client: AsyncClient, new_image: Any, public: bool
) -> None:
    image = await new_image(public=public)
    assert image.public is public
    assert (await daemon_client.images.get(image.fingerprint)).public is public


@pytest.mark.parametrize("auto_update", [True, False])
async def test_create_honours_auto_update(
    daemon_client: AsyncClient, new_image: Any, auto_update: bool
) -> None:
    image = await new_image(auto_update=auto_update)
    assert image.auto_update is auto_update
    assert (await daemon_client.images.get(image.fingerprint)).auto_update is auto_update


async def test_create_without_wait_returns_the_operation_to_wait_for(
    daemon_client: AsyncClient, cleanup: list[str]
) -> None:
    data = unified_image()
    operation = await daemon_client.images.create(data)
    assert isinstance(operation, Operation)
    cleanup.append(sha256(data))
    assert operation.description == "Downloading image"
    finished = await daemon_client.operations.wait(operation)
    assert finished.succeeded
    assert finished.metadata is not None
    assert finished.metadata["fingerprint"] == sha256(data)


async def test_create_with_properties_and_no_wait_applies_them_when_waited_for(
    daemon_client: AsyncClient, cleanup: list[str]
) -> None:
    data = unified_image()
    result = await daemon_client.images.create(data, properties={"k": "v"}, auto_update=True)
    cleanup.append(sha256(data))
    assert isinstance(result, Operation)
    finished = await daemon_client.operations.wait(result)
    assert finished.succeeded
    image = await daemon_client.images.get(sha256(data))
    assert image.properties["k"] == "v"
    assert image.auto_update is True


async def test_create_garbage_raises_operation_error_with_the_servers_message(
    daemon_client: AsyncClient,
) -> None:
    before = await daemon_client.images.list(recursion=0)
    with pytest.raises(OperationError) as caught:
        await daemon_client.images.create(b"this is not an image tarball", wait=True)
    assert "Unsupported compression" in str(caught.value)
    assert caught.value.server_message is not None
    assert daemon_client.server in str(caught.value)
    assert await daemon_client.images.list(recursion=0) == before


async def test_create_duplicate_raises_conflict_naming_the_fingerprint(
    daemon_client: AsyncClient, cleanup: list[str]
) -> None:
    data = unified_image()
    first = await daemon_client.images.create(data, wait=True)
    assert isinstance(first, Image)
    cleanup.append(first.fingerprint)
    with pytest.raises(ImageExistsError) as caught:
        await daemon_client.images.create(data, wait=True)
    assert isinstance(caught.value, ConflictError)
    assert caught.value.fingerprint == first.fingerprint
    assert first.fingerprint in str(caught.value)


async def test_create_refuses_json_looking_data_before_sending(
    daemon_client: AsyncClient, raw_api: httpx.Client
) -> None:
    # incusd would take this body for a JSON image request (and this one would crash it).
    crash = b'{"source": {"type": "image", "fingerprint": "' + b"ab" * 32 + b'"}}'
    before = await daemon_client.images.list(recursion=0)
    with pytest.raises(InvalidInputError):
        await daemon_client.images.create(crash, wait=True)
    assert daemon_alive(raw_api)
    assert await daemon_client.images.list(recursion=0) == before


# --------------------------------------------------------------------------------------------
# list and get


async def test_list_returns_sorted_images_and_full_fingerprints(
    daemon_client: AsyncClient, new_image: Any
) -> None:
    made = {(await new_image()).fingerprint for _ in range(3)}
    images = await daemon_client.images.list()
    fingerprints = await daemon_client.images.list(recursion=0)
    assert [image.fingerprint for image in images] == sorted(image.fingerprint for image in images)
    assert fingerprints == sorted(fingerprints)
    assert made <= {image.fingerprint for image in images}
    assert made <= set(fingerprints)
    assert all(len(fingerprint) == 64 for fingerprint in fingerprints)


async def test_a_list_draws_as_one_table_and_each_request_is_logged_by_path(
    daemon_client: AsyncClient, new_image: Any, caplog: pytest.LogCaptureFixture
) -> None:
    image = await new_image()
    caplog.set_level(logging.DEBUG, logger="incus_images")
    images = await daemon_client.images.list()
    assert type(images) is ImageList
    html = images._repr_html_()
    # The row shows the fingerprint short, as the CLI does, with the whole one as its title.
    assert f'<code title="{image.fingerprint}">{image.fingerprint[:12]}</code>' in html
    logged = [r.getMessage() for r in caplog.records if r.name == "incus_images"]
    assert any(line.startswith("GET /1.0/images on unix://") for line in logged), logged
    # The query (recursion=1 here; a download secret elsewhere) is never logged.
    assert not any("recursion" in line for line in logged), logged


async def test_get_accepts_a_unique_prefix_in_any_case(
    daemon_client: AsyncClient, new_image: Any
) -> None:
    image = await new_image()
    others = set(await daemon_client.images.list(recursion=0)) - {image.fingerprint}
    length = next(
        n for n in range(1, 65) if not any(o.startswith(image.fingerprint[:n]) for o in others)
    )
    prefix = image.fingerprint[: max(length, 4)].upper()
    assert (await daemon_client.images.get(prefix)).fingerprint == image.fingerprint


@pytest.mark.parametrize("bad", ["", "_", "%", "%25", "../1.0", "ab/cd", "xyz", "a" * 65, "é"])
async def test_get_refuses_input_that_is_not_hex(daemon_client: AsyncClient, bad: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        await daemon_client.images.get(bad)
    assert isinstance(caught.value, ValueError)


async def test_get_unknown_raises_not_found_naming_image_and_server(
    daemon_client: AsyncClient,
) -> None:
    missing = "f" * 64
    with pytest.raises(NotFoundError) as caught:
        await daemon_client.images.get(missing)
    assert caught.value.status_code == 404
    assert missing in str(caught.value)
    assert daemon_client.server in str(caught.value)


async def test_an_ambiguous_prefix_raises_its_own_error(
    daemon_client: AsyncClient, new_image: Any
) -> None:
    seen: dict[str, str] = {}
    for fingerprint in await daemon_client.images.list(recursion=0):
        seen.setdefault(fingerprint[0], fingerprint)
    # Pigeonhole: at most 17 uploads give two fingerprints with the same first digit.
    shared = None
    while shared is None:
        fingerprint = (await new_image()).fingerprint
        if fingerprint[0] in seen:
            shared = fingerprint[0]
        seen.setdefault(fingerprint[0], fingerprint)
    with pytest.raises(AmbiguousFingerprintError) as caught:
        await daemon_client.images.get(shared)
    assert "more" in str(caught.value).lower()
    with pytest.raises(AmbiguousFingerprintError):
        await daemon_client.images.delete(shared)


# --------------------------------------------------------------------------------------------
# update


async def test_update_replaces_properties_and_keeps_everything_else(
    daemon_client: AsyncClient, new_image: Any, raw_api: httpx.Client
) -> None:
    image = await new_image(public=True, auto_update=True, properties={"old": "x"})
    # Give it a non-default profile list and an expiry, which a bare PUT would reset.
    put = raw_api.put(
        f"/1.0/images/{image.fingerprint}",
        json={
            "public": True,
            "auto_update": True,
            "properties": image.properties,
            "profiles": [],
            "expires_at": "2099-01-02T03:04:05Z",
        },
    )
    assert put.status_code == 200, put.text
    before = await daemon_client.images.get(image.fingerprint)
    assert before.profiles == [] and before.expires_at is not None

    wanted = {"new": "value & more", "ü": "☃"}
    updated = await daemon_client.images.update(image.fingerprint[:12], wanted)
    assert updated.properties == wanted
    after = await daemon_client.images.get(image.fingerprint)
    assert after.properties == wanted
    assert after.public is True
    assert after.auto_update is True
    assert after.profiles == []
    assert after.expires_at == before.expires_at


async def test_update_never_overwrites_a_concurrent_change_silently(
    daemon_client: AsyncClient,
    new_image: Any,
    raw_api: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = await new_image()
    images_api = daemon_client.images
    calls = images_api._calls
    read = calls.get
    statuses: list[int] = []

    async def read_then_someone_else_writes(prefix: str, **options: Any) -> Any:
        result = await read(prefix, **options)
        # Another client changes the properties between our read and our write.
        other = raw_api.patch(
            f"/1.0/images/{image.fingerprint}", json={"properties": {"other": str(len(statuses))}}
        )
        statuses.append(other.status_code)
        return result

    monkeypatch.setattr(calls, "get", read_then_someone_else_writes)
    with pytest.raises(PreconditionFailedError) as caught:
        await images_api.update(image.fingerprint, {"mine": "1"})
    assert caught.value.fingerprint == image.fingerprint
    assert statuses == [200] * len(statuses)
    assert len(statuses) == 5  # UPDATE_ATTEMPTS reads, each followed by a change
    current = raw_api.get(f"/1.0/images/{image.fingerprint}").json()["metadata"]
    assert "mine" not in current["properties"]  # the other writer's last change stands
    assert current["properties"]["other"] == "4"

    monkeypatch.undo()
    updated = await daemon_client.images.update(image.fingerprint, {"mine": "1"})
    assert updated.properties == {"mine": "1"}


# --------------------------------------------------------------------------------------------
# delete


async def test_delete_with_wait_returns_when_the_image_is_gone(
    daemon_client: AsyncClient, new_image: Any
) -> None:
    image = await new_image()
    operation = await daemon_client.images.delete(image.fingerprint, wait=True)
    assert operation.succeeded
    with pytest.raises(NotFoundError):
        await daemon_client.images.get(image.fingerprint)


async def test_delete_without_wait_returns_the_operation(
    daemon_client: AsyncClient, new_image: Any
) -> None:
    image = await new_image()
    operation = await daemon_client.images.delete(image.fingerprint)
    assert operation.description == "Deleting image"
    assert (await daemon_client.operations.wait(operation)).succeeded
    assert image.fingerprint not in await daemon_client.images.list(recursion=0)


async def test_delete_unknown_raises_not_found(daemon_client: AsyncClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        await daemon_client.images.delete("e" * 64, wait=True)
    assert "e" * 64 in str(caught.value)


# --------------------------------------------------------------------------------------------
# export


async def test_export_unified_writes_one_verified_file(
    daemon_client: AsyncClient, new_image: Any, tmp_path: Path
) -> None:
    image = await new_image()
    target = tmp_path / "image.tar.gz"
    written = await daemon_client.images.export(image.fingerprint[:10], target)
    assert written == [target]
    assert hashlib.sha256(target.read_bytes()).hexdigest() == image.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.tar.gz"]


async def test_export_into_a_directory_uses_the_servers_file_name(
    daemon_client: AsyncClient, new_image: Any, tmp_path: Path
) -> None:
    image = await new_image()
    written = await daemon_client.images.export(image.fingerprint, tmp_path)
    assert written == [tmp_path / f"{image.fingerprint}.tar.gz"]
    assert hashlib.sha256(written[0].read_bytes()).hexdigest() == image.fingerprint


async def test_export_into_a_missing_directory_named_with_a_separator(
    daemon_client: AsyncClient, new_image: Any, tmp_path: Path
) -> None:
    image = await new_image()
    written = await daemon_client.images.export(image.fingerprint, f"{tmp_path}/out/")
    assert written == [tmp_path / "out" / f"{image.fingerprint}.tar.gz"]
    assert hashlib.sha256(written[0].read_bytes()).hexdigest() == image.fingerprint
    assert (tmp_path / "out").is_dir()


async def test_export_replaces_an_existing_file(
    daemon_client: AsyncClient, new_image: Any, tmp_path: Path
) -> None:
    image = await new_image()
    target = tmp_path / "out"
    target.write_bytes(b"old content")
    await daemon_client.images.export(image.fingerprint, target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == image.fingerprint


async def test_export_split_image_writes_metadata_and_rootfs(
    daemon_client: AsyncClient, raw_api: httpx.Client, cleanup: list[str], tmp_path: Path
) -> None:
    metadata, rootfs = split_image()
    fingerprint = upload_split_raw(raw_api, metadata, rootfs)
    cleanup.append(fingerprint)

    target = tmp_path / "split"
    written = await daemon_client.images.export(fingerprint, target)
    assert written == [target, tmp_path / "split.root"]
    assert target.read_bytes() == metadata
    assert (tmp_path / "split.root").read_bytes() == rootfs

    directory = tmp_path / "dir"
    directory.mkdir()
    named = await daemon_client.images.export(fingerprint, directory)
    assert [p.parent for p in named] == [directory, directory]
    assert named[0].name.startswith("meta-")
    assert sha256(named[0].read_bytes(), named[1].read_bytes()) == fingerprint
    assert sorted(p.name for p in directory.iterdir()) == sorted(p.name for p in named)


async def test_export_of_an_unknown_image_leaves_nothing(
    daemon_client: AsyncClient, tmp_path: Path
) -> None:
    with pytest.raises(NotFoundError):
        await daemon_client.images.export("d" * 64, tmp_path / "never")
    assert list(tmp_path.iterdir()) == []


async def test_export_refuses_a_target_in_a_missing_directory(
    daemon_client: AsyncClient, new_image: Any, tmp_path: Path
) -> None:
    image = await new_image()
    with pytest.raises(InvalidInputError):
        await daemon_client.images.export(image.fingerprint, tmp_path / "no" / "such" / "file")


# --------------------------------------------------------------------------------------------
# projects


async def test_a_client_of_a_project_works_in_that_project_only(
    incusd: Any, daemon_client: AsyncClient, raw_api: httpx.Client
) -> None:
    project = unique("proj")
    created = raw_api.post(
        "/1.0/projects", json={"name": project, "config": {"features.images": "true"}}
    )
    assert created.status_code == 201, created.text
    try:
        async with AsyncClient(incusd.endpoint, project=project) as scoped:
            image = await scoped.images.create(unified_image(), wait=True)
            assert isinstance(image, Image)
            assert image.project == project
            assert await scoped.images.list(recursion=0) == [image.fingerprint]
            assert image.fingerprint not in await daemon_client.images.list(recursion=0)
            alias = await scoped.images.create_alias(unique("p"), image.fingerprint)
            assert (await scoped.images.get_alias(alias.name)).target == image.fingerprint
            with pytest.raises(NotFoundError):
                await daemon_client.images.get_alias(alias.name)
            await scoped.images.delete(image.fingerprint, wait=True)
            assert await scoped.images.list(recursion=0) == []
    finally:
        raw_api.delete(f"/1.0/projects/{project}")
