"""User code, type-checked: every public call's result has exactly the type a user expects,
with no cast and no isinstance (``mypy --strict``: ``nox -s typecheck``, run in CI).

Written once, async; the blocking twin (tests/_sync/user_code_types.py) is generated like the
rest. Nothing here runs against a server (pytest does not collect it): the checker reads it.
The README's examples are here too.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, assert_type

import incus_images
from incus_images import (
    AsyncClient,
    AsyncEventStream,
    AsyncSimpleStreams,
    AsyncSimpleStreamsImages,
    ConfigurationError,
    EventGap,
    Image,
    ImageAlias,
    ImageAliasList,
    ImageBuild,
    ImageEvent,
    ImageList,
    IncusError,
    LeftBehind,
    LifecycleEvent,
    Operation,
    OperationEvent,
    Remote,
    RemoteConfig,
    ServerInfo,
    add_remote,
    load_remotes,
)
from incus_images.progress import TqdmProgress


async def images_calls(client: AsyncClient, other: AsyncClient, flag: bool) -> None:
    fp = "ab12"
    assert_type(await client.images.list(), ImageList)
    assert_type(await client.images.list(0), list[str])
    assert_type(await client.images.list(1, filter="public eq true"), ImageList)
    assert_type(await client.images.get(fp), Image)
    assert_type(await client.images.get(fp, secret="5e"), Image)
    assert_type(await client.images.get_by_alias("debian/12", type="container"), Image)
    assert_type(await client.images.create_secret(fp), str)
    assert_type(await client.images.export(fp, "backup.tar.gz"), list[Path])

    # create(): the seed's positional form, and keyword wait.
    assert_type(await client.images.create(b"data"), Operation)
    assert_type(await client.images.create(b"data", "name.tar.gz", False, False, None, True), Image)
    assert_type(await client.images.create(b"data", "n", False, False, None, False), Operation)
    assert_type(await client.images.create(b"data", wait=True), Image)
    assert_type(await client.images.create(b"data", wait=False), Operation)
    assert_type(await client.images.create(b"data", wait=flag), Image | Operation)
    assert_type(
        await client.images.create(
            "meta.tar.xz",
            rootfs="disk.qcow2",
            type="virtual-machine",
            aliases=["debian/12/vm"],
            profiles=["default"],
            fingerprint="ab" * 32,
            wait=True,
            timeout=600,
        ),
        Image,
    )

    # An ImageBuild is image data: made from a tree, a VM disk, or a split image's metadata.
    build = ImageBuild.from_directory(
        "rootfs/",
        architecture="x86_64",
        properties={"os": "busybox"},
        templates={"/etc/hostname": {"when": ["create", "copy"], "template": "hostname.tpl"}},
        templates_dir="templates/",
        owner={1000: 0},
        mtime=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        compression="xz",
    )
    assert_type(build.skipped, tuple[str, ...])
    assert_type(build.write("tiny.tar.xz"), str)
    assert_type(await client.images.create(build, aliases=["tiny"], wait=True), Image)
    assert_type(await client.images.create(build), Operation)
    vm = ImageBuild.virtual_machine("disk.qcow2", architecture="x86_64", mtime=1)
    assert_type(await client.images.create(vm, wait=True), Image)
    meta = ImageBuild.metadata_only(properties={"os": "x"}, compression="none")
    assert_type(
        await client.images.create(meta, rootfs="rootfs.squashfs", wait=flag), Image | Operation
    )

    # copy() and publish() wait by default.
    assert_type(await client.images.copy("debian/12", other), Image)
    assert_type(await client.images.copy("debian/12", other, wait=True), Image)
    assert_type(await client.images.copy("debian/12", other, wait=False), Operation)
    assert_type(await client.images.copy(fp, other, wait=flag), Image | Operation)
    hub = AsyncSimpleStreams("https://images.example")
    assert_type(await client.images.copy("alpine/3.20", hub, aliases=["alpine"]), Image)
    # Either flavour's image server is a source of either client's copy.
    blocking_hub = incus_images.SimpleStreams("https://images.example")
    assert_type(await client.images.copy("alpine/3.20", blocking_hub), Image)
    assert_type(await client.images.publish("c1"), Image)
    assert_type(await client.images.publish("c1/snap0", wait=False), Operation)
    assert_type(await client.images.publish("c1", force=True, timeout=60), Image)
    assert_type(await client.images.copy("debian/12", hub, architecture="aarch64"), Image)
    assert_type(await client.images.copy(fp, other, architecture="x86_64", wait=False), Operation)
    # ensure() always waits: the Image.
    assert_type(await client.images.ensure("debian/12", hub), Image)
    assert_type(
        await client.images.ensure(
            "debian/12",
            hub,
            type="virtual-machine",
            architecture="aarch64",
            aliases=["base"],
            auto_update=True,
            public=False,
            profiles=["default"],
            progress=None,
            timeout=600,
        ),
        Image,
    )
    assert_type(await client.images.ensure(fp, other, aliases=["base"]), Image)
    # reuse=True moves taken aliases; it does not change what a call returns.
    assert_type(await client.images.create(b"d", aliases=["a"], reuse=True), Operation)
    assert_type(await client.images.create(b"d", aliases=["a"], reuse=True, wait=True), Image)
    assert_type(await client.images.copy(fp, other, aliases=["a"], reuse=True), Image)
    assert_type(await client.images.copy(fp, other, reuse=True, wait=False), Operation)
    assert_type(await client.images.publish("c1", aliases=["a"], reuse=True), Image)
    assert_type(await client.images.publish("c1", reuse=True, wait=flag), Image | Operation)

    # delete() and refresh() give the Operation (finished when they waited).
    assert_type(await client.images.delete(fp), Operation)
    assert_type(await client.images.delete(fp, True), Operation)
    assert_type(await client.images.delete(fp, wait=True, timeout=30), Operation)
    assert_type(await client.images.refresh(fp), Operation)
    assert_type(await client.images.refresh(fp, wait=True, timeout=30), Operation)

    assert_type(await client.images.update(fp, {"os": "debian"}), Image)
    expiry = datetime.datetime.now(datetime.UTC)
    assert_type(await client.images.update(fp, public=True, expires_at=expiry), Image)

    assert_type(await client.images.create_alias("a", fp, "desc"), ImageAlias)
    assert_type(await client.images.get_alias("a"), ImageAlias)
    assert_type(await client.images.update_alias("a", fp), ImageAlias)
    assert_type(await client.images.rename_alias("a", "b"), ImageAlias)
    assert_type(await client.images.list_aliases(), ImageAliasList)
    assert_type(await client.images.delete_alias("b"), None)

    started = await client.images.create(b"data", aliases=["web"])
    assert_type(await client.operations.wait(started), Operation)
    assert_type(await client.operations.wait(started.id, 30), Operation)
    assert_type(await client.operations.get(started), Operation)
    assert_type(await client.server_info(), ServerInfo)
    assert_type(client.server, str)
    assert_type(client.project, str | None)


async def readme_examples() -> None:
    """The README's quick start, big images and copying, as a user writes them."""
    async with AsyncClient("unix:///var/lib/incus/unix.socket") as client:
        for image in await client.images.list():
            assert_type(image.fingerprint, str)
            assert_type(image.properties.get("description", ""), str)
        image = await client.images.create("image.tar.gz", properties={"os": "debian"}, wait=True)
        assert_type(image, Image)
        await client.images.create_alias("debian/12", image.fingerprint, description="Debian 12")
        await client.images.update(image.fingerprint, {**image.properties, "release": "12"})
        assert_type(await client.images.export(image.fingerprint, "backup.tar.gz"), list[Path])
        assert_type((await client.images.delete(image.fingerprint, wait=True)).succeeded, bool)
        alias = await client.images.get_alias("debian/12")
        await client.images.export(alias.target, "/tmp")
        with TqdmProgress("import") as bar:
            vm = await client.images.create(
                "meta.tar.xz",
                rootfs="disk.qcow2",
                type="virtual-machine",
                aliases=["debian/12/vm"],
                profiles=["default"],
                progress=bar,
                wait=True,
            )
        assert_type(vm.fingerprint, str)
        prod = AsyncClient(remote="prod")
        copied = await client.images.copy("debian/12", prod, aliases=["debian"], auto_update=True)
        refreshed = await client.images.refresh(copied.fingerprint, wait=True)
        assert_type(refreshed.metadata, dict[str, Any] | None)
        info = await client.server_info()
        assert_type(info.trusted, bool)


def remotes_calls() -> None:
    assert_type(add_remote("staging", "eyJjbGllbnRfbmFtZSI6"), Remote)
    assert_type(load_remotes(), RemoteConfig)
    assert_type(load_remotes().remote("prod"), Remote)
    assert_type(AsyncSimpleStreams.from_remote("images"), AsyncSimpleStreams)


async def simplestreams_calls(progress: TqdmProgress) -> None:
    async with AsyncSimpleStreams("https://images.example", certificate=None, timeout=60) as hub:
        assert_type(hub.images, AsyncSimpleStreamsImages)
        assert_type(await hub.images.list(), ImageList)
        assert_type(await hub.images.list(filter="properties.os eq debian"), ImageList)
        assert_type(await hub.images.get("3c5a1b"), Image)
        assert_type(await hub.images.get_by_alias("debian/12"), Image)
        assert_type(
            await hub.images.get_by_alias("debian/12", type="container", architecture="aarch64"),
            Image,
        )
        assert_type(await hub.images.list_aliases(), ImageAliasList)
        assert_type(await hub.images.export("3c5a1b", "debian12", progress=progress), list[Path])
        assert_type(await hub.refresh(), None)
        assert_type(hub.url, str)
        assert_type(hub.certificate, str | None)
        assert_type(hub.timeout, float | None)


async def errors_calls(client: AsyncClient) -> None:
    """What a user reads off an error: what the call left behind, and where a bad file is."""
    try:
        await client.images.create(b"data", aliases=["web"], wait=True)
    except IncusError as exc:
        assert_type(exc.left_behind, LeftBehind | None)
        if exc.left_behind in (LeftBehind.MAY_BE_STORED, LeftBehind.STILL_THERE):
            assert_type(exc.fingerprint, str | None)
        assert_type(exc.__notes__, list[str])
    try:
        load_remotes()
    except ConfigurationError as broken:
        assert_type(broken.path, str | None)


async def events_calls(client: AsyncClient) -> None:
    """What a watcher reads: each step's exact union, narrowed by isinstance alone."""
    watching = client.images.watch(all_projects=True)
    assert_type(watching, AsyncEventStream[ImageEvent])
    async with watching as changes:
        assert_type(changes, AsyncEventStream[ImageEvent])
        async for change in changes:
            assert_type(change, ImageEvent | EventGap)
            if isinstance(change, EventGap):
                assert_type(change.since, datetime.datetime)
            else:
                assert_type(change.fingerprint, str | None)
                assert_type(change.alias, str | None)
    async with client.events(types=("operation",), reconnect=False) as events:
        async for event in events:
            assert_type(event, ImageEvent | LifecycleEvent | OperationEvent | EventGap)
            if isinstance(event, OperationEvent):
                assert_type(event.operation, Operation)
                assert_type(event.operation.done, bool)
            elif isinstance(event, LifecycleEvent):
                assert_type(event.context, dict[str, Any])
        await events.aclose()
