"""The images API: list, get, create, update, export and delete images, and manage aliases."""

from __future__ import annotations

import builtins
import hashlib
import os
from pathlib import Path
from typing import Any, Literal, overload

from .._errors import IncusError, InvalidInputError, PreconditionFailedError, TransferError
from .._models import Image, ImageAlias, Operation
from .._protocol import (
    ALIASES,
    IMAGES,
    JSON_WHITESPACE,
    Call,
    alias_name,
    alias_path,
    boolean,
    description_text,
    filename_header,
    fingerprint_prefix,
    fingerprints_from_urls,
    image_path,
    looks_like_json,
    properties_map,
    replace_properties_patch,
    structure,
)
from .._transfer import CHUNK_SIZE, ExportReceiver, check_export_target
from ._connection import AsyncConnection
from .operations import AsyncOperationsAPI

#: How often update() re-reads and retries when the image changed under it (HTTP 412).
UPDATE_ATTEMPTS = 5


class AsyncImagesAPI:
    """Images and image aliases on one server, in the client's project.

    Every method that takes a fingerprint accepts the full SHA-256 or any unique prefix of it,
    in either case. Results are typed models; failures raise subclasses of IncusError.
    """

    def __init__(self, connection: AsyncConnection, operations: AsyncOperationsAPI) -> None:
        self._connection = connection
        self._operations = operations

    # ----------------------------------------------------------------------------------------
    # Reading.

    @overload
    async def list(self, recursion: Literal[0]) -> builtins.list[str]: ...

    @overload
    async def list(self, recursion: Literal[1] = 1) -> builtins.list[Image]: ...

    async def list(self, recursion: int = 1) -> builtins.list[Image] | builtins.list[str]:
        """Return the images, sorted by fingerprint.

        recursion=1 (the default) returns Image objects; recursion=0 returns full fingerprints.
        """
        if type(recursion) is not int or recursion not in (0, 1):
            raise InvalidInputError(f"recursion must be 0 or 1, got {recursion!r}")
        call = Call(
            method="GET",
            path=IMAGES,
            params={"recursion": str(recursion)},
            action="list images",
        )
        envelope = await self._connection.request(call)
        server = self._connection.server
        if recursion == 0:
            return fingerprints_from_urls(call, server, envelope.metadata)
        images = structure(call, server, envelope.metadata, builtins.list[Image])
        return sorted(images, key=lambda image: image.fingerprint)

    async def get(self, fingerprint: str) -> Image:
        """Return the image with this fingerprint (or unique fingerprint prefix)."""
        image, _ = await self._get_with_etag(fingerprint_prefix(fingerprint))
        return image

    async def _get_with_etag(self, prefix: str) -> tuple[Image, str | None]:
        call = Call(method="GET", path=image_path(prefix), action=f"get image '{prefix}'")
        envelope = await self._connection.request(call)
        image = structure(call, self._connection.server, envelope.metadata, Image)
        return image, envelope.etag

    # ----------------------------------------------------------------------------------------
    # Creating, changing and deleting.

    async def create(
        self,
        image_data: bytes,
        filename: str | None = None,
        public: bool = False,
        auto_update: bool = False,
        properties: dict[str, str] | None = None,
        wait: bool = False,
    ) -> Image | Operation:
        """Upload a unified image tarball and return the new Image (wait=True) or the Operation.

        filename is stored as the image's file name (any Unicode). properties are merged over
        those in the image's metadata.yaml. They and auto_update are applied right after the
        upload (Incus ignores auto_update on uploads, and its properties header can crash
        incusd), so when either is given the call waits for the upload even with wait=False,
        and returns the finished Operation. If they cannot be applied, the image is deleted
        again and the error says so.

        The fingerprint Incus reports must equal the SHA-256 of the bytes sent. An image that
        is already stored raises ImageExistsError (its ``fingerprint`` names it); a failed
        upload raises OperationError with the server's message.
        """
        if not isinstance(image_data, bytes | bytearray | memoryview):
            raise InvalidInputError(f"image_data must be bytes, got {type(image_data).__name__}")
        data = bytes(image_data)
        if not data:
            raise InvalidInputError("image_data is empty")
        if looks_like_json(data.lstrip(JSON_WHITESPACE)[:4]):
            raise InvalidInputError(
                "image_data looks like JSON, not an image tarball (incusd would read it as an "
                "image request instead of an image)"
            )
        headers: dict[str, str | bytes] = {"Content-Type": "application/octet-stream"}
        if filename is not None:
            headers["X-Incus-filename"] = filename_header(filename)
        if boolean(public, "public"):
            headers["X-Incus-public"] = "true"
        after_upload: dict[str, Any] = {}
        if boolean(auto_update, "auto_update"):
            after_upload["auto_update"] = True
        wanted_properties = properties_map(properties)
        if wanted_properties:
            after_upload["properties"] = wanted_properties
        boolean(wait, "wait")

        sha256 = hashlib.sha256(data).hexdigest()
        action = f"upload image {sha256[:12]}"
        call = Call(method="POST", path=IMAGES, action=action, headers=headers)
        envelope = await self._connection.request(call, content=data)
        operation = structure(call, self._connection.server, envelope.metadata, Operation)
        if not wait and not after_upload:
            return operation

        finished = await self._operations._wait(
            operation.id, None, action=action, fingerprint=sha256
        )
        reported = (finished.metadata or {}).get("fingerprint")
        if reported != sha256:
            outcome = await self._discard_upload(reported)
            raise TransferError(
                f"Could not {action} on {self._connection.server}: the server stored "
                f"fingerprint {reported!r}, but the bytes sent hash to {sha256}; {outcome}",
                server=self._connection.server,
                operation=finished,
                fingerprint=sha256,
            )
        if after_upload:
            await self._apply_after_upload(sha256, after_upload, action)
        if wait:
            return await self.get(sha256)
        return finished

    async def _apply_after_upload(
        self, fingerprint: str, changes: dict[str, Any], action: str
    ) -> None:
        call = Call(
            method="PATCH",
            path=image_path(fingerprint),
            action=f"set properties and auto_update of the uploaded image '{fingerprint}'",
            json=changes,
        )
        try:
            await self._connection.request(call)
        except IncusError as exc:
            outcome = await self._discard_upload(fingerprint)
            raise exc._amended(
                f"{exc} The image was uploaded, but this failed, so {outcome}.",
                fingerprint=fingerprint,
            ) from exc

    async def _discard_upload(self, fingerprint: object) -> str:
        """Delete an image this client just uploaded but must not keep; say what happened."""
        if not isinstance(fingerprint, str) or not fingerprint:
            return "no image could be identified to delete"
        try:
            await self.delete(fingerprint, wait=True)
        except IncusError as exc:
            return f"deleting image {fingerprint} failed too ({exc}); it is still on the server"
        return f"image {fingerprint} was deleted again"

    async def delete(self, fingerprint: str, wait: bool = False) -> Operation:
        """Delete the image; with wait=True return only once it is gone (failures raise)."""
        prefix = fingerprint_prefix(fingerprint)
        boolean(wait, "wait")
        action = f"delete image '{prefix}'"
        call = Call(method="DELETE", path=image_path(prefix), action=action)
        envelope = await self._connection.request(call)
        operation = structure(call, self._connection.server, envelope.metadata, Operation)
        if wait:
            return await self._operations._wait(operation.id, None, action=action)
        return operation

    async def update(
        self, fingerprint: str, properties: dict[str, str], wait: bool = False
    ) -> Image:
        """Replace the image's properties and return the updated Image.

        Everything else (public, auto_update, profiles, expires_at, aliases) is kept. The change
        is sent with If-Match, so a concurrent change to the image is never overwritten: the
        image is re-read and the change retried, a few times at most, then
        PreconditionFailedError is raised. Incus applies updates at once, so ``wait`` changes
        nothing; it is accepted for symmetry with the other writing calls.
        """
        prefix = fingerprint_prefix(fingerprint)
        if properties is None:
            raise InvalidInputError("properties must be a mapping (use {} to remove them all)")
        wanted = properties_map(properties)
        boolean(wait, "wait")
        for attempt in range(1, UPDATE_ATTEMPTS + 1):
            current, etag = await self._get_with_etag(prefix)
            headers = {"If-Match": etag} if etag else {}
            call = Call(
                method="PATCH",
                path=image_path(current.fingerprint),
                action=f"update the properties of image '{current.fingerprint}'",
                headers=headers,
                json=replace_properties_patch(current.properties, wanted),
            )
            try:
                await self._connection.request(call)
            except PreconditionFailedError as exc:
                if attempt == UPDATE_ATTEMPTS:
                    raise exc._amended(
                        f"{exc} The image changed under every one of {UPDATE_ATTEMPTS} attempts; "
                        "nothing was written.",
                        fingerprint=current.fingerprint,
                    ) from exc
                continue
            return await self.get(current.fingerprint)
        raise AssertionError("unreachable")  # pragma: no cover

    # ----------------------------------------------------------------------------------------
    # Exporting.

    async def export(
        self, fingerprint: str, target_path: str | os.PathLike[str]
    ) -> builtins.list[Path]:
        """Download the image to disk and return the files written.

        A unified image gives one file at target_path; a split image gives the metadata at
        target_path and the rootfs at target_path + ".root". When target_path is an existing
        directory, the server's file names are used (reduced to safe base names). The body is
        streamed to a temporary file beside the target and renamed only once its SHA-256
        matches the fingerprint; on any failure nothing is left under the target names.
        """
        prefix = fingerprint_prefix(fingerprint)
        target = check_export_target(target_path)
        image = await self.get(prefix)
        action = f"export image '{image.fingerprint}' to {str(target)!r}"
        call = Call(method="GET", path=image_path(image.fingerprint, "export"), action=action)
        async with self._connection.stream(call) as response:
            receiver = ExportReceiver(
                target,
                image.fingerprint,
                content_type=response.headers.get("content-type"),
                content_disposition=response.headers.get("content-disposition"),
                # Incus does not hash OCI images the way it hashes its own format.
                verify=response.headers.get("x-incus-type", "incus").lower() != "oci",
                failure_context=f"Could not {action} on {self._connection.server}",
                server=self._connection.server,
            )
            try:
                async for chunk in response.aiter_raw(CHUNK_SIZE):
                    receiver.feed(chunk)
                return receiver.finish()
            finally:
                receiver.discard()

    # ----------------------------------------------------------------------------------------
    # Aliases.

    async def create_alias(
        self, name: str, target: str, description: str | None = None
    ) -> ImageAlias:
        """Create an alias pointing at the image target (fingerprint or prefix)."""
        name = alias_name(name)
        prefix = fingerprint_prefix(target, argument="target")
        body = {"name": name, "target": prefix, "description": ""}
        if description is not None:
            body["description"] = description_text(description)
        call = Call(
            method="POST",
            path=ALIASES,
            action=f"create alias {name!r} for image '{prefix}'",
            json=body,
        )
        await self._connection.request(call)
        return await self.get_alias(name)

    async def get_alias(self, name: str) -> ImageAlias:
        """Return the alias with this name."""
        name = alias_name(name)
        call = Call(method="GET", path=alias_path(name), action=f"get alias {name!r}")
        envelope = await self._connection.request(call)
        return structure(call, self._connection.server, envelope.metadata, ImageAlias)

    async def update_alias(
        self, name: str, target: str, description: str | None = None
    ) -> ImageAlias:
        """Point the alias at target; description=None keeps the description, "" clears it."""
        name = alias_name(name)
        prefix = fingerprint_prefix(target, argument="target")
        # PATCH changes only the fields sent, so an omitted description is kept.
        body = {"target": prefix}
        if description is not None:
            body["description"] = description_text(description)
        call = Call(
            method="PATCH",
            path=alias_path(name),
            action=f"update alias {name!r} to image '{prefix}'",
            json=body,
        )
        await self._connection.request(call)
        return await self.get_alias(name)

    async def delete_alias(self, name: str) -> None:
        """Delete the alias (the image stays)."""
        name = alias_name(name)
        call = Call(method="DELETE", path=alias_path(name), action=f"delete alias {name!r}")
        await self._connection.request(call)
