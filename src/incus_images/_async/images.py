"""The images API: list, get, create, update, export and delete images, and manage aliases."""

from __future__ import annotations

import builtins
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from pathlib import Path
from typing import IO, Literal, overload

from .._errors import (
    ConflictError,
    IncusError,
    InvalidInputError,
    NotFoundError,
    OperationError,
    PreconditionFailedError,
    TransferError,
)
from .._flavours import async_flavour
from .._models import Image, ImageAlias, Operation
from .._protocol import (
    ALIASES,
    IMAGES,
    PROFILES,
    Call,
    alias_path,
    fingerprints_from_urls,
    image_path,
    interrupted,
    named_path,
    replace_properties_patch,
    structure,
    unexpected,
)
from .._transfer.export import ExportReceiver
from .._transfer.files import check_export_target
from .._transfer.progress import ProgressCallback
from .._transfer.upload import (
    PreparedUpload,
    Rehash,
    Segment,
    UploadMeter,
    UploadPlan,
    chunk_bytes,
    prepare_upload,
    read_chunks,
)
from .._validate import (
    alias_fields,
    alias_name,
    boolean,
    callback,
    fingerprint_prefix,
    properties_map,
)
from ._connection import AsyncConnection
from .operations import AsyncOperationsAPI

#: What an image (or one part of a split image) can be given as.
ImageData = bytes | str | os.PathLike[str] | IO[bytes] | Iterable[bytes] | AsyncIterable[bytes]

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
        server = self._connection.server
        image = structure(call, server, envelope.metadata, Image)
        if not image.fingerprint.startswith(prefix):
            # Its fingerprint names files and later requests: it must be the image asked for.
            raise unexpected(call, server, f"it describes another image, {image.fingerprint}")
        return image, envelope.etag

    # ----------------------------------------------------------------------------------------
    # Creating, changing and deleting.

    async def create(
        self,
        image_data: ImageData,
        filename: str | None = None,
        public: bool = False,
        auto_update: bool = False,
        properties: dict[str, str] | None = None,
        wait: bool = False,
        *,
        rootfs: ImageData | None = None,
        type: str | None = None,
        aliases: Sequence[str] | None = None,
        profiles: Sequence[str] | None = None,
        fingerprint: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> Image | Operation:
        """Upload an image; return the new Image (wait=True) or the upload's Operation.

        image_data is the image: bytes, a path, a binary file object, or an iterable of bytes
        chunks (an async iterable too, with AsyncClient). Everything is streamed, never read
        into memory whole; give sizes (paths, regular files, bytes) and the body carries a
        Content-Length, which is much faster than a chunked body.

        A unified image is one tarball. For a split image, image_data is the metadata tarball
        and ``rootfs`` the root file system; ``type="virtual-machine"`` sends it as a VM disk
        (``rootfs.img``). filename is the image's file name (default: the source file's name).

        properties are merged over those in the image's metadata.yaml. They, auto_update and
        aliases are applied right after the upload (Incus ignores auto_update on uploads, its
        properties header can crash incusd, and its aliases header can store the image while
        reporting failure), so when any is given the call waits for the upload even with
        wait=False, and returns the finished Operation. If one cannot be applied, the image is
        deleted again and the error says so. Aliases already taken, and profiles that do not
        exist, are refused before anything is uploaded.

        fingerprint is the SHA-256 you expect; the server refuses the upload if the bytes
        differ. In any case the bytes sent are hashed (as they stream, or, for sources that can
        be read again, by reading them again while incusd processes the upload), and a server
        that reports another fingerprint gets its image deleted and raises TransferError.

        progress(done, total) is called as the bytes go (total None when unknown).

        An image that is already stored raises ImageExistsError (its ``fingerprint`` names
        it); a failed upload raises OperationError with the server's message.
        """
        prepared = prepare_upload(
            image_data,
            rootfs,
            filename=filename,
            public=public,
            auto_update=auto_update,
            properties=properties,
            wait=wait,
            image_type=type,
            aliases=aliases,
            profiles=profiles,
            fingerprint=fingerprint,
            progress=progress,
            accept_async=async_flavour.accepts_async_iterables,
        )
        # Cheap checks that would otherwise fail only after every byte was sent.
        for name in prepared.aliases:
            await self._require_free_alias(name)
        for profile in prepared.profiles:
            await self._require_profile(profile)

        plan = prepared.plan
        action = f"upload image {plan.description}"
        # Sources that can be read again are hashed after sending, beside incusd's processing
        # (see Rehash); the others as they go.
        rereadable = all(source.rereadable for source in plan.sources)
        meter = UploadMeter(plan, progress, hash_inline=not rereadable)
        operation, sha256 = await self._send_upload(prepared, meter, action)
        if not wait and not prepared.has_follow_up:
            return operation

        rehash = Rehash(plan.sources) if sha256 is None else None
        finished = await self._wait_for_upload(operation, action, sha256, rehash)
        if rehash is not None:
            sha256 = await self._rehashed(rehash, finished, action)
        assert sha256 is not None
        action = f"upload image {sha256[:12]}"
        await self._check_stored_fingerprint(finished, sha256, action)
        await self._follow_up(prepared, sha256)
        if wait:
            return await self.get(sha256)
        return finished

    async def _send_upload(
        self, prepared: PreparedUpload, meter: UploadMeter, action: str
    ) -> tuple[Operation, str | None]:
        """POST the body; the upload's operation, and the SHA-256 if it was hashed inline."""
        server = self._connection.server
        plan = prepared.plan
        call = Call(method="POST", path=IMAGES, action=action, headers=prepared.headers)
        try:
            envelope = await self._connection.request(call, content=self._upload_body(plan, meter))
            sha256 = meter.finish()
        except BaseException as exc:  # noqa: BLE001 - re-raised with what was interrupted
            meter.close()
            if meter.body_complete:
                outcome = (
                    "the whole image had been sent, so incusd may still store it: look for it "
                    "before retrying"
                )
            else:
                outcome = "incusd discards an incomplete upload, so nothing was stored"
            raise interrupted(
                exc,
                f"the upload of image {plan.description} to {server} was interrupted after "
                f"{meter.progress.done} of {plan.data_size or 'an unknown number of'} bytes; "
                f"{outcome}",
            ) from None
        return structure(call, server, envelope.metadata, Operation), sha256

    async def _wait_for_upload(
        self, operation: Operation, action: str, sha256: str | None, rehash: Rehash | None
    ) -> Operation:
        try:
            return await self._operations._wait(
                operation.id, None, action=action, fingerprint=sha256
            )
        except OperationError as exc:
            if rehash is None or exc.fingerprint is not None:
                raise
            try:
                digest = await async_flavour.run_blocking(rehash.result)
            except TransferError:
                raise exc from None
            raise exc._amended(
                f"{exc} (the data sent hashes to {digest})", fingerprint=digest
            ) from exc

    async def _rehashed(self, rehash: Rehash, finished: Operation, action: str) -> str:
        try:
            return await async_flavour.run_blocking(rehash.result)
        except TransferError as exc:
            server = self._connection.server
            outcome = await self._discard_upload((finished.metadata or {}).get("fingerprint"))
            raise exc._amended(
                f"Could not {action} on {server}: {exc}, so what was stored cannot be "
                f"verified; {outcome}",
                server=server,
                operation=finished,
            ) from exc

    async def _check_stored_fingerprint(
        self, finished: Operation, sha256: str, action: str
    ) -> None:
        reported = (finished.metadata or {}).get("fingerprint")
        if reported != sha256:
            server = self._connection.server
            outcome = await self._discard_upload(reported)
            raise TransferError(
                f"Could not {action} on {server}: the server stored fingerprint "
                f"{reported!r}, but the bytes sent hash to {sha256}; {outcome}",
                server=server,
                operation=finished,
                fingerprint=sha256,
            )

    async def _follow_up(self, prepared: PreparedUpload, sha256: str) -> None:
        """Apply what the upload could not carry; on failure delete the image again."""
        try:
            if prepared.patch:
                await self._connection.request(
                    Call(
                        method="PATCH",
                        path=image_path(sha256),
                        action=f"set properties and auto_update of the uploaded image '{sha256}'",
                        json=prepared.patch,
                    )
                )
            if prepared.clear_profiles:
                await self._remove_profiles(sha256)
            for name in prepared.aliases:
                await self._connection.request(
                    Call(
                        method="POST",
                        path=ALIASES,
                        action=f"create alias {name!r} for the uploaded image '{sha256}'",
                        json={"name": name, "target": sha256, "description": ""},
                    )
                )
        except IncusError as exc:
            outcome = await self._discard_upload(sha256)
            raise exc._amended(
                f"{exc} The image was uploaded, but this failed, so {outcome}.",
                fingerprint=sha256,
            ) from exc

    async def _upload_body(self, plan: UploadPlan, meter: UploadMeter) -> AsyncIterator[bytes]:
        """The request body, produced chunk by chunk as httpx sends it."""
        for segment in plan.segments:
            if segment.source is None:
                yield segment.framing
                continue
            meter.start(segment)
            async for chunk in self._source_chunks(segment):
                if out := meter.take(chunk):
                    yield out
                if meter.backlogged:
                    await async_flavour.run_blocking(meter.wait_for_room)
            if out := meter.end(segment):
                yield out
        meter.body_complete = True

    async def _source_chunks(self, segment: Segment) -> AsyncIterator[bytes]:
        source = segment.source
        assert source is not None
        if source.kind == "async_iterable":
            async for chunk in source.value:
                yield chunk_bytes(chunk, segment.argument)
        else:
            for chunk in read_chunks(source, segment.argument):
                yield chunk

    async def _require_free_alias(self, name: str) -> None:
        try:
            await self.get_alias(name)
        except NotFoundError:
            return
        raise ConflictError(
            f"Could not upload the image to {self._connection.server}: alias {name!r} is "
            "already taken; nothing was uploaded",
            server=self._connection.server,
        )

    async def _require_profile(self, name: str) -> None:
        call = Call(
            method="GET",
            path=named_path(PROFILES, name),
            action=f"find profile {name!r} for the upload (nothing was uploaded)",
        )
        await self._connection.request(call)

    async def _remove_profiles(self, fingerprint: str) -> None:
        # Only PUT sets profiles, and a PUT resets what it does not send: send it all back.
        current, etag = await self._get_with_etag(fingerprint)
        await self._connection.request(
            Call(
                method="PUT",
                path=image_path(fingerprint),
                action=f"remove the profiles of the uploaded image '{fingerprint}'",
                headers={"If-Match": etag} if etag else {},
                json={
                    "public": current.public,
                    "auto_update": current.auto_update,
                    "properties": current.properties,
                    "profiles": [],
                },
            )
        )

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
        self,
        fingerprint: str,
        target_path: str | os.PathLike[str],
        *,
        progress: ProgressCallback | None = None,
        allow_unverified: bool = False,
    ) -> builtins.list[Path]:
        """Download the image to disk and return the files written.

        A unified image gives one file at target_path; a split image gives the metadata at
        target_path and the rootfs at target_path + ".root". When target_path is an existing
        directory, the server's file names are used (reduced to safe base names that cannot
        leave the directory). The body is streamed to temporary files beside the targets and
        renamed only once the SHA-256 of everything received matches the fingerprint; on any
        failure or interruption nothing is left under the target names and no temporary file
        remains.

        Some images cannot be checked that way: Incus marks OCI images (``X-Incus-Type:
        oci``), whose fingerprint is not the hash of their export. They are refused with
        TransferError before anything is written, unless you pass ``allow_unverified=True``,
        which accepts such an image unchecked; every other image is still verified.

        progress(done, total) is called as the image's bytes arrive.
        """
        prefix = fingerprint_prefix(fingerprint)
        target = check_export_target(target_path)
        callback(progress, "progress")
        boolean(allow_unverified, "allow_unverified")
        image = await self.get(prefix)
        server = self._connection.server
        action = f"export image '{image.fingerprint}' to {str(target)!r}"
        call = Call(method="GET", path=image_path(image.fingerprint, "export"), action=action)
        receiver: ExportReceiver | None = None
        try:
            async with self._connection.stream(call) as response:
                receiver = ExportReceiver(
                    target,
                    image.fingerprint,
                    content_type=response.headers.get("content-type"),
                    content_disposition=response.headers.get("content-disposition"),
                    unverifiable=response.headers.get("x-incus-type", "").lower() == "oci",
                    allow_unverified=allow_unverified,
                    total=image.size,
                    progress=progress,
                    failure_context=f"Could not {action} on {server}",
                    server=server,
                )
                try:
                    receiver.start()
                    async for chunk in self._connection.body(call, response):
                        receiver.feed(chunk)
                        if receiver.backlogged:
                            await async_flavour.run_blocking(receiver.wait_for_room)
                    return receiver.finish()
                finally:
                    receiver.discard()
        except BaseException as exc:
            if receiver is None or isinstance(exc, TransferError):
                raise
            raise interrupted(
                exc,
                f"the export of image {image.fingerprint} to {str(target)!r} was interrupted "
                f"after {receiver.received} of {image.size} bytes; nothing was written",
            ) from None

    # ----------------------------------------------------------------------------------------
    # Aliases.

    async def create_alias(
        self, name: str, target: str, description: str | None = None
    ) -> ImageAlias:
        """Create an alias pointing at the image target (fingerprint or prefix)."""
        name = alias_name(name)
        fields = alias_fields(target, description)
        call = Call(
            method="POST",
            path=ALIASES,
            action=f"create alias {name!r} for image '{fields['target']}'",
            json={"name": name, "description": "", **fields},
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
        fields = alias_fields(target, description)
        # PATCH changes only the fields sent, so an omitted description is kept.
        call = Call(
            method="PATCH",
            path=alias_path(name),
            action=f"update alias {name!r} to image '{fields['target']}'",
            json=fields,
        )
        await self._connection.request(call)
        return await self.get_alias(name)

    async def delete_alias(self, name: str) -> None:
        """Delete the alias (the image stays)."""
        name = alias_name(name)
        call = Call(method="DELETE", path=alias_path(name), action=f"delete alias {name!r}")
        await self._connection.request(call)
