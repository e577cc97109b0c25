"""Publishing an instance or a snapshot as a new image, on the import path.

Incus refuses to publish a running instance; with ``force=True`` it is stopped first and
started again afterwards, whatever happened in between (as ``incus publish --force`` does).
"""

from __future__ import annotations

import re
from datetime import datetime

import attrs

from .._errors import ConflictError, IncusError, InvalidInputError
from .._models import Image, Operation
from .._protocol import IMAGES, Call, named_path, structure
from .._requests import AliasEntry, FollowUp, ImagesPost, ImagesPostSource
from .._transfer.progress import Progress, ProgressCallback, daemon_progress
from .._validate import (
    aware_datetime,
    boolean,
    callback,
    names_list,
    new_alias_name,
    properties_map,
    text,
)
from ._calls import AsyncImageCalls
from ._importing import AsyncImporter

INSTANCES = "/1.0/instances"
#: An instance name (letters, digits, hyphens), optionally "/" and a snapshot name.
_SOURCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}(/[^/]{1,255})?")
_RUNNING_STATUSES = ("Running", "Frozen")


@attrs.frozen(kw_only=True)
class PublishOptions:
    """publish()'s arguments, checked before anything is sent."""

    aliases: list[str]
    properties: dict[str, str]
    public: bool
    compression: str | None
    expires_at: datetime | None
    force: bool
    progress: ProgressCallback | None
    wait: bool


def publish_options(
    *,
    aliases: object,
    properties: object,
    public: object,
    compression: object,
    expires_at: object,
    force: object,
    progress: object,
    wait: object,
) -> PublishOptions:
    callback(progress, "progress")
    return PublishOptions(
        aliases=names_list(aliases, "aliases", new_alias_name),
        properties=properties_map(properties),
        public=boolean(public, "public"),
        compression=None if compression is None else text(compression, "compression", empty=False),
        expires_at=aware_datetime(expires_at, "expires_at"),
        force=boolean(force, "force"),
        progress=progress,  # type: ignore[arg-type]  # checked above
        wait=boolean(wait, "wait"),
    )


def publish_source(value: object) -> tuple[str, bool]:
    """The instance (``c1``) or snapshot (``c1/snap0``) to publish, and whether a snapshot."""
    name = text(value, "source", empty=False)
    if not _SOURCE.fullmatch(name):
        raise InvalidInputError(
            f"source {name!r} is not an instance name ('c1') or a snapshot ('c1/snap0')"
        )
    return name, "/" in name


class AsyncPublisher:
    """Publishes instances of the server of ``calls`` as images there."""

    def __init__(self, calls: AsyncImageCalls) -> None:
        self._calls = calls

    async def publish(self, source: str, options: PublishOptions) -> Image | Operation:
        name, snapshot = publish_source(source)
        kind = "snapshot" if snapshot else "instance"
        importer = AsyncImporter(self._calls, f"publish {kind} {name!r}")
        await importer.preflight(options.aliases, [])
        running = not snapshot and await self._running(name)
        if running and not options.force:
            raise ConflictError(
                f"Could not {importer.action} on {self._calls.server}: the instance is "
                "running; publish(..., force=True) stops it, publishes it and starts it again "
                "(nothing was done)",
                server=self._calls.server,
            )
        if options.wait or options.aliases or running:
            # A publish that waits may clean up after a failure (before any instance stops).
            await importer.survey()
        if not running:
            return await self._publish(name, snapshot, importer, options)
        await self._change_state(name, "stop")
        try:
            # The instance starts again only once the image is done: always wait.
            result = await self._publish(name, snapshot, importer, options, finish=True)
        except BaseException as exc:
            try:
                await self._change_state(name, "start")
            except IncusError as failed:
                exc.add_note(f"incus_images: starting instance {name!r} again failed too: {failed}")
            raise
        await self._change_state(name, "start")
        return result

    async def _publish(
        self,
        name: str,
        snapshot: bool,
        importer: AsyncImporter,
        options: PublishOptions,
        *,
        finish: bool = False,
    ) -> Image | Operation:
        """Publish; the Image (wait), else the Operation (finished when ``finish`` or when
        aliases must follow)."""
        request = ImagesPost(
            source=ImagesPostSource(type="snapshot" if snapshot else "instance", name=name),
            public=options.public or None,
            properties=options.properties or None,
            compression_algorithm=options.compression,
            expires_at=options.expires_at,
        )
        started = await importer.start(
            Call(method="POST", path=IMAGES, action=importer.action, json=request)
        )
        follow_up = FollowUp(aliases=[AliasEntry(name=alias) for alias in options.aliases])
        if not options.wait and not follow_up.needed and not finish:
            return started
        # Packing reports processed bytes; how many there will be is not known in advance.
        progress = Progress(options.progress, None)
        progress.start()

        def watch(operation: Operation) -> None:
            done = daemon_progress(operation.metadata, None)
            if done is not None and done > progress.done:
                progress.advance(done - progress.done)

        with importer.accepted(lambda: f"the image of {name!r}"):
            finished = await importer.wait(
                started, watch=watch if options.progress is not None else None
            )
            fingerprint = await importer.verified(finished, None)
            await importer.follow_up(fingerprint, follow_up)
        image = await importer.image(fingerprint)
        progress.total = image.size
        progress.advance(image.size - progress.done)
        progress.finish()
        return image if options.wait else finished

    async def _running(self, name: str) -> bool:
        call = Call(method="GET", path=named_path(INSTANCES, name), action=f"get instance {name!r}")
        envelope = await self._calls.connection.request(call)
        metadata = envelope.metadata if isinstance(envelope.metadata, dict) else {}
        return metadata.get("status") in _RUNNING_STATUSES

    async def _change_state(self, name: str, action: str) -> None:
        call = Call(
            method="PUT",
            path=named_path(INSTANCES, name) + "/state",
            action=f"{action} instance {name!r} (publish force=True)",
            # As incus publish --force: no time limit on the stop, and force it.
            json={"action": action, "timeout": -1, "force": True},
        )
        envelope = await self._calls.connection.request(call)
        operation = structure(call, self._calls.server, envelope.metadata, Operation)
        await self._calls.operations._wait(operation.id, None, action=call.action)
