"""Publishing an instance or a snapshot as a new image, on the import path.

Incus refuses to publish a running instance; with ``force=True`` it is stopped first and
started again afterwards, whatever happened in between (as ``incus publish --force`` does).
"""

from __future__ import annotations

import re
from datetime import datetime

import attrs

from .. import _api as api
from .._errors import (
    ConflictError,
    IncusError,
    IncusTimeoutError,
    InvalidInputError,
    LeftBehind,
    note_left_behind,
)
from .._models import Image, Operation
from .._protocol import structure
from .._requests import AliasEntry, FollowUp, ImagesPost, ImagesPostSource
from .._transfer.reports import Progress, ProgressCallback, daemon_progress
from .._validate import (
    aware_datetime,
    boolean,
    callback,
    names_list,
    new_alias_name,
    properties_map,
    text,
)
from .._waiting import WaitBudget
from ._calls import AsyncImageCalls
from ._importing import AsyncImporter, follow_up_description

#: An instance name (letters, digits, hyphens), optionally "/" and a snapshot name.
_SOURCE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}(/[^/]{1,255})?")
_RUNNING_STATUSES = ("Running", "Frozen")


@attrs.frozen(kw_only=True)
class PublishOptions:
    """publish()'s arguments, checked before anything is sent."""

    aliases: list[str]
    #: Move aliases already taken to the new image (else they are refused).
    reuse: bool
    properties: dict[str, str]
    public: bool
    compression: str | None
    expires_at: datetime | None
    force: bool
    progress: ProgressCallback | None
    wait: bool
    budget: WaitBudget


def publish_options(
    *,
    aliases: object,
    reuse: object,
    properties: object,
    public: object,
    compression: object,
    expires_at: object,
    force: object,
    progress: object,
    wait: object,
    timeout: object,
) -> PublishOptions:
    callback(progress, "progress")
    options = PublishOptions(
        aliases=names_list(aliases, "aliases", new_alias_name),
        reuse=boolean(reuse, "reuse"),
        properties=properties_map(properties),
        public=boolean(public, "public"),
        compression=None if compression is None else text(compression, "compression", empty=False),
        expires_at=aware_datetime(expires_at, "expires_at"),
        force=boolean(force, "force"),
        progress=progress,  # type: ignore[arg-type]  # checked above
        wait=boolean(wait, "wait"),
        budget=WaitBudget(timeout),
    )
    if options.force and not options.wait:
        raise InvalidInputError(
            "publish(force=True, wait=False): a running instance is stopped to be published "
            "and must be started again once its image is made, so the call has to wait; "
            "use wait=True (with timeout= to bound it)"
        )
    return options


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
        await importer.preflight(options.aliases, [], reuse=options.reuse)
        running = not snapshot and await self._running(name)
        if running and not options.force:
            refused = ConflictError(
                f"Could not {importer.action} on {self._calls.server}: the instance is "
                "running; publish(..., force=True) stops it, publishes it and starts it again",
                server=self._calls.server,
            )
            raise note_left_behind(refused, LeftBehind.NOTHING, "nothing was done")
        if options.wait or options.aliases:
            # A publish that waits may clean up after a failure (before any instance stops).
            await importer.survey()
        if not running:
            return await self._publish(name, snapshot, importer, options)
        await self._change_state(name, "stop", options.budget)
        try:
            result = await self._publish(name, snapshot, importer, options)
        except IncusTimeoutError as exc:
            # The image is still being made from the stopped instance: starting it now could
            # spoil the image, so it stays stopped, and the note says so.
            exc.add_note(
                f"incus_images: instance {name!r} stays stopped while its image is made; "
                "start it once the publish operation ends"
            )
            raise
        except BaseException as exc:
            try:
                await self._change_state(name, "start", None)
            except IncusError as failed:
                exc.add_note(f"incus_images: starting instance {name!r} again failed too: {failed}")
            raise
        await self._change_state(name, "start", options.budget)
        return result

    async def _publish(
        self, name: str, snapshot: bool, importer: AsyncImporter, options: PublishOptions
    ) -> Image | Operation:
        """Publish; the Image (wait), else the running Operation (the aliases are created
        when it is waited for)."""
        request = ImagesPost(
            source=ImagesPostSource(type="snapshot" if snapshot else "instance", name=name),
            public=options.public or None,
            properties=options.properties or None,
            compression_algorithm=options.compression,
            expires_at=options.expires_at,
        )
        started = await importer.start(api.new_image(action=importer.action, json=request))
        follow_up = FollowUp(aliases=[AliasEntry(name=alias) for alias in options.aliases])
        if not options.wait and not follow_up.needed:
            return started
        completion = _PublishCompletion(importer, name, follow_up, options.progress)
        if not await self._calls.operations._finish(
            started, completion, wait=options.wait, budget=options.budget
        ):
            return started
        assert completion.fingerprint is not None
        image = await importer.image(completion.fingerprint)
        completion.progress.total = image.size
        completion.progress.advance(image.size - completion.progress.done)
        completion.progress.finish()
        return image

    async def _running(self, name: str) -> bool:
        envelope = await self._calls.connection.request(api.get_instance(name))
        metadata = envelope.metadata if isinstance(envelope.metadata, dict) else {}
        return metadata.get("status") in _RUNNING_STATUSES

    async def _change_state(self, name: str, action: str, budget: WaitBudget | None) -> None:
        call = api.change_instance_state(name, action)
        envelope = await self._calls.connection.request(call)
        operation = structure(call, self._calls.server, envelope.metadata, Operation)
        left = (
            f"instance {name!r} is still being {action}ped"
            if action == "stop"
            else (f"instance {name!r} is still being started again")
        )
        await self._calls.operations._wait_noting(operation, budget, action=call.action, left=left)


class _PublishCompletion:
    """The rest of a publish once the server packs the image: the image it made, then its
    aliases."""

    def __init__(
        self,
        importer: AsyncImporter,
        name: str,
        follow_up: FollowUp,
        progress: ProgressCallback | None,
    ) -> None:
        self._importer = importer
        self._name = name
        self._follow_up = follow_up
        # Packing reports processed bytes; how many there will be is not known in advance.
        self.progress = Progress(progress, None)
        self._watching = progress is not None
        #: The fingerprint of the image made, once it is known.
        self.fingerprint: str | None = None

    def describe(self) -> str:
        return follow_up_description(f"check the image of {self._name!r}", self._follow_up)

    async def complete(self, operation: Operation, budget: WaitBudget) -> Operation:
        importer = self._importer
        progress = self.progress
        progress.start()

        def watch(running: Operation) -> None:
            done = daemon_progress(running.metadata, None)
            if done is not None and done > progress.done:
                progress.advance(done - progress.done)

        with importer.accepted(lambda: f"the image of {self._name!r}"):
            finished = await importer.wait(
                operation, watch=watch if self._watching else None, budget=budget
            )
            self.fingerprint = await importer.verified(finished, None)
            await importer.follow_up(self.fingerprint, self._follow_up)
        return finished
