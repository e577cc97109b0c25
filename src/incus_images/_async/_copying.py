"""Copying an image from another server onto this one: pull, push and relay, and public
image servers.

    pull    this server downloads from the source's HTTPS address (no byte passes the client)
    push    the source uploads to this server's HTTPS address
    relay   this client streams the source's export into this server's upload

Every mode ends on the import path (``_importing``): the fingerprint stored must be the
source's, then settings and aliases are applied, and a copy that fails after the image arrived
is deleted again. An image this server already had is returned as it is (with the aliases
asked for) and never deleted.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal

import attrs

from .._errors import (
    IncusError,
    InvalidInputError,
    NotFoundError,
    TransferError,
)
from .._logging import logger
from .._models import Image, Operation
from .._protocol import IMAGES, Call, image_path, structure, token_secret
from .._requests import (
    AliasEntry,
    FollowUp,
    ImageExportPost,
    ImagesPost,
    ImagesPostSource,
)
from .._simplestreams import SimpleStreams
from .._transfer.export import ExportReader
from .._transfer.progress import Progress, ProgressCallback, daemon_progress
from .._transfer.relay import RelayFraming
from .._transfer.upload import list_header
from .._validate import (
    IMAGE_TYPES,
    alias_name,
    boolean,
    callback,
    choice,
    fingerprint_prefix,
    names_list,
    new_alias_name,
    optional_boolean,
    profile_name,
)
from ._calls import AsyncImageCalls
from ._importing import AsyncImporter
from ._transfers import RelayState, relay_body

if TYPE_CHECKING:
    from .client import AsyncClient

__all__ = ["AsyncCopier", "CopyOptions", "copy_options"]

CopyMode = Literal["pull", "push", "relay"]
MODES: tuple[CopyMode, ...] = ("pull", "push", "relay")


@attrs.frozen(kw_only=True)
class CopyOptions:
    """copy()'s arguments, checked before anything is sent."""

    mode: CopyMode | None
    aliases: list[str]
    copy_aliases: bool
    public: bool | None
    auto_update: bool | None
    profiles: list[str] | None
    image_type: str | None
    progress: ProgressCallback | None
    wait: bool


def copy_options(
    *,
    mode: object,
    aliases: object,
    copy_aliases: object,
    public: object,
    auto_update: object,
    profiles: object,
    image_type: object,
    progress: object,
    wait: object,
) -> CopyOptions:
    callback(progress, "progress")
    return CopyOptions(
        mode=None if mode is None else choice(mode, "mode", MODES),  # type: ignore[arg-type]
        aliases=names_list(aliases, "aliases", new_alias_name),
        copy_aliases=boolean(copy_aliases, "copy_aliases"),
        public=optional_boolean(public, "public"),
        auto_update=optional_boolean(auto_update, "auto_update"),
        profiles=None if profiles is None else names_list(profiles, "profiles", profile_name),
        image_type=None if image_type is None else choice(image_type, "type", IMAGE_TYPES),
        progress=progress,  # type: ignore[arg-type]  # checked above
        wait=boolean(wait, "wait"),
    )


class AsyncCopier:
    """Copies onto the server of ``calls``."""

    def __init__(self, calls: AsyncImageCalls) -> None:
        self._calls = calls

    @property
    def _target(self) -> str:
        return self._calls.server

    # ----------------------------------------------------------------------------------------
    # From another Incus server.

    async def copy(
        self, image: str, source: AsyncClient, options: CopyOptions
    ) -> Image | Operation:
        mode = self._mode(options, source._connection.https_url)
        described = f"image {image!r} from {source.server} to {self._target} ({mode} mode)"
        logger.debug("copy of %s started", described)
        started = time.monotonic()
        with _naming(described, source.server, self._target, f"{mode} mode"):
            copied = await self._copy(image, source, mode, options, described)
        _log_copied(described, copied, started)
        return copied

    async def _copy(
        self,
        image: str,
        source: AsyncClient,
        mode: CopyMode,
        options: CopyOptions,
        described: str,
    ) -> Image | Operation:
        source_calls = source.images._calls
        with _amended(f"while copying {described}; nothing was copied"):
            found, by_alias = await self._resolve(source_calls, image, options.image_type)
        fingerprint = found.fingerprint
        importer = AsyncImporter(
            self._calls,
            f"copy image '{fingerprint}' from {source.server} to {self._target} ({mode} mode)",
        )
        if mode == "push" and found.type == "virtual-machine":
            # incusd (6.0.4, and upstream still) pushes the disk as a container's rootfs part,
            # so the copy would arrive as a container image.
            raise InvalidInputError(
                f"Could not {importer.action} on {self._target}: incusd pushes a "
                "virtual-machine image as a container image; use mode='pull' or 'relay' "
                "(nothing was copied)"
            )
        aliases = _wanted_aliases(options, found)
        if fingerprint in await importer.survey():
            # Not an error: the target has the image; only the aliases asked for are added.
            await importer.preflight([alias.name for alias in aliases], [])
            await importer.follow_up(fingerprint, FollowUp(aliases=aliases))
            return await importer.image(fingerprint)
        await importer.preflight([alias.name for alias in aliases], options.profiles or [])
        follow_up = FollowUp(
            # A relayed or pushed image carries its metadata.yaml's properties; the copy gets
            # the source's (pull copies them itself).
            properties=dict(found.properties) if mode != "pull" else None,
            # A request cannot say "no profiles": an empty list means the default profile.
            profiles=[] if options.profiles == [] else None,
            aliases=aliases,
        )
        # Bytes in relay mode (counted by the export's reader); the daemon's own reports in
        # pull and push mode, read about once a second only when someone listens.
        progress = Progress(options.progress if mode != "relay" else None, found.size)
        watch = _reporting(progress) if options.progress is not None else None
        if mode == "pull":
            started, token = await self._pull(source, found, by_alias, importer, options)
            progress.start()
            if not options.wait and not follow_up.needed:
                return started
            with importer.accepted(lambda: f"image {fingerprint}"):
                finished = await self._finish_pull(
                    source_calls, started, token, importer, watch, fingerprint
                )
        elif mode == "relay":
            started = await self._relay(source, found, importer, options, progress)
            if not options.wait and not follow_up.needed:
                return started
            with importer.accepted(lambda: f"image {fingerprint}"):
                finished = await importer.wait(started, fingerprint=fingerprint)
        else:
            progress.start()
            finished = await self._push(source, found, importer, options, watch)
        with importer.accepted(lambda: f"image {fingerprint}"):
            if mode != "push":
                await importer.verified(finished, fingerprint, expected_is="the source's image is")
            await self._check_copy(found, importer)
            await importer.follow_up(fingerprint, follow_up)
        progress.advance(found.size - progress.done)
        progress.finish()
        return await importer.image(fingerprint) if options.wait else finished

    async def _check_copy(self, found: Image, importer: AsyncImporter) -> None:
        """The copy is there, and of the source's type (a server that changed it is not
        trusted with the rest)."""
        copy = await self._calls.find(found.fingerprint)
        if copy is not None and copy.type == found.type:
            return
        if copy is None:
            detail, outcome = "the image is not there", "nothing was copied"
        else:
            detail = f"it stored a {copy.type} image, not a {found.type} one"
            outcome = await importer.discard(found.fingerprint)
        raise TransferError(
            f"Could not {importer.action} on {self._target}: the copy was reported done, but "
            f"{detail}; {outcome}",
            server=self._target,
            fingerprint=found.fingerprint,
        )

    def _mode(self, options: CopyOptions, source_url: str | None) -> CopyMode:
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
        if options.auto_update and mode != "pull":
            raise InvalidInputError(
                f"auto_update=True needs mode='pull': a {mode} copy does not record where the "
                "image came from, so the server could never refresh it"
            )
        return mode

    async def _resolve(
        self, source: AsyncImageCalls, image: object, image_type: str | None
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
                raise await self._not_on_source(source, name, image_type) from None
            try:
                found, _ = await source.get(prefix)
            except NotFoundError:
                raise await self._not_on_source(source, name, image_type) from None
            by_alias = None
        if image_type is not None and found.type != image_type:
            raise await self._not_on_source(source, name, image_type)
        return found, by_alias

    async def _not_on_source(
        self, source: AsyncImageCalls, name: str, image_type: str | None
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

    # ----------------------------------------------------------------------------------------
    # Pull: the target downloads.

    async def _pull(
        self,
        source: AsyncClient,
        found: Image,
        by_alias: str | None,
        importer: AsyncImporter,
        options: CopyOptions,
    ) -> tuple[Operation, str | None]:
        """Start the target's download; the operation, and the source's secret token."""
        source_calls = source.images._calls
        secret = token = None
        if not found.public:
            if not (await source_calls.server_info()).trusted:
                raise InvalidInputError(
                    f"Could not {importer.action} on {self._target}: the image is private and "
                    "the source does not trust this client, so it cannot issue the secret a "
                    "private copy needs; nothing was copied"
                )
            with _amended(f"while preparing to {importer.action}; nothing was copied"):
                secret, token = await source_calls.create_secret(found.fingerprint)
        # By alias, the server records the alias, so that refreshes follow it to new images;
        # a private image is fetched with its secret, which names a fingerprint.
        use_alias = by_alias is not None and options.auto_update and found.public
        request = ImagesPost(
            source=ImagesPostSource(
                type="image",
                mode="pull",
                server=source._connection.https_url,
                protocol="incus",
                alias=by_alias if use_alias else None,
                fingerprint=None if use_alias else found.fingerprint,
                certificate=source._connection.pinned_certificate,
                secret=secret,
                image_type=found.type or None,
                project=source.project,
            ),
            public=options.public,
            auto_update=options.auto_update,
            profiles=options.profiles or None,
            filename=found.filename or None,
        )
        try:
            started = await importer.start(
                Call(method="POST", path=IMAGES, action=importer.action, json=request)
            )
        except BaseException as exc:
            if token is not None:
                await _cancel_secret(source_calls, token, exc)
            raise
        return started, token

    async def _finish_pull(
        self,
        source_calls: AsyncImageCalls,
        started: Operation,
        token: str | None,
        importer: AsyncImporter,
        watch: Callable[[Operation], None] | None,
        fingerprint: str,
    ) -> Operation:
        try:
            finished = await importer.wait(started, fingerprint=fingerprint, watch=watch)
        except BaseException as exc:
            # A secret the target never used would stay valid on the source for good.
            if token is not None:
                await _cancel_secret(source_calls, token, exc)
            raise
        if token is not None:
            # A pull can succeed without the secret: incusd copies an image whose files it
            # already has (in another project) instead of downloading it. Used, it is gone.
            why = await source_calls.cancel(token)
            if why is not None:
                logger.warning(
                    "incus_images: the download secret %s issued by %s for image %s could "
                    "not be cancelled and is still valid: %s",
                    token,
                    source_calls.server,
                    fingerprint,
                    why,
                )
        return finished

    # ----------------------------------------------------------------------------------------
    # Relay: this client streams the export into the upload.

    async def _relay(
        self,
        source: AsyncClient,
        found: Image,
        importer: AsyncImporter,
        options: CopyOptions,
        progress: Progress,
    ) -> Operation:
        fingerprint = found.fingerprint
        connection = source._connection

        def failure(detail: str, cls: type[TransferError] = TransferError) -> TransferError:
            return cls(
                f"Could not {importer.action} on {self._target}: {detail}; the upload was "
                "stopped, so nothing was stored",
                server=self._target,
                fingerprint=fingerprint,
            )

        call = Call(
            method="GET",
            path=image_path(fingerprint, "export"),
            action=f"export image '{fingerprint}' to relay it to {self._target}",
        )
        state = RelayState()
        reader: ExportReader | None = None
        logger.debug(
            "relay of image %s from %s to %s started (%d bytes)",
            fingerprint,
            source.server,
            self._target,
            found.size,
        )
        with importer.interruptions(
            complete=lambda: state.handed,
            describe=lambda: (
                f"the relay of image {fingerprint} from {source.server} to {self._target} was "
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
                    body = relay_body(connection, call, response, reader, framing, state)
                    return await importer.send_body(headers, body)
                finally:
                    reader.close()

    # ----------------------------------------------------------------------------------------
    # Push: the source uploads to the target.

    async def _push(
        self,
        source: AsyncClient,
        found: Image,
        importer: AsyncImporter,
        options: CopyOptions,
        watch: Callable[[Operation], None] | None,
    ) -> Operation:
        source_calls = source.images._calls
        if not (await source_calls.server_info()).trusted:
            raise InvalidInputError(
                f"Could not {importer.action} on {self._target}: only a source that trusts "
                "this client can be asked to push; nothing was copied"
            )
        connection = self._calls.connection
        token_call = Call(
            method="POST",
            path=IMAGES,
            action=f"prepare to receive image '{found.fingerprint}' from {source.server} (push "
            "mode)",
            json=ImagesPost(
                source=ImagesPostSource(mode="push", fingerprint=found.fingerprint),
                public=options.public,
                # Without them the pushed image would have none.
                properties=dict(found.properties) or None,
            ),
        )
        token = await importer.start(token_call)
        try:
            secret = token_secret(token_call, self._target, token)
            pushing_action = f"push image '{found.fingerprint}' to {self._target} (push mode)"
            export_call = Call(
                method="POST",
                path=image_path(found.fingerprint, "export"),
                action=pushing_action,
                json=ImageExportPost(
                    target=connection.https_url or "",
                    secret=secret,
                    certificate=connection.pinned_certificate,
                    project=connection.project,
                    profiles=options.profiles or None,
                ),
            )
            envelope = await source_calls.connection.request(export_call)
            pushing = structure(export_call, source.server, envelope.metadata, Operation)
            return await source_calls.operations._wait(
                pushing.id, None, action=pushing_action, watch=watch
            )
        except BaseException:
            # The token never ends by itself: one the source did not use must not stay open.
            await self._calls.cancel(token.id)
            raise

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
        _log_copied(described, copied, started)
        return copied

    async def _from_simplestreams(
        self, name: str, source: SimpleStreams, options: CopyOptions, described: str
    ) -> Image | Operation:
        importer = AsyncImporter(self._calls, f"copy {described}")
        aliases = [AliasEntry(name=alias) for alias in options.aliases]
        await importer.preflight([alias.name for alias in aliases], options.profiles or [])
        follow_up = FollowUp(profiles=[] if options.profiles == [] else None, aliases=aliases)
        if options.wait or follow_up.needed:
            await importer.survey()
        request = ImagesPost(
            source=ImagesPostSource(
                type="image",
                mode="pull",
                server=source.url,
                protocol="simplestreams",
                # The daemon takes it as an alias first, then as a fingerprint; recorded as
                # the source, so that refreshes follow the alias.
                alias=name,
                certificate=source.certificate,
                image_type=options.image_type,
            ),
            public=options.public,
            auto_update=options.auto_update,
            profiles=options.profiles or None,
        )
        # The image's size is known only once it is here: the daemon's reports are amounts.
        progress = Progress(options.progress, None)
        progress.start()
        started = await importer.start(
            Call(method="POST", path=IMAGES, action=importer.action, json=request)
        )
        if not options.wait and not follow_up.needed:
            return started
        watch = _reporting(progress) if options.progress is not None else None
        finished = await importer.wait(started, watch=watch)
        fingerprint = await importer.verified(finished, None)
        await importer.follow_up(fingerprint, follow_up)
        copied = await importer.image(fingerprint)
        progress.total = copied.size
        progress.advance(copied.size - progress.done)
        progress.finish()
        return copied if options.wait else finished


# --------------------------------------------------------------------------------------------
# Helpers.


#: The most aliases copy_aliases=True brings from a source (each costs two requests; real
#: images carry a handful). More are left out, with a WARNING.
MAX_COPIED_ALIASES = 1000


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


async def _cancel_secret(source: AsyncImageCalls, token: str, failure: BaseException) -> None:
    """Cancel the download secret of a pull that failed; when the source cannot be asked
    (it became unreachable), the failure says that the secret is still valid."""
    why = await source.cancel(token)
    if why is not None:
        failure.add_note(
            f"incus_images: the download secret issued by {source.server} (token operation "
            f"{token}) could not be cancelled and is still valid until it is used or the "
            f"source daemon restarts: {why}"
        )


def _log_copied(described: str, copied: Image | Operation, started: float) -> None:
    if isinstance(copied, Operation):
        # wait=False: the target may still be working on it.
        logger.debug("copy of %s: operation %s is %s", described, copied.id, copied.status)
    else:
        logger.info("copied %s in %.1f s", described, time.monotonic() - started)


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
def _amended(context: str) -> Iterator[None]:
    """Add what was being done to an SDK error raised inside (the source's own errors name
    only the source)."""
    try:
        yield
    except IncusError as exc:
        raise exc._amended(f"{exc} ({context})") from exc
