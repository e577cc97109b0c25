"""``ensure()``: the image asked for here once, its aliases pointing at it.

What counts as "already here" (the same fingerprint, or an image recorded as coming from that
source and alias, of the type and architecture asked), the copy when it is not (through the
copier, without aliases), and the aliases pointed at the image afterwards: created, or moved
with the alias's ETag, never deleted and made again.
"""

from __future__ import annotations

from datetime import UTC, datetime

import attrs

from .._architectures import ARCHITECTURES, architecture_spellings
from .._errors import (
    ConflictError,
    IncusError,
    LeftBehind,
    NotFoundError,
    OperationError,
    PreconditionFailedError,
    UnexpectedResponseError,
    note_left_behind,
)
from .._logging import logger
from .._models import Image
from .._simplestreams import SimpleStreams
from .._validate import alias_name
from ._calls import AsyncImageCalls
from ._copying import AsyncCopier, CopyOptions, check_architecture, resolve

__all__ = ["AsyncEnsurer"]

#: Older than any image's upload date: what an image without one sorts as.
_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


class AsyncEnsurer:
    """Ensures images on the server of ``calls``, copying through ``copier``."""

    def __init__(self, calls: AsyncImageCalls, copier: AsyncCopier) -> None:
        self._calls = calls
        self._copier = copier

    @property
    def _target(self) -> str:
        return self._calls.server

    async def ensure(
        self, image: object, source: AsyncImageCalls | SimpleStreams, options: CopyOptions
    ) -> Image:
        """The image this server holds that is the one asked for, copied first when it
        holds none; then the aliases asked for point at it. ``options`` carries no aliases
        for the copy itself: they are pointed here (see _point_aliases)."""
        name = alias_name(image, argument="image")
        wanted = ARCHITECTURES[options.architecture] if options.architecture else None
        # Without one asked for, incusd resolves an alias to this server's own first.
        native = await self._copier.native_architecture() if wanted is None else None
        held = await self._held(name, source, options.image_type, wanted, native)
        if held is None:
            copying = attrs.evolve(options, aliases=[], reuse=False, wait=True)
            try:
                if isinstance(source, SimpleStreams):
                    copied = await self._copier.from_simplestreams(name, source, copying)
                else:
                    copied = await self._copier.copy(name, source, copying)
            except (ConflictError, OperationError) as exc:
                # Another client ensuring the same image stored it first: incusd then
                # refuses the second upload of it (a relay), or fails the second pull.
                held = await self._held(name, source, options.image_type, wanted, native)
                if held is None:
                    raise
                logger.debug("ensure of %r: stored meanwhile by another client (%s)", name, exc)
            else:
                assert isinstance(copied, Image)  # it waited
                held = copied
        await self._point_aliases(held.fingerprint, options.aliases)
        image_now, _ = await self._calls.get(held.fingerprint)
        return image_now

    async def _held(
        self,
        name: str,
        source: AsyncImageCalls | SimpleStreams,
        image_type: str | None,
        wanted: str | None,
        native: str | None,
    ) -> Image | None:
        """The image here that is the one asked for: the same fingerprint (a full one, or
        what the source's alias or prefix names); or an image recorded as coming from that
        source under that alias (its update source), of the type and architecture asked
        (``wanted``, an Incus name; None: the one incusd resolved the bare alias to, this
        server's own architecture, ``native``, preferred)."""

        def fits(image: Image) -> bool:
            return (image_type is None or image.type == image_type) and (
                wanted is None or image.architecture == wanted
            )

        if len(name) == 64 and all(char in "0123456789abcdefABCDEF" for char in name):
            found = await self._calls.find(name.lower())
            if found is not None:
                if not fits(found):
                    raise _not_this_one(found, name, self._target, image_type, wanted)
                return found
        server: str | None
        if isinstance(source, SimpleStreams):
            server, protocol = source.url, "simplestreams"
        else:
            server, protocol = source.connection.https_url, "incus"
        if server is not None:
            # Recorded as asked: the bare alias (incusd's choice, this server's own
            # architecture first), or ALIAS/ARCH in the spelling that resolved.
            architecture = wanted or native
            recorded = {name}
            if architecture in ARCHITECTURES:
                recorded.update(
                    f"{name}/{spelling}" for spelling in architecture_spellings(architecture)
                )
            matches = [
                image
                for image in await self._calls.images()
                if image.update_source is not None
                and image.update_source.protocol == protocol
                and image.update_source.server.rstrip("/") == server.rstrip("/")
                and image.update_source.alias in recorded
                and fits(image)
                and (image.update_source.alias == name or image.architecture == architecture)
            ]
            if matches:
                # This server's own architecture first, a container (incusd's preference),
                # and of several versions the newest.
                return max(
                    matches,
                    key=lambda image: (
                        image.architecture == architecture,
                        image.type == "container",
                        image.uploaded_at or _EPOCH,
                    ),
                )
        if isinstance(source, SimpleStreams):
            return None  # only the image server itself resolves its aliases
        found, _ = await resolve(source, name, image_type)
        check_architecture(found, name, source.server, wanted)
        return await self._calls.find(found.fingerprint)

    async def _point_aliases(self, fingerprint: str, names: list[str]) -> None:
        """Make each alias point at the image: a missing one is created, one pointing at
        another image is moved (PATCH with its ETag, never deleted and made again). A change
        another client makes at the same time is not overwritten: unless it points the alias
        at this same image (a concurrent ensure), ConflictError or PreconditionFailedError,
        and the image stays."""
        from .._requests import ImageAliasesPost

        what = f"image '{fingerprint}'"
        for name in names:
            found = await self._calls.find_alias(name)
            try:
                if found is None:
                    await self._calls.create_alias(
                        ImageAliasesPost(name=name, target=fingerprint),
                        f"create alias {name!r} for {what}",
                    )
                    continue
                alias, etag = found
                if alias.target == fingerprint:
                    continue
                if not etag:
                    raise UnexpectedResponseError(
                        f"Could not move alias {name!r} to {what} on {self._target}: the server "
                        "sent no ETag with it, so it cannot be moved safely",
                        server=self._target,
                    )
                await self._calls.move_alias(
                    name,
                    fingerprint,
                    etag,
                    f"move alias {name!r} from image '{alias.target}' to {what}",
                )
            except (ConflictError, PreconditionFailedError) as exc:
                again = await self._calls.find_alias(name)
                if again is not None and again[0].target == fingerprint:
                    continue  # another client pointed it here too
                note_left_behind(
                    exc,
                    LeftBehind.STORED,
                    f"image {fingerprint} is here and stays; alias {name!r} changed at the same "
                    "time and was left as the other change made it",
                )
                raise
            except IncusError as exc:
                note_left_behind(exc, LeftBehind.STORED, f"image {fingerprint} is here and stays")
                raise


def _not_this_one(
    found: Image, name: str, server: str, image_type: str | None, architecture: str | None
) -> NotFoundError:
    """A fingerprint names one image; this server holds it, but not of the kind asked for."""
    kind = " ".join(part for part in (architecture, image_type) if part) or "asked for"
    return NotFoundError(
        f"Could not ensure image {name!r} on {server}: it is a {found.architecture} "
        f"{found.type} image, not the {kind} one",
        server=server,
        fingerprint=found.fingerprint,
    )
