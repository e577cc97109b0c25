"""Copying an image from another server onto this one: one skeleton, three ways to move the
bytes, and public image servers.

    resolve     the source's image, named by an alias, a fingerprint or a prefix
    preflight   what the mode cannot do, aliases taken, profiles missing: refused before
                anything is sent; an image this server already holds is not copied again
    move        the mode starts moving the bytes (``_Pull``, ``_Push``, ``_Relay``):
                    pull    this server downloads from the source's HTTPS address
                    push    the source uploads to this server's HTTPS address
                    relay   this client streams the source's export into this server's upload
    complete    wait for the move to end, verify what was stored, apply settings and aliases
                (``_CopyCompletion``; with wait=False, left to operations.wait())

Every mode ends on the import path (``_importing``): the fingerprint stored must be the
source's, and a copy that fails after the image arrived is deleted again; an image this server
held before the copy began is never deleted. Every error of a copy names the source, this
server, the image and the mode in its message (``_naming`` completes the message of a step that
knows only part of it); what the copy left behind is its record (``note_left_behind``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import ClassVar, Literal

import attrs

from .. import _api as api
from .._architectures import ARCHITECTURES, architecture_spellings
from .._errors import (
    ConflictError,
    ForbiddenError,
    IncusError,
    IncusTimeoutError,
    InvalidInputError,
    LeftBehind,
    NotFoundError,
    OperationError,
    TransferError,
    note_left_behind,
)
from .._logging import logger
from .._models import Image, Operation
from .._protocol import structure, token_secret
from .._requests import AliasEntry, FollowUp, ImageExportPost, ImagesPost, ImagesPostSource
from .._simplestreams import SimpleStreams
from .._transfer.export import ExportReader
from .._transfer.plan import list_header
from .._transfer.relay import RelayFraming
from .._transfer.reports import Progress, ProgressCallback, daemon_progress
from .._validate import (
    IMAGE_TYPES,
    alias_name,
    architecture_name,
    boolean,
    callback,
    choice,
    fingerprint_prefix,
    names_list,
    new_alias_name,
    optional_boolean,
    profile_name,
)
from .._waiting import WaitBudget
from ._bodies import RelayState, relay_body
from ._calls import AsyncImageCalls
from ._importing import AsyncImporter, follow_up_description

__all__ = [
    "MAX_COPIED_ALIASES",
    "AsyncCopier",
    "CopyOptions",
    "check_architecture",
    "copy_options",
    "resolve",
]

CopyMode = Literal["pull", "push", "relay"]
MODES: tuple[CopyMode, ...] = ("pull", "push", "relay")

#: The most aliases copy_aliases=True brings from a source (each costs two requests; real
#: images carry a handful). More are left out, with a WARNING.
MAX_COPIED_ALIASES = 1000


@attrs.frozen(kw_only=True)
class CopyOptions:
    """copy()'s arguments, checked before anything is sent."""

    mode: CopyMode | None
    aliases: list[str]
    #: Move aliases already taken to the copy (else they are refused).
    reuse: bool
    copy_aliases: bool
    public: bool | None
    auto_update: bool | None
    profiles: list[str] | None
    image_type: str | None
    #: The architecture asked for, as the caller spelt it (checked: one incusd knows).
    architecture: str | None
    progress: ProgressCallback | None
    wait: bool
    budget: WaitBudget


def copy_options(
    *,
    mode: object,
    aliases: object,
    reuse: object,
    copy_aliases: object,
    public: object,
    auto_update: object,
    profiles: object,
    image_type: object,
    architecture: object = None,
    progress: object,
    wait: object,
    timeout: object,
) -> CopyOptions:
    callback(progress, "progress")
    return CopyOptions(
        mode=None if mode is None else choice(mode, "mode", MODES),  # type: ignore[arg-type]
        aliases=names_list(aliases, "aliases", new_alias_name),
        reuse=boolean(reuse, "reuse"),
        copy_aliases=boolean(copy_aliases, "copy_aliases"),
        public=optional_boolean(public, "public"),
        auto_update=optional_boolean(auto_update, "auto_update"),
        profiles=None if profiles is None else names_list(profiles, "profiles", profile_name),
        image_type=None if image_type is None else choice(image_type, "type", IMAGE_TYPES),
        architecture=None if architecture is None else architecture_name(architecture),
        progress=progress,  # type: ignore[arg-type]  # checked above
        wait=boolean(wait, "wait"),
        budget=WaitBudget(timeout),
    )


class AsyncCopier:
    """Copies onto the server of ``calls``."""

    def __init__(self, calls: AsyncImageCalls) -> None:
        self._calls = calls

    @property
    def _target(self) -> str:
        return self._calls.server

    # ----------------------------------------------------------------------------------------
    # From another Incus server: the skeleton.

    async def copy(
        self, image: str, source: AsyncImageCalls, options: CopyOptions
    ) -> Image | Operation:
        mode = self._mode(options, source.connection.https_url)
        described = f"image {image!r} from {source.server} to {self._target} ({mode.name} mode)"
        logger.debug("copy of %s started", described)
        started = time.monotonic()
        with _naming(described, source.server, self._target, f"{mode.name} mode"):
            with _nothing_copied():
                found, by_alias = await resolve(source, image, options.image_type)
                check_architecture(found, image, source.server, options.architecture)
            job = _Job(
                target=self._calls,
                source=source,
                found=found,
                by_alias=by_alias,
                options=options,
                progress=Progress(options.progress if mode.daemon_reports else None, found.size),
                importer=AsyncImporter(
                    self._calls,
                    f"copy image '{found.fingerprint}' from {source.server} to {self._target} "
                    f"({mode.name} mode)",
                ),
                started=started,
            )
            moving = mode(job)
            with _nothing_copied():
                moving.check()
            copied = await self._copy(job, moving, described)
        if isinstance(copied, Image):
            logger.info("copied %s in %.1f s", described, time.monotonic() - started)
        return copied

    async def _copy(self, job: _Job, moving: _Mode, described: str) -> Image | Operation:
        importer = job.importer
        fingerprint = job.found.fingerprint
        aliases = _wanted_aliases(job.options, job.found)
        if fingerprint in await importer.survey():
            # Not an error: the target has the image; only the aliases asked for are added.
            await importer.preflight([alias.name for alias in aliases], [], reuse=job.options.reuse)
            await importer.follow_up(fingerprint, FollowUp(aliases=aliases))
            held = await importer.image(fingerprint)
            return held if job.options.wait else _already_there(held)
        await importer.preflight(
            [alias.name for alias in aliases],
            job.options.profiles or [],
            reuse=job.options.reuse,
        )
        follow_up = FollowUp(
            # A relayed or pushed image carries its metadata.yaml's properties; the copy gets
            # the source's (pull copies them itself).
            properties=dict(job.found.properties) if moving.sets_properties else None,
            # A request cannot say "no profiles": an empty list means the default profile.
            profiles=[] if job.options.profiles == [] else None,
            aliases=aliases,
        )
        started = await moving.move()
        completion = _CopyCompletion(job, moving, follow_up, described)
        options = job.options
        if not await self._calls.operations._finish(
            started, completion, wait=options.wait, budget=options.budget
        ):
            logger.debug("copy of %s: operation %s runs on", described, started.id)
            return started
        return await importer.image(fingerprint)

    def _mode(self, options: CopyOptions, source_url: str | None) -> type[_Mode]:
        mode = options.mode
        if mode is None:
            # As the Go client: the target pulls when the source has an HTTPS address.
            mode = "pull" if source_url is not None else "relay"
        if mode == "pull" and source_url is None:
            raise InvalidInputError(
                "mode='pull' needs the source's HTTPS address, but the source client talks to "
                "a unix socket: use mode='relay' (or None), 'push', or a source client over "
                "HTTPS"
            )
        if mode == "push" and self._calls.connection.https_url is None:
            raise InvalidInputError(
                "mode='push' needs this server's HTTPS address (the source connects to it), "
                "but this client talks to a unix socket: use mode='pull' or 'relay'"
            )
        if mode == "push" and not options.wait:
            raise InvalidInputError(
                "mode='push' with wait=False: a push is the source's operation, which this "
                "server's operations.wait() could not finish; use wait=True, or mode='pull' "
                "or 'relay'"
            )
        if options.auto_update and mode != "pull":
            raise InvalidInputError(
                f"auto_update=True needs mode='pull': a {mode} copy does not record where the "
                "image came from, so the server could never refresh it"
            )
        return _MODES[mode]

    # ----------------------------------------------------------------------------------------
    # From a simplestreams image server: the target downloads.

    async def from_simplestreams(
        self, image: object, source: SimpleStreams, options: CopyOptions
    ) -> Image | Operation:
        if options.mode not in (None, "pull"):
            raise InvalidInputError(
                f"mode={options.mode!r}: an image server is copied from by the target itself "
                "(mode='pull' or None)"
            )
        if options.copy_aliases:
            raise InvalidInputError(
                "copy_aliases=True: an image server's aliases name its products, not one "
                "image; name the aliases to create with aliases="
            )
        name = alias_name(image, argument="image")
        described = f"image {name!r} from {source.url} to {self._target} (simplestreams)"
        logger.debug("copy of %s started", described)
        started = time.monotonic()
        with _naming(described, source.url, self._target, name):
            copied = await self._from_simplestreams(name, source, options, described)
        if isinstance(copied, Image):
            logger.info("copied %s in %.1f s", described, time.monotonic() - started)
        return copied

    async def _from_simplestreams(
        self, name: str, source: SimpleStreams, options: CopyOptions, described: str
    ) -> Image | Operation:
        importer = AsyncImporter(self._calls, f"copy {described}")
        aliases = [AliasEntry(name=alias) for alias in options.aliases]
        await importer.preflight(
            [alias.name for alias in aliases], options.profiles or [], reuse=options.reuse
        )
        candidates = await self._streams_names(name, options)
        follow_up = FollowUp(profiles=[] if options.profiles == [] else None, aliases=aliases)
        # An architecture asked for is checked on what arrived, also when waited for later.
        completes = follow_up.needed or options.architecture is not None
        if options.wait or completes:
            await importer.survey()
        # The image's size is known only once it is here: the daemon's reports are amounts.
        progress = Progress(options.progress, None)
        progress.start()
        for attempt, candidate in enumerate(candidates):
            request = ImagesPost(
                source=ImagesPostSource(
                    type="image",
                    mode="pull",
                    server=source.url,
                    protocol="simplestreams",
                    # The daemon takes it as an alias first, then as a fingerprint; recorded as
                    # the source, so that refreshes follow the alias (and its architecture).
                    alias=candidate,
                    certificate=source.certificate,
                    image_type=options.image_type,
                ),
                public=options.public,
                auto_update=options.auto_update,
                profiles=options.profiles or None,
            )
            started = await importer.start(api.new_image(action=importer.action, json=request))
            if not options.wait and not completes:
                return started
            completion = _StreamsCompletion(importer, follow_up, progress, described, options)
            try:
                if not await self._calls.operations._finish(
                    started, completion, wait=options.wait, budget=options.budget
                ):
                    return started
            except OperationError as exc:
                if options.architecture is None or not _not_in_catalogue(exc):
                    raise
                if attempt + 1 < len(candidates):
                    continue  # the catalogue spells the architecture another way
                missing = NotFoundError(
                    f"Could not {importer.action} on {self._target}: {source.url} has no "
                    f"{ARCHITECTURES[options.architecture]} image named {name!r} (tried "
                    f"{', '.join(repr(tried) for tried in candidates)})",
                    server=self._target,
                )
                raise note_left_behind(missing, LeftBehind.NOTHING, "nothing was copied") from exc
            break
        assert completion.fingerprint is not None
        copied = await importer.image(completion.fingerprint)
        progress.total = copied.size
        progress.advance(copied.size - progress.done)
        progress.finish()
        return copied

    async def _streams_names(self, name: str, options: CopyOptions) -> list[str]:
        """What to ask the daemon for: the alias itself for this server's own architecture
        (incusd resolves it to that architecture first), else ``ALIAS/ARCH`` in each spelling
        of the architecture a catalogue may use (the caller's first; with wait=False, only
        the caller's: a wrong one is known only once the daemon's operation failed)."""
        architecture = options.architecture
        if architecture is None:
            return [name]
        if ARCHITECTURES[architecture] == await self.native_architecture():
            return [name]
        spellings = architecture_spellings(architecture)
        if not options.wait:
            spellings = spellings[:1]
        return [f"{name}/{spelling}" for spelling in spellings]

    async def native_architecture(self) -> str | None:
        """This server's own architecture (the first it lists), None when it does not say
        (it tells only a client it trusts)."""
        environment = (await self._calls.server_info()).environment
        if environment is None or not environment.architectures:
            return None
        return environment.architectures[0]


# --------------------------------------------------------------------------------------------
# One copy in flight, and what completes it.


@attrs.define(kw_only=True)
class _Job:
    """What the skeleton and the mode of one copy share."""

    target: AsyncImageCalls
    source: AsyncImageCalls
    found: Image
    #: The alias the image was named by, if it was.
    by_alias: str | None
    options: CopyOptions
    importer: AsyncImporter
    started: float
    #: The daemon's own download reports (pull and push mode), read about once a second only
    #: when someone listens. A relay's bytes are counted by the export's reader instead: its
    #: Progress reports nothing.
    progress: Progress

    @property
    def action(self) -> str:
        return self.importer.action

    def watch(self) -> Callable[[Operation], None] | None:
        """A watcher of the daemon's download progress, when someone listens (the reports
        are read about once a second only then)."""
        return _reporting(self.progress) if self.options.progress is not None else None


class _CopyCompletion:
    """The rest of a copy once its bytes are moving: wait for the move to end, check what
    this server stored, then apply the settings and aliases."""

    def __init__(self, job: _Job, moving: _Mode, follow_up: FollowUp, described: str) -> None:
        self._job = job
        self._moving = moving
        self._follow_up = follow_up
        self._described = described

    def describe(self) -> str:
        fingerprint = self._job.found.fingerprint
        first = f"check the copy of image {fingerprint}"
        if left := self._moving.left_open():
            first = f"{first}, {left}"
        return follow_up_description(first, self._follow_up)

    async def complete(self, operation: Operation, budget: WaitBudget) -> Operation:
        job = self._job
        importer = job.importer
        fingerprint = job.found.fingerprint
        names = (job.source.server, job.target.server, f"{self._moving.name} mode")
        with (
            _naming(self._described, *names),
            importer.accepted(lambda: f"image {fingerprint}"),
        ):
            finished = await self._moving.finish(operation, budget)
            if self._moving.verifies:
                await importer.verified(finished, fingerprint, expected_is="the source's image is")
            await _check_copy(job)
            await importer.follow_up(fingerprint, self._follow_up)
        job.progress.advance(job.found.size - job.progress.done)
        job.progress.finish()
        if not job.options.wait:
            logger.info("copied %s in %.1f s", self._described, time.monotonic() - job.started)
        return finished


class _StreamsCompletion:
    """The rest of a copy from an image server: the image the daemon stored (its fingerprint
    is learnt only now), then its aliases and profiles."""

    def __init__(
        self,
        importer: AsyncImporter,
        follow_up: FollowUp,
        progress: Progress,
        described: str,
        options: CopyOptions,
    ) -> None:
        self._importer = importer
        self._follow_up = follow_up
        self._progress = progress
        self._described = described
        self._options = options
        #: The fingerprint of the image the daemon stored, once it is known.
        self.fingerprint: str | None = None

    def describe(self) -> str:
        return follow_up_description(f"check the copy of {self._described}", self._follow_up)

    async def complete(self, operation: Operation, budget: WaitBudget) -> Operation:
        importer = self._importer
        watch = _reporting(self._progress) if self._options.progress is not None else None
        finished = await importer.wait(operation, watch=watch, budget=budget)
        self.fingerprint = await importer.verified(finished, None)
        await self._check_architecture(self.fingerprint)
        await importer.follow_up(self.fingerprint, self._follow_up)
        return finished

    async def _check_architecture(self, fingerprint: str) -> None:
        """An alias the catalogue has for other architectures only gives one of those: the
        copy is not kept when it is not of the architecture asked for."""
        architecture = self._options.architecture
        if architecture is None:
            return
        copied = await self._importer.image(fingerprint)
        if copied.architecture == ARCHITECTURES[architecture]:
            return
        missing = NotFoundError(
            f"Could not {self._importer.action} on {self._importer.server}: the image server "
            f"has no {ARCHITECTURES[architecture]} image under that name (it gave image "
            f"{fingerprint}, a {copied.architecture or 'unknown'} image)",
            server=self._importer.server,
            fingerprint=fingerprint,
        )
        raise note_left_behind(missing, *await self._importer.discard(fingerprint))


async def _check_copy(job: _Job) -> None:
    """The copy is there, and of the source's type (a server that changed it is not trusted
    with the rest)."""
    found = job.found
    copy = await job.target.find(found.fingerprint)
    if copy is not None and copy.type == found.type:
        return
    if copy is None:
        detail = "the image is not there"
        left = (LeftBehind.NOTHING, "nothing was copied")
    else:
        detail = f"it stored a {copy.type} image, not a {found.type} one"
        left = await job.importer.discard(found.fingerprint)
    failure = TransferError(
        f"Could not {job.action} on {job.target.server}: the copy was reported done, but {detail}",
        server=job.target.server,
        fingerprint=found.fingerprint,
    )
    raise note_left_behind(failure, *left)


def _already_there(image: Image) -> Operation:
    """The finished Operation of a copy that had nothing to move (wait=False): it ran
    nowhere, so it has no id; operations.wait() returns it as it is."""
    return Operation(
        id="",
        class_="task",
        description="Image already present",
        status="Success",
        status_code=200,
        metadata={"fingerprint": image.fingerprint, "size": str(image.size)},
    )


# --------------------------------------------------------------------------------------------
# The modes: how the bytes move.


class _Mode:
    """One way of moving a copy's bytes."""

    name: ClassVar[CopyMode]
    #: The copy gets the source's properties afterwards.
    sets_properties: ClassVar[bool] = True
    #: The operation reports what this server stored, which is checked against the source.
    verifies: ClassVar[bool] = True
    #: Progress comes from a daemon's reports (else this client counts the bytes itself).
    daemon_reports: ClassVar[bool] = True

    def __init__(self, job: _Job) -> None:
        self.job = job

    def check(self) -> None:
        """Refuse what this mode cannot do, before anything is sent."""

    async def move(self) -> Operation:
        """Start moving the bytes; return the operation that ends when they are here."""
        raise NotImplementedError

    async def finish(self, started: Operation, budget: WaitBudget) -> Operation:
        """Wait for the move to end (and close what move() opened, unless the wait timed
        out: the move goes on and still needs it)."""
        raise NotImplementedError

    def left_open(self) -> str:
        """What move() opened that finish() is still to close, for messages ("")."""
        return ""


class _Pull(_Mode):
    """This server downloads from the source's HTTPS address: no byte passes this client."""

    name = "pull"
    # A pull copies the source's properties itself.
    sets_properties = False

    def __init__(self, job: _Job) -> None:
        super().__init__(job)
        #: The id of the source's download secret (a private image), while it may be valid.
        self.token: str | None = None

    async def move(self) -> Operation:
        job = self.job
        found, source, options = job.found, job.source, job.options
        secret = None
        if not found.public:
            with _nothing_copied():
                if not (await source.server_info()).trusted:
                    raise ForbiddenError(
                        f"Could not {job.action} on {job.target.server}: the image is private "
                        f"and {source.server} does not trust this client, so it cannot issue "
                        "the secret a private copy needs",
                        server=source.server,
                        fingerprint=found.fingerprint,
                    )
                secret, self.token = await source.create_secret(found.fingerprint)
        # By alias, the server records the alias, so that refreshes follow it to new images;
        # a private image is fetched with its secret, which names a fingerprint.
        use_alias = job.by_alias is not None and options.auto_update and found.public
        request = ImagesPost(
            source=ImagesPostSource(
                type="image",
                mode="pull",
                server=source.connection.https_url,
                protocol="incus",
                alias=job.by_alias if use_alias else None,
                fingerprint=None if use_alias else found.fingerprint,
                certificate=source.connection.pinned_certificate,
                secret=secret,
                image_type=found.type or None,
                project=source.connection.project,
            ),
            public=options.public,
            auto_update=options.auto_update,
            profiles=options.profiles or None,
            filename=found.filename or None,
        )
        try:
            started = await job.importer.start(api.new_image(action=job.action, json=request))
        except BaseException as exc:
            await self._cancel_secret(exc)
            raise
        job.progress.start()
        return started

    async def finish(self, started: Operation, budget: WaitBudget) -> Operation:
        job = self.job
        try:
            finished = await job.importer.wait(
                started, fingerprint=job.found.fingerprint, watch=job.watch(), budget=budget
            )
        except IncusTimeoutError:
            raise  # the download goes on, and may still need the secret
        except BaseException as exc:
            # A secret the target never used would stay valid on the source for good.
            await self._cancel_secret(exc)
            raise
        # A pull can succeed without the secret: incusd copies an image whose files it
        # already has (in another project) instead of downloading it. Used, it is gone.
        await self._cancel_secret(None)
        return finished

    def left_open(self) -> str:
        if self.token is None:
            return ""
        return (
            f"cancel the download secret issued by {self.job.source.server} (token operation "
            f"{self.token}) if the download did not use it"
        )

    async def _cancel_secret(self, failure: BaseException | None) -> None:
        """Cancel the download secret, if any; when the source cannot be asked (it became
        unreachable), the failure (or, after a success, a WARNING) says it is still valid."""
        token, self.token = self.token, None
        if token is None:
            return
        source = self.job.source
        why = await source.cancel(token)
        if why is None:
            return
        said = (
            f"the download secret issued by {source.server} (token operation {token}) could "
            f"not be cancelled and is still valid until it is used or the source daemon "
            f"restarts: {why}"
        )
        if failure is None:
            logger.warning("incus_images: %s", said)
        else:
            failure.add_note(f"incus_images: {said}")


class _Relay(_Mode):
    """This client streams the source's export into this server's upload."""

    name = "relay"
    daemon_reports = False

    def __init__(self, job: _Job) -> None:
        super().__init__(job)
        self.state = RelayState()

    async def move(self) -> Operation:
        job = self.job
        found, importer, options = job.found, job.importer, job.options
        fingerprint = found.fingerprint
        connection = job.source.connection
        target = job.target.server

        def failure(detail: str, cls: type[TransferError] = TransferError) -> TransferError:
            # Raised before the last bytes go: interruptions() records that nothing is stored.
            return cls(
                f"Could not {importer.action} on {target}: {detail}; the upload was stopped",
                server=target,
                fingerprint=fingerprint,
            )

        call = api.export_image(
            fingerprint, action=f"export image '{fingerprint}' to relay it to {target}"
        )
        reader: ExportReader | None = None
        logger.debug(
            "relay of image %s from %s to %s started (%d bytes)",
            fingerprint,
            job.source.server,
            target,
            found.size,
        )
        with importer.interruptions(
            complete=lambda: self.state.handed,
            describe=lambda: (
                f"the relay of image {fingerprint} from {job.source.server} to {target} was "
                f"interrupted after {reader.received if reader else 0} of {found.size} bytes"
            ),
        ):
            async with connection.stream(call) as response:
                if response.headers.get("x-incus-type", "").lower() == "oci":
                    raise failure(
                        "the source says it is an OCI image, whose bytes cannot be checked "
                        "against its fingerprint, and a relay passes on only what it verified "
                        "(mode='pull' lets the target fetch it)"
                    )
                reader = ExportReader(
                    fingerprint,
                    content_type=response.headers.get("content-type"),
                    content_disposition=response.headers.get("content-disposition"),
                    failure=failure,
                    total=found.size,
                    progress=options.progress,
                )
                try:
                    framing = RelayFraming(found, split=reader.multipart, failure=failure)
                    headers = dict(framing.headers)
                    if options.public:
                        headers["X-Incus-public"] = "true"
                    if options.profiles:
                        headers["X-Incus-profiles"] = list_header("profile", options.profiles)
                    body = relay_body(connection, call, response, reader, framing, self.state)
                    started = await importer.send_body(headers, body)
                finally:
                    reader.close()
        return started

    async def finish(self, started: Operation, budget: WaitBudget) -> Operation:
        job = self.job
        return await job.importer.wait(started, fingerprint=job.found.fingerprint, budget=budget)


class _Push(_Mode):
    """The source uploads to this server's HTTPS address."""

    name = "push"
    # The source's push operation says nothing of what this server stored: the copy is
    # checked on this server instead (_check_copy).
    verifies = False

    def __init__(self, job: _Job) -> None:
        super().__init__(job)
        #: The id of this server's push token while the source has not used it.
        self.token: str | None = None

    def check(self) -> None:
        job = self.job
        if job.found.type == "virtual-machine":
            # incusd (6.0.4, and upstream still) pushes the disk as a container's rootfs
            # part, so the copy would arrive as a container image. The image's type, not
            # the caller's arguments, rules the push out: a conflict with its state.
            raise ConflictError(
                f"Could not {job.action} on {job.target.server}: the image is a "
                "virtual-machine image, which incusd pushes as a container image; use "
                "mode='pull' or 'relay'",
                server=job.source.server,
                fingerprint=job.found.fingerprint,
            )

    async def move(self) -> Operation:
        job = self.job
        found, source, options = job.found, job.source, job.options
        with _nothing_copied():
            if not (await source.server_info()).trusted:
                raise ForbiddenError(
                    f"Could not {job.action} on {job.target.server}: {source.server} does not "
                    "trust this client, and only a source that does can be asked to push",
                    server=source.server,
                    fingerprint=found.fingerprint,
                )
        connection = job.target.connection
        token_call = api.new_image(
            action=f"prepare to receive image '{found.fingerprint}' from {source.server} (push "
            "mode)",
            json=ImagesPost(
                source=ImagesPostSource(mode="push", fingerprint=found.fingerprint),
                public=options.public,
                # Without them the pushed image would have none.
                properties=dict(found.properties) or None,
            ),
        )
        token = await job.importer.start(token_call)
        self.token = token.id
        job.progress.start()
        try:
            secret = token_secret(token_call, job.target.server, token)
            export_call = api.push_image(
                found.fingerprint,
                ImageExportPost(
                    target=connection.https_url or "",
                    secret=secret,
                    certificate=connection.pinned_certificate,
                    project=connection.project,
                    profiles=options.profiles or None,
                ),
                action=self._pushing,
            )
            envelope = await source.connection.request(export_call)
            return structure(export_call, source.server, envelope.metadata, Operation)
        except BaseException:
            await self._cancel_token()
            raise

    async def finish(self, started: Operation, budget: WaitBudget) -> Operation:
        job = self.job
        try:
            finished = await job.source.operations._wait(
                started.id, budget, action=self._pushing, watch=job.watch()
            )
        except IncusTimeoutError:
            raise  # the push goes on, and still needs the token
        except BaseException:
            await self._cancel_token()
            raise
        self.token = None  # the source used it
        return finished

    @property
    def _pushing(self) -> str:
        return f"push image '{self.job.found.fingerprint}' to {self.job.target.server} (push mode)"

    async def _cancel_token(self) -> None:
        # The token never ends by itself: one the source did not use must not stay open.
        token, self.token = self.token, None
        if token is not None:
            await self.job.target.cancel(token)


_MODES: dict[CopyMode, type[_Mode]] = {"pull": _Pull, "push": _Push, "relay": _Relay}


# --------------------------------------------------------------------------------------------
# Helpers.


async def resolve(
    source: AsyncImageCalls, image: object, image_type: str | None
) -> tuple[Image, str | None]:
    """The source's image named by an alias (first, as the incus CLI does) or by a
    fingerprint prefix; and the alias when it was named by one."""
    name = alias_name(image, argument="image")
    try:
        alias = await source.get_alias(name)
    except NotFoundError:
        alias = None
    if alias is not None and (image_type is None or alias.type in ("", image_type)):
        found, _ = await source.get(alias.target)
        by_alias: str | None = name
    else:
        try:
            prefix = fingerprint_prefix(name, argument="image")
        except InvalidInputError:
            raise await _not_on_source(source, name, image_type) from None
        try:
            found, _ = await source.get(prefix)
        except NotFoundError:
            raise await _not_on_source(source, name, image_type) from None
        by_alias = None
    if image_type is not None and found.type != image_type:
        raise await _not_on_source(source, name, image_type)
    return found, by_alias


def check_architecture(found: Image, image: object, server: str, architecture: str | None) -> None:
    """A server alias or fingerprint names one image: of the architecture asked, or none."""
    if architecture is None or found.architecture == ARCHITECTURES[architecture]:
        return
    raise NotFoundError(
        f"Could not find the {ARCHITECTURES[architecture]} image {image!r} on {server}: it "
        f"names image {found.fingerprint}, a {found.architecture or 'unknown'} image (an "
        "alias of an Incus server names one image, of one architecture)",
        server=server,
        fingerprint=found.fingerprint,
    )


async def _not_on_source(
    source: AsyncImageCalls, name: str, image_type: str | None
) -> NotFoundError:
    kind = f"{image_type} image" if image_type else "image"
    hint = ""
    if not (await source.server_info()).trusted:
        hint = " (the source does not trust this client, so it shows only public images)"
    return NotFoundError(
        f"Could not find {kind} {name!r} on {source.server}: no alias or fingerprint "
        f"names one{hint}",
        server=source.server,
    )


def _wanted_aliases(options: CopyOptions, found: Image) -> list[AliasEntry]:
    """The caller's aliases, then (copy_aliases) the source's: those whose names pass the
    rule the caller's pass, at most MAX_COPIED_ALIASES of them."""
    wanted = [AliasEntry(name=name) for name in options.aliases]
    if not options.copy_aliases:
        return wanted
    named = set(options.aliases)
    refused: list[str] = []
    copied: list[AliasEntry] = []
    for alias in found.aliases:
        try:
            name = new_alias_name(alias.name)
        except InvalidInputError:
            refused.append(alias.name)
            continue
        if name not in named:
            named.add(name)
            copied.append(AliasEntry(name=name, description=alias.description))
    if refused:
        shown = ", ".join(repr(name)[:80] for name in refused[:10])
        logger.warning(
            "incus_images: copy of image %s: %d alias name(s) of the source are not valid "
            "alias names and are not copied: %s%s",
            found.fingerprint,
            len(refused),
            shown,
            ", ..." if len(refused) > 10 else "",
        )
    if len(copied) > MAX_COPIED_ALIASES:
        logger.warning(
            "incus_images: copy of image %s: the source names it by %d aliases; only the "
            "first %d are copied",
            found.fingerprint,
            len(copied),
            MAX_COPIED_ALIASES,
        )
        del copied[MAX_COPIED_ALIASES:]
    return wanted + copied


def _not_in_catalogue(failure: OperationError) -> bool:
    """Whether the daemon's operation failed because the image server has nothing under the
    name asked for (incusd's simplestreams client: "Alias '...' doesn't exist", "The
    requested image couldn't be found")."""
    said = str(failure).lower()
    return "doesn't exist" in said or "couldn't be found" in said


def _reporting(progress: Progress) -> Callable[[Operation], None]:
    """An operation watcher that reports a daemon's download progress."""

    def watch(operation: Operation) -> None:
        done = daemon_progress(operation.metadata, progress.total)
        if done is not None and done > progress.done:
            progress.advance(done - progress.done)

    return watch


@contextlib.contextmanager
def _naming(described: str, *names: str) -> Iterator[None]:
    """Make every SDK error of a copy name the source, the target, the image and the mode:
    one raised by a step that knows only part of it gets the rest added."""
    try:
        yield
    except IncusError as exc:
        if all(name in str(exc) for name in names):
            raise
        raise exc._amended(f"{exc} (while copying {described})") from exc


@contextlib.contextmanager
def _nothing_copied() -> Iterator[None]:
    """Record on an SDK error raised inside that nothing was copied (what comes before the
    copy starts: the source's image looked up, what the mode needs checked)."""
    try:
        yield
    except IncusError as exc:
        note_left_behind(exc, LeftBehind.NOTHING, "nothing was copied")
        raise
