"""Single requests about images and aliases: the building blocks the public calls, imports and
copies are made of.

Each takes checked input (``_validate``), sends the request ``_api`` builds for it (whose
``action`` names the object) and structures the answer. Nothing here decides policy (retries,
rollbacks): the rooms above do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import _api as api
from .._errors import IncusError, LeftBehind, NotFoundError, UnexpectedResponseError
from .._models import Image, ImageAlias, Operation, ServerInfo
from .._protocol import (
    fingerprints_from_urls,
    structure,
    structure_list,
    token_secret,
    unexpected,
)
from ._connection import AsyncConnection
from .operations import AsyncOperationsAPI

if TYPE_CHECKING:
    from .._requests import ImageAliasesPost, ImagePatch, ImagePut
    from .._waiting import WaitBudget


class AsyncImageCalls:
    """One request each, on the client's server (for a cluster, the member in use)."""

    def __init__(self, connection: AsyncConnection, operations: AsyncOperationsAPI) -> None:
        self.connection = connection
        self.operations = operations

    @property
    def server(self) -> str:
        return self.connection.server

    async def server_info(self) -> ServerInfo:
        call = api.server_info()
        envelope = await self.connection.request(call)
        return structure(call, self.server, envelope.metadata, ServerInfo)

    async def fingerprints(self) -> list[str]:
        """Every image's full fingerprint, sorted."""
        call = api.image_fingerprints()
        envelope = await self.connection.request(call)
        return fingerprints_from_urls(call, self.server, envelope.metadata)

    async def images(self) -> list[Image]:
        """Every image (of the client's project)."""
        call = api.list_images(recursion=1, filter=None, all_projects=False)
        envelope = await self.connection.request(call)
        return structure_list(call, self.server, envelope.metadata, Image)

    async def get(
        self, prefix: str, *, secret: str | None = None, explain_missing: bool = True
    ) -> tuple[Image, str | None]:
        """The image with this (checked) fingerprint prefix, and its ETag.

        A missing image over HTTPS says so when the server does not trust this client
        (``explain_missing``; it costs a request)."""
        call = api.get_image(prefix, secret=secret)
        try:
            envelope = await self.connection.request(call)
        except NotFoundError as exc:
            if not explain_missing:
                raise
            raise await self._why_not_found(exc) from None
        image = structure(call, self.server, envelope.metadata, Image)
        if not image.fingerprint.startswith(prefix):
            # Its fingerprint names files and later requests: it must be the image asked for.
            raise unexpected(call, self.server, f"it describes another image, {image.fingerprint}")
        return image, envelope.etag

    async def _why_not_found(self, exc: NotFoundError) -> NotFoundError:
        """Incus answers a private image to an untrusted client as missing: say so."""
        if self.connection.https_url is None:
            return exc  # the unix socket is always trusted
        try:
            trusted = (await self.server_info()).trusted
        except IncusError:
            return exc
        if trusted:
            return exc
        return exc._amended(
            f"{exc} The server does not trust this client, so it shows only public images: a "
            "private image looks missing (use a trusted client certificate, or a secret)."
        )

    async def find(self, fingerprint: str) -> Image | None:
        """The image with this full fingerprint, or None when the server has none."""
        try:
            image, _ = await self.get(fingerprint, explain_missing=False)
        except NotFoundError:
            return None
        return image

    async def write(
        self, fingerprint: str, body: ImagePatch | ImagePut, action: str, etag: str | None
    ) -> None:
        """PATCH (changes what it carries) or PUT (replaces every writable field) the image;
        with the ETag it was read with, a concurrent change fails it (412)."""
        from .._requests import ImagePatch  # request bodies load with the first write

        replace = not isinstance(body, ImagePatch)
        await self.connection.request(
            api.write_image(fingerprint, body, replace=replace, action=action, etag=etag)
        )

    async def delete(
        self, prefix: str, *, wait: bool, budget: WaitBudget | None = None
    ) -> Operation:
        call = api.delete_image(prefix)
        envelope = await self.connection.request(call)
        operation = structure(call, self.server, envelope.metadata, Operation)
        if wait:
            return await self.operations._wait_noting(
                operation, budget, action=call.action, left="the image may still be deleted"
            )
        return operation

    async def discard(self, fingerprint: object) -> tuple[LeftBehind, str]:
        """Delete an image this client just brought in but must not keep; what is left behind,
        and the sentence that says so (see ``note_left_behind``)."""
        if not isinstance(fingerprint, str) or not fingerprint:
            return (
                LeftBehind.MAY_BE_STORED,
                "no image could be identified to delete, so one may be stored: look for it",
            )
        try:
            await self.delete(fingerprint, wait=True)
        except IncusError as exc:
            return (
                LeftBehind.STILL_THERE,
                f"image {fingerprint} had to be deleted again, but deleting it failed too "
                f"({exc}): it is still on the server",
            )
        return LeftBehind.DELETED, f"image {fingerprint} was deleted again"

    async def create_secret(self, fingerprint: str) -> tuple[str, str]:
        """A one-time download secret for the image, and the id of the token operation that
        holds it (the token never ends by itself: cancel it when it goes unused)."""
        call = api.image_secret(fingerprint)
        try:
            envelope = await self.connection.request(call)
            token = structure(call, self.server, envelope.metadata, Operation)
        except IncusError as exc:
            if exc.left_behind is LeftBehind.MAY_BE_APPLIED or isinstance(
                exc, UnexpectedResponseError
            ):
                # The request may have been carried out, and its answer (the token's id) is
                # lost: nothing can cancel that token.
                exc.add_note(
                    f"incus_images: a download secret for image {fingerprint} may have been "
                    f"issued by {self.server}; its id is unknown, so it could not be "
                    "cancelled: if it was issued, it is still valid until it is used or the "
                    "daemon restarts"
                )
            raise
        try:
            return token_secret(call, self.server, token), token.id
        except IncusError:
            await self.cancel(token.id)  # a token nobody can use must not stay open
            raise

    async def cancel(self, operation_id: str) -> IncusError | None:
        """Cancel a token that went unused; a token already used or gone is left as it is.
        Return why it could not be cancelled (it is then still valid), else None."""
        try:
            await self.connection.request(api.cancel_operation(operation_id))
        except NotFoundError:
            return None  # used, or gone: nothing is left to cancel
        except IncusError as exc:
            return exc
        return None

    async def get_alias(self, name: str) -> ImageAlias:
        call = api.get_alias(name)
        envelope = await self.connection.request(call)
        return structure(call, self.server, envelope.metadata, ImageAlias)

    async def alias_is_free(self, name: str) -> bool:
        return await self.find_alias(name) is None

    async def find_alias(self, name: str) -> tuple[ImageAlias, str | None] | None:
        """The alias and its ETag, or None when no alias has this name."""
        call = api.get_alias(name)
        try:
            envelope = await self.connection.request(call)
        except NotFoundError:
            return None
        return structure(call, self.server, envelope.metadata, ImageAlias), envelope.etag

    async def move_alias(self, name: str, target: str, etag: str, action: str) -> None:
        """Point the alias at another image, only if it is still as it was read (``etag``):
        a concurrent change fails it (PreconditionFailedError) and is kept."""
        from .._requests import ImageAliasPatch  # request bodies load with the first write

        await self.connection.request(
            api.update_alias(name, target, ImageAliasPatch(target=target), etag=etag, action=action)
        )

    async def create_alias(self, body: ImageAliasesPost, action: str) -> None:
        await self.connection.request(api.create_alias(body, action=action))

    async def require_profile(self, name: str, action: str) -> None:
        """Raise NotFoundError unless the profile exists (in the client's project)."""
        await self.connection.request(api.profile(name, action))
